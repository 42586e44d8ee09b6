//! The node's store: opening the data directory and its logs at start
//! (torn tails, snapshot restore, journal replay, what each consumer had
//! ACKed), logging each batch's outputs and dead letters, durability
//! (`make_durable`), snapshots, the audit chain, and the clean stop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error::WorkerError;
use super::link::ShardLinks;
use super::os::now_ns;
use super::outpath::{out_of, OutPath};
use super::worker::Worker;
use crate::config::NodeToml;
use crate::config::PeerAt;
use crate::core::{Input, NodeCore};
use crate::log::{Durability, Log, LogConfig, LogError, Recovery};
use crate::storage::audit::{self, Audit};
use crate::storage::datadir::{self, DataDir};
use crate::storage::{DeadLetterRecord, RecordKind};

/// The journal and the dead-letter log, and what the worker keeps about
/// them between iterations.
pub(super) struct Logs {
    pub(super) journal: Log,
    dead: Log,
    /// fsync durability: (records after this one, its end position).
    pub(super) undurable: VecDeque<(u64, u64)>,
    /// Dead letters at journal indexes below this are already logged.
    dead_logged_below: u64,
    pub(super) records_at_snapshot: u64,
    /// The journal's hash chain (`audit = true`), and when its head was
    /// last printed.
    pub(super) audit: Option<Audit>,
    audit_printed: Option<(Instant, [u8; 32])>,
}

/// What start-up opened and restored from the data directory, before the
/// worker exists: the logs, the core (restored from the newest snapshot)
/// and where the journal replay starts.
pub(super) struct Opened {
    pub(super) dir: DataDir,
    pub(super) core: NodeCore,
    pub(super) logs: Logs,
    pub(super) outs: Vec<Option<OutPath>>,
    /// The journal position the replay starts at (the snapshot's, or the
    /// journal's first).
    pub(super) replay_from: u64,
    /// The journal index of the snapshot restored (0: none).
    pub(super) snapshot_index: u64,
}

impl Opened {
    /// Opens the data directory and its logs (dropping torn tails), builds
    /// the core and restores the newest valid snapshot into it. Takes the
    /// in-process links to the nodes that are shards of this process.
    pub(super) fn open(cfg: &NodeToml, links: &mut ShardLinks) -> Result<Opened, WorkerError> {
        let dir = DataDir::open(&cfg.data_dir)?;
        let Some(app) = crate::apps::build(&cfg.app) else {
            return Err(WorkerError::Replay(format!("unknown app {:?}", cfg.app)));
        };
        let mut core = NodeCore::new(app, cfg.node_config());
        let (journal, jrec) = Log::open(
            &dir.root,
            datadir::JOURNAL_LOG,
            log_cfg(cfg, cfg.durability),
        )?;
        // Dead letters are rare: no segment prepared ahead (a background
        // 64 MiB page-in that competed with the loop for CPU at every start)
        // and no prefault; a roll creates the next segment when needed.
        let dead_cfg = LogConfig {
            prefault: false,
            prepare_ahead: false,
            ..log_cfg(cfg, Durability::Process)
        };
        let (dead, drec) = Log::open(&dir.root, datadir::DEAD_LETTER_LOG, dead_cfg)?;
        let mut recoveries = vec![
            (datadir::JOURNAL_LOG.to_owned(), jrec),
            (datadir::DEAD_LETTER_LOG.to_owned(), drec),
        ];
        let outs = open_outs(cfg, &dir, links, &mut recoveries)?;
        for (name, r) in &recoveries {
            if r.bytes_dropped > 0 {
                eprintln!(
                    "verity: recovery: {name}: dropped a torn tail of {} bytes ({})",
                    r.bytes_dropped,
                    r.stopped_because.unwrap_or("end"),
                );
            }
        }

        let mut skipped = Vec::new();
        let snapshot = dir.newest_snapshot(&mut skipped)?;
        for s in &skipped {
            eprintln!("verity: recovery: skipping invalid snapshot: {s}");
        }
        let mut replay_from = journal.first_position();
        if let Some(s) = &snapshot {
            core.restore(&s.body).map_err(|e| WorkerError::Snapshot {
                path: s.path.display().to_string(),
                error: e.to_string(),
            })?;
            replay_from = s.journal_position;
        }

        let mut dead_logged_below = 0;
        for rec in dead.reader_at(dead.first_position())? {
            if let Some(d) = DeadLetterRecord::decode(rec?.payload) {
                dead_logged_below = dead_logged_below.max(d.journal_index + 1);
            }
        }
        let logs = Logs {
            journal,
            dead,
            undurable: VecDeque::new(),
            dead_logged_below,
            records_at_snapshot: 0,
            audit: None,
            audit_printed: None,
        };
        Ok(Opened {
            dir,
            core,
            logs,
            outs,
            replay_from,
            snapshot_index: snapshot.map_or(0, |s| s.journal_index),
        })
    }
}

