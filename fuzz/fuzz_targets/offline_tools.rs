#![no_main]
//! Arbitrary bytes as a node's data directory → the offline tools
//! (`log::OfflineLog`, `verity-logdump`, the audit chain check,
//! `verity-trace`) never panic: every problem is a typed error or a report.
//!
//! Input layout: byte 0 picks the segment size, byte 1 which log the bytes
//! become (journal, outbound, forward-1, dead-letters) and whether a second
//! segment follows; the rest is split into valid records (kind, timestamp
//! and payload from the input, so frames, seals and dead-letter records
//! with fuzzer-chosen fields appear) and then raw corruptions.

use libfuzzer_sys::fuzz_target;
use verity::log::format::{self, SegmentHeader};
use verity::log::OfflineLog;

const LOGS: [&str; 4] = ["journal", "outbound", "forward-1", "dead-letters"];

fn segment(name: &str, base: u64, size: u64, input: &mut &[u8]) -> Vec<u8> {
    let mut file = vec![0u8; size as usize];
    let header = SegmentHeader::new(base, size, format::name_hash(name));
    file[..64].copy_from_slice(&header.to_bytes());
    let mut position = 0u64;
    // Records: [kind][len][payload bytes...] from the input.
    while let [kind, len, ref rest @ ..] = **input {
        let len = usize::from(len);
        if rest.len() < len {
            break;
        }
        let (payload, tail) = rest.split_at(len);
        let length = 32 + payload.len();
        let span = format::align_up(length as u64);
        if 64 + position + span > size {
            break;
        }
        let h =
            format::encode_record_header(u32::from(kind % 6), base + position, position, payload);
        let at = 64 + position as usize;
        file[at..at + 32].copy_from_slice(&h);
        file[at + 32..at + length].copy_from_slice(payload);
        position += span;
        *input = tail;
    }
    // Then (offset, value) corruptions, a few.
    for pair in input.chunks_exact(3).take(8) {
        let offset = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % file.len();
        file[offset] = pair[2];
    }
    file
}

fuzz_target!(|data: &[u8]| {
    let [size_sel, which, rest @ ..] = data else {
        return;
    };
    let size = 256 + 64 * u64::from(*size_sel); // 256 ..= 16576 bytes
    let name = LOGS[usize::from(which % 4)];
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let log_dir = dir.path().join(name);
    std::fs::create_dir(&log_dir).unwrap();
    let mut input = rest;
    let first = segment(name, 0, size, &mut input);
    std::fs::write(log_dir.join(format::segment_file_name(0)), &first).unwrap();
    if which & 0x80 != 0 {
        let base = size - 64;
        let second = segment(name, base, size, &mut input);
        std::fs::write(log_dir.join(format::segment_file_name(base)), &second).unwrap();
    }

    // The reader: typed errors only, records in increasing order.
    if let Ok(log) = OfflineLog::open(&log_dir) {
        let mut last = None;
        let _ = log.scan(0, |r| {
            assert!(last.is_none_or(|p| r.position > p));
            last = Some(r.position);
            std::ops::ControlFlow::Continue(())
        });
        let _ = verity::storage::audit::verify(log.reader(0), 0);
    }
    // verity-logdump, every detail level.
    for detail in [
        verity::logdump::Detail::Summary,
        verity::logdump::Detail::Records,
        verity::logdump::Detail::Frames,
    ] {
        let opts = verity::logdump::DumpOptions {
            detail,
            ..Default::default()
        };
        let _ = verity::logdump::dump(&log_dir, &opts, &mut std::io::sink());
        // --tail (a counting pass, then the last lines) and --hexdump.
        let opts = verity::logdump::DumpOptions {
            detail,
            tail: Some(2),
            hexdump: true,
            ..Default::default()
        };
        let _ = verity::logdump::dump(&log_dir, &opts, &mut std::io::sink());
    }
    // verity-trace over the directory, for a trace id taken from the input.
    let id = u64::from_le_bytes(
        rest.get(..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8]),
    );
    let node = verity::trace::NodeDir {
        label: "n".into(),
        node: 0,
        data_dir: dir.path().to_path_buf(),
    };
    let _ = verity::trace::trace(std::slice::from_ref(&node), id);
    let _ = verity::trace::output_trace_id(std::slice::from_ref(&node), 1000, 1);
});
