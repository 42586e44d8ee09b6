//! Reading the inbound connections: bytes into each decoder (within the
//! core's backpressure), whole frames handed to the core in place, accepted
//! DATA journaled as it arrived, and the ACKs and NACKs the core owes each
//! producer queued and written (after durability: [`Inbound::make_durable`]).

use std::time::{Duration, Instant};

use mio::Registry;
use verity_wire::text::Escaped;
use verity_wire::{Encoder, ErrorCode, FrameView, Kind, HANDSHAKE_MAX_FRAME_LEN};

use super::conn::{Conn, ConnState, READ_CHUNK};
use super::error::{bad_frame_text, WorkerError};
use super::inbound::Inbound;
use super::node::Node;
use super::os::now_ns;
use super::outbound::Outbound;
use super::recovery::Store;
use crate::core::{peer_of, HeldFrom, Input};

/// What reading a batch of input writes to: the store (journal, outbound
/// and dead-letter logs), the outbound paths (frames kept in memory), and
/// the registry a closed connection leaves.
pub(super) struct Sinks<'a> {
    pub(super) reg: &'a Registry,
    pub(super) store: &'a mut Store,
    pub(super) outbound: &'a mut Outbound,
}

impl Inbound {
    /// Reads every readable inbound connection (while the core wants its
    /// input) and handles what it sent.
    pub(super) fn read(&mut self, n: &mut Node, to: &mut Sinks<'_>) -> Result<(), WorkerError> {
        for slot in 0..self.conns.len() {
            let mut budget = READ_CHUNK * 4;
            loop {
                let (wants_src, wants_peer) = (n.core.wants_input(), n.core.wants_peer_input());
                let Some(conn) = self.conns[slot].as_mut() else {
                    break;
                };
                // A node's channel to us produces only sink outputs: it is
                // held back only by the sink and the journal, never by our
                // own channels to other nodes (which could deadlock).
                let wants_input = if conn.node.is_some() {
                    wants_peer
                } else {
                    wants_src
                };
                // Backpressure holds back data, never a handshake: a source
                // still owed its HELLO is read (or it would time out and
                // retry for as long as the sink lags).
                if !wants_input && conn.state == ConnState::Ready {
                    break;
                }
                if !conn.readable || conn.closing || budget == 0 {
                    break;
                }
                // Before its handshake is done a connection may buffer one
                // frame of at most an ERROR's size, nothing more.
                let cap = if conn.state == ConnState::Ready {
                    n.cfg.limits.read_buffer_bytes
                } else {
                    HANDSHAKE_MAX_FRAME_LEN as usize
                };
                let want = READ_CHUNK.min(cap.saturating_sub(conn.dec.buffered()));
                if want == 0 {
                    // A full handshake buffer holds a whole frame: decoded
                    // below. (Established connections always have room:
                    // read_buffer_bytes >= 2 * max_frame_len.)
                    self.decode(slot, n, to)?;
                    break;
                }
                budget = budget.saturating_sub(want);
                let filled = conn.fill(want);
                n.batch_clock_ns = now_ns();
                match filled {
                    Ok(true) => {}
                    Ok(false) => {
                        // Peer closed: process what it sent, ACK it (a
                        // half-closed peer still reads), then drop it.
                        conn.readable = false;
                        self.decode(slot, n, to)?;
                        self.make_durable(n, to.store, to.outbound)?;
                        if let Some(c) = self.conns[slot].as_mut() {
                            c.queue_acks(n.epoch);
                            let _ = c.flush();
                        }
                        self.close(slot, n, to.reg, None);
                        break;
                    }
                    Err(e) => {
                        let peer = conn.peer;
                        let why = match super::tls::failure(&e) {
                            Some(reason) => {
                                n.stats.tls_failed += 1;
                                format!("TLS: {reason}")
                            }
                            None => format!("read from {peer}: {e}"),
                        };
                        self.close(slot, n, to.reg, Some(why));
                        break;
                    }
                }
                self.decode(slot, n, to)?;
            }
        }
        Ok(())
    }

