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
//! This file holds the [`Worker`] itself, its start and the loop; the parts
//! of the loop live next to it by the state they own (see `runtime/mod.rs`).
//! What the logs hold (record kinds, the dead-letter payload, the outbound
//! logs and their index) and the data directory's layout are defined in
//! [`crate::storage`].

use std::io;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use verity_wire::handshake::Me;
use verity_wire::{Encoder, Role};

use super::conn::{Conn, ConnState, Stream};
use super::error::{io_err, WorkerError};
use super::faults::FaultState;
use super::link::ShardLinks;
use super::os::stop_requested;
use super::outpath::{out_of, OutPath};
use super::recovery::{Logs, Opened};
use super::tls::TlsSetup;
use crate::config::NodeToml;
use crate::core::{Effects, NodeCore};
use crate::routing::MAX_NODES;
use crate::storage::datadir::DataDir;

const LISTENER: Token = Token(0);
/// Another shard of this process wrote to one of our in-process links.
pub(super) const WAKER: Token = Token(usize::MAX);
const PEER_LISTENER: Token = Token(1);
/// Outbound path `k` (0: the sink, `1 + j`: node `j`) is token `FIRST_OUT + k`.
pub(super) const FIRST_OUT: usize = 2;
/// Inbound connection slot `s` is token `FIRST_SOURCE + s`.
pub(super) const FIRST_SOURCE: usize = FIRST_OUT + MAX_NODES as usize + 1;
/// Bytes read from one connection per loop iteration (fairness between sources).
pub(super) const READ_CHUNK: usize = 64 << 10;

/// Counters for the report printed at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    pub replayed: u64,
    pub snapshots: u64,
    pub bad_frames: u64,
    pub sink_connects: u64,
    pub peer_connects: u64,
    pub auth_refused: u64,
    /// Connections closed by a TLS failure (a certificate refused, a
    /// handshake that failed, a record that did not decrypt).
    pub tls_failed: u64,
    /// Connections refused or closed by a limit (per address, handshake
    /// pool, established connections, incomplete frames).
    pub refused: u64,
    pub sources_accepted: u64,
    pub dead_letters_logged: u64,
}

pub struct Worker {
    pub(super) cfg: NodeToml,
    pub(super) dir: DataDir,
    pub(super) core: NodeCore,
    pub(super) fx: Effects,
    pub(super) enc: Encoder,
    /// The journal, the dead-letter log, and what the worker knows of them.
    pub(super) logs: Logs,
    pub(super) poll: Poll,
    /// Source listener (shard 0 of a worker only).
    pub(super) listener: Option<TcpListener>,
    /// Set when an in-process link broke (our own bug): the worker stops.
    pub(super) fatal: Option<String>,
    /// The fault shim's configuration and log (`[faults]`), if any.
    pub(super) faults: Option<FaultState>,
    /// Node-to-node listener (cluster only).
    pub(super) peer_listener: Option<TcpListener>,
    /// Inbound connections: sources, and other nodes' channels to us.
    pub(super) sources: Vec<Option<Conn>>,
    /// Outbound paths: 0 the sink, `1 + j` node `j` (`None` for this node).
    pub(super) outs: Vec<Option<OutPath>>,
    /// The origin of the core's timer clock ([`Input::Tick`]).
    pub(super) started: Instant,
    /// The clock reading for the frames of the current read batch: one
    /// `clock_gettime` per socket read, not per frame (the journal records
    /// it with each accepted input).
    pub(super) batch_clock_ns: u64,
    /// When `sweep_stalled` last looked.
    pub(super) last_sweep: Instant,
    /// Lines about peers and connections (refusals, peer errors): at most
    /// a few a second.
    log_limiter: LogLimiter,
    /// `[tls]`: the rustls settings of each kind of connection.
    pub(super) tls: Option<TlsSetup>,
    pub stats: WorkerStats,
}

/// Admits at most [`LogLimiter::PER_SECOND`] log lines a second, counting
/// the rest.
#[derive(Debug, Default)]
struct LogLimiter {
    window: Option<Instant>,
    printed: u32,
    suppressed: u64,
}

