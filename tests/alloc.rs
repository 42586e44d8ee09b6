//! Heap allocations per record in steady state (issue 15): market spread
//! and doubler through the core, on the live path (each frame handled, the
//! batch made durable, sent and ACKed) and on the replay path, counted by
//! a global allocator that counts this thread's calls. Warm-up first (the
//! state maps, the channels' windows and the reused buffers grow to their
//! working size), then 1 M inputs are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use verity::core::Effects;
use verity::harness::workload::{
    core_of, doubler_runs, market_spread_runs, measure_live, measure_replay, Runs,
};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call goes to the system allocator unchanged; counting
// touches only a thread-local Cell that needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

enum Path {
    Live,
    Replay,
}

/// Allocations while the first `warm` inputs go through a core of `app`,
/// then while the rest do, and how many the rest are.
fn steady_state(
    r: &Runs,
    warm: u64,
    app: Box<dyn verity::app::App>,
    path: Path,
) -> (u64, u64, u64) {
    let per_run = r.inputs / r.runs.len() as u64;
    let split = (warm / per_run.max(1)) as usize;
    let (first, rest) = r.runs.split_at(split.min(r.runs.len()));
    let mut core = core_of(app);
    let mut fx = Effects::default();
    let run = |core: &mut _, fx: &mut _, runs: &[_]| match path {
        Path::Live => measure_live(core, fx, runs),
        Path::Replay => measure_replay(core, fx, runs),
    };
    let warming = allocations(|| {
        run(&mut core, &mut fx, first).unwrap();
    });
    let counted: u64 = r.inputs - per_run * split as u64;
    let n = allocations(|| {
        run(&mut core, &mut fx, rest).unwrap();
    });
    (warming, n, counted)
}

#[test]
fn a_million_records_through_the_core_allocate_fewer_than_1000_times_after_warm_up() {
    let scratch = tempfile::tempdir().unwrap();
    let ms = market_spread_runs(1_200_000, 1, scratch.path()).unwrap();
    let db = doubler_runs(1, 1_200_000).unwrap();
    let ms_app = || Box::new(verity::apps::market_spread::app()) as Box<dyn verity::app::App>;
    let db_app = || Box::new(verity::apps::doubler::app()) as Box<dyn verity::app::App>;
    for (name, r, app, path) in [
        ("market-spread live", &ms, ms_app(), Path::Live),
        ("market-spread replay", &ms, ms_app(), Path::Replay),
        ("doubler live", &db, db_app(), Path::Live),
        ("doubler replay", &db, db_app(), Path::Replay),
    ] {
        let (warming, n, counted) = steady_state(r, 200_000, app, path);
        eprintln!("{name}: {warming} allocations warming up, {n} over the {counted} inputs after");
        // The counter counts: a new core's maps and buffers grow at first.
        assert!(
            warming > 0,
            "{name}: no allocation counted while warming up"
        );
        assert!(
            counted >= 1_000_000,
            "{name}: only {counted} inputs counted"
        );
        assert!(
            n < 1000,
            "{name}: {n} heap allocations over {counted} inputs after warm-up (budget: fewer than 1000)"
        );
    }
}
