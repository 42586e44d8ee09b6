//! `verity-recv`: accepts sink connections from nodes, drops duplicates by
//! seq (counting them), ACKs, and writes what it received to a file in the
//! received-file format of `tools/FORMATS.md`.
//!
//! Per channel it keeps `delivered`, the highest seq written. A DATA frame
//! with `seq <= delivered` is a duplicate (a resend after a node restart): it
//! is counted and dropped. `seq == delivered + 1` is written. A gap is NACKed
//! (once per 50 ms) and dropped. After every read the file is written
//! (`write(2)`) and each channel that moved is ACKed once the bytes are
//! durable at the configured level ([`Durability`]): the file holds
//! everything ACKed, and so does the RESUME a node gets when it connects.
//!
//! Restarts: an existing `out` is reopened ([`RecvConfig::fresh`] false):
//! every channel's `delivered` is rebuilt from the file and a torn tail (a
//! record cut short, failing its CRC, or out of sequence, left by a crash) is
//! truncated with one message on stderr. A file that is not a received file
//! is refused, untouched. The file is locked (`flock`) while a receiver has
//! it open, so a second receiver on the same file is refused too.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity_wire::client::{Hold, SinkLedger, Verdict};
use verity_wire::frames::content_crc;
use verity_wire::handshake::{Acceptor, Me, Refusal};
use verity_wire::{Decoder, Encoder, ErrorCode, Kind, Role, HANDSHAKE_MAX_FRAME_LEN};

use crate::formats::{scan_received, FormatError, ReceivedWriter};

pub mod cli;

/// When the receiver ACKs a record (and names it in a RESUME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once its bytes are written to the file (`write(2)`): they survive a
    /// `kill -9` of the receiver (the page cache keeps them), not a machine
    /// crash.
    #[default]
    Process,
    /// Once `fdatasync` covered them: they survive a machine crash. One sync
    /// covers every connection's writes so far (group commit).
    Fsync,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::Fsync => "fsync",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "process" => Ok(Durability::Process),
            "fsync" => Ok(Durability::Fsync),
            other => Err(format!("unknown durability {other:?} (process or fsync)")),
        }
    }
}

