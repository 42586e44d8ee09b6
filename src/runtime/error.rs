//! Why a worker could not start or had to stop: [`WorkerError`], and the
//! helpers that build one from an I/O error or a bad frame.

use std::io;

use verity_wire::WireError;

use crate::log::LogError;
use crate::storage::datadir::DataDirError;

/// Why a worker could not start or had to stop.
#[derive(Debug)]
pub enum WorkerError {
    DataDir(DataDirError),
    Log(LogError),
    Snapshot {
        path: String,
        error: String,
    },
    Replay(String),
    Io {
        what: String,
        error: io::Error,
    },
    /// `[tls]` files rustls cannot use (the text names the key).
    Tls(String),
}

impl core::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WorkerError::DataDir(e) => write!(f, "{e}"),
            WorkerError::Log(e) => write!(f, "{e}"),
            WorkerError::Snapshot { path, error } => write!(f, "snapshot {path}: {error}"),
            WorkerError::Replay(e) => write!(f, "journal replay: {e}"),
            WorkerError::Io { what, error } => write!(f, "{what}: {error}"),
            WorkerError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<LogError> for WorkerError {
    fn from(e: LogError) -> Self {
        WorkerError::Log(e)
    }
}
impl From<DataDirError> for WorkerError {
    fn from(e: DataDirError) -> Self {
        WorkerError::DataDir(e)
    }
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> WorkerError {
    let what = what.into();
    move |error| WorkerError::Io { what, error }
}

pub(super) fn bad_frame_text(e: &WireError, at: u64) -> String {
    format!("bad frame at stream offset {at}: {e}")
}
