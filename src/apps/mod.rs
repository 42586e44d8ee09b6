//! The reference applications (DESIGN.md §9), each a [`crate::app`] pipeline.
//! Their output formats are specified in `tools/FORMATS.md`; `verity-check`
//! holds an independent oracle for each. The engine runs them by name
//! through [`crate::registry::Registry::builtin`].

pub mod doubler;
pub mod market_spread;
pub mod sequence_window;
pub mod word_count;
