//! The driver of one node: the production [`NodeCore`] fed the frames the
//! network delivers, with its journal and outbound logs on the simulated
//! [`Disk`]. What goes out on each outbound path, from which seq and when
//! it goes out again (cursor, window, resend on RESUME, NACK and timeout)
//! is the core's decision, as in the runtime: the driver only hands out
//! what [`NodeCore::poll_transmit`] names and fires its timers. Recovery is
//! the runtime's: newest snapshot, journal replay (outputs already logged
//! must come out bit-identical), then RESUME from every consumer.
//!
//! The node does not reach the network: what it sends goes to its
//! [`outbox`](SimNode::outbox), which the world puts on the links.

use bytes::BytesMut;
use verity_wire::frames::{frames, set_resend_flag};
use verity_wire::handshake::{Acceptor, Connector, Me};
use verity_wire::{parse, Encoder, ErrorCode, FrameView, Hello, Kind, Role};

use super::disk::Disk;
use super::net::Actor;
use super::params::{
    CLIENT_SECRET, CLUSTER_ID, CLUSTER_SECRET, MAX_UNACKED, MAX_UNDURABLE, REORDER_WINDOW,
    RESEND_AFTER_US, WINDOW,
};
use crate::core::{
    sink_channel, Effects, HeldFrom, Input, NodeConfig, NodeCore, Out, Producer, Refused, Sessions,
};
use crate::registry::AppSpec;
use crate::routing::Routing;

/// A frame a node sends.
pub(super) enum Send {
    /// To the consumer of out path `path` (0: the sink, `1 + j`: node `j`).
    Path(usize, Vec<u8>),
    /// An ACK or NACK to the producer of input channel `channel`.
    Producer(u32, Vec<u8>),
}

pub(super) struct SimNode {
    n: u32,
    fsync: bool,
    snapshot_every_records: u64,
    /// `None` while crashed.
    core: Option<NodeCore>,
    pub(super) disk: Disk,
    /// Outbound paths: 0 the sink, `1 + j` node `j`.
    paths: usize,
    records_since_snapshot: u64,
    /// Records forwarded to peers (counted again after replays).
    pub(super) forwarded: u64,
    fx: Effects,
    enc: Encoder,
    /// Frames to send, in order.
    pub(super) outbox: Vec<Send>,
    /// What went wrong (the world ends the run).
    pub(super) failure: Option<String>,
}

/// The outbound channel of path `path` (0: the sink, `1 + j`: node `j`).
fn out_of(path: usize) -> Out {
    match path {
        0 => Out::Sink,
        p => Out::Node(p as u32 - 1),
    }
}

/// A core of node `n` in its initial state, configured as the simulator
/// runs it (also what the generic oracle replays a node's journal
/// through).
pub(super) fn fresh_core(app: &AppSpec, routing: Option<Routing>, n: u32) -> NodeCore {
    let cfg = NodeConfig {
        node: n,
        routing,
        sink_channel: sink_channel(n),
        resend_timeout_ns: RESEND_AFTER_US * 1000,
        send_window: WINDOW,
        max_unacked: MAX_UNACKED,
        max_undurable: MAX_UNDURABLE,
        // Even nodes keep frames after a gap (a small window, so it fills
        // and drops too), odd ones NACK go-back-N: both consumers, and both
        // kinds of NACK at the producers.
        reorder_window: if n.is_multiple_of(2) {
            REORDER_WINDOW
        } else {
            0
        },
        ..NodeConfig::default()
    };
    NodeCore::new(app.build(), cfg)
}

impl SimNode {
    /// Node `n` of `nodes`, not started.
    pub(super) fn new(n: u32, nodes: u32, fsync: bool, snapshot_every_records: u64) -> SimNode {
        let paths = nodes as usize + 1;
        SimNode {
            n,
            fsync,
            snapshot_every_records,
            core: None,
            disk: Disk::new(paths),
            paths,
            records_since_snapshot: 0,
            forwarded: 0,
            fx: Effects::default(),
            enc: Encoder::default(),
            outbox: Vec::new(),
            failure: None,
        }
    }

    pub(super) fn alive(&self) -> bool {
        self.core.is_some()
    }

