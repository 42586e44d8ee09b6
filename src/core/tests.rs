//! Unit tests over `handle`: the exactly-once rules of DESIGN.md §3.

use bytes::BytesMut;
use verity_wire::{parse, Encoder};

use super::*;
use crate::registry::Registry;

fn data(channel: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    Encoder::default()
        .data(
            &mut b,
            channel,
            seq,
            (channel as u64) << 40 | seq,
            false,
            payload,
        )
        .unwrap();
    b.to_vec()
}

pub(super) fn u64_frame(seq: u64, n: u64) -> Vec<u8> {
    data(1, seq, &n.to_be_bytes())
}

fn doubler() -> NodeCore {
    NodeCore::new(
        Registry::builtin().build("doubler").unwrap(),
        NodeConfig::default(),
    )
}

/// Feeds one frame; returns the effects (cloned out of the reused buffer).
fn feed(core: &mut NodeCore, fx: &mut Effects, frame: &[u8], now: u64) {
    let view = parse(frame, 1 << 20).unwrap().unwrap();
    core.handle(
        Input::SourceData {
            frame: view,
            now_ns: now,
        },
        fx,
    );
}

/// Output (seq, payload) pairs in an outbound buffer.
fn outputs(buf: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut at = 0;
    let mut v = Vec::new();
    while at < buf.len() {
        let f = parse(&buf[at..], 1 << 20).unwrap().unwrap();
        v.push((f.header.seq(), f.payload.to_vec()));
        at += f.stride;
    }
    v
}

#[test]
fn an_accepted_frame_is_journaled_processed_and_acked_only_once_durable() {
    let mut core = doubler();
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &u64_frame(1, 21), 5);
    assert_eq!(fx.journal_input, Some((0, 5)));
    assert_eq!(
        outputs(&fx.outbound),
        vec![(1, 42u64.to_be_bytes().to_vec())]
    );
    assert!(fx.acks.is_empty(), "no ACK before the journal is durable");
    assert_eq!(core.out().released, 0, "no output before durable");
    fx.clear();
    core.handle(Input::Durable { records: 1 }, &mut fx);
    assert_eq!(fx.acks, vec![(1, 1)]);
    assert_eq!(core.out().released, 1);
}

#[test]
fn a_duplicate_is_dropped_and_reacked_without_reprocessing() {
    let mut core = doubler();
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &u64_frame(1, 1), 0);
    core.handle(Input::Durable { records: 1 }, &mut fx);
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(1, 1), 1);
    assert_eq!(fx.journal_input, None, "a duplicate is not journaled");
    assert!(fx.outbound.is_empty(), "a duplicate produces no output");
    assert_eq!(fx.acks, vec![(1, 1)], "a duplicate is re-ACKed");
    assert_eq!(core.stats.duplicates, 1);
    assert_eq!(core.stats.outputs, 1);
}

#[test]
fn a_gap_is_nacked_at_once_by_range_and_what_follows_waits_for_its_turn() {
    let mut core = doubler();
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &u64_frame(1, 1), 0);
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(3, 3), 10);
    assert_eq!(fx.nacks, vec![(1, 2, 2)], "just the missing seq");
    assert_eq!(fx.journal_input, None);
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(4, 4), 11);
    assert!(fx.nacks.is_empty(), "no new gap: no NACK");
    feed(&mut core, &mut fx, &u64_frame(7, 7), 12);
    assert_eq!(fx.nacks, vec![(1, 5, 6)], "a new gap, at once");
    assert_eq!(core.held_frames(), 3);
    assert!(!core.held_ready());
    fx.clear();
    // The interval later, every open gap again (the NACK may be lost).
    feed(&mut core, &mut fx, &u64_frame(8, 8), 12 + 50_000_000);
    assert_eq!(fx.nacks, vec![(1, 2, 2), (1, 5, 6)]);
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(2, 2), 50_000_100);
    assert!(core.held_ready(), "3 is kept and its turn came");
    let mut held = Vec::new();
    let mut taken = Vec::new();
    while let Some(from) = core.take_held(&mut held) {
        assert_eq!(from, HeldFrom::Source);
        let view = parse(&held, 1 << 20).unwrap().unwrap();
        taken.push(view.header.seq());
        fx.journal_input = None;
        core.handle(
            Input::SourceData {
                frame: view,
                now_ns: 50_000_200,
            },
            &mut fx,
        );
        assert!(fx.journal_input.is_some());
        held.clear();
    }
    assert_eq!(taken, vec![3, 4], "in seq order, up to the next gap");
    assert_eq!(core.inputs()[0].delivered, 4);
    feed(&mut core, &mut fx, &u64_frame(5, 5), 50_000_300);
    feed(&mut core, &mut fx, &u64_frame(6, 6), 50_000_400);
    while core.take_held(&mut held).is_some() {
        let view = parse(&held, 1 << 20).unwrap().unwrap();
        core.handle(
            Input::SourceData {
                frame: view,
                now_ns: 50_000_500,
            },
            &mut fx,
        );
        held.clear();
    }
    assert_eq!(core.inputs()[0].delivered, 8);
    assert_eq!(core.held_frames(), 0);
    let seqs: Vec<u64> = outputs(&fx.outbound).iter().map(|o| o.0).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6, 7, 8], "output seqs stay gap-free");
}

