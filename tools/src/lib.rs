//! Logic of the `verity-*` tools, kept in a library so the engine's demo can reuse it.
//!
//! - [`formats`]: input record files (fixish, lines, u64), the received file,
//!   market-spread record layouts. Byte tables in `tools/FORMATS.md`.
//! - [`gen`]: deterministic input generators (`verity-gen`).
//! - [`check`]: the independent oracle (`verity-check`); it does not use the
//!   engine's code.

pub mod check;
pub mod formats;
pub mod gen;
