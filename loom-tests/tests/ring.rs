//! loom models of `verity::ring`: run with
//! `RUSTFLAGS="--cfg verity_loom" cargo test -p loom-tests --release`.
//!
//! Each model uses a tiny ring (16-64 bytes) and 2-4 records so loom can
//! explore the interleavings quickly. Besides atomics, the ring reports its
//! byte accesses to loom (`sync::RaceCheck`), so a missing happens-before
//! between a write of a record and its read (or its read and the overwrite)
//! fails the model as a data race.
#![cfg(verity_loom)]

use loom::sync::Notify;
use loom::thread;
use verity::ring::{channel, ClaimError, Consumer, Producer, Wake};
use verity::sync::Arc;

fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    // Exhaustive (no preemption bound unless LOOM_MAX_PREEMPTIONS is set):
    // the models are small enough that all six run in ~5 s in release mode.
    loom::model::Builder::new().check(f);
}

/// Record `seq` of `len` bytes: every byte says which record it belongs to.
fn record(seq: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seq.wrapping_mul(16).wrapping_add(i as u8))
        .collect()
}

/// Pushes `records` one by one, yielding while the ring is full.
fn push_all(tx: &mut Producer, records: &[Vec<u8>]) {
    for rec in records {
        loop {
            match tx.push(rec) {
                Ok(_) => break,
                Err(ClaimError::Full { .. }) => thread::yield_now(),
                Err(error) => panic!("{error}"),
            }
        }
    }
}

/// Reads until `expected` arrived, checking order and content.
fn read_all(rx: &mut Consumer, expected: &[Vec<u8>]) {
    let mut next = 0;
    while next < expected.len() {
        let mut got = 0;
        for rec in rx.read() {
            assert_eq!(rec, &expected[next][..], "record {next}");
            next += 1;
            got += 1;
        }
        rx.release();
        if got == 0 {
            thread::yield_now();
        }
    }
    assert_eq!(rx.peek(), None);
}

#[test]
fn records_cross_threads_in_order_with_content() {
    model(|| {
        // 32 bytes hold two 16-byte footprints: the third push waits for space.
        let (mut tx, mut rx) = channel(32).expect("valid capacity");
        let records = vec![record(1, 1), record(2, 8), record(3, 3)];
        let expected = records.clone();
        let producer = thread::spawn(move || push_all(&mut tx, &records));
        read_all(&mut rx, &expected);
        producer.join().expect("producer");
    });
}

#[test]
fn wrap_around_with_padding_keeps_records_whole() {
    model(|| {
        // Footprints 8 + 16 end at 24; the next 16-byte footprint does not fit
        // in the last 8 bytes, so it goes after an 8-byte padding record.
        let (mut tx, mut rx) = channel(32).expect("valid capacity");
        let records = vec![record(1, 0), record(2, 8), record(3, 8)];
        let expected = records.clone();
        let producer = thread::spawn(move || push_all(&mut tx, &records));
        read_all(&mut rx, &expected);
        producer.join().expect("producer");
    });
}

#[test]
fn full_ring_refuses_claim_then_accepts_after_release() {
    model(|| {
        let (mut tx, mut rx) = channel(32).expect("valid capacity");
        let records = vec![record(1, 8), record(2, 8), record(3, 8)];
        push_all(&mut tx, &records[..2]);
        assert!(matches!(tx.claim(8), Err(ClaimError::Full { .. })));
        let expected = records.clone();
        let consumer = thread::spawn(move || read_all(&mut rx, &expected));
        loop {
            match tx.claim(8) {
                Ok(mut claim) => {
                    claim.copy_from_slice(&records[2]);
                    let _ = claim.commit();
                    break;
                }
                Err(ClaimError::Full { .. }) => thread::yield_now(),
                Err(error) => panic!("{error}"),
            }
        }
        consumer.join().expect("consumer");
    });
}

#[test]
fn staged_batch_becomes_visible_all_at_once() {
    model(|| {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        let records = vec![record(1, 2), record(2, 8), record(3, 5)];
        let expected = records.clone();
        let producer = thread::spawn(move || {
            for rec in &records {
                let mut claim = tx.claim(rec.len()).expect("ring holds the batch");
                claim.copy_from_slice(rec);
                claim.stage();
            }
            let _ = tx.publish();
        });
        loop {
            let batch: Vec<Vec<u8>> = rx.read().map(<[u8]>::to_vec).collect();
            rx.release();
            match batch.len() {
                0 => thread::yield_now(),
                3 => {
                    assert_eq!(batch, expected);
                    break;
                }
                n => panic!("saw {n} of a 3-record batch"),
            }
        }
        producer.join().expect("producer");
    });
}

#[test]
fn sleeping_consumer_is_always_woken() {
    model(|| {
        let (mut tx, mut rx) = channel(32).expect("valid capacity");
        // Stands in for mio::Waker: a wake before the wait is not lost.
        let waker = Arc::new(Notify::new());
        let producer_waker = Arc::clone(&waker);
        let records = vec![record(1, 4), record(2, 4)];
        let expected = records.clone();
        let producer = thread::spawn(move || {
            for rec in &records {
                if tx.push(rec).expect("ring holds both") == Wake::Needed {
                    producer_waker.notify();
                }
            }
        });
        // Never spins: if a wake-up is lost, `wait` blocks forever and loom
        // reports a deadlock.
        let mut next = 0;
        while next < expected.len() {
            for rec in rx.read() {
                assert_eq!(rec, &expected[next][..]);
                next += 1;
            }
            if next < expected.len() && rx.prepare_sleep() {
                waker.wait();
                rx.finish_sleep();
            }
        }
        producer.join().expect("producer");
    });
}

#[test]
fn dropping_with_records_inside_is_clean() {
    model(|| {
        let (mut tx, mut rx) = channel(32).expect("valid capacity");
        let producer = thread::spawn(move || {
            push_all(&mut tx, &[record(1, 3), record(2, 3)]);
            // tx dropped here with records still inside.
        });
        // Read at most one, release nothing, and leave.
        if let Some(rec) = rx.read().next() {
            assert_eq!(rec, &record(1, 3)[..]);
        }
        drop(rx);
        producer.join().expect("producer");
    });
}
