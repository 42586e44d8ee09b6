//! The generic oracle judges apps the checker knows nothing about, and can
//! fail: an app that breaks determinism (its output depends on a counter
//! kept outside its state, which no journal records) passes a fault-free
//! simulated run by its delivery alone, and the generic oracle's replay of
//! the journals catches it; the same app made deterministic passes. A
//! registered app without an input generator is named as such.

use std::sync::atomic::{AtomicU64, Ordering};

use verity::app::{pipeline, App, Reject};
use verity::harness::sim_run;
use verity::registry::{AppInputs, Registry};
use verity::sim::SimParams;

/// Outside any state: instances built for a replay see it where the run
/// left it.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn leaky() -> impl App {
    pipeline("leaky")
        .source("numbers", |_, b: &[u8]| Ok::<_, Reject>(b.to_vec()))
        .key_by(|v: &Vec<u8>| v.first().copied().unwrap_or(0) % 4)
        .to_state(|v: Vec<u8>, _: &mut (), emit: &mut dyn FnMut(Vec<u8>)| {
            let mut out = v;
            out.extend_from_slice(&CALLS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            emit(out)
        })
        .to_sink(|v: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(v))
}

fn counting() -> impl App {
    pipeline("counting")
        .source("numbers", |_, b: &[u8]| Ok::<_, Reject>(b.to_vec()))
        .key_by(|v: &Vec<u8>| v.first().copied().unwrap_or(0) % 4)
        .to_state(|v: Vec<u8>, n: &mut u64, emit: &mut dyn FnMut(Vec<u8>)| {
            *n += 1;
            let mut out = v;
            out.extend_from_slice(&n.to_le_bytes());
            emit(out)
        })
        .to_sink(|v: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(v))
}

fn numbers(_seed: u64, messages: u64) -> AppInputs {
    AppInputs {
        sources: vec![(0..messages).map(|i| i.to_be_bytes().to_vec()).collect()],
        expected_outputs: messages,
    }
}

fn params(app: &str) -> SimParams {
    let mut p = SimParams::swarm(3);
    p.app = app.into();
    p.messages = 300;
    // No crash: the run itself never replays, so only the oracle can tell.
    p.crash_every_us = 0;
    p
}

#[test]
fn a_nondeterministic_app_fails_the_generic_oracle_and_a_deterministic_one_passes() {
    let apps = Registry::builtin()
        .with("leaky", leaky)
        .with_inputs("leaky", numbers)
        .with("counting", counting)
        .with_inputs("counting", numbers);
    let dir = tempfile::tempdir().unwrap();
    let good = sim_run::run(&params("counting"), dir.path(), &apps).unwrap();
    assert!(good.passed, "{}", good.verdict);
    assert!(
        good.verdict
            .starts_with("check: PASS app=counting expected=300 received=300"),
        "{}",
        good.verdict
    );
    let bad = sim_run::run(&params("leaky"), dir.path(), &apps).unwrap();
    assert!(!bad.passed, "{}", bad.verdict);
    assert!(
        bad.verdict.contains("FAIL (generic oracle)"),
        "{}",
        bad.verdict
    );
    assert!(
        bad.verdict.contains("wrong: output channel"),
        "{}",
        bad.verdict
    );
}

#[test]
fn an_app_without_an_input_generator_is_named() {
    let apps = Registry::builtin().with("counting", counting);
    let dir = tempfile::tempdir().unwrap();
    let e = sim_run::run(&params("counting"), dir.path(), &apps).unwrap_err();
    assert!(
        e.contains(
            "app \"counting\" has no input generator: register one with Registry::with_inputs"
        ),
        "{e}"
    );
}
