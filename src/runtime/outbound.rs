//! The outbound paths ([`Outbound`]: the sink, and this node's channels to
//! other nodes): dialing with backoff, the consumer's HELLO, RESUME, ACK
//! and NACK, losing a connection, and writing what the core hands out. One
//! path (its log and the frames kept in memory) is
//! [`OutPath`](super::outpath::OutPath).

use std::time::Instant;

use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConfig;
use verity_wire::handshake::{Connector, Refusal};
use verity_wire::text::Escaped;
use verity_wire::{ErrorCode, Frame, Kind, Role};

use super::conn::{Conn, ConnState, Handshake, Stream, FIRST_OUT, READ_CHUNK};
use super::error::{bad_frame_text, WorkerError};
use super::faults::FaultState;
use super::node::{secret_of, Node};
use super::os::{random_challenge, tune_socket};
use super::outpath::{out_conn, out_of, OutPath, BACKOFF_MIN};
use super::tls::TlsConn;
use crate::core::Input;

/// The node's outbound paths: 0 the sink, `1 + j` node `j` (`None` for
/// this node), and the TLS settings they dial with.
pub(super) struct Outbound {
    pub(super) paths: Vec<Option<OutPath>>,
    /// `[tls]`: client side to the sink, and to other nodes.
    pub(super) tls_sink: Option<Arc<ClientConfig>>,
    pub(super) tls_peers: Option<Arc<ClientConfig>>,
}

/// What the dial of an outbound path needs from outside it: the registry
/// its socket joins, and the fault shim's state (a shim for the new
/// connection, partitions).
pub(super) struct Dial<'a> {
    pub(super) reg: &'a Registry,
    pub(super) faults: Option<&'a FaultState>,
}

impl Outbound {
    /// What the consumer of outbound path `k` ACKed, in the core.
    fn acked(n: &Node, k: usize) -> u64 {
        n.core.out_channel(out_of(k)).map_or(0, |o| o.acked)
    }

    /// Hands the batch's frames (just logged) to their paths to be written
    /// from memory.
    pub(super) fn keep_fresh(&mut self, n: &mut Node) {
        let cap = 2 * n.cfg.limits.write_buffer_bytes;
        let fx = &mut n.fx;
        if let Some(seqs) = fx.outbound_seqs {
            if let Some(Some(path)) = self.paths.get_mut(0) {
                path.keep_fresh(&mut fx.outbound, seqs, cap);
            }
        }
        for (j, to) in fx.to_peers.iter_mut().enumerate() {
            let Some(seqs) = to.seqs else {
                continue;
            };
            if let Some(Some(path)) = self.paths.get_mut(1 + j) {
                path.keep_fresh(&mut to.frames, seqs, cap);
            }
        }
    }

    /// Connects outbound path `k` if it is down (with backoff), writes what
    /// it has buffered, and handles what its consumer sent.
    pub(super) fn service(
        &mut self,
        k: usize,
        n: &mut Node,
        dial: &Dial<'_>,
    ) -> Result<(), WorkerError> {
        let Some(path) = self.paths.get(k).and_then(Option::as_ref) else {
            return Ok(());
        };
        if path.conn.is_none() && path.local.is_some() && !self.connect_link(k, n) {
            return Ok(());
        }
        let Some(path) = self.paths.get(k).and_then(Option::as_ref) else {
            return Ok(());
        };
        if path.conn.is_none() {
            if !self.dial(k, n, dial) {
                return Ok(());
            }
            // Its handshake is timed by the core (limits.handshake_timeout_ms).
            let now = n.timer_ns(Instant::now());
            n.core.sessions_mut().opened(out_conn(k), now);
        }
        let Some(conn) = self.paths[k].as_mut().and_then(|p| p.conn.as_mut()) else {
            return Ok(());
        };
        if conn.writable {
            if let Err(e) = conn.flush() {
                self.lost(k, n, dial.reg, &format!("write: {e}"));
                return Ok(());
            }
        }
        self.read(k, n, dial.reg)
    }

    /// A shard of this process: "connects" outbound path `k` over its
    /// in-process link. `false` when there is no random challenge (the path
    /// is left alone this iteration).
    fn connect_link(&mut self, k: usize, n: &Node) -> bool {
        let Some(challenge) = random_challenge() else {
            return false;
        };
        let (connector, hello) = Connector::start(n.me(), challenge);
        let max = n.cfg.limits.max_frame_len;
        if let Some(path) = self.paths.get_mut(k).and_then(Option::as_mut) {
            if let Some(end) = path.local.take() {
                let mut conn = Conn::over(Stream::Link(end), path.addr, max, 64 << 10);
                let _ = n.enc.hello(&mut conn.wbuf, n.epoch, &hello);
                conn.writable = true;
                conn.handshake = Some(Handshake::Connecting(connector));
                path.conn = Some(conn);
            }
        }
        true
    }

