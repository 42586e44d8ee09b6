//! Logic of the `verity-*` tools, kept in a library so the engine's demo can reuse it.
//!
//! - [`formats`]: input record files (fixish, lines, u64), the received file,
//!   market-spread record layouts. Byte tables in `tools/FORMATS.md`.
//! - [`gen`]: deterministic input generators (`verity-gen`).
//! - [`check`]: the independent oracle (`verity-check`); it does not use the
//!   engine's code.
//! - [`send`] and [`recv`]: the source and sink clients (`verity-send`,
//!   `verity-recv`), at-least-once senders and deduplicating receivers.
//!
//! This crate depends on `verity-wire` only, never on the engine: the engine's
//! `demo` uses it, and the checker stays independent of what it checks.

pub mod bench;
pub mod chaos;
pub mod check;
pub mod client_auth;
pub mod formats;
pub mod gen;
pub mod recv;
pub mod send;
