//! Configuration, parsed and checked in one place: `node.toml` of a
//! single-node worker ([`node`]), `cluster.toml` of every worker of a
//! cluster ([`cluster`], which builds each node's [`NodeToml`]), and the
//! fault-injection settings ([`faults`]). Every key is documented in
//! `docs/CONFIG.md`. Configuration depends on the core (it builds the
//! core's `NodeConfig`) and on routing; nothing here depends on the
//! runtime, which reads what this module produces.

pub mod cluster;
pub mod faults;
pub mod limits;
pub mod node;
pub mod parse;

pub use cluster::{ClusterToml, NodeRef, WorkerSpec};
pub use faults::{Faults, Partition};
pub use limits::{Limits, TlsFiles};
pub use node::{ClusterNode, NodeToml, PeerAt, SourceHome};
pub use parse::{ConfigError, Secret};
