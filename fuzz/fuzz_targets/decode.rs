#![no_main]
//! Arbitrary bytes into the stream decoder: it must never panic, every frame it
//! returns must re-validate, and it must stop at the first error for good.

use libfuzzer_sys::fuzz_target;
use verity_wire::{parse, Decoder, Message};

fuzz_target!(|data: &[u8]| {
    // A small max_frame_len too, so the length bound is exercised.
    for max in [verity_wire::DEFAULT_MAX_FRAME_LEN, 256] {
        let mut dec = Decoder::new(max);
        dec.extend(data);
        let mut consumed = 0usize;
        loop {
            match dec.decode() {
                Ok(Some(frame)) => {
                    consumed += frame.as_bytes().len();
                    assert_eq!(dec.position(), consumed as u64);
                    let view = parse(frame.as_bytes(), max)
                        .expect("a returned frame re-validates")
                        .expect("a returned frame is whole");
                    assert_eq!(view.stride, frame.as_bytes().len());
                    // Every accessor works on a validated frame.
                    let _ = Message::from_view(&frame.view());
                }
                Ok(None) => {
                    assert!(data.len() - consumed < verity_wire::stride(max as usize));
                    break;
                }
                Err(e) => {
                    assert_eq!(dec.decode(), Err(e), "a poisoned decoder stays poisoned");
                    let _ = e.to_string();
                    break;
                }
            }
        }
    }
});
