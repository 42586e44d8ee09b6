//! Reading a log's files as they are, for tools (`verity-logdump`,
//! `verity-replay`): no lock taken, nothing truncated, created or removed,
//! so it works on a copied data directory and on a stopped node's. (Reading
//! a running node's log works too, but its last record may be mid-append:
//! the scan then stops there, as recovery would.)
//!
//! Segments are read one at a time into memory. Records are validated
//! exactly as recovery validates them ([`format::parse_record`]); the scan
//! stops at the first invalid record and says where and why.

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use zerocopy::FromBytes;

use super::error::{LogError, Op};
use super::format::{self, RecordFault, SegmentHeader, SEGMENT_HEADER_BYTES};

/// A record read from a segment file.
#[derive(Debug, Clone, Copy)]
pub struct OfflineRecord<'a> {
    pub position: u64,
    pub kind: u32,
    pub timestamp: u64,
    pub payload: &'a [u8],
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// Records handed to the callback.
    pub records: u64,
    /// Position after the last valid record (where the log would append).
    pub end: u64,
    /// The position and reason of an invalid record the scan stopped at;
    /// `None` when it ended at the log's end (or the callback stopped it).
    pub stopped_at: Option<(u64, &'static str)>,
}

/// The segment files of one log directory (`<data_dir>/<log name>`).
#[derive(Debug)]
pub struct OfflineLog {
    dir: PathBuf,
    name_hash: u64,
    /// (base position, path), by base.
    segments: Vec<(u64, PathBuf)>,
}

