//! 10 M 64-byte records from a producer thread (spawned per iteration) to the
//! consumer (the bench thread): `verity::ring` with batched claim/stage/publish
//! and batched read/release, against `crossbeam_queue::ArrayQueue<[u8; 64]>`
//! pushing and popping one record at a time. Target: the ring at >= 2x.
//!
//! Both sides wait with `crossbeam_utils::Backoff` (spin, then yield), so on
//! a busy machine a waiting thread gives its core back.
//!
//! Run: `cargo bench --bench ring_vs_arrayqueue`.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::Backoff;
use verity::ring::{channel, ClaimError, Consumer, Producer};

const RECORDS: u64 = 10_000_000;
const RECORD_LEN: usize = 64;
/// 256 KiB: ~3 600 records of 72 bytes (64 + 8-byte header); fits L2.
const RING_BYTES: usize = 256 * 1024;
/// About the same memory for the queue (72-byte slots: stamp + record).
const QUEUE_SLOTS: usize = 4 * 1024;
/// Records staged per publish.
const PUBLISH_BATCH: u64 = 64;
/// Records read per release (a quarter of the ring).
const RELEASE_BATCH: usize = 1024;

fn payload(seq: u64) -> [u8; RECORD_LEN] {
    [seq as u8; RECORD_LEN]
}

fn ring_produce(mut tx: Producer) -> Producer {
    let backoff = Backoff::new();
    let mut sent = 0;
    while sent < RECORDS {
        let mut staged = 0;
        while staged < PUBLISH_BATCH && sent < RECORDS {
            match tx.claim(RECORD_LEN) {
                Ok(mut claim) => {
                    claim.copy_from_slice(&payload(sent));
                    claim.stage();
                    sent += 1;
                    staged += 1;
                }
                Err(ClaimError::Full { .. }) => break,
                Err(error) => panic!("{error}"),
            }
        }
        // Nobody sleeps in this bench, so no wake is ever needed.
        let _ = tx.publish();
        if staged == 0 {
            backoff.snooze();
        } else {
            backoff.reset();
        }
    }
    tx
}

fn ring_consume(rx: &mut Consumer) -> u64 {
    let backoff = Backoff::new();
    let mut received = 0;
    let mut sum = 0u64;
    while received < RECORDS {
        let mut got = 0;
        for record in rx.read().take(RELEASE_BATCH) {
            sum += u64::from(record[0]) + u64::from(record[RECORD_LEN - 1]);
            got += 1;
        }
        rx.release();
        received += got;
        if got == 0 {
            backoff.snooze();
        } else {
            backoff.reset();
        }
    }
    sum
}

fn queue_produce(queue: &ArrayQueue<[u8; RECORD_LEN]>) {
    let backoff = Backoff::new();
    for seq in 0..RECORDS {
        let mut record = payload(seq);
        while let Err(back) = queue.push(record) {
            record = back;
            backoff.snooze();
        }
        backoff.reset();
    }
}

fn queue_consume(queue: &ArrayQueue<[u8; RECORD_LEN]>) -> u64 {
    let backoff = Backoff::new();
    let mut received = 0;
    let mut sum = 0u64;
    while received < RECORDS {
        match queue.pop() {
            Some(record) => {
                sum += u64::from(record[0]) + u64::from(record[RECORD_LEN - 1]);
                received += 1;
                backoff.reset();
            }
            None => backoff.snooze(),
        }
    }
    sum
}

fn ring_vs_arrayqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_vs_arrayqueue");
    group
        .throughput(Throughput::Elements(RECORDS))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    let (tx, mut rx) = channel(RING_BYTES).expect("valid ring capacity");
    let mut tx = Some(tx);
    group.bench_function("verity_ring", |b| {
        b.iter(|| {
            let producer_half = tx.take().expect("producer returned by the last iteration");
            let producer = thread::spawn(move || ring_produce(producer_half));
            let sum = ring_consume(&mut rx);
            tx = Some(producer.join().expect("producer panicked"));
            black_box(sum)
        })
    });

    let queue = Arc::new(ArrayQueue::new(QUEUE_SLOTS));
    group.bench_function("crossbeam_array_queue", |b| {
        b.iter(|| {
            let producer_queue = Arc::clone(&queue);
            let producer = thread::spawn(move || queue_produce(&producer_queue));
            let sum = queue_consume(&queue);
            producer.join().expect("producer panicked");
            black_box(sum)
        })
    });
    group.finish();
}

criterion_group!(benches, ring_vs_arrayqueue);
criterion_main!(benches);
