//! `LogError`: every failure of the log as a value naming the file, the
//! operation and (where there is one) the byte offset.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The file-system operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateDir,
    ReadDir,
    Open,
    Lock,
    Allocate,
    Map,
    Rename,
    Remove,
    SyncData,
    SyncDir,
    Metadata,
    LockMemory,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::CreateDir => "create directory",
            Op::ReadDir => "read directory",
            Op::Open => "open",
            Op::Lock => "lock",
            Op::Allocate => "allocate",
            Op::Map => "map",
            Op::Rename => "rename",
            Op::Remove => "remove",
            Op::SyncData => "fdatasync",
            Op::SyncDir => "fsync directory",
            Op::Metadata => "stat",
            Op::LockMemory => "lock in memory (lock_memory; mlock, limited by `ulimit -l`)",
        }
    }
}

#[derive(Debug)]
pub enum LogError {
    /// An I/O call failed (permission, missing directory, mapping, ...).
    Io {
        op: Op,
        path: PathBuf,
        source: io::Error,
    },
    /// The disk (or the configured `disk_limit_bytes`) has no room for a new
    /// segment. Nothing already written is touched: stop taking input
    /// (backpressure), drop old segments or free space, and retry `append`.
    NoSpace {
        op: Op,
        path: PathBuf,
        needed_bytes: u64,
    },
    /// Another process holds `<dir>/<name>/LOCK`.
    Locked { path: PathBuf },
    /// A segment file whose header (or size) is not valid.
    BadSegmentHeader { path: PathBuf, reason: &'static str },
    /// A file in the log directory that looks like a segment but is not named
    /// `<20 digits>.seg`, or whose name disagrees with its header.
    BadSegmentName { path: PathBuf, reason: &'static str },
    /// Two consecutive segments do not cover contiguous positions.
    SegmentGap {
        previous: PathBuf,
        next: PathBuf,
        expected_base: u64,
        found_base: u64,
    },
    /// A reader met an invalid record below the end of the log (a sealed
    /// segment damaged after it was written, or a position that is not a
    /// record boundary).
    InvalidRecord {
        path: PathBuf,
        offset: u64,
        position: u64,
        reason: &'static str,
    },
    /// Payload larger than fits one segment.
    RecordTooLarge { payload_bytes: u64, max_bytes: u64 },
    /// A read position outside `[first_position, end_position]`.
    PositionOutOfRange { position: u64, first: u64, end: u64 },
    /// Rejected configuration or name.
    Config { reason: String },
    /// The syncer thread's fdatasync failed; durability can no longer advance.
    SyncFailed { path: PathBuf, message: String },
    /// The log was closed while waiting for durability.
    Closed,
}

impl LogError {
    pub(crate) fn io(op: Op, path: impl Into<PathBuf>, source: io::Error) -> LogError {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return LogError::NoSpace {
                op,
                path,
                needed_bytes: 0,
            };
        }
        LogError::Io { op, path, source }
    }

    /// True when the caller should apply backpressure and retry later.
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::NoSpace { .. })
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { op, path, source } => {
                write!(f, "log: {} {}: {source}", op.as_str(), path.display())
            }
            LogError::NoSpace {
                op,
                path,
                needed_bytes,
            } => write!(
                f,
                "log: no space to {} {} ({needed_bytes} bytes needed); stop input, free space and retry",
                op.as_str(),
                path.display()
            ),
            LogError::Locked { path } => write!(
                f,
                "log: {} is locked by another process; is another instance running on this directory?",
                path.display()
            ),
            LogError::BadSegmentHeader { path, reason } => {
                write!(f, "log: invalid segment header in {}: {reason}", path.display())
            }
            LogError::BadSegmentName { path, reason } => {
                write!(f, "log: bad segment file name {}: {reason}", path.display())
            }
            LogError::SegmentGap {
                previous,
                next,
                expected_base,
                found_base,
            } => write!(
                f,
                "log: segments not contiguous: {} should be followed by base {expected_base}, found {} (base {found_base})",
                previous.display(),
                next.display()
            ),
            LogError::InvalidRecord {
                path,
                offset,
                position,
                reason,
            } => write!(
                f,
                "log: invalid record in {} at offset {offset} (position {position}): {reason}",
                path.display()
            ),
            LogError::RecordTooLarge {
                payload_bytes,
                max_bytes,
            } => write!(
                f,
                "log: record payload of {payload_bytes} bytes exceeds the maximum {max_bytes}"
            ),
            LogError::PositionOutOfRange {
                position,
                first,
                end,
            } => write!(
                f,
                "log: position {position} outside the log [{first}, {end}]"
            ),
            LogError::Config { reason } => write!(f, "log: bad configuration: {reason}"),
            LogError::SyncFailed { path, message } => {
                write!(f, "log: fdatasync of {} failed: {message}", path.display())
            }
            LogError::Closed => write!(f, "log: closed"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
