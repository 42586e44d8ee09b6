//! The risk-limits app on the engine's simulator, registered as a user
//! registers it: three nodes (accounts spread over them by key), lossy and
//! duplicating links, partitions, crashes with recovery from snapshot and
//! journal, and zombie instances. Its own oracle judges every run; and the
//! oracle is shown to catch a wrong decision.

use verity::registry::Registry;
use verity::sim::{self, SimParams, SourceInput, Workload};
use verity_risk_limits::{generate_orders as orders, oracle, NAME};

fn run(seed: u64, orders: &[Vec<u8>]) -> (sim::SimRun, SimParams) {
    let apps = Registry::builtin().with(NAME, verity_risk_limits::app);
    let mut p = SimParams::swarm(seed);
    p.app = NAME.into();
    let workload = Workload {
        sources: vec![SourceInput {
            channel: 1,
            records: orders.to_vec(),
        }],
        trace_id: |channel, seq| (channel as u64) << 40 | seq,
        expected_outputs: orders.len() as u64,
    };
    (sim::run(&p, workload, &apps).expect("the sim runs"), p)
}

#[test]
fn risk_limits_pass_their_oracle_on_a_faulty_three_node_cluster() {
    // Seeds 1 and 8 draw three nodes with partitions, crashes and zombies.
    for seed in [1, 8] {
        let orders = orders(seed, 2_000);
        let (run, p) = run(seed, &orders);
        assert!(
            run.failure.is_none() && run.complete,
            "seed {seed}: {:?}",
            run.failure
        );
        assert!(p.nodes == 3 && run.crashes > 0, "seed {seed}: {p:?}");
        let report = oracle::check(&orders, run.received.iter().map(|r| &r.payload[..]));
        assert!(report.passed(), "seed {seed}: {report}");
        assert_eq!(report.received, 2_000);
        assert!(
            report.accepted > 0 && report.accepted < 2_000,
            "seed {seed}: the limit never bit or always did: {report}"
        );
    }
}

#[test]
fn the_oracle_catches_a_wrong_a_missing_and_a_doubled_decision() {
    let orders = orders(3, 300);
    let (run, _) = run(3, &orders);
    let good: Vec<Vec<u8>> = run.received.iter().map(|r| r.payload.clone()).collect();
    assert!(oracle::check(&orders, good.iter().map(|p| &p[..])).passed());

    let mut flipped = good.clone();
    flipped[10][13] ^= 1; // accept <-> reject
    let r = oracle::check(&orders, flipped.iter().map(|p| &p[..]));
    assert!(!r.passed() && r.problems[0].contains("expected"), "{r}");

    let r = oracle::check(&orders, good[1..].iter().map(|p| &p[..]));
    assert!(
        !r.passed() && r.problems[0].contains("never decided"),
        "{r}"
    );

    let mut doubled = good.clone();
    doubled.push(good[0].clone());
    let r = oracle::check(&orders, doubled.iter().map(|p| &p[..]));
    assert!(
        !r.passed() && r.problems[0].contains("decided twice"),
        "{r}"
    );
}

/// The user binary's own `sim` subcommand judges risk-limits with the
/// engine's generic oracle (every node's journal replayed against what the
/// sink received) and the app's own oracle on top, from the app's
/// registered input generator; an unregistered name is refused, listing the
/// binary's apps.
#[test]
fn the_sim_subcommand_judges_the_app_by_the_generic_oracle_and_its_own() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verity-risk-limits"))
        .args(["sim", "--seeds", "1..9", "--app", NAME])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("passed=8 failed=0"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verity-risk-limits"))
        .args(["sim", "--seed", "1", "--app", "nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--app: unknown app \"nope\" (one of: doubler, word-count, sequence-window, market-spread, risk-limits)"), "{err}");
}
