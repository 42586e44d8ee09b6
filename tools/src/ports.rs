//! Loopback ports for the processes a tool starts. The OS may hand a port
//! that was just freed out again, so every port given is remembered and
//! never given twice in this process: two workers of one cluster (or two
//! runs of a `--seeds` range) never get the same address. Ports come from
//! below Linux's ephemeral range (32768 and up by default): a port the OS
//! handed to us through `bind(:0)` is one it may also give to the next
//! outgoing connection of any process, between our probe and the worker's
//! `bind` (seen: a receiver's `AddrInUse` in a test).

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// Ports handed out by this process, and where the next probe starts.
static GIVEN: Mutex<(Vec<u16>, u32)> = Mutex::new((Vec::new(), 0));

/// Candidates: [`LOW`, `HIGH`), below the ephemeral ports.
const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

/// Loopback, port 0: a listener bound to it gets a port the OS picks at
/// bind time, with no window in which another socket can take it. For
/// every listener whose address is read back after it is bound (a
/// receiver: `Receiver::addr`); [`free_addr`] is for addresses another
/// process must be told before it binds them.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A free loopback address not given before in this process.
pub fn free_addr() -> Result<SocketAddr, String> {
    free_run(1)
}

/// A free run of `n` consecutive loopback ports (shard `i` of a worker
/// listens on port + `i`), none given before; returns the first.
pub fn free_run(n: u32) -> Result<SocketAddr, String> {
    let mut given = GIVEN
        .lock()
        .map_err(|_| "port registry poisoned".to_string())?;
    if given.1 == 0 {
        // Processes started together (test binaries, tools) start their
        // probes at different places.
        given.1 = std::process::id().wrapping_mul(7919) % (HIGH - LOW);
    }
    let span = HIGH - LOW - n;
    for _ in 0..span {
        let first = LOW + given.1 % span;
        given.1 = given.1.wrapping_add(n);
        let ports: Vec<u16> = (0..n).map(|i| (first + i) as u16).collect();
        let free = ports.iter().all(|p| {
            !given.0.contains(p)
                && TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], *p))).is_ok()
        });
        if free {
            given.0.extend(&ports);
            return Ok(SocketAddr::from(([127, 0, 0, 1], first as u16)));
        }
    }
    Err(format!(
        "no run of {n} free loopback ports in {LOW}..{HIGH}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_never_given_twice() {
        let mut seen = Vec::new();
        for _ in 0..200 {
            let a = free_addr().unwrap();
            assert!(!seen.contains(&a.port()));
            seen.push(a.port());
        }
        let run = free_run(3).unwrap();
        for i in 0..3 {
            assert!(!seen.contains(&(run.port() + i)));
        }
    }
}
