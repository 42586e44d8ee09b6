//! verity-bench: one node's end-to-end throughput and latency against a raw
//! pipe (the same sender and receiver wired directly) in the same run.
//! Build the engine first: `cargo build --release` (it looks for `verity`
//! beside itself, or takes `--engine`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use verity_tools::bench::{self, BenchConfig};

#[derive(Parser)]
#[command(
    name = "verity-bench",
    version = env!("VERITY_VERSION"),
    about = "End-to-end benchmark: engine vs raw pipe",
    after_help = "Exit status: 0 measured; 1 a run failed (the engine did not start, outputs missing); 2 usage error, no engine binary, or the --report page could not be written."
)]
struct Args {
    /// doubler, sequence-window or market-spread; repeat for several.
    #[arg(long = "app", default_values_t = ["doubler".to_string(), "market-spread".to_string()])]
    apps: Vec<String>,
    /// Input records per app.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The verity engine binary (default: beside this one).
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Longest latency run, seconds.
    #[arg(long, default_value_t = 5.0)]
    latency_seconds: f64,
    /// Throughput rounds (raw pipe then engine, alternately); medians reported.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Also run the engine as a cluster of this many worker processes (≥ 2)
    /// in every round, and report it against the single node.
    #[arg(long, default_value_t = 0)]
    workers: u32,
    /// Another engine build (e.g. `cargo build --release --no-default-features
    /// --target-dir target/noshim`) run in every round too: engine ÷ baseline,
    /// from runs of their own in ABBA order (engine, baseline, baseline,
    /// engine), so that what ran just before a run favours neither.
    #[arg(long)]
    baseline_engine: Option<PathBuf>,
    /// Run the latency measurement at this many msgs/s (default: half the
    /// engine's measured maximum).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Also run every round with TLS on every link (sources, sink, and
    /// mutual TLS between workers with --workers), reported as TLS ÷ plain.
    #[arg(long)]
    tls: bool,
    /// The engine (not the baseline) serves its metrics (`metrics_listen`)
    /// and is scraped every second: with `--baseline-engine` set to the same
    /// binary, engine ÷ baseline is the metrics' cost.
    #[arg(long)]
    metrics: bool,
    /// The engine's (not the baseline's) idle strategy (`idle` in its
    /// [node]): sleep, yield or spin [default: the engine's own, sleep]
    #[arg(long, value_parser = ["sleep", "yield", "spin"])]
    idle: Option<String>,
    /// The engine's (not the baseline's) `durability`: process or fsync
    /// [default: the engine's own, process]. `--baseline-engine` set to the
    /// same binary gives fsync ÷ process in the same run.
    #[arg(long, value_parser = ["process", "fsync"])]
    durability: Option<String>,
    /// The engine (not the baseline) keeps its audit hash chain (`audit =
    /// true`): `--baseline-engine` set to the same binary gives audit on ÷
    /// audit off in the same run.
    #[arg(long)]
    audit: bool,
    /// Print each app's result as one JSON object (tools/FORMATS.md); the
    /// per-round lines stay on stderr.
    #[arg(long)]
    json: bool,
    /// Also write DIR/index.html: a self-contained page with SVG plots
    /// (msgs/s per round of every kind of run, latency percentile curves)
    /// and a table of the figures (tools/FORMATS.md), rewritten after each
    /// app. An error writing it exits 2.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Measure start-up only: N starts of a worker (the first --app) on an
    /// empty data directory, exec until it accepts a connection, against N
    /// execs of `verity --version` in the same run; medians reported.
    #[arg(long, value_name = "N")]
    starts: Option<u32>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let engine = a.engine.unwrap_or_else(bench::default_engine);
    if !engine.exists() {
        eprintln!(
            "verity-bench: engine binary {} not found; run `cargo build --release` first or pass --engine",
            engine.display()
        );
        return ExitCode::from(2);
    }
    if let Some(r) = a.latency_rate {
        if !(r.is_finite() && r >= 1.0) {
            eprintln!("verity-bench: --latency-rate {r} is not a rate of at least 1 msg/s");
            return ExitCode::from(2);
        }
    }
    if let Some(n) = a.starts {
        let app = a.apps.first().map_or("market-spread", String::as_str);
        let work_dir = bench::default_work_dir(app);
        let r = verity_tools::startup::measure(&engine, app, &work_dir, n);
        bench::remove_work_dir(&work_dir);
        return match r {
            Ok(s) if a.json => {
                println!("{}", s.to_json());
                ExitCode::SUCCESS
            }
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("verity-bench: --starts: {e}");
                ExitCode::from(1)
            }
        };
    }
    let mut results = Vec::new();
    for app in &a.apps {
        let work_dir = bench::default_work_dir(app);
        let cfg = BenchConfig {
            app: app.clone(),
            messages: a.messages,
            seed: a.seed,
            engine: engine.clone(),
            work_dir: work_dir.clone(),
            latency_seconds: a.latency_seconds,
            rounds: a.rounds,
            workers: a.workers,
            baseline: a.baseline_engine.clone(),
            latency_rate: a.latency_rate,
            tls: a.tls,
            metrics: a.metrics,
            idle: a.idle.clone(),
            durability: a.durability.clone(),
            audit: a.audit,
        };
        let r = bench::run(&cfg);
        bench::remove_work_dir(&work_dir);
        match r {
            Ok(r) => {
                match a.json {
                    true => println!("{}", r.to_json()),
                    false => println!("{r}"),
                }
                results.push(r);
                if let Some(dir) = &a.report {
                    let html = verity_tools::report::bench::page(&results);
                    if let Err(e) = verity_tools::report::write(dir, &html) {
                        eprintln!("verity-bench: --report: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            Err(e) => {
                eprintln!("verity-bench: {app}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(dir) = &a.report {
        eprintln!(
            "verity-bench: report in {}",
            dir.join("index.html").display()
        );
    }
    ExitCode::SUCCESS
}
