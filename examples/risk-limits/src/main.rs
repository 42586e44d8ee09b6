//! The engine's whole command line, with the risk-limits app registered
//! beside the reference apps: `cargo run --release -p verity-risk-limits -- worker
//! --config node.toml` runs a node of it, `-- replay` replays its journal
//! through this code, `-- sim`, `-- trace`, `-- logdump` as for `verity`,
//! and `-- demo` runs it on a cluster of real processes under faults, judged
//! by the generic oracle and its own.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Registry::builtin().with(NAME, app).with_inputs(NAME, inputs).with_oracle(NAME, judge),
    // and its decisions as typed rows in `sink-postgres`.
    verity::cli::main_with_rows(verity_risk_limits::registry(), verity_risk_limits::rows())
}
