//! The sim's clients: the sources and the sink. Their protocol is not
//! theirs: a source runs `verity-send`'s [`SourceWindow`] (a window of DATA
//! frames, resend on NACK, on RESUME and after a silence) and the sink
//! `verity-recv`'s [`SinkLedger`] (deliver each seq once, in order, ACK it,
//! NACK a gap), both from `verity_wire::client`. They start from plain
//! data: the records of each source channel, handed in by whoever
//! generated them.

use std::collections::BTreeMap;

use bytes::BytesMut;
use verity_wire::client::{SinkLedger, SourceWindow, Verdict, Violation};
use verity_wire::handshake::Me;
use verity_wire::{Encoder, FrameView, Kind, Role};

use super::params::{CLUSTER_ID, NACK_INTERVAL_US, REORDER_WINDOW, RESEND_AFTER_US, WINDOW};

/// The records one source sends.
#[derive(Debug, Clone)]
pub struct SourceInput {
    /// Its input channel.
    pub channel: u32,
    /// Record `seq` is `records[seq - 1]`.
    pub records: Vec<Vec<u8>>,
}

/// What the sources of a run send, and when the run may stop.
#[derive(Debug, Clone)]
pub struct Workload {
    /// One per source, in the order of `SimParams::ingress`.
    pub sources: Vec<SourceInput>,
    /// The trace id a source gives record `seq` of channel `channel` (the
    /// sender's scheme).
    pub trace_id: fn(u32, u64) -> u64,
    /// Outputs the sink gets from these inputs: the run stops once it has
    /// them and every input is ACKed.
    pub expected_outputs: u64,
}

/// One output the sink delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub channel: u32,
    pub seq: u64,
    pub trace_id: u64,
    pub payload: Vec<u8>,
}

pub(super) struct Source {
    channel: u32,
    /// The node it sends to.
    pub(super) node: u32,
    records: Vec<Vec<u8>>,
    trace_id: fn(u32, u64) -> u64,
    /// `verity-send`'s window, cursor and resend rules.
    window: SourceWindow,
    enc: Encoder,
}

impl Source {
    pub(super) fn new(input: SourceInput, node: u32, trace_id: fn(u32, u64) -> u64) -> Source {
        let n = input.records.len() as u64;
        Source {
            channel: input.channel,
            node,
            records: input.records,
            trace_id,
            window: SourceWindow::new(n, WINDOW, RESEND_AFTER_US * 1_000),
            enc: Encoder::default(),
        }
    }

    pub(super) fn channel(&self) -> u32 {
        self.channel
    }

    /// Who it is in its HELLO: a source names its channel in the node id.
    pub(super) fn me(&self) -> Me {
        Me {
            cluster_id: CLUSTER_ID,
            node_id: self.channel,
            role: Role::Source,
        }
    }

    /// Every record is ACKed.
    pub(super) fn done(&self) -> bool {
        self.window.done()
    }

    /// Its connection died (its node crashed): nothing goes until the
    /// node's next RESUME.
    pub(super) fn disconnected(&mut self) {
        self.window.disconnected();
    }

    /// Appends to `out` the DATA frames to send now (at most 16 a tick).
    pub(super) fn tick(&mut self, now: u64, out: &mut Vec<BytesMut>) {
        let Some(batch) = self.window.poll(now * 1_000, 16) else {
            return;
        };
        self.window.sent(batch);
        for seq in batch.from..=batch.to {
            let mut b = BytesMut::new();
            let _ = self.enc.data(
                &mut b,
                self.channel,
                seq,
                (self.trace_id)(self.channel, seq),
                batch.resend(seq),
                &self.records[(seq - 1) as usize],
            );
            out.push(b);
        }
    }

    /// An ACK, NACK or RESUME from its node; a violation is one the
    /// shipped `verity-send` would end the connection on.
    pub(super) fn receive(&mut self, now: u64, view: FrameView<'_>) -> Result<(), Violation> {
        let seq = view.header.seq();
        match view.kind() {
            Kind::Ack => self.window.ack(seq, now * 1_000),
            Kind::Nack => {
                let ranges: Vec<(u64, u64)> = view
                    .nack_ranges()
                    .unwrap_or(&[])
                    .iter()
                    .map(|r| (r.first.get(), r.last.get()))
                    .collect();
                self.window.nack(seq, &ranges);
                Ok(())
            }
            Kind::Resume => {
                let delivered = view.resume_delivered(self.channel).unwrap_or(0);
                self.window.resume(delivered, now * 1_000)
            }
            _ => Ok(()),
        }
    }
}

pub(super) struct Sink {
    /// `verity-recv`'s per-channel `delivered` and NACK pacing.
    ledger: SinkLedger,
    /// In arrival order after dedup.
    pub(super) received: Vec<Received>,
    pub(super) duplicates: u64,
    enc: Encoder,
}

impl Default for Sink {
    fn default() -> Sink {
        Sink {
            ledger: SinkLedger::new(BTreeMap::new(), NACK_INTERVAL_US * 1_000)
                .keep(REORDER_WINDOW, 1 << 20),
            received: Vec::new(),
            duplicates: 0,
            enc: Encoder::default(),
        }
    }
}

impl Sink {
    /// Who it is in its HELLO.
    pub(super) fn me(&self) -> Me {
        Me {
            cluster_id: CLUSTER_ID,
            node_id: 0,
            role: Role::Sink,
        }
    }

    fn deliver(&mut self, channel: u32, seq: u64, trace_id: u64, payload: &[u8]) {
        self.received.push(Received {
            channel,
            seq,
            trace_id,
            payload: payload.to_vec(),
        });
        self.ledger.delivered(channel, seq);
    }

    /// A frame from a node; returns the ACK or NACK to send back.
    pub(super) fn receive(&mut self, now: u64, view: FrameView<'_>) -> Option<BytesMut> {
        if view.kind() != Kind::Data {
            return None;
        }
        let h = view.header;
        let (channel, seq) = (h.channel(), h.seq());
        let mut b = BytesMut::new();
        match self.ledger.offer(channel, seq) {
            Verdict::Duplicate { delivered } => {
                self.duplicates += 1;
                let _ = self.enc.ack(&mut b, channel, 0, delivered);
            }
            Verdict::Deliver => {
                self.deliver(channel, seq, h.trace_id(), view.payload);
                // Frames kept after a gap whose turn came, in seq order.
                let mut held = Vec::new();
                while self.ledger.take(channel, &mut held) {
                    let Ok(Some(v)) = verity_wire::parse(&held, verity_wire::MAX_FRAME_LEN_LIMIT)
                    else {
                        break;
                    };
                    self.deliver(channel, v.header.seq(), v.header.trace_id(), v.payload);
                    held.clear();
                }
                let _ = self.enc.ack(&mut b, channel, 0, self.ledger.get(channel));
            }
            Verdict::Gap => {
                let mut nacks = Vec::new();
                let crc = verity_wire::frames::content_crc(&view);
                self.ledger.gap(&view, crc, now * 1_000, &mut nacks);
                SinkLedger::nack(&self.enc, &mut b, channel, &nacks);
            }
        }
        (!b.is_empty()).then_some(b)
    }

    /// What the sink says to the node whose channel to it is `channel`
    /// once its handshake is done (RESUME, and an ACK), as frames.
    pub(super) fn greet(&self, channel: u32) -> BytesMut {
        let mut b = BytesMut::new();
        self.ledger.greet(channel, &self.enc, &mut b);
        b
    }
}
