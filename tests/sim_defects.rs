//! The simulator tests the protocol that ships: `verity-sim` built with a
//! deliberate defect in the core's producer side fails seeds, and the
//! normal build passes the very same seeds. Each defect is a Cargo feature
//! enabled only here (`Cargo.toml`); the builds share `target/defects` with
//! tests/chaos.rs, so the dependencies are compiled once.

use std::path::Path;
use std::process::Command;

const SEEDS: &str = "1..201";

/// Builds `verity-sim` with `feature` into `target/defects`; returns it.
fn build_sim(feature: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/defects");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "verity", "--bin", "verity-sim"])
        .args(["--features", feature])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build --features {feature} failed");
    let bin = target.join("release/verity-sim");
    // Keep this build's binary apart: the next feature's build replaces it.
    let name = feature.rsplit('/').next().unwrap_or(feature);
    let kept = target.join(format!("release/verity-sim-{name}"));
    std::fs::copy(&bin, &kept).expect("copy the defect build");
    kept
}

/// Runs `sim` over [`SEEDS`]: (exit success, output).
fn sim(sim: &Path) -> (bool, String) {
    let out = Command::new(sim)
        .args(["--seeds", SEEDS])
        .output()
        .expect("verity-sim runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The count after `failed=` in the summary line.
fn failed(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("failed=")))
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[test]
fn the_simulator_catches_a_producer_that_ignores_the_resume_cursor() {
    let (ok, text) = sim(Path::new(env!("CARGO_BIN_EXE_verity-sim")));
    assert!(ok && failed(&text) == 0, "the normal build fails:\n{text}");

    let defect = build_sim("verity/defect-no-resend-on-resume");
    let (ok, text) = sim(&defect);
    assert!(!ok, "the defect went unnoticed:\n{text}");
    assert!(failed(&text) > 0, "{text}");
    assert!(text.contains("after a RESUME"), "{text}");
}
