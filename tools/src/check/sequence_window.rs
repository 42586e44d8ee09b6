//! sequence-window: key = value mod 2; state per key = its last 4 values;
//! each input → the window after adding it, 4 × u64 big-endian, oldest first.

use std::path::Path;

use super::doubler::be_u64;
use super::exact::{show_bytes, Expected};
use crate::formats::{FormatError, InputFormat, InputReader};

pub(crate) fn expected(input: &Path) -> Result<Expected, FormatError> {
    let mut exp = Expected::new(1);
    let mut windows = [[0u64; 4]; 2];
    let mut payload = [0u8; 32];
    for rec in InputReader::open(InputFormat::U64, input)? {
        let n = be_u64(&rec?.bytes);
        let key = n % 2;
        let w = &mut windows[key as usize];
        w.rotate_left(1);
        w[3] = n;
        for (slot, v) in payload.chunks_exact_mut(8).zip(w.iter()) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
        exp.push(key, &payload);
        exp.end_input();
    }
    Ok(exp)
}

pub(crate) fn describe(p: &[u8]) -> String {
    if p.len() == 32 {
        let v: Vec<u64> = p.chunks_exact(8).map(be_u64).collect();
        format!("window {v:?}")
    } else {
        format!("payload {} ({} bytes)", show_bytes(p), p.len())
    }
}
