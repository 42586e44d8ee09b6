//! Decoding: [`parse`] validates one frame at the start of a byte slice and views
//! it in place; [`Decoder`] runs it incrementally over a byte stream and hands
//! out whole frames as [`Frame`]s that share the receive buffer (no copy, no
//! allocation per frame).

use bytes::{Buf, Bytes, BytesMut};
use zerocopy::FromBytes;

use crate::body::{
    ErrorBody, ErrorCode, HelloBody, NackRange, ResumeEntry, Role, ERROR_BODY_FIXED_LEN,
    HELLO_BODY_LEN, MAX_ERROR_TEXT_LEN, RESUME_ENTRY_LEN,
};
use crate::encode::frame_crc;
use crate::error::WireError;
use crate::header::{
    stride, Header, Kind, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, KIND_OFFSET, LEN_OFFSET, MAGIC,
    MAGIC_OFFSET, MAX_FRAME_LEN_LIMIT, VERSION, VERSION_OFFSET,
};

/// A validated frame viewed in place: header and payload borrow the buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    pub header: &'a Header,
    pub payload: &'a [u8],
    /// Bytes the frame occupies in the stream (`align8(frame_len)`).
    pub stride: usize,
}

impl<'a> FrameView<'a> {
    pub fn kind(&self) -> Kind {
        // `parse` only returns frames of known kinds.
        Kind::from_u8(self.header.kind).unwrap_or(Kind::Data)
    }

    /// The HELLO body, if this is a HELLO.
    pub fn hello(&self) -> Option<&'a HelloBody> {
        if self.header.kind != Kind::Hello as u8 {
            return None;
        }
        HelloBody::ref_from_bytes(self.payload).ok()
    }

    /// The RESUME entries, if this is a RESUME.
    pub fn resume_entries(&self) -> Option<&'a [ResumeEntry]> {
        if self.header.kind != Kind::Resume as u8 {
            return None;
        }
        <[ResumeEntry]>::ref_from_bytes(self.payload).ok()
    }

    /// The ranges this NACK names (empty: every seq from the header's on;
    /// `None`: not a NACK).
    pub fn nack_ranges(&self) -> Option<&'a [NackRange]> {
        if self.header.kind != Kind::Nack as u8 {
            return None;
        }
        <[NackRange]>::ref_from_bytes(self.payload).ok()
    }

    /// The `delivered` this RESUME names for `channel` (`None`: not a
    /// RESUME, or no entry for it).
    pub fn resume_delivered(&self, channel: u32) -> Option<u64> {
        self.resume_entries()?
            .iter()
            .find(|e| e.channel.get() == channel)
            .map(|e| e.delivered.get())
    }

    /// ERROR code and text, if this is an ERROR.
    pub fn error(&self) -> Option<(ErrorCode, &'a str)> {
        if self.header.kind != Kind::Error as u8 {
            return None;
        }
        let (fixed, text) = ErrorBody::ref_from_prefix(self.payload).ok()?;
        let code = ErrorCode::from_u32(fixed.code.get())?;
        let text = core::str::from_utf8(text).ok()?;
        Some((code, text))
    }
}

/// Validates the frame at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only a prefix of a frame that is valid so
/// far (checks run on as many header bytes as are present, so garbage is
/// rejected after at most 12 bytes), `Ok(Some(view))` for a whole valid frame, and an error
/// otherwise. Never reads past the frame's stride and never panics.
///
/// Always inlined: returned from a call, the view travels through memory,
/// written as 8-byte stores and read back by the caller as 16-byte loads,
/// which the store buffer cannot forward (a stall per frame; ~4% of the
/// doubler node's time sat on that load).
#[inline(always)]
pub fn parse(buf: &[u8], max_frame_len: u32) -> Result<Option<FrameView<'_>>, WireError> {
    parse_checked::<true>(buf, max_frame_len)
}