    /// Starts (or restarts) the node from its disk: a fresh core, the
    /// snapshot, the journal replayed. Its paths wait for their consumers'
    /// RESUME. `false`: recovery failed (see `failure`).
    pub(super) fn start(&mut self, app: &AppSpec, routing: Option<Routing>) -> bool {
        let n = self.n;
        let mut core = fresh_core(app, routing, n);
        self.disk.epoch += 1;
        let mut from = 0;
        if let Some((len, snap)) = &self.disk.snapshot {
            if let Err(e) = core.restore(snap) {
                self.failure = Some(format!("node {n}: snapshot restore: {e}"));
                return false;
            }
            from = *len;
        }
        // Replay: outputs already logged must come out bit-identical.
        let journal = std::mem::take(&mut self.disk.journal);
        for (ts, frame) in journal.iter().skip(from) {
            self.fx.clear();
            if let Err(e) = core.replay_record(frame, *ts, &mut self.fx, |_, _| {}) {
                self.failure = Some(format!(
                    "node {n}: journal record {} did not replay",
                    e.index
                ));
                return false;
            }
            self.log_outputs();
        }
        self.disk.journal = journal;
        self.fx.clear();
        let records = core.journal_next();
        core.handle(Input::Durable { records }, &mut self.fx);
        // Each consumer had ACKed everything below the first frame its
        // path's log keeps.
        for (path, log) in self.disk.logs.iter().enumerate() {
            let out = out_of(path);
            let produced = core.out_channel(out).map_or(0, |o| o.next_seq - 1);
            let acked = log.first().map_or(produced, |first| first - 1);
            core.handle(Input::Recovered { out, acked }, &mut self.fx);
        }
        self.fx.clear();
        self.core = Some(core);
        true
    }

