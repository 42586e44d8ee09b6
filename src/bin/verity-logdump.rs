//! verity-logdump: what a node's logs hold, read in place without locking
//! or changing them (`verity logdump`; see `verity::cli::logdump` for the
//! flags and exit codes).

use std::process::ExitCode;

use clap::Parser;
use verity::cli::logdump::LogdumpArgs;

#[derive(Parser)]
#[command(
    name = "verity-logdump",
    version = env!("VERITY_VERSION"),
    about = "Print what a Verity node's logs hold (read only)"
)]
struct Cli {
    #[command(flatten)]
    args: LogdumpArgs,
}

fn main() -> ExitCode {
    verity::cli::logdump::run(&Cli::parse().args, "verity-logdump")
}
