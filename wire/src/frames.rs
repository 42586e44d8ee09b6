//! Facts about whole frames that more than one endpoint needs.
//!
//! [`content_crc`]: the checksum a DATA frame would carry with flag `RESEND`
//! clear. A producer's first send and every resend of a seq must carry the
//! same bytes (`wire/PROTOCOL.md`, connection rule 8); only the `RESEND` flag
//! may differ, and it changes the frame's checksum. Consumers keep the
//! content CRC of each frame they accept and compare a later duplicate's
//! with it: a different one is a conflicting duplicate (another producer, or
//! a producer that changed a record it already sent), a protocol violation.

use crate::decode::FrameView;
use crate::header::{flags, HEADER_LEN};

/// The CRC32C the DATA frame `view` would carry with flag `RESEND` clear:
/// its own checksum when the flag is clear (no work on the first-send path),
/// else recomputed over its bytes with the flag cleared. Padding is zero
/// (the decoder checks it), so two frames of the same seq with the same
/// content CRC carry the same header fields and payload.
pub fn content_crc(view: &FrameView<'_>) -> u32 {
    let h = view.header;
    if h.flags() & flags::RESEND == 0 {
        return h.crc32c();
    }
    let mut header = *h;
    header.flags = (h.flags() & !flags::RESEND).into();
    let bytes = zerocopy::IntoBytes::as_bytes(&header);
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(&bytes[4..HEADER_LEN]);
    d.update(view.payload);
    let pad = view.stride - HEADER_LEN - view.payload.len();
    d.update(&[0u8; 8][..pad]);
    // CRC-32 values fit in the low 32 bits of crc-fast's result.
    d.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Encoder};
    use bytes::BytesMut;

    fn data(resend: bool, payload: &[u8], trace: u64) -> BytesMut {
        let mut b = BytesMut::new();
        Encoder::default()
            .data(&mut b, 3, 17, trace, resend, payload)
            .unwrap();
        b
    }

    #[test]
    fn a_resend_has_the_content_crc_of_its_first_send() {
        for len in [0usize, 1, 5, 8, 13, 64, 1000] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let first = data(false, &payload, 9);
            let again = data(true, &payload, 9);
            let (a, b) = (
                parse(&first, 1 << 20).unwrap().unwrap(),
                parse(&again, 1 << 20).unwrap().unwrap(),
            );
            assert_ne!(a.header.crc32c(), b.header.crc32c(), "len {len}");
            assert_eq!(content_crc(&a), content_crc(&b), "len {len}");
            assert_eq!(content_crc(&a), a.header.crc32c());
        }
    }

    #[test]
    fn other_content_or_trace_id_has_another_content_crc() {
        let a = data(false, b"hello", 9);
        let b = data(true, b"hellp", 9);
        let c = data(true, b"hello", 10);
        let crc = |f: &BytesMut| content_crc(&parse(f, 1 << 20).unwrap().unwrap());
        assert_ne!(crc(&a), crc(&b));
        assert_ne!(crc(&a), crc(&c));
    }
}
