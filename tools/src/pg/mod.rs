//! `verity-sink-postgres`: a sink that nodes connect to as they connect to
//! `verity-recv` (same handshake, same client-secret authentication), and
//! that puts their outputs into PostgreSQL exactly once.
//!
//! Each node connection has its own database connection. Per batch of DATA
//! frames (what one read brought, at most `batch_rows` rows) it runs one
//! transaction that
//!
//! 1. advances the channel's row of the watermark table
//!    (`verity_delivered(channel, delivered)`) from what it was to the
//!    batch's last seq, on the condition that it still holds the old value
//!    (another connection on the same channel that got there first makes
//!    this one a conflict: it is refused, and nothing of it is written);
//! 2. writes the rows (binary `COPY`, or multi-row `INSERT`: `write`);
//! 3. commits,
//!
//! and only then ACKs. On every (re)connection it RESUMEs from the
//! watermark in the database, so a crash of the sink at any point loses no
//! row and writes none twice: a row is in the table exactly when the
//! watermark covers it, and the node resends everything after it.
//!
//! If the database is down, the connection stops ACKing (and reading: the
//! node's window fills and it applies backpressure), keeps the batch, and
//! retries with backoff. After a failed commit it cannot know whether the
//! commit happened, so it reads the watermark once the database answers
//! again: the batch's last seq means it did, the old value that it did not
//! (then the same batch is written again).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity_wire::client::{SinkLedger, Verdict};
use verity_wire::{Decoder, Encoder, ErrorCode, Kind, HANDSHAKE_MAX_FRAME_LEN};

use crate::recv::{accept_loop, Connections, ReadWrite, SinkHandshake, NACK_INTERVAL};

pub mod cli;
pub mod config;
pub mod rows;
pub mod server;

pub use config::SinkConfig;
pub use rows::{Batch, Column, Mapping, Mappings, Table, TableName, Value, WriteMode};

/// What the sink did since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Rows committed by this sink (not those found at start).
    pub records: u64,
    /// Rows in the table at start (the sum of the watermarks).
    pub recovered: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub nacks: u64,
    pub connections: u64,
    pub bad_frames: u64,
    /// Connections refused because another connection had advanced their
    /// channel's watermark.
    pub conflicts: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Failed database operations (each retried).
    pub db_errors: u64,
    /// Per channel, the watermark as last committed or read.
    pub delivered: BTreeMap<u32, u64>,
}

#[derive(Debug)]
pub enum SinkError {
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The database refused or could not be reached at start.
    Db(String),
    /// A bad setting (the table name of a mapping, a secret file).
    Config(String),
}

impl core::fmt::Display for SinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SinkError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            SinkError::Db(e) | SinkError::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for SinkError {}

/// A database error with its SQLSTATE when the server sent one.
fn db_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// Connects to the database of `cfg`.
pub fn connect(cfg: &SinkConfig) -> Result<postgres::Client, String> {
    let mut c: postgres::Config = cfg
        .url
        .parse()
        .map_err(|e: postgres::Error| format!("postgres.url: {}", db_text(&e)))?;
    if let Some(p) = &cfg.password {
        c.password(p);
    }
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    c.connect(postgres::NoTls).map_err(|e| {
        format!(
            "cannot connect to PostgreSQL ({}): {}",
            shown_url(&cfg.url),
            db_text(&e)
        )
    })
}

/// The connection string without a password in it.
fn shown_url(url: &str) -> String {
    if url.contains("password")
        || url.contains('@') && url.contains(':') && url.starts_with("postgres")
    {
        "postgres.url, password hidden".into()
    } else {
        url.to_string()
    }
}

/// The output table of `cfg` with its app's mapping.
pub fn table_of(cfg: &SinkConfig, mappings: &Mappings) -> Result<Table, String> {
    let mapping = mappings.get(&cfg.app);
    let name = match &cfg.table {
        Some(t) => t.clone(),
        None => TableName::parse(mapping.default_table())
            .map_err(|e| format!("the default table of app {:?}: {e}", cfg.app))?,
    };
    Ok(Table { name, mapping })
}

