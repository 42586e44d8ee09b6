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
