//! word count: text lines → one output per word occurrence, `word\tcount`, with
//! the word's running count. Words are maximal runs of ASCII alphanumerics and
//! `'`, ASCII-lowercased.

use crate::app::{pipeline, Meta, Pipeline, Reject};

fn decode(_: &Meta, bytes: &[u8]) -> Result<String, Reject> {
    core::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Reject("line is not UTF-8"))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '\''
}

fn split(line: String, emit: &mut dyn FnMut(String)) {
    for w in line.split(|c: char| !is_word_char(c)) {
        if !w.is_empty() {
            emit(w.to_ascii_lowercase());
        }
    }
}

fn encode(o: &(String, u64), out: &mut Vec<u8>) {
    out.extend_from_slice(o.0.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(o.1.to_string().as_bytes());
}

pub fn app() -> Pipeline<String, String, u64, (String, u64)> {
    pipeline("word-count")
        .source("lines", decode)
        .to(split)
        .key_by(|w: &String| w.clone())
        .to_state(
            |w: String, count: &mut u64, emit: &mut dyn FnMut((String, u64))| {
                *count += 1;
                emit((w, *count));
            },
        )
        .to_sink(encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{App, Outputs};

    #[test]
    fn counts_words_across_lines() {
        let mut app = app();
        let mut out = Outputs::default();
        for (i, line) in ["The cat, the hat.", "don't THE end"].iter().enumerate() {
            let meta = Meta {
                source: 0,
                seq: i as u64 + 1,
                trace_id: 0,
                timestamp_ns: 0,
            };
            app.process(&meta, line.as_bytes(), &mut out).unwrap();
        }
        let got: Vec<&str> = out
            .iter()
            .map(|o| core::str::from_utf8(o).unwrap())
            .collect();
        assert_eq!(
            got,
            ["the\t1", "cat\t1", "the\t2", "hat\t1", "don't\t1", "the\t3", "end\t1"]
        );
    }
}
