//! The real-runtime driver of one node: a hand-written mio event loop around
//! [`NodeCore`], with the journal, the outbound logs and the dead-letter log
//! as mmap logs, sources listening for sender connections and the sink
//! connecting out to the receiver (with backoff).
//!
//! In a cluster the node also listens for the other nodes (their channels to
//! it: inbound, like sources) and connects out to each of them (its channels
//! to them: outbound, like the sink, each with its own log). Node-to-node
//! connections authenticate both ways before anything but HELLO is accepted
//! (`wire/PROTOCOL.md`, Authentication), and a HELLO from an older epoch of a
//! node than one already seen is refused (fencing).
//!
//! One iteration: poll; read every readable inbound connection (while the
//! core wants input), decode whole frames in place, hand each DATA frame to
//! the core and carry out its effects (journal the frame, log the outputs,
//! queue NACKs); then make the journal durable (`process`: at once; `fsync`:
//! the syncer's published position), which releases ACKs to the producers
//! and outputs to the consumers; then write queued bytes, one `write` per
//! connection.
//!
//! What the logs hold (record kinds, the dead-letter payload, the outbound
//! logs and their index) and the data directory's layout are defined in
//! [`crate::storage`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use verity_wire::handshake::{Acceptor, Connector, Me, Refusal};
use verity_wire::text::Escaped;
use verity_wire::{
    Decoder, Encoder, ErrorCode, Frame, FrameView, Kind, ResumeEntry, Role, WireError,
    HANDSHAKE_MAX_FRAME_LEN,
};

use super::config::NodeToml;
use super::link::LinkEnd;
use super::outpath::{OutPath, BACKOFF_MIN};
use super::shim::{Faults, Shim};
use super::tls::{TlsConn, TlsSetup};
use crate::cluster::routing::MAX_NODES;
use crate::cluster::{PeerAt, SourceHome};
use crate::core::{peer_of, Effects, Input, JournalEntry, NodeCore, Out};
use crate::log::{Durability, Log, LogConfig, LogError};
use crate::storage::audit::{self, Audit};
use crate::storage::datadir::{self, DataDir, DataDirError};
use crate::storage::{DeadLetterRecord, RecordKind};
use verity_wire::frames::frames;

const LISTENER: Token = Token(0);
/// Another shard of this process wrote to one of our in-process links.
const WAKER: Token = Token(usize::MAX);
const PEER_LISTENER: Token = Token(1);
/// Outbound path `k` (0: the sink, `1 + j`: node `j`) is token `FIRST_OUT + k`.
const FIRST_OUT: usize = 2;
/// Inbound connection slot `s` is token `FIRST_SOURCE + s`.
const FIRST_SOURCE: usize = FIRST_OUT + MAX_NODES as usize + 1;
/// Bytes read from one connection per loop iteration (fairness between sources).
const READ_CHUNK: usize = 64 << 10;

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
    Snapshot {
        path: String,
        error: String,
    },
    Replay(String),
    Io {
        what: String,
        error: io::Error,
    },
    /// `[tls]` files rustls cannot use (the text names the key).
    Tls(String),
}

impl core::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WorkerError::DataDir(e) => write!(f, "{e}"),
            WorkerError::Log(e) => write!(f, "{e}"),
            WorkerError::Snapshot { path, error } => write!(f, "snapshot {path}: {error}"),
            WorkerError::Replay(e) => write!(f, "journal replay: {e}"),
            WorkerError::Io { what, error } => write!(f, "{what}: {error}"),
            WorkerError::Tls(e) => write!(f, "{e}"),
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
pub(super) enum ConnState {
    /// Waiting for the peer's HELLO.
    AwaitHello,
    /// Accepting side: our HELLO (our challenge and our answer to the
    /// peer's) is sent; waiting for the peer's answer.
    AwaitAuth,
    /// Outbound: HELLO exchange done, waiting for RESUME.
    AwaitResume,
    Ready,
}

/// A connection's side of the HELLO exchange, until it is done.
pub(super) enum Handshake {
    Accepting(Acceptor),
    Connecting(Connector),
}

/// What a connection moves bytes over: a socket, a TLS connection over a
/// socket (`[tls]`), or (between shards of one process) an in-process ring
/// link.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsConn>),
    Link(LinkEnd),
}

impl Stream {
    pub(super) fn deregister(&mut self, reg: &mio::Registry) {
        match self {
            Stream::Tcp(s) => {
                let _ = reg.deregister(s);
            }
            Stream::Tls(t) => {
                let _ = reg.deregister(&mut t.sock);
            }
            Stream::Link(_) => {}
        }
    }

    /// Over a socket (plain or TLS), not an in-process link.
    pub(super) fn is_socket(&self) -> bool {
        !matches!(self, Stream::Link(_))
    }
}

pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) peer: SocketAddr,
    pub(super) dec: Decoder,
    pub(super) wbuf: BytesMut,
    pub(super) state: ConnState,
    /// ERROR sent: flush and close, read nothing more.
    pub(super) closing: bool,
    /// Bytes are waiting in the socket (edge-triggered: we must come back).
    pub(super) readable: bool,
    /// The peer's FIN was announced: read until read(2) returns 0, even
    /// after a short read.
    pub(super) read_closed: bool,
    /// ACKs owed to this producer, (channel, seq), not yet in `wbuf`: held
    /// up to `limits.ack_delay_us` from `acks_since` so one frame per
    /// channel carries the ACKs of several batches.
    pub(super) acks: Vec<(u32, u64)>,
    pub(super) acks_since: Option<Instant>,
    /// When the connection was accepted or dialed (handshake timeout).
    pub(super) opened: Instant,
    pub(super) writable: bool,
    /// Inbound from another node: its index, once its handshake is done.
    pub(super) node: Option<u32>,
    /// Inbound from a source: the source channel it produces, once its
    /// handshake is done (the HELLO's node id names it).
    pub(super) channel: Option<u32>,
    /// The HELLO exchange in progress.
    pub(super) handshake: Option<Handshake>,
    /// Accepted on the node-to-node listener: only other nodes may speak.
    pub(super) node_port: bool,
    /// Inbound: (stream offset of an incomplete frame, the clock reading
    /// (ns) of the read that left it incomplete), for
    /// `limits.frame_timeout_ms`.
    pub(super) partial: Option<(u64, u64)>,
    /// The fault shim, when `[faults]` is configured: frames pass through
    /// it from `wbuf` into `sbuf`, which is what reaches the socket.
    pub(super) shim: Option<Box<Shim>>,
    #[cfg_attr(not(feature = "fault-shim"), allow(dead_code))]
    pub(super) sbuf: BytesMut,
}

impl Conn {
    pub(super) fn over(stream: Stream, peer: SocketAddr, max_frame_len: u32, cap: usize) -> Conn {
        Conn {
            stream,
            peer,
            dec: Decoder::with_capacity(max_frame_len, cap),
            wbuf: BytesMut::with_capacity(64 << 10),
            state: ConnState::AwaitHello,
            closing: false,
            readable: true,
            read_closed: false,
            acks: Vec::new(),
            acks_since: None,
            opened: Instant::now(),
            writable: false,
            node: None,
            channel: None,
            handshake: None,
            node_port: false,
            partial: None,
            shim: None,
            sbuf: BytesMut::new(),
        }
    }

    /// Writes as much of `wbuf` as the socket takes (through the fault
    /// shim, if any). Err = connection lost.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        #[cfg(feature = "fault-shim")]
        if let Some(shim) = self.shim.as_mut() {
            if shim.pass(&mut self.wbuf, &mut self.sbuf, unix_ms()) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fault shim: connection closed",
                ));
            }
            return write_out(&mut self.stream, &mut self.sbuf, &mut self.writable);
        }
        write_out(&mut self.stream, &mut self.wbuf, &mut self.writable)
    }

    /// Writes `bytes` straight to the stream (no copy into `wbuf`); the
    /// bytes written. For a link, 0 is `WouldBlock` (the ring is full).
    /// With a fault shim the bytes go through `wbuf` and the shim.
    pub(super) fn write_direct(&mut self, bytes: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "fault-shim")]
        if self.shim.is_some() {
            self.wbuf.extend_from_slice(bytes);
            self.flush()?;
            return Ok(bytes.len());
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.write(bytes),
            Stream::Tls(t) => t.write(bytes),
            Stream::Link(l) => match l.write(bytes)? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }

    /// Bytes wait to be written: in `wbuf`, or as TLS records the socket
    /// has not taken yet (the fault shim's own held bytes leave as before:
    /// with the next frames, or when `drain_shim` lets them out).
    pub(super) fn wants_flush(&self) -> bool {
        !self.wbuf.is_empty() || matches!(&self.stream, Stream::Tls(t) if t.wants_write())
    }
}

