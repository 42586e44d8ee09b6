//! One segment file: created preallocated at its full size, mapped once, never
//! resized, so the mapping is fixed for the segment's life.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{MmapMut, MmapOptions};
use zerocopy::{FromBytes, IntoBytes};

use super::error::{LogError, Op};
use super::format::{self, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::memlock::lock_in_steps;

/// Page size assumed for prefaulting (touching more often is harmless).
const PAGE_BYTES: usize = 4096;

/// A segment file made ready off the log (a fresh `.tmp` file, or a spare
/// with its header rewritten), not yet part of the log.
pub(crate) struct Prepared {
    /// Where the file is now: `<base>.seg.tmp`, or `spare-<id>.seg` if
    /// recycled.
    pub path: PathBuf,
    pub base: u64,
    pub size_bytes: u64,
    /// Made from a spare: the data region still holds the old contents past
    /// the zeroed first record slot (see "Recycling" in the module docs).
    pub recycled: bool,
    /// Locked in memory (`lock_memory`).
    pub locked: bool,
    file: Arc<File>,
    map: MmapMut,
}

impl Prepared {
    /// Locks the mapping in memory (`LogConfig::lock_memory`): mlock
    /// faults in every page, which stays resident until unlocked.
    pub fn lock_memory(&mut self) -> Result<(), LogError> {
        if !self.locked {
            lock_in_steps(&self.map).map_err(|e| LogError::io(Op::LockMemory, &self.path, e))?;
            self.locked = true;
        }
        Ok(())
    }

    /// Gives up the unused file. A fresh `.tmp` is removed; a recycled one
    /// is left as the spare file it still is (the next open adopts or
    /// removes it).
    pub fn discard(self) {
        if !self.recycled {
            // Best effort: a leftover `.tmp` is removed by the next open anyway.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A segment file kept for reuse after `drop_below` (`spare-<id>.seg`): no
/// longer part of the log, still allocated and (usually) still resident and
/// mapped. Its contents are never read.
pub(crate) struct Spare {
    pub path: PathBuf,
    pub size_bytes: u64,
    file: Arc<File>,
    map: MmapMut,
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
    /// Reused from a spare: bytes past the end may be old contents.
    pub recycled: bool,
    /// Locked in memory (`lock_memory`): the active segment (and the one
    /// prepared next) only; a segment is unlocked when the log rolls past it.
    pub locked: bool,
}

impl Segment {
    /// Locks the mapping in memory (see [`Prepared::lock_memory`]).
    pub fn lock_memory(&mut self) -> Result<(), LogError> {
        if !self.locked {
            lock_in_steps(&self.map).map_err(|e| LogError::io(Op::LockMemory, &self.path, e))?;
            self.locked = true;
        }
        Ok(())
    }

    /// Lets the kernel reclaim the mapping's pages again (a sealed
    /// segment is read only for resends and replay).
    pub fn unlock_memory(&mut self) {
        if self.locked {
            // munlock of our own live mapping; it fails only for a range
            // not mapped, which this is.
            let _ = self.map.unlock();
            self.locked = false;
        }
    }

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
    /// page is populated now and (without `sync`) write-touched, so appends
    /// into it take no page faults; with `sync` the pages are mapped clean
    /// (see the comments inside). A `.tmp` file is never part of the log (open removes it).
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
                path: tmp_path,
                base,
                size_bytes,
                recycled: false,
                locked: false,
                file: Arc::new(file),
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
        if let Err(e) = fs::rename(&prepared.path, &path) {
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
            file: prepared.file,
            map: prepared.map,
            recycled: prepared.recycled,
            locked: prepared.locked,
        })
    }

    /// This segment, already renamed to `spare_path` by the caller, as a
    /// spare (the mapping and its pages are kept).
    pub fn into_spare(self, spare_path: PathBuf) -> Spare {
        Spare {
            path: spare_path,
            size_bytes: self.data_bytes + SEGMENT_HEADER_BYTES as u64,
            file: self.file,
            map: self.map,
        }
    }

    /// Makes `spare` ready to become the segment at `base` without renaming
    /// it yet: syncs the directory (so the rename that made it a spare is
    /// durable before its header changes: a power loss must never leave an
    /// old `<base>.seg` name over a new header), zeroes the first record
    /// slot's length field (so the segment reads as empty, see "Recycling"
    /// in the module docs), rewrites the header for `base`, and with `sync`
    /// makes that page durable. With `prefault` and not `sync`,
    /// write-touches every page (pages cleaned by writeback are
    /// write-protected again).
    pub fn recycle(
        spare: Spare,
        dir: &Path,
        base: u64,
        name_hash: u64,
        sync: bool,
        prefault: bool,
    ) -> Result<Prepared, LogError> {
        let Spare {
            path,
            size_bytes,
            file,
            mut map,
        } = spare;
        assert_eq!(map.len() as u64, size_bytes);
        assert!(size_bytes >= SEGMENT_HEADER_BYTES as u64 + RECORD_HEADER_BYTES as u64);
        sync_dir(dir)?;
        // Length field of the first record slot: from here on the data
        // region reads as empty whatever else it holds.
        map[SEGMENT_HEADER_BYTES..SEGMENT_HEADER_BYTES + 4].fill(0);
        let header = SegmentHeader::new(base, size_bytes, name_hash);
        map[..SEGMENT_HEADER_BYTES].copy_from_slice(header.as_bytes());
        // With sync the pages stay clean (they were all made durable before
        // the segment was dropped): write-touched, the syncer would write
        // the whole segment again at its first fdatasync after the roll.
        // They are faulted in for reading instead, here: a page reclaimed
        // since would otherwise be read back from disk by the loop's first
        // append into it.
        if prefault && sync {
            populate_read(&map);
        }
        if prefault && !sync {
            // Harmless to the argument: the old contents are never read, so
            // any byte of them may be overwritten.
            for page in map[SEGMENT_HEADER_BYTES..].chunks_mut(PAGE_BYTES) {
                page[page.len() - 1] = 0;
            }
        }
        if sync {
            // Header and zeroed slot share the first page.
            map.flush_range(0, SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES)
                .map_err(|e| LogError::io(Op::SyncData, &path, e))?;
        }
        Ok(Prepared {
            path,
            base,
            size_bytes,
            recycled: true,
            locked: false,
            file,
            map,
        })
    }

    /// Opens a spare file left by an earlier run. `Ok(None)` if it is not a
    /// usable spare of this log at `size_bytes` (the caller removes it).
    pub fn open_spare(
        path: &Path,
        name_hash: u64,
        size_bytes: u64,
        prefault: bool,
    ) -> Result<Option<Spare>, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| LogError::io(Op::Open, path, e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| LogError::io(Op::Metadata, path, e))?
            .len();
        if file_bytes != size_bytes {
            return Ok(None);
        }
        let map = map_file(&file, path, prefault)?;
        let Ok((header, _)) = SegmentHeader::read_from_prefix(&map[..]) else {
            return Ok(None);
        };
        // A header torn by a crash during `recycle`, or a file of another
        // log or size: not ours to reuse.
        if header.validate(name_hash).is_err() || header.size_bytes.get() != size_bytes {
            return Ok(None);
        }
        Ok(Some(Spare {
            path: path.to_path_buf(),
            size_bytes,
            file: Arc::new(file),
            map,
        }))
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
        // Allocation errors name the segment and, when the disk is full,
        // the bytes it needed.
        let alloc_err = |e| match LogError::io(Op::Allocate, tmp_path, e) {
            LogError::NoSpace { op, path, .. } => LogError::NoSpace {
                op,
                path,
                needed_bytes: size_bytes,
            },
            other => other,
        };
        preallocate(&file, size_bytes).map_err(alloc_err)?;
        if prefault {
            // Fill the page cache with write(2) first: whole-page writes
            // need no zero-fill of the (unwritten) blocks and no fault each,
            // which leaves the faults below only mapping cached, dirty pages.
            // CPU for 64 MiB on ext4: MAP_POPULATE + a write per page 35 ms;
            // a write per page alone 17-22 ms; pwrite of zeros + a write per
            // page 11 ms.
            // Not with sync: zeros written through the page cache are dirty
            // pages, and the syncer's first fdatasync after the roll (it
            // covers the whole file) wrote all 64 MiB of them before the
            // first record could be durable. Written out here instead (a
            // sync_data of the zeros on this thread), they competed with
            // the syncer for the disk: 40-115 ms output gaps. The
            // fallocated blocks read as zeros without it.
            if !sync {
                write_zeros(&file, size_bytes).map_err(alloc_err)?;
            }
        }
        // Without sync, not MAP_POPULATE: it maps shared file pages
        // read-only (for dirty tracking), so every page would then take a
        // second, write fault. With sync it is what we want: a page
        // write-touched here would be dirty, and the syncer's first
        // fdatasync after the roll would write all 64 MiB of zeros (and
        // write-protect every page again, one TLB-flush IPI each) before
        // it could make the first record durable. Mapped clean, each page
        // takes one write fault at its first append, as it would after any
        // sync anyway.
        let mut map = map_file(&file, tmp_path, prefault && sync)?;
        if prefault && !sync {
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
            recycled: false,
            locked: false,
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
    // never after. A spare (a dropped segment kept for reuse) is owned by
    // exactly one of the log's pool or, moved over a channel, the preparer:
    // the mapping moves with it, so one thread at a time writes it, and no
    // reader can reach it (readers borrow the log, and `drop_below` takes
    // `&mut self`). The syncer thread only calls fdatasync on the file
    // descriptor and never touches the memory.
    unsafe { options.map_mut(file) }.map_err(|e| LogError::io(Op::Map, path, e))
}

/// Faults in every page of `map` without dirtying any (fsync logs; see
/// [`Segment::recycle`]).
fn populate_read(map: &MmapMut) {
    // SAFETY: the whole of a live mapping this thread owns (a spare being
    // recycled); MADV_POPULATE_READ reads and writes no byte of it. Linux
    // before 5.14 refuses it: the pages then fault in at their first write.
    unsafe {
        libc::madvise(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            libc::MADV_POPULATE_READ,
        )
    };
}

/// Writes zeros over the whole (new, preallocated) file.
fn write_zeros(file: &File, size_bytes: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size_bytes {
        let n = (size_bytes - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
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
