#![no_main]
//! One stream, arbitrary chunking: the frames (and the error, if any) are the
//! same as when the stream is fed whole.

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use verity_wire::{Decoder, Frame, WireError};

#[derive(Debug, Arbitrary)]
struct Input {
    chunks: Vec<u8>,
    stream: Vec<u8>,
}

fn run(stream: &[u8], chunks: &[u8]) -> (Vec<Frame>, Option<WireError>) {
    let mut dec = Decoder::default();
    let mut frames = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let want = chunks.get(i % chunks.len().max(1)).copied().unwrap_or(255) as usize;
        let n = want.max(1).min(stream.len() - at);
        i += 1;
        dec.extend(&stream[at..at + n]);
        at += n;
        loop {
            match dec.decode() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, dec.finish().err())
}

fuzz_target!(|input: Input| {
    let whole = run(&input.stream, &[u8::MAX]);
    let mut dec = Decoder::default();
    dec.extend(&input.stream);
    let mut all = Vec::new();
    let err = loop {
        match dec.decode() {
            Ok(Some(f)) => all.push(f),
            Ok(None) => break dec.finish().err(),
            Err(e) => break Some(e),
        }
    };
    assert_eq!(whole, (all, err));
    assert_eq!(run(&input.stream, &input.chunks), whole);
});