#[test]
fn without_a_reorder_window_a_gap_is_nacked_go_back_n_once_per_interval() {
    let mut core = NodeCore::new(
        Registry::builtin().build("doubler").unwrap(),
        NodeConfig {
            reorder_window: 0,
            ..NodeConfig::default()
        },
    );
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &u64_frame(1, 1), 0);
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(3, 3), 10);
    assert_eq!(fx.nacks, vec![(1, 2, verity_wire::reorder::FROM_ON)]);
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(4, 4), 11);
    assert!(fx.nacks.is_empty(), "one NACK per interval");
    assert_eq!(core.held_frames(), 0, "nothing kept");
    let mut sent = Vec::new();
    nack_frames(&[(1, 2, verity_wire::reorder::FROM_ON)], |c, s, r| {
        sent.push((c, s, r.len()))
    });
    assert_eq!(
        sent,
        vec![(1, 2, 0)],
        "an empty NACK body: everything from 2"
    );
}

#[test]
fn frames_on_unknown_channels_are_counted_and_ignored() {
    let mut core = doubler();
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &data(9, 1, &[0; 8]), 0);
    feed(&mut core, &mut fx, &data(0, 1, &[0; 8]), 0);
    assert_eq!(core.stats.unknown_channel, 2);
    assert_eq!(fx.journal_input, None);
}

#[test]
fn a_bad_record_becomes_a_dead_letter_with_its_trace_id() {
    let mut core = doubler();
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &data(1, 1, b"bad"), 0);
    assert_eq!(fx.journal_input, Some((0, 0)), "journaled: it was accepted");
    assert_eq!(
        fx.dead_letters,
        vec![DeadLetter {
            journal_index: 0,
            channel: 1,
            seq: 1,
            trace_id: 1 << 40 | 1,
            reason: "u64 record is not 8 bytes"
        }]
    );
    assert!(fx.outbound.is_empty());
    // It is still ACKed: the input was accepted, the app rejected it.
    core.handle(Input::Durable { records: 1 }, &mut fx);
    assert_eq!(fx.acks, vec![(1, 1)]);
}

#[test]
fn outputs_are_released_as_far_as_the_journal_is_durable_within_a_run() {
    let mut core = doubler();
    let mut fx = Effects::default();
    for s in 1..=5 {
        feed(&mut core, &mut fx, &u64_frame(s, s), 0);
    }
    let mut release_at = |records| {
        fx.clear();
        core.handle(Input::Durable { records }, &mut fx);
        core.out().released
    };
    assert_eq!(release_at(2), 2);
    assert_eq!(release_at(2), 2, "nothing new");
    assert_eq!(release_at(4), 4);
    assert_eq!(release_at(5), 5);
}

#[test]
fn resume_from_the_sink_resends_from_its_delivered_seq_and_drops_nothing() {
    let mut core = doubler();
    let mut fx = Effects::default();
    for s in 1..=5 {
        feed(&mut core, &mut fx, &u64_frame(s, s), 0);
    }
    core.handle(Input::Durable { records: 5 }, &mut fx);
    let sink = Out::Sink;
    core.handle(
        Input::Sent {
            out: sink,
            through: 5,
        },
        &mut fx,
    );
    fx.clear();
    core.handle(
        Input::Resume {
            out: sink,
            delivered: 3,
        },
        &mut fx,
    );
    assert_eq!(fx.resend, Some((sink, 4)));
    assert_eq!(core.out().acked, 0, "a RESUME is not an ACK");
    fx.clear();
    core.handle(Input::Ack { out: sink, seq: 3 }, &mut fx);
    assert_eq!((core.out().acked, fx.violation), (3, None));
}

