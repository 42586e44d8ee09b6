//! Crash test: a child process (this test binary re-executed in child mode)
//! appends seeded records and reports each committed one on stdout; the
//! parent `kill -9`s it at a seeded moment, reopens the log, and checks every
//! reported record is there and intact and that nothing but the seeded
//! sequence is returned. Two crash rounds per seed, so the second child
//! recovers a torn log and keeps appending to it.
//!
//! Two seeds in three also drop old segments as they go, as the engine
//! does (keep the segments holding the last few records), with 0–3 spare
//! segments: the log then recycles segment files, so kills land in recycled
//! segments (old records past the end), during a recycle on the preparer
//! thread and between a drop's renames. The first record left then has
//! index `timestamp ^ seed`.
//!
//! `VERITY_LOG_CRASH_SEEDS` (count, default 100) and
//! `VERITY_LOG_CRASH_SEED_BASE` (default 1) pick the seeds; a failure prints
//! the seed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use verity::log::{Durability, Log, LogConfig, Recovery};

const CHILD_ENV: &str = "VERITY_LOG_CRASH_CHILD";
const ROUNDS_PER_SEED: u64 = 2;
/// The child stops appending after this many records per round (and waits to
/// be killed), so a slow parent cannot fill the disk.
const CHILD_RECORDS_MAX: u64 = 3000;
const PAYLOAD_BYTES_MAX: u64 = 1000;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Segment size for a seed: small, so rolls happen often.
fn segment_size(seed: u64) -> u64 {
    let mut s = seed ^ 0x5E6;
    2048 + 8 * (splitmix64(&mut s) % 1000)
}

/// Record `index` of the sequence for `seed`: (kind, timestamp, payload).
fn record(seed: u64, index: u64) -> (u32, u64, Vec<u8>) {
    let mut s = seed.wrapping_mul(0x1000_0000_01B3) ^ index.wrapping_mul(0x9E37_79B9);
    let r = splitmix64(&mut s);
    let len = (r % (PAYLOAD_BYTES_MAX + 1)) as usize;
    let kind = (r >> 40) as u32 & 0xF;
    let mut payload = Vec::with_capacity(len);
    while payload.len() < len {
        let word = splitmix64(&mut s).to_le_bytes();
        let take = (len - payload.len()).min(8);
        payload.extend_from_slice(&word[..take]);
    }
    (kind, index ^ seed, payload)
}

/// Records the child keeps behind its newest one (older segments are
/// dropped), or `None` to keep everything.
fn keep_records(seed: u64) -> Option<u64> {
    (!seed.is_multiple_of(3)).then_some(1 + seed % 13)
}

fn open(dir: &Path, seed: u64) -> (Log, Recovery) {
    let config = LogConfig {
        segment_size_bytes: segment_size(seed),
        durability: Durability::Process,
        spare_segments: (seed / 3 % 4) as usize,
        ..LogConfig::default()
    };
    Log::open(dir, "journal", config).unwrap_or_else(|e| panic!("seed {seed}: open failed: {e}"))
}

struct Verified {
    /// Index of the first record left (0 unless segments were dropped).
    first_index: u64,
    first_position: u64,
    /// Positions of the records, from `first_index` on.
    positions: Vec<u64>,
    recovery: Recovery,
    segments: usize,
}

/// Reads the whole log and checks it is a contiguous run of the seeded
/// sequence (a prefix unless segments were dropped).
fn verify(dir: &Path, seed: u64) -> Verified {
    let (log, recovery) = open(dir, seed);
    let mut positions = Vec::new();
    let mut first_index = None;
    for (offset, result) in log.reader_at(log.first_position()).unwrap().enumerate() {
        let r = result.unwrap_or_else(|e| panic!("seed {seed}: record #{offset}: {e}"));
        let first = *first_index.get_or_insert(r.timestamp ^ seed);
        let index = first + offset as u64;
        if keep_records(seed).is_none() {
            assert_eq!(first, 0, "seed {seed}: records lost at the start");
        }
        let (kind, timestamp, payload) = record(seed, index);
        assert_eq!(
            (r.kind, r.timestamp, r.payload),
            (kind, timestamp, &payload[..]),
            "seed {seed}: record {index} at position {} differs",
            r.position
        );
        if let Some(previous) = positions.last() {
            assert!(
                r.position > *previous,
                "seed {seed}: positions not increasing"
            );
        }
        positions.push(r.position);
    }
    let first_position = log.first_position();
    assert!(
        first_index.is_some() || first_position == 0,
        "seed {seed}: segments were dropped but no record is left"
    );
    Verified {
        first_index: first_index.unwrap_or(0),
        first_position,
        positions,
        segments: log.segment_paths().len(),
        recovery,
    }
}

