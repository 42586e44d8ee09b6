//! One simulator run judged from outside: the tools' generators write the
//! seed's input files, their records go to [`crate::sim::run`] as plain
//! data, what the sink received is written as a received file, and the
//! independent oracle of `verity-check` reads the input files and that
//! file and says whether every output is there once, in order and right.

use std::path::{Path, PathBuf};

use verity_tools::check::{self, App as CheckApp};
use verity_tools::formats::{trace_id, InputFormat, ReceivedWriter};
use verity_tools::gen::{self, GenConfig, TextConfig};
use verity_tools::send::Records;

use crate::registry::Registry;
use crate::sim::{self, SimParams, SourceInput, Workload};

/// What one run did, and the oracle's verdict.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    pub params: SimParams,
    pub passed: bool,
    /// The checker's summary line (or the failure).
    pub verdict: String,
    /// FNV-1a over every output delivered and every journal record.
    pub hash: u64,
    pub crashes: u64,
    /// Old instances that dialed back in (see `SimRun::zombies`).
    pub zombies: u64,
    /// Deliveries put off by backpressure (see `SimRun::holds`).
    pub holds: u64,
    pub frames_sent: u64,
    pub frames_dropped: u64,
    /// Records forwarded between nodes (counted again after replays).
    pub forwarded: u64,
    pub virtual_us: u64,
    pub events: u64,
}

/// Writes the seed's input files into `dir`; returns each with its source
/// channel and records.
fn workload(p: &SimParams, dir: &Path) -> Result<Vec<(PathBuf, SourceInput)>, String> {
    let data = gen::data_dir(None);
    let ge = |e: gen::GenError| e.to_string();
    let files: Vec<(PathBuf, InputFormat, u32)> = match p.app.as_str() {
        "market-spread" => {
            let cfg = GenConfig {
                seed: p.seed,
                orders: p.messages / 2,
                nbbo_updates: p.messages / 2,
                data_dir: data,
            };
            gen::market_spread(&cfg, dir).map_err(ge)?;
            vec![
                (dir.join("nbbo.msg"), InputFormat::Fixish, 1),
                (dir.join("orders.msg"), InputFormat::Fixish, 2),
            ]
        }
        "word-count" => {
            let f = dir.join("input.txt");
            let cfg = TextConfig {
                seed: p.seed,
                lines: p.messages / 4 + 1,
                data_dir: data,
            };
            gen::text(&cfg, &f).map_err(ge)?;
            vec![(f, InputFormat::Lines, 1)]
        }
        _ => {
            let f = dir.join("input.u64");
            gen::u64_counters(p.messages, &f).map_err(ge)?;
            vec![(f, InputFormat::U64, 1)]
        }
    };
    let mut inputs = Vec::new();
    for (path, format, channel) in files {
        let r = Records::load(format, &path).map_err(|e| e.to_string())?;
        let records = (1..=r.len()).map(|seq| r.get(seq).to_vec()).collect();
        inputs.push((path, SourceInput { channel, records }));
    }
    Ok(inputs)
}

/// Runs one seed's simulation and judges it; `dir` holds the generated
/// inputs and the received file the oracle reads.
pub fn run(params: &SimParams, dir: &Path, apps: &Registry) -> Result<SimOutcome, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (input_paths, sources): (Vec<PathBuf>, Vec<SourceInput>) =
        workload(params, dir)?.into_iter().unzip();
    let input_paths: Vec<&Path> = input_paths.iter().map(PathBuf::as_path).collect();
    if !apps.contains(&params.app) {
        return Err(format!(
            "unknown app {:?} (one of: {})",
            params.app,
            apps.names().join(", ")
        ));
    }
    let app: CheckApp = super::oracle_of(&params.app)?;
    // The oracle's expected output count, from the inputs alone.
    let empty = dir.join("empty.bin");
    ReceivedWriter::create(&empty)
        .and_then(|w| w.finish().map(|_| ()))
        .map_err(|e| e.to_string())?;
    let expected = check::check(app, &input_paths, &empty)
        .map_err(|e| e.to_string())?
        .expected;
    let run = sim::run(
        params,
        Workload {
            sources,
            trace_id,
            expected_outputs: expected,
        },
        apps,
    )?;

    let received = dir.join("received.bin");
    let mut w = ReceivedWriter::create(&received).map_err(|e| e.to_string())?;
    for r in &run.received {
        w.write(r.channel, r.seq, r.trace_id, &r.payload)
            .map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    let report = check::check(app, &input_paths, &received).map_err(|e| e.to_string())?;
    let (passed, verdict) = match (&run.failure, run.complete) {
        (Some(f), _) => (false, format!("FAIL: {f}")),
        (None, false) => (
            false,
            format!(
                "FAIL: inputs not all ACKed by the time limit; {}",
                report.summary_line()
            ),
        ),
        (None, true) => (report.passed(), report.summary_line()),
    };
    let verdict = if passed {
        verdict
    } else {
        let mut v = verdict;
        for line in report.to_string().lines().skip(1).take(5) {
            v.push('\n');
            v.push_str(line);
        }
        v
    };
    Ok(SimOutcome {
        params: params.clone(),
        passed,
        verdict,
        hash: run.hash,
        crashes: run.crashes,
        zombies: run.zombies,
        holds: run.holds,
        frames_sent: run.frames_sent,
        frames_dropped: run.frames_dropped,
        forwarded: run.forwarded,
        virtual_us: run.virtual_us,
        events: run.events,
    })
}