#[test]
fn a_sink_that_claims_more_than_was_released_is_a_violation_and_nothing_is_dropped() {
    // The issue 11 reproduction: RESUME(delivered = 10^9) from a client on
    // the sink address made the node drop every unACKed output.
    let mut core = doubler();
    let mut fx = Effects::default();
    for s in 1..=5 {
        feed(&mut core, &mut fx, &u64_frame(s, s), 0);
    }
    core.handle(Input::Durable { records: 5 }, &mut fx);
    let sink = Out::Sink;
    for bogus in [
        Input::Resume {
            out: sink,
            delivered: 1_000_000_000,
        },
        Input::Ack { out: sink, seq: 6 },
        Input::Nack {
            out: sink,
            from: 1,
            ranges: &[],
        },
    ] {
        fx.clear();
        core.handle(bogus, &mut fx);
        assert!(fx.violation.is_some(), "{bogus:?}");
        assert_eq!(fx.resend, None);
        assert_eq!(core.out().acked, 0, "{bogus:?} dropped frames");
    }
    assert_eq!(core.stats.violations, 3);
    // Seqs released but never sent in this process are not taken as ACKed.
    fx.clear();
    core.handle(Input::Ack { out: sink, seq: 5 }, &mut fx);
    assert_eq!((fx.violation, core.out().acked), (None, 0));
    core.handle(
        Input::Sent {
            out: sink,
            through: 5,
        },
        &mut fx,
    );
    core.handle(Input::Ack { out: sink, seq: 5 }, &mut fx);
    assert_eq!(core.out().acked, 5);
    fx.clear();
    core.handle(Input::Ack { out: sink, seq: 4 }, &mut fx);
    assert!(
        matches!(fx.violation, Some(Violation::Backwards { .. })),
        "an ACK going backwards"
    );
}

#[test]
fn a_duplicate_with_other_content_is_a_conflict_and_the_first_version_stands() {
    let mut core = doubler();
    let mut fx = Effects::default();
    feed(&mut core, &mut fx, &u64_frame(1, 10), 0);
    feed(&mut core, &mut fx, &u64_frame(2, 20), 0);
    core.handle(Input::Durable { records: 2 }, &mut fx);
    fx.clear();
    // The same bytes again (a resend, flag RESEND): a duplicate.
    let mut resend = BytesMut::new();
    Encoder::default()
        .data(&mut resend, 1, 2, 1 << 40 | 2, true, &20u64.to_be_bytes())
        .unwrap();
    feed(&mut core, &mut fx, &resend, 0);
    assert_eq!((fx.violation, core.stats.duplicates), (None, 1));
    // Seq 2 with another value: a second producer.
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(2, 21), 0);
    assert_eq!(
        fx.violation,
        Some(Violation::Conflict { channel: 1, seq: 2 })
    );
    assert!(fx.journal_input.is_none() && fx.outbound.is_empty());
    assert_eq!(core.inputs()[0].delivered, 2);
}

#[test]
fn backpressure_stops_input_when_the_sink_lags() {
    let cfg = NodeConfig {
        max_unacked: 3,
        ..NodeConfig::default()
    };
    let mut core = NodeCore::new(Registry::builtin().build("doubler").unwrap(), cfg);
    let mut fx = Effects::default();
    for s in 1..=3 {
        assert!(core.wants_input());
        feed(&mut core, &mut fx, &u64_frame(s, s), 0);
    }
    assert!(!core.wants_input());
    core.handle(Input::Durable { records: 3 }, &mut fx);
    core.handle(
        Input::Sent {
            out: Out::Sink,
            through: 3,
        },
        &mut fx,
    );
    core.handle(
        Input::Ack {
            out: Out::Sink,
            seq: 2,
        },
        &mut fx,
    );
    assert!(core.wants_input());
}

/// (journal index, timestamp, frame) of one journaled input.
type Journaled = (u64, u64, Vec<u8>);