impl core::fmt::Display for Durability {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Records in the file (each channel's seqs 1..=delivered), those found
    /// at start included.
    pub records: u64,
    /// Records found in the file at start (a reopen).
    pub recovered: u64,
    /// Bytes of a torn tail truncated at start.
    pub torn_bytes: u64,
    /// Bytes truncated at start on purpose (`fresh`).
    pub fresh_bytes: u64,
    /// `fdatasync` calls (durability fsync).
    pub syncs: u64,
    /// Frames dropped because their seq was already delivered.
    pub duplicates: u64,
    /// Frames dropped because an earlier seq was missing.
    pub gaps: u64,
    pub nacks: u64,
    pub connections: u64,
    pub bad_frames: u64,
    /// Duplicates whose bytes differed from the record written under that
    /// seq (the connection was refused; the record in the file stands).
    pub conflicts: u64,
    /// Highest seq delivered per channel.
    pub delivered: BTreeMap<u32, u64>,
}

/// Node `n` sends its outputs on channel `SINK_CHANNEL_BASE + n`.
pub const SINK_CHANNEL_BASE: u32 = 1000;

/// Frames of a channel whose content checksums are kept (a power of two):
/// a duplicate within this many of `delivered` is compared with the frame
/// written under its seq.
pub const DEDUP_WINDOW: u64 = 1 << 16;

/// One gap is NACKed at most this often.
pub(crate) const NACK_INTERVAL: Duration = Duration::from_millis(20);
/// Selective repeat (`wire/PROTOCOL.md`, rule 6): per channel, frames
/// after a gap are kept up to this many seqs past `delivered` ...
const REORDER_WINDOW: usize = 1 << 16;
/// ... and this many bytes, as a node keeps them by default.
const REORDER_BYTES: usize = 16 << 20;

fn nanos_since(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// The content checksums ([`verity_wire::frames::content_crc`]) of a
/// channel's last [`DEDUP_WINDOW`] written frames.
struct Written {
    crcs: Vec<u32>,
    /// Seqs up to here were in the file at start: their checksums are not
    /// kept.
    known_after: u64,
}

impl Written {
    /// The checksum kept for `seq`, if it is in the window.
    fn get(&self, seq: u64, delivered: u64) -> Option<u32> {
        (seq > self.known_after && delivered - seq < DEDUP_WINDOW)
            .then(|| self.crcs[(seq & (DEDUP_WINDOW - 1)) as usize])
    }
}

struct State {
    writer: ReceivedWriter<File>,
    /// Each channel's `delivered` and the NACK pacing (the simulator's sink
    /// runs the same ledger). `stats.delivered` is filled from it.
    ledger: SinkLedger,
    stats: RecvStats,
    error: Option<String>,
    /// Bytes of the file known durable at the configured level (fsync:
    /// covered by a finished `fdatasync`).
    synced: u64,
    /// A connection is running `fdatasync` (without the lock).
    syncing: bool,
    /// Per channel: what was written recently, to catch conflicting
    /// duplicates (created on a channel's first frame).
    written: BTreeMap<u32, Written>,
    /// Kept frames whose turn came, being written (reused).
    held: Vec<u8>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a sync finishes.
    synced_cv: Condvar,
    /// The file again (a second descriptor), to sync without the lock.
    sync_file: File,
    durability: Durability,
    before_sync: Option<SyncHook>,
    stop: AtomicBool,
    /// The origin of the ledger's clock (its NACK pacing).
    origin: Instant,
    cluster_id: u64,
    secret: Option<Vec<u8>>,
    max_frame_len: u32,
    /// Each read is throttled to this many bytes per second (tests of
    /// backpressure); `None` reads as fast as it can.
    read_rate: Option<u64>,
    on_record: Option<OnRecord>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the others down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once the file's first `need` bytes are durable at the
    /// configured level; false after a write or sync error (then nothing
    /// may be ACKed). Fsync: group commit. A connection whose bytes a
    /// finished sync covers returns at once; else it waits for the sync
    /// under way, or runs one itself (without the lock, so others keep
    /// writing) that covers every byte written so far, by any connection.
    fn durable(&self, need: u64) -> bool {
        if self.durability == Durability::Process {
            // Written is durable enough, unless a write failed: then what
            // `delivered` says may not be in the file.
            return self.lock().error.is_none();
        }
        let mut st = self.lock();
        loop {
            if st.error.is_some() {
                return false;
            }
            if st.synced >= need {
                return true;
            }
            if st.syncing {
                st = match self.synced_cv.wait_timeout(st, Duration::from_millis(100)) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                continue;
            }
            st.syncing = true;
            let target = st.writer.written();
            drop(st);
            if let Some(hook) = &self.before_sync {
                hook(target);
            }
            let r = self.sync_file.sync_data();
            st = self.lock();
            st.syncing = false;
            match r {
                Ok(()) => {
                    st.synced = st.synced.max(target);
                    st.stats.syncs += 1;
                }
                Err(e) => {
                    st.error.get_or_insert(format!("fdatasync failed: {e}"));
                }
            }
            self.synced_cv.notify_all();
        }
    }
}

/// A running receiver (a listener thread and one thread per connection).
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
    out: PathBuf,
}

/// Called for every record written: (channel, seq, trace id).
pub type OnRecord = Arc<dyn Fn(u32, u64, u64) + Send + Sync>;

/// Called (without the lock) before each `fdatasync` with the file length it
/// will cover (tests hold a sync back with it to watch ACKs wait).
pub type SyncHook = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Clone)]
pub struct RecvConfig {
    pub listen: SocketAddr,
    pub out: PathBuf,
    pub cluster_id: u64,
    pub max_frame_len: u32,
    pub read_rate: Option<u64>,
    /// Per-record hook (latency measurement in `verity-bench`).
    pub on_record: Option<OnRecord>,
    /// The client secret: nodes must answer our challenge with it, and we
    /// answer theirs (`None`: no authentication).
    pub secret: Option<Vec<u8>>,
    /// TLS server settings (`--tls-cert`/`--tls-key`, with `--tls-ca`
    /// client certificates required): `crate::tls::server_config`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Truncate `out` instead of reopening it (only a received file, or an
    /// empty one, is truncated).
    pub fresh: bool,
    /// When to ACK.
    pub durability: Durability,
    /// See [`SyncHook`].
    pub before_sync: Option<SyncHook>,
}

