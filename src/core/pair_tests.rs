//! In-memory pair tests: two cores of a 2-node cluster wired together, the
//! producer (node 0, the ingress) forwarding to the consumer (node 1) over
//! their node-to-node channel, in virtual time. The harness is a driver as
//! thin as the runtime: it keeps the producer's frames by seq (its
//! outbound log), hands out what `poll_transmit` names, carries frames and
//! ACKs/NACKs across a link that can lose them, journals what the consumer
//! accepts and fires the producer's timer. Every decision under test is the
//! core's: resend on NACK, on timeout and after a RESUME; fencing.

use std::collections::{BTreeMap, VecDeque};

use verity_wire::frames::set_resend_flag;
use verity_wire::{flags, parse, ErrorCode, NackRange};

use super::tests::{cluster_node, u64_frame, value_owned_by};
use super::*;

const TIMEOUT_NS: u64 = 1_000_000_000;

struct Pair {
    producer: NodeCore,
    consumer: NodeCore,
    /// The producer's frames to node 1, by seq (its outbound log).
    log: BTreeMap<u64, Vec<u8>>,
    /// Frames on the link to the consumer, in order.
    link: VecDeque<Vec<u8>>,
    /// The consumer's journal: (clock, frame) of every accepted frame.
    journal: Vec<(u64, Vec<u8>)>,
    /// Frames the consumer accepted, dropped as duplicates, got with RESEND.
    accepted: Vec<u64>,
    duplicates: u64,
    resends: u64,
    /// ACKs on their way back are lost while this is set.
    lose_acks: bool,
    now: u64,
    fx: Effects,
}

impl Pair {
    fn new() -> Pair {
        let mut p = Pair {
            producer: cluster_node(0, 2),
            consumer: cluster_node(1, 2),
            log: BTreeMap::new(),
            link: VecDeque::new(),
            journal: Vec::new(),
            accepted: Vec::new(),
            duplicates: 0,
            resends: 0,
            lose_acks: false,
            now: 0,
            fx: Effects::default(),
        };
        p.connect();
        p
    }

    /// The producer (re)connects: the consumer's RESUME, then its ACK of
    /// what is durable (as the runtime's `admit_node` sends them).
    fn connect(&mut self) {
        self.fx.clear();
        let out = Out::Node(1);
        self.producer
            .handle(Input::Disconnected { out }, &mut self.fx);
        let delivered = self.consumer.peer_in(0).map_or(0, |c| c.delivered);
        self.producer
            .handle(Input::Resume { out, delivered }, &mut self.fx);
        assert_eq!(self.fx.violation, None);
        let acked = self.consumer.input_acked(peer_channel(0, 1));
        if acked > 0 {
            self.producer
                .handle(Input::Ack { out, seq: acked }, &mut self.fx);
        }
    }

    /// `n` source records keyed to node 1 arrive at the producer and are
    /// durable at once; their forwards go to its log.
    fn produce(&mut self, n: u64) {
        let v = value_owned_by(1);
        let first = self.producer.inputs()[0].delivered + 1;
        for seq in first..first + n {
            self.fx.clear();
            let frame = u64_frame(seq, v);
            let view = parse(&frame, 1 << 20).unwrap().unwrap();
            self.producer.handle(
                Input::SourceData {
                    frame: view,
                    now_ns: self.now,
                },
                &mut self.fx,
            );
            let fwd = &self.fx.to_peers[1];
            let mut at = 0;
            while at < fwd.frames.len() {
                let f = parse(&fwd.frames[at..], 1 << 20).unwrap().unwrap();
                self.log
                    .insert(f.header.seq(), fwd.frames[at..at + f.stride].to_vec());
                at += f.stride;
            }
            let records = self.producer.journal_next();
            self.producer
                .handle(Input::Durable { records }, &mut self.fx);
        }
    }

    /// The producer hands out what its core names; the link takes it.
    fn transmit(&mut self) {
        let out = Out::Node(1);
        while let Some(t) = self.producer.poll_transmit(out) {
            for seq in t.from..=t.to {
                let mut frame = self.log[&seq].clone();
                if seq <= t.resend_through {
                    assert!(set_resend_flag(&mut frame));
                }
                self.link.push_back(frame);
            }
            self.fx.clear();
            self.producer
                .handle(Input::Sent { out, through: t.to }, &mut self.fx);
        }
    }

