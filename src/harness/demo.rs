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

use verity_tools::chaos::{self, Profile, Scenario, SinkTarget};

use crate::log::Durability;
use crate::registry::Registry;

#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub app: String,
    pub seed: u64,
    pub messages: u64,
    pub kills: u32,
    /// Worker processes of the cluster.
    pub nodes: u32,
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
    super::oracle_of(&args.app)?;
    let engine = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut s = Scenario::new(engine);
    s.app = args.app.clone();
    s.workers = args.nodes.max(1);
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
    s.command = "cargo run --release -- demo".into();
    s.workers_flag = "--nodes";
    let o = chaos::run(&s)?;
    Ok(DemoOutcome {
        passed: o.passed,
        last_line: o.last_line,
    })
}
