//! # SPSC byte ring
//!
//! A bounded single-producer single-consumer ring of bytes carrying
//! variable-length records (frames) between two node threads of one process
//! (DESIGN §5). Records are written and read **in place**: the producer gets a
//! `&mut [u8]` inside the ring, the consumer gets a `&[u8]` inside the ring;
//! nothing is copied or allocated per record.
//!
//! ```text
//!   producer thread                              consumer thread
//!   let mut c = tx.claim(len)?;                  for rec in rx.read() { .. }
//!   c.copy_from_slice(..);  // in place          rx.release();
//!   c.stage();  // or c.commit() -> Wake
//!   if tx.publish().is_needed() { waker.wake() }
//! ```
//!
//! ## Positions
//!
//! `head` (bytes released by the consumer) and `tail` (bytes published by the
//! producer) are monotonically increasing `u64` byte positions; the offset in
//! the buffer is `position & (capacity - 1)`. A `u64` does not wrap in
//! practice (at 10 GB/s: 58 years), so `tail - head` is always the number of
//! bytes in use. Each lives in its own cache line (`CachePadded`), is written
//! by one side only, and the other side keeps a cached copy: the producer
//! reloads `head` only when its copy says "full"; the consumer reloads `tail`
//! once per [`Consumer::read`] batch (and in `peek` only when its copy says
//! "empty"). In steady state each side touches the other's line once per
//! batch, not once per record.
//!
//! ## Record layout
//!
//! Every record starts at an 8-byte aligned offset and never crosses the end of
//! the buffer:
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! | 0      | 4    | `len`: payload length in bytes (`u32`, native endian)  |
//! | 4      | 4    | `kind`: `1` = data, `2` = padding (`u32`, native)      |
//! | 8      | len  | payload (data records only; padding payload is junk)   |
//! | 8+len  | 0..7 | zero to seven bytes of slack up to the next 8-byte boundary |
//!
//! A record's footprint is `8 + round_up(len, 8)` bytes. When a record does
//! not fit between its offset and the end of the buffer, the producer first
//! writes a **padding** record covering the rest of the buffer (`len =
//! bytes_to_end - 8`; the header always fits because everything is 8-byte
//! aligned) and places the data record at offset 0. The consumer skips padding
//! records, so readers always see one contiguous `&[u8]` per record.
//!
//! The largest payload is `capacity / 2 - 8` bytes: a footprint of at most half
//! the ring guarantees that padding plus record fit once the ring has drained,
//! so a claim refused as [`ClaimError::Full`] always succeeds later. Larger
//! payloads get [`ClaimError::TooLarge`].
//!
//! Headers are plain (non-atomic) writes: a record becomes visible only when
//! the producer stores `tail` past it with `Release`, and the consumer loads
//! `tail` with `Acquire` before reading headers or payloads. Symmetrically the
//! consumer stores `head` with `Release` after it is done reading, and the
//! producer loads it with `Acquire` before overwriting. Publishing is batched:
//! many records can be [`Claim::stage`]d and then made visible with one
//! [`Producer::publish`] (one `Release` store, one fence).
//!
//! ## Wake protocol
//!
//! The consumer may sleep (e.g. in `mio::Poll::poll`) and the producer must
//! then wake it (e.g. `mio::Waker::wake`). The ring decides *when*; the caller
//! does the waking:
//!
//! ```text
//!   consumer (before sleeping)                 producer (publish)
//!   release()                                  tail.store(new, Release)
//!   n += 1; sleep_epoch.store(n)               fence(SeqCst)                // Y
//!   fence(SeqCst)                       // X   e = sleep_epoch.load()
//!   if tail.load(Acquire) != read_pos:         if e != 0 && e != woken_epoch:
//!       sleep_epoch.store(0); don't sleep          woken_epoch = e
//!   else sleep; on waking: finish_sleep()          -> Wake::Needed: caller wakes
//!                          (sleep_epoch = 0)
//! ```
//!
//! This is Dekker's store-then-load pattern: each side stores, then loads what
//! the other stored. Without the fences both loads could read stale values
//! (store buffering) and the wake-up would be lost. With `SeqCst` fences X and
//! Y, one of them comes first in the single total order of `SeqCst`
//! operations, and the side whose fence comes second is guaranteed to observe
//! the other side's store: either the consumer sees the new `tail` and does
//! not sleep, or the producer sees the consumer's sleep number (or a later
//! value: `0` or a later number are only written by an awake consumer, which
//! reads or re-announces after them) and wakes it.
//!
//! `sleep_epoch` has a single writer, the consumer; the producer only reads it
//! and remembers the last sleep number it woke (`woken_epoch`), so one sleep
//! costs at most one wake however many batches are published meanwhile, and a
//! consumer that woke for another reason clears it with `finish_sleep` so the
//! producer does not pay a spurious wake. (A first version let the producer
//! clear a `sleeping: bool` with `swap(false)`; besides adding a second writer
//! to a hot line, that read-modify-write racing the consumer's store defeats
//! loom's fence reasoning, which reported a lost wake-up.) `mio::Waker` is
//! level-like (an eventfd), so a wake that arrives before the consumer
//! actually blocks is not lost either.
//!
//! The producer is never put to sleep by the ring: on [`ClaimError::Full`] it
//! applies back-pressure upstream and retries later. [`Consumer::prepare_sleep`]
//! releases everything read first, so a sleeping consumer never holds space.
//!
//! Back-of-the-envelope: a 64-byte frame has a 72-byte footprint; a 1 MiB ring
//! holds ~14 500 of them, i.e. ~150 µs of traffic at 100 M records/s.

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use crossbeam_utils::CachePadded;

