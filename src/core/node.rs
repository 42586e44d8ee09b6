//! The node core: inbound channels with `delivered` watermarks, the app, the
//! outbound channel to the sink with deterministic seqs and output commit.

use std::collections::VecDeque;

use bytes::BytesMut;
use verity_wire::{parse, Encoder, FrameView, Kind};

use super::channel::{InChannel, OutChannel, Verdict};
use crate::app::{App, Meta, Outputs};
use crate::codec::{Codec, CodecError};

/// Limits and identities of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Channel id of the node's output to the sink.
    pub sink_channel: u32,
    /// Output frames produced but not ACKed by the sink before the node stops
    /// taking input (backpressure).
    pub max_unacked: u64,
    /// Journal records not yet durable before the node stops taking input.
    pub max_undurable: u64,
    /// At most one NACK per channel per this interval.
    pub nack_interval_ns: u64,
    pub max_frame_len: u32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            sink_channel: 1000,
            max_unacked: 1 << 18,
            max_undurable: 1 << 16,
            nack_interval_ns: 50_000_000,
            max_frame_len: verity_wire::DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// One journal record as the core sees it: the clock reading at acceptance and
/// the whole DATA frame as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct JournalEntry<'a> {
    pub index: u64,
    pub timestamp_ns: u64,
    pub frame: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A validated DATA frame from a source connection, at clock `now_ns`.
    SourceData { frame: FrameView<'a>, now_ns: u64 },
    /// Recovery: the next journal record, in journal order.
    Replay(JournalEntry<'a>),
    /// The journal is durable through its first `records` records.
    Durable { records: u64 },
    /// The sink ACKed every seq up to `seq`.
    SinkAck { seq: u64 },
    /// The sink (re)connected: it has everything up to `delivered`.
    SinkResume { delivered: u64 },
}

/// A record the app could not use, to be written to the dead-letter log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetter {
    pub journal_index: u64,
    pub channel: u32,
    pub seq: u64,
    pub trace_id: u64,
    pub reason: &'static str,
}

/// What the driver must do after `handle`. Reused across calls: the driver
/// carries the effects out, then calls [`Effects::clear`].
#[derive(Debug, Default)]
pub struct Effects {
    /// `Some((index, timestamp_ns))`: journal the frame just handled as record `index`.
    pub journal_input: Option<(u64, u64)>,
    /// Output DATA frames for the sink, in seq order: append to the outbound log.
    pub outbound: BytesMut,
    /// Seqs of the frames in `outbound`: `first..=last`.
    pub outbound_seqs: Option<(u64, u64)>,
    /// ACK (channel, seq) to send to sources.
    pub acks: Vec<(u32, u64)>,
    /// NACK (channel, from seq) to send to sources.
    pub nacks: Vec<(u32, u64)>,
    pub dead_letters: Vec<DeadLetter>,
    /// Outputs up to this seq may now be sent to the sink (output commit).
    pub release_through: Option<u64>,
    /// The sink needs everything from this seq on again.
    pub resend_from: Option<u64>,
}

impl Effects {
    pub fn clear(&mut self) {
        self.journal_input = None;
        self.outbound.clear();
        self.outbound_seqs = None;
        self.acks.clear();
        self.nacks.clear();
        self.dead_letters.clear();
        self.release_through = None;
        self.resend_from = None;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    pub accepted: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub dead_letters: u64,
    pub outputs: u64,
    pub unknown_channel: u64,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    BadMagic,
    WrongApp { snapshot: String, running: String },
    WrongChannels { snapshot: usize, running: usize },
    Corrupt(CodecError),
}

impl core::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SnapshotError::BadMagic => write!(f, "not a Verity node snapshot (bad magic)"),
            SnapshotError::WrongApp { snapshot, running } => write!(
                f,
                "snapshot is of app {snapshot:?} but this node runs {running:?}"
            ),
            SnapshotError::WrongChannels { snapshot, running } => write!(
                f,
                "snapshot has {snapshot} input channels but the app has {running}"
            ),
            SnapshotError::Corrupt(e) => write!(f, "snapshot body is corrupt: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<CodecError> for SnapshotError {
    fn from(e: CodecError) -> Self {
        SnapshotError::Corrupt(e)
    }
}

const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"VRTYSNP1");

/// The deterministic state machine of one node.
pub struct NodeCore {
    cfg: NodeConfig,
    app: Box<dyn App>,
    /// Input channel `i + 1` carries source `i`.
    inputs: Vec<InChannel>,
    out: OutChannel,
    /// Index the next journal record gets.
    journal_next: u64,
    /// Records `< durable` are durable.
    durable: u64,
    /// Accepted inputs not yet ACKed: (journal index, input index, seq).
    pending_acks: VecDeque<(u64, u32, u64)>,
    /// Outputs not yet released: (journal index that produced them, last seq).
    pending_release: VecDeque<(u64, u64)>,
    /// Highest seq ACKed per input (to send each ACK once).
    acked_in: Vec<u64>,
    outputs: Outputs,
    enc: Encoder,
    pub stats: NodeStats,
}