    /// The link delivers its frames (but those `lose` picks); the consumer
    /// journals what it accepts, makes it durable, and its ACKs and NACKs
    /// go back (unless `lose_acks`).
    fn deliver(&mut self, lose: impl Fn(u64) -> bool) {
        while let Some(frame) = self.link.pop_front() {
            let view = parse(&frame, 1 << 20).unwrap().unwrap();
            let seq = view.header.seq();
            if lose(seq) {
                continue;
            }
            if view.header.flags() & flags::RESEND != 0 {
                self.resends += 1;
            }
            self.fx.clear();
            self.consumer.handle(
                Input::PeerData {
                    from: 0,
                    frame: view,
                    now_ns: self.now,
                },
                &mut self.fx,
            );
            assert_eq!(self.fx.violation, None);
            if self.fx.journal_input.is_some() {
                self.journal.push((self.now, frame.clone()));
                self.accepted.push(seq);
            } else if seq <= self.consumer.peer_in(0).map_or(0, |c| c.delivered) {
                self.duplicates += 1;
            }
            let mut nacks = std::mem::take(&mut self.fx.nacks);
            // Frames kept after a gap whose turn came, as the runtime does.
            let mut held = Vec::new();
            while self.consumer.take_held(&mut held) == Some(HeldFrom::Node(0)) {
                let view = parse(&held, 1 << 20).unwrap().unwrap();
                let seq = view.header.seq();
                self.fx.journal_input = None;
                self.consumer.handle(
                    Input::PeerData {
                        from: 0,
                        frame: view,
                        now_ns: self.now,
                    },
                    &mut self.fx,
                );
                assert!(self.fx.journal_input.is_some(), "kept {seq} not accepted");
                self.journal.push((self.now, held.clone()));
                self.accepted.push(seq);
                nacks.append(&mut self.fx.nacks);
                held.clear();
            }
            let records = self.consumer.journal_next();
            self.consumer
                .handle(Input::Durable { records }, &mut self.fx);
            let acks = std::mem::take(&mut self.fx.acks);
            self.back(acks, nacks);
        }
    }

    /// The consumer's ACKs and NACKs reach the producer.
    fn back(&mut self, acks: Vec<(u32, u64)>, nacks: Vec<(u32, u64, u64)>) {
        let out = Out::Node(1);
        for (channel, seq) in acks {
            assert_eq!(channel, peer_channel(0, 1));
            if !self.lose_acks {
                self.fx.clear();
                self.producer.handle(Input::Ack { out, seq }, &mut self.fx);
                assert_eq!(self.fx.violation, None);
            }
        }
        let mut frames = Vec::new();
        nack_frames(&nacks, |_, from, ranges| {
            let ranges: Vec<NackRange> =
                ranges.iter().map(|&(f, l)| NackRange::new(f, l)).collect();
            frames.push((from, ranges));
        });
        for (from, ranges) in frames {
            self.fx.clear();
            self.producer.handle(
                Input::Nack {
                    out,
                    from,
                    ranges: &ranges,
                },
                &mut self.fx,
            );
            assert_eq!(self.fx.violation, None);
        }
    }

    /// Virtual time passes; the producer's timers fire.
    fn advance(&mut self, ns: u64) {
        self.now += ns;
        self.fx.clear();
        self.producer
            .handle(Input::Tick { now_ns: self.now }, &mut self.fx);
    }

    /// The consumer crashes (what is on the link is lost) and restarts
    /// from its journal; the producer reconnects.
    fn crash_consumer(&mut self) {
        self.link.clear();
        self.consumer = cluster_node(1, 2);
        for (i, (ts, frame)) in self.journal.iter().enumerate() {
            self.fx.clear();
            self.consumer.handle(
                Input::Replay(JournalEntry {
                    index: i as u64,
                    timestamp_ns: *ts,
                    frame,
                }),
                &mut self.fx,
            );
        }
        let records = self.consumer.journal_next();
        self.fx.clear();
        self.consumer
            .handle(Input::Durable { records }, &mut self.fx);
        self.connect();
    }

    fn acked(&self) -> u64 {
        self.producer.peer_out(1).map_or(0, |o| o.acked)
    }
}

#[test]
fn a_frame_lost_on_the_link_is_nacked_and_sent_again_at_once() {
    let mut p = Pair::new();
    p.produce(10);
    p.transmit();
    p.deliver(|seq| seq == 3);
    assert_eq!(p.accepted, vec![1, 2], "nothing past the gap is accepted");
    // The NACK moved the producer's cursor back: no timer needed.
    p.transmit();
    p.deliver(|_| false);
    assert_eq!(p.accepted, (1..=10).collect::<Vec<_>>());
    assert_eq!(p.acked(), 10);
    p.advance(1);
    assert_eq!(p.producer.poll_timeout(), None, "nothing outstanding");
}

#[test]
fn with_acks_lost_the_producer_resends_after_the_timeout_flagged_resend() {
    let mut p = Pair::new();
    p.produce(5);
    p.transmit();
    p.lose_acks = true;
    p.deliver(|_| false);
    assert_eq!(p.acked(), 0);
    p.advance(1);
    assert_eq!(p.producer.poll_timeout(), Some(1 + TIMEOUT_NS));
    p.advance(TIMEOUT_NS / 2);
    p.transmit();
    assert!(p.link.is_empty(), "nothing resent before the timeout");
    p.advance(TIMEOUT_NS);
    assert_eq!(p.fx.rewound, vec![(Out::Node(1), 1)]);
    p.lose_acks = false;
    p.transmit();
    assert_eq!(p.link.len(), 5);
    p.deliver(|_| false);
    assert_eq!((p.duplicates, p.resends), (5, 5));
    assert_eq!(p.accepted, (1..=5).collect::<Vec<_>>(), "each once");
    assert_eq!(p.acked(), 5, "the duplicates were ACKed again");
}