/// The configuration of a log of this node with `durability`.
fn log_cfg(cfg: &NodeToml, durability: Durability) -> LogConfig {
    LogConfig {
        segment_size_bytes: cfg.limits.journal_segment_bytes,
        durability,
        ..LogConfig::default()
    }
}

/// Opens the outbound paths with their logs: 0 the sink, `1 + j` node `j`
/// (`None` for this node), each log's recovery added to `recoveries`.
/// Outbound logs are as durable as the journal (DESIGN §3.1).
fn open_outs(
    cfg: &NodeToml,
    dir: &DataDir,
    links: &mut ShardLinks,
    recoveries: &mut Vec<(String, Recovery)>,
) -> Result<Vec<Option<OutPath>>, WorkerError> {
    let mut outs = Vec::new();
    let (sink_path, orec) = OutPath::open(
        &dir.root,
        datadir::OUTBOUND_LOG,
        log_cfg(cfg, cfg.durability),
        "sink".into(),
        None,
        cfg.sink,
    )?;
    outs.push(Some(sink_path));
    recoveries.push((datadir::OUTBOUND_LOG.into(), orec));
    if let Some(c) = &cfg.cluster {
        for j in 0..c.routing.nodes() {
            let Some(&(_, at)) = c.peers.iter().find(|(n, _)| *n == j) else {
                outs.push(None);
                continue;
            };
            let (addr, local) = match at {
                PeerAt::Remote(a) => (a, None),
                PeerAt::Local => {
                    let Some(i) = links.to.iter().position(|(n, _)| *n == j) else {
                        return Err(WorkerError::Replay(format!(
                            "no in-process link to node {j} (a shard of this worker)"
                        )));
                    };
                    (c.address, Some(links.to.swap_remove(i).1))
                }
            };
            let name = datadir::forward_log(j);
            let (path, rec) = OutPath::open(
                &dir.root,
                &name,
                log_cfg(cfg, cfg.durability),
                format!("node {j}"),
                Some(j),
                addr,
            )?;
            let mut path = path;
            path.local = local;
            outs.push(Some(path));
            recoveries.push((name, rec));
        }
    }
    Ok(outs)
}

impl Worker {
    /// The rest of recovery, once the worker exists: the audit chain, the
    /// journal replay from `replay_from`, what each consumer had ACKed, and
    /// a new snapshot when the journal ends below the restored one.
    pub(super) fn recover(&mut self, replay_from: u64) -> Result<(), WorkerError> {
        if self.cfg.audit {
            self.logs.audit = Some(Audit::recover(&self.logs.journal)?);
        }
        self.replay(replay_from)?;
        // What each consumer had ACKed: everything below the first frame
        // its log still keeps. Its word on later seqs is taken only for
        // what this process sends it again.
        for k in 0..self.outs.len() {
            let Some(path) = self.outs[k].as_ref() else {
                continue;
            };
            let out = out_of(k);
            let produced = self.core.out_channel(out).map_or(0, |o| o.next_seq - 1);
            let acked = path.store.first_seq().map_or(produced, |first| first - 1);
            self.core
                .handle(Input::Recovered { out, acked }, &mut self.fx);
        }
        self.fx.clear();
        self.logs.records_at_snapshot = self.core.journal_next();
        if replay_from > self.logs.journal.end_position() {
            // The journal lost records the snapshot covers (damage below it):
            // the snapshot holds that state, but new records would now be
            // appended below its position and skipped by the next replay.
            // Re-anchor at once with a snapshot at the journal's end.
            eprintln!(
                "verity: recovery: the journal ends at {} below the snapshot's position {replay_from}; writing a new snapshot at the journal's end",
                self.logs.journal.end_position()
            );
            self.snapshot()?;
        }
        Ok(())
    }
}

