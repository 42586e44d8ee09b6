//! `verity-sink-postgres`: nodes' outputs into PostgreSQL, exactly once
//! (`verity_tools::pg`).

use std::process::ExitCode;

use clap::Parser;
use verity_tools::pg::{cli, Mappings};

fn main() -> ExitCode {
    cli::run(
        &cli::Args::parse(),
        "verity-sink-postgres",
        &Mappings::builtin(),
    )
}
