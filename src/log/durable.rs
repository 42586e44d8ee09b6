//! `DurableMark`: the hand-off between the appender (the node's loop) and the
//! syncer thread for `Durability::Fsync`, modelled with loom in
//! `loom-tests/tests/durable.rs` (atomics, mutex and condvars come from
//! [`crate::sync`]).
//!
//! Invariants (asserted here, checked by the loom model):
//! - `durable <= appended` at every instant, and a reader that loads
//!   `durable` then `appended` never sees `durable > appended`;
//! - the syncer never publishes beyond what it read from `appended`;
//! - a `wait_until(p)` with `p <= appended` returns once the syncer has
//!   covered `p`, or with an error once the mark is closed or failed: never
//!   stranded.
//!
//! Orderings: `appended` is stored with `Release` after the record bytes are
//! in the mapping and loaded with `Acquire` by the syncer, so the bytes it
//! syncs include every record below the value it read. `durable` is stored
//! with `Release` after the sync and loaded with `Acquire` by the loop, so a
//! loop that sees `durable = P` also sees `appended >= P` (coherence on
//! `appended` after synchronising with the syncer's read of it).

use crate::sync::{AtomicU64, Condvar, Mutex, MutexGuard, Ordering};

/// Why a durability wait ended without reaching the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The target is beyond what was appended: it could never become durable.
    NotAppended,
    /// The syncer failed (its error is reported by the log).
    Failed,
    /// The mark was closed (log dropped).
    Closed,
}

#[derive(Debug, Default)]
struct WakeState {
    /// The appender asked for a sync the syncer has not started yet.
    requested: bool,
    closed: bool,
    failed: bool,
}

#[derive(Debug)]
pub struct DurableMark {
    appended: AtomicU64,
    durable: AtomicU64,
    state: Mutex<WakeState>,
    syncer_wake: Condvar,
    waiters_wake: Condvar,
}

impl DurableMark {
    /// A mark where everything below `start` is already durable.
    pub fn new(start: u64) -> Self {
        DurableMark {
            appended: AtomicU64::new(start),
            durable: AtomicU64::new(start),
            state: Mutex::new(WakeState::default()),
            syncer_wake: Condvar::new(),
            waiters_wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WakeState> {
        // A poisoned lock only means another thread panicked while holding
        // it; the flags stay meaningful, so carry on.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appender: everything below `end` is written into the mapping.
    pub fn publish_appended(&self, end: u64) {
        // Relaxed: only the appender stores `appended`.
        let previous = self.appended.load(Ordering::Relaxed);
        assert!(end >= previous, "appended moved backwards");
        self.appended.store(end, Ordering::Release);
    }

    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Everything below this position is durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Appender: wake the syncer to cover everything appended so far. Cheap
    /// enough to call once per batch; a batch shares one sync.
    pub fn request_sync(&self) {
        let mut state = self.lock();
        state.requested = true;
        drop(state);
        self.syncer_wake.notify_one();
    }

    /// Syncer: blocks until a sync is requested; returns the position to
    /// make durable, or `None` once closed.
    pub fn wait_for_request(&self) -> Option<u64> {
        let mut state = self.lock();
        loop {
            if state.closed || state.failed {
                return None;
            }
            if state.requested {
                state.requested = false;
                // Read under the lock after clearing the flag: an append
                // published before the request is included; one published
                // after it sets `requested` again.
                return Some(self.appended.load(Ordering::Acquire));
            }
            state = self
                .syncer_wake
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    /// Syncer: everything below `position` is on stable storage.
    pub fn publish_durable(&self, position: u64) {
        let appended = self.appended.load(Ordering::Acquire);
        assert!(position <= appended, "durable would pass appended");
        // Relaxed: only the syncer stores `durable`.
        let previous = self.durable.load(Ordering::Relaxed);
        assert!(position >= previous, "durable moved backwards");
        self.durable.store(position, Ordering::Release);
        // Take the lock before notifying: a waiter that checked `durable`
        // before the store is then already parked on the condvar.
        let state = self.lock();
        drop(state);
        self.waiters_wake.notify_all();
    }

    /// Syncer: a sync failed; wake everyone with an error.
    pub fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        drop(state);
        self.waiters_wake.notify_all();
    }

    /// Stops the syncer and releases every waiter.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        drop(state);
        self.syncer_wake.notify_all();
        self.waiters_wake.notify_all();
    }

    /// Blocks until `durable >= target`, requesting a sync if needed.
    pub fn wait_until(&self, target: u64) -> Result<(), WaitError> {
        if self.durable() >= target {
            return Ok(());
        }
        if target > self.appended() {
            return Err(WaitError::NotAppended);
        }
        let mut state = self.lock();
        state.requested = true;
        self.syncer_wake.notify_one();
        loop {
            if self.durable.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if state.failed {
                return Err(WaitError::Failed);
            }
            if state.closed {
                return Err(WaitError::Closed);
            }
            state = self
                .waiters_wake
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    pub fn is_failed(&self) -> bool {
        self.lock().failed
    }
}

#[cfg(all(test, not(verity_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiter_returns_once_syncer_covers_target() {
        let mark = Arc::new(DurableMark::new(0));
        let syncer_mark = Arc::clone(&mark);
        let syncer = std::thread::spawn(move || {
            while let Some(target) = syncer_mark.wait_for_request() {
                syncer_mark.publish_durable(target);
            }
        });
        mark.publish_appended(64);
        assert_eq!(mark.wait_until(64), Ok(()));
        assert_eq!(mark.durable(), 64);
        assert_eq!(mark.wait_until(65), Err(WaitError::NotAppended));
        mark.close();
        syncer.join().unwrap();
    }
}