#[test]
fn a_consumer_that_crashed_resumes_and_gets_what_it_lost_exactly_once() {
    let mut p = Pair::new();
    p.produce(10);
    p.transmit();
    // 1..=5 reach it; 6..=10 are on the link when it crashes.
    let mut tail = p.link.split_off(5);
    p.deliver(|_| false);
    tail.clear();
    p.crash_consumer();
    assert_eq!(p.consumer.peer_in(0).map(|c| c.delivered), Some(5));
    // The RESUME put the cursor at 6: exactly what was lost goes out.
    p.transmit();
    let seqs: Vec<u64> = p
        .link
        .iter()
        .map(|f| parse(f, 1 << 20).unwrap().unwrap().header.seq())
        .collect();
    assert_eq!(seqs, (6..=10).collect::<Vec<_>>());
    p.deliver(|_| false);
    assert_eq!(p.accepted, (1..=10).collect::<Vec<_>>());
    assert_eq!(p.duplicates, 0);
    assert_eq!(p.acked(), 10);
    // More traffic after the restart flows on.
    p.produce(3);
    p.transmit();
    p.deliver(|_| false);
    assert_eq!(p.acked(), 13);
}

#[test]
fn the_consumer_greets_a_node_with_resume_then_ack_and_a_source_with_resume() {
    let mut p = Pair::new();
    p.produce(6);
    p.transmit();
    p.deliver(|seq| seq > 4);
    let enc = verity_wire::Encoder::default();
    let mut b = bytes::BytesMut::new();
    assert!(p.consumer.greet(Producer::Node(0), 7, &enc, &mut b));
    let kinds: Vec<_> = verity_wire::frames::frames(&b)
        .map(|f| (f.header.kind(), f.seq, f.header.epoch()))
        .collect();
    assert_eq!(kinds.len(), 2, "RESUME, then ACK of what is durable");
    assert_eq!(kinds[0].0, Some(verity_wire::Kind::Resume));
    assert_eq!(kinds[1], (Some(verity_wire::Kind::Ack), 4, 7));
    let view = parse(&b, 1 << 20).unwrap().unwrap();
    let entries = view.resume_entries().unwrap();
    assert_eq!(entries[0].channel.get(), peer_channel(0, 1));
    assert_eq!(entries[0].delivered.get(), 4);
    // A source gets its channel's RESUME only; unknown producers nothing.
    b.clear();
    assert!(p.consumer.greet(Producer::Source(1), 7, &enc, &mut b));
    assert_eq!(verity_wire::frames::frames(&b).count(), 1);
    b.clear();
    assert!(!p.consumer.greet(Producer::Source(9), 7, &enc, &mut b));
    assert!(
        !p.consumer.greet(Producer::Node(1), 7, &enc, &mut b),
        "itself"
    );
    assert!(b.is_empty());
}

#[test]
fn a_replaced_instance_of_the_producer_is_fenced_off_by_the_consumer() {
    let mut p = Pair::new();
    let s = p.consumer.sessions_mut();
    assert_eq!(s.admit_node(1, 0, 1), Ok(None));
    // The producer restarted (epoch 2): its new connection replaces the old.
    assert_eq!(s.admit_node(2, 0, 2), Ok(Some(1)));
    // The old instance, cut off, not dead, dials again: refused.
    let r = s.admit_node(3, 0, 1).unwrap_err();
    assert_eq!(r.code, ErrorCode::StaleEpoch);
    assert_eq!(s.conn_for_channel(peer_channel(0, 1)), Some(2));
    // The new instance's traffic is unaffected.
    p.produce(4);
    p.transmit();
    p.deliver(|_| false);
    assert_eq!(p.acked(), 4);
}

#[test]
fn a_connection_that_never_finishes_its_handshake_is_timed_out_by_the_core() {
    let mut p = Pair::new();
    let timeout = NodeConfig::default().handshake_timeout_ns;
    // The consumer accepts two connections; one finishes its HELLOs.
    p.consumer.sessions_mut().opened(7, 0);
    p.consumer.sessions_mut().opened(8, 10);
    assert_eq!(p.consumer.sessions_mut().admit_node(8, 0, 1), Ok(None));
    assert_eq!(p.consumer.poll_timeout(), Some(timeout + 1));
    let mut fx = Effects::default();
    p.consumer.handle(Input::Tick { now_ns: timeout }, &mut fx);
    assert!(fx.handshake_expired.is_empty(), "not over the timeout yet");
    p.consumer.handle(
        Input::Tick {
            now_ns: timeout + 1,
        },
        &mut fx,
    );
    assert_eq!(fx.handshake_expired, vec![7], "only the silent one");
    assert_eq!(p.consumer.poll_timeout(), None);
}