/// Creates the tables (when `create_tables`), empties them with `fresh`,
/// and returns every channel's watermark.
pub fn prepare(
    db: &mut postgres::Client,
    cfg: &SinkConfig,
    table: &Table,
    fresh: bool,
) -> Result<BTreeMap<u32, u64>, String> {
    let wm = cfg.watermark_table.sql();
    let err = |what: &str, e: postgres::Error| format!("{what}: {}", db_text(&e));
    if cfg.create_tables {
        db.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {wm} (channel integer PRIMARY KEY, delivered bigint NOT NULL)"
        ))
        .map_err(|e| err(&format!("creating {}", cfg.watermark_table), e))?;
        db.batch_execute(&table.create_sql())
            .map_err(|e| err(&format!("creating {}", table.name), e))?;
    }
    if fresh {
        let mut tx = db.transaction().map_err(|e| err("BEGIN", e))?;
        tx.batch_execute(&format!("TRUNCATE {}; DELETE FROM {wm}", table.name.sql()))
            .map_err(|e| err("--fresh", e))?;
        tx.commit().map_err(|e| err("COMMIT", e))?;
    }
    let rows = db
        .query(&format!("SELECT channel, delivered FROM {wm}"), &[])
        .map_err(|e| err(&format!("reading {}", cfg.watermark_table), e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as u32, r.get::<_, i64>(1) as u64))
        .collect())
}

