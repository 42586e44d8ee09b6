//! `verity-check --app APP --input FILE [--input FILE] --received FILE`
//! `verity-check --app APP --input FILE [--input FILE] --postgres SINK_TOML`
//!
//! Exit 0: PASS. Exit 1: FAIL (some record lost, duplicated, reordered, wrong
//! or unexpected). Exit 2: usage error or unreadable/malformed file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use verity_tools::check::{check, App, CheckError};
use verity_tools::pg;

/// Checks a received file against what the app must output for the inputs.
#[derive(Parser, Debug)]
#[command(
    name = "verity-check",
    version = env!("VERITY_VERSION"),
    after_help = "Exit status: 0 PASS; 1 FAIL (a record lost, duplicated, reordered, wrong or unexpected); 2 usage error or an unreadable or malformed file."
)]
struct Args {
    /// doubler | word-count | sequence-window | market-spread
    #[arg(long)]
    app: App,
    /// Input file(s) as sent (market-spread: NBBO file, then orders file).
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// The file written by verity-recv.
    #[arg(
        long,
        required_unless_present = "postgres",
        conflicts_with = "postgres"
    )]
    received: Option<PathBuf>,
    /// Instead of a received file: the table verity-sink-postgres wrote,
    /// named by its config file (read through the same oracle, in
    /// (channel, seq) order).
    #[arg(long, value_name = "SINK_TOML")]
    postgres: Option<PathBuf>,
    /// Print the verdict as one JSON object (tools/FORMATS.md).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let exported;
    let received = match (&args.received, &args.postgres) {
        (Some(r), _) => r.clone(),
        (None, Some(cfg)) => match pg::export_temp(cfg, &pg::Mappings::builtin()) {
            Ok(e) => {
                exported = e;
                exported.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("verity-check: error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("verity-check: usage: --received FILE or --postgres SINK_TOML");
            return ExitCode::from(2);
        }
    };
    match check(args.app, &args.inputs, &received) {
        Ok(report) => {
            match args.json {
                true => println!("{}", report.to_json()),
                false => println!("{report}"),
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e @ CheckError::Usage(_)) => {
            eprintln!("verity-check: usage: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("verity-check: error: {e}");
            ExitCode::from(2)
        }
    }
}
