//! Inbound connections (sources, and other nodes' channels to this node):
//! accepting them (per-address cap, the handshake pool), their side of the
//! HELLO exchange, admitting a node or a source, refusing and closing them,
//! and the handshake and frame timeouts.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::{Interest, Token};
use verity_wire::handshake::{Acceptor, Refusal};
use verity_wire::{ErrorCode, FrameView, Role, HANDSHAKE_MAX_FRAME_LEN};

use super::conn::{Conn, ConnState, Handshake, Stream};
use super::error::WorkerError;
use super::os::{now_ns, random_challenge, tune_socket};
use super::tls::TlsConn;
use super::worker::{Worker, FIRST_SOURCE};
use crate::config::SourceHome;
use crate::core::Producer;

impl Worker {
    /// Accepts connections on the source listener or (`peers`) the
    /// node-to-node listener. A connection starts in the handshake pool
    /// (`limits.max_handshakes`, the oldest closed when it is full), which
    /// established connections never share, and may buffer only what a
    /// handshake needs; one remote address holds at most
    /// `limits.max_connections_per_address` connections.
    pub(super) fn accept(&mut self, peers: bool) {
        loop {
            let listener = if peers {
                self.peer_listener.as_ref()
            } else {
                self.listener.as_ref()
            };
            let Some(listener) = listener else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.log_limited(format_args!("accept failed: {e}"));
                    return;
                }
            };
            self.take_connection(stream, peer, peers);
        }
    }

    /// Takes a connection accepted on the source listener or (`peers`) the
    /// node-to-node listener into the handshake pool, unless its address
    /// holds too many connections already.
    fn take_connection(&mut self, mut stream: TcpStream, peer: SocketAddr, peers: bool) {
        let tls = self.tls.as_ref().and_then(|t| {
            if peers {
                t.nodes.clone()
            } else {
                t.sources.clone()
            }
        });
        let from_there = self
            .sources
            .iter()
            .flatten()
            .filter(|c| c.stream.is_socket() && c.peer.ip() == peer.ip())
            .count();
        if from_there >= self.cfg.limits.max_connections_per_address {
            self.stats.refused += 1;
            self.refuse_at_accept(
                &mut stream,
                peer,
                "too many connections from this address (limits.max_connections_per_address)",
                tls.is_some(),
            );
            return;
        }
        self.make_handshake_room();
        let _ = stream.set_nodelay(true);
        tune_socket(&stream);
        let slot = match self.sources.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.sources.push(None);
                self.sources.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(FIRST_SOURCE + slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.log_limited(format_args!("cannot register {peer}: {e}"));
            return;
        }
        self.stats.sources_accepted += 1;
        let stream = match tls {
            None => Stream::Tcp(stream),
            Some(config) => match TlsConn::server(&config, stream) {
                Ok(t) => Stream::Tls(Box::new(t)),
                Err(e) => {
                    self.log_limited(format_args!("TLS with {peer}: {e}"));
                    return;
                }
            },
        };
        // Until the handshake is done: frames up to an ERROR's size,
        // a buffer of a few KiB.
        let mut conn = Conn::over(stream, peer, HANDSHAKE_MAX_FRAME_LEN, 8 << 10);
        conn.node_port = peers;
        let me = self.core.node();
        conn.shim = self.faults.as_mut().and_then(|f| f.inbound_shim(me, peers));
        self.sources[slot] = Some(conn);
        // Its handshake is timed by the core (limits.handshake_timeout_ms).
        let now = self.timer_ns(Instant::now());
        self.core.sessions_mut().opened(slot, now);
    }

    /// Closes a connection still in its handshake when the handshake pool
    /// is full (`limits.max_handshakes`).
    fn make_handshake_room(&mut self) {
        let handshaking: Vec<usize> = (0..self.sources.len())
            .filter(|&i| self.sources[i].as_ref().is_some_and(Conn::in_handshake))
            .collect();
        if handshaking.len() >= self.cfg.limits.max_handshakes {
            // A handshake makes room: the oldest of the address with
            // the most handshakes under way. A flood of connections
            // that never finish theirs cannot keep a real peer out,
            // even when it comes from many addresses.
            let ip_of = |i: usize| self.sources[i].as_ref().map(|c| c.peer.ip());
            let busiest = handshaking
                .iter()
                .filter_map(|&i| ip_of(i))
                .max_by_key(|ip| {
                    handshaking
                        .iter()
                        .filter(|&&j| ip_of(j) == Some(*ip))
                        .count()
                });
            if let Some(&oldest) = handshaking
                .iter()
                .filter(|&&i| busiest.is_some() && ip_of(i) == busiest)
                .min_by_key(|&&i| self.sources[i].as_ref().map(|c| c.opened))
            {
                self.stats.refused += 1;
                self.refuse_source(
                    oldest,
                    ErrorCode::LimitExceeded,
                    "handshake not complete and the handshake pool is full (limits.max_handshakes)",
                );
            }
        }
    }

    /// Tells a connection refused at accept why (best effort; not on a
    /// TLS port, where the peer expects a TLS handshake first and takes
    /// plain bytes for tampering) and closes it.
    fn refuse_at_accept(&mut self, stream: &mut TcpStream, peer: SocketAddr, why: &str, tls: bool) {
        if !tls {
            let mut b = BytesMut::new();
            let _ = self
                .enc
                .error(&mut b, self.dir.epoch, ErrorCode::LimitExceeded, why);
            let _ = stream.write(&b);
        }
        // Whatever it sent already (its HELLO) is read and dropped, so the
        // close is a FIN after our ERROR, not a reset that could discard it.
        let _ = stream.read(&mut [0u8; 512]);
        self.log_limited(format_args!("refused {peer}: {why}"));
    }

    /// A connection's first HELLO: a source on the source port, another
    /// node on the node-to-node port. Answers it with our HELLO (our
    /// challenge, our answer to theirs).
    pub(super) fn inbound_hello(
        &mut self,
        slot: usize,
        frame: FrameView<'_>,
    ) -> Result<bool, WorkerError> {
        let Some(nodes) = self.sources[slot].as_ref().map(|c| c.node_port) else {
            return Ok(false);
        };
        let Some(challenge) = random_challenge() else {
            let text = "no random source for a challenge";
            self.refuse_source(slot, ErrorCode::Internal, text);
            return Ok(false);
        };
        let roles: &[Role] = if nodes {
            &[Role::Node]
        } else {
            &[Role::Source]
        };
        let mut acceptor = Acceptor::new(self.me(), challenge);
        let secret = self.secret(nodes);
        let answered = self
            .core
            .sessions()
            .accept_hello(&mut acceptor, &frame, secret, roles);
        let hello = match answered {
            Ok(h) => h,
            Err(r) => {
                self.refuse_handshake(slot, &r);
                return Ok(false);
            }
        };
        let (enc, epoch) = (self.enc, self.dir.epoch);
        if let Some(conn) = self.sources[slot].as_mut() {
            let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
            conn.handshake = Some(Handshake::Accepting(acceptor));
            conn.state = ConnState::AwaitAuth;
        }
        Ok(false)
    }

    /// The peer's answer to our challenge: the handshake is done. A node's
    /// connection now carries its channel to us; a source's, the channel its
    /// HELLO named (if this worker is its home and no one else produces it).
    /// Either way we say RESUME.
    pub(super) fn inbound_answer(
        &mut self,
        slot: usize,
        frame: FrameView<'_>,
    ) -> Result<bool, WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(false);
        };
        let nodes = conn.node_port;
        let Some(Handshake::Accepting(acceptor)) = conn.handshake.take() else {
            self.refuse_source(slot, ErrorCode::Protocol, "an answer without a challenge");
            return Ok(false);
        };
        let peer = match acceptor.on_answer(&frame, self.secret(nodes)) {
            Ok(p) => p,
            Err(r) => {
                self.refuse_handshake(slot, &r);
                return Ok(false);
            }
        };
        let established = self
            .sources
            .iter()
            .flatten()
            .filter(|c| c.state == ConnState::Ready && c.stream.is_socket())
            .count();
        let is_link = self.sources[slot]
            .as_ref()
            .is_some_and(|c| matches!(c.stream, Stream::Link(_)));
        if !is_link && established >= self.cfg.limits.max_connections {
            self.stats.refused += 1;
            let text = "too many established connections (limits.max_connections)";
            self.refuse_source(slot, ErrorCode::LimitExceeded, text);
            return Ok(false);
        }
        if nodes {
            self.admit_node(slot, peer.node_id, peer.epoch);
        } else {
            self.admit_source(slot, peer.node_id);
        }
        Ok(false)
    }

    /// Another node proved who it is: fence older epochs, replace an older
    /// connection of it, say RESUME (and ACK what is durable already).
    fn admit_node(&mut self, slot: usize, node: u32, epoch: u32) {
        match self.core.sessions_mut().admit_node(slot, node, epoch) {
            Err(r) => {
                self.refuse_source(slot, r.code, &r.text);
                return;
            }
            // A newer connection from that node replaces an older one.
            Ok(Some(old)) => {
                let why = format!("replaced by a newer connection from node {node}");
                self.close_source(old, Some(why));
            }
            Ok(None) => {}
        }
        self.stats.peer_connects += 1;
        let (enc, my_epoch, max) = (self.enc, self.dir.epoch, self.cfg.limits.max_frame_len);
        if let Some(conn) = self.sources[slot].as_mut() {
            // RESUME where to go on, and ACK what it may drop.
            self.core
                .greet(Producer::Node(node), my_epoch, &enc, &mut conn.wbuf);
            conn.node = Some(node);
            conn.state = ConnState::Ready;
            conn.dec.set_max_frame_len(max);
            eprintln!(
                "verity: node {node} (epoch {epoch}) connected from {}",
                conn.peer
            );
        }
    }

    /// A source proved it holds the client secret (if one is configured):
    /// its HELLO's node id names the source channel it produces. This
    /// worker must be that channel's home and no other connection may be
    /// producing it; then the connection carries that channel, and we say
    /// RESUME (the channel's `delivered`).
    fn admit_source(&mut self, slot: usize, channel: u32) {
        // A redirect, as Kafka answers "not leader": the text is the home's
        // source address and nothing else.
        let elsewhere = self.source_home(channel).map(|a| a.to_string());
        let sources = &self.sources;
        let holder = |c: usize| sources.get(c)?.as_ref().map(|c| c.peer.to_string());
        let admitted = self
            .core
            .sessions_mut()
            .admit_source(slot, channel, elsewhere, holder);
        if let Err(r) = admitted {
            self.refuse_source(slot, r.code, &r.text);
            return;
        }
        let (enc, epoch, max) = (self.enc, self.dir.epoch, self.cfg.limits.max_frame_len);
        if let Some(conn) = self.sources[slot].as_mut() {
            self.core
                .greet(Producer::Source(channel), epoch, &enc, &mut conn.wbuf);
            conn.channel = Some(channel);
            conn.state = ConnState::Ready;
            conn.dec.set_max_frame_len(max);
        }
    }

    /// The source address of the home of source `channel`, when it is
    /// another worker (`None`: this one).
    fn source_home(&self, channel: u32) -> Option<SocketAddr> {
        match self
            .cfg
            .source_homes
            .get((channel as usize).checked_sub(1)?)?
        {
            SourceHome::Here => None,
            SourceHome::Elsewhere { sources, .. } => Some(*sources),
        }
    }

    /// A HELLO exchange that failed: ERROR with the refusal, and close.
    fn refuse_handshake(&mut self, slot: usize, r: &Refusal) {
        if r.code == ErrorCode::AuthFailed {
            self.stats.auth_refused += 1;
        }
        self.refuse_source(slot, r.code, &r.text);
    }

    /// Sends ERROR and closes this source only.
    pub(super) fn refuse_source(&mut self, slot: usize, code: ErrorCode, text: &str) {
        let epoch = self.dir.epoch;
        let Some(conn) = self.sources[slot].as_mut() else {
            return;
        };
        let peer = conn.peer;
        let _ = self.enc.error(&mut conn.wbuf, epoch, code, text);
        let _ = conn.flush();
        self.log_limited(format_args!(
            "closing connection from {peer}: {} {text}",
            code.name()
        ));
        self.close_source(slot, None);
    }

    pub(super) fn close_source(&mut self, slot: usize, why: Option<String>) {
        if let Some(Stream::Link(_)) = self.sources[slot].as_ref().map(|c| &c.stream) {
            self.fatal = Some(format!(
                "an in-process link from another shard failed: {}",
                why.as_deref().unwrap_or("closed")
            ));
            return;
        }
        if let Some(mut conn) = self.sources[slot].take() {
            if let Some(why) = why {
                let what = if conn.node_port {
                    "node connection from"
                } else {
                    "source"
                };
                self.log_limited(format_args!("{what} {} lost: {why}", conn.peer));
            }
            conn.stream.deregister(self.poll.registry());
            if let Some(shim) = conn.shim.take() {
                self.retire_shim(*shim);
            }
        }
        self.core.sessions_mut().closed(slot);
    }

    /// Closes established connections that leave a frame incomplete for
    /// over `limits.frame_timeout_ms` (checked every tenth of it).
    /// Handshakes are timed by the core (`handshakes_expired`).
    pub(super) fn sweep_stalled(&mut self, now: Instant) {
        let every = Duration::from_millis(self.cfg.limits.frame_timeout_ms) / 10;
        if now.duration_since(self.last_sweep) < every {
            return;
        }
        self.last_sweep = now;
        // An established connection that leaves a frame incomplete (and
        // has nothing more for us to read: not held back by our own
        // backpressure) holds its slot and its buffer: close it.
        let frame_timeout_ns = self.cfg.limits.frame_timeout_ms * 1_000_000;
        let clock = now_ns();
        for slot in 0..self.sources.len() {
            let stalled = self.sources[slot].as_ref().is_some_and(|c| {
                c.state == ConnState::Ready
                    && !c.readable
                    && !c.closing
                    && c.stream.is_socket()
                    && c.partial
                        .is_some_and(|(_, t)| clock.saturating_sub(t) > frame_timeout_ns)
            });
            if stalled {
                self.stats.refused += 1;
                let text = format!(
                    "a frame left incomplete for over limits.frame_timeout_ms ({} ms)",
                    self.cfg.limits.frame_timeout_ms
                );
                self.refuse_source(slot, ErrorCode::LimitExceeded, &text);
            }
        }
    }
}