    /// Handles every whole frame buffered for connection `slot`, in place:
    /// each accepted run of DATA frames is appended to the journal as one
    /// record (the frames as they arrived), the outputs of the whole batch
    /// as one outbound record.
    fn decode(&mut self, slot: usize, n: &mut Node, to: &mut Sinks<'_>) -> Result<(), WorkerError> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        if conn.closing || conn.dec.poisoned().is_some() {
            return Ok(());
        }
        let mut max = conn.dec.max_frame_len();
        // Take the bytes out so frames can be viewed while `self` is borrowed.
        let buf = std::mem::take(conn.dec.read_buf());
        n.fx.clear();
        let mut at = 0;
        let mut run_start = 0;
        let mut bad = None;
        while at < buf.len() {
            let view = match verity_wire::parse(&buf[at..], max) {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            };
            let stride = view.stride;
            let journal = self.frame(slot, n, to.reg, view);
            if !journal {
                to.store.journal_run(n, &buf[run_start..at])?;
                run_start = at + stride;
            }
            at += stride;
            if journal && n.core.held_ready() {
                // Frames kept after a gap follow this one: journaled after it.
                to.store.journal_run(n, &buf[run_start..at])?;
                run_start = at;
                self.take_held(n, to)?;
            }
            let Some(conn) = self.conns[slot].as_ref().filter(|c| !c.closing) else {
                break;
            };
            if !journal {
                // A completed handshake lifts the frame bound.
                max = conn.dec.max_frame_len();
            }
        }
        to.store.journal_run(n, &buf[run_start..at])?;
        let clock = n.batch_clock_ns;
        to.store.log_effects(n, &mut to.outbound.paths, clock)?;
        to.outbound.keep_fresh(n);
        n.fx.clear();
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        *conn.dec.read_buf() = buf;
        conn.dec.consume(at);
        // An incomplete frame left behind: since when (the same frame as
        // before keeps its time; see `sweep_stalled`).
        let pos = conn.dec.position();
        conn.partial = match conn.partial {
            _ if conn.dec.buffered() == 0 => None,
            Some((p, t)) if p == pos => Some((p, t)),
            _ => Some((pos, n.batch_clock_ns)),
        };
        if let Some(e) = bad {
            conn.dec.poison(e);
            let at = conn.dec.position();
            n.stats.bad_frames += 1;
            self.refuse(slot, n, to.reg, e.error_code(), &bad_frame_text(&e, at));
        }
        Ok(())
    }

    /// Handles the frames kept after a gap whose turn has come (the core
    /// hands them out in seq order) and journals them as one record.
    fn take_held(&mut self, n: &mut Node, to: &mut Sinks<'_>) -> Result<(), WorkerError> {
        let mut held = std::mem::take(&mut self.held);
        held.clear();
        let max = n.cfg.limits.max_frame_len;
        let mut at = 0;
        while let Some(from) = n.core.take_held(&mut held) {
            // The core keeps frames as they arrived, validated.
            let Ok(Some(frame)) = verity_wire::parse(&held[at..], max) else {
                held.truncate(at);
                break;
            };
            let stride = frame.stride;
            let now_ns = n.batch_clock_ns;
            let input = match from {
                HeldFrom::Source => Input::SourceData { frame, now_ns },
                HeldFrom::Node(from) => Input::PeerData {
                    from,
                    frame,
                    now_ns,
                },
            };
            n.fx.journal_input = None;
            n.core.handle(input, &mut n.fx);
            n.fx.violation = None;
            if !n.fx.acks.is_empty() || !n.fx.nacks.is_empty() {
                self.send_acks_nacks(n);
                n.fx.acks.clear();
                n.fx.nacks.clear();
            }
            if n.fx.journal_input.is_none() {
                held.truncate(at);
                break;
            }
            at += stride;
        }
        let journaled = to.store.journal_run(n, &held);
        self.held = held;
        journaled
    }

    /// Handles one frame from an inbound connection (a source, or another
    /// node's channel to us); `true` when it is an accepted DATA frame the
    /// caller must journal.
    fn frame(&mut self, slot: usize, n: &mut Node, reg: &Registry, frame: FrameView<'_>) -> bool {
        let Some(conn) = self.conns[slot].as_mut() else {
            return false;
        };
        let kind = frame.kind();
        let (node, channel) = (conn.node, conn.channel);
        match (conn.state, kind) {
            (ConnState::AwaitHello, Kind::Hello) => self.hello(slot, n, reg, frame),
            (ConnState::AwaitAuth, Kind::Hello) => self.answer(slot, n, reg, frame),
            (ConnState::Ready, Kind::Data) => {
                let now = n.batch_clock_ns;
                let ch = frame.header.channel();
                let input = match node {
                    Some(from) => {
                        if peer_of(ch) != Some((from, n.core.node())) {
                            let text =
                                format!("channel {ch} is not node {from}'s channel to this node");
                            self.refuse(slot, n, reg, ErrorCode::UnknownChannel, &text);
                            return false;
                        }
                        Input::PeerData {
                            from,
                            frame,
                            now_ns: now,
                        }
                    }
                    None => {
                        if channel != Some(ch) {
                            let text = format!(
                                "DATA on channel {ch}: this connection produces channel {} (its HELLO's node id)",
                                channel.unwrap_or(0)
                            );
                            self.refuse(slot, n, reg, ErrorCode::UnknownChannel, &text);
                            return false;
                        }
                        Input::SourceData { frame, now_ns: now }
                    }
                };
                // Outputs and dead letters accumulate in `fx` over the whole
                // batch; ACKs and NACKs go out (are queued) per frame.
                n.fx.journal_input = None;
                n.core.handle(input, &mut n.fx);
                if let Some(v) = n.fx.violation.take() {
                    self.refuse(slot, n, reg, ErrorCode::Protocol, &v.to_string());
                    return false;
                }
                if !n.fx.acks.is_empty() || !n.fx.nacks.is_empty() {
                    self.send_acks_nacks(n);
                    n.fx.acks.clear();
                    n.fx.nacks.clear();
                }
                return n.fx.journal_input.is_some();
            }
            (ConnState::Ready, Kind::Heartbeat) => {}
            (_, Kind::Error) => {
                let (code, text) = frame.error().unwrap_or((ErrorCode::Internal, ""));
                let peer = self.conns[slot].as_ref().map(|c| c.peer);
                n.log_limited(
                    "peer_error",
                    format_args!(
                        "connection from {} sent ERROR {}: {}",
                        peer.map_or_else(String::new, |p| p.to_string()),
                        code.name(),
                        Escaped(text)
                    ),
                );
                self.close(slot, n, reg, None);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in connection state {state:?}");
                self.refuse(slot, n, reg, ErrorCode::Protocol, &text);
            }
        }
        false
    }

    /// Journal durability (the store's word) → the core releases ACKs to
    /// the producers and outputs to the consumers; the ACKs are queued.
    pub(super) fn make_durable(
        &mut self,
        n: &mut Node,
        store: &mut Store,
        outbound: &Outbound,
    ) -> Result<(), WorkerError> {
        let Some(records) = store.durable_records(n, &outbound.paths)? else {
            return Ok(());
        };
        n.fx.clear();
        n.core.handle(Input::Durable { records }, &mut n.fx);
        self.send_acks_nacks(n);
        Ok(())
    }

    /// Queues the ACKs and NACKs in the node's effects on the connections
    /// of their channels.
    pub(super) fn send_acks_nacks(&mut self, n: &mut Node) {
        for &(channel, seq) in &n.fx.acks {
            if let Some(conn) = self.conn_for_channel(n, channel) {
                // An ACK covers every seq below it: only the highest owed
                // per channel goes out (see `flush`).
                match conn.acks.iter_mut().find(|(c, _)| *c == channel) {
                    Some(owed) => owed.1 = owed.1.max(seq),
                    None => conn.acks.push((channel, seq)),
                }
                if conn.acks_since.is_none() {
                    conn.acks_since = Some(Instant::now());
                }
            }
        }
        let nacks = std::mem::take(&mut n.fx.nacks);
        crate::core::nack_frames(&nacks, |channel, seq, ranges| {
            if let Some(conn) = self.conn_for_channel(n, channel) {
                let enc = Encoder::default();
                let _ = enc.nack_ranges(&mut conn.wbuf, channel, n.epoch, seq, ranges);
            }
        });
        n.fx.nacks = nacks;
    }

    fn conn_for_channel(&mut self, n: &Node, channel: u32) -> Option<&mut Conn> {
        let slot = n.core.sessions().conn_for_channel(channel)?;
        self.conns.get_mut(slot)?.as_mut()
    }

    /// Writes what each inbound connection owes its producer. Owed ACKs go
    /// with anything else queued, once held `limits.ack_delay_us` at `now`,
    /// or at once with `all`.
    pub(super) fn flush(&mut self, n: &mut Node, reg: &Registry, all: bool, now: Instant) {
        let delay = Duration::from_micros(n.cfg.limits.ack_delay_us);
        for slot in 0..self.conns.len() {
            if let Some(c) = self.conns[slot].as_mut() {
                if all
                    || !c.wbuf.is_empty()
                    || c.acks_since.is_none_or(|t| now.duration_since(t) >= delay)
                {
                    c.queue_acks(n.epoch);
                }
            }
            let failed = match self.conns[slot].as_mut() {
                Some(c) if c.wants_flush() => c.flush().err(),
                _ => None,
            };
            if let Some(e) = failed {
                self.close(slot, n, reg, Some(format!("write: {e}")));
            }
        }
    }
}
