//! `[faults]` of `cluster.toml` as plain data: what the socket-level fault
//! shim (`runtime::shim`) injects, and the partition schedule. Parsed in
//! [`super::cluster`]; carried out by the runtime.

/// Fault probabilities (parts per million, per frame) and the seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    pub seed: u64,
    pub drop_ppm: u32,
    pub duplicate_ppm: u32,
    pub reorder_ppm: u32,
    pub delay_ppm: u32,
    pub delay_max_ms: u64,
    pub corrupt_ppm: u32,
    pub close_ppm: u32,
    /// Windows when two workers cannot reach each other.
    pub partitions: Vec<Partition>,
}

/// Workers `a` and `b` are cut off from each other during
/// `[start_unix_ms, end_unix_ms)` (wall clock, so a restarted worker keeps
/// the schedule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub a: String,
    pub b: String,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

impl Faults {
    /// Whether any per-frame fault is configured.
    pub fn frames_on(&self) -> bool {
        self.drop_ppm
            + self.duplicate_ppm
            + self.reorder_ppm
            + self.delay_ppm
            + self.corrupt_ppm
            + self.close_ppm
            > 0
    }

    /// Whether workers `x` and `y` are partitioned at `now_unix_ms`.
    pub fn partitioned(&self, x: &str, y: &str, now_unix_ms: u64) -> bool {
        self.partitions.iter().any(|p| {
            ((p.a == x && p.b == y) || (p.a == y && p.b == x))
                && now_unix_ms >= p.start_unix_ms
                && now_unix_ms < p.end_unix_ms
        })
    }
}