/// Runs the market-spread core over an interleaving of two channels and
/// returns (journal as (index, ts, frame), outbound bytes).
fn run_market(frames: &[Vec<u8>], core: &mut NodeCore) -> (Vec<Journaled>, Vec<u8>) {
    let mut fx = Effects::default();
    let mut journal = Vec::new();
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        feed(core, &mut fx, f, 1000 + i as u64);
        if let Some((idx, ts)) = fx.journal_input {
            journal.push((idx, ts, f.clone()));
        }
        out.extend_from_slice(&fx.outbound);
        fx.clear();
    }
    (journal, out)
}

fn market_frames() -> Vec<Vec<u8>> {
    let nbbo = |seq: u64, sym: &[u8; 4], bid: f64, offer: f64| {
        let mut b = vec![2u8];
        b.extend_from_slice(sym);
        b.extend_from_slice(b"20260101-09:30:00.000");
        b.extend_from_slice(&bid.to_be_bytes());
        b.extend_from_slice(&offer.to_be_bytes());
        data(1, seq, &b)
    };
    let order = |seq: u64, sym: &[u8; 4]| {
        let mut b = vec![1u8, 1, 0, 0, 0, 1];
        b.extend_from_slice(b"ORD001");
        b.extend_from_slice(sym);
        b.extend_from_slice(&1.0f64.to_be_bytes());
        b.extend_from_slice(&1.0f64.to_be_bytes());
        b.extend_from_slice(b"20260101-09:30:00.000");
        data(2, seq, &b)
    };
    vec![
        order(1, b"AAAA"),
        nbbo(1, b"AAAA", 10.0, 10.01),
        order(2, b"AAAA"),
        nbbo(2, b"BBBB", 1.0, 1.2),
        order(3, b"BBBB"),
        nbbo(3, b"AAAA", 10.0, 10.2),
        order(4, b"AAAA"),
        order(5, b"CCCC"),
    ]
}

#[test]
fn replaying_the_journal_reproduces_the_same_frames_with_the_same_seqs() {
    let frames = market_frames();
    let mut live = NodeCore::new(
        Registry::builtin().build("market-spread").unwrap(),
        NodeConfig::default(),
    );
    let (journal, live_out) = run_market(&frames, &mut live);
    assert_eq!(live.stats.outputs, 5);

    let mut again = NodeCore::new(
        Registry::builtin().build("market-spread").unwrap(),
        NodeConfig::default(),
    );
    let mut fx = Effects::default();
    let mut replay_out = Vec::new();
    for (index, ts, frame) in &journal {
        again.handle(
            Input::Replay(JournalEntry {
                index: *index,
                timestamp_ns: *ts,
                frame,
            }),
            &mut fx,
        );
        replay_out.extend_from_slice(&fx.outbound);
        fx.clear();
    }
    assert_eq!(replay_out, live_out, "bit-identical outputs");
}

#[test]
fn snapshot_then_replay_of_the_rest_equals_the_straight_run() {
    let frames = market_frames();
    let mut live = NodeCore::new(
        Registry::builtin().build("market-spread").unwrap(),
        NodeConfig::default(),
    );
    let (journal, live_out) = run_market(&frames, &mut live);
    for cut in 0..=journal.len() {
        // Run the first `cut` records, snapshot, restore into a fresh core, replay the rest.
        let mut first = NodeCore::new(
            Registry::builtin().build("market-spread").unwrap(),
            NodeConfig::default(),
        );
        let mut fx = Effects::default();
        let mut out = Vec::new();
        for (index, ts, frame) in &journal[..cut] {
            first.handle(
                Input::Replay(JournalEntry {
                    index: *index,
                    timestamp_ns: *ts,
                    frame,
                }),
                &mut fx,
            );
            out.extend_from_slice(&fx.outbound);
            fx.clear();
        }
        let mut snap = Vec::new();
        first.snapshot(&mut snap);
        let mut second = NodeCore::new(
            Registry::builtin().build("market-spread").unwrap(),
            NodeConfig::default(),
        );
        second.restore(&snap).unwrap();
        assert_eq!(second.journal_next(), cut as u64);
        for (index, ts, frame) in &journal[cut..] {
            second.handle(
                Input::Replay(JournalEntry {
                    index: *index,
                    timestamp_ns: *ts,
                    frame,
                }),
                &mut fx,
            );
            out.extend_from_slice(&fx.outbound);
            fx.clear();
        }
        assert_eq!(out, live_out, "cut at {cut}");
    }
}

