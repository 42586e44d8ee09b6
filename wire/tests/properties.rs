//! Property tests over seeded random frames: round trip, any chunking, corruption.

mod common;

use bytes::BytesMut;
use common::{encode_all, random_message, Rng};
use verity_wire::{Decoder, Encoder, Message, WireError};

/// Decodes a whole stream fed in the given chunk sizes (cycled); returns the
/// messages and the first error, if any.
fn decode_chunked(stream: &[u8], chunks: &[usize]) -> (Vec<Message>, Option<WireError>) {
    let mut dec = Decoder::default();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let n = chunks[i % chunks.len()].max(1).min(stream.len() - at);
        i += 1;
        dec.extend(&stream[at..at + n]);
        at += n;
        loop {
            match dec.decode() {
                Ok(Some(f)) => out.push(Message::from_view(&f.view())),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, dec.finish().err())
}

#[test]
fn any_frame_round_trips_byte_for_byte() {
    let mut rng = Rng::new(0x5eed_0001);
    let enc = Encoder::default();
    for _ in 0..20_000 {
        let msg = random_message(&mut rng, 2048);
        let mut buf = BytesMut::new();
        let stride = msg.encode(&enc, &mut buf).unwrap();
        assert_eq!(stride, buf.len());
        assert_eq!(stride % 8, 0, "frames are padded to 8 bytes");
        let mut dec = Decoder::default();
        dec.extend(&buf);
        let frame = dec.decode().unwrap().expect("a whole frame");
        assert_eq!(Message::from_view(&frame.view()), msg);
        let mut again = BytesMut::new();
        Message::from_view(&frame.view())
            .encode(&enc, &mut again)
            .unwrap();
        assert_eq!(&again[..], &buf[..], "re-encoding gives the same bytes");
        assert_eq!(dec.decode().unwrap(), None);
        dec.finish().unwrap();
    }
}

#[test]
fn stream_in_any_chunking_decodes_to_the_same_frames() {
    let mut rng = Rng::new(0x5eed_0002);
    for round in 0..300 {
        let n = 1 + rng.below(40) as usize;
        let msgs: Vec<Message> = (0..n).map(|_| random_message(&mut rng, 300)).collect();
        let stream = encode_all(&msgs);
        let whole = decode_chunked(&stream, &[stream.len()]);
        assert_eq!(whole, (msgs.clone(), None), "round {round}: whole stream");
        let ones = decode_chunked(&stream, &[1]);
        assert_eq!(ones, (msgs.clone(), None), "round {round}: 1-byte chunks");
        let sizes: Vec<usize> = (0..1 + rng.below(8))
            .map(|_| 1 + rng.below(97) as usize)
            .collect();
        let random = decode_chunked(&stream, &sizes);
        assert_eq!(random, (msgs, None), "round {round}: chunks {sizes:?}");
    }
}

#[test]
fn a_corrupted_byte_anywhere_in_a_frame_is_caught() {
    let mut rng = Rng::new(0x5eed_0003);
    let mut checked = 0u64;
    for _ in 0..150 {
        let msg = random_message(&mut rng, 200);
        let clean = encode_all(std::slice::from_ref(&msg));
        for pos in 0..clean.len() {
            let mut bad = clean.to_vec();
            // A random non-zero XOR mask: 1 to 8 bits flipped in this byte.
            bad[pos] ^= 1 + rng.below(255) as u8;
            let (frames, err) = decode_chunked(&bad, &[bad.len()]);
            assert!(
                err.is_some(),
                "flip at byte {pos} of {:?} went unnoticed: decoded {frames:?}",
                msg.kind()
            );
            assert!(frames.is_empty(), "a corrupted frame was delivered");
            checked += 1;
        }
    }
    assert!(checked > 5_000);
}

#[test]
fn frames_before_a_bad_frame_are_all_delivered() {
    let mut rng = Rng::new(0x5eed_0004);
    for _ in 0..200 {
        let n = 1 + rng.below(20) as usize;
        let msgs: Vec<Message> = (0..n).map(|_| random_message(&mut rng, 100)).collect();
        let mut stream = encode_all(&msgs).to_vec();
        let good_len = stream.len();
        stream.extend_from_slice(b"garbage that is not a frame at all");
        let (frames, err) = decode_chunked(&stream, &[1 + rng.below(50) as usize]);
        assert_eq!(frames, msgs, "everything before the garbage is delivered");
        assert!(matches!(err, Some(WireError::BadMagic { .. })), "{err:?}");
        // The error does not depend on how the stream was split.
        assert_eq!(decode_chunked(&stream, &[1]), (msgs.clone(), err));
        // The decoder reports where the bad frame starts.
        let mut dec = Decoder::default();
        dec.extend(&stream);
        while let Ok(Some(_)) = dec.decode() {}
        assert_eq!(dec.position(), good_len as u64);
    }
}
