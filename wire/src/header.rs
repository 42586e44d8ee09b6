//! The fixed 40-byte frame header, read in place from the receive buffer.
//!
//! | offset | size | field      | meaning                                                        |
//! |-------:|-----:|------------|----------------------------------------------------------------|
//! | 0      | 4    | crc32c     | CRC32C of the rest of the stride (bytes 4..stride)              |
//! | 4      | 4    | frame_len  | header + payload bytes, padding excluded                        |
//! | 8      | 2    | magic      | `0x5956` (bytes `56 59`, "VY")                                  |
//! | 10     | 1    | version    | protocol version, 1                                             |
//! | 11     | 1    | kind       | [`Kind`]                                                        |
//! | 12     | 2    | flags      | per-kind bits ([`flags`])                                       |
//! | 14     | 2    | reserved   | zero                                                            |
//! | 16     | 4    | channel    | channel id                                                      |
//! | 20     | 4    | epoch      | sender's epoch (incremented at every start)                     |
//! | 24     | 8    | seq        | DATA: seq on the channel; ACK/NACK/HEARTBEAT: see PROTOCOL.md    |
//! | 32     | 8    | trace_id   | trace id assigned at the source, inherited by derived frames    |
//!
//! All fields are little-endian. A frame occupies `stride = align8(frame_len)`
//! bytes; the padding is zero and covered by the checksum. The checksum comes
//! first so that it covers one contiguous range (a single CRC pass is 2–3×
//! faster than three for 64-byte payloads) that includes `frame_len`. `wire/PROTOCOL.md`
//! is the normative description.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of [`Header`] in bytes.
pub const HEADER_LEN: usize = 40;
/// `magic` field value: the bytes `56 59` ("VY") on the wire.
pub const MAGIC: u16 = 0x5956;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Frames start at multiples of this many bytes in a stream.
pub const FRAME_ALIGN: usize = 8;
/// Byte offset of the `crc32c` field inside the header; it covers every byte
/// of the stride after it.
pub const CRC_OFFSET: usize = 0;
/// Byte offsets of the fields a decoder checks before the frame is whole.
pub const LEN_OFFSET: usize = 4;
pub const MAGIC_OFFSET: usize = 8;
pub const VERSION_OFFSET: usize = 10;
pub const KIND_OFFSET: usize = 11;
/// Byte offsets of the other header fields (the table above). Code outside
/// this crate reads them through [`Header`] ([`Header::peek`]), not by offset.
pub const FLAGS_OFFSET: usize = 12;
pub const RESERVED_OFFSET: usize = 14;
pub const CHANNEL_OFFSET: usize = 16;
pub const EPOCH_OFFSET: usize = 20;
pub const SEQ_OFFSET: usize = 24;
pub const TRACE_ID_OFFSET: usize = 32;
/// Default bound on `frame_len` (1 MiB).
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;
/// The largest `max_frame_len` a decoder or encoder may be configured with (64 MiB).
pub const MAX_FRAME_LEN_LIMIT: u32 = 64 << 20;
/// The largest frame an endpoint must take before the handshake is done:
/// an ERROR with the longest text (HELLO is 120 bytes). A receiver bounds
/// what a connection may buffer before it is authenticated to this.
pub const HANDSHAKE_MAX_FRAME_LEN: u32 = 40 + 8 + 4096;

/// The frame header, `#[repr(C)]` with byte-order-aware fields of alignment 1,
/// so it can be viewed in place at any offset of a receive buffer.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub crc32c: U32,
    pub frame_len: U32,
    pub magic: U16,
    pub version: u8,
    pub kind: u8,
    pub flags: U16,
    pub reserved: U16,
    pub channel: U32,
    pub epoch: U32,
    pub seq: U64,
    pub trace_id: U64,
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_LEN);
const _: () = assert!(HEADER_LEN.is_multiple_of(FRAME_ALIGN));
const _: () = assert!(core::mem::offset_of!(Header, crc32c) == CRC_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, frame_len) == LEN_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, magic) == MAGIC_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, version) == VERSION_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, kind) == KIND_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, flags) == FLAGS_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, reserved) == RESERVED_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, channel) == CHANNEL_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, epoch) == EPOCH_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, seq) == SEQ_OFFSET);
const _: () = assert!(core::mem::offset_of!(Header, trace_id) == TRACE_ID_OFFSET);
const _: () = assert!(TRACE_ID_OFFSET + 8 == HEADER_LEN);

impl Header {
    /// A header with the checksum zeroed, ready to be written.
    pub fn new(
        kind: Kind,
        flags: u16,
        frame_len: u32,
        channel: u32,
        epoch: u32,
        seq: u64,
        trace_id: u64,
    ) -> Header {
        Header {
            crc32c: U32::ZERO,
            frame_len: U32::new(frame_len),
            magic: U16::new(MAGIC),
            version: VERSION,
            kind: kind as u8,
            flags: U16::new(flags),
            reserved: U16::ZERO,
            channel: U32::new(channel),
            epoch: U32::new(epoch),
            seq: U64::new(seq),
            trace_id: U64::new(trace_id),
        }
    }

