//! A real full disk: a tiny tmpfs mounted for the test. Needs the right to
//! mount (root with CAP_SYS_ADMIN); skipped with a message otherwise. The
//! injectable `disk_limit_bytes` path is covered by the unit tests.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use verity::log::{Log, LogConfig, LogError};

struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    fn mount(mount_point: &Path, size_bytes: u64) -> Result<Tmpfs, std::io::Error> {
        let target = CString::new(mount_point.as_os_str().as_bytes())?;
        let source = CString::new("tmpfs")?;
        let options = CString::new(format!("size={size_bytes}"))?;
        // SAFETY: all pointers are valid NUL-terminated strings that outlive
        // the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Tmpfs {
            mount_point: mount_point.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.mount_point.as_os_str().as_bytes()) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn full_disk_on_roll_is_no_space_and_damages_nothing() {
    let outer = tempfile::tempdir().unwrap();
    let fs = match Tmpfs::mount(outer.path(), 64 * 1024) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED full_disk_on_roll_is_no_space_and_damages_nothing: cannot mount tmpfs ({e})");
            return;
        }
    };
    let config = LogConfig {
        segment_size_bytes: 16 * 1024,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(&fs.mount_point, "j", config.clone()).unwrap();
    let mut written = Vec::new();
    let error = loop {
        let payload = vec![written.len() as u8; 1000];
        match log.append(1, 0, &payload) {
            Ok(position) => written.push(position),
            Err(error) => break error,
        }
        assert!(written.len() < 1000, "tmpfs never filled up");
    };
    match &error {
        LogError::NoSpace {
            path, needed_bytes, ..
        } => {
            assert!(path.to_string_lossy().contains(".seg"), "{error}");
            assert_eq!(*needed_bytes, 16 * 1024);
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    // Still refused on retry while the disk is full; nothing half-made left.
    assert!(log.append(1, 0, &[0; 1000]).unwrap_err().is_no_space());
    let leftovers: Vec<_> = std::fs::read_dir(log.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let check = |log: &Log, from: u64, expected: &[u64]| {
        let read: Vec<u64> = log
            .reader_at(from)
            .unwrap()
            .map(|r| r.unwrap().position)
            .collect();
        assert_eq!(read, expected);
    };
    check(&log, 0, &written);

    // Backpressure, then free space and retry.
    let keep_from = written[written.len() - 2];
    assert!(log.drop_below(keep_from).unwrap() > 0);
    let position = log.append(1, 0, b"after space was freed").unwrap();
    drop(log);
    let (log, recovery) = Log::open(&fs.mount_point, "j", config).unwrap();
    assert_eq!(recovery.bytes_dropped, 0);
    let read: Vec<u64> = log
        .reader_at(log.first_position())
        .unwrap()
        .map(|r| r.unwrap().position)
        .collect();
    assert_eq!(read.last(), Some(&position));
    drop(log);
    drop(fs);
}
