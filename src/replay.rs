//! `verity-replay`: re-runs a node's newest snapshot and its journal
//! offline through the same core and app, and compares every output frame
//! it regenerates with the one the node logged (DESIGN §8). The node's
//! behaviour is a pure function of (snapshot, journal), so a build of the
//! same app must reproduce its outputs bit for bit; a build with a changed
//! app shows the first output that differs ("replay yesterday's traffic
//! through today's code").
//!
//! Read only: the data directory is not locked or modified, so it may be a
//! copy, or a stopped node's.

use crate::registry::Registry;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::NodeToml;
use crate::core::{Effects, NodeCore};
use crate::log::{LogError, OfflineLog, OfflineReader, ScanEnd};
use crate::storage::datadir::{
    forward_log, newest_snapshot_in, snapshots_in, DataDirError, JOURNAL_LOG, OUTBOUND_LOG,
};
use crate::storage::RecordKind;
use verity_wire::frames::frames;
use verity_wire::{Header, HEADER_LEN};

/// What went wrong before any comparison could be made.
#[derive(Debug)]
pub enum ReplayError {
    Log(LogError),
    DataDir(DataDirError),
    /// The snapshot or journal cannot be replayed (named, with why).
    Unreplayable(String),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Log(e) => write!(f, "{e}"),
            ReplayError::DataDir(e) => write!(f, "{e}"),
            ReplayError::Unreplayable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ReplayError {}

impl From<LogError> for ReplayError {
    fn from(e: LogError) -> Self {
        ReplayError::Log(e)
    }
}

impl From<DataDirError> for ReplayError {
    fn from(e: DataDirError) -> Self {
        ReplayError::DataDir(e)
    }
}

/// The first frame that came out different.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The outbound log (`outbound`, `forward-N`).
    pub log: String,
    pub seq: u64,
    /// Journal index of the input that produced the regenerated frame.
    pub journal_index: u64,
    pub trace_id: u64,
    /// The logged frame's bytes (`None`: the log holds no frame there).
    pub recorded: Option<Vec<u8>>,
    /// The regenerated frame's bytes (`None`: replay produced none).
    pub replayed: Option<Vec<u8>>,
}

/// Per outbound log: how its frames compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutCompare {
    pub log: String,
    /// Frames replay produced for this log.
    pub regenerated: u64,
    /// Of those, compared with a logged frame: identical and different.
    pub identical: u64,
    pub different: u64,
    /// Regenerated below the log's first retained seq (ACKed and dropped).
    pub not_retained: u64,
    /// Regenerated past the log's last frame (the node stopped between
    /// journaling an input and logging its outputs).
    pub not_logged: u64,
    /// Logged frames replay did not produce.
    pub missing: u64,
    /// How the reading of the log ended.
    pub scan: Option<ScanEnd>,
}

#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub data_dir: PathBuf,
    pub app: String,
    /// (snapshot path, journal index) or `None` (from the journal's start).
    pub snapshot: Option<(PathBuf, u64)>,
    pub skipped_snapshots: Vec<String>,
    pub journal: Option<ScanEnd>,
    pub replayed: u64,
    pub dead_letters: u64,
    pub outs: Vec<OutCompare>,
    pub first_difference: Option<Difference>,
}

impl ReplayReport {
    /// A log (the journal or an outbound log) holds an invalid record before
    /// its end: what follows it was neither replayed nor compared.
    pub fn damaged(&self) -> bool {
        self.journal
            .iter()
            .chain(self.outs.iter().filter_map(|o| o.scan.as_ref()))
            .any(|s| s.stopped_at.is_some())
    }

    /// Every compared frame identical, nothing logged that replay did not
    /// produce, and every log read to its end.
    pub fn identical(&self) -> bool {
        self.first_difference.is_none() && !self.damaged()
    }

