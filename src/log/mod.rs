//! # Segmented, mmap-backed log
//!
//! Used for the journal, outbound logs and trace/audit logs (DESIGN §3, §5).
//! One writer (the node's loop, through `&mut Log`), readers and a tailing
//! cursor in the same process, an optional syncer thread for `fsync`
//! durability.
//!
//! ## Files
//!
//! ```text
//! <dir>/<log-name>/LOCK                        flock'ed while a Log is open
//! <dir>/<log-name>/<base position:020>.seg     segments, e.g. 00000000000000000000.seg
//! <dir>/<log-name>/<base position:020>.seg.tmp a segment being created (removed on open)
//! <dir>/<log-name>/spare-<id>.seg              a dropped segment kept for reuse; never
//!                                              part of the log (adopted or removed on open)
//! ```
//!
//! Every segment file is created at its full size (`segment_size_bytes`,
//! reserved with `fallocate`) and mapped once; it is never resized. The next
//! segment is prepared ahead on a background thread (a new `.tmp` file, or a
//! recycled spare) and renamed into place at the roll.
//!
//! ## Positions
//!
//! A position is a logical byte offset (u64). A segment with base position
//! `B` and size `S` holds positions `[B, B + S - 64)`: the byte at position
//! `P` lives at file offset `64 + (P - B)`. The next segment's base is
//! exactly `B + S - 64` (checked on open: a mismatch is
//! [`LogError::SegmentGap`]). A record's position is the position of its
//! first header byte; the next record follows at `P + align8(length)`. When a
//! record does not fit in the rest of a segment, the log rolls and the record
//! goes to the next segment's base, so the positions of the unused tail of a
//! sealed segment are skipped. Positions are therefore strictly increasing,
//! 8-aligned, and not dense across segment boundaries.
//!
//! ## Segment header (64 bytes, little-endian)
//!
//! | offset | size | field          | meaning                                        |
//! |-------:|-----:|----------------|------------------------------------------------|
//! | 0      | 8    | magic          | `b"VRTYLOG\0"`                                 |
//! | 8      | 4    | version        | 1                                              |
//! | 12     | 4    | header_bytes   | 64                                             |
//! | 16     | 8    | base_position  | position of data byte 0; equals the file name  |
//! | 24     | 8    | size_bytes     | file size, multiple of 8, 256 B ..= 4 GiB      |
//! | 32     | 8    | name_hash      | FNV-1a 64 of the log name                      |
//! | 40     | 20   | reserved       | zero                                           |
//! | 60     | 4    | crc            | CRC32C of bytes 0..60                          |
//!
//! ## Record (32-byte header + payload, padded with zeroes to 8 bytes)
//!
//! | offset | size | field     | meaning                                              |
//! |-------:|-----:|-----------|------------------------------------------------------|
//! | 0      | 4    | length    | header + payload bytes, unpadded; **written last**; 0 = no record |
//! | 4      | 4    | kind      | record kind (the caller's)                           |
//! | 8      | 8    | position  | the record's own position (catches misplaced bytes)  |
//! | 16     | 8    | timestamp | the caller's clock reading                           |
//! | 24     | 4    | crc       | CRC32C of bytes 0..24 (with the final length) then the payload |
//! | 28     | 4    | reserved  | zero                                                 |
//! | 32     | n    | payload   |                                                      |
//!
//! A record is valid iff `32 <= length <= bytes left in the segment`,
//! `position` matches, `reserved == 0` and the CRC matches. Readers stop at
//! the first invalid record.
//!
//! ## Recycling
//!
//! [`Log::drop_below`] renames up to [`LogConfig::spare_segments`] dropped
//! segments to `spare-<id>.seg` instead of unlinking them, keeping their
//! mappings. A later roll reuses one (`Segment::recycle`, on the preparer
//! thread when `prepare_ahead`): fsync the directory, zero the
//! length field of the first record slot, rewrite the header for the new
//! base, (`fsync` durability) msync that page, then rename the spare to
//! `<base>.seg`. This skips fallocate and the kernel's allocation, zeroing
//! and faulting-in of fresh page-cache pages, which bound the sustained
//! append rate (`cargo bench --bench log`, 64 MiB segments, last two kept:
//! 4 KiB appends at 6–15% of memcpy with new files, 60% and about
//! in-segment speed recycled; 64 B at ~9 M vs ~25–30 M records/s). Numbers: one 64 MiB segment is 16384 pages;
//! recycling touches one byte per page (`prefault`) and rewrites one page.
//!
//! The data region of a recycled segment still holds its old records and
//! payloads past the end of the log. None of it is ever read as a record:
//!
//! 1. *The end always reads as empty.* Every append clears the length field
//!    of the slot right after its record (`append_with`) before it stores
//!    its own length (program order, compiler fence; x86 and the page cache
//!    keep store order, and a `kill -9` stops between instructions; large
//!    payloads are copied with non-temporal stores, which x86 does not keep
//!    in order, so an `sfence` precedes the header). So when
//!    a record is committed, the slot after it already has length 0. The
//!    first slot's length is zeroed when the segment is recycled, before it
//!    is renamed into the log; recovery zeroes everything from the end it
//!    found to the last non-zero byte. By induction, the length field at the
//!    log's end is zero at every instant, whatever old bytes surround it.
//! 2. *Readers and recovery only look at slots on the chain.* A slot is
//!    read only at the segment's base or right after a valid record, and
//!    the chain stops at the first invalid slot, i.e. at the zeroed end. Old
//!    bytes beyond it are never parsed, so an old record, or an old payload
//!    that happens to (or was crafted to) look like a header with the right
//!    position and CRC, cannot be reached.
//! 3. *A torn append is no different from one in a fresh segment.* The
//!    length at the slot being written is 0 until the final store (by 1),
//!    so a crash mid-append leaves "no record" there, never a mix of a new
//!    header and an old length.
//! 4. *Defence in depth.* An old record header carries its old position,
//!    below the new base (spares come from below the active segment, new
//!    segments go above it), so the position check rejects it anyway.
//!
//! A machine crash (not `kill -9`) can lose any page not yet synced, so at
//! `fsync` durability the syncer reports nothing durable in a recycled
//! segment before its header and zeroed first slot were msynced and its name
//! fsynced (both before the segment joins the log). Past the durable
//! position, as for a fresh segment, a torn page is caught by the CRC and
//! position checks; in a recycled segment the bytes of such a page may be
//! old contents, whose headers fail the position check (point 4).
//!
//! The directory fsync before the header rewrite makes the rename away from
//! `<old base>.seg` durable first, so a power loss cannot leave an old name
//! over a new header (which open would refuse). On open, spare files with a
//! valid header of this log and the configured segment size are adopted (up
//! to `spare_segments`); others (torn header, other size, too many) are
//! removed ([`Recovery::spares_adopted`], [`Recovery::spare_files_removed`]).
//! A clean close zeroes the old contents past the end of a recycled active
//! segment, so the next open reports no dropped bytes; after a crash in a
//! recycled segment, [`Recovery::bytes_dropped`] includes them.
//!
//! ## Recovery (on open)
//!
//! Segment names, headers and contiguity are checked for every segment. The
//! last segment is scanned from its base: the first invalid record (zero or
//! impossible length, bad CRC, wrong position) ends the log, and every byte
//! from there to the last non-zero byte of the segment is zeroed (reported as
//! [`Recovery::bytes_dropped`]). Sealed segments are not scanned on open (a
//! crash can only tear the last one); readers verify every record anyway.
//!
//! ## Durability
//!
//! - [`Durability::Process`]: a record is durable once `append` returns (it
//!   is in the shared mapping, i.e. the page cache, which survives `kill -9`).
//! - [`Durability::Fsync`]: group commit. `append` publishes the new end
//!   through [`DurableMark`]; [`Log::commit`] wakes the syncer thread, which
//!   fdatasyncs what was appended and publishes "durable below P";
//!   [`Log::durable_position`] reads it without blocking.
//!
//! ## Failures
//!
//! Running out of disk shows up when a segment is created (the space is
//! reserved up front), as [`LogError::NoSpace`]: nothing written is touched,
//! the append did not happen, and the caller stops taking input and retries.
//!
//! ## Limits
//!
//! Segment size 256 B ..= 4 GiB ([`format::SEGMENT_SIZE_MIN_BYTES`],
//! [`format::SEGMENT_SIZE_MAX_BYTES`]); payload at most
//! `segment_size_bytes - 96`; log names at most [`LOG_NAME_MAX_BYTES`] bytes;
//! at most [`SPARE_SEGMENTS_MAX`] spares (plus one being recycled).