use crate::sync::{fence, Arc, AtomicU64, Ordering, RaceCheck};

/// Size of a record header in bytes.
pub const HEADER_SIZE_BYTES: usize = 8;
/// Every record starts at a multiple of this many bytes.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Smallest accepted capacity (largest record payload is then 0 bytes).
pub const CAPACITY_MIN_BYTES: usize = 16;
/// Largest accepted capacity; keeps `len` within its `u32` header field.
pub const CAPACITY_MAX_BYTES: usize = 1 << 31;

const KIND_DATA: u32 = 1;
const KIND_PADDING: u32 = 2;

/// Bytes a record with a `len`-byte payload occupies in the ring.
#[inline(always)]
const fn footprint_bytes(len: usize) -> usize {
    HEADER_SIZE_BYTES + ((len + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1))
}

/// Creates a ring of `capacity_bytes` (a power of two in
/// [`CAPACITY_MIN_BYTES`]`..=`[`CAPACITY_MAX_BYTES`]) and returns its two halves.
pub fn channel(capacity_bytes: usize) -> Result<(Producer, Consumer), CapacityError> {
    if !capacity_bytes.is_power_of_two()
        || !(CAPACITY_MIN_BYTES..=CAPACITY_MAX_BYTES).contains(&capacity_bytes)
    {
        return Err(CapacityError { capacity_bytes });
    }
    let words = capacity_bytes / RECORD_ALIGN_BYTES;
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicU64::new(0)),
        tail: CachePadded::new(AtomicU64::new(0)),
        sleep_epoch: CachePadded::new(AtomicU64::new(0)),
        buf: (0..words).map(|_| UnsafeCell::new(0)).collect(),
        capacity_bytes: capacity_bytes as u64,
        race: RaceCheck::new(words),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        head_cached: 0,
        tail_staged: 0,
        tail_published: 0,
        woken_epoch: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        tail_cached: 0,
        read_pos: 0,
        head_published: 0,
        sleep_epoch: 0,
        _not_sync: PhantomData,
    };
    Ok((producer, consumer))
}

/// The capacity passed to [`channel`] is not a power of two in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    pub capacity_bytes: usize,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ring capacity {} bytes is not a power of two in {}..={}",
            self.capacity_bytes, CAPACITY_MIN_BYTES, CAPACITY_MAX_BYTES
        )
    }
}

impl std::error::Error for CapacityError {}

/// Why [`Producer::claim`] refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Not enough free space now (`needed_bytes` includes header, slack and
    /// any wrap-around padding). Retry after the consumer releases.
    Full {
        len: usize,
        needed_bytes: usize,
        free_bytes: usize,
    },
    /// The payload can never fit: `len > max_len` (= capacity / 2 - 8).
    TooLarge { len: usize, max_len: usize },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClaimError::Full {
                len,
                needed_bytes,
                free_bytes,
            } => write!(
                f,
                "ring full: record of {len} bytes needs {needed_bytes} bytes, {free_bytes} free; retry after the consumer releases"
            ),
            ClaimError::TooLarge { len, max_len } => write!(
                f,
                "record of {len} bytes exceeds the ring's maximum of {max_len} bytes; use a larger ring or split the record"
            ),
        }
    }
}

impl std::error::Error for ClaimError {}

/// Whether the producer must wake the consumer after publishing.
#[must_use = "on Wake::Needed the caller must wake the consumer (e.g. mio::Waker::wake) or it may sleep forever"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    NotNeeded,
    Needed,
}

impl Wake {
    pub fn is_needed(self) -> bool {
        self == Wake::Needed
    }
}

/// State shared by the two halves.
struct Shared {
    /// Position up to which the consumer has released bytes. Written only by
    /// the consumer (`Release`), read by the producer (`Acquire`).
    head: CachePadded<AtomicU64>,
    /// Position up to which the producer has published records. Written only
    /// by the producer (`Release`), read by the consumer (`Acquire`).
    tail: CachePadded<AtomicU64>,
    /// `0` while the consumer is awake, else the number of the sleep it is
    /// about to take or taking; see the wake protocol. Written only by the
    /// consumer.
    sleep_epoch: CachePadded<AtomicU64>,
    /// The bytes, as `u64` words so every record offset is 8-byte aligned.
    buf: Box<[UnsafeCell<u64>]>,
    capacity_bytes: u64,
    /// Under loom: shadow cells that check for data races on `buf`.
    race: RaceCheck,
}

// SAFETY: `buf` is the only non-`Sync` field. Its bytes are only accessed by
// the single `Producer` (in `[tail_staged, head + capacity)`, i.e. bytes the
// consumer cannot read) and the single `Consumer` (in `[head, tail)`, i.e.
// bytes the producer cannot write), with ownership of a range handed over by
// the `Release`/`Acquire` pairs on `head` and `tail`. Shared is therefore safe
// to reference from both threads.
unsafe impl Sync for Shared {}

