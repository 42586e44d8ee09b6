//! The real-runtime driver of one node: a hand-written mio event loop around
//! [`NodeCore`], with the journal, the outbound logs and the dead-letter log
//! as mmap logs, sources listening for sender connections and the sink
//! connecting out to the receiver (with backoff).
//!
//! In a cluster the node also listens for the other nodes (their channels to
//! it: inbound, like sources) and connects out to each of them (its channels
//! to them: outbound, like the sink, each with its own log). Node-to-node
//! connections authenticate both ways before anything but HELLO is accepted
//! (`wire/PROTOCOL.md`, Authentication), and a HELLO from an older epoch of a
//! node than one already seen is refused (fencing).
//!
//! One iteration: poll; read every readable inbound connection (while the
//! core wants input), decode whole frames in place, hand each DATA frame to
//! the core and carry out its effects (journal the frame, log the outputs,
//! queue NACKs); then make the journal durable (`process`: at once; `fsync`:
//! the syncer's published position), which releases ACKs to the producers
//! and outputs to the consumers; then write queued bytes, one `write` per
//! connection.
//!
//! This file holds the [`Worker`] itself, its start and the loop. The parts
//! of the loop each own their state, in their own files, and know nothing
//! of the worker: the [`Node`] (core, config, counters), the [`Store`]
//! (data directory and logs), [`Inbound`] and [`Outbound`] connections, and
//! the [`FaultState`]; the worker owns them all and composes them (see
//! `runtime/mod.rs`).
//! What the logs hold (record kinds, the dead-letter payload, the outbound
//! logs and their index) and the data directory's layout are defined in
//! [`crate::storage`].

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use verity_wire::ErrorCode;

use super::conn::{
    Conn, ConnState, Stream, FIRST_OUT, FIRST_SOURCE, LISTENER, PEER_LISTENER, WAKER,
};
use super::error::{io_err, WorkerError};
use super::faults::FaultState;
use super::inbound::Inbound;
use super::ingest::Sinks;
use super::link::ShardLinks;
use super::metrics::{Hub, InSample, Meter, OutSample, Sample};
use super::node::{Node, WorkerStats};
use super::os::stop_requested;
use super::outbound::{Dial, Outbound};
use super::outpath::{out_of, OUT_CONN_BASE};
use super::recovery::{Opened, Store};
use super::stalls::{Doing, Stalls, STALL_LOG};
use super::tls::TlsSetup;
use crate::config::{Idle, NodeToml, SourceHome};
use crate::core::{ConnId, Out};
use crate::log::Durability;

pub struct Worker {
    node: Node,
    store: Store,
    inbound: Inbound,
    outbound: Outbound,
    /// The fault shim's configuration and log (`[faults]`), if any.
    faults: Option<FaultState>,
    poll: Poll,
    /// How long the start took (snapshot restore, journal replay).
    recovery: Duration,
    /// Live metrics (`metrics_listen`), when attached.
    meter: Option<Meter>,
    /// Long iterations and what they were doing (`runtime::stalls`).
    stalls: Stalls,
}

/// Binds the source listener (shard 0 of a worker only) and, in a cluster,
/// the node-to-node listener.
fn bind_listeners(
    cfg: &NodeToml,
) -> Result<(Option<TcpListener>, Option<TcpListener>), WorkerError> {
    let cluster = cfg.cluster.as_ref();
    let listen_key = if cluster.is_some() {
        "worker.sources"
    } else {
        "node.listen"
    };
    // Shard 0 of a worker accepts the sources; the others get records
    // from it over the in-process links.
    let listener = if cluster.is_none_or(|c| c.shard == 0) {
        Some(TcpListener::bind(cfg.listen).map_err(io_err(format!(
            "cannot listen on {} ({listen_key})",
            cfg.listen
        )))?)
    } else {
        None
    };
    let peer_listener = match cluster {
        None => None,
        Some(c) => Some(TcpListener::bind(c.address).map_err(io_err(format!(
            "cannot listen on {} (worker.address of {:?})",
            c.address, c.worker
        )))?),
    };
    Ok((listener, peer_listener))
}

