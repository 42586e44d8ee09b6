//! The deterministic simulator (`verity-sim`): the production [`NodeCore`]
//! driven as-is by a simulated network, disk and clock, with crashes and
//! restarts, all from one seed — in the manner of FoundationDB's simulator
//! and TigerBeetle's VOPR.
//!
//! One node, its sources and its sink, all in one thread, on virtual time
//! (µs). Every frame between them is really encoded and decoded with
//! `verity-wire`, then passes a simulated link that may drop, duplicate,
//! delay and reorder it, or (during a partition) lose everything. The node's
//! journal, outbound log and snapshot live in memory: a crash with `process`
//! durability keeps them (the page cache survives a process crash); with
//! `fsync` durability it loses what the last group commit did not cover (a
//! machine crash). A restart recovers exactly as the runtime does: newest
//! snapshot, journal replay (outputs already logged must come out
//! bit-identical), RESUME with sources and sink.
//!
//! Swarm testing: each seed draws its own fault parameters (loss 0–30%,
//! duplication 0–50%, reordering, partitions, crash rate, durability,
//! snapshot interval) and its app and workload. At the end the independent
//! oracle of `verity-check` judges the sink's output. A run is a pure
//! function of its seed: [`SimOutcome::hash`] covers every output and every
//! journal record, and `--check-determinism` runs each seed twice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use verity_tools::check::{self, App as CheckApp};
use verity_tools::formats::{trace_id, InputFormat, ReceivedWriter};
use verity_tools::gen::{self, GenConfig, Rng, TextConfig};
use verity_tools::send::Records;
use verity_wire::{parse, Encoder, FrameView, Kind};

use crate::core::{Effects, Input, JournalEntry, NodeConfig, NodeCore};

/// Fault parameters of one run (drawn from the seed, or given).
#[derive(Debug, Clone, PartialEq)]
pub struct SimParams {
    pub seed: u64,
    pub app: String,
    pub messages: u64,
    /// Probabilities in parts per million, per frame.
    pub drop_ppm: u32,
    pub dup_ppm: u32,
    pub reorder_ppm: u32,
    /// One-way link latency: base + uniform jitter (µs).
    pub latency_us: u64,
    pub jitter_us: u64,
    /// Mean virtual time between node crashes (0: never).
    pub crash_every_us: u64,
    /// `true`: crashes lose what the last sync did not cover (fsync durability).
    pub fsync: bool,
    pub sync_every_us: u64,
    pub snapshot_every_records: u64,
    /// Windows (start, end) in µs when every link is cut.
    pub partitions: Vec<(u64, u64)>,
    pub time_limit_us: u64,
}

const APPS: [&str; 4] = ["doubler", "word-count", "sequence-window", "market-spread"];

