use super::*;
use std::io::{Seek, SeekFrom, Write};

fn config(segment_size_bytes: u64) -> LogConfig {
    LogConfig {
        segment_size_bytes,
        ..LogConfig::default()
    }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

fn read_all(log: &Log, from: Position) -> Vec<(Position, u32, u64, Vec<u8>)> {
    log.reader_at(from)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.position, r.kind, r.timestamp, r.payload.to_vec())
        })
        .collect()
}

#[test]
fn append_then_read_round_trips_kind_timestamp_payload() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, recovery) = Log::open(dir.path(), "j", config(4096)).unwrap();
    assert_eq!(recovery.records, 0);
    assert_eq!(recovery.bytes_dropped, 0);
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let data = payload(i, i as usize * 3);
        let pos = log.append(i as u32, 1000 + i, &data).unwrap();
        assert_eq!(pos % 8, 0);
        expected.push((pos, i as u32, 1000 + i, data));
    }
    assert_eq!(read_all(&log, 0), expected);
    // Reading from the middle starts at that record.
    assert_eq!(read_all(&log, expected[5].0), expected[5..].to_vec());
    assert!(log.reader_at(log.end_position() + 8).is_err());
}

#[test]
fn append_with_fills_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), "j", config(4096)).unwrap();
    let pos = log
        .append_with(7, 9, 5, |buf| buf.copy_from_slice(b"hello"))
        .unwrap();
    let records = read_all(&log, pos);
    assert_eq!(records, vec![(pos, 7, 9, b"hello".to_vec())]);
}

#[test]
fn records_roll_across_segments_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
        for i in 0..50u64 {
            let data = payload(i, (i as usize * 7) % 100);
            let pos = log.append(1, i, &data).unwrap();
            expected.push((pos, 1, i, data));
        }
        assert!(
            log.segment_paths().len() > 5,
            "records should span many segments"
        );
        assert_eq!(read_all(&log, 0), expected);
    }
    let (log, recovery) = Log::open(dir.path(), "j", config(512)).unwrap();
    assert_eq!(recovery.bytes_dropped, 0);
    assert!(recovery.records > 0);
    assert_eq!(read_all(&log, 0), expected);
    let names: Vec<String> = log
        .segment_paths()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "00000000000000000000.seg");
    assert_eq!(names[1], format!("{:020}.seg", 512 - 64));
}

#[test]
fn record_too_large_is_rejected_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
    let max = log.max_payload_bytes() as usize;
    assert!(matches!(
        log.append(1, 0, &vec![0; max + 1]),
        Err(LogError::RecordTooLarge { .. })
    ));
    assert_eq!(log.end_position(), 0);
    log.append(1, 0, &vec![1; max]).unwrap();
    log.append(1, 0, &vec![2; max]).unwrap();
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn tailer_follows_appends_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
    let mut tailer = log.tailer_at(0).unwrap();
    assert_eq!(tailer.next(&log).unwrap(), None);
    for i in 0..40u64 {
        let data = payload(i, 40);
        let pos = log.append(2, i, &data).unwrap();
        let record = tailer.next(&log).unwrap().unwrap();
        assert_eq!((record.position, record.payload), (pos, &data[..]));
        assert_eq!(tailer.next(&log).unwrap(), None);
    }
}

