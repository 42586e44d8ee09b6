//! The sim's clients: the sources (the protocol of `verity-send`: a window
//! of DATA frames, resend on NACK, on RESUME and after a silence) and the
//! sink (the protocol of `verity-recv`: deliver each seq once, in order,
//! ACK it, NACK a gap). They start from plain data: the records of each
//! source channel, handed in by whoever generated them.

use std::collections::BTreeMap;

use bytes::BytesMut;
use verity_wire::{Encoder, FrameView, Kind, ResumeEntry};

use super::params::{RESEND_AFTER_US, WINDOW};

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
    next: u64,
    acked: u64,
    highest_sent: u64,
    last_progress_us: u64,
    enc: Encoder,
}

impl Source {
    pub(super) fn new(input: SourceInput, node: u32, trace_id: fn(u32, u64) -> u64) -> Source {
        Source {
            channel: input.channel,
            node,
            records: input.records,
            trace_id,
            next: 1,
            acked: 0,
            highest_sent: 0,
            last_progress_us: 0,
            enc: Encoder::default(),
        }
    }

    pub(super) fn channel(&self) -> u32 {
        self.channel
    }

    /// Every record is ACKed.
    pub(super) fn done(&self) -> bool {
        self.acked == self.records.len() as u64
    }

    /// Appends to `out` the DATA frames to send now.
    pub(super) fn tick(&mut self, now: u64, out: &mut Vec<BytesMut>) {
        let n = self.records.len() as u64;
        if self.acked < n && now.saturating_sub(self.last_progress_us) > RESEND_AFTER_US {
            // Nothing ACKed for a while: go back and resend (timeout).
            self.next = self.acked + 1;
            self.last_progress_us = now;
        }
        let end = n.min(self.acked + WINDOW).min(self.next + 15);
        let from = self.next;
        for seq in from..=end {
            let resend = seq <= self.highest_sent;
            let mut b = BytesMut::new();
            let _ = self.enc.data(
                &mut b,
                self.channel,
                seq,
                (self.trace_id)(self.channel, seq),
                resend,
                &self.records[(seq - 1) as usize],
            );
            out.push(b);
        }
        if end >= from {
            self.next = end + 1;
            self.highest_sent = self.highest_sent.max(end);
        }
    }

    /// An ACK, NACK or RESUME from its node.
    pub(super) fn receive(&mut self, now: u64, view: FrameView<'_>) {
        let seq = view.header.seq();
        match view.kind() {
            Kind::Ack if seq > self.acked => {
                self.acked = seq;
                self.last_progress_us = now;
                self.next = self.next.max(seq + 1);
            }
            Kind::Nack if seq > self.acked => self.next = self.next.min(seq),
            Kind::Resume => {
                let delivered = view.resume_delivered(self.channel).unwrap_or(0);
                // RESUME is authoritative (see tools/src/send.rs).
                self.acked = delivered;
                self.next = delivered + 1;
                self.last_progress_us = now;
            }
            _ => {}
        }
    }
}

#[derive(Default)]
pub(super) struct Sink {
    /// Per channel, the highest seq delivered.
    delivered: BTreeMap<u32, u64>,
    /// In arrival order after dedup.
    pub(super) received: Vec<Received>,
    pub(super) duplicates: u64,
    /// Per channel, (seq NACKed, when).
    nacked: BTreeMap<u32, (u64, u64)>,
    enc: Encoder,
}

impl Sink {
    /// A frame from a node; returns the ACK or NACK to send back.
    pub(super) fn receive(&mut self, now: u64, view: FrameView<'_>) -> Option<BytesMut> {
        if view.kind() != Kind::Data {
            return None;
        }
        let h = view.header;
        let (channel, seq) = (h.channel(), h.seq());
        let delivered = self.delivered.get(&channel).copied().unwrap_or(0);
        let mut b = BytesMut::new();
        if seq <= delivered {
            self.duplicates += 1;
            let _ = self.enc.ack(&mut b, channel, 0, delivered);
        } else if seq == delivered + 1 {
            self.received.push(Received {
                channel,
                seq,
                trace_id: h.trace_id(),
                payload: view.payload.to_vec(),
            });
            self.delivered.insert(channel, seq);
            let _ = self.enc.ack(&mut b, channel, 0, seq);
        } else {
            let want = delivered + 1;
            let due = match self.nacked.get(&channel) {
                Some(&(w, at)) => w != want || now - at > 2_000,
                None => true,
            };
            if due {
                self.nacked.insert(channel, (want, now));
                let _ = self.enc.nack(&mut b, channel, 0, want);
            }
        }
        (!b.is_empty()).then_some(b)
    }

    /// What the sink says to a node that (re)connects.
    pub(super) fn resume_entries(&self) -> Vec<ResumeEntry> {
        self.delivered
            .iter()
            .map(|(&c, &d)| ResumeEntry::new(c, d))
            .collect()
    }
}
