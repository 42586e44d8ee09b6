//! One outbound channel of a node as the runtime keeps it (DESIGN §3.1): the
//! connection the node opened to the consumer (the sink, or another node),
//! the log of every frame produced on it until the consumer ACKs it
//! ([`OutboundLog`], in `crate::storage`), and the frames produced but not
//! yet written, kept in memory. The sink and every peer get one each; they
//! differ only in the handshake (peers authenticate).
//!
//! What goes out, from which seq, and when it goes out again is the core's
//! decision ([`crate::core::OutChannel`]: the cursor, the window, resend on
//! RESUME, NACK and timeout); the path only carries out a
//! [`Transmit`]. Frames reach the consumer from memory: the frames the core
//! encoded for a batch are kept (taken, not copied) and, once released,
//! written to the socket straight from that buffer. The log is read only
//! for resends and for frames the memory copy could not hold; a frame the
//! consumer may have had before carries flag RESEND.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use std::path::Path;
use std::time::{Duration, Instant};
use verity_wire::frames::{frames, set_resend_flag};

use super::conn::{Conn, ConnState};
use super::error::WorkerError;
use super::link::LinkEnd;
use crate::core::{Out, Transmit};
use crate::log::{LogConfig, Recovery};
use crate::storage::{OutboundError, OutboundLog};

/// The outbound channel of outbound path `k` (0: the sink, `1 + j`: node `j`).
pub(super) fn out_of(k: usize) -> Out {
    match k {
        0 => Out::Sink,
        k => Out::Node(k as u32 - 1),
    }
}

/// The sessions' name ([`crate::core::ConnId`]) for the connection of
/// outbound path `k`, apart from every inbound slot's.
pub(super) fn out_conn(k: usize) -> crate::core::ConnId {
    OUT_CONN_BASE + k
}

/// Outbound paths' connection ids start here (inbound slots are below).
pub(super) const OUT_CONN_BASE: usize = 1 << 40;

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Retry interval of a path that has never connected (see `failed`).
pub(super) const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// How long after its first attempt a never-connected path retries every
/// [`BACKOFF_FIRST`].
pub(super) const FAST_RETRY_WINDOW: Duration = Duration::from_secs(2);

pub(super) struct OutPath {
    /// For messages: "sink" or "node 2".
    pub name: String,
    /// The peer node, or `None` for the sink.
    pub node: Option<u32>,
    pub addr: SocketAddr,
    pub conn: Option<Conn>,
    pub retry_at: Instant,
    pub backoff: Duration,
    /// Every frame produced on the channel until the consumer ACKs it.
    pub store: OutboundLog,
    pub connects: u64,
    /// When the path first dialed (see `failed`).
    pub first_attempt: Option<Instant>,
    /// The peer refused a handshake with an ERROR (see `failed`).
    pub refused: bool,
    /// Frames produced but not yet written, as the core encoded them: seqs
    /// `fresh_first..fresh_next`, back to back (at most a cap; the rest is
    /// read from the log).
    fresh: BytesMut,
    fresh_first: u64,
    fresh_next: u64,
    /// The consumer is a shard of this process: the in-process link to it,
    /// until the path "connects" over it.
    pub local: Option<LinkEnd>,
}

impl OutPath {
    /// Opens (recovering) the path's log `log_name` in `dir` and rebuilds
    /// the index of the frames it still holds.
    pub fn open(
        dir: &Path,
        log_name: &str,
        cfg: LogConfig,
        name: String,
        node: Option<u32>,
        addr: SocketAddr,
    ) -> Result<(OutPath, Recovery), WorkerError> {
        let (store, rec) =
            OutboundLog::open(dir, log_name, cfg).map_err(|e| worker_error(e, &name))?;
        Ok((
            OutPath {
                name,
                node,
                addr,
                conn: None,
                retry_at: Instant::now(),
                backoff: BACKOFF_MIN,
                store,
                connects: 0,
                first_attempt: None,
                refused: false,
                local: None,
                fresh: BytesMut::new(),
                fresh_first: 1,
                fresh_next: 1,
            },
            rec,
        ))
    }

    /// Logs a batch of frames with consecutive seqs `first..=last` as one
    /// record (frames already logged are verified instead:
    /// [`OutboundLog::log_frames`]).
    pub fn log_frames(
        &mut self,
        frames: &[u8],
        seqs: (u64, u64),
        clock_ns: u64,
    ) -> Result<(), WorkerError> {
        self.store
            .log_frames(frames, seqs, clock_ns)
            .map_err(|e| worker_error(e, &self.name))
    }

