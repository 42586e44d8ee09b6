//! The syncer thread of `Durability::Fsync`: group commit. It sleeps until the
//! loop calls `commit` (or a waiter asks), reads how far the log is appended,
//! fdatasyncs every segment file holding bytes between the last durable
//! position and that point, then publishes the new durable position. Every
//! record appended before the request shares that one sync. It never blocks
//! the loop: while one fdatasync is in flight the loop goes on reading and
//! appending, and the next sync covers all of that (the pipelining of
//! group commit); when it publishes, it calls the log's `on_durable` (the
//! worker's waker), so a loop with nothing else to do releases ACKs and
//! outputs at once instead of at its next poll timeout.
//!
//! What each sync costs is the pages it writes back: each dirty page is
//! written and write-protected again (one TLB-flush IPI per page on this
//! VM, most of the syncer's CPU). So with fsync durability nothing dirties
//! a page before a record does: prepared and recycled segments are mapped
//! clean (not zero-filled through the page cache, not write-touched) and
//! the populate thread faults pages in for reading (`segment.rs`,
//! `populate.rs`). Measured (`verity-bench --app market-spread
//! --durability fsync --rounds 5`): 1.27 M msgs/s before, 1.85 M after.
//!
//! fdatasync (rather than msync) is enough on Linux: pages dirtied through a
//! shared mapping are tracked in the page cache and written back by it.
//! Back of the envelope: one fdatasync of 4 KiB ≈ 180–200 µs here, so a batch
//! of 1000 records costs ~0.2 µs of sync per record.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::durable::DurableMark;
use super::error::LogError;

pub(crate) struct SyncFile {
    pub base: u64,
    pub limit: u64,
    pub path: PathBuf,
    pub file: Arc<File>,
}

pub(crate) struct Shared {
    pub mark: DurableMark,
    /// Segment files the syncer may need, in position order. The appender
    /// pushes a new segment here before publishing any position inside it.
    pub files: Mutex<Vec<SyncFile>>,
    /// The first sync failure, reported by `commit` and `wait_durable`.
    pub error: Mutex<Option<(PathBuf, String)>>,
    /// Called after each new durable position is published (and after a
    /// failure): the event loop's waker, so a loop with nothing else to do
    /// releases ACKs and outputs as soon as their sync is done rather than
    /// at its next poll timeout.
    pub on_durable: Mutex<Option<Notify>>,
}

/// What the syncer calls when it publishes (see [`Shared::on_durable`]).
pub type Notify = Box<dyn Fn() + Send>;

pub(crate) struct Syncer {
    pub shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn start(
        start: u64,
        files: Vec<SyncFile>,
        log_dir: &std::path::Path,
    ) -> Result<Syncer, LogError> {
        let shared = Arc::new(Shared {
            mark: DurableMark::new(start),
            files: Mutex::new(files),
            error: Mutex::new(None),
            on_durable: Mutex::new(None),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("verity-log-syncer".into())
            .spawn(move || run(&thread_shared))
            .map_err(|e| LogError::io(super::error::Op::SyncData, log_dir, e))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    pub fn push_file(&self, file: SyncFile) {
        let mut files = self
            .shared
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        files.push(file);
    }

    pub fn remove_below(&self, limit: u64) {
        let mut files = self
            .shared
            .files
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        files.retain(|f| f.limit > limit);
    }

    pub fn set_on_durable(&self, notify: Notify) {
        let mut slot = self
            .shared
            .on_durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(notify);
    }

    pub fn error(&self) -> Option<LogError> {
        let error = self
            .shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        error.as_ref().map(|(path, message)| LogError::SyncFailed {
            path: path.clone(),
            message: message.clone(),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.mark.close();
        if let Some(thread) = self.thread.take() {
            // The syncer never panics on its own; if it did, there is nothing
            // left to clean up.
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut durable = shared.mark.durable();
    let mut batch: Vec<(PathBuf, Arc<File>)> = Vec::new();
    while let Some(target) = shared.mark.wait_for_request() {
        if target > durable {
            batch.clear();
            {
                let files = shared.files.lock().unwrap_or_else(PoisonError::into_inner);
                batch.extend(
                    files
                        .iter()
                        .filter(|f| f.limit > durable && f.base < target)
                        .map(|f| (f.path.clone(), Arc::clone(&f.file))),
                );
            }
            for (path, file) in &batch {
                if let Err(error) = file.sync_data() {
                    let mut slot = shared.error.lock().unwrap_or_else(PoisonError::into_inner);
                    *slot = Some((path.clone(), error.to_string()));
                    drop(slot);
                    shared.mark.fail();
                    notify(shared);
                    return;
                }
            }
        }
        let moved = target > durable;
        durable = durable.max(target);
        shared.mark.publish_durable(durable);
        if moved {
            notify(shared);
        }
    }
}

fn notify(shared: &Shared) {
    let slot = shared
        .on_durable
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(f) = slot.as_ref() {
        f();
    }
}