impl Worker {
    /// Replays the journal from `from` through the core. Outputs whose seq is
    /// already in the outbound log must come out bit-identical (checked) and
    /// are not logged again; later ones are logged.
    pub(super) fn replay(&mut self, from: u64) -> Result<(), WorkerError> {
        let mut pos = from;
        // A damaged journal may end before the snapshot's position: the
        // snapshot holds that state; there is nothing to replay.
        while pos < self.logs.journal.end_position() {
            let rec = match self.logs.journal.reader_at(pos)?.next() {
                None => break,
                Some(r) => r?,
            };
            pos = rec.next_position();
            if rec.kind != RecordKind::Input.code() {
                continue;
            }
            self.fx.clear();
            // Copy out of the mapping: `handle` needs `&mut self.core` while
            // `rec` borrows `self.logs.journal`. Recovery only, not the hot path.
            let run = rec.payload.to_vec();
            let ts = rec.timestamp;
            let position = rec.position;
            let replayed = self
                .core
                .replay_record(&run, ts, &mut self.fx, |_, _| {})
                .map_err(|e| {
                    WorkerError::Replay(format!(
                        "journal record at position {position} (input {}) does not follow the snapshot's watermarks: the journal and snapshot do not match",
                        e.index
                    ))
                })?;
            self.stats.replayed += replayed;
            self.log_effects(ts)?;
        }
        self.fx.clear();
        let records = self.core.journal_next();
        self.core.handle(Input::Durable { records }, &mut self.fx);
        self.fx.clear();
        Ok(())
    }

    /// Logs the outputs and dead letters in `fx`: the outputs of each
    /// outbound channel as one record of its log (frames already there are
    /// verified bit for bit instead), stamped with `clock_ns`, the clock
    /// reading of the inputs that produced them (for `verity-trace`; the
    /// core never reads it).
    pub(super) fn log_effects(&mut self, clock_ns: u64) -> Result<(), WorkerError> {
        if let Some(seqs) = self.fx.outbound_seqs {
            if let Some(Some(path)) = self.outs.get_mut(0) {
                path.log_frames(&self.fx.outbound, seqs, clock_ns)?;
            }
        }
        for j in 0..self.fx.to_peers.len() {
            let Some(seqs) = self.fx.to_peers[j].seqs else {
                continue;
            };
            if let Some(Some(path)) = self.outs.get_mut(1 + j) {
                path.log_frames(&self.fx.to_peers[j].frames, seqs, clock_ns)?;
            }
        }
        for i in 0..self.fx.dead_letters.len() {
            let d = self.fx.dead_letters[i];
            if d.journal_index < self.logs.dead_logged_below {
                continue;
            }
            let mut rec = Vec::new();
            DeadLetterRecord::of(&d).encode(&mut rec);
            self.logs
                .dead
                .append(RecordKind::DeadLetter.code(), clock_ns, &rec)?;
            self.logs.dead_logged_below = d.journal_index + 1;
            self.stats.dead_letters_logged += 1;
        }
        Ok(())
    }

    /// Hands the batch's frames (just logged) to their paths to be written
    /// from memory.
    pub(super) fn keep_fresh(&mut self) {
        let cap = 2 * self.cfg.limits.write_buffer_bytes;
        if let Some(seqs) = self.fx.outbound_seqs {
            if let Some(Some(path)) = self.outs.get_mut(0) {
                path.keep_fresh(&mut self.fx.outbound, seqs, cap);
            }
        }
        for j in 0..self.fx.to_peers.len() {
            let Some(seqs) = self.fx.to_peers[j].seqs else {
                continue;
            };
            if let Some(Some(path)) = self.outs.get_mut(1 + j) {
                path.keep_fresh(&mut self.fx.to_peers[j].frames, seqs, cap);
            }
        }
    }

    /// Journal durability → ACKs to sources, outputs released to the sink.
    pub(super) fn make_durable(&mut self) -> Result<(), WorkerError> {
        let records = match self.cfg.durability {
            Durability::Process => self.core.journal_next(),
            Durability::Fsync => {
                if !self.logs.undurable.is_empty() {
                    self.logs.journal.commit()?;
                    for p in self.outs.iter().flatten() {
                        p.store.log().commit()?;
                    }
                }
                // Outputs depend on the journal only: an output whose outbound
                // record is lost in a machine crash is regenerated, bit for bit,
                // by replaying its (durable) journal records.
                let durable = self.logs.journal.durable_position();
                let mut records = None;
                while let Some(&(r, end)) = self.logs.undurable.front() {
                    if end > durable {
                        break;
                    }
                    records = Some(r);
                    self.logs.undurable.pop_front();
                }
                match records {
                    Some(r) => r,
                    None => return Ok(()),
                }
            }
        };
        self.fx.clear();
        self.core.handle(Input::Durable { records }, &mut self.fx);
        self.send_acks_nacks();
        Ok(())
    }