/// Other shards' channels to us arrive on their links: inbound
/// connections from the start (no socket, no accept).
fn link_sources(cfg: &NodeToml, links: &mut ShardLinks) -> Vec<Option<Conn>> {
    let mut sources = Vec::new();
    for (_node, end) in links.from.drain(..) {
        let addr = cfg.cluster.as_ref().map_or(cfg.listen, |c| c.address);
        let mut conn = Conn::over(
            Stream::Link(end),
            addr,
            cfg.limits.max_frame_len,
            cfg.limits.read_buffer_bytes,
        );
        conn.node_port = true;
        sources.push(Some(conn));
    }
    sources
}

impl Worker {
    /// Opens the data directory, recovers (snapshot + journal replay), binds
    /// the source listener. Prints what recovery did to stderr.
    pub fn start(cfg: NodeToml) -> Result<Worker, WorkerError> {
        Worker::start_shard(cfg, ShardLinks::default())
    }

    /// [`Worker::start`] for one shard of a worker process, wired to the
    /// process's other shards by `links`.
    pub fn start_shard(cfg: NodeToml, mut links: ShardLinks) -> Result<Worker, WorkerError> {
        let began = Instant::now();
        let tls = match &cfg.tls {
            None => None,
            Some(files) => Some(TlsSetup::new(files).map_err(WorkerError::Tls)?),
        };
        let opened = Opened::open(&cfg, &mut links)?;
        let (listener, peer_listener) = bind_listeners(&cfg)?;
        let faults = FaultState::open(&cfg)?;
        let poll = match links.poll.take() {
            Some(p) => p,
            None => Poll::new().map_err(io_err("cannot create the event loop"))?,
        };
        if cfg.durability == Durability::Fsync {
            // The journal's syncer wakes the loop when a sync is done: with
            // nothing to read, the loop would otherwise hold the ACKs and
            // outputs it releases until its poll timeout (up to 20 ms).
            let waker = match links.waker.take() {
                Some(w) => w,
                None => std::sync::Arc::new(
                    mio::Waker::new(poll.registry(), WAKER)
                        .map_err(io_err("cannot create a waker"))?,
                ),
            };
            opened.store.journal.on_durable(move || {
                // A failed wake leaves the release to the next poll timeout.
                let _ = waker.wake();
            });
        }
        let mut inbound = Inbound::new(link_sources(&cfg, &mut links), listener, peer_listener);
        let Opened {
            core,
            store,
            outs,
            replay_from,
            snapshot_index,
        } = opened;
        let mut outbound = Outbound {
            paths: outs,
            tls_sink: None,
            tls_peers: None,
        };
        if let Some(t) = tls {
            inbound.tls_sources = t.sources;
            inbound.tls_nodes = t.nodes;
            outbound.tls_sink = t.sink;
            outbound.tls_peers = t.peers;
        }
        let epoch = store.dir.epoch;
        super::logging::set_epoch(epoch);
        let mut w = Worker {
            node: Node::new(cfg, core, epoch),
            store,
            inbound,
            outbound,
            faults,
            poll,
            recovery: Duration::ZERO,
            meter: None,
            stalls: Stalls::new(Instant::now()),
        };
        let behind = w
            .store
            .recover(&mut w.node, &mut w.outbound.paths, replay_from)?;
        if behind {
            // Re-anchor the journal at once (see `Store::recover`).
            w.snapshot(true)?;
        }
        w.register_listeners()?;
        if let Some(warning) = &w.node.cfg.open_warning {
            if w.node.cfg.cluster.as_ref().is_none_or(|c| c.shard == 0) {
                tracing::warn!(event = "open", "WARNING: {warning}");
            }
        }
        w.announce(snapshot_index);
        w.recovery = began.elapsed();
        Ok(w)
    }

    /// Publishes this node's metrics to `hub` (slot: its shard's index in
    /// the process) from now on.
    pub fn attach_metrics(&mut self, hub: std::sync::Arc<Hub>, slot: usize) {
        self.meter = Some(Meter::new(hub, slot, self.recovery));
    }

