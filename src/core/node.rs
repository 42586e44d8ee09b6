//! The node core: inbound channels with `delivered` watermarks, the app, the
//! outbound channels (to the sink and, in a cluster, to every other node)
//! with deterministic seqs and output commit.
//!
//! ## In a cluster
//! A record accepted on a source channel is routed: its key hashes (after
//! the app's stateless steps) map to partitions and partitions to nodes. The
//! node forwards the record, once, on the node-to-node channel of each other
//! node that owns one of its keys (a [`FORWARD_PREFIX_LEN`]-byte prefix
//! carrying the source index and the source seq, then the record as it
//! arrived), and processes the keys it owns itself. A node receiving on a
//! peer channel processes only the keys it owns. Each node's outputs go to
//! the sink on its own channel ([`sink_channel`]), so a key's outputs keep
//! the order of the one node that owns it.

use std::collections::VecDeque;

use verity_wire::frames::{content_crc, frames, FrameSpan};
use verity_wire::reorder::Reorder;
use verity_wire::{Encoder, FrameView, Kind};

use super::channel::{InChannel, OutChannel, Transmit, Verdict, Violation};
use super::ids::{peer_channel, peer_of, FORWARD_PREFIX_LEN};
use super::io::{
    out_at, DeadLetter, Effects, Input, JournalEntry, NodeConfig, NodeStats, Out, OutFrames,
};
use super::session::Sessions;
use crate::app::{App, Meta, Outputs};

/// A run of journal records, consecutive in the journal, whose seqs on one
/// channel are consecutive too: journal index `first + k` has seq
/// `seq + k` on input or output `slot`, for `k` in `0..len` (see
/// `pending_acks` and `pending_release`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Run {
    first: u64,
    slot: u32,
    seq: u64,
    len: u64,
}

/// Runs in journal order: the last one (which the next record most often
/// continues) kept apart from the queue, so extending it is a few compares
/// on a field, not a ring-buffer index computation per record.
#[derive(Debug, Default)]
pub(super) struct Runs {
    queue: VecDeque<Run>,
    /// The newest run; `len` 0 when there is none.
    last: Run,
}

impl Runs {
    /// Adds journal record `index` with seq `seq` on `slot`: to the last
    /// run when it continues it, else as a new run.
    #[inline]
    pub(super) fn push(&mut self, index: u64, slot: u32, seq: u64) {
        let r = &mut self.last;
        if r.first + r.len == index && r.seq + r.len == seq && r.slot == slot && r.len > 0 {
            r.len += 1;
            return;
        }
        if r.len > 0 {
            self.queue.push_back(*r);
        }
        self.last = Run {
            first: index,
            slot,
            seq,
            len: 1,
        };
    }

    /// The oldest run.
    fn front_mut(&mut self) -> Option<&mut Run> {
        match self.queue.front_mut() {
            Some(r) => Some(r),
            None => (self.last.len > 0).then_some(&mut self.last),
        }
    }

    /// Drops the oldest run.
    fn pop_front(&mut self) {
        if self.queue.pop_front().is_none() {
            self.last.len = 0;
        }
    }

    pub(super) fn clear(&mut self) {
        self.queue.clear();
        self.last.len = 0;
    }
}

