//! verity-sim: the deterministic simulator (`verity sim`; see
//! `verity::cli::sim::SimArgs` for the flags). Runs the production node
//! cores of a cluster under simulated network faults, crashes and restarts,
//! one seed at a time, and checks every run with the independent oracle.

use std::process::ExitCode;

use clap::Parser;
use verity::cli::sim::SimArgs;
use verity::registry::Registry;

#[derive(Parser)]
#[command(
    name = "verity-sim",
    version = env!("VERITY_VERSION"),
    about = "Deterministic simulation of a Verity cluster under faults"
)]
struct Cli {
    #[command(flatten)]
    args: SimArgs,
}

fn main() -> ExitCode {
    verity::cli::sim::run(&Cli::parse().args, "verity-sim", &Registry::builtin())
}
