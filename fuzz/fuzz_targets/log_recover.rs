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

use libfuzzer_sys::fuzz_target;
use verity::log::format::{self, SegmentHeader};
use verity::log::{Log, LogConfig};

const NAME: &str = "fz";

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
    // tmpfs when available: the target is I/O bound on a real disk.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let log_dir = dir.path().join(NAME);
    std::fs::create_dir(&log_dir).unwrap();
    std::fs::write(log_dir.join(format::segment_file_name(0)), &file).unwrap();
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

    // Append after recovery: the new records follow the recovered ones.
    let mut appended = Vec::new();
    for i in 0..3u8 {
        let payload = vec![i; usize::from(i) * 40 + 1];
        let position = log.append(7, u64::from(i), &payload).unwrap();
        appended.push((position, payload));
    }
    let records: Vec<_> = log.reader_at(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(records.len() as u64, count + 3);
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
    assert_eq!(log.reader_at(0).unwrap().count() as u64, count + 3);
});
