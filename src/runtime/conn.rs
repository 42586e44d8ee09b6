//! One connection and its bytes: a [`Conn`] over a [`Stream`] (a socket,
//! TLS over a socket, or an in-process link), where its handshake stands
//! ([`ConnState`], [`Handshake`]), its read side (`fill` into the decoder),
//! its write side (`flush` of `wbuf`, through the fault shim when there is
//! one) and the ACKs it owes its producer.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::time::Instant;

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::Token;
use verity_wire::handshake::{Acceptor, Connector};
use verity_wire::{Decoder, Encoder};

use super::link::LinkEnd;
use super::shim::Shim;
use super::tls::TlsConn;
use crate::routing::MAX_NODES;

/// The event loop's token of the source listener.
pub(super) const LISTENER: Token = Token(0);
/// Another shard of this process wrote to one of our in-process links.
pub(super) const WAKER: Token = Token(usize::MAX);
/// The node-to-node listener.
pub(super) const PEER_LISTENER: Token = Token(1);
/// Outbound path `k` (0: the sink, `1 + j`: node `j`) is token `FIRST_OUT + k`.
pub(super) const FIRST_OUT: usize = 2;
/// Inbound connection slot `s` is token `FIRST_SOURCE + s`.
pub(super) const FIRST_SOURCE: usize = FIRST_OUT + MAX_NODES as usize + 1;
/// Bytes read from one connection per loop iteration (fairness between sources).
pub(super) const READ_CHUNK: usize = 64 << 10;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum ConnState {
    /// Waiting for the peer's HELLO.
    AwaitHello,
    /// Accepting side: our HELLO (our challenge and our answer to the
    /// peer's) is sent; waiting for the peer's answer.
    AwaitAuth,
    /// Outbound: HELLO exchange done, waiting for RESUME.
    AwaitResume,
    Ready,
}

/// A connection's side of the HELLO exchange, until it is done.
pub(super) enum Handshake {
    Accepting(Acceptor),
    Connecting(Connector),
}

/// What a connection moves bytes over: a socket, a TLS connection over a
/// socket (`[tls]`), or (between shards of one process) an in-process ring
/// link.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsConn>),
    Link(LinkEnd),
}

impl Stream {
    pub(super) fn deregister(&mut self, reg: &mio::Registry) {
        match self {
            Stream::Tcp(s) => {
                let _ = reg.deregister(s);
            }
            Stream::Tls(t) => {
                let _ = reg.deregister(&mut t.sock);
            }
            Stream::Link(_) => {}
        }
    }

    /// Over a socket (plain or TLS), not an in-process link.
    pub(super) fn is_socket(&self) -> bool {
        !matches!(self, Stream::Link(_))
    }
}

pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) peer: SocketAddr,
    pub(super) dec: Decoder,
    pub(super) wbuf: BytesMut,
    pub(super) state: ConnState,
    /// ERROR sent: flush and close, read nothing more.
    pub(super) closing: bool,
    /// Bytes are waiting in the socket (edge-triggered: we must come back).
    pub(super) readable: bool,
    /// The peer's FIN was announced: read until read(2) returns 0, even
    /// after a short read.
    pub(super) read_closed: bool,
    /// ACKs owed to this producer, (channel, seq), not yet in `wbuf`: held
    /// up to `limits.ack_delay_us` from `acks_since` so one frame per
    /// channel carries the ACKs of several batches.
    pub(super) acks: Vec<(u32, u64)>,
    pub(super) acks_since: Option<Instant>,
    /// When the connection was accepted or dialed (handshake timeout).
    pub(super) opened: Instant,
    pub(super) writable: bool,
    /// Inbound from another node: its index, once its handshake is done.
    pub(super) node: Option<u32>,
    /// Inbound from a source: the source channel it produces, once its
    /// handshake is done (the HELLO's node id names it).
    pub(super) channel: Option<u32>,
    /// The HELLO exchange in progress.
    pub(super) handshake: Option<Handshake>,
    /// Accepted on the node-to-node listener: only other nodes may speak.
    pub(super) node_port: bool,
    /// Inbound: (stream offset of an incomplete frame, the clock reading
    /// (ns) of the read that left it incomplete), for
    /// `limits.frame_timeout_ms`.
    pub(super) partial: Option<(u64, u64)>,
    /// The fault shim, when `[faults]` is configured: frames pass through
    /// it from `wbuf` into `sbuf`, which is what reaches the socket.
    pub(super) shim: Option<Box<Shim>>,
    #[cfg_attr(not(feature = "fault-shim"), allow(dead_code))]
    pub(super) sbuf: BytesMut,
}

impl Conn {
    pub(super) fn over(stream: Stream, peer: SocketAddr, max_frame_len: u32, cap: usize) -> Conn {
        Conn {
            stream,
            peer,
            dec: Decoder::with_capacity(max_frame_len, cap),
            wbuf: BytesMut::with_capacity(64 << 10),
            state: ConnState::AwaitHello,
            closing: false,
            readable: true,
            read_closed: false,
            acks: Vec::new(),
            acks_since: None,
            opened: Instant::now(),
            writable: false,
            node: None,
            channel: None,
            handshake: None,
            node_port: false,
            partial: None,
            shim: None,
            sbuf: BytesMut::new(),
        }
    }

