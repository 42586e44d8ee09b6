//! One segment file: created preallocated at its full size, mapped once, never
//! resized, so the mapping is fixed for the segment's life.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};
use zerocopy::{FromBytes, IntoBytes};

use super::error::{LogError, Op};
use super::format::{self, SegmentHeader, SEGMENT_HEADER_BYTES};

/// Page size assumed for prefaulting (touching more often is harmless).
const PAGE_BYTES: usize = 4096;

/// A segment file created as `.tmp`, not yet part of the log.
pub(crate) struct Prepared {
    pub tmp_path: PathBuf,
    pub base: u64,
    pub size_bytes: u64,
    file: File,
    map: MmapMut,
}

impl Prepared {
    /// Removes the unused file.
    pub fn discard(self) {
        // Best effort: a leftover `.tmp` is removed by the next open anyway.
        let _ = fs::remove_file(&self.tmp_path);
    }
}

pub(crate) struct Segment {
    pub path: PathBuf,
    /// Position of the first byte of the data region.
    pub base: u64,
    /// Bytes of the data region (file size minus the segment header).
    pub data_bytes: u64,
    /// Shared with the syncer thread (fdatasync also writes back pages
    /// dirtied through the shared mapping).
    pub file: Arc<File>,
    pub map: MmapMut,
}

impl Segment {
    /// First position past this segment's data region.
    pub fn limit(&self) -> u64 {
        self.base + self.data_bytes
    }

    /// The data region (records), starting at position `base`.
    pub fn data(&self) -> &[u8] {
        &self.map[SEGMENT_HEADER_BYTES..]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.map[SEGMENT_HEADER_BYTES..]
    }

    /// File offset of `position` (for error messages).
    pub fn file_offset(&self, position: u64) -> u64 {
        SEGMENT_HEADER_BYTES as u64 + position.saturating_sub(self.base)
    }

    /// Creates `<dir>/<base>.seg` of `size_bytes`: [`Segment::prepare`]
    /// then [`Segment::install`]. On error nothing is left behind.
    pub fn create(
        dir: &Path,
        base: u64,
        size_bytes: u64,
        name_hash: u64,
        sync: bool,
        prefault: bool,
    ) -> Result<Segment, LogError> {
        let prepared = Self::prepare(dir, base, size_bytes, name_hash, sync, prefault)?;
        Self::install(prepared, dir, sync)
    }

    /// Creates `<dir>/<base>.seg.tmp`: space reserved with fallocate (so a
    /// full disk shows up here as `NoSpace` rather than as SIGBUS on a later
    /// store into the mapping), mapped, header written. With `prefault`, every
    /// page is populated and write-touched now, so appends into it take no
    /// page faults. A `.tmp` file is never part of the log (open removes it).
    pub fn prepare(
        dir: &Path,
        base: u64,
        size_bytes: u64,
        name_hash: u64,
        sync: bool,
        prefault: bool,
    ) -> Result<Prepared, LogError> {
        let tmp_path = dir.join(format!("{}.tmp", format::segment_file_name(base)));
        match Self::create_tmp(&tmp_path, base, size_bytes, name_hash, sync, prefault) {
            Ok((file, map)) => Ok(Prepared {
                tmp_path,
                base,
                size_bytes,
                file,
                map,
            }),
            Err(error) => {
                // Best effort: the error being returned is the one that matters.
                let _ = fs::remove_file(&tmp_path);
                Err(error)
            }
        }
    }

    /// Renames a prepared segment into place: from here on it is part of the
    /// log.
    pub fn install(prepared: Prepared, dir: &Path, sync: bool) -> Result<Segment, LogError> {
        let path = dir.join(format::segment_file_name(prepared.base));
        if let Err(e) = fs::rename(&prepared.tmp_path, &path) {
            prepared.discard();
            return Err(LogError::io(Op::Rename, &path, e));
        }
        if sync {
            sync_dir(dir)?;
        }
        Ok(Segment {
            path,
            base: prepared.base,
            data_bytes: prepared.size_bytes - SEGMENT_HEADER_BYTES as u64,
            file: Arc::new(prepared.file),
            map: prepared.map,
        })
    }

