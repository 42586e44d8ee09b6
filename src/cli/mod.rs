//! The engine's command line, for any set of apps: [`main`] takes a
//! [`Registry`] and serves every subcommand with it.
//!
//! - `worker --config node.toml`: run one node until SIGTERM/SIGINT.
//! - `worker --config cluster.toml --name w2`: run worker `w2` of a cluster.
//! - `demo`: the main job (README): a cluster of `--workers N` workers under
//!   seeded faults and `kill -9`, checked.
//! - `replay --config node.toml`: the node's journal re-run offline, its
//!   outputs compared bit for bit.
//! - `sim`, `trace`, `logdump`: the simulator, the path of one message, a
//!   dump of a node's logs.
//! - `recv --listen ADDR --out FILE`: the receiver, as `verity-recv` (the
//!   demo and `verity-chaos` run it as a process of its own to `kill -9`
//!   it).
//! - `oracle --config cluster.toml --received FILE --sent 1=N`: the
//!   generic oracle over a real run, for any app.
//! - `sink-postgres run --config sink.toml`: the PostgreSQL sink, as
//!   `verity-sink-postgres` (run as a process of its own likewise).

pub mod config;
pub mod logdump;
pub mod oracle;

/// Row mappings for `sink-postgres` ([`main_with_rows`]): how an app's
/// output record becomes typed columns (the trait and its parts, from the
/// tools crate, so a user crate needs only `verity`).
pub mod rows {
    pub use verity_tools::pg::{Column, Mapping, Mappings, Value};
}
pub mod sim;
pub mod stat;
pub mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{ClusterToml, NodeToml};
use crate::harness::demo::{self, DemoArgs};
use crate::log::Durability;
use crate::registry::Registry;
use crate::runtime::{install_signal_handlers, run_shards};

#[derive(Parser)]
#[command(
    version = env!("VERITY_VERSION"),
    about = "Exactly-once stream processing, proven from outside",
    after_help = "Exit status (every subcommand; its --help says what each means for it): 0 ok; 1 a check failed or damage was found; 2 usage, configuration or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The flags of `demo`.