    /// This node's counters and channels, for the metrics.
    fn sample(&self) -> Sample {
        let (n, core) = (&self.node, &self.node.core);
        let (c, w) = (&core.stats, &n.stats);
        let cluster = n.cfg.cluster.as_ref();
        let outbound = self
            .outbound
            .paths
            .iter()
            .enumerate()
            .filter_map(|(k, p)| {
                let p = p.as_ref()?;
                let o = match k {
                    0 => core.out(),
                    _ => core.peer_out(p.node?)?,
                };
                Some(OutSample {
                    channel: o.id,
                    to: p.node.map_or("sink".into(), |j| format!("node {j}")),
                    addr: p.addr.to_string(),
                    produced: o.next_seq.saturating_sub(1),
                    released: o.released,
                    sent: o.sent,
                    acked: o.acked,
                    unacked: o.unacked(),
                    log_bytes: p.store.log().end_position() - p.store.log().first_position(),
                    connected: p.conn.as_ref().is_some_and(|c| c.state == ConnState::Ready),
                    connects: p.connects,
                })
            })
            .collect();
        let j = &self.store.journal;
        let (dead_records, dead_bytes) = self.store.dead_letter_size();
        Sample {
            node: n.cfg.node_id,
            worker: cluster.map_or(String::new(), |c| c.worker.clone()),
            shard: cluster.map_or(0, |c| c.shard),
            app: n.cfg.app.to_string(),
            epoch: n.epoch,
            core: *c,
            bad_frames: w.bad_frames,
            sources_accepted: w.sources_accepted,
            sink_connects: w.sink_connects,
            peer_connects: w.peer_connects,
            auth_refused: w.auth_refused,
            stale_epoch_refused: w.stale_epoch_refused,
            tls_failed: w.tls_failed,
            refused_limit: w.refused,
            nacks_received: w.nacks_received,
            resends_nack: w.resends_nack,
            resends_resume: w.resends_resume,
            resends_timeout: w.resends_timeout,
            journal_records: core.journal_next(),
            journal_bytes: j.end_position() - j.first_position(),
            durable_lag_bytes: j.end_position() - j.durable_position().min(j.end_position()),
            dead_letter_records: dead_records,
            dead_letter_bytes: dead_bytes,
            snapshots: w.snapshots,
            replayed: w.replayed,
            faults: w.fault_decisions,
            stalls: self.stalls.counts,
            loop_iteration: self.stalls.iterations.clone(),
            // Source channels homed here, and those from the other nodes.
            inbound: core
                .in_channels()
                .iter()
                .enumerate()
                .filter(|(i, _)| match n.cfg.source_homes.get(*i) {
                    Some(home) => *home == SourceHome::Here,
                    None => *i - n.cfg.source_homes.len() != core.node() as usize,
                })
                .map(|(_, i)| InSample {
                    channel: i.id,
                    delivered: i.delivered,
                })
                .collect(),
            outbound,
            ..Sample::default()
        }
    }

    /// The counters for the report printed at exit.
    pub fn stats(&self) -> WorkerStats {
        self.node.stats
    }

    /// Registers the listeners bound at start with the event loop.
    fn register_listeners(&mut self) -> Result<(), WorkerError> {
        if let Some(l) = self.inbound.listener.as_mut() {
            self.poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .map_err(io_err("cannot register the listener"))?;
        }
        if let Some(l) = self.inbound.peer_listener.as_mut() {
            self.poll
                .registry()
                .register(l, PEER_LISTENER, Interest::READABLE)
                .map_err(io_err("cannot register the node-to-node listener"))?;
        }
        Ok(())
    }

    /// Prints who this node is, where it listens and what recovery did.
    fn announce(&self, snapshot_index: u64) {
        let unacked: usize = self
            .outbound
            .paths
            .iter()
            .flatten()
            .map(|o| o.store.unacked_records())
            .sum();
        let cfg = &self.node.cfg;
        tracing::info!(
            event = "recovered",
            snapshot_record = snapshot_index,
            replayed = self.node.stats.replayed,
            "node {} app={} epoch={} listening on {}{} sink {}; recovered: snapshot at record {}, replayed {} journal records, {} output records unacked",
            cfg.node_id,
            cfg.app,
            self.node.epoch,
            cfg.listen,
            cfg.cluster
                .as_ref()
                .map(|c| format!(" (worker {}, nodes on {})", c.worker, c.address))
                .unwrap_or_default(),
            cfg.sink,
            snapshot_index,
            self.node.stats.replayed,
            unacked,
        );
        let limits: Vec<String> = cfg
            .limits
            .entries()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        tracing::info!(
            event = "limits",
            "node {} limits: {} (`verity config show` prints every key)",
            cfg.node_id,
            limits.join(" ")
        );
    }

