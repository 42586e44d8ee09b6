//! Loopback ports for the processes a tool starts. The OS may hand a port
//! that was just freed out again, so every port given is remembered and
//! never given twice in this process: two workers of one cluster (or two
//! runs of a `--seeds` range) never get the same address.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free loopback address not given before in this process.
pub fn free_addr() -> Result<SocketAddr, String> {
    free_run(1)
}

/// A free run of `n` consecutive loopback ports (shard `i` of a worker
/// listens on port + `i`), none given before; returns the first.
pub fn free_run(n: u32) -> Result<SocketAddr, String> {
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let a = l.local_addr().map_err(|e| format!("no free port: {e}"))?;
        if a.port() as u32 + n > 65_000 {
            continue;
        }
        let ports: Vec<u16> = (0..n as u16).map(|i| a.port() + i).collect();
        let mut given = GIVEN
            .lock()
            .map_err(|_| "port registry poisoned".to_string())?;
        let free = ports.iter().enumerate().all(|(i, p)| {
            !given.contains(p) && (i == 0 || TcpListener::bind(SocketAddr::new(a.ip(), *p)).is_ok())
        });
        if free {
            given.extend(ports);
            return Ok(a);
        }
    }
    Err(format!("no run of {n} free ports"))
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