mod durable;
mod error;
pub mod format;
mod memlock;
mod offline;
mod populate;
mod preparer;
mod reader;
mod recovery;
mod segment;
mod syncer;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};

pub use durable::{DurableMark, WaitError};
pub use error::{LogError, Op};
pub use offline::{OfflineLog, OfflineReader, OfflineRecord, ScanEnd};
pub use reader::{Reader, Record, Tailer};
pub use recovery::Recovery;

use format::{align_up, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use memlock::check_memlock;
use populate::Populator;
use preparer::Preparer;
use segment::{Segment, Spare};
use syncer::{SyncFile, Syncer};

/// A logical byte offset in a log (see the module docs).
pub type Position = u64;

/// Longest log name (it becomes a directory name).
pub const LOG_NAME_MAX_BYTES: usize = 64;

/// Most spare segments a log keeps for recycling ([`LogConfig::spare_segments`]).
pub const SPARE_SEGMENTS_MAX: usize = 8;

/// Payloads from this size on are copied into the mapping with
/// non-temporal stores ([`Log::append`]).
pub const STREAM_COPY_MIN_BYTES: usize = 4096;

/// Copies that bypass the cache.
mod stream {
    /// `dst.copy_from_slice(src)`, with non-temporal stores on x86-64 for
    /// the 16-byte-aligned middle of `dst`; [`fence`] before any store that
    /// must be seen after these.
    #[inline]
    pub(super) fn copy(dst: &mut [u8], src: &[u8]) {
        assert_eq!(dst.len(), src.len());
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
            let head = dst.as_ptr().align_offset(16).min(dst.len());
            let body = (dst.len() - head) / 16 * 16;
            dst[..head].copy_from_slice(&src[..head]);
            let mut i = head;
            while i < head + body {
                // SAFETY: `i + 16 <= head + body <= len` for both slices;
                // `dst + i` is 16-byte aligned (`head` aligns it, `i - head`
                // is a multiple of 16); `loadu` has no alignment need; SSE2
                // is part of x86-64.
                unsafe {
                    let v = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                    _mm_stream_si128(dst.as_mut_ptr().add(i) as *mut __m128i, v);
                }
                i += 16;
            }
            dst[i..].copy_from_slice(&src[i..]);
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        dst.copy_from_slice(src);
    }

    /// Orders the non-temporal stores before every later store (`sfence`).
    #[inline]
    pub(super) fn fence() {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: `sfence` has no preconditions; SSE is part of x86-64.
        unsafe {
            core::arch::x86_64::_mm_sfence()
        };
    }
}

/// Spare ids at or above this in a file name are not adopted at open (so the
/// id counter can never wrap).
const SPARE_ID_LIMIT: u64 = 1 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Durable once written into the mapping (survives `kill -9`).
    Process,
    /// Durable once the syncer's fdatasync covering it has returned.
    Fsync,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of every new segment file, header included.
    pub segment_size_bytes: u64,
    pub durability: Durability,
    /// Refuse to create a segment that would take the log's files past this
    /// many bytes ([`LogError::NoSpace`], as for a full disk). For quotas and
    /// for testing backpressure.
    pub disk_limit_bytes: Option<u64>,
    /// Pre-fault every page of a new segment when it is created (a new
    /// file: zeros written with `pwrite`, then a store per page; an adopted
    /// spare: `MAP_POPULATE`), moving page-fault cost from appends to
    /// segment creation. A new log's first segment is the exception: it is
    /// created at open without it and faulted in by a thread of its own
    /// (`MADV_POPULATE_WRITE`) a step ahead of the appends (`populate`),
    /// so opening an empty data directory stays quick.
    pub prefault: bool,
    /// Keep the active segment (and the one prepared next) locked in
    /// memory (`mlock`), so that the kernel never reclaims its pages
    /// between the prefault and the appends (see `populate`). Needs
    /// `RLIMIT_MEMLOCK` of at least two segments per log (checked at open).
    pub lock_memory: bool,
    /// Create the next segment on a background thread while appending to
    /// the current one (asked half-way through it), so a roll on the hot
    /// path is a rename.
    pub prepare_ahead: bool,
    /// How many segments removed by [`Log::drop_below`] to keep as spare
    /// files (`spare-<id>.seg`) for reuse as later segments, at most
    /// [`SPARE_SEGMENTS_MAX`]. Reusing one skips fallocate and the kernel's
    /// allocation and zeroing of fresh page-cache pages: its pages are
    /// already allocated and usually still resident and mapped. `0` unlinks
    /// dropped segments. Spares take disk space (and count against
    /// `disk_limit_bytes`) until reused. See "Recycling" in the module docs.
    pub spare_segments: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: 32 << 20,
            durability: Durability::Process,
            disk_limit_bytes: None,
            prefault: true,
            lock_memory: false,
            prepare_ahead: true,
            spare_segments: 2,
        }
    }
}