    /// What the node says first, as consumer, to `producer` on a new
    /// connection: the core's greeting (RESUME, and to a node an ACK),
    /// as frames. Empty while crashed.
    pub(super) fn greet(&self, producer: Producer) -> Vec<Vec<u8>> {
        let mut b = BytesMut::new();
        match self.core.as_ref() {
            Some(core) if core.greet(producer, self.epoch(), &self.enc, &mut b) => {
                frames(&b).map(|f| f.bytes.to_vec()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Whether the node reads a DATA frame from `from` now: the core's
    /// backpressure (the runtime stops reading that socket; TCP holds the
    /// bytes).
    pub(super) fn wants_data_from(&self, from: Actor) -> bool {
        self.core.as_ref().is_none_or(|c| match from {
            Actor::Node(_) => c.wants_peer_input(),
            _ => c.wants_input(),
        })
    }

    /// The epoch of the running instance (of the last one, while crashed).
    pub(super) fn epoch(&self) -> u32 {
        self.disk.epoch
    }

    /// Who this node is in its HELLOs.
    pub(super) fn me(&self) -> Me {
        Me {
            cluster_id: CLUSTER_ID,
            node_id: self.n,
            role: Role::Node,
        }
    }

    fn sessions(&mut self) -> Result<&mut Sessions, Refused> {
        match self.core.as_mut() {
            Some(core) => Ok(core.sessions_mut()),
            None => Err(Refused {
                code: ErrorCode::ShuttingDown,
                text: "down".into(),
            }),
        }
    }

    /// As consumer, a dialing peer's first HELLO (`frame`): the core's
    /// `accept_hello`, as the runtime's listeners run it (the node port
    /// takes nodes with the cluster secret, the source port sources with
    /// the client secret). Ok: our HELLO.
    pub(super) fn accept_hello(
        &mut self,
        acceptor: &mut Acceptor,
        frame: &FrameView<'_>,
        nodes: bool,
    ) -> Result<Hello, Refused> {
        let (secret, roles): (_, &[Role]) = if nodes {
            (CLUSTER_SECRET, &[Role::Node])
        } else {
            (CLIENT_SECRET, &[Role::Source])
        };
        self.sessions()?
            .accept_hello(acceptor, frame, Some(secret), roles)
    }

    /// As consumer, the dialing node's answer: proven, then admitted on
    /// `conn` by the core's sessions (fencing; `Ok(Some(c))`: connection
    /// `c` is replaced).
    pub(super) fn accept_answer(
        &mut self,
        acceptor: &Acceptor,
        conn: usize,
        frame: &FrameView<'_>,
    ) -> Result<Option<usize>, Refused> {
        let peer = acceptor.on_answer(frame, Some(CLUSTER_SECRET))?;
        self.sessions()?.admit_node(conn, peer.node_id, peer.epoch)
    }

    /// As consumer, a source's answer: proven, then admitted on `conn` as
    /// the producer of the channel its HELLO named (the core's
    /// `admit_source`; every source's home is the node it dials). Ok: the
    /// channel.
    pub(super) fn accept_source_answer(
        &mut self,
        acceptor: &Acceptor,
        conn: usize,
        frame: &FrameView<'_>,
    ) -> Result<u32, Refused> {
        let peer = acceptor.on_answer(frame, Some(CLIENT_SECRET))?;
        let holder = |c: usize| Some(format!("simulated connection {c}"));
        self.sessions()?
            .admit_source(conn, peer.node_id, None, holder)?;
        Ok(peer.node_id)
    }

    /// As producer, the consumer's HELLO: node `to`'s (then fenced by the
    /// core's `dial_answer`), or the sink's (`to` is `None`), as the
    /// runtime's outbound path runs it. Ok: our answer.
    pub(super) fn dial_answer(
        &mut self,
        connector: &Connector,
        frame: &FrameView<'_>,
        to: Option<u32>,
    ) -> Result<Hello, Refused> {
        let (secret, role) = match to {
            Some(_) => (CLUSTER_SECRET, Role::Node),
            None => (CLIENT_SECRET, Role::Sink),
        };
        self.sessions()?
            .dial_answer(connector, frame, Some(secret), role, to)
    }

    /// The consumer of `path` has a RESUME-ed connection.
    pub(super) fn path_ready(&self, path: usize) -> bool {
        self.core
            .as_ref()
            .and_then(|c| c.out_channel(out_of(path)))
            .is_some_and(|o| o.ready)
    }

    /// The connection of `path` is gone: send nothing until a new RESUME.
    pub(super) fn disconnect(&mut self, path: usize) {
        if let Some(core) = self.core.as_mut() {
            self.fx.clear();
            core.handle(Input::Disconnected { out: out_of(path) }, &mut self.fx);
        }
    }

    /// The node crashes: the core is gone, the disk loses what the
    /// durability mode loses.
    pub(super) fn crash(&mut self) {
        let Some(core) = self.core.take() else {
            return;
        };
        let released: Vec<u64> = (0..self.paths)
            .map(|i| {
                if i == 0 {
                    core.out().released
                } else {
                    core.peer_out(i as u32 - 1).map_or(0, |o| o.released)
                }
            })
            .collect();
        if let Err(e) = self.disk.crash(self.fsync, &released) {
            self.failure = Some(e);
        }
    }

    /// A group commit (fsync durability).
    pub(super) fn sync(&mut self) {
        if !self.alive() {
            return;
        }
        self.disk.sync();
        self.make_durable();
    }

    /// Tells the core what is durable; sends ACKs; snapshots when due;
    /// sends released outputs.
    fn make_durable(&mut self) {
        let records = self.disk.durable_records(self.fsync);
        let Some(core) = self.core.as_mut() else {
            return;
        };
        self.fx.clear();
        core.handle(Input::Durable { records }, &mut self.fx);
        self.send_acks_nacks();
        if self.records_since_snapshot >= self.snapshot_every_records
            && records == self.disk.journal.len() as u64
        {
            if let Some(core) = self.core.as_ref() {
                let mut snap = Vec::new();
                core.snapshot(&mut snap);
                self.disk.save_snapshot(snap);
                self.records_since_snapshot = 0;
            }
        }
        self.pump();
    }

    fn send_acks_nacks(&mut self) {
        for &(channel, seq) in &self.fx.acks {
            let mut b = BytesMut::new();
            let _ = self.enc.ack(&mut b, channel, 0, seq);
            self.outbox.push(Send::Producer(channel, b.to_vec()));
        }
        let (enc, outbox) = (&self.enc, &mut self.outbox);
        crate::core::nack_frames(&self.fx.nacks, |channel, seq, ranges| {
            let mut b = BytesMut::new();
            let _ = enc.nack_ranges(&mut b, channel, 0, seq, ranges);
            outbox.push(Send::Producer(channel, b.to_vec()));
        });
    }

    /// Logs the outputs in `fx` (to the sink and to peers), verifying those
    /// already logged.
    fn log_outputs(&mut self) {
        let n = self.n;
        let mut batches: Vec<(usize, BytesMut)> = Vec::new();
        if self.fx.outbound_seqs.is_some() {
            batches.push((0, std::mem::take(&mut self.fx.outbound)));
        }
        for (j, o) in self.fx.to_peers.iter_mut().enumerate() {
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
                if path > 0 {
                    self.forwarded += 1;
                }
                if !self.disk.logs[path].log_or_verify(seq, frame) {
                    self.failure = Some(format!(
                        "node {n}: replay produced a different frame for seq {seq} on path {path} than the outbound log"
                    ));
                    return;
                }
                at += v.stride;
            }
        }
    }

    /// Handles and journals the frames kept after a gap whose turn came.
    fn take_held(&mut self, now: u64) {
        let mut held = Vec::new();
        loop {
            let Some(core) = self.core.as_mut() else {
                return;
            };
            held.clear();
            let Some(from) = core.take_held(&mut held) else {
                return;
            };
            let Ok(Some(frame)) = verity_wire::parse(&held, verity_wire::MAX_FRAME_LEN_LIMIT)
            else {
                self.failure = Some(format!("node {}: a kept frame does not parse", self.n));
                return;
            };
            let now_ns = now * 1000;
            let input = match from {
                HeldFrom::Node(from) => Input::PeerData {
                    from,
                    frame,
                    now_ns,
                },
                HeldFrom::Source => Input::SourceData { frame, now_ns },
            };
            self.fx.clear();
            core.handle(input, &mut self.fx);
            if self.fx.journal_input.is_none() {
                self.failure = Some(format!(
                    "node {}: a kept frame was not accepted in its turn",
                    self.n
                ));
                return;
            }
            self.disk.append(now_ns, held.clone());
            self.records_since_snapshot += 1;
            self.log_outputs();
            self.send_acks_nacks();
        }
    }

    /// A frame from `from` (`raw`: its bytes, the journal's record).
    pub(super) fn receive(&mut self, from: Actor, view: FrameView<'_>, raw: &[u8], now: u64) {
        if !self.alive() {
            return;
        }
        let n = self.n;
        let path = match from {
            Actor::Sink => 0,
            Actor::Node(j) => 1 + j as usize,
            Actor::Source(_) => usize::MAX,
        };
        match view.kind() {
            Kind::Data if path != 0 => {
                self.fx.clear();
                let Some(core) = self.core.as_mut() else {
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
                core.handle(input, &mut self.fx);
                if self.fx.journal_input.is_some() {
                    self.disk.append(now * 1000, raw.to_vec());
                    self.records_since_snapshot += 1;
                }
                self.log_outputs();
                self.send_acks_nacks();
                self.take_held(now);
                if !self.fsync {
                    self.make_durable();
                }
            }
            Kind::Ack if path != usize::MAX && self.path_ready(path) => {
                let seq = view.header.seq();
                if let Some(core) = self.core.as_mut() {
                    let out = out_of(path);
                    self.fx.clear();
                    core.handle(Input::Ack { out, seq }, &mut self.fx);
                    if let Some(v) = self.fx.violation {
                        self.failure = Some(format!("node {n}: an honest consumer's {v}"));
                        return;
                    }
                    let acked = core.out_channel(out).map_or(0, |o| o.acked);
                    self.disk.logs[path].trim_through(acked);
                }
            }
            Kind::Nack if path != usize::MAX && self.path_ready(path) => {
                let from = view.header.seq();
                let Some(core) = self.core.as_mut() else {
                    return;
                };
                self.fx.clear();
                let ranges = view.nack_ranges().unwrap_or(&[]);
                core.handle(
                    Input::Nack {
                        out: out_of(path),
                        from,
                        ranges,
                    },
                    &mut self.fx,
                );
                if let Some(v) = self.fx.violation {
                    self.failure = Some(format!("node {n}: an honest consumer's {v}"));
                    return;
                }
                self.pump();
            }
            Kind::Resume if path != usize::MAX => {
                let Some(core) = self.core.as_mut() else {
                    return;
                };
                let channel = match from {
                    Actor::Node(j) => core.peer_out(j).map_or(0, |o| o.id),
                    _ => core.out().id,
                };
                let delivered = view.resume_delivered(channel).unwrap_or(0);
                self.fx.clear();
                core.handle(
                    Input::Resume {
                        out: out_of(path),
                        delivered,
                    },
                    &mut self.fx,
                );
                if let Some(v) = self.fx.violation {
                    self.failure = Some(format!("node {n}: an honest consumer's {v}"));
                    return;
                }
                if self.fx.resend.is_none() {
                    return;
                }
                let acked = core.out_channel(out_of(path)).map_or(0, |o| o.acked);
                self.disk.logs[path].trim_through(acked);
                self.pump();
            }
            _ => {}
        }
    }

    /// Fires the core's timers due at `now` (µs): resend after
    /// [`RESEND_AFTER_US`] without ACK progress.
    pub(super) fn tick(&mut self, now: u64) {
        if let Some(core) = self.core.as_mut() {
            self.fx.clear();
            core.handle(Input::Tick { now_ns: now * 1000 }, &mut self.fx);
            if !self.fx.nacks.is_empty() {
                self.send_acks_nacks();
            }
        }
    }

    /// Sends what the core hands out on each path: released frames from
    /// its cursor, within its window, from the outbound log; those the
    /// consumer may have had before flagged RESEND.
    pub(super) fn pump(&mut self) {
        let n = self.n;
        for path in 0..self.paths {
            let out = out_of(path);
            let Some(t) = self.core.as_ref().and_then(|c| c.poll_transmit(out)) else {
                continue;
            };
            for seq in t.from..=t.to {
                let Some(frame) = self.disk.logs[path].get(seq) else {
                    self.failure = Some(format!(
                        "node {n}: released frame {seq} on path {path} is not in the outbound log"
                    ));
                    return;
                };
                let mut frame = frame.clone();
                if seq <= t.resend_through {
                    set_resend_flag(&mut frame);
                }
                self.outbox.push(Send::Path(path, frame));
            }
            if let Some(core) = self.core.as_mut() {
                core.handle(Input::Sent { out, through: t.to }, &mut self.fx);
            }
        }
    }
}