    /// Dials outbound path `k` (down) when its backoff is over and no
    /// partition cuts it off, and says HELLO; `true` when a connection is
    /// under way (the caller goes on to write and read it).
    fn dial(&mut self, k: usize, n: &Node, dial: &Dial<'_>) -> bool {
        let Some(path) = self.paths.get_mut(k).and_then(Option::as_mut) else {
            return false;
        };
        if Instant::now() < path.retry_at {
            return false;
        }
        let cut = path
            .node
            .is_some_and(|j| dial.faults.is_some_and(|f| f.partitioned_from(&n.cfg, j)));
        if cut {
            // A partition: no route to that worker now.
            path.failed();
            return false;
        }
        let addr = path.addr;
        let me = n.core.node();
        let shim = dial
            .faults
            .and_then(|f| f.outbound_shim(me, &path.name, path.connects));
        let Some(challenge) = random_challenge() else {
            return false;
        };
        let (connector, hello) = Connector::start(n.me(), challenge);
        let tls = if k == 0 {
            self.tls_sink.clone()
        } else {
            self.tls_peers.clone()
        };
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(_) => {
                path.failed();
                return false;
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = dial
            .reg
            .register(&mut stream, Token(FIRST_OUT + k), interest)
        {
            tracing::warn!(
                event = "dial_failed",
                "cannot register the {} connection: {e}",
                path.name
            );
            path.failed();
            return false;
        }
        let _ = stream.set_nodelay(true);
        tune_socket(&stream, n.cfg.limits.socket_buffer_bytes);
        let stream = match tls {
            None => Stream::Tcp(stream),
            // The peer's certificate must name the address dialed.
            Some(config) => match TlsConn::client(&config, stream, addr.ip()) {
                Ok(t) => Stream::Tls(Box::new(t)),
                Err(e) => {
                    tracing::warn!(
                        event = "dial_failed",
                        "TLS to the {} at {addr}: {e}",
                        path.name
                    );
                    path.failed();
                    return false;
                }
            },
        };
        let mut conn = Conn::over(stream, addr, n.cfg.limits.max_frame_len, 64 << 10);
        conn.shim = shim;
        let _ = n.enc.hello(&mut conn.wbuf, n.epoch, &hello);
        conn.readable = false;
        conn.handshake = Some(Handshake::Connecting(connector));
        path.conn = Some(conn);
        true
    }

    /// Reads what the consumer on outbound path `k` sent and handles each
    /// whole frame.
    fn read(&mut self, k: usize, n: &mut Node, reg: &Registry) -> Result<(), WorkerError> {
        loop {
            let Some(conn) = self.paths[k].as_mut().and_then(|p| p.conn.as_mut()) else {
                return Ok(());
            };
            if !conn.readable {
                break;
            }
            match conn.fill(READ_CHUNK) {
                Ok(true) => {}
                Ok(false) => {
                    self.lost(k, n, reg, "closed by the peer");
                    return Ok(());
                }
                Err(e) => {
                    let why = match super::tls::failure(&e) {
                        Some(reason) => {
                            n.stats.tls_failed += 1;
                            format!("TLS: {reason}")
                        }
                        None => format!("read: {e}"),
                    };
                    self.lost(k, n, reg, &why);
                    return Ok(());
                }
            }
            loop {
                let Some(conn) = self.paths[k].as_mut().and_then(|p| p.conn.as_mut()) else {
                    return Ok(());
                };
                let frame = match conn.dec.decode() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        let text = bad_frame_text(&e, conn.dec.position());
                        let _ = n.enc.error(&mut conn.wbuf, n.epoch, e.error_code(), &text);
                        let _ = conn.flush();
                        self.lost(k, n, reg, &text);
                        return Ok(());
                    }
                };
                self.frame(k, n, reg, frame)?;
            }
        }
        Ok(())
    }

    /// Sends ERROR on outbound path `k` and drops its connection.
    fn refuse(&mut self, k: usize, n: &mut Node, reg: &Registry, code: ErrorCode, text: &str) {
        let mut whom = None;
        if let Some(p) = self.paths[k].as_mut() {
            if let Some(conn) = p.conn.as_mut() {
                let _ = n.enc.error(&mut conn.wbuf, n.epoch, code, text);
                let _ = conn.flush();
                whom = Some(format!("{} at {}", p.name, conn.peer));
            }
        }
        if let Some(whom) = whom {
            n.log_limited(
                code.name(),
                format_args!("closing the {whom}: {} {text}", code.name()),
            );
        }
        self.lost(k, n, reg, text);
    }

    /// Handles one frame the consumer on outbound path `k` sent.
    fn frame(
        &mut self,
        k: usize,
        n: &mut Node,
        reg: &Registry,
        frame: Frame,
    ) -> Result<(), WorkerError> {
        let Some(path) = self.paths[k].as_ref() else {
            return Ok(());
        };
        let Some(conn) = path.conn.as_ref() else {
            return Ok(());
        };
        let (node, state) = (path.node, conn.state);
        if matches!(frame.kind(), Kind::Ack | Kind::Nack) {
            let ours = n.core.out_channel(out_of(k)).map_or(0, |o| o.id);
            let theirs = frame.header().channel();
            if theirs != ours {
                let text = format!(
                    "{} for channel {theirs} on the connection of channel {ours}",
                    frame.kind()
                );
                self.refuse(k, n, reg, ErrorCode::Protocol, &text);
                return Ok(());
            }
        }
        match (state, frame.kind()) {
            (ConnState::AwaitHello, Kind::Hello) => self.hello(k, n, reg, node, &frame),
            (ConnState::AwaitResume, Kind::Resume) => self.resume(k, n, reg, node, &frame)?,
            (ConnState::Ready, Kind::Ack) => {
                let seq = frame.header().seq();
                let out = out_of(k);
                n.core.handle(Input::Ack { out, seq }, &mut n.fx);
                if let Some(v) = n.fx.violation.take() {
                    self.refuse(k, n, reg, ErrorCode::Protocol, &v.to_string());
                    return Ok(());
                }
                let acked = Self::acked(n, k);
                if let Some(path) = self.paths[k].as_mut() {
                    path.trim(acked)?;
                }
            }
            (ConnState::Ready, Kind::Nack) => {
                // The consumer lost or reordered something: the core moves
                // the cursor back to its seq (never below what it ACKed).
                let from = frame.header().seq();
                let out = out_of(k);
                let view = frame.view();
                let ranges = view.nack_ranges().unwrap_or(&[]);
                n.core.handle(Input::Nack { out, from, ranges }, &mut n.fx);
                n.stats.nacks_received += 1;
                if let Some((_, from)) = n.fx.resend.take() {
                    n.stats.resends_nack += 1;
                    if let Some(p) = self.paths[k].as_ref() {
                        tracing::debug!(
                            event = "resend",
                            cause = "nack",
                            from,
                            "{}: NACK for seq {from}: resending from it",
                            p.name
                        );
                    }
                }
                if let Some(v) = n.fx.violation.take() {
                    self.refuse(k, n, reg, ErrorCode::Protocol, &v.to_string());
                }
            }
            (_, Kind::Heartbeat) => {}
            (state, Kind::Error) => {
                let view = frame.view();
                let (code, text) = view.error().unwrap_or((ErrorCode::Internal, ""));
                if state != ConnState::Ready {
                    if let Some(p) = self.paths[k].as_mut() {
                        p.refused = true;
                    }
                }
                let why = format!("peer sent ERROR {}: {}", code.name(), Escaped(text));
                self.lost(k, n, reg, &why);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in state {state:?}");
                self.refuse(k, n, reg, ErrorCode::Protocol, &text);
            }
        }
        Ok(())
    }

    /// The consumer's HELLO on outbound path `k`: the sink (or node `node`),
    /// with its answer to our challenge; we answer its challenge.
    fn hello(&mut self, k: usize, n: &mut Node, reg: &Registry, node: Option<u32>, frame: &Frame) {
        let secret = secret_of(&n.cfg, node.is_some());
        let role = if node.is_some() {
            Role::Node
        } else {
            Role::Sink
        };
        let view = frame.view();
        let handshake = self.paths[k]
            .as_ref()
            .and_then(|p| p.conn.as_ref()?.handshake.as_ref());
        // The answer, and the consumer fenced when it is another node.
        let answered = match handshake {
            Some(Handshake::Connecting(c)) => n
                .core
                .sessions_mut()
                .dial_answer(c, &view, secret, role, node),
            _ => Err(Refusal {
                code: ErrorCode::Protocol,
                text: "a HELLO without our challenge".into(),
            }),
        };
        let hello = match answered {
            Ok(h) => h,
            Err(r) => {
                n.count_refusal(r.code);
                self.refuse(k, n, reg, r.code, &r.text);
                return;
            }
        };
        if let Some(c) = self.paths[k].as_mut().and_then(|p| p.conn.as_mut()) {
            let _ = n.enc.hello(&mut c.wbuf, n.epoch, &hello);
            c.handshake = None;
            c.state = ConnState::AwaitResume;
        }
    }

    /// The consumer's RESUME on outbound path `k`: where it wants the
    /// channel to go on from; the connection is up.
    fn resume(
        &mut self,
        k: usize,
        n: &mut Node,
        reg: &Registry,
        node: Option<u32>,
        frame: &Frame,
    ) -> Result<(), WorkerError> {
        let channel = match node {
            None => n.core.out().id,
            Some(to) => n.core.peer_out(to).map_or(0, |o| o.id),
        };
        let delivered = frame.view().resume_delivered(channel).unwrap_or(0);
        n.fx.clear();
        let out = out_of(k);
        n.core.handle(Input::Resume { out, delivered }, &mut n.fx);
        if let Some(v) = n.fx.violation.take() {
            self.refuse(k, n, reg, ErrorCode::Protocol, &v.to_string());
            return Ok(());
        }
        let Some((_, from)) = n.fx.resend.take() else {
            return Ok(());
        };
        n.stats.resends_resume += 1;
        if node.is_none() {
            n.stats.sink_connects += 1;
        }
        let acked = Self::acked(n, k);
        if let Some(path) = self.paths[k].as_mut() {
            path.backoff = BACKOFF_MIN;
            path.refused = false;
            path.connects += 1;
            if let Some(c) = path.conn.as_mut() {
                c.state = ConnState::Ready;
            }
            path.trim(acked)?;
            n.core.sessions_mut().established(out_conn(k));
            tracing::info!(
                event = "resume",
                to = path.name.as_str(),
                delivered,
                from,
                connects = path.connects,
                "{} at {}: RESUME says delivered through seq {delivered}; sending from seq {from}",
                path.name,
                path.addr
            );
        }
        n.fx.clear();
        Ok(())
    }

    /// Outbound path `k` lost its connection: log (once it had been up),
    /// drop it, back off.
    pub(super) fn lost(&mut self, k: usize, n: &mut Node, reg: &Registry, why: &str) {
        n.core
            .handle(Input::Disconnected { out: out_of(k) }, &mut n.fx);
        n.core.sessions_mut().closed(out_conn(k));
        let Some(path) = self.paths.get_mut(k).and_then(Option::as_mut) else {
            return;
        };
        if let Some(Stream::Link(_)) = path.conn.as_ref().map(|c| &c.stream) {
            n.fatal = Some(format!(
                "the in-process link to {} failed: {why}",
                path.name
            ));
            return;
        }
        if let Some(mut conn) = path.conn.take() {
            if conn.state == ConnState::Ready
                || why.contains("authentication")
                || why.starts_with("TLS")
            {
                tracing::warn!(
                    event = "peer_lost",
                    to = path.name.as_str(),
                    "{} {} lost: {why}; reconnecting",
                    path.name,
                    conn.peer
                );
            }
            conn.stream.deregister(reg);
            if let Some(shim) = conn.shim.take() {
                n.retired.push(*shim);
            }
        }
        path.failed();
    }

    /// Writes what the core hands out on path `k` now
    /// ([`NodeCore::poll_transmit`](crate::core::NodeCore::poll_transmit))
    /// and tells it how far that went.
    pub(super) fn pump(
        &mut self,
        k: usize,
        n: &mut Node,
        reg: &Registry,
    ) -> Result<(), WorkerError> {
        let out = out_of(k);
        let Some(t) = n.core.poll_transmit(out) else {
            return Ok(());
        };
        let limit = n.cfg.limits.write_buffer_bytes;
        let Some(path) = self.paths.get_mut(k).and_then(Option::as_mut) else {
            return Ok(());
        };
        let (through, pumped) = path.pump(t, limit)?;
        if through >= t.from {
            n.core.handle(Input::Sent { out, through }, &mut n.fx);
        }
        if let Err(e) = pumped {
            self.lost(k, n, reg, &format!("write: {e}"));
        }
        Ok(())
    }
}
