//! Reading inbound connections: bytes into each decoder (within the
//! core's backpressure), whole frames handed to the core in place, accepted
//! DATA journaled as it arrived, and the ACKs and NACKs the core owes each
//! producer queued and written.

use std::time::{Duration, Instant};

use verity_wire::text::Escaped;
use verity_wire::{Encoder, ErrorCode, FrameView, Kind, HANDSHAKE_MAX_FRAME_LEN};

use super::conn::{Conn, ConnState};
use super::error::{bad_frame_text, WorkerError};
use super::os::now_ns;
use super::worker::{Worker, READ_CHUNK};
use crate::core::{peer_of, Input};
use crate::log::Durability;
use crate::storage::RecordKind;

impl Worker {
    pub(super) fn read_sources(&mut self) -> Result<(), WorkerError> {
        for slot in 0..self.sources.len() {
            let mut budget = READ_CHUNK * 4;
            loop {
                let (wants_src, wants_peer) =
                    (self.core.wants_input(), self.core.wants_peer_input());
                let Some(conn) = self.sources[slot].as_mut() else {
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
                    self.cfg.limits.read_buffer_bytes
                } else {
                    HANDSHAKE_MAX_FRAME_LEN as usize
                };
                let want = READ_CHUNK.min(cap.saturating_sub(conn.dec.buffered()));
                if want == 0 {
                    // A full handshake buffer holds a whole frame: decoded
                    // below. (Established connections always have room:
                    // read_buffer_bytes >= 2 * max_frame_len.)
                    self.decode_source(slot)?;
                    break;
                }
                budget = budget.saturating_sub(want);
                let filled = conn.fill(want);
                self.batch_clock_ns = now_ns();
                match filled {
                    Ok(true) => {}
                    Ok(false) => {
                        // Peer closed: process what it sent, ACK it (a
                        // half-closed peer still reads), then drop it.
                        conn.readable = false;
                        self.decode_source(slot)?;
                        self.make_durable()?;
                        let epoch = self.dir.epoch;
                        if let Some(c) = self.sources[slot].as_mut() {
                            c.queue_acks(epoch);
                            let _ = c.flush();
                        }
                        self.close_source(slot, None);
                        break;
                    }
                    Err(e) => {
                        let peer = conn.peer;
                        let why = match super::tls::failure(&e) {
                            Some(reason) => {
                                self.stats.tls_failed += 1;
                                format!("TLS: {reason}")
                            }
                            None => format!("read from {peer}: {e}"),
                        };
                        self.close_source(slot, Some(why));
                        break;
                    }
                }
                self.decode_source(slot)?;
            }
        }
        Ok(())
    }

