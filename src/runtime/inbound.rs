//! The inbound connections ([`Inbound`]: sources, and other nodes'
//! channels to this node): accepting them (per-address cap, the handshake
//! pool), their side of the HELLO exchange, admitting a node or a source as
//! the core's sessions decide, refusing and closing them, and the frame
//! timeout. Reading them is in `ingest.rs`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rustls::ServerConfig;
use verity_wire::handshake::{Acceptor, Refusal};
use verity_wire::{ErrorCode, FrameView, Role, HANDSHAKE_MAX_FRAME_LEN};

use super::conn::{Conn, ConnState, Handshake, Stream, FIRST_SOURCE};
use super::faults::FaultState;
use super::node::Node;
use super::os::{now_ns, random_challenge, tune_socket};
use super::tls::TlsConn;
use crate::config::SourceHome;
use crate::core::Producer;

/// The node's inbound connections and the listeners they arrive on.
pub(super) struct Inbound {
    /// Inbound connections by slot: sources, and other nodes' channels to
    /// us (a slot is the sessions' connection id).
    pub(super) conns: Vec<Option<Conn>>,
    /// Source listener (shard 0 of a worker only).
    pub(super) listener: Option<TcpListener>,
    /// Node-to-node listener (cluster only).
    pub(super) peer_listener: Option<TcpListener>,
    /// `[tls]`: server side of the source listener and of the node-to-node
    /// listener.
    pub(super) tls_sources: Option<Arc<ServerConfig>>,
    pub(super) tls_nodes: Option<Arc<ServerConfig>>,
    /// When `sweep_stalled` last looked.
    last_sweep: Instant,
    /// Frames kept after a gap whose turn came, being handled (reused).
    pub(super) held: Vec<u8>,
}

impl Inbound {
    pub(super) fn new(
        conns: Vec<Option<Conn>>,
        listener: Option<TcpListener>,
        peer_listener: Option<TcpListener>,
    ) -> Inbound {
        Inbound {
            conns,
            listener,
            peer_listener,
            tls_sources: None,
            tls_nodes: None,
            last_sweep: Instant::now(),
            held: Vec::new(),
        }
    }

