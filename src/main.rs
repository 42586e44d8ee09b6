//! The `verity` engine binary: the engine's command line
//! ([`verity::cli::main`]) for the four reference apps. A user crate makes
//! its own binary the same way, with its apps registered.

use std::process::ExitCode;

use verity::registry::Registry;

fn main() -> ExitCode {
    verity::cli::main(Registry::builtin())
}
