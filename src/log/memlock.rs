//! `lock_memory` (`LogConfig::lock_memory`): locking segments in memory,
//! and whether this process may.
//!
//! Why a log locks its active segment, and when: see `populate` (the first
//! segment of a new log) and `preparer` (the segments after it).

use std::fs;
use std::path::Path;

use memmap2::MmapMut;

use super::error::{self, LogError};

/// mlock of `map`, 4 MiB at a time: one mlock of a whole 64 MiB segment
/// holds the process's address-space lock while it faults in every page,
/// and every other thread's mmap (the event loop's allocations) waits.
pub(super) fn lock_in_steps(map: &MmapMut) -> std::io::Result<()> {
    const STEP: usize = 4 << 20;
    let (base, len) = (map.as_ptr() as usize, map.len());
    let mut done = 0;
    while done < len {
        let n = STEP.min(len - done);
        // SAFETY: `[base + done, base + done + n)` lies inside `map`, a live
        // mapping we hold; mlock reads and writes no byte of it. `done` is a
        // multiple of STEP, so every call starts on a page.
        if unsafe { libc::mlock((base + done) as *const libc::c_void, n) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        done += n;
    }
    Ok(())
}

/// `lock_memory`: refuses to open when `RLIMIT_MEMLOCK` cannot hold two
/// segments (the active one and the one prepared next), naming the limit.
/// A process with `CAP_IPC_LOCK` (root, usually) is not bound by it.
pub(super) fn check_memlock(dir: &Path, segment_bytes: u64) -> Result<(), LogError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(());
    }
    let cur = (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur);
    match memlock_refusal(cur, has_cap_ipc_lock(), segment_bytes) {
        None => Ok(()),
        Some(why) => Err(LogError::io(
            error::Op::LockMemory,
            dir,
            std::io::Error::other(why),
        )),
    }
}

/// Why `lock_memory` cannot work with `RLIMIT_MEMLOCK` at `limit` bytes
/// (`None`: unlimited) and `CAP_IPC_LOCK` or not, for `segment_bytes`
/// segments; `None` if it can.
pub(super) fn memlock_refusal(
    limit: Option<u64>,
    cap_ipc_lock: bool,
    segment_bytes: u64,
) -> Option<String> {
    let needed = 2 * segment_bytes;
    match limit {
        Some(limit) if !cap_ipc_lock && limit < needed => Some(format!(
            "RLIMIT_MEMLOCK is {limit} bytes; lock_memory needs at least {needed} per log (two segments): raise `ulimit -l` (LimitMEMLOCK= under systemd) or turn lock_memory off"
        )),
        _ => None,
    }
}

/// Whether the process may lock memory beyond `RLIMIT_MEMLOCK`:
/// `CAP_IPC_LOCK` (bit 14) in the effective set of `/proc/self/status`.
pub(super) fn has_cap_ipc_lock() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_check_names_the_limit_unless_unbound() {
        let seg = 64 << 20;
        // The usual 8 MiB `ulimit -l` cannot hold two 64 MiB segments.
        let why = memlock_refusal(Some(8 << 20), false, seg).expect("refused");
        assert!(
            why.contains("RLIMIT_MEMLOCK is 8388608 bytes")
                && why.contains("at least 134217728")
                && why.contains("ulimit -l"),
            "{why}"
        );
        assert_eq!(memlock_refusal(Some(2 * seg), false, seg), None);
        assert_eq!(memlock_refusal(None, false, seg), None, "unlimited");
        assert_eq!(memlock_refusal(Some(0), true, seg), None, "CAP_IPC_LOCK");
        // The error as the worker reports it names the log directory.
        let dir = tempfile::tempdir().unwrap();
        if !has_cap_ipc_lock() {
            let e = check_memlock(dir.path(), 1 << 40).unwrap_err().to_string();
            assert!(e.contains("lock_memory") && e.contains("ulimit -l"), "{e}");
        }
    }
}
