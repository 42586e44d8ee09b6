//! verity-chaos's flags share the engine's vocabulary: an unknown app and a
//! seed range that holds no seed are usage errors (exit 2), before anything
//! is started.

use std::process::Command;

fn chaos(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_verity-chaos"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_app_and_an_empty_seed_range_exit_2() {
    let (code, err) = chaos(&["--app", "foo"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("verity-chaos: --app: unknown app \"foo\""),
        "{err}"
    );
    for range in ["5..1", "4..4"] {
        let (code, err) = chaos(&["--seeds", range]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("holds no seed"), "{err}");
    }
}

/// Every tool says its exit codes in --help.
#[test]
fn every_tool_help_says_the_exit_codes() {
    for bin in [
        env!("CARGO_BIN_EXE_verity-gen"),
        env!("CARGO_BIN_EXE_verity-send"),
        env!("CARGO_BIN_EXE_verity-recv"),
        env!("CARGO_BIN_EXE_verity-check"),
        env!("CARGO_BIN_EXE_verity-bench"),
        env!("CARGO_BIN_EXE_verity-chaos"),
        env!("CARGO_BIN_EXE_verity-sink-postgres"),
    ] {
        let o = std::process::Command::new(bin)
            .arg("--help")
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(t.contains("Exit status: 0"), "{bin} --help: {t}");
    }
}