#[test]
fn drop_below_removes_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
    let mut positions = Vec::new();
    for i in 0..40u64 {
        positions.push(log.append(3, i, &payload(i, 60)).unwrap());
    }
    let segments_before = log.segment_paths();
    let cut = positions[20];
    let dropped = log.drop_below(cut).unwrap();
    assert!(dropped > 0);
    assert!(log.first_position() <= cut);
    for path in &segments_before[..dropped] {
        assert!(!path.exists());
    }
    // Everything at or after `cut` is still readable.
    let remaining: Vec<Position> = read_all(&log, cut).iter().map(|r| r.0).collect();
    assert_eq!(remaining, positions[20..].to_vec());
    assert!(matches!(
        log.reader_at(0),
        Err(LogError::PositionOutOfRange { .. })
    ));
    // The active segment is never dropped.
    log.drop_below(u64::MAX).unwrap();
    assert_eq!(log.segment_paths().len(), 1);
    drop(log);
    let (log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
    assert_eq!(log.segment_paths().len(), 1);
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.join("j"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn torn_tail_mid_record_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let positions: Vec<Position> = {
        let (mut log, _) = Log::open(dir.path(), "j", config(4096)).unwrap();
        (0..5u64)
            .map(|i| log.append(1, i, &payload(i, 100)).unwrap())
            .collect()
    };
    // Tear the last record: clear its length (as if killed before the
    // length store) while its payload bytes are already there.
    let path = last_segment(dir.path());
    write_at(&path, 64 + positions[4], &[0, 0, 0, 0]);
    let (mut log, recovery) = Log::open(dir.path(), "j", config(4096)).unwrap();
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.end_position, positions[4]);
    assert!(recovery.bytes_dropped > 100 && recovery.bytes_dropped <= 136);
    assert_eq!(read_all(&log, 0).len(), 4);
    // Appending after recovery reuses the space and reads back.
    let pos = log.append(9, 9, b"after").unwrap();
    assert_eq!(pos, positions[4]);
    assert_eq!(read_all(&log, 0).len(), 5);
}

#[test]
fn flipped_payload_byte_in_last_segment_truncates_there() {
    let dir = tempfile::tempdir().unwrap();
    let positions: Vec<Position> = {
        let (mut log, _) = Log::open(dir.path(), "j", config(4096)).unwrap();
        (0..6u64)
            .map(|i| log.append(1, i, &payload(i, 50)).unwrap())
            .collect()
    };
    let path = last_segment(dir.path());
    write_at(&path, 64 + positions[3] + 40, &[0xFF]);
    let (log, recovery) = Log::open(dir.path(), "j", config(4096)).unwrap();
    assert_eq!(recovery.records, 3);
    assert_eq!(recovery.stopped_because, Some("CRC mismatch"));
    assert_eq!(recovery.end_position, positions[3]);
    let read: Vec<Position> = read_all(&log, 0).iter().map(|r| r.0).collect();
    assert_eq!(read, positions[..3].to_vec());
}

#[test]
fn stale_valid_records_after_a_corrupt_one_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let positions: Vec<Position> = {
        let (mut log, _) = Log::open(dir.path(), "j", config(4096)).unwrap();
        (0..4u64)
            .map(|i| log.append(1, i, &payload(i, 50)).unwrap())
            .collect()
    };
    let path = last_segment(dir.path());
    write_at(&path, 64 + positions[1] + 40, &[0xFF]);
    let (mut log, _) = Log::open(dir.path(), "j", config(4096)).unwrap();
    // Same size as the dropped record: the next one would land exactly on
    // the old record 2 if the tail had not been zeroed.
    log.append(1, 1, &payload(99, 50)).unwrap();
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn invalid_segment_header_is_a_typed_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
        for i in 0..20u64 {
            log.append(1, i, &payload(i, 60)).unwrap();
        }
    }
    let path = last_segment(dir.path());
    write_at(&path, 20, &[0xAB]);
    match Log::open(dir.path(), "j", config(512)) {
        Err(LogError::BadSegmentHeader { path: p, reason }) => {
            assert_eq!(p, path);
            assert_eq!(reason, "header CRC mismatch");
        }
        other => panic!("expected BadSegmentHeader, got {:?}", other.map(|(_, r)| r)),
    }
    let message = Log::open(dir.path(), "j", config(512))
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn missing_segment_is_a_gap_error_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let paths = {
        let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
        for i in 0..30u64 {
            log.append(1, i, &payload(i, 60)).unwrap();
        }
        log.segment_paths()
    };
    assert!(paths.len() >= 4);
    fs::remove_file(&paths[1]).unwrap();
    match Log::open(dir.path(), "j", config(512)) {
        Err(LogError::SegmentGap { previous, next, .. }) => {
            assert_eq!(previous, paths[0]);
            assert_eq!(next, paths[2]);
        }
        other => panic!("expected SegmentGap, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn second_open_of_the_same_log_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
    assert!(matches!(
        Log::open(dir.path(), "j", config(512)),
        Err(LogError::Locked { .. })
    ));
}

#[test]
fn missing_parent_directory_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let error = Log::open(&missing, "j", config(512)).err().unwrap();
    assert!(matches!(
        error,
        LogError::Io {
            op: Op::CreateDir,
            ..
        }
    ));
    assert!(error.to_string().contains("no/such/dir/j"), "{error}");
}