impl Shared {
    #[inline(always)]
    fn mask(&self) -> u64 {
        self.capacity_bytes - 1
    }

    /// Pointer to byte 0 of the buffer, valid for reads and writes of
    /// `capacity_bytes` bytes (derived from the `UnsafeCell`s, so writing
    /// through it from `&self` is allowed).
    #[inline(always)]
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr()).cast::<u8>()
    }

    /// Word index range `[start, end)` for byte offsets; loom race checks only.
    #[inline(always)]
    fn words(offset: usize, footprint: usize) -> (usize, usize) {
        (
            offset / RECORD_ALIGN_BYTES,
            (offset + footprint) / RECORD_ALIGN_BYTES,
        )
    }

    /// Loom only: records a read of every word of positions `[from, to)`.
    #[inline(always)]
    fn race_read_span(&self, from: u64, to: u64) {
        #[cfg(verity_loom)]
        {
            let mut pos = from;
            while pos != to {
                let word = ((pos & self.mask()) as usize) / RECORD_ALIGN_BYTES;
                self.race.read(word, word + 1);
                pos += RECORD_ALIGN_BYTES as u64;
            }
        }
        #[cfg(not(verity_loom))]
        let _ = (from, to);
    }

    /// The next data record at or after `pos` and before `tail`, skipping
    /// padding: `(payload offset, payload len, position after the record)`.
    ///
    /// The caller must have observed `tail` with an `Acquire` load of
    /// `self.tail` (or derived it from such a load), and must be the consumer.
    #[inline(always)]
    fn next_record(&self, mut pos: u64, tail: u64) -> Option<(usize, usize, u64)> {
        while pos != tail {
            debug_assert!(tail - pos <= self.capacity_bytes);
            let offset = (pos & self.mask()) as usize;
            let (w0, _) = Shared::words(offset, 0);
            self.race.read(w0, w0 + 1);
            // SAFETY: `offset` is 8-byte aligned and `offset + 8 <=
            // capacity_bytes`, so the header is in bounds and aligned for
            // `[u32; 2]`. `pos < tail`: the producer wrote this header before
            // its `Release` store of `tail`, which the caller observed with
            // `Acquire`, and will not write it again until `head` passes
            // `pos`, which only the consumer (our caller) can do.
            let [len, kind] = unsafe { self.base().add(offset).cast::<[u32; 2]>().read() };
            let footprint = footprint_bytes(len as usize);
            // Invariants of the producer's writes, not of any input.
            assert!(
                offset + footprint <= self.capacity_bytes as usize
                    && pos + footprint as u64 <= tail,
                "ring: record header at position {pos} overruns (len {len})"
            );
            match kind {
                KIND_DATA => {
                    let (w0, w1) = Shared::words(offset, footprint);
                    self.race.read(w0 + 1, w1);
                    return Some((
                        offset + HEADER_SIZE_BYTES,
                        len as usize,
                        pos + footprint as u64,
                    ));
                }
                KIND_PADDING => pos += footprint as u64,
                _ => panic!("ring: record header at position {pos} has unknown kind {kind}"),
            }
        }
        None
    }
}

/// The writing half. `Send`, not `Sync`, not `Clone`: exactly one thread
/// produces.
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<verity::ring::Producer>();
/// ```
///
/// ```compile_fail,E0599
/// let (tx, _rx) = verity::ring::channel(64).unwrap();
/// let _second = tx.clone();
/// ```
pub struct Producer {
    shared: Arc<Shared>,
    /// Last `head` we loaded; the real one is >= this.
    head_cached: u64,
    /// End of the records staged so far (published or not).
    tail_staged: u64,
    /// Last value stored to `shared.tail`.
    tail_published: u64,
    /// The consumer's last sleep number we returned `Wake::Needed` for.
    woken_epoch: u64,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity_bytes", &self.shared.capacity_bytes)
            .field("head_cached", &self.head_cached)
            .field("tail_staged", &self.tail_staged)
            .field("tail_published", &self.tail_published)
            .finish()
    }
}