    /// The header at the start of `bytes`, read in place with no check at
    /// all (no checksum, magic, version, kind or length): for frames
    /// validated before, such as those the node encoded or logged (a log
    /// record's CRC covers its frames). `None` if `bytes` is shorter than a
    /// header. Input from a peer goes through [`crate::Decoder`] or
    /// [`crate::parse`] instead.
    #[inline]
    pub fn peek(bytes: &[u8]) -> Option<&Header> {
        Header::ref_from_prefix(bytes).ok().map(|(h, _)| h)
    }

    /// [`Header::peek`], writable in place.
    #[inline]
    pub fn peek_mut(bytes: &mut [u8]) -> Option<&mut Header> {
        Header::mut_from_prefix(bytes).ok().map(|(h, _)| h)
    }

    pub fn frame_len(&self) -> u32 {
        self.frame_len.get()
    }
    /// Bytes the frame occupies in a stream, padding included.
    pub fn stride(&self) -> usize {
        stride(self.frame_len.get() as usize)
    }
    pub fn payload_len(&self) -> usize {
        (self.frame_len.get() as usize).saturating_sub(HEADER_LEN)
    }
    /// The kind; `None` only for headers that did not pass the decoder.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }
    pub fn flags(&self) -> u16 {
        self.flags.get()
    }
    pub fn crc32c(&self) -> u32 {
        self.crc32c.get()
    }
    pub fn channel(&self) -> u32 {
        self.channel.get()
    }
    pub fn epoch(&self) -> u32 {
        self.epoch.get()
    }
    pub fn seq(&self) -> u64 {
        self.seq.get()
    }
    pub fn trace_id(&self) -> u64 {
        self.trace_id.get()
    }
}

impl core::fmt::Debug for Header {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Header")
            .field("frame_len", &self.frame_len.get())
            .field("magic", &format_args!("{:#06x}", self.magic.get()))
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("flags", &format_args!("{:#06x}", self.flags.get()))
            .field("reserved", &self.reserved.get())
            .field("crc32c", &format_args!("{:#010x}", self.crc32c.get()))
            .field("channel", &self.channel.get())
            .field("epoch", &self.epoch.get())
            .field("seq", &self.seq.get())
            .field("trace_id", &self.trace_id.get())
            .finish()
    }
}

/// `align8(frame_len)`: the bytes a frame of that length occupies in a stream.
#[inline]
pub const fn stride(frame_len: usize) -> usize {
    (frame_len + (FRAME_ALIGN - 1)) & !(FRAME_ALIGN - 1)
}

/// Frame kinds. Numbers 16..=31 are reserved for checkpoint and control
/// frames; a version-1 decoder rejects them as unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Kind {
    /// Opens a connection: cluster id, node id, role, versions, auth challenge/response.
    Hello = 1,
    /// Consumer → producer after HELLO: per channel, the highest seq delivered.
    Resume = 2,
    /// One record on a channel, carrying `seq` and `trace_id`.
    Data = 3,
    /// Cumulative: every seq `<= seq` on `channel` is durable at the consumer.
    Ack = 4,
    /// Consumer asks for a resend of `channel` from `seq` on.
    Nack = 5,
    /// Liveness; `seq` is the sender's highest seq sent on `channel` (0 if none).
    Heartbeat = 6,
    /// Fatal: code + text; the sender closes the connection after it.
    Error = 7,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Hello,
        Kind::Resume,
        Kind::Data,
        Kind::Ack,
        Kind::Nack,
        Kind::Heartbeat,
        Kind::Error,
    ];

    #[inline]
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Resume,
            3 => Kind::Data,
            4 => Kind::Ack,
            5 => Kind::Nack,
            6 => Kind::Heartbeat,
            7 => Kind::Error,
            _ => return None,
        })
    }

    /// Flag bits defined for this kind; any other bit set is a malformed header.
    pub fn allowed_flags(self) -> u16 {
        match self {
            Kind::Data => flags::RESEND,
            Kind::Hello => flags::HELLO_RESPONSE,
            _ => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "HELLO",
            Kind::Resume => "RESUME",
            Kind::Data => "DATA",
            Kind::Ack => "ACK",
            Kind::Nack => "NACK",
            Kind::Heartbeat => "HEARTBEAT",
            Kind::Error => "ERROR",
        }
    }
}

impl core::fmt::Display for Kind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Flag bits of the header's `flags` field.
pub mod flags {
    /// DATA: this frame is a retransmission (informational; dedup is by seq).
    pub const RESEND: u16 = 1 << 0;
    /// HELLO: the `response` field answers the peer's challenge.
    pub const HELLO_RESPONSE: u16 = 1 << 0;
}
