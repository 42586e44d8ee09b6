//! `verity-gen`: deterministic input files for the reference apps.
//!
//! - `verity-gen market-spread --seed S (--messages N | --orders N --nbbo M) --out-dir DIR [--reference-data D]`
//! - `verity-gen u64 --count N --out FILE`
//! - `verity-gen text --seed S --lines N --out FILE [--reference-data D]`
//! - `verity-gen tls --out-dir DIR --ip 127.0.0.1 [--ip ...] [--names w1,w2,sink]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use verity_tools::gen::{self, GenConfig, TextConfig};

#[derive(Parser, Debug)]
#[command(
    name = "verity-gen",
    version = env!("VERITY_VERSION"),
    about = "Deterministic input files for Verity's apps",
    after_help = "Exit status: 0 files written; 2 usage error or a file it cannot write."
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// DIR/nbbo.msg (initial NBBOs + random-walk updates) and DIR/orders.msg, fixish.
    MarketSpread {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Total messages over both files, split about half and half
        /// (the NBBO file always holds the initial NBBOs).
        #[arg(long, conflicts_with_all = ["orders", "nbbo"])]
        messages: Option<u64>,
        /// Orders to write.
        #[arg(long)]
        orders: Option<u64>,
        /// NBBO updates to write after the initial NBBOs.
        #[arg(long)]
        nbbo: Option<u64>,
        #[arg(long)]
        out_dir: PathBuf,
        /// The reference data (symbols, texts; default: $VERITY_DATA_DIR,
        /// else tools/data in the repo). Not a node's data directory
        /// (`verity replay --data-dir`): hence its own name.
        #[arg(long = "reference-data", alias = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// The u64 file 1..=N (8-byte big-endian each).
    U64 {
        #[arg(long)]
        count: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Lines drawn from the word-count reference texts.
    Text {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        lines: u64,
        #[arg(long)]
        out: PathBuf,
        /// The reference data (symbols, texts; default: $VERITY_DATA_DIR,
        /// else tools/data in the repo). Not a node's data directory
        /// (`verity replay --data-dir`): hence its own name.
        #[arg(long = "reference-data", alias = "data-dir", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// A CA (DIR/ca.pem, DIR/ca.key) and, per name, DIR/NAME.pem and
    /// DIR/NAME.key signed by it, with the --ip addresses as IP SANs, for
    /// server and client use; keys mode 600. For [tls] and the tools'
    /// --tls-* flags (a real deployment would use its own CA).
    Tls {
        #[arg(long)]
        out_dir: PathBuf,
        /// An address peers dial the certificate's holder at (repeatable).
        #[arg(long = "ip", required = true)]
        ips: Vec<std::net::IpAddr>,
        /// Certificates to issue, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "node,sink,client")]
        names: Vec<String>,
        /// Validity in years, from 1 January of this year.
        #[arg(long, default_value_t = 5)]
        years: u32,
    },
}

/// Messages generated when neither --messages nor --orders/--nbbo is given.
const DEFAULT_MESSAGES: u64 = 10_000;

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Cmd::Tls {
            out_dir,
            ips,
            names,
            years,
        } => {
            return match verity_tools::tls::generate(&out_dir, &ips, &names, years) {
                Ok(g) => {
                    println!("{g}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("verity-gen: error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::MarketSpread {
            seed,
            messages,
            orders,
            nbbo,
            out_dir,
            data_dir,
        } => {
            let dir = gen::data_dir(data_dir.as_deref());
            let cfg = match (messages, orders, nbbo) {
                (Some(n), _, _) => GenConfig::from_messages(seed, n, dir),
                (None, None, None) => GenConfig::from_messages(seed, DEFAULT_MESSAGES, dir),
                (None, o, m) => {
                    let half = GenConfig::from_messages(seed, DEFAULT_MESSAGES, dir);
                    GenConfig {
                        orders: o.unwrap_or(half.orders),
                        nbbo_updates: m.unwrap_or(half.nbbo_updates),
                        ..half
                    }
                }
            };
            gen::market_spread(&cfg, &out_dir)
        }
        Cmd::U64 { count, out } => gen::u64_counters(count, &out),
        Cmd::Text {
            seed,
            lines,
            out,
            data_dir,
        } => gen::text(
            &TextConfig {
                seed,
                lines,
                data_dir: gen::data_dir(data_dir.as_deref()),
            },
            &out,
        ),
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("verity-gen: error: {e}");
            ExitCode::from(2)
        }
    }
}