#[test]
fn bad_name_and_segment_size_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["", "..", "a/b", ".hidden"] {
        assert!(matches!(
            Log::open(dir.path(), name, config(512)),
            Err(LogError::Config { .. })
        ));
    }
    for size in [0, 100, 513, (1 << 32) + 8] {
        assert!(matches!(
            Log::open(dir.path(), "j", config(size)),
            Err(LogError::Config { .. })
        ));
    }
}

#[test]
fn disk_limit_gives_no_space_then_retry_succeeds_after_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 512,
        disk_limit_bytes: Some(3 * 512),
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg).unwrap();
    let mut positions = Vec::new();
    let error = loop {
        match log.append(1, 0, &payload(positions.len() as u64, 100)) {
            Ok(pos) => positions.push(pos),
            Err(error) => break error,
        }
        assert!(positions.len() < 100, "limit never hit");
    };
    assert!(error.is_no_space(), "{error}");
    assert!(error.to_string().contains(".seg"), "{error}");
    assert_eq!(log.segment_paths().len(), 3);
    // Nothing written was damaged.
    let read: Vec<Position> = read_all(&log, 0).iter().map(|r| r.0).collect();
    assert_eq!(read, positions);
    // Backpressure then retry: free space, append again.
    log.drop_below(positions[positions.len() / 2]).unwrap();
    let pos = log.append(1, 0, b"retry").unwrap();
    assert!(pos > *positions.last().unwrap());
    assert_eq!(read_all(&log, pos)[0].3, b"retry".to_vec());
    // The segment prepared ahead is removed with the log.
    drop(log);
    assert!(fs::read_dir(dir.path().join("j")).unwrap().all(|e| !e
        .unwrap()
        .path()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn leftover_tmp_segment_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = Log::open(dir.path(), "j", config(512)).unwrap();
        log.append(1, 0, b"x").unwrap();
    }
    let tmp = dir.path().join("j").join("00000000000000000448.seg.tmp");
    fs::write(&tmp, b"partial").unwrap();
    let (log, recovery) = Log::open(dir.path(), "j", config(512)).unwrap();
    assert_eq!(recovery.tmp_files_removed, 1);
    assert!(!tmp.exists());
    assert_eq!(read_all(&log, 0).len(), 1);
}

#[test]
fn rolls_work_with_and_without_prepare_ahead_and_prefault() {
    // Fsync too: its prepared segments are fallocated, not zeroed, and
    // mapped clean (segment.rs, `create_tmp`): unwritten blocks must read
    // as zeros (no record) past the tail after a reopen.
    let variants = [(false, false), (false, true), (true, false), (true, true)];
    for durability in [Durability::Process, Durability::Fsync] {
        for (prepare_ahead, prefault) in variants {
            rolls_work(durability, prepare_ahead, prefault);
        }
    }
}

fn rolls_work(durability: Durability, prepare_ahead: bool, prefault: bool) {
    {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_size_bytes: 512,
            prepare_ahead,
            prefault,
            durability,
            ..LogConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
        let positions: Vec<Position> = (0..40u64)
            .map(|i| log.append(1, i, &payload(i, 70)).unwrap())
            .collect();
        assert!(log.segment_count() > 5);
        drop(log);
        let (log, recovery) = Log::open(dir.path(), "j", cfg).unwrap();
        assert_eq!(recovery.tmp_files_removed, 0);
        let read: Vec<Position> = read_all(&log, 0).iter().map(|r| r.0).collect();
        assert_eq!(read, positions);
    }
}