    /// The report as one JSON object (`--json`, tools/FORMATS.md).
    pub fn to_json(&self) -> String {
        use verity_wire::json::Obj;
        let result = match (&self.first_difference, self.damaged()) {
            (Some(_), _) => "different",
            (None, true) => "damaged",
            (None, false) => "identical",
        };
        let mut o = Obj::new()
            .str("replay", result)
            .str("data_dir", &self.data_dir.display().to_string())
            .str("app", &self.app)
            .strs("skipped_snapshots", &self.skipped_snapshots);
        if let Some((p, i)) = &self.snapshot {
            o = o
                .str("snapshot", &p.display().to_string())
                .int("snapshot_record", *i);
        }
        if let Some(j) = &self.journal {
            o = o
                .int("journal_records", j.records)
                .int("journal_end", j.end);
            if let Some((p, why)) = j.stopped_at {
                o = o
                    .int("journal_stopped_at", p)
                    .str("journal_stopped_because", why);
            }
        }
        let outs: Vec<String> = self
            .outs
            .iter()
            .map(|c| {
                Obj::new()
                    .str("log", &c.log)
                    .int("regenerated", c.regenerated)
                    .int("identical", c.identical)
                    .int("different", c.different)
                    .int("not_retained", c.not_retained)
                    .int("not_logged", c.not_logged)
                    .int("missing", c.missing)
                    .build()
            })
            .collect();
        o = o
            .int("replayed", self.replayed)
            .int("dead_letters", self.dead_letters)
            .raw("outs", &format!("[{}]", outs.join(",")));
        if let Some(d) = &self.first_difference {
            o = o.raw(
                "first_difference",
                &Obj::new()
                    .str("log", &d.log)
                    .int("seq", d.seq)
                    .int("journal_index", d.journal_index)
                    .int("trace_id", d.trace_id)
                    .build(),
            );
        }
        o.build()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replay: data dir {}, app {}",
            self.data_dir.display(),
            self.app
        )?;
        for s in &self.skipped_snapshots {
            writeln!(f, "replay: skipped an invalid snapshot: {s}")?;
        }
        match &self.snapshot {
            Some((p, i)) => writeln!(f, "replay: snapshot {} (journal record {i})", p.display())?,
            None => writeln!(f, "replay: no snapshot: from the journal's first record")?,
        }
        if let Some(j) = &self.journal {
            write!(
                f,
                "replay: journal: {} records replayed ({} inputs), ends at position {}",
                j.records, self.replayed, j.end
            )?;
            match j.stopped_at {
                Some((p, why)) => writeln!(f, "; stopped at an invalid record at {p}: {why}")?,
                None => writeln!(f)?,
            }
        }
        writeln!(f, "replay: dead letters regenerated: {}", self.dead_letters)?;
        for o in &self.outs {
            write!(
                f,
                "replay: {}: {} frames regenerated; {} identical, {} different, {} no longer retained, {} not yet logged, {} logged but not regenerated",
                o.log, o.regenerated, o.identical, o.different, o.not_retained, o.not_logged, o.missing
            )?;
            match o.scan.as_ref().and_then(|s| s.stopped_at) {
                Some((p, why)) => writeln!(f, " (log stopped at {p}: {why})")?,
                None => writeln!(f)?,
            }
        }
        match &self.first_difference {
            None if self.damaged() => write!(
                f,
                "replay: DAMAGED: a log holds an invalid record before its end (above); what follows it was not compared"
            ),
            None => write!(f, "replay: IDENTICAL"),
            Some(d) => {
                writeln!(
                    f,
                    "replay: first difference: {} seq {} (trace id {:#x}, journal record {})",
                    d.log, d.seq, d.trace_id, d.journal_index
                )?;
                writeln!(f, "replay:   logged:     {}", frame_text(d.recorded.as_deref()))?;
                writeln!(f, "replay:   regenerated: {}", frame_text(d.replayed.as_deref()))?;
                write!(f, "replay: DIFFERENT")
            }
        }
    }
}

/// A frame's payload as hex (its first 64 bytes), or "none".
fn frame_text(frame: Option<&[u8]>) -> String {
    match frame {
        None => "none".into(),
        Some(b) => {
            let payload = b.get(HEADER_LEN..).unwrap_or(&[]);
            let len = Header::peek(b).map_or(0, Header::frame_len);
            let shown: String = payload
                .iter()
                .take((len as usize).saturating_sub(HEADER_LEN).min(64))
                .map(|x| format!("{x:02x}"))
                .collect();
            format!("frame_len {len}, payload {shown}")
        }
    }
}

/// A frame's seq and bytes.
type SeqFrame = (u64, Vec<u8>);

