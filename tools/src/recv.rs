//! `verity-recv`: accepts sink connections from nodes, drops duplicates by
//! seq (counting them), ACKs, and writes what it received to a file in the
//! received-file format of `tools/FORMATS.md`.
//!
//! Per channel it keeps `delivered`, the highest seq written. A DATA frame
//! with `seq <= delivered` is a duplicate (a resend after a node restart): it
//! is counted and dropped. `seq == delivered + 1` is written. A gap is NACKed
//! (once per 50 ms) and dropped. After every read the file is flushed and
//! each channel that moved is ACKed: the file holds everything ACKed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity_wire::handshake::{Acceptor, Me, Refusal};
use verity_wire::{Decoder, Encoder, ErrorCode, Kind, ResumeEntry, Role, HANDSHAKE_MAX_FRAME_LEN};

use crate::formats::{FormatError, ReceivedWriter};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Records written (each channel's seqs 1..=delivered).
    pub records: u64,
    /// Frames dropped because their seq was already delivered.
    pub duplicates: u64,
    /// Frames dropped because an earlier seq was missing.
    pub gaps: u64,
    pub nacks: u64,
    pub connections: u64,
    pub bad_frames: u64,
    /// Highest seq delivered per channel.
    pub delivered: BTreeMap<u32, u64>,
}

struct State {
    writer: ReceivedWriter<std::fs::File>,
    stats: RecvStats,
    error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    cluster_id: u64,
    secret: Option<Vec<u8>>,
    max_frame_len: u32,
    /// Each read is throttled to this many bytes per second (tests of
    /// backpressure); `None` reads as fast as it can.
    read_rate: Option<u64>,
    on_record: Option<OnRecord>,
    tls: Option<Arc<rustls::ServerConfig>>,
    raw_pipe: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the others down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
    /// `verity-bench`'s raw pipe: a sender connects straight to us, so we
    /// say we are a node and take sources as well as nodes.
    pub raw_pipe: bool,
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
            raw_pipe: false,
        }
    }
}