    /// The consumer ACKed every seq <= `acked`: drops what the log no
    /// longer needs.
    pub fn trim(&mut self, acked: u64) -> Result<(), WorkerError> {
        Ok(self.store.trim(acked)?)
    }

    /// A connection attempt failed: back off. Until the path has connected
    /// once, and for [`FAST_RETRY_WINDOW`] after its first attempt, every
    /// [`BACKOFF_FIRST`]: workers of a cluster start one after another, and
    /// a path that dialed a worker not yet up waited 50, then 100, 200 ms
    /// while its frames sat in the log and the consumer went on without
    /// them (seen in short chaos runs: a whole run took 45 ms). A peer
    /// that refused us (ERROR during the handshake: wrong secret, stale
    /// epoch) gets the full backoff at once.
    pub fn failed(&mut self) {
        let now = Instant::now();
        let first = *self.first_attempt.get_or_insert(now);
        if self.connects == 0 && !self.refused && now.duration_since(first) < FAST_RETRY_WINDOW {
            self.retry_at = now + BACKOFF_FIRST;
            return;
        }
        self.retry_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Keeps a batch's frames (just logged, seqs `first..=last`) in memory
    /// for the consumer, if they continue the frames kept there and fit in
    /// `cap` bytes; takes the buffer when nothing is kept (no copy).
    pub fn keep_fresh(&mut self, frames: &mut BytesMut, (first, last): (u64, u64), cap: usize) {
        if self.fresh.is_empty() {
            self.fresh.clear();
            std::mem::swap(&mut self.fresh, frames);
            self.fresh_first = first;
        } else if first == self.fresh_next && self.fresh.len() + frames.len() <= cap {
            self.fresh.extend_from_slice(frames);
        } else {
            // The consumer lags: these go out from the log.
            return;
        }
        self.fresh_next = last + 1;
    }

    /// Forgets the in-memory frames below `cursor` (sent, or ACKed).
    fn drop_fresh_below(&mut self, cursor: u64) {
        if self.fresh.is_empty() || cursor <= self.fresh_first {
            return;
        }
        if cursor >= self.fresh_next {
            self.fresh.clear();
            self.fresh_first = self.fresh_next;
            return;
        }
        let cut = frames(&self.fresh)
            .find(|f| f.seq >= cursor)
            .map_or(self.fresh.len(), |f| f.offset);
        self.fresh.advance(cut);
        self.fresh_first = cursor;
    }

    /// Writes what the core handed out (`t`: seqs `from..=to`, those up to
    /// `resend_through` flagged RESEND): resends, and frames the in-memory
    /// copy could not hold, from the log through the connection's buffer
    /// (up to `limit` bytes buffered), then fresh frames straight from
    /// memory. Returns the last seq written (`t.from - 1`: none) and, as
    /// `Err`, a lost connection.
    pub fn pump(
        &mut self,
        t: Transmit,
        limit: usize,
    ) -> Result<(u64, Result<(), std::io::Error>), WorkerError> {
        let mut cursor = t.from;
        match self.conn.as_ref() {
            Some(c) if c.state == ConnState::Ready => {}
            _ => return Ok((cursor - 1, Ok(()))),
        }
        if let Some(first) = self.store.first_seq() {
            // Everything below the first record kept was ACKed.
            cursor = cursor.max(first);
        }
        self.drop_fresh_below(cursor);
        if !self.fresh.is_empty() && self.fresh_first <= t.resend_through {
            // A predecessor may have sent these (recovery): they go out
            // from the log, flagged.
            self.fresh.clear();
            self.fresh_first = self.fresh_next;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok((cursor - 1, Ok(())));
        };
        // The log serves everything below the in-memory frames.
        let log_through = if self.fresh.is_empty() {
            t.to
        } else {
            t.to.min(self.fresh_first - 1)
        };
        if cursor <= log_through && conn.wbuf.len() < limit {
            if let Some(reader) = self.store.reader_from(cursor)? {
                'records: for rec in reader {
                    let rec = rec?;
                    for f in frames(rec.payload) {
                        if f.seq < cursor {
                            continue;
                        }
                        if f.seq > log_through || conn.wbuf.len() >= limit {
                            break 'records;
                        }
                        let from = conn.wbuf.len();
                        conn.wbuf.extend_from_slice(f.bytes);
                        if f.seq <= t.resend_through {
                            set_resend_flag(&mut conn.wbuf[from..]);
                        }
                        cursor = f.seq + 1;
                    }
                }
            }
        }
        if let Err(e) = conn.flush() {
            return Ok((cursor - 1, Err(e)));
        }
        if !conn.wbuf.is_empty()
            || self.fresh.is_empty()
            || cursor != self.fresh_first
            || self.fresh_first > t.to
        {
            return Ok((cursor - 1, Ok(())));
        }
        Ok(self.pump_fresh(t, cursor))
    }

