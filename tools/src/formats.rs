//! File formats shared by the tools: the three input record formats that
//! `verity-send` reads (`fixish`, `lines`, `u64`), the received file that
//! `verity-recv` writes, and the market-spread record layouts.
//!
//! Byte tables: `tools/FORMATS.md`. Every reader reports a malformed file as a
//! [`FormatError`] naming the file and the byte offset of the bad record; none
//! of them panics or allocates more than the bytes actually present.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Largest record accepted in a fixish file or as a received payload (16 MiB).
/// A length prefix above this is a corrupt file, not a record to allocate for.
pub const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

/// Trace id the source assigns to record `seq` of source channel `channel`.
pub fn trace_id(source_channel: u32, seq: u64) -> u64 {
    ((source_channel as u64) << 40) | (seq & TRACE_SEQ_MASK)
}

/// Low 40 bits of a trace id: the source seq.
pub const TRACE_SEQ_MASK: u64 = (1 << 40) - 1;

/// Splits a trace id into (source channel, source seq).
pub fn split_trace_id(trace_id: u64) -> (u64, u64) {
    (trace_id >> 40, trace_id & TRACE_SEQ_MASK)
}

/// Renders a trace id as `ch:seq` for problem lines.
pub fn show_trace_id(trace_id: u64) -> String {
    let (ch, seq) = split_trace_id(trace_id);
    format!("{trace_id:#x} (channel {ch} seq {seq})")
}

/// A malformed or unreadable file, with where.
#[derive(Debug)]
pub enum FormatError {
    /// The file could not be opened, read or written.
    Io { path: PathBuf, source: io::Error },
    /// A record (or its header/length prefix) runs past the end of the file.
    Truncated {
        path: PathBuf,
        /// Byte offset where the incomplete record starts.
        offset: u64,
        /// Bytes the record needs (header + payload).
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },
    /// A length prefix or payload_len above [`MAX_RECORD_BYTES`].
    TooLarge {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// A record that cannot be written in this format (e.g. a line holding '\n').
    Unwritable { path: PathBuf, reason: String },
    /// A file that does not start with the received-file magic.
    NotReceived {
        path: PathBuf,
        /// Its first bytes, escaped.
        found: String,
    },
    /// A received file of a format version this build does not read.
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// A record whose bytes do not match its CRC32C, or whose reserved or
    /// padding bytes are not zero (offset 0: the file header).
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A received-file record whose seq does not follow its channel's
    /// previous one (only [`scan_received`] reports this: the checker
    /// classifies seqs itself).
    OutOfSequence {
        path: PathBuf,
        offset: u64,
        channel: u32,
        seq: u64,
        expected: u64,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            FormatError::Truncated {
                path,
                offset,
                needed,
                available,
            } => write!(
                f,
                "{}: truncated record at byte offset {offset}: needs {needed} bytes, {available} left in the file",
                path.display()
            ),
            FormatError::TooLarge { path, offset, len } => write!(
                f,
                "{}: record at byte offset {offset} claims {len} bytes (limit {MAX_RECORD_BYTES}); corrupt file?",
                path.display()
            ),
            FormatError::Unwritable { path, reason } => {
                write!(f, "{}: cannot write record: {reason}", path.display())
            }
            FormatError::NotReceived { path, found } => write!(
                f,
                "{}: not a received file: it starts with \"{found}\", not the magic \"VRTYRECV\"",
                path.display()
            ),
            FormatError::UnsupportedVersion { path, version } => write!(
                f,
                "{}: received file of format version {version}; this build reads version {RECEIVED_VERSION}",
                path.display()
            ),
            FormatError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{}: corrupt record at byte offset {offset}: {reason}",
                path.display()
            ),
            FormatError::OutOfSequence {
                path,
                offset,
                channel,
                seq,
                expected,
            } => write!(
                f,
                "{}: record at byte offset {offset} has channel {channel} seq {seq}, expected seq {expected}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FormatError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path, source: io::Error) -> FormatError {
    FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads up to `buf.len()` bytes; returns how many were read (less only at EOF).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `len` bytes into `out` (cleared first) without allocating
/// more than what is present; returns the count actually read.
fn read_payload<R: Read>(r: &mut R, len: u64, out: &mut Vec<u8>) -> io::Result<u64> {
    out.clear();
    let got = r.take(len).read_to_end(out)?;
    Ok(got as u64)
}

// ---------------------------------------------------------------------------
// Input formats

/// The three input record formats `verity-send` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Records each behind a 4-byte big-endian length prefix.
    Fixish,
    /// UTF-8 text, one record per '\n'-separated line.
    Lines,
    /// 8-byte big-endian unsigned integers back to back.
    U64,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Fixish => "fixish",
            InputFormat::Lines => "lines",
            InputFormat::U64 => "u64",
        }
    }
}