impl SimParams {
    /// Swarm testing: the seed draws the app, the workload and every fault
    /// parameter.
    pub fn swarm(seed: u64) -> SimParams {
        let mut r = Rng::new(seed ^ 0x5157_4152_4d00_0000);
        let app = APPS[r.below(APPS.len() as u64) as usize].to_owned();
        let messages = 200 + r.below(1300);
        let pct = |r: &mut Rng, max: u64| (r.below(max * 10_000 + 1)) as u32;
        let crash_every_us = match r.below(4) {
            0 => 0,
            _ => 20_000 + r.below(200_000),
        };
        let mut partitions = Vec::new();
        for _ in 0..r.below(3) {
            let start = r.below(400_000);
            partitions.push((start, start + 5_000 + r.below(60_000)));
        }
        SimParams {
            seed,
            app,
            messages,
            drop_ppm: pct(&mut r, 30),
            dup_ppm: pct(&mut r, 50),
            reorder_ppm: pct(&mut r, 20),
            latency_us: 20 + r.below(200),
            jitter_us: r.below(300),
            crash_every_us,
            fsync: r.below(2) == 0,
            sync_every_us: 200 + r.below(2_000),
            snapshot_every_records: 50 + r.below(500),
            partitions,
            time_limit_us: 120_000_000,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    pub params: SimParams,
    pub passed: bool,
    /// The checker's summary line (or the failure).
    pub verdict: String,
    /// FNV-1a over every output delivered and every journal record.
    pub hash: u64,
    pub crashes: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    pub virtual_us: u64,
    pub events: u64,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Actor {
    Source(usize),
    Node,
    Sink,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A frame arrives at `to` over the connection of generation `gen`.
    Deliver {
        from: Actor,
        to: Actor,
        gen: u64,
        frame: Vec<u8>,
    },
    SourceTick(usize),
    NodeTick,
    Sync,
    Crash,
    Restart,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: u64,
    order: u64,
    event: Event,
}

struct Source {
    channel: u32,
    records: Arc<Records>,
    next: u64,
    acked: u64,
    highest_sent: u64,
    last_progress_us: u64,
}

struct SimNode {
    core: Option<NodeCore>,
    app: String,
    /// (timestamp, frame) of every accepted input, in journal order.
    journal: Vec<(u64, Vec<u8>)>,
    /// Journal records covered by the last sync (fsync durability).
    synced: usize,
    /// (journal records covered, core snapshot).
    snapshot: Option<(usize, Vec<u8>)>,
    /// Output frames kept until the sink ACKs them, by seq.
    outbound: BTreeMap<u64, Vec<u8>>,
    /// Highest seq ever logged (outputs up to it are verified on replay).
    logged_through: u64,
    sink_cursor: u64,
    /// The sink's RESUME arrived on the current connection (until then the
    /// node sends it nothing, as the runtime waits for RESUME).
    sink_ready: bool,
    sink_acked_at_us: u64,
    records_since_snapshot: u64,
    fx: Effects,
}

struct Sink {
    delivered: BTreeMap<u32, u64>,
    /// (channel, seq, trace id, payload), in arrival order after dedup.
    received: Vec<(u32, u64, u64, Vec<u8>)>,
    duplicates: u64,
    nacked: BTreeMap<u32, (u64, u64)>,
}

struct Sim {
    p: SimParams,
    rng: Rng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// Connection generation: bumped when the node crashes or restarts, so
    /// frames in flight on old connections vanish (TCP connections die).
    gen: u64,
    sources: Vec<Source>,
    node: SimNode,
    sink: Sink,
    enc: Encoder,
    crashes: u64,
    frames_sent: u64,
    frames_dropped: u64,
    events: u64,
    failure: Option<String>,
}

/// Source records of one run plus their files (for the oracle).
struct Workload {
    inputs: Vec<(std::path::PathBuf, u32, Arc<Records>)>,
}

fn workload(p: &SimParams, dir: &Path) -> Result<Workload, String> {
    let data = gen::data_dir(None);
    let ge = |e: gen::GenError| e.to_string();
    let files: Vec<(std::path::PathBuf, InputFormat, u32)> = match p.app.as_str() {
        "market-spread" => {
            let cfg = GenConfig {
                seed: p.seed,
                orders: p.messages / 2,
                nbbo_updates: p.messages / 2,
                data_dir: data,
            };
            gen::market_spread(&cfg, dir).map_err(ge)?;
            vec![
                (dir.join("nbbo.msg"), InputFormat::Fixish, 1),
                (dir.join("orders.msg"), InputFormat::Fixish, 2),
            ]
        }
        "word-count" => {
            let f = dir.join("input.txt");
            let cfg = TextConfig {
                seed: p.seed,
                lines: p.messages / 4 + 1,
                data_dir: data,
            };
            gen::text(&cfg, &f).map_err(ge)?;
            vec![(f, InputFormat::Lines, 1)]
        }
        _ => {
            let f = dir.join("input.u64");
            gen::u64_counters(p.messages, &f).map_err(ge)?;
            vec![(f, InputFormat::U64, 1)]
        }
    };
    let mut inputs = Vec::new();
    for (path, format, channel) in files {
        let r = Records::load(format, &path).map_err(|e| e.to_string())?;
        inputs.push((path, channel, Arc::new(r)));
    }
    Ok(Workload { inputs })
}

const TICK_US: u64 = 500;
const WINDOW: u64 = 64;
const RESEND_AFTER_US: u64 = 20_000;
const RESTART_AFTER_US: u64 = 5_000;

impl Sim {
    fn schedule(&mut self, after_us: u64, event: Event) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after_us,
            order: self.order,
            event,
        }));
    }

    fn partitioned(&self, at: u64) -> bool {
        self.p.partitions.iter().any(|&(s, e)| at >= s && at < e)
    }

    /// Puts one frame on the simulated link from `from` to `to`.
    fn transmit(&mut self, from: Actor, to: Actor, frame: &[u8]) {
        self.frames_sent += 1;
        if self.partitioned(self.now) || self.rng.below(1_000_000) < self.p.drop_ppm as u64 {
            self.frames_dropped += 1;
            return;
        }
        let copies = if self.rng.below(1_000_000) < self.p.dup_ppm as u64 {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.p.latency_us + self.rng.below(self.p.jitter_us + 1);
            if self.rng.below(1_000_000) < self.p.reorder_ppm as u64 {
                delay += self.rng.below(5_000);
            }
            let gen = self.gen;
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    gen,
                    frame: frame.to_vec(),
                },
            );
        }
    }

    fn run(&mut self, expected_outputs: u64) -> u64 {
        for i in 0..self.sources.len() {
            self.schedule(0, Event::SourceTick(i));
        }
        self.schedule(TICK_US, Event::NodeTick);
        if self.p.fsync {
            self.schedule(self.p.sync_every_us, Event::Sync);
        }
        self.schedule_crash();
        self.node_start();
        while let Some(Reverse(s)) = self.queue.pop() {
            self.now = s.at;
            self.events += 1;
            if self.failure.is_some() || self.now > self.p.time_limit_us {
                break;
            }
            match s.event {
                Event::Deliver {
                    from,
                    to,
                    gen,
                    frame,
                } => {
                    if gen == self.gen {
                        self.deliver(from, to, &frame);
                    }
                }
                Event::SourceTick(i) => {
                    self.source_tick(i);
                    self.schedule(TICK_US, Event::SourceTick(i));
                }
                Event::NodeTick => {
                    self.node_tick();
                    self.schedule(TICK_US, Event::NodeTick);
                }
                Event::Sync => {
                    self.node_sync();
                    self.schedule(self.p.sync_every_us, Event::Sync);
                }
                Event::Crash => {
                    self.node_crash();
                    self.schedule(RESTART_AFTER_US, Event::Restart);
                }
                Event::Restart => {
                    self.node_start();
                    self.schedule_crash();
                }
            }
            let done = self.sources.iter().all(|s| s.acked == s.records.len())
                && self.sink.received.len() as u64 >= expected_outputs;
            if done {
                break;
            }
        }
        self.now
    }

    fn schedule_crash(&mut self) {
        if self.p.crash_every_us > 0 {
            let after = 1 + self.rng.below(2 * self.p.crash_every_us);
            self.schedule(after, Event::Crash);
        }
    }

    fn deliver(&mut self, from: Actor, to: Actor, bytes: &[u8]) {
        let view = match parse(bytes, verity_wire::DEFAULT_MAX_FRAME_LEN) {
            Ok(Some(v)) => v,
            _ => {
                self.failure = Some("a simulated frame failed to decode".into());
                return;
            }
        };
        match to {
            Actor::Node => self.node_receive(from, view, &bytes[..view.stride]),
            Actor::Source(i) => self.source_receive(i, view),
            Actor::Sink => self.sink_receive(view),
        }
    }

    // --- sources (the sender tool's protocol) ---

    fn source_tick(&mut self, i: usize) {
        if self.node.core.is_none() {
            return;
        }
        let now = self.now;
        let s = &mut self.sources[i];
        let n = s.records.len();
        if s.acked < n && now.saturating_sub(s.last_progress_us) > RESEND_AFTER_US {
            // Nothing ACKed for a while: go back and resend (timeout).
            s.next = s.acked + 1;
            s.last_progress_us = now;
        }
        let end = n.min(s.acked + WINDOW).min(s.next + 15);
        let (channel, records, from) = (s.channel, Arc::clone(&s.records), s.next);
        for seq in from..=end {
            let resend = seq <= self.sources[i].highest_sent;
            let mut b = BytesMut::new();
            let _ = self.enc.data(
                &mut b,
                channel,
                0,
                seq,
                trace_id(channel, seq),
                resend,
                records.get(seq),
            );
            self.transmit(Actor::Source(i), Actor::Node, &b);
        }
        let s = &mut self.sources[i];
        if end >= from {
            s.next = end + 1;
            s.highest_sent = s.highest_sent.max(end);
        }
    }

    fn source_receive(&mut self, i: usize, view: FrameView<'_>) {
        let now = self.now;
        let s = &mut self.sources[i];
        let seq = view.header.seq();
        match view.kind() {
            Kind::Ack if seq > s.acked => {
                s.acked = seq;
                s.last_progress_us = now;
                s.next = s.next.max(seq + 1);
            }
            Kind::Nack if seq > s.acked => s.next = s.next.min(seq),
            Kind::Resume => {
                let delivered = view
                    .resume_entries()
                    .and_then(|es| {
                        es.iter()
                            .find(|e| e.channel.get() == s.channel)
                            .map(|e| e.delivered.get())
                    })
                    .unwrap_or(0);
                // RESUME is authoritative (see tools/src/send.rs).
                s.acked = delivered;
                s.next = delivered + 1;
                s.last_progress_us = now;
            }
            _ => {}
        }
    }

    // --- the node: the production core with an in-memory journal ---

    fn node_start(&mut self) {
        let Some(app) = crate::apps::build(&self.node.app) else {
            self.failure = Some(format!("unknown app {}", self.node.app));
            return;
        };
        let mut core = NodeCore::new(app, NodeConfig::default());
        let mut from = 0;
        if let Some((len, snap)) = &self.node.snapshot {
            if let Err(e) = core.restore(snap) {
                self.failure = Some(format!("snapshot restore: {e}"));
                return;
            }
            from = *len;
        }
        // Replay: outputs already logged must come out bit-identical.
        let journal = std::mem::take(&mut self.node.journal);
        for (i, (ts, frame)) in journal.iter().enumerate().skip(from) {
            self.node.fx.clear();
            core.handle(
                Input::Replay(JournalEntry {
                    index: i as u64,
                    timestamp_ns: *ts,
                    frame,
                }),
                &mut self.node.fx,
            );
            if core.journal_next() != i as u64 + 1 {
                self.failure = Some(format!("journal record {i} did not replay"));
                return;
            }
            self.log_outputs();
        }
        self.node.journal = journal;
        self.node.fx.clear();
        let records = core.journal_next();
        core.handle(Input::Durable { records }, &mut self.node.fx);
        self.node.core = Some(core);
        self.node.sink_cursor = 1;
        self.node.sink_ready = false;
        self.node.sink_acked_at_us = self.now;
        self.gen += 1;
        // New connections: the node says RESUME to each source, the sink to
        // the node (handshakes are reliable: TCP delivers or the connection fails).
        let entries: Vec<_> = self
            .node
            .core
            .as_ref()
            .map(|c| {
                c.inputs()
                    .iter()
                    .map(|ch| verity_wire::ResumeEntry::new(ch.id, ch.delivered))
                    .collect()
            })
            .unwrap_or_default();
        for i in 0..self.sources.len() {
            let mut b = BytesMut::new();
            let _ = self.enc.resume(&mut b, 0, &entries);
            let gen = self.gen;
            self.schedule(
                self.p.latency_us,
                Event::Deliver {
                    from: Actor::Node,
                    to: Actor::Source(i),
                    gen,
                    frame: b.to_vec(),
                },
            );
        }
        let sink_entries: Vec<_> = self
            .sink
            .delivered
            .iter()
            .map(|(&c, &d)| verity_wire::ResumeEntry::new(c, d))
            .collect();
        let mut b = BytesMut::new();
        let _ = self.enc.resume(&mut b, 0, &sink_entries);
        let gen = self.gen;
        self.schedule(
            2 * self.p.latency_us,
            Event::Deliver {
                from: Actor::Sink,
                to: Actor::Node,
                gen,
                frame: b.to_vec(),
            },
        );
    }

    fn node_crash(&mut self) {
        let Some(core) = self.node.core.take() else {
            return;
        };
        self.crashes += 1;
        self.gen += 1;
        if self.p.fsync {
            // A machine crash: only what the last sync covered survives.
            self.node.journal.truncate(self.node.synced);
            let released = core.out().released;
            self.node.outbound.retain(|&seq, _| seq <= released);
            if let Some((len, _)) = &self.node.snapshot {
                if *len > self.node.journal.len() {
                    // Snapshots are written only over synced journal records.
                    self.failure = Some("snapshot ahead of the synced journal".into());
                }
            }
        }
        self.node.logged_through = self.node.outbound.keys().next_back().copied().unwrap_or(0);
    }

    fn node_sync(&mut self) {
        if self.node.core.is_none() {
            return;
        }
        self.node.synced = self.node.journal.len();
        self.make_durable();
    }

    /// Tells the core what is durable; sends ACKs; releases outputs.
    fn make_durable(&mut self) {
        let records = if self.p.fsync {
            self.node.synced as u64
        } else {
            self.node.journal.len() as u64
        };
        let Some(core) = self.node.core.as_mut() else {
            return;
        };
        self.node.fx.clear();
        core.handle(Input::Durable { records }, &mut self.node.fx);
        self.send_acks_nacks();
        if self.node.records_since_snapshot >= self.p.snapshot_every_records
            && records == self.node.journal.len() as u64
        {
            if let Some(core) = self.node.core.as_ref() {
                let mut snap = Vec::new();
                core.snapshot(&mut snap);
                self.node.snapshot = Some((self.node.journal.len(), snap));
                self.node.records_since_snapshot = 0;
            }
        }
        self.pump_sink();
    }

    fn send_acks_nacks(&mut self) {
        let acks: Vec<(u32, u64)> = self.node.fx.acks.clone();
        let nacks: Vec<(u32, u64)> = self.node.fx.nacks.clone();
        for (channel, seq) in acks {
            let mut b = BytesMut::new();
            let _ = self.enc.ack(&mut b, channel, 0, seq);
            if let Some(i) = (channel as usize).checked_sub(1) {
                self.transmit(Actor::Node, Actor::Source(i), &b);
            }
        }
        for (channel, seq) in nacks {
            let mut b = BytesMut::new();
            let _ = self.enc.nack(&mut b, channel, 0, seq);
            if let Some(i) = (channel as usize).checked_sub(1) {
                self.transmit(Actor::Node, Actor::Source(i), &b);
            }
        }
    }

    /// Logs the outputs in `fx`, verifying those already logged.
    fn log_outputs(&mut self) {
        let out = std::mem::take(&mut self.node.fx.outbound);
        let mut at = 0;
        while at < out.len() {
            let Ok(Some(v)) = parse(&out[at..], verity_wire::DEFAULT_MAX_FRAME_LEN) else {
                self.failure = Some("the core produced an undecodable frame".into());
                return;
            };
            let seq = v.header.seq();
            let frame = &out[at..at + v.stride];
            if seq <= self.node.logged_through {
                if let Some(logged) = self.node.outbound.get(&seq) {
                    if logged.as_slice() != frame {
                        self.failure = Some(format!(
                            "replay produced a different output for seq {seq} than the outbound log"
                        ));
                        return;
                    }
                }
            } else {
                self.node.outbound.insert(seq, frame.to_vec());
                self.node.logged_through = seq;
            }
            at += v.stride;
        }
        self.node.fx.outbound = out;
        self.node.fx.outbound.clear();
    }

    fn node_receive(&mut self, from: Actor, view: FrameView<'_>, raw: &[u8]) {
        if self.node.core.is_none() {
            return;
        }
        match (from, view.kind()) {
            (Actor::Source(_), Kind::Data) => {
                let now = self.now;
                self.node.fx.clear();
                let Some(core) = self.node.core.as_mut() else {
                    return;
                };
                core.handle(
                    Input::SourceData {
                        frame: view,
                        now_ns: now * 1000,
                    },
                    &mut self.node.fx,
                );
                if self.node.fx.journal_input.is_some() {
                    self.node.journal.push((now * 1000, raw.to_vec()));
                    self.node.records_since_snapshot += 1;
                }
                self.log_outputs();
                self.send_acks_nacks();
                if !self.p.fsync {
                    self.make_durable();
                }
            }
            (Actor::Sink, Kind::Ack) if self.node.sink_ready => {
                let seq = view.header.seq();
                if let Some(core) = self.node.core.as_mut() {
                    core.handle(Input::SinkAck { seq }, &mut self.node.fx);
                    let acked = core.out().acked;
                    self.node.outbound.retain(|&s, _| s > acked);
                    self.node.sink_acked_at_us = self.now;
                }
            }
            (Actor::Sink, Kind::Nack) if self.node.sink_ready => {
                let seq = view.header.seq();
                let acked = self.node.core.as_ref().map_or(0, |c| c.out().acked);
                if seq > acked {
                    self.node.sink_cursor = self.node.sink_cursor.min(seq);
                    self.pump_sink();
                }
            }
            (Actor::Sink, Kind::Resume) => {
                let Some(core) = self.node.core.as_mut() else {
                    return;
                };
                let channel = core.out().id;
                let delivered = view
                    .resume_entries()
                    .and_then(|es| {
                        es.iter()
                            .find(|e| e.channel.get() == channel)
                            .map(|e| e.delivered.get())
                    })
                    .unwrap_or(0);
                self.node.fx.clear();
                core.handle(Input::SinkResume { delivered }, &mut self.node.fx);
                self.node.sink_cursor = self.node.fx.resend_from.unwrap_or(delivered + 1);
                self.node.sink_ready = true;
                let acked = core.out().acked;
                self.node.outbound.retain(|&s, _| s > acked);
                self.pump_sink();
            }
            _ => {}
        }
    }

    fn node_tick(&mut self) {
        let Some(core) = self.node.core.as_ref() else {
            return;
        };
        if !self.node.sink_ready {
            return;
        }
        let (acked, released) = (core.out().acked, core.out().released);
        if acked < released && self.now - self.node.sink_acked_at_us > RESEND_AFTER_US {
            // The sink has not ACKed for a while: go back (timeout resend).
            self.node.sink_cursor = acked + 1;
            self.node.sink_acked_at_us = self.now;
        }
        self.pump_sink();
    }

    fn pump_sink(&mut self) {
        let Some(core) = self.node.core.as_ref() else {
            return;
        };
        if !self.node.sink_ready {
            return;
        }
        let (released, acked) = (core.out().released, core.out().acked);
        let limit = acked + WINDOW;
        while self.node.sink_cursor <= released && self.node.sink_cursor <= limit {
            let seq = self.node.sink_cursor;
            let Some(frame) = self.node.outbound.get(&seq).cloned() else {
                if seq <= acked {
                    self.node.sink_cursor += 1;
                    continue;
                }
                self.failure = Some(format!("released output {seq} is not in the outbound log"));
                return;
            };
            self.transmit(Actor::Node, Actor::Sink, &frame);
            self.node.sink_cursor += 1;
        }
    }

    // --- the sink (the receiver tool's protocol) ---

    fn sink_receive(&mut self, view: FrameView<'_>) {
        if view.kind() != Kind::Data {
            return;
        }
        let h = view.header;
        let (channel, seq) = (h.channel(), h.seq());
        let delivered = self.sink.delivered.get(&channel).copied().unwrap_or(0);
        let mut b = BytesMut::new();
        if seq <= delivered {
            self.sink.duplicates += 1;
            let _ = self.enc.ack(&mut b, channel, 0, delivered);
        } else if seq == delivered + 1 {
            self.sink
                .received
                .push((channel, seq, h.trace_id(), view.payload.to_vec()));
            self.sink.delivered.insert(channel, seq);
            let _ = self.enc.ack(&mut b, channel, 0, seq);
        } else {
            let want = delivered + 1;
            let due = match self.sink.nacked.get(&channel) {
                Some(&(w, at)) => w != want || self.now - at > 2_000,
                None => true,
            };
            if due {
                self.sink.nacked.insert(channel, (want, self.now));
                let _ = self.enc.nack(&mut b, channel, 0, want);
            }
        }
        if !b.is_empty() {
            self.transmit(Actor::Sink, Actor::Node, &b);
        }
    }
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Runs one seed's simulation; `dir` holds the generated inputs and the
/// received file the oracle reads.
pub fn run(params: &SimParams, dir: &Path) -> Result<SimOutcome, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let work = workload(params, dir)?;
    let app: CheckApp = params.app.parse()?;
    let input_paths: Vec<&Path> = work.inputs.iter().map(|(p, _, _)| p.as_path()).collect();
    // The oracle's expected output count, from the inputs alone.
    let empty = dir.join("empty.bin");
    ReceivedWriter::create(&empty)
        .and_then(|w| w.finish().map(|_| ()))
        .map_err(|e| e.to_string())?;
    let expected = check::check(app, &input_paths, &empty)
        .map_err(|e| e.to_string())?
        .expected;

    let mut sim = Sim {
        p: params.clone(),
        rng: Rng::new(params.seed),
        now: 0,
        order: 0,
        queue: BinaryHeap::new(),
        gen: 0,
        sources: work
            .inputs
            .iter()
            .map(|(_, channel, records)| Source {
                channel: *channel,
                records: Arc::clone(records),
                next: 1,
                acked: 0,
                highest_sent: 0,
                last_progress_us: 0,
            })
            .collect(),
        node: SimNode {
            core: None,
            app: params.app.clone(),
            journal: Vec::new(),
            synced: 0,
            snapshot: None,
            outbound: BTreeMap::new(),
            logged_through: 0,
            sink_cursor: 1,
            sink_ready: false,
            sink_acked_at_us: 0,
            records_since_snapshot: 0,
            fx: Effects::default(),
        },
        sink: Sink {
            delivered: BTreeMap::new(),
            received: Vec::new(),
            duplicates: 0,
            nacked: BTreeMap::new(),
        },
        enc: Encoder::default(),
        crashes: 0,
        frames_sent: 0,
        frames_dropped: 0,
        events: 0,
        failure: None,
    };
    let virtual_us = sim.run(expected);

    let received = dir.join("received.bin");
    let mut w = ReceivedWriter::create(&received).map_err(|e| e.to_string())?;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (channel, seq, trace, payload) in &sim.sink.received {
        w.write(*channel, *seq, *trace, payload)
            .map_err(|e| e.to_string())?;
        fnv(&mut hash, &seq.to_le_bytes());
        fnv(&mut hash, &trace.to_le_bytes());
        fnv(&mut hash, payload);
    }
    w.finish().map_err(|e| e.to_string())?;
    for (ts, frame) in &sim.node.journal {
        fnv(&mut hash, &ts.to_le_bytes());
        fnv(&mut hash, frame);
    }
    let report = check::check(app, &input_paths, &received).map_err(|e| e.to_string())?;
    let complete = sim.sources.iter().all(|s| s.acked == s.records.len());
    let (passed, verdict) = match (&sim.failure, complete) {
        (Some(f), _) => (false, format!("FAIL: {f}")),
        (None, false) => (
            false,
            format!(
                "FAIL: inputs not all ACKed by the time limit; {}",
                report.summary_line()
            ),
        ),
        (None, true) => (report.passed(), report.summary_line()),
    };
    let verdict = if passed {
        verdict
    } else {
        let mut v = verdict;
        for line in report.to_string().lines().skip(1).take(5) {
            v.push('\n');
            v.push_str(line);
        }
        v
    };
    Ok(SimOutcome {
        params: params.clone(),
        passed,
        verdict,
        hash,
        crashes: sim.crashes,
        frames_sent: sim.frames_sent,
        frames_dropped: sim.frames_dropped,
        virtual_us,
        events: sim.events,
    })
}
