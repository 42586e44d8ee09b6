//! The real-runtime driver of one node: a hand-written mio event loop around
//! [`NodeCore`], with the journal, the outbound log and the dead-letter log as
//! mmap logs, sources listening for sender connections and the sink connecting
//! out to the receiver (with backoff).
//!
//! One iteration: poll; read every readable source connection (while the core
//! wants input), decode whole frames in place, hand each DATA frame to the
//! core and carry out its effects (journal the frame, log the outputs, queue
//! NACKs); then make the journal durable (`process`: at once; `fsync`: the
//! syncer's published position), which releases ACKs to the sources and
//! outputs to the sink; then write queued bytes, one `write` per connection.
//!
//! ## What the logs hold
//!
//! | log | record kind | payload |
//! |-----|-------------|---------|
//! | `journal/` | 1 `INPUT` | the DATA frame as it arrived (header + payload + padding); the record's timestamp is the clock reading at acceptance |
//! | `outbound/` | 2 `OUTPUT` | one output DATA frame to the sink, as sent (epoch 0) |
//! | `dead-letters/` | 3 `DEAD_LETTER` | below |
//!
//! Dead-letter payload (little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | journal index of the input |
//! | 8  | 4 | input channel |
//! | 12 | 4 | reason length `n` |
//! | 16 | 8 | the input's seq |
//! | 24 | 8 | the input's trace id |
//! | 32 | n | reason, UTF-8 (the app's [`crate::app::Reject`] text) |

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use verity_wire::{
    Decoder, Encoder, ErrorCode, Frame, FrameView, Hello, Kind, ResumeEntry, Role, WireError,
    HEADER_LEN, VERSION,
};

use super::config::NodeToml;
use super::datadir::{DataDir, DataDirError};
use crate::core::{Effects, Input, JournalEntry, NodeConfig, NodeCore};
use crate::log::{Durability, Log, LogConfig, LogError};

/// Log record kinds.
pub const KIND_INPUT: u32 = 1;
pub const KIND_OUTPUT: u32 = 2;
pub const KIND_DEAD_LETTER: u32 = 3;

