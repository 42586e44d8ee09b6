#![no_main]
//! Frames built with `arbitrary`: every message the encoder accepts decodes back
//! to itself and re-encodes to the same bytes.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use verity_wire::{Decoder, Encoder, Message};

fuzz_target!(|msgs: Vec<Message>| {
    let enc = Encoder::default();
    let mut buf = BytesMut::new();
    let mut sent = Vec::new();
    for m in msgs {
        // The generator may build invalid HELLOs (version_min > version_max),
        // too-long ERROR texts or payloads; the encoder must refuse those, and
        // everything it accepts must decode.
        if m.encode(&enc, &mut buf).is_ok() {
            sent.push(m);
        }
    }
    let mut dec = Decoder::default();
    dec.extend(&buf);
    let mut got = Vec::new();
    loop {
        match dec.decode() {
            Ok(Some(f)) => got.push(Message::from_view(&f.view())),
            Ok(None) => break,
            Err(e) => panic!("encoded message refused: {e} for {:?}", sent[got.len()]),
        }
    }
    dec.finish().expect("no bytes left over");
    assert_eq!(got, sent);
    let mut again = BytesMut::new();
    for m in &got {
        m.encode(&enc, &mut again).expect("re-encodes");
    }
    assert_eq!(again, buf);
});