    /// Runs until SIGTERM/SIGINT (then: finish the batch, snapshot, return).
    pub fn run(&mut self) -> Result<(), WorkerError> {
        let mut events = Events::with_capacity(256);
        let idle = self.node.cfg.idle;
        loop {
            let timeout = match idle {
                Idle::Sleep => self.poll_timeout(),
                // Never sleeps: no link announces a sleep (nobody need wake
                // us), so each iteration looks at every link's ring.
                Idle::Yield | Idle::Spin => {
                    self.for_each_link(|c| c.readable = true);
                    Duration::ZERO
                }
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("poll")(e)),
            }
            if idle == Idle::Yield && events.is_empty() {
                std::thread::yield_now();
            }
            self.stalls.begin(Instant::now());
            self.dispatch(&events);
            self.step()?;
            if let Some(st) = self.stalls.end().filter(|s| s.took >= STALL_LOG) {
                let id = self.node.cfg.node_id;
                self.node.note_limited(
                    "stall",
                    format_args!(
                        "node {id}: the event loop stalled {:.1} ms ({})",
                        st.took.as_secs_f64() * 1e3,
                        st.doing.name()
                    ),
                );
            }
            if let Some(why) = self.node.fatal.take() {
                return Err(WorkerError::Replay(why));
            }
            if stop_requested() {
                self.shutdown()?;
                return Ok(());
            }
        }
    }

    /// How long the next poll may sleep.
    fn poll_timeout(&mut self) -> Duration {
        // Don't sleep while there is work we could do now: unread
        // inbound bytes (edge-triggered: no new event will come) or
        // released frames an outbound socket can still take.
        let core = &self.node.core;
        let out_ready = self.outbound.paths.iter().enumerate().any(|(k, p)| {
            p.as_ref().is_some_and(|p| {
                p.conn
                    .as_ref()
                    .is_some_and(|c| c.state == ConnState::Ready && c.writable && c.wbuf.is_empty())
            }) && core.poll_transmit(out_of(k)).is_some()
        });
        let (wants_src, wants_peer) = (core.wants_input(), core.wants_peer_input());
        let source_work = self.inbound.conns.iter().flatten().any(|c| {
            let wants = if c.node.is_some() {
                wants_peer
            } else {
                wants_src
            };
            c.readable && (wants || c.state != ConnState::Ready)
        });
        if out_ready || source_work {
            return Duration::ZERO;
        }
        let mut timeout = Duration::from_millis(20);
        // About to sleep: every in-process link announces it (the other
        // shard then wakes us), unless bytes already wait.
        let mut waiting = false;
        let mut stuck = false;
        self.for_each_link(|c| {
            if let Stream::Link(l) = &mut c.stream {
                if !l.prepare_sleep() {
                    c.readable = true;
                    waiting = true;
                }
            }
            // A full ring holds our bytes: retry soon.
            stuck |= !c.wbuf.is_empty();
        });
        if waiting {
            return Duration::ZERO;
        }
        if stuck || self.shims_holding() {
            timeout = Duration::from_millis(1);
        }
        // Owed ACKs leave when their delay is up.
        if let Some(since) = self
            .inbound
            .conns
            .iter()
            .flatten()
            .filter(|c| !c.acks.is_empty())
            .filter_map(|c| c.acks_since)
            .min()
        {
            let due = since + Duration::from_micros(self.node.cfg.limits.ack_delay_us);
            timeout = timeout.min(due.saturating_duration_since(Instant::now()));
        }
        timeout
    }

    /// Marks what each event announced: a listener to accept on, a
    /// connection readable or writable, a link written to by another shard.
    fn dispatch(&mut self, events: &Events) {
        for ev in events.iter() {
            let conn = match ev.token() {
                // Another shard wrote to a link, or (fsync) the journal's
                // syncer published: the step after this poll releases.
                WAKER => {
                    self.for_each_link(|c| c.readable = true);
                    continue;
                }
                LISTENER | PEER_LISTENER => {
                    let peers = ev.token() == PEER_LISTENER;
                    let reg = self.poll.registry();
                    let faults = self.faults.as_mut();
                    self.inbound.accept(&mut self.node, reg, faults, peers);
                    continue;
                }
                Token(t) if t < FIRST_SOURCE => self
                    .outbound
                    .paths
                    .get_mut(t - FIRST_OUT)
                    .and_then(|p| p.as_mut()?.conn.as_mut()),
                Token(t) => self
                    .inbound
                    .conns
                    .get_mut(t - FIRST_SOURCE)
                    .and_then(Option::as_mut),
            };
            if let Some(c) = conn {
                c.readable |= ev.is_readable() || ev.is_read_closed();
                c.read_closed |= ev.is_read_closed();
                c.writable |= ev.is_writable();
            }
        }
    }

    /// One iteration's work after the poll: consumers, sources,
    /// durability, what goes out, timers, faults, snapshot.
    fn step(&mut self) -> Result<(), WorkerError> {
        let reg = self.poll.registry();
        let n = &mut self.node;
        let dial = Dial {
            reg,
            faults: self.faults.as_ref(),
        };
        for k in 0..self.outbound.paths.len() {
            self.outbound.service(k, n, &dial)?;
        }
        self.stalls.lap(Doing::Send);
        let rolls = log_rolls(&self.store, &self.outbound);
        let mut sinks = Sinks {
            reg,
            store: &mut self.store,
            outbound: &mut self.outbound,
        };
        // With metrics: when this iteration's read batch began.
        let read_at = self.meter.is_some().then(Instant::now);
        let journal_before = n.core.journal_next();
        self.inbound.read(n, &mut sinks)?;
        self.stalls
            .lap(match log_rolls(&self.store, &self.outbound) == rolls {
                true => Doing::Read,
                false => Doing::SegmentRoll,
            });
        self.inbound
            .make_durable(n, &mut self.store, &self.outbound)?;
        if let (Some(m), Some(read_at)) = (self.meter.as_mut(), read_at) {
            if n.core.journal_next() > journal_before {
                m.batch_read(n.core.journal_next(), read_at);
            }
            m.durable(n.core.durable_records(), Instant::now());
        }
        self.stalls.lap(Doing::DurableWait);
        for k in 0..self.outbound.paths.len() {
            self.outbound.pump(k, n, reg)?;
        }
        self.stalls.lap(Doing::Send);
        let now = Instant::now();
        if let Some(m) = self.meter.as_mut() {
            m.released(now);
            let on = !n.core.wants_input();
            if let Some(on) = m.backpressure(on, now) {
                let what = if on {
                    "on: the core refuses input (an outbound channel or the journal is full)"
                } else {
                    "off"
                };
                let id = n.cfg.node_id;
                n.note_limited(
                    "backpressure",
                    format_args!("node {id}: backpressure {what}"),
                );
            }
        }
        self.tick(now);
        let (n, reg) = (&mut self.node, self.poll.registry());
        self.inbound.flush(n, reg, false, now);
        self.inbound.sweep_stalled(n, reg, now);
        if self.faults.is_some() {
            self.enforce_partitions();
            self.drain_faults();
        }
        self.stalls.lap(Doing::Timers);
        let since = self.node.core.journal_next() - self.store.records_at_snapshot;
        if since >= self.node.cfg.snapshot_interval_records {
            self.snapshot(false)?;
        }
        if self.store.poll_snapshot(&mut self.node)? {
            if let Some(m) = self.meter.as_mut() {
                m.last_snapshot = now;
            }
        }
        self.stalls.lap(Doing::Snapshot);
        if self.meter.as_ref().is_some_and(|m| m.due(now)) {
            let sample = self.sample();
            if let Some(m) = self.meter.as_mut() {
                m.publish(sample, now);
            }
            self.stalls.lap(Doing::Metrics);
        }
        Ok(())
    }

    /// Calls `f` on every connection over an in-process link.
    fn for_each_link(&mut self, mut f: impl FnMut(&mut Conn)) {
        let outs = self
            .outbound
            .paths
            .iter_mut()
            .flatten()
            .filter_map(|p| p.conn.as_mut());
        for c in self.inbound.conns.iter_mut().flatten().chain(outs) {
            if matches!(c.stream, Stream::Link(_)) {
                f(c);
            }
        }
    }

    /// Journal durability → ACKs to sources, outputs released to the sink.
    fn make_durable(&mut self) -> Result<(), WorkerError> {
        self.inbound
            .make_durable(&mut self.node, &mut self.store, &self.outbound)
    }

    /// Takes a snapshot (everything journaled made durable first): the
    /// loop serialises the core, the snapshot thread writes it, and a
    /// later iteration drops the journal segments no kept snapshot needs
    /// (`runtime::snapshotter`). With `wait`, all of it before returning.
    fn snapshot(&mut self, wait: bool) -> Result<(), WorkerError> {
        self.store
            .before_snapshot(&self.node, &self.outbound.paths)?;
        if self.node.cfg.durability == Durability::Fsync {
            self.make_durable()?;
        }
        match wait {
            true => self.store.write_snapshot(&mut self.node)?,
            false => self.store.start_snapshot(&mut self.node)?,
        }
        if let (true, Some(m)) = (wait, self.meter.as_mut()) {
            m.last_snapshot = Instant::now();
        }
        Ok(())
    }

    /// Fires the core's timers due at `now` (resend after
    /// `limits.resend_timeout_ms` without ACK progress; handshakes that took
    /// too long).
    fn tick(&mut self, now: Instant) {
        let n = &mut self.node;
        let now_ns = n.timer_ns(now);
        n.core
            .handle(crate::core::Input::Tick { now_ns }, &mut n.fx);
        if !n.fx.nacks.is_empty() {
            self.inbound.send_acks_nacks(n);
            n.fx.nacks.clear();
        }
        let expired = std::mem::take(&mut n.fx.handshake_expired);
        if !expired.is_empty() {
            self.handshakes_expired(&expired);
        }
        let n = &mut self.node;
        n.stats.resends_timeout += n.fx.rewound.len() as u64;
        for (out, from) in n.fx.rewound.drain(..) {
            let k = match out {
                Out::Sink => 0,
                Out::Node(j) => 1 + j as usize,
            };
            if let Some(p) = self.outbound.paths.get(k).and_then(Option::as_ref) {
                let peer = p
                    .conn
                    .as_ref()
                    .map_or_else(String::new, |c| c.peer.to_string());
                tracing::warn!(
                    event = "resend",
                    cause = "timeout",
                    from,
                    "{} {peer}: no ACK progress for {} ms; resending from {from}",
                    p.name,
                    n.cfg.limits.resend_timeout_ms,
                );
            }
        }
    }

    /// The core timed these connections out in their handshake: an inbound
    /// one is refused `LIMIT_EXCEEDED` (a connection that never said HELLO
    /// would hold a slot for good), an outbound one is dialed again (a
    /// consumer that accepts and stays silent).
    fn handshakes_expired(&mut self, conns: &[ConnId]) {
        let (n, reg) = (&mut self.node, self.poll.registry());
        let text = format!(
            "no handshake within limits.handshake_timeout_ms ({} ms)",
            n.cfg.limits.handshake_timeout_ms
        );
        for &c in conns {
            if let Some(k) = c.checked_sub(OUT_CONN_BASE) {
                let stuck = self
                    .outbound
                    .paths
                    .get(k)
                    .and_then(Option::as_ref)
                    .filter(|p| {
                        p.conn
                            .as_ref()
                            .is_some_and(|c| c.state != ConnState::Ready && c.stream.is_socket())
                    });
                if let Some(p) = stuck {
                    tracing::warn!(
                        event = "dial_again",
                        "{} at {}: {text}; dialing again",
                        p.name,
                        p.addr
                    );
                    self.outbound.lost(k, n, reg, &text);
                }
            } else if self
                .inbound
                .conns
                .get(c)
                .and_then(Option::as_ref)
                .is_some_and(|conn| {
                    conn.state != ConnState::Ready && !conn.closing && conn.stream.is_socket()
                })
            {
                n.stats.refused += 1;
                self.inbound
                    .refuse(c, n, reg, ErrorCode::LimitExceeded, &text);
            }
        }
    }

    /// Cuts the connections a partition forbids right now.
    fn enforce_partitions(&mut self) {
        let Some(f) = self.faults.as_mut().filter(|f| f.partitions()) else {
            return;
        };
        let (n, reg) = (&mut self.node, self.poll.registry());
        let me = n.core.node();
        for k in 0..self.outbound.paths.len() {
            let cut = self.outbound.paths[k].as_ref().filter(|p| {
                p.conn.is_some() && p.node.is_some_and(|j| f.partitioned_from(&n.cfg, j))
            });
            if let Some(p) = cut {
                f.log(me, &format!("partition cuts {}", p.name));
                self.outbound.lost(k, n, reg, "partition");
            }
        }
        for slot in 0..self.inbound.conns.len() {
            let node = self.inbound.conns[slot].as_ref().and_then(|c| c.node);
            if let Some(j) = node.filter(|&j| f.partitioned_from(&n.cfg, j)) {
                f.log(me, &format!("partition cuts the channel from node {j}"));
                self.inbound.close(slot, n, reg, Some("partition".into()));
            }
        }
    }

    /// Writes what the shims decided since the last call to the fault log
    /// (those of closed connections too), and lets held-back frames out
    /// when due.
    fn drain_faults(&mut self) {
        let Some(f) = self.faults.as_mut() else {
            return;
        };
        let (n, reg) = (&mut self.node, self.poll.registry());
        let mut lost_out = Vec::new();
        let mut lost_in = Vec::new();
        for (k, p) in self.outbound.paths.iter_mut().enumerate() {
            if let Some(c) = p.as_mut().and_then(|p| p.conn.as_mut()) {
                if f.drain(c, &mut n.stats.fault_decisions) {
                    lost_out.push(k);
                }
            }
        }
        for (slot, c) in self.inbound.conns.iter_mut().enumerate() {
            if let Some(c) = c.as_mut() {
                if f.drain(c, &mut n.stats.fault_decisions) {
                    lost_in.push(slot);
                }
            }
        }
        for k in lost_out {
            self.outbound
                .lost(k, n, reg, "fault shim: connection closed");
        }
        for slot in lost_in {
            let why = Some("fault shim: connection closed".into());
            self.inbound.close(slot, n, reg, why);
        }
        for shim in n.retired.drain(..) {
            f.retire(shim, &mut n.stats.fault_decisions);
        }
        f.flush();
    }

    /// Whether a shim holds frames back (the loop must come back soon).
    fn shims_holding(&self) -> bool {
        let holding = |c: &Conn| c.shim.as_ref().is_some_and(|s| s.holding());
        self.faults.is_some()
            && (self.inbound.conns.iter().flatten().any(holding)
                || self
                    .outbound
                    .paths
                    .iter()
                    .flatten()
                    .filter_map(|p| p.conn.as_ref())
                    .any(holding))
    }

    /// The clean stop: everything durable and written, a last audit seal
    /// and snapshot, and the report.
    fn shutdown(&mut self) -> Result<(), WorkerError> {
        self.make_durable()?;
        let (n, reg) = (&mut self.node, self.poll.registry());
        for k in 0..self.outbound.paths.len() {
            self.outbound.pump(k, n, reg)?;
        }
        self.inbound.flush(n, reg, true, Instant::now());
        self.store.seal_audit(true)?;
        self.snapshot(true)?;
        if self.faults.is_some() {
            self.drain_faults();
        }
        self.node.report();
        tracing::info!(
            event = "stalls",
            "node {}: loop stalls of {} ms or more: {}",
            self.node.cfg.node_id,
            super::stalls::STALL.as_millis(),
            self.stalls.summary()
        );
        Ok(())
    }
}

/// Segment rolls so far of the journal and every outbound log.
fn log_rolls(store: &Store, outbound: &Outbound) -> u64 {
    let outs: u64 = outbound
        .paths
        .iter()
        .flatten()
        .map(|p| p.store.log().rolls())
        .sum();
    store.journal.rolls() + outs
}
