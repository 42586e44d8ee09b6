//! What every part of the loop shares: the node's core and its effects
//! buffer, the configuration, the encoder and epoch, the counters, the
//! rate-limited log, and the clocks of one iteration. The parts (inbound,
//! outbound, store, faults) each own their own state and take this
//! [`Node`] as an argument; none of them knows the [`Worker`](super::Worker).

use std::time::{Duration, Instant};

use verity_wire::handshake::Me;
use verity_wire::{Encoder, Role};

use super::shim::Shim;
use crate::config::NodeToml;
use crate::core::{Effects, NodeCore};

/// Counters for the report printed at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    pub replayed: u64,
    pub snapshots: u64,
    pub bad_frames: u64,
    pub sink_connects: u64,
    pub peer_connects: u64,
    pub auth_refused: u64,
    /// Handshakes refused because the peer's epoch is older than one
    /// already seen of its node (fencing a zombie).
    pub stale_epoch_refused: u64,
    /// Connections closed by a TLS failure (a certificate refused, a
    /// handshake that failed, a record that did not decrypt).
    pub tls_failed: u64,
    /// Connections refused or closed by a limit (per address, handshake
    /// pool, established connections, incomplete frames).
    pub refused: u64,
    pub sources_accepted: u64,
    pub dead_letters_logged: u64,
    /// NACKs from consumers (the sink, other nodes).
    pub nacks_received: u64,
    /// Times an outbound channel went back to resend: on a NACK, on a
    /// consumer's RESUME, after `limits.resend_timeout_ms` without ACK.
    pub resends_nack: u64,
    pub resends_resume: u64,
    pub resends_timeout: u64,
    /// Fault-shim decisions by kind (`shim::Decision::ALL` order).
    pub fault_decisions: [u64; 6],
}

/// The node: its core and what every part of the loop reads or counts.
pub(super) struct Node {
    pub(super) cfg: NodeToml,
    pub(super) core: NodeCore,
    pub(super) fx: Effects,
    pub(super) enc: Encoder,
    /// This instance's epoch (from the data directory), in every frame
    /// header it sends but DATA.
    pub(super) epoch: u32,
    pub(super) stats: WorkerStats,
    /// Set when an in-process link broke (our own bug): the worker stops.
    pub(super) fatal: Option<String>,
    /// The origin of the core's timer clock (`Input::Tick`).
    pub(super) started: Instant,
    /// The clock reading for the frames of the current read batch: one
    /// `clock_gettime` per socket read, not per frame (the journal records
    /// it with each accepted input).
    pub(super) batch_clock_ns: u64,
    /// Fault shims of connections closed since the fault log was last
    /// written: their last decisions still go to it.
    pub(super) retired: Vec<Shim>,
    /// Lines about peers and connections: at most a few a second.
    /// One limiter per class of line: a flood of one kind (say,
    /// CHANNEL_BUSY refusals) cannot hide a line of another.
    log_limiters: Vec<(&'static str, LogLimiter)>,
}

impl Node {
    /// A handshake this node refused: counted by reason (the metrics'
    /// `verity_handshake_failures_total`).
    pub(super) fn count_refusal(&mut self, code: verity_wire::ErrorCode) {
        match code {
            verity_wire::ErrorCode::AuthFailed => self.stats.auth_refused += 1,
            verity_wire::ErrorCode::StaleEpoch => self.stats.stale_epoch_refused += 1,
            _ => {}
        }
    }

    pub(super) fn new(cfg: NodeToml, core: NodeCore, epoch: u32) -> Node {
        Node {
            enc: Encoder::new(cfg.limits.max_frame_len),
            cfg,
            core,
            fx: Effects::default(),
            epoch,
            stats: WorkerStats::default(),
            fatal: None,
            started: Instant::now(),
            batch_clock_ns: 0,
            retired: Vec::new(),
            log_limiters: Vec::new(),
        }
    }

