//! The world of one run: virtual time, the event queue, the actors (sources,
//! nodes, sink) and the network between them, crashes and restarts, and the
//! run loop. The world owns everything and drives the others; it is the one
//! place that knows who is connected to whom.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::BytesMut;
use verity_wire::fnv::Fnv1a;
use verity_wire::handshake::{Acceptor, Connector};
use verity_wire::{parse, Encoder, FrameView, Hello, Kind, Role};

use super::clients::{Received, Sink, Source, Workload};
use super::net::{Actor, Net};
use super::node::{Send, SimNode};
use super::params::{SimParams, CLIENT_SECRET, CLUSTER_SECRET, RESTART_AFTER_US, TICK_US};
use crate::core::{peer_channel, peer_of, sink_channel, Producer, Refused};
use crate::registry::{AppSpec, Registry};
use crate::routing::Routing;
use verity_wire::rng::Rng;

/// What one run did: what the sink received, and the counters.
#[derive(Debug, Clone)]
pub struct SimRun {
    /// Every output the sink delivered, in order, each (channel, seq) once.
    pub received: Vec<Received>,
    /// Each node's journal at the end ((timestamp ns, run of frames) per
    /// record), and a fresh core of it: what the generic oracle replays.
    pub journals: Vec<Vec<(u64, Vec<u8>)>>,
    /// FNV-1a over every output delivered and every journal record.
    pub hash: u64,
    /// Every source's records were all ACKed.
    pub complete: bool,
    /// The broken invariant that ended the run early.
    pub failure: Option<String>,
    pub crashes: u64,
    /// Crashed instances that came back after their successor started
    /// (each dialed every other node at its old epoch).
    pub zombies: u64,
    /// Frame deliveries put off by a node's backpressure (each retried a
    /// tick later).
    pub holds: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    /// Records forwarded between nodes (counted again after replays).
    pub forwarded: u64,
    /// Frames the sink received again (and dropped).
    pub sink_duplicates: u64,
    pub virtual_us: u64,
    pub events: u64,
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
    /// The instance of node `node` at `epoch` that "crashed" was cut off,
    /// not dead, and comes back: it dials every other node again.
    Zombie {
        node: u32,
        epoch: u32,
    },
}

/// An event due at `at` µs; `order` breaks ties in the order scheduled.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: u64,
    order: u64,
    event: Event,
}

struct Sim {
    /// The app every node runs.
    app: AppSpec,
    p: SimParams,
    routing: Option<Routing>,
    /// Every random decision of the run after the parameters.
    rng: Rng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    net: Net,
    sources: Vec<Source>,
    nodes: Vec<SimNode>,
    sink: Sink,
    /// For the handshakes (RESUME) of new connections.
    enc: Encoder,
    crashes: u64,
    events: u64,
    failure: Option<String>,
    /// Per node and out path (0: the sink, `1 + j`: node `j`): the
    /// `delivered` of the RESUME the node took last, until its first DATA
    /// on the path. That frame must carry at most `delivered + 1`
    /// (PROTOCOL.md, rule 5; lower after a timeout resend): a producer that
    /// skips ahead leaves the gap to the consumer's NACK.
    resumed: Vec<Vec<Option<u64>>>,
    /// Per node and peer: the newest epoch of the peer the node's running
    /// instance admitted. Admitting an older one after it means fencing
    /// let a replaced instance back in.
    admitted: Vec<Vec<u32>>,
    /// Connections handed out (the sessions' connection ids).
    conns: usize,
    zombies: u64,
    /// Deliveries a node's backpressure put off.
    holds: u64,
}

