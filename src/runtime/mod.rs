//! The real runtime: configuration and the mio event loop that drives a
//! [`crate::core::NodeCore`] with sockets, mmap logs and the wall clock.
//! What it writes to disk (record kinds, outbound logs, audit chain, data
//! directory) is defined in [`crate::storage`].

pub mod link;
mod outpath;
pub mod shim;
mod tls;
pub mod worker;

/// The old path of `crate::config::node` (until the runtime split lands).
pub(crate) use crate::config::node as config;
pub use crate::config::{ConfigError, Limits, NodeToml};
pub use worker::{install_signal_handlers, run_shards, ShardLinks, Worker, WorkerError};
