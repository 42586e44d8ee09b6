//! `verity demo`: the main job on built-in defaults — market spread on a
//! cluster of 3 worker processes under the `all` fault profile (the socket
//! shim's drops, duplicates, reorders, delays, corruptions and closes,
//! partitions of worker pairs, `kill -9` of every worker, SIGSTOP pauses),
//! all drawn from a seed, checked from outside by the independent oracle,
//! with a report whose last line is `check: PASS ...` or `check: FAIL ...`.
//!
//! It is `verity-chaos` (`verity_tools::chaos`) with this binary as the
//! engine and the demo's flags.

use std::path::PathBuf;

use std::sync::Arc;

use verity_tools::chaos::{self, InputGenerator, Profile, ReceivedOracle, Scenario, SinkTarget};

use crate::log::Durability;
use crate::registry::Registry;

#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub app: String,
    pub seed: u64,
    pub messages: u64,
    pub kills: u32,
    /// Worker processes of the cluster.
    pub workers: u32,
    pub durability: Durability,
    pub profile: Profile,
    /// Work directory; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    pub keep: bool,
    /// The receiver's file, or PostgreSQL.
    pub sink: SinkTarget,
}

/// How the demo ended.
pub struct DemoOutcome {
    pub passed: bool,
    pub last_line: String,
}

/// Runs the demo; prints progress and the report to stdout.
pub fn run(args: &DemoArgs, apps: &Registry) -> Result<DemoOutcome, String> {
    if !apps.contains(&args.app) {
        return Err(format!(
            "unknown app {:?} (one of: {})",
            args.app,
            apps.names().join(", ")
        ));
    }
    let engine = engine_of_demo()?;
    let mut s = Scenario::new(engine);
    s.app = args.app.clone();
    s.workers = args.workers.max(1);
    s.messages = args.messages;
    s.durability = match args.durability {
        Durability::Process => "process".into(),
        Durability::Fsync => "fsync".into(),
    };
    s.profile = args.profile;
    s.seed = args.seed;
    s.kills = Some(args.kills);
    s.dir = args.dir.clone();
    s.keep = args.keep;
    s.sink = args.sink.clone();
    if super::oracle_of(&args.app).is_err() {
        // An app the tools do not know: its registered generator writes
        // the inputs, and the generic oracle judges the run.
        let spec = apps
            .get(&args.app)
            .ok_or_else(|| format!("unknown app {:?}", args.app))?;
        let generate = apps.inputs(&args.app).ok_or_else(|| {
            format!(
                "app {:?} has no input generator: register one with Registry::with_inputs to run it in demo",
                args.app
            )
        })?;
        s.source_count = Some(spec.sources().len() as u32);
        s.inputs = Some(InputGenerator(Arc::new(move |dir, seed, messages| {
            super::write_inputs(dir, &generate(seed, messages))
        })));
        if let Some(oracle) = apps.oracle(&args.app) {
            // The generator is deterministic: the same inputs again.
            let (seed, messages) = (s.seed, s.messages);
            s.app_oracle = Some(ReceivedOracle(Arc::new(move |received| {
                let outputs = super::received_payloads(received)?;
                oracle(&generate(seed, messages), &outputs)
            })));
        }
    }
    s.command = command_line(&engine_of_demo()?);
    let o = chaos::run(&s)?;
    Ok(DemoOutcome {
        passed: o.passed,
        last_line: o.last_line,
    })
}

fn engine_of_demo() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))
}

/// The command that runs this demo again: `cargo run --release -- demo`
/// for the workspace's `verity`, else this binary's path (relative to the
/// current directory when it is below it) and `demo`.
fn command_line(exe: &std::path::Path) -> String {
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
    if name.as_deref() == Some("verity") {
        return "cargo run --release -- demo".into();
    }
    let shown = std::env::current_dir()
        .ok()
        .and_then(|d| {
            exe.strip_prefix(d)
                .ok()
                .map(|p| format!("./{}", p.display()))
        })
        .unwrap_or_else(|| exe.display().to_string());
    format!("{shown} demo")
}
