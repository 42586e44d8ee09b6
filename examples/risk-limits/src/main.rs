//! The engine's whole command line, with the risk-limits app registered
//! beside the reference apps: `cargo run --release -p verity-risk-limits -- worker
//! --config node.toml` runs a node of it, `-- replay` replays its journal
//! through this code, `-- sim`, `-- trace`, `-- logdump` as for `verity`.

use std::process::ExitCode;

use verity::registry::Registry;

fn main() -> ExitCode {
    verity::cli::main(Registry::builtin().with(verity_risk_limits::NAME, verity_risk_limits::app))
}
