//! `verity-check --app APP --input FILE [--input FILE] --received FILE`
//!
//! Exit 0: PASS. Exit 1: FAIL (some record lost, duplicated, reordered, wrong
//! or unexpected). Exit 2: usage error or unreadable/malformed file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use verity_tools::check::{check, App, CheckError};

/// Checks a received file against what the app must output for the inputs.
#[derive(Parser, Debug)]
#[command(name = "verity-check", version)]
struct Args {
    /// doubler | word-count | sequence-window | market-spread
    #[arg(long)]
    app: App,
    /// Input file(s) as sent (market-spread: NBBO file, then orders file).
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// The file written by verity-recv.
    #[arg(long)]
    received: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match check(args.app, &args.inputs, &args.received) {
        Ok(report) => {
            println!("{report}");
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
