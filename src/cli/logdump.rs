//! `verity logdump` (and `verity-logdump`): what a node's logs hold, read in place without locking
//! or changing them.
//!
//! - `verity-logdump DATA_DIR`: a summary of every log (journal, outbound,
//!   forward-N, dead-letters): segments, records, frames per channel with
//!   their seq ranges and gaps, the clock range, where each scan ended.
//! - `verity-logdump DATA_DIR/journal --frames`: every frame (position,
//!   kind, channel, seq, trace id, flags, payload as hex and ASCII;
//!   `--hexdump` the whole payload in `hexdump -C` style); `--records` one
//!   line per record; `--from POS`, `--limit N`, `--tail N`, `--channel C`;
//!   `--expect-audit`: a journal without audit seals is damaged.
//! - `--follow` (one log): after the dump, what a running node appends, as
//!   it is appended (`tail -f`), until SIGINT/SIGTERM or `--limit`.
//!
//! Exit 0: every log read to its end; 1: a log cannot be opened (a damaged
//! segment header, a gap between segments), stops at an invalid record or
//! holds a bad frame (the other logs are still dumped); 2: bad arguments
//! (a `--from` inside a record) or no log at the path.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::logdump::{dump, follow, log_dirs, Detail, DumpError, DumpOptions};

/// The flags of `verity logdump` and `verity-logdump`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Exit status: 0 every log read to its end; 1 a log is damaged or holds a bad frame (the other logs are still dumped); 2 bad arguments (a --from inside a record) or no log at the path."
)]
pub struct LogdumpArgs {
    /// A node's data directory, or one log's directory in it.
    pub dir: PathBuf,
    /// Only this log of the data directory (journal, outbound, forward-N,
    /// dead-letters).
    #[arg(long)]
    pub log: Option<String>,
    /// One line per record.
    #[arg(long, conflicts_with = "frames")]
    pub records: bool,
    /// One line per frame.
    #[arg(long)]
    pub frames: bool,
    /// Only frames of this channel (with --frames).
    #[arg(long, requires = "frames")]
    pub channel: Option<u32>,
    /// Start at this log position: where a record starts (else exit 2,
    /// naming the record boundaries around it).
    #[arg(long)]
    pub from: Option<u64>,
    /// At most this many per log of what is printed: frames with
    /// --frames, records otherwise.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Only the last N per log of what is printed (frames with --frames,
    /// records with --records); the summary still covers the whole log.
    #[arg(long, value_name = "N", conflicts_with = "limit")]
    pub tail: Option<u64>,
    /// Keep reading one log (a log's directory, or --log) and print what
    /// the node appends as it is appended, until SIGINT/SIGTERM (exit 0)
    /// or --limit lines; the log is read, never locked or changed. No
    /// summary is printed.
    #[arg(long)]
    pub follow: bool,
    /// With --frames: every payload in full as `hexdump -C` lines under
    /// its frame (the frame line shows the first 16 bytes in hex and
    /// ASCII).
    #[arg(long, requires = "frames")]
    pub hexdump: bool,
    /// The node runs with `audit = true`: a journal without seals is
    /// damaged (exit 1).
    #[arg(long)]
    pub expect_audit: bool,
    /// JSON Lines: one object per record or frame, one summary per log
    /// (tools/FORMATS.md).
    #[arg(long)]
    pub json: bool,
}

/// Dumps the logs `a` names; exit 0 every log read to its end, 1 a log
/// stops at an invalid record or holds a bad frame, 2 bad arguments or
/// unreadable files.
pub fn run(a: &LogdumpArgs, me: &str) -> ExitCode {
    let dir = match &a.log {
        Some(l) => a.dir.join(l),
        None => a.dir.clone(),
    };
    let logs = log_dirs(&dir);
    if logs.is_empty() {
        eprintln!(
            "{me}: {}: no log here (no <base>.seg files, nor directories holding them)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let opts = DumpOptions {
        detail: if a.frames {
            Detail::Frames
        } else if a.records {
            Detail::Records
        } else {
            Detail::Summary
        },
        from: a.from,
        limit: a.limit,
        channel: a.channel,
        expect_audit: a.expect_audit,
        json: a.json,
        tail: a.tail,
        hexdump: a.hexdump,
    };
    if a.follow {
        return follow_one(&logs, &opts, me);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut damaged, mut usage) = (false, false);
    for log in &logs {
        match dump(log, &opts, &mut out) {
            Ok(s) => {
                damaged |= s.damaged();
                match a.json {
                    true => {
                        let _ = writeln!(out, "{}", s.to_json());
                    }
                    false => {
                        let _ = writeln!(out, "{s}");
                    }
                }
            }
            Err(e @ DumpError::NotABoundary { .. }) => {
                let _ = out.flush();
                eprintln!("{me}: {e}");
                usage = true;
            }
            Err(DumpError::Log(e)) => {
                // This log is damaged (or unreadable): said, and the
                // others are still dumped.
                let name = log.file_name().map_or_else(
                    || log.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let _ = match a.json {
                    true => writeln!(
                        out,
                        "{}",
                        verity_tools::json::Obj::new()
                            .str("summary", &name)
                            .bool("damaged", true)
                            .str("error", &e.to_string())
                            .build()
                    ),
                    false => writeln!(out, "{name}: DAMAGED: cannot be read: {e}"),
                };
                let _ = out.flush();
                eprintln!("{me}: {}: {e}", log.display());
                damaged = true;
            }
        }
    }
    let _ = out.flush();
    if usage {
        ExitCode::from(2)
    } else if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `--follow`: the dump of one log (its last `--tail` lines), then what is
/// appended, until SIGINT/SIGTERM or `--limit`.
fn follow_one(logs: &[PathBuf], opts: &DumpOptions, me: &str) -> ExitCode {
    let [log] = logs else {
        eprintln!(
            "{me}: --follow reads one log; this directory holds {} (name one with --log: {})",
            logs.len(),
            logs.iter()
                .filter_map(|l| l.file_name())
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&stop));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::LineWriter::new(stdout.lock());
    // With --tail, the last N lines up to the log's end now, then on from
    // there; else everything from --from (checked: a record boundary) or
    // the log's start.
    let start = match opts.tail {
        Some(_) => dump(log, opts, &mut out).map(|s| s.end),
        None => dump(
            log,
            &DumpOptions {
                limit: Some(0),
                ..opts.clone()
            },
            &mut std::io::sink(),
        )
        .map(|s| opts.from.unwrap_or(s.first_position)),
    };
    let start = match start {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{me}: {e}");
            return ExitCode::from(match e {
                DumpError::NotABoundary { .. } => 2,
                DumpError::Log(_) => 1,
            });
        }
    };
    let opts = DumpOptions {
        tail: None,
        ..opts.clone()
    };
    let poll = std::time::Duration::from_millis(200);
    let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
    match follow(log, &opts, start, &mut out, poll, &stopped) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("{me}: {}: {e}", log.display());
            ExitCode::from(1)
        }
    }
}
