//! verity-recv: accepts sink connections from nodes, drops duplicates by seq,
//! ACKs, and writes the received records to a file, reopened on restart (see
//! `verity_tools::recv::cli`; `verity recv` runs the same command line).

use std::process::ExitCode;

use clap::Parser;
use verity_tools::recv::cli::{self, Args};

fn main() -> ExitCode {
    cli::run(&Args::parse(), "verity-recv")
}
