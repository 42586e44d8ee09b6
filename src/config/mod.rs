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
pub use node::{ClusterNode, Idle, NodeToml, PeerAt, SourceHome};
pub use parse::{ConfigError, Secret};

/// Whether `path` is a cluster.toml (it has a `[cluster]` table); anything
/// else is read as a node.toml, whose errors then name that file's keys.
pub fn is_cluster_file(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("cluster"))
}

/// For a command that runs one node: `path` is a cluster.toml and no
/// `--name` was given. The error says so and lists the workers (or is the
/// file's own error); `None` when `path` is not a cluster.toml.
pub fn cluster_without_name(
    path: &std::path::Path,
    apps: &crate::registry::Registry,
) -> Option<ConfigError> {
    if !is_cluster_file(path) {
        return None;
    }
    Some(match ClusterToml::load(path, apps) {
        Err(e) => e,
        Ok(c) => ConfigError {
            file: path.to_owned(),
            key: "--name".into(),
            message: format!(
                "this is a cluster.toml: name the worker with --name (workers: {})",
                c.workers
                    .iter()
                    .map(|w| w.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    })
}
