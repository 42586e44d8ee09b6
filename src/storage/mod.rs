//! The node's on-disk formats, in one place: what its logs hold
//! ([`records`]: record kinds, the dead-letter payload, runs of frames),
//! the outbound logs and their index ([`outbound`]), the journal's audit
//! hash chain ([`audit`]) and the data directory ([`datadir`]: lock,
//! epoch, log names, snapshots).
//!
//! The worker (`crate::runtime`) writes these files; the offline readers
//! (`crate::replay`, `crate::trace`, `crate::logdump`) read them through
//! this module. It uses `crate::log` for the log files and
//! `verity_wire::frames` for the frames in them, and never the runtime.

pub mod audit;
pub mod datadir;
pub mod outbound;
pub mod records;

pub use datadir::{DataDir, DataDirError};
pub use outbound::{OutboundError, OutboundLog};
pub use records::{DeadLetterRecord, RecordKind};
