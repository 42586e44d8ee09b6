// Shared by the build scripts of `verity` and `verity-tools` (each
// `include!`s it): `--version` names the git commit it was built from and
// the enabled features.

/// Sets `VERITY_VERSION` for the crate: `0.1.0 (commit 0123456789ab,
/// features: a, b)`; the commit is `unknown` outside a git checkout.
fn emit_version() {
    use std::process::Command;
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git").args(args).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Built again when HEAD moves (a commit, a checkout).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/packed-refs");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(", ")
    };
    println!(
        "cargo:rustc-env=VERITY_VERSION={} (commit {commit}, features: {features})",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}