#[test]
fn a_snapshot_of_another_app_or_garbage_is_refused() {
    let mut snap = Vec::new();
    doubler().snapshot(&mut snap);
    let mut ms = NodeCore::new(
        Registry::builtin().build("market-spread").unwrap(),
        NodeConfig::default(),
    );
    assert!(matches!(
        ms.restore(&snap),
        Err(SnapshotError::WrongApp { .. })
    ));
    assert_eq!(ms.restore(b"garbage!"), Err(SnapshotError::BadMagic));
    for cut in 0..snap.len() {
        assert!(doubler().restore(&snap[..cut]).is_err(), "prefix {cut}");
    }
}

#[test]
fn replay_skips_records_that_do_not_follow_the_watermark() {
    let mut core = doubler();
    let mut fx = Effects::default();
    let f2 = u64_frame(2, 2);
    core.handle(
        Input::Replay(JournalEntry {
            index: 0,
            timestamp_ns: 0,
            frame: &f2,
        }),
        &mut fx,
    );
    assert_eq!(core.inputs()[0].delivered, 0);
    assert!(fx.outbound.is_empty());
}

#[test]
fn replay_takes_only_data_frames_of_known_channels_in_order_and_says_where_it_stopped() {
    // A journal record's checksum vouches for its bytes, not that it
    // belongs to this core: the replay still checks kind, channel and
    // order, and stops at the first frame that does not follow.
    let mut core = doubler();
    let mut fx = Effects::default();
    let mut run = Vec::new();
    run.extend_from_slice(&u64_frame(1, 10));
    run.extend_from_slice(&u64_frame(2, 20));
    assert_eq!(core.replay_record(&run, 7, &mut fx, |_, _| {}), Ok(2));
    assert_eq!(outputs(&fx.outbound).len(), 2);

    // Not DATA (an ACK on channel 1): counted, not taken.
    let mut ack = BytesMut::new();
    Encoder::default()
        .frame(&mut ack, verity_wire::Kind::Ack, 0, 1, 0, 3, 0, &[])
        .unwrap();
    let before = core.stats.unknown_channel;
    assert_eq!(
        core.replay_record(&ack, 7, &mut fx, |_, _| {}),
        Err(NotReplayed { index: 2 })
    );
    assert_eq!(core.stats.unknown_channel, before + 1);
    // A channel this core has no input on.
    assert_eq!(
        core.replay_record(&data(9, 3, &30u64.to_be_bytes()), 7, &mut fx, |_, _| {}),
        Err(NotReplayed { index: 2 })
    );
    assert_eq!(core.stats.unknown_channel, before + 2);
    // Seq 4 after 2: a gap, not taken.
    assert_eq!(
        core.replay_record(&u64_frame(4, 40), 7, &mut fx, |_, _| {}),
        Err(NotReplayed { index: 2 })
    );
    assert_eq!(core.inputs()[0].delivered, 2);
    assert_eq!(core.journal_next(), 2);
}

#[test]
fn a_resent_frame_replays_with_the_content_crc_of_its_first_send() {
    // The journal may hold a resend (flag RESEND, another frame CRC) if
    // the first send was lost: after the replay, the first send arriving
    // late is a duplicate, not a conflict.
    let mut core = doubler();
    let mut fx = Effects::default();
    let mut resend = BytesMut::new();
    Encoder::default()
        .data(&mut resend, 1, 1, 1 << 40 | 1, true, &10u64.to_be_bytes())
        .unwrap();
    assert_eq!(core.replay_record(&resend, 0, &mut fx, |_, _| {}), Ok(1));
    fx.clear();
    feed(&mut core, &mut fx, &u64_frame(1, 10), 0);
    assert_eq!((fx.violation, core.stats.duplicates), (None, 1));
    feed(&mut core, &mut fx, &u64_frame(1, 11), 0);
    assert_eq!(
        fx.violation,
        Some(Violation::Conflict { channel: 1, seq: 1 })
    );
}

