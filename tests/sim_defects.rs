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
        // A defect builds only with the cfg that says so (src/lib.rs).
        .env("RUSTFLAGS", "--cfg verity_defect")
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

/// The count after `name=` in the summary line.
fn count(text: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    text.lines()
        .filter(|l| l.starts_with("sim: "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(key.as_str()))
        })
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// Both defects in one test: their builds share `target/defects` and
/// must not run at once.
#[test]
fn the_simulator_catches_each_deliberate_protocol_defect_and_passes_the_real_core() {
    let (ok, text) = sim(Path::new(env!("CARGO_BIN_EXE_verity-sim")));
    assert!(
        ok && count(&text, "failed") == 0,
        "the normal build fails:\n{text}"
    );
    assert_eq!(count(&text, "passed"), 200, "{text}");
    assert!(
        count(&text, "zombies") > 0,
        "no zombie dialed back in:\n{text}"
    );

    // The producer ignores a RESUME cursor: the sim sees it skip ahead.
    let defect = build_sim("verity/defect-no-resend-on-resume");
    let (ok, text) = sim(&defect);
    assert!(!ok, "defect-no-resend-on-resume went unnoticed:\n{text}");
    assert!(count(&text, "failed") > 0, "{text}");
    assert!(text.contains("after a RESUME"), "{text}");

    // Fencing lets an older epoch in: a zombie instance gets a connection.
    let defect = build_sim("verity/defect-accept-stale-epoch");
    let (ok, text) = sim(&defect);
    assert!(!ok, "defect-accept-stale-epoch went unnoticed:\n{text}");
    assert!(count(&text, "failed") > 0, "{text}");
    assert!(
        text.contains("a replaced instance got a connection back"),
        "{text}"
    );
}