/// The logged frames of one outbound log, read in seq order.
struct Recorded<'a> {
    compare: OutCompare,
    reader: OfflineReader<'a>,
    /// The current record's frames (read into one buffer, reused from
    /// record to record: no allocation per frame).
    record: Vec<u8>,
    /// Frames of the current record not yet compared: (seq, start, len) in
    /// `record`.
    pending: VecDeque<(u64, usize, usize)>,
    exhausted: bool,
    /// The seq the replayed core gives its next frame on this log's channel
    /// (from the snapshot, 1 without one): logged frames below it came
    /// from inputs before the snapshot; from it on, every logged frame must
    /// be regenerated.
    first_regenerated: u64,
    /// The log's first frame's seq, read before any comparison: a
    /// regenerated frame below it was ACKed and dropped.
    first_logged: Option<u64>,
    /// The first logged frame replay did not produce: (seq, bytes).
    first_missing: Option<SeqFrame>,
}

impl Recorded<'_> {
    /// Compares the regenerated `frame` (seq `seq`) with the logged frame
    /// of that seq, skipping (and counting as missing) logged frames below
    /// it: `Ok(None)` when identical, else `Ok(Some(logged bytes, if the
    /// log has that seq))`. Only a difference copies bytes.
    fn differs(&mut self, seq: u64, frame: &[u8]) -> Result<Option<Option<Vec<u8>>>, ReplayError> {
        loop {
            while let Some(&(s, start, len)) = self.pending.front() {
                if s > seq {
                    return Ok(Some(None));
                }
                self.pending.pop_front();
                let logged = &self.record[start..start + len];
                if s == seq {
                    return Ok((logged != frame).then(|| Some(logged.to_vec())));
                }
                self.skipped(s, start, len);
            }
            if !self.read_more()? {
                return Ok(Some(None));
            }
        }
    }

    /// Reads the log's next record into `pending`; `false` once the log
    /// is exhausted.
    fn read_more(&mut self) -> Result<bool, ReplayError> {
        if self.exhausted {
            return Ok(false);
        }
        match self.reader.next_record()? {
            None => {
                self.exhausted = true;
                self.compare.scan = Some(self.reader.end());
                Ok(false)
            }
            Some(r) => {
                // Called only once every pending frame was taken.
                self.record.clear();
                self.record.extend_from_slice(r.payload);
                for f in frames(&self.record) {
                    self.pending.push_back((f.seq, f.offset, f.bytes.len()));
                }
                Ok(true)
            }
        }
    }

    /// A logged frame (at `start`, `len` bytes of the record) no
    /// regenerated frame matched.
    fn skipped(&mut self, seq: u64, start: usize, len: usize) {
        if seq >= self.first_regenerated {
            self.compare.missing += 1;
            if self.first_missing.is_none() {
                self.first_missing = Some((seq, self.record[start..start + len].to_vec()));
            }
        }
    }

    /// The seq of the first logged frame still unread.
    fn first_seq(&mut self) -> Result<Option<u64>, ReplayError> {
        while self.pending.is_empty() && self.read_more()? {}
        Ok(self.pending.front().map(|p| p.0))
    }

    /// Counts what is left in the log after the last regenerated frame.
    fn finish(mut self) -> Result<(OutCompare, Option<SeqFrame>), ReplayError> {
        loop {
            while let Some((s, start, len)) = self.pending.pop_front() {
                self.skipped(s, start, len);
            }
            if !self.read_more()? {
                break;
            }
        }
        if self.compare.scan.is_none() {
            self.compare.scan = Some(self.reader.end());
        }
        Ok((self.compare, self.first_missing))
    }
}

/// Where the replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// As far back as the directory allows: the journal's first record when
    /// it was never trimmed (the app's empty state), else the oldest valid
    /// snapshot the journal still reaches.
    #[default]
    Earliest,
    /// The newest valid snapshot (what recovery uses).
    Newest,
}

/// A core of `cfg`'s app in the state `start` names (a restored snapshot,
/// or the app's empty state when the journal was never trimmed), and the
/// journal position to replay from; notes the snapshot in `report`.
fn start_core(
    dir: &Path,
    cfg: &NodeToml,
    start: Start,
    journal: &OfflineLog,
    report: &mut ReplayReport,
) -> Result<(NodeCore, u64), ReplayError> {
    let mut core = NodeCore::new(cfg.app.build(), cfg.node_config());
    let snapshot = match start {
        Start::Newest => newest_snapshot_in(dir, &mut report.skipped_snapshots)?,
        Start::Earliest if journal.first_position() == 0 => None,
        Start::Earliest => snapshots_in(dir, &mut report.skipped_snapshots)?
            .into_iter()
            .find(|s| s.journal_position >= journal.first_position()),
    };
    let from = match &snapshot {
        Some(s) => {
            core.restore(&s.body).map_err(|e| {
                ReplayError::Unreplayable(format!("{}: cannot restore: {e}", s.path.display()))
            })?;
            report.snapshot = Some((s.path.clone(), s.journal_index));
            s.journal_position
        }
        None => {
            if journal.first_position() > 0 {
                return Err(ReplayError::Unreplayable(format!(
                    "{}: the journal starts at position {} and there is no valid snapshot: the state before it is gone",
                    journal.dir().display(),
                    journal.first_position()
                )));
            }
            0
        }
    };
    Ok((core, from))
}

