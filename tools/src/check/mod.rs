//! `verity-check`: an oracle for each reference app, written from the spec in
//! `tools/FORMATS.md` and independently of the engine (nothing here imports the
//! `verity` crate). It computes what the output must be from the input files
//! and classifies every received record, in the manner of Jepsen's queue
//! checker: lost, duplicated, reordered, wrong, unexpected.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;

use crate::formats::{FormatError, ReceivedReader, ReceivedRecord};

mod doubler;
mod exact;
mod market_spread;
mod report;
mod sequence_window;
mod word_count;

pub use report::{CheckReport, Class, MAX_PROBLEM_LINES};

/// The reference apps the checker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Doubler,
    WordCount,
    SequenceWindow,
    MarketSpread,
}

impl App {
    pub const ALL: [App; 4] = [
        App::Doubler,
        App::WordCount,
        App::SequenceWindow,
        App::MarketSpread,
    ];

    pub fn name(self) -> &'static str {
        match self {
            App::Doubler => "doubler",
            App::WordCount => "word-count",
            App::SequenceWindow => "sequence-window",
            App::MarketSpread => "market-spread",
        }
    }

    /// Input files the app reads (market-spread: NBBO, then orders).
    pub fn input_count(self) -> usize {
        match self {
            App::MarketSpread => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for App {
    type Err = String;
    fn from_str(s: &str) -> Result<App, String> {
        App::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!("unknown app {s:?} (expected doubler, word-count, sequence-window or market-spread)")
            })
    }
}

/// Why a check could not be run (as opposed to a FAIL verdict).
#[derive(Debug)]
pub enum CheckError {
    /// Wrong arguments, e.g. the number of input files for the app.
    Usage(String),
    /// An input or received file is unreadable or malformed.
    Format(FormatError),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Usage(m) => f.write_str(m),
            CheckError::Format(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CheckError {}

impl From<FormatError> for CheckError {
    fn from(e: FormatError) -> Self {
        CheckError::Format(e)
    }
}

/// Checks `received` against what `app` must produce from `inputs`
/// (market-spread: `[nbbo, orders]`).
pub fn check<P: AsRef<Path>>(
    app: App,
    inputs: &[P],
    received: &Path,
) -> Result<CheckReport, CheckError> {
    if inputs.len() != app.input_count() {
        return Err(CheckError::Usage(format!(
            "app {app} takes {} --input file(s){}, got {}",
            app.input_count(),
            if app == App::MarketSpread {
                " (NBBO first, then orders)"
            } else {
                ""
            },
            inputs.len()
        )));
    }
    let mut report = CheckReport::new(app);
    let mut received = Received {
        reader: ReceivedReader::open(received)?,
        seqs: ChannelSeqs::default(),
    };
    match app {
        App::Doubler => {
            let expected = doubler::expected(inputs[0].as_ref())?;
            exact::check(&expected, &mut received, &mut report, doubler::describe)?;
        }
        App::WordCount => {
            let expected = word_count::expected(inputs[0].as_ref())?;
            exact::check(&expected, &mut received, &mut report, word_count::describe)?;
        }
        App::SequenceWindow => {
            let expected = sequence_window::expected(inputs[0].as_ref())?;
            exact::check(
                &expected,
                &mut received,
                &mut report,
                sequence_window::describe,
            )?;
        }
        App::MarketSpread => {
            market_spread::check(
                inputs[0].as_ref(),
                inputs[1].as_ref(),
                &mut received,
                &mut report,
            )?;
        }
    }
    Ok(report)
}

/// The received file, read once, in arrival order, with the output-channel
/// seq check applied on the way (memory stays bounded by the expected
/// outputs, not by the received file).
pub(crate) struct Received {
    reader: ReceivedReader<File>,
    seqs: ChannelSeqs,
}

impl Received {
    /// Next record that takes part in the matching (counted in
    /// `report.received`); `None` at the end of the file.
    pub(crate) fn next(
        &mut self,
        report: &mut CheckReport,
    ) -> Result<Option<ReceivedRecord>, FormatError> {
        while let Some(r) = self.reader.read_record()? {
            report.received += 1;
            if self.seqs.admit(&r, report) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// Each output channel's seqs must run 1, 2, 3, ... in arrival order (the
/// receiver dedups by seq and delivers in order). A seq seen before on the
/// channel is `duplicated` and left out of the matching (it is a re-delivery,
/// already counted here); a gap or a seq going backwards is `reordered`.
#[derive(Default)]
struct ChannelSeqs {
    channels: HashMap<u32, SeqState>,
}

#[derive(Default)]
struct SeqState {
    /// Highest seq seen.
    max: u64,
    /// Seqs below `max` not seen yet, as ranges start -> end (inclusive).
    /// Bounded by the number of gaps, i.e. by the faults, not the traffic.
    missing: BTreeMap<u64, u64>,
}

impl SeqState {
    /// Takes `seq` out of the missing ranges; false if it was not missing.
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.missing.range(..=seq).next_back() else {
            return false;
        };
        if seq > end {
            return false;
        }
        self.missing.remove(&start);
        if start < seq {
            self.missing.insert(start, seq - 1);
        }
        if seq < end {
            self.missing.insert(seq + 1, end);
        }
        true
    }
}

impl ChannelSeqs {
    /// Whether `r` takes part in the matching.
    fn admit(&mut self, r: &ReceivedRecord, report: &mut CheckReport) -> bool {
        if r.seq == 0 {
            report.problem(Class::Reordered, || {
                format!(
                    "output channel {} seq 0 at byte offset {}: seqs start at 1",
                    r.channel, r.offset
                )
            });
            return true;
        }
        let st = self.channels.entry(r.channel).or_default();
        let prev = st.max;
        if r.seq > prev {
            if r.seq > prev + 1 {
                st.missing.insert(prev + 1, r.seq - 1);
                report.problem(Class::Reordered, || {
                    format!(
                        "output channel {} seq jumped from {prev} to {} at byte offset {} (gap: seqs {}..={} missing there)",
                        r.channel,
                        r.seq,
                        r.offset,
                        prev + 1,
                        r.seq - 1
                    )
                });
            }
            st.max = r.seq;
            return true;
        }
        if st.fill(r.seq) {
            report.problem(Class::Reordered, || {
                format!(
                    "output channel {} seq went back from {prev} to {} at byte offset {}",
                    r.channel, r.seq, r.offset
                )
            });
            return true;
        }
        report.problem(Class::Duplicated, || {
            format!(
                "output channel {} seq {} delivered again at byte offset {} (trace id {}): the receiver must drop repeats of a seq",
                r.channel,
                r.seq,
                r.offset,
                crate::formats::show_trace_id(r.trace_id)
            )
        });
        false
    }
}
