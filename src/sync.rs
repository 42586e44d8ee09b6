//! Atomics and cells the lock-free structures use: `std`'s normally, loom's
//! when built with `RUSTFLAGS="--cfg verity_loom"` so `loom-tests/` can model-check
//! the production code as-is.

#[cfg(verity_loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(verity_loom)]
pub use loom::sync::Arc;

#[cfg(not(verity_loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(verity_loom))]
pub use std::sync::Arc;

// Blocking hand-off primitives (the syncer's wake-up and the durable waiters).
#[cfg(verity_loom)]
pub use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(verity_loom))]
pub use std::sync::{Condvar, Mutex, MutexGuard};

/// Shadow access tracking for a raw byte buffer, one slot per 8-byte word.
///
/// The lock-free structures keep their bytes in a plain `std` allocation
/// (records must be contiguous `&[u8]`, which loom's per-value cells cannot
/// give). Under `--cfg verity_loom` this type mirrors every word with a
/// `loom::cell::UnsafeCell<()>`, and the structure reports "I start/finish
/// reading/writing words `a..b`" so loom checks that each access
/// happens-before the next conflicting one, i.e. finds data races on the
/// bytes. Outside loom it is a zero-sized no-op.
#[cfg(verity_loom)]
pub(crate) struct RaceCheck {
    words: Box<[loom::cell::UnsafeCell<()>]>,
}

#[cfg(verity_loom)]
impl RaceCheck {
    pub(crate) fn new(words: usize) -> Self {
        Self {
            words: (0..words)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
        }
    }

    /// Records a read of words `start..end`.
    #[track_caller]
    pub(crate) fn read(&self, start: usize, end: usize) {
        for word in &self.words[start..end] {
            word.with(|_| ());
        }
    }

    /// Records a write of words `start..end`.
    #[track_caller]
    pub(crate) fn write(&self, start: usize, end: usize) {
        for word in &self.words[start..end] {
            word.with_mut(|_| ());
        }
    }
}

#[cfg(not(verity_loom))]
pub(crate) struct RaceCheck;

#[cfg(not(verity_loom))]
impl RaceCheck {
    #[inline(always)]
    pub(crate) fn new(_words: usize) -> Self {
        Self
    }

    #[inline(always)]
    pub(crate) fn read(&self, _start: usize, _end: usize) {}

    #[inline(always)]
    pub(crate) fn write(&self, _start: usize, _end: usize) {}
}
