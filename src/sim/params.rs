//! What one run is: its fault parameters, drawn from the seed (swarm
//! testing) or given, and the timing constants of the simulated protocol.

use verity_wire::rng::Rng;

/// Virtual time between two ticks of a source or a node (µs).
pub(super) const TICK_US: u64 = 500;
/// Frames a producer sends beyond what its consumer ACKed.
pub(super) const WINDOW: u64 = 64;
/// A producer whose consumer ACKed nothing for this long goes back and
/// resends (µs).
pub(super) const RESEND_AFTER_US: u64 = 20_000;
/// Output frames produced but not ACKed, and journal records not yet
/// durable, before a node stops reading input (the core's backpressure,
/// `NodeConfig::max_unacked` / `max_undurable`): small, so that runs
/// exercise it.
pub(super) const MAX_UNACKED: u64 = 256;
pub(super) const MAX_UNDURABLE: u64 = 128;
/// The cluster's id and secret in the nodes' HELLOs: every node-to-node
/// connection authenticates as the runtime's do (HMAC-SHA256).
pub(super) const CLUSTER_ID: u64 = 0x5eed;
pub(super) const CLUSTER_SECRET: &[u8] = b"verity-sim-cluster-secret-0123456789";
/// The clients' secret (`client_secret_file`): sources and the sink
/// authenticate with it, as they do with a worker.
pub(super) const CLIENT_SECRET: &[u8] = b"verity-sim-client-secret-9876543210";
/// The sink NACKs one gap at most this often (µs).
pub(super) const NACK_INTERVAL_US: u64 = 2_000;
/// Frames a selective-repeat consumer keeps after a gap (small: the
/// window fills and drops what does not fit too).
pub(super) const REORDER_WINDOW: usize = 64;
/// A crashed node restarts this long after the crash (µs).
pub(super) const RESTART_AFTER_US: u64 = 5_000;

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
