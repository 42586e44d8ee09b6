//! `verity-send`: an input file → DATA frames on one channel, at-least-once.
//!
//! Record `i` of the file (from 1) is sent with seq `i` and trace id
//! `trace_id(channel, i)`. The sender keeps every record until the node ACKs
//! it; after a reconnect the node's RESUME says what it has (`delivered`) and
//! everything after that is sent again (flag `RESEND`), as after a NACK. The
//! node's `delivered` watermark drops what it already has, so the file
//! arrives exactly once however often the connection breaks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity_wire::client::SourceWindow;
use verity_wire::handshake::{Connector, Me};
use verity_wire::text::Escaped;
use verity_wire::{Decoder, Encoder, ErrorCode, Kind, Role, HANDSHAKE_MAX_FRAME_LEN};

use crate::formats::{trace_id, FormatError, InputFormat, InputReader};
use crate::tls::{Link, LinkReader, TlsStream};

/// All records of an input file in one buffer, with their spans.
pub struct Records {
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Records {
    pub fn load(format: InputFormat, path: &Path) -> Result<Records, FormatError> {
        let mut reader = InputReader::open(format, path)?;
        let mut data = Vec::new();
        let mut spans = Vec::new();
        let mut buf = Vec::new();
        while reader.read_into(&mut buf)?.is_some() {
            spans.push((data.len(), buf.len()));
            data.extend_from_slice(&buf);
        }
        Ok(Records { data, spans })
    }

    pub fn from_vec(records: Vec<Vec<u8>>) -> Records {
        let mut data = Vec::new();
        let mut spans = Vec::new();
        for r in records {
            spans.push((data.len(), r.len()));
            data.extend_from_slice(&r);
        }
        Records { data, spans }
    }

    pub fn len(&self) -> u64 {
        self.spans.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Record with seq `seq` (1-based).
    pub fn get(&self, seq: u64) -> &[u8] {
        let (start, len) = self.spans[(seq - 1) as usize];
        &self.data[start..start + len]
    }
}

#[derive(Debug, Clone)]
pub struct SendConfig {
    pub addr: SocketAddr,
    pub channel: u32,
    pub client_id: u32,
    pub cluster_id: u64,
    /// Records per second; `None` = as fast as the node takes them.
    pub rate: Option<u64>,
    /// Frames per write.
    pub batch: usize,
    /// Frames sent but not ACKed before the sender waits.
    pub window: u64,
    /// Give up when no connection succeeds for this long.
    pub give_up_after: Duration,
    pub max_frame_len: u32,
    /// The client secret: answer the node's challenge and check its answer
    /// to ours (`None`: the node must not require it).
    pub secret: Option<Vec<u8>>,
    /// Records sent but not ACKed and no ACK progress for this long: send
    /// again from the first unACKed one (an ACK may have been lost).
    pub resend_after: Duration,
    /// TLS to the node (`--tls-ca`, with `--tls-cert`/`--tls-key` our
    /// client certificate): `crate::tls::client_config`. `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Stand in for node `channel` talking to a receiver (`verity-bench`'s
    /// raw pipe): HELLO as role node with node id `channel`, DATA on the
    /// node's sink channel `1000 + channel`. Trace ids stay those of
    /// source `channel`.
    pub as_node: bool,
}

impl SendConfig {
    /// The channel id on the wire (see [`SendConfig::as_node`]).
    fn wire_channel(&self) -> u32 {
        if self.as_node {
            crate::recv::SINK_CHANNEL_BASE.saturating_add(self.channel)
        } else {
            self.channel
        }
    }
}

impl SendConfig {
    pub fn new(addr: SocketAddr, channel: u32) -> SendConfig {
        SendConfig {
            addr,
            channel,
            client_id: channel,
            cluster_id: 1,
            rate: None,
            batch: 256,
            window: 1 << 16,
            give_up_after: Duration::from_secs(60),
            max_frame_len: verity_wire::DEFAULT_MAX_FRAME_LEN,
            secret: None,
            resend_after: Duration::from_secs(1),
            tls: None,
            as_node: false,
        }
    }
}

/// What a send run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    pub records: u64,
    /// Frames written, first sends and resends.
    pub frames: u64,
    pub resent: u64,
    pub acked: u64,
    pub connects: u64,
    pub nacks: u64,
    /// Records the node had ACKed but no longer had after a restart (its
    /// RESUME was below our ACK watermark); they were sent again.
    pub rewound: u64,
    /// Times nothing was ACKed for `resend_after` and the sender went back.
    pub timeouts: u64,
    /// Times a worker said the channel's home is another worker (ERROR
    /// `NOT_HOME`) and the sender went there.
    pub redirects: u64,
    /// Connections refused with a retryable ERROR (`LIMIT_EXCEEDED`,
    /// `CHANNEL_BUSY`, `SHUTTING_DOWN`, `INTERNAL`) and tried again later.
    pub retries: u64,
}

#[derive(Debug)]
pub enum SendError {
    /// No connection for `give_up_after`.
    Unreachable {
        addr: SocketAddr,
        last: String,
    },
    /// The node refused us (ERROR frame): its code and text.
    Refused {
        addr: SocketAddr,
        code: ErrorCode,
        text: String,
    },
    /// The node broke the protocol (an ACK or RESUME for records never
    /// sent): nothing it said was taken.
    Violation {
        addr: SocketAddr,
        what: String,
    },
    /// TLS with the node failed: its certificate was refused, ours was, or
    /// the session broke (a configuration error or tampering, which
    /// retrying does not mend).
    Tls {
        addr: SocketAddr,
        reason: String,
    },
    /// A record does not fit in a frame.
    TooLarge {
        seq: u64,
        len: usize,
    },
    Stopped,
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SendError::Unreachable { addr, last } => {
                write!(f, "cannot reach the node at {addr}: {last}")
            }
            SendError::Refused { addr, code, text } => write!(
                f,
                "the node at {addr} refused: {} {}",
                code.name(),
                Escaped(text)
            ),
            SendError::Violation { addr, what } => {
                write!(f, "the node at {addr} broke the protocol: {what}")
            }
            SendError::Tls { addr, reason } => write!(f, "TLS with the node at {addr}: {reason}"),
            SendError::TooLarge { seq, len } => {
                write!(f, "record {seq} ({len} bytes) does not fit in a frame")
            }
            SendError::Stopped => write!(f, "stopped before every record was ACKed"),
        }
    }
}

