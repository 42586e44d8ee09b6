#![no_main]
//! Arbitrary bytes as a segment file → recovery never panics, what it keeps
//! reads back intact (CRC verified by the reader, positions increasing, all
//! below the recovered end), and appending after recovery works and reads
//! back after the recovered records.
//!
//! Input layout: byte 0 picks the mode, byte 1 the segment size.
//! - mode 0: the rest is the whole file (header included, zero-padded or cut
//!   to the segment size): exercises header validation.
//! - mode 1: a valid header, the rest is the data region.
//! - mode 2: a valid header, then valid records built from the input, then
//!   the remaining input bytes as (offset, value) corruptions.
//!
//! With bit 7 of byte 0 set, a spare file (`spare-0.seg`: a valid header,
//! the input as its data region, i.e. fuzzer-chosen old contents) is
//! left next to the segment; open adopts it, and the appends after recovery
//! roll into it. None of its old bytes may ever read back as a record.

use libfuzzer_sys::fuzz_target;
use verity::log::format::{self, SegmentHeader};
use verity::log::{Log, LogConfig};

const NAME: &str = "fz";

/// A spare of `size` bytes: valid header for an old base, `stale` as data.
fn spare(size: u64, stale: &[u8]) -> Vec<u8> {
    let mut file = vec![0u8; size as usize];
    let header = SegmentHeader::new(8 * 1000, size, format::name_hash(NAME));
    file[..64].copy_from_slice(&header.to_bytes());
    for (i, byte) in file[64..].iter_mut().enumerate() {
        *byte = stale.get(i % stale.len().max(1)).copied().unwrap_or(0);
    }
    file
}

fn build(data: &[u8]) -> Option<(u64, Vec<u8>)> {
    let (&mode, rest) = data.split_first()?;
    let (&size_sel, rest) = rest.split_first()?;
    let size = 256 + 8 * u64::from(size_sel) * 4; // 256 ..= 8416 bytes
    let mut file = vec![0u8; size as usize];
    let header = SegmentHeader::new(0, size, format::name_hash(NAME));
    match mode % 3 {
        0 => {
            let n = rest.len().min(file.len());
            file[..n].copy_from_slice(&rest[..n]);
        }
        1 => {
            file[..64].copy_from_slice(&header.to_bytes());
            let n = rest.len().min(file.len() - 64);
            file[64..64 + n].copy_from_slice(&rest[..n]);
        }
        _ => {
            file[..64].copy_from_slice(&header.to_bytes());
            let (&count, rest) = rest.split_first()?;
            let mut position = 0u64;
            let mut input = rest;
            for i in 0..count % 16 {
                let Some((&len, tail)) = input.split_first() else {
                    break;
                };
                input = tail;
                let payload: Vec<u8> = (0..len).map(|j| j ^ i).collect();
                let length = 32 + payload.len();
                let span = format::align_up(length as u64);
                if 64 + position + span > size {
                    break;
                }
                let h =
                    format::encode_record_header(u32::from(i), position, position * 3, &payload);
                let at = 64 + position as usize;
                file[at..at + 32].copy_from_slice(&h);
                file[at + 32..at + length].copy_from_slice(&payload);
                position += span;
            }
            for pair in input.chunks_exact(3) {
                let offset = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % file.len();
                file[offset] = pair[2];
            }
        }
    }
    Some((size, file))
}

fuzz_target!(|data: &[u8]| {
    let Some((size, file)) = build(data) else {
        return;
    };
    let with_spare = data[0] & 0x80 != 0;
    // tmpfs when available: the target is I/O bound on a real disk.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let log_dir = dir.path().join(NAME);
    std::fs::create_dir(&log_dir).unwrap();
    std::fs::write(log_dir.join(format::segment_file_name(0)), &file).unwrap();
    if with_spare {
        std::fs::write(
            log_dir.join(format::spare_file_name(0)),
            spare(size, &data[2..]),
        )
        .unwrap();
    }
    let config = LogConfig {
        segment_size_bytes: size,
        ..LogConfig::default()
    };
    let Ok((mut log, recovery)) = Log::open(dir.path(), NAME, config) else {
        return; // A typed error (bad header) is a fine outcome.
    };
    assert_eq!(recovery.end_position, log.end_position());
    let mut previous = None;
    let mut count = 0u64;
    for record in log.reader_at(0).unwrap() {
        let record = record.expect("recovered prefix must read back");
        if let Some(p) = previous {
            assert!(record.position > p);
        }
        assert!(record.position < log.end_position());
        previous = Some(record.position);
        count += 1;
    }
    assert_eq!(count, recovery.records);

    if with_spare {
        assert_eq!(recovery.spares_adopted, 1);
    }
    // Append after recovery: the new records follow the recovered ones.
    // With a spare, go on until it is in use and a few records are in it
    // (bounded: each append takes at least 40 bytes of a segment).
    let mut appended = Vec::new();
    let mut i = 0u8;
    while i < 3 || (with_spare && log.segment_count() < 2) || (with_spare && i < 40) {
        let payload = vec![i; usize::from(i % 4) * 40 + 1];
        let position = log.append(7, u64::from(i), &payload).unwrap();
        appended.push((position, payload));
        i += 1;
        assert!(i < 250, "appends never rolled into the spare");
    }
    let appended_count = appended.len() as u64;
    let records: Vec<_> = log.reader_at(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(records.len() as u64, count + appended_count);
    for (record, (position, payload)) in records[count as usize..].iter().zip(&appended) {
        assert_eq!(record.position, *position);
        assert_eq!(record.payload, &payload[..]);
    }
    drop(log);
    // And the whole thing survives a reopen unchanged.
    let config = LogConfig {
        segment_size_bytes: size,
        ..LogConfig::default()
    };
    let (log, again) = Log::open(dir.path(), NAME, config).unwrap();
    assert_eq!(again.bytes_dropped, 0);
    assert_eq!(
        log.reader_at(0).unwrap().count() as u64,
        count + appended_count
    );
});