impl RecvConfig {
    pub fn new(listen: SocketAddr, out: &Path) -> RecvConfig {
        RecvConfig {
            listen,
            out: out.to_owned(),
            cluster_id: 1,
            max_frame_len: verity_wire::DEFAULT_MAX_FRAME_LEN,
            read_rate: None,
            on_record: None,
            secret: None,
            tls: None,
            fresh: false,
            durability: Durability::Process,
            before_sync: None,
        }
    }
}

#[derive(Debug)]
pub enum RecvError {
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The output file cannot be used: unreadable, not a received file, or
    /// a file error while reopening it.
    Format(FormatError),
    /// Another receiver has the output file open (it is locked).
    Busy(PathBuf),
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecvError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            RecvError::Format(
                e @ (FormatError::NotReceived { .. }
                | FormatError::UnsupportedVersion { .. }
                | FormatError::Corrupt { offset: 0, .. }),
            ) => {
                write!(f, "{e}; refusing to write to it (choose another --out)")
            }
            RecvError::Format(e) => write!(f, "{e}"),
            RecvError::Busy(p) => write!(
                f,
                "{}: another receiver has this file open (it is locked)",
                p.display()
            ),
        }
    }
}

/// What opening the output file found and did.
struct Opened {
    file: File,
    writer: ReceivedWriter<File>,
    stats: RecvStats,
}

fn io_error(path: &Path, source: std::io::Error) -> RecvError {
    RecvError::Format(FormatError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Opens (creating, reopening or, with `fresh`, truncating) the output file:
/// locks it, scans it, truncates a torn tail (one message on stderr),
/// positions it at the end of its good records and writes the file header if
/// it has none. Fsync durability: everything so far is synced, the
/// directory too, before any ACK can name it.
fn open_out(cfg: &RecvConfig) -> Result<Opened, RecvError> {
    let path = &cfg.out;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(RecvError::Busy(path.clone())),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(path, e)),
    }
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    // Refuses a file that is not a received file before touching it.
    let scan = scan_received(&file, path).map_err(RecvError::Format)?;
    let mut stats = RecvStats::default();
    let keep = if cfg.fresh {
        stats.fresh_bytes = len;
        0
    } else {
        if scan.good_bytes < len {
            let why = scan.bad.as_ref().map_or_else(
                || "bytes past the last record".to_string(),
                |e| e.to_string(),
            );
            eprintln!(
                "verity-recv: {}: torn tail at byte offset {}: {why}; truncating there, dropping {} bytes",
                path.display(),
                scan.good_bytes,
                len - scan.good_bytes
            );
            stats.torn_bytes = len - scan.good_bytes;
        }
        stats.delivered = scan.delivered;
        stats.records = scan.records;
        stats.recovered = scan.records;
        scan.good_bytes
    };
    if keep < len {
        file.set_len(keep).map_err(|e| io_error(path, e))?;
    }
    file.seek(SeekFrom::Start(keep))
        .map_err(|e| io_error(path, e))?;
    let handle = file.try_clone().map_err(|e| io_error(path, e))?;
    let mut writer = if keep == 0 {
        ReceivedWriter::new(handle, path)
    } else {
        ReceivedWriter::append(handle, path, keep)
    };
    writer.flush().map_err(RecvError::Format)?;
    if cfg.durability == Durability::Fsync {
        // The length (a truncation, the header) and what an earlier
        // incarnation left in the page cache, and the file's name.
        file.sync_all().map_err(|e| io_error(path, e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, e))?;
    }
    Ok(Opened {
        file,
        writer,
        stats,
    })
}

