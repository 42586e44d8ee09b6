//! Encoder: appends whole frames to one `BytesMut`, so many frames leave in one write.

use bytes::{BufMut, BytesMut};
use zerocopy::IntoBytes;

use crate::body::{
    ErrorBody, ErrorCode, HelloBody, ResumeEntry, Role, ERROR_BODY_FIXED_LEN, MAX_ERROR_TEXT_LEN,
};
use crate::error::EncodeError;
use crate::header::{
    flags, stride, Header, Kind, CRC_OFFSET, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, MAX_FRAME_LEN_LIMIT,
};

/// CRC32C of a frame's stride (`align8(frame_len)` bytes) after the `crc32c`
/// field: bytes `4..stride`. Both encoder and decoder use this one function.
#[inline]
pub fn frame_crc(stride_bytes: &[u8]) -> u32 {
    debug_assert!(stride_bytes.len() >= HEADER_LEN);
    crc32c(&stride_bytes[CRC_OFFSET + 4..])
}

/// `dst.copy_from_slice(src)`, with the common 8- and 16-byte payloads
/// copied inline rather than through a `memcpy` call.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    match (
        <&mut [u8; 8]>::try_from(&mut *dst),
        <&[u8; 8]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => match (
            <&mut [u8; 16]>::try_from(&mut *dst),
            <&[u8; 16]>::try_from(src),
        ) {
            (Ok(d), Ok(s)) => *d = *s,
            _ => dst.copy_from_slice(src),
        },
    }
}

/// [`frame_crc`] of a frame the encoder has just written (same value; a
/// kernel suited to bytes still in the store buffer, see
/// [`crate::crc::crc32c_fresh`]).
#[inline]
fn fresh_frame_crc(stride_bytes: &[u8]) -> u32 {
    debug_assert!(stride_bytes.len() >= HEADER_LEN);
    crate::crc::crc32c_fresh(&stride_bytes[CRC_OFFSET + 4..])
}

/// CRC32C (Castagnoli, as iSCSI and ext4 use it), SIMD-accelerated: see
/// `crc.rs` for the kernel and its fallback.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crate::crc::crc32c(bytes)
}

/// The HELLO fields a sender fills in (the epoch travels in the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hello {
    pub cluster_id: u64,
    pub node_id: u32,
    pub role: Role,
    pub version_min: u8,
    pub version_max: u8,
    pub challenge: [u8; 32],
    /// `Some` answers the peer's challenge (sets flag `HELLO_RESPONSE`).
    pub response: Option<[u8; 32]>,
}

impl Hello {
    pub fn to_body(&self) -> HelloBody {
        HelloBody {
            cluster_id: self.cluster_id.into(),
            node_id: self.node_id.into(),
            role: (self.role as u16).into(),
            version_min: self.version_min,
            version_max: self.version_max,
            challenge: self.challenge,
            response: self.response.unwrap_or([0; 32]),
        }
    }
}

