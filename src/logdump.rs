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

use crate::log::{LogError, OfflineLog};
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
/// `Detail::Summary`, frame lines with `Detail::Frames`.
pub fn dump(
    dir: &Path,
    opts: &DumpOptions,
    out: &mut dyn std::io::Write,
) -> Result<LogSummary, DumpError> {
    let log = OfflineLog::open(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = LogSummary {
        name: name.clone(),
        segments: log.segments().len(),
        first_position: log.first_position(),
        ..LogSummary::default()
    };
    if let Some(p) = opts.from {
        check_boundary(&log, dir, p)?;
    }
    let from = opts.from.unwrap_or(log.first_position());
    let mut reader = log.reader(from);
    let mut line = String::new();
    // Frame lines printed (what --limit counts with --frames).
    let mut printed = 0u64;
    let full = |records: u64, printed: u64| {
        opts.limit.is_some_and(|l| match opts.detail {
            Detail::Frames => printed >= l,
            _ => records >= l,
        })
    };
    'records: loop {
        if full(s.records, printed) {
            break;
        }
        let Some(r) = reader.next_record()? else {
            break;
        };
        s.records += 1;
        s.time_ns = Some(match s.time_ns {
            None => (r.timestamp, r.timestamp),
            Some((a, b)) => (a.min(r.timestamp), b.max(r.timestamp)),
        });
        let kind = RecordKind::from_code(r.kind);
        let kind_name = kind.map_or("other", RecordKind::name);
        if opts.detail != Detail::Summary {
            line.clear();
            let _ = write!(
                line,
                "{name} @{} kind={kind_name} clock={} bytes={}",
                r.position,
                verity_wire::time::rfc3339_ns(r.timestamp),
                r.payload.len()
            );
        }
        let record_json = || {
            verity_wire::json::Obj::new()
                .str("log", &name)
                .int("position", r.position)
                .str("kind", kind_name)
                .int("time_ns", r.timestamp)
                .int("bytes", r.payload.len() as u64)
        };
        if kind == Some(RecordKind::Seal) {
            s.seals += 1;
            if opts.detail != Detail::Summary && opts.json {
                let o = match Seal::decode(r.payload) {
                    Some(seal) => record_json()
                        .int("seal_records", seal.records)
                        .int("seal_first", seal.first)
                        .int("seal_end", seal.end)
                        .str("chain", &hex(&seal.chain)),
                    None => record_json().str("error", "audit seal of the wrong size"),
                };
                let _ = writeln!(out, "{}", o.build());
            } else if opts.detail != Detail::Summary {
                match Seal::decode(r.payload) {
                    Some(seal) => {
                        let _ = write!(
                            line,
                            " audit seal: {} input records at positions {}..{}, chain {}",
                            seal.records,
                            seal.first,
                            seal.end,
                            hex(&seal.chain)
                        );
                    }
                    None => line.push_str(" audit seal of the wrong size"),
                }
                let _ = writeln!(out, "{line}");
            }
            continue;
        }
        if kind == Some(RecordKind::DeadLetter) {
            s.dead_letters += 1;
            if opts.detail != Detail::Summary && opts.json {
                let o = record_json().str("dead_letter", &dead_letter_text(r.payload));
                let _ = writeln!(out, "{}", o.build());
            } else if opts.detail != Detail::Summary {
                let _ = write!(line, " {}", dead_letter_text(r.payload));
                let _ = writeln!(out, "{line}");
            }
            continue;
        }
        // A run of frames.
        let mut at = 0;
        let (mut n, mut first, mut last) = (0u64, None, 0u64);
        while at < r.payload.len() {
            match parse(&r.payload[at..], MAX_FRAME_LEN_LIMIT) {
                Ok(Some(v)) => {
                    let h = v.header;
                    let (channel, seq) = (h.channel(), h.seq());
                    let c = s.channels.entry(channel).or_insert(ChannelSummary {
                        first_seq: seq,
                        last_seq: seq.wrapping_sub(1),
                        ..ChannelSummary::default()
                    });
                    if seq != c.last_seq.wrapping_add(1) {
                        c.gaps += 1;
                    }
                    c.frames += 1;
                    c.last_seq = seq;
                    s.frames += 1;
                    n += 1;
                    first.get_or_insert(seq);
                    last = seq;
                    if opts.detail == Detail::Frames
                        && opts.channel.is_none_or(|w| w == channel)
                        && opts.json
                    {
                        let o = verity_wire::json::Obj::new()
                            .str("log", &name)
                            .int("position", r.position)
                            .int("offset", at as u64)
                            .str("kind", &v.kind().to_string())
                            .int("channel", channel as u64)
                            .int("seq", seq)
                            .int("trace_id", h.trace_id())
                            .int("flags", h.flags() as u64)
                            .int("len", v.payload.len() as u64)
                            .str(
                                "payload_hex",
                                &v.payload
                                    .iter()
                                    .map(|b| format!("{b:02x}"))
                                    .collect::<String>(),
                            );
                        let _ = writeln!(out, "{}", o.build());
                        printed += 1;
                        if full(s.records, printed) {
                            break 'records;
                        }
                    } else if opts.detail == Detail::Frames
                        && opts.channel.is_none_or(|w| w == channel)
                    {
                        let payload: String = v
                            .payload
                            .iter()
                            .take(32)
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        let _ = writeln!(
                            out,
                            "{name} @{}+{at} {} channel={channel} seq={seq} trace={:#018x} flags={:#x} len={} payload={payload}{}",
                            r.position,
                            v.kind(),
                            h.trace_id(),
                            h.flags(),
                            v.payload.len(),
                            if v.payload.len() > 32 { "…" } else { "" }
                        );
                        printed += 1;
                        if full(s.records, printed) {
                            break 'records;
                        }
                    }
                    at += v.stride;
                }
                Ok(None) | Err(_) => {
                    s.bad_frames += 1;
                    let what = "bytes that are not a whole valid frame (the rest of this record is skipped)";
                    let _ = match opts.json {
                        true => writeln!(
                            out,
                            "{}",
                            record_json()
                                .int("offset", at as u64)
                                .str("error", what)
                                .build()
                        ),
                        false => writeln!(out, "{name} @{}+{at}: {what}", r.position),
                    };
                    break;
                }
            }
        }
        if opts.detail == Detail::Records && opts.json {
            let mut o = record_json().int("frames", n);
            if let Some(f) = first {
                o = o.int("first_seq", f).int("last_seq", last);
            }
            let _ = writeln!(out, "{}", o.build());
        } else if opts.detail == Detail::Records {
            let _ = write!(line, " frames={n}");
            if let Some(f) = first {
                let _ = write!(line, " seq={f}..={last}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let end = reader.end();
    s.end = end.end;
    s.stopped_at = end.stopped_at;
    let whole = opts.from.is_none() && opts.limit.is_none();
    if s.seals > 0 && whole {
        s.audit = Some(verify(
            log.reader(log.first_position()),
            log.first_position(),
        )?);
    } else if opts.expect_audit && whole && name == JOURNAL_LOG && s.frames > 0 {
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
