//! One command-line vocabulary across the engine's subcommands and the
//! tools: an unknown app is a usage error (exit 2) that lists the apps, in
//! `demo`, `sim` and `verity-chaos` alike; a seed range that holds no seed
//! (reversed or empty) is refused with exit 2 instead of running nothing or
//! wrapping around.

use std::process::{Command, Output};

fn verity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_unknown_app_is_a_usage_error_listing_the_apps() {
    for sub in ["demo", "sim"] {
        let o = verity(&[sub, "--app", "foo"]);
        assert_eq!(o.status.code(), Some(2), "{sub}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "verity {sub}: --app: unknown app \"foo\" (one of: doubler, word-count, sequence-window, market-spread)"
            )),
            "{sub}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn a_seed_range_without_seeds_is_refused() {
    for range in ["5..1", "3..3", "3..=2"] {
        let o = verity(&["sim", "--seeds", range]);
        assert_eq!(o.status.code(), Some(2), "{range}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("holds no seed"),
            "{range}: {}",
            stderr(&o)
        );
    }
    let o = verity(&["sim", "--seeds", "1..=2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sim: seeds=2 passed=2"));
}

#[test]
fn a_cluster_toml_without_name_says_so_and_lists_the_workers() {
    let cluster = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config/cluster.toml");
    for sub in ["worker", "replay"] {
        let o = verity(&[sub, "--config", cluster]);
        assert_eq!(o.status.code(), Some(2), "{sub}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "{cluster}: --name: this is a cluster.toml: name the worker with --name (workers: w1, w2, w3)"
            )),
            "{sub}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn version_names_the_commit_and_the_features() {
    let o = verity(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    assert_eq!(
        text.trim(),
        format!("verity 0.1.0 (commit {head}, features: cli, default, fault-shim)")
    );
}

#[test]
fn demo_names_workers_as_chaos_does_and_lists_profiles() {
    let o = verity(&["demo", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(help.contains("--workers <WORKERS>"), "{help}");
    assert!(!help.contains("--nodes"), "{help}");
    for p in [
        "none",
        "flaky-net",
        "lossy",
        "corrupt",
        "crashes",
        "partitions",
        "all",
    ] {
        assert!(help.contains(&format!("- {p}:")), "{p} in {help}");
    }
    let o = verity(&["demo", "--profile", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "[possible values: none, flaky-net, lossy, corrupt, crashes, partitions, all]"
        ),
        "{}",
        stderr(&o)
    );
    let o = verity(&["demo", "--durability", "sometimes"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("[possible values: process, fsync]"),
        "{}",
        stderr(&o)
    );
}

/// Every command says its exit codes in --help: 0 ok, 1 check failed or
/// damage found, 2 usage or I/O error (what each means for it).
#[test]
fn every_help_says_the_exit_codes() {
    let subs = [
        "worker",
        "demo",
        "replay",
        "sim",
        "trace",
        "logdump",
        "recv",
        "sink-postgres",
        "oracle",
        "stat",
        "config",
    ];
    let mut missing = Vec::new();
    for s in subs {
        let o = verity(&[s, "--help"]);
        let t = String::from_utf8_lossy(&o.stdout);
        if !(t.contains("Exit status: 0") || t.contains("Exit status (")) {
            missing.push(format!("verity {s}"));
        }
    }
    let o = verity(&["--help"]);
    if !String::from_utf8_lossy(&o.stdout).contains("Exit status") {
        missing.push("verity".into());
    }
    for bin in [
        env!("CARGO_BIN_EXE_verity-logdump"),
        env!("CARGO_BIN_EXE_verity-replay"),
        env!("CARGO_BIN_EXE_verity-sim"),
        env!("CARGO_BIN_EXE_verity-trace"),
    ] {
        let o = Command::new(bin).arg("--help").output().unwrap();
        if !String::from_utf8_lossy(&o.stdout).contains("Exit status: 0") {
            missing.push(bin.into());
        }
    }
    assert!(missing.is_empty(), "no exit codes in --help of {missing:?}");
}