    /// Writes a snapshot (everything journaled is durable by now) and drops
    /// journal segments no kept snapshot needs.
    pub(super) fn snapshot(&mut self) -> Result<(), WorkerError> {
        // The seal first, so that with fsync it is durable before a
        // snapshot points past it.
        self.seal_audit(false)?;
        if self.cfg.durability == Durability::Fsync {
            wait_all_durable(&self.logs.journal)?;
            for p in self.outs.iter().flatten() {
                wait_all_durable(p.store.log())?;
            }
            self.make_durable()?;
        }
        let mut body = Vec::new();
        self.core.snapshot(&mut body);
        self.dir.write_snapshot(
            self.logs.journal.end_position(),
            self.core.journal_next(),
            &body,
        )?;
        self.logs.records_at_snapshot = self.core.journal_next();
        self.stats.snapshots += 1;
        if let Some(p) = self.dir.oldest_snapshot_position() {
            self.logs
                .journal
                .drop_below(p.min(self.logs.journal.end_position()))?;
        }
        Ok(())
    }

    /// Appends a seal over the input records journaled since the last one
    /// (`audit = true`), and prints the chain head at most every 10 s (and
    /// with `last`, at a clean stop) so it can be kept elsewhere.
    fn seal_audit(&mut self, last: bool) -> Result<(), WorkerError> {
        let Some(a) = self.logs.audit.as_mut() else {
            return Ok(());
        };
        if let Some(seal) = a.seal() {
            self.logs
                .journal
                .append(RecordKind::Seal.code(), now_ns(), &seal.encode())?;
        }
        let head = a.head();
        let (due, new) = match self.logs.audit_printed {
            None => (true, true),
            Some((t, h)) => (t.elapsed() >= Duration::from_secs(10), h != head),
        };
        if new && (due || last) && head != [0; 32] {
            self.logs.audit_printed = Some((Instant::now(), head));
            eprintln!(
                "verity: audit: journal chain head {} at position {}",
                audit::hex(&head),
                self.logs.journal.end_position()
            );
        }
        Ok(())
    }

    pub(super) fn shutdown(&mut self) -> Result<(), WorkerError> {
        self.make_durable()?;
        for k in 0..self.outs.len() {
            self.pump_out(k)?;
        }
        self.flush_sources(true, Instant::now());
        self.seal_audit(true)?;
        self.snapshot()?;
        // Frames produced but not ACKed by their consumer (kept in the
        // outbound logs; sent again after the next start).
        let outs: Vec<(u32, u64, u64)> = std::iter::once(self.core.out())
            .chain((0..self.core.nodes()).filter_map(|j| self.core.peer_out(j)))
            .map(|o| (o.id, o.unacked(), o.sent.saturating_sub(o.acked)))
            .collect();
        let unacked: u64 = outs.iter().map(|o| o.1).sum();
        // Per channel: (unACKed, of which sent in this process).
        let detail: Vec<String> = outs
            .iter()
            .filter(|o| o.1 > 0)
            .map(|(id, n, sent)| format!("{id}:{n}/{sent}"))
            .collect();
        let s = &self.core.stats;
        eprintln!(
            "verity: stopped cleanly: accepted={} outputs={} duplicates={} gaps={} dead_letters={} bad_frames={} violations={} refused={} auth_refused={} tls_failed={} replayed={} snapshots={} unacked={unacked} unacked_by_channel=[{}]",
            s.accepted, s.outputs, s.duplicates, s.gaps, s.dead_letters, self.stats.bad_frames, s.violations, self.stats.refused, self.stats.auth_refused, self.stats.tls_failed, self.stats.replayed, self.stats.snapshots, detail.join(" ")
        );
        Ok(())
    }
}

/// Blocks until everything appended to `log` is durable.
fn wait_all_durable(log: &Log) -> Result<(), LogError> {
    let end = log.end_position();
    if end == log.first_position() {
        return Ok(());
    }
    log.commit()?;
    // `wait_durable(p)` waits for the record at `p`: durable through end - 1
    // means every byte below `end`.
    log.wait_durable(end - 1)
}
