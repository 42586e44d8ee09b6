//! The cluster: one `cluster.toml` for every worker, and the routing of keys
//! to partitions to nodes. (Node-to-node channels, authentication and the
//! multi-node runtime build on these.)

pub mod config;
pub mod routing;

pub use config::{ClusterNode, ClusterToml, NodeRef, PeerAt, Secret, SourceHome, WorkerSpec};
pub use routing::{fnv1a64, Routing, RoutingError};
