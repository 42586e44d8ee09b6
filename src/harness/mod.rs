//! The parts of the engine crate that drive the test tools
//! (`verity_tools`): the demo (a chaos run of this binary) and the
//! simulator's judged runs (inputs from the tools' generators, output
//! judged by the independent oracle). Besides the binaries, this is the
//! only module that may import `verity_tools`: the runtime, the core, the
//! storage and the simulator never do.

pub mod demo;
pub mod sim_run;

/// The independent oracle of app `app`: `verity-check` judges the reference
/// apps. Err: a registered app it has no oracle for, named as such (not as
/// an unknown app).
pub(crate) fn oracle_of(app: &str) -> Result<verity_tools::check::App, String> {
    app.parse().map_err(|_: String| {
        format!(
            "no oracle for app {app:?}: the demo and the simulator's judged runs check the reference apps (doubler, word-count, sequence-window, market-spread) with verity-check's oracles; an app's own oracle, or the generic one, is not wired in yet"
        )
    })
}
