//! Snapshots written off the event loop.
//!
//! A snapshot used to stop the loop for its whole write: the file, its
//! `fsync`, the rename, the directory's `fsync`, the old snapshot's unlink
//! (2 to 5 ms here on ext4, once every `snapshot_interval_records`, and
//! every output arriving meanwhile waited). Now the loop only serialises
//! the core's state into a buffer (a copy: the state is the app's per-key
//! values, small next to the journal) and hands it to a thread of its own,
//! which writes it ([`write_snapshot_in`]). The loop takes the result in a
//! later iteration ([`Snapshotter::poll`]) and only then drops the journal
//! below the oldest snapshot kept: until the new snapshot is durable, the
//! journal still holds everything the older ones need.
//!
//! One snapshot is written at a time: a snapshot due while one is still in
//! flight waits for it first (at the default interval, a second's records
//! apart, it is long done).

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::storage::datadir::{write_snapshot_in, DataDirError};

/// One snapshot for the thread to write.
struct Job {
    root: PathBuf,
    journal_position: u64,
    journal_index: u64,
    body: Vec<u8>,
}

/// A snapshot the thread wrote (or failed to).
pub(super) struct Written {
    pub journal_position: u64,
    pub journal_index: u64,
    pub bytes: usize,
    /// The oldest kept snapshot's journal position (the journal below it
    /// may go), or why the snapshot could not be written.
    pub result: Result<Option<u64>, DataDirError>,
    /// The body's buffer, handed back for the next snapshot.
    pub body: Vec<u8>,
}

pub(super) struct Snapshotter {
    jobs: Option<mpsc::Sender<Job>>,
    written: mpsc::Receiver<Written>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
    /// Written on the loop's thread because ours was gone.
    ready: Option<Written>,
    /// The last body's buffer, reused.
    spare: Vec<u8>,
}

impl Snapshotter {
    pub fn start() -> std::io::Result<Snapshotter> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, written) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("verity-snapshot".into())
            .spawn(move || {
                // Ends when the loop drops its sender.
                while let Ok(job) = rx.recv() {
                    if tx.send(write(job)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Snapshotter {
            jobs: Some(jobs),
            written,
            thread: Some(thread),
            in_flight: false,
            ready: None,
            spare: Vec::new(),
        })
    }

    /// A buffer for the next snapshot's body (empty, reused).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.spare);
        b.clear();
        b
    }

    /// Hands a snapshot to the thread. The caller has waited for the one
    /// in flight, if any ([`Snapshotter::wait`]).
    pub fn submit(
        &mut self,
        root: PathBuf,
        journal_position: u64,
        journal_index: u64,
        body: Vec<u8>,
    ) {
        debug_assert!(!self.in_flight);
        let job = Job {
            root,
            journal_position,
            journal_index,
            body,
        };
        self.in_flight = true;
        if let Some(Err(mpsc::SendError(job))) = self.jobs.as_ref().map(|j| j.send(job)) {
            // The thread is gone (it panicked): written here instead.
            self.ready = Some(write(job));
        }
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// The snapshot in flight, if it is written by now.
    pub fn poll(&mut self) -> Option<Written> {
        self.take(false)
    }

    /// Waits for the snapshot in flight, if any.
    pub fn wait(&mut self) -> Option<Written> {
        self.take(true)
    }

    fn take(&mut self, block: bool) -> Option<Written> {
        if !self.in_flight {
            return None;
        }
        let mut w = match (self.ready.take(), block) {
            (Some(w), _) => w,
            (None, true) => self.written.recv().ok()?,
            (None, false) => self.written.try_recv().ok()?,
        };
        self.in_flight = false;
        self.spare = std::mem::take(&mut w.body);
        Some(w)
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes one snapshot ([`write_snapshot_in`]).
fn write(job: Job) -> Written {
    let result = write_snapshot_in(
        &job.root,
        job.journal_position,
        job.journal_index,
        &job.body,
    )
    .map(|(_, oldest)| oldest);
    Written {
        journal_position: job.journal_position,
        journal_index: job.journal_index,
        bytes: job.body.len(),
        result,
        body: job.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::datadir::snapshots_in;

    #[test]
    fn a_snapshot_is_written_off_the_caller_and_handed_back_once() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("snapshots")).unwrap();
        let mut s = Snapshotter::start().unwrap();
        assert!(
            s.poll().is_none() && s.wait().is_none(),
            "nothing in flight"
        );
        for (i, body) in [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
            .into_iter()
            .enumerate()
        {
            let mut buf = s.buffer();
            assert!(buf.is_empty(), "a reused buffer comes back empty");
            buf.extend_from_slice(&body);
            s.submit(
                t.path().to_path_buf(),
                100 * i as u64,
                10 * i as u64 + 1,
                buf,
            );
            assert!(s.in_flight());
            let w = s.wait().expect("written");
            assert!(!s.in_flight());
            assert_eq!(
                (w.journal_position, w.journal_index, w.bytes),
                (100 * i as u64, 10 * i as u64 + 1, body.len())
            );
            // The oldest kept snapshot: the first until a third is written.
            let oldest = w.result.expect("written");
            assert_eq!(oldest, Some(if i < 2 { 0 } else { 100 }), "after {}", i + 1);
            assert!(s.poll().is_none(), "handed back once");
        }
        let kept = snapshots_in(t.path(), &mut Vec::new()).unwrap();
        let bodies: Vec<&[u8]> = kept.iter().map(|k| k.body.as_slice()).collect();
        assert_eq!(bodies, [b"second".as_slice(), b"third".as_slice()]);
    }

    #[test]
    fn a_failed_write_comes_back_as_an_error_naming_the_path() {
        let t = tempfile::tempdir().unwrap();
        // No `snapshots/` directory: the write fails.
        let mut s = Snapshotter::start().unwrap();
        let buf = s.buffer();
        s.submit(t.path().join("gone"), 0, 1, buf);
        let mut polled = None;
        while polled.is_none() {
            polled = s.poll();
            std::thread::yield_now();
        }
        let e = polled.unwrap().result.expect_err("no directory");
        assert!(e.path.to_string_lossy().contains("gone"), "{e}");
    }
}
