//! `verity-logdump`: what a node's logs hold, read in place without opening
//! them for writing (`log::OfflineLog`): per log its segments, records,
//! frames per channel (seq range, gaps), time range and where the scan
//! ended; with `--records` / `--frames` every record or frame.
//!
//! The journal and the outbound logs (`outbound`, `forward-N`) hold runs of
//! wire frames (each frame's CRC is checked again here); `dead-letters`
//! holds one record per rejected input: journal index, channel, seq, trace
//! id and reason. A journal with audit seals (`audit = true`) has its hash
//! chain checked (`storage::audit::verify`). The formats: `crate::storage`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::log::{LogError, OfflineLog, OfflineRecord};
use crate::storage::audit::{hex, verify, AuditCheck, Seal};
use crate::storage::datadir::JOURNAL_LOG;
use crate::storage::{DeadLetterRecord, RecordKind};
use verity_wire::{parse, MAX_FRAME_LEN_LIMIT};

/// What to print besides the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Detail {
    #[default]
    Summary,
    Records,
    Frames,
}

#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    pub detail: Detail,
    /// First position to read (default: the log's first record).
    pub from: Option<u64>,
    /// At most this many records (then the summary covers those).
    pub limit: Option<u64>,
    /// Only frames of this channel (with `Detail::Frames`).
    pub channel: Option<u32>,
    /// The journal must carry audit seals (the node runs with `audit =
    /// true`): a journal with input records and none is reported damaged
    /// (someone may have removed them all).
    pub expect_audit: bool,
    /// Detail lines as JSON objects (`--json`, tools/FORMATS.md).
    pub json: bool,
    /// Only the last this many of what is printed (`--tail N`).
    pub tail: Option<u64>,
    /// With `Detail::Frames`, text: every payload as a `hexdump -C` block
    /// under its frame's line (`--hexdump`).
    pub hexdump: bool,
}

/// Per channel: frames seen, first and last seq, seqs that did not follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelSummary {
    pub frames: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub gaps: u64,
}

/// One log's summary.
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub name: String,
    pub segments: usize,
    pub records: u64,
    pub frames: u64,
    pub bad_frames: u64,
    pub dead_letters: u64,
    pub channels: BTreeMap<u32, ChannelSummary>,
    pub first_position: u64,
    pub end: u64,
    /// Smallest and largest record timestamp (ns since the Unix epoch; the
    /// journal's clock readings).
    pub time_ns: Option<(u64, u64)>,
    pub stopped_at: Option<(u64, &'static str)>,
    /// Audit seals in the log, and the check of their chain.
    pub seals: u64,
    pub audit: Option<AuditCheck>,
}

impl LogSummary {
    /// The summary as one JSON object (`--json`, tools/FORMATS.md).
    pub fn to_json(&self) -> String {
        use verity_wire::json::Obj;
        let mut o = Obj::new()
            .str("summary", &self.name)
            .int("segments", self.segments as u64)
            .int("records", self.records)
            .int("frames", self.frames)
            .int("bad_frames", self.bad_frames)
            .int("dead_letters", self.dead_letters)
            .int("first_position", self.first_position)
            .int("end", self.end)
            .bool("damaged", self.damaged());
        if let Some((a, b)) = self.time_ns {
            o = o.int("first_time_ns", a).int("last_time_ns", b);
        }
        if let Some((p, why)) = self.stopped_at {
            o = o.int("stopped_at", p).str("stopped_because", why);
        }
        if let Some(a) = &self.audit {
            o = o.str("audit", &a.to_string());
        }
        let channels: Vec<String> = self
            .channels
            .iter()
            .map(|(c, s)| {
                Obj::new()
                    .int("channel", *c as u64)
                    .int("frames", s.frames)
                    .int("first_seq", s.first_seq)
                    .int("last_seq", s.last_seq)
                    .int("gaps", s.gaps)
                    .build()
            })
            .collect();
        o.raw("channels", &format!("[{}]", channels.join(",")))
            .build()
    }

    pub fn damaged(&self) -> bool {
        self.stopped_at.is_some()
            || self.bad_frames > 0
            || self.audit.as_ref().is_some_and(|a| a.broken.is_some())
    }
}