impl Producer {
    /// Ring size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.shared.capacity_bytes as usize
    }

    /// Largest payload [`claim`](Self::claim) accepts: `capacity / 2 - 8`.
    pub fn max_len(&self) -> usize {
        self.capacity_bytes() / 2 - HEADER_SIZE_BYTES
    }

    /// Reserves space for a record with a `len`-byte payload and returns it to
    /// be written in place. Nothing is visible to the consumer until the claim
    /// is [`commit`](Claim::commit)ted, or [`stage`](Claim::stage)d and then
    /// [`publish`](Self::publish)ed. Dropping the claim abandons it.
    #[inline]
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, ClaimError> {
        let max_len = self.max_len();
        if len > max_len {
            return Err(ClaimError::TooLarge { len, max_len });
        }
        let capacity = self.shared.capacity_bytes;
        let footprint = footprint_bytes(len) as u64;
        let offset = self.tail_staged & self.shared.mask();
        let to_end = capacity - offset;
        let pad_bytes = if footprint <= to_end { 0 } else { to_end };
        let needed = pad_bytes + footprint;
        if self.tail_staged + needed - self.head_cached > capacity {
            // Acquire: pairs with the consumer's `Release` store of `head`, so
            // its reads of the bytes we are about to overwrite happen-before
            // our writes.
            self.head_cached = self.shared.head.load(Ordering::Acquire);
            if self.tail_staged + needed - self.head_cached > capacity {
                return Err(ClaimError::Full {
                    len,
                    needed_bytes: needed as usize,
                    free_bytes: (capacity - (self.tail_staged - self.head_cached)) as usize,
                });
            }
        }
        let start = self.tail_staged + pad_bytes;
        // Loom: the write starts now (the end is recorded in `stage`).
        self.race_write(pad_bytes, start, footprint as usize);
        Ok(Claim {
            producer: self,
            start,
            pad_bytes,
            len,
        })
    }

    /// Claims, copies `record` in and commits (publishes) it.
    #[inline]
    pub fn push(&mut self, record: &[u8]) -> Result<Wake, ClaimError> {
        let mut claim = self.claim(record.len())?;
        claim.copy_from_slice(record);
        Ok(claim.commit())
    }

    /// Makes every staged record visible to the consumer and says whether the
    /// consumer must be woken. Cheap when nothing new was staged.
    #[inline]
    pub fn publish(&mut self) -> Wake {
        if self.tail_staged == self.tail_published {
            return Wake::NotNeeded;
        }
        self.tail_published = self.tail_staged;
        // Release: our writes of the headers and payloads happen-before the
        // consumer's reads, which it does after an `Acquire` load of `tail`.
        self.shared.tail.store(self.tail_staged, Ordering::Release);
        // SeqCst fence: Dekker store-load ordering against the consumer's
        // `prepare_sleep` (see module docs): the `tail` store above and the
        // `sleep_epoch` load below cannot be reordered, and of the two fences
        // the later one sees the other side's store.
        fence(Ordering::SeqCst);
        // Relaxed: ordering comes from the fences. Read-only: the line stays
        // shared (not bounced) while the consumer is awake.
        let epoch = self.shared.sleep_epoch.load(Ordering::Relaxed);
        if epoch != 0 && epoch != self.woken_epoch {
            self.woken_epoch = epoch;
            Wake::Needed
        } else {
            Wake::NotNeeded
        }
    }

    /// Loom: record writes of the padding header (if any) and of the record.
    #[inline(always)]
    fn race_write(&self, pad_bytes: u64, start: u64, footprint: usize) {
        if pad_bytes != 0 {
            let pad_offset = ((start - pad_bytes) & self.shared.mask()) as usize;
            let (w0, _) = Shared::words(pad_offset, 0);
            self.shared.race.write(w0, w0 + 1);
        }
        let offset = (start & self.shared.mask()) as usize;
        let (w0, w1) = Shared::words(offset, footprint);
        self.shared.race.write(w0, w1);
    }
}

/// Space for one record, written in place through `DerefMut<Target = [u8]>`.
///
/// The bytes start out with whatever an earlier record left there; write all
/// of them. Dropping a claim without `stage`/`commit` abandons it.
pub struct Claim<'a> {
    producer: &'a mut Producer,
    /// Position of the record header.
    start: u64,
    /// Bytes of padding before `start` (0, or the rest of the buffer).
    pad_bytes: u64,
    /// Payload length.
    len: usize,
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("start", &self.start)
            .field("pad_bytes", &self.pad_bytes)
            .field("len", &self.len)
            .finish()
    }
}

impl Claim<'_> {
    /// Shortens the record to `len` bytes (no-op if `len` is not smaller),
    /// e.g. after reading fewer bytes than claimed from a socket.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Writes the record's header (and padding) and appends it to the batch
    /// of staged records; the consumer sees it after [`Producer::publish`].
    #[inline]
    pub fn stage(mut self) {
        self.write_headers();
    }

    /// Stages the record and publishes everything staged so far.
    #[inline]
    pub fn commit(mut self) -> Wake {
        self.write_headers();
        self.producer.publish()
    }

    #[inline(always)]
    fn write_headers(&mut self) {
        let shared = &*self.producer.shared;
        let mask = shared.mask();
        let footprint = footprint_bytes(self.len);
        // Loom: end of the write that began in `claim`.
        self.producer
            .race_write(self.pad_bytes, self.start, footprint);
        let base = shared.base();
        if self.pad_bytes != 0 {
            let pad_offset = ((self.start - self.pad_bytes) & mask) as usize;
            let pad_len = self.pad_bytes as usize - HEADER_SIZE_BYTES;
            // SAFETY: `pad_offset` is 8-byte aligned and at least 8 bytes
            // from the end (all footprints are multiples of 8), so the header
            // is in bounds and aligned. `claim` checked that
            // `[tail_staged, start + footprint)` is free: the consumer has
            // released it (`Acquire` on `head`) and will not read it before we
            // publish a `tail` past it.
            unsafe {
                base.add(pad_offset)
                    .cast::<[u32; 2]>()
                    .write([pad_len as u32, KIND_PADDING]);
            }
        }
        let offset = (self.start & mask) as usize;
        // SAFETY: as above: `offset` is aligned, `offset + footprint <=
        // capacity` (claim placed the record so it does not cross the end),
        // and the bytes are free and unpublished.
        unsafe {
            base.add(offset)
                .cast::<[u32; 2]>()
                .write([self.len as u32, KIND_DATA]);
        }
        self.producer.tail_staged = self.start + footprint as u64;
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];

    #[inline(always)]
    fn deref(&self) -> &[u8] {
        let offset = (self.start & self.producer.shared.mask()) as usize + HEADER_SIZE_BYTES;
        // SAFETY: `claim` reserved `[offset, offset + len)` inside the buffer
        // for this claim alone (free space the consumer cannot read until we
        // publish); the borrow of `self` keeps the producer from handing it
        // out twice.
        unsafe { core::slice::from_raw_parts(self.producer.shared.base().add(offset), self.len) }
    }
}

