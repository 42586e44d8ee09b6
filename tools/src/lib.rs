//! Logic of the `verity-*` tools, kept in a library so the engine's demo can reuse it.
//!
//! - [`formats`]: input record files (fixish, lines, u64), the received file,
//!   market-spread record layouts. Byte tables in `tools/FORMATS.md`.
//! - [`gen`]: deterministic input generators (`verity-gen`).
//! - [`check`]: the independent oracle (`verity-check`); it does not use the
//!   engine's code.
//! - [`send`] and [`recv`]: the source and sink clients (`verity-send`,
//!   `verity-recv`), at-least-once senders and deduplicating receivers.
//! - [`pg`]: `verity-sink-postgres`, the sink that writes outputs into
//!   PostgreSQL exactly once, and a private server for tests and the demo.
//! - [`tls`]: their TLS transport, and the certificates of `verity-gen tls`.
//!
//! This crate depends on `verity-wire` only, never on the engine: the engine's
//! `demo` uses it, and the checker stays independent of what it checks.

pub mod bench;
pub mod chaos;
pub mod check;
pub mod client_auth;
pub mod formats;
pub mod gen;
pub mod net;
pub mod pg;
pub mod ports;
pub mod recv;
pub mod send;
pub mod tls;

/// A range of seeds as the tools' `--seeds` flag spells it: `A..B` (B
/// excluded) or `A..=B`, as `(first, end)` with `end` excluded.
pub fn parse_seed_range(s: &str) -> Option<(u64, u64)> {
    if let Some((a, b)) = s.split_once("..=") {
        return Some((
            a.trim().parse().ok()?,
            b.trim().parse::<u64>().ok()?.checked_add(1)?,
        ));
    }
    let (a, b) = s.split_once("..")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}
