//! Fixed-layout bodies of HELLO, RESUME and ERROR frames (little-endian, read in place).
//!
//! HELLO body, 80 bytes:
//!
//! | offset | size | field       | meaning                                        |
//! |-------:|-----:|-------------|------------------------------------------------|
//! | 0      | 8    | cluster_id  | both sides must agree                          |
//! | 8      | 4    | node_id     | sender's node id (clients: their client id)    |
//! | 12     | 2    | role        | [`Role`]                                       |
//! | 14     | 1    | version_min | lowest protocol version the sender speaks      |
//! | 15     | 1    | version_max | highest protocol version the sender speaks     |
//! | 16     | 32   | challenge   | random nonce the peer must answer              |
//! | 48     | 32   | response    | answer to the peer's challenge (flag `HELLO_RESPONSE`) |
//!
//! RESUME body: `n` entries of 16 bytes: `channel: u32`, `reserved: u32` (zero),
//! `delivered: u64`.
//!
//! NACK body: `n` ranges of 16 bytes (`n` ≤ [`MAX_NACK_RANGES`]):
//! `first: u64`, `last: u64`, the seqs `first..=last` the consumer misses.
//! Empty: every seq from the header's on (go-back-N).
//!
//! ERROR body: `code: u32` ([`ErrorCode`]), `reserved: u32` (zero), then the
//! UTF-8 text (the rest of the payload, at most [`MAX_ERROR_TEXT_LEN`] bytes).

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const HELLO_BODY_LEN: usize = 80;
pub const RESUME_ENTRY_LEN: usize = 16;
pub const ERROR_BODY_FIXED_LEN: usize = 8;
pub const NACK_RANGE_LEN: usize = 16;
/// Most ranges one NACK names (a 1 KiB body).
pub const MAX_NACK_RANGES: usize = 64;
/// Longest ERROR text in bytes.
pub const MAX_ERROR_TEXT_LEN: usize = 4096;

/// HELLO body.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct HelloBody {
    pub cluster_id: U64,
    pub node_id: U32,
    pub role: U16,
    pub version_min: u8,
    pub version_max: u8,
    pub challenge: [u8; 32],
    pub response: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<HelloBody>() == HELLO_BODY_LEN);

/// One RESUME entry.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct ResumeEntry {
    pub channel: U32,
    pub reserved: U32,
    pub delivered: U64,
}
const _: () = assert!(core::mem::size_of::<ResumeEntry>() == RESUME_ENTRY_LEN);

impl ResumeEntry {
    pub fn new(channel: u32, delivered: u64) -> ResumeEntry {
        ResumeEntry {
            channel: U32::new(channel),
            reserved: U32::ZERO,
            delivered: U64::new(delivered),
        }
    }
}

/// One range of a NACK body: the consumer misses seqs `first..=last`.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct NackRange {
    pub first: U64,
    pub last: U64,
}
const _: () = assert!(core::mem::size_of::<NackRange>() == NACK_RANGE_LEN);

impl NackRange {
    pub fn new(first: u64, last: u64) -> NackRange {
        NackRange {
            first: U64::new(first),
            last: U64::new(last),
        }
    }
}

/// Why a NACK's ranges are malformed (`None`: well formed): at most
/// [`MAX_NACK_RANGES`], each `1 <= first <= last`, ascending and disjoint,
/// the first starting at the header's `seq`.
pub fn nack_ranges_fault(
    seq: u64,
    ranges: impl ExactSizeIterator<Item = (u64, u64)>,
) -> Option<&'static str> {
    if ranges.len() > MAX_NACK_RANGES {
        return Some("more than 64 ranges");
    }
    let mut prev: Option<u64> = None;
    for (i, (first, last)) in ranges.enumerate() {
        if first == 0 || first > last {
            return Some("a range is empty or starts at seq 0");
        }
        if i == 0 && first != seq {
            return Some("first range does not start at the header's seq");
        }
        if prev.is_some_and(|p| first <= p) {
            return Some("ranges not ascending and disjoint");
        }
        prev = Some(last);
    }
    None
}

/// The fixed part of an ERROR body; the text follows it.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct ErrorBody {
    pub code: U32,
    pub reserved: U32,
}
const _: () = assert!(core::mem::size_of::<ErrorBody>() == ERROR_BODY_FIXED_LEN);

/// What a HELLO's sender is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u16)]
pub enum Role {
    /// A node of the cluster (node ↔ node channels).
    Node = 1,
    /// An external source client (e.g. `verity-send`).
    Source = 2,
    /// An external sink client (e.g. `verity-recv`'s peer).
    Sink = 3,
    /// An operator tool (inspection, control).
    Tool = 4,
}

impl Role {
    pub fn from_u16(v: u16) -> Option<Role> {
        Some(match v {
            1 => Role::Node,
            2 => Role::Source,
            3 => Role::Sink,
            4 => Role::Tool,
            _ => return None,
        })
    }
}

/// ERROR codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u32)]
pub enum ErrorCode {
    /// A frame failed to decode (bad magic, length, checksum, kind, body).
    Protocol = 1,
    /// HELLO's answer to the challenge was wrong, or the cluster id differs.
    AuthFailed = 2,
    /// No protocol version in common.
    VersionUnsupported = 3,
    /// The sender's epoch is older than one already seen from that node.
    StaleEpoch = 4,
    /// A frame named a channel this peer may not use.
    UnknownChannel = 5,
    /// The node id (or client id) is not in the configuration.
    UnknownPeer = 6,
    /// A configured limit was exceeded (in-flight frames, gap buffer, connections).
    LimitExceeded = 7,
    /// The peer is shutting down.
    ShuttingDown = 8,
    /// A fault inside the peer; the connection may be retried.
    Internal = 9,
    /// This worker is not the home of the source channel named in the
    /// HELLO; the text is the home's source address (`ip:port`), which the
    /// client connects to instead.
    NotHome = 10,
    /// Another connection is producing on the source channel named in the
    /// HELLO; retry later.
    ChannelBusy = 11,
}

impl ErrorCode {
    /// Whether a client may connect again after this error (after a
    /// backoff; `NotHome`: at the address in the text). The others need a
    /// change of configuration or of the client first.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::LimitExceeded
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
                | ErrorCode::NotHome
                | ErrorCode::ChannelBusy
        )
    }

    /// The code's name in `wire/PROTOCOL.md`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Protocol => "PROTOCOL",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::VersionUnsupported => "VERSION_UNSUPPORTED",
            ErrorCode::StaleEpoch => "STALE_EPOCH",
            ErrorCode::UnknownChannel => "UNKNOWN_CHANNEL",
            ErrorCode::UnknownPeer => "UNKNOWN_PEER",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::NotHome => "NOT_HOME",
            ErrorCode::ChannelBusy => "CHANNEL_BUSY",
        }
    }

    pub fn from_u32(v: u32) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::AuthFailed,
            3 => ErrorCode::VersionUnsupported,
            4 => ErrorCode::StaleEpoch,
            5 => ErrorCode::UnknownChannel,
            6 => ErrorCode::UnknownPeer,
            7 => ErrorCode::LimitExceeded,
            8 => ErrorCode::ShuttingDown,
            9 => ErrorCode::Internal,
            10 => ErrorCode::NotHome,
            11 => ErrorCode::ChannelBusy,
            _ => return None,
        })
    }
}