#[derive(clap::Args)]
struct DemoFlags {
    /// One of this binary's apps (default: the one registered last:
    /// market-spread for `verity`, a user binary's own app for it).
    #[arg(long)]
    app: Option<String>,
    /// Seed for the data and the kill schedule (default: from the clock, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Input records to generate.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// How many times to kill -9 a worker.
    #[arg(long, default_value_t = 3)]
    kills: u32,
    /// Worker processes of the cluster (each is killed at least once
    /// when --kills allows); as verity-chaos names it.
    #[arg(long, alias = "nodes", default_value_t = 3)]
    workers: u32,
    /// The faults to inject (kills come from --kills).
    #[arg(long, value_enum, default_value_t = verity_tools::chaos::Profile::All)]
    profile: verity_tools::chaos::Profile,
    /// When nodes ACK: after write(2) (process) or fdatasync (fsync).
    #[arg(long, default_value = "process", value_parser = ["process", "fsync"])]
    durability: String,
    /// Work directory (default: a fresh one under the system temp dir,
    /// removed after a PASS).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work directory after a PASS.
    #[arg(long)]
    keep: bool,
    /// Where the outputs go: file (the receiver's file) or postgres
    /// (`sink-postgres`; its process is killed too, once while a worker is
    /// killed, and the database is restarted).
    #[arg(long, default_value = "file")]
    sink: String,
    /// With --sink postgres: the database (libpq `key=value` or
    /// `postgresql://` URL). Default: a private server in the work
    /// directory, from Debian's PostgreSQL binaries.
    #[arg(long)]
    pg_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one worker node (see docs/CONFIG.md for the files).
    #[command(
        after_help = "Exit status: 0 stopped cleanly (SIGTERM or SIGINT: batch finished, journal durable, snapshot written); 1 stopped on an error (the log names it); 2 bad configuration or usage."
    )]
    Worker {
        /// Path of the node's TOML configuration (node.toml), or of the
        /// cluster's (cluster.toml, with --name).
        #[arg(long)]
        config: PathBuf,
        /// The worker of cluster.toml to run.
        #[arg(long)]
        name: Option<String>,
        /// How log lines are written to stderr: text, or JSON Lines
        /// (tools/FORMATS.md).
        #[arg(long, value_enum, default_value = "text")]
        log_format: crate::runtime::logging::LogFormat,
        /// Which lines: RUST_LOG syntax (`info`, `warn`,
        /// `info,verity::runtime::outbound=debug`). Default: $RUST_LOG,
        /// else `info`.
        #[arg(long)]
        log: Option<String>,
    },
    /// The main job: market spread (or --app) on a 3-worker cluster under
    /// seeded faults (socket shim, partitions, kill -9, pauses), checked
    /// from outside by the independent oracle.
    #[command(
        after_help = "Exit status: 0 the run passed its checks; 1 it failed (the reproduce line names the seed and schedule); 2 usage error."
    )]
    Demo(DemoFlags),
    /// Re-run a node's snapshot + journal offline and compare its outputs
    /// with its outbound logs, bit for bit (also `verity-replay`).
    Replay(crate::replay::ReplayArgs),
    /// Simulate a cluster under faults, seed by seed, each run checked by
    /// the oracle (also `verity-sim`).
    Sim(sim::SimArgs),
    /// The path of one message through a cluster, from its logs (also
    /// `verity-trace`).
    Trace(trace::TraceArgs),
    /// Print what a node's logs hold, read only (also `verity-logdump`).
    Logdump(logdump::LogdumpArgs),
    /// Receive a node's output, exactly once, into a received file that is
    /// reopened on restart (the same command line as `verity-recv`).
    Recv(verity_tools::recv::cli::Args),
    /// Put a node's output into PostgreSQL, exactly once (the same command
    /// line as `verity-sink-postgres`).
    SinkPostgres(verity_tools::pg::cli::Args),
    /// Judge a run of any app: every source record journaled once, and
    /// the sink's outputs equal to an offline replay of every node's
    /// journal (the generic oracle).
    Oracle(oracle::OracleArgs),
    /// A live view of running workers (their `metrics_listen`): rates,
    /// unACKed frames, backpressure and state per node and channel.
    Stat(stat::StatArgs),
    /// Validate a node.toml or cluster.toml (`check`), or print each
    /// node's effective configuration with defaults (`show`).
    Config(config::ConfigArgs),
}

/// The engine's whole command line for the apps in `apps`: `worker`,
/// `demo`, `replay`, `sim`, `trace`, `logdump`, `recv` and `sink-postgres`. The `verity`
/// binary is `main(Registry::builtin())`; a user crate registers its own
/// apps and calls this from its `main`:
///
/// ```no_run
/// use verity::app::{pipeline, App, Reject};
/// use verity::registry::{AppInputs, Registry};
///
/// fn upper() -> impl App {
///     pipeline("upper")
///         .source("lines", |_, b: &[u8]| Ok::<_, Reject>(b.to_ascii_uppercase()))
///         .key_by(|line: &Vec<u8>| line.first().copied().unwrap_or(0))
///         .to_state(|v: Vec<u8>, _: &mut (), emit: &mut dyn FnMut(Vec<u8>)| emit(v))
///         .to_sink(|v: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(v))
/// }
///
/// // `demo` and `sim` feed it these (and judge it by the generic oracle).
/// fn lines(_seed: u64, n: u64) -> AppInputs {
///     AppInputs {
///         sources: vec![(0..n).map(|i| format!("line {i}").into_bytes()).collect()],
///         expected_outputs: n,
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     verity::cli::main(Registry::builtin().with("upper", upper).with_inputs("upper", lines))
/// }
/// ```
pub fn main(apps: Registry) -> ExitCode {
    main_with_rows(apps, verity_tools::pg::Mappings::builtin())
}