/// Child mode: recover, then append the seeded sequence from where the log
/// ends, reporting `C <index> <position>` after each append returns.
#[test]
fn child_append_loop() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // Normal test run: not a child.
    };
    let (seed, dir) = spec.split_once(':').expect("CHILD env is <seed>:<dir>");
    let seed: u64 = seed.parse().expect("seed");
    let dir = Path::new(dir);
    let verified = verify(dir, seed);
    let start = verified.first_index + verified.positions.len() as u64;
    let keep = keep_records(seed);
    let mut recent = std::collections::VecDeque::new();
    let (mut log, _) = open(dir, seed);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "R {start}").unwrap();
    out.flush().unwrap();
    // Flushing reports in small seeded batches keeps the child mostly
    // inside `append` (not in write(2)) when the SIGKILL lands.
    let flush_every = 1 + seed % 8;
    for index in start..start + CHILD_RECORDS_MAX {
        let (kind, timestamp, payload) = record(seed, index);
        let position = log.append(kind, timestamp, &payload).unwrap();
        writeln!(out, "C {index} {position}").unwrap();
        if index % flush_every == 0 {
            out.flush().unwrap();
        }
        if let Some(keep) = keep {
            // Drop every segment wholly below the record `keep` back.
            recent.push_back(position);
            if recent.len() as u64 > keep {
                let below = recent.pop_front().unwrap();
                log.drop_below(below).unwrap();
            }
        }
    }
    out.flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[derive(Default)]
struct Totals {
    reported: u64,
    recovered: u64,
    torn_tails: u64,
    tmp_files_removed: u64,
    spares_adopted: u64,
    spare_files_removed: u64,
    bytes_dropped: u64,
    segments: u64,
}

fn crash_round(dir: &Path, seed: u64, round: u64, totals: &mut Totals) {
    let mut s = seed ^ (round << 56) ^ 0xC0FFEE;
    // Kill after this many reported records (0: possibly mid-open).
    let kill_after = splitmix64(&mut s) % 400;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_append_loop",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{seed}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut reported: Vec<(u64, u64)> = Vec::new();
    let mut eof = false;
    while reported.len() as u64 <= kill_after {
        if kill_after == 0 {
            break;
        }
        let Some(line) = lines.next() else {
            eof = true;
            break;
        };
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        if parts.next() == Some("C") {
            let index: u64 = parts.next().unwrap().parse().unwrap();
            let position: u64 = parts.next().unwrap().parse().unwrap();
            reported.push((index, position));
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !eof || status.code().is_none(),
        "seed {seed} round {round}: child exited early with {status}"
    );

    let verified = verify(dir, seed);
    let (positions, recovery) = (&verified.positions, &verified.recovery);
    totals.reported += reported.len() as u64;
    totals.recovered += positions.len() as u64;
    totals.torn_tails += u64::from(recovery.bytes_dropped > 0);
    totals.bytes_dropped += recovery.bytes_dropped;
    totals.tmp_files_removed += recovery.tmp_files_removed as u64;
    totals.spares_adopted += recovery.spares_adopted as u64;
    totals.spare_files_removed += recovery.spare_files_removed as u64;
    totals.segments += verified.segments as u64;
    for (index, position) in reported {
        if index < verified.first_index {
            // Dropped by the child on purpose: its segment is gone.
            assert!(
                position < verified.first_position,
                "seed {seed} round {round}: record {index} missing inside the log"
            );
            continue;
        }
        let at = (index - verified.first_index) as usize;
        assert!(
            at < positions.len(),
            "seed {seed} round {round}: reported record {index} lost ({} recovered from {})",
            positions.len(),
            verified.first_index
        );
        assert_eq!(
            positions[at], position,
            "seed {seed} round {round}: record {index} moved"
        );
    }
}

#[test]
fn kill_9_at_seeded_moments_loses_no_reported_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seeds: u64 = std::env::var("VERITY_LOG_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed_base: u64 = std::env::var("VERITY_LOG_CRASH_SEED_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    let mut totals = Totals::default();
    for seed in seed_base..seed_base + seeds {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..ROUNDS_PER_SEED {
            crash_round(dir.path(), seed, round, &mut totals);
        }
    }
    eprintln!(
        "log_crash: {seeds} seeds x {ROUNDS_PER_SEED} kill -9 rounds in {:?}: {} records reported, \
         {} recovered, {} torn tails ({} bytes dropped), {} half-made segments removed, \
         {} spares adopted, {} spare files removed, {} segments at the end of rounds",
        started.elapsed(),
        totals.reported,
        totals.recovered,
        totals.torn_tails,
        totals.bytes_dropped,
        totals.tmp_files_removed,
        totals.spares_adopted,
        totals.spare_files_removed,
        totals.segments
    );
}