    /// [`OutPath::pump`]'s second half: writes the fresh frames through
    /// `t.to` straight from memory, `cursor` being the first of them.
    /// Returns the last seq written and, as `Err`, a lost connection.
    fn pump_fresh(&mut self, t: Transmit, mut cursor: u64) -> (u64, Result<(), std::io::Error>) {
        let Some(conn) = self.conn.as_mut() else {
            return (cursor - 1, Ok(()));
        };
        // Fresh frames through `t.to`, straight from memory.
        let end = if t.to >= self.fresh_next - 1 {
            self.fresh.len()
        } else {
            frames(&self.fresh)
                .find(|f| f.seq > t.to)
                .map_or(self.fresh.len(), |f| f.offset)
        };
        let mut written = 0;
        let mut failed = None;
        while written < end {
            match conn.write_direct(&self.fresh[written..end]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if written > 0 {
            // Frames wholly or partly written leave `fresh`; the unwritten
            // rest of a partly written one goes first next time, from wbuf.
            let (boundary, next) = if written == self.fresh.len() {
                (written, self.fresh_next)
            } else {
                frames(&self.fresh[..end])
                    .find(|f| f.offset + f.stride >= written)
                    .map_or((end, t.to + 1), |f| (f.offset + f.stride, f.seq + 1))
            };
            conn.wbuf.extend_from_slice(&self.fresh[written..boundary]);
            self.fresh.advance(boundary);
            self.fresh_first = next;
            if self.fresh.is_empty() {
                self.fresh_first = self.fresh_next;
            }
            cursor = next;
        }
        (
            cursor - 1,
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            },
        )
    }
}

/// A storage error as the worker reports it (`consumer`: "sink", "node 2").
fn worker_error(e: OutboundError, consumer: &str) -> WorkerError {
    match e {
        OutboundError::Log(e) => WorkerError::Log(e),
        e @ OutboundError::EmptyRecord { .. } => WorkerError::Replay(e.to_string()),
        OutboundError::Mismatch { seq, .. } => WorkerError::Replay(format!(
            "replay produced a different frame for seq {seq} to {consumer} than its outbound log holds (non-deterministic app or wrong journal)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(dir: &Path) -> OutPath {
        let cfg = LogConfig {
            segment_size_bytes: 1 << 16,
            prepare_ahead: false,
            ..LogConfig::default()
        };
        let addr = "127.0.0.1:1".parse().unwrap();
        OutPath::open(dir, "outbound", cfg, "sink".into(), None, addr)
            .unwrap()
            .0
    }

    #[test]
    fn a_path_that_never_connected_retries_soon_then_backs_off_once_it_has() {
        let t = tempfile::tempdir().unwrap();
        let mut p = path(t.path());
        // Never connected: every BACKOFF_FIRST in its first 2 s (a peer
        // worker that starts after us is reached within ~10 ms).
        for _ in 0..10 {
            let before = Instant::now();
            p.failed();
            assert!(p.retry_at <= Instant::now() + BACKOFF_FIRST);
            assert!(p.retry_at >= before + BACKOFF_FIRST);
        }
        // A refusal (ERROR in the handshake) backs off at once.
        p.refused = true;
        let before = Instant::now();
        p.failed();
        assert!(p.retry_at >= before + BACKOFF_MIN);
        p.refused = false;
        p.backoff = BACKOFF_MIN;
        // So does a path past its fast-retry window.
        p.first_attempt = Some(Instant::now() - FAST_RETRY_WINDOW);
        let before = Instant::now();
        p.failed();
        assert!(p.retry_at >= before + BACKOFF_MIN);
        // Once it has connected, failures double the wait up to the cap.
        p.connects = 1;
        p.backoff = BACKOFF_MIN;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let before = Instant::now();
            p.failed();
            waits.push(p.retry_at.duration_since(before));
        }
        assert!(waits[0] >= BACKOFF_MIN);
        assert!(waits[1] >= BACKOFF_MIN * 2);
        assert!(waits
            .iter()
            .all(|w| *w <= BACKOFF_MAX + Duration::from_millis(50)));
        assert!(*waits.last().unwrap() >= BACKOFF_MAX);
    }
}