impl std::error::Error for SendError {}

/// A NACK's seq and its (first, last) ranges (none: from seq on).
type Nacked = (u64, Vec<(u64, u64)>);

/// Shared between the writer and the connection's ACK reader.
#[derive(Default)]
struct Shared {
    /// The highest seq the node ACKed on this connection.
    acked: AtomicU64,
    /// NACKs not yet taken by the writer: (seq, ranges); no ranges: from
    /// seq on.
    nacked: Mutex<Vec<Nacked>>,
    nacks: AtomicU64,
    lost: AtomicBool,
    /// The node's ERROR (code, text), or a violation of the node's.
    refused: Mutex<Option<Ending>>,
}

/// Why the ACK reader stopped a connection for good.
#[derive(Debug, Clone)]
enum Ending {
    Error(ErrorCode, String),
    /// The TLS session failed (an alert, a record that does not decrypt).
    Tls(String),
}

/// Backoff after a failed or refused connection: 20 ms doubling to 500 ms.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Redirects (ERROR `NOT_HOME`) followed in a row before giving up: a
/// cluster whose workers disagree about a home would send us in circles.
const MAX_REDIRECTS: u32 = 8;

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// When the first connection's rate clock started: with `rate` R, record
    /// `seq` is due at `started + (seq - 1) / R` (latency is measured from
    /// there, so a stalled sender does not hide queueing delay).
    pub started: std::sync::OnceLock<Instant>,
}