struct Shared {
    cfg: SinkConfig,
    table: Table,
    name: String,
    stop: AtomicBool,
    stats: Mutex<SinkStats>,
    origin: Instant,
    secret: Option<Vec<u8>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, SinkStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `ms` in small steps; false once the sink is stopping.
    fn pause(&self, ms: u64) -> bool {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if self.stopped() {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        !self.stopped()
    }
}

/// A running sink: a listener thread and one thread per node connection.
pub struct Sink {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
}

impl Sink {
    /// Binds, prepares the database (one attempt: see
    /// [`Sink::start_retrying`]) and starts accepting nodes. `name`
    /// prefixes its messages.
    pub fn start(
        cfg: &SinkConfig,
        mappings: &Mappings,
        fresh: bool,
        name: &str,
    ) -> Result<Sink, SinkError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|error| SinkError::Bind {
            addr: cfg.listen,
            error,
        })?;
        Sink::start_on(listener, cfg, mappings, fresh, name, None)
    }

    /// As [`Sink::start`], but while the database cannot be reached it
    /// retries with the configured backoff (one message per attempt),
    /// until `give_up` says so.
    pub fn start_retrying(
        cfg: &SinkConfig,
        mappings: &Mappings,
        fresh: bool,
        name: &str,
        give_up: &dyn Fn() -> bool,
    ) -> Result<Sink, SinkError> {
        let listener = TcpListener::bind(cfg.listen).map_err(|error| SinkError::Bind {
            addr: cfg.listen,
            error,
        })?;
        Sink::start_on(listener, cfg, mappings, fresh, name, Some(give_up))
    }

    fn start_on(
        listener: TcpListener,
        cfg: &SinkConfig,
        mappings: &Mappings,
        fresh: bool,
        name: &str,
        retry: Option<&dyn Fn() -> bool>,
    ) -> Result<Sink, SinkError> {
        let addr = listener.local_addr().map_err(|error| SinkError::Bind {
            addr: cfg.listen,
            error,
        })?;
        let table = table_of(cfg, mappings).map_err(SinkError::Config)?;
        let secret = match &cfg.client_secret_file {
            Some(f) => Some(
                crate::client_auth::load_secret(f)
                    .map_err(|e| SinkError::Config(format!("client_secret_file: {e}")))?,
            ),
            None => None,
        };
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => Some(
                crate::tls::server_config(c, k, cfg.tls_ca.as_deref())
                    .map_err(|e| SinkError::Config(format!("TLS: {e}")))?,
            ),
            _ => None,
        };
        let mut backoff = cfg.retry_initial_ms;
        let delivered = loop {
            let attempt = connect(cfg).and_then(|mut db| prepare(&mut db, cfg, &table, fresh));
            match (attempt, retry) {
                (Ok(d), _) => break d,
                (Err(e), None) => return Err(SinkError::Db(e)),
                (Err(e), Some(give_up)) => {
                    eprintln!("{name}: {e}; retrying in {backoff} ms");
                    let until = Instant::now() + Duration::from_millis(backoff);
                    while Instant::now() < until {
                        if give_up() {
                            return Err(SinkError::Db(e));
                        }
                        thread::sleep(Duration::from_millis(10));
                    }
                    backoff = (backoff * 2).min(cfg.retry_max_ms);
                }
            }
        };
        let stats = SinkStats {
            recovered: delivered.values().sum(),
            delivered,
            ..SinkStats::default()
        };
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            table,
            name: name.to_string(),
            stop: AtomicBool::new(false),
            stats: Mutex::new(stats),
            origin: Instant::now(),
            secret,
            tls,
        });
        let _ = listener.set_nonblocking(true);
        let sh = Arc::clone(&shared);
        let handle = thread::spawn(move || accept_loop(listener, sh));
        Ok(Sink {
            shared,
            addr,
            listener: Some(handle),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn table(&self) -> &TableName {
        &self.shared.table.name
    }

    pub fn stats(&self) -> SinkStats {
        self.shared.stats().clone()
    }

    /// Rows in the table: found at start plus committed since.
    pub fn rows(&self) -> u64 {
        let s = self.shared.stats();
        s.recovered + s.records
    }

    /// Stops accepting and reading (a batch being retried is given up: it
    /// was never ACKed); returns the stats.
    pub fn stop(mut self) -> SinkStats {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        self.stats()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

impl Connections for Shared {
    fn stopped(&self) -> bool {
        Shared::stopped(self)
    }
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }
    fn accepted(&self) {
        self.stats().connections += 1;
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn serve(&self, stream: &mut dyn ReadWrite) -> std::io::Result<()> {
        serve_on(stream, self)
    }
}

/// One node's channel, once its handshake is done: its database
/// connection, what is committed, and the batch not yet committed.
struct Channel {
    channel: u32,
    db: postgres::Client,
    ledger: SinkLedger,
    /// The watermark in the database (what may be ACKed).
    committed: u64,
    batch: Batch,
}

/// How a commit ended when it did not.
enum Failed {
    /// The sink is stopping.
    Stopped,
    /// The connection must be refused (a conflict): the text says why.
    Refuse(String),
}

impl Channel {
    /// Connects to the database (retrying with backoff) and reads the
    /// channel's watermark, creating its row at 0.
    fn open(sh: &Shared, channel: u32) -> Result<Channel, Failed> {
        let mut backoff = sh.cfg.retry_initial_ms;
        let mut last_log: Option<Instant> = None;
        loop {
            let attempt = connect(&sh.cfg).and_then(|mut db| {
                let d = watermark(&mut db, &sh.cfg, channel)?;
                Ok((db, d))
            });
            match attempt {
                Ok((db, delivered)) => {
                    sh.stats().delivered.insert(channel, delivered);
                    return Ok(Channel {
                        channel,
                        db,
                        ledger: SinkLedger::new(
                            BTreeMap::from([(channel, delivered)]),
                            NACK_INTERVAL.as_nanos() as u64,
                        ),
                        committed: delivered,
                        batch: Batch::default(),
                    });
                }
                Err(e) => {
                    sh.stats().db_errors += 1;
                    log_limited(sh, &mut last_log, || {
                        format!("channel {channel}: {e}; retrying (backoff up to {} ms), nothing ACKed meanwhile", sh.cfg.retry_max_ms)
                    });
                    if !sh.pause(backoff) {
                        return Err(Failed::Stopped);
                    }
                    backoff = (backoff * 2).min(sh.cfg.retry_max_ms);
                }
            }
        }
    }

    /// Commits the batch (retrying across database failures); on success
    /// `committed` is the ledger's `delivered`.
    fn commit(&mut self, sh: &Shared) -> Result<(), Failed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let new = self.ledger.get(self.channel);
        let old = self.committed;
        let mut backoff = sh.cfg.retry_initial_ms;
        let mut last_log: Option<Instant> = None;
        loop {
            let why = match self.try_commit(sh, old, new) {
                Ok(()) => break,
                Err(Attempt::Conflict(found)) => {
                    sh.stats().conflicts += 1;
                    let what = match found {
                        Some(w) => format!("the database's watermark is {w}, not {old}"),
                        None => format!("rows after seq {old} are in {} already", sh.table.name),
                    };
                    return Err(Failed::Refuse(format!(
                        "channel {}: {what}: another connection wrote this channel; this one is refused",
                        self.channel
                    )));
                }
                Err(Attempt::Db(e)) => e,
            };
            sh.stats().db_errors += 1;
            log_limited(sh, &mut last_log, || {
                format!(
                    "channel {}: committing seqs {}..={new} failed: {why}; retrying (backoff up to {} ms), nothing ACKed meanwhile",
                    self.channel,
                    old + 1,
                    sh.cfg.retry_max_ms
                )
            });
            // Whether that commit happened is known only from the
            // watermark, once the database answers again.
            loop {
                if !sh.pause(backoff) {
                    return Err(Failed::Stopped);
                }
                backoff = (backoff * 2).min(sh.cfg.retry_max_ms);
                if self.db.is_closed() {
                    match connect(&sh.cfg) {
                        Ok(db) => self.db = db,
                        Err(e) => {
                            sh.stats().db_errors += 1;
                            log_limited(sh, &mut last_log, || {
                                format!("channel {}: {e}", self.channel)
                            });
                            continue;
                        }
                    }
                }
                match watermark(&mut self.db, &sh.cfg, self.channel) {
                    Ok(w) if w == new => {
                        // It did commit.
                        self.finish(sh, new);
                        return Ok(());
                    }
                    Ok(w) if w == old => break,
                    Ok(w) => {
                        sh.stats().conflicts += 1;
                        return Err(Failed::Refuse(format!(
                            "channel {}: the database's watermark is {w}, neither {old} nor {new}: another connection wrote this channel; this one is refused",
                            self.channel
                        )));
                    }
                    Err(e) => {
                        sh.stats().db_errors += 1;
                        log_limited(sh, &mut last_log, || {
                            format!("channel {}: {e}", self.channel)
                        });
                    }
                }
            }
        }
        self.finish(sh, new);
        Ok(())
    }

    fn finish(&mut self, sh: &Shared, new: u64) {
        let mut st = sh.stats();
        st.records += self.batch.rows() as u64;
        st.commits += 1;
        st.delivered.insert(self.channel, new);
        self.committed = new;
        self.batch.clear();
    }

    /// One transaction: the conditional watermark update, the rows, COMMIT.
    fn try_commit(&mut self, sh: &Shared, old: u64, new: u64) -> Result<(), Attempt> {
        let db = |e: postgres::Error| {
            if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
                Attempt::Conflict(None)
            } else {
                Attempt::Db(db_text(&e))
            }
        };
        let mut tx = self.db.transaction().map_err(db)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE {} SET delivered = $1 WHERE channel = $2 AND delivered = $3",
                    sh.cfg.watermark_table.sql()
                ),
                &[&(new as i64), &(self.channel as i32), &(old as i64)],
            )
            .map_err(db)?;
        if n != 1 {
            let found = tx
                .query_opt(
                    &format!(
                        "SELECT delivered FROM {} WHERE channel = $1",
                        sh.cfg.watermark_table.sql()
                    ),
                    &[&(self.channel as i32)],
                )
                .map_err(db)?
                .map_or(0, |r| r.get::<_, i64>(0) as u64);
            return Err(Attempt::Conflict(Some(found)));
        }
        self.batch
            .write(&mut tx, &sh.table, sh.cfg.write)
            .map_err(db)?;
        tx.commit().map_err(db)
    }
}