pub struct Log {
    dir: PathBuf,
    name_hash: u64,
    config: LogConfig,
    /// Never empty; the last one is the active segment.
    segments: Vec<Segment>,
    /// Position the next record goes to.
    end: u64,
    /// Segments started by appends since open ([`Log::rolls`]).
    rolls: u64,
    syncer: Option<Syncer>,
    preparer: Option<Preparer>,
    /// Faults in the pages of a new log's first segment off the caller's
    /// thread, a step ahead of the appends ([`populate`]); joined before
    /// that segment can be unmapped.
    populate: Option<Populator>,
    /// The append position at which the preparer is asked for the next
    /// segment (half-way through the active one); `u64::MAX` once asked.
    prepare_at: u64,
    /// Dropped segments kept for reuse, all of `segment_size_bytes`; at most
    /// `spare_segments` (plus one in the preparer's hands).
    spares: Vec<Spare>,
    /// Id for the next spare file name (above every id seen at open).
    next_spare_id: u64,
    /// Holds the flock for the life of the log.
    _lock: File,
}

impl Log {
    /// Opens (or creates) the log `<dir>/<name>`, recovering its tail. `dir`
    /// must exist.
    pub fn open(dir: &Path, name: &str, config: LogConfig) -> Result<(Log, Recovery), LogError> {
        validate_config(name, &config)?;
        let log_dir = dir.join(name);
        match fs::create_dir(&log_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && log_dir.is_dir() => {}
            Err(e) => return Err(LogError::io(error::Op::CreateDir, &log_dir, e)),
        }
        let lock = lock_dir(&log_dir)?;
        let name_hash = format::name_hash(name);
        let sync = config.durability == Durability::Fsync;

        let listing = recovery::list_segments(&log_dir)?;
        let mut segments = Vec::with_capacity(listing.segments.len().max(1));
        for (base, path) in &listing.segments {
            segments.push(Segment::open(path, *base, name_hash)?);
        }
        recovery::check_contiguous(&segments)?;
        let (spares, next_spare_id, spare_files_removed) =
            adopt_spares(&listing.spares, name_hash, &config)?;
        let mut populate = None;
        let created = segments.is_empty();
        if created {
            // A new log: its first segment is created without prefaulting,
            // so that opening stays quick (a node listens within
            // milliseconds of its start); its pages are faulted in on
            // another thread instead, a step ahead of the appends.
            let first = Segment::create(
                &log_dir,
                0,
                config.segment_size_bytes,
                name_hash,
                sync,
                false,
            )?;
            if config.prefault {
                populate = Populator::start(&first, config.lock_memory, sync);
            }
            segments.push(first);
        }
        let last_index = segments.len() - 1;
        let scan = match created {
            // Created just now: nothing but zeros past its header, nothing to
            // recover (scanning its 64 MiB for a torn tail would fault in
            // every page before the node can listen).
            true => recovery::TailScan {
                records: 0,
                end: segments[last_index].base,
                bytes_dropped: 0,
                stopped_because: None,
            },
            false => recovery::scan_and_truncate(&mut segments[last_index]),
        };
        if sync {
            // A previous run at `process` durability (or one killed before
            // its syncer caught up) may have left recovered records only in
            // the page cache: make them durable before reporting them so.
            // Pages already clean make this cheap.
            for segment in &segments {
                segment
                    .file
                    .sync_data()
                    .map_err(|e| LogError::io(error::Op::SyncData, &segment.path, e))?;
            }
        }
        let syncer = if sync {
            let files = segments
                .iter()
                .map(|s| SyncFile {
                    base: s.base,
                    limit: s.limit(),
                    path: s.path.clone(),
                    file: std::sync::Arc::clone(&s.file),
                })
                .collect();
            // Everything recovery kept was synced above.
            Some(Syncer::start(scan.end, files, &log_dir)?)
        } else {
            None
        };
        let preparer = if config.prepare_ahead {
            Some(Preparer::start(
                &log_dir,
                config.segment_size_bytes,
                name_hash,
                sync,
                config.prefault,
                config.lock_memory,
            )?)
        } else {
            None
        };
        if config.lock_memory {
            check_memlock(&log_dir, config.segment_size_bytes)?;
            if !created {
                segments[last_index].lock_memory()?;
            }
        }
        let prepare_at = half_way(&segments[last_index]);
        let recovery = Recovery {
            segments: segments.len(),
            records: scan.records,
            bytes_dropped: scan.bytes_dropped,
            stopped_because: scan.stopped_because,
            tmp_files_removed: listing.tmp_removed,
            spares_adopted: listing.spares.len() - spare_files_removed,
            spare_files_removed,
            end_position: scan.end,
        };
        let log = Log {
            dir: log_dir,
            name_hash,
            config,
            segments,
            end: scan.end,
            rolls: 0,
            syncer,
            preparer,
            populate,
            prepare_at,
            spares,
            next_spare_id,
            _lock: lock,
        };
        Ok((log, recovery))
    }