impl std::fmt::Display for LogSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} segment(s), {} records, positions {}..{}",
            self.name, self.segments, self.records, self.first_position, self.end
        )?;
        if self.frames > 0 || self.bad_frames > 0 {
            write!(f, ", {} frames", self.frames)?;
        }
        if self.bad_frames > 0 {
            write!(f, ", {} BAD frames", self.bad_frames)?;
        }
        if self.dead_letters > 0 {
            write!(f, ", {} dead letters", self.dead_letters)?;
        }
        // A log with no clock readings (all 0) shows none.
        if let Some((a, b)) = self.time_ns.filter(|t| t.1 > 0) {
            write!(
                f,
                ", clock {}..{} ({:.3} s)",
                verity_wire::time::rfc3339_ns(a),
                verity_wire::time::rfc3339_ns(b),
                (b - a) as f64 / 1e9
            )?;
        }
        match self.stopped_at {
            Some((p, why)) => write!(f, "; STOPPED at an invalid record at {p}: {why}")?,
            None => write!(f, "; read to its end")?,
        }
        if let Some(a) = &self.audit {
            write!(f, "\n  {a}")?;
        }
        for (c, s) in &self.channels {
            write!(
                f,
                "\n  channel {c}: {} frames, seq {}..={}",
                s.frames, s.first_seq, s.last_seq
            )?;
            if s.gaps > 0 {
                write!(
                    f,
                    ", {} place(s) where a seq did not follow the previous",
                    s.gaps
                )?;
            }
        }
        Ok(())
    }
}

/// The logs of a data directory (`journal`, `outbound`, `forward-N`,
/// `dead-letters`), or `dir` itself when it is one log's directory.
pub fn log_dirs(dir: &Path) -> Vec<PathBuf> {
    let is_log = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|mut it| {
            it.any(|e| {
                e.is_ok_and(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| crate::log::format::parse_segment_file_name(n).is_some())
                })
            })
        })
    };
    if is_log(dir) {
        return vec![dir.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir() && is_log(p))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Why a log could not be dumped.
#[derive(Debug)]
pub enum DumpError {
    /// The log cannot be opened or read (a damaged segment header, a gap
    /// between segments, an I/O error).
    Log(LogError),
    /// `--from` names a position inside a record.
    NotABoundary {
        log: PathBuf,
        from: u64,
        /// The records around it start here (`None`: the log's end).
        before: u64,
        after: Option<u64>,
    },
}

impl From<LogError> for DumpError {
    fn from(e: LogError) -> Self {
        DumpError::Log(e)
    }
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::Log(e) => write!(f, "{e}"),
            DumpError::NotABoundary {
                log,
                from,
                before,
                after,
            } => {
                write!(
                    f,
                    "{}: --from {from} is not a record boundary: the records around it start at {before} and ",
                    log.display()
                )?;
                match after {
                    Some(a) => write!(f, "{a}"),
                    None => f.write_str("the log's end"),
                }
            }
        }
    }
}

impl std::error::Error for DumpError {}

/// Checks that `from` is where a record of `log` starts (or the log's end).
fn check_boundary(log: &OfflineLog, dir: &Path, from: u64) -> Result<(), DumpError> {
    if from < log.first_position() {
        // Dropped already (below the oldest segment kept).
        return Err(DumpError::NotABoundary {
            log: dir.to_path_buf(),
            from,
            before: 0,
            after: Some(log.first_position()),
        });
    }
    let mut reader = log.reader(log.first_position());
    let mut before = log.first_position();
    loop {
        let at = reader.next_record()?.map(|r| r.position);
        match at {
            Some(p) if p < from => before = p,
            Some(p) if p == from => return Ok(()),
            Some(p) => {
                return Err(DumpError::NotABoundary {
                    log: dir.to_path_buf(),
                    from,
                    before,
                    after: Some(p),
                })
            }
            None if reader.end().end == from => return Ok(()),
            None => {
                return Err(DumpError::NotABoundary {
                    log: dir.to_path_buf(),
                    from,
                    before,
                    after: None,
                })
            }
        }
    }
}

