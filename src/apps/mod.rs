//! The reference applications (DESIGN.md §9), each a [`crate::app`] pipeline.
//! Their output formats are specified in `tools/FORMATS.md`; `verity-check`
//! holds an independent oracle for each.

pub mod doubler;
pub mod market_spread;
pub mod sequence_window;
pub mod word_count;

use crate::app::App;

/// Names accepted by [`build`] (and by the `app` config key).
pub const NAMES: [&str; 4] = ["doubler", "word-count", "sequence-window", "market-spread"];

/// The app called `name`, or `None` if there is none.
pub fn build(name: &str) -> Option<Box<dyn App>> {
    Some(match name {
        "doubler" => Box::new(doubler::app()),
        "word-count" => Box::new(word_count::app()),
        "sequence-window" => Box::new(sequence_window::app()),
        "market-spread" => Box::new(market_spread::app()),
        _ => return None,
    })
}