/// [`parse`] without the frame's CRC32C: for bytes a checksum of their
/// own already covers (a journal record, whose CRC the log checked when it
/// read it back, holds frames that were checked when they arrived). Every
/// other check runs.
#[inline(always)]
pub fn parse_covered(buf: &[u8], max_frame_len: u32) -> Result<Option<FrameView<'_>>, WireError> {
    parse_checked::<false>(buf, max_frame_len)
}

#[inline(always)]
fn parse_checked<const CRC: bool>(
    buf: &[u8],
    max_frame_len: u32,
) -> Result<Option<FrameView<'_>>, WireError> {
    let have = buf.len();
    if have >= MAGIC_OFFSET + 2 {
        let magic = u16::from_le_bytes([buf[MAGIC_OFFSET], buf[MAGIC_OFFSET + 1]]);
        if magic != MAGIC {
            return Err(WireError::BadMagic { found: magic });
        }
    }
    if have > VERSION_OFFSET && buf[VERSION_OFFSET] != VERSION {
        return Err(WireError::UnsupportedVersion {
            found: buf[VERSION_OFFSET],
        });
    }
    // The checks run in a fixed order (magic, version, length, kind, checksum,
    // header fields, body), each once the bytes for it and every earlier check
    // are present, so the error a stream yields does not depend on how it was
    // split into reads.
    if have <= VERSION_OFFSET {
        return Ok(None);
    }
    let frame_len = u32::from_le_bytes([
        buf[LEN_OFFSET],
        buf[LEN_OFFSET + 1],
        buf[LEN_OFFSET + 2],
        buf[LEN_OFFSET + 3],
    ]);
    if frame_len < HEADER_LEN as u32 || frame_len > max_frame_len {
        return Err(WireError::BadLength {
            len: frame_len,
            min: HEADER_LEN as u32,
            max: max_frame_len,
        });
    }
    if have <= KIND_OFFSET {
        return Ok(None);
    }
    let Some(kind) = Kind::from_u8(buf[KIND_OFFSET]) else {
        return Err(WireError::UnknownKind {
            kind: buf[KIND_OFFSET],
        });
    };
    let stride = stride(frame_len as usize);
    if have < stride {
        return Ok(None);
    }
    let frame = &buf[..stride];
    let Ok((header, rest)) = Header::ref_from_prefix(frame) else {
        // Unreachable: stride >= HEADER_LEN and Header has alignment 1.
        return Ok(None);
    };
    let computed = if CRC {
        frame_crc(frame)
    } else {
        header.crc32c.get()
    };
    if computed != header.crc32c.get() {
        return Err(WireError::ChecksumMismatch {
            stored: header.crc32c.get(),
            computed,
        });
    }
    if header.reserved.get() != 0 {
        return Err(WireError::MalformedHeader {
            kind,
            field: "reserved (must be zero)",
        });
    }
    if header.flags.get() & !kind.allowed_flags() != 0 {
        return Err(WireError::MalformedHeader {
            kind,
            field: "flags (unknown bits set)",
        });
    }
    if kind == Kind::Data && header.epoch.get() != 0 {
        return Err(WireError::MalformedHeader {
            kind,
            field: "epoch (DATA carries 0)",
        });
    }
    let payload = &rest[..frame_len as usize - HEADER_LEN];
    // Zero padding: two frames with the same header fields and payload
    // have the same checksum (consumers compare resends by it). The
    // padding is the top `pad` bytes of the stride's last 8 (one load, not
    // a loop: this runs for every frame).
    let pad = stride - frame_len as usize;
    let last8 = u64::from_le_bytes(frame[stride - 8..].try_into().unwrap_or([0; 8]));
    if pad > 0 && last8 >> ((8 - pad) * 8) != 0 {
        return Err(WireError::MalformedBody {
            kind,
            reason: "padding after the payload not zero",
        });
    }
    // A DATA body is the app's: nothing to check (and no call per record).
    if kind != Kind::Data {
        check_body(kind, header, payload)?;
    }
    Ok(Some(FrameView {
        header,
        payload,
        stride,
    }))
}