const LISTENER: Token = Token(0);
const SINK: Token = Token(1);
const FIRST_SOURCE: usize = 2;
/// Bytes read from one connection per loop iteration (fairness between sources).
const READ_CHUNK: usize = 64 << 10;
const SINK_BACKOFF_MIN: Duration = Duration::from_millis(50);
const SINK_BACKOFF_MAX: Duration = Duration::from_secs(2);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs SIGTERM/SIGINT handlers that ask the loop to stop gracefully.
pub fn install_signal_handlers() {
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe;
    // the handler pointer has the signature `signal` expects.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// Why a worker could not start or had to stop.
#[derive(Debug)]
pub enum WorkerError {
    DataDir(DataDirError),
    Log(LogError),
    Snapshot { path: String, error: String },
    Replay(String),
    Io { what: String, error: io::Error },
}

impl core::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WorkerError::DataDir(e) => write!(f, "{e}"),
            WorkerError::Log(e) => write!(f, "{e}"),
            WorkerError::Snapshot { path, error } => write!(f, "snapshot {path}: {error}"),
            WorkerError::Replay(e) => write!(f, "journal replay: {e}"),
            WorkerError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<LogError> for WorkerError {
    fn from(e: LogError) -> Self {
        WorkerError::Log(e)
    }
}
impl From<DataDirError> for WorkerError {
    fn from(e: DataDirError) -> Self {
        WorkerError::DataDir(e)
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> WorkerError {
    let what = what.into();
    move |error| WorkerError::Io { what, error }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum ConnState {
    /// Waiting for the peer's HELLO.
    AwaitHello,
    /// Sink only: HELLO seen, waiting for RESUME.
    AwaitResume,
    Ready,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    dec: Decoder,
    wbuf: BytesMut,
    state: ConnState,
    /// ERROR sent: flush and close, read nothing more.
    closing: bool,
    /// Bytes are waiting in the socket (edge-triggered: we must come back).
    readable: bool,
    writable: bool,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, max_frame_len: u32, cap: usize) -> Conn {
        Conn {
            stream,
            peer,
            dec: Decoder::with_capacity(max_frame_len, cap),
            wbuf: BytesMut::with_capacity(64 << 10),
            state: ConnState::AwaitHello,
            closing: false,
            readable: true,
            writable: false,
        }
    }

    /// Writes as much of `wbuf` as the socket takes. Err = connection lost.
    fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads up to `max` bytes into the decoder. Ok(false) = peer closed.
    fn fill(&mut self, max: usize) -> io::Result<bool> {
        let buf = self.dec.read_buf();
        buf.reserve(max);
        let spare = buf.spare_capacity_mut();
        let want = max.min(spare.len());
        loop {
            // read(2) straight into the buffer's spare capacity: no zeroing
            // of memory the kernel is about to overwrite (2.8% of the node's
            // time when it was `resize(.., 0)`).
            // SAFETY: `spare` is valid for writes of `want` bytes (it is the
            // BytesMut's unused capacity, `want <= spare.len()`), read(2)
            // writes at most `want` bytes into it, and the fd is the socket
            // this Conn owns.
            let n = unsafe {
                libc::read(
                    self.stream.as_raw_fd(),
                    spare.as_mut_ptr().cast::<libc::c_void>(),
                    want,
                )
            };
            if n > 0 {
                // SAFETY: read(2) initialised the first `n <= want` bytes of
                // the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
                return Ok(true);
            }
            if n == 0 {
                return Ok(false);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(true);
                }
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }
}

/// Counters for the report printed at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    pub replayed: u64,
    pub snapshots: u64,
    pub bad_frames: u64,
    pub sink_connects: u64,
    pub sources_accepted: u64,
    pub dead_letters_logged: u64,
}

pub struct Worker {
    cfg: NodeToml,
    dir: DataDir,
    core: NodeCore,
    fx: Effects,
    enc: Encoder,
    journal: Log,
    outbound: Log,
    dead: Log,
    poll: Poll,
    listener: TcpListener,
    sources: Vec<Option<Conn>>,
    sink: Option<Conn>,
    sink_retry_at: Instant,
    sink_backoff: Duration,
    /// (first seq, last seq, log position) of every outbound record (a run
    /// of output frames) not yet wholly ACKed by the sink.
    out_index: VecDeque<(u64, u64, u64)>,
    /// Next seq to write to the sink.
    sink_cursor: u64,
    /// fsync durability: (records after this one, its end position).
    undurable: VecDeque<(u64, u64)>,
    /// Input channel − 1 → the source slot that sent on it last (for ACKs).
    channel_conn: Vec<Option<usize>>,
    /// Dead letters at journal indexes below this are already logged.
    dead_logged_below: u64,
    /// Highest seq in the outbound log at start: outputs up to it that are
    /// produced again (replay, or inputs resent after journal damage) are
    /// checked against the log instead of being logged twice.
    logged_through: u64,
    records_at_snapshot: u64,
    /// The clock reading for the frames of the current read batch: one
    /// `clock_gettime` per socket read, not per frame (the journal records
    /// it with each accepted input).
    batch_clock_ns: u64,
    pub stats: WorkerStats,
}

/// (seq, byte offset, stride) of each frame in a run of whole frames, as
/// the worker writes them to its logs (already validated when written; the
/// log record's CRC covers them). Reads only `frame_len` and `seq`.
fn frames_in(run: &[u8]) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + HEADER_LEN > run.len() {
            return None;
        }
        let len = u32::from_le_bytes(run[at + 4..at + 8].try_into().unwrap_or([0; 4])) as usize;
        let stride = verity_wire::stride(len.max(HEADER_LEN)).min(run.len() - at);
        let seq = u64::from_le_bytes(run[at + 24..at + 32].try_into().unwrap_or([0; 8]));
        let item = (seq, at, stride);
        at += stride;
        Some(item)
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Worker {
    /// Opens the data directory, recovers (snapshot + journal replay), binds
    /// the source listener. Prints what recovery did to stderr.
    pub fn start(cfg: NodeToml) -> Result<Worker, WorkerError> {
        let dir = DataDir::open(&cfg.data_dir)?;
        let Some(app) = crate::apps::build(&cfg.app) else {
            return Err(WorkerError::Replay(format!("unknown app {:?}", cfg.app)));
        };
        let node_cfg = NodeConfig {
            sink_channel: 1000 + cfg.node_id,
            max_unacked: cfg.limits.max_unacked,
            max_undurable: cfg.limits.max_undurable,
            max_frame_len: cfg.limits.max_frame_len,
            ..NodeConfig::default()
        };
        let mut core = NodeCore::new(app, node_cfg);
        let log_cfg = |durability| LogConfig {
            segment_size_bytes: cfg.limits.journal_segment_bytes,
            durability,
            ..LogConfig::default()
        };
        let (journal, jrec) = Log::open(&dir.root, "journal", log_cfg(cfg.durability))?;
        // The outbound log is as durable as the journal (DESIGN §3.1).
        let (outbound, orec) = Log::open(&dir.root, "outbound", log_cfg(cfg.durability))?;
        let (dead, drec) = Log::open(&dir.root, "dead-letters", log_cfg(Durability::Process))?;
        for (name, r) in [
            ("journal", &jrec),
            ("outbound", &orec),
            ("dead-letters", &drec),
        ] {
            if r.bytes_dropped > 0 {
                eprintln!(
                    "verity: recovery: {name}: dropped a torn tail of {} bytes ({})",
                    r.bytes_dropped,
                    r.stopped_because.unwrap_or("end"),
                );
            }
        }

        let mut skipped = Vec::new();
        let snapshot = dir.newest_snapshot(&mut skipped)?;
        for s in &skipped {
            eprintln!("verity: recovery: skipping invalid snapshot: {s}");
        }
        let mut replay_from = journal.first_position();
        if let Some(s) = &snapshot {
            core.restore(&s.body).map_err(|e| WorkerError::Snapshot {
                path: s.path.display().to_string(),
                error: e.to_string(),
            })?;
            replay_from = s.journal_position;
        }

        // Rebuild the index of outbound frames still in the log.
        let mut out_index = VecDeque::new();
        let mut last_logged_seq = 0;
        for rec in outbound.reader_at(outbound.first_position())? {
            let rec = rec?;
            let mut frames = frames_in(rec.payload).map(|(seq, _, _)| seq);
            let (Some(first), last) = (frames.next(), frames.last()) else {
                return Err(WorkerError::Replay(format!(
                    "outbound record at {} holds no frame",
                    rec.position
                )));
            };
            let last = last.unwrap_or(first);
            out_index.push_back((first, last, rec.position));
            last_logged_seq = last;
        }
        let mut dead_logged_below = 0;
        for rec in dead.reader_at(dead.first_position())? {
            let rec = rec?;
            if rec.payload.len() >= 8 {
                let j = u64::from_le_bytes(rec.payload[0..8].try_into().unwrap_or([0; 8]));
                dead_logged_below = dead_logged_below.max(j + 1);
            }
        }

        let listener = TcpListener::bind(cfg.listen).map_err(io_err(format!(
            "cannot listen on {} (node.listen)",
            cfg.listen
        )))?;
        let poll = Poll::new().map_err(io_err("cannot create the event loop"))?;
        let n_inputs = core.inputs().len();
        let mut w = Worker {
            enc: Encoder::new(cfg.limits.max_frame_len),
            channel_conn: vec![None; n_inputs],
            cfg,
            dir,
            core,
            fx: Effects::default(),
            journal,
            outbound,
            dead,
            poll,
            listener,
            sources: Vec::new(),
            sink: None,
            sink_retry_at: Instant::now(),
            sink_backoff: SINK_BACKOFF_MIN,
            out_index,
            sink_cursor: 1,
            undurable: VecDeque::new(),
            dead_logged_below,
            logged_through: last_logged_seq,
            records_at_snapshot: 0,
            batch_clock_ns: 0,
            stats: WorkerStats::default(),
        };
        w.replay(replay_from)?;
        w.records_at_snapshot = w.core.journal_next();
        if replay_from > w.journal.end_position() {
            // The journal lost records the snapshot covers (damage below it):
            // the snapshot holds that state, but new records would now be
            // appended below its position and skipped by the next replay.
            // Re-anchor at once with a snapshot at the journal's end.
            eprintln!(
                "verity: recovery: the journal ends at {} below the snapshot's position {replay_from}; writing a new snapshot at the journal's end",
                w.journal.end_position()
            );
            w.snapshot()?;
        }
        w.poll
            .registry()
            .register(&mut w.listener, LISTENER, Interest::READABLE)
            .map_err(io_err("cannot register the listener"))?;
        eprintln!(
            "verity: node {} app={} epoch={} listening on {} sink {}; recovered: snapshot at record {}, replayed {} journal records, {} outputs unacked",
            w.cfg.node_id,
            w.cfg.app,
            w.dir.epoch,
            w.cfg.listen,
            w.cfg.sink,
            snapshot.map_or(0, |s| s.journal_index),
            w.stats.replayed,
            w.out_index.len(),
        );
        Ok(w)
    }
}

impl Worker {
    /// Replays the journal from `from` through the core. Outputs whose seq is
    /// already in the outbound log must come out bit-identical (checked) and
    /// are not logged again; later ones are logged.
    fn replay(&mut self, from: u64) -> Result<(), WorkerError> {
        let mut next_index = self.core.journal_next();
        let mut pos = from;
        // A damaged journal may end before the snapshot's position: the
        // snapshot holds that state; there is nothing to replay.
        while pos < self.journal.end_position() {
            let rec = match self.journal.reader_at(pos)?.next() {
                None => break,
                Some(r) => r?,
            };
            pos = rec.next_position();
            if rec.kind != KIND_INPUT {
                continue;
            }
            self.fx.clear();
            // Copy out of the mapping: `handle` needs `&mut self.core` while
            // `rec` borrows `self.journal`. Recovery only, not the hot path.
            let run = rec.payload.to_vec();
            let ts = rec.timestamp;
            let position = rec.position;
            for (_, at, stride) in frames_in(&run) {
                self.core.handle(
                    Input::Replay(JournalEntry {
                        index: next_index,
                        timestamp_ns: ts,
                        frame: &run[at..at + stride],
                    }),
                    &mut self.fx,
                );
                if self.core.journal_next() != next_index + 1 {
                    return Err(WorkerError::Replay(format!(
                        "journal record at position {position} (input {next_index}) does not follow the snapshot's watermarks: the journal and snapshot do not match"
                    )));
                }
                next_index += 1;
                self.stats.replayed += 1;
            }
            self.log_effects()?;
        }
        self.fx.clear();
        let records = self.core.journal_next();
        self.core.handle(Input::Durable { records }, &mut self.fx);
        self.fx.clear();
        Ok(())
    }

    /// Logs the outputs and dead letters in `fx`: the outputs as one
    /// outbound record; those with seq <= `logged_through` are in the log
    /// already and are verified bit for bit instead.
    fn log_effects(&mut self) -> Result<(), WorkerError> {
        let mut new_from = None;
        for (seq, at, stride) in frames_in(&self.fx.outbound) {
            if seq > self.logged_through {
                new_from = Some(at);
                break;
            }
            let logged = self.logged_frame(seq)?;
            if let Some(logged) = logged {
                if logged != self.fx.outbound[at..at + stride] {
                    return Err(WorkerError::Replay(format!(
                        "replay produced a different output frame for seq {seq} than the outbound log holds (non-deterministic app or wrong journal)"
                    )));
                }
            }
        }
        if let Some(from) = new_from {
            let run = &self.fx.outbound[from..];
            let mut seqs = frames_in(run).map(|(seq, _, _)| seq);
            let first = seqs.next().unwrap_or(0);
            let last = seqs.last().unwrap_or(first);
            let p = self.outbound.append(KIND_OUTPUT, 0, run)?;
            self.out_index.push_back((first, last, p));
        }
        for i in 0..self.fx.dead_letters.len() {
            let d = self.fx.dead_letters[i];
            if d.journal_index < self.dead_logged_below {
                continue;
            }
            let mut rec = Vec::with_capacity(40 + d.reason.len());
            rec.extend_from_slice(&d.journal_index.to_le_bytes());
            rec.extend_from_slice(&d.channel.to_le_bytes());
            rec.extend_from_slice(&(d.reason.len() as u32).to_le_bytes());
            rec.extend_from_slice(&d.seq.to_le_bytes());
            rec.extend_from_slice(&d.trace_id.to_le_bytes());
            rec.extend_from_slice(d.reason.as_bytes());
            self.dead.append(KIND_DEAD_LETTER, 0, &rec)?;
            self.dead_logged_below = d.journal_index + 1;
            self.stats.dead_letters_logged += 1;
        }
        Ok(())
    }

    /// The logged bytes of output frame `seq`, if it is still in the outbound log.
    fn logged_frame(&self, seq: u64) -> Result<Option<Vec<u8>>, WorkerError> {
        let i = self.out_index.partition_point(|&(_, last, _)| last < seq);
        let Some(&(first, _, pos)) = self.out_index.get(i) else {
            return Ok(None);
        };
        if seq < first {
            return Ok(None);
        }
        let Some(rec) = self.outbound.reader_at(pos)?.next().transpose()? else {
            return Ok(None);
        };
        Ok(frames_in(rec.payload)
            .find(|&(s, _, _)| s == seq)
            .map(|(_, at, stride)| rec.payload[at..at + stride].to_vec()))
    }

    /// Runs until SIGTERM/SIGINT (then: finish the batch, snapshot, return).
    pub fn run(&mut self) -> Result<(), WorkerError> {
        let mut events = Events::with_capacity(256);
        loop {
            // Don't sleep while there is work we could do now: unread
            // source bytes (edge-triggered: no new event will come) or
            // released outputs the sink socket can still take.
            let sink_ready =
                self.sink.as_ref().is_some_and(|c| {
                    c.state == ConnState::Ready && c.writable && c.wbuf.is_empty()
                }) && self.sink_cursor <= self.core.out().released;
            let wants_input = self.core.wants_input();
            let source_work = self
                .sources
                .iter()
                .flatten()
                .any(|c| c.readable && (wants_input || c.state != ConnState::Ready));
            let timeout = if sink_ready || source_work {
                Duration::ZERO
            } else {
                Duration::from_millis(20)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("poll")(e)),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_sources(),
                    SINK => {
                        if let Some(s) = self.sink.as_mut() {
                            s.readable |= ev.is_readable() || ev.is_read_closed();
                            s.writable |= ev.is_writable();
                        }
                    }
                    Token(t) => {
                        if let Some(Some(c)) = self.sources.get_mut(t - FIRST_SOURCE) {
                            c.readable |= ev.is_readable() || ev.is_read_closed();
                            c.writable |= ev.is_writable();
                        }
                    }
                }
            }
            self.service_sink()?;
            self.read_sources()?;
            self.make_durable()?;
            self.pump_sink()?;
            self.flush_sources();
            if self.core.journal_next() - self.records_at_snapshot
                >= self.cfg.snapshot_interval_records
            {
                self.snapshot()?;
            }
            if STOP.load(Ordering::SeqCst) {
                self.shutdown()?;
                return Ok(());
            }
        }
    }

    fn accept_sources(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let live = self.sources.iter().flatten().count();
                    if live >= self.cfg.limits.max_connections {
                        // Tell the peer why, best effort, and refuse it.
                        let mut b = BytesMut::new();
                        let _ = self.enc.error(
                            &mut b,
                            self.dir.epoch,
                            ErrorCode::LimitExceeded,
                            "too many connections (limits.max_connections)",
                        );
                        let _ = stream.write(&b);
                        eprintln!("verity: refused {peer}: limits.max_connections reached");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let slot = match self.sources.iter().position(Option::is_none) {
                        Some(i) => i,
                        None => {
                            self.sources.push(None);
                            self.sources.len() - 1
                        }
                    };
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(FIRST_SOURCE + slot),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        eprintln!("verity: cannot register {peer}: {e}");
                        continue;
                    }
                    self.stats.sources_accepted += 1;
                    self.sources[slot] = Some(Conn::new(
                        stream,
                        peer,
                        self.cfg.limits.max_frame_len,
                        self.cfg.limits.read_buffer_bytes,
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    eprintln!("verity: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn hello(&self, role: Role) -> Hello {
        Hello {
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.node_id,
            role,
            version_min: VERSION,
            version_max: VERSION,
            challenge: [0; 32],
            response: Some([0; 32]),
        }
    }

    fn read_sources(&mut self) -> Result<(), WorkerError> {
        for slot in 0..self.sources.len() {
            let mut budget = READ_CHUNK * 4;
            loop {
                let wants_input = self.core.wants_input();
                let Some(conn) = self.sources[slot].as_mut() else {
                    break;
                };
                // Backpressure holds back data, never a handshake: a source
                // still owed its HELLO is read (or it would time out and
                // retry for as long as the sink lags).
                if !wants_input && conn.state == ConnState::Ready {
                    break;
                }
                if !conn.readable || conn.closing || budget == 0 {
                    break;
                }
                let want = READ_CHUNK
                    .min(
                        self.cfg
                            .limits
                            .read_buffer_bytes
                            .saturating_sub(conn.dec.buffered()),
                    )
                    .max(1);
                budget = budget.saturating_sub(want);
                let filled = conn.fill(want);
                self.batch_clock_ns = now_ns();
                match filled {
                    Ok(true) => {}
                    Ok(false) => {
                        // Peer closed: process what it sent, then drop it.
                        conn.readable = false;
                        self.decode_source(slot)?;
                        self.close_source(slot, None);
                        break;
                    }
                    Err(e) => {
                        let peer = conn.peer;
                        self.close_source(slot, Some(format!("read from {peer}: {e}")));
                        break;
                    }
                }
                self.decode_source(slot)?;
            }
        }
        Ok(())
    }

    /// Handles every whole frame buffered for a source, in place: each
    /// accepted run of DATA frames is appended to the journal as one record
    /// (the frames as they arrived), the outputs of the whole batch as one
    /// outbound record.
    fn decode_source(&mut self, slot: usize) -> Result<(), WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(());
        };
        if conn.closing || conn.dec.poisoned().is_some() {
            return Ok(());
        }
        let max = conn.dec.max_frame_len();
        // Take the bytes out so frames can be viewed while `self` is borrowed.
        let buf = std::mem::take(conn.dec.read_buf());
        self.fx.clear();
        let mut at = 0;
        let mut run_start = 0;
        let mut bad = None;
        while at < buf.len() {
            let view = match verity_wire::parse(&buf[at..], max) {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            };
            let stride = view.stride;
            let journal = self.source_frame(slot, view)?;
            if !journal {
                self.journal_run(&buf[run_start..at])?;
                run_start = at + stride;
            }
            at += stride;
            if self.sources[slot].as_ref().is_none_or(|c| c.closing) {
                break;
            }
        }
        self.journal_run(&buf[run_start..at])?;
        self.log_effects()?;
        self.fx.clear();
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(());
        };
        *conn.dec.read_buf() = buf;
        conn.dec.consume(at);
        if let Some(e) = bad {
            conn.dec.poison(e);
            let at = conn.dec.position();
            self.stats.bad_frames += 1;
            self.refuse_source(slot, e.error_code(), &bad_frame_text(&e, at));
        }
        Ok(())
    }

    /// Appends a run of accepted DATA frames to the journal as one record.
    fn journal_run(&mut self, run: &[u8]) -> Result<(), WorkerError> {
        if run.is_empty() {
            return Ok(());
        }
        let p = self.journal.append(KIND_INPUT, self.batch_clock_ns, run)?;
        if self.cfg.durability == Durability::Fsync {
            let end = p + (32 + run.len()) as u64;
            self.undurable.push_back((self.core.journal_next(), end));
        }
        Ok(())
    }

    /// Handles one frame from a source; `Ok(true)` when it is an accepted
    /// DATA frame the caller must journal.
    fn source_frame(&mut self, slot: usize, frame: FrameView<'_>) -> Result<bool, WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(false);
        };
        let kind = frame.kind();
        match (conn.state, kind) {
            (ConnState::AwaitHello, Kind::Hello) => {
                let Some(h) = frame.hello() else {
                    return Ok(false);
                };
                if h.cluster_id.get() != self.cfg.cluster_id {
                    self.refuse_source(
                        slot,
                        ErrorCode::AuthFailed,
                        "authentication failed: wrong cluster id",
                    );
                    return Ok(false);
                }
                if h.version_min > VERSION || h.version_max < VERSION {
                    self.refuse_source(
                        slot,
                        ErrorCode::VersionUnsupported,
                        "no protocol version in common (this node speaks 1)",
                    );
                    return Ok(false);
                }
                let hello = self.hello(Role::Node);
                let entries: Vec<ResumeEntry> = self
                    .core
                    .inputs()
                    .iter()
                    .map(|c| ResumeEntry::new(c.id, c.delivered))
                    .collect();
                let epoch = self.dir.epoch;
                let enc = self.enc;
                if let Some(conn) = self.sources[slot].as_mut() {
                    let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
                    let _ = enc.resume(&mut conn.wbuf, epoch, &entries);
                    conn.state = ConnState::Ready;
                }
            }
            (ConnState::Ready, Kind::Data) => {
                let now = self.batch_clock_ns;
                let channel = frame.header.channel();
                if let Some(c) = (channel as usize)
                    .checked_sub(1)
                    .and_then(|i| self.channel_conn.get_mut(i))
                {
                    *c = Some(slot);
                } else {
                    self.refuse_source(
                        slot,
                        ErrorCode::UnknownChannel,
                        &format!("channel {channel} is not an input of app {}", self.cfg.app),
                    );
                    return Ok(false);
                }
                // Outputs and dead letters accumulate in `fx` over the whole
                // batch; ACKs and NACKs go out (are queued) per frame.
                self.fx.journal_input = None;
                self.core
                    .handle(Input::SourceData { frame, now_ns: now }, &mut self.fx);
                if !self.fx.acks.is_empty() || !self.fx.nacks.is_empty() {
                    self.send_acks_nacks();
                    self.fx.acks.clear();
                    self.fx.nacks.clear();
                }
                return Ok(self.fx.journal_input.is_some());
            }
            (ConnState::Ready, Kind::Heartbeat) => {}
            (_, Kind::Error) => {
                let text = frame.error().map(|(_, t)| t.to_owned()).unwrap_or_default();
                let peer = self.sources[slot].as_ref().map(|c| c.peer);
                eprintln!("verity: source {peer:?} sent ERROR: {text}");
                self.close_source(slot, None);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in connection state {state:?}");
                self.refuse_source(slot, ErrorCode::Protocol, &text);
            }
        }
        Ok(false)
    }

    fn send_acks_nacks(&mut self) {
        let epoch = self.dir.epoch;
        for i in 0..self.fx.acks.len() {
            let (channel, seq) = self.fx.acks[i];
            if let Some(conn) = self.conn_for_channel(channel) {
                let _ = Encoder::default().ack(&mut conn.wbuf, channel, epoch, seq);
            }
        }
        for i in 0..self.fx.nacks.len() {
            let (channel, seq) = self.fx.nacks[i];
            if let Some(conn) = self.conn_for_channel(channel) {
                let _ = Encoder::default().nack(&mut conn.wbuf, channel, epoch, seq);
            }
        }
    }

    fn conn_for_channel(&mut self, channel: u32) -> Option<&mut Conn> {
        let slot = (*self.channel_conn.get((channel as usize).checked_sub(1)?)?)?;
        self.sources.get_mut(slot)?.as_mut()
    }

    /// Sends ERROR and closes this source only.
    fn refuse_source(&mut self, slot: usize, code: ErrorCode, text: &str) {
        let epoch = self.dir.epoch;
        if let Some(conn) = self.sources[slot].as_mut() {
            eprintln!("verity: closing source {}: {text}", conn.peer);
            let _ = self.enc.error(&mut conn.wbuf, epoch, code, text);
            let _ = conn.flush();
        }
        self.close_source(slot, None);
    }

    fn close_source(&mut self, slot: usize, why: Option<String>) {
        if let Some(mut conn) = self.sources[slot].take() {
            if let Some(why) = why {
                eprintln!("verity: source {} lost: {why}", conn.peer);
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        for c in self.channel_conn.iter_mut() {
            if *c == Some(slot) {
                *c = None;
            }
        }
    }

    fn flush_sources(&mut self) {
        for slot in 0..self.sources.len() {
            let failed = match self.sources[slot].as_mut() {
                Some(c) if !c.wbuf.is_empty() => c.flush().err(),
                _ => None,
            };
            if let Some(e) = failed {
                self.close_source(slot, Some(format!("write: {e}")));
            }
        }
    }

    /// Journal durability → ACKs to sources, outputs released to the sink.
    fn make_durable(&mut self) -> Result<(), WorkerError> {
        let records = match self.cfg.durability {
            Durability::Process => self.core.journal_next(),
            Durability::Fsync => {
                if !self.undurable.is_empty() {
                    self.journal.commit()?;
                    self.outbound.commit()?;
                }
                // Outputs depend on the journal only: an output whose outbound
                // record is lost in a machine crash is regenerated, bit for bit,
                // by replaying its (durable) journal records.
                let durable = self.journal.durable_position();
                let mut records = None;
                while let Some(&(r, end)) = self.undurable.front() {
                    if end > durable {
                        break;
                    }
                    records = Some(r);
                    self.undurable.pop_front();
                }
                match records {
                    Some(r) => r,
                    None => return Ok(()),
                }
            }
        };
        self.fx.clear();
        self.core.handle(Input::Durable { records }, &mut self.fx);
        self.send_acks_nacks();
        Ok(())
    }

    fn service_sink(&mut self) -> Result<(), WorkerError> {
        if self.sink.is_none() {
            if Instant::now() < self.sink_retry_at {
                return Ok(());
            }
            match TcpStream::connect(self.cfg.sink) {
                Ok(mut stream) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        SINK,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        eprintln!("verity: cannot register the sink connection: {e}");
                        self.sink_failed();
                        return Ok(());
                    }
                    let _ = stream.set_nodelay(true);
                    let mut conn = Conn::new(
                        stream,
                        self.cfg.sink,
                        self.cfg.limits.max_frame_len,
                        64 << 10,
                    );
                    let hello = self.hello(Role::Node);
                    let _ = self.enc.hello(&mut conn.wbuf, self.dir.epoch, &hello);
                    conn.readable = false;
                    self.sink = Some(conn);
                }
                Err(_) => {
                    self.sink_failed();
                    return Ok(());
                }
            }
        }
        let Some(conn) = self.sink.as_mut() else {
            return Ok(());
        };
        if conn.writable {
            if let Err(e) = conn.flush() {
                self.sink_lost(&format!("write: {e}"));
                return Ok(());
            }
        }
        loop {
            let Some(conn) = self.sink.as_mut() else {
                return Ok(());
            };
            if !conn.readable {
                break;
            }
            match conn.fill(READ_CHUNK) {
                Ok(true) => {}
                Ok(false) => {
                    self.sink_lost("closed by the receiver");
                    return Ok(());
                }
                Err(e) => {
                    self.sink_lost(&format!("read: {e}"));
                    return Ok(());
                }
            }
            loop {
                let Some(conn) = self.sink.as_mut() else {
                    return Ok(());
                };
                let frame = match conn.dec.decode() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        let text = bad_frame_text(&e, conn.dec.position());
                        let _ =
                            self.enc
                                .error(&mut conn.wbuf, self.dir.epoch, e.error_code(), &text);
                        let _ = conn.flush();
                        self.sink_lost(&text);
                        return Ok(());
                    }
                };
                self.sink_frame(frame)?;
            }
        }
        Ok(())
    }

    fn sink_frame(&mut self, frame: Frame) -> Result<(), WorkerError> {
        let Some(conn) = self.sink.as_mut() else {
            return Ok(());
        };
        match (conn.state, frame.kind()) {
            (ConnState::AwaitHello, Kind::Hello) => {
                conn.state = ConnState::AwaitResume;
            }
            (ConnState::AwaitResume, Kind::Resume) => {
                let channel = self.core.out().id;
                let delivered = frame
                    .view()
                    .resume_entries()
                    .and_then(|es| {
                        es.iter()
                            .find(|e| e.channel.get() == channel)
                            .map(|e| e.delivered.get())
                    })
                    .unwrap_or(0);
                conn.state = ConnState::Ready;
                self.sink_backoff = SINK_BACKOFF_MIN;
                self.stats.sink_connects += 1;
                self.fx.clear();
                self.core
                    .handle(Input::SinkResume { delivered }, &mut self.fx);
                self.sink_cursor = self.fx.resend_from.unwrap_or(delivered + 1);
                self.trim_outbound()?;
            }
            (ConnState::Ready, Kind::Ack) => {
                let seq = frame.header().seq();
                self.core.handle(Input::SinkAck { seq }, &mut self.fx);
                self.trim_outbound()?;
            }
            (ConnState::Ready, Kind::Nack) => {
                let from = frame.header().seq();
                if from > self.core.out().acked {
                    self.sink_cursor = self.sink_cursor.min(from);
                }
            }
            (_, Kind::Heartbeat) => {}
            (_, Kind::Error) => {
                let text = frame
                    .view()
                    .error()
                    .map(|(_, t)| t.to_owned())
                    .unwrap_or_default();
                self.sink_lost(&format!("receiver sent ERROR: {text}"));
            }
            (state, kind) => {
                let text = format!("unexpected {kind} from the receiver in state {state:?}");
                let _ = self
                    .enc
                    .error(&mut conn.wbuf, self.dir.epoch, ErrorCode::Protocol, &text);
                let _ = conn.flush();
                self.sink_lost(&text);
            }
        }
        Ok(())
    }

    /// Drops wholly ACKed records from the index and whole outbound segments
    /// below the first record still needed.
    fn trim_outbound(&mut self) -> Result<(), WorkerError> {
        let acked = self.core.out().acked;
        let mut dropped = false;
        while let Some(&(_, last, _)) = self.out_index.front() {
            if last > acked {
                break;
            }
            self.out_index.pop_front();
            dropped = true;
        }
        if dropped {
            let below = self
                .out_index
                .front()
                .map_or(self.outbound.end_position(), |&(_, _, p)| p);
            self.outbound.drop_below(below)?;
        }
        Ok(())
    }

    fn sink_failed(&mut self) {
        self.sink_retry_at = Instant::now() + self.sink_backoff;
        self.sink_backoff = (self.sink_backoff * 2).min(SINK_BACKOFF_MAX);
    }

    fn sink_lost(&mut self, why: &str) {
        if let Some(mut conn) = self.sink.take() {
            if conn.state == ConnState::Ready {
                eprintln!("verity: sink {} lost: {why}; reconnecting", conn.peer);
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.sink_failed();
    }

    /// Copies released, unsent outputs from the outbound log to the sink.
    fn pump_sink(&mut self) -> Result<(), WorkerError> {
        let released = self.core.out().released;
        let limit = self.cfg.limits.write_buffer_bytes;
        let Some(conn) = self.sink.as_mut() else {
            return Ok(());
        };
        if conn.state != ConnState::Ready {
            return Ok(());
        }
        if let Some(&(first, _, _)) = self.out_index.front() {
            // Everything below the first record kept was ACKed.
            self.sink_cursor = self.sink_cursor.max(first);
        }
        if self.sink_cursor <= released && conn.wbuf.len() < limit {
            let cursor = self.sink_cursor;
            let i = self
                .out_index
                .partition_point(|&(_, last, _)| last < cursor);
            if let Some(&(_, _, pos)) = self.out_index.get(i) {
                'records: for rec in self.outbound.reader_at(pos)? {
                    let rec = rec?;
                    for (seq, at, stride) in frames_in(rec.payload) {
                        if seq < self.sink_cursor {
                            continue;
                        }
                        if seq > released || conn.wbuf.len() >= limit {
                            break 'records;
                        }
                        conn.wbuf.extend_from_slice(&rec.payload[at..at + stride]);
                        self.sink_cursor = seq + 1;
                    }
                }
            }
        }
        if let Err(e) = conn.flush() {
            self.sink_lost(&format!("write: {e}"));
        }
        Ok(())
    }

    /// Writes a snapshot (everything journaled is durable by now) and drops
    /// journal segments no kept snapshot needs.
    fn snapshot(&mut self) -> Result<(), WorkerError> {
        if self.cfg.durability == Durability::Fsync {
            wait_all_durable(&self.journal)?;
            wait_all_durable(&self.outbound)?;
            self.make_durable()?;
        }
        let mut body = Vec::new();
        self.core.snapshot(&mut body);
        self.dir
            .write_snapshot(self.journal.end_position(), self.core.journal_next(), &body)?;
        self.records_at_snapshot = self.core.journal_next();
        self.stats.snapshots += 1;
        if let Some(p) = self.dir.oldest_snapshot_position() {
            self.journal
                .drop_below(p.min(self.journal.end_position()))?;
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), WorkerError> {
        self.make_durable()?;
        self.pump_sink()?;
        self.flush_sources();
        self.snapshot()?;
        let s = &self.core.stats;
        eprintln!(
            "verity: stopped cleanly: accepted={} outputs={} duplicates={} gaps={} dead_letters={} bad_frames={} replayed={} snapshots={}",
            s.accepted, s.outputs, s.duplicates, s.gaps, s.dead_letters, self.stats.bad_frames, self.stats.replayed, self.stats.snapshots
        );
        Ok(())
    }
}

/// Blocks until everything appended to `log` is durable.
fn wait_all_durable(log: &Log) -> Result<(), LogError> {
    let end = log.end_position();
    if end == log.first_position() {
        return Ok(());
    }
    log.commit()?;
    // `wait_durable(p)` waits for the record at `p`: durable through end - 1
    // means every byte below `end`.
    log.wait_durable(end - 1)
}

fn bad_frame_text(e: &WireError, at: u64) -> String {
    format!("bad frame at stream offset {at}: {e}")
}
