//! # verity-wire
//!
//! Verity's wire protocol: a fixed 40-byte little-endian [`Header`] read in
//! place with zerocopy, fixed-layout bodies, an [`Encoder`] that appends many
//! frames to one buffer, and an incremental [`Decoder`] that returns whole
//! frames without copying or allocating per frame. No I/O, no threads, no
//! clocks: the crate is a pure function of the bytes it is given.
//!
//! `wire/PROTOCOL.md` is the specification: every byte offset, the connection
//! rules, error codes, and golden vectors that the tests check.

mod body;
mod crc;
mod decode;
mod encode;
mod error;
mod header;
mod message;

pub mod auth;
pub mod client;
pub mod fnv;
pub mod frames;
pub mod handshake;
pub mod hex;
pub mod json;
pub mod reorder;
pub mod rng;
pub mod text;
pub mod time;

pub use body::{
    nack_ranges_fault, ErrorBody, ErrorCode, HelloBody, NackRange, ResumeEntry, Role,
    ERROR_BODY_FIXED_LEN, HELLO_BODY_LEN, MAX_ERROR_TEXT_LEN, MAX_NACK_RANGES, NACK_RANGE_LEN,
    RESUME_ENTRY_LEN,
};
pub use crc::accelerated as crc32c_accelerated;
pub use decode::{parse, parse_covered, Decoder, Frame, FrameView};
pub use encode::{crc32c, frame_crc, Encoder, Hello};
pub use error::{EncodeError, WireError};
pub use header::{
    flags, stride, Header, Kind, CHANNEL_OFFSET, CRC_OFFSET, DEFAULT_MAX_FRAME_LEN, EPOCH_OFFSET,
    FLAGS_OFFSET, FRAME_ALIGN, HANDSHAKE_MAX_FRAME_LEN, HEADER_LEN, KIND_OFFSET, LEN_OFFSET, MAGIC,
    MAGIC_OFFSET, MAX_FRAME_LEN_LIMIT, RESERVED_OFFSET, SEQ_OFFSET, TRACE_ID_OFFSET, VERSION,
    VERSION_OFFSET,
};
pub use message::Message;