impl std::error::Error for RecvError {}

impl Receiver {
    pub fn start(cfg: &RecvConfig) -> Result<Receiver, RecvError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|error| RecvError::Bind {
            addr: cfg.listen,
            error,
        })?;
        let addr = listener.local_addr().map_err(|error| RecvError::Bind {
            addr: cfg.listen,
            error,
        })?;
        let Opened {
            file,
            writer,
            stats,
        } = open_out(cfg)?;
        let synced = writer.written();
        let ledger = SinkLedger::new(stats.delivered.clone(), NACK_INTERVAL.as_nanos() as u64)
            .keep(REORDER_WINDOW, REORDER_BYTES);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                writer,
                ledger,
                stats,
                error: None,
                synced,
                syncing: false,
                written: BTreeMap::new(),
                held: Vec::new(),
            }),
            synced_cv: Condvar::new(),
            sync_file: file,
            durability: cfg.durability,
            before_sync: cfg.before_sync.clone(),
            stop: AtomicBool::new(false),
            origin: Instant::now(),
            cluster_id: cfg.cluster_id,
            secret: cfg.secret.clone(),
            max_frame_len: cfg.max_frame_len,
            read_rate: cfg.read_rate,
            on_record: cfg.on_record.clone(),
            tls: cfg.tls.clone(),
        });
        let _ = listener.set_nonblocking(true);
        let sh = Arc::clone(&shared);
        let handle = thread::spawn(move || accept_loop(listener, sh));
        Ok(Receiver {
            shared,
            addr,
            listener: Some(handle),
            out: cfg.out.clone(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    pub fn stats(&self) -> RecvStats {
        let st = self.shared.lock();
        let mut stats = st.stats.clone();
        stats.delivered = st.ledger.all().clone();
        stats
    }

    /// Total records written so far.
    pub fn records(&self) -> u64 {
        self.shared.lock().stats.records
    }

    /// The first file error, if writing failed.
    pub fn error(&self) -> Option<String> {
        self.shared.lock().error.clone()
    }

    /// Waits until `records` records arrived, or `timeout` passed (false).
    pub fn wait_for(&self, records: u64, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.records() >= records {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.records() >= records
    }

    /// Stops accepting and reading, flushes the file (fsync durability:
    /// and syncs it), returns the stats.
    pub fn stop(mut self) -> Result<RecvStats, RecvError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        let mut st = self.shared.lock();
        st.writer.flush().map_err(RecvError::Format)?;
        if self.shared.durability == Durability::Fsync {
            self.shared
                .sync_file
                .sync_data()
                .map_err(|e| io_error(&self.out, e))?;
        }
        Ok(st.stats.clone())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// A stream a sink serves: TCP, or TLS over it.
pub(crate) trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// What a sink's listener needs of its server (`verity-recv`,
/// `verity-sink-postgres`): [`accept_loop`] does the rest.
pub(crate) trait Connections: Send + Sync + 'static {
    fn stopped(&self) -> bool;
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>>;
    /// One more connection was accepted (counted).
    fn accepted(&self);
    /// What messages call the server.
    fn name(&self) -> &str;
    /// Serves one node connection until it ends.
    fn serve(&self, stream: &mut dyn ReadWrite) -> std::io::Result<()>;
}

/// A sink's listener loop: accepts until the server stops, one thread per
/// connection: the socket tuned, reads timing out after 50 ms (so a stop
/// is seen), TLS when configured (its handshake runs within the first
/// reads). A lost connection is normal (a node crash: it reconnects and
/// resends); a TLS failure is said.
pub(crate) fn accept_loop<C: Connections>(listener: TcpListener, shared: Arc<C>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let sh = Arc::clone(&shared);
                sh.accepted();
                conns.push(thread::spawn(move || {
                    if let Err(e) = serve_stream(stream, &*sh) {
                        if let Some(why) = crate::tls::failure(&e) {
                            eprintln!("{}: TLS with {peer} failed: {why}", sh.name());
                        }
                    }
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        conns.retain(|h| !h.is_finished());
    }
    for h in conns {
        let _ = h.join();
    }
}

fn serve_stream<C: Connections>(stream: TcpStream, c: &C) -> std::io::Result<()> {
    crate::net::tune(&stream);
    // Also how soon an open gap is NACKed again when nothing comes.
    stream.set_read_timeout(Some(Duration::from_millis(10)))?;
    match c.tls() {
        None => c.serve(&mut { stream }),
        Some(tls) => c.serve(&mut crate::tls::TlsStream::server(tls, stream)?),
    }
}

impl Connections for Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }
    fn accepted(&self) {
        self.lock().stats.connections += 1;
    }
    fn name(&self) -> &str {
        "verity-recv"
    }
    fn serve(&self, stream: &mut dyn ReadWrite) -> std::io::Result<()> {
        serve_on(stream, self)
    }
}

fn serve_on<S: Read + Write>(mut stream: S, shared: &Shared) -> std::io::Result<()> {
    let enc = Encoder::new(shared.max_frame_len);
    let mut dec = Decoder::new(shared.max_frame_len);
    let mut out = BytesMut::new();
    let mut chunk = vec![0u8; 256 << 10];
    let mut ready = false;
    // Our side of the HELLO exchange; until it is done, frames up to an
    // ERROR's size.
    let mut greeting = SinkHandshake::new(shared.cluster_id);
    // The one channel this node sends on, once its handshake is done.
    let mut connection_channel: Option<u32> = None;
    dec.set_max_frame_len(HANDSHAKE_MAX_FRAME_LEN);
    // Channels whose `delivered` is to be ACKed (again) after this read.
    let mut moved: Vec<u32> = Vec::new();
    // This batch sent a RESUME (it names what the file holds: it waits for
    // durability as ACKs do).
    let mut resumed;
    let started = Instant::now();
    let mut read_total = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let want = match shared.read_rate {
            Some(rate) => {
                let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if allowed <= read_total {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
                ((allowed - read_total) as usize).min(chunk.len())
            }
            None => chunk.len(),
        };
        let got = match stream.read(&mut chunk[..want]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                // Nothing came: gaps still open are NACKed again.
                if let Some(channel) = connection_channel {
                    let mut nacks = Vec::new();
                    let now = nanos_since(shared.origin);
                    shared.lock().ledger.renack(channel, now, &mut nacks);
                    if !nacks.is_empty() {
                        out.clear();
                        SinkLedger::nack(&enc, &mut out, channel, &nacks);
                        stream.write_all(&out)?;
                    }
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        read_total += got as u64;
        dec.extend(&chunk[..got]);
        out.clear();
        moved.clear();
        resumed = false;
        let need = {
            let mut st = shared.lock();
            loop {
                let f = match dec.decode() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        st.stats.bad_frames += 1;
                        let text = format!("bad frame at stream offset {}: {e}", dec.position());
                        drop(st);
                        return refuse(shared, &mut stream, &mut out, &enc, e.error_code(), &text);
                    }
                };
                match (ready, f.kind()) {
                    (false, Kind::Hello) => {
                        match greeting.on_hello(&f.view(), shared.secret.as_deref(), &enc, &mut out)
                        {
                            Err(r) => {
                                drop(st);
                                return refuse(
                                    shared,
                                    &mut stream,
                                    &mut out,
                                    &enc,
                                    r.code,
                                    &r.text,
                                );
                            }
                            Ok(None) => {}
                            Ok(Some(ch)) => {
                                // RESUME names the channel, and an ACK of
                                // what the file holds follows (a RESUME
                                // drops nothing at the node).
                                st.ledger.greet(ch, &enc, &mut out);
                                connection_channel = Some(ch);
                                resumed = true;
                                ready = true;
                                dec.set_max_frame_len(shared.max_frame_len);
                            }
                        }
                    }
                    (true, Kind::Data) => {
                        let h = f.header();
                        let (channel, seq) = (h.channel(), h.seq());
                        if Some(channel) != connection_channel {
                            let text = format!(
                                "DATA on channel {channel}: this node's channel to the sink is {}",
                                connection_channel.unwrap_or(0)
                            );
                            drop(st);
                            return refuse(
                                shared,
                                &mut stream,
                                &mut out,
                                &enc,
                                ErrorCode::UnknownChannel,
                                &text,
                            );
                        }
                        let delivered = st.ledger.get(channel);
                        let verdict = st.ledger.offer(channel, seq);
                        let crc = content_crc(&f.view());
                        let written = st.written.entry(channel).or_insert_with(|| Written {
                            crcs: vec![0; DEDUP_WINDOW as usize],
                            known_after: delivered,
                        });
                        let conflict = match verdict {
                            Verdict::Duplicate { delivered } => {
                                let differs = written.get(seq, delivered).is_some_and(|c| c != crc);
                                if !differs {
                                    st.stats.duplicates += 1;
                                    moved.push(channel);
                                }
                                differs
                            }
                            Verdict::Deliver => {
                                let trace = h.trace_id();
                                if !deliver(&mut st, shared, channel, seq, trace, f.payload(), crc)
                                {
                                    return Ok(());
                                }
                                // Frames kept after a gap whose turn came.
                                let mut held = std::mem::take(&mut st.held);
                                while st.ledger.take(channel, &mut held) {
                                    let Ok(Some(v)) =
                                        verity_wire::parse(&held, shared.max_frame_len)
                                    else {
                                        break;
                                    };
                                    let (seq, trace) = (v.header.seq(), v.header.trace_id());
                                    let crc = content_crc(&v);
                                    if !deliver(
                                        &mut st, shared, channel, seq, trace, v.payload, crc,
                                    ) {
                                        return Ok(());
                                    }
                                    held.clear();
                                }
                                held.clear();
                                st.held = held;
                                moved.push(channel);
                                false
                            }
                            Verdict::Gap => {
                                st.stats.gaps += 1;
                                let mut nacks = Vec::new();
                                let now = nanos_since(shared.origin);
                                let kept = st.ledger.gap(&f.view(), crc, now, &mut nacks);
                                if !nacks.is_empty() {
                                    st.stats.nacks += 1;
                                    SinkLedger::nack(&enc, &mut out, channel, &nacks);
                                }
                                kept == (Hold::Already { same: false })
                            }
                        };
                        if conflict {
                            // Another producer, or a changed record: the
                            // record in the file (or kept first) stands.
                            st.stats.conflicts += 1;
                            let text = format!(
                                "DATA seq {seq} of channel {channel} differs from the frame accepted with that seq (the first accepted version stands)"
                            );
                            drop(st);
                            return refuse(
                                shared,
                                &mut stream,
                                &mut out,
                                &enc,
                                ErrorCode::Protocol,
                                &text,
                            );
                        }
                    }
                    (true, Kind::Heartbeat) => {}
                    (_, Kind::Error) => return Ok(()),
                    (_, kind) => {
                        let text = format!("unexpected {kind} on a sink connection");
                        drop(st);
                        return refuse(
                            shared,
                            &mut stream,
                            &mut out,
                            &enc,
                            ErrorCode::Protocol,
                            &text,
                        );
                    }
                }
            }
            if !moved.is_empty() {
                // ACK only what is in the file.
                if let Err(e) = st.writer.flush() {
                    st.error.get_or_insert(e.to_string());
                    return Ok(());
                }
                moved.sort_unstable();
                moved.dedup();
                for &channel in &moved {
                    let _ = enc.ack(&mut out, channel, 0, st.ledger.get(channel));
                }
            }
            // Every record an ACK or RESUME names is in the first `need`
            // bytes (a duplicate's may have come on another connection).
            (!moved.is_empty() || resumed).then(|| st.writer.written())
        };
        if need.is_some_and(|n| !shared.durable(n)) {
            return Ok(());
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
    }
    Ok(())
}

/// The sink's side of a node's handshake (the three HELLOs of
/// `wire/PROTOCOL.md`): the node's first HELLO, ours with our answer and
/// challenge, the node's answer. Shared by `verity-recv` and
/// `verity-sink-postgres`.
pub struct SinkHandshake {
    acceptor: Option<Acceptor>,
    answered: bool,
}

impl SinkHandshake {
    pub fn new(cluster_id: u64) -> SinkHandshake {
        let me = Me {
            cluster_id,
            node_id: 0,
            role: Role::Sink,
        };
        SinkHandshake {
            acceptor: crate::client_auth::challenge()
                .ok()
                .map(|c| Acceptor::new(me, c)),
            answered: false,
        }
    }

    /// A HELLO from the node: `Ok(None)` once our HELLO is appended to
    /// `out`, `Ok(Some(channel))` when the node proved itself; node n sends
    /// on channel 1000 + n (wire/PROTOCOL.md, Channels).
    pub fn on_hello(
        &mut self,
        view: &verity_wire::FrameView<'_>,
        secret: Option<&[u8]>,
        enc: &Encoder,
        out: &mut BytesMut,
    ) -> Result<Option<u32>, Refusal> {
        let Some(a) = self.acceptor.as_mut() else {
            return Err(Refusal {
                code: ErrorCode::Internal,
                text: "no random source for a challenge".into(),
            });
        };
        if !self.answered {
            let hello = a.on_hello(view, secret, &[Role::Node])?;
            let _ = enc.hello(out, 0, &hello);
            self.answered = true;
            return Ok(None);
        }
        let peer = a.on_answer(view, secret)?;
        Ok(Some(SINK_CHANNEL_BASE.saturating_add(peer.node_id)))
    }
}

/// Sends ERROR (after whatever `out` holds: a RESUME too, once what it names
/// is durable) and gives up on the connection (best effort: the peer may be
/// gone already).
/// Writes record `seq` of `channel` (content checksum `crc`), the next
/// in order, to the file: `false` when the write failed (the error is
/// kept in the state).
fn deliver(
    st: &mut State,
    shared: &Shared,
    channel: u32,
    seq: u64,
    trace: u64,
    payload: &[u8],
    crc: u32,
) -> bool {
    if let Err(e) = st.writer.write(channel, seq, trace, payload) {
        st.error.get_or_insert(e.to_string());
        return false;
    }
    if let Some(w) = st.written.get_mut(&channel) {
        w.crcs[(seq & (DEDUP_WINDOW - 1)) as usize] = crc;
    }
    st.ledger.delivered(channel, seq);
    st.stats.records += 1;
    if let Some(hook) = &shared.on_record {
        hook(channel, seq, trace);
    }
    true
}

fn refuse(
    shared: &Shared,
    stream: &mut impl Write,
    out: &mut BytesMut,
    enc: &Encoder,
    code: ErrorCode,
    text: &str,
) -> std::io::Result<()> {
    let need = shared.lock().writer.written();
    if !shared.durable(need) {
        return Ok(());
    }
    let _ = enc.error(out, 0, code, text);
    let _ = stream.write_all(out);
    Ok(())
}
