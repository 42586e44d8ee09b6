//! The fault shim's state (`[faults]`, chaos tests only): the shim a new
//! connection gets, whether a partition cuts this worker off from another
//! node's, and the fault log (`data_dir/faults.log`) of every fault
//! injected. The worker's loop applies them to its connections.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use super::conn::{drain_shim, Conn};
use super::error::{io_err, WorkerError};
use super::os::unix_ms;
use super::shim::{Faults, Shim};
use crate::config::NodeToml;

/// What a worker keeps for the fault shim when `[faults]` is configured.
pub(super) struct FaultState {
    /// The fault shim's configuration (`[faults]`).
    pub(super) config: Arc<Faults>,
    /// `data_dir/faults.log`: every fault the shim injected, one per line.
    log: BufWriter<File>,
    /// Connections accepted so far (names inbound shims).
    accepted: u64,
}

impl FaultState {
    /// The fault state of a node with `[faults]` configured (`None`
    /// without): opens its fault log.
    pub(super) fn open(cfg: &NodeToml) -> Result<Option<FaultState>, WorkerError> {
        let Some(config) = cfg.cluster.as_ref().and_then(|c| c.faults.clone()) else {
            return Ok(None);
        };
        let path = cfg.data_dir.join("faults.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        Ok(Some(FaultState {
            config,
            log: BufWriter::new(f),
            accepted: 0,
        }))
    }

    /// Counts a connection node `me` accepted (on the node-to-node port
    /// with `peers`) and gives it a shim when the frame faults are on. Its
    /// name (and so its PRNG stream) is the port and the count.
    pub(super) fn inbound_shim(&mut self, me: u32, peers: bool) -> Option<Box<Shim>> {
        self.accepted += 1;
        if !self.config.frames_on() {
            return None;
        }
        let kind = if peers { "nodes" } else { "sources" };
        Some(Box::new(Shim::new(
            self.config.clone(),
            format!("node {me} <- {kind} #{}", self.accepted),
        )))
    }

    /// A shim for the `connects + 1`-th connection of the outbound path
    /// `name` of node `me`, when the frame faults are on. Its name (and so
    /// its PRNG stream) is the path and that count.
    pub(super) fn outbound_shim(&self, me: u32, name: &str, connects: u64) -> Option<Box<Shim>> {
        if !self.config.frames_on() {
            return None;
        }
        Some(Box::new(Shim::new(
            self.config.clone(),
            format!("node {me} -> {name} #{}", connects + 1),
        )))
    }

    /// Whether a configured partition cuts this worker off from node `j`'s
    /// worker now.
    pub(super) fn partitioned_from(&self, cfg: &NodeToml, j: u32) -> bool {
        let Some(c) = cfg.cluster.as_ref() else {
            return false;
        };
        if self.config.partitions.is_empty() {
            return false;
        }
        let Some(theirs) = c.node_workers.get(j as usize) else {
            return false;
        };
        self.config.partitioned(&c.worker, theirs, unix_ms())
    }

    /// Whether any partition is configured.
    pub(super) fn partitions(&self) -> bool {
        !self.config.partitions.is_empty()
    }

    /// One line in the fault log: what node `node` did.
    pub(super) fn log(&mut self, node: u32, what: &str) {
        let _ = writeln!(self.log, "{} node {node} {what}", unix_ms());
    }

    /// Writes what `c`'s shim decided since the last call to the fault log,
    /// and lets its held-back frames out when due; `true` when that write
    /// failed (the connection is lost).
    pub(super) fn drain(&mut self, c: &mut Conn, counts: &mut [u64; 6]) -> bool {
        if let Some(s) = c.shim.as_ref() {
            count(s, counts);
        }
        drain_shim(c, &mut self.log, unix_ms())
    }

    /// The shim of a closed connection: its last decisions (a close, say)
    /// go to the fault log.
    pub(super) fn retire(&mut self, mut shim: Shim, counts: &mut [u64; 6]) {
        count(&shim, counts);
        shim.write_decisions(&mut self.log, unix_ms());
    }

    pub(super) fn flush(&mut self) {
        let _ = self.log.flush();
    }
}

/// Adds the decisions `shim` has not logged yet to `counts` (by kind, in
/// `Decision::ALL` order), for the metrics.
fn count(shim: &Shim, counts: &mut [u64; 6]) {
    for d in &shim.decisions {
        if let Some(i) = super::shim::Decision::ALL.iter().position(|k| *k == d.4) {
            counts[i] += 1;
        }
    }
}