impl NodeCore {
    pub fn new(app: Box<dyn App>, cfg: NodeConfig) -> NodeCore {
        let n = app.sources().len();
        NodeCore {
            inputs: (0..n as u32).map(|i| InChannel::new(i + 1)).collect(),
            acked_in: vec![0; n],
            out: OutChannel::new(cfg.sink_channel),
            enc: Encoder::new(cfg.max_frame_len),
            cfg,
            app,
            journal_next: 0,
            durable: 0,
            pending_acks: VecDeque::new(),
            pending_release: VecDeque::new(),
            outputs: Outputs::default(),
            stats: NodeStats::default(),
        }
    }

    pub fn app(&self) -> &dyn App {
        &*self.app
    }
    pub fn inputs(&self) -> &[InChannel] {
        &self.inputs
    }
    pub fn out(&self) -> &OutChannel {
        &self.out
    }
    pub fn journal_next(&self) -> u64 {
        self.journal_next
    }

    /// Whether the node should read more input now (false = backpressure:
    /// the sink or the journal is too far behind).
    pub fn wants_input(&self) -> bool {
        self.out.unacked() < self.cfg.max_unacked
            && self.journal_next - self.durable < self.cfg.max_undurable
    }

    pub fn handle(&mut self, input: Input<'_>, fx: &mut Effects) {
        match input {
            Input::SourceData { frame, now_ns } => self.source_data(frame, now_ns, fx),
            Input::Replay(entry) => self.replay(entry, fx),
            Input::Durable { records } => self.on_durable(records, fx),
            Input::SinkAck { seq } => {
                self.out.ack(seq);
            }
            Input::SinkResume { delivered } => {
                // The sink may know more than we do (our ACKs were lost) but
                // never more than we released.
                let delivered = delivered.min(self.out.released);
                self.out.ack(delivered);
                fx.resend_from = Some(delivered + 1);
            }
        }
    }

    fn source_data(&mut self, frame: FrameView<'_>, now_ns: u64, fx: &mut Effects) {
        debug_assert_eq!(frame.kind(), Kind::Data);
        let h = frame.header;
        let channel = h.channel();
        let Some(idx) = self.input_index(channel) else {
            self.stats.unknown_channel += 1;
            return;
        };
        match self.inputs[idx].offer(h.seq(), now_ns, self.cfg.nack_interval_ns) {
            Verdict::Duplicate => {
                self.stats.duplicates += 1;
                // Re-ACK what is durable so the producer can drop its copy.
                let acked = self.acked_in[idx];
                if acked > 0 {
                    fx.acks.push((channel, acked));
                }
            }
            Verdict::Gap { nack } => {
                self.stats.gaps += 1;
                if let Some(from) = nack {
                    fx.nacks.push((channel, from));
                }
            }
            Verdict::Accept => {
                let index = self.journal_next;
                self.journal_next += 1;
                fx.journal_input = Some((index, now_ns));
                self.pending_acks.push_back((index, idx as u32, h.seq()));
                let meta = Meta {
                    source: idx,
                    seq: h.seq(),
                    trace_id: h.trace_id(),
                    timestamp_ns: now_ns,
                };
                self.apply(index, &meta, frame.payload, fx);
            }
        }
    }

    fn replay(&mut self, entry: JournalEntry<'_>, fx: &mut Effects) {
        // The journal holds frames this core accepted; anything else means the
        // journal does not belong to this snapshot: count it and skip.
        let view = match parse(entry.frame, self.cfg.max_frame_len) {
            Ok(Some(v)) if v.kind() == Kind::Data => v,
            _ => {
                self.stats.unknown_channel += 1;
                return;
            }
        };
        let h = view.header;
        let Some(idx) = self.input_index(h.channel()) else {
            self.stats.unknown_channel += 1;
            return;
        };
        if entry.index != self.journal_next || h.seq() != self.inputs[idx].delivered + 1 {
            self.stats.gaps += 1;
            return;
        }
        self.inputs[idx].delivered = h.seq();
        self.journal_next += 1;
        self.pending_acks
            .push_back((entry.index, idx as u32, h.seq()));
        let meta = Meta {
            source: idx,
            seq: h.seq(),
            trace_id: h.trace_id(),
            timestamp_ns: entry.timestamp_ns,
        };
        self.apply(entry.index, &meta, view.payload, fx);
    }