    /// Appends a record with `payload` copied in. Returns its position.
    ///
    /// A payload of at least [`STREAM_COPY_MIN_BYTES`] is copied with
    /// non-temporal stores (the mapping is not read again soon: only by
    /// recovery, replay and resends) and its CRC computed from `payload`,
    /// not read back: the node's journal and outbound copies of a 64 KiB
    /// batch then neither pay for reading the destination lines in nor
    /// evict the working set (market spread's per-symbol state).
    pub fn append(
        &mut self,
        kind: u32,
        timestamp: u64,
        payload: &[u8],
    ) -> Result<Position, LogError> {
        if payload.len() >= STREAM_COPY_MIN_BYTES {
            return self.append_inner(kind, timestamp, payload.len(), Some(payload), |buf| {
                stream::copy(buf, payload)
            });
        }
        self.append_with(kind, timestamp, payload.len(), |buf| {
            buf.copy_from_slice(payload)
        })
    }

    /// Appends a record of `len` payload bytes written in place by `fill`
    /// (e.g. read straight from a socket into the mapping). The record is
    /// committed (length field stored) only after `fill` returns.
    pub fn append_with<F: FnOnce(&mut [u8])>(
        &mut self,
        kind: u32,
        timestamp: u64,
        len: usize,
        fill: F,
    ) -> Result<Position, LogError> {
        self.append_inner(kind, timestamp, len, None, fill)
    }

