//! Roll-ahead: a thread that creates the next segment file (`.tmp`,
//! fallocated, mapped, prefaulted) while the loop appends to the current
//! one, so a roll on the hot path is a rename instead of allocating and
//! faulting in a whole segment (≈ 10–100 ms for 64 MiB).
//!
//! At most one segment is prepared at a time (the next base is known: the
//! active segment's limit), so the preparer and a synchronous roll never race
//! on the same `.tmp` name: a roll waits for an outstanding preparation.
//!
//! A request may carry a spare (a dropped segment kept for reuse): the
//! thread then recycles it ([`Segment::recycle`]: directory sync, header
//! rewrite, first record slot zeroed) instead of creating a file, so the
//! roll reuses pages that are already allocated and resident.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::error::{LogError, Op};
use super::segment::{Prepared, Segment, Spare};

#[derive(Clone)]
struct Spec {
    dir: PathBuf,
    size_bytes: u64,
    name_hash: u64,
    sync: bool,
    prefault: bool,
    /// Lock each prepared segment in memory (`LogConfig::lock_memory`).
    lock: bool,
}

enum Request {
    /// Make the segment at `base`, recycling `spare` if given.
    Prepare { base: u64, spare: Option<Spare> },
    /// A segment the log dropped (its file already unlinked): unmapped and
    /// closed here. Unmapping 64 MiB of dirty pages, and the inode's
    /// eviction that follows (page-cache truncation, a discard on a
    /// `discard` mount), took 5-10 ms of the event loop's time.
    Retire(Segment),
}

pub(crate) struct Preparer {
    requests: Option<mpsc::Sender<Request>>,
    ready: mpsc::Receiver<Result<Prepared, LogError>>,
    /// Base of the segment being prepared (its result not yet received) and
    /// the size of the spare it recycles, if it does.
    pending: Option<(u64, Option<u64>)>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    pub fn start(
        dir: &Path,
        size_bytes: u64,
        name_hash: u64,
        sync: bool,
        prefault: bool,
        lock: bool,
    ) -> Result<Preparer, LogError> {
        let spec = Spec {
            dir: dir.to_path_buf(),
            size_bytes,
            name_hash,
            sync,
            prefault,
            lock,
        };
        let (request_tx, request_rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("verity-log-preparer".into())
            .spawn(move || {
                // Ends when the log drops its sender.
                while let Ok(request) = request_rx.recv() {
                    let (base, spare) = match request {
                        Request::Retire(segment) => {
                            drop(segment);
                            continue;
                        }
                        Request::Prepare { base, spare } => (base, spare),
                    };
                    let mut result = match spare {
                        Some(spare) => Segment::recycle(
                            spare,
                            &spec.dir,
                            base,
                            spec.name_hash,
                            spec.sync,
                            spec.prefault,
                        ),
                        None => Segment::prepare(
                            &spec.dir,
                            base,
                            spec.size_bytes,
                            spec.name_hash,
                            spec.sync,
                            spec.prefault,
                        ),
                    };
                    if let (true, Ok(prepared)) = (spec.lock, &mut result) {
                        // A failure leaves it unlocked: the roll locks it
                        // again and reports the error (`ulimit -l`).
                        let _ = prepared.lock_memory();
                    }
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

    /// Starts preparing the segment at `base` (recycling `spare` if given)
    /// unless one is outstanding; then the spare is handed back.
    pub fn request(&mut self, base: u64, spare: Option<Spare>) -> Option<Spare> {
        if self.pending.is_some() {
            return spare;
        }
        let Some(requests) = &self.requests else {
            return spare;
        };
        let spare_bytes = spare.as_ref().map(|s| s.size_bytes);
        match requests.send(Request::Prepare { base, spare }) {
            Ok(()) => {
                self.pending = Some((base, spare_bytes));
                None
            }
            Err(mpsc::SendError(Request::Prepare { spare, .. })) => spare,
            Err(mpsc::SendError(Request::Retire(_))) => None,
        }
    }

    /// Hands a segment dropped from the log (its file unlinked) to the
    /// thread to unmap and close. Returns it if the thread is gone (the
    /// caller drops it).
    pub fn retire(&self, segment: Segment) -> Option<Segment> {
        let Some(requests) = &self.requests else {
            return Some(segment);
        };
        match requests.send(Request::Retire(segment)) {
            Ok(()) => None,
            Err(mpsc::SendError(Request::Retire(segment))) => Some(segment),
            Err(mpsc::SendError(Request::Prepare { .. })) => None,
        }
    }

    /// Bytes of the spare file the outstanding request recycles (counted
    /// against `disk_limit_bytes` like the pool's spares).
    pub fn pending_spare_bytes(&self) -> u64 {
        self.pending.and_then(|(_, bytes)| bytes).unwrap_or(0)
    }

    /// The prepared segment at `base`, waiting for it if it is still being
    /// made. `None` if none was requested for that base (or the preparer is
    /// gone); `Some(Err)` if preparing it failed (the caller may retry
    /// synchronously: the failure may be stale).
    pub fn take(&mut self, base: u64) -> Option<Result<Prepared, LogError>> {
        let (pending, _) = self.pending.take()?;
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
