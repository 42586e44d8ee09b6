//! What the worker asks of the operating system besides sockets and files:
//! the stop flag set by SIGTERM/SIGINT, socket options, random challenges
//! and wall-clock readings.

use std::io;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;

/// Set by SIGTERM/SIGINT (or by a shard that stopped on an error): every
/// event loop of the process finishes its batch and stops.
fn stop_flag() -> &'static Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(Arc::default)
}

/// Installs SIGTERM/SIGINT handlers that ask the loop to stop gracefully.
pub fn install_signal_handlers() {
    // signal-hook's handler only stores to the flag (async-signal-safe).
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, Arc::clone(stop_flag()));
    }
}

/// Whether the worker was asked to stop.
pub(super) fn stop_requested() -> bool {
    stop_flag().load(Ordering::SeqCst)
}

/// Asks every event loop of the process to stop.
pub(super) fn request_stop() {
    stop_flag().store(true, Ordering::SeqCst);
}

/// Socket buffers of 4 MiB each way: a peer that is descheduled for a
/// moment (three busy processes on two cores) does not stall the pipeline.
///
/// And a dead peer is noticed: a peer whose host died or was cut off
/// sends no FIN, so without these its connection would stay open for
/// good, and a source's channel with it (a second producer gets
/// `CHANNEL_BUSY` while the first holds it). An idle connection is probed
/// after [`KEEPALIVE_IDLE_S`] s, every [`KEEPALIVE_INTERVAL_S`] s, and
/// dropped after [`KEEPALIVE_PROBES`] unanswered probes; one with bytes
/// unacknowledged for [`USER_TIMEOUT_MS`] is dropped too.
pub(super) fn tune_socket(stream: &TcpStream, buffer_bytes: usize) {
    // Best effort: a failure leaves the kernel's defaults.
    let s = socket2::SockRef::from(stream);
    let _ = s.set_recv_buffer_size(buffer_bytes);
    let _ = s.set_send_buffer_size(buffer_bytes);
    // What the kernel granted, said once per process (Linux reports twice
    // what it keeps for data, and caps it at net.core.rmem_max/wmem_max).
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let (r, w) = (
            s.recv_buffer_size().unwrap_or(0),
            s.send_buffer_size().unwrap_or(0),
        );
        let short = if r < buffer_bytes || w < buffer_bytes {
            " (less than asked: raise net.core.rmem_max and net.core.wmem_max; docs/OPERATIONS.md)"
        } else {
            ""
        };
        tracing::info!(
            event = "socket_buffers",
            asked = buffer_bytes,
            granted_receive = r,
            granted_send = w,
            "socket buffers: asked {buffer_bytes} bytes each way (limits.socket_buffer_bytes), the kernel granted receive {r}, send {w}{short}"
        );
    });
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(KEEPALIVE_IDLE_S))
        .with_interval(Duration::from_secs(KEEPALIVE_INTERVAL_S))
        .with_retries(KEEPALIVE_PROBES);
    let _ = s.set_tcp_keepalive(&keepalive);
    let _ = s.set_tcp_user_timeout(Some(Duration::from_millis(USER_TIMEOUT_MS)));
}

/// Seconds a connection is idle before the first keepalive probe.
const KEEPALIVE_IDLE_S: u64 = 10;

/// Seconds between keepalive probes.
const KEEPALIVE_INTERVAL_S: u64 = 2;

/// Unanswered probes before the connection is dropped.
const KEEPALIVE_PROBES: u32 = 3;

/// Milliseconds bytes may stay unacknowledged by the peer's host before
/// the connection is dropped (TCP's own retransmissions would take ~15 min).
const USER_TIMEOUT_MS: u64 = 20_000;

/// 32 bytes from the operating system's random source, for a HELLO
/// challenge; `None` if it fails (the connection is then refused, never
/// challenged with a guessable nonce).
pub(super) fn random_challenge() -> Option<[u8; 32]> {
    let mut c = [0u8; 32];
    let mut filled = 0;
    while filled < c.len() {
        // SAFETY: getrandom(2) writes at most `len - filled` bytes into the
        // rest of `c`, which is valid for writes of that many bytes.
        let n = unsafe {
            libc::getrandom(
                c[filled..].as_mut_ptr().cast::<libc::c_void>(),
                c.len() - filled,
                0,
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        filled += n as usize;
    }
    Some(c)
}

/// Milliseconds since the Unix epoch (the fault shim's and partitions' clock).
pub(super) fn unix_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Nanoseconds since the Unix epoch (the journal's record timestamps).
pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Pins the calling thread to `cpu` (`cpu_affinity`).
pub(super) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it
    // (cpu < 1024 = CPU_SETSIZE, checked at parse); sched_setaffinity(0, ..)
    // applies to the calling thread and reads only the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