impl OfflineLog {
    /// Lists `dir`'s segment files (`<base>.seg`; `.tmp` and spare files are
    /// not part of the log and are ignored). The log's name is `dir`'s last
    /// component (its segment headers carry its hash).
    pub fn open(dir: &Path) -> Result<OfflineLog, LogError> {
        let name =
            dir.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| LogError::BadSegmentName {
                    path: dir.to_path_buf(),
                    reason: "the log directory has no UTF-8 name",
                })?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| LogError::io(Op::ReadDir, dir, e))? {
            let entry = entry.map_err(|e| LogError::io(Op::ReadDir, dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if let Some(base) = format::parse_segment_file_name(file_name) {
                segments.push((base, entry.path()));
            }
        }
        segments.sort();
        Ok(OfflineLog {
            dir: dir.to_path_buf(),
            name_hash: format::name_hash(name),
            segments,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (base position, path) of every segment file, oldest first.
    pub fn segments(&self) -> &[(u64, PathBuf)] {
        &self.segments
    }

    /// Position of the log's first record (its oldest segment's base; 0 for
    /// a log with no segment).
    pub fn first_position(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.0)
    }

    /// Calls `f` with every valid record at or after `from`, in order, until
    /// the log ends, a record is invalid, or `f` breaks. A segment whose
    /// header is bad, or that does not start where the previous one ended,
    /// is an error naming the file.
    pub fn scan(
        &self,
        from: u64,
        mut f: impl FnMut(OfflineRecord<'_>) -> ControlFlow<()>,
    ) -> Result<ScanEnd, LogError> {
        let mut reader = self.reader(from);
        while let Some(record) = reader.next_record()? {
            if f(record).is_break() {
                break;
            }
        }
        Ok(reader.end())
    }

    /// A cursor over the records at or after `from` (see [`Self::scan`]).
    pub fn reader(&self, from: u64) -> OfflineReader<'_> {
        OfflineReader {
            log: self,
            from,
            next_segment: 0,
            bytes: Vec::new(),
            base: 0,
            last: false,
            position: None,
            records: 0,
            end: from.max(self.first_position()),
            stopped_at: None,
            done: self.segments.is_empty(),
        }
    }
}

/// Reads a log's records in order, one segment file in memory at a time.
pub struct OfflineReader<'a> {
    log: &'a OfflineLog,
    from: u64,
    /// Index of the next segment file to load.
    next_segment: usize,
    /// The loaded segment's file (header included) and its base.
    bytes: Vec<u8>,
    base: u64,
    last: bool,
    /// Position of the next record in the loaded segment; `None` before the
    /// first load.
    position: Option<u64>,
    records: u64,
    end: u64,
    stopped_at: Option<(u64, &'static str)>,
    done: bool,
}

impl OfflineReader<'_> {
    /// The next valid record, or `None` at the log's end or at an invalid
    /// record (then [`Self::end`] says where and why).
    pub fn next_record(&mut self) -> Result<Option<OfflineRecord<'_>>, LogError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(position) = self.position else {
                self.load_next()?;
                continue;
            };
            let data = &self.bytes[SEGMENT_HEADER_BYTES..];
            let offset = (position - self.base) as usize;
            match format::parse_record(&data[offset..], position) {
                Ok(parsed) => {
                    self.records += 1;
                    self.end = position + parsed.span_bytes;
                    self.position = Some(self.end);
                    let data = &self.bytes[SEGMENT_HEADER_BYTES..];
                    let start = offset + super::format::RECORD_HEADER_BYTES;
                    return Ok(Some(OfflineRecord {
                        position,
                        kind: parsed.kind,
                        timestamp: parsed.timestamp,
                        payload: &data[start..start + parsed.payload.len()],
                    }));
                }
                // The unused tail of a sealed segment: on to the next.
                Err(RecordFault::Empty) | Err(RecordFault::NoRoom) if !self.last => {
                    self.position = None;
                }
                Err(RecordFault::Empty) | Err(RecordFault::NoRoom) => {
                    self.end = self.end.max(position);
                    self.done = true;
                }
                Err(fault) => {
                    self.end = self.end.max(position);
                    self.stopped_at = Some((position, fault.describe()));
                    self.done = true;
                }
            }
        }
    }

    /// Loads the next segment that holds positions at or after `from`.
    fn load_next(&mut self) -> Result<(), LogError> {
        let segments = &self.log.segments;
        while self.next_segment < segments.len() {
            let i = self.next_segment;
            self.next_segment += 1;
            let (base, path) = &segments[i];
            let (header, file_bytes) = read_header(path)?;
            let data_bytes = check_header(path, &header, file_bytes, *base, self.log.name_hash)?;
            if i > 0 {
                let (previous_base, previous) = &segments[i - 1];
                let expected = self.base_after(*previous_base, previous)?;
                if *base != expected {
                    return Err(LogError::SegmentGap {
                        previous: previous.clone(),
                        next: path.clone(),
                        expected_base: expected,
                        found_base: *base,
                    });
                }
            }
            let limit = base + data_bytes;
            if self.from >= limit {
                continue;
            }
            // Into the buffer of the previous segment: a new buffer per
            // segment was a page fault (and the zeroing) of each of its
            // pages before a byte was read (a 4 M-input replay: 0.45 s of
            // system CPU, 0.25 s reusing it). `try_reserve`: a size no
            // memory can hold is an error naming the file, as with
            // `fs::read`, not an abort.
            self.bytes.clear();
            fs::File::open(path)
                .and_then(|mut file| {
                    use std::io::{Error, ErrorKind, Read};
                    self.bytes
                        .try_reserve_exact(file_bytes as usize)
                        .map_err(|_| Error::from(ErrorKind::OutOfMemory))?;
                    file.read_to_end(&mut self.bytes)
                })
                .map_err(|e| LogError::io(Op::Open, path, e))?;
            if self.bytes.len() as u64 != file_bytes {
                return Err(LogError::BadSegmentHeader {
                    path: path.clone(),
                    reason: "file size changed while it was read",
                });
            }
            self.base = *base;
            self.last = i + 1 == segments.len();
            self.position = Some(self.from.max(*base));
            return Ok(());
        }
        self.done = true;
        Ok(())
    }

    /// The base the segment after `(base, path)` must have (from its size).
    fn base_after(&self, base: u64, path: &Path) -> Result<u64, LogError> {
        let len = fs::metadata(path)
            .map_err(|e| LogError::io(Op::Metadata, path, e))?
            .len();
        Ok(base + len.saturating_sub(SEGMENT_HEADER_BYTES as u64))
    }

    /// How the reading went so far: records read, the position after the
    /// last one, and the invalid record it stopped at, if any.
    pub fn end(&self) -> ScanEnd {
        ScanEnd {
            records: self.records,
            end: self.end,
            stopped_at: self.stopped_at,
        }
    }
}

