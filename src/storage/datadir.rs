//! A node's data directory: lock file, epoch, logs, snapshots.
//!
//! ```text
//! <data_dir>/LOCK                         flock'ed while a node runs (holds its pid)
//! <data_dir>/EPOCH                        the epoch, decimal; +1 at every start
//! <data_dir>/SHAPE                        the cluster the data belongs to (one line, written at the first start)
//! <data_dir>/journal/, outbound/, dead-letters/   logs (crate::log)
//! <data_dir>/forward-N/                   frames forwarded to node N (cluster only)
//! <data_dir>/snapshots/<journal index:020>.snap  snapshots
//! ```
//!
//! What each log's records hold: [`super::records`].
//!
//! Snapshot file (little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | magic `VRTYSNAP` |
//! | 8  | 4 | crc32c of bytes 12..end |
//! | 12 | 4 | body length `n` |
//! | 16 | 8 | journal position: where replay starts (log position of the next record) |
//! | 24 | 8 | journal index: records the snapshot covers |
//! | 32 | n | the core's snapshot ([`crate::core::NodeCore::snapshot`]) |
//!
//! Written to a `.tmp` file, fsynced, renamed, and the directory fsynced, so a
//! crash leaves either the old or the new snapshot whole.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The journal's directory name: the inputs the node accepted.
pub const JOURNAL_LOG: &str = "journal";
/// The sink's outbound log: output frames until the sink ACKs them.
pub const OUTBOUND_LOG: &str = "outbound";
/// The dead-letter log: inputs the app rejected.
pub const DEAD_LETTER_LOG: &str = "dead-letters";
/// Prefix of the forwarding logs: `forward-N` keeps the frames sent on to
/// node N until it ACKs them ([`forward_log`]).
pub const FORWARD_LOG_PREFIX: &str = "forward-";

/// The directory name of the log of frames forwarded to node `node`.
pub fn forward_log(node: u32) -> String {
    format!("{FORWARD_LOG_PREFIX}{node}")
}

/// A data-directory failure, naming the path.
#[derive(Debug)]
pub struct DataDirError {
    pub path: PathBuf,
    pub what: String,
}

impl core::fmt::Display for DataDirError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for DataDirError {}

