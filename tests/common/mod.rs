//! Helpers shared by the real-process test binaries.
#![allow(dead_code)]

pub mod cluster;
pub mod node;
pub mod peer;

use std::net::SocketAddr;

/// A free loopback port no other test of this binary was given (tests run
/// in parallel; a port one test freed must not go to another, or its
/// processes would dial the other test's node or cluster).
/// Loopback, port 0 (see `verity_tools::ports::any_port`).
pub fn any_port() -> SocketAddr {
    verity_tools::ports::any_port()
}

pub fn free_addr() -> SocketAddr {
    verity_tools::ports::free_addr().unwrap()
}

/// A free run of `n` consecutive ports (shard `i` listens on port + `i`).
pub fn free_run(n: u32) -> SocketAddr {
    verity_tools::ports::free_run(n).unwrap()
}
