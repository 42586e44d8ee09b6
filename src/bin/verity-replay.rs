//! verity-replay: re-runs a node's snapshot + journal offline through this
//! build's core and app, and checks every regenerated output frame against
//! the node's outbound logs, bit for bit (DESIGN §8). The same as
//! `verity replay`; see `verity::replay::ReplayArgs` for the flags.
//!
//! Exit 0: identical; 1: a difference (the first one is printed) or a
//! damaged log; 2: bad arguments, configuration or files.

use std::process::ExitCode;

use clap::Parser;
use verity::registry::Registry;
use verity::replay::ReplayArgs;

#[derive(Parser)]
#[command(
    name = "verity-replay",
    version = env!("VERITY_VERSION"),
    about = "Replay a node's snapshot and journal offline and compare its outputs bit for bit"
)]
struct Cli {
    #[command(flatten)]
    args: ReplayArgs,
}

fn main() -> ExitCode {
    let apps = Registry::builtin();
    ExitCode::from(verity::replay::main_with(
        &Cli::parse().args,
        "verity-replay",
        &apps,
    ))
}
