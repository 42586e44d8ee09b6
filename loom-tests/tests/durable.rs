//! loom model of the log's group-commit hand-off (`verity::log::DurableMark`):
//! the appender publishes how far it wrote and asks for a sync, the syncer
//! publishes how far is durable, waiters block until their record is covered.
//!
//! Properties:
//! - the syncer never publishes beyond what was appended (asserted inside
//!   `publish_durable` and here);
//! - a reader loading `durable` then `appended` never sees durable > appended;
//! - a waiter for an appended position always returns (loom reports a
//!   deadlock if it could be stranded), and sees the target covered;
//! - close releases the syncer and any waiter.
#![cfg(verity_loom)]

use loom::sync::Arc;
use loom::thread;
use verity::log::{DurableMark, WaitError};

fn syncer(mark: Arc<DurableMark>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut syncs = 0;
        while let Some(target) = mark.wait_for_request() {
            assert!(target <= mark.appended());
            mark.publish_durable(target);
            syncs += 1;
        }
        syncs
    })
}

#[test]
fn waiter_is_released_and_durable_never_passes_appended() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let mark = Arc::new(DurableMark::new(0));
        let syncer = syncer(Arc::clone(&mark));
        let observer = {
            let mark = Arc::clone(&mark);
            thread::spawn(move || {
                let durable = mark.durable();
                let appended = mark.appended();
                assert!(
                    durable <= appended,
                    "durable {durable} > appended {appended}"
                );
            })
        };
        // Appender: two records, a commit after the first.
        mark.publish_appended(8);
        mark.request_sync();
        mark.publish_appended(16);
        // Wait for the second record (requests a sync itself if needed).
        assert_eq!(mark.wait_until(16), Ok(()));
        assert!(mark.durable() >= 16);
        mark.close();
        observer.join().unwrap();
        let syncs = syncer.join().unwrap();
        assert!((1..=2).contains(&syncs));
    });
}

#[test]
fn close_releases_a_waiter_whose_sync_never_comes() {
    loom::model(|| {
        let mark = Arc::new(DurableMark::new(0));
        mark.publish_appended(8);
        let waiter = {
            let mark = Arc::clone(&mark);
            // No syncer: only close can end this wait.
            thread::spawn(move || mark.wait_until(8))
        };
        mark.close();
        assert_eq!(waiter.join().unwrap(), Err(WaitError::Closed));
        assert_eq!(mark.durable(), 0);
    });
}

#[test]
fn failed_sync_releases_waiters_with_an_error() {
    loom::model(|| {
        let mark = Arc::new(DurableMark::new(0));
        mark.publish_appended(8);
        let failing_syncer = {
            let mark = Arc::clone(&mark);
            thread::spawn(move || {
                if mark.wait_for_request().is_some() {
                    mark.fail();
                }
            })
        };
        assert_eq!(mark.wait_until(8), Err(WaitError::Failed));
        failing_syncer.join().unwrap();
        assert_eq!(mark.durable(), 0);
    });
}