/// Appends frames to a buffer. Each call writes one whole frame (header,
/// payload, zero padding to 8 bytes, checksum) or nothing at all.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    max_frame_len: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Encoder {
    /// `max_frame_len` is clamped to `HEADER_LEN..=MAX_FRAME_LEN_LIMIT`.
    pub fn new(max_frame_len: u32) -> Encoder {
        Encoder {
            max_frame_len: max_frame_len.clamp(HEADER_LEN as u32, MAX_FRAME_LEN_LIMIT),
        }
    }

    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Largest DATA payload this encoder accepts.
    pub fn max_payload_len(&self) -> usize {
        self.max_frame_len as usize - HEADER_LEN
    }

    /// The generic frame writer: `fill` writes exactly `payload_len` bytes into
    /// the slice it is given (in place in `buf`, no intermediate copy).
    /// Returns the stride appended.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn frame_with(
        &self,
        buf: &mut BytesMut,
        kind: Kind,
        flags: u16,
        channel: u32,
        epoch: u32,
        seq: u64,
        trace_id: u64,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, EncodeError> {
        let frame_len = HEADER_LEN + payload_len;
        if frame_len > self.max_frame_len as usize {
            return Err(EncodeError::TooLarge {
                frame_len,
                max: self.max_frame_len,
            });
        }
        let stride = stride(frame_len);
        let start = buf.len();
        buf.reserve(stride);
        let header = Header::new(kind, flags, frame_len as u32, channel, epoch, seq, trace_id);
        buf.put_slice(header.as_bytes());
        // Grow by the payload and padding, zeroed, then let `fill` write in place.
        buf.put_bytes(0, stride - HEADER_LEN);
        let frame = &mut buf[start..start + stride];
        fill(&mut frame[HEADER_LEN..frame_len]);
        let crc = fresh_frame_crc(frame);
        frame[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(stride)
    }

    /// Appends a frame whose payload is the concatenation of `parts`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn frame(
        &self,
        buf: &mut BytesMut,
        kind: Kind,
        flags: u16,
        channel: u32,
        epoch: u32,
        seq: u64,
        trace_id: u64,
        parts: &[&[u8]],
    ) -> Result<usize, EncodeError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let frame_len = HEADER_LEN + payload_len;
        if frame_len > self.max_frame_len as usize {
            return Err(EncodeError::TooLarge {
                frame_len,
                max: self.max_frame_len,
            });
        }
        let stride = stride(frame_len);
        let start = buf.len();
        buf.reserve(stride);
        let header = Header::new(kind, flags, frame_len as u32, channel, epoch, seq, trace_id);
        // The stride is zeroed (padding included) and filled in place: one
        // capacity check, and a fixed-size header copy the compiler inlines.
        buf.put_bytes(0, stride);
        let frame = &mut buf[start..start + stride];
        let (head, mut rest) = frame.split_at_mut(HEADER_LEN);
        head.copy_from_slice(header.as_bytes());
        for p in parts {
            let (dst, tail) = rest.split_at_mut(p.len());
            copy_short(dst, p);
            rest = tail;
        }
        let crc = fresh_frame_crc(frame);
        frame[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(stride)
    }

    /// DATA: one record on `channel` at `seq`. Its `epoch` is 0: a DATA
    /// frame is immutable once produced and resent byte for byte (only
    /// flag RESEND differs) by whichever instance of its producer.
    #[inline]
    pub fn data(
        &self,
        buf: &mut BytesMut,
        channel: u32,
        seq: u64,
        trace_id: u64,
        resend: bool,
        payload: &[u8],
    ) -> Result<usize, EncodeError> {
        let flags = if resend { flags::RESEND } else { 0 };
        self.frame(
            buf,
            Kind::Data,
            flags,
            channel,
            0,
            seq,
            trace_id,
            &[payload],
        )
    }

    /// ACK: every seq `<= seq` on `channel` is durable at the consumer.
    pub fn ack(
        &self,
        buf: &mut BytesMut,
        channel: u32,
        epoch: u32,
        seq: u64,
    ) -> Result<usize, EncodeError> {
        self.frame(buf, Kind::Ack, 0, channel, epoch, seq, 0, &[])
    }

    /// NACK: resend `channel` from `seq` on (go-back-N).
    pub fn nack(
        &self,
        buf: &mut BytesMut,
        channel: u32,
        epoch: u32,
        seq: u64,
    ) -> Result<usize, EncodeError> {
        self.frame(buf, Kind::Nack, 0, channel, epoch, seq, 0, &[])
    }

    /// NACK naming the ranges of seqs `channel`'s consumer misses
    /// (selective repeat): `first..=last` each, ascending and disjoint, at
    /// most [`crate::MAX_NACK_RANGES`]; the header's seq is the first
    /// range's first. No ranges: as [`Encoder::nack`] from `seq`.
    pub fn nack_ranges(
        &self,
        buf: &mut BytesMut,
        channel: u32,
        epoch: u32,
        seq: u64,
        ranges: &[(u64, u64)],
    ) -> Result<usize, EncodeError> {
        if let Some(reason) = crate::body::nack_ranges_fault(seq, ranges.iter().copied()) {
            return Err(EncodeError::NackRanges { reason });
        }
        let len = ranges.len() * crate::body::NACK_RANGE_LEN;
        self.frame_with(buf, Kind::Nack, 0, channel, epoch, seq, 0, len, |body| {
            for (chunk, &(first, last)) in body.chunks_exact_mut(16).zip(ranges) {
                chunk[..8].copy_from_slice(&first.to_le_bytes());
                chunk[8..].copy_from_slice(&last.to_le_bytes());
            }
        })
    }

    /// HEARTBEAT: `seq` is the highest seq sent on `channel` (0 if none).
    pub fn heartbeat(
        &self,
        buf: &mut BytesMut,
        channel: u32,
        epoch: u32,
        seq: u64,
    ) -> Result<usize, EncodeError> {
        self.frame(buf, Kind::Heartbeat, 0, channel, epoch, seq, 0, &[])
    }

    /// HELLO.
    pub fn hello(
        &self,
        buf: &mut BytesMut,
        epoch: u32,
        hello: &Hello,
    ) -> Result<usize, EncodeError> {
        if hello.version_min > hello.version_max {
            return Err(EncodeError::HelloVersions {
                min: hello.version_min,
                max: hello.version_max,
            });
        }
        let flags = if hello.response.is_some() {
            flags::HELLO_RESPONSE
        } else {
            0
        };
        let body = hello.to_body();
        self.frame(buf, Kind::Hello, flags, 0, epoch, 0, 0, &[body.as_bytes()])
    }

    /// RESUME: the consumer's `delivered` seq per channel.
    pub fn resume(
        &self,
        buf: &mut BytesMut,
        epoch: u32,
        entries: &[ResumeEntry],
    ) -> Result<usize, EncodeError> {
        self.frame(buf, Kind::Resume, 0, 0, epoch, 0, 0, &[entries.as_bytes()])
    }

    /// ERROR: code + text; the sender closes the connection after it.
    pub fn error(
        &self,
        buf: &mut BytesMut,
        epoch: u32,
        code: ErrorCode,
        text: &str,
    ) -> Result<usize, EncodeError> {
        if text.len() > MAX_ERROR_TEXT_LEN {
            return Err(EncodeError::ErrorTextTooLong { len: text.len() });
        }
        let fixed = ErrorBody {
            code: (code as u32).into(),
            reserved: 0.into(),
        };
        debug_assert_eq!(fixed.as_bytes().len(), ERROR_BODY_FIXED_LEN);
        self.frame(
            buf,
            Kind::Error,
            0,
            0,
            epoch,
            0,
            0,
            &[fixed.as_bytes(), text.as_bytes()],
        )
    }
}