enum Attempt {
    /// Another connection moved the watermark (to this, when known).
    Conflict(Option<u64>),
    Db(String),
}

/// The watermark of `channel`, its row created at 0 when missing.
fn watermark(db: &mut postgres::Client, cfg: &SinkConfig, channel: u32) -> Result<u64, String> {
    let wm = cfg.watermark_table.sql();
    db.execute(
        &format!(
            "INSERT INTO {wm} (channel, delivered) VALUES ($1, 0) ON CONFLICT (channel) DO NOTHING"
        ),
        &[&(channel as i32)],
    )
    .and_then(|_| {
        db.query_one(
            &format!("SELECT delivered FROM {wm} WHERE channel = $1"),
            &[&(channel as i32)],
        )
    })
    .map(|r| r.get::<_, i64>(0) as u64)
    .map_err(|e| {
        format!(
            "reading the watermark of channel {channel}: {}",
            db_text(&e)
        )
    })
}

/// Logs at most once a second per connection (a database outage would
/// otherwise print one line per retry).
fn log_limited(sh: &Shared, last: &mut Option<Instant>, text: impl FnOnce() -> String) {
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        eprintln!("{}: {}", sh.name, text());
        *last = Some(Instant::now());
    }
}

fn serve_on<S: Read + Write>(mut stream: S, sh: &Shared) -> std::io::Result<()> {
    let enc = Encoder::new(sh.cfg.max_frame_len);
    let mut dec = Decoder::new(HANDSHAKE_MAX_FRAME_LEN);
    let mut out = BytesMut::new();
    let mut chunk = vec![0u8; 256 << 10];
    let mut greeting = SinkHandshake::new(sh.cfg.cluster_id);
    let mut conn: Option<Channel> = None;
    while !sh.stopped() {
        let got = match stream.read(&mut chunk) {
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
        dec.extend(&chunk[..got]);
        out.clear();
        let mut ack = false;
        loop {
            let f = match dec.decode() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    sh.stats().bad_frames += 1;
                    let text = format!("bad frame at stream offset {}: {e}", dec.position());
                    return refuse(&mut stream, &mut out, &enc, e.error_code(), &text);
                }
            };
            match (conn.as_mut(), f.kind()) {
                (None, Kind::Hello) => {
                    match greeting.on_hello(&f.view(), sh.secret.as_deref(), &enc, &mut out) {
                        Err(r) => return refuse(&mut stream, &mut out, &enc, r.code, &r.text),
                        Ok(None) => {}
                        Ok(Some(ch)) => {
                            // Our HELLO is out before the database is asked.
                            if !out.is_empty() {
                                stream.write_all(&out)?;
                                out.clear();
                            }
                            let c = match Channel::open(sh, ch) {
                                Ok(c) => c,
                                Err(_) => return Ok(()),
                            };
                            c.ledger.greet(ch, &enc, &mut out);
                            conn = Some(c);
                            dec.set_max_frame_len(sh.cfg.max_frame_len);
                        }
                    }
                }
                (Some(c), Kind::Data) => {
                    let h = f.header();
                    let (channel, seq) = (h.channel(), h.seq());
                    if channel != c.channel {
                        let text = format!(
                            "DATA on channel {channel}: this node's channel to the sink is {}",
                            c.channel
                        );
                        return refuse(
                            &mut stream,
                            &mut out,
                            &enc,
                            ErrorCode::UnknownChannel,
                            &text,
                        );
                    }
                    match c.ledger.offer(channel, seq) {
                        Verdict::Deliver => {
                            if let Err(why) =
                                c.batch
                                    .push(&sh.table, channel, seq, h.trace_id(), f.payload())
                            {
                                let text = format!(
                                    "DATA seq {seq} of channel {channel} cannot go into {}: {why}",
                                    sh.table.name
                                );
                                eprintln!("{}: {text}", sh.name);
                                return refuse(
                                    &mut stream,
                                    &mut out,
                                    &enc,
                                    ErrorCode::Protocol,
                                    &text,
                                );
                            }
                            c.ledger.delivered(channel, seq);
                            if c.batch.rows() >= sh.cfg.batch_rows {
                                if let Err(f) = c.commit(sh) {
                                    return failed(&mut stream, &mut out, &enc, f, sh);
                                }
                                ack = true;
                            }
                        }
                        Verdict::Duplicate { .. } => {
                            sh.stats().duplicates += 1;
                            ack = true;
                        }
                        Verdict::Gap => {
                            // Go-back-N: a row batch goes into the table in
                            // seq order, so nothing is kept after a gap.
                            let mut st = sh.stats();
                            st.gaps += 1;
                            let mut nacks = Vec::new();
                            let now = sh.origin.elapsed().as_nanos() as u64;
                            let view = f.view();
                            c.ledger.gap(&view, 0, now, &mut nacks);
                            if !nacks.is_empty() {
                                st.nacks += 1;
                                SinkLedger::nack(&enc, &mut out, channel, &nacks);
                            }
                        }
                    }
                }
                (Some(_), Kind::Heartbeat) => {}
                (_, Kind::Error) => return Ok(()),
                (_, kind) => {
                    let text = format!("unexpected {kind} on a sink connection");
                    return refuse(&mut stream, &mut out, &enc, ErrorCode::Protocol, &text);
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            if !c.batch.is_empty() {
                if let Err(f) = c.commit(sh) {
                    return failed(&mut stream, &mut out, &enc, f, sh);
                }
                ack = true;
            }
            if ack {
                let _ = enc.ack(&mut out, c.channel, 0, c.committed);
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
    }
    Ok(())
}

fn failed(
    stream: &mut impl Write,
    out: &mut BytesMut,
    enc: &Encoder,
    f: Failed,
    sh: &Shared,
) -> std::io::Result<()> {
    match f {
        Failed::Stopped => Ok(()),
        Failed::Refuse(text) => {
            eprintln!("{}: {text}", sh.name);
            refuse(stream, out, enc, ErrorCode::Protocol, &text)
        }
    }
}

/// Sends ERROR after whatever `out` holds and gives up on the connection
/// (best effort: the peer may be gone already). Nothing uncommitted was
/// ACKed, so nothing is lost: the node resends it on its next connection.
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

/// Writes every row of the table, in (channel, seq) order, as a received
/// file (`tools/FORMATS.md`): what `verity-check --postgres` checks.
pub fn export(
    db: &mut postgres::Client,
    table: &TableName,
    out: &std::path::Path,
) -> Result<u64, String> {
    let mut w = crate::formats::ReceivedWriter::create(out).map_err(|e| e.to_string())?;
    let sql = format!(
        "SELECT channel, seq, trace_id, payload FROM {} ORDER BY channel, seq",
        table.sql()
    );
    let rows = db
        .query_raw(&sql, std::iter::empty::<i32>())
        .map_err(|e| format!("reading {table}: {}", db_text(&e)))?;
    let mut rows = rows;
    let mut n = 0u64;
    use postgres::fallible_iterator::FallibleIterator;
    while let Some(r) = rows
        .next()
        .map_err(|e| format!("reading {table}: {}", db_text(&e)))?
    {
        let (channel, seq, trace, payload): (i32, i64, i64, &[u8]) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        w.write(channel as u32, seq as u64, trace as u64, payload)
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    w.finish().map_err(|e| e.to_string())?;
    Ok(n)
}

/// A temporary export of a sink's table ([`export_temp`]), removed when
/// dropped.
pub struct TempExport(std::path::PathBuf);

impl TempExport {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempExport {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The table named by the sink config file `cfg`, exported as a temporary
/// received file (what `verity-check --postgres` and `verity oracle
/// --postgres` read).
pub fn export_temp(cfg: &std::path::Path, mappings: &Mappings) -> Result<TempExport, String> {
    let cfg = SinkConfig::load(cfg)?;
    let table = table_of(&cfg, mappings)?;
    let mut db = connect(&cfg)?;
    let out = TempExport(std::env::temp_dir().join(format!(
        "verity-export-{}-{}.received",
        table.name,
        std::process::id()
    )));
    export(&mut db, &table.name, out.path())?;
    Ok(out)
}