fn check_body(kind: Kind, header: &Header, payload: &[u8]) -> Result<(), WireError> {
    let bad = |reason| Err(WireError::MalformedBody { kind, reason });
    match kind {
        Kind::Data => Ok(()),
        Kind::Nack => {
            let Ok(ranges) = <[NackRange]>::ref_from_bytes(payload) else {
                return bad("length is not a multiple of 16");
            };
            let pairs = ranges.iter().map(|r| (r.first.get(), r.last.get()));
            match crate::body::nack_ranges_fault(header.seq(), pairs) {
                Some(reason) => bad(reason),
                None => Ok(()),
            }
        }
        Kind::Ack | Kind::Heartbeat => {
            if !payload.is_empty() {
                return bad("must be empty");
            }
            Ok(())
        }
        Kind::Hello => {
            if payload.len() != HELLO_BODY_LEN {
                return bad("length is not 80 bytes");
            }
            let Ok(body) = HelloBody::ref_from_bytes(payload) else {
                return bad("length is not 80 bytes");
            };
            if Role::from_u16(body.role.get()).is_none() {
                return bad("unknown role");
            }
            if body.version_min > body.version_max {
                return bad("version_min above version_max");
            }
            let has_response = header.flags.get() & crate::header::flags::HELLO_RESPONSE != 0;
            if !has_response && body.response != [0u8; 32] {
                return bad("response set without flag HELLO_RESPONSE");
            }
            Ok(())
        }
        Kind::Resume => {
            if !payload.len().is_multiple_of(RESUME_ENTRY_LEN) {
                return bad("length is not a multiple of 16");
            }
            let Ok(entries) = <[ResumeEntry]>::ref_from_bytes(payload) else {
                return bad("length is not a multiple of 16");
            };
            if entries.iter().any(|e| e.reserved.get() != 0) {
                return bad("entry reserved field not zero");
            }
            Ok(())
        }
        Kind::Error => {
            let Ok((fixed, text)) = ErrorBody::ref_from_prefix(payload) else {
                return bad("shorter than 8 bytes");
            };
            debug_assert!(payload.len() >= ERROR_BODY_FIXED_LEN);
            if ErrorCode::from_u32(fixed.code.get()).is_none() {
                return bad("unknown error code");
            }
            if fixed.reserved.get() != 0 {
                return bad("reserved field not zero");
            }
            if text.len() > MAX_ERROR_TEXT_LEN {
                return bad("text longer than 4096 bytes");
            }
            if core::str::from_utf8(text).is_err() {
                return bad("text is not UTF-8");
            }
            Ok(())
        }
    }
}

/// A whole, validated frame that owns (a shared slice of) the receive buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame's stride: header, payload, padding.
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes holding exactly one frame stride, validating them.
    pub fn from_bytes(bytes: Bytes, max_frame_len: u32) -> Result<Frame, WireError> {
        match parse(&bytes, max_frame_len)? {
            Some(view) if view.stride == bytes.len() => Ok(Frame { bytes }),
            Some(_) => Err(WireError::MalformedBody {
                kind: Kind::from_u8(bytes[KIND_OFFSET]).unwrap_or(Kind::Data),
                reason: "bytes after the frame",
            }),
            None => Err(WireError::Truncated {
                buffered: bytes.len(),
            }),
        }
    }

    /// The header, in place.
    #[inline]
    pub fn header(&self) -> &Header {
        // Cannot fail: a Frame is built only from a validated stride, which is at
        // least HEADER_LEN bytes, and Header has alignment 1.
        match Header::ref_from_prefix(&self.bytes) {
            Ok((h, _)) => h,
            Err(_) => unreachable!("Frame holds a validated header"),
        }
    }

    #[inline]
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.bytes[KIND_OFFSET]).unwrap_or(Kind::Data)
    }

    /// The payload as a borrowed slice.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.header().frame_len() as usize]
    }

    /// The payload as a `Bytes` sharing the receive buffer (no copy).
    #[inline]
    pub fn payload_bytes(&self) -> Bytes {
        self.bytes
            .slice(HEADER_LEN..self.header().frame_len() as usize)
    }

    /// The frame's stride as sent (header, payload, padding).
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// A borrowed view with the typed body accessors.
    #[inline]
    pub fn view(&self) -> FrameView<'_> {
        FrameView {
            header: self.header(),
            payload: self.payload(),
            stride: self.bytes.len(),
        }
    }
}

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frame")
            .field("header", self.header())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

