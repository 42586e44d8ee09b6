//! The real runtime: the mio event loop that drives a
//! [`crate::core::NodeCore`] with sockets, mmap logs and the wall clock.
//! It owns file descriptors and clocks, moves bytes and carries out the
//! core's effects; what to do with them is the core's decision. What it
//! writes to disk (record kinds, outbound logs, audit chain, data
//! directory) is defined in [`crate::storage`].
//!
//! The files, by the state each owns:
//!
//! | file | owns |
//! |---|---|
//! | `worker.rs` | the [`Worker`] (its fields), start, and the event loop: poll timeout, event dispatch, one iteration |
//! | `conn.rs` | one connection: its stream (socket, TLS, in-process link), handshake state, read and write buffers, owed ACKs |
//! | `inbound.rs` | accepting inbound connections (per-address cap, handshake pool), their HELLO exchange, admitting nodes and sources, refusing and closing them, timeouts |
//! | `ingest.rs` | reading inbound connections: decoding frames in place, handing DATA to the core, journaling it, ACKs and NACKs |
//! | `outbound.rs` | outbound paths' connections: dialing, the consumer's HELLO/RESUME/ACK/NACK, losing a connection, writing what the core hands out, timers |
//! | `outpath.rs` | one outbound path: its log, the frames kept in memory, backoff; which channel path `k` carries |
//! | `recovery.rs` | the store: opening the data directory and logs, snapshot restore, journal replay, logging outputs and dead letters, durability, snapshots, the audit chain, the clean stop |
//! | `faults.rs` | the fault shim's side of the loop: shims per connection, partitions, the fault log |
//! | `shim.rs` | the fault shim itself (`[faults]`) |
//! | `shards.rs` | several nodes in one process: a thread and loop per shard, in-process links |
//! | `link.rs` | the in-process ring link between two shards, and a shard's links to the others |
//! | `tls.rs` | TLS over a socket (`[tls]`) |
//! | `os.rs` | the operating system: stop signal, socket options, random challenges, clocks |
//! | `error.rs` | [`WorkerError`] |
//! | `config.rs` | `node.toml` / `cluster.toml` and the limits |

mod conn;
mod error;
mod faults;
mod inbound;
mod ingest;
pub mod link;
mod os;
mod outbound;
mod outpath;
mod recovery;
mod shards;
pub mod shim;
mod tls;
pub mod worker;

pub use crate::config::{ConfigError, Limits, NodeToml};
pub use error::WorkerError;
pub use link::ShardLinks;
pub use os::install_signal_handlers;
pub use shards::run_shards;
pub use worker::Worker;