/// Sends every record and returns once all are ACKed (or on error / `stop`).
pub fn send(
    cfg: &SendConfig,
    records: &Records,
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<SendStats, SendError> {
    let n = records.len();
    let enc = Encoder::new(cfg.max_frame_len);
    let mut stats = SendStats {
        records: n,
        ..SendStats::default()
    };
    // The window, cursor and resend rules (shared with the simulator's
    // sources); time in ns since `origin`.
    let origin = Instant::now();
    let now_ns = || origin.elapsed().as_nanos() as u64;
    let resend_after = cfg.resend_after.as_nanos() as u64;
    let mut win = SourceWindow::new(n, cfg.window, resend_after);
    let mut backoff = BACKOFF_MIN;
    let mut last_connected = Instant::now();
    let mut buf = BytesMut::with_capacity(1 << 20);
    // Where the channel is sent: the configured worker, or the home a
    // worker redirected us to.
    let mut addr = cfg.addr;
    let mut redirects_in_a_row = 0;
    while !win.done() || n == 0 {
        if stop.load(Ordering::Relaxed) {
            return Err(SendError::Stopped);
        }
        let failed = match connect(cfg, addr) {
            Ok(c) => Ok(c),
            Err(Connect::Refused(ErrorCode::NotHome, text)) => {
                redirects_in_a_row += 1;
                match text.trim().parse::<SocketAddr>() {
                    Ok(home) if redirects_in_a_row <= MAX_REDIRECTS => {
                        stats.redirects += 1;
                        addr = home;
                        continue;
                    }
                    _ => Err((ErrorCode::NotHome, text)),
                }
            }
            Err(Connect::Refused(code, text)) => Err((code, text)),
            Err(Connect::Tls(reason)) => return Err(SendError::Tls { addr, reason }),
            Err(Connect::Failed(e)) => {
                if last_connected.elapsed() > cfg.give_up_after {
                    return Err(SendError::Unreachable { addr, last: e });
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                // The configured worker again: the home may have moved.
                addr = cfg.addr;
                continue;
            }
        };
        let (link, delivered) = match failed {
            Ok(c) => c,
            Err((code, text)) if code.retryable() && code != ErrorCode::NotHome => {
                // Busy channel, full connection slots, a stopping node:
                // later, with backoff, while the give-up time allows.
                if last_connected.elapsed() > cfg.give_up_after {
                    return Err(SendError::Refused { addr, code, text });
                }
                stats.retries += 1;
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err((code, text)) => return Err(SendError::Refused { addr, code, text }),
        };
        // RESUME is authoritative: everything after what the node has is
        // sent (again), even records it had ACKed before (a node whose
        // journal lost its tail to corruption gets them again; we still
        // hold the file).
        win.resume(delivered, now_ns())
            .map_err(|v| SendError::Violation { addr, what: v.0 })?;
        backoff = BACKOFF_MIN;
        redirects_in_a_row = 0;
        last_connected = Instant::now();
        stats.connects += 1;
        if n == 0 {
            break;
        }
        let shared = Arc::new(Shared::default());
        // This thread writes records, another reads ACKs (over TLS both
        // use one session: see `Link::split`).
        let (mut stream, rs) = match link.split() {
            Ok(halves) => halves,
            Err(_) => continue,
        };
        let reader = {
            let shared = Arc::clone(&shared);
            let max = cfg.max_frame_len;
            thread::spawn(move || read_acks(rs, &shared, max))
        };
        let mut sent_at_start = 0u64;
        let rate_start = Instant::now();
        let _ = progress.started.set(rate_start);
        let mut violation = None;
        loop {
            if stop.load(Ordering::Relaxed) {
                stream.shutdown();
                let _ = reader.join();
                return Err(SendError::Stopped);
            }
            let now = now_ns();
            if let Err(v) = win.ack(shared.acked.load(Ordering::Acquire), now) {
                // Nothing it says is taken any more.
                violation = Some(v.0);
                break;
            }
            progress.acked.store(win.acked(), Ordering::Relaxed);
            if win.done() || shared.lost.load(Ordering::Acquire) {
                break;
            }
            let nacked = shared
                .nacked
                .lock()
                .map(|mut n| std::mem::take(&mut *n))
                .unwrap_or_default();
            for (seq, ranges) in nacked {
                win.nack(seq, &ranges);
            }
            let mut max = cfg.batch as u64;
            if let Some(rate) = cfg.rate {
                let allowed = (rate_start.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
                if sent_at_start >= allowed {
                    // Sleep until the next record is due (at most 200 us):
                    // a coarser tick would show up as latency.
                    let due =
                        rate_start + Duration::from_secs_f64(sent_at_start as f64 / rate as f64);
                    let wait = due.saturating_duration_since(Instant::now());
                    thread::sleep(wait.min(Duration::from_micros(200)));
                    continue;
                }
                max = max.min(allowed - sent_at_start);
            }
            let Some(batch) = win.poll(now, max) else {
                // All sent, or the window is full. Records the ACK reader's
                // TLS session queued (a key update) leave from here: this
                // thread alone writes.
                if stream.flush_pending().is_err() {
                    break;
                }
                thread::sleep(Duration::from_micros(200));
                continue;
            };
            buf.clear();
            for seq in batch.from..=batch.to {
                let payload = records.get(seq);
                enc.data(
                    &mut buf,
                    cfg.wire_channel(),
                    seq,
                    trace_id(cfg.channel, seq),
                    batch.resend(seq),
                    payload,
                )
                .map_err(|_| SendError::TooLarge {
                    seq,
                    len: payload.len(),
                })?;
            }
            // Before the write: the node may ACK these before write_all
            // returns.
            win.sent(batch);
            if stream.write_all(&buf).is_err() {
                break;
            }
            stats.frames += batch.len();
            sent_at_start += batch.len();
            progress.sent.store(win.highest_sent(), Ordering::Relaxed);
        }
        win.disconnected();
        stream.shutdown();
        let _ = reader.join();
        stats.nacks += shared.nacks.load(Ordering::Relaxed);
        if let Some(what) = violation {
            return Err(SendError::Violation { addr, what });
        }
        let ending = shared.refused.lock().ok().and_then(|r| r.clone());
        match ending {
            None => {}
            Some(Ending::Tls(reason)) => return Err(SendError::Tls { addr, reason }),
            Some(Ending::Error(code, text)) if !code.retryable() => {
                return Err(SendError::Refused { addr, code, text })
            }
            Some(Ending::Error(ErrorCode::NotHome, text)) => {
                if let Ok(home) = text.trim().parse::<SocketAddr>() {
                    stats.redirects += 1;
                    addr = home;
                }
            }
            Some(Ending::Error(..)) => {
                // Retryable (e.g. a frame timeout, a stopping node):
                // reconnect after a backoff.
                stats.retries += 1;
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let counts = win.counts();
    stats.resent = counts.resent;
    stats.timeouts = counts.timeouts;
    stats.rewound = counts.rewound;
    stats.acked = win.acked();
    Ok(stats)
}

enum Connect {
    Failed(String),
    Refused(ErrorCode, String),
    Tls(String),
}

/// A failed read or write while connecting: a TLS failure, or another.
fn connect_err(e: std::io::Error) -> Connect {
    match crate::tls::failure(&e) {
        Some(reason) => Connect::Tls(reason),
        None => Connect::Failed(e.to_string()),
    }
}

/// Connects to `addr` (with TLS: the TLS handshake first, the node's
/// certificate naming `addr`'s IP) and does the handshake
/// (`wire/PROTOCOL.md`: our HELLO, the node's HELLO with its answer, our
/// answer), then reads the node's RESUME. Returns the connection and the
/// node's `delivered` for our channel.
fn connect(cfg: &SendConfig, addr: SocketAddr) -> Result<(Link, u64), Connect> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| Connect::Failed(e.to_string()))?;
    crate::net::tune(&sock);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let mut stream = match &cfg.tls {
        None => Link::Plain(sock),
        Some(tls) => {
            let mut t = TlsStream::client(tls.clone(), sock, addr.ip()).map_err(connect_err)?;
            t.handshake().map_err(connect_err)?;
            Link::Tls(Box::new(t))
        }
    };
    let enc = Encoder::new(cfg.max_frame_len);
    let mut buf = BytesMut::new();
    let challenge = crate::client_auth::challenge()
        .map_err(|e| Connect::Failed(format!("no random source: {e}")))?;
    // A source's HELLO names the channel it produces in its node id.
    let (role, peer_role) = if cfg.as_node {
        (Role::Node, Role::Sink)
    } else {
        (Role::Source, Role::Node)
    };
    let me = Me {
        cluster_id: cfg.cluster_id,
        node_id: cfg.channel,
        role,
    };
    let (connector, hello) = Connector::start(me, challenge);
    let _ = enc.hello(&mut buf, 0, &hello);
    stream.write_all(&buf).map_err(connect_err)?;
    // Until RESUME: frames up to an ERROR's size.
    let mut dec = Decoder::new(HANDSHAKE_MAX_FRAME_LEN);
    let mut answered = false;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(f) = dec
            .decode()
            .map_err(|e| Connect::Failed(format!("bad frame from the node: {e}")))?
        {
            let view = f.view();
            match f.kind() {
                Kind::Hello if !answered => {
                    let secret = cfg.secret.as_deref();
                    let (answer, _) = connector
                        .on_hello(&view, secret, peer_role, None)
                        .map_err(|r| Connect::Refused(r.code, r.text))?;
                    let mut b = BytesMut::new();
                    let _ = enc.hello(&mut b, 0, &answer);
                    stream.write_all(&b).map_err(connect_err)?;
                    answered = true;
                }
                Kind::Resume if answered => {
                    let delivered = view.resume_delivered(cfg.wire_channel()).unwrap_or(0);
                    let _ = stream.set_read_timeout(None);
                    return Ok((stream, delivered));
                }
                Kind::Error => {
                    let (code, text) = view.error().unwrap_or((ErrorCode::Internal, ""));
                    return Err(Connect::Refused(code, text.to_owned()));
                }
                kind => {
                    return Err(Connect::Failed(format!(
                        "unexpected {kind} from the node during the handshake"
                    )))
                }
            }
        }
        let got = stream.read(&mut chunk).map_err(connect_err)?;
        if got == 0 {
            return Err(Connect::Failed("closed during the handshake".into()));
        }
        dec.extend(&chunk[..got]);
    }
}

fn read_acks(mut stream: LinkReader, shared: &Shared, max_frame_len: u32) {
    let mut dec = Decoder::new(max_frame_len);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let got = match stream.read(&mut chunk) {
            Ok(0) => break,
            Err(e) => {
                if let Some(reason) = crate::tls::failure(&e) {
                    if let Ok(mut r) = shared.refused.lock() {
                        r.get_or_insert(Ending::Tls(reason));
                    }
                }
                break;
            }
            Ok(n) => n,
        };
        dec.extend(&chunk[..got]);
        loop {
            match dec.decode() {
                Ok(Some(f)) => match f.kind() {
                    Kind::Ack => {
                        // The writer checks it against what was sent.
                        shared.acked.fetch_max(f.header().seq(), Ordering::AcqRel);
                    }
                    Kind::Nack => {
                        shared.nacks.fetch_add(1, Ordering::Relaxed);
                        let view = f.view();
                        let ranges = view.nack_ranges().unwrap_or(&[]);
                        let ranges = ranges.iter().map(|r| (r.first.get(), r.last.get()));
                        if let Ok(mut n) = shared.nacked.lock() {
                            n.push((f.header().seq(), ranges.collect()));
                        }
                    }
                    Kind::Error => {
                        let view = f.view();
                        let (code, text) = view.error().unwrap_or((ErrorCode::Internal, ""));
                        if let Ok(mut r) = shared.refused.lock() {
                            *r = Some(Ending::Error(code, text.to_owned()));
                        }
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(_) => {
                    shared.lost.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
    shared.lost.store(true, Ordering::Release);
}