pub(super) fn cluster_node(node: u32, nodes: u32) -> NodeCore {
    let cfg = NodeConfig {
        node,
        routing: Some(crate::routing::Routing::new(64, nodes).unwrap()),
        sink_channel: sink_channel(node),
        ..NodeConfig::default()
    };
    NodeCore::new(Registry::builtin().build("sequence-window").unwrap(), cfg)
}

/// A value whose key (value mod M) node `owner` of a 2-node cluster owns.
pub(super) fn value_owned_by(owner: u32) -> u64 {
    let r = crate::routing::Routing::new(64, 2).unwrap();
    (0..1000u64)
        .find(|v| r.owner(r.partition(&(v % crate::apps::sequence_window::KEYS))) == owner)
        .unwrap()
}

#[test]
fn a_record_keyed_to_another_node_is_forwarded_once_and_processed_there() {
    let (mut n0, mut n1) = (cluster_node(0, 2), cluster_node(1, 2));
    let mut fx = Effects::default();
    let v = value_owned_by(1);
    feed(&mut n0, &mut fx, &u64_frame(1, v), 7);
    assert_eq!(fx.journal_input, Some((0, 7)), "the ingress journals it");
    assert!(
        fx.outbound.is_empty(),
        "the ingress does not process a key it does not own"
    );
    let fwd = &fx.to_peers[1];
    assert_eq!(fwd.seqs, Some((1, 1)));
    let frame = fwd.frames.to_vec();
    let view = parse(&frame, 1 << 20).unwrap().unwrap();
    assert_eq!(view.header.channel(), peer_channel(0, 1));
    assert_eq!(
        view.header.trace_id(),
        (1u64 << 40) | 1,
        "the trace id travels"
    );
    assert_eq!(&view.payload[..4], &0u32.to_le_bytes(), "source index");
    assert_eq!(&view.payload[8..16], &1u64.to_le_bytes(), "source seq");
    // Nothing leaves before the journal record is durable (output commit).
    assert_eq!(n0.peer_out(1).map(|o| o.released), Some(0));
    fx.clear();
    n0.handle(Input::Durable { records: 1 }, &mut fx);
    assert_eq!(n0.peer_out(1).map(|o| o.released), Some(1));
    assert_eq!(fx.acks, vec![(1, 1)]);

    // The owner processes it, on its own sink channel, and ACKs the peer
    // channel once durable; a duplicate is dropped and re-ACKed.
    let mut fx1 = Effects::default();
    n1.handle(
        Input::PeerData {
            from: 0,
            frame: view,
            now_ns: 9,
        },
        &mut fx1,
    );
    assert_eq!(fx1.journal_input, Some((0, 9)));
    let outs = outputs(&fx1.outbound);
    assert_eq!(outs.len(), 1);
    let out_view = parse(&fx1.outbound, 1 << 20).unwrap().unwrap();
    assert_eq!(out_view.header.channel(), sink_channel(1));
    fx1.clear();
    n1.handle(Input::Durable { records: 1 }, &mut fx1);
    assert_eq!(fx1.acks, vec![(peer_channel(0, 1), 1)]);
    fx1.clear();
    n1.handle(
        Input::PeerData {
            from: 0,
            frame: view,
            now_ns: 10,
        },
        &mut fx1,
    );
    assert_eq!(fx1.journal_input, None);
    assert_eq!(fx1.acks, vec![(peer_channel(0, 1), 1)]);
    assert_eq!(n1.stats.duplicates, 1);
}

#[test]
fn a_record_the_ingress_owns_is_processed_there_and_not_forwarded() {
    let mut n0 = cluster_node(0, 2);
    let mut fx = Effects::default();
    feed(&mut n0, &mut fx, &u64_frame(1, value_owned_by(0)), 1);
    assert_eq!(outputs(&fx.outbound).len(), 1);
    assert!(!fx.has_peer_frames());
    assert_eq!(n0.stats.forwarded, 0);
}