/// The generic oracle's view of a data directory
/// ([`crate::oracle::regenerate`]): its journal re-run from the earliest
/// state it still has, and the sink outputs that regenerates.
pub fn regenerate_dir(dir: &Path, cfg: &NodeToml) -> Result<Regenerated, ReplayError> {
    let mut report = ReplayReport::default();
    let journal = OfflineLog::open(&dir.join(JOURNAL_LOG))?;
    let (core, from) = start_core(dir, cfg, Start::Earliest, &journal, &mut report)?;
    let mut reader = journal.reader(from);
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    while let Some(rec) = reader.next_record()? {
        if rec.kind == RecordKind::Input.code() {
            records.push((rec.timestamp, rec.payload.to_vec()));
        }
    }
    let end = reader.end();
    if let Some((p, why)) = end.stopped_at {
        return Err(ReplayError::Unreplayable(format!(
            "{}: an invalid record at {p}: {why}",
            journal.dir().display()
        )));
    }
    regenerate(core, records.iter().map(|(t, r)| (*t, r.as_slice())))
        .map_err(|e| ReplayError::Unreplayable(format!("{}: {e}", dir.display())))
}

/// Replays the data directory `dir` as the node `cfg` describes (its app,
/// node id, routing and limits; its own `data_dir` is not used).
pub fn replay_dir(dir: &Path, cfg: &NodeToml, start: Start) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport {
        data_dir: dir.to_path_buf(),
        app: cfg.app.name().to_owned(),
        ..ReplayReport::default()
    };
    let journal = OfflineLog::open(&dir.join(JOURNAL_LOG))?;
    let (mut core, from) = start_core(dir, cfg, start, &journal, &mut report)?;

    // One logged-frame reader per outbound log: the sink's, then each
    // other node's forwarding log that exists.
    let mut out_logs: Vec<(usize, OfflineLog)> = Vec::new();
    // Every node has them (the worker creates them at its first start): one
    // missing is a damaged or incomplete copy, not nothing to compare.
    let mut wanted = vec![(0, dir.join(OUTBOUND_LOG))];
    for j in (0..core.nodes()).filter(|&j| j != core.node()) {
        wanted.push((1 + j as usize, dir.join(forward_log(j))));
    }
    for (k, d) in wanted {
        if !d.is_dir() {
            return Err(ReplayError::Unreplayable(format!(
                "{}: missing: every node keeps this outbound log",
                d.display()
            )));
        }
        out_logs.push((k, OfflineLog::open(&d)?));
    }
    let mut recorded: Vec<(usize, Recorded<'_>)> = out_logs
        .iter()
        .map(|(k, log)| {
            let name = log
                .dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                *k,
                Recorded {
                    compare: OutCompare {
                        log: name,
                        ..OutCompare::default()
                    },
                    reader: log.reader(log.first_position()),
                    record: Vec::new(),
                    pending: VecDeque::new(),
                    exhausted: false,
                    first_regenerated: match k {
                        0 => core.out().next_seq,
                        _ => core.peer_out(*k as u32 - 1).map_or(1, |o| o.next_seq),
                    },
                    first_logged: None,
                    first_missing: None,
                },
            )
        })
        .collect();
    for (_, r) in recorded.iter_mut() {
        r.first_logged = r.first_seq()?;
    }

    let mut fx = Effects::default();
    let mut reader = journal.reader(from);
    let mut next_index = core.journal_next();
    // Per input of the current record: its journal index, and the bytes of
    // each output log's frames after it (`logs` a row): which input
    // produced which regenerated frame. Reused from record to record.
    let logs = 1 + core.nodes() as usize;
    let mut marks: Vec<(u64, usize)> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    while let Some(rec) = reader.next_record()? {
        if rec.kind != RecordKind::Input.code() {
            continue;
        }
        fx.clear();
        marks.clear();
        ends.clear();
        let replayed = core
            .replay_record(rec.payload, rec.timestamp, &mut fx, |index, fx| {
                marks.push((index, ends.len()));
                ends.push(fx.outbound.len());
                ends.extend((1..logs).map(|k| fx.to_peers.get(k - 1).map_or(0, |o| o.frames.len())));
            })
            .map_err(|e| {
                ReplayError::Unreplayable(format!(
                    "journal record at position {} (input {}): app {} took no input from it (a channel it has no source for, or a seq that does not follow the snapshot's watermark): the journal does not match the app or the snapshot",
                    rec.position, e.index, cfg.app
                ))
            })?;
        next_index = core.journal_next();
        report.replayed += replayed;
        report.dead_letters += fx.dead_letters.len() as u64;
        let input_of = |k: usize, at: usize| {
            marks
                .iter()
                .find(|&&(_, row)| ends.get(row + k).is_some_and(|&end| at < end))
                .map_or(next_index.saturating_sub(1), |m| m.0)
        };
        let mut outputs: Vec<(usize, &[u8])> = vec![(0, &fx.outbound[..])];
        for (j, o) in fx.to_peers.iter().enumerate() {
            outputs.push((1 + j, &o.frames[..]));
        }
        for (k, run) in outputs {
            let Some((_, r)) = recorded.iter_mut().find(|(kk, _)| *kk == k) else {
                continue;
            };
            for f in frames(run) {
                let (seq, at, frame) = (f.seq, f.offset, f.bytes);
                r.compare.regenerated += 1;
                if r.first_logged.is_some_and(|first| seq < first) {
                    r.compare.not_retained += 1;
                    continue;
                }
                let recorded = match r.differs(seq, frame)? {
                    None => {
                        r.compare.identical += 1;
                        continue;
                    }
                    Some(None) if r.exhausted => {
                        r.compare.not_logged += 1;
                        continue;
                    }
                    // Different bytes, or a hole in the log where replay
                    // produced a frame.
                    Some(other) => other,
                };
                r.compare.different += 1;
                report.first_difference.get_or_insert_with(|| Difference {
                    log: r.compare.log.clone(),
                    seq,
                    journal_index: input_of(k, at),
                    trace_id: trace_of(frame),
                    recorded,
                    replayed: Some(frame.to_vec()),
                });
            }
        }
    }
    report.journal = Some(reader.end());
    for (_, r) in recorded {
        let (c, missing) = r.finish()?;
        if let Some((seq, bytes)) = missing {
            report.first_difference.get_or_insert_with(|| Difference {
                log: c.log.clone(),
                seq,
                journal_index: next_index,
                trace_id: trace_of(&bytes),
                recorded: Some(bytes),
                replayed: None,
            });
        }
        report.outs.push(c);
    }
    Ok(report)
}

