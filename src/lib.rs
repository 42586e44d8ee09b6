//! # verity
//!
//! The Verity engine: deterministic core, apps, logs, storage formats,
//! rings, event loop.
//! Frames are defined by [`verity_wire`], re-exported here as [`wire`].

pub use verity_wire as wire;

// The defect-* features build deliberate defects for the tests that must
// catch them (tests/chaos.rs, tests/sim_defects.rs), which also pass
// `--cfg verity_defect`; without it they refuse to build, so that
// `cargo build --all-features` cannot ship one.
#[cfg(all(
    any(
        feature = "defect-skip-dedup",
        feature = "defect-no-resend-on-resume",
        feature = "defect-accept-stale-epoch"
    ),
    not(verity_defect)
))]
compile_error!(
    "a defect-* feature builds a deliberate defect, for the tests that must catch it; build it with RUSTFLAGS=\"--cfg verity_defect\" as well (never ship it)"
);

pub mod app;
pub mod apps;
#[cfg(feature = "cli")]
pub mod cli;
pub mod codec;
pub mod config;
pub mod core;
#[cfg(feature = "cli")]
pub mod harness;
pub mod log;
pub mod logdump;
pub mod registry;
pub mod replay;
pub mod ring;
pub mod routing;
pub mod runtime;
pub mod sim;
pub mod storage;
pub mod sync;
pub mod trace;
