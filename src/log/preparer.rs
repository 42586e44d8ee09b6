//! Roll-ahead: a thread that creates the next segment file (`.tmp`,
//! fallocated, mapped, prefaulted) while the loop appends to the current
//! one, so a roll on the hot path is a rename instead of allocating and
//! faulting in a whole segment (≈ 10–100 ms for 64 MiB).
//!
//! At most one segment is prepared at a time (the next base is known: the
//! active segment's limit), so the preparer and a synchronous roll never race
//! on the same `.tmp` name: a roll waits for an outstanding preparation.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::error::{LogError, Op};
use super::segment::{Prepared, Segment};

#[derive(Clone)]
struct Spec {
    dir: PathBuf,
    size_bytes: u64,
    name_hash: u64,
    sync: bool,
    prefault: bool,
}

pub(crate) struct Preparer {
    requests: Option<mpsc::Sender<u64>>,
    ready: mpsc::Receiver<Result<Prepared, LogError>>,
    /// Base of the segment being prepared (its result not yet received).
    pending: Option<u64>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    pub fn start(
        dir: &Path,
        size_bytes: u64,
        name_hash: u64,
        sync: bool,
        prefault: bool,
    ) -> Result<Preparer, LogError> {
        let spec = Spec {
            dir: dir.to_path_buf(),
            size_bytes,
            name_hash,
            sync,
            prefault,
        };
        let (request_tx, request_rx) = mpsc::channel::<u64>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("verity-log-preparer".into())
            .spawn(move || {
                // Ends when the log drops its sender.
                while let Ok(base) = request_rx.recv() {
                    let result = Segment::prepare(
                        &spec.dir,
                        base,
                        spec.size_bytes,
                        spec.name_hash,
                        spec.sync,
                        spec.prefault,
                    );
                    if let Err(mpsc::SendError(Ok(prepared))) = ready_tx.send(result) {
                        prepared.discard();
                    }
                }
            })
            .map_err(|e| LogError::io(Op::Allocate, dir, e))?;
        Ok(Preparer {
            requests: Some(request_tx),
            ready: ready_rx,
            pending: None,
            thread: Some(thread),
        })
    }

    /// Starts preparing the segment at `base` unless one is outstanding.
    pub fn request(&mut self, base: u64) {
        if self.pending.is_some() {
            return;
        }
        if let Some(requests) = &self.requests {
            if requests.send(base).is_ok() {
                self.pending = Some(base);
            }
        }
    }

    /// The prepared segment at `base`, waiting for it if it is still being
    /// made. `None` if none was requested for that base (or the preparer is
    /// gone); `Some(Err)` if preparing it failed (the caller may retry
    /// synchronously: the failure may be stale).
    pub fn take(&mut self, base: u64) -> Option<Result<Prepared, LogError>> {
        let pending = self.pending.take()?;
        let result = self.ready.recv().ok()?;
        if pending != base {
            if let Ok(prepared) = result {
                prepared.discard();
            }
            return None;
        }
        Some(result)
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            // The thread only exits its loop; nothing to recover if it
            // panicked.
            let _ = thread.join();
        }
        while let Ok(result) = self.ready.try_recv() {
            if let Ok(prepared) = result {
                prepared.discard();
            }
        }
    }
}
