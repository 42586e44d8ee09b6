//! The node's store ([`Store`]): opening the data directory and its logs at
//! start (torn tails, snapshot restore, journal replay, what each consumer
//! had ACKed), journaling accepted input, logging each batch's outputs and
//! dead letters, durability, snapshots and the audit chain.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::auditor::Auditor;
use super::error::{io_err, WorkerError};
use super::link::ShardLinks;
use super::node::Node;
use super::os::now_ns;
use super::outpath::{out_of, OutPath};
use super::snapshotter::{Snapshotter, Written};
use crate::config::NodeToml;
use crate::config::PeerAt;
use crate::core::{Input, NodeCore};
use crate::log::{Durability, Log, LogConfig, LogError, Recovery};
use crate::storage::audit::{self, Audit};
use crate::storage::datadir::{self, DataDir};
use crate::storage::{DeadLetterRecord, RecordKind};

/// The data directory, the journal and the dead-letter log, and what the
/// worker keeps about them between iterations.
pub(super) struct Store {
    pub(super) dir: DataDir,
    pub(super) journal: Log,
    dead: Log,
    /// fsync durability: (records after this one, its end position).
    pub(super) undurable: VecDeque<(u64, u64)>,
    /// Dead letters at journal indexes below this are already logged.
    dead_logged_below: u64,
    /// Records in the dead-letter log.
    dead_records: u64,
    pub(super) records_at_snapshot: u64,
    /// Writes snapshots off the event loop.
    snapshotter: Snapshotter,
    /// The journal's hash chain (`audit = true`), hashed on its own thread,
    /// and when its head was last printed.
    pub(super) audit: Option<Auditor>,
    audit_printed: Option<(Instant, [u8; 32])>,
}

/// What start-up opened and restored from the data directory, before the
/// worker exists: the logs, the core (restored from the newest snapshot)
/// and where the journal replay starts.
pub(super) struct Opened {
    pub(super) core: NodeCore,
    pub(super) store: Store,
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
        dir.check_shape(&cfg.shape())?;
        let mut core = NodeCore::new(cfg.app.build(), cfg.node_config());
        let (journal, jrec) = Log::open(
            &dir.root,
            datadir::JOURNAL_LOG,
            log_cfg(cfg, cfg.durability),
        )?;
        // Dead letters are rare: no segment prepared ahead (a background
        // 64 MiB page-in that competed with the loop for CPU at every start)
        // and no prefault; a roll creates the next segment when needed. Its
        // segments are small (1 MiB, or room for 4 frames of the largest),
        // so a new node does not reserve 64 MiB for them before it listens.
        let base = log_cfg(cfg, Durability::Process);
        let dead_cfg = LogConfig {
            segment_size_bytes: (4 * u64::from(cfg.limits.max_frame_len))
                .max(1 << 20)
                .min(base.segment_size_bytes),
            prefault: false,
            prepare_ahead: false,
            lock_memory: false,
            ..base
        };
        let (dead, drec) = Log::open(&dir.root, datadir::DEAD_LETTER_LOG, dead_cfg)?;
        let mut recoveries = vec![
            (datadir::JOURNAL_LOG.to_owned(), jrec),
            (datadir::DEAD_LETTER_LOG.to_owned(), drec),
        ];
        let outs = open_outs(cfg, &dir, links, &mut recoveries)?;
        for (name, r) in &recoveries {
            if r.bytes_dropped > 0 {
                tracing::warn!(
                    event = "torn_tail",
                    "recovery: {name}: dropped a torn tail of {} bytes ({})",
                    r.bytes_dropped,
                    r.stopped_because.unwrap_or("end"),
                );
            }
        }