/// Reads one log; detail lines go to `out` as they are produced. `--limit`
/// counts what is printed: records with `Detail::Records` and
/// `Detail::Summary`, frame lines with `Detail::Frames`; `--tail N` prints
/// only the last N of those (the summary still covers every record read).
pub fn dump(
    dir: &Path,
    opts: &DumpOptions,
    out: &mut dyn std::io::Write,
) -> Result<LogSummary, DumpError> {
    let log = OfflineLog::open(dir)?;
    if let Some(p) = opts.from {
        check_boundary(&log, dir, p)?;
    }
    let from = opts.from.unwrap_or(log.first_position());
    let skip = match opts.tail {
        // A first pass counts what would be printed.
        Some(n) => {
            let mut sink = std::io::sink();
            let mut count = Walk::new(&log, opts, &mut sink, u64::MAX);
            count.records(from)?;
            count.seen.saturating_sub(n)
        }
        None => 0,
    };
    let mut walk = Walk::new(&log, opts, out, skip);
    walk.records(from)?;
    let mut s = walk.s;
    let whole = opts.from.is_none() && opts.limit.is_none();
    if s.seals > 0 && whole {
        s.audit = Some(verify(
            log.reader(log.first_position()),
            log.first_position(),
        )?);
    } else if opts.expect_audit && whole && s.name == JOURNAL_LOG && s.frames > 0 {
        s.audit = Some(AuditCheck {
            broken: Some((
                s.first_position,
                "no audit seals, and --expect-audit says there must be (removed?)".into(),
            )),
            ..AuditCheck::default()
        });
    }
    Ok(s)
}

/// How `follow` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnd {
    /// `stop` said so.
    Stopped,
    /// `--limit` lines were printed.
    Limit,
}

