//! Socket options every tool connection gets: Nagle off, and a dead peer
//! noticed. A peer whose host died or was cut off sends no FIN or reset:
//! without keepalive an idle connection would wait for it for good, and
//! one with unacknowledged bytes for TCP's ~15 minutes of retransmissions.
//! Here an idle connection is probed after 10 s, every 2 s, and dropped
//! after 3 unanswered probes; bytes unacknowledged for 20 s drop it too
//! (a peer that is alive but not reading, a zero window, answers its
//! probes and is kept). The worker sets the same (src/runtime/os.rs).

use std::net::TcpStream;
#[cfg(test)]
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Seconds a connection is idle before the first keepalive probe.
pub const KEEPALIVE_IDLE_S: libc::c_int = 10;
/// Seconds between keepalive probes.
pub const KEEPALIVE_INTERVAL_S: libc::c_int = 2;
/// Unanswered probes before the connection is dropped.
pub const KEEPALIVE_PROBES: libc::c_int = 3;
/// Milliseconds bytes may stay unacknowledged before the connection is
/// dropped.
pub const USER_TIMEOUT_MS: libc::c_int = 20_000;

/// Sets the options on `stream` (best effort: a failure leaves the
/// kernel's defaults).
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let s = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(KEEPALIVE_IDLE_S as u64))
        .with_interval(Duration::from_secs(KEEPALIVE_INTERVAL_S as u64))
        .with_retries(KEEPALIVE_PROBES as u32);
    let _ = s.set_tcp_keepalive(&keepalive);
    let _ = s.set_tcp_user_timeout(Some(Duration::from_millis(USER_TIMEOUT_MS as u64)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(stream: &TcpStream, level: libc::c_int, opt: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt(2) into a c_int of the size passed.
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                level,
                opt,
                (&mut v as *mut libc::c_int).cast::<libc::c_void>(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    #[test]
    fn a_tuned_socket_probes_an_idle_peer_and_times_out_unacknowledged_bytes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        tune(&s);
        assert_eq!(get(&s, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(
            get(&s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            KEEPALIVE_IDLE_S
        );
        assert_eq!(
            get(&s, libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
            KEEPALIVE_PROBES
        );
        assert_eq!(
            get(&s, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            USER_TIMEOUT_MS
        );
        assert_eq!(get(&s, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    }
}
