//! The golden vectors of `wire/PROTOCOL.md`: each decodes to the message it names
//! and that message re-encodes to the same bytes.

#[path = "common/golden_cases.rs"]
mod golden_cases;

use bytes::BytesMut;
use verity_wire::{Decoder, Encoder, Message};

const PROTOCOL_MD: &str = include_str!("../PROTOCOL.md");

/// `(name, bytes)` for every "#### `name`" heading followed by a ```hex block.
fn vectors() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = PROTOCOL_MD.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("#### `")
            .and_then(|r| r.strip_suffix('`'))
        else {
            continue;
        };
        let mut bytes = Vec::new();
        let mut in_block = false;
        for l in lines.by_ref() {
            if l == "```hex" {
                in_block = true;
                continue;
            }
            if in_block && l == "```" {
                break;
            }
            if in_block {
                for h in l.split_whitespace() {
                    bytes.push(u8::from_str_radix(h, 16).expect("hex byte in PROTOCOL.md"));
                }
            }
        }
        out.push((name.to_owned(), bytes));
    }
    out
}

#[test]
fn protocol_md_has_a_vector_for_every_golden_message() {
    let names: Vec<String> = vectors().into_iter().map(|(n, _)| n).collect();
    let expected: Vec<&str> = golden_cases::golden_messages()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn golden_vectors_decode_and_reencode_byte_for_byte() {
    let cases = golden_cases::golden_messages();
    for ((name, bytes), (_, msg)) in vectors().into_iter().zip(cases) {
        let mut dec = Decoder::default();
        dec.extend(&bytes);
        let frame = dec
            .decode()
            .unwrap_or_else(|e| panic!("vector {name}: {e}"))
            .unwrap_or_else(|| panic!("vector {name}: incomplete"));
        dec.finish().unwrap();
        assert_eq!(Message::from_view(&frame.view()), msg, "vector {name}");
        let mut again = BytesMut::new();
        msg.encode(&Encoder::default(), &mut again).unwrap();
        assert_eq!(&again[..], &bytes[..], "vector {name} re-encodes");
    }
}

#[test]
fn golden_data_vector_matches_the_byte_table() {
    let (_, b) = vectors()
        .into_iter()
        .find(|(n, _)| n == "data")
        .expect("data vector");
    assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 45); // frame_len
    assert_eq!(&b[8..10], b"VY"); // magic
    assert_eq!(b[10], 1); // version
    assert_eq!(b[11], 3); // kind DATA
    let crc = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert_eq!(crc, verity_wire::crc32c(&b[4..48])); // crc32c over 4..stride
    assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 1); // channel
    assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 1); // seq
    assert_eq!(&b[40..45], b"hello"); // payload
    assert_eq!(&b[45..48], &[0, 0, 0]); // padding
}
