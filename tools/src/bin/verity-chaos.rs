//! verity-chaos: runs a Verity cluster (real processes, real TCP) under a
//! fault schedule drawn from a seed, checks the output with the independent
//! oracle and prints a report ending in `check: PASS ...` or `check: FAIL ...`
//! (see `verity_tools::chaos`). Build the engine first:
//! `cargo build --release --workspace` (it looks for `verity` beside itself,
//! or takes `--engine`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use verity_tools::chaos::{self, Profile, Scenario, SinkTarget};
use verity_tools::report::chaos::SeedReport;

#[derive(Parser)]
#[command(
    name = "verity-chaos",
    version = env!("VERITY_VERSION"),
    about = "Seeded fault injection against a real Verity cluster, checked from outside",
    after_help = "Exit status: 0 every seed passed; 1 a seed failed its check (each prints the command that reproduces it); 2 usage error, or the --report page could not be written."
)]
struct Args {
    /// doubler, word-count, sequence-window or market-spread.
    #[arg(long, default_value = "market-spread")]
    app: String,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: u32,
    /// Nodes (shards) per worker.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Input records to generate.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Records per second per source (default: as fast as the cluster takes).
    #[arg(long)]
    rate: Option<u64>,
    /// When nodes ACK: after write(2) (process) or fdatasync (fsync).
    #[arg(long, default_value = "process", value_parser = ["process", "fsync"])]
    durability: String,
    /// The faults to inject.
    #[arg(long, value_enum, default_value_t = Profile::All)]
    profile: Profile,
    /// One seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, A..B (B excluded) or A..=B, run one after
    /// another; never empty.
    #[arg(long)]
    seeds: Option<verity_tools::SeedRange>,
    /// Kills instead of the profile's (every worker first).
    #[arg(long)]
    kills: Option<u32>,
    /// Receiver kills (kill -9, then a restart on the same file) instead of
    /// the profile's (crashes and all: 1 or 2).
    #[arg(long)]
    receiver_kills: Option<u32>,
    /// Drop this share of the frames every worker writes, instead of the
    /// profile's: a percentage (`1%`) or a fraction (`0.01`).
    #[arg(long, value_parser = verity_tools::chaos::parse_share)]
    drop: Option<u32>,
    /// Duplicate this share of the frames (as --drop).
    #[arg(long, value_parser = verity_tools::chaos::parse_share)]
    duplicate: Option<u32>,
    /// Hold back and release later this share of the frames (as --drop).
    #[arg(long, value_parser = verity_tools::chaos::parse_share)]
    reorder: Option<u32>,
    /// Where the outputs go: file (`verity recv`) or postgres (`verity
    /// sink-postgres`; with crashes, the schedule also kills it, kills a
    /// worker while it is down, and restarts the database).
    #[arg(long, default_value = "file")]
    sink: String,
    /// With --sink postgres: the database to write into (libpq
    /// `key=value` or `postgresql://` URL). Default: a private server in
    /// the work directory, from Debian's PostgreSQL binaries.
    #[arg(long)]
    pg_url: Option<String>,
    /// The verity engine binary (default: beside this one).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Work directory (default: a fresh one under the temp dir, removed after a PASS).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work directory after a PASS.
    #[arg(long)]
    keep: bool,
    /// JSON Lines on stdout: one object per seed, then a summary
    /// (tools/FORMATS.md); the human report goes to stderr.
    #[arg(long)]
    json: bool,
    /// Also write DIR/index.html: a self-contained page with, per seed, an
    /// SVG plot of the input and output rates over the run with its kills,
    /// pauses, partitions, recoveries and receiver kills marked, and a table
    /// of them (tools/FORMATS.md), rewritten after each seed. An error
    /// writing it exits 2.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let profile = a.profile;
    if a.durability != "process" && a.durability != "fsync" {
        eprintln!(
            "verity-chaos: --durability {:?} is not process or fsync",
            a.durability
        );
        return ExitCode::from(2);
    }
    if let Err(e) = a.app.parse::<verity_tools::check::App>() {
        eprintln!("verity-chaos: --app: {e}");
        return ExitCode::from(2);
    }
    let sink = match SinkTarget::parse(&a.sink, a.pg_url.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("verity-chaos: --sink: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = a.engine.unwrap_or_else(verity_tools::bench::default_engine);
    if !engine.exists() {
        eprintln!(
            "verity-chaos: engine binary {} not found; run `cargo build --release --workspace` first or pass --engine",
            engine.display()
        );
        return ExitCode::from(2);
    }
    let seeds = match (a.seed, a.seeds) {
        (Some(s), _) => verity_tools::SeedRange::one(s),
        (None, Some(r)) => r,
        (None, None) => verity_tools::SeedRange::one(1),
    };
    let started = Instant::now();
    let (mut passed, mut failed) = (0u64, 0u64);
    if a.json {
        chaos::HUMAN_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut reports = Vec::new();
    for seed in seeds.seeds() {
        let mut s = Scenario::new(engine.clone());
        s.app = a.app.clone();
        s.workers = a.workers.max(1);
        s.shards = a.shards.max(1);
        s.messages = a.messages;
        s.rate = a.rate;
        s.durability = a.durability.clone();
        s.profile = profile;
        s.seed = seed;
        s.kills = a.kills;
        s.receiver_kills = a.receiver_kills;
        s.drop = a.drop;
        s.duplicate = a.duplicate;
        s.reorder = a.reorder;
        s.sink = sink.clone();
        s.dir = a.dir.as_ref().map(|d| d.join(seed.to_string()));
        s.keep = a.keep;
        let r = chaos::run(&s);
        if a.json {
            println!("{}", chaos::outcome_json(&s, &r));
        }
        if let Some(dir) = &a.report {
            reports.push(SeedReport {
                seed,
                verdict: match &r {
                    Ok(o) => o.last_line.clone(),
                    Err(e) => format!("error: {e}"),
                },
                reproduce: format!("{} {}", s.command, s.args()),
                timeline: r.as_ref().ok().map(|o| o.timeline.clone()),
            });
            let scenario = format!(
                "app {}, {} workers, {} messages, profile {}",
                s.app,
                s.workers,
                s.messages,
                profile.name()
            );
            let html = verity_tools::report::chaos::page(&scenario, &reports);
            if let Err(e) = verity_tools::report::write(dir, &html) {
                eprintln!("verity-chaos: --report: {e}");
                return ExitCode::from(2);
            }
        }
        match r {
            Ok(o) if o.passed => passed += 1,
            Ok(_) => failed += 1,
            Err(e) => {
                failed += 1;
                if a.json {
                    continue;
                }
                println!(
                    "chaos: seed {seed}: error: {e}\nreproduce: {} {}\ncheck: FAIL app={} error={e:?}",
                    s.command,
                    s.args(),
                    s.app
                );
            }
        }
    }
    if a.json {
        println!(
            "{}",
            verity_tools::json::Obj::new()
                .str("summary", "chaos")
                .str("profile", profile.name())
                .int("seeds", seeds.len())
                .int("passed", passed)
                .int("failed", failed)
                .num("seconds", started.elapsed().as_secs_f64())
                .build()
        );
    } else if seeds.len() > 1 {
        println!(
            "chaos: profile={} seeds={} passed={passed} failed={failed} seconds={:.1}",
            profile.name(),
            seeds.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