    fn create_tmp(
        tmp_path: &Path,
        base: u64,
        size_bytes: u64,
        name_hash: u64,
        sync: bool,
        prefault: bool,
    ) -> Result<(File, MmapMut), LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp_path)
            .map_err(|e| LogError::io(Op::Open, tmp_path, e))?;
        preallocate(&file, size_bytes).map_err(|e| {
            match LogError::io(Op::Allocate, tmp_path, e) {
                LogError::NoSpace { op, path, .. } => LogError::NoSpace {
                    op,
                    path,
                    needed_bytes: size_bytes,
                },
                other => other,
            }
        })?;
        let mut map = map_file(&file, tmp_path, prefault)?;
        if prefault {
            // MAP_POPULATE maps shared file pages read-only (for dirty
            // tracking); a write per page takes the write fault now.
            for page in map.chunks_mut(PAGE_BYTES) {
                page[0] = 0;
            }
        }
        let header = SegmentHeader::new(base, size_bytes, name_hash);
        map[..SEGMENT_HEADER_BYTES].copy_from_slice(header.as_bytes());
        if sync {
            map.flush_range(0, SEGMENT_HEADER_BYTES)
                .map_err(|e| LogError::io(Op::SyncData, tmp_path, e))?;
        }
        Ok((file, map))
    }

    /// Opens and maps an existing segment, validating its header against its
    /// file name, its size and the log's name hash.
    pub fn open(path: &Path, name_base: u64, name_hash: u64) -> Result<Segment, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| LogError::io(Op::Open, path, e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| LogError::io(Op::Metadata, path, e))?
            .len();
        let bad = |reason| LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason,
        };
        if file_bytes < SEGMENT_HEADER_BYTES as u64 {
            return Err(bad("file shorter than the segment header"));
        }
        let map = map_file(&file, path, false)?;
        let (header, _) =
            SegmentHeader::read_from_prefix(&map[..]).map_err(|_| bad("unreadable header"))?;
        header.validate(name_hash).map_err(bad)?;
        if header.size_bytes.get() != file_bytes {
            return Err(bad("file size differs from the size in the header"));
        }
        if header.base_position.get() != name_base {
            return Err(LogError::BadSegmentName {
                path: path.to_path_buf(),
                reason: "name differs from the base position in the header",
            });
        }
        Ok(Segment {
            path: path.to_path_buf(),
            base: name_base,
            data_bytes: file_bytes - SEGMENT_HEADER_BYTES as u64,
            file: Arc::new(file),
            map,
        })
    }
}

fn map_file(file: &File, path: &Path, populate: bool) -> Result<MmapMut, LogError> {
    let mut options = MmapOptions::new();
    if populate {
        options.populate();
    }
    // SAFETY: the mapping is only sound while nobody else resizes or writes
    // the file behind our back. The log holds an exclusive flock on
    // `<dir>/<name>/LOCK` for as long as it exists (no second Verity process
    // opens this log), segment files are never truncated or resized after
    // creation, and the `Segment` owning this mapping is owned by exactly one
    // `Log`, which writes it only through `&mut self`. A segment prepared
    // ahead is written by the preparer thread only before it is sent to the
    // log over a channel (which orders those writes before the log's) and
    // never after. The syncer thread only calls fdatasync on the file
    // descriptor and never touches the memory.
    unsafe { options.map_mut(file) }.map_err(|e| LogError::io(Op::Map, path, e))
}

/// Reserves the blocks of the whole file so later stores cannot hit ENOSPC.
fn preallocate(file: &File, size_bytes: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(size_bytes)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: fallocate on a file descriptor we own for the duration of the
    // call; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        // File systems without fallocate: fall back to a sparse file.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(size_bytes),
        _ => Err(error),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(Op::SyncDir, dir, e))
}