    fn input_index(&self, channel: u32) -> Option<usize> {
        let i = (channel as usize).checked_sub(1)?;
        (i < self.inputs.len()).then_some(i)
    }

    fn apply(&mut self, index: u64, meta: &Meta, payload: &[u8], fx: &mut Effects) {
        self.stats.accepted += 1;
        self.outputs.clear();
        if let Err(reject) = self.app.process(meta, payload, &mut self.outputs) {
            self.stats.dead_letters += 1;
            fx.dead_letters.push(DeadLetter {
                journal_index: index,
                channel: meta.source as u32 + 1,
                seq: meta.seq,
                trace_id: meta.trace_id,
                reason: reject.0,
            });
            return;
        }
        let mut last = None;
        for payload in self.outputs.iter() {
            let seq = self.out.assign();
            // DATA frames carry epoch 0: they are immutable once produced and
            // resent unchanged after a restart (fencing is at HELLO).
            match self.enc.data(
                &mut fx.outbound,
                self.out.id,
                0,
                seq,
                meta.trace_id,
                false,
                payload,
            ) {
                Ok(_) => {
                    fx.outbound_seqs = Some((fx.outbound_seqs.map_or(seq, |(f, _)| f), seq));
                    last = Some(seq);
                    self.stats.outputs += 1;
                }
                Err(_) => {
                    // An output over max_frame_len: the app's bug, not the
                    // input's; keep the seq space gap-free by not using it.
                    self.out.next_seq -= 1;
                    self.stats.dead_letters += 1;
                    fx.dead_letters.push(DeadLetter {
                        journal_index: index,
                        channel: meta.source as u32 + 1,
                        seq: meta.seq,
                        trace_id: meta.trace_id,
                        reason: "output larger than max_frame_len",
                    });
                }
            }
        }
        if let Some(last) = last {
            self.pending_release.push_back((index, last));
        }
    }

    fn on_durable(&mut self, records: u64, fx: &mut Effects) {
        if records <= self.durable {
            return;
        }
        self.durable = records.min(self.journal_next);
        while let Some(&(j, input, seq)) = self.pending_acks.front() {
            if j >= self.durable {
                break;
            }
            self.pending_acks.pop_front();
            self.acked_in[input as usize] = seq;
        }
        for (i, &acked) in self.acked_in.iter().enumerate() {
            if acked > 0 && fx.acks.last() != Some(&(i as u32 + 1, acked)) {
                fx.acks.push((i as u32 + 1, acked));
            }
        }
        fx.acks.dedup();
        let mut released = None;
        while let Some(&(j, seq)) = self.pending_release.front() {
            if j >= self.durable {
                break;
            }
            self.pending_release.pop_front();
            released = Some(seq);
        }
        if let Some(seq) = released {
            self.out.released = seq;
            fx.release_through = Some(seq);
        }
    }

    /// Serialises the core: journal position, watermarks, seq counter, app state.
    /// Call it between `handle`s once everything journaled is durable.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        SNAPSHOT_MAGIC.encode(out);
        self.app.name().to_owned().encode(out);
        self.journal_next.encode(out);
        (self.inputs.len() as u64).encode(out);
        for c in &self.inputs {
            c.delivered.encode(out);
        }
        self.out.next_seq.encode(out);
        self.app.snapshot(out);
    }

    /// Restores from [`NodeCore::snapshot`] bytes. Everything the snapshot
    /// covers counts as durable; outputs up to its seq counter as released.
    pub fn restore(&mut self, mut bytes: &[u8]) -> Result<(), SnapshotError> {
        let b = &mut bytes;
        if u64::decode(b)? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let name = String::decode(b)?;
        if name != self.app.name() {
            return Err(SnapshotError::WrongApp {
                snapshot: name,
                running: self.app.name().to_owned(),
            });
        }
        let journal_next = u64::decode(b)?;
        let n = u64::decode(b)? as usize;
        if n != self.inputs.len() {
            return Err(SnapshotError::WrongChannels {
                snapshot: n,
                running: self.inputs.len(),
            });
        }
        let mut delivered = Vec::with_capacity(n);
        for _ in 0..n {
            delivered.push(u64::decode(b)?);
        }
        let next_seq = u64::decode(b)?;
        if next_seq == 0 {
            return Err(SnapshotError::Corrupt(CodecError("seq counter is 0")));
        }
        self.app.restore(b)?;
        for (c, d) in self.inputs.iter_mut().zip(&delivered) {
            c.delivered = *d;
        }
        self.acked_in = delivered;
        self.journal_next = journal_next;
        self.durable = journal_next;
        self.out.next_seq = next_seq;
        self.out.released = next_seq - 1;
        self.pending_acks.clear();
        self.pending_release.clear();
        Ok(())
    }
}
