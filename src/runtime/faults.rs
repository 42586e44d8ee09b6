//! The fault shim's side of the loop (`[faults]`, chaos tests only): a shim
//! per connection, partitions that cut connections, and the fault log
//! (`data_dir/faults.log`) of every fault injected.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use super::conn::drain_shim;
use super::error::{io_err, WorkerError};
use super::os::unix_ms;
use super::shim::{Faults, Shim};
use super::worker::Worker;
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
}

impl Worker {
    /// A fault shim for a new connection of outbound path `k`, when the
    /// frame faults are on. Its name (and so its PRNG stream) is the path
    /// and how many times it connected.
    pub(super) fn shim_for(&self, k: usize) -> Option<Box<Shim>> {
        let f = self.faults.as_ref().filter(|f| f.config.frames_on())?;
        let path = self.outs.get(k)?.as_ref()?;
        Some(Box::new(Shim::new(
            f.config.clone(),
            format!(
                "node {} -> {} #{}",
                self.core.node(),
                path.name,
                path.connects + 1
            ),
        )))
    }

    /// Whether a configured partition cuts this worker off from node `j`'s
    /// worker now.
    pub(super) fn partitioned_from(&self, j: u32) -> bool {
        let (Some(f), Some(c)) = (self.faults.as_ref(), self.cfg.cluster.as_ref()) else {
            return false;
        };
        if f.config.partitions.is_empty() {
            return false;
        }
        let Some(theirs) = c.node_workers.get(j as usize) else {
            return false;
        };
        f.config.partitioned(&c.worker, theirs, unix_ms())
    }

    /// Cuts the connections a partition forbids right now.
    pub(super) fn enforce_partitions(&mut self) {
        if self
            .faults
            .as_ref()
            .is_none_or(|f| f.config.partitions.is_empty())
        {
            return;
        }
        for k in 0..self.outs.len() {
            let cut = self.outs[k].as_ref().is_some_and(|p| {
                p.conn.is_some() && p.node.is_some_and(|j| self.partitioned_from(j))
            });
            if cut {
                self.log_fault(&format!(
                    "partition cuts {}",
                    self.outs[k].as_ref().map_or("", |p| p.name.as_str())
                ));
                self.out_lost(k, "partition");
            }
        }
        for slot in 0..self.sources.len() {
            let node = self.sources[slot].as_ref().and_then(|c| c.node);
            if node.is_some_and(|j| self.partitioned_from(j)) {
                self.log_fault(&format!(
                    "partition cuts the channel from node {}",
                    node.unwrap_or(0)
                ));
                self.close_source(slot, Some("partition".into()));
            }
        }
    }

    fn log_fault(&mut self, what: &str) {
        if let Some(f) = self.faults.as_mut() {
            let _ = writeln!(f.log, "{} node {} {what}", unix_ms(), self.core.node());
        }
    }

    /// Writes what the shims decided since the last call to the fault log,
    /// and lets held-back frames out when due.
    pub(super) fn drain_faults(&mut self) {
        let Some(log) = self.faults.as_mut().map(|f| &mut f.log) else {
            return;
        };
        let now = unix_ms();
        let mut lost_out = Vec::new();
        let mut lost_in = Vec::new();
        for (k, p) in self.outs.iter_mut().enumerate() {
            if let Some(c) = p.as_mut().and_then(|p| p.conn.as_mut()) {
                if drain_shim(c, log, now) {
                    lost_out.push(k);
                }
            }
        }
        for (slot, c) in self.sources.iter_mut().enumerate() {
            if let Some(c) = c.as_mut() {
                if drain_shim(c, log, now) {
                    lost_in.push(slot);
                }
            }
        }
        let _ = log.flush();
        for k in lost_out {
            self.out_lost(k, "fault shim: connection closed");
        }
        for slot in lost_in {
            self.close_source(slot, Some("fault shim: connection closed".into()));
        }
    }

    /// A connection with a shim is gone: its last decisions (a close, say)
    /// still go to the fault log.
    pub(super) fn retire_shim(&mut self, mut shim: Shim) {
        if let Some(f) = self.faults.as_mut() {
            shim.write_decisions(&mut f.log, unix_ms());
        }
    }

    /// Whether a shim holds frames back (the loop must come back soon).
    pub(super) fn shims_holding(&self) -> bool {
        self.faults.is_some()
            && (self
                .sources
                .iter()
                .flatten()
                .any(|c| c.shim.as_ref().is_some_and(|s| s.holding()))
                || self
                    .outs
                    .iter()
                    .flatten()
                    .filter_map(|p| p.conn.as_ref())
                    .any(|c| c.shim.as_ref().is_some_and(|s| s.holding())))
    }
}
