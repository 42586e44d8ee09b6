//! The deterministic simulator (`verity-sim`): the production [`NodeCore`]
//! driven as-is by a simulated network, disk and clock, with crashes and
//! restarts, all from one seed — in the manner of FoundationDB's simulator
//! and TigerBeetle's VOPR.
//!
//! N nodes of a cluster (each the production core with its routing), the
//! sources and the sink, all in one thread, on virtual time (µs). Every frame
//! between them is really encoded and decoded with `verity-wire`, then
//! passes a simulated link that may drop, duplicate, delay and reorder it,
//! or (during a partition) lose everything: a partition cuts every link, or
//! the links between one pair of nodes. Each source sends to one node (its
//! ingress); nodes forward records to the nodes owning their keys over
//! node-to-node channels with the same protocol as the sink's. Each node's
//! journal, outbound logs (one per channel) and snapshot live in memory: a
//! crash with `process` durability keeps them (the page cache survives a
//! process crash); with `fsync` durability it loses what the last group
//! commit did not cover (a machine crash). A restart recovers exactly as the
//! runtime does: newest snapshot, journal replay (outputs already logged
//! must come out bit-identical), RESUME with sources, peers and sink.
//!
//! Swarm testing: each seed draws its own fault parameters (loss 0–30%,
//! duplication 0–50%, reordering, partitions, crash rate, durability,
//! snapshot interval), its app and workload, and its cluster (1–4 nodes,
//! which node each source sends to). At the end the independent
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

use crate::cluster::Routing;
use crate::core::{peer_of, sink_channel, Effects, Input, JournalEntry, NodeConfig, NodeCore, Out};

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
    /// Nodes in the cluster.
    pub nodes: u32,
    /// Partition count of the routing table.
    pub key_partitions: u32,
    /// Per source: the node it sends to.
    pub ingress: Vec<u32>,
    /// Windows (start, end, a, b) in µs when the links between nodes a and b
    /// are cut (both directions).
    pub node_partitions: Vec<(u64, u64, u32, u32)>,
}

const APPS: [&str; 4] = ["doubler", "word-count", "sequence-window", "market-spread"];

