//! The `verity` engine binary.
//!
//! - `verity worker --config node.toml`: run one node until SIGTERM/SIGINT.
//! - `verity worker --config cluster.toml --name w2`: run worker `w2` of a cluster.
//! - `verity demo`: the main job (README): a node (or `--nodes N` workers)
//!   under `kill -9`, checked.
//! - `verity replay --config node.toml`: the node's journal re-run offline,
//!   its outputs compared bit for bit (as `verity-replay`).
//! - `verity recv --listen ADDR --out FILE`: the receiver, as `verity-recv`
//!   (the demo and `verity-chaos` run it as a process of its own to
//!   `kill -9` it).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use verity::config::ClusterToml;
use verity::harness::demo::{self, DemoArgs};
use verity::log::Durability;
use verity::runtime::{install_signal_handlers, run_shards, NodeToml};

#[derive(Parser)]
#[command(
    name = "verity",
    version,
    about = "Exactly-once stream processing, proven from outside"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one worker node (see docs/CONFIG.md for the files).
    Worker {
        /// Path of the node's TOML configuration (node.toml), or of the
        /// cluster's (cluster.toml, with --name).
        #[arg(long)]
        config: PathBuf,
        /// The worker of cluster.toml to run.
        #[arg(long)]
        name: Option<String>,
    },
    /// The main job: market spread (or --app) on a 3-worker cluster under
    /// seeded faults (socket shim, partitions, kill -9, pauses), checked
    /// from outside by the independent oracle.
    Demo {
        /// doubler, word-count, sequence-window or market-spread.
        #[arg(long, default_value = "market-spread")]
        app: String,
        /// Seed for the data and the kill schedule (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Input records to generate.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// How many times to kill -9 a node.
        #[arg(long, default_value_t = 3)]
        kills: u32,
        /// Worker processes of the cluster (each is killed at least once
        /// when --kills allows).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Faults: none, flaky-net, corrupt, crashes, partitions or all
        /// (kills come from --kills).
        #[arg(long, default_value = "all")]
        profile: String,
        /// process or fsync.
        #[arg(long, default_value = "process")]
        durability: String,
        /// Work directory (default: a fresh one under the system temp dir,
        /// removed after a PASS).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the work directory after a PASS.
        #[arg(long)]
        keep: bool,
    },
    /// Re-run a node's snapshot + journal offline and compare its outputs
    /// with its outbound logs, bit for bit (also `verity-replay`).
    Replay(verity::replay::ReplayArgs),
    /// Receive a node's output, exactly once, into a received file that is
    /// reopened on restart (the same command line as `verity-recv`).
    Recv(verity_tools::recv::cli::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            app,
            seed,
            messages,
            kills,
            nodes,
            profile,
            durability,
            dir,
            keep,
        } => {
            let profile = match profile.parse() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("verity demo: --profile: {e}");
                    return ExitCode::from(2);
                }
            };
            let durability = match durability.as_str() {
                "process" => Durability::Process,
                "fsync" => Durability::Fsync,
                other => {
                    eprintln!("verity demo: --durability {other:?} is not process or fsync");
                    return ExitCode::from(2);
                }
            };
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64 % 1_000_000)
                    .unwrap_or(1)
            });
            let args = DemoArgs {
                app,
                seed,
                messages,
                kills,
                nodes,
                profile,
                durability,
                dir,
                keep,
            };
            match demo::run(&args) {
                Ok(o) if o.passed => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("verity demo: {e}");
                    println!("check: FAIL app={} error={e:?} kills=0", args.app);
                    ExitCode::from(1)
                }
            }
        }
        Command::Replay(args) => ExitCode::from(verity::replay::main_with(&args, "verity replay")),
        Command::Recv(args) => verity_tools::recv::cli::run(&args, "verity recv"),
        Command::Worker { config, name } => {
            let loaded = match &name {
                None => NodeToml::load(&config).map(|c| vec![c]),
                Some(name) => ClusterToml::load(&config).and_then(|c| c.node_tomls(name, &config)),
            };
            let cfgs = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("verity: bad configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            install_signal_handlers();
            match run_shards(cfgs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("verity: stopped on error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