impl DerefMut for Claim<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [u8] {
        let offset = (self.start & self.producer.shared.mask()) as usize + HEADER_SIZE_BYTES;
        // SAFETY: as in `deref`; the `&mut self` borrow makes this the only
        // reference to those bytes.
        unsafe {
            core::slice::from_raw_parts_mut(self.producer.shared.base().add(offset), self.len)
        }
    }
}

/// The reading half. `Send`, not `Sync`, not `Clone`: exactly one thread
/// consumes.
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<verity::ring::Consumer>();
/// ```
///
/// A record read from the ring cannot outlive the `release` that gives its
/// bytes back to the producer:
///
/// ```compile_fail,E0502
/// let (mut tx, mut rx) = verity::ring::channel(64).unwrap();
/// let _ = tx.push(b"frame");
/// let record = rx.read().next().unwrap();
/// rx.release();
/// assert_eq!(record, b"frame");
/// ```
pub struct Consumer {
    shared: Arc<Shared>,
    /// Last `tail` we loaded; the real one is >= this.
    tail_cached: u64,
    /// End of the records handed out by [`Consumer::read`] so far.
    read_pos: u64,
    /// Last value stored to `shared.head`.
    head_published: u64,
    /// Number of the current or last sleep (`prepare_sleep` calls).
    sleep_epoch: u64,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity_bytes", &self.shared.capacity_bytes)
            .field("tail_cached", &self.tail_cached)
            .field("read_pos", &self.read_pos)
            .field("head_published", &self.head_published)
            .finish()
    }
}

impl Consumer {
    /// Ring size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.shared.capacity_bytes as usize
    }

    /// Refreshes the cached `tail` if we have read everything we knew of.
    #[inline(always)]
    fn refresh_tail(&mut self) {
        if self.read_pos == self.tail_cached {
            // Acquire: pairs with the producer's `Release` store of `tail`,
            // so the records' bytes are visible before we read them.
            self.tail_cached = self.shared.tail.load(Ordering::Acquire);
        }
    }

    /// The next unread record, without marking it read.
    #[inline]
    pub fn peek(&mut self) -> Option<&[u8]> {
        self.refresh_tail();
        let (offset, len, _) = self.shared.next_record(self.read_pos, self.tail_cached)?;
        // SAFETY: `next_record` returned a published data record in bounds;
        // the producer cannot overwrite it before `head` passes it, which
        // needs `&mut self` (`release`), so not while this borrow lives.
        Some(unsafe { core::slice::from_raw_parts(self.shared.base().add(offset), len) })
    }

    /// Iterator over the records published so far (one `tail` snapshot),
    /// oldest first. Each record it yields is marked read; the space is
    /// returned to the producer by [`release`](Self::release), which the
    /// borrow checker only allows once the yielded slices are dead.
    #[inline]
    pub fn read(&mut self) -> Records<'_> {
        // Acquire: as in `refresh_tail`. Always reloaded (once per batch) so a
        // batch covers everything published so far.
        self.tail_cached = self.shared.tail.load(Ordering::Acquire);
        Records {
            shared: &self.shared,
            read_pos: &mut self.read_pos,
            tail: self.tail_cached,
        }
    }

    /// Gives the space of every record read so far back to the producer.
    #[inline]
    pub fn release(&mut self) {
        if self.read_pos == self.head_published {
            return;
        }
        // Loom: end of our reads of the released bytes.
        self.shared
            .race_read_span(self.head_published, self.read_pos);
        self.head_published = self.read_pos;
        // Release: our reads of the bytes happen-before the producer's
        // overwrites, which it does after an `Acquire` load of `head`.
        self.shared.head.store(self.read_pos, Ordering::Release);
    }

    /// Call right before sleeping. Releases what was read, announces the
    /// sleep, and re-checks for records: returns `true` if the consumer may
    /// sleep (the producer will then see [`Wake::Needed`] on its next
    /// publish), `false` if records arrived (read them instead).
    pub fn prepare_sleep(&mut self) -> bool {
        self.release();
        self.sleep_epoch += 1;
        // Relaxed: ordered before the `tail` load by the fence below.
        self.shared
            .sleep_epoch
            .store(self.sleep_epoch, Ordering::Relaxed);
        // SeqCst fence: Dekker store-load ordering against the producer's
        // `publish` (see module docs): either we see its new `tail` below, or
        // it sees our sleep number after its fence.
        fence(Ordering::SeqCst);
        // Acquire: as in `refresh_tail`, the bytes of any record we now see
        // are visible.
        self.tail_cached = self.shared.tail.load(Ordering::Acquire);
        if self.tail_cached != self.read_pos {
            // Relaxed: only saves the producer a needless wake; a stale
            // sleep number costs one spurious wake, never a lost one.
            self.shared.sleep_epoch.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Call after waking from a sleep announced by `prepare_sleep` (whatever
    /// woke us), before reading: stops the producer from sending a wake that
    /// is no longer needed.
    pub fn finish_sleep(&mut self) {
        // Relaxed: an optimisation only; see `prepare_sleep`.
        self.shared.sleep_epoch.store(0, Ordering::Relaxed);
    }
}

/// Records published when [`Consumer::read`] was called, oldest first, as
/// slices into the ring. Records it yields are marked read.
pub struct Records<'a> {
    shared: &'a Shared,
    read_pos: &'a mut u64,
    tail: u64,
}

impl fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("read_pos", &*self.read_pos)
            .field("tail", &self.tail)
            .finish()
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (offset, len, next) = self.shared.next_record(*self.read_pos, self.tail)?;
        *self.read_pos = next;
        // SAFETY: `next_record` returned a published data record in bounds
        // (`tail` came from an `Acquire` load). The producer cannot overwrite
        // it before `head` passes it, which needs `&mut Consumer`; this
        // iterator borrows the consumer for `'a`, so not while the slice lives.
        Some(unsafe { core::slice::from_raw_parts(self.shared.base().add(offset), len) })
    }
}

