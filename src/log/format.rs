//! On-disk layouts: the segment header and the record header (byte tables in
//! the module docs of [`crate::log`]). Pure functions over byte slices; no I/O.

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `b"VRTYLOG\0"`: first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VRTYLOG\0";
/// Segment format version this code writes and reads.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header; the data region starts right after it.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Bytes of a record header; the payload starts right after it.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Records start on this boundary (header fields are then naturally aligned).
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Smallest segment file: header plus room for a few small records.
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 256;
/// Largest segment file (the mapping of one segment must stay reasonable and
/// a record length must fit the u32 length field).
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 1 << 32;

/// Segment header, at offset 0 of every segment file. All fields little-endian.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub header_bytes: U32,
    pub base_position: U64,
    pub size_bytes: U64,
    pub name_hash: U64,
    pub reserved: [u8; 20],
    /// CRC32C of bytes 0..60.
    pub crc: U32,
}

const _: () = assert!(core::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_BYTES);

/// Record header, at the record's (8-aligned) offset. All fields little-endian.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub struct RecordHeader {
    /// Header + payload bytes (unpadded). Written last; 0 means "no record".
    pub length: U32,
    pub kind: U32,
    pub position: U64,
    pub timestamp: U64,
    /// CRC32C of bytes 0..24 of this header followed by the payload.
    pub crc: U32,
    pub reserved: U32,
}

const _: () = assert!(core::mem::size_of::<RecordHeader>() == RECORD_HEADER_BYTES);

/// Rounds `n` up to the record alignment.
pub const fn align_up(n: u64) -> u64 {
    (n + RECORD_ALIGN_BYTES as u64 - 1) & !(RECORD_ALIGN_BYTES as u64 - 1)
}

/// FNV-1a 64 of the log name: ties a segment file to its log.
pub fn name_hash(name: &str) -> u64 {
    verity_wire::fnv::fnv1a64(name.as_bytes())
}

/// File name of the segment whose first position is `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Parses `<20 digits>.seg` back into the base position.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// File name of spare segment `id` (a recycled segment file waiting for
/// reuse; never part of the log).
pub fn spare_file_name(id: u64) -> String {
    format!("spare-{id}.seg")
}

/// Parses `spare-<digits>.seg` back into the spare's id.
pub fn parse_spare_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("spare-")?.strip_suffix(".seg")?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl SegmentHeader {
    pub fn new(base_position: u64, size_bytes: u64, name_hash: u64) -> Self {
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: U32::new(SEGMENT_VERSION),
            header_bytes: U32::new(SEGMENT_HEADER_BYTES as u32),
            base_position: U64::new(base_position),
            size_bytes: U64::new(size_bytes),
            name_hash: U64::new(name_hash),
            reserved: [0; 20],
            crc: U32::new(0),
        };
        header.crc = U32::new(header.compute_crc());
        header
    }

    /// The 64 header bytes as written to the file.
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes.copy_from_slice(self.as_bytes());
        bytes
    }

    fn compute_crc(&self) -> u32 {
        verity_wire::crc32c(&self.as_bytes()[..SEGMENT_HEADER_BYTES - 4])
    }

    /// Checks every field; `Err` names the first one that is wrong.
    pub fn validate(&self, expected_name_hash: u64) -> Result<(), &'static str> {
        if self.magic != SEGMENT_MAGIC {
            return Err("bad magic");
        }
        if self.crc.get() != self.compute_crc() {
            return Err("header CRC mismatch");
        }
        if self.version.get() != SEGMENT_VERSION {
            return Err("unsupported version");
        }
        if self.header_bytes.get() as usize != SEGMENT_HEADER_BYTES {
            return Err("unexpected header length");
        }
        let size = self.size_bytes.get();
        if !(SEGMENT_SIZE_MIN_BYTES..=SEGMENT_SIZE_MAX_BYTES).contains(&size) {
            return Err("segment size out of range");
        }
        if !size.is_multiple_of(RECORD_ALIGN_BYTES as u64) {
            return Err("segment size not 8-byte aligned");
        }
        if !self
            .base_position
            .get()
            .is_multiple_of(RECORD_ALIGN_BYTES as u64)
        {
            return Err("base position not 8-byte aligned");
        }
        if self.base_position.get().checked_add(size).is_none() {
            return Err("base position overflows");
        }
        if self.name_hash.get() != expected_name_hash {
            return Err("segment belongs to another log (name hash mismatch)");
        }
        if self.reserved != [0; 20] {
            return Err("reserved bytes not zero");
        }
        Ok(())
    }
}

/// CRC32C of a record: header bytes 0..24 (with the final length) + payload.
///
/// crc-fast (VPCLMULQDQ/PCLMULQDQ folding) computes the same CRC32C as the
/// `crc32c` crate in about half the time on 4 KiB (measured here: ~100 ns vs
/// ~200 ns, next to a ~300-400 ns copy of the payload), and no slower on
/// small records; the append path pays it for every record.
pub fn record_crc(header_prefix: &[u8], payload: &[u8]) -> u32 {
    debug_assert_eq!(header_prefix.len(), 24);
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(header_prefix);
    digest.update(payload);
    // CRC-32 values fit in the low 32 bits of crc-fast's u64 result.
    digest.finalize() as u32
}