#[derive(Debug)]
pub enum RecvError {
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    Format(FormatError),
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecvError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            RecvError::Format(e) => write!(f, "{e}"),
        }
    }
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
        let writer = ReceivedWriter::create(&cfg.out).map_err(RecvError::Format)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                writer,
                stats: RecvStats::default(),
                error: None,
            }),
            stop: AtomicBool::new(false),
            cluster_id: cfg.cluster_id,
            secret: cfg.secret.clone(),
            max_frame_len: cfg.max_frame_len,
            read_rate: cfg.read_rate,
            on_record: cfg.on_record.clone(),
            tls: cfg.tls.clone(),
            raw_pipe: cfg.raw_pipe,
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
        self.shared.lock().stats.clone()
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

    /// Stops accepting and reading, flushes the file, returns the stats.
    pub fn stop(mut self) -> Result<RecvStats, RecvError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        let mut st = self.shared.lock();
        st.writer.flush().map_err(RecvError::Format)?;
        Ok(st.stats.clone())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let sh = Arc::clone(&shared);
                sh.lock().stats.connections += 1;
                conns.push(thread::spawn(move || {
                    if let Err(e) = serve(stream, &sh) {
                        // A lost connection is normal (node crash); the node
                        // reconnects and resends. A TLS failure is not.
                        if let Some(why) = crate::tls::failure(&e) {
                            eprintln!("verity-recv: TLS with {peer} failed: {why}");
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

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(Duration::from_millis(50)))?;
    match &shared.tls {
        None => serve_on(stream, shared),
        // The TLS handshake runs within the first reads.
        Some(tls) => serve_on(crate::tls::TlsStream::server(tls.clone(), stream)?, shared),
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
    let me = Me {
        cluster_id: shared.cluster_id,
        node_id: 0,
        role: if shared.raw_pipe {
            Role::Node
        } else {
            Role::Sink
        },
    };
    let mut acceptor = crate::client_auth::challenge()
        .ok()
        .map(|c| Acceptor::new(me, c));
    let mut answered = false;
    dec.set_max_frame_len(HANDSHAKE_MAX_FRAME_LEN);
    let mut last_nack: BTreeMap<u32, (u64, Instant)> = BTreeMap::new();
    let mut moved: Vec<(u32, u64)> = Vec::new();
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
                continue
            }
            Err(e) => return Err(e),
        };
        read_total += got as u64;
        dec.extend(&chunk[..got]);
        out.clear();
        moved.clear();
        {
            let mut st = shared.lock();
            loop {
                let f = match dec.decode() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        st.stats.bad_frames += 1;
                        let text = format!("bad frame at stream offset {}: {e}", dec.position());
                        drop(st);
                        return refuse(&mut stream, &mut out, &enc, e.error_code(), &text);
                    }
                };
                match (ready, f.kind()) {
                    (false, Kind::Hello) => {
                        // The three HELLOs of wire/PROTOCOL.md: the node's
                        // (first), ours with our answer, the node's answer.
                        let view = f.view();
                        let secret = shared.secret.as_deref();
                        let step = match acceptor.as_mut() {
                            Some(a) if !answered => a
                                .on_hello(
                                    &view,
                                    secret,
                                    if shared.raw_pipe {
                                        &[Role::Node, Role::Source]
                                    } else {
                                        &[Role::Node]
                                    },
                                )
                                .map(|h| (Some(h), None)),
                            Some(a) => a.on_answer(&view, secret).map(|p| (None, Some(p))),
                            None => Err(Refusal {
                                code: ErrorCode::Internal,
                                text: "no random source for a challenge".into(),
                            }),
                        };
                        match step {
                            Err(r) => {
                                drop(st);
                                return refuse(&mut stream, &mut out, &enc, r.code, &r.text);
                            }
                            Ok((Some(hello), _)) => {
                                let _ = enc.hello(&mut out, 0, &hello);
                                answered = true;
                            }
                            Ok((None, _)) => {
                                let entries: Vec<ResumeEntry> = st
                                    .stats
                                    .delivered
                                    .iter()
                                    .map(|(&c, &d)| ResumeEntry::new(c, d))
                                    .collect();
                                let _ = enc.resume(&mut out, 0, &entries);
                                ready = true;
                                dec.set_max_frame_len(shared.max_frame_len);
                            }
                        }
                    }
                    (true, Kind::Data) => {
                        let h = f.header();
                        let (channel, seq) = (h.channel(), h.seq());
                        let delivered = st.stats.delivered.get(&channel).copied().unwrap_or(0);
                        if seq <= delivered {
                            st.stats.duplicates += 1;
                            moved.push((channel, delivered));
                        } else if seq == delivered + 1 {
                            let trace = h.trace_id();
                            if let Err(e) = st.writer.write(channel, seq, trace, f.payload()) {
                                st.error.get_or_insert(e.to_string());
                                return Ok(());
                            }
                            st.stats.delivered.insert(channel, seq);
                            st.stats.records += 1;
                            if let Some(hook) = &shared.on_record {
                                hook(channel, seq, trace);
                            }
                            moved.push((channel, seq));
                        } else {
                            st.stats.gaps += 1;
                            let now = Instant::now();
                            let want = delivered + 1;
                            let due = match last_nack.get(&channel) {
                                Some(&(w, at)) => w != want || now - at > Duration::from_millis(50),
                                None => true,
                            };
                            if due {
                                last_nack.insert(channel, (want, now));
                                st.stats.nacks += 1;
                                let _ = enc.nack(&mut out, channel, 0, want);
                            }
                        }
                    }
                    (true, Kind::Heartbeat) => {}
                    (_, Kind::Error) => return Ok(()),
                    (_, kind) => {
                        let text = format!("unexpected {kind} on a sink connection");
                        drop(st);
                        return refuse(&mut stream, &mut out, &enc, ErrorCode::Protocol, &text);
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
                moved.dedup_by_key(|m| m.0);
                for &(channel, _) in &moved {
                    let d = st.stats.delivered.get(&channel).copied().unwrap_or(0);
                    let _ = enc.ack(&mut out, channel, 0, d);
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
    }
    Ok(())
}

/// Sends ERROR (after whatever `out` holds) and gives up on the connection
/// (best effort: the peer may be gone already).
fn refuse(
    stream: &mut impl Write,
    out: &mut BytesMut,
    enc: &Encoder,
    code: ErrorCode,
    text: &str,
) -> std::io::Result<()> {
    let _ = enc.error(out, 0, code, text);
    let _ = stream.write_all(out);
    Ok(())
}