/// `--follow`: prints what is appended to the log at `dir` after position
/// `end` (a record boundary: where [`dump`] stopped), polling every `poll`,
/// until `stop()` is true or `--limit` lines are printed. A record that is
/// not whole yet at the log's end is waited for, not reported; segments the
/// node drops (after a snapshot) or adds are picked up at each poll.
pub fn follow(
    dir: &Path,
    opts: &DumpOptions,
    mut end: u64,
    out: &mut dyn std::io::Write,
    poll: std::time::Duration,
    stop: &dyn Fn() -> bool,
) -> Result<FollowEnd, DumpError> {
    let mut printed = 0u64;
    loop {
        if stop() {
            return Ok(FollowEnd::Stopped);
        }
        let log = OfflineLog::open(dir)?;
        // Dropped below `end` while we waited: on from the oldest kept.
        end = end.max(log.first_position());
        let o = DumpOptions {
            limit: opts.limit.map(|l| l - printed),
            ..opts.clone()
        };
        let mut walk = Walk::new(&log, &o, &mut *out, 0);
        match walk.records(end) {
            Ok(()) => {}
            // A segment removed or renamed between listing and reading.
            Err(LogError::Io { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        printed += walk.printed;
        end = walk.s.end.max(end);
        let _ = out.flush();
        if opts.limit.is_some_and(|l| printed >= l) {
            return Ok(FollowEnd::Limit);
        }
        std::thread::sleep(poll);
    }
}

/// One pass over a log's records from a position: the summary it builds
/// and the lines it prints (after `skip` printable items, at most
/// `opts.limit`).
struct Walk<'a> {
    log: &'a OfflineLog,
    opts: &'a DumpOptions,
    out: &'a mut dyn std::io::Write,
    s: LogSummary,
    /// Items (records, or frames with `--frames`) passed over unprinted
    /// first (`--tail`), items seen, items printed.
    skip: u64,
    seen: u64,
    printed: u64,
    line: String,
}

impl<'a> Walk<'a> {
    fn new(
        log: &'a OfflineLog,
        opts: &'a DumpOptions,
        out: &'a mut dyn std::io::Write,
        skip: u64,
    ) -> Walk<'a> {
        let name = log
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Walk {
            log,
            opts,
            out,
            s: LogSummary {
                name,
                segments: log.segments().len(),
                first_position: log.first_position(),
                ..LogSummary::default()
            },
            skip,
            seen: 0,
            printed: 0,
            line: String::new(),
        }
    }

    fn full(&self) -> bool {
        self.opts.limit.is_some_and(|l| self.printed >= l)
    }

    /// One more item: whether to print it (past `skip`, within the limit).
    fn take(&mut self) -> bool {
        self.seen += 1;
        let print = self.seen > self.skip && !self.full();
        self.printed += print as u64;
        print
    }

    /// Whether lines are being printed (past `skip`): seals and dead
    /// letters among frames show from there on.
    fn printing(&self) -> bool {
        self.opts.detail != Detail::Summary && self.seen >= self.skip && !self.full()
    }

    fn records(&mut self, from: u64) -> Result<(), LogError> {
        let log = self.log;
        let mut reader = log.reader(from);
        while !self.full() {
            let Some(r) = reader.next_record()? else {
                break;
            };
            self.record(&r);
        }
        let end = reader.end();
        self.s.end = end.end;
        self.s.stopped_at = end.stopped_at;
        Ok(())
    }

    fn record(&mut self, r: &OfflineRecord<'_>) {
        self.s.records += 1;
        self.s.time_ns = Some(match self.s.time_ns {
            None => (r.timestamp, r.timestamp),
            Some((a, b)) => (a.min(r.timestamp), b.max(r.timestamp)),
        });
        let kind = RecordKind::from_code(r.kind);
        let print = match self.opts.detail {
            Detail::Frames => self.printing(),
            _ => self.take() && self.opts.detail == Detail::Records,
        };
        let kind_name = kind.map_or("other", RecordKind::name);
        if print {
            self.line.clear();
            let _ = write!(
                self.line,
                "{} @{} kind={kind_name} clock={} bytes={}",
                self.s.name,
                r.position,
                verity_wire::time::rfc3339_ns(r.timestamp),
                r.payload.len()
            );
        }
        match kind {
            Some(RecordKind::Seal) => {
                self.s.seals += 1;
                if print {
                    self.seal(r, kind_name);
                }
            }
            Some(RecordKind::DeadLetter) => {
                self.s.dead_letters += 1;
                if print {
                    self.dead_letter(r, kind_name);
                }
            }
            _ => {
                let (n, seqs) = self.frames(r, kind_name);
                if print && self.opts.detail == Detail::Records {
                    self.frames_line(r, kind_name, n, seqs);
                }
            }
        }
    }

    fn record_json(&self, r: &OfflineRecord<'_>, kind_name: &str) -> verity_wire::json::Obj {
        verity_wire::json::Obj::new()
            .str("log", &self.s.name)
            .int("position", r.position)
            .str("kind", kind_name)
            .int("time_ns", r.timestamp)
            .int("bytes", r.payload.len() as u64)
    }

    fn seal(&mut self, r: &OfflineRecord<'_>, kind_name: &str) {
        if self.opts.json {
            let o = match Seal::decode(r.payload) {
                Some(seal) => self
                    .record_json(r, kind_name)
                    .int("seal_records", seal.records)
                    .int("seal_first", seal.first)
                    .int("seal_end", seal.end)
                    .str("chain", &hex(&seal.chain)),
                None => self
                    .record_json(r, kind_name)
                    .str("error", "audit seal of the wrong size"),
            };
            let _ = writeln!(self.out, "{}", o.build());
            return;
        }
        match Seal::decode(r.payload) {
            Some(seal) => {
                let _ = write!(
                    self.line,
                    " audit seal: {} input records at positions {}..{}, chain {}",
                    seal.records,
                    seal.first,
                    seal.end,
                    hex(&seal.chain)
                );
            }
            None => self.line.push_str(" audit seal of the wrong size"),
        }
        let _ = writeln!(self.out, "{}", self.line);
    }

    fn dead_letter(&mut self, r: &OfflineRecord<'_>, kind_name: &str) {
        let text = dead_letter_text(r.payload);
        if self.opts.json {
            let o = self.record_json(r, kind_name).str("dead_letter", &text);
            let _ = writeln!(self.out, "{}", o.build());
        } else {
            let _ = writeln!(self.out, "{} {text}", self.line);
        }
    }

    fn frames_line(
        &mut self,
        r: &OfflineRecord<'_>,
        kind_name: &str,
        n: u64,
        seqs: Option<(u64, u64)>,
    ) {
        if self.opts.json {
            let mut o = self.record_json(r, kind_name).int("frames", n);
            if let Some((f, l)) = seqs {
                o = o.int("first_seq", f).int("last_seq", l);
            }
            let _ = writeln!(self.out, "{}", o.build());
            return;
        }
        let _ = write!(self.line, " frames={n}");
        if let Some((f, l)) = seqs {
            let _ = write!(self.line, " seq={f}..={l}");
        }
        let _ = writeln!(self.out, "{}", self.line);
    }

    /// A record holding a run of frames: counted per channel, each printed
    /// with `--frames`. Returns the frames and their first and last seq.
    fn frames(&mut self, r: &OfflineRecord<'_>, kind_name: &str) -> (u64, Option<(u64, u64)>) {
        let mut at = 0;
        let (mut n, mut seqs) = (0u64, None::<(u64, u64)>);
        while at < r.payload.len() {
            let Ok(Some(v)) = parse(&r.payload[at..], MAX_FRAME_LEN_LIMIT) else {
                self.s.bad_frames += 1;
                let what =
                    "bytes that are not a whole valid frame (the rest of this record is skipped)";
                let _ = match self.opts.json {
                    true => writeln!(
                        self.out,
                        "{}",
                        self.record_json(r, kind_name)
                            .int("offset", at as u64)
                            .str("error", what)
                            .build()
                    ),
                    false => writeln!(self.out, "{} @{}+{at}: {what}", self.s.name, r.position),
                };
                break;
            };
            let (channel, seq) = (v.header.channel(), v.header.seq());
            self.count_frame(channel, seq);
            n += 1;
            seqs = Some((seqs.map_or(seq, |s| s.0), seq));
            if self.opts.detail == Detail::Frames
                && self.opts.channel.is_none_or(|w| w == channel)
                && self.take()
            {
                self.frame_line(r, at, &v);
            }
            at += v.stride;
        }
        (n, seqs)
    }

    fn count_frame(&mut self, channel: u32, seq: u64) {
        let c = self.s.channels.entry(channel).or_insert(ChannelSummary {
            first_seq: seq,
            last_seq: seq.wrapping_sub(1),
            ..ChannelSummary::default()
        });
        if seq != c.last_seq.wrapping_add(1) {
            c.gaps += 1;
        }
        c.frames += 1;
        c.last_seq = seq;
        self.s.frames += 1;
    }

    fn frame_line(&mut self, r: &OfflineRecord<'_>, at: usize, v: &verity_wire::FrameView<'_>) {
        let h = &v.header;
        if self.opts.json {
            let o = verity_wire::json::Obj::new()
                .str("log", &self.s.name)
                .int("position", r.position)
                .int("offset", at as u64)
                .str("kind", &v.kind().to_string())
                .int("channel", h.channel() as u64)
                .int("seq", h.seq())
                .int("trace_id", h.trace_id())
                .int("flags", h.flags() as u64)
                .int("len", v.payload.len() as u64)
                .str("payload_hex", &verity_wire::hex::hex(v.payload));
            let _ = writeln!(self.out, "{}", o.build());
            return;
        }
        let _ = writeln!(
            self.out,
            "{} @{}+{at} {} channel={} seq={} trace={:#018x} flags={:#x} len={} payload={}",
            self.s.name,
            r.position,
            v.kind(),
            h.channel(),
            h.seq(),
            h.trace_id(),
            h.flags(),
            v.payload.len(),
            verity_wire::hex::preview(v.payload, 16)
        );
        if self.opts.hexdump {
            let _ = write!(self.out, "{}", verity_wire::hex::dump(v.payload, "    "));
        }
    }
}

/// A dead-letter record ([`DeadLetterRecord`]) as text.
fn dead_letter_text(p: &[u8]) -> String {
    match DeadLetterRecord::decode(p) {
        Some(d) => format!(
            "journal_index={} channel={} seq={} trace={:#018x} reason={:?}",
            d.journal_index,
            d.channel,
            d.seq,
            d.trace_id,
            d.reason_text()
        ),
        None => "a dead-letter record too short to read".into(),
    }
}
