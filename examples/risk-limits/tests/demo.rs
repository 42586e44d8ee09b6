//! The user binary's `demo`: risk-limits on a cluster of three real worker
//! processes (this crate's binary) under the `all` fault profile (drops,
//! duplicates, reorders, delays, corruption, closes, partitions, `kill -9`
//! of every worker and of the receiver, pauses), its inputs from the app's
//! registered generator, judged by the engine's generic oracle and by the
//! app's own oracle, every node's journal replayed IDENTICAL.

use std::process::Command;

#[test]
fn risk_limits_pass_under_all_faults_on_three_workers() {
    for seed in [1, 2] {
        let out = Command::new(env!("CARGO_BIN_EXE_verity-risk-limits"))
            .args([
                "demo",
                "--profile",
                "all",
                "--workers",
                "3",
                "--messages",
                "40000",
            ])
            .args(["--seed", &seed.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "seed {seed}:\n{text}");
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(
                "check: PASS app=risk-limits sent=40000 received=40000 lost=0 duplicated=0"
            ),
            "{last}"
        );
        assert!(
            text.contains("report: the app's own oracle: PASS: check: PASS app=risk-limits expected=40000 received=40000"),
            "{text}"
        );
        assert!(
            text.contains(
                "report: generic oracle: ok=40000 lost=0 duplicated=0 wrong=0 unexpected=0"
            ),
            "{text}"
        );
        assert!(
            text.contains("kill -9 #3 of"),
            "every worker killed:\n{text}"
        );
    }
}
