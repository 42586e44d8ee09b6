//! criterion group `log`: appends at `process` durability against a memcpy of
//! the same bytes into a preallocated buffer, and group commit at `fsync`.
//!
//! `VERITY_BENCH_DIR` picks the directory (default `/tmp`, a real disk here;
//! `/dev/shm` for tmpfs).
//!
//! - `append_sustained/<size>`: every append, rolls and `drop_below`
//!   included, as the engine runs its journal and outbound log: once more
//!   than `VERITY_BENCH_KEEP_SEGMENTS` (default 2) segments exist, everything
//!   below the end is dropped. Dropped segments become spares
//!   (`spare_segments` = 2, the default) and the preparer thread recycles
//!   them as the next segments: header rewrite, first slot zeroed, pages
//!   already resident.
//! - `append_sustained_no_recycle/<size>`: the same with `spare_segments` =
//!   0 (dropped segments unlinked, every segment a new file: fallocate,
//!   populate, write-fault on the preparer thread). When appends outrun it,
//!   the roll waits, so this is bounded by how fast the kernel hands out
//!   zeroed page cache and writes back dirty pages.
//! - `append_in_segment/<size>`: only appends into an already-mapped segment
//!   (rolls happen outside the timed spans): the steady-state hot path.
//! - `memcpy/<size>`: copy of the payload into a touched 64 MiB buffer.
//! - `fsync_group_commit/batch_1000x64B`: 1000 appends, commit, wait until
//!   durable: one fdatasync per batch.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use verity::log::{Durability, Log, LogConfig};

const SEGMENT_BYTES: u64 = 64 << 20;
const SIZES: [(usize, &str); 2] = [(64, "64B"), (4096, "4KiB")];

fn bench_dir() -> PathBuf {
    std::env::var_os("VERITY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn open(dir: &tempfile::TempDir, durability: Durability, spare_segments: usize) -> Log {
    let config = LogConfig {
        segment_size_bytes: SEGMENT_BYTES,
        durability,
        spare_segments,
        ..LogConfig::default()
    };
    Log::open(dir.path(), "bench", config).unwrap().0
}

/// Segments kept before old ones are dropped (read once: a getenv per
/// append would be measured too).
fn keep_segments() -> usize {
    static KEEP: OnceLock<usize> = OnceLock::new();
    *KEEP.get_or_init(|| {
        std::env::var("VERITY_BENCH_KEEP_SEGMENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2)
    })
}

/// Drops old segments as the engine does after a snapshot or ACKs: once
/// more than the kept number exist, only the active one stays.
fn trim(log: &mut Log) {
    if log.segment_count() > keep_segments() {
        let end = log.end_position();
        log.drop_below(end).unwrap();
    }
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("log");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (size, label) in SIZES {
        let payload = vec![0xA5u8; size];
        // Small records are counted in records/s, large ones in bytes/s.
        group.throughput(if size < 1024 {
            Throughput::Elements(1)
        } else {
            Throughput::Bytes(size as u64)
        });

        for (name, spare_segments) in [("append_sustained", 2), ("append_sustained_no_recycle", 0)]
        {
            let dir = tempfile::tempdir_in(bench_dir()).unwrap();
            let mut log = open(&dir, Durability::Process, spare_segments);
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    let position = log.append(1, 0, black_box(&payload)).unwrap();
                    trim(&mut log);
                    black_box(position)
                })
            });
        }

        let dir = tempfile::tempdir_in(bench_dir()).unwrap();
        let mut log = open(&dir, Durability::Process, 2);
        let span = (32 + size as u64 + 7) & !7;
        group.bench_function(BenchmarkId::new("append_in_segment", label), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let fit = (log.active_remaining_bytes() / span).min(left);
                    if fit == 0 {
                        // Roll outside the timed span; counts as one iteration.
                        log.append(1, 0, &payload).unwrap();
                        trim(&mut log);
                        left -= 1;
                        continue;
                    }
                    let start = Instant::now();
                    for _ in 0..fit {
                        black_box(log.append(1, 0, black_box(&payload)).unwrap());
                    }
                    timed += start.elapsed();
                    left -= fit;
                }
                timed
            })
        });
        drop(log);

        let mut buffer = vec![1u8; SEGMENT_BYTES as usize];
        let mut offset = 0usize;
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| {
                if offset + size > buffer.len() {
                    offset = 0;
                }
                buffer[offset..offset + size].copy_from_slice(black_box(&payload));
                offset += size;
                black_box(&buffer[offset - 1]);
            })
        });
    }

    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let mut log = open(&dir, Durability::Fsync, 2);
    let payload = [0x5Au8; 64];
    group.throughput(Throughput::Elements(1000));
    group.bench_function("fsync_group_commit/batch_1000x64B", |b| {
        b.iter(|| {
            let mut last = 0;
            for _ in 0..1000 {
                last = log.append(1, 0, &payload).unwrap();
            }
            log.commit().unwrap();
            log.wait_durable(last).unwrap();
            trim(&mut log);
        })
    });
    group.finish();
}

criterion_group!(log, appends);
criterion_main!(log);
