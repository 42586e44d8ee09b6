//! The command line of `verity-sink-postgres` (and of `verity sink-postgres`,
//! the engine binary's copy, so a harness with only the engine binary can
//! run the sink as a process of its own and `kill -9` it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use super::server::LocalServer;
use super::{Mappings, Sink, SinkConfig, WriteMode};
use crate::recv::cli::signals;

/// Put a Verity node's outputs into PostgreSQL, exactly once.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "verity-sink-postgres",
    version = env!("VERITY_VERSION"),
    after_help = "\
Exit status: 0 after --expect, --idle-secs, SIGTERM or SIGINT (run), or when done \
(export, bench, server after SIGTERM); 1 on a database error that ends the \
command (export, bench); 2 on bad arguments, a bad config file, or a \
listener it cannot bind. The config file: docs/CONFIG.md, \
\"verity-sink-postgres\"."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Accept nodes and write their outputs into the database. While the
    /// database is down it retries with backoff and ACKs nothing.
    Run(RunArgs),
    /// Write the table, in (channel, seq) order, as a received file
    /// (tools/FORMATS.md) that verity-check reads.
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Rows per second into the database, COPY against INSERT, for
    /// market-spread decisions through the sink's own batch path (scratch
    /// tables verity_bench_copy and verity_bench_insert, dropped after).
    Bench {
        #[arg(long)]
        config: PathBuf,
        /// Rows per round and mode.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rows per transaction (the sink's batch_rows).
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// Rounds; the modes alternate within each.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Run a private PostgreSQL server (Debian's binaries) in DIR on a
    /// loopback address until SIGTERM or SIGINT: role `verity`, trust
    /// authentication, database `postgres`. For trying the sink by hand.
    Server {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The sink's TOML file.
    #[arg(long)]
    pub config: PathBuf,
    /// Start over: empty the output table and the watermarks.
    #[arg(long)]
    pub fresh: bool,
    /// Exit once the table holds this many rows.
    #[arg(long)]
    pub expect: Option<u64>,
    /// Exit after this many seconds without a new row (0: never).
    #[arg(long, default_value_t = 0)]
    pub idle_secs: u64,
}

/// Runs `args`; `name` prefixes messages; `mappings` holds the row mapping
/// of each app (a user binary adds its own).
pub fn run(args: &Args, name: &str, mappings: &Mappings) -> ExitCode {
    match &args.command {
        Command::Run(a) => run_sink(a, name, mappings),
        Command::Export { config, out } => {
            let r = SinkConfig::load(config).and_then(|cfg| {
                let table = super::table_of(&cfg, mappings)?;
                let mut db = super::connect(&cfg)?;
                super::export(&mut db, &table.name, out).map(|n| (n, table.name))
            });
            match r {
                Ok((n, table)) => {
                    eprintln!("{name}: {n} rows of {table} written to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{name}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Bench {
            config,
            rows,
            batch,
            rounds,
        } => match SinkConfig::load(config).and_then(|cfg| bench(&cfg, *rows, *batch, *rounds)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::from(1)
            }
        },
        Command::Server { dir, listen } => {
            signals::install();
            let mut s = match LocalServer::start(dir, *listen) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    return ExitCode::from(2);
                }
            };
            eprintln!(
                "{name}: PostgreSQL in {} is ready: {}",
                s.dir().display(),
                s.url()
            );
            while !signals::stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
            match s.stop("fast") {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn run_sink(a: &RunArgs, name: &str, mappings: &Mappings) -> ExitCode {
    let cfg = match SinkConfig::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    signals::install();
    let sink = match Sink::start_retrying(&cfg, mappings, a.fresh, name, &signals::stopped) {
        Ok(s) => s,
        Err(e @ super::SinkError::Db(_)) => {
            // Only a stop signal ends the retries.
            eprintln!("{name}: stopped before the database answered: {e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let s = sink.stats();
    eprintln!(
        "{name}: listening on {}, writing {} ({}; {} rows found, channels {:?})",
        sink.addr(),
        sink.table(),
        cfg.write,
        s.recovered,
        s.delivered
    );
    let mut last = (sink.rows(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let n = sink.rows();
        if signals::stopped() || a.expect.is_some_and(|x| n >= x) {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if a.idle_secs > 0 && last.1.elapsed() > Duration::from_secs(a.idle_secs) {
            break;
        }
    }
    let s = sink.stop();
    println!(
        "{name}: records={} recovered={} duplicates={} gaps={} nacks={} connections={} bad_frames={} conflicts={} commits={} db_errors={}",
        s.records, s.recovered, s.duplicates, s.gaps, s.nacks, s.connections, s.bad_frames, s.conflicts, s.commits, s.db_errors
    );
    ExitCode::SUCCESS
}

/// Market-spread decisions through [`super::Batch`], `batch` rows per
/// transaction, into a scratch table per mode; prints rows/s per round and
/// the median ratio.
fn bench(cfg: &SinkConfig, rows: u64, batch: usize, rounds: u32) -> Result<(), String> {
    use super::rows::{MarketSpread, DECISION_LEN};
    use super::{Batch, Table, TableName};
    use std::sync::Arc;
    let mut db = super::connect(cfg)?;
    let err = |e: postgres::Error| super::db_text(&e);
    let tables = [WriteMode::Copy, WriteMode::Insert].map(|m| {
        (
            m,
            Table {
                name: TableName::parse(&format!("verity_bench_{m}")).expect("valid"),
                mapping: Arc::new(MarketSpread),
            },
        )
    });
    let mut payload = [0u8; DECISION_LEN];
    payload[32..38].copy_from_slice(b"ORD000");
    payload[38..42].copy_from_slice(b"AAPL");
    payload[16..24].copy_from_slice(&100.25f64.to_bits().to_le_bytes());
    payload[24..32].copy_from_slice(&100.5f64.to_bits().to_le_bytes());
    let mut rates: Vec<(f64, f64)> = Vec::new();
    println!("bench: {rows} market-spread decisions per round and mode, {batch} per transaction (the sink's batch path: one transaction per batch with its watermark update)");
    for round in 1..=rounds {
        let mut r = [0f64; 2];
        for (i, (mode, table)) in tables.iter().enumerate() {
            db.batch_execute(&format!(
                "DROP TABLE IF EXISTS {t}; {c}; DROP TABLE IF EXISTS verity_bench_wm; CREATE TABLE verity_bench_wm (channel integer PRIMARY KEY, delivered bigint NOT NULL); INSERT INTO verity_bench_wm VALUES (1001, 0)",
                t = table.name.sql(),
                c = table.create_sql()
            ))
            .map_err(err)?;
            let started = Instant::now();
            let mut b = Batch::default();
            let mut seq = 0u64;
            while seq < rows {
                b.clear();
                let from = seq;
                while b.rows() < batch && seq < rows {
                    seq += 1;
                    payload[0..8].copy_from_slice(&seq.to_le_bytes());
                    b.push(table, 1001, seq, seq, &payload)?;
                }
                let mut tx = db.transaction().map_err(err)?;
                tx.execute(
                    "UPDATE verity_bench_wm SET delivered = $1 WHERE channel = 1001 AND delivered = $2",
                    &[&(seq as i64), &(from as i64)],
                )
                .map_err(err)?;
                b.write(&mut tx, table, *mode).map_err(err)?;
                tx.commit().map_err(err)?;
            }
            r[i] = rows as f64 / started.elapsed().as_secs_f64();
            println!("bench: round {round} {mode}: {:.0} rows/s", r[i]);
        }
        rates.push((r[0], r[1]));
    }
    db.batch_execute(
        "DROP TABLE IF EXISTS verity_bench_copy; DROP TABLE IF EXISTS verity_bench_insert; DROP TABLE IF EXISTS verity_bench_wm",
    )
    .map_err(err)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let copy = median(rates.iter().map(|r| r.0).collect());
    let insert = median(rates.iter().map(|r| r.1).collect());
    let ratio = median(rates.iter().map(|r| r.0 / r.1).collect());
    println!("bench: median copy={copy:.0} rows/s insert={insert:.0} rows/s copy/insert={ratio:.2} (per-round ratio, median of {rounds})");
    Ok(())
}
