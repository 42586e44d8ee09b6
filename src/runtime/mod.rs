//! The real runtime: configuration, data directory, and the mio event loop
//! that drives a [`crate::core::NodeCore`] with sockets, mmap logs and the
//! wall clock.

pub mod audit;
pub mod config;
pub mod datadir;
pub mod link;
mod outpath;
pub mod shim;
mod tls;
pub mod worker;

pub use config::{ConfigError, Limits, NodeToml};
pub use datadir::DataDir;
pub use worker::{install_signal_handlers, run_shards, ShardLinks, Worker, WorkerError};
