//! verity-replay: re-runs a node's snapshot + journal offline through this
//! build's core and app, and checks every regenerated output frame against
//! the node's outbound logs, bit for bit (DESIGN §8).
//!
//! - `verity-replay --config node.toml`
//! - `verity-replay --config cluster.toml --name w2 [--shard 1]`
//! - `verity-replay --data-dir DIR --app market-spread` (a single node with
//!   default settings)
//!
//! `--data-dir` also replays a copy of a node's directory under its config.
//! Exit 0: identical; 1: a difference (the first one is printed); 2: bad
//! arguments, configuration or files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use verity::cluster::ClusterToml;
use verity::replay::{replay_dir, Start};
use verity::runtime::NodeToml;

#[derive(Parser)]
#[command(
    name = "verity-replay",
    version,
    about = "Replay a node's snapshot and journal offline and compare its outputs bit for bit"
)]
struct Args {
    /// The node's node.toml, or cluster.toml with --name.
    #[arg(long, required_unless_present = "app")]
    config: Option<PathBuf>,
    /// The worker of cluster.toml whose node to replay.
    #[arg(long, requires = "config")]
    name: Option<String>,
    /// The worker's shard (with shards > 1).
    #[arg(long, default_value_t = 0, requires = "name")]
    shard: usize,
    /// The data directory to replay (default: the configuration's).
    #[arg(long, required_unless_present = "config")]
    data_dir: Option<PathBuf>,
    /// The app, for a single node without a configuration file.
    #[arg(long, conflicts_with = "config", requires = "data_dir")]
    app: Option<String>,
    /// Start from the newest snapshot (as recovery does) instead of as far
    /// back as the journal reaches.
    #[arg(long)]
    newest: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let cfg = match (&a.config, &a.name, &a.app, &a.data_dir) {
        (Some(path), None, _, _) => NodeToml::load(path),
        (Some(path), Some(name), _, _) => ClusterToml::load(path)
            .and_then(|c| c.node_tomls(name, path))
            .and_then(|mut nodes| {
                if a.shard < nodes.len() {
                    Ok(nodes.swap_remove(a.shard))
                } else {
                    Err(verity::runtime::ConfigError {
                        file: path.clone(),
                        key: "--shard".into(),
                        message: format!("worker {name} has {} shard(s)", nodes.len()),
                    })
                }
            }),
        (None, _, Some(app), Some(dir)) => NodeToml::parse(
            &format!(
                "[node]\napp = {app:?}\ndata_dir = {:?}\nlisten = \"127.0.0.1:1\"\nsink = \"127.0.0.1:1\"\n",
                dir.display().to_string()
            ),
            std::path::Path::new("--app"),
        ),
        _ => {
            eprintln!("verity-replay: give --config, or --data-dir with --app");
            return ExitCode::from(2);
        }
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("verity-replay: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = a.data_dir.clone().unwrap_or_else(|| cfg.data_dir.clone());
    if !dir.is_dir() {
        eprintln!("verity-replay: {}: not a directory", dir.display());
        return ExitCode::from(2);
    }
    let start = if a.newest {
        Start::Newest
    } else {
        Start::Earliest
    };
    match replay_dir(&dir, &cfg, start) {
        Ok(report) => {
            println!("{report}");
            if report.identical() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("verity-replay: {e}");
            ExitCode::from(2)
        }
    }
}