/// Runs one simulation of `workload` under `params`, the app `params.app`
/// built from `apps`; a pure function of the three. Err: the parameters
/// describe no cluster, or name an app `apps` does not hold.
pub fn run(params: &SimParams, workload: Workload, apps: &Registry) -> Result<SimRun, String> {
    let app = apps.get(&params.app).ok_or_else(|| {
        format!(
            "unknown app {:?} (one of: {})",
            params.app,
            apps.names().join(", ")
        )
    })?;
    let routing = if params.nodes > 1 {
        Some(Routing::new(params.key_partitions, params.nodes).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let nodes = params.nodes.max(1);
    let Workload {
        sources,
        trace_id,
        expected_outputs,
    } = workload;
    let mut sim = Sim {
        p: params.clone(),
        app,
        routing,
        rng: Rng::new(params.seed),
        now: 0,
        order: 0,
        queue: BinaryHeap::new(),
        net: Net::new(params, nodes),
        sources: sources
            .into_iter()
            .enumerate()
            .map(|(i, input)| {
                let node = params.ingress.get(i).copied().unwrap_or(0) % nodes;
                Source::new(input, node, trace_id)
            })
            .collect(),
        nodes: (0..nodes)
            .map(|n| SimNode::new(n, nodes, params.fsync, params.snapshot_every_records))
            .collect(),
        sink: Sink::default(),
        enc: Encoder::default(),
        crashes: 0,
        events: 0,
        failure: None,
        resumed: vec![vec![None; nodes as usize + 1]; nodes as usize],
        admitted: vec![vec![0; nodes as usize]; nodes as usize],
        conns: 0,
        zombies: 0,
        holds: 0,
    };
    let virtual_us = sim.run(expected_outputs);

    let mut hash = Fnv1a::new();
    for r in &sim.sink.received {
        hash.write(&r.channel.to_le_bytes());
        hash.write(&r.seq.to_le_bytes());
        hash.write(&r.trace_id.to_le_bytes());
        hash.write(&r.payload);
    }
    for node in &sim.nodes {
        for (ts, frame) in &node.disk.journal {
            hash.write(&ts.to_le_bytes());
            hash.write(frame);
        }
    }
    let hash = hash.finish();
    let journals = sim
        .nodes
        .iter_mut()
        .map(|n| std::mem::take(&mut n.disk.journal))
        .collect();
    Ok(SimRun {
        journals,
        complete: sim.sources.iter().all(Source::done),
        hash,
        failure: sim.failure,
        crashes: sim.crashes,
        zombies: sim.zombies,
        holds: sim.holds,
        frames_sent: sim.net.frames_sent,
        frames_dropped: sim.net.frames_dropped,
        forwarded: sim.nodes.iter().map(|n| n.forwarded).sum(),
        sink_duplicates: sim.sink.duplicates,
        virtual_us,
        events: sim.events,
        received: sim.sink.received,
    })
}

impl Sim {
    fn schedule(&mut self, after_us: u64, event: Event) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after_us,
            order: self.order,
            event,
        }));
    }

    /// Puts one frame on the simulated (lossy) link from `from` to `to`.
    fn transmit(&mut self, from: Actor, to: Actor, frame: &[u8]) {
        let delays = self.net.transmit(&mut self.rng, self.now, from, to, frame);
        for delay in delays.into_iter().flatten() {
            self.send_after(delay, from, to, frame);
        }
    }

    /// A frame the connection delivers reliably (handshakes: TCP delivers
    /// or the connection fails).
    fn send_after(&mut self, delay: u64, from: Actor, to: Actor, frame: &[u8]) {
        let gens = self.net.connection(from, to);
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

    fn alive(&self, n: u32) -> bool {
        self.nodes[n as usize].alive()
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
                    if gens != self.net.connection(from, to) {
                        // The connection it was sent on is gone.
                    } else if self.held(from, to, &frame) {
                        // Backpressure: the node does not read now; the
                        // frame waits in the connection.
                        self.holds += 1;
                        self.schedule(
                            TICK_US,
                            Event::Deliver {
                                from,
                                to,
                                gens,
                                frame,
                            },
                        );
                    } else {
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
                    self.nodes[n as usize].sync();
                    self.flush(n);
                    self.schedule(self.p.sync_every_us, Event::Sync(n));
                }
                Event::Crash => {
                    let n = self.rng.below(self.p.nodes as u64) as u32;
                    if self.alive(n) {
                        let epoch = self.nodes[n as usize].epoch();
                        self.node_crash(n);
                        self.schedule(RESTART_AFTER_US, Event::Restart(n));
                        if self.p.nodes > 1 && self.rng.below(3) == 0 {
                            // Cut off, not dead: it comes back once its
                            // successor runs.
                            self.schedule(3 * RESTART_AFTER_US, Event::Zombie { node: n, epoch });
                        }
                    }
                    self.schedule_crash();
                }
                Event::Restart(n) => self.node_start(n),
                Event::Zombie { node, epoch } => self.zombie(node, epoch),
            }
            let done = self.sources.iter().all(Source::done)
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

    /// Whether node `to` leaves a DATA frame from `from` unread for now.
    fn held(&self, from: Actor, to: Actor, frame: &[u8]) -> bool {
        let Actor::Node(n) = to else {
            return false;
        };
        let data = parse(frame, verity_wire::DEFAULT_MAX_FRAME_LEN)
            .ok()
            .flatten()
            .is_some_and(|v| v.kind() == Kind::Data);
        data && !self.nodes[n as usize].wants_data_from(from)
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
            Actor::Node(n) => {
                if view.kind() == Kind::Resume {
                    self.arm_resume_check(from, n, &view);
                }
                self.nodes[n as usize].receive(from, view, &bytes[..view.stride], self.now);
                self.flush(n);
            }
            Actor::Source(i) => {
                if let Err(v) = self.sources[i].receive(self.now, view) {
                    if self.failure.is_none() {
                        let (channel, n) = (self.sources[i].channel(), self.sources[i].node);
                        self.failure =
                            Some(format!("source {channel}: node {n} broke a rule: {v}"));
                    }
                }
            }
            Actor::Sink => {
                if let Some(reply) = self.sink.receive(self.now, view) {
                    self.transmit(Actor::Sink, from, &reply);
                }
            }
        }
    }

    /// Node `n` takes a RESUME from the consumer `from` of one of its out
    /// paths: its first DATA on that path must follow the RESUME's
    /// `delivered` (see `resumed`).
    fn arm_resume_check(&mut self, from: Actor, n: u32, view: &verity_wire::FrameView<'_>) {
        let (path, channel) = match from {
            Actor::Sink => (0, sink_channel(n)),
            Actor::Node(j) => (1 + j as usize, peer_channel(n, j)),
            Actor::Source(_) => return,
        };
        let delivered = view.resume_delivered(channel).unwrap_or(0);
        self.resumed[n as usize][path] = Some(delivered);
    }

    /// Puts what node `n` sent on the links, in order, and takes over its
    /// failure.
    fn flush(&mut self, n: u32) {
        let outbox = std::mem::take(&mut self.nodes[n as usize].outbox);
        for send in &outbox {
            match send {
                Send::Path(path, frame) => {
                    if let Some(delivered) = self.resumed[n as usize][*path].take() {
                        let seq = parse(frame, verity_wire::DEFAULT_MAX_FRAME_LEN)
                            .ok()
                            .flatten()
                            .map_or(0, |v| v.header.seq());
                        if seq > delivered + 1 && self.failure.is_none() {
                            self.failure = Some(format!(
                                "node {n}: after a RESUME with delivered {delivered} on out path {path}, its first DATA was seq {seq}: it skipped {}..{}",
                                delivered + 1,
                                seq - 1
                            ));
                        }
                    }
                    let to = match path {
                        0 => Actor::Sink,
                        p => Actor::Node(*p as u32 - 1),
                    };
                    self.transmit(Actor::Node(n), to, frame);
                }
                Send::Producer(channel, frame) => {
                    if let Some(to) = self.producer_of(n, *channel) {
                        self.transmit(Actor::Node(n), to, frame);
                    }
                }
            }
        }
        // Hand the (emptied) buffer back, to keep its capacity.
        let node = &mut self.nodes[n as usize];
        node.outbox = outbox;
        node.outbox.clear();
        if let Some(f) = node.failure.take() {
            self.failure = Some(f);
        }
    }

    /// The producer of input channel `channel` of node `n`: a peer node or
    /// a source.
    fn producer_of(&self, n: u32, channel: u32) -> Option<Actor> {
        if let Some((from, _)) = peer_of(channel) {
            return Some(Actor::Node(from));
        }
        self.sources
            .iter()
            .position(|s| s.channel() == channel && s.node == n)
            .map(Actor::Source)
    }

    fn source_tick(&mut self, i: usize) {
        let node = self.sources[i].node;
        if !self.alive(node) {
            return;
        }
        let mut frames: Vec<BytesMut> = Vec::new();
        self.sources[i].tick(self.now, &mut frames);
        for b in &frames {
            self.transmit(Actor::Source(i), Actor::Node(node), b);
        }
    }

    fn node_tick(&mut self, n: u32) {
        if !self.alive(n) {
            return;
        }
        self.nodes[n as usize].tick(self.now);
        // A peer connection that is down is redialed (with backoff in the
        // runtime): here, every tick while both ends live.
        for j in 0..self.p.nodes {
            if j != n
                && self.alive(j)
                && !self.nodes[n as usize].path_ready(1 + j as usize)
                && self.rng.below(20) == 0
            {
                self.peer_connect(n, j);
            }
        }
        self.nodes[n as usize].pump();
        self.flush(n);
    }

    /// Node `n` starts from its disk; then come the new connections. The
    /// node says RESUME to each source sending to it; the sink to the node;
    /// and with every live peer, each side as consumer says RESUME to the
    /// other.
    fn node_start(&mut self, n: u32) {
        let started = self.nodes[n as usize].start(&self.app, self.routing.clone());
        self.flush(n);
        if !started {
            return;
        }
        self.net.reset(n);
        for i in 0..self.sources.len() {
            if self.sources[i].node == n {
                self.source_connect(i);
            }
        }
        self.sink_connect(n);
        for j in 0..self.p.nodes {
            if j != n && self.alive(j) {
                self.peer_connect(n, j);
                self.peer_connect(j, n);
            }
        }
    }

    /// Node `to` admits a connection from `from` at `epoch` (its HELLO
    /// proved both): the decision is the core's; the world checks it never
    /// takes an epoch older than one it admitted before. `false`: refused.
    fn admit(&mut self, to: u32, from: u32, epoch: u32) -> Result<(), Refused> {
        let admitted = self.handshake(from, epoch, to);
        let newest = &mut self.admitted[to as usize][from as usize];
        if admitted.is_ok() && epoch < *newest && self.failure.is_none() {
            self.failure = Some(format!(
                "node {to} admitted node {from} at epoch {epoch} after epoch {newest}: a replaced instance got a connection back (fencing)"
            ));
        }
        if admitted.is_ok() {
            *newest = (*newest).max(epoch);
        }
        admitted
    }

    /// The three HELLOs of `wire::handshake` between node `from` (its
    /// running instance, or a zombie at an older `epoch`) and node `to`,
    /// authenticated with the cluster secret, each checked by the core as
    /// the runtime checks it (`Sessions::accept_hello`, `dial_answer`,
    /// `admit_node`). Ok: `to` admitted the connection.
    fn handshake(&mut self, from: u32, epoch: u32, to: u32) -> Result<(), Refused> {
        let (c1, c2) = (self.challenge(), self.challenge());
        let zombie = !self.alive(from) || epoch != self.nodes[from as usize].epoch();
        let (connector, first) = Connector::start(self.nodes[from as usize].me(), c1);
        let first = self.hello_frame(epoch, &first);
        let mut acceptor = Acceptor::new(self.nodes[to as usize].me(), c2);
        let answer = self.nodes[to as usize].accept_hello(&mut acceptor, &view(&first)?, true)?;
        let answer = self.hello_frame(self.nodes[to as usize].epoch(), &answer);
        let second = if zombie {
            // A zombie's own checks are not under test (it has no core).
            let secret = Some(CLUSTER_SECRET);
            connector
                .on_hello(&view(&answer)?, secret, Role::Node, Some(to))?
                .0
        } else {
            self.nodes[from as usize].dial_answer(&connector, &view(&answer)?, Some(to))?
        };
        let second = self.hello_frame(epoch, &second);
        self.conns += 1;
        let conn = self.conns;
        self.nodes[to as usize].accept_answer(&acceptor, conn, &view(&second)?)?;
        Ok(())
    }

    /// Source `i` connects to its node: the three HELLOs with the client
    /// secret, the node's `admit_source`, then the node's greeting (RESUME).
    /// A running node always takes its source.
    fn source_connect(&mut self, i: usize) {
        let n = self.sources[i].node;
        if let Err(r) = self.source_handshake(i, n) {
            if self.failure.is_none() {
                let channel = self.sources[i].channel();
                self.failure = Some(format!("node {n} refused its source {channel}: {r}"));
            }
            return;
        }
        let channel = self.sources[i].channel();
        for frame in self.nodes[n as usize].greet(Producer::Source(channel)) {
            self.send_after(self.p.latency_us, Actor::Node(n), Actor::Source(i), &frame);
        }
    }

    fn source_handshake(&mut self, i: usize, n: u32) -> Result<(), Refused> {
        let (c1, c2) = (self.challenge(), self.challenge());
        let (connector, first) = Connector::start(self.sources[i].me(), c1);
        let first = self.hello_frame(0, &first);
        let node = &mut self.nodes[n as usize];
        let mut acceptor = Acceptor::new(node.me(), c2);
        let answer = node.accept_hello(&mut acceptor, &view(&first)?, false)?;
        let answer = self.hello_frame(self.nodes[n as usize].epoch(), &answer);
        // The source's checks are `verity-send`'s: the node's role and proof.
        let secret = Some(CLIENT_SECRET);
        let (second, _) = connector.on_hello(&view(&answer)?, secret, Role::Node, None)?;
        let second = self.hello_frame(0, &second);
        self.conns += 1;
        let conn = self.conns;
        let channel =
            self.nodes[n as usize].accept_source_answer(&acceptor, conn, &view(&second)?)?;
        debug_assert_eq!(channel, self.sources[i].channel());
        Ok(())
    }

    /// Node `n` dials the sink: the three HELLOs with the client secret
    /// (the node's side is the core's `dial_answer`, the sink's
    /// `verity-recv`'s acceptor), then the sink's greeting: RESUME and ACK
    /// of the node's channel to it.
    fn sink_connect(&mut self, n: u32) {
        let channel = match self.sink_handshake(n) {
            Ok(c) => c,
            Err(r) => {
                if self.failure.is_none() {
                    self.failure = Some(format!("node {n} could not connect to the sink: {r}"));
                }
                return;
            }
        };
        let greeting = self.sink.greet(channel);
        self.send_after(
            2 * self.p.latency_us,
            Actor::Sink,
            Actor::Node(n),
            &greeting,
        );
    }

    fn sink_handshake(&mut self, n: u32) -> Result<u32, Refused> {
        let (c1, c2) = (self.challenge(), self.challenge());
        let epoch = self.nodes[n as usize].epoch();
        let (connector, first) = Connector::start(self.nodes[n as usize].me(), c1);
        let first = self.hello_frame(epoch, &first);
        let mut acceptor = Acceptor::new(self.sink.me(), c2);
        let secret = Some(CLIENT_SECRET);
        let answer = acceptor.on_hello(&view(&first)?, secret, &[Role::Node])?;
        let answer = self.hello_frame(0, &answer);
        let second = self.nodes[n as usize].dial_answer(&connector, &view(&answer)?, None)?;
        let second = self.hello_frame(epoch, &second);
        let peer = acceptor.on_answer(&view(&second)?, secret)?;
        Ok(sink_channel(peer.node_id))
    }

    /// A fresh challenge for a HELLO, from the run's PRNG.
    fn challenge(&mut self) -> [u8; 32] {
        let mut c = [0u8; 32];
        for chunk in c.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        c
    }

    fn hello_frame(&self, epoch: u32, hello: &Hello) -> Vec<u8> {
        let mut b = BytesMut::new();
        let _ = self.enc.hello(&mut b, epoch, hello);
        b.to_vec()
    }

    /// An old instance of node `n`, at `epoch`, dials every live node.
    /// Fencing must refuse it wherever the newer instance was admitted;
    /// where it is let in, it takes over the newer instance's connection.
    fn zombie(&mut self, n: u32, epoch: u32) {
        self.zombies += 1;
        for j in 0..self.p.nodes {
            if j != n && self.alive(j) && self.admit(j, n, epoch).is_ok() {
                self.nodes[n as usize].disconnect(1 + j as usize);
            }
        }
    }

    /// Producer `from` (re)connects to consumer `to`, which answers RESUME.
    fn peer_connect(&mut self, from: u32, to: u32) {
        let greeting = self.nodes[to as usize].greet(Producer::Node(from));
        if greeting.is_empty() {
            return;
        }
        let epoch_from = self.nodes[from as usize].epoch();
        if let Err(r) = self.admit(to, from, epoch_from) {
            // Two running instances always get through.
            if self.failure.is_none() {
                self.failure = Some(format!(
                    "node {from} (epoch {epoch_from}) could not connect to the running instance of node {to}: {r}"
                ));
            }
            return;
        }
        self.nodes[from as usize].disconnect(1 + to as usize);
        for frame in greeting {
            self.send_after(
                2 * self.p.latency_us,
                Actor::Node(to),
                Actor::Node(from),
                &frame,
            );
        }
    }

    fn node_crash(&mut self, n: u32) {
        self.crashes += 1;
        self.resumed[n as usize].fill(None);
        // What its sessions knew is gone with it.
        self.admitted[n as usize].fill(0);
        self.nodes[n as usize].crash();
        self.net.reset(n);
        // So did its sources' connections.
        for s in self.sources.iter_mut().filter(|s| s.node == n) {
            s.disconnected();
        }
        // Its peers' connections to it died with it.
        for j in 0..self.p.nodes as usize {
            if j != n as usize {
                self.nodes[j].disconnect(1 + n as usize);
            }
        }
        self.flush(n);
    }
}

/// The frame at the start of `bytes` (a HELLO just encoded).
fn view(bytes: &[u8]) -> Result<FrameView<'_>, Refused> {
    match parse(bytes, verity_wire::DEFAULT_MAX_FRAME_LEN) {
        Ok(Some(v)) => Ok(v),
        _ => Err(Refused {
            code: verity_wire::ErrorCode::Internal,
            text: "a HELLO the simulator encoded does not decode".into(),
        }),
    }
}

/// A fresh core of node `n` of a run with `params` (its routing and
/// configuration as the simulator ran it).
pub fn fresh_core(
    params: &SimParams,
    app: &crate::registry::AppSpec,
    n: u32,
) -> Result<crate::core::NodeCore, String> {
    let routing = if params.nodes > 1 {
        Some(Routing::new(params.key_partitions, params.nodes).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(super::node::fresh_core(app, routing, n))
}
