//! Outbound paths (the sink, and this node's channels to other nodes):
//! dialing with backoff, the consumer's HELLO, RESUME, ACK and NACK, losing
//! a connection, and writing what the core hands out. The path itself (its
//! log and the frames kept in memory) is [`OutPath`](super::outpath::OutPath).

use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};
use verity_wire::handshake::{Connector, Refusal};
use verity_wire::text::Escaped;
use verity_wire::{ErrorCode, Frame, Kind, Role};

use super::conn::{Conn, ConnState, Handshake, Stream};
use super::error::{bad_frame_text, WorkerError};
use super::os::{random_challenge, tune_socket};
use super::outpath::{out_conn, out_of, BACKOFF_MIN, OUT_CONN_BASE};
use super::tls::TlsConn;
use super::worker::{secret_of, Worker, FIRST_OUT, READ_CHUNK};
use crate::core::{Input, Out};

impl Worker {
    /// What the consumer of outbound path `k` ACKed, in the core.
    fn out_acked(&self, k: usize) -> u64 {
        self.core.out_channel(out_of(k)).map_or(0, |o| o.acked)
    }

    /// Connects outbound path `k` if it is down (with backoff), writes what
    /// it has buffered, and handles what its consumer sent.
    pub(super) fn service_out(&mut self, k: usize) -> Result<(), WorkerError> {
        let Some(path) = self.outs.get(k).and_then(Option::as_ref) else {
            return Ok(());
        };
        if path.conn.is_none() && path.local.is_some() && !self.connect_link(k) {
            return Ok(());
        }
        let Some(path) = self.outs.get(k).and_then(Option::as_ref) else {
            return Ok(());
        };
        if path.conn.is_none() {
            if !self.dial(k) {
                return Ok(());
            }
            // Its handshake is timed by the core (limits.handshake_timeout_ms).
            let now = self.timer_ns(Instant::now());
            self.core.sessions_mut().opened(out_conn(k), now);
        }
        let Some(conn) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) else {
            return Ok(());
        };
        if conn.writable {
            if let Err(e) = conn.flush() {
                self.out_lost(k, &format!("write: {e}"));
                return Ok(());
            }
        }
        self.read_out(k)
    }

    /// A shard of this process: "connects" outbound path `k` over its
    /// in-process link. `false` when there is no random challenge (the path
    /// is left alone this iteration).
    fn connect_link(&mut self, k: usize) -> bool {
        let Some(challenge) = random_challenge() else {
            return false;
        };
        let (connector, hello) = Connector::start(self.me(), challenge);
        let (enc, epoch, max) = (self.enc, self.dir.epoch, self.cfg.limits.max_frame_len);
        if let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) {
            if let Some(end) = path.local.take() {
                let mut conn = Conn::over(Stream::Link(end), path.addr, max, 64 << 10);
                let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
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
    fn dial(&mut self, k: usize) -> bool {
        let Some(path) = self.outs.get(k).and_then(Option::as_ref) else {
            return false;
        };
        if Instant::now() < path.retry_at {
            return false;
        }
        if path.node.is_some_and(|j| self.partitioned_from(j)) {
            // A partition: no route to that worker now.
            if let Some(p) = self.outs.get_mut(k).and_then(Option::as_mut) {
                p.failed();
            }
            return false;
        }
        let addr = path.addr;
        let shim = self.shim_for(k);
        let Some(challenge) = random_challenge() else {
            return false;
        };
        let (connector, hello) = Connector::start(self.me(), challenge);
        let tls = self.tls.as_ref().and_then(|t| {
            if k == 0 {
                t.sink.clone()
            } else {
                t.peers.clone()
            }
        });
        let (enc, epoch, max, reg) = (
            self.enc,
            self.dir.epoch,
            self.cfg.limits.max_frame_len,
            self.poll.registry(),
        );
        let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) else {
            return false;
        };
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                if let Err(e) = reg.register(
                    &mut stream,
                    Token(FIRST_OUT + k),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    eprintln!("verity: cannot register the {} connection: {e}", path.name);
                    path.failed();
                    return false;
                }
                let _ = stream.set_nodelay(true);
                tune_socket(&stream);
                let stream = match tls {
                    None => Stream::Tcp(stream),
                    // The peer's certificate must name the address
                    // dialed.
                    Some(config) => match TlsConn::client(&config, stream, addr.ip()) {
                        Ok(t) => Stream::Tls(Box::new(t)),
                        Err(e) => {
                            eprintln!("verity: TLS to the {} at {addr}: {e}", path.name);
                            path.failed();
                            return false;
                        }
                    },
                };
                let mut conn = Conn::over(stream, addr, max, 64 << 10);
                conn.shim = shim;
                let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
                conn.readable = false;
                conn.handshake = Some(Handshake::Connecting(connector));
                path.conn = Some(conn);
            }
            Err(_) => {
                path.failed();
                return false;
            }
        }
        true
    }

    /// Reads what the consumer on outbound path `k` sent and handles each
    /// whole frame.
    fn read_out(&mut self, k: usize) -> Result<(), WorkerError> {
        loop {
            let Some(conn) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) else {
                return Ok(());
            };
            if !conn.readable {
                break;
            }
            match conn.fill(READ_CHUNK) {
                Ok(true) => {}
                Ok(false) => {
                    self.out_lost(k, "closed by the peer");
                    return Ok(());
                }
                Err(e) => {
                    let why = match super::tls::failure(&e) {
                        Some(reason) => {
                            self.stats.tls_failed += 1;
                            format!("TLS: {reason}")
                        }
                        None => format!("read: {e}"),
                    };
                    self.out_lost(k, &why);
                    return Ok(());
                }
            }
            loop {
                let epoch = self.dir.epoch;
                let Some(conn) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) else {
                    return Ok(());
                };
                let frame = match conn.dec.decode() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        let text = bad_frame_text(&e, conn.dec.position());
                        let _ = self.enc.error(&mut conn.wbuf, epoch, e.error_code(), &text);
                        let _ = conn.flush();
                        self.out_lost(k, &text);
                        return Ok(());
                    }
                };
                self.out_frame(k, frame)?;
            }
        }
        Ok(())
    }

    /// Sends ERROR on outbound path `k` and drops its connection.
    fn refuse_out(&mut self, k: usize, code: ErrorCode, text: &str) {
        let epoch = self.dir.epoch;
        let mut whom = None;
        if let Some(p) = self.outs[k].as_mut() {
            if let Some(conn) = p.conn.as_mut() {
                let _ = self.enc.error(&mut conn.wbuf, epoch, code, text);
                let _ = conn.flush();
                whom = Some(format!("{} at {}", p.name, conn.peer));
            }
        }
        if let Some(whom) = whom {
            self.log_limited(format_args!("closing the {whom}: {} {text}", code.name()));
        }
        self.out_lost(k, text);
    }

    /// Handles one frame the consumer on outbound path `k` sent.
    fn out_frame(&mut self, k: usize, frame: Frame) -> Result<(), WorkerError> {
        let Some(path) = self.outs[k].as_ref() else {
            return Ok(());
        };
        let Some(conn) = path.conn.as_ref() else {
            return Ok(());
        };
        let node = path.node;
        if matches!(frame.kind(), Kind::Ack | Kind::Nack) {
            let ours = self.core.out_channel(out_of(k)).map_or(0, |o| o.id);
            let theirs = frame.header().channel();
            if theirs != ours {
                let text = format!(
                    "{} for channel {theirs} on the connection of channel {ours}",
                    frame.kind()
                );
                self.refuse_out(k, ErrorCode::Protocol, &text);
                return Ok(());
            }
        }
        match (conn.state, frame.kind()) {
            (ConnState::AwaitHello, Kind::Hello) => self.out_hello(k, node, &frame),
            (ConnState::AwaitResume, Kind::Resume) => self.out_resume(k, node, &frame)?,
            (ConnState::Ready, Kind::Ack) => {
                let seq = frame.header().seq();
                let out = out_of(k);
                self.core.handle(Input::Ack { out, seq }, &mut self.fx);
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_out(k, ErrorCode::Protocol, &v.to_string());
                    return Ok(());
                }
                let acked = self.out_acked(k);
                if let Some(path) = self.outs[k].as_mut() {
                    path.trim(acked)?;
                }
            }
            (ConnState::Ready, Kind::Nack) => {
                // The consumer lost or reordered something: the core moves
                // the cursor back to its seq (never below what it ACKed).
                let from = frame.header().seq();
                let out = out_of(k);
                self.core.handle(Input::Nack { out, from }, &mut self.fx);
                self.fx.resend = None;
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_out(k, ErrorCode::Protocol, &v.to_string());
                }
            }
            (_, Kind::Heartbeat) => {}
            (state, Kind::Error) => {
                let view = frame.view();
                let (code, text) = view.error().unwrap_or((ErrorCode::Internal, ""));
                if state != ConnState::Ready {
                    if let Some(p) = self.outs[k].as_mut() {
                        p.refused = true;
                    }
                }
                let why = format!("peer sent ERROR {}: {}", code.name(), Escaped(text));
                self.out_lost(k, &why);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in state {state:?}");
                self.refuse_out(k, ErrorCode::Protocol, &text);
            }
        }
        Ok(())
    }

    /// The consumer's HELLO on outbound path `k`: the sink (or node `node`),
    /// with its answer to our challenge; we answer its challenge.
    fn out_hello(&mut self, k: usize, node: Option<u32>, frame: &Frame) {
        // Field by field: the sessions change while the secret and the
        // handshake state are read.
        let secret = secret_of(&self.cfg, node.is_some());
        let role = if node.is_some() {
            Role::Node
        } else {
            Role::Sink
        };
        let view = frame.view();
        let handshake = self.outs[k]
            .as_ref()
            .and_then(|p| p.conn.as_ref()?.handshake.as_ref());
        // The answer, and the consumer fenced when it is another node.
        let answered = match handshake {
            Some(Handshake::Connecting(c)) => self
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
                if r.code == ErrorCode::AuthFailed {
                    self.stats.auth_refused += 1;
                }
                self.refuse_out(k, r.code, &r.text);
                return;
            }
        };
        let (enc, my_epoch) = (self.enc, self.dir.epoch);
        if let Some(c) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) {
            let _ = enc.hello(&mut c.wbuf, my_epoch, &hello);
            c.handshake = None;
            c.state = ConnState::AwaitResume;
        }
    }

    /// The consumer's RESUME on outbound path `k`: where it wants the
    /// channel to go on from; the connection is up.
    fn out_resume(
        &mut self,
        k: usize,
        node: Option<u32>,
        frame: &Frame,
    ) -> Result<(), WorkerError> {
        let channel = match node {
            None => self.core.out().id,
            Some(to) => self.core.peer_out(to).map_or(0, |o| o.id),
        };
        let delivered = frame.view().resume_delivered(channel).unwrap_or(0);
        self.fx.clear();
        self.core.handle(
            Input::Resume {
                out: out_of(k),
                delivered,
            },
            &mut self.fx,
        );
        if let Some(v) = self.fx.violation.take() {
            self.refuse_out(k, ErrorCode::Protocol, &v.to_string());
            return Ok(());
        }
        if self.fx.resend.take().is_none() {
            return Ok(());
        }
        if node.is_none() {
            self.stats.sink_connects += 1;
        }
        let acked = self.out_acked(k);
        if let Some(path) = self.outs[k].as_mut() {
            path.backoff = BACKOFF_MIN;
            path.refused = false;
            path.connects += 1;
            if let Some(c) = path.conn.as_mut() {
                c.state = ConnState::Ready;
            }
            path.trim(acked)?;
            self.core.sessions_mut().established(out_conn(k));
        }
        self.fx.clear();
        Ok(())
    }

    /// Outbound path `k` lost its connection: log (once it had been up),
    /// drop it, back off.
    pub(super) fn out_lost(&mut self, k: usize, why: &str) {
        self.core
            .handle(Input::Disconnected { out: out_of(k) }, &mut self.fx);
        self.core.sessions_mut().closed(out_conn(k));
        let reg = self.poll.registry();
        if let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) {
            if let Some(Stream::Link(_)) = path.conn.as_ref().map(|c| &c.stream) {
                self.fatal = Some(format!(
                    "the in-process link to {} failed: {why}",
                    path.name
                ));
                return;
            }
            let mut retired = None;
            if let Some(mut conn) = path.conn.take() {
                if conn.state == ConnState::Ready
                    || why.contains("authentication")
                    || why.starts_with("TLS")
                {
                    eprintln!(
                        "verity: {} {} lost: {why}; reconnecting",
                        path.name, conn.peer
                    );
                }
                conn.stream.deregister(reg);
                retired = conn.shim.take();
            }
            path.failed();
            if let Some(shim) = retired {
                self.retire_shim(*shim);
            }
        }
    }

    /// Writes what the core hands out on path `k` now ([`NodeCore::poll_transmit`])
    /// and tells it how far that went.
    pub(super) fn pump_out(&mut self, k: usize) -> Result<(), WorkerError> {
        let out = out_of(k);
        let Some(t) = self.core.poll_transmit(out) else {
            return Ok(());
        };
        let limit = self.cfg.limits.write_buffer_bytes;
        let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) else {
            return Ok(());
        };
        let (through, pumped) = path.pump(t, limit)?;
        if through >= t.from {
            self.core.handle(Input::Sent { out, through }, &mut self.fx);
        }
        if let Err(e) = pumped {
            self.out_lost(k, &format!("write: {e}"));
        }
        Ok(())
    }

    /// Fires the core's timers due at `now` (resend after
    /// `limits.resend_timeout_ms` without ACK progress).
    pub(super) fn tick(&mut self, now: Instant) {
        let now_ns = self.timer_ns(now);
        self.core.handle(Input::Tick { now_ns }, &mut self.fx);
        let expired = std::mem::take(&mut self.fx.handshake_expired);
        if !expired.is_empty() {
            self.handshakes_expired(&expired);
        }
        for (out, from) in self.fx.rewound.drain(..) {
            let k = match out {
                Out::Sink => 0,
                Out::Node(j) => 1 + j as usize,
            };
            if let Some(p) = self.outs.get(k).and_then(Option::as_ref) {
                let peer = p
                    .conn
                    .as_ref()
                    .map_or_else(String::new, |c| c.peer.to_string());
                eprintln!(
                    "verity: {} {peer}: no ACK progress for {} ms; resending from {from}",
                    p.name, self.cfg.limits.resend_timeout_ms,
                );
            }
        }
    }

    /// The core timed these connections out in their handshake: an inbound
    /// one is refused `LIMIT_EXCEEDED` (a connection that never said HELLO
    /// would hold a slot for good), an outbound one is dialed again (a
    /// consumer that accepts and stays silent).
    fn handshakes_expired(&mut self, conns: &[crate::core::ConnId]) {
        let text = format!(
            "no handshake within limits.handshake_timeout_ms ({} ms)",
            self.cfg.limits.handshake_timeout_ms
        );
        for &c in conns {
            if let Some(k) = c.checked_sub(OUT_CONN_BASE) {
                let stuck = self.outs.get(k).and_then(Option::as_ref).filter(|p| {
                    p.conn
                        .as_ref()
                        .is_some_and(|c| c.state != ConnState::Ready && c.stream.is_socket())
                });
                if let Some(p) = stuck {
                    eprintln!("verity: {} at {}: {text}; dialing again", p.name, p.addr);
                    self.out_lost(k, &text);
                }
            } else if self
                .sources
                .get(c)
                .and_then(Option::as_ref)
                .is_some_and(|conn| {
                    conn.state != ConnState::Ready && !conn.closing && conn.stream.is_socket()
                })
            {
                self.stats.refused += 1;
                self.refuse_source(c, ErrorCode::LimitExceeded, &text);
            }
        }
    }
}