/// Writes as much of `buf` to `stream` as it takes. Err = connection lost.
fn write_out(stream: &mut Stream, buf: &mut BytesMut, writable: &mut bool) -> io::Result<()> {
    while !buf.is_empty() {
        let written = match stream {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Link(l) => match l.write(buf) {
                // A full ring: the other shard reads it soon; we come back
                // on the next loop iteration.
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                r => r,
            },
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let _ = buf.split_to(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // TLS records made from the plaintext (or by rustls itself: handshake
    // messages, alerts) leave even when there is no plaintext left: on a
    // writable event we come back for the rest.
    if let Stream::Tls(t) = stream {
        if !t.send()? {
            *writable = false;
        }
    }
    Ok(())
}

/// Socket buffers of 4 MiB each way: a peer that is descheduled for a
/// moment (three busy processes on two cores) does not stall the pipeline.
///
/// And a dead peer is noticed: a peer whose host died or was cut off
/// sends no FIN, so without these its connection would stay open for
/// good, and a source's channel with it (a second producer gets
/// `CHANNEL_BUSY` while the first holds it). An idle connection is probed
/// after [`KEEPALIVE_IDLE_S`] s, every [`KEEPALIVE_INTERVAL_S`] s, and
/// dropped after [`KEEPALIVE_PROBES`] unanswered probes; one with bytes
/// unacknowledged for [`USER_TIMEOUT_MS`] is dropped too.
fn tune_socket(stream: &TcpStream) {
    let opts: [(libc::c_int, libc::c_int, libc::c_int); 7] = [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT_MS),
    ];
    for (level, opt, value) in opts {
        // SAFETY: setsockopt(2) on the socket this stream owns, with a
        // pointer to a c_int that lives for the call and its exact size.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                level,
                opt,
                (&value as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Seconds a connection is idle before the first keepalive probe.
const KEEPALIVE_IDLE_S: libc::c_int = 10;
/// Seconds between keepalive probes.
const KEEPALIVE_INTERVAL_S: libc::c_int = 2;
/// Unanswered probes before the connection is dropped.
const KEEPALIVE_PROBES: libc::c_int = 3;
/// Milliseconds bytes may stay unacknowledged by the peer's host before
/// the connection is dropped (TCP's own retransmissions would take ~15 min).
const USER_TIMEOUT_MS: libc::c_int = 20_000;

/// Lets a connection's held-back frames out when due and writes its shim's
/// decisions to the fault log; `true` when the connection is lost.
fn drain_shim(c: &mut Conn, log: &mut impl Write, now_ms: u64) -> bool {
    let lost = c.shim.as_ref().is_some_and(|s| s.holding()) && c.flush().is_err();
    if let Some(s) = c.shim.as_mut() {
        s.write_decisions(log, now_ms);
    }
    lost
}

/// Milliseconds since the Unix epoch (the fault shim's and partitions' clock).
fn unix_ms() -> u64 {
    now_ns() / 1_000_000
}

impl Conn {
    /// Inbound over TCP with its handshake not done (in the handshake pool).
    pub(super) fn in_handshake(&self) -> bool {
        self.state != ConnState::Ready && self.stream.is_socket()
    }

    /// Moves the owed ACKs into `wbuf`.
    fn queue_acks(&mut self, epoch: u32) {
        for &(channel, seq) in &self.acks {
            let _ = Encoder::default().ack(&mut self.wbuf, channel, epoch, seq);
        }
        self.acks.clear();
        self.acks_since = None;
    }

    /// Reads up to `max` bytes into the decoder. Ok(false) = peer closed.
    pub(super) fn fill(&mut self, max: usize) -> io::Result<bool> {
        let buf = self.dec.read_buf();
        let fd = match &mut self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Tls(t) => {
                let f = t.fill(buf, max, self.state != ConnState::Ready)?;
                // Plaintext or ciphertext still held keeps the connection
                // readable (no new edge will announce it). Emptied by a
                // short read: new bytes raise a new edge, unless a FIN
                // was announced (as below).
                if f.drained && !(f.short && self.read_closed) {
                    self.readable = false;
                }
                if f.write_blocked {
                    self.writable = false;
                }
                return Ok(f.open);
            }
            Stream::Link(l) => {
                if l.read_into(buf, max) == 0 {
                    self.readable = false;
                }
                return Ok(true);
            }
        };
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
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast::<libc::c_void>(), want) };
            if n > 0 {
                // SAFETY: read(2) initialised the first `n <= want` bytes of
                // the spare capacity.
                unsafe { buf.set_len(buf.len() + n as usize) };
                // A short read emptied the socket's receive queue: bytes
                // arriving from now on raise a new edge-triggered event, so
                // the read that would only return EAGAIN is skipped (one
                // syscall of two or three per wakeup under a paced load).
                // Not once a FIN was announced: its event is already spent,
                // and only a read returning 0 tells us the peer closed.
                if (n as usize) < want && !self.read_closed {
                    self.readable = false;
                }
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

/// In-process wiring of one shard to the other shards of its worker
/// process (empty for a worker with one node).
#[derive(Default)]
pub struct ShardLinks {
    /// The shard's event loop, with the waker the other shards use
    /// registered on it as [`WAKER`].
    pub poll: Option<Poll>,
    /// (node, end): our channel to that node (we produce, it ACKs).
    pub to: Vec<(u32, LinkEnd)>,
    /// (node, end): that node's channel to us (we consume).
    pub from: Vec<(u32, LinkEnd)>,
}

/// Counters for the report printed at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    pub replayed: u64,
    pub snapshots: u64,
    pub bad_frames: u64,
    pub sink_connects: u64,
    pub peer_connects: u64,
    pub auth_refused: u64,
    /// Connections closed by a TLS failure (a certificate refused, a
    /// handshake that failed, a record that did not decrypt).
    pub tls_failed: u64,
    /// Connections refused or closed by a limit (per address, handshake
    /// pool, established connections, incomplete frames).
    pub refused: u64,
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
    dead: Log,
    poll: Poll,
    /// Source listener (shard 0 of a worker only).
    listener: Option<TcpListener>,
    /// Set when an in-process link broke (our own bug): the worker stops.
    fatal: Option<String>,
    /// The fault shim's configuration (`[faults]`), if any.
    faults: Option<std::sync::Arc<Faults>>,
    /// `data_dir/faults.log`: every fault the shim injected, one per line.
    fault_log: Option<std::io::BufWriter<std::fs::File>>,
    /// Connections accepted so far (names inbound shims).
    accepted: u64,
    /// Node-to-node listener (cluster only).
    peer_listener: Option<TcpListener>,
    /// Inbound connections: sources, and other nodes' channels to us.
    sources: Vec<Option<Conn>>,
    /// Outbound paths: 0 the sink, `1 + j` node `j` (`None` for this node).
    outs: Vec<Option<OutPath>>,
    /// fsync durability: (records after this one, its end position).
    undurable: VecDeque<(u64, u64)>,
    /// Dead letters at journal indexes below this are already logged.
    dead_logged_below: u64,
    records_at_snapshot: u64,
    /// The origin of the core's timer clock ([`Input::Tick`]).
    started: Instant,
    /// The clock reading for the frames of the current read batch: one
    /// `clock_gettime` per socket read, not per frame (the journal records
    /// it with each accepted input).
    batch_clock_ns: u64,
    /// When `sweep_handshakes` last looked.
    last_sweep: Instant,
    /// The journal's hash chain (`audit = true`), and when its head was
    /// last printed.
    audit: Option<Audit>,
    audit_printed: Option<(Instant, [u8; 32])>,
    /// Lines about peers and connections (refusals, peer errors): at most
    /// a few a second.
    log_limiter: LogLimiter,
    /// `[tls]`: the rustls settings of each kind of connection.
    tls: Option<TlsSetup>,
    pub stats: WorkerStats,
}

/// Admits at most [`LogLimiter::PER_SECOND`] log lines a second, counting
/// the rest.
#[derive(Debug, Default)]
struct LogLimiter {
    window: Option<Instant>,
    printed: u32,
    suppressed: u64,
}

impl LogLimiter {
    const PER_SECOND: u32 = 20;

    /// `Some(lines suppressed since the last admitted one)` when a line may
    /// be printed at `now`; `None` when it is suppressed (and counted).
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1));
        if fresh {
            self.window = Some(now);
            self.printed = 0;
        }
        if self.printed >= Self::PER_SECOND {
            self.suppressed += 1;
            return None;
        }
        self.printed += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The outbound channel of outbound path `k` (0: the sink, `1 + j`: node `j`).
fn out_of(k: usize) -> Out {
    match k {
        0 => Out::Sink,
        k => Out::Node(k as u32 - 1),
    }
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
        Worker::start_shard(cfg, ShardLinks::default())
    }

    /// [`Worker::start`] for one shard of a worker process, wired to the
    /// process's other shards by `links`.
    pub fn start_shard(cfg: NodeToml, mut links: ShardLinks) -> Result<Worker, WorkerError> {
        let tls = match &cfg.tls {
            None => None,
            Some(files) => Some(TlsSetup::new(files).map_err(WorkerError::Tls)?),
        };
        let dir = DataDir::open(&cfg.data_dir)?;
        let Some(app) = crate::apps::build(&cfg.app) else {
            return Err(WorkerError::Replay(format!("unknown app {:?}", cfg.app)));
        };
        let cluster = cfg.cluster.clone();
        let mut core = NodeCore::new(app, cfg.node_config());
        let log_cfg = |durability| LogConfig {
            segment_size_bytes: cfg.limits.journal_segment_bytes,
            durability,
            ..LogConfig::default()
        };
        let (journal, jrec) = Log::open(&dir.root, datadir::JOURNAL_LOG, log_cfg(cfg.durability))?;
        // Dead letters are rare: no segment prepared ahead (a background
        // 64 MiB page-in that competed with the loop for CPU at every start)
        // and no prefault; a roll creates the next segment when needed.
        let dead_cfg = LogConfig {
            prefault: false,
            prepare_ahead: false,
            ..log_cfg(Durability::Process)
        };
        let (dead, drec) = Log::open(&dir.root, datadir::DEAD_LETTER_LOG, dead_cfg)?;
        // Outbound logs are as durable as the journal (DESIGN §3.1).
        let mut outs = Vec::new();
        let mut recoveries = vec![
            (datadir::JOURNAL_LOG.to_owned(), jrec),
            (datadir::DEAD_LETTER_LOG.to_owned(), drec),
        ];
        let (sink_path, orec) = OutPath::open(
            &dir.root,
            datadir::OUTBOUND_LOG,
            log_cfg(cfg.durability),
            "sink".into(),
            None,
            cfg.sink,
        )?;
        outs.push(Some(sink_path));
        recoveries.push((datadir::OUTBOUND_LOG.into(), orec));
        if let Some(c) = &cluster {
            for j in 0..c.routing.nodes() {
                let Some(&(_, at)) = c.peers.iter().find(|(n, _)| *n == j) else {
                    outs.push(None);
                    continue;
                };
                let (addr, local) = match at {
                    PeerAt::Remote(a) => (a, None),
                    PeerAt::Local => {
                        let Some(i) = links.to.iter().position(|(n, _)| *n == j) else {
                            return Err(WorkerError::Replay(format!(
                                "no in-process link to node {j} (a shard of this worker)"
                            )));
                        };
                        (c.address, Some(links.to.swap_remove(i).1))
                    }
                };
                let name = datadir::forward_log(j);
                let (path, rec) = OutPath::open(
                    &dir.root,
                    &name,
                    log_cfg(cfg.durability),
                    format!("node {j}"),
                    Some(j),
                    addr,
                )?;
                let mut path = path;
                path.local = local;
                outs.push(Some(path));
                recoveries.push((name, rec));
            }
        }
        for (name, r) in &recoveries {
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

        let mut dead_logged_below = 0;
        for rec in dead.reader_at(dead.first_position())? {
            if let Some(d) = DeadLetterRecord::decode(rec?.payload) {
                dead_logged_below = dead_logged_below.max(d.journal_index + 1);
            }
        }

        let listen_key = if cluster.is_some() {
            "worker.sources"
        } else {
            "node.listen"
        };
        // Shard 0 of a worker accepts the sources; the others get records
        // from it over the in-process links.
        let listener = if cluster.as_ref().is_none_or(|c| c.shard == 0) {
            Some(TcpListener::bind(cfg.listen).map_err(io_err(format!(
                "cannot listen on {} ({listen_key})",
                cfg.listen
            )))?)
        } else {
            None
        };
        let peer_listener = match &cluster {
            None => None,
            Some(c) => Some(TcpListener::bind(c.address).map_err(io_err(format!(
                "cannot listen on {} (worker.address of {:?})",
                c.address, c.worker
            )))?),
        };
        let faults = cluster.as_ref().and_then(|c| c.faults.clone());
        let fault_log = match &faults {
            None => None,
            Some(_) => {
                let path = cfg.data_dir.join("faults.log");
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err(format!("cannot open {}", path.display())))?;
                Some(std::io::BufWriter::new(f))
            }
        };
        let poll = match links.poll.take() {
            Some(p) => p,
            None => Poll::new().map_err(io_err("cannot create the event loop"))?,
        };
        // Other shards' channels to us arrive on their links: inbound
        // connections from the start (no socket, no accept).
        let mut sources = Vec::new();
        for (node, end) in links.from.drain(..) {
            let addr = cluster.as_ref().map_or(cfg.listen, |c| c.address);
            let mut conn = Conn::over(
                Stream::Link(end),
                addr,
                cfg.limits.max_frame_len,
                cfg.limits.read_buffer_bytes,
            );
            conn.node_port = true;
            let _ = node;
            sources.push(Some(conn));
        }
        let mut w = Worker {
            enc: Encoder::new(cfg.limits.max_frame_len),
            cfg,
            dir,
            core,
            fx: Effects::default(),
            journal,
            dead,
            poll,
            listener,
            peer_listener,
            sources,
            fatal: None,
            faults,
            fault_log,
            accepted: 0,
            outs,
            undurable: VecDeque::new(),
            dead_logged_below,
            records_at_snapshot: 0,
            started: Instant::now(),
            batch_clock_ns: 0,
            last_sweep: Instant::now(),
            audit: None,
            audit_printed: None,
            log_limiter: LogLimiter::default(),
            tls,
            stats: WorkerStats::default(),
        };
        if w.cfg.audit {
            w.audit = Some(Audit::recover(&w.journal)?);
        }
        w.replay(replay_from)?;
        // What each consumer had ACKed: everything below the first frame
        // its log still keeps. Its word on later seqs is taken only for
        // what this process sends it again.
        for k in 0..w.outs.len() {
            let Some(path) = w.outs[k].as_ref() else {
                continue;
            };
            let out = out_of(k);
            let produced = w.core.out_channel(out).map_or(0, |o| o.next_seq - 1);
            let acked = path.store.first_seq().map_or(produced, |first| first - 1);
            w.core.handle(Input::Recovered { out, acked }, &mut w.fx);
        }
        w.fx.clear();
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
        if let Some(l) = w.listener.as_mut() {
            w.poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .map_err(io_err("cannot register the listener"))?;
        }
        if let Some(l) = w.peer_listener.as_mut() {
            w.poll
                .registry()
                .register(l, PEER_LISTENER, Interest::READABLE)
                .map_err(io_err("cannot register the node-to-node listener"))?;
        }
        if let Some(warning) = &w.cfg.open_warning {
            if w.cfg.cluster.as_ref().is_none_or(|c| c.shard == 0) {
                eprintln!("verity: WARNING: {warning}");
            }
        }
        let unacked: usize = w
            .outs
            .iter()
            .flatten()
            .map(|o| o.store.unacked_records())
            .sum();
        eprintln!(
            "verity: node {} app={} epoch={} listening on {}{} sink {}; recovered: snapshot at record {}, replayed {} journal records, {} output records unacked",
            w.cfg.node_id,
            w.cfg.app,
            w.dir.epoch,
            w.cfg.listen,
            w.cfg
                .cluster
                .as_ref()
                .map(|c| format!(" (worker {}, nodes on {})", c.worker, c.address))
                .unwrap_or_default(),
            w.cfg.sink,
            snapshot.map_or(0, |s| s.journal_index),
            w.stats.replayed,
            unacked,
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
            if rec.kind != RecordKind::Input.code() {
                continue;
            }
            self.fx.clear();
            // Copy out of the mapping: `handle` needs `&mut self.core` while
            // `rec` borrows `self.journal`. Recovery only, not the hot path.
            let run = rec.payload.to_vec();
            let ts = rec.timestamp;
            let position = rec.position;
            for f in frames(&run) {
                self.core.handle(
                    Input::Replay(JournalEntry {
                        index: next_index,
                        timestamp_ns: ts,
                        frame: f.bytes,
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
            self.log_effects(ts)?;
        }
        self.fx.clear();
        let records = self.core.journal_next();
        self.core.handle(Input::Durable { records }, &mut self.fx);
        self.fx.clear();
        Ok(())
    }

    /// Logs the outputs and dead letters in `fx`: the outputs of each
    /// outbound channel as one record of its log (frames already there are
    /// verified bit for bit instead), stamped with `clock_ns`, the clock
    /// reading of the inputs that produced them (for `verity-trace`; the
    /// core never reads it).
    fn log_effects(&mut self, clock_ns: u64) -> Result<(), WorkerError> {
        if let Some(seqs) = self.fx.outbound_seqs {
            if let Some(Some(path)) = self.outs.get_mut(0) {
                path.log_frames(&self.fx.outbound, seqs, clock_ns)?;
            }
        }
        for j in 0..self.fx.to_peers.len() {
            let Some(seqs) = self.fx.to_peers[j].seqs else {
                continue;
            };
            if let Some(Some(path)) = self.outs.get_mut(1 + j) {
                path.log_frames(&self.fx.to_peers[j].frames, seqs, clock_ns)?;
            }
        }
        for i in 0..self.fx.dead_letters.len() {
            let d = self.fx.dead_letters[i];
            if d.journal_index < self.dead_logged_below {
                continue;
            }
            let mut rec = Vec::new();
            DeadLetterRecord::of(&d).encode(&mut rec);
            self.dead
                .append(RecordKind::DeadLetter.code(), clock_ns, &rec)?;
            self.dead_logged_below = d.journal_index + 1;
            self.stats.dead_letters_logged += 1;
        }
        Ok(())
    }

    /// Hands the batch's frames (just logged) to their paths to be written
    /// from memory.
    fn keep_fresh(&mut self) {
        let cap = 2 * self.cfg.limits.write_buffer_bytes;
        if let Some(seqs) = self.fx.outbound_seqs {
            if let Some(Some(path)) = self.outs.get_mut(0) {
                path.keep_fresh(&mut self.fx.outbound, seqs, cap);
            }
        }
        for j in 0..self.fx.to_peers.len() {
            let Some(seqs) = self.fx.to_peers[j].seqs else {
                continue;
            };
            if let Some(Some(path)) = self.outs.get_mut(1 + j) {
                path.keep_fresh(&mut self.fx.to_peers[j].frames, seqs, cap);
            }
        }
    }

    /// Runs until SIGTERM/SIGINT (then: finish the batch, snapshot, return).
    pub fn run(&mut self) -> Result<(), WorkerError> {
        let mut events = Events::with_capacity(256);
        loop {
            // Don't sleep while there is work we could do now: unread
            // inbound bytes (edge-triggered: no new event will come) or
            // released frames an outbound socket can still take.
            let out_ready = (0..self.outs.len()).any(|k| {
                self.outs[k].as_ref().is_some_and(|p| {
                    p.conn.as_ref().is_some_and(|c| {
                        c.state == ConnState::Ready && c.writable && c.wbuf.is_empty()
                    })
                }) && self.core.poll_transmit(out_of(k)).is_some()
            });
            let (wants_src, wants_peer) = (self.core.wants_input(), self.core.wants_peer_input());
            let source_work = self.sources.iter().flatten().any(|c| {
                let wants = if c.node.is_some() {
                    wants_peer
                } else {
                    wants_src
                };
                c.readable && (wants || c.state != ConnState::Ready)
            });
            let mut timeout = if out_ready || source_work {
                Duration::ZERO
            } else {
                Duration::from_millis(20)
            };
            if timeout > Duration::ZERO {
                // About to sleep: every in-process link announces it (the
                // other shard then wakes us), unless bytes already wait.
                let mut waiting = false;
                let mut stuck = false;
                self.for_each_link(|c| {
                    if let Stream::Link(l) = &mut c.stream {
                        if !l.prepare_sleep() {
                            c.readable = true;
                            waiting = true;
                        }
                    }
                    // A full ring holds our bytes: retry soon.
                    stuck |= !c.wbuf.is_empty();
                });
                if waiting {
                    timeout = Duration::ZERO;
                } else if stuck || self.shims_holding() {
                    timeout = Duration::from_millis(1);
                }
                // Owed ACKs leave when their delay is up.
                if let Some(since) = self
                    .sources
                    .iter()
                    .flatten()
                    .filter(|c| !c.acks.is_empty())
                    .filter_map(|c| c.acks_since)
                    .min()
                {
                    let due = since + Duration::from_micros(self.cfg.limits.ack_delay_us);
                    timeout = timeout.min(due.saturating_duration_since(Instant::now()));
                }
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("poll")(e)),
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.for_each_link(|c| c.readable = true),
                    LISTENER => self.accept(false),
                    PEER_LISTENER => self.accept(true),
                    Token(t) if t < FIRST_SOURCE => {
                        if let Some(Some(p)) = self.outs.get_mut(t - FIRST_OUT) {
                            if let Some(c) = p.conn.as_mut() {
                                c.readable |= ev.is_readable() || ev.is_read_closed();
                                c.read_closed |= ev.is_read_closed();
                                c.writable |= ev.is_writable();
                            }
                        }
                    }
                    Token(t) => {
                        if let Some(Some(c)) = self.sources.get_mut(t - FIRST_SOURCE) {
                            c.readable |= ev.is_readable() || ev.is_read_closed();
                            c.read_closed |= ev.is_read_closed();
                            c.writable |= ev.is_writable();
                        }
                    }
                }
            }
            for k in 0..self.outs.len() {
                self.service_out(k)?;
            }
            self.read_sources()?;
            self.make_durable()?;
            for k in 0..self.outs.len() {
                self.pump_out(k)?;
            }
            let now = Instant::now();
            self.tick(now);
            self.flush_sources(false, now);
            self.sweep_handshakes(now);
            if self.faults.is_some() {
                self.enforce_partitions();
                self.drain_faults();
            }
            if self.core.journal_next() - self.records_at_snapshot
                >= self.cfg.snapshot_interval_records
            {
                self.snapshot()?;
            }
            if let Some(why) = self.fatal.take() {
                return Err(WorkerError::Replay(why));
            }
            if STOP.load(Ordering::SeqCst) {
                self.shutdown()?;
                return Ok(());
            }
        }
    }

    /// A fault shim for a new connection of outbound path `k`, when the
    /// frame faults are on. Its name (and so its PRNG stream) is the path
    /// and how many times it connected.
    fn shim_for(&self, k: usize) -> Option<Box<Shim>> {
        let f = self.faults.as_ref().filter(|f| f.frames_on())?;
        let path = self.outs.get(k)?.as_ref()?;
        Some(Box::new(Shim::new(
            f.clone(),
            format!(
                "node {} -> {} #{}",
                self.core.node(),
                path.name,
                path.connects + 1
            ),
        )))
    }

    /// Whether a configured partition cuts this worker off from node `j`'s
    /// worker now.
    fn partitioned_from(&self, j: u32) -> bool {
        let (Some(f), Some(c)) = (self.faults.as_ref(), self.cfg.cluster.as_ref()) else {
            return false;
        };
        if f.partitions.is_empty() {
            return false;
        }
        let Some(theirs) = c.node_workers.get(j as usize) else {
            return false;
        };
        f.partitioned(&c.worker, theirs, unix_ms())
    }

    /// Cuts the connections a partition forbids right now.
    fn enforce_partitions(&mut self) {
        if self.faults.as_ref().is_none_or(|f| f.partitions.is_empty()) {
            return;
        }
        for k in 0..self.outs.len() {
            let cut = self.outs[k].as_ref().is_some_and(|p| {
                p.conn.is_some() && p.node.is_some_and(|j| self.partitioned_from(j))
            });
            if cut {
                self.log_fault(&format!(
                    "partition cuts {}",
                    self.outs[k].as_ref().map_or("", |p| p.name.as_str())
                ));
                self.out_lost(k, "partition");
            }
        }
        for slot in 0..self.sources.len() {
            let node = self.sources[slot].as_ref().and_then(|c| c.node);
            if node.is_some_and(|j| self.partitioned_from(j)) {
                self.log_fault(&format!(
                    "partition cuts the channel from node {}",
                    node.unwrap_or(0)
                ));
                self.close_source(slot, Some("partition".into()));
            }
        }
    }

    fn log_fault(&mut self, what: &str) {
        if let Some(log) = self.fault_log.as_mut() {
            let _ = writeln!(log, "{} node {} {what}", unix_ms(), self.core.node());
        }
    }

    /// Writes what the shims decided since the last call to the fault log,
    /// and lets held-back frames out when due.
    fn drain_faults(&mut self) {
        let Some(log) = self.fault_log.as_mut() else {
            return;
        };
        let now = unix_ms();
        let mut lost_out = Vec::new();
        let mut lost_in = Vec::new();
        for (k, p) in self.outs.iter_mut().enumerate() {
            if let Some(c) = p.as_mut().and_then(|p| p.conn.as_mut()) {
                if drain_shim(c, log, now) {
                    lost_out.push(k);
                }
            }
        }
        for (slot, c) in self.sources.iter_mut().enumerate() {
            if let Some(c) = c.as_mut() {
                if drain_shim(c, log, now) {
                    lost_in.push(slot);
                }
            }
        }
        let _ = log.flush();
        for k in lost_out {
            self.out_lost(k, "fault shim: connection closed");
        }
        for slot in lost_in {
            self.close_source(slot, Some("fault shim: connection closed".into()));
        }
    }

    /// A connection with a shim is gone: its last decisions (a close, say)
    /// still go to the fault log.
    fn retire_shim(&mut self, mut shim: Shim) {
        if let Some(log) = self.fault_log.as_mut() {
            shim.write_decisions(log, unix_ms());
        }
    }

    /// Whether a shim holds frames back (the loop must come back soon).
    fn shims_holding(&self) -> bool {
        self.fault_log.is_some()
            && (self
                .sources
                .iter()
                .flatten()
                .any(|c| c.shim.as_ref().is_some_and(|s| s.holding()))
                || self
                    .outs
                    .iter()
                    .flatten()
                    .filter_map(|p| p.conn.as_ref())
                    .any(|c| c.shim.as_ref().is_some_and(|s| s.holding())))
    }

    /// Calls `f` on every connection over an in-process link.
    fn for_each_link(&mut self, mut f: impl FnMut(&mut Conn)) {
        let outs = self
            .outs
            .iter_mut()
            .flatten()
            .filter_map(|p| p.conn.as_mut());
        for c in self.sources.iter_mut().flatten().chain(outs) {
            if matches!(c.stream, Stream::Link(_)) {
                f(c);
            }
        }
    }

    /// What the consumer of outbound path `k` ACKed, in the core.
    fn out_acked(&self, k: usize) -> u64 {
        self.core.out_channel(out_of(k)).map_or(0, |o| o.acked)
    }

    /// Accepts connections on the source listener or (`peers`) the
    /// node-to-node listener. A connection starts in the handshake pool
    /// (`limits.max_handshakes`, the oldest closed when it is full), which
    /// established connections never share, and may buffer only what a
    /// handshake needs; one remote address holds at most
    /// `limits.max_connections_per_address` connections.
    fn accept(&mut self, peers: bool) {
        loop {
            let listener = if peers {
                self.peer_listener.as_ref()
            } else {
                self.listener.as_ref()
            };
            let Some(listener) = listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.log_limited(format_args!("accept failed: {e}"));
                    return;
                }
            };
            let tls = self.tls.as_ref().and_then(|t| {
                if peers {
                    t.nodes.clone()
                } else {
                    t.sources.clone()
                }
            });
            let from_there = self
                .sources
                .iter()
                .flatten()
                .filter(|c| c.stream.is_socket() && c.peer.ip() == peer.ip())
                .count();
            if from_there >= self.cfg.limits.max_connections_per_address {
                self.stats.refused += 1;
                self.refuse_at_accept(
                    &mut stream,
                    peer,
                    "too many connections from this address (limits.max_connections_per_address)",
                    tls.is_some(),
                );
                continue;
            }
            let handshaking: Vec<usize> = (0..self.sources.len())
                .filter(|&i| self.sources[i].as_ref().is_some_and(Conn::in_handshake))
                .collect();
            if handshaking.len() >= self.cfg.limits.max_handshakes {
                // A handshake makes room: the oldest of the address with
                // the most handshakes under way. A flood of connections
                // that never finish theirs cannot keep a real peer out,
                // even when it comes from many addresses.
                let ip_of = |i: usize| self.sources[i].as_ref().map(|c| c.peer.ip());
                let busiest = handshaking
                    .iter()
                    .filter_map(|&i| ip_of(i))
                    .max_by_key(|ip| {
                        handshaking
                            .iter()
                            .filter(|&&j| ip_of(j) == Some(*ip))
                            .count()
                    });
                if let Some(&oldest) = handshaking
                    .iter()
                    .filter(|&&i| busiest.is_some() && ip_of(i) == busiest)
                    .min_by_key(|&&i| self.sources[i].as_ref().map(|c| c.opened))
                {
                    self.stats.refused += 1;
                    self.refuse_source(
                        oldest,
                        ErrorCode::LimitExceeded,
                        "handshake not complete and the handshake pool is full (limits.max_handshakes)",
                    );
                }
            }
            let _ = stream.set_nodelay(true);
            tune_socket(&stream);
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
                self.log_limited(format_args!("cannot register {peer}: {e}"));
                continue;
            }
            self.stats.sources_accepted += 1;
            let stream = match tls {
                None => Stream::Tcp(stream),
                Some(config) => match TlsConn::server(&config, stream) {
                    Ok(t) => Stream::Tls(Box::new(t)),
                    Err(e) => {
                        self.log_limited(format_args!("TLS with {peer}: {e}"));
                        continue;
                    }
                },
            };
            // Until the handshake is done: frames up to an ERROR's size,
            // a buffer of a few KiB.
            let mut conn = Conn::over(stream, peer, HANDSHAKE_MAX_FRAME_LEN, 8 << 10);
            conn.node_port = peers;
            self.accepted += 1;
            conn.shim = self.faults.as_ref().filter(|f| f.frames_on()).map(|f| {
                let me = self.core.node();
                let kind = if peers { "nodes" } else { "sources" };
                Box::new(Shim::new(
                    f.clone(),
                    format!("node {me} <- {kind} #{}", self.accepted),
                ))
            });
            self.sources[slot] = Some(conn);
        }
    }

    /// Tells a connection refused at accept why (best effort; not on a
    /// TLS port, where the peer expects a TLS handshake first and takes
    /// plain bytes for tampering) and closes it.
    fn refuse_at_accept(&mut self, stream: &mut TcpStream, peer: SocketAddr, why: &str, tls: bool) {
        if !tls {
            let mut b = BytesMut::new();
            let _ = self
                .enc
                .error(&mut b, self.dir.epoch, ErrorCode::LimitExceeded, why);
            let _ = stream.write(&b);
        }
        // Whatever it sent already (its HELLO) is read and dropped, so the
        // close is a FIN after our ERROR, not a reset that could discard it.
        let _ = stream.read(&mut [0u8; 512]);
        self.log_limited(format_args!("refused {peer}: {why}"));
    }

    /// Prints a line about a peer or a connection, at most
    /// [`LogLimiter::PER_SECOND`] a second: a flood of refusals or of
    /// peer errors cannot flood the log. What was left out is counted.
    fn log_limited(&mut self, line: core::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.log_limiter.admit(Instant::now()) {
            if suppressed > 0 {
                eprintln!("verity: ({suppressed} similar lines about connections suppressed)");
            }
            eprintln!("verity: {line}");
        }
    }

    /// Who this node is in HELLOs.
    fn me(&self) -> Me {
        Me {
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.node_id,
            role: Role::Node,
        }
    }

    /// The secret a connection authenticates with: the cluster secret
    /// between nodes, the client secret with sources and the sink.
    fn secret(&self, nodes: bool) -> Option<&[u8]> {
        if nodes {
            self.cfg.cluster.as_ref().map(|c| c.secret.0.as_slice())
        } else {
            self.cfg.client_secret.as_ref().map(|s| s.0.as_slice())
        }
    }

    fn read_sources(&mut self) -> Result<(), WorkerError> {
        for slot in 0..self.sources.len() {
            let mut budget = READ_CHUNK * 4;
            loop {
                let (wants_src, wants_peer) =
                    (self.core.wants_input(), self.core.wants_peer_input());
                let Some(conn) = self.sources[slot].as_mut() else {
                    break;
                };
                // A node's channel to us produces only sink outputs: it is
                // held back only by the sink and the journal, never by our
                // own channels to other nodes (which could deadlock).
                let wants_input = if conn.node.is_some() {
                    wants_peer
                } else {
                    wants_src
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
                // Before its handshake is done a connection may buffer one
                // frame of at most an ERROR's size, nothing more.
                let cap = if conn.state == ConnState::Ready {
                    self.cfg.limits.read_buffer_bytes
                } else {
                    HANDSHAKE_MAX_FRAME_LEN as usize
                };
                let want = READ_CHUNK.min(cap.saturating_sub(conn.dec.buffered()));
                if want == 0 {
                    // A full handshake buffer holds a whole frame: decoded
                    // below. (Established connections always have room:
                    // read_buffer_bytes >= 2 * max_frame_len.)
                    self.decode_source(slot)?;
                    break;
                }
                budget = budget.saturating_sub(want);
                let filled = conn.fill(want);
                self.batch_clock_ns = now_ns();
                match filled {
                    Ok(true) => {}
                    Ok(false) => {
                        // Peer closed: process what it sent, ACK it (a
                        // half-closed peer still reads), then drop it.
                        conn.readable = false;
                        self.decode_source(slot)?;
                        self.make_durable()?;
                        let epoch = self.dir.epoch;
                        if let Some(c) = self.sources[slot].as_mut() {
                            c.queue_acks(epoch);
                            let _ = c.flush();
                        }
                        self.close_source(slot, None);
                        break;
                    }
                    Err(e) => {
                        let peer = conn.peer;
                        let why = match super::tls::failure(&e) {
                            Some(reason) => {
                                self.stats.tls_failed += 1;
                                format!("TLS: {reason}")
                            }
                            None => format!("read from {peer}: {e}"),
                        };
                        self.close_source(slot, Some(why));
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
        let mut max = conn.dec.max_frame_len();
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
            let Some(conn) = self.sources[slot].as_ref().filter(|c| !c.closing) else {
                break;
            };
            if !journal {
                // A completed handshake lifts the frame bound.
                max = conn.dec.max_frame_len();
            }
        }
        self.journal_run(&buf[run_start..at])?;
        self.log_effects(self.batch_clock_ns)?;
        self.keep_fresh();
        self.fx.clear();
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(());
        };
        *conn.dec.read_buf() = buf;
        conn.dec.consume(at);
        // An incomplete frame left behind: since when (the same frame as
        // before keeps its time; see `sweep_handshakes`).
        let pos = conn.dec.position();
        conn.partial = match conn.partial {
            _ if conn.dec.buffered() == 0 => None,
            Some((p, t)) if p == pos => Some((p, t)),
            _ => Some((pos, self.batch_clock_ns)),
        };
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
        let kind = RecordKind::Input.code();
        let p = self.journal.append(kind, self.batch_clock_ns, run)?;
        if let Some(a) = self.audit.as_mut() {
            a.add(
                p,
                self.journal.end_position(),
                kind,
                self.batch_clock_ns,
                run,
            );
        }
        if self.cfg.durability == Durability::Fsync {
            let end = p + (crate::log::format::RECORD_HEADER_BYTES + run.len()) as u64;
            self.undurable.push_back((self.core.journal_next(), end));
        }
        Ok(())
    }

    /// Handles one frame from an inbound connection (a source, or another
    /// node's channel to us); `Ok(true)` when it is an accepted DATA frame
    /// the caller must journal.
    fn source_frame(&mut self, slot: usize, frame: FrameView<'_>) -> Result<bool, WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(false);
        };
        let kind = frame.kind();
        let (node, channel) = (conn.node, conn.channel);
        match (conn.state, kind) {
            (ConnState::AwaitHello, Kind::Hello) => return self.inbound_hello(slot, frame),
            (ConnState::AwaitAuth, Kind::Hello) => return self.inbound_answer(slot, frame),
            (ConnState::Ready, Kind::Data) => {
                let now = self.batch_clock_ns;
                let ch = frame.header.channel();
                let input = match node {
                    Some(from) => {
                        if peer_of(ch) != Some((from, self.core.node())) {
                            let text =
                                format!("channel {ch} is not node {from}'s channel to this node");
                            self.refuse_source(slot, ErrorCode::UnknownChannel, &text);
                            return Ok(false);
                        }
                        Input::PeerData {
                            from,
                            frame,
                            now_ns: now,
                        }
                    }
                    None => {
                        if channel != Some(ch) {
                            let text = format!(
                                "DATA on channel {ch}: this connection produces channel {} (its HELLO's node id)",
                                channel.unwrap_or(0)
                            );
                            self.refuse_source(slot, ErrorCode::UnknownChannel, &text);
                            return Ok(false);
                        }
                        Input::SourceData { frame, now_ns: now }
                    }
                };
                // Outputs and dead letters accumulate in `fx` over the whole
                // batch; ACKs and NACKs go out (are queued) per frame.
                self.fx.journal_input = None;
                self.core.handle(input, &mut self.fx);
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_source(slot, ErrorCode::Protocol, &v.to_string());
                    return Ok(false);
                }
                if !self.fx.acks.is_empty() || !self.fx.nacks.is_empty() {
                    self.send_acks_nacks();
                    self.fx.acks.clear();
                    self.fx.nacks.clear();
                }
                return Ok(self.fx.journal_input.is_some());
            }
            (ConnState::Ready, Kind::Heartbeat) => {}
            (_, Kind::Error) => {
                let (code, text) = frame.error().unwrap_or((ErrorCode::Internal, ""));
                let peer = self.sources[slot].as_ref().map(|c| c.peer);
                self.log_limited(format_args!(
                    "connection from {} sent ERROR {}: {}",
                    peer.map_or_else(String::new, |p| p.to_string()),
                    code.name(),
                    Escaped(text)
                ));
                self.close_source(slot, None);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in connection state {state:?}");
                self.refuse_source(slot, ErrorCode::Protocol, &text);
            }
        }
        Ok(false)
    }

    /// A connection's first HELLO: a source on the source port, another
    /// node on the node-to-node port. Answers it with our HELLO (our
    /// challenge, our answer to theirs).
    fn inbound_hello(&mut self, slot: usize, frame: FrameView<'_>) -> Result<bool, WorkerError> {
        let Some(nodes) = self.sources[slot].as_ref().map(|c| c.node_port) else {
            return Ok(false);
        };
        let Some(challenge) = random_challenge() else {
            let text = "no random source for a challenge";
            self.refuse_source(slot, ErrorCode::Internal, text);
            return Ok(false);
        };
        let roles: &[Role] = if nodes {
            &[Role::Node]
        } else {
            &[Role::Source]
        };
        let mut acceptor = Acceptor::new(self.me(), challenge);
        let hello = match acceptor.on_hello(&frame, self.secret(nodes), roles) {
            Ok(h) => h,
            Err(r) => {
                self.refuse_handshake(slot, &r);
                return Ok(false);
            }
        };
        if let (true, Some(claim)) = (nodes, acceptor.claimed()) {
            // Refused before the proof: not a node of ours, or fenced off.
            if let Err(r) = self.core.sessions().check_node(claim.node_id, claim.epoch) {
                self.refuse_source(slot, r.code, &r.text);
                return Ok(false);
            }
        }
        let (enc, epoch) = (self.enc, self.dir.epoch);
        if let Some(conn) = self.sources[slot].as_mut() {
            let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
            conn.handshake = Some(Handshake::Accepting(acceptor));
            conn.state = ConnState::AwaitAuth;
        }
        Ok(false)
    }

    /// The peer's answer to our challenge: the handshake is done. A node's
    /// connection now carries its channel to us; a source's, the channel its
    /// HELLO named (if this worker is its home and no one else produces it).
    /// Either way we say RESUME.
    fn inbound_answer(&mut self, slot: usize, frame: FrameView<'_>) -> Result<bool, WorkerError> {
        let Some(conn) = self.sources[slot].as_mut() else {
            return Ok(false);
        };
        let nodes = conn.node_port;
        let Some(Handshake::Accepting(acceptor)) = conn.handshake.take() else {
            self.refuse_source(slot, ErrorCode::Protocol, "an answer without a challenge");
            return Ok(false);
        };
        let peer = match acceptor.on_answer(&frame, self.secret(nodes)) {
            Ok(p) => p,
            Err(r) => {
                self.refuse_handshake(slot, &r);
                return Ok(false);
            }
        };
        let established = self
            .sources
            .iter()
            .flatten()
            .filter(|c| c.state == ConnState::Ready && c.stream.is_socket())
            .count();
        let is_link = self.sources[slot]
            .as_ref()
            .is_some_and(|c| matches!(c.stream, Stream::Link(_)));
        if !is_link && established >= self.cfg.limits.max_connections {
            self.stats.refused += 1;
            let text = "too many established connections (limits.max_connections)";
            self.refuse_source(slot, ErrorCode::LimitExceeded, text);
            return Ok(false);
        }
        if nodes {
            self.admit_node(slot, peer.node_id, peer.epoch);
        } else {
            self.admit_source(slot, peer.node_id);
        }
        Ok(false)
    }

    /// Another node proved who it is: fence older epochs, replace an older
    /// connection of it, say RESUME (and ACK what is durable already).
    fn admit_node(&mut self, slot: usize, node: u32, epoch: u32) {
        match self.core.sessions_mut().admit_node(slot, node, epoch) {
            Err(r) => {
                self.refuse_source(slot, r.code, &r.text);
                return;
            }
            // A newer connection from that node replaces an older one.
            Ok(Some(old)) => {
                let why = format!("replaced by a newer connection from node {node}");
                self.close_source(old, Some(why));
            }
            Ok(None) => {}
        }
        self.stats.peer_connects += 1;
        let entry = self
            .core
            .peer_in(node)
            .map(|c| (c.id, c.delivered, self.core.input_acked(c.id)));
        let (enc, my_epoch, max) = (self.enc, self.dir.epoch, self.cfg.limits.max_frame_len);
        if let Some(conn) = self.sources[slot].as_mut() {
            if let Some((id, delivered, acked)) = entry {
                let _ = enc.resume(&mut conn.wbuf, my_epoch, &[ResumeEntry::new(id, delivered)]);
                // The RESUME says where to go on; this ACK what the
                // producer may drop (a RESUME drops nothing).
                if acked > 0 {
                    let _ = enc.ack(&mut conn.wbuf, id, my_epoch, acked);
                }
            }
            conn.node = Some(node);
            conn.state = ConnState::Ready;
            conn.dec.set_max_frame_len(max);
            eprintln!(
                "verity: node {node} (epoch {epoch}) connected from {}",
                conn.peer
            );
        }
    }

    /// A source proved it holds the client secret (if one is configured):
    /// its HELLO's node id names the source channel it produces. This
    /// worker must be that channel's home and no other connection may be
    /// producing it; then the connection carries that channel, and we say
    /// RESUME (the channel's `delivered`).
    fn admit_source(&mut self, slot: usize, channel: u32) {
        // A redirect, as Kafka answers "not leader": the text is the home's
        // source address and nothing else.
        let elsewhere = self.source_home(channel).map(|a| a.to_string());
        let sources = &self.sources;
        let holder = |c: usize| sources.get(c)?.as_ref().map(|c| c.peer.to_string());
        let admitted = self
            .core
            .sessions_mut()
            .admit_source(slot, channel, elsewhere, holder);
        if let Err(r) = admitted {
            self.refuse_source(slot, r.code, &r.text);
            return;
        }
        let delivered = self.core.inputs()[channel as usize - 1].delivered;
        let (enc, epoch, max) = (self.enc, self.dir.epoch, self.cfg.limits.max_frame_len);
        if let Some(conn) = self.sources[slot].as_mut() {
            let _ = enc.resume(
                &mut conn.wbuf,
                epoch,
                &[ResumeEntry::new(channel, delivered)],
            );
            conn.channel = Some(channel);
            conn.state = ConnState::Ready;
            conn.dec.set_max_frame_len(max);
        }
    }

    /// The source address of the home of source `channel`, when it is
    /// another worker (`None`: this one).
    fn source_home(&self, channel: u32) -> Option<SocketAddr> {
        match self
            .cfg
            .source_homes
            .get((channel as usize).checked_sub(1)?)?
        {
            SourceHome::Here => None,
            SourceHome::Elsewhere { sources, .. } => Some(*sources),
        }
    }

    /// A HELLO exchange that failed: ERROR with the refusal, and close.
    fn refuse_handshake(&mut self, slot: usize, r: &Refusal) {
        if r.code == ErrorCode::AuthFailed {
            self.stats.auth_refused += 1;
        }
        self.refuse_source(slot, r.code, &r.text);
    }

    fn send_acks_nacks(&mut self) {
        let epoch = self.dir.epoch;
        for i in 0..self.fx.acks.len() {
            let (channel, seq) = self.fx.acks[i];
            if let Some(conn) = self.conn_for_channel(channel) {
                // An ACK covers every seq below it: only the highest owed
                // per channel goes out (see `flush_sources`).
                match conn.acks.iter_mut().find(|(c, _)| *c == channel) {
                    Some(owed) => owed.1 = owed.1.max(seq),
                    None => conn.acks.push((channel, seq)),
                }
                if conn.acks_since.is_none() {
                    conn.acks_since = Some(Instant::now());
                }
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
        let slot = self.core.sessions().conn_for_channel(channel)?;
        self.sources.get_mut(slot)?.as_mut()
    }

    /// Sends ERROR and closes this source only.
    fn refuse_source(&mut self, slot: usize, code: ErrorCode, text: &str) {
        let epoch = self.dir.epoch;
        let Some(conn) = self.sources[slot].as_mut() else {
            return;
        };
        let peer = conn.peer;
        let _ = self.enc.error(&mut conn.wbuf, epoch, code, text);
        let _ = conn.flush();
        self.log_limited(format_args!(
            "closing connection from {peer}: {} {text}",
            code.name()
        ));
        self.close_source(slot, None);
    }

    fn close_source(&mut self, slot: usize, why: Option<String>) {
        if let Some(Stream::Link(_)) = self.sources[slot].as_ref().map(|c| &c.stream) {
            self.fatal = Some(format!(
                "an in-process link from another shard failed: {}",
                why.as_deref().unwrap_or("closed")
            ));
            return;
        }
        if let Some(mut conn) = self.sources[slot].take() {
            if let Some(why) = why {
                let what = if conn.node_port {
                    "node connection from"
                } else {
                    "source"
                };
                self.log_limited(format_args!("{what} {} lost: {why}", conn.peer));
            }
            conn.stream.deregister(self.poll.registry());
            if let Some(shim) = conn.shim.take() {
                self.retire_shim(*shim);
            }
        }
        self.core.sessions_mut().closed(slot);
    }

    /// Closes connections whose handshake has not completed within
    /// `limits.handshake_timeout_ms` (checked every tenth of it): an
    /// inbound one that never said HELLO would hold a connection slot for
    /// good, an outbound one to a peer that accepts and stays silent would
    /// never be dialed again.
    fn sweep_handshakes(&mut self, now: Instant) {
        let timeout = Duration::from_millis(self.cfg.limits.handshake_timeout_ms);
        let every = timeout.min(Duration::from_millis(self.cfg.limits.frame_timeout_ms)) / 10;
        if now.duration_since(self.last_sweep) < every {
            return;
        }
        self.last_sweep = now;
        let late = |c: &Conn| {
            c.state != ConnState::Ready
                && !c.closing
                && c.stream.is_socket()
                && now.duration_since(c.opened) > timeout
        };
        let text = format!(
            "no handshake within limits.handshake_timeout_ms ({} ms)",
            timeout.as_millis()
        );
        for slot in 0..self.sources.len() {
            if self.sources[slot].as_ref().is_some_and(late) {
                self.stats.refused += 1;
                self.refuse_source(slot, ErrorCode::LimitExceeded, &text);
            }
        }
        // An established connection that leaves a frame incomplete (and
        // has nothing more for us to read: not held back by our own
        // backpressure) holds its slot and its buffer: close it.
        let frame_timeout_ns = self.cfg.limits.frame_timeout_ms * 1_000_000;
        let clock = now_ns();
        for slot in 0..self.sources.len() {
            let stalled = self.sources[slot].as_ref().is_some_and(|c| {
                c.state == ConnState::Ready
                    && !c.readable
                    && !c.closing
                    && c.stream.is_socket()
                    && c.partial
                        .is_some_and(|(_, t)| clock.saturating_sub(t) > frame_timeout_ns)
            });
            if stalled {
                self.stats.refused += 1;
                let text = format!(
                    "a frame left incomplete for over limits.frame_timeout_ms ({} ms)",
                    self.cfg.limits.frame_timeout_ms
                );
                self.refuse_source(slot, ErrorCode::LimitExceeded, &text);
            }
        }
        for k in 0..self.outs.len() {
            let stuck = self.outs[k]
                .as_ref()
                .and_then(|p| p.conn.as_ref())
                .is_some_and(late);
            if stuck {
                if let Some(p) = self.outs[k].as_ref() {
                    eprintln!("verity: {} at {}: {text}; dialing again", p.name, p.addr);
                }
                self.out_lost(k, &text);
            }
        }
    }

    /// Writes what each inbound connection owes its producer. Owed ACKs go
    /// with anything else queued, once held `limits.ack_delay_us` at `now`,
    /// or at once with `all`.
    fn flush_sources(&mut self, all: bool, now: Instant) {
        let delay = Duration::from_micros(self.cfg.limits.ack_delay_us);
        let epoch = self.dir.epoch;
        for slot in 0..self.sources.len() {
            if let Some(c) = self.sources[slot].as_mut() {
                if all
                    || !c.wbuf.is_empty()
                    || c.acks_since.is_none_or(|t| now.duration_since(t) >= delay)
                {
                    c.queue_acks(epoch);
                }
            }
            let failed = match self.sources[slot].as_mut() {
                Some(c) if c.wants_flush() => c.flush().err(),
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
                    for p in self.outs.iter().flatten() {
                        p.store.log().commit()?;
                    }
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

    /// Connects outbound path `k` if it is down (with backoff), writes what
    /// it has buffered, and handles what its consumer sent.
    fn service_out(&mut self, k: usize) -> Result<(), WorkerError> {
        let Some(path) = self.outs.get(k).and_then(Option::as_ref) else {
            return Ok(());
        };
        if path.conn.is_none() && path.local.is_some() {
            // A shard of this process: "connect" over the in-process link.
            let Some(challenge) = random_challenge() else {
                return Ok(());
            };
            let (connector, hello) = Connector::start(self.me(), challenge);
            let (enc, epoch, max) = (self.enc, self.dir.epoch, self.cfg.limits.max_frame_len);
            if let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) {
                if let Some(end) = path.local.take() {
                    let mut conn = Conn::over(Stream::Link(end), path.addr, max, 64 << 10);
                    let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
                    conn.writable = true;
                    conn.handshake = Some(Handshake::Connecting(connector));
                    path.conn = Some(conn);
                }
            }
        }
        let Some(path) = self.outs.get(k).and_then(Option::as_ref) else {
            return Ok(());
        };
        if path.conn.is_none() {
            if Instant::now() < path.retry_at {
                return Ok(());
            }
            if path.node.is_some_and(|j| self.partitioned_from(j)) {
                // A partition: no route to that worker now.
                if let Some(p) = self.outs.get_mut(k).and_then(Option::as_mut) {
                    p.failed();
                }
                return Ok(());
            }
            let addr = path.addr;
            let shim = self.shim_for(k);
            let Some(challenge) = random_challenge() else {
                return Ok(());
            };
            let (connector, hello) = Connector::start(self.me(), challenge);
            let tls = self.tls.as_ref().and_then(|t| {
                if k == 0 {
                    t.sink.clone()
                } else {
                    t.peers.clone()
                }
            });
            let (enc, epoch, max, reg) = (
                self.enc,
                self.dir.epoch,
                self.cfg.limits.max_frame_len,
                self.poll.registry(),
            );
            let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) else {
                return Ok(());
            };
            match TcpStream::connect(addr) {
                Ok(mut stream) => {
                    if let Err(e) = reg.register(
                        &mut stream,
                        Token(FIRST_OUT + k),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        eprintln!("verity: cannot register the {} connection: {e}", path.name);
                        path.failed();
                        return Ok(());
                    }
                    let _ = stream.set_nodelay(true);
                    tune_socket(&stream);
                    let stream = match tls {
                        None => Stream::Tcp(stream),
                        // The peer's certificate must name the address
                        // dialed.
                        Some(config) => match TlsConn::client(&config, stream, addr.ip()) {
                            Ok(t) => Stream::Tls(Box::new(t)),
                            Err(e) => {
                                eprintln!("verity: TLS to the {} at {addr}: {e}", path.name);
                                path.failed();
                                return Ok(());
                            }
                        },
                    };
                    let mut conn = Conn::over(stream, addr, max, 64 << 10);
                    conn.shim = shim;
                    let _ = enc.hello(&mut conn.wbuf, epoch, &hello);
                    conn.readable = false;
                    conn.handshake = Some(Handshake::Connecting(connector));
                    path.conn = Some(conn);
                }
                Err(_) => {
                    path.failed();
                    return Ok(());
                }
            }
        }
        let Some(conn) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) else {
            return Ok(());
        };
        if conn.writable {
            if let Err(e) = conn.flush() {
                self.out_lost(k, &format!("write: {e}"));
                return Ok(());
            }
        }
        loop {
            let Some(conn) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) else {
                return Ok(());
            };
            if !conn.readable {
                break;
            }
            match conn.fill(READ_CHUNK) {
                Ok(true) => {}
                Ok(false) => {
                    self.out_lost(k, "closed by the peer");
                    return Ok(());
                }
                Err(e) => {
                    let why = match super::tls::failure(&e) {
                        Some(reason) => {
                            self.stats.tls_failed += 1;
                            format!("TLS: {reason}")
                        }
                        None => format!("read: {e}"),
                    };
                    self.out_lost(k, &why);
                    return Ok(());
                }
            }
            loop {
                let epoch = self.dir.epoch;
                let Some(conn) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) else {
                    return Ok(());
                };
                let frame = match conn.dec.decode() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        let text = bad_frame_text(&e, conn.dec.position());
                        let _ = self.enc.error(&mut conn.wbuf, epoch, e.error_code(), &text);
                        let _ = conn.flush();
                        self.out_lost(k, &text);
                        return Ok(());
                    }
                };
                self.out_frame(k, frame)?;
            }
        }
        Ok(())
    }

    /// Sends ERROR on outbound path `k` and drops its connection.
    fn refuse_out(&mut self, k: usize, code: ErrorCode, text: &str) {
        let epoch = self.dir.epoch;
        let mut whom = None;
        if let Some(p) = self.outs[k].as_mut() {
            if let Some(conn) = p.conn.as_mut() {
                let _ = self.enc.error(&mut conn.wbuf, epoch, code, text);
                let _ = conn.flush();
                whom = Some(format!("{} at {}", p.name, conn.peer));
            }
        }
        if let Some(whom) = whom {
            self.log_limited(format_args!("closing the {whom}: {} {text}", code.name()));
        }
        self.out_lost(k, text);
    }

    fn out_frame(&mut self, k: usize, frame: Frame) -> Result<(), WorkerError> {
        let Some(path) = self.outs[k].as_ref() else {
            return Ok(());
        };
        let Some(conn) = path.conn.as_ref() else {
            return Ok(());
        };
        let node = path.node;
        if matches!(frame.kind(), Kind::Ack | Kind::Nack) {
            let ours = self.core.out_channel(out_of(k)).map_or(0, |o| o.id);
            let theirs = frame.header().channel();
            if theirs != ours {
                let text = format!(
                    "{} for channel {theirs} on the connection of channel {ours}",
                    frame.kind()
                );
                self.refuse_out(k, ErrorCode::Protocol, &text);
                return Ok(());
            }
        }
        match (conn.state, frame.kind()) {
            (ConnState::AwaitHello, Kind::Hello) => {
                // The consumer's HELLO: the sink (or node `node`), with its
                // answer to our challenge; we answer its challenge.
                let secret = self.secret(node.is_some());
                let role = if node.is_some() {
                    Role::Node
                } else {
                    Role::Sink
                };
                let view = frame.view();
                let answered = match path.conn.as_ref().and_then(|c| c.handshake.as_ref()) {
                    Some(Handshake::Connecting(c)) => c.on_hello(&view, secret, role, node),
                    _ => Err(Refusal {
                        code: ErrorCode::Protocol,
                        text: "a HELLO without our challenge".into(),
                    }),
                };
                let (hello, peer) = match answered {
                    Ok(a) => a,
                    Err(r) => {
                        if r.code == ErrorCode::AuthFailed {
                            self.stats.auth_refused += 1;
                        }
                        self.refuse_out(k, r.code, &r.text);
                        return Ok(());
                    }
                };
                if let Some(to) = node {
                    if let Err(r) = self.core.sessions_mut().fence(to, peer.epoch) {
                        self.refuse_out(k, r.code, &r.text);
                        return Ok(());
                    }
                }
                let (enc, my_epoch) = (self.enc, self.dir.epoch);
                if let Some(c) = self.outs[k].as_mut().and_then(|p| p.conn.as_mut()) {
                    let _ = enc.hello(&mut c.wbuf, my_epoch, &hello);
                    c.handshake = None;
                    c.state = ConnState::AwaitResume;
                }
            }
            (ConnState::AwaitResume, Kind::Resume) => {
                let channel = match node {
                    None => self.core.out().id,
                    Some(to) => self.core.peer_out(to).map_or(0, |o| o.id),
                };
                let delivered = frame
                    .view()
                    .resume_entries()
                    .and_then(|es| {
                        es.iter()
                            .find(|e| e.channel.get() == channel)
                            .map(|e| e.delivered.get())
                    })
                    .unwrap_or(0);
                self.fx.clear();
                self.core.handle(
                    Input::Resume {
                        out: out_of(k),
                        delivered,
                    },
                    &mut self.fx,
                );
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_out(k, ErrorCode::Protocol, &v.to_string());
                    return Ok(());
                }
                if self.fx.resend.take().is_none() {
                    return Ok(());
                }
                if node.is_none() {
                    self.stats.sink_connects += 1;
                }
                let acked = self.out_acked(k);
                if let Some(path) = self.outs[k].as_mut() {
                    path.backoff = BACKOFF_MIN;
                    path.refused = false;
                    path.connects += 1;
                    if let Some(c) = path.conn.as_mut() {
                        c.state = ConnState::Ready;
                    }
                    path.trim(acked)?;
                }
                self.fx.clear();
            }
            (ConnState::Ready, Kind::Ack) => {
                let seq = frame.header().seq();
                let out = out_of(k);
                self.core.handle(Input::Ack { out, seq }, &mut self.fx);
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_out(k, ErrorCode::Protocol, &v.to_string());
                    return Ok(());
                }
                let acked = self.out_acked(k);
                if let Some(path) = self.outs[k].as_mut() {
                    path.trim(acked)?;
                }
            }
            (ConnState::Ready, Kind::Nack) => {
                // The consumer lost or reordered something: the core moves
                // the cursor back to its seq (never below what it ACKed).
                let from = frame.header().seq();
                let out = out_of(k);
                self.core.handle(Input::Nack { out, from }, &mut self.fx);
                self.fx.resend = None;
                if let Some(v) = self.fx.violation.take() {
                    self.refuse_out(k, ErrorCode::Protocol, &v.to_string());
                }
            }
            (_, Kind::Heartbeat) => {}
            (state, Kind::Error) => {
                let view = frame.view();
                let (code, text) = view.error().unwrap_or((ErrorCode::Internal, ""));
                if state != ConnState::Ready {
                    if let Some(p) = self.outs[k].as_mut() {
                        p.refused = true;
                    }
                }
                let why = format!("peer sent ERROR {}: {}", code.name(), Escaped(text));
                self.out_lost(k, &why);
            }
            (state, kind) => {
                let text = format!("unexpected {kind} in state {state:?}");
                self.refuse_out(k, ErrorCode::Protocol, &text);
            }
        }
        Ok(())
    }

    /// Outbound path `k` lost its connection: log (once it had been up),
    /// drop it, back off.
    fn out_lost(&mut self, k: usize, why: &str) {
        self.core
            .handle(Input::Disconnected { out: out_of(k) }, &mut self.fx);
        let reg = self.poll.registry();
        if let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) {
            if let Some(Stream::Link(_)) = path.conn.as_ref().map(|c| &c.stream) {
                self.fatal = Some(format!(
                    "the in-process link to {} failed: {why}",
                    path.name
                ));
                return;
            }
            let mut retired = None;
            if let Some(mut conn) = path.conn.take() {
                if conn.state == ConnState::Ready
                    || why.contains("authentication")
                    || why.starts_with("TLS")
                {
                    eprintln!(
                        "verity: {} {} lost: {why}; reconnecting",
                        path.name, conn.peer
                    );
                }
                conn.stream.deregister(reg);
                retired = conn.shim.take();
            }
            path.failed();
            if let Some(shim) = retired {
                self.retire_shim(*shim);
            }
        }
    }

    /// Writes what the core hands out on path `k` now ([`NodeCore::poll_transmit`])
    /// and tells it how far that went.
    fn pump_out(&mut self, k: usize) -> Result<(), WorkerError> {
        let out = out_of(k);
        let Some(t) = self.core.poll_transmit(out) else {
            return Ok(());
        };
        let limit = self.cfg.limits.write_buffer_bytes;
        let Some(path) = self.outs.get_mut(k).and_then(Option::as_mut) else {
            return Ok(());
        };
        let (through, pumped) = path.pump(t, limit)?;
        if through >= t.from {
            self.core.handle(Input::Sent { out, through }, &mut self.fx);
        }
        if let Err(e) = pumped {
            self.out_lost(k, &format!("write: {e}"));
        }
        Ok(())
    }

    /// Fires the core's timers due at `now` (resend after
    /// `limits.resend_timeout_ms` without ACK progress).
    fn tick(&mut self, now: Instant) {
        let now_ns = now.duration_since(self.started).as_nanos() as u64;
        self.core.handle(Input::Tick { now_ns }, &mut self.fx);
        for (out, from) in self.fx.rewound.drain(..) {
            let k = match out {
                Out::Sink => 0,
                Out::Node(j) => 1 + j as usize,
            };
            if let Some(p) = self.outs.get(k).and_then(Option::as_ref) {
                let peer = p
                    .conn
                    .as_ref()
                    .map_or_else(String::new, |c| c.peer.to_string());
                eprintln!(
                    "verity: {} {peer}: no ACK progress for {} ms; resending from {from}",
                    p.name, self.cfg.limits.resend_timeout_ms,
                );
            }
        }
    }

    /// Writes a snapshot (everything journaled is durable by now) and drops
    /// journal segments no kept snapshot needs.
    fn snapshot(&mut self) -> Result<(), WorkerError> {
        // The seal first, so that with fsync it is durable before a
        // snapshot points past it.
        self.seal_audit(false)?;
        if self.cfg.durability == Durability::Fsync {
            wait_all_durable(&self.journal)?;
            for p in self.outs.iter().flatten() {
                wait_all_durable(p.store.log())?;
            }
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

    /// Appends a seal over the input records journaled since the last one
    /// (`audit = true`), and prints the chain head at most every 10 s (and
    /// with `last`, at a clean stop) so it can be kept elsewhere.
    fn seal_audit(&mut self, last: bool) -> Result<(), WorkerError> {
        let Some(a) = self.audit.as_mut() else {
            return Ok(());
        };
        if let Some(seal) = a.seal() {
            self.journal
                .append(RecordKind::Seal.code(), now_ns(), &seal.encode())?;
        }
        let head = a.head();
        let (due, new) = match self.audit_printed {
            None => (true, true),
            Some((t, h)) => (t.elapsed() >= Duration::from_secs(10), h != head),
        };
        if new && (due || last) && head != [0; 32] {
            self.audit_printed = Some((Instant::now(), head));
            eprintln!(
                "verity: audit: journal chain head {} at position {}",
                audit::hex(&head),
                self.journal.end_position()
            );
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), WorkerError> {
        self.make_durable()?;
        for k in 0..self.outs.len() {
            self.pump_out(k)?;
        }
        self.flush_sources(true, Instant::now());
        self.seal_audit(true)?;
        self.snapshot()?;
        // Frames produced but not ACKed by their consumer (kept in the
        // outbound logs; sent again after the next start).
        let outs: Vec<(u32, u64, u64)> = std::iter::once(self.core.out())
            .chain((0..self.core.nodes()).filter_map(|j| self.core.peer_out(j)))
            .map(|o| (o.id, o.unacked(), o.sent.saturating_sub(o.acked)))
            .collect();
        let unacked: u64 = outs.iter().map(|o| o.1).sum();
        // Per channel: (unACKed, of which sent in this process).
        let detail: Vec<String> = outs
            .iter()
            .filter(|o| o.1 > 0)
            .map(|(id, n, sent)| format!("{id}:{n}/{sent}"))
            .collect();
        let s = &self.core.stats;
        eprintln!(
            "verity: stopped cleanly: accepted={} outputs={} duplicates={} gaps={} dead_letters={} bad_frames={} violations={} refused={} auth_refused={} tls_failed={} replayed={} snapshots={} unacked={unacked} unacked_by_channel=[{}]",
            s.accepted, s.outputs, s.duplicates, s.gaps, s.dead_letters, self.stats.bad_frames, s.violations, self.stats.refused, self.stats.auth_refused, self.stats.tls_failed, self.stats.replayed, self.stats.snapshots, detail.join(" ")
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

/// 32 bytes from the operating system's random source, for a HELLO
/// challenge; `None` if it fails (the connection is then refused, never
/// challenged with a guessable nonce).
fn random_challenge() -> Option<[u8; 32]> {
    let mut c = [0u8; 32];
    let mut filled = 0;
    while filled < c.len() {
        // SAFETY: getrandom(2) writes at most `len - filled` bytes into the
        // rest of `c`, which is valid for writes of that many bytes.
        let n = unsafe {
            libc::getrandom(
                c[filled..].as_mut_ptr().cast::<libc::c_void>(),
                c.len() - filled,
                0,
            )
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        filled += n as usize;
    }
    Some(c)
}

fn bad_frame_text(e: &WireError, at: u64) -> String {
    format!("bad frame at stream offset {at}: {e}")
}

/// Bytes per in-process ring (each direction of each shard pair).
const LINK_RING_BYTES: usize = 4 << 20;

/// Runs the nodes of one worker process until SIGTERM/SIGINT: one thread
/// per shard, each with its own event loop, journal and data directory,
/// wired to each other by in-process ring links (one per direction of each
/// pair). The first shard to fail stops the others; its error is returned.
pub fn run_shards(cfgs: Vec<NodeToml>) -> Result<(), WorkerError> {
    let n = cfgs.len();
    if n <= 1 {
        let Some(cfg) = cfgs.into_iter().next() else {
            return Ok(());
        };
        return Worker::start(cfg)?.run();
    }
    let ids: Vec<u32> = cfgs.iter().map(|c| c.node_id).collect();
    let mut links = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new().map_err(io_err("cannot create an event loop"))?;
        let waker =
            mio::Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create a waker"))?;
        wakers.push(std::sync::Arc::new(waker));
        links.push(ShardLinks {
            poll: Some(poll),
            ..ShardLinks::default()
        });
    }
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            // Channel a → b: a produces on its end, b consumes on its end.
            let (ea, eb) = super::link::link(LINK_RING_BYTES, wakers[a].clone(), wakers[b].clone())
                .map_err(|e| WorkerError::Replay(format!("ring: {e:?}")))?;
            links[a].to.push((ids[b], ea));
            links[b].from.push((ids[a], eb));
        }
    }
    let mut threads = Vec::with_capacity(n);
    for (cfg, l) in cfgs.into_iter().zip(links) {
        let id = cfg.node_id;
        let t = std::thread::Builder::new()
            .name(format!("node-{id}"))
            .spawn(move || {
                let r = Worker::start_shard(cfg, l).and_then(|mut w| w.run());
                if let Err(e) = &r {
                    eprintln!("verity: node {id} stopped on error: {e}");
                    STOP.store(true, Ordering::SeqCst);
                }
                r
            })
            .map_err(io_err("cannot start a shard thread"))?;
        threads.push(t);
    }
    let mut first = Ok(());
    for t in threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(WorkerError::Replay("a shard thread panicked".into())));
        if first.is_ok() {
            first = r;
        }
    }
    first
}