/// A segment file's first bytes (up to a header's worth) and its size.
fn read_header(path: &Path) -> Result<(Vec<u8>, u64), LogError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|e| LogError::io(Op::Open, path, e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io(Op::Metadata, path, e))?
        .len();
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    file.take(SEGMENT_HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|e| LogError::io(Op::Open, path, e))?;
    Ok((header, len))
}

/// Validates a segment file's header against its size, its name and the
/// log; returns the size of its data region.
fn check_header(
    path: &Path,
    header: &[u8],
    file_bytes: u64,
    base: u64,
    name_hash: u64,
) -> Result<u64, LogError> {
    let bad = |reason| LogError::BadSegmentHeader {
        path: path.to_path_buf(),
        reason,
    };
    let Ok((header, _)) = SegmentHeader::read_from_prefix(header) else {
        return Err(bad("file shorter than the segment header"));
    };
    header.validate(name_hash).map_err(bad)?;
    if header.size_bytes.get() != file_bytes {
        return Err(bad("file size differs from the size in the header"));
    }
    if header.base_position.get() != base {
        return Err(LogError::BadSegmentName {
            path: path.to_path_buf(),
            reason: "name differs from the base position in the header",
        });
    }
    Ok(file_bytes - SEGMENT_HEADER_BYTES as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Log, LogConfig};

    fn small() -> LogConfig {
        LogConfig {
            segment_size_bytes: 4096,
            ..LogConfig::default()
        }
    }

    #[test]
    fn reads_every_record_across_segments_without_touching_the_files() {
        let t = tempfile::tempdir().unwrap();
        let mut positions = Vec::new();
        {
            let (mut log, _) = Log::open(t.path(), "journal", small()).unwrap();
            for i in 0..200u32 {
                let payload = vec![i as u8; 40 + (i as usize % 50)];
                positions.push(log.append(7, i as u64, &payload).unwrap());
            }
            assert!(log.segment_count() > 3);
        }
        let listing = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let before = listing(&t.path().join("journal"));
        let log = OfflineLog::open(&t.path().join("journal")).unwrap();
        let mut seen = Vec::new();
        let end = log
            .scan(0, |r| {
                assert_eq!(r.kind, 7);
                assert_eq!(r.payload[0] as u64, r.timestamp);
                seen.push(r.position);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(seen, positions);
        assert_eq!(end.records, 200);
        assert_eq!(end.stopped_at, None);
        assert_eq!(
            listing(&t.path().join("journal")),
            before,
            "nothing created or removed"
        );

        // From a position in the middle: the records from there on.
        let mut from_mid = Vec::new();
        log.scan(positions[120], |r| {
            from_mid.push(r.position);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(from_mid, positions[120..]);
    }

    #[test]
    fn a_flipped_byte_stops_the_scan_there_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let mut positions = Vec::new();
        {
            let (mut log, _) = Log::open(t.path(), "journal", small()).unwrap();
            for i in 0..20u32 {
                positions.push(log.append(1, 0, &[i as u8; 64]).unwrap());
            }
        }
        let seg = t.path().join("journal").join(format::segment_file_name(0));
        let mut bytes = fs::read(&seg).unwrap();
        // A payload byte of the 6th record.
        let at = SEGMENT_HEADER_BYTES + positions[5] as usize + 40;
        bytes[at] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();
        let log = OfflineLog::open(&t.path().join("journal")).unwrap();
        let end = log.scan(0, |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(end.records, 5);
        assert_eq!(end.stopped_at, Some((positions[5], "CRC mismatch")));
    }

    #[test]
    fn a_missing_middle_segment_is_an_error_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Log::open(t.path(), "journal", small()).unwrap();
            for _ in 0..200 {
                log.append(1, 0, &[0u8; 64]).unwrap();
            }
        }
        let log = OfflineLog::open(&t.path().join("journal")).unwrap();
        let second = log.segments()[1].1.clone();
        fs::remove_file(&second).unwrap();
        let log = OfflineLog::open(&t.path().join("journal")).unwrap();
        let e = log.scan(0, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(e, LogError::SegmentGap { .. }), "{e}");
        assert!(e.to_string().contains("not contiguous"), "{e}");
    }
}