/// Incremental decoder over a byte stream.
///
/// Bytes go in with [`Decoder::extend`] or by reading straight into
/// [`Decoder::read_buf`]; whole frames come out of [`Decoder::decode`]. Frames
/// may arrive split at any byte. After an error the decoder is poisoned and
/// returns that error again: a framed stream cannot be resynchronised.
///
/// ```
/// use bytes::BytesMut;
/// use verity_wire::{Decoder, Encoder};
///
/// let mut out = BytesMut::new();
/// let enc = Encoder::default();
/// enc.data(&mut out, 7, 1, 0xabc, false, b"hello").unwrap();
/// enc.ack(&mut out, 7, 1, 1).unwrap();
///
/// let mut dec = Decoder::default();
/// for chunk in out.chunks(3) {
///     dec.extend(chunk); // as if from a socket, 3 bytes at a time
///     while let Some(frame) = dec.decode().unwrap() {
///         println!("{} seq {}", frame.kind(), frame.header().seq());
///     }
/// }
/// dec.finish().unwrap(); // nothing left half-way
/// ```
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame_len: u32,
    /// Stream offset of `buf[0]`.
    position: u64,
    poisoned: Option<WireError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder {
    /// `max_frame_len` is clamped to `HEADER_LEN..=MAX_FRAME_LEN_LIMIT`.
    pub fn new(max_frame_len: u32) -> Decoder {
        Decoder::with_capacity(max_frame_len, 64 * 1024)
    }

    pub fn with_capacity(max_frame_len: u32, capacity: usize) -> Decoder {
        Decoder {
            buf: BytesMut::with_capacity(capacity),
            max_frame_len: max_frame_len.clamp(HEADER_LEN as u32, MAX_FRAME_LEN_LIMIT),
            position: 0,
            poisoned: None,
        }
    }

    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Changes the bound on `frame_len` for the frames not yet decoded
    /// (e.g. from [`crate::HANDSHAKE_MAX_FRAME_LEN`] to the configured one
    /// once a handshake completes); clamped as in [`Decoder::new`].
    pub fn set_max_frame_len(&mut self, max_frame_len: u32) {
        self.max_frame_len = max_frame_len.clamp(HEADER_LEN as u32, MAX_FRAME_LEN_LIMIT);
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, to read into directly (reserve, then read into its
    /// spare capacity). Bytes already in it must not be changed.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Stream offset where the next frame starts (after an error: where the
    /// offending frame starts).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    #[inline]
    pub fn decode(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        match parse(&self.buf, self.max_frame_len) {
            Ok(Some(view)) => {
                let stride = view.stride;
                self.position += stride as u64;
                let bytes = self.buf.split_to(stride).freeze();
                Ok(Some(Frame { bytes }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.poisoned = Some(e);
                Err(e)
            }
        }
    }

    /// The bytes buffered and not yet consumed, for callers that walk frames
    /// in place with [`parse`] (no `Frame` per frame) and then [`Decoder::consume`].
    pub fn buffered_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes `n` buffered bytes that the caller walked with [`parse`]
    /// (whole frames). `n` is clamped to what is buffered.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.advance(n);
        self.position += n as u64;
    }

    /// Marks the stream bad (the caller's `parse` returned `e` at the current
    /// position): later calls return `e`.
    pub fn poison(&mut self, e: WireError) {
        self.poisoned = Some(e);
    }

    /// The error the stream is poisoned with, if any.
    pub fn poisoned(&self) -> Option<WireError> {
        self.poisoned
    }

    /// Declares the end of the stream: an error if it stopped inside a frame.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}