    /// Accepts connections on the source listener or (`peers`) the
    /// node-to-node listener. A connection starts in the handshake pool
    /// (`limits.max_handshakes`, the oldest closed when it is full), which
    /// established connections never share, and may buffer only what a
    /// handshake needs; one remote address holds at most
    /// `limits.max_connections_per_address` connections.
    pub(super) fn accept(
        &mut self,
        n: &mut Node,
        reg: &Registry,
        faults: Option<&mut FaultState>,
        peers: bool,
    ) {
        let mut faults = faults;
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
                    n.log_limited("accept", format_args!("accept failed: {e}"));
                    return;
                }
            };
            self.take_connection(n, reg, faults.as_deref_mut(), stream, peer, peers);
        }
    }

    /// Takes a connection accepted on the source listener or (`peers`) the
    /// node-to-node listener into the handshake pool, unless its address
    /// holds too many connections already.
    fn take_connection(
        &mut self,
        n: &mut Node,
        reg: &Registry,
        faults: Option<&mut FaultState>,
        mut stream: TcpStream,
        peer: SocketAddr,
        peers: bool,
    ) {
        let tls = if peers {
            self.tls_nodes.clone()
        } else {
            self.tls_sources.clone()
        };
        let from_there = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.stream.is_socket() && c.peer.ip() == peer.ip())
            .count();
        if from_there >= n.cfg.limits.max_connections_per_address {
            n.stats.refused += 1;
            let why = "too many connections from this address (limits.max_connections_per_address)";
            refuse_at_accept(n, &mut stream, peer, why, tls.is_some());
            return;
        }
        self.make_handshake_room(n, reg);
        let _ = stream.set_nodelay(true);
        tune_socket(&stream, n.cfg.limits.socket_buffer_bytes);
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = reg.register(&mut stream, Token(FIRST_SOURCE + slot), interest) {
            n.log_limited("register", format_args!("cannot register {peer}: {e}"));
            return;
        }
        n.stats.sources_accepted += 1;
        let stream = match tls {
            None => Stream::Tcp(stream),
            Some(config) => match TlsConn::server(&config, stream) {
                Ok(t) => Stream::Tls(Box::new(t)),
                Err(e) => {
                    n.log_limited("tls", format_args!("TLS with {peer}: {e}"));
                    return;
                }
            },
        };
        // Until the handshake is done: frames up to an ERROR's size,
        // a buffer of a few KiB.
        let mut conn = Conn::over(stream, peer, HANDSHAKE_MAX_FRAME_LEN, 8 << 10);
        conn.node_port = peers;
        conn.shim = faults.and_then(|f| f.inbound_shim(n.core.node(), peers));
        self.conns[slot] = Some(conn);
        // Its handshake is timed by the core (limits.handshake_timeout_ms).
        let now = n.timer_ns(Instant::now());
        n.core.sessions_mut().opened(slot, now);
    }

    /// Closes a connection still in its handshake when the handshake pool
    /// is full (`limits.max_handshakes`).
    fn make_handshake_room(&mut self, n: &mut Node, reg: &Registry) {
        let handshaking: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].as_ref().is_some_and(Conn::in_handshake))
            .collect();
        if handshaking.len() < n.cfg.limits.max_handshakes {
            return;
        }
        // A handshake makes room: the oldest of the address with the most
        // handshakes under way. A flood of connections that never finish
        // theirs cannot keep a real peer out, even when it comes from many
        // addresses.
        let ip_of = |i: usize| self.conns[i].as_ref().map(|c| c.peer.ip());
        let busiest = handshaking
            .iter()
            .filter_map(|&i| ip_of(i))
            .max_by_key(|ip| {
                handshaking
                    .iter()
                    .filter(|&&j| ip_of(j) == Some(*ip))
                    .count()
            });
        let oldest = handshaking
            .iter()
            .filter(|&&i| busiest.is_some() && ip_of(i) == busiest)
            .min_by_key(|&&i| self.conns[i].as_ref().map(|c| c.opened))
            .copied();
        if let Some(oldest) = oldest {
            n.stats.refused += 1;
            self.refuse(
                oldest,
                n,
                reg,
                ErrorCode::LimitExceeded,
                "handshake not complete and the handshake pool is full (limits.max_handshakes)",
            );
        }
    }

    /// A connection's first HELLO: a source on the source port, another
    /// node on the node-to-node port. Answers it with our HELLO (our
    /// challenge, our answer to theirs).
    pub(super) fn hello(
        &mut self,
        slot: usize,
        n: &mut Node,
        reg: &Registry,
        frame: FrameView<'_>,
    ) {
        let Some(nodes) = self.conns[slot].as_ref().map(|c| c.node_port) else {
            return;
        };
        let Some(challenge) = random_challenge() else {
            let text = "no random source for a challenge";
            self.refuse(slot, n, reg, ErrorCode::Internal, text);
            return;
        };
        let roles: &[Role] = if nodes {
            &[Role::Node]
        } else {
            &[Role::Source]
        };
        let mut acceptor = Acceptor::new(n.me(), challenge);
        let secret = n.secret(nodes);
        let answered = n
            .core
            .sessions()
            .accept_hello(&mut acceptor, &frame, secret, roles);
        let hello = match answered {
            Ok(h) => h,
            Err(r) => {
                self.refuse_handshake(slot, n, reg, &r);
                return;
            }
        };
        if let Some(conn) = self.conns[slot].as_mut() {
            let _ = n.enc.hello(&mut conn.wbuf, n.epoch, &hello);
            conn.handshake = Some(Handshake::Accepting(acceptor));
            conn.state = ConnState::AwaitAuth;
        }
    }

    /// The peer's answer to our challenge: the handshake is done. A node's
    /// connection now carries its channel to us; a source's, the channel its
    /// HELLO named (if this worker is its home and no one else produces it).
    /// Either way we say RESUME.
    pub(super) fn answer(
        &mut self,
        slot: usize,
        n: &mut Node,
        reg: &Registry,
        frame: FrameView<'_>,
    ) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let nodes = conn.node_port;
        let Some(Handshake::Accepting(acceptor)) = conn.handshake.take() else {
            self.refuse(
                slot,
                n,
                reg,
                ErrorCode::Protocol,
                "an answer without a challenge",
            );
            return;
        };
        let peer = match acceptor.on_answer(&frame, n.secret(nodes)) {
            Ok(p) => p,
            Err(r) => {
                self.refuse_handshake(slot, n, reg, &r);
                return;
            }
        };
        let established = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.state == ConnState::Ready && c.stream.is_socket())
            .count();
        let is_link = self.conns[slot]
            .as_ref()
            .is_some_and(|c| matches!(c.stream, Stream::Link(_)));
        if !is_link && established >= n.cfg.limits.max_connections {
            n.stats.refused += 1;
            let text = "too many established connections (limits.max_connections)";
            self.refuse(slot, n, reg, ErrorCode::LimitExceeded, text);
            return;
        }
        if nodes {
            self.admit_node(slot, n, reg, peer.node_id, peer.epoch);
        } else {
            self.admit_source(slot, n, reg, peer.node_id);
        }
    }

    /// Another node proved who it is: fence older epochs, replace an older
    /// connection of it, say RESUME (and ACK what is durable already).
    fn admit_node(&mut self, slot: usize, n: &mut Node, reg: &Registry, node: u32, epoch: u32) {
        match n.core.sessions_mut().admit_node(slot, node, epoch) {
            Err(r) => {
                self.refuse(slot, n, reg, r.code, &r.text);
                return;
            }
            // A newer connection from that node replaces an older one.
            Ok(Some(old)) => {
                let why = format!("replaced by a newer connection from node {node}");
                self.close(old, n, reg, Some(why));
            }
            Ok(None) => {}
        }
        n.stats.peer_connects += 1;
        let max = n.cfg.limits.max_frame_len;
        if let Some(conn) = self.conns[slot].as_mut() {
            // RESUME where to go on, and ACK what it may drop.
            n.core
                .greet(Producer::Node(node), n.epoch, &n.enc, &mut conn.wbuf);
            conn.node = Some(node);
            conn.state = ConnState::Ready;
            conn.dec.set_max_frame_len(max);
            tracing::info!(
                event = "peer_connected",
                peer_node = node,
                peer_epoch = epoch,
                "node {node} (epoch {epoch}) connected from {}",
                conn.peer
            );
        }
    }

    /// A source proved it holds the client secret (if one is configured):
    /// its HELLO's node id names the source channel it produces. This
    /// worker must be that channel's home and no other connection may be
    /// producing it; then the connection carries that channel, and we say
    /// RESUME (the channel's `delivered`).
    fn admit_source(&mut self, slot: usize, n: &mut Node, reg: &Registry, channel: u32) {
        // A redirect, as Kafka answers "not leader": the text is the home's
        // source address and nothing else.
        let elsewhere = source_home(n, channel).map(|a| a.to_string());
        let conns = &self.conns;
        let holder = |c: usize| conns.get(c)?.as_ref().map(|c| c.peer.to_string());
        let admitted = n
            .core
            .sessions_mut()
            .admit_source(slot, channel, elsewhere, holder);
        if let Err(r) = admitted {
            self.refuse(slot, n, reg, r.code, &r.text);
            return;
        }
        let max = n.cfg.limits.max_frame_len;
        if let Some(conn) = self.conns[slot].as_mut() {
            n.core
                .greet(Producer::Source(channel), n.epoch, &n.enc, &mut conn.wbuf);
            conn.channel = Some(channel);
            conn.state = ConnState::Ready;
            conn.dec.set_max_frame_len(max);
        }
    }

    /// A HELLO exchange that failed: ERROR with the refusal, and close.
    fn refuse_handshake(&mut self, slot: usize, n: &mut Node, reg: &Registry, r: &Refusal) {
        n.count_refusal(r.code);
        self.refuse(slot, n, reg, r.code, &r.text);
    }

    /// Sends ERROR and closes this connection only.
    pub(super) fn refuse(
        &mut self,
        slot: usize,
        n: &mut Node,
        reg: &Registry,
        code: ErrorCode,
        text: &str,
    ) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let peer = conn.peer;
        let _ = n.enc.error(&mut conn.wbuf, n.epoch, code, text);
        let _ = conn.flush();
        n.log_limited(
            code.name(),
            format_args!("closing connection from {peer}: {} {text}", code.name()),
        );
        self.close(slot, n, reg, None);
    }

    /// Closes connection `slot` (`why`: logged, when it is news).
    pub(super) fn close(&mut self, slot: usize, n: &mut Node, reg: &Registry, why: Option<String>) {
        if let Some(Stream::Link(_)) = self.conns[slot].as_ref().map(|c| &c.stream) {
            n.fatal = Some(format!(
                "an in-process link from another shard failed: {}",
                why.as_deref().unwrap_or("closed")
            ));
            return;
        }
        if let Some(mut conn) = self.conns[slot].take() {
            if let Some(why) = why {
                let what = if conn.node_port {
                    "node connection from"
                } else {
                    "source"
                };
                n.log_limited("lost", format_args!("{what} {} lost: {why}", conn.peer));
            }
            conn.stream.deregister(reg);
            if let Some(shim) = conn.shim.take() {
                n.retired.push(*shim);
            }
        }
        n.core.sessions_mut().closed(slot);
    }

    /// Closes established connections that leave a frame incomplete for
    /// over `limits.frame_timeout_ms` (checked every tenth of it).
    /// Handshakes are timed by the core (`Effects::handshake_expired`).
    pub(super) fn sweep_stalled(&mut self, n: &mut Node, reg: &Registry, now: Instant) {
        let every = Duration::from_millis(n.cfg.limits.frame_timeout_ms) / 10;
        if now.duration_since(self.last_sweep) < every {
            return;
        }
        self.last_sweep = now;
        // An established connection that leaves a frame incomplete (and
        // has nothing more for us to read: not held back by our own
        // backpressure) holds its slot and its buffer: close it.
        let frame_timeout_ns = n.cfg.limits.frame_timeout_ms * 1_000_000;
        let clock = now_ns();
        for slot in 0..self.conns.len() {
            let stalled = self.conns[slot].as_ref().is_some_and(|c| {
                c.state == ConnState::Ready
                    && !c.readable
                    && !c.closing
                    && c.stream.is_socket()
                    && c.partial
                        .is_some_and(|(_, t)| clock.saturating_sub(t) > frame_timeout_ns)
            });
            if stalled {
                n.stats.refused += 1;
                let text = format!(
                    "a frame left incomplete for over limits.frame_timeout_ms ({} ms)",
                    n.cfg.limits.frame_timeout_ms
                );
                self.refuse(slot, n, reg, ErrorCode::LimitExceeded, &text);
            }
        }
    }
}

/// The source address of the home of source `channel`, when it is another
/// worker (`None`: this one).
fn source_home(n: &Node, channel: u32) -> Option<SocketAddr> {
    match n.cfg.source_homes.get((channel as usize).checked_sub(1)?)? {
        SourceHome::Here => None,
        SourceHome::Elsewhere { sources, .. } => Some(*sources),
    }
}

/// Tells a connection refused at accept why (best effort; not on a TLS
/// port, where the peer expects a TLS handshake first and takes plain
/// bytes for tampering) and closes it.
fn refuse_at_accept(n: &mut Node, stream: &mut TcpStream, peer: SocketAddr, why: &str, tls: bool) {
    if !tls {
        let mut b = BytesMut::new();
        let _ = n.enc.error(&mut b, n.epoch, ErrorCode::LimitExceeded, why);
        let _ = stream.write(&b);
    }
    // Whatever it sent already (its HELLO) is read and dropped, so the
    // close is a FIN after our ERROR, not a reset that could discard it.
    let _ = stream.read(&mut [0u8; 512]);
    n.log_limited("refused", format_args!("refused {peer}: {why}"));
}