#[cfg(all(test, not(verity_loom)))]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    /// xorshift64*: deterministic sizes and contents from a seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Content of record `seq`: its length can be checked from the bytes too.
    fn fill(buf: &mut [u8], seq: u64) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
        }
    }

    fn check(buf: &[u8], seq: u64, len: usize) {
        assert_eq!(buf.len(), len, "record {seq}: length");
        for (i, byte) in buf.iter().enumerate() {
            assert_eq!(
                *byte,
                (seq as u8).wrapping_mul(31).wrapping_add(i as u8),
                "record {seq}: byte {i}"
            );
        }
    }

    fn drain(rx: &mut Consumer) -> Vec<Vec<u8>> {
        let out = rx.read().map(<[u8]>::to_vec).collect();
        rx.release();
        out
    }

    #[test]
    fn channel_rejects_capacity_not_power_of_two_or_out_of_range() {
        for capacity_bytes in [0, 8, 24, 100, CAPACITY_MAX_BYTES * 2] {
            assert_eq!(
                channel(capacity_bytes).err(),
                Some(CapacityError { capacity_bytes })
            );
        }
        assert!(channel(CAPACITY_MIN_BYTES).is_ok());
        let (tx, rx) = channel(64).expect("valid capacity");
        assert_eq!((tx.capacity_bytes(), rx.capacity_bytes()), (64, 64));
        assert_eq!(tx.max_len(), 24);
    }

    #[test]
    fn halves_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Producer>();
        assert_send::<Consumer>();
    }

    #[test]
    fn records_arrive_in_order_with_content() {
        let (mut tx, mut rx) = channel(256).expect("valid capacity");
        assert_eq!(rx.peek(), None);
        for record in [&b"a"[..], b"", b"hello world", b"12345678"] {
            assert_eq!(tx.push(record), Ok(Wake::NotNeeded));
        }
        assert_eq!(
            drain(&mut rx),
            vec![
                b"a".to_vec(),
                vec![],
                b"hello world".to_vec(),
                b"12345678".to_vec()
            ]
        );
        assert_eq!(rx.read().next(), None);
    }

    #[test]
    fn peek_does_not_mark_read_and_read_next_does() {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        assert!(tx.push(b"one").is_ok());
        assert!(tx.push(b"two").is_ok());
        assert_eq!(rx.peek(), Some(&b"one"[..]));
        assert_eq!(rx.peek(), Some(&b"one"[..]));
        assert_eq!(rx.read().next(), Some(&b"one"[..]));
        assert_eq!(rx.peek(), Some(&b"two"[..]));
        assert_eq!(rx.read().next(), Some(&b"two"[..]));
        assert_eq!(rx.peek(), None);
    }

    #[test]
    fn wrap_around_inserts_padding_and_records_stay_contiguous() {
        // 64-byte ring; 16-byte payloads have a 24-byte footprint.
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        for seq in 0..2 {
            let mut claim = tx.claim(16).expect("space");
            fill(&mut claim, seq);
            assert!(!claim.commit().is_needed());
        }
        for (seq, record) in (0..2).zip(drain(&mut rx)) {
            check(&record, seq, 16);
        }
        // tail = 48: 16 bytes to the end < 24, so 16 bytes of padding and the
        // record at offset 0.
        assert_eq!(tx.tail_staged, 48);
        let mut claim = tx.claim(16).expect("space after padding");
        assert_eq!((claim.start, claim.pad_bytes), (64, 16));
        fill(&mut claim, 2);
        assert!(!claim.commit().is_needed());
        assert_eq!(tx.tail_staged, 88);
        let base = rx.shared.base() as usize;
        let record = rx.read().next().expect("record after padding");
        assert_eq!(record.as_ptr() as usize, base + HEADER_SIZE_BYTES);
        check(record, 2, 16);
        assert_eq!(rx.read().next(), None);
        rx.release();
        assert_eq!(rx.shared.head.load(Ordering::Relaxed), 88);
    }

    #[test]
    fn record_exactly_reaching_the_end_needs_no_padding() {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        assert!(tx.push(&[7; 24]).is_ok()); // footprint 32: [0, 32)
        assert!(tx.push(&[8; 24]).is_ok()); // footprint 32: [32, 64)
        assert_eq!(tx.tail_staged, 64);
        assert_eq!(drain(&mut rx), vec![vec![7; 24], vec![8; 24]]);
        let claim = tx.claim(24).expect("space");
        assert_eq!((claim.start, claim.pad_bytes), (64, 0));
    }

    #[test]
    fn full_ring_refuses_claim_then_accepts_after_release() {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        assert!(tx.push(&[1; 24]).is_ok());
        assert!(tx.push(&[2; 24]).is_ok());
        assert_eq!(
            tx.claim(0).err(),
            Some(ClaimError::Full {
                len: 0,
                needed_bytes: 8,
                free_bytes: 0
            })
        );
        // Read but not released: the space is still held.
        assert_eq!(rx.read().next(), Some(&[1; 24][..]));
        assert!(matches!(tx.claim(24), Err(ClaimError::Full { .. })));
        rx.release();
        assert!(tx.push(&[3; 24]).is_ok());
        assert_eq!(drain(&mut rx), vec![vec![2; 24], vec![3; 24]]);
    }

    #[test]
    fn too_large_record_is_a_typed_error() {
        let (mut tx, _rx) = channel(64).expect("valid capacity");
        assert_eq!(
            tx.claim(25).err(),
            Some(ClaimError::TooLarge {
                len: 25,
                max_len: 24
            })
        );
        assert!(tx.claim(usize::MAX).is_err());
        assert!(tx.claim(24).is_ok());
    }

    #[test]
    fn max_len_record_fits_a_drained_ring_at_every_offset() {
        let (mut tx, mut rx) = channel(128).expect("valid capacity");
        let max_len = tx.max_len();
        for shift in 0..32u64 {
            let len = (shift as usize * 3) % 40;
            assert!(tx.push(&vec![shift as u8; len]).is_ok());
            let mut claim = tx.claim(max_len).expect("max_len fits an empty ring");
            fill(&mut claim, shift);
            assert!(!claim.commit().is_needed());
            let records = drain(&mut rx);
            assert_eq!(records.len(), 2);
            check(&records[1], shift, max_len);
        }
    }

    #[test]
    fn staged_records_are_invisible_until_one_publish() {
        let (mut tx, mut rx) = channel(256).expect("valid capacity");
        for seq in 0..4 {
            let mut claim = tx.claim(seq as usize + 5).expect("space");
            fill(&mut claim, seq);
            claim.stage();
        }
        assert_eq!(rx.peek(), None);
        assert_eq!(tx.publish(), Wake::NotNeeded);
        let records = drain(&mut rx);
        assert_eq!(records.len(), 4);
        for (seq, record) in (0..4).zip(&records) {
            check(record, seq, seq as usize + 5);
        }
    }

    #[test]
    fn batch_read_yields_snapshot_and_partial_release_keeps_the_rest() {
        let (mut tx, mut rx) = channel(256).expect("valid capacity");
        for seq in 0..6u8 {
            assert!(tx.push(&[seq; 9]).is_ok());
        }
        {
            let mut records = rx.read();
            let first_two: Vec<&[u8]> = records.by_ref().take(2).collect();
            assert_eq!(first_two, vec![&[0; 9][..], &[1; 9][..]]);
        }
        rx.release();
        // Published after the snapshot: not in this batch.
        let mut records = rx.read();
        assert!(tx.push(&[6; 9]).is_ok());
        assert_eq!(records.by_ref().count(), 4);
        assert_eq!(records.next(), None);
        assert_eq!(drain(&mut rx), vec![vec![6; 9]]);
    }

    #[test]
    fn abandoned_and_truncated_claims() {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        {
            let mut abandoned = tx.claim(24).expect("space");
            abandoned.fill(9);
        }
        let mut claim = tx.claim(24).expect("abandoned claim took no space");
        claim[..3].copy_from_slice(b"abc");
        claim.truncate(3);
        claim.truncate(10);
        assert_eq!(&*claim, b"abc");
        assert!(!claim.commit().is_needed());
        assert_eq!(tx.tail_staged, 16);
        assert_eq!(drain(&mut rx), vec![b"abc".to_vec()]);
    }

    #[test]
    fn dropping_the_ring_with_records_inside_is_clean() {
        let (mut tx, mut rx) = channel(128).expect("valid capacity");
        assert!(tx.push(b"left behind").is_ok());
        assert!(tx.push(b"and read").is_ok());
        assert_eq!(rx.read().next(), Some(&b"left behind"[..]));
        drop(rx);
        assert!(tx.push(b"after the consumer left").is_ok());
        drop(tx);
    }

    #[test]
    fn wake_needed_once_per_sleep_and_not_when_awake() {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        assert_eq!(tx.push(b"x"), Ok(Wake::NotNeeded));
        // Records pending: the consumer must not sleep.
        assert!(!rx.prepare_sleep());
        assert_eq!(tx.push(b"y"), Ok(Wake::NotNeeded));
        assert_eq!(drain(&mut rx).len(), 2);
        assert!(rx.prepare_sleep());
        assert_eq!(tx.push(b"z"), Ok(Wake::Needed));
        assert_eq!(tx.push(b"w"), Ok(Wake::NotNeeded));
        rx.finish_sleep();
        assert_eq!(drain(&mut rx).len(), 2);
        // Woken for another reason: finish_sleep spares the producer a wake.
        assert!(rx.prepare_sleep());
        rx.finish_sleep();
        assert_eq!(tx.push(b"v"), Ok(Wake::NotNeeded));
        // Publishing nothing new never asks for a wake.
        assert_eq!(drain(&mut rx).len(), 1);
        assert!(rx.prepare_sleep());
        assert_eq!(tx.publish(), Wake::NotNeeded);
        // A new sleep gets its own wake.
        assert_eq!(tx.push(b"u"), Ok(Wake::Needed));
        assert_eq!(tx.push(b"t"), Ok(Wake::NotNeeded));
    }

    #[test]
    fn prepare_sleep_releases_read_records() {
        let (mut tx, mut rx) = channel(64).expect("valid capacity");
        assert!(tx.push(&[1; 24]).is_ok());
        assert!(tx.push(&[2; 24]).is_ok());
        assert_eq!(rx.read().count(), 2);
        assert!(rx.prepare_sleep());
        assert_eq!(tx.push(&[3; 24]), Ok(Wake::Needed));
    }

    /// A stand-in for `mio::Waker`: a sticky flag plus a condvar.
    #[derive(Default)]
    struct Waker {
        woken: Mutex<bool>,
        cond: Condvar,
    }

    impl Waker {
        fn wake(&self) {
            *self.woken.lock().expect("not poisoned") = true;
            self.cond.notify_one();
        }

        /// Sleeps until woken; a lost wake-up fails the test instead of
        /// hanging it.
        fn sleep(&self) {
            let woken = self.woken.lock().expect("not poisoned");
            let (mut woken, timeout) = self
                .cond
                .wait_timeout_while(woken, Duration::from_secs(20), |woken| !*woken)
                .expect("not poisoned");
            assert!(!timeout.timed_out(), "lost wake-up");
            *woken = false;
        }
    }

    /// Length of record `seq`, computable by both threads independently.
    fn len_of(seed: u64, seq: u64, max_len: usize) -> usize {
        let mut rng = Rng(seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        (rng.next() % (max_len as u64 + 1)) as usize
    }

    #[cfg(not(miri))]
    const STRESS_RECORDS: u64 = 100_000;
    #[cfg(miri)]
    const STRESS_RECORDS: u64 = 300;

    /// Two threads, seeded sizes (0..=max_len) and batch sizes; the consumer
    /// sleeps whenever the ring is empty, so this also exercises the wake
    /// protocol under real concurrency.
    fn stress(seed: u64, capacity_bytes: usize) {
        let (mut tx, mut rx) = channel(capacity_bytes).expect("valid capacity");
        let max_len = tx.max_len();
        let waker = Arc::new(Waker::default());
        let producer_waker = Arc::clone(&waker);
        let producer = std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut seq = 0;
            while seq < STRESS_RECORDS {
                let batch = 1 + rng.next() % 8;
                for _ in 0..batch.min(STRESS_RECORDS - seq) {
                    let len = len_of(seed, seq, max_len);
                    let mut claim = loop {
                        match tx.claim(len) {
                            Ok(claim) => break claim,
                            Err(ClaimError::Full { .. }) => {
                                // Publish what we have so the consumer can
                                // drain, then wait for space.
                                if tx.publish().is_needed() {
                                    producer_waker.wake();
                                }
                                std::thread::yield_now();
                            }
                            Err(error) => panic!("{error}"),
                        }
                    };
                    fill(&mut claim, seq);
                    claim.stage();
                    seq += 1;
                }
                if tx.publish().is_needed() {
                    producer_waker.wake();
                }
            }
        });
        let mut seq = 0;
        while seq < STRESS_RECORDS {
            let mut got = 0;
            for record in rx.read() {
                check(record, seq, len_of(seed, seq, max_len));
                got += 1;
                seq += 1;
            }
            rx.release();
            if got == 0 && rx.prepare_sleep() {
                waker.sleep();
                rx.finish_sleep();
            }
        }
        producer.join().expect("producer panicked");
    }

    #[test]
    fn two_threads_preserve_order_and_content_under_wrap_and_sleep() {
        stress(0x9e37_79b9_7f4a_7c15, 256);
        stress(42, 4096);
    }
}
