//! verity-trace: the path of one message through a cluster, from the logs
//! the nodes already keep (`verity trace`; see `verity::cli::trace` for the
//! flags and exit codes).

use std::process::ExitCode;

use clap::Parser;
use verity::cli::trace::TraceArgs;
use verity::registry::Registry;

#[derive(Parser)]
#[command(
    name = "verity-trace",
    version = env!("VERITY_VERSION"),
    about = "The path of a message through a Verity cluster, from its logs"
)]
struct Cli {
    #[command(flatten)]
    args: TraceArgs,
}

fn main() -> ExitCode {
    verity::cli::trace::run(&Cli::parse().args, "verity-trace", &Registry::builtin())
}
