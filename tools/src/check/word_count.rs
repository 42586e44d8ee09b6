//! word-count: per line, words = maximal runs of ASCII alphanumerics or `'`,
//! ASCII-lowercased; one output `{word}\t{running count}` per occurrence; key = word.

use std::collections::HashMap;
use std::path::Path;

use super::exact::{show_bytes, Expected};
use crate::formats::{FormatError, InputFormat, InputReader};

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'\''
}

pub(crate) fn expected(input: &Path) -> Result<Expected, FormatError> {
    let mut exp = Expected::new(1);
    // word → (key id, running count)
    let mut counts: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    let mut payload = Vec::new();
    for rec in InputReader::open(InputFormat::Lines, input)? {
        let line = rec?.bytes;
        for word in line.split(|b| !is_word_byte(*b)).filter(|w| !w.is_empty()) {
            let word = word.to_ascii_lowercase();
            let next_id = counts.len() as u64;
            let entry = counts.entry(word.clone()).or_insert((next_id, 0));
            entry.1 += 1;
            payload.clear();
            payload.extend_from_slice(&word);
            payload.push(b'\t');
            payload.extend_from_slice(entry.1.to_string().as_bytes());
            exp.push(entry.0, &payload);
        }
        exp.end_input();
    }
    Ok(exp)
}

pub(crate) fn describe(p: &[u8]) -> String {
    show_bytes(p)
}
