//! doubler: u64 `n` (big-endian) → u64 `n.wrapping_mul(2)` (big-endian); one key.

use std::path::Path;

use super::exact::{show_bytes, Expected};
use crate::formats::{FormatError, InputFormat, InputReader};

pub(crate) fn expected(input: &Path) -> Result<Expected, FormatError> {
    let mut exp = Expected::new(1);
    for rec in InputReader::open(InputFormat::U64, input)? {
        let n = be_u64(&rec?.bytes);
        exp.push(0, &n.wrapping_mul(2).to_be_bytes());
        exp.end_input();
    }
    Ok(exp)
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

pub(crate) fn describe(p: &[u8]) -> String {
    if p.len() == 8 {
        format!("value {}", be_u64(p))
    } else {
        format!("payload {} ({} bytes)", show_bytes(p), p.len())
    }
}
