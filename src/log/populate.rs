//! Faults in a new log's first segment a step ahead of the appends, on a
//! thread of its own.
//!
//! A new log's first segment is created without prefaulting, so that a node
//! listens within milliseconds of its start. Faulting in all of its 64 MiB
//! at once right after (one `MADV_POPULATE_WRITE`) put hundreds of MB of
//! page-cache work, for the journal and each outbound log, into the first
//! 100 ms of a node's life, competing with the event loop: the loop stalled
//! 20 to 40 ms in its first reads and the first outputs waited up to 80 ms
//! (`verity-bench --latency-rate 200000`, engine stalls at 0.01 to 0.09 s).
//! Instead the thread keeps [`AHEAD`] bytes faulted in past the append
//! position, [`STEP`] bytes at a time: the work follows the appends, and an
//! idle log costs nothing.
//!
//! The log tells it where it is ([`Populator::appended`], a compare per
//! append, a wake-up every [`STEP`] bytes); `MADV_POPULATE_WRITE` maps the
//! pages without changing a byte, so the log may append meanwhile. Linux
//! before 5.14 refuses the advice: the pages then fault in at their first
//! write, as without prefault.
//!
//! With `lock_memory` the thread locks the whole segment in memory instead
//! (`mlock`, which faults every page in): on a machine that reclaims page
//! cache proactively (here, a DAMON `pageout` scheme), pages faulted in
//! ahead were taken away again before the appends reached them, and each
//! refault zeroed a large folio on the event loop's thread: 20 to 40 ms
//! stalls in `read` (`perf`: `filemap_fault` → `zero_user_segments` under
//! `Log::append`), gone with the segments locked.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::segment::Segment;

/// How far past the append position the pages are faulted in.
pub(crate) const AHEAD: usize = 8 << 20;
/// How much the thread faults in per call, and how often the log wakes it.
pub(crate) const STEP: usize = 1 << 20;

struct Shared {
    /// Fault in the mapping up to this offset.
    wanted: AtomicUsize,
    stop: AtomicBool,
}

pub(crate) struct Populator {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The segment's base position and mapping length.
    base: u64,
    len: usize,
    /// The append position at which the thread is next asked for more.
    next_ask: u64,
}

impl Populator {
    /// Starts faulting in `segment` (the log's active segment, appends at
    /// its base), [`AHEAD`] bytes at once; with `lock` (`lock_memory`), the
    /// whole segment at once, locked in memory. `None` if no thread could
    /// be started: the pages then fault in at their first write.
    pub fn start(segment: &Segment, lock: bool) -> Option<Populator> {
        let (addr, len) = (segment.map.as_ptr() as usize, segment.map.len());
        let shared = Arc::new(Shared {
            wanted: AtomicUsize::new(AHEAD.min(len)),
            stop: AtomicBool::new(false),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("verity-log-populate".into())
            .spawn(move || match lock {
                true => lock_all(addr, len),
                false => run(&theirs, addr, len),
            })
            .ok()?;
        Some(Populator {
            shared,
            thread: Some(thread),
            base: segment.base,
            len,
            next_ask: segment.base + STEP as u64,
        })
    }

    /// The log appended up to `end`: past the next step, the thread is
    /// asked to keep [`AHEAD`] bytes ahead of it.
    #[inline]
    pub fn appended(&mut self, end: u64) {
        if end >= self.next_ask {
            self.ask(end);
        }
    }

    #[cold]
    fn ask(&mut self, end: u64) {
        // Whole steps (page-aligned): the thread's calls start on a page.
        let offset = (end - self.base) as usize;
        let wanted = (offset + AHEAD).div_ceil(STEP) * STEP;
        self.shared
            .wanted
            .store(wanted.min(self.len), Ordering::Release);
        self.next_ask = end + STEP as u64;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// The segment is no longer appended to: the thread stops after the
    /// step it is in (without waiting for it; [`Populator::join`] does).
    pub fn halt(&mut self) {
        self.next_ask = u64::MAX;
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Stops the thread and waits for it: after this the segment's mapping
    /// may go.
    pub fn join(mut self) {
        self.halt();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Populator {
    fn drop(&mut self) {
        // The mapping must outlive the thread: never leave it running.
        self.halt();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: faults in `[done, wanted)` a step at a time, parks when
/// caught up, ends when the whole mapping is in or it is told to stop.
fn run(shared: &Shared, addr: usize, len: usize) {
    let mut done = 0;
    while done < len && !shared.stop.load(Ordering::Acquire) {
        let wanted = shared.wanted.load(Ordering::Acquire).min(len);
        if done >= wanted {
            std::thread::park();
            continue;
        }
        let end = wanted.min(done + STEP);
        // SAFETY: `[addr + done, addr + end)` lies in one live mapping of
        // the segment: the log joins this thread (`Populator::join` or its
        // drop) before the segment can be unmapped. `done` and `end` are
        // multiples of STEP (a multiple of the page size) or `len`.
        // MADV_POPULATE_WRITE reads and writes no byte of it.
        unsafe {
            libc::madvise(
                (addr + done) as *mut libc::c_void,
                end - done,
                libc::MADV_POPULATE_WRITE,
            );
        }
        done = end;
    }
}

/// `lock_memory`: locks the whole mapping in memory (mlock faults every
/// page in). The log checked `RLIMIT_MEMLOCK` at open; a failure here
/// leaves the pages to fault in at their first write, as without it.
fn lock_all(addr: usize, len: usize) {
    // SAFETY: `[addr, addr + len)` is one live mapping of the segment (see
    // `run`); mlock reads and writes no byte of it.
    unsafe {
        libc::mlock(addr as *const libc::c_void, len);
    }
}
