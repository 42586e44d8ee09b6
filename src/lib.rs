//! # verity
//!
//! The Verity engine: deterministic core, apps, logs, storage formats,
//! rings, event loop.
//! Frames are defined by [`verity_wire`], re-exported here as [`wire`].

pub use verity_wire as wire;

pub mod app;
pub mod apps;
pub mod cli;
pub mod codec;
pub mod config;
pub mod core;
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