impl SimParams {
    /// Swarm testing: the seed draws the app, the workload, the cluster and
    /// every fault parameter.
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
        let mut p = SimParams {
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
            nodes: 1,
            key_partitions: 64,
            ingress: Vec::new(),
            node_partitions: Vec::new(),
        };
        // Drawn after the single-node parameters, so those stay what they
        // were for every seed.
        p.nodes = 1 + r.below(4) as u32;
        p.key_partitions = [16, 64, 4096][r.below(3) as usize];
        let sources = if p.app == "market-spread" { 2 } else { 1 };
        p.ingress = (0..sources)
            .map(|_| r.below(p.nodes as u64) as u32)
            .collect();
        if p.nodes > 1 {
            for _ in 0..r.below(3) {
                let start = r.below(400_000);
                let a = r.below(p.nodes as u64) as u32;
                let b = (a + 1 + r.below(p.nodes as u64 - 1) as u32) % p.nodes;
                p.node_partitions
                    .push((start, start + 5_000 + r.below(80_000), a, b));
            }
        }
        p
    }

    /// The same run on one node (for comparisons).
    pub fn single_node(mut self) -> SimParams {
        self.nodes = 1;
        self.ingress.iter_mut().for_each(|n| *n = 0);
        self.node_partitions.clear();
        self
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
    /// Records forwarded between nodes (counted again after replays).
    pub forwarded: u64,
    pub virtual_us: u64,
    pub events: u64,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Actor {
    Source(usize),
    Node(u32),
    Sink,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A frame arrives at `to` over a connection that existed while the
    /// node endpoints had these generations.
    Deliver {
        from: Actor,
        to: Actor,
        gens: (u64, u64),
        frame: Vec<u8>,
    },
    SourceTick(usize),
    NodeTick(u32),
    Sync(u32),
    Crash,
    Restart(u32),
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: u64,
    order: u64,
    event: Event,
}

struct Source {
    channel: u32,
    node: u32,
    records: Arc<Records>,
    next: u64,
    acked: u64,
    highest_sent: u64,
    last_progress_us: u64,
}

/// One outbound channel of a node (to the sink or to a peer), as the
/// runtime keeps it: the log of frames until ACKed, and the send cursor.
#[derive(Default)]
struct OutPath {
    /// Output frames kept until the consumer ACKs them, by seq.
    log: BTreeMap<u64, Vec<u8>>,
    /// Highest seq ever logged (outputs up to it are verified on replay).
    logged_through: u64,
    cursor: u64,
    /// The consumer's RESUME arrived on the current connection (until then
    /// the node sends it nothing, as the runtime waits for RESUME).
    ready: bool,
    acked_at_us: u64,
}

struct SimNode {
    core: Option<NodeCore>,
    /// Bumped at every crash and restart: frames in flight on the old
    /// connections vanish (TCP connections die).
    gen: u64,
    /// (timestamp, frame) of every accepted input, in journal order.
    journal: Vec<(u64, Vec<u8>)>,
    /// Journal records covered by the last sync (fsync durability).
    synced: usize,
    /// (journal records covered, core snapshot).
    snapshot: Option<(usize, Vec<u8>)>,
    /// Path 0: the sink; path `1 + j`: node `j`.
    paths: Vec<OutPath>,
    records_since_snapshot: u64,
    forwarded: u64,
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
    app: String,
    routing: Option<Routing>,
    rng: Rng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    sources: Vec<Source>,
    nodes: Vec<SimNode>,
    sink: Sink,
    enc: Encoder,
    crashes: u64,
    frames_sent: u64,
    frames_dropped: u64,
    events: u64,
    failure: Option<String>,
    /// Per link, when its last control frame (anything but DATA) arrives:
    /// they arrive in the order sent, as over TCP (a consumer's ACKs never
    /// overtake each other), while DATA frames may be reordered.
    control_at: BTreeMap<(Actor, Actor), u64>,
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

    fn cut(&self, from: Actor, to: Actor, at: u64) -> bool {
        if self.p.partitions.iter().any(|&(s, e)| at >= s && at < e) {
            return true;
        }
        let (Actor::Node(a), Actor::Node(b)) = (from, to) else {
            return false;
        };
        self.p
            .node_partitions
            .iter()
            .any(|&(s, e, x, y)| at >= s && at < e && ((a, b) == (x, y) || (a, b) == (y, x)))
    }

    fn gen_of(&self, a: Actor) -> u64 {
        match a {
            Actor::Node(n) => self.nodes[n as usize].gen,
            _ => 0,
        }
    }

    fn alive(&self, n: u32) -> bool {
        self.nodes[n as usize].core.is_some()
    }

    /// Puts one frame on the simulated link from `from` to `to`.
    fn transmit(&mut self, from: Actor, to: Actor, frame: &[u8]) {
        self.frames_sent += 1;
        if self.cut(from, to, self.now) || self.rng.below(1_000_000) < self.p.drop_ppm as u64 {
            self.frames_dropped += 1;
            return;
        }
        let copies = if self.rng.below(1_000_000) < self.p.dup_ppm as u64 {
            2
        } else {
            1
        };
        let control = frame.get(verity_wire::KIND_OFFSET) != Some(&(Kind::Data as u8));
        for _ in 0..copies {
            let mut delay = self.p.latency_us + self.rng.below(self.p.jitter_us + 1);
            if self.rng.below(1_000_000) < self.p.reorder_ppm as u64 {
                delay += self.rng.below(5_000);
            }
            if control {
                let last = self.control_at.entry((from, to)).or_insert(0);
                let at = (self.now + delay).max(*last + 1);
                *last = at;
                delay = at - self.now;
            }
            self.send_after(delay, from, to, frame);
        }
    }

    /// A frame the connection delivers reliably (handshakes: TCP delivers
    /// or the connection fails).
    fn send_after(&mut self, delay: u64, from: Actor, to: Actor, frame: &[u8]) {
        let gens = (self.gen_of(from), self.gen_of(to));
        self.schedule(
            delay,
            Event::Deliver {
                from,
                to,
                gens,
                frame: frame.to_vec(),
            },
        );
    }

    fn run(&mut self, expected_outputs: u64) -> u64 {
        for i in 0..self.sources.len() {
            self.schedule(0, Event::SourceTick(i));
        }
        for n in 0..self.p.nodes {
            self.schedule(TICK_US, Event::NodeTick(n));
            if self.p.fsync {
                self.schedule(self.p.sync_every_us, Event::Sync(n));
            }
        }
        self.schedule_crash();
        for n in 0..self.p.nodes {
            self.node_start(n);
        }
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
                    gens,
                    frame,
                } => {
                    if gens == (self.gen_of(from), self.gen_of(to)) {
                        self.deliver(from, to, &frame);
                    }
                }
                Event::SourceTick(i) => {
                    self.source_tick(i);
                    self.schedule(TICK_US, Event::SourceTick(i));
                }
                Event::NodeTick(n) => {
                    self.node_tick(n);
                    self.schedule(TICK_US, Event::NodeTick(n));
                }
                Event::Sync(n) => {
                    self.node_sync(n);
                    self.schedule(self.p.sync_every_us, Event::Sync(n));
                }
                Event::Crash => {
                    let n = self.rng.below(self.p.nodes as u64) as u32;
                    if self.alive(n) {
                        self.node_crash(n);
                        self.schedule(RESTART_AFTER_US, Event::Restart(n));
                    }
                    self.schedule_crash();
                }
                Event::Restart(n) => self.node_start(n),
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
            Actor::Node(n) => self.node_receive(n, from, view, &bytes[..view.stride]),
            Actor::Source(i) => self.source_receive(i, view),
            Actor::Sink => self.sink_receive(from, view),
        }
    }

    // --- sources (the sender tool's protocol) ---

    fn source_tick(&mut self, i: usize) {
        if !self.alive(self.sources[i].node) {
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
        let (channel, node, records, from) = (s.channel, s.node, Arc::clone(&s.records), s.next);
        for seq in from..=end {
            let resend = seq <= self.sources[i].highest_sent;
            let mut b = BytesMut::new();
            let _ = self.enc.data(
                &mut b,
                channel,
                seq,
                trace_id(channel, seq),
                resend,
                records.get(seq),
            );
            self.transmit(Actor::Source(i), Actor::Node(node), &b);
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

    // --- the nodes: the production core with in-memory logs ---

    fn node_start(&mut self, n: u32) {
        let Some(app) = crate::apps::build(&self.app) else {
            self.failure = Some(format!("unknown app {}", self.app));
            return;
        };
        let cfg = NodeConfig {
            node: n,
            routing: self.routing.clone(),
            sink_channel: sink_channel(n),
            ..NodeConfig::default()
        };
        let mut core = NodeCore::new(app, cfg);
        let mut from = 0;
        let node = &mut self.nodes[n as usize];
        if let Some((len, snap)) = &node.snapshot {
            if let Err(e) = core.restore(snap) {
                self.failure = Some(format!("node {n}: snapshot restore: {e}"));
                return;
            }
            from = *len;
        }
        // Replay: outputs already logged must come out bit-identical.
        let journal = std::mem::take(&mut node.journal);
        for (i, (ts, frame)) in journal.iter().enumerate().skip(from) {
            self.nodes[n as usize].fx.clear();
            core.handle(
                Input::Replay(JournalEntry {
                    index: i as u64,
                    timestamp_ns: *ts,
                    frame,
                }),
                &mut self.nodes[n as usize].fx,
            );
            if core.journal_next() != i as u64 + 1 {
                self.failure = Some(format!("node {n}: journal record {i} did not replay"));
                return;
            }
            self.log_outputs(n);
        }
        let node = &mut self.nodes[n as usize];
        node.journal = journal;
        node.fx.clear();
        let records = core.journal_next();
        core.handle(Input::Durable { records }, &mut node.fx);
        // Each consumer had ACKed everything below the first frame its
        // path's log keeps.
        for (path, p) in node.paths.iter().enumerate() {
            let out = out_of(path);
            let produced = core.out_channel(out).map_or(0, |o| o.next_seq - 1);
            let acked = p.log.keys().next().map_or(produced, |&first| first - 1);
            core.handle(Input::Recovered { out, acked }, &mut node.fx);
        }
        node.fx.clear();
        node.core = Some(core);
        node.gen += 1;
        for p in &mut node.paths {
            p.cursor = 1;
            p.ready = false;
            p.acked_at_us = self.now;
        }
        // New connections. The node says RESUME to each source sending to
        // it; the sink to the node; and with every live peer, each side as
        // consumer says RESUME to the other.
        let entries: Vec<_> = self.nodes[n as usize]
            .core
            .as_ref()
            .map(|c| {
                c.inputs()
                    .iter()
                    .map(|ch| verity_wire::ResumeEntry::new(ch.id, ch.delivered))
                    .collect()
            })
            .unwrap_or_default();
        let latency = self.p.latency_us;
        for i in 0..self.sources.len() {
            if self.sources[i].node != n {
                continue;
            }
            let mut b = BytesMut::new();
            let _ = self.enc.resume(&mut b, 0, &entries);
            self.send_after(latency, Actor::Node(n), Actor::Source(i), &b);
        }
        let sink_entries: Vec<_> = self
            .sink
            .delivered
            .iter()
            .map(|(&c, &d)| verity_wire::ResumeEntry::new(c, d))
            .collect();
        let mut b = BytesMut::new();
        let _ = self.enc.resume(&mut b, 0, &sink_entries);
        self.send_after(2 * latency, Actor::Sink, Actor::Node(n), &b);
        for j in 0..self.p.nodes {
            if j != n && self.alive(j) {
                self.peer_connect(n, j);
                self.peer_connect(j, n);
            }
        }
    }

    /// Producer `from` (re)connects to consumer `to`, which answers RESUME.
    fn peer_connect(&mut self, from: u32, to: u32) {
        let Some(ch) = self.nodes[to as usize]
            .core
            .as_ref()
            .and_then(|c| c.peer_in(from))
            .map(|c| verity_wire::ResumeEntry::new(c.id, c.delivered))
        else {
            return;
        };
        self.nodes[from as usize].paths[1 + to as usize].ready = false;
        let mut b = BytesMut::new();
        let _ = self.enc.resume(&mut b, 0, &[ch]);
        self.send_after(
            2 * self.p.latency_us,
            Actor::Node(to),
            Actor::Node(from),
            &b,
        );
    }

    fn node_crash(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        let Some(core) = node.core.take() else {
            return;
        };
        self.crashes += 1;
        node.gen += 1;
        if self.p.fsync {
            // A machine crash: only what the last sync covered survives.
            node.journal.truncate(node.synced);
            let released: Vec<u64> = (0..node.paths.len())
                .map(|i| {
                    if i == 0 {
                        core.out().released
                    } else {
                        core.peer_out(i as u32 - 1).map_or(0, |o| o.released)
                    }
                })
                .collect();
            for (p, r) in node.paths.iter_mut().zip(released) {
                p.log.retain(|&seq, _| seq <= r);
            }
            if let Some((len, _)) = &node.snapshot {
                if *len > node.journal.len() {
                    // Snapshots are written only over synced journal records.
                    self.failure = Some("snapshot ahead of the synced journal".into());
                }
            }
        }
        for p in &mut node.paths {
            p.logged_through = p.log.keys().next_back().copied().unwrap_or(0);
        }
        // Its peers' connections to it died with it.
        for j in 0..self.p.nodes as usize {
            if j != n as usize {
                self.nodes[j].paths[1 + n as usize].ready = false;
            }
        }
    }

    fn node_sync(&mut self, n: u32) {
        if !self.alive(n) {
            return;
        }
        let node = &mut self.nodes[n as usize];
        node.synced = node.journal.len();
        self.make_durable(n);
    }

    /// Tells the core what is durable; sends ACKs; releases outputs.
    fn make_durable(&mut self, n: u32) {
        let fsync = self.p.fsync;
        let node = &mut self.nodes[n as usize];
        let records = if fsync {
            node.synced as u64
        } else {
            node.journal.len() as u64
        };
        let Some(core) = node.core.as_mut() else {
            return;
        };
        node.fx.clear();
        core.handle(Input::Durable { records }, &mut node.fx);
        self.send_acks_nacks(n);
        let node = &mut self.nodes[n as usize];
        if node.records_since_snapshot >= self.p.snapshot_every_records
            && records == node.journal.len() as u64
        {
            if let Some(core) = node.core.as_ref() {
                let mut snap = Vec::new();
                core.snapshot(&mut snap);
                node.snapshot = Some((node.journal.len(), snap));
                node.records_since_snapshot = 0;
            }
        }
        self.pump(n);
    }

    /// The consumer side of a channel id: a source or a peer node.
    fn producer_of(&self, n: u32, channel: u32) -> Option<Actor> {
        if let Some((from, _)) = peer_of(channel) {
            return Some(Actor::Node(from));
        }
        self.sources
            .iter()
            .position(|s| s.channel == channel && s.node == n)
            .map(Actor::Source)
    }

    fn send_acks_nacks(&mut self, n: u32) {
        let acks: Vec<(u32, u64)> = self.nodes[n as usize].fx.acks.clone();
        let nacks: Vec<(u32, u64)> = self.nodes[n as usize].fx.nacks.clone();
        for (channel, seq) in acks {
            let mut b = BytesMut::new();
            let _ = self.enc.ack(&mut b, channel, 0, seq);
            if let Some(to) = self.producer_of(n, channel) {
                self.transmit(Actor::Node(n), to, &b);
            }
        }
        for (channel, seq) in nacks {
            let mut b = BytesMut::new();
            let _ = self.enc.nack(&mut b, channel, 0, seq);
            if let Some(to) = self.producer_of(n, channel) {
                self.transmit(Actor::Node(n), to, &b);
            }
        }
    }

    /// Logs the outputs in `fx` (to the sink and to peers), verifying those
    /// already logged.
    fn log_outputs(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        let mut batches: Vec<(usize, BytesMut)> = Vec::new();
        if node.fx.outbound_seqs.is_some() {
            batches.push((0, std::mem::take(&mut node.fx.outbound)));
        }
        for (j, o) in node.fx.to_peers.iter_mut().enumerate() {
            if o.seqs.is_some() {
                batches.push((1 + j, std::mem::take(&mut o.frames)));
            }
        }
        for (path, out) in batches {
            let mut at = 0;
            while at < out.len() {
                let Ok(Some(v)) = parse(&out[at..], verity_wire::DEFAULT_MAX_FRAME_LEN) else {
                    self.failure = Some("the core produced an undecodable frame".into());
                    return;
                };
                let seq = v.header.seq();
                let frame = &out[at..at + v.stride];
                let node = &mut self.nodes[n as usize];
                if path > 0 {
                    node.forwarded += 1;
                }
                let p = &mut node.paths[path];
                if seq <= p.logged_through {
                    if let Some(logged) = p.log.get(&seq) {
                        if logged.as_slice() != frame {
                            self.failure = Some(format!(
                                "node {n}: replay produced a different frame for seq {seq} on path {path} than the outbound log"
                            ));
                            return;
                        }
                    }
                } else {
                    p.log.insert(seq, frame.to_vec());
                    p.logged_through = seq;
                }
                at += v.stride;
            }
        }
    }

    fn node_receive(&mut self, n: u32, from: Actor, view: FrameView<'_>, raw: &[u8]) {
        if !self.alive(n) {
            return;
        }
        let path = match from {
            Actor::Sink => 0,
            Actor::Node(j) => 1 + j as usize,
            Actor::Source(_) => usize::MAX,
        };
        match view.kind() {
            Kind::Data if path != 0 => {
                let now = self.now;
                let node = &mut self.nodes[n as usize];
                node.fx.clear();
                let Some(core) = node.core.as_mut() else {
                    return;
                };
                let input = match from {
                    Actor::Node(j) => Input::PeerData {
                        from: j,
                        frame: view,
                        now_ns: now * 1000,
                    },
                    _ => Input::SourceData {
                        frame: view,
                        now_ns: now * 1000,
                    },
                };
                core.handle(input, &mut node.fx);
                if node.fx.journal_input.is_some() {
                    node.journal.push((now * 1000, raw.to_vec()));
                    node.records_since_snapshot += 1;
                }
                self.log_outputs(n);
                self.send_acks_nacks(n);
                if !self.p.fsync {
                    self.make_durable(n);
                }
            }
            Kind::Ack if path != usize::MAX && self.nodes[n as usize].paths[path].ready => {
                let seq = view.header.seq();
                let now = self.now;
                let node = &mut self.nodes[n as usize];
                if let Some(core) = node.core.as_mut() {
                    let out = out_of(path);
                    node.fx.clear();
                    core.handle(Input::Ack { out, seq }, &mut node.fx);
                    if let Some(v) = node.fx.violation {
                        self.failure = Some(format!("node {n}: an honest consumer's {v}"));
                        return;
                    }
                    let acked = core.out_channel(out).map_or(0, |o| o.acked);
                    let p = &mut node.paths[path];
                    p.log.retain(|&s, _| s > acked);
                    p.acked_at_us = now;
                }
            }
            Kind::Nack if path != usize::MAX && self.nodes[n as usize].paths[path].ready => {
                let from = view.header.seq();
                let node = &mut self.nodes[n as usize];
                let Some(core) = node.core.as_mut() else {
                    return;
                };
                node.fx.clear();
                core.handle(
                    Input::Nack {
                        out: out_of(path),
                        from,
                    },
                    &mut node.fx,
                );
                if let Some(v) = node.fx.violation {
                    self.failure = Some(format!("node {n}: an honest consumer's {v}"));
                    return;
                }
                if let Some((_, from)) = node.fx.resend {
                    let p = &mut node.paths[path];
                    p.cursor = p.cursor.min(from);
                    self.pump(n);
                }
            }
            Kind::Resume if path != usize::MAX => {
                let node = &mut self.nodes[n as usize];
                let Some(core) = node.core.as_mut() else {
                    return;
                };
                let channel = match from {
                    Actor::Node(j) => core.peer_out(j).map_or(0, |o| o.id),
                    _ => core.out().id,
                };
                let delivered = view
                    .resume_entries()
                    .and_then(|es| {
                        es.iter()
                            .find(|e| e.channel.get() == channel)
                            .map(|e| e.delivered.get())
                    })
                    .unwrap_or(0);
                node.fx.clear();
                core.handle(
                    Input::Resume {
                        out: out_of(path),
                        delivered,
                    },
                    &mut node.fx,
                );
                if let Some(v) = node.fx.violation {
                    self.failure = Some(format!("node {n}: an honest consumer's {v}"));
                    return;
                }
                let Some((_, resend_from)) = node.fx.resend else {
                    return;
                };
                let acked = self.path_acked(n, path);
                let p = &mut self.nodes[n as usize].paths[path];
                p.cursor = resend_from;
                p.ready = true;
                p.log.retain(|&s, _| s > acked);
                self.pump(n);
            }
            _ => {}
        }
    }

    /// (acked, released) of a node's outbound path.
    fn path_state(&self, n: u32, path: usize) -> (u64, u64) {
        let Some(core) = self.nodes[n as usize].core.as_ref() else {
            return (0, 0);
        };
        core.out_channel(out_of(path))
            .map_or((0, 0), |o| (o.acked, o.released))
    }

    fn path_acked(&self, n: u32, path: usize) -> u64 {
        self.path_state(n, path).0
    }

    fn node_tick(&mut self, n: u32) {
        if !self.alive(n) {
            return;
        }
        let now = self.now;
        for path in 0..self.nodes[n as usize].paths.len() {
            let (acked, released) = self.path_state(n, path);
            let p = &mut self.nodes[n as usize].paths[path];
            if p.ready && acked < released && now - p.acked_at_us > RESEND_AFTER_US {
                // The consumer has not ACKed for a while: go back (timeout resend).
                p.cursor = acked + 1;
                p.acked_at_us = now;
            }
        }
        // A peer connection that is down is redialed (with backoff in the
        // runtime): here, every tick while both ends live.
        for j in 0..self.p.nodes {
            if j != n
                && self.alive(j)
                && !self.nodes[n as usize].paths[1 + j as usize].ready
                && self.rng.below(20) == 0
            {
                self.peer_connect(n, j);
            }
        }
        self.pump(n);
    }

    fn pump(&mut self, n: u32) {
        if !self.alive(n) {
            return;
        }
        for path in 0..self.nodes[n as usize].paths.len() {
            if !self.nodes[n as usize].paths[path].ready {
                continue;
            }
            let (acked, released) = self.path_state(n, path);
            let to = if path == 0 {
                Actor::Sink
            } else {
                Actor::Node(path as u32 - 1)
            };
            let limit = acked + WINDOW;
            loop {
                let p = &mut self.nodes[n as usize].paths[path];
                let seq = p.cursor;
                if seq > released || seq > limit {
                    break;
                }
                let Some(frame) = p.log.get(&seq).cloned() else {
                    if seq <= acked {
                        p.cursor += 1;
                        continue;
                    }
                    self.failure = Some(format!(
                        "node {n}: released frame {seq} on path {path} is not in the outbound log"
                    ));
                    return;
                };
                p.cursor += 1;
                self.transmit(Actor::Node(n), to, &frame);
            }
            let node = &mut self.nodes[n as usize];
            let through = node.paths[path].cursor.saturating_sub(1);
            if let Some(core) = node.core.as_mut() {
                let out = out_of(path);
                core.handle(Input::Sent { out, through }, &mut node.fx);
            }
        }
    }

    // --- the sink (the receiver tool's protocol) ---

    fn sink_receive(&mut self, from: Actor, view: FrameView<'_>) {
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
            self.transmit(Actor::Sink, from, &b);
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
    let routing = if params.nodes > 1 {
        Some(Routing::new(params.key_partitions, params.nodes).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let nodes = params.nodes.max(1);

    let mut sim = Sim {
        p: params.clone(),
        app: params.app.clone(),
        routing,
        rng: Rng::new(params.seed),
        now: 0,
        order: 0,
        queue: BinaryHeap::new(),
        sources: work
            .inputs
            .iter()
            .enumerate()
            .map(|(i, (_, channel, records))| Source {
                channel: *channel,
                node: params.ingress.get(i).copied().unwrap_or(0) % nodes,
                records: Arc::clone(records),
                next: 1,
                acked: 0,
                highest_sent: 0,
                last_progress_us: 0,
            })
            .collect(),
        nodes: (0..nodes)
            .map(|_| SimNode {
                core: None,
                gen: 0,
                journal: Vec::new(),
                synced: 0,
                snapshot: None,
                paths: (0..=nodes).map(|_| OutPath::default()).collect(),
                records_since_snapshot: 0,
                forwarded: 0,
                fx: Effects::default(),
            })
            .collect(),
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
        control_at: BTreeMap::new(),
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
        fnv(&mut hash, &channel.to_le_bytes());
        fnv(&mut hash, &seq.to_le_bytes());
        fnv(&mut hash, &trace.to_le_bytes());
        fnv(&mut hash, payload);
    }
    w.finish().map_err(|e| e.to_string())?;
    for node in &sim.nodes {
        for (ts, frame) in &node.journal {
            fnv(&mut hash, &ts.to_le_bytes());
            fnv(&mut hash, frame);
        }
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
        forwarded: sim.nodes.iter().map(|n| n.forwarded).sum(),
        virtual_us,
        events: sim.events,
    })
}

/// The outbound channel of path `path` (0: the sink, `1 + j`: node `j`).
fn out_of(path: usize) -> Out {
    match path {
        0 => Out::Sink,
        p => Out::Node(p as u32 - 1),
    }
}
