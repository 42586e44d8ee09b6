//! A node's disk, in memory: its journal, its newest snapshot and one
//! outbound log per out path, and what a crash loses. With `process`
//! durability a crash keeps everything (the page cache survives a process
//! crash); with `fsync` durability it keeps only what the last sync covered
//! (a machine crash). Torn and corrupt writes would be modelled here.

use std::collections::BTreeMap;

/// The stored state of one node.
pub(super) struct Disk {
    /// (timestamp ns, frame) of every accepted input, in journal order.
    pub(super) journal: Vec<(u64, Vec<u8>)>,
    /// Journal records covered by the last sync (fsync durability).
    synced: usize,
    /// (journal records covered, core snapshot).
    pub(super) snapshot: Option<(usize, Vec<u8>)>,
    /// Path 0: the sink; path `1 + j`: node `j`.
    pub(super) logs: Vec<OutLog>,
    /// The node's epoch: incremented and kept at every start, as the
    /// runtime's data directory does (a crash never loses it).
    pub(super) epoch: u32,
}

/// The outbound log of one path: output frames kept until the consumer
/// ACKs them.
#[derive(Default)]
pub(super) struct OutLog {
    /// By seq.
    frames: BTreeMap<u64, Vec<u8>>,
    /// Highest seq ever logged (outputs up to it are verified on replay).
    logged_through: u64,
}

impl OutLog {
    /// Logs output `seq`; when it was logged before (a replay), checks it
    /// instead. `false`: the frame differs from the one logged.
    pub(super) fn log_or_verify(&mut self, seq: u64, frame: &[u8]) -> bool {
        if seq <= self.logged_through {
            if let Some(logged) = self.frames.get(&seq) {
                return logged.as_slice() == frame;
            }
        } else {
            self.frames.insert(seq, frame.to_vec());
            self.logged_through = seq;
        }
        true
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Vec<u8>> {
        self.frames.get(&seq)
    }

    /// The lowest seq kept (everything below it was ACKed).
    pub(super) fn first(&self) -> Option<u64> {
        self.frames.keys().next().copied()
    }

    /// Drops the frames the consumer ACKed.
    pub(super) fn trim_through(&mut self, acked: u64) {
        self.frames.retain(|&s, _| s > acked);
    }
}

impl Disk {
    pub(super) fn new(paths: usize) -> Disk {
        Disk {
            journal: Vec::new(),
            synced: 0,
            snapshot: None,
            logs: (0..paths).map(|_| OutLog::default()).collect(),
            epoch: 0,
        }
    }

    pub(super) fn append(&mut self, timestamp_ns: u64, frame: Vec<u8>) {
        self.journal.push((timestamp_ns, frame));
    }

    /// A group commit: the journal so far survives a machine crash.
    pub(super) fn sync(&mut self) {
        self.synced = self.journal.len();
    }

    /// Journal records a crash now would keep.
    pub(super) fn durable_records(&self, fsync: bool) -> u64 {
        if fsync {
            self.synced as u64
        } else {
            self.journal.len() as u64
        }
    }

    /// Keeps `snapshot` as covering the whole journal.
    pub(super) fn save_snapshot(&mut self, snapshot: Vec<u8>) {
        self.snapshot = Some((self.journal.len(), snapshot));
    }

    /// The node crashed. With `fsync` durability the journal loses what the
    /// last sync did not cover, and each outbound log the frames above
    /// `released[path]` (released outputs were durable). Err: the snapshot
    /// covers more than what survived.
    pub(super) fn crash(&mut self, fsync: bool, released: &[u64]) -> Result<(), String> {
        let mut result = Ok(());
        if fsync {
            self.journal.truncate(self.synced);
            for (log, &r) in self.logs.iter_mut().zip(released) {
                log.frames.retain(|&seq, _| seq <= r);
            }
            if let Some((len, _)) = &self.snapshot {
                if *len > self.journal.len() {
                    // Snapshots are written only over synced journal records.
                    result = Err("snapshot ahead of the synced journal".into());
                }
            }
        }
        for log in &mut self.logs {
            log.logged_through = log.frames.keys().next_back().copied().unwrap_or(0);
        }
        result
    }
}
