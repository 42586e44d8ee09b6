//! What a node publishes for the metrics ([`Sample`]): plain data, copied
//! from its counters by its event loop (`metrics::Meter`), read by the
//! endpoint's thread and rendered by `metrics_text`.

use std::time::Duration;

use crate::core::NodeStats;

/// Upper bounds (seconds) of the latency histograms' buckets; one more,
/// `+Inf`, holds the rest.
pub const BUCKETS: [f64; 19] = [
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
    250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with the fixed [`BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub(super) counts: [u64; BUCKETS.len() + 1],
    pub(super) sum_seconds: f64,
    pub(super) count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum_seconds += s;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The fault shim's decisions, in the order of `shim::Decision::ALL`.
pub const FAULT_KINDS: [&str; 6] = ["drop", "duplicate", "reorder", "delay", "corrupt", "close"];

/// One outbound channel of a node: to the sink or to another node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutSample {
    pub channel: u32,
    /// `sink` or `node N`.
    pub to: String,
    pub addr: String,
    /// Highest seq produced (the outputs of this channel so far).
    pub produced: u64,
    /// Highest seq released (its journal records durable).
    pub released: u64,
    /// Highest seq handed to the consumer's connection.
    pub sent: u64,
    /// Highest seq the consumer ACKed.
    pub acked: u64,
    /// Frames kept in the outbound log, not yet ACKed.
    pub unacked: u64,
    pub log_bytes: u64,
    pub connected: bool,
    pub connects: u64,
}

/// One inbound channel of a node: from a source or another node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InSample {
    pub channel: u32,
    /// Highest seq accepted.
    pub delivered: u64,
}

/// What one node (shard) publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub node: u32,
    /// The worker's name in a cluster; empty for a single node.
    pub worker: String,
    pub shard: u32,
    pub app: String,
    pub epoch: u32,
    /// The core's own counters (accepted, duplicates, gaps, dead letters,
    /// outputs, forwarded, violations), as the core keeps them.
    pub core: NodeStats,
    pub bad_frames: u64,
    pub sources_accepted: u64,
    pub sink_connects: u64,
    pub peer_connects: u64,
    pub auth_refused: u64,
    pub stale_epoch_refused: u64,
    pub tls_failed: u64,
    pub refused_limit: u64,
    pub nacks_received: u64,
    pub resends_nack: u64,
    pub resends_resume: u64,
    pub resends_timeout: u64,
    pub journal_records: u64,
    pub journal_bytes: u64,
    pub durable_lag_bytes: u64,
    pub dead_letter_records: u64,
    pub dead_letter_bytes: u64,
    pub snapshots: u64,
    /// Seconds since the last snapshot this process wrote (or since start).
    pub snapshot_age_seconds: f64,
    pub backpressure_seconds: f64,
    /// The core refuses more input right now.
    pub backpressured: bool,
    pub recovery_seconds: f64,
    pub replayed: u64,
    pub faults: [u64; 6],
    pub accept_to_durable: Histogram,
    pub accept_to_released: Histogram,
    /// Event-loop iterations of at least `stalls::STALL`, by what they were
    /// doing (`stalls::Doing::ALL` order).
    pub stalls: [u64; 7],
    /// Every event-loop iteration's length.
    pub loop_iteration: Histogram,
    pub inbound: Vec<InSample>,
    pub outbound: Vec<OutSample>,
}