#[test]
fn fsync_group_commit_publishes_durable_position() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 1024,
        durability: Durability::Fsync,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
    let mut last = 0;
    for i in 0..30u64 {
        last = log.append(1, i, &payload(i, 50)).unwrap();
    }
    assert!(log.durable_position() <= log.end_position());
    log.commit().unwrap();
    log.wait_durable(last).unwrap();
    assert!(log.is_durable(last));
    assert_eq!(log.durable_position(), log.end_position());
    assert!(log.wait_durable(log.end_position()).is_err());
    drop(log);
    let (log, _) = Log::open(dir.path(), "j", cfg).unwrap();
    assert_eq!(read_all(&log, 0).len(), 30);
}

/// The syncer calls `on_durable` after it publishes (the event loop's
/// waker in a worker), so a loop with nothing to read releases at once: by
/// the time the call comes, the position it was asked for is durable.
#[test]
fn fsync_syncer_calls_on_durable_after_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 1024,
        durability: Durability::Fsync,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    log.on_durable(move || {
        let _ = tx.send(());
    });
    for round in 0..5u64 {
        let mut last = 0;
        for i in 0..10u64 {
            last = log.append(1, round, &payload(i, 40)).unwrap();
        }
        log.commit().unwrap();
        // Every call wakes us; the last one of this round covers `last`.
        loop {
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .expect("the syncer never called on_durable");
            if log.is_durable(last) {
                break;
            }
        }
    }
    // Nothing new appended: a commit publishes nothing and calls nobody.
    while rx.try_recv().is_ok() {}
    log.commit().unwrap();
    log.wait_durable(log.end_position() - 1).unwrap();
    assert!(rx
        .recv_timeout(std::time::Duration::from_millis(200))
        .is_err());
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

fn files_named(dir: &Path, predicate: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| predicate(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    found.sort();
    found
}

fn spare_files(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, |n| n.starts_with("spare-"))
}

