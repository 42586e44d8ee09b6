//! Heap allocations per record in steady state (issue 15): market spread
//! and doubler through the core, on the live path (each frame handled, the
//! batch made durable, sent and ACKed) and on the replay path, counted by
//! a global allocator that counts this thread's calls. Warm-up first (the
//! state maps, the channels' windows and the reused buffers grow to their
//! working size), then 1 M inputs are counted.
//!
//! And the worker's batch path: a real worker (its event loop on a thread
//! of this process, real TCP from the tools' senders, real mmap journal and
//! outbound log, the tools' receiver as its sink), counting the calls made
//! on the event loop's thread only.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use verity::core::Effects;
use verity::harness::workload::{
    core_of, doubler_runs, market_spread_runs, measure_live, measure_replay, Runs,
};
use verity_tools::formats::InputFormat;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Set on the worker's event-loop thread: its calls also go to
    /// [`LOOP_ALLOCS`], which other threads can read.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

static LOOP_ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    if ON_LOOP.try_with(Cell::get).unwrap_or(false) {
        LOOP_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
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

/// Sends one generated file to the worker on `channel`, blocking until
/// every record is ACKed.
#[test]
fn a_million_records_through_a_worker_allocate_fewer_than_1000_times_after_warm_up() {
    use verity_tools::gen::{self, GenConfig, NBBO_FILE, ORDERS_FILE};
    use verity_tools::recv::{Receiver, RecvConfig};
    let t = tempfile::tempdir().unwrap();
    // 700 k NBBO updates and 700 k orders: 700 k outputs, one per order.
    let g = GenConfig::from_messages(7, 1_400_000, gen::data_dir(None));
    gen::market_spread(&g, t.path()).unwrap();
    let (nbbo, orders) = (t.path().join(NBBO_FILE), t.path().join(ORDERS_FILE));
    let outputs = g.orders;
    let received = t.path().join("received.bin");
    let recv =
        Receiver::start(&RecvConfig::new("127.0.0.1:0".parse().unwrap(), &received)).unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "[node]\napp = \"market-spread\"\ndata_dir = {:?}\nlisten = \"{listen}\"\nsink = \"{}\"\n",
        t.path().join("node").display().to_string(),
        recv.addr()
    );
    let cfg = verity::runtime::NodeToml::parse(
        &text,
        &t.path().join("node.toml"),
        &verity::registry::Registry::builtin(),
    )
    .unwrap();
    verity::runtime::install_signal_handlers();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        ON_LOOP.with(|c| c.set(true));
        let mut w = match verity::runtime::Worker::start(cfg) {
            Ok(w) => w,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return Ok(());
            }
        };
        let _ = ready_tx.send(Ok(()));
        w.run()
    });
    ready_rx.recv().unwrap().unwrap();
    let senders = [(nbbo, 1), (orders, 2)].map(|(path, channel)| {
        std::thread::spawn(move || {
            common::node::send_file(listen, &path, InputFormat::Fixish, channel)
        })
    });
    // Warm-up: the first 150 k outputs (about 300 k inputs).
    assert!(
        recv.wait_for(150_000, Duration::from_secs(120)),
        "warm-up never ended"
    );
    let warm = LOOP_ALLOCS.load(Ordering::Relaxed);
    let warm_outputs = recv.records();
    assert!(
        recv.wait_for(outputs, Duration::from_secs(300)),
        "outputs missing"
    );
    let n = LOOP_ALLOCS.load(Ordering::Relaxed) - warm;
    for s in senders {
        s.join().unwrap();
    }
    // Orders and NBBOs go in about evenly: two inputs per output.
    let counted = 2 * (outputs - warm_outputs);
    eprintln!(
        "worker: {warm} allocations on the loop warming up, {n} over about {counted} inputs after"
    );
    // SIGTERM to ourselves: the handler sets the stop flag, the loop
    // finishes its batch, snapshots and returns.
    // SAFETY: kill with our own pid and a signal we installed a handler for.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    worker.join().unwrap().unwrap();
    recv.stop().unwrap();
    let report = verity_tools::check::check(
        verity_tools::check::App::MarketSpread,
        &[&t.path().join(NBBO_FILE), &t.path().join(ORDERS_FILE)],
        &received,
    )
    .unwrap();
    assert!(report.passed(), "{report}");
    assert!(
        warm > 0,
        "no allocation counted on the loop while warming up"
    );
    assert!(counted >= 1_000_000, "only about {counted} inputs counted");
    assert!(
        n < 1000,
        "{n} heap allocations on the worker's loop over about {counted} inputs after warm-up (budget: fewer than 1000)"
    );
}
