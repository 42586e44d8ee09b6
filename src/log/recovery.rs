//! Opening a log directory: list and validate segments, check they are
//! contiguous, scan the last one and zero its torn tail.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{LogError, Op};
use super::format::{self, RecordFault};
use super::segment::Segment;

/// What `Log::open` found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files in the log after opening.
    pub segments: usize,
    /// Valid records found in the last segment (earlier segments are not
    /// scanned on open; readers validate every record they return).
    pub records: u64,
    /// Bytes zeroed after the last valid record of the last segment (a torn
    /// or corrupt tail): from the end of the last valid record to the last
    /// non-zero byte of the segment. After a crash in a recycled segment
    /// this includes its old contents past the end.
    pub bytes_dropped: u64,
    /// Why the scan stopped where it did, if not at clean zeroes.
    pub stopped_because: Option<&'static str>,
    /// Leftover `*.seg.tmp` files of an interrupted segment creation, removed.
    pub tmp_files_removed: usize,
    /// `spare-<id>.seg` files adopted into the spare pool (see "Recycling").
    pub spares_adopted: usize,
    /// Spare files removed: over the pool's bound, another segment size, or
    /// a header torn by a crash while it was being recycled.
    pub spare_files_removed: usize,
    /// Position the next append goes to.
    pub end_position: u64,
}

/// What is in a log directory.
pub(crate) struct Listing {
    /// Segment files, sorted by base position.
    pub segments: Vec<(u64, PathBuf)>,
    /// Spare files, sorted by id.
    pub spares: Vec<(u64, PathBuf)>,
    pub tmp_removed: usize,
}

/// Lists segment and spare files, removing leftover `.seg.tmp` files.
pub(crate) fn list_segments(dir: &Path) -> Result<Listing, LogError> {
    let mut found = Vec::new();
    let mut spares = Vec::new();
    let mut tmp_removed = 0;
    let entries = fs::read_dir(dir).map_err(|e| LogError::io(Op::ReadDir, dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(Op::ReadDir, dir, e))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".seg.tmp") {
            // An interrupted segment creation: it was never renamed into
            // place, so it holds no record.
            fs::remove_file(&path).map_err(|e| LogError::io(Op::Remove, &path, e))?;
            tmp_removed += 1;
            continue;
        }
        if let Some(id) = format::parse_spare_file_name(name) {
            spares.push((id, path));
            continue;
        }
        if !name.ends_with(".seg") {
            continue; // LOCK and anything else that is not ours.
        }
        let Some(base) = format::parse_segment_file_name(name) else {
            return Err(LogError::BadSegmentName {
                path,
                reason: "expected <20-digit base position>.seg or spare-<id>.seg",
            });
        };
        found.push((base, path));
    }
    found.sort_by_key(|(base, _)| *base);
    spares.sort_by_key(|(id, _)| *id);
    Ok(Listing {
        segments: found,
        spares,
        tmp_removed,
    })
}

/// Checks each segment starts exactly where the previous one's data region
/// ends.
pub(crate) fn check_contiguous(segments: &[Segment]) -> Result<(), LogError> {
    for pair in segments.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        if next.base != previous.limit() {
            return Err(LogError::SegmentGap {
                previous: previous.path.clone(),
                next: next.path.clone(),
                expected_base: previous.limit(),
                found_base: next.base,
            });
        }
    }
    Ok(())
}

pub(crate) struct TailScan {
    pub records: u64,
    pub end: u64,
    pub bytes_dropped: u64,
    pub stopped_because: Option<&'static str>,
}

/// Index of the last non-zero byte. Whole 4 KiB blocks are OR-reduced
/// (vectorised) from the end: a fresh segment is tens of MiB of zeros, and
/// a byte-wise `rposition` over them was most of a node's start-up time.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    for block in bytes.rchunks(BLOCK) {
        let start = end - block.len();
        if block.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return block.iter().rposition(|b| *b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

/// Scans `segment` from its base, stops at the first invalid record, and
/// zeroes everything from there to the last non-zero byte so no stale bytes
/// can ever be read as a record after new appends.
pub(crate) fn scan_and_truncate(segment: &mut Segment) -> TailScan {
    let data_bytes = segment.data_bytes;
    let mut offset: u64 = 0;
    let mut records: u64 = 0;
    let mut stopped_because = None;
    // Bounded: each iteration advances by at least one record header.
    loop {
        assert!(offset <= data_bytes);
        let data = &segment.data()[offset as usize..];
        match format::parse_record(data, segment.base + offset) {
            Ok(parsed) => {
                assert!(parsed.span_bytes >= format::RECORD_HEADER_BYTES as u64);
                offset += parsed.span_bytes;
                records += 1;
            }
            Err(RecordFault::Empty) | Err(RecordFault::NoRoom) => break,
            Err(fault) => {
                stopped_because = Some(fault.describe());
                break;
            }
        }
    }
    let tail = &mut segment.data_mut()[offset as usize..];
    let bytes_dropped = match last_nonzero(tail) {
        Some(last) => {
            tail[..=last].fill(0);
            last as u64 + 1
        }
        None => 0,
    };
    if bytes_dropped > 0 && stopped_because.is_none() {
        stopped_because = Some("non-zero bytes after a zero length field");
    }
    TailScan {
        records,
        end: segment.base + offset,
        bytes_dropped,
        stopped_because,
    }
}

#[cfg(test)]
mod last_nonzero_tests {
    use super::last_nonzero;

    #[test]
    fn finds_the_last_non_zero_byte_wherever_it_is() {
        assert_eq!(last_nonzero(&[]), None);
        assert_eq!(last_nonzero(&[0; 10_000]), None);
        for len in [1usize, 4095, 4096, 4097, 10_000] {
            for at in [0, len / 2, len - 1] {
                let mut v = vec![0u8; len];
                v[at] = 0x80;
                assert_eq!(last_nonzero(&v), Some(at), "len {len} at {at}");
                if at > 0 {
                    v[0] = 1;
                    assert_eq!(
                        last_nonzero(&v),
                        Some(at),
                        "len {len} at {at}, first byte set too"
                    );
                }
            }
        }
    }
}