/// Copies the log's files as they are in the page cache now: what a
/// `kill -9` at this instant leaves behind.
fn crash_image(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for path in files_named(from, |n| n != "LOCK") {
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn recycled_segment_never_yields_its_old_records_even_crafted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 512,
        prepare_ahead: false, // Deterministic: the roll recycles in place.
        spare_segments: 1,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
    // Segment 0 (data 448 bytes) becomes a spare and is reused as the
    // segment at base 896 (segment 1 is new: no spare exists at its roll).
    let reused_base = 2 * (512 - 64);
    // Old records of span 96: their payloads start at data offsets 32,
    // 128, 224, 320. Each payload is a complete, CRC-valid record header
    // carrying the position that offset will have once reused: what an
    // input could be crafted to contain.
    let mut old_positions = Vec::new();
    for i in 0..4u64 {
        let payload_offset = 96 * i + 32;
        let mut crafted =
            format::encode_record_header(0xBAD, reused_base + payload_offset, 7, &[]).to_vec();
        crafted.resize(64, 0);
        old_positions.push(log.append(1, i, &crafted).unwrap());
    }
    assert_eq!(old_positions, vec![0, 96, 192, 288]);
    let old_inode = inode(&log.segment_paths()[0]);
    log.append(1, 4, &payload(4, 64)).unwrap(); // Rolls to base 448.
    assert_eq!(log.drop_below(448).unwrap(), 1);
    assert_eq!(spare_files(log.dir()).len(), 1);
    while log.segment_count() < 2 {
        log.append(1, 5, &payload(5, 64)).unwrap();
    }
    assert!(spare_files(log.dir()).is_empty());
    assert_eq!(inode(&log.segment_paths()[1]), old_inode, "not recycled");
    // The last append rolled into the recycled segment: one record at its
    // base. New records of span 64 land on data offsets 0, 64, 128: the
    // slot at 128 holds the crafted header for position 896 + 128.
    let active = log.segment_paths()[1].clone();
    assert_eq!(log.end_position(), reused_base + 96);
    log.drop_below(reused_base).unwrap();
    let first = log.reader_at(reused_base).unwrap().next().unwrap().unwrap();
    assert_eq!(first.position, reused_base);
    let a = log.append(2, 0, &payload(10, 32)).unwrap();
    assert_eq!(a, reused_base + 96);
    let records = read_all(&log, reused_base);
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.1 != 0xBAD));
    // Still there past the end, except the length field the append cleared.
    let data = log.active().data();
    let slot = (log.end_position() - reused_base) as usize;
    assert_eq!(slot, 160);
    assert_eq!(&data[slot..slot + 4], &[0, 0, 0, 0]);
    assert_ne!(
        &data[224 + 8..224 + 16],
        &[0; 8],
        "old contents should remain"
    );

    // A kill -9 now: recovery scans the recycled segment, stops at the
    // cleared slot, and zeroes the old contents after it.
    let image = dir.path().join("image");
    crash_image(log.dir(), &image.join("j"));
    let (mut crashed, recovery) = Log::open(&image, "j", cfg.clone()).unwrap();
    assert_eq!(recovery.records, 2);
    assert_eq!(recovery.end_position, reused_base + 160);
    assert!(recovery.bytes_dropped > 0, "old contents are zeroed");
    assert_eq!(read_all(&crashed, reused_base), records);
    // Appends after recovery land on old crafted slots and read back.
    for i in 0..4u64 {
        crashed.append(3, i, &payload(i, 32)).unwrap();
    }
    let after = read_all(&crashed, reused_base);
    assert_eq!(after.len(), 6);
    assert!(after.iter().all(|r| r.1 != 0xBAD));
    drop(crashed);

    // Every later append in the live log too.
    let mut expected = records;
    while log.active_remaining_bytes() >= 64 {
        let data = payload(expected.len() as u64, 32);
        let position = log.append(4, 1, &data).unwrap();
        expected.push((position, 4, 1, data));
    }
    assert_eq!(read_all(&log, reused_base), expected);
    assert_eq!(log.segment_paths()[0], active);
    // A clean close zeroes the old contents, so reopening drops nothing.
    drop(log);
    let (log, recovery) = Log::open(dir.path(), "j", cfg).unwrap();
    assert_eq!(recovery.bytes_dropped, 0);
    assert_eq!(read_all(&log, reused_base), expected);
}

#[test]
fn torn_append_in_a_recycled_segment_is_no_record() {
    // The same record size in both generations: a crash between the header
    // and the length store must not combine the new header with the old
    // (equal) length.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 512,
        prepare_ahead: false,
        spare_segments: 1,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
    while log.segment_count() < 2 {
        log.append(1, 0, &payload(1, 64)).unwrap();
    }
    log.drop_below(448).unwrap();
    while log.segment_count() < 2 {
        log.append(1, 0, &payload(2, 64)).unwrap();
    }
    assert!(log.active().recycled);
    let base = 896;
    assert_eq!(log.end_position(), base + 96);
    // Simulate the torn append at `end`: everything but the length.
    let position = log.end_position();
    let new_payload = payload(3, 64);
    let header = format::encode_record_header(1, position, 0, &new_payload);
    let offset = (position - base) as usize;
    let data = log.active_mut().data_mut();
    assert_eq!(&data[offset..offset + 4], &[0, 0, 0, 0]);
    data[offset + 32..offset + 96].copy_from_slice(&new_payload);
    data[offset + 4..offset + 32].copy_from_slice(&header[4..]);
    let image = dir.path().join("image");
    crash_image(log.dir(), &image.join("j"));
    let (crashed, recovery) = Log::open(&image, "j", cfg).unwrap();
    assert_eq!(recovery.records, 1);
    assert_eq!(recovery.end_position, position);
    assert_eq!(read_all(&crashed, base).len(), 1);
}