fn trace_of(frame: &[u8]) -> u64 {
    Header::peek(frame).map_or(0, Header::trace_id)
}

/// `verity-replay` / `verity replay`: which node to replay.
///
/// - `--config node.toml`
/// - `--config cluster.toml --name w2 [--shard 1]`
/// - `--data-dir DIR --app market-spread` (a single node with default
///   settings)
///
/// `--data-dir` also replays a copy of a node's directory under its config.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Exit status: 0 IDENTICAL; 1 DIFFERENT or DAMAGED; 2 bad arguments, configuration or files."
)]
pub struct ReplayArgs {
    /// The node's node.toml, or cluster.toml with --name.
    #[arg(long, required_unless_present = "app")]
    pub config: Option<PathBuf>,
    /// The worker of cluster.toml whose node to replay.
    #[arg(long, requires = "config")]
    pub name: Option<String>,
    /// The worker's shard (with shards > 1).
    #[arg(long, default_value_t = 0, requires = "name")]
    pub shard: usize,
    /// The data directory to replay (default: the configuration's).
    #[arg(long, required_unless_present = "config")]
    pub data_dir: Option<PathBuf>,
    /// The app, for a single node without a configuration file.
    #[arg(long, conflicts_with = "config", requires = "data_dir")]
    pub app: Option<String>,
    /// Start from the newest snapshot (as recovery does) instead of as far
    /// back as the journal reaches.
    #[arg(long)]
    pub newest: bool,
    /// Print the report as one JSON object (tools/FORMATS.md).
    #[arg(long)]
    pub json: bool,
}