fn err(path: &Path, what: impl Into<String>) -> DataDirError {
    DataDirError {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// Holds the data directory's lock for as long as it lives.
pub struct DataDir {
    pub root: PathBuf,
    _lock: File,
    pub epoch: u32,
}

const SNAP_MAGIC: &[u8; 8] = b"VRTYSNAP";
const SNAP_HEADER: usize = 32;
/// Snapshots kept; older ones are deleted.
const SNAPSHOTS_KEPT: usize = 2;

pub struct LoadedSnapshot {
    pub path: PathBuf,
    pub journal_position: u64,
    pub journal_index: u64,
    pub body: Vec<u8>,
}

impl DataDir {
    /// Creates the directory if needed, takes the lock (failing if another
    /// process holds it) and increments the epoch.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(root).map_err(|e| err(root, format!("cannot create: {e}")))?;
        fs::create_dir_all(root.join("snapshots"))
            .map_err(|e| err(root, format!("cannot create snapshots/: {e}")))?;
        let lock_path = root.join("LOCK");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| err(&lock_path, format!("cannot open: {e}")))?;
        if let Err(e) = lock.try_lock() {
            if let std::fs::TryLockError::Error(e) = e {
                return Err(err(&lock_path, format!("cannot lock: {e}")));
            }
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            return Err(err(
                &lock_path,
                format!(
                    "data directory is in use by another verity process (pid {}); stop it first",
                    holder.trim()
                ),
            ));
        }
        lock.set_len(0)
            .and_then(|_| lock.write_all(std::process::id().to_string().as_bytes()))
            .map_err(|e| err(&lock_path, format!("cannot write pid: {e}")))?;
        let epoch_path = root.join("EPOCH");
        let previous = match fs::read_to_string(&epoch_path) {
            Ok(s) => s.trim().parse::<u32>().map_err(|_| {
                err(
                    &epoch_path,
                    format!("{:?} is not an epoch number", s.trim()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(err(&epoch_path, format!("cannot read: {e}"))),
        };
        let epoch = previous
            .checked_add(1)
            .ok_or_else(|| err(&epoch_path, "epoch overflow"))?;
        write_atomically(&epoch_path, epoch.to_string().as_bytes())?;
        Ok(DataDir {
            root: root.to_owned(),
            _lock: lock,
            epoch,
        })
    }

    /// The shape of the cluster this directory's data belongs to (cluster
    /// id, app, node, node count, partitions: [`crate::config::NodeToml::shape`]):
    /// written at the first start, compared at every other. Another shape
    /// would route keys elsewhere, or read another app's state: a clear
    /// error, before anything is opened.
    pub fn check_shape(&self, shape: &str) -> Result<(), DataDirError> {
        let path = self.root.join("SHAPE");
        match fs::read_to_string(&path) {
            Ok(found) if found.trim() == shape => Ok(()),
            Ok(found) => Err(err(
                &path,
                format!(
                    "this data directory belongs to `{}`, and the configuration says `{shape}`: a node cannot change its cluster, app, node or partitioning over the data it has (keys would go to other nodes); start it on a fresh data directory, or with the configuration the directory was made with",
                    found.trim()
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomically(&path, format!("{shape}\n").as_bytes())
            }
            Err(e) => Err(err(&path, format!("cannot read: {e}"))),
        }
    }

    /// Writes a snapshot ([`write_snapshot_in`]).
    pub fn write_snapshot(
        &self,
        journal_position: u64,
        journal_index: u64,
        body: &[u8],
    ) -> Result<PathBuf, DataDirError> {
        write_snapshot_in(&self.root, journal_position, journal_index, body).map(|(p, _)| p)
    }

    /// The newest snapshot whose checksum verifies; invalid ones are reported
    /// in `skipped` (path and reason) and left in place for inspection.
    pub fn newest_snapshot(
        &self,
        skipped: &mut Vec<String>,
    ) -> Result<Option<LoadedSnapshot>, DataDirError> {
        newest_snapshot_in(&self.root, skipped)
    }
}

/// Writes a snapshot into the data directory at `root` (a node's, open:
/// the caller holds its lock) and deletes all but the newest
/// [`SNAPSHOTS_KEPT`]. Returns its path and the oldest kept snapshot's
/// journal position (the journal below it may go). Takes no `&DataDir` so
/// that a thread of its own can write it (`runtime::snapshotter`).
pub fn write_snapshot_in(
    root: &Path,
    journal_position: u64,
    journal_index: u64,
    body: &[u8],
) -> Result<(PathBuf, Option<u64>), DataDirError> {
    let mut bytes = Vec::with_capacity(SNAP_HEADER + body.len());
    bytes.extend_from_slice(SNAP_MAGIC);
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&journal_position.to_le_bytes());
    bytes.extend_from_slice(&journal_index.to_le_bytes());
    bytes.extend_from_slice(body);
    let crc = verity_wire::crc32c(&bytes[12..]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    let dir = root.join("snapshots");
    let path = dir.join(format!("{journal_index:020}.snap"));
    write_atomically(&path, &bytes)?;
    let mut all = snapshot_files_in(&dir)?;
    while all.len() > SNAPSHOTS_KEPT {
        let (_, old) = all.remove(0);
        let _ = fs::remove_file(old);
    }
    let oldest = all
        .first()
        .and_then(|(_, p)| read_snapshot(p).ok())
        .map(|s| s.journal_position);
    Ok((path, oldest))
}

/// [`DataDir::newest_snapshot`] of the data directory at `root`, read only:
/// no lock, no epoch change (for tools such as `verity-replay`).
pub fn newest_snapshot_in(
    root: &Path,
    skipped: &mut Vec<String>,
) -> Result<Option<LoadedSnapshot>, DataDirError> {
    for (_, path) in snapshot_files_in(&root.join("snapshots"))?
        .into_iter()
        .rev()
    {
        match read_snapshot(&path) {
            Ok(s) => return Ok(Some(s)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Ok(None)
}

/// Every snapshot of the data directory at `root` whose checksum verifies,
/// oldest first, read only; invalid ones are reported in `skipped`.
pub fn snapshots_in(
    root: &Path,
    skipped: &mut Vec<String>,
) -> Result<Vec<LoadedSnapshot>, DataDirError> {
    let mut v = Vec::new();
    for (_, path) in snapshot_files_in(&root.join("snapshots"))? {
        match read_snapshot(&path) {
            Ok(s) => v.push(s),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Ok(v)
}

fn snapshot_files_in(dir: &Path) -> Result<Vec<(u64, PathBuf)>, DataDirError> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| err(dir, format!("cannot list: {e}")))? {
        let entry = entry.map_err(|e| err(dir, format!("cannot list: {e}")))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".snap")
            .and_then(|n| n.parse::<u64>().ok())
        {
            v.push((n, entry.path()));
        }
    }
    v.sort();
    Ok(v)
}

fn read_snapshot(path: &Path) -> Result<LoadedSnapshot, DataDirError> {
    let bytes = fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    if bytes.len() < SNAP_HEADER || &bytes[..8] != SNAP_MAGIC {
        return Err(err(path, "not a snapshot (bad magic or too short)"));
    }
    let le32 =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let le64 = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let n = le32(12) as usize;
    if bytes.len() != SNAP_HEADER + n {
        return Err(err(
            path,
            format!(
                "length {} does not match header ({})",
                bytes.len(),
                SNAP_HEADER + n
            ),
        ));
    }
    if verity_wire::crc32c(&bytes[12..]) != le32(8) {
        return Err(err(path, "checksum mismatch (corrupt snapshot)"));
    }
    Ok(LoadedSnapshot {
        path: path.to_owned(),
        journal_position: le64(16),
        journal_index: le64(24),
        body: bytes[SNAP_HEADER..].to_vec(),
    })
}

/// Writes `bytes` to `path` via a fsynced temporary file and a rename, then
/// fsyncs the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| err(&tmp, format!("cannot create: {e}")))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| err(&tmp, format!("cannot write: {e}")))?;
    fs::rename(&tmp, path).map_err(|e| err(path, format!("cannot rename into place: {e}")))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_grows_at_every_open_and_the_lock_keeps_a_second_node_out() {
        let t = tempfile::tempdir().unwrap();
        let a = DataDir::open(t.path()).unwrap();
        assert_eq!(a.epoch, 1);
        let e = DataDir::open(t.path()).err().expect("locked");
        assert!(e.what.contains("in use by another verity process"), "{e}");
        drop(a);
        assert_eq!(DataDir::open(t.path()).unwrap().epoch, 2);
    }

    #[test]
    fn the_shape_is_recorded_once_and_another_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let a = "cluster_id=1 app=doubler node_id=1 node=0 nodes=3 partitions=4096";
        let d = DataDir::open(t.path()).unwrap();
        d.check_shape(a).unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("SHAPE")).unwrap(),
            format!("{a}\n")
        );
        d.check_shape(a).unwrap();
        let e = d
            .check_shape("cluster_id=1 app=doubler node_id=1 node=0 nodes=3 partitions=1024")
            .unwrap_err();
        assert!(e.what.contains(&format!("belongs to `{a}`")), "{e}");
        assert!(e.what.contains("partitions=1024`: a node cannot"), "{e}");
        assert_eq!(
            fs::read_to_string(t.path().join("SHAPE")).unwrap(),
            format!("{a}\n"),
            "a refused shape changes nothing"
        );
    }

    #[test]
    fn the_newest_valid_snapshot_wins_and_a_corrupt_one_is_skipped() {
        let t = tempfile::tempdir().unwrap();
        let d = DataDir::open(t.path()).unwrap();
        d.write_snapshot(100, 10, b"first").unwrap();
        let p2 = d.write_snapshot(200, 20, b"second").unwrap();
        let mut skipped = Vec::new();
        let s = d.newest_snapshot(&mut skipped).unwrap().unwrap();
        assert_eq!(
            (s.journal_position, s.journal_index, &s.body[..]),
            (200, 20, &b"second"[..])
        );
        let mut bytes = fs::read(&p2).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&p2, bytes).unwrap();
        let s = d.newest_snapshot(&mut skipped).unwrap().unwrap();
        assert_eq!(s.journal_index, 10);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("checksum mismatch"));
        d.write_snapshot(300, 30, b"third").unwrap();
        assert_eq!(
            snapshot_files_in(&t.path().join("snapshots"))
                .unwrap()
                .len(),
            SNAPSHOTS_KEPT
        );
    }
}