/// The deterministic state machine of one node.
pub struct NodeCore {
    pub(super) cfg: NodeConfig,
    pub(super) app: Box<dyn App>,
    /// Number of nodes in the cluster (1 for a single node).
    pub(super) nodes: u32,
    /// Input `i < sources` is source `i` on channel `i + 1`; input
    /// `sources + j` is the channel from node `j` (unused for `j` = this node).
    pub(super) inputs: Vec<InChannel>,
    pub(super) sources: usize,
    /// Output 0 is the sink; output `1 + j` the channel to node `j`.
    pub(super) outs: Vec<OutChannel>,
    /// Index the next journal record gets.
    pub(super) journal_next: u64,
    /// Records `< durable` are durable.
    pub(super) durable: u64,
    /// Accepted inputs not yet ACKed, as runs: journal indexes
    /// `first..first + len` hold seqs `seq..seq + len` of one input. One
    /// run per read batch, not one entry per input (a push per input was
    /// ~5% of the node's time).
    pub(super) pending_acks: Runs,
    /// Outputs not yet released, as runs: journal index `first + k`
    /// produced outputs on output `slot` up to seq `seq + k`, for `k` in
    /// `0..len`. One run per read batch when every input has one output
    /// (the doubler), not one entry per input (their push and pop were ~3%
    /// of the node's time).
    pub(super) pending_release: Runs,
    /// Highest seq ACKed per input (to send each ACK once).
    pub(super) acked_in: Vec<u64>,
    /// Inputs whose ACK moved since the last `Durable`.
    pub(super) ack_moved: Vec<bool>,
    pub(super) outputs: Outputs,
    pub(super) hashes: Vec<u64>,
    /// Per node: whether the record being routed has a key it owns.
    pub(super) owners: Vec<bool>,
    pub(super) enc: Encoder,
    /// Who may use which connection: fencing, channel ownership.
    pub(super) sessions: Sessions,
    /// The input whose next seq is a frame kept after a gap
    /// ([`NodeCore::take_held`]).
    pub(super) held_ready: Option<usize>,
    /// NACK ranges of one gap (reused).
    pub(super) nack_scratch: Vec<(u64, u64)>,
    pub stats: NodeStats,
}

impl NodeCore {
    pub fn new(app: Box<dyn App>, cfg: NodeConfig) -> NodeCore {
        let sources = app.sources().len();
        let nodes = cfg.routing.as_ref().map_or(1, |r| r.nodes());
        let n_in = sources + nodes as usize;
        let window = cfg.dedup_window;
        let reorder = || Reorder::new(cfg.reorder_window, cfg.reorder_bytes);
        let mut inputs: Vec<InChannel> = (0..sources as u32)
            .map(|i| InChannel::new(i + 1, window, reorder()))
            .collect();
        // A node's channel to itself is never used: no window.
        inputs.extend((0..nodes).map(|j| {
            let (w, r) = if j == cfg.node {
                (0, Reorder::new(0, 0))
            } else {
                (window, reorder())
            };
            InChannel::new(peer_channel(j, cfg.node), w, r)
        }));
        let mut outs = vec![OutChannel::new(cfg.sink_channel)];
        outs.extend((0..nodes).map(|j| OutChannel::new(peer_channel(cfg.node, j))));
        let sessions = Sessions::new(cfg.node, nodes, sources);
        NodeCore {
            nodes,
            inputs,
            sources,
            outs,
            acked_in: vec![0; n_in],
            ack_moved: vec![false; n_in],
            enc: Encoder::new(cfg.max_frame_len),
            cfg,
            app,
            journal_next: 0,
            durable: 0,
            pending_acks: Runs::default(),
            pending_release: Runs::default(),
            outputs: Outputs::default(),
            hashes: Vec::new(),
            owners: vec![false; nodes as usize],
            sessions,
            held_ready: None,
            nack_scratch: Vec::new(),
            stats: NodeStats::default(),
        }
    }