#[test]
fn spares_are_bounded_reused_and_adopted_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 1024,
        spare_segments: 2,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
    let mut expected = Vec::new();
    let mut inodes = std::collections::BTreeSet::new();
    for i in 0..400u64 {
        let data = payload(i, (i as usize * 13) % 200);
        let position = log.append(1, i, &data).unwrap();
        expected.push((position, 1, i, data));
        for path in log.segment_paths() {
            inodes.insert(inode(&path));
        }
        // As the engine: keep the last two segments.
        if log.segment_count() > 2 {
            let keep_from = log.segments[log.segment_count() - 2].base;
            log.drop_below(keep_from).unwrap();
        }
        // The pool's bound, plus one in the preparer's hands.
        assert!(spare_files(log.dir()).len() <= 3);
    }
    let first = log.first_position();
    let kept: Vec<_> = expected.iter().filter(|r| r.0 >= first).cloned().collect();
    assert_eq!(read_all(&log, first), kept);
    assert!(log.end_position() > 40 * 1024, "should roll many times");
    // Two kept + the active's successor + two spares: a handful of files,
    // not one per segment.
    assert!(inodes.len() <= 6, "{} distinct files", inodes.len());

    drop(log);
    let spares = spare_files(&dir.path().join("j"));
    assert!(!spares.is_empty());
    let spare_inodes: Vec<u64> = spares.iter().map(|p| inode(p)).collect();
    let (mut log, recovery) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
    assert_eq!(recovery.spares_adopted, spares.len());
    assert_eq!(recovery.spare_files_removed, 0);
    assert_eq!(recovery.bytes_dropped, 0);
    assert_eq!(read_all(&log, first), kept);
    // The adopted spares become the next segments.
    let mut expected = kept;
    let segments_before = log.segment_count();
    while log.segment_count() < segments_before + spares.len() {
        let data = payload(expected.len() as u64, 100);
        let position = log.append(2, 0, &data).unwrap();
        expected.push((position, 2, 0, data));
    }
    let new_inodes: Vec<u64> = log.segment_paths()[segments_before..]
        .iter()
        .map(|p| inode(p))
        .collect();
    for spare in &spare_inodes {
        assert!(new_inodes.contains(spare), "adopted spare not reused");
    }
    assert_eq!(read_all(&log, first), expected);
    drop(log);

    // No spares configured: leftovers are removed; so is a torn one.
    let log_dir = dir.path().join("j");
    fs::write(log_dir.join("spare-77.seg"), vec![0xEE; 1024]).unwrap();
    let leftovers = spare_files(&log_dir).len();
    let cfg0 = LogConfig {
        spare_segments: 0,
        ..cfg
    };
    let (log, recovery) = Log::open(dir.path(), "j", cfg0).unwrap();
    assert_eq!(recovery.spares_adopted, 0);
    assert_eq!(recovery.spare_files_removed, leftovers);
    assert!(spare_files(&log_dir).is_empty());
    assert_eq!(read_all(&log, first), expected);
}

#[test]
fn spare_segments_zero_unlinks_dropped_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 512,
        spare_segments: 0,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg).unwrap();
    for i in 0..40u64 {
        log.append(1, i, &payload(i, 60)).unwrap();
    }
    assert!(log.drop_below(log.end_position()).unwrap() > 0);
    assert!(spare_files(log.dir()).is_empty());
}

#[test]
fn too_many_spare_segments_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        spare_segments: SPARE_SEGMENTS_MAX + 1,
        ..config(512)
    };
    assert!(matches!(
        Log::open(dir.path(), "j", cfg),
        Err(LogError::Config { .. })
    ));
}

#[test]
fn fsync_durability_holds_across_recycled_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_size_bytes: 1024,
        durability: Durability::Fsync,
        spare_segments: 2,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
    let mut expected = Vec::new();
    let mut recycled_segments = 0;
    for batch in 0..30u64 {
        let mut last = 0;
        for i in 0..8u64 {
            let data = payload(batch * 8 + i, 90);
            last = log.append(1, batch, &data).unwrap();
            expected.push((last, 1, batch, data));
        }
        log.commit().unwrap();
        log.wait_durable(last).unwrap();
        assert!(log.is_durable(last));
        recycled_segments += usize::from(log.active().recycled);
        if log.segment_count() > 2 {
            let keep_from = log.segments[log.segment_count() - 2].base;
            log.drop_below(keep_from).unwrap();
        }
    }
    assert!(recycled_segments > 5, "recycling never happened");
    let first = log.first_position();
    drop(log);
    let (log, recovery) = Log::open(dir.path(), "j", cfg).unwrap();
    assert_eq!(recovery.bytes_dropped, 0);
    let kept: Vec<_> = expected.into_iter().filter(|r| r.0 >= first).collect();
    assert_eq!(read_all(&log, first), kept);
}