    /// Handles every whole frame buffered for a source, in place: each
    /// accepted run of DATA frames is appended to the journal as one record
    /// (the frames as they arrived), the outputs of the whole batch as one
    /// outbound record.
    fn decode_source(&mut self, slot: usize) -> Result<(), WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(());
        };
        if conn.closing || conn.dec.poisoned().is_some() {
            return Ok(());
        }
        let mut max = conn.dec.max_frame_len();
        // Take the bytes out so frames can be viewed while `self` is borrowed.
        let buf = std::mem::take(conn.dec.read_buf());
        self.fx.clear();
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
            let journal = self.source_frame(slot, view)?;
            if !journal {
                self.journal_run(&buf[run_start..at])?;
                run_start = at + stride;
            }
            at += stride;
            let Some(conn) = self.sources[slot].as_ref().filter(|c| !c.closing) else {
                break;
            };
            if !journal {
                // A completed handshake lifts the frame bound.
                max = conn.dec.max_frame_len();
            }
        }
        self.journal_run(&buf[run_start..at])?;
        self.log_effects(self.batch_clock_ns)?;
        self.keep_fresh();
        self.fx.clear();
        let Some(conn) = self.sources[slot].as_mut() else {
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
            _ => Some((pos, self.batch_clock_ns)),
        };
        if let Some(e) = bad {
            conn.dec.poison(e);
            let at = conn.dec.position();
            self.stats.bad_frames += 1;
            self.refuse_source(slot, e.error_code(), &bad_frame_text(&e, at));
        }
        Ok(())
    }

    /// Appends a run of accepted DATA frames to the journal as one record.
    fn journal_run(&mut self, run: &[u8]) -> Result<(), WorkerError> {
        if run.is_empty() {
            return Ok(());
        }
        let kind = RecordKind::Input.code();
        let p = self.logs.journal.append(kind, self.batch_clock_ns, run)?;
        if let Some(a) = self.logs.audit.as_mut() {
            a.add(
                p,
                self.logs.journal.end_position(),
                kind,
                self.batch_clock_ns,
                run,
            );
        }
        if self.cfg.durability == Durability::Fsync {
            let end = p + (crate::log::format::RECORD_HEADER_BYTES + run.len()) as u64;
            self.logs
                .undurable
                .push_back((self.core.journal_next(), end));
        }
        Ok(())
    }

    /// Handles one frame from an inbound connection (a source, or another
    /// node's channel to us); `Ok(true)` when it is an accepted DATA frame
    /// the caller must journal.
    fn source_frame(&mut self, slot: usize, frame: FrameView<'_>) -> Result<bool, WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(false);
        };
        let kind = frame.kind();
        let (node, channel) = (conn.node, conn.channel);
        match (conn.state, kind) {
            (ConnState::AwaitHello, Kind::Hello) => return self.inbound_hello(slot, frame),
            (ConnState::AwaitAuth, Kind::Hello) => return self.inbound_answer(slot, frame),
            (ConnState::Ready, Kind::Data) => {
                let now = self.batch_clock_ns;
                let ch = frame.header.channel();
                let input = match node {
                    Some(from) => {
                        if peer_of(ch) != Some((from, self.core.node())) {
                            let text =
                                format!("channel {ch} is not node {from}'s channel to this node");
                            self.refuse_source(slot, ErrorCode::UnknownChannel, &text);
                            return Ok(false);
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
                            self.refuse_source(slot, ErrorCode::UnknownChannel, &text);
                            return Ok(false);
                        }
                        Input::SourceData { frame, now_ns: now }
                    }
                };
                // Outputs and dead letters accumulate in `fx` over the whole
                // batch; ACKs and NACKs go out (are queued) per frame.
                self.fx.journal_input = None;
                self.core.handle(input, &mut self.fx);
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_source(slot, ErrorCode::Protocol, &v.to_string());
                    return Ok(false);
                }
                if !self.fx.acks.is_empty() || !self.fx.nacks.is_empty() {
                    self.send_acks_nacks();
                    self.fx.acks.clear();
                    self.fx.nacks.clear();
                }
                return Ok(self.fx.journal_input.is_some());
            }
            (ConnState::Ready, Kind::Heartbeat) => {}
            (_, Kind::Error) => {
                let (code, text) = frame.error().unwrap_or((ErrorCode::Internal, ""));
                let peer = self.sources[slot].as_ref().map(|c| c.peer);
                self.log_limited(format_args!(
                    "connection from {} sent ERROR {}: {}",
                    peer.map_or_else(String::new, |p| p.to_string()),
                    code.name(),
                    Escaped(text)
                ));
                self.close_source(slot, None);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in connection state {state:?}");
                self.refuse_source(slot, ErrorCode::Protocol, &text);
            }
        }
        Ok(false)
    }

    pub(super) fn send_acks_nacks(&mut self) {
        let epoch = self.dir.epoch;
        for i in 0..self.fx.acks.len() {
            let (channel, seq) = self.fx.acks[i];
            if let Some(conn) = self.conn_for_channel(channel) {
                // An ACK covers every seq below it: only the highest owed
                // per channel goes out (see `flush_sources`).
                match conn.acks.iter_mut().find(|(c, _)| *c == channel) {
                    Some(owed) => owed.1 = owed.1.max(seq),
                    None => conn.acks.push((channel, seq)),
                }
                if conn.acks_since.is_none() {
                    conn.acks_since = Some(Instant::now());
                }
            }
        }
        for i in 0..self.fx.nacks.len() {
            let (channel, seq) = self.fx.nacks[i];
            if let Some(conn) = self.conn_for_channel(channel) {
                let _ = Encoder::default().nack(&mut conn.wbuf, channel, epoch, seq);
            }
        }
    }

    fn conn_for_channel(&mut self, channel: u32) -> Option<&mut Conn> {
        let slot = self.core.sessions().conn_for_channel(channel)?;
        self.sources.get_mut(slot)?.as_mut()
    }

    /// Writes what each inbound connection owes its producer. Owed ACKs go
    /// with anything else queued, once held `limits.ack_delay_us` at `now`,
    /// or at once with `all`.
    pub(super) fn flush_sources(&mut self, all: bool, now: Instant) {
        let delay = Duration::from_micros(self.cfg.limits.ack_delay_us);
        let epoch = self.dir.epoch;
        for slot in 0..self.sources.len() {
            if let Some(c) = self.sources[slot].as_mut() {
                if all
                    || !c.wbuf.is_empty()
                    || c.acks_since.is_none_or(|t| now.duration_since(t) >= delay)
                {
                    c.queue_acks(epoch);
                }
            }
            let failed = match self.sources[slot].as_mut() {
                Some(c) if c.wants_flush() => c.flush().err(),
                _ => None,
            };
            if let Some(e) = failed {
                self.close_source(slot, Some(format!("write: {e}")));
            }
        }
    }
}
