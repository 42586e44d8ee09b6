//! The real runtime: the mio event loop that drives a
//! [`crate::core::NodeCore`] with sockets, mmap logs and the wall clock.
//! It owns file descriptors and clocks, moves bytes and carries out the
//! core's effects; what to do with them is the core's decision. What it
//! writes to disk (record kinds, outbound logs, audit chain, data
//! directory) is defined in [`crate::storage`].
//!
//! The files, by the state each owns. Each part owns its state and takes
//! the others it needs as arguments; none of them names the [`Worker`],
//! which owns them all and composes them (`tests/layers.rs` checks that no
//! file here imports one that imports it back):
//!
//! | file | owns |
//! |---|---|
//! | `worker.rs` | the [`Worker`]: start, the event loop (poll timeout, event dispatch, one iteration), the timers, the faults applied to connections, snapshots and the clean stop |
//! | `node.rs` | the `Node` every part shares: the core and its effects, the config, encoder and epoch, counters, the rate-limited log |
//! | `inbound.rs` | `Inbound`: the listeners and inbound connections; accepting (per-address cap, handshake pool), their HELLO exchange, admitting nodes and sources as the core decides, refusing and closing, the frame timeout |
//! | `ingest.rs` | reading `Inbound`'s connections: decoding frames in place, handing DATA to the core, journaling it, durability and the ACKs and NACKs it releases |
//! | `outbound.rs` | `Outbound`: the outbound paths' connections; dialing, the consumer's HELLO/RESUME/ACK/NACK, losing a connection, writing what the core hands out |
//! | `outpath.rs` | one outbound path: its log, the frames kept in memory, backoff; which channel path `k` carries |
//! | `recovery.rs` | the `Store`: the data directory, journal and dead-letter log; opening and recovery (snapshot restore, journal replay), logging outputs and dead letters, durability, snapshots, the audit chain |
//! | `auditor.rs` | the audit chain's hashing on a thread of its own: the loop copies each journaled run to it |
//! | `logging.rs` | the log: `tracing` events as text or JSON Lines, each line tagged with its thread's node, worker, shard and epoch |
//! | `metrics.rs` | live metrics: the `Meter` a loop keeps, the `Hub` of its published samples, the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`) |
//! | `metrics_sample.rs` | what a node publishes for the metrics (`Sample`, `Histogram`) |
//! | `metrics_text.rs` | the Prometheus text format of the samples (`render`) |
//! | `faults.rs` | `FaultState`: the shim a connection gets, partitions, the fault log |
//! | `shim.rs` | the fault shim itself (`[faults]`) |
//! | `conn.rs` | one connection: its stream (socket, TLS, in-process link), handshake state, read and write buffers, owed ACKs; the event loop's tokens |
//! | `shards.rs` | several nodes in one process: a thread and loop per shard, in-process links |
//! | `link.rs` | the in-process ring link between two shards, and a shard's links to the others |
//! | `tls.rs` | TLS over a socket (`[tls]`) |
//! | `os.rs` | the operating system: stop signal, socket options, random challenges, clocks |
//! | `error.rs` | [`WorkerError`] |

mod auditor;
mod conn;
mod error;
mod faults;
mod inbound;
mod ingest;
pub mod link;
pub mod logging;
pub mod metrics;
mod metrics_sample;
mod metrics_text;
mod node;
mod os;
mod outbound;
mod outpath;
mod recovery;
mod shards;
pub mod shim;
mod snapshotter;
mod stalls;
mod tls;
pub mod worker;

pub use crate::config::{ConfigError, Limits, NodeToml};
pub use error::WorkerError;
pub use link::ShardLinks;
pub use node::WorkerStats;
pub use os::install_signal_handlers;
pub use shards::run_shards;
pub use worker::Worker;