    /// `append_with`; with `source`, the bytes `fill` writes (the CRC is
    /// computed from them rather than from the mapping).
    #[inline]
    fn append_inner<F: FnOnce(&mut [u8])>(
        &mut self,
        kind: u32,
        timestamp: u64,
        len: usize,
        source: Option<&[u8]>,
        fill: F,
    ) -> Result<Position, LogError> {
        let max = self.max_payload_bytes();
        if len as u64 > max {
            return Err(LogError::RecordTooLarge {
                payload_bytes: len as u64,
                max_bytes: max,
            });
        }
        let length = RECORD_HEADER_BYTES + len;
        let span = align_up(length as u64);
        if self.end + span > self.active().limit() {
            self.roll()?;
        }
        let position = self.end;
        let segment = self.active_mut();
        assert!(position >= segment.base && position + span <= segment.limit());
        let offset = (position - segment.base) as usize;
        let data = segment.data_mut();
        // Clear the length field of the slot after this record before this
        // record is committed: the slot the log ends at always reads as
        // empty, even in a recycled segment whose old contents are still
        // there (see "Recycling" in the module docs). A slot with no room
        // for a header reads as the end anyway.
        let next = offset + span as usize;
        if next + RECORD_HEADER_BYTES <= data.len() {
            data[next..next + 4].fill(0);
        }
        let record = &mut data[offset..offset + span as usize];
        // The length field must still be zero: nothing is ever written past
        // `end` except by an append in progress.
        debug_assert_eq!(&record[..4], &[0, 0, 0, 0]);

        let (header_bytes, body) = record.split_at_mut(RECORD_HEADER_BYTES);
        let (payload, padding) = body.split_at_mut(len);
        fill(payload);
        padding.fill(0);
        let header =
            format::encode_record_header(kind, position, timestamp, source.unwrap_or(payload));
        // Non-temporal stores of `fill` are ordered before the stores below.
        stream::fence();
        header_bytes[4..].copy_from_slice(&header[4..]);
        // The length goes in last: a record whose length is set is complete.
        // The fence keeps the compiler from sinking the stores above (the
        // next slot's cleared length included) below it (a kill -9 stops the process between two instructions; x86 and
        // the page cache keep program order of stores).
        compiler_fence(Ordering::Release);
        header_bytes[..4].copy_from_slice(&header[..4]);

        self.end = position + span;
        if let Some(syncer) = &self.syncer {
            syncer.shared.mark.publish_appended(self.end);
        }
        if let Some(p) = &mut self.populate {
            p.appended(self.end);
        }
        if self.end >= self.prepare_at {
            self.prepare_next();
        }
        Ok(position)
    }