/// [`main`], with the row mappings `sink-postgres` uses for the apps'
/// outputs: market spread's typed columns are built in; a user app adds its
/// own (`Mappings::builtin().with("my-app", Arc::new(MyRows))`, a
/// [`rows::Mapping`]), else its outputs go in as bytes.
pub fn main_with_rows(apps: Registry, rows: verity_tools::pg::Mappings) -> ExitCode {
    // Named as it was invoked: a user crate's binary is not `verity`.
    let bin = std::env::args_os()
        .next()
        .and_then(|a| {
            let name = std::path::Path::new(&a).file_name()?;
            Some(name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "verity".into());
    let matches = Cli::command().bin_name(bin.clone()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Demo(flags) => demo(flags, &bin, &apps),
        Command::Replay(args) => ExitCode::from(crate::replay::main_with(
            &args,
            &format!("{bin} replay"),
            &apps,
        )),
        Command::Sim(args) => sim::run(&args, &format!("{bin} sim"), &apps),
        Command::Trace(args) => trace::run(&args, &format!("{bin} trace"), &apps),
        Command::Logdump(args) => logdump::run(&args, &format!("{bin} logdump")),
        Command::Recv(args) => verity_tools::recv::cli::run(&args, &format!("{bin} recv")),
        Command::Oracle(args) => oracle::run(&args, &format!("{bin} oracle"), &apps, &rows),
        Command::Stat(args) => stat::run(&args, &bin, &apps),
        Command::Config(args) => config::run(&args, &bin, &apps),
        Command::SinkPostgres(args) => {
            verity_tools::pg::cli::run(&args, &format!("{bin} sink-postgres"), &rows)
        }
        Command::Worker {
            config,
            name,
            log_format,
            log,
        } => {
            if let Err(e) = crate::runtime::logging::init(log_format, log.as_deref()) {
                eprintln!("{bin} worker: --log: {e}");
                return ExitCode::from(2);
            }
            let loaded = match &name {
                None => match crate::config::cluster_without_name(&config, &apps) {
                    Some(e) => Err(e),
                    None => NodeToml::load(&config, &apps).map(|c| vec![c]),
                },
                Some(name) => {
                    ClusterToml::load(&config, &apps).and_then(|c| c.node_tomls(name, &config))
                }
            };
            let cfgs = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{bin}: bad configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            install_signal_handlers();
            match run_shards(cfgs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{bin}: stopped on error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `demo`: the flags checked, then the chaos run of this binary.
fn demo(f: DemoFlags, bin: &str, apps: &Registry) -> ExitCode {
    let profile = f.profile;
    // Checked by clap (process or fsync).
    let durability = if f.durability == "fsync" {
        Durability::Fsync
    } else {
        Durability::Process
    };
    let sink = match verity_tools::chaos::SinkTarget::parse(&f.sink, f.pg_url.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{bin} demo: --sink: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = f.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1)
    });
    let Some(app) = f.app.or_else(|| apps.names().last().map(|n| n.to_string())) else {
        eprintln!("{bin} demo: this binary registers no app");
        return ExitCode::from(2);
    };
    if !apps.contains(&app) {
        eprintln!(
            "{bin} demo: --app: unknown app {app:?} (one of: {})",
            apps.names().join(", ")
        );
        return ExitCode::from(2);
    }
    let args = DemoArgs {
        app,
        seed,
        messages: f.messages,
        kills: f.kills,
        workers: f.workers,
        profile,
        durability,
        dir: f.dir,
        keep: f.keep,
        sink,
    };
    match demo::run(&args, apps) {
        Ok(o) if o.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{bin} demo: {e}");
            println!("check: FAIL app={} error={e:?} kills=0", args.app);
            ExitCode::from(1)
        }
    }
}
