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
//! With `lock_memory` the thread locks the whole segment in memory at once
//! instead (`mlock`, which faults the pages in; a step at a time, as one
//! mlock of 64 MiB held the address space's lock long enough to stall the
//! loop's own allocations 40-70 ms at start): on a machine that reclaims page
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
    /// its base), [`AHEAD`] bytes ahead of the appends; with `lock`
    /// (`lock_memory`), locking each step in memory as it goes; with `sync`
    /// (fsync durability), faulting them in clean (see [`run`]). `None` if no
    /// thread could be started: the pages then fault in at their first
    /// write.
    pub fn start(segment: &Segment, lock: bool, sync: bool) -> Option<Populator> {
        let (addr, len) = (segment.map.as_ptr() as usize, segment.map.len());
        let shared = Arc::new(Shared {
            wanted: AtomicUsize::new(AHEAD.min(len)),
            stop: AtomicBool::new(false),
        });
        // Locked: the first step here, before the log is used (before the
        // node listens), so that the loop's first appends do not race the
        // thread for the same pages (a 38 ms `read` stall at 7 ms from
        // start in one run).
        let first = match lock {
            true => {
                // SAFETY: the first STEP bytes (or all of a smaller
                // segment) of a live mapping we were handed; mlock reads
                // and writes no byte of it.
                unsafe { libc::mlock(addr as *const libc::c_void, STEP.min(len)) };
                STEP.min(len)
            }
            false => 0,
        };
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("verity-log-populate".into())
            .spawn(move || run(&theirs, addr, len, lock, sync, first))
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
fn run(shared: &Shared, addr: usize, len: usize, lock: bool, sync: bool, from: usize) {
    // fsync durability: the pages are faulted in clean. Dirtied ahead
    // (POPULATE_WRITE), each was written out and write-protected by the
    // syncer's next fdatasync (which covers the whole file) while it still
    // held zeros, then written and write-protected again once appended to:
    // twice the page cleaning (a TLB-flush IPI per page, 70% of the
    // syncer's CPU in `perf`) and twice the bytes to disk.
    let advice = match sync {
        true => libc::MADV_POPULATE_READ,
        false => libc::MADV_POPULATE_WRITE,
    };
    let mut done = from;
    while done < len && !shared.stop.load(Ordering::Acquire) {
        // Locked, the whole segment comes in at once (a step at a time):
        // faulted in just ahead of the appends, on a thread that gets less
        // CPU than the loop, the pages came too late on this VM (host-side
        // faults on fresh guest memory), and the loop's own faults stalled
        // it 25-45 ms in `read`, as without the lock.
        let wanted = match lock {
            true => len,
            false => shared.wanted.load(Ordering::Acquire).min(len),
        };
        if done >= wanted {
            std::thread::park();
            continue;
        }
        let end = wanted.min(done + STEP);
        // SAFETY: `[addr + done, addr + end)` lies in one live mapping of
        // the segment: the log joins this thread (`Populator::join` or its
        // drop) before the segment can be unmapped. `done` and `end` are
        // multiples of STEP (a multiple of the page size) or `len`.
        // MADV_POPULATE_WRITE/READ read and write no byte of it.
        // With `lock`, mlock faults the step in and keeps it (a failure
        // leaves it to fault in at its first write, as without it: the log
        // checked RLIMIT_MEMLOCK at open).
        unsafe {
            let at = (addr + done) as *mut libc::c_void;
            match lock {
                true => libc::mlock(at, end - done),
                false => libc::madvise(at, end - done, advice),
            };
        }
        done = end;
    }
}
