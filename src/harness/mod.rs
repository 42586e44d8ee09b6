//! The parts of the engine crate that drive the test tools
//! (`verity_tools`): the demo (a chaos run of this binary) and the
//! simulator's judged runs (inputs from the tools' generators, output
//! judged by the independent oracle), and the fixed workloads of the
//! speed gates (`workload`). Besides the binaries, this is the
//! only module that may import `verity_tools`: the runtime, the core, the
//! storage and the simulator never do.

pub mod demo;
pub mod oracle;
pub mod sim_run;
pub mod workload;

/// The independent oracle of app `app`: `verity-check` judges the reference
/// apps. Err: a registered app it has no oracle for (the generic oracle
/// judges it alone).
pub(crate) fn oracle_of(app: &str) -> Result<verity_tools::check::App, String> {
    app.parse()
        .map_err(|_: String| format!("verity-check has no oracle for app {app:?}"))
}

/// Writes `inputs` into `dir`, one fixish file per source
/// (`source-C.msg` for source channel C), for a chaos run.
pub(crate) fn write_inputs(
    dir: &std::path::Path,
    inputs: &crate::registry::AppInputs,
) -> Result<verity_tools::chaos::GeneratedInputs, String> {
    use verity_tools::formats::{InputFormat, InputWriter};
    let mut files = Vec::new();
    for (i, records) in inputs.sources.iter().enumerate() {
        let channel = i as u32 + 1;
        let path = dir.join(format!("source-{channel}.msg"));
        let mut w = InputWriter::create(InputFormat::Fixish, &path).map_err(|e| e.to_string())?;
        for r in records {
            w.write_record(r).map_err(|e| e.to_string())?;
        }
        w.finish().map_err(|e| e.to_string())?;
        files.push((path, InputFormat::Fixish, channel));
    }
    Ok(verity_tools::chaos::GeneratedInputs {
        files,
        expected_outputs: inputs.expected_outputs,
    })
}

/// Every payload of a received file, per channel in seq order, the
/// channels one after another (what an app's own oracle reads).
pub(crate) fn received_payloads(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let mut recs = verity_tools::formats::read_received(path).map_err(|e| e.to_string())?;
    recs.sort_by_key(|r| (r.channel, r.seq));
    Ok(recs.into_iter().map(|r| r.payload).collect())
}