    /// Asks the preparer for the segment after the active one (with a
    /// spare to recycle, if one is at hand). Asked half-way through the
    /// active segment rather than when it starts: a new node's first
    /// seconds then do not also create and fault in the next 64 MiB of
    /// every log, and a drop may have left a spare to recycle by then.
    #[cold]
    fn prepare_next(&mut self) {
        self.prepare_at = u64::MAX;
        let next = self.active().limit();
        if let Some(preparer) = &mut self.preparer {
            let spare = self.spares.pop();
            if let Some(unused) = preparer.request(next, spare) {
                self.spares.push(unused);
            }
        }
    }

    /// Seals the active segment and starts the next one: recycled from a
    /// spare if one is at hand, else a new file. On error (e.g. `NoSpace`)
    /// the log is unchanged and the append can be retried.
    fn roll(&mut self) -> Result<(), LogError> {
        let base = self.active().limit();
        let size = self.config.segment_size_bytes;
        let spare_at_hand = !self.spares.is_empty()
            || self
                .preparer
                .as_ref()
                .is_some_and(|p| p.pending_spare_bytes() > 0);
        if let Some(limit) = self.config.disk_limit_bytes {
            // A recycled segment takes no new space: its file is counted
            // already.
            if !spare_at_hand && self.used_bytes() + size > limit {
                return Err(LogError::NoSpace {
                    op: error::Op::Allocate,
                    path: self.dir.join(format::segment_file_name(base)),
                    needed_bytes: size,
                });
            }
        }
        let sync = self.config.durability == Durability::Fsync;
        // A failure in the background may be stale (space freed since): it
        // is retried here, and this attempt's error is reported.
        let mut prepared = match self.preparer.as_mut().and_then(|p| p.take(base)) {
            Some(Ok(prepared)) => Some(prepared),
            Some(Err(_)) | None => None,
        };
        if let (Some(limit), Some(fresh)) = (self.config.disk_limit_bytes, &prepared) {
            // Made ahead before a drop left a spare: over the limit, the
            // spare is used instead.
            if !fresh.recycled && !self.spares.is_empty() && self.used_bytes() + size > limit {
                if let Some(fresh) = prepared.take() {
                    fresh.discard();
                }
            }
        }
        let prepared = match (prepared, self.spares.pop()) {
            (Some(prepared), spare) => {
                self.spares.extend(spare);
                prepared
            }
            (None, Some(spare)) => Segment::recycle(
                spare,
                &self.dir,
                base,
                self.name_hash,
                sync,
                self.config.prefault,
            )?,
            (None, None) => Segment::prepare(
                &self.dir,
                base,
                size,
                self.name_hash,
                sync,
                self.config.prefault,
            )?,
        };
        assert_eq!(prepared.base, base);
        let mut segment = Segment::install(prepared, &self.dir, sync)?;
        if self.config.lock_memory {
            segment.lock_memory()?;
        }
        if let Some(syncer) = &self.syncer {
            // With `sync`, the header (and the zeroed first slot of a
            // recycled file) and the name were made durable above, before
            // any position in this segment can be reported durable.
            syncer.push_file(SyncFile {
                base: segment.base,
                limit: segment.limit(),
                path: segment.path.clone(),
                file: std::sync::Arc::clone(&segment.file),
            });
        }
        self.prepare_at = half_way(&segment);
        if let Some(p) = self.populate.take() {
            // The first segment is sealed: nothing more to fault in (and
            // with `lock_memory`, its lock must not land after the unlock).
            p.join();
        }
        self.active_mut().unlock_memory();
        self.segments.push(segment);
        self.end = base;
        self.rolls += 1;
        Ok(())
    }

    /// Bytes of the log's files: segments and spares (the pool's and one
    /// being recycled).
    fn used_bytes(&self) -> u64 {
        let segments: u64 = self
            .segments
            .iter()
            .map(|s| s.data_bytes + SEGMENT_HEADER_BYTES as u64)
            .sum();
        let spares: u64 = self.spares.iter().map(|s| s.size_bytes).sum();
        let pending = self
            .preparer
            .as_ref()
            .map_or(0, |p| p.pending_spare_bytes());
        segments + spares + pending
    }

