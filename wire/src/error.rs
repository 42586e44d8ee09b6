//! Typed errors of the wire layer.

use crate::body::ErrorCode;
use crate::header::{Kind, MAGIC, VERSION};

/// Why a byte stream is not a valid frame sequence. The decoder that returns one
/// is poisoned: the stream cannot be resynchronised, the peer gets ERROR
/// ([`WireError::error_code`]) and is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The `magic` field is not `0x5956`: not a Verity stream, or framing was lost.
    BadMagic { found: u16 },
    /// The `version` field names a protocol version this side does not speak.
    UnsupportedVersion { found: u8 },
    /// `frame_len` is below the header size or above the configured maximum.
    BadLength { len: u32, min: u32, max: u32 },
    /// The stored CRC32C does not match the frame's bytes.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The `kind` field is not a kind of this protocol version.
    UnknownKind { kind: u8 },
    /// A header field other than the above is invalid (reserved bits, flags).
    MalformedHeader { kind: Kind, field: &'static str },
    /// The body does not fit the kind's layout.
    MalformedBody { kind: Kind, reason: &'static str },
    /// The stream ended inside a frame.
    Truncated { buffered: usize },
}

impl WireError {
    /// The ERROR code to send to the peer before closing.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            WireError::UnsupportedVersion { .. } => ErrorCode::VersionUnsupported,
            _ => ErrorCode::Protocol,
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            WireError::BadMagic { found } => write!(
                f,
                "bad magic {found:#06x} (expected {MAGIC:#06x}): not a Verity stream or framing lost"
            ),
            WireError::UnsupportedVersion { found } => write!(
                f,
                "unsupported protocol version {found} (this side speaks {VERSION})"
            ),
            WireError::BadLength { len, min, max } => {
                write!(f, "bad frame length {len} (must be {min}..={max} bytes)")
            }
            WireError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: frame says {stored:#010x}, bytes give {computed:#010x} (corrupted in transit)"
            ),
            WireError::UnknownKind { kind } => write!(f, "unknown frame kind {kind}"),
            WireError::MalformedHeader { kind, field } => {
                write!(f, "malformed {kind} header: invalid {field}")
            }
            WireError::MalformedBody { kind, reason } => {
                write!(f, "malformed {kind} body: {reason}")
            }
            WireError::Truncated { buffered } => write!(
                f,
                "stream ended inside a frame ({buffered} bytes of it buffered)"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// Why a frame could not be encoded. Nothing is appended to the buffer then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The frame would exceed the encoder's `max_frame_len`.
    TooLarge { frame_len: usize, max: u32 },
    /// An ERROR text longer than [`crate::body::MAX_ERROR_TEXT_LEN`].
    ErrorTextTooLong { len: usize },
    /// A HELLO whose `version_min` is above its `version_max`.
    HelloVersions { min: u8, max: u8 },
    /// NACK ranges that break the body's rules (`wire/PROTOCOL.md`).
    NackRanges { reason: &'static str },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EncodeError::TooLarge { frame_len, max } => {
                write!(f, "frame of {frame_len} bytes exceeds max_frame_len {max}")
            }
            EncodeError::ErrorTextTooLong { len } => write!(
                f,
                "ERROR text of {len} bytes exceeds {} bytes",
                crate::body::MAX_ERROR_TEXT_LEN
            ),
            EncodeError::HelloVersions { min, max } => {
                write!(f, "HELLO version_min {min} is above version_max {max}")
            }
            EncodeError::NackRanges { reason } => write!(f, "NACK ranges: {reason}"),
        }
    }
}

impl std::error::Error for EncodeError {}