/// Runs the command; prints the report (stdout) or the error (stderr).
/// Returns the exit code: 0 identical, 1 different or damaged, 2 bad
/// arguments, configuration or files.
pub fn main_with(a: &ReplayArgs, me: &str, apps: &Registry) -> u8 {
    use crate::config::ClusterToml;
    use crate::config::ConfigError;
    let cfg = match (&a.config, &a.name, &a.app, &a.data_dir) {
        (Some(path), None, _, _) => match crate::config::cluster_without_name(path, apps) {
            Some(e) => Err(e),
            None => NodeToml::load(path, apps),
        },
        (Some(path), Some(name), _, _) => ClusterToml::load(path, apps)
            .and_then(|c| c.node_tomls(name, path))
            .and_then(|mut nodes| {
                if a.shard < nodes.len() {
                    Ok(nodes.swap_remove(a.shard))
                } else {
                    Err(ConfigError {
                        file: path.clone(),
                        key: "--shard".into(),
                        message: format!("worker {name} has {} shard(s)", nodes.len()),
                    })
                }
            }),
        (None, _, Some(app), Some(dir)) => NodeToml::parse(
            &format!(
                "[node]\napp = {app:?}\ndata_dir = {:?}\nlisten = \"127.0.0.1:1\"\nsink = \"127.0.0.1:1\"\n",
                dir.display().to_string()
            ),
            Path::new("--app"),
            apps,
        ),
        _ => {
            eprintln!("{me}: give --config, or --data-dir with --app");
            return 2;
        }
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{me}: bad configuration: {e}");
            return 2;
        }
    };
    let dir = a.data_dir.clone().unwrap_or_else(|| cfg.data_dir.clone());
    if !dir.is_dir() {
        eprintln!("{me}: {}: not a directory", dir.display());
        return 2;
    }
    let start = if a.newest {
        Start::Newest
    } else {
        Start::Earliest
    };
    match replay_dir(&dir, &cfg, start) {
        Ok(report) => {
            match a.json {
                true => println!("{}", report.to_json()),
                false => println!("{report}"),
            }
            if report.identical() {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("{me}: {e}");
            2
        }
    }
}

/// One output frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub seq: u64,
    pub trace_id: u64,
    pub payload: Vec<u8>,
}

/// What replaying one node's journal regenerated.
#[derive(Debug, Clone, Default)]
pub struct Regenerated {
    /// The node's sink channel.
    pub channel: u32,
    /// Seq of the first regenerated output (1 from the empty state).
    pub first_seq: u64,
    /// The regenerated sink outputs, in seq order.
    pub outputs: Vec<Output>,
    /// Per source channel this node journaled: (channel, delivered when
    /// the replay started, delivered at its end).
    pub sources: Vec<(u32, u64, u64)>,
    /// Journal records the replay started after (0: from the start).
    pub from_record: u64,
}

/// Replays `journal` ((timestamp ns, run of frames) per record, in order)
/// through `core` from the state it has (fresh, or a restored snapshot),
/// collecting its sink outputs.
pub fn regenerate<'a>(
    mut core: NodeCore,
    journal: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<Regenerated, String> {
    let channel = core.out().id;
    let first_seq = core.out().next_seq;
    let from_record = core.journal_next();
    let before: BTreeMap<u32, u64> = core.inputs().iter().map(|c| (c.id, c.delivered)).collect();
    let mut outputs = Vec::new();
    let mut fx = Effects::default();
    for (timestamp_ns, run) in journal {
        fx.clear();
        core.replay_record(run, timestamp_ns, &mut fx, |_, _| {})
            .map_err(|e| {
                format!(
                    "journal input {} of node channel {channel}: the core took no input from it (its seq does not follow on: a gap or a repeat)",
                    e.index
                )
            })?;
        for f in frames(&fx.outbound) {
            outputs.push(Output {
                seq: f.seq,
                trace_id: f.header.trace_id(),
                payload: f.payload().to_vec(),
            });
        }
    }
    let sources = core
        .inputs()
        .iter()
        .map(|c| (c.id, before.get(&c.id).copied().unwrap_or(0), c.delivered))
        .filter(|&(_, from, to)| to > 0 || from > 0)
        .collect();
    Ok(Regenerated {
        channel,
        first_seq,
        outputs,
        sources,
        from_record,
    })
}
