//! Helpers shared by the real-process test binaries.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// Ports handed to tests of this binary. Tests run in parallel, and a port
/// one test got (and freed) must not go to another: its processes would
/// dial the other test's node or cluster.
pub static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free loopback port no other test of this binary was given.
pub fn free_addr() -> SocketAddr {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&a.port()) {
            given.push(a.port());
            return a;
        }
    }
}
