//! One simulator run judged from outside: the tools' generators write the
//! seed's input files (or a user app's registered generator makes its
//! inputs), their records go to [`crate::sim::run`] as plain data, what the
//! sink received is written as a received file, and the generic oracle
//! (every node's journal replayed) and the independent oracle of
//! `verity-check` (or the app's own) say whether every output is there
//! once, in order and right.

use std::path::{Path, PathBuf};

use verity_tools::check::{self, App as CheckApp};
use verity_tools::formats::{trace_id, InputFormat, ReceivedWriter};
use verity_tools::gen::{self, GenConfig, TextConfig};
use verity_tools::send::Records;

use crate::registry::Registry;
use crate::replay::{regenerate, Output};
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
/// inputs and the received file the oracle reads. Every run is judged by
/// the generic oracle (every node's journal replayed, against what the
/// sink received); a reference app by `verity-check`'s oracle on top, a
/// user app by its own oracle when it registered one.
pub fn run(params: &SimParams, dir: &Path, apps: &Registry) -> Result<SimOutcome, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let spec = apps.get(&params.app).ok_or_else(|| {
        format!(
            "unknown app {:?} (one of: {})",
            params.app,
            apps.names().join(", ")
        )
    })?;
    let own: Option<CheckApp> = super::oracle_of(&params.app).ok();
    let mut generated = None;
    let (input_paths, sources, expected): (Vec<PathBuf>, Vec<SourceInput>, u64) = match own {
        Some(app) => {
            let (paths, sources): (Vec<PathBuf>, Vec<SourceInput>) =
                workload(params, dir)?.into_iter().unzip();
            let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            // The oracle's expected output count, from the inputs alone.
            let empty = dir.join("empty.bin");
            ReceivedWriter::create(&empty)
                .and_then(|w| w.finish().map(|_| ()))
                .map_err(|e| e.to_string())?;
            let expected = check::check(app, &refs, &empty)
                .map_err(|e| e.to_string())?
                .expected;
            (paths, sources, expected)
        }
        None => {
            let generate = apps.inputs(&params.app).ok_or_else(|| {
                format!(
                    "app {:?} has no input generator: register one with Registry::with_inputs to simulate it",
                    params.app
                )
            })?;
            let inputs = generate(params.seed, params.messages);
            let sources = inputs
                .sources
                .iter()
                .enumerate()
                .map(|(i, records)| SourceInput {
                    channel: i as u32 + 1,
                    records: records.clone(),
                })
                .collect();
            let expected = inputs.expected_outputs;
            generated = Some(inputs);
            (Vec::new(), sources, expected)
        }
    };
    let sent: Vec<(u32, u64)> = sources
        .iter()
        .map(|s| (s.channel, s.records.len() as u64))
        .collect();
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

    // The generic oracle: every node's journal through a fresh core.
    let mut nodes = Vec::new();
    for (n, journal) in run.journals.iter().enumerate() {
        let core = sim::fresh_core(params, &spec, n as u32)?;
        nodes.push(
            regenerate(core, journal.iter().map(|(t, f)| (*t, f.as_slice())))
                .map_err(|e| format!("the generic oracle's replay of node {n}: {e}"))?,
        );
    }
    let (generic, _) = super::oracle::judge(
        &params.app,
        &sent,
        &nodes,
        run.received.iter().map(|r| {
            (
                r.channel,
                Output {
                    seq: r.seq,
                    trace_id: r.trace_id,
                    payload: r.payload.clone(),
                },
            )
        }),
    );
    // On top: verity-check's oracle, or the app's own.
    let report = match own {
        Some(app) => {
            let refs: Vec<&Path> = input_paths.iter().map(PathBuf::as_path).collect();
            check::check(app, &refs, &received).map_err(|e| e.to_string())?
        }
        None => generic.clone(),
    };
    let app_verdict = match (apps.oracle(&params.app), &generated) {
        (Some(oracle), Some(inputs)) => {
            let mut recs: Vec<&sim::Received> = run.received.iter().collect();
            recs.sort_by_key(|r| (r.channel, r.seq));
            let outputs: Vec<Vec<u8>> = recs.iter().map(|r| r.payload.clone()).collect();
            Some(oracle(inputs, &outputs))
        }
        _ => None,
    };
    let (passed, verdict) = match (&run.failure, run.complete) {
        (Some(f), _) => (false, format!("FAIL: {f}")),
        (None, false) => (
            false,
            format!(
                "FAIL: inputs not all ACKed by the time limit; {}",
                report.summary_line()
            ),
        ),
        (None, true) if !generic.passed() => (
            false,
            format!("FAIL (generic oracle): {}", generic.summary_line()),
        ),
        (None, true) => match &app_verdict {
            Some(Err(why)) => (false, format!("FAIL (the app's own oracle): {why}")),
            _ => (report.passed(), report.summary_line()),
        },
    };
    let verdict = if passed {
        verdict
    } else {
        let mut v = verdict;
        for r in [&report, &generic] {
            for line in r.to_string().lines().skip(1).take(5) {
                v.push('\n');
                v.push_str(line);
            }
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
