//! Chaos runs catch real defects: the engine built with a deliberate defect
//! (feature `defect-skip-dedup`, enabled only here: duplicates on
//! node-to-node channels are processed again) fails a `verity-chaos` run
//! that duplicates frames, and the run prints the command that reproduces
//! it. The same scenario passes on the real engine.

use std::path::Path;
use std::process::Command;

fn build(target: &Path, features: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "verity", "--bin", "verity"])
        .args(["-p", "verity-tools", "--bin", "verity-chaos"])
        .arg("--target-dir")
        .arg(target);
    if !features.is_empty() {
        // A defect builds only with the cfg that says so (src/lib.rs).
        cmd.args(["--features", features])
            .env("RUSTFLAGS", "--cfg verity_defect");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "cargo build {features} failed");
}

fn chaos(bin: &Path, engine: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .arg("--engine")
        .arg(engine)
        .args([
            "--app",
            "market-spread",
            "--workers",
            "2",
            "--messages",
            "30000",
            "--profile",
            "flaky-net",
            "--seed",
            "3",
        ])
        .args(extra)
        .output()
        .expect("verity-chaos runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_chaos_run_catches_a_deliberate_dedup_defect_and_prints_how_to_reproduce_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defect = root.join("target/defects");
    build(&defect, "verity/defect-skip-dedup");
    let bin = defect.join("release/verity-chaos");
    let (ok, text) = chaos(&bin, &defect.join("release/verity"), &[]);
    assert!(!ok, "the defect went unnoticed:\n{text}");
    let last = text
        .lines()
        .rfind(|l| l.starts_with("check: "))
        .unwrap_or("");
    assert!(last.starts_with("check: FAIL"), "{text}");
    assert!(
        text.contains("reproduce: cargo build --release --workspace && ./target/release/verity-chaos --app market-spread --workers 2 --messages 30000 --profile flaky-net --seed 3"),
        "{text}"
    );
    // The checker names the first bad record with its trace id.
    assert!(text.contains("trace"), "{text}");
    // A failed run keeps its directory for a look; this failure was the
    // point, so it goes.
    if let Some(dir) = text.split_whitespace().find_map(|w| w.strip_prefix("dir=")) {
        let _ = std::fs::remove_dir_all(dir);
    }

    // The same run on the engine without the defect passes.
    let good = root.join("target/release/verity");
    if good.exists() {
        let (ok, text) = chaos(&bin, &good, &[]);
        assert!(ok, "{text}");
    }
}
