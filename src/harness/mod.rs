//! The parts of the engine crate that drive the test tools
//! (`verity_tools`): the demo (a chaos run of this binary) and the
//! simulator's judged runs (inputs from the tools' generators, output
//! judged by the independent oracle). Besides the binaries, this is the
//! only module that may import `verity_tools`: the runtime, the core, the
//! storage and the simulator never do.

pub mod demo;
pub mod sim_run;
