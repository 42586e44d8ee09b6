//! Facts about whole frames that more than one endpoint needs: the one
//! place outside the decoder that walks frames by their header fields.
//!
//! - [`frames`]: the frames of a run of whole frames back to back (a log
//!   record's payload, a batch the node encoded), each as a [`FrameSpan`]
//!   (offset, stride, header in place). For bytes validated before (a log
//!   record's CRC covers its frames; the node's encoder wrote them): no
//!   checksum, magic or kind check. A peer's bytes go through
//!   [`crate::Decoder`] / [`crate::parse`] instead.
//! - [`set_resend_flag`]: sets flag `RESEND` on a whole DATA frame in place
//!   and recomputes its checksum (a producer's resend).
//! - [`content_crc`]: the checksum a DATA frame would carry with flag
//!   `RESEND` clear. A producer's first send and every resend of a seq must
//!   carry the same bytes (`wire/PROTOCOL.md`, connection rule 8); only the
//!   `RESEND` flag may differ, and it changes the frame's checksum.
//!   Consumers keep the content CRC of each frame they accept and compare a
//!   later duplicate's with it: a different one is a conflicting duplicate
//!   (another producer, or a producer that changed a record it already
//!   sent), a protocol violation.
//!
//! [`Header::peek`] reads one validated frame's header in place.

use core::iter::FusedIterator;

use crate::decode::FrameView;
use crate::encode::frame_crc;
use crate::header::{flags, stride, Header, Kind, HEADER_LEN};

/// One whole frame of a run (see [`frames`]).
#[derive(Debug, Clone, Copy)]
pub struct FrameSpan<'a> {
    /// The frame's seq (its header's `seq` field).
    pub seq: u64,
    /// Byte offset of the frame in the run.
    pub offset: usize,
    /// Bytes the frame occupies in the run: `align8(frame_len)`.
    pub stride: usize,
    /// The frame's header, in place.
    pub header: &'a Header,
    /// The whole frame, padding included: `run[offset..offset + stride]`.
    pub bytes: &'a [u8],
}

impl<'a> FrameSpan<'a> {
    /// The frame's payload: bytes `HEADER_LEN..frame_len`.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let end = (self.header.frame_len() as usize).min(self.bytes.len());
        self.bytes.get(HEADER_LEN..end).unwrap_or(&[])
    }
}

/// The frames of `run`, a run of whole frames back to back, in order. Reads
/// only `frame_len` to find each frame's end: for bytes validated before.
/// Stops (and stays stopped) at the first bytes that are not a whole frame:
/// fewer than a header left, a `frame_len` below [`HEADER_LEN`], or a stride
/// past the end of the run. Never panics; [`Frames::offset`] then says
/// where the whole frames end.
#[inline]
pub fn frames(run: &[u8]) -> Frames<'_> {
    Frames { run, at: 0 }
}

/// Iterator of [`frames`].
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    run: &'a [u8],
    at: usize,
}

impl Frames<'_> {
    /// Where the next frame starts: after the last frame returned (the end
    /// of the whole frames once the iterator has stopped).
    #[inline]
    pub fn offset(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = FrameSpan<'a>;

    #[inline]
    fn next(&mut self) -> Option<FrameSpan<'a>> {
        let rest = self.run.get(self.at..)?;
        let header = Header::peek(rest)?;
        let len = header.frame_len() as usize;
        if len < HEADER_LEN {
            return None;
        }
        let stride = stride(len);
        let bytes = rest.get(..stride)?;
        let span = FrameSpan {
            seq: header.seq(),
            offset: self.at,
            stride,
            header,
            bytes,
        };
        self.at += stride;
        Some(span)
    }
}

impl FusedIterator for Frames<'_> {}

/// Sets flag `RESEND` on the DATA frame at the start of `frame` (whole,
/// validated before: the node's own, from its outbound log) and recomputes
/// its checksum, in place. Returns `false`, changing nothing, when `frame`
/// does not start with a whole DATA frame.
pub fn set_resend_flag(frame: &mut [u8]) -> bool {
    let Some(span) = frames(frame).next() else {
        return false;
    };
    if span.header.kind() != Some(Kind::Data) {
        return false;
    }
    let stride = span.stride;
    let Some(h) = Header::peek_mut(frame) else {
        return false;
    };
    h.flags = (h.flags() | flags::RESEND).into();
    let crc = frame_crc(&frame[..stride]);
    if let Some(h) = Header::peek_mut(frame) {
        h.crc32c = crc.into();
    }
    true
}

/// The CRC32C the DATA frame `view` would carry with flag `RESEND` clear:
/// its own checksum when the flag is clear (no work on the first-send path),
/// else recomputed over its bytes with the flag cleared. Padding is zero
/// (the decoder checks it), so two frames of the same seq with the same
/// content CRC carry the same header fields and payload.
#[inline]
pub fn content_crc(view: &FrameView<'_>) -> u32 {
    let h = view.header;
    if h.flags() & flags::RESEND == 0 {
        return h.crc32c();
    }
    resent_content_crc(view)
}