    /// The sessions: which peer epochs are fenced off, which connection
    /// carries which input channel.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn sessions_mut(&mut self) -> &mut Sessions {
        &mut self.sessions
    }

    pub fn app(&self) -> &dyn App {
        &*self.app
    }
    /// Source channels, in source order.
    pub fn inputs(&self) -> &[InChannel] {
        &self.inputs[..self.sources]
    }
    /// The highest seq of input `channel` that is durable here (and ACKed
    /// or about to be), 0 for none or an unknown channel.
    pub fn input_acked(&self, channel: u32) -> u64 {
        self.input_index(channel).map_or(0, |i| self.acked_in[i])
    }
    /// The channel from node `from` to this node.
    pub fn peer_in(&self, from: u32) -> Option<&InChannel> {
        self.inputs.get(self.sources + from as usize)
    }
    /// The channel to the sink.
    pub fn out(&self) -> &OutChannel {
        &self.outs[0]
    }
    /// Every output this node produced (to the sink and to each peer) is
    /// ACKed by its consumer.
    pub fn all_acked(&self) -> bool {
        self.outs.iter().all(|o| o.unacked() == 0)
    }
    /// The channel from this node to node `to`.
    pub fn peer_out(&self, to: u32) -> Option<&OutChannel> {
        self.outs.get(1 + to as usize)
    }
    pub fn node(&self) -> u32 {
        self.cfg.node
    }
    pub fn nodes(&self) -> u32 {
        self.nodes
    }
    pub fn journal_next(&self) -> u64 {
        self.journal_next
    }
    /// Journal records `< durable_records()` are durable.
    pub fn durable_records(&self) -> u64 {
        self.durable
    }
    /// Every inbound channel: the sources', then one from each node.
    pub fn in_channels(&self) -> &[InChannel] {
        &self.inputs
    }

    /// Whether the node should read more input now (false = backpressure:
    /// the sink, a peer or the journal is too far behind).
    pub fn wants_input(&self) -> bool {
        self.outs.iter().all(|o| o.unacked() < self.cfg.max_unacked)
            && self.journal_next - self.durable < self.cfg.max_undurable
    }

    /// Whether the node should read more from other nodes' channels to it:
    /// those records produce sink outputs only, so they wait for the sink
    /// and the journal, never for this node's channels to other nodes (two
    /// ingress nodes full towards each other would otherwise deadlock).
    pub fn wants_peer_input(&self) -> bool {
        self.outs[0].unacked() < self.cfg.max_unacked
            && self.journal_next - self.durable < self.cfg.max_undurable
    }

    /// Always inlined, the source-data arm only (the per-frame path): an
    /// `Input` built by the caller and read back here went through the
    /// stack as 8-byte stores and 16-byte loads, which the store buffer
    /// cannot forward (~4% of the doubler node's time on that copy).
    #[inline(always)]
    pub fn handle(&mut self, input: Input<'_>, fx: &mut Effects) {
        match input {
            Input::SourceData { frame, now_ns } => {
                debug_assert_eq!(frame.kind(), Kind::Data);
                match self.source_index(frame.header.channel()) {
                    Some(idx) => self.data(idx, frame, now_ns, fx),
                    None => self.stats.unknown_channel += 1,
                }
            }
            other => self.handle_other(other, fx),
        }
    }

    #[inline(never)]
    fn handle_other(&mut self, input: Input<'_>, fx: &mut Effects) {
        match input {
            Input::SourceData { frame, now_ns } => {
                debug_assert_eq!(frame.kind(), Kind::Data);
                match self.source_index(frame.header.channel()) {
                    Some(idx) => self.data(idx, frame, now_ns, fx),
                    None => self.stats.unknown_channel += 1,
                }
            }
            Input::PeerData {
                from,
                frame,
                now_ns,
            } => {
                debug_assert_eq!(frame.kind(), Kind::Data);
                match self.peer_index(frame.header.channel()) {
                    Some(idx) if idx == self.sources + from as usize => {
                        self.data(idx, frame, now_ns, fx)
                    }
                    _ => self.stats.unknown_channel += 1,
                }
            }
            Input::Replay(entry) => self.replay(entry, fx),
            Input::Durable { records } => self.on_durable(records, fx),
            Input::Ack { out, seq } => {
                if let Some(o) = self.out_index(out) {
                    if let Err(v) = self.outs[o].ack(seq) {
                        self.violation(v, fx);
                    }
                }
            }
            Input::Resume { out, delivered } => {
                if let Some(o) = self.out_index(out) {
                    match self.outs[o].resume(delivered) {
                        Ok(from) => fx.resend = Some((out, from)),
                        Err(v) => self.violation(v, fx),
                    }
                }
            }
            Input::Nack { out, from, ranges } => {
                if let Some(o) = self.out_index(out) {
                    let ranges = ranges.iter().map(|r| (r.first.get(), r.last.get()));
                    match self.outs[o].nack(from, ranges) {
                        Ok(from) => fx.resend = from.map(|f| (out, f)),
                        Err(v) => self.violation(v, fx),
                    }
                }
            }
            Input::Sent { out, through } => {
                if let Some(o) = self.out_index(out) {
                    self.outs[o].transmitted(through);
                }
            }
            Input::Disconnected { out } => {
                if let Some(o) = self.out_index(out) {
                    self.outs[o].disconnected();
                }
            }
            Input::Tick { now_ns } => {
                let timeout = self.cfg.resend_timeout_ns;
                for (o, ch) in self.outs.iter_mut().enumerate() {
                    if let Some(from) = ch.tick(now_ns, timeout) {
                        fx.rewound.push((out_at(o), from));
                    }
                }
                let timeout = self.cfg.handshake_timeout_ns;
                self.sessions
                    .expire(now_ns, timeout, &mut fx.handshake_expired);
                // Gaps no frame came to NACK again (the producer's window
                // may be full, or it had nothing more to send).
                let interval = self.cfg.nack_interval_ns;
                let mut ranges = core::mem::take(&mut self.nack_scratch);
                for input in &mut self.inputs {
                    ranges.clear();
                    input
                        .reorder
                        .renack(input.delivered, now_ns, interval, &mut ranges);
                    let channel = input.id;
                    fx.nacks
                        .extend(ranges.iter().map(|&(first, last)| (channel, first, last)));
                }
                self.nack_scratch = ranges;
            }
            Input::Recovered { out, acked } => {
                if let Some(o) = self.out_index(out) {
                    self.outs[o].recovered(acked);
                }
            }
        }
    }

    pub(super) fn violation(&mut self, v: Violation, fx: &mut Effects) {
        self.stats.violations += 1;
        fx.violation = Some(v);
    }

    /// The outbound channel `out` names, if this node has it.
    pub fn out_channel(&self, out: Out) -> Option<&OutChannel> {
        self.outs.get(self.out_index(out)?)
    }

    /// What to hand to the consumer of `out` now (quinn's `poll_transmit`):
    /// released frames from its cursor on, once its RESUME arrived.
    pub fn poll_transmit(&self, out: Out) -> Option<Transmit> {
        self.out_channel(out)?.transmit(self.cfg.send_window)
    }

    /// When the core next needs an [`Input::Tick`] (ns), if a timer runs.
    pub fn poll_timeout(&self) -> Option<u64> {
        let timeout = self.cfg.resend_timeout_ns;
        let resend = self.outs.iter().filter_map(|o| o.deadline(timeout)).min();
        let handshake = self
            .sessions
            .handshake_deadline(self.cfg.handshake_timeout_ns);
        let interval = self.cfg.nack_interval_ns;
        let renack = self
            .inputs
            .iter()
            .filter_map(|i| i.reorder.deadline(interval))
            .min();
        resend.into_iter().chain(handshake).chain(renack).min()
    }

    fn source_index(&self, channel: u32) -> Option<usize> {
        let i = (channel as usize).checked_sub(1)?;
        (i < self.sources).then_some(i)
    }

    /// Input index of a peer channel into this node (not from itself).
    fn peer_index(&self, channel: u32) -> Option<usize> {
        let (from, to) = peer_of(channel)?;
        (to == self.cfg.node && from < self.nodes && from != self.cfg.node)
            .then_some(self.sources + from as usize)
    }

    fn input_index(&self, channel: u32) -> Option<usize> {
        self.source_index(channel)
            .or_else(|| self.peer_index(channel))
    }

    fn out_index(&self, out: Out) -> Option<usize> {
        match out {
            Out::Sink => Some(0),
            Out::Node(to) => (to < self.nodes && to != self.cfg.node).then_some(1 + to as usize),
        }
    }

    fn data(&mut self, idx: usize, frame: FrameView<'_>, now_ns: u64, fx: &mut Effects) {
        let h = frame.header;
        let channel = h.channel();
        match self.inputs[idx].offer(h.seq()) {
            Verdict::Duplicate => {
                #[cfg(feature = "defect-skip-dedup")]
                if idx >= self.sources {
                    // DELIBERATE DEFECT (feature `defect-skip-dedup`, built
                    // only by tests/chaos.rs): a duplicate from another node
                    // is processed again, as if dedup were skipped.
                    let index = self.journal_next.saturating_sub(1);
                    self.accepted(index, idx, h.seq(), h.trace_id(), now_ns, frame.payload, fx);
                    return;
                }
                // Resends carry the bytes of the first send: a duplicate
                // with other content is a second producer, or a changed
                // record; the accepted frame stands.
                if let Some(crc) = self.inputs[idx].remembered(h.seq()) {
                    if crc != content_crc(&frame) {
                        let seq = h.seq();
                        self.violation(Violation::Conflict { channel, seq }, fx);
                        return;
                    }
                }
                self.stats.duplicates += 1;
                // Re-ACK what is durable so the producer can drop its copy.
                let acked = self.acked_in[idx];
                if acked > 0 {
                    fx.acks.push((channel, acked));
                }
            }
            Verdict::Gap => self.gap(idx, frame, now_ns, fx),
            Verdict::Accept => {
                let crc = content_crc(&frame);
                let seq = h.seq();
                let input = &mut self.inputs[idx];
                input.remember(seq, crc);
                // A copy kept after a gap is this frame again (a resend
                // raced it): the copy goes.
                input.reorder.accepted(seq);
                if input.reorder.holds(seq + 1) {
                    self.held_ready = Some(idx);
                }
                let index = self.journal_next;
                self.journal_next += 1;
                fx.journal_input = Some((index, now_ns));
                self.pending_ack(index, idx as u32, seq);
                self.accepted(index, idx, seq, h.trace_id(), now_ns, frame.payload, fx);
            }
        }
    }

    /// [`Input::Replay`] (the replay loop, [`NodeCore::replay_record`],
    /// calls [`NodeCore::replay_frame`] directly).
    pub(super) fn replay(&mut self, entry: JournalEntry<'_>, fx: &mut Effects) {
        match frames(entry.frame).next() {
            Some(frame) => {
                self.replay_frame(entry.index, entry.timestamp_ns, frame, fx);
            }
            None => self.stats.unknown_channel += 1,
        }
    }

    /// Journal record `index` (stamped `timestamp_ns`) through the core
    /// again; `false` when it does not follow: then nothing changed but a
    /// counter.
    ///
    /// The journal holds frames this core accepted, checked in full when
    /// they arrived, and the journal record's checksum covers their bytes:
    /// what is left to check is that the frame belongs here, a DATA frame
    /// of a known channel that follows the watermarks. Anything else means
    /// the journal does not belong to this snapshot (or to this app): it
    /// is counted and skipped.
    #[inline(always)]
    pub(super) fn replay_frame(
        &mut self,
        index: u64,
        timestamp_ns: u64,
        frame: FrameSpan<'_>,
        fx: &mut Effects,
    ) -> bool {
        let h = frame.header;
        if h.kind() != Some(Kind::Data) || h.frame_len() > self.cfg.max_frame_len {
            self.stats.unknown_channel += 1;
            return false;
        }
        let Some(idx) = self.input_index(h.channel()) else {
            self.stats.unknown_channel += 1;
            return false;
        };
        let seq = h.seq();
        if index != self.journal_next || seq != self.inputs[idx].delivered + 1 {
            self.stats.gaps += 1;
            return false;
        }
        let view = FrameView {
            header: h,
            payload: frame.payload(),
            stride: frame.stride,
        };
        let input = &mut self.inputs[idx];
        input.delivered = seq;
        input.remember(seq, content_crc(&view));
        self.journal_next += 1;
        self.pending_ack(index, idx as u32, seq);
        self.accepted(
            index,
            idx,
            seq,
            h.trace_id(),
            timestamp_ns,
            view.payload,
            fx,
        );
        true
    }

    /// Records that journal record `index` is input `input`'s `seq`, to be
    /// ACKed once durable.
    fn pending_ack(&mut self, index: u64, input: u32, seq: u64) {
        self.pending_acks.push(index, input, seq);
    }

    /// Records that journal record `index`'s outputs on output `out` end at
    /// `seq`, to be released once the record is durable.
    fn release_later(&mut self, index: u64, out: u32, seq: u64) {
        self.pending_release.push(index, out, seq);
    }

    /// Journal record `index` was accepted on input `idx`: route and apply it.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn accepted(
        &mut self,
        index: u64,
        idx: usize,
        seq: u64,
        trace_id: u64,
        now_ns: u64,
        payload: &[u8],
        fx: &mut Effects,
    ) {
        self.stats.accepted += 1;
        let channel = self.inputs[idx].id;
        // One call of `apply` below (it is inlined here, and this into the
        // live and the replay paths).
        let (meta, record) = if idx >= self.sources {
            // Forwarded by another node: its prefix names the source record.
            let Some((source, source_seq, record)) = split_forward(payload, self.sources) else {
                self.dead_letter(index, channel, seq, trace_id, "bad forward prefix", fx);
                return;
            };
            let meta = Meta {
                source,
                seq: source_seq,
                trace_id,
                timestamp_ns: now_ns,
            };
            (meta, record)
        } else {
            let meta = Meta {
                source: idx,
                seq,
                trace_id,
                timestamp_ns: now_ns,
            };
            if self.nodes > 1 && !self.route(index, channel, seq, &meta, payload, fx) {
                return;
            }
            (meta, payload)
        };
        // On a node of a cluster, only the keys it owns.
        let owned_only = self.nodes > 1;
        self.apply(index, channel, seq, &meta, record, owned_only, fx);
    }

    /// A source record on a node of a cluster: forwarded to each other
    /// node that owns one of its keys; `true` when this node owns one too.
    fn route(
        &mut self,
        index: u64,
        channel: u32,
        seq: u64,
        meta: &Meta,
        payload: &[u8],
        fx: &mut Effects,
    ) -> bool {
        let Some(routing) = self.cfg.routing.as_ref() else {
            return false;
        };
        self.hashes.clear();
        if let Err(reject) = self.app.key_hashes(meta, payload, &mut self.hashes) {
            self.dead_letter(index, channel, seq, meta.trace_id, reject.0, fx);
            return false;
        }
        self.owners.iter_mut().for_each(|o| *o = false);
        for &h in &self.hashes {
            let owner = routing.owner(routing.partition_of_hash(h));
            self.owners[owner as usize] = true;
        }
        for to in 0..self.nodes {
            if to != self.cfg.node && self.owners[to as usize] {
                self.forward(index, to, meta, payload, fx);
            }
        }
        self.owners[self.cfg.node as usize]
    }

    /// Sends the source record on the channel to node `to`.
    fn forward(&mut self, index: u64, to: u32, meta: &Meta, payload: &[u8], fx: &mut Effects) {
        if fx.to_peers.len() < self.nodes as usize {
            fx.to_peers
                .resize_with(self.nodes as usize, OutFrames::default);
        }
        let o = 1 + to as usize;
        let seq = self.outs[o].assign();
        let mut prefix = [0u8; FORWARD_PREFIX_LEN];
        prefix[..4].copy_from_slice(&(meta.source as u32).to_le_bytes());
        prefix[8..].copy_from_slice(&meta.seq.to_le_bytes());
        let out = &mut fx.to_peers[to as usize];
        match self.enc.frame(
            &mut out.frames,
            Kind::Data,
            0,
            self.outs[o].id,
            0,
            seq,
            meta.trace_id,
            &[&prefix, payload],
        ) {
            Ok(_) => {
                out.push_seq(seq);
                self.stats.forwarded += 1;
                self.release_later(index, o as u32, seq);
            }
            Err(_) => {
                // Only a record within max_frame_len - prefix can travel.
                self.outs[o].next_seq -= 1;
                let channel = meta.source as u32 + 1;
                self.dead_letter(
                    index,
                    channel,
                    meta.seq,
                    meta.trace_id,
                    "record too large to forward to its owner",
                    fx,
                );
            }
        }
    }

    fn dead_letter(
        &mut self,
        index: u64,
        channel: u32,
        seq: u64,
        trace_id: u64,
        reason: &'static str,
        fx: &mut Effects,
    ) {
        self.stats.dead_letters += 1;
        fx.dead_letters.push(DeadLetter {
            journal_index: index,
            channel,
            seq,
            trace_id,
            reason,
        });
    }

    /// Runs the app on a record and frames its outputs for the sink.
    /// `owned_only`: run the state computation only for keys this node owns.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn apply(
        &mut self,
        index: u64,
        channel: u32,
        seq: u64,
        meta: &Meta,
        payload: &[u8],
        owned_only: bool,
        fx: &mut Effects,
    ) {
        self.outputs.clear();
        let result = match (&self.cfg.routing, owned_only) {
            (Some(r), true) => {
                let owned = r.owned(self.cfg.node);
                let owns = |h: u64| owned.contains(&r.partition_of_hash(h));
                self.app
                    .process_owned(meta, payload, Some(&owns), &mut self.outputs)
            }
            _ => self.app.process(meta, payload, &mut self.outputs),
        };
        if let Err(reject) = result {
            self.dead_letter(index, channel, seq, meta.trace_id, reject.0, fx);
            return;
        }
        let mut last = None;
        for payload in self.outputs.iter() {
            let seq_out = self.outs[0].assign();
            // DATA frames carry epoch 0: they are immutable once produced and
            // resent unchanged after a restart (fencing is at HELLO).
            match self.enc.data(
                &mut fx.outbound,
                self.outs[0].id,
                seq_out,
                meta.trace_id,
                false,
                payload,
            ) {
                Ok(_) => {
                    fx.outbound_seqs =
                        Some((fx.outbound_seqs.map_or(seq_out, |(f, _)| f), seq_out));
                    last = Some(seq_out);
                    self.stats.outputs += 1;
                }
                Err(_) => {
                    // An output over max_frame_len: the app's bug, not the
                    // input's; keep the seq space gap-free by not using it.
                    self.outs[0].next_seq -= 1;
                    self.stats.dead_letters += 1;
                    fx.dead_letters.push(DeadLetter {
                        journal_index: index,
                        channel,
                        seq,
                        trace_id: meta.trace_id,
                        reason: "output larger than max_frame_len",
                    });
                }
            }
        }
        if let Some(last) = last {
            self.release_later(index, 0, last);
        }
    }

    fn on_durable(&mut self, records: u64, fx: &mut Effects) {
        if records <= self.durable {
            return;
        }
        self.durable = records.min(self.journal_next);
        while let Some(r) = self.pending_acks.front_mut() {
            if r.first >= self.durable {
                break;
            }
            // Journal records first..durable of the run are durable.
            let n = (self.durable - r.first).min(r.len);
            let acked = r.seq + n - 1;
            let slot = r.slot as usize;
            assert!(
                acked >= self.acked_in[slot] && acked <= self.inputs[slot].delivered,
                "input {slot}: ACK {acked} went back from {} or past delivered {}",
                self.acked_in[slot],
                self.inputs[slot].delivered
            );
            self.acked_in[slot] = acked;
            self.ack_moved[r.slot as usize] = true;
            if n < r.len {
                r.first += n;
                r.seq += n;
                r.len -= n;
                break;
            }
            self.pending_acks.pop_front();
        }
        for i in 0..self.inputs.len() {
            if std::mem::take(&mut self.ack_moved[i]) {
                fx.acks.push((self.inputs[i].id, self.acked_in[i]));
            }
        }
        while let Some(r) = self.pending_release.front_mut() {
            if r.first >= self.durable {
                break;
            }
            // Journal records first..durable of the run are durable.
            let n = (self.durable - r.first).min(r.len);
            let (out, seq) = (r.slot, r.seq + n - 1);
            if n < r.len {
                r.first += n;
                r.seq += n;
                r.len -= n;
            } else {
                self.pending_release.pop_front();
            }
            // Output commit: the driver learns it from `poll_transmit`.
            self.outs[out as usize].release(seq);
        }
    }
}

/// Splits a forwarded record into (source index, source seq, record).
fn split_forward(payload: &[u8], sources: usize) -> Option<(usize, u64, &[u8])> {
    if payload.len() < FORWARD_PREFIX_LEN {
        return None;
    }
    let source = u32::from_le_bytes(payload[..4].try_into().ok()?) as usize;
    let seq = u64::from_le_bytes(payload[8..16].try_into().ok()?);
    (source < sources && seq > 0).then_some((source, seq, &payload[FORWARD_PREFIX_LEN..]))
}