impl FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fixish" => Ok(InputFormat::Fixish),
            "lines" => Ok(InputFormat::Lines),
            "u64" => Ok(InputFormat::U64),
            other => Err(format!(
                "unknown input format {other:?} (expected fixish, lines or u64)"
            )),
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One input record: its bytes and the byte offset where it starts in the file
/// (of the length prefix, for fixish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Streaming reader of an input file. Record i (from 1) is the one sent with seq i.
pub struct InputReader<R> {
    format: InputFormat,
    inner: BufReader<R>,
    path: PathBuf,
    offset: u64,
    failed: bool,
}

impl InputReader<File> {
    /// Opens `path` for reading in `format`.
    pub fn open(format: InputFormat, path: &Path) -> Result<Self, FormatError> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        Ok(Self::new(format, file, path))
    }
}

impl<R: Read> InputReader<R> {
    /// Wraps any reader; `path` is only used to name the source in errors.
    pub fn new(format: InputFormat, reader: R, path: &Path) -> Self {
        InputReader {
            format,
            inner: BufReader::with_capacity(1 << 16, reader),
            path: path.to_path_buf(),
            offset: 0,
            failed: false,
        }
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record into `buf` (reusing its allocation). Returns the
    /// record's start offset, or `None` at a clean end of file.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, FormatError> {
        if self.failed {
            return Ok(None);
        }
        let r = self.read_inner(buf);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn read_inner(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, FormatError> {
        let start = self.offset;
        let path = &self.path;
        match self.format {
            InputFormat::Fixish => {
                let mut prefix = [0u8; 4];
                let got = read_full(&mut self.inner, &mut prefix).map_err(|e| io_err(path, e))?;
                if got == 0 {
                    return Ok(None);
                }
                if got < 4 {
                    return Err(FormatError::Truncated {
                        path: path.clone(),
                        offset: start,
                        needed: 4,
                        available: got as u64,
                    });
                }
                let len = u32::from_be_bytes(prefix);
                if len > MAX_RECORD_BYTES {
                    return Err(FormatError::TooLarge {
                        path: path.clone(),
                        offset: start,
                        len: len as u64,
                    });
                }
                let got =
                    read_payload(&mut self.inner, len as u64, buf).map_err(|e| io_err(path, e))?;
                if got < len as u64 {
                    return Err(FormatError::Truncated {
                        path: path.clone(),
                        offset: start,
                        needed: 4 + len as u64,
                        available: 4 + got,
                    });
                }
                self.offset += 4 + len as u64;
            }
            InputFormat::Lines => {
                buf.clear();
                let got = io::BufRead::read_until(&mut self.inner, b'\n', buf)
                    .map_err(|e| io_err(path, e))?;
                if got == 0 {
                    return Ok(None);
                }
                self.offset += got as u64;
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
            }
            InputFormat::U64 => {
                buf.clear();
                buf.resize(8, 0);
                let got = read_full(&mut self.inner, buf).map_err(|e| io_err(path, e))?;
                if got == 0 {
                    buf.clear();
                    return Ok(None);
                }
                if got < 8 {
                    return Err(FormatError::Truncated {
                        path: path.clone(),
                        offset: start,
                        needed: 8,
                        available: got as u64,
                    });
                }
                self.offset += 8;
            }
        }
        Ok(Some(start))
    }
}

impl<R: Read> Iterator for InputReader<R> {
    type Item = Result<InputRecord, FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut bytes = Vec::new();
        match self.read_into(&mut bytes) {
            Ok(Some(offset)) => Some(Ok(InputRecord { offset, bytes })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Reads a whole input file; element i is the record sent with seq i+1.
pub fn read_input(format: InputFormat, path: &Path) -> Result<Vec<InputRecord>, FormatError> {
    InputReader::open(format, path)?.collect()
}

/// Buffered writer of an input file.
pub struct InputWriter<W: Write> {
    format: InputFormat,
    inner: BufWriter<W>,
    path: PathBuf,
    records: u64,
    bytes: u64,
}

impl InputWriter<File> {
    /// Creates (truncates) `path`.
    pub fn create(format: InputFormat, path: &Path) -> Result<Self, FormatError> {
        let file = File::create(path).map_err(|e| io_err(path, e))?;
        Ok(Self::new(format, file, path))
    }
}

impl<W: Write> InputWriter<W> {
    /// Wraps any writer; `path` names the destination in errors.
    pub fn new(format: InputFormat, writer: W, path: &Path) -> Self {
        InputWriter {
            format,
            inner: BufWriter::with_capacity(1 << 16, writer),
            path: path.to_path_buf(),
            records: 0,
            bytes: 0,
        }
    }

    /// Appends one record. Fixish: any bytes up to [`MAX_RECORD_BYTES`];
    /// lines: bytes without '\n'; u64: exactly 8 bytes (big-endian value).
    pub fn write_record(&mut self, record: &[u8]) -> Result<(), FormatError> {
        let unwritable = |reason: String| FormatError::Unwritable {
            path: self.path.clone(),
            reason,
        };
        let path = &self.path;
        match self.format {
            InputFormat::Fixish => {
                let len = u32::try_from(record.len())
                    .ok()
                    .filter(|&l| l <= MAX_RECORD_BYTES)
                    .ok_or_else(|| {
                        unwritable(format!("fixish record of {} bytes", record.len()))
                    })?;
                self.inner
                    .write_all(&len.to_be_bytes())
                    .and_then(|_| self.inner.write_all(record))
                    .map_err(|e| io_err(path, e))?;
                self.bytes += 4 + record.len() as u64;
            }
            InputFormat::Lines => {
                if record.contains(&b'\n') {
                    return Err(unwritable("a line record contains '\\n'".to_string()));
                }
                self.inner
                    .write_all(record)
                    .and_then(|_| self.inner.write_all(b"\n"))
                    .map_err(|e| io_err(path, e))?;
                self.bytes += record.len() as u64 + 1;
            }
            InputFormat::U64 => {
                if record.len() != 8 {
                    return Err(unwritable(format!(
                        "u64 record of {} bytes (must be 8)",
                        record.len()
                    )));
                }
                self.inner.write_all(record).map_err(|e| io_err(path, e))?;
                self.bytes += 8;
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Appends a u64 record (big-endian); only for the `u64` format.
    pub fn write_u64(&mut self, value: u64) -> Result<(), FormatError> {
        self.write_record(&value.to_be_bytes())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the inner writer.
    pub fn finish(self) -> Result<W, FormatError> {
        let path = self.path;
        self.inner
            .into_inner()
            .map_err(|e| io_err(&path, e.into_error()))
    }
}

// ---------------------------------------------------------------------------
// Received file

/// First 8 bytes of a received file.
pub const RECEIVED_MAGIC: [u8; 8] = *b"VRTYRECV";
/// The received-file format version this build reads and writes.
pub const RECEIVED_VERSION: u32 = 1;
/// Bytes of the file header (magic, version, reserved); the first record
/// starts here.
pub const RECEIVED_FILE_HEADER_BYTES: u64 = 16;
/// Bytes of a received-file record header (crc, payload_len, channel,
/// reserved, seq, trace_id); the payload follows, zero-padded to 8 bytes.
pub const RECEIVED_HEADER_BYTES: usize = 32;

/// The 16-byte file header of a received file.
pub fn received_file_header() -> [u8; RECEIVED_FILE_HEADER_BYTES as usize] {
    let mut h = [0u8; RECEIVED_FILE_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(&RECEIVED_MAGIC);
    h[8..12].copy_from_slice(&RECEIVED_VERSION.to_le_bytes());
    h
}

/// Bytes a received-file record with `payload_len` payload bytes takes:
/// header, payload and zero padding to a multiple of 8.
pub fn received_record_bytes(payload_len: u32) -> u64 {
    RECEIVED_HEADER_BYTES as u64 + (payload_len as u64).next_multiple_of(8)
}

/// One record of a received file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRecord {
    /// Byte offset of the record's header in the file.
    pub offset: u64,
    /// The engine node's output channel id.
    pub channel: u32,
    /// The output channel's seq (1, 2, 3, ... per channel).
    pub seq: u64,
    pub trace_id: u64,
    pub payload: Vec<u8>,
}

/// Streaming reader of a received file: checks the file header, then each
/// record's length, CRC32C, reserved bytes and padding. It does not judge
/// seqs (the checker does; [`scan_received`] does for a reopen).
pub struct ReceivedReader<R> {
    inner: BufReader<R>,
    path: PathBuf,
    /// Where the next record starts: the end of the last good record (or of
    /// the file header).
    offset: u64,
    header_read: bool,
    failed: bool,
    buf: Vec<u8>,
}

impl ReceivedReader<File> {
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        Ok(Self::new(file, path))
    }
}

impl<R: Read> ReceivedReader<R> {
    /// Wraps a reader at the start of a received file; `path` names the
    /// source in errors. An empty file has no records.
    pub fn new(reader: R, path: &Path) -> Self {
        ReceivedReader {
            inner: BufReader::with_capacity(1 << 16, reader),
            path: path.to_path_buf(),
            offset: 0,
            header_read: false,
            failed: false,
            buf: Vec::new(),
        }
    }

    /// Wraps a reader positioned at byte `offset` of a received file, a
    /// record boundary past the file header (a follower reading what a
    /// running receiver appends).
    pub fn resume(reader: R, path: &Path, offset: u64) -> Self {
        let mut r = Self::new(reader, path);
        r.offset = offset;
        r.header_read = true;
        r
    }

    /// Where the next record starts: the end of the last good record read
    /// (after an error, the offset of the bad record).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record; `None` at a clean end of file.
    pub fn read_record(&mut self) -> Result<Option<ReceivedRecord>, FormatError> {
        if self.failed {
            return Ok(None);
        }
        let r = self.read_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Checks the file header; false for an empty file.
    fn read_file_header(&mut self) -> Result<bool, FormatError> {
        let path = &self.path;
        let mut h = [0u8; RECEIVED_FILE_HEADER_BYTES as usize];
        let got = read_full(&mut self.inner, &mut h).map_err(|e| io_err(path, e))?;
        if got == 0 {
            return Ok(false);
        }
        let want = received_file_header();
        if h[..got] == want[..got] && got < h.len() {
            // A header cut short: the writer died while creating the file.
            return Err(FormatError::Truncated {
                path: path.clone(),
                offset: 0,
                needed: RECEIVED_FILE_HEADER_BYTES,
                available: got as u64,
            });
        }
        let magic = got.min(RECEIVED_MAGIC.len());
        if h[..magic] != RECEIVED_MAGIC[..magic] {
            return Err(FormatError::NotReceived {
                path: path.clone(),
                found: h[..magic].escape_ascii().to_string(),
            });
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if got >= 12 && version != RECEIVED_VERSION {
            return Err(FormatError::UnsupportedVersion {
                path: path.clone(),
                version,
            });
        }
        if h != want {
            return Err(FormatError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: "the file header's reserved bytes are not zero".into(),
            });
        }
        self.offset = RECEIVED_FILE_HEADER_BYTES;
        Ok(true)
    }

    fn read_inner(&mut self) -> Result<Option<ReceivedRecord>, FormatError> {
        if !self.header_read {
            self.header_read = true;
            if !self.read_file_header()? {
                return Ok(None);
            }
        }
        let path = &self.path;
        let start = self.offset;
        let mut header = [0u8; RECEIVED_HEADER_BYTES];
        let got = read_full(&mut self.inner, &mut header).map_err(|e| io_err(path, e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < RECEIVED_HEADER_BYTES {
            return Err(FormatError::Truncated {
                path: path.clone(),
                offset: start,
                needed: RECEIVED_HEADER_BYTES as u64,
                available: got as u64,
            });
        }
        let le32 = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let le64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let len = le32(4);
        if len > MAX_RECORD_BYTES {
            return Err(FormatError::TooLarge {
                path: path.clone(),
                offset: start,
                len: len as u64,
            });
        }
        let size = received_record_bytes(len);
        let body = size - RECEIVED_HEADER_BYTES as u64;
        // Header, payload and padding in one buffer: the CRC covers them all.
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        let got = (&mut self.inner)
            .take(body)
            .read_to_end(&mut self.buf)
            .map_err(|e| io_err(path, e))? as u64;
        if got < body {
            return Err(FormatError::Truncated {
                path: path.clone(),
                offset: start,
                needed: size,
                available: RECEIVED_HEADER_BYTES as u64 + got,
            });
        }
        let corrupt = |reason: String| FormatError::Corrupt {
            path: path.clone(),
            offset: start,
            reason,
        };
        let (stored, computed) = (le32(0), verity_wire::crc32c(&self.buf[4..]));
        if stored != computed {
            return Err(corrupt(format!(
                "CRC32C {stored:#010x} stored, {computed:#010x} computed"
            )));
        }
        let payload_end = RECEIVED_HEADER_BYTES + len as usize;
        if le32(12) != 0 || self.buf[payload_end..].iter().any(|&b| b != 0) {
            return Err(corrupt("reserved or padding bytes are not zero".into()));
        }
        self.offset += size;
        Ok(Some(ReceivedRecord {
            offset: start,
            channel: le32(8),
            seq: le64(16),
            trace_id: le64(24),
            payload: self.buf[RECEIVED_HEADER_BYTES..payload_end].to_vec(),
        }))
    }
}

impl<R: Read> Iterator for ReceivedReader<R> {
    type Item = Result<ReceivedRecord, FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.read_record().transpose()
    }
}

/// Reads a whole received file, in arrival order.
pub fn read_received(path: &Path) -> Result<Vec<ReceivedRecord>, FormatError> {
    ReceivedReader::open(path)?.collect()
}

/// What a received file holds, read as `verity-recv` reopens it: its good
/// prefix, up to the first record that is cut short, fails its CRC, or
/// whose seq is not its channel's previous seq + 1 (seqs start at 1).
#[derive(Debug)]
pub struct ReceivedScan {
    /// Records in the good prefix.
    pub records: u64,
    /// Highest seq of each channel in the good prefix.
    pub delivered: BTreeMap<u32, u64>,
    /// Where the good prefix ends: 0 for an empty file or a file header cut
    /// short, else at least [`RECEIVED_FILE_HEADER_BYTES`].
    pub good_bytes: u64,
    /// Why the scan stopped before the end of the file (the first bad
    /// record, at `good_bytes`); `None` when the whole file is good.
    pub bad: Option<FormatError>,
}

/// Scans a received file from its start (see [`ReceivedScan`]). Errors: the
/// file cannot be read, or it is not a received file of this version (wrong
/// magic or version, or a complete file header with nonzero reserved
/// bytes): nothing in such a file is a torn tail.
pub fn scan_received<R: Read>(reader: R, path: &Path) -> Result<ReceivedScan, FormatError> {
    let mut r = ReceivedReader::new(reader, path);
    let mut scan = ReceivedScan {
        records: 0,
        delivered: BTreeMap::new(),
        good_bytes: 0,
        bad: None,
    };
    loop {
        match r.read_record() {
            Ok(None) => break,
            Ok(Some(rec)) => {
                let expected = scan.delivered.get(&rec.channel).copied().unwrap_or(0) + 1;
                if rec.seq != expected {
                    scan.good_bytes = rec.offset;
                    scan.bad = Some(FormatError::OutOfSequence {
                        path: path.to_path_buf(),
                        offset: rec.offset,
                        channel: rec.channel,
                        seq: rec.seq,
                        expected,
                    });
                    return Ok(scan);
                }
                scan.delivered.insert(rec.channel, rec.seq);
                scan.records += 1;
            }
            Err(
                e @ (FormatError::Io { .. }
                | FormatError::NotReceived { .. }
                | FormatError::UnsupportedVersion { .. }
                | FormatError::Corrupt { offset: 0, .. }),
            ) => return Err(e),
            Err(e) => {
                scan.bad = Some(e);
                break;
            }
        }
    }
    // After an error the reader stays at the bad record's offset.
    scan.good_bytes = r.offset();
    Ok(scan)
}

/// Buffered writer of a received file (used by `verity-recv`). Records are
/// assembled in a buffer (header, payload, padding: the CRC is computed over
/// the record in place) and handed to the inner writer by [`flush`]
/// (or when 64 KiB are pending).
///
/// [`flush`]: ReceivedWriter::flush
pub struct ReceivedWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    path: PathBuf,
    records: u64,
    /// Bytes handed to `inner`, counted from the start of the file.
    written: u64,
    /// An inner write failed: what reached the file is unknown, so nothing
    /// more is written.
    failed: bool,
}

/// Pending bytes above which a write pushes them to the inner writer.
const RECEIVED_WRITE_BUFFER: usize = 1 << 16;

impl ReceivedWriter<File> {
    /// Creates (truncates) `path`; the file header is written with the
    /// first flush.
    pub fn create(path: &Path) -> Result<Self, FormatError> {
        let file = File::create(path).map_err(|e| io_err(path, e))?;
        Ok(Self::new(file, path))
    }
}

impl<W: Write> ReceivedWriter<W> {
    /// A new received file written to `writer`, file header first; `path`
    /// names the destination in errors.
    pub fn new(writer: W, path: &Path) -> Self {
        let mut w = Self::append(writer, path, 0);
        w.buf.extend_from_slice(&received_file_header());
        w
    }

    /// Appends to a received file whose first `at` bytes (file header
    /// included) are good; `writer` is positioned at byte `at`.
    pub fn append(writer: W, path: &Path, at: u64) -> Self {
        ReceivedWriter {
            inner: writer,
            buf: Vec::with_capacity(RECEIVED_WRITE_BUFFER + 1024),
            path: path.to_path_buf(),
            records: 0,
            written: at,
            failed: false,
        }
    }

    /// Appends one record (buffered).
    pub fn write(
        &mut self,
        channel: u32,
        seq: u64,
        trace_id: u64,
        payload: &[u8],
    ) -> Result<(), FormatError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD_BYTES)
            .ok_or_else(|| FormatError::Unwritable {
                path: self.path.clone(),
                reason: format!("payload of {} bytes", payload.len()),
            })?;
        self.check()?;
        let start = self.buf.len();
        let size = received_record_bytes(len) as usize;
        self.buf.resize(start + size, 0);
        let rec = &mut self.buf[start..];
        rec[4..8].copy_from_slice(&len.to_le_bytes());
        rec[8..12].copy_from_slice(&channel.to_le_bytes());
        rec[16..24].copy_from_slice(&seq.to_le_bytes());
        rec[24..32].copy_from_slice(&trace_id.to_le_bytes());
        rec[RECEIVED_HEADER_BYTES..RECEIVED_HEADER_BYTES + payload.len()].copy_from_slice(payload);
        let crc = verity_wire::crc32c(&rec[4..]);
        rec[0..4].copy_from_slice(&crc.to_le_bytes());
        self.records += 1;
        if self.buf.len() >= RECEIVED_WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Records written so far (by this writer).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes handed to the inner writer: the file's length once they are
    /// written (for a file, `write(2)` done).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn check(&self) -> Result<(), FormatError> {
        if self.failed {
            return Err(io_err(
                &self.path,
                io::Error::other("an earlier write to this file failed"),
            ));
        }
        Ok(())
    }

    /// Hands the buffered records to the inner writer (for a file:
    /// `write(2)`, not `fsync`).
    pub fn flush(&mut self) -> Result<(), FormatError> {
        self.check()?;
        if !self.buf.is_empty() {
            if let Err(e) = self.inner.write_all(&self.buf) {
                self.failed = true;
                return Err(io_err(&self.path, e));
            }
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        self.inner.flush().map_err(|e| io_err(&self.path, e))
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, FormatError> {
        self.flush()?;
        Ok(self.inner)
    }
}

// ---------------------------------------------------------------------------
// Market-spread record layouts (fixish bodies, big-endian; decision little-endian)

/// Body length of an NBBO record (after the length prefix).
pub const NBBO_LEN: usize = 42;
/// Body length of an order record.
pub const ORDER_LEN: usize = 53;
/// Type byte of an NBBO record.
pub const NBBO_TYPE: u8 = 2;
/// Type byte of an order record.
pub const ORDER_TYPE: u8 = 1;
/// Length of a transact time `YYYYMMDD-HH:MM:SS.mmm`.
pub const TRANSACT_TIME_LEN: usize = 21;
/// Length of a market-spread decision payload.
pub const DECISION_LEN: usize = 48;

fn be_f64(b: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    f64::from_be_bytes(a)
}

/// An NBBO record: `u8 type=2, [u8;4] symbol, [u8;21] time, f64 bid, f64 offer`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nbbo {
    pub symbol: [u8; 4],
    pub transact_time: [u8; TRANSACT_TIME_LEN],
    pub bid: f64,
    pub offer: f64,
}

impl Nbbo {
    /// Parses a record body; `None` when the engine would dead-letter it
    /// (wrong length or type byte, non-finite bid or offer).
    pub fn parse(body: &[u8]) -> Option<Nbbo> {
        if body.len() != NBBO_LEN || body[0] != NBBO_TYPE {
            return None;
        }
        let mut symbol = [0u8; 4];
        symbol.copy_from_slice(&body[1..5]);
        let mut transact_time = [0u8; TRANSACT_TIME_LEN];
        transact_time.copy_from_slice(&body[5..26]);
        let bid = be_f64(&body[26..34]);
        let offer = be_f64(&body[34..42]);
        if !bid.is_finite() || !offer.is_finite() {
            return None;
        }
        Some(Nbbo {
            symbol,
            transact_time,
            bid,
            offer,
        })
    }

    /// The record body (without the length prefix).
    pub fn encode(&self) -> [u8; NBBO_LEN] {
        let mut b = [0u8; NBBO_LEN];
        b[0] = NBBO_TYPE;
        b[1..5].copy_from_slice(&self.symbol);
        b[5..26].copy_from_slice(&self.transact_time);
        b[26..34].copy_from_slice(&self.bid.to_be_bytes());
        b[34..42].copy_from_slice(&self.offer.to_be_bytes());
        b
    }
}

/// An order record: `u8 type=1, u8 side, u32 account, [u8;6] order id,
/// [u8;4] symbol, f64 quantity, f64 price, [u8;21] time`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Order {
    pub side: u8,
    pub account: u32,
    pub order_id: [u8; 6],
    pub symbol: [u8; 4],
    pub quantity: f64,
    pub price: f64,
    pub transact_time: [u8; TRANSACT_TIME_LEN],
}

impl Order {
    /// Parses a record body; `None` for a wrong length or type byte.
    pub fn parse(body: &[u8]) -> Option<Order> {
        if body.len() != ORDER_LEN || body[0] != ORDER_TYPE {
            return None;
        }
        let mut order_id = [0u8; 6];
        order_id.copy_from_slice(&body[6..12]);
        let mut symbol = [0u8; 4];
        symbol.copy_from_slice(&body[12..16]);
        let mut transact_time = [0u8; TRANSACT_TIME_LEN];
        transact_time.copy_from_slice(&body[32..53]);
        Some(Order {
            side: body[1],
            account: u32::from_be_bytes([body[2], body[3], body[4], body[5]]),
            order_id,
            symbol,
            quantity: be_f64(&body[16..24]),
            price: be_f64(&body[24..32]),
            transact_time,
        })
    }

    /// The record body (without the length prefix).
    pub fn encode(&self) -> [u8; ORDER_LEN] {
        let mut b = [0u8; ORDER_LEN];
        b[0] = ORDER_TYPE;
        b[1] = self.side;
        b[2..6].copy_from_slice(&self.account.to_be_bytes());
        b[6..12].copy_from_slice(&self.order_id);
        b[12..16].copy_from_slice(&self.symbol);
        b[16..24].copy_from_slice(&self.quantity.to_be_bytes());
        b[24..32].copy_from_slice(&self.price.to_be_bytes());
        b[32..53].copy_from_slice(&self.transact_time);
        b
    }
}

/// A market-spread decision payload (48 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub order_seq: u64,
    pub nbbo_version: u64,
    pub bid: f64,
    pub offer: f64,
    pub order_id: [u8; 6],
    pub symbol: [u8; 4],
    pub decision: u8,
    pub reason: u8,
    pub reserved: [u8; 4],
}

impl Decision {
    /// Parses a payload; `None` unless it is exactly [`DECISION_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Option<Decision> {
        if p.len() != DECISION_LEN {
            return None;
        }
        let le64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut order_id = [0u8; 6];
        order_id.copy_from_slice(&p[32..38]);
        let mut symbol = [0u8; 4];
        symbol.copy_from_slice(&p[38..42]);
        let mut reserved = [0u8; 4];
        reserved.copy_from_slice(&p[44..48]);
        Some(Decision {
            order_seq: le64(0),
            nbbo_version: le64(8),
            bid: f64::from_bits(le64(16)),
            offer: f64::from_bits(le64(24)),
            order_id,
            symbol,
            decision: p[42],
            reason: p[43],
            reserved,
        })
    }

    /// The 48-byte payload.
    pub fn encode(&self) -> [u8; DECISION_LEN] {
        let mut p = [0u8; DECISION_LEN];
        p[0..8].copy_from_slice(&self.order_seq.to_le_bytes());
        p[8..16].copy_from_slice(&self.nbbo_version.to_le_bytes());
        p[16..24].copy_from_slice(&self.bid.to_le_bytes());
        p[24..32].copy_from_slice(&self.offer.to_le_bytes());
        p[32..38].copy_from_slice(&self.order_id);
        p[38..42].copy_from_slice(&self.symbol);
        p[42] = self.decision;
        p[43] = self.reason;
        p[44..48].copy_from_slice(&self.reserved);
        p
    }
}