/// [`content_crc`] of a frame flagged `RESEND`: the checksum recomputed
/// with the flag clear (resends only, off the first-send path).
#[cold]
#[inline(never)]
fn resent_content_crc(view: &FrameView<'_>) -> u32 {
    let h = view.header;
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

    /// DATA frames with payloads of 0..=12 bytes (every padding length),
    /// seqs 10.., back to back; and each frame's (offset, stride).
    fn run() -> (BytesMut, Vec<(usize, usize)>) {
        let mut b = BytesMut::new();
        let mut spans = Vec::new();
        for (i, len) in (0..=12usize).enumerate() {
            let at = b.len();
            let payload: Vec<u8> = (0..len as u8).collect();
            Encoder::default()
                .data(&mut b, 7, 10 + i as u64, 100 + i as u64, false, &payload)
                .unwrap();
            spans.push((at, b.len() - at));
        }
        (b, spans)
    }

    #[test]
    fn frames_walks_a_run_of_whole_frames() {
        let (b, spans) = run();
        let got: Vec<FrameSpan<'_>> = frames(&b).collect();
        assert_eq!(got.len(), spans.len());
        for (i, (f, &(at, stride))) in got.iter().zip(&spans).enumerate() {
            assert_eq!((f.offset, f.stride), (at, stride));
            assert_eq!(f.seq, 10 + i as u64);
            assert_eq!(f.header.trace_id(), 100 + i as u64);
            assert_eq!(f.bytes, &b[at..at + stride]);
            let v = parse(f.bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(f.header, v.header);
            assert_eq!(f.payload(), v.payload);
            assert_eq!(f.payload().len(), i);
        }
        let mut it = frames(&b);
        it.by_ref().for_each(drop);
        assert_eq!(it.offset(), b.len());
        assert_eq!(frames(&[]).count(), 0);
    }

    #[test]
    fn a_truncated_run_yields_its_whole_frames_then_stops() {
        let (b, spans) = run();
        for cut in 0..=b.len() {
            let whole = spans.iter().filter(|&&(at, s)| at + s <= cut).count();
            let mut it = frames(&b[..cut]);
            assert_eq!(it.by_ref().count(), whole, "cut {cut}");
            let end = spans.get(whole).map_or(b.len(), |s| s.0);
            assert_eq!(it.offset(), end, "cut {cut}");
            // Stopped for good.
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn frames_stops_at_a_frame_len_that_cannot_be_a_frame() {
        let (b, spans) = run();
        let second = spans[1].0;
        for bad in [0u32, 1, HEADER_LEN as u32 - 1, u32::MAX] {
            let mut v = b.to_vec();
            v[second + crate::LEN_OFFSET..second + crate::LEN_OFFSET + 4]
                .copy_from_slice(&bad.to_le_bytes());
            let mut it = frames(&v);
            assert_eq!(it.by_ref().count(), 1, "frame_len {bad}");
            assert_eq!(it.offset(), second);
        }
        // Garbage of every length never panics.
        let junk: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        for n in 0..junk.len() {
            let _ = frames(&junk[..n]).count();
        }
    }

    #[test]
    fn peek_reads_a_header_in_place_at_the_named_offsets() {
        let f = data(false, b"abc", 0x1122_3344_5566_7788);
        assert!(Header::peek(&f[..HEADER_LEN - 1]).is_none());
        let h = Header::peek(&f).unwrap();
        assert_eq!(h, parse(&f, 1 << 20).unwrap().unwrap().header);
        let le32 = |at: usize| u32::from_le_bytes(f[at..at + 4].try_into().unwrap());
        let le64 = |at: usize| u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
        assert_eq!(h.crc32c(), le32(crate::CRC_OFFSET));
        assert_eq!(h.frame_len(), le32(crate::LEN_OFFSET));
        assert_eq!(h.kind, f[crate::KIND_OFFSET]);
        assert_eq!(
            h.flags(),
            u16::from_le_bytes(
                f[crate::FLAGS_OFFSET..crate::FLAGS_OFFSET + 2]
                    .try_into()
                    .unwrap()
            )
        );
        assert_eq!(h.channel(), le32(crate::CHANNEL_OFFSET));
        assert_eq!(h.epoch(), le32(crate::EPOCH_OFFSET));
        assert_eq!((h.channel(), h.seq()), (3, 17));
        assert_eq!(h.seq(), le64(crate::SEQ_OFFSET));
        assert_eq!(h.trace_id(), le64(crate::TRACE_ID_OFFSET));
    }

    #[test]
    fn set_resend_flag_makes_the_encoders_resend() {
        for len in [0usize, 1, 5, 8, 13, 64] {
            let payload: Vec<u8> = (0..len as u8).collect();
            let mut f = data(false, &payload, 9);
            let want = data(true, &payload, 9);
            // A following frame is left alone.
            let next = data(false, b"next", 10);
            f.extend_from_slice(&next);
            assert!(set_resend_flag(&mut f));
            assert_eq!(&f[..want.len()], &want[..], "len {len}");
            assert_eq!(&f[want.len()..], &next[..]);
            // Idempotent; the content CRC is the first send's.
            assert!(set_resend_flag(&mut f));
            assert_eq!(&f[..want.len()], &want[..]);
            let v = parse(&f, 1 << 20).unwrap().unwrap();
            let first = data(false, &payload, 9);
            assert_eq!(content_crc(&v), Header::peek(&first).unwrap().crc32c());
        }
    }

    #[test]
    fn set_resend_flag_leaves_what_is_not_a_whole_data_frame() {
        let f = data(false, b"hello", 9);
        for cut in 0..f.len() {
            let mut g = f[..cut].to_vec();
            assert!(!set_resend_flag(&mut g), "cut {cut}");
            assert_eq!(g, &f[..cut]);
        }
        let mut ack = BytesMut::new();
        Encoder::default().ack(&mut ack, 3, 1, 17).unwrap();
        let before = ack.clone();
        assert!(!set_resend_flag(&mut ack));
        assert_eq!(ack, before);
    }
}