impl LogLimiter {
    const PER_SECOND: u32 = 20;

    /// `Some(lines suppressed since the last admitted one)` when a line may
    /// be printed at `now`; `None` when it is suppressed (and counted).
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1));
        if fresh {
            self.window = Some(now);
            self.printed = 0;
        }
        if self.printed >= Self::PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.printed += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
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
    for (node, end) in links.from.drain(..) {
        let addr = cfg.cluster.as_ref().map_or(cfg.listen, |c| c.address);
        let mut conn = Conn::over(
            Stream::Link(end),
            addr,
            cfg.limits.max_frame_len,
            cfg.limits.read_buffer_bytes,
        );
        conn.node_port = true;
        let _ = node;
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
        let sources = link_sources(&cfg, &mut links);
        let Opened {
            dir,
            core,
            logs,
            outs,
            replay_from,
            snapshot_index,
        } = opened;
        let mut w = Worker {
            enc: Encoder::new(cfg.limits.max_frame_len),
            cfg,
            dir,
            core,
            fx: Effects::default(),
            logs,
            poll,
            listener,
            peer_listener,
            sources,
            fatal: None,
            faults,
            outs,
            started: Instant::now(),
            batch_clock_ns: 0,
            last_sweep: Instant::now(),
            log_limiter: LogLimiter::default(),
            tls,
            stats: WorkerStats::default(),
        };
        w.recover(replay_from)?;
        w.register_listeners()?;
        if let Some(warning) = &w.cfg.open_warning {
            if w.cfg.cluster.as_ref().is_none_or(|c| c.shard == 0) {
                eprintln!("verity: WARNING: {warning}");
            }
        }
        w.announce(snapshot_index);
        Ok(w)
    }

    /// Registers the listeners bound at start with the event loop.
    fn register_listeners(&mut self) -> Result<(), WorkerError> {
        if let Some(l) = self.listener.as_mut() {
            self.poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .map_err(io_err("cannot register the listener"))?;
        }
        if let Some(l) = self.peer_listener.as_mut() {
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
            .outs
            .iter()
            .flatten()
            .map(|o| o.store.unacked_records())
            .sum();
        eprintln!(
            "verity: node {} app={} epoch={} listening on {}{} sink {}; recovered: snapshot at record {}, replayed {} journal records, {} output records unacked",
            self.cfg.node_id,
            self.cfg.app,
            self.dir.epoch,
            self.cfg.listen,
            self.cfg
                .cluster
                .as_ref()
                .map(|c| format!(" (worker {}, nodes on {})", c.worker, c.address))
                .unwrap_or_default(),
            self.cfg.sink,
            snapshot_index,
            self.stats.replayed,
            unacked,
        );
    }

    /// Runs until SIGTERM/SIGINT (then: finish the batch, snapshot, return).
    pub fn run(&mut self) -> Result<(), WorkerError> {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("poll")(e)),
            }
            self.dispatch(&events);
            self.step()?;
            if let Some(why) = self.fatal.take() {
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
        let out_ready = (0..self.outs.len()).any(|k| {
            self.outs[k].as_ref().is_some_and(|p| {
                p.conn
                    .as_ref()
                    .is_some_and(|c| c.state == ConnState::Ready && c.writable && c.wbuf.is_empty())
            }) && self.core.poll_transmit(out_of(k)).is_some()
        });
        let (wants_src, wants_peer) = (self.core.wants_input(), self.core.wants_peer_input());
        let source_work = self.sources.iter().flatten().any(|c| {
            let wants = if c.node.is_some() {
                wants_peer
            } else {
                wants_src
            };
            c.readable && (wants || c.state != ConnState::Ready)
        });
        let mut timeout = if out_ready || source_work {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        if timeout > Duration::ZERO {
            // About to sleep: every in-process link announces it (the
            // other shard then wakes us), unless bytes already wait.
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
                timeout = Duration::ZERO;
            } else if stuck || self.shims_holding() {
                timeout = Duration::from_millis(1);
            }
            // Owed ACKs leave when their delay is up.
            if let Some(since) = self
                .sources
                .iter()
                .flatten()
                .filter(|c| !c.acks.is_empty())
                .filter_map(|c| c.acks_since)
                .min()
            {
                let due = since + Duration::from_micros(self.cfg.limits.ack_delay_us);
                timeout = timeout.min(due.saturating_duration_since(Instant::now()));
            }
        }
        timeout
    }

    /// Marks what each event announced: a listener to accept on, a
    /// connection readable or writable, a link written to by another shard.
    fn dispatch(&mut self, events: &Events) {
        for ev in events.iter() {
            match ev.token() {
                WAKER => self.for_each_link(|c| c.readable = true),
                LISTENER => self.accept(false),
                PEER_LISTENER => self.accept(true),
                Token(t) if t < FIRST_SOURCE => {
                    if let Some(Some(p)) = self.outs.get_mut(t - FIRST_OUT) {
                        if let Some(c) = p.conn.as_mut() {
                            c.readable |= ev.is_readable() || ev.is_read_closed();
                            c.read_closed |= ev.is_read_closed();
                            c.writable |= ev.is_writable();
                        }
                    }
                }
                Token(t) => {
                    if let Some(Some(c)) = self.sources.get_mut(t - FIRST_SOURCE) {
                        c.readable |= ev.is_readable() || ev.is_read_closed();
                        c.read_closed |= ev.is_read_closed();
                        c.writable |= ev.is_writable();
                    }
                }
            }
        }
    }

    /// One iteration's work after the poll: consumers, sources,
    /// durability, what goes out, timers, faults, snapshot.
    fn step(&mut self) -> Result<(), WorkerError> {
        for k in 0..self.outs.len() {
            self.service_out(k)?;
        }
        self.read_sources()?;
        self.make_durable()?;
        for k in 0..self.outs.len() {
            self.pump_out(k)?;
        }
        let now = Instant::now();
        self.tick(now);
        self.flush_sources(false, now);
        self.sweep_stalled(now);
        if self.faults.is_some() {
            self.enforce_partitions();
            self.drain_faults();
        }
        if self.core.journal_next() - self.logs.records_at_snapshot
            >= self.cfg.snapshot_interval_records
        {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Calls `f` on every connection over an in-process link.
    fn for_each_link(&mut self, mut f: impl FnMut(&mut Conn)) {
        let outs = self
            .outs
            .iter_mut()
            .flatten()
            .filter_map(|p| p.conn.as_mut());
        for c in self.sources.iter_mut().flatten().chain(outs) {
            if matches!(c.stream, Stream::Link(_)) {
                f(c);
            }
        }
    }

    /// Prints a line about a peer or a connection, at most
    /// [`LogLimiter::PER_SECOND`] a second: a flood of refusals or of
    /// peer errors cannot flood the log. What was left out is counted.
    pub(super) fn log_limited(&mut self, line: core::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.log_limiter.admit(Instant::now()) {
            if suppressed > 0 {
                eprintln!("verity: ({suppressed} similar lines about connections suppressed)");
            }
            eprintln!("verity: {line}");
        }
    }

    /// Who this node is in HELLOs.
    pub(super) fn me(&self) -> Me {
        Me {
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.node_id,
            role: Role::Node,
        }
    }

    /// The secret a connection authenticates with: the cluster secret
    /// between nodes, the client secret with sources and the sink.
    /// A reading of the core's timer clock ([`Input::Tick`]): ns since
    /// the worker started.
    pub(super) fn timer_ns(&self, now: Instant) -> u64 {
        now.duration_since(self.started).as_nanos() as u64
    }

    pub(super) fn secret(&self, nodes: bool) -> Option<&[u8]> {
        secret_of(&self.cfg, nodes)
    }
}

/// The secret of a handshake in `cfg`: the cluster secret between nodes,
/// the client secret with sources and the sink.
pub(super) fn secret_of(cfg: &NodeToml, nodes: bool) -> Option<&[u8]> {
    if nodes {
        cfg.cluster.as_ref().map(|c| c.secret.0.as_slice())
    } else {
        cfg.client_secret.as_ref().map(|s| s.0.as_slice())
    }
}
