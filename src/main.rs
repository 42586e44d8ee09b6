//! The `verity` engine binary.

fn main() {
    eprintln!(
        "verity {}: the engine is not built yet; see README.md for what works today",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