    /// Prints a line about a peer or a connection, at most
    /// [`LogLimiter::PER_SECOND`] a second: a flood of refusals or of
    /// peer errors cannot flood the log. What was left out is counted.
    pub(super) fn log_limited(&mut self, class: &'static str, line: core::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.limiter(class).admit(Instant::now()) {
            if suppressed > 0 {
                tracing::warn!(
                    event = "suppressed",
                    class,
                    lines = suppressed,
                    "({suppressed} similar lines about connections suppressed: {class})"
                );
            }
            tracing::warn!(event = "connection", class, "{line}");
        }
    }

    /// [`Node::log_limited`] at level info, with its own event name.
    pub(super) fn note_limited(&mut self, event: &'static str, line: core::fmt::Arguments<'_>) {
        if self.limiter(event).admit(Instant::now()).is_some() {
            tracing::info!(event, "{line}");
        }
    }

    fn limiter(&mut self, class: &'static str) -> &mut LogLimiter {
        let i = match self.log_limiters.iter().position(|l| l.0 == class) {
            Some(i) => i,
            None => {
                self.log_limiters.push((class, LogLimiter::default()));
                self.log_limiters.len() - 1
            }
        };
        &mut self.log_limiters[i].1
    }

    /// Who this node is in HELLOs.
    pub(super) fn me(&self) -> Me {
        Me {
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.node_id,
            role: Role::Node,
        }
    }

    /// A reading of the core's timer clock (`Input::Tick`): ns since the
    /// worker started.
    pub(super) fn timer_ns(&self, now: Instant) -> u64 {
        now.duration_since(self.started).as_nanos() as u64
    }

    /// Prints the report of a clean stop: the core's counters, the
    /// worker's, and the frames produced but not ACKed by their consumer
    /// (kept in the outbound logs; sent again after the next start).
    pub(super) fn report(&self) {
        let core = &self.core;
        let outs: Vec<(u32, u64, u64)> = std::iter::once(core.out())
            .chain((0..core.nodes()).filter_map(|j| core.peer_out(j)))
            .map(|o| (o.id, o.unacked(), o.sent.saturating_sub(o.acked)))
            .collect();
        let unacked: u64 = outs.iter().map(|o| o.1).sum();
        // Per channel: (unACKed, of which sent in this process).
        let detail: Vec<String> = outs
            .iter()
            .filter(|o| o.1 > 0)
            .map(|(id, n, sent)| format!("{id}:{n}/{sent}"))
            .collect();
        let (s, w) = (&core.stats, &self.stats);
        tracing::info!(
            event = "stopped",
            accepted = s.accepted,
            outputs = s.outputs,
            duplicates = s.duplicates,
            gaps = s.gaps,
            dead_letters = s.dead_letters,
            bad_frames = w.bad_frames,
            violations = s.violations,
            refused = w.refused,
            replayed = w.replayed,
            snapshots = w.snapshots,
            unacked,
            "stopped cleanly: accepted={} outputs={} duplicates={} gaps={} dead_letters={} bad_frames={} violations={} refused={} auth_refused={} tls_failed={} replayed={} snapshots={} unacked={unacked} unacked_by_channel=[{}]",
            s.accepted, s.outputs, s.duplicates, s.gaps, s.dead_letters, w.bad_frames, s.violations, w.refused, w.auth_refused, w.tls_failed, w.replayed, w.snapshots, detail.join(" ")
        );
    }

    /// The secret a connection authenticates with: the cluster secret
    /// between nodes, the client secret with sources and the sink.
    pub(super) fn secret(&self, nodes: bool) -> Option<&[u8]> {
        secret_of(&self.cfg, nodes)
    }
}

/// [`Node::secret`] from the configuration alone (for a caller that holds
/// the core mutably meanwhile).
pub(super) fn secret_of(cfg: &NodeToml, nodes: bool) -> Option<&[u8]> {
    if nodes {
        cfg.cluster.as_ref().map(|c| c.secret.0.as_slice())
    } else {
        cfg.client_secret.as_ref().map(|s| s.0.as_slice())
    }
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
