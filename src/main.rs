//! The `verity` engine binary.
//!
//! - `verity worker --config node.toml`: run one node until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use verity::runtime::{install_signal_handlers, NodeToml, Worker};

#[derive(Parser)]
#[command(name = "verity", version, about = "Exactly-once stream processing, proven from outside")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one worker node (see docs/CONFIG.md for the file).
    Worker {
        /// Path of the node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker { config } => {
            let cfg = match NodeToml::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("verity: bad configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            install_signal_handlers();
            let mut worker = match Worker::start(cfg) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("verity: cannot start: {e}");
                    return ExitCode::from(1);
                }
            };
            match worker.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("verity: stopped on error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