#[test]
fn peer_frames_on_the_wrong_channel_or_from_the_wrong_node_are_refused() {
    let mut n1 = cluster_node(1, 3);
    let mut fx = Effects::default();
    // Node 2 claiming node 0's channel.
    let f = data(peer_channel(0, 1), 1, &[0; 24]);
    let view = parse(&f, 1 << 20).unwrap().unwrap();
    n1.handle(
        Input::PeerData {
            from: 2,
            frame: view,
            now_ns: 0,
        },
        &mut fx,
    );
    // A source connection using a peer channel.
    n1.handle(
        Input::SourceData {
            frame: view,
            now_ns: 0,
        },
        &mut fx,
    );
    // A channel to another node.
    let f = data(peer_channel(0, 2), 1, &[0; 24]);
    let view = parse(&f, 1 << 20).unwrap().unwrap();
    n1.handle(
        Input::PeerData {
            from: 0,
            frame: view,
            now_ns: 0,
        },
        &mut fx,
    );
    assert_eq!(fx.journal_input, None);
    assert_eq!(n1.stats.unknown_channel, 3);
    assert_eq!(n1.stats.accepted, 0);
}

#[test]
fn a_forwarded_record_with_a_bad_prefix_is_a_dead_letter() {
    let mut n1 = cluster_node(1, 2);
    let mut fx = Effects::default();
    let f = data(peer_channel(0, 1), 1, &[1, 2, 3]);
    let view = parse(&f, 1 << 20).unwrap().unwrap();
    n1.handle(
        Input::PeerData {
            from: 0,
            frame: view,
            now_ns: 0,
        },
        &mut fx,
    );
    assert_eq!(fx.journal_input, Some((0, 0)));
    assert_eq!(fx.dead_letters.len(), 1);
    assert_eq!(fx.dead_letters[0].reason, "bad forward prefix");
}

#[test]
fn peer_resume_resends_from_the_peers_delivered_and_a_snapshot_keeps_peer_seqs() {
    let mut n0 = cluster_node(0, 2);
    let mut fx = Effects::default();
    let v = value_owned_by(1);
    for seq in 1..=4 {
        feed(&mut n0, &mut fx, &u64_frame(seq, v), 0);
    }
    fx.clear();
    n0.handle(Input::Durable { records: 4 }, &mut fx);
    assert_eq!(n0.peer_out(1).map(|o| o.released), Some(4));
    fx.clear();
    let to1 = Out::Node(1);
    n0.handle(
        Input::Sent {
            out: to1,
            through: 4,
        },
        &mut fx,
    );
    n0.handle(
        Input::Resume {
            out: to1,
            delivered: 2,
        },
        &mut fx,
    );
    assert_eq!(fx.resend, Some((to1, 3)));
    n0.handle(Input::Ack { out: to1, seq: 2 }, &mut fx);
    assert_eq!(n0.peer_out(1).unwrap().acked, 2);
    let mut snap = Vec::new();
    n0.snapshot(&mut snap);
    let mut again = cluster_node(0, 2);
    again.restore(&snap).unwrap();
    assert_eq!(again.peer_out(1).unwrap().next_seq, 5);
    let mut other = cluster_node(1, 2);
    assert!(matches!(
        other.restore(&snap),
        Err(SnapshotError::WrongNode { .. })
    ));
}

#[test]
fn acks_follow_durability_record_by_record_inside_a_run_of_inputs() {
    // Market spread: two inputs, so runs of one channel interleave with
    // the other's; durability lands inside runs.
    let mut core = NodeCore::new(
        Registry::builtin().build("market-spread").unwrap(),
        NodeConfig::default(),
    );
    let mut fx = Effects::default();
    // Journal 0..=2: channel 1 seqs 1..=3; 3..=4: channel 2 seqs 1..=2;
    // 5: channel 1 seq 4. (Payloads the app rejects still are accepted,
    // journaled inputs: dead letters are ACKed like any other.)
    for seq in 1..=3 {
        feed(&mut core, &mut fx, &data(1, seq, b"x"), 0);
    }
    for seq in 1..=2 {
        feed(&mut core, &mut fx, &data(2, seq, b"x"), 0);
    }
    feed(&mut core, &mut fx, &data(1, 4, b"x"), 0);
    assert_eq!(core.journal_next(), 6);
    let mut acks_at = |records| {
        fx.clear();
        core.handle(Input::Durable { records }, &mut fx);
        fx.acks.clone()
    };
    assert_eq!(acks_at(2), vec![(1, 2)]);
    assert_eq!(acks_at(3), vec![(1, 3)]);
    assert_eq!(acks_at(4), vec![(2, 1)], "only channels whose ACK moved");
    assert_eq!(acks_at(6), vec![(1, 4), (2, 2)]);
}
