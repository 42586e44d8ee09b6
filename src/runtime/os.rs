//! What the worker asks of the operating system besides sockets and files:
//! the stop flag set by SIGTERM/SIGINT, socket options, random challenges
//! and wall-clock readings.

use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;

/// Set by SIGTERM/SIGINT (or by a shard that stopped on an error): every
/// event loop of the process finishes its batch and stops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGTERM/SIGINT handlers that ask the loop to stop gracefully.
pub fn install_signal_handlers() {
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe;
    // the handler pointer has the signature `signal` expects.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether the worker was asked to stop.
pub(super) fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks every event loop of the process to stop.
pub(super) fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
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
pub(super) fn tune_socket(stream: &TcpStream) {
    let opts: [(libc::c_int, libc::c_int, libc::c_int); 7] = [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT_MS),
    ];
    for (level, opt, value) in opts {
        // SAFETY: setsockopt(2) on the socket this stream owns, with a
        // pointer to a c_int that lives for the call and its exact size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                level,
                opt,
                (&value as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Seconds a connection is idle before the first keepalive probe.
const KEEPALIVE_IDLE_S: libc::c_int = 10;

/// Seconds between keepalive probes.
const KEEPALIVE_INTERVAL_S: libc::c_int = 2;

/// Unanswered probes before the connection is dropped.
const KEEPALIVE_PROBES: libc::c_int = 3;

/// Milliseconds bytes may stay unacknowledged by the peer's host before
/// the connection is dropped (TCP's own retransmissions would take ~15 min).
const USER_TIMEOUT_MS: libc::c_int = 20_000;

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