        let mut skipped = Vec::new();
        let snapshot = dir.newest_snapshot(&mut skipped)?;
        for s in &skipped {
            tracing::warn!(
                event = "bad_snapshot",
                "recovery: skipping invalid snapshot: {s}"
            );
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
        let mut dead_records = 0;
        for rec in dead.reader_at(dead.first_position())? {
            dead_records += 1;
            if let Some(d) = DeadLetterRecord::decode(rec?.payload) {
                dead_logged_below = dead_logged_below.max(d.journal_index + 1);
            }
        }
        let store = Store {
            dir,
            journal,
            dead,
            undurable: VecDeque::new(),
            dead_logged_below,
            dead_records,
            records_at_snapshot: 0,
            snapshotter: Snapshotter::start()
                .map_err(io_err("cannot start the snapshot thread"))?,
            audit: None,
            audit_printed: None,
        };
        Ok(Opened {
            core,
            store,
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
        lock_memory: cfg.lock_memory,
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

impl Store {
    /// The rest of recovery, once the node exists: the audit chain, the
    /// journal replay from `replay_from`, what each consumer had ACKed.
    /// `true`: the journal ends below the restored snapshot, and a new
    /// snapshot must re-anchor it at once.
    pub(super) fn recover(
        &mut self,
        n: &mut Node,
        outs: &mut [Option<OutPath>],
        replay_from: u64,
    ) -> Result<bool, WorkerError> {
        if n.cfg.audit {
            self.audit = Some(Auditor::start(Audit::recover(&self.journal)?)?);
        }
        self.replay(n, outs, replay_from)?;
        // What each consumer had ACKed: everything below the first frame
        // its log still keeps. Its word on later seqs is taken only for
        // what this process sends it again.
        for (k, path) in outs.iter().enumerate() {
            let Some(path) = path.as_ref() else {
                continue;
            };
            let out = out_of(k);
            let produced = n.core.out_channel(out).map_or(0, |o| o.next_seq - 1);
            let acked = path.store.first_seq().map_or(produced, |first| first - 1);
            n.core.handle(Input::Recovered { out, acked }, &mut n.fx);
        }
        n.fx.clear();
        self.records_at_snapshot = n.core.journal_next();
        let behind = replay_from > self.journal.end_position();
        if behind {
            // The journal lost records the snapshot covers (damage below it):
            // the snapshot holds that state, but new records would now be
            // appended below its position and skipped by the next replay.
            tracing::warn!(
                event = "journal_behind",
                "recovery: the journal ends at {} below the snapshot's position {replay_from}; writing a new snapshot at the journal's end",
                self.journal.end_position()
            );
        }
        Ok(behind)
    }

    /// Replays the journal from `from` through the core. Outputs whose seq is
    /// already in the outbound log must come out bit-identical (checked) and
    /// are not logged again; later ones are logged.
    fn replay(
        &mut self,
        n: &mut Node,
        outs: &mut [Option<OutPath>],
        from: u64,
    ) -> Result<(), WorkerError> {
        let mut pos = from;
        // A damaged journal may end before the snapshot's position: the
        // snapshot holds that state; there is nothing to replay.
        while pos < self.journal.end_position() {
            let rec = match self.journal.reader_at(pos)?.next() {
                None => break,
                Some(r) => r?,
            };
            pos = rec.next_position();
            if rec.kind != RecordKind::Input.code() {
                continue;
            }
            n.fx.clear();
            // Copy out of the mapping: logging the effects needs `&mut self`
            // while `rec` borrows the journal. Recovery only, not the hot path.
            let run = rec.payload.to_vec();
            let ts = rec.timestamp;
            let position = rec.position;
            let replayed = n
                .core
                .replay_record(&run, ts, &mut n.fx, |_, _| {})
                .map_err(|e| {
                    WorkerError::Replay(format!(
                        "journal record at position {position} (input {}) does not follow the snapshot's watermarks: the journal and snapshot do not match",
                        e.index
                    ))
                })?;
            n.stats.replayed += replayed;
            self.log_effects(n, outs, ts)?;
        }
        n.fx.clear();
        let records = n.core.journal_next();
        n.core.handle(Input::Durable { records }, &mut n.fx);
        n.fx.clear();
        Ok(())
    }

    /// Appends a run of accepted DATA frames to the journal as one record,
    /// stamped with the batch's clock reading.
    pub(super) fn journal_run(&mut self, n: &Node, run: &[u8]) -> Result<(), WorkerError> {
        if run.is_empty() {
            return Ok(());
        }
        let kind = RecordKind::Input.code();
        let clock = n.batch_clock_ns;
        let p = self.journal.append(kind, clock, run)?;
        if let Some(a) = self.audit.as_mut() {
            a.add(p, self.journal.end_position(), kind, clock, run)?;
        }
        if n.cfg.durability == Durability::Fsync {
            let end = p + (crate::log::format::RECORD_HEADER_BYTES + run.len()) as u64;
            self.undurable.push_back((n.core.journal_next(), end));
        }
        Ok(())
    }

    /// Logs the outputs and dead letters in the node's effects: the outputs
    /// of each outbound channel as one record of its log (frames already
    /// there are verified bit for bit instead), stamped with `clock_ns`, the
    /// clock reading of the inputs that produced them (for `verity-trace`;
    /// the core never reads it).
    pub(super) fn log_effects(
        &mut self,
        n: &mut Node,
        outs: &mut [Option<OutPath>],
        clock_ns: u64,
    ) -> Result<(), WorkerError> {
        let fx = &n.fx;
        if let Some(seqs) = fx.outbound_seqs {
            if let Some(Some(path)) = outs.get_mut(0) {
                path.log_frames(&fx.outbound, seqs, clock_ns)?;
            }
        }
        for (j, to) in fx.to_peers.iter().enumerate() {
            let Some(seqs) = to.seqs else {
                continue;
            };
            if let Some(Some(path)) = outs.get_mut(1 + j) {
                path.log_frames(&to.frames, seqs, clock_ns)?;
            }
        }
        for d in &fx.dead_letters {
            if d.journal_index < self.dead_logged_below {
                continue;
            }
            let mut rec = Vec::new();
            DeadLetterRecord::of(d).encode(&mut rec);
            self.dead
                .append(RecordKind::DeadLetter.code(), clock_ns, &rec)?;
            self.dead_logged_below = d.journal_index + 1;
            self.dead_records += 1;
            n.stats.dead_letters_logged += 1;
        }
        Ok(())
    }

    /// How many journal records are durable now, when that moved (fsync:
    /// commits the journal and the outbound logs and takes what the syncer
    /// has published; process: all of them). `None`: nothing new.
    /// The dead-letter log's records and bytes.
    pub(super) fn dead_letter_size(&self) -> (u64, u64) {
        let bytes = self.dead.end_position() - self.dead.first_position();
        (self.dead_records, bytes)
    }

    pub(super) fn durable_records(
        &mut self,
        n: &Node,
        outs: &[Option<OutPath>],
    ) -> Result<Option<u64>, WorkerError> {
        if n.cfg.durability == Durability::Process {
            return Ok(Some(n.core.journal_next()));
        }
        if !self.undurable.is_empty() {
            self.journal.commit()?;
            for p in outs.iter().flatten() {
                p.store.log().commit()?;
            }
        }
        // Outputs depend on the journal only: an output whose outbound
        // record is lost in a machine crash is regenerated, bit for bit,
        // by replaying its (durable) journal records.
        let durable = self.journal.durable_position();
        let mut records = None;
        while let Some(&(r, end)) = self.undurable.front() {
            if end > durable {
                break;
            }
            records = Some(r);
            self.undurable.pop_front();
        }
        Ok(records)
    }

    /// The first half of a snapshot: the audit seal, and (fsync) waits
    /// until the journal and every outbound log are durable.
    pub(super) fn before_snapshot(
        &mut self,
        n: &Node,
        outs: &[Option<OutPath>],
    ) -> Result<(), WorkerError> {
        // The seal first, so that with fsync it is durable before a
        // snapshot points past it.
        self.seal_audit(false)?;
        if n.cfg.durability == Durability::Fsync {
            wait_all_durable(&self.journal)?;
            for p in outs.iter().flatten() {
                wait_all_durable(p.store.log())?;
            }
        }
        Ok(())
    }

    /// Writes a snapshot of the core (everything journaled is durable by
    /// now: [`Store::before_snapshot`]), drops journal segments no kept
    /// snapshot needs, and waits for it all (start-up re-anchoring, the
    /// clean stop).
    pub(super) fn write_snapshot(&mut self, n: &mut Node) -> Result<(), WorkerError> {
        self.start_snapshot(n)?;
        if let Some(w) = self.snapshotter.wait() {
            self.finish_snapshot(n, w)?;
        }
        Ok(())
    }

    /// Serialises the core (everything journaled is durable by now) and
    /// hands the snapshot to the snapshot thread, after waiting for one
    /// still in flight; [`Store::poll_snapshot`] finishes it.
    pub(super) fn start_snapshot(&mut self, n: &mut Node) -> Result<(), WorkerError> {
        if let Some(w) = self.snapshotter.wait() {
            self.finish_snapshot(n, w)?;
        }
        let mut body = self.snapshotter.buffer();
        n.core.snapshot(&mut body);
        let (end, index) = (self.journal.end_position(), n.core.journal_next());
        self.records_at_snapshot = index;
        self.snapshotter
            .submit(self.dir.root.clone(), end, index, body);
        Ok(())
    }

    /// Finishes the snapshot in flight if the thread has written it: true
    /// if one was.
    pub(super) fn poll_snapshot(&mut self, n: &mut Node) -> Result<bool, WorkerError> {
        match self.snapshotter.poll() {
            Some(w) => self.finish_snapshot(n, w).map(|()| true),
            None => Ok(false),
        }
    }

    /// A snapshot is durable: counted, logged, and the journal below the
    /// oldest snapshot kept dropped (only now: until it was durable, the
    /// older snapshots needed that journal).
    fn finish_snapshot(&mut self, n: &mut Node, w: Written) -> Result<(), WorkerError> {
        let oldest = w.result?;
        n.stats.snapshots += 1;
        tracing::info!(
            event = "snapshot",
            record = w.journal_index,
            position = w.journal_position,
            bytes = w.bytes,
            "snapshot written at journal record {} ({} bytes)",
            w.journal_index,
            w.bytes
        );
        if let Some(p) = oldest {
            self.journal
                .drop_below(p.min(self.journal.end_position()))?;
        }
        Ok(())
    }

    /// Appends a seal over the input records journaled since the last one
    /// (`audit = true`), and prints the chain head at most every 10 s (and
    /// with `last`, at a clean stop) so it can be kept elsewhere.
    pub(super) fn seal_audit(&mut self, last: bool) -> Result<(), WorkerError> {
        let Some(a) = self.audit.as_mut() else {
            return Ok(());
        };
        if let Some(seal) = a.seal()? {
            self.journal
                .append(RecordKind::Seal.code(), now_ns(), &seal.encode())?;
        }
        let head = a.head();
        let (due, new) = match self.audit_printed {
            None => (true, true),
            Some((t, h)) => (t.elapsed() >= Duration::from_secs(10), h != head),
        };
        if new && (due || last) && head != [0; 32] {
            self.audit_printed = Some((Instant::now(), head));
            tracing::info!(
                event = "audit_head",
                "audit: journal chain head {} at position {}",
                audit::hex(&head),
                self.journal.end_position()
            );
        }
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