/// The complete header of a record with this payload, CRC included (the
/// append path writes the same bytes in two steps, length last).
pub fn encode_record_header(
    kind: u32,
    position: u64,
    timestamp: u64,
    payload: &[u8],
) -> [u8; RECORD_HEADER_BYTES] {
    let length = u32::try_from(RECORD_HEADER_BYTES + payload.len()).unwrap_or(u32::MAX);
    let mut header = RecordHeader {
        length: U32::new(length),
        kind: U32::new(kind),
        position: U64::new(position),
        timestamp: U64::new(timestamp),
        crc: U32::new(0),
        reserved: U32::new(0),
    };
    header.crc = U32::new(record_crc(&header.as_bytes()[..24], payload));
    let mut bytes = [0u8; RECORD_HEADER_BYTES];
    bytes.copy_from_slice(header.as_bytes());
    bytes
}

/// Why the bytes at a record offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// Length field zero: nothing was ever committed here.
    Empty,
    /// Fewer bytes than a header are left in the data region.
    NoRoom,
    LengthTooSmall,
    LengthPastSegmentEnd,
    PositionMismatch,
    ReservedNotZero,
    CrcMismatch,
}

impl RecordFault {
    pub fn describe(self) -> &'static str {
        match self {
            RecordFault::Empty => "zero length (no record)",
            RecordFault::NoRoom => "no room for a record header",
            RecordFault::LengthTooSmall => "length smaller than the record header",
            RecordFault::LengthPastSegmentEnd => "length runs past the segment end",
            RecordFault::PositionMismatch => "position field does not match the offset",
            RecordFault::ReservedNotZero => "reserved header bytes not zero",
            RecordFault::CrcMismatch => "CRC mismatch",
        }
    }
}

/// A record validated in place.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    pub kind: u32,
    pub timestamp: u64,
    pub payload: &'a [u8],
    /// Bytes the record occupies including padding.
    pub span_bytes: u64,
}

/// Validates the record expected at `data[0..]` with position `position`.
/// `data` runs from the record offset to the end of the segment's data region.
pub fn parse_record(data: &[u8], position: u64) -> Result<Parsed<'_>, RecordFault> {
    let Ok((header, _)) = RecordHeader::ref_from_prefix(data) else {
        return Err(RecordFault::NoRoom);
    };
    let length = header.length.get() as usize;
    if length == 0 {
        return Err(RecordFault::Empty);
    }
    if length < RECORD_HEADER_BYTES {
        return Err(RecordFault::LengthTooSmall);
    }
    if length > data.len() {
        return Err(RecordFault::LengthPastSegmentEnd);
    }
    if header.position.get() != position {
        return Err(RecordFault::PositionMismatch);
    }
    if header.reserved.get() != 0 {
        return Err(RecordFault::ReservedNotZero);
    }
    let payload = &data[RECORD_HEADER_BYTES..length];
    if record_crc(&data[..24], payload) != header.crc.get() {
        return Err(RecordFault::CrcMismatch);
    }
    // Padding may run past the data region only if the record ends exactly
    // there, which alignment of the region rules out; clamp anyway.
    let span_bytes = align_up(length as u64).min(data.len() as u64);
    Ok(Parsed {
        kind: header.kind.get(),
        timestamp: header.timestamp.get(),
        payload,
        span_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_name_round_trips_and_rejects_others() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg.tmp"),
            None
        );
    }

    #[test]
    fn spare_file_name_round_trips_and_is_not_a_segment_name() {
        assert_eq!(spare_file_name(3), "spare-3.seg");
        assert_eq!(parse_spare_file_name("spare-3.seg"), Some(3));
        assert_eq!(parse_segment_file_name("spare-3.seg"), None);
        assert_eq!(parse_spare_file_name("spare-.seg"), None);
        assert_eq!(parse_spare_file_name("spare-3.seg.tmp"), None);
        assert_eq!(parse_spare_file_name(&segment_file_name(3)), None);
    }

    #[test]
    fn record_crc_is_crc32c_of_header_prefix_then_payload() {
        // The on-disk format is CRC32C (Castagnoli); any implementation
        // must agree with the reference one, at every length.
        let header: Vec<u8> = (0..24u8).collect();
        for len in [0usize, 1, 7, 8, 31, 64, 255, 4096, 4099] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            // verity-wire's one-shot kernel over the concatenation (the
            // golden vectors check it against an independent Python CRC).
            let mut whole = header.clone();
            whole.extend_from_slice(&payload);
            let reference = verity_wire::crc32c(&whole);
            assert_eq!(record_crc(&header, &payload), reference, "len {len}");
        }
    }

    #[test]
    fn segment_header_validates_and_detects_flipped_byte() {
        let header = SegmentHeader::new(64, 4096, name_hash("j"));
        assert_eq!(header.validate(name_hash("j")), Ok(()));
        assert!(header.validate(name_hash("other")).is_err());
        let mut bytes = header.as_bytes().to_vec();
        bytes[17] ^= 1;
        let (flipped, _) = SegmentHeader::read_from_prefix(&bytes[..]).unwrap();
        assert_eq!(flipped.validate(name_hash("j")), Err("header CRC mismatch"));
    }
}