    /// Whether a dropped segment can join the spare pool. The one being
    /// recycled by the preparer is not counted: with the engine's pattern
    /// (drop two segments every other roll) counting it would unlink one
    /// segment in three and create a new file in its place.
    fn spare_room(&self) -> bool {
        self.spares.len() < self.config.spare_segments
    }

    /// Removes every whole segment below `position` (never the active one):
    /// up to `spare_segments` of them become spares for reuse (renamed to
    /// `spare-<id>.seg`), the others are unlinked. Returns how many were
    /// removed from the log.
    pub fn drop_below(&mut self, position: Position) -> Result<usize, LogError> {
        if let Some(p) = self.populate.take() {
            p.join();
        }
        let count = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| s.limit() <= position)
            .count();
        let mut removed = 0;
        let mut result = Ok(());
        // Oldest first; stops at the first failure, leaving the rest (and
        // the one that failed) in the log.
        while removed < count {
            let segment = self.segments.remove(0);
            let keep = self.spare_room()
                && segment.data_bytes + SEGMENT_HEADER_BYTES as u64
                    == self.config.segment_size_bytes;
            if keep {
                let spare_path = self.dir.join(format::spare_file_name(self.next_spare_id));
                if let Err(e) = fs::rename(&segment.path, &spare_path) {
                    result = Err(LogError::io(error::Op::Rename, &segment.path, e));
                    self.segments.insert(0, segment);
                    break;
                }
                self.next_spare_id += 1;
                self.spares.push(segment.into_spare(spare_path));
            } else if let Err(e) = fs::remove_file(&segment.path) {
                result = Err(LogError::io(error::Op::Remove, &segment.path, e));
                self.segments.insert(0, segment);
                break;
            } else if let Some(p) = &self.preparer {
                // Unmapped off the caller's thread (see `preparer`).
                drop(p.retire(segment));
            }
            removed += 1;
        }
        if removed > 0 {
            if let Some(syncer) = &self.syncer {
                syncer.remove_below(self.segments[0].base);
                segment::sync_dir(&self.dir)?;
            }
        }
        result.map(|()| removed)
    }

    /// How many times an append has rolled to a new segment since open
    /// (the event loop labels a long iteration that rolled a segment).
    pub fn rolls(&self) -> u64 {
        self.rolls
    }

    /// A reader over the records from `position` to the current end.
    pub fn reader_at(&self, position: Position) -> Result<Reader<'_>, LogError> {
        self.check_position(position)?;
        Ok(Reader::new(self, position))
    }

    /// A cursor at `position` that follows new appends (see [`Tailer`]).
    pub fn tailer_at(&self, position: Position) -> Result<Tailer, LogError> {
        self.check_position(position)?;
        Ok(Tailer::new(position))
    }

    fn check_position(&self, position: Position) -> Result<(), LogError> {
        if position < self.first_position() || position > self.end {
            return Err(LogError::PositionOutOfRange {
                position,
                first: self.first_position(),
                end: self.end,
            });
        }
        Ok(())
    }

    /// Position of the first record still in the log.
    pub fn first_position(&self) -> Position {
        self.segments[0].base
    }

    /// Position the next append goes to.
    pub fn end_position(&self) -> Position {
        self.end
    }

    /// Every record whose position is below this is durable.
    pub fn durable_position(&self) -> Position {
        match &self.syncer {
            None => self.end,
            Some(syncer) => syncer.shared.mark.durable(),
        }
    }

    /// Whether the record at `position` is durable at the configured level.
    pub fn is_durable(&self, position: Position) -> bool {
        position < self.durable_position()
    }

    /// Asks the syncer to make everything appended so far durable (one sync
    /// for the whole batch). No-op at `Process` durability.
    pub fn commit(&self) -> Result<(), LogError> {
        if let Some(syncer) = &self.syncer {
            if let Some(error) = syncer.error() {
                return Err(error);
            }
            syncer.shared.mark.request_sync();
        }
        Ok(())
    }

    /// Blocks until the record at `position` is durable.
    pub fn wait_durable(&self, position: Position) -> Result<(), LogError> {
        let Some(syncer) = &self.syncer else {
            return self.check_appended(position);
        };
        match syncer.shared.mark.wait_until(position.saturating_add(1)) {
            Ok(()) => Ok(()),
            Err(WaitError::NotAppended) => self.check_appended(position),
            Err(WaitError::Failed) => Err(syncer.error().unwrap_or(LogError::Closed)),
            Err(WaitError::Closed) => Err(LogError::Closed),
        }
    }

    fn check_appended(&self, position: Position) -> Result<(), LogError> {
        if position >= self.end {
            return Err(LogError::PositionOutOfRange {
                position,
                first: self.first_position(),
                end: self.end,
            });
        }
        Ok(())
    }

    /// Calls `notify` (from the syncer's thread) each time the durable
    /// position moves or the syncer fails: an event loop's waker. No-op at
    /// `Process` durability, where appended is durable.
    pub fn on_durable(&self, notify: impl Fn() + Send + 'static) {
        if let Some(syncer) = &self.syncer {
            syncer.set_on_durable(Box::new(notify));
        }
    }

    /// The durability hand-off, for a loop that wants to poll it directly.
    pub fn durable_mark(&self) -> Option<&DurableMark> {
        self.syncer.as_ref().map(|s| &s.shared.mark)
    }

    /// Largest payload `append` accepts.
    pub fn max_payload_bytes(&self) -> u64 {
        self.config.segment_size_bytes - (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES) as u64
    }

    /// `<dir>/<name>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes left in the active segment: a record whose padded size
    /// (`align8(32 + payload)`) exceeds this makes the next append roll.
    pub fn active_remaining_bytes(&self) -> u64 {
        self.active().limit() - self.end
    }

    /// Paths of the segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    fn active(&self) -> &Segment {
        let last = self.segments.len() - 1;
        &self.segments[last]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(p) = self.populate.take() {
            p.join();
        }
        // A clean close leaves zeroes past the end of a recycled active
        // segment, as in a fresh one, so the next open's scan reports no
        // dropped bytes. Safety does not depend on this (a crash skips it).
        let end = self.end;
        let segment = self.active_mut();
        if segment.recycled {
            let offset = (end - segment.base) as usize;
            segment.data_mut()[offset..].fill(0);
        }
    }
}