    /// Writes as much of `wbuf` as the socket takes (through the fault
    /// shim, if any). Err = connection lost.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        #[cfg(feature = "fault-shim")]
        if let Some(shim) = self.shim.as_mut() {
            if shim.pass(&mut self.wbuf, &mut self.sbuf, super::os::unix_ms()) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fault shim: connection closed",
                ));
            }
            return write_out(&mut self.stream, &mut self.sbuf, &mut self.writable);
        }
        write_out(&mut self.stream, &mut self.wbuf, &mut self.writable)
    }

    /// Writes `bytes` straight to the stream (no copy into `wbuf`); the
    /// bytes written. For a link, 0 is `WouldBlock` (the ring is full).
    /// With a fault shim the bytes go through `wbuf` and the shim.
    pub(super) fn write_direct(&mut self, bytes: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "fault-shim")]
        if self.shim.is_some() {
            self.wbuf.extend_from_slice(bytes);
            self.flush()?;
            return Ok(bytes.len());
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.write(bytes),
            Stream::Tls(t) => t.write(bytes),
            Stream::Link(l) => match l.write(bytes)? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }

    /// Bytes wait to be written: in `wbuf`, or as TLS records the socket
    /// has not taken yet (the fault shim's own held bytes leave as before:
    /// with the next frames, or when `drain_shim` lets them out).
    pub(super) fn wants_flush(&self) -> bool {
        !self.wbuf.is_empty() || matches!(&self.stream, Stream::Tls(t) if t.wants_write())
    }
}

impl Conn {
    /// Inbound over TCP with its handshake not done (in the handshake pool).
    pub(super) fn in_handshake(&self) -> bool {
        self.state != ConnState::Ready && self.stream.is_socket()
    }

    /// Moves the owed ACKs into `wbuf`.
    pub(super) fn queue_acks(&mut self, epoch: u32) {
        for &(channel, seq) in &self.acks {
            let _ = Encoder::default().ack(&mut self.wbuf, channel, epoch, seq);
        }
        self.acks.clear();
        self.acks_since = None;
    }

    /// Reads up to `max` bytes into the decoder. Ok(false) = peer closed.
    pub(super) fn fill(&mut self, max: usize) -> io::Result<bool> {
        let buf = self.dec.read_buf();
        let fd = match &mut self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(t) => {
                let f = t.fill(buf, max, self.state != ConnState::Ready)?;
                // Plaintext or ciphertext still held keeps the connection
                // readable (no new edge will announce it). Emptied by a
                // short read: new bytes raise a new edge, unless a FIN
                // was announced (as below).
                if f.drained && !(f.short && self.read_closed) {
                    self.readable = false;
                }
                if f.write_blocked {
                    self.writable = false;
                }
                return Ok(f.open);
            }
            Stream::Link(l) => {
                if l.read_into(buf, max) == 0 {
                    self.readable = false;
                }
                return Ok(true);
            }
        };
        buf.reserve(max);
        let spare = buf.spare_capacity_mut();
        let want = max.min(spare.len());
        loop {
            // read(2) straight into the buffer's spare capacity: no zeroing
            // of memory the kernel is about to overwrite (2.8% of the node's
            // time when it was `resize(.., 0)`).
            // SAFETY: `spare` is valid for writes of `want` bytes (it is the
            // BytesMut's unused capacity, `want <= spare.len()`), read(2)
            // writes at most `want` bytes into it, and the fd is the socket
            // this Conn owns.
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast::<libc::c_void>(), want) };
            if n > 0 {
                // SAFETY: read(2) initialised the first `n <= want` bytes of
                // the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
                // A short read emptied the socket's receive queue: bytes
                // arriving from now on raise a new edge-triggered event, so
                // the read that would only return EAGAIN is skipped (one
                // syscall of two or three per wakeup under a paced load).
                // Not once a FIN was announced: its event is already spent,
                // and only a read returning 0 tells us the peer closed.
                if (n as usize) < want && !self.read_closed {
                    self.readable = false;
                }
                return Ok(true);
            }
            if n == 0 {
                return Ok(false);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(true);
                }
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }
}

/// Writes as much of `buf` to `stream` as it takes. Err = connection lost.
fn write_out(stream: &mut Stream, buf: &mut BytesMut, writable: &mut bool) -> io::Result<()> {
    while !buf.is_empty() {
        let written = match stream {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Link(l) => match l.write(buf) {
                // A full ring: the other shard reads it soon; we come back
                // on the next loop iteration.
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                r => r,
            },
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let _ = buf.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // TLS records made from the plaintext (or by rustls itself: handshake
    // messages, alerts) leave even when there is no plaintext left: on a
    // writable event we come back for the rest.
    if let Stream::Tls(t) = stream {
        if !t.send()? {
            *writable = false;
        }
    }
    Ok(())
}

/// Lets a connection's held-back frames out when due and writes its shim's
/// decisions to the fault log; `true` when the connection is lost.
pub(super) fn drain_shim(c: &mut Conn, log: &mut impl Write, now_ms: u64) -> bool {
    let lost = c.shim.as_ref().is_some_and(|s| s.holding()) && c.flush().is_err();
    if let Some(s) = c.shim.as_mut() {
        s.write_decisions(log, now_ms);
    }
    lost
}