/// `lock_memory`: the active segment (reopened or rolled to) is locked,
/// a sealed one is unlocked at the roll, and every record reads back.
#[test]
fn lock_memory_keeps_just_the_active_segment_locked() {
    // Without CAP_IPC_LOCK the usual 8 MiB RLIMIT_MEMLOCK holds 64 KiB
    // segments too.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        lock_memory: true,
        ..config(64 << 10)
    };
    let mut expected = Vec::new();
    {
        let (mut log, _) = Log::open(dir.path(), "j", cfg.clone()).unwrap();
        for i in 0..400u64 {
            let data = payload(i, 500);
            expected.push(log.append(1, i, &data).unwrap());
        }
        assert!(log.rolls() >= 2, "{} rolls", log.rolls());
        let (active, sealed) = log.segments.split_last().unwrap();
        assert!(active.locked, "the active segment is locked");
        assert!(
            sealed.iter().all(|s| !s.locked),
            "sealed segments are unlocked"
        );
    }
    let (log, _) = Log::open(dir.path(), "j", cfg).unwrap();
    assert!(
        log.segments.last().unwrap().locked,
        "locked again at reopen"
    );
    assert_eq!(read_all(&log, 0).len(), expected.len());
}

/// The next segment is asked of the preparer half-way through the active
/// one, not at once: a new log starts with no second segment file.
#[test]
fn the_next_segment_is_prepared_half_way_not_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), "j", config(64 << 10)).unwrap();
    let files = |d: &Path| fs::read_dir(d).unwrap().count();
    let log_dir = log.dir().to_path_buf();
    // The lock file and the first segment.
    let at_open = files(&log_dir);
    let half = (64 << 10) / 2 - 32;
    assert_eq!(log.prepare_at, half, "half of the data region");
    while log.end_position() < half {
        assert_eq!(log.prepare_at, half, "not asked before half-way");
        log.append(1, 0, &[7; 1000]).unwrap();
    }
    assert_eq!(log.prepare_at, u64::MAX, "asked once");
    // The preparer makes `<base>.seg.tmp` in the background; the roll
    // takes it.
    while log.rolls() == 0 {
        log.append(1, 0, &[7; 1000]).unwrap();
    }
    assert_eq!(files(&log_dir), at_open + 1);
    assert_eq!(
        log.prepare_at,
        log.segments.last().unwrap().base + (64 << 10) / 2 - 32
    );
}

/// A dropped segment that is not kept as a spare is unlinked by
/// `drop_below` itself and unmapped (by the preparer's thread) soon after:
/// its mapping leaves /proc/self/maps, and the log appends meanwhile.
#[test]
fn dropped_segments_are_unlinked_at_once_and_unmapped_soon_after() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        spare_segments: 0,
        ..config(64 << 10)
    };
    let (mut log, _) = Log::open(dir.path(), "j", cfg).unwrap();
    while log.segments.len() < 3 {
        log.append(1, 0, &[5; 1000]).unwrap();
    }
    let first = log.segments[0].path.clone();
    let mapped = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .contains(&*first.to_string_lossy())
    };
    assert!(mapped(), "mapped while in the log");
    let second_base = log.segments[1].base;
    assert_eq!(log.drop_below(second_base).unwrap(), 1);
    assert!(!first.exists(), "unlinked by drop_below itself");
    log.append(1, 0, &[6; 1000]).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while mapped() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!mapped(), "the retired mapping is gone");
    assert_eq!(log.first_position(), second_base);
}