/// The position half-way through `segment`'s data, where the next segment
/// is asked of the preparer.
fn half_way(segment: &Segment) -> u64 {
    segment.base + segment.data_bytes / 2
}

/// Opens the spare files found at open: up to `spare_segments` valid ones of
/// this log and segment size join the pool, the others are removed. Returns
/// the pool, the next spare id and how many files were removed.
fn adopt_spares(
    found: &[(u64, PathBuf)],
    name_hash: u64,
    config: &LogConfig,
) -> Result<(Vec<Spare>, u64, usize), LogError> {
    let mut spares = Vec::new();
    let mut removed = 0;
    let mut next_id = 0;
    for (id, path) in found {
        let spare = if *id < SPARE_ID_LIMIT && spares.len() < config.spare_segments {
            Segment::open_spare(path, name_hash, config.segment_size_bytes, config.prefault)?
        } else {
            None
        };
        match spare {
            Some(spare) => {
                next_id = next_id.max(id + 1);
                spares.push(spare);
            }
            None => {
                fs::remove_file(path).map_err(|e| LogError::io(error::Op::Remove, path, e))?;
                removed += 1;
            }
        }
    }
    Ok((spares, next_id, removed))
}

fn validate_config(name: &str, config: &LogConfig) -> Result<(), LogError> {
    let bad = |reason: String| Err(LogError::Config { reason });
    if name.is_empty()
        || name.len() > LOG_NAME_MAX_BYTES
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad(format!(
            "log name {name:?} must be 1..={LOG_NAME_MAX_BYTES} bytes of [A-Za-z0-9._-], not starting with '.'"
        ));
    }
    let size = config.segment_size_bytes;
    if !(format::SEGMENT_SIZE_MIN_BYTES..=format::SEGMENT_SIZE_MAX_BYTES).contains(&size)
        || !size.is_multiple_of(format::RECORD_ALIGN_BYTES as u64)
    {
        return bad(format!(
            "segment_size_bytes {size} must be a multiple of 8 in {}..={}",
            format::SEGMENT_SIZE_MIN_BYTES,
            format::SEGMENT_SIZE_MAX_BYTES
        ));
    }
    if config.spare_segments > SPARE_SEGMENTS_MAX {
        return bad(format!(
            "spare_segments {} must be at most {SPARE_SEGMENTS_MAX}",
            config.spare_segments
        ));
    }
    Ok(())
}

fn lock_dir(log_dir: &Path) -> Result<File, LogError> {
    let path = log_dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| LogError::io(error::Op::Open, &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::io(error::Op::Lock, &path, e)),
    }
}

#[cfg(all(test, not(verity_loom)))]
mod tests;
