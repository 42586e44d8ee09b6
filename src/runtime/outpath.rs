//! One outbound channel of a node as the runtime keeps it (DESIGN §3.1): the
//! connection the node opened to the consumer (the sink, or another node),
//! the log of every frame produced on it until the consumer ACKs it
//! ([`OutboundLog`], in `crate::storage`), and the cursor of the next frame
//! to write. The sink and every peer get one each; they differ only in the
//! handshake (peers authenticate).
//!
//! Frames reach the consumer from memory: the frames the core encoded for a
//! batch are kept (taken, not copied) and, once released, written to the
//! socket straight from that buffer. The log is read only for resends: after
//! RESUME, on a NACK, and when the consumer has had unACKed frames with no
//! ACK progress for `limits.resend_timeout_ms`; a frame written again
//! carries flag RESEND.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use std::path::Path;
use std::time::{Duration, Instant};
use verity_wire::frames::{frames, set_resend_flag};

use super::link::LinkEnd;
use super::worker::{Conn, ConnState, WorkerError};
use crate::log::{LogConfig, Recovery};
use crate::storage::{OutboundError, OutboundLog};

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
    /// Next seq to write.
    pub cursor: u64,
    pub connects: u64,
    /// Since when the consumer has had unACKed frames without ACK progress
    /// (`None`: nothing outstanding); see [`OutPath::resend_on_timeout`].
    pub ack_wait_since: Option<Instant>,
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
    /// Highest seq written on a connection by this process (the log's last
    /// seq at start, which may have been sent before): a frame up to it
    /// written again carries flag RESEND.
    sent_high: u64,
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
        let last_logged = store.logged_through();
        Ok((
            OutPath {
                name,
                node,
                addr,
                conn: None,
                retry_at: Instant::now(),
                backoff: BACKOFF_MIN,
                store,
                cursor: 1,
                connects: 0,
                ack_wait_since: None,
                first_attempt: None,
                refused: false,
                local: None,
                fresh: BytesMut::new(),
                fresh_first: 1,
                fresh_next: 1,
                sent_high: last_logged,
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

    /// The consumer asked for everything from `from` again (a NACK the
    /// core checked: never below what it ACKed).
    pub fn nack(&mut self, from: u64) {
        self.cursor = self.cursor.min(from);
        self.ack_wait_since = None;
    }

    /// DESIGN §3.1: the producer resends "on NACK and on timeout". With
    /// frames written but not ACKed and no ACK progress for `timeout`,
    /// everything from the first unACKed seq goes out again (from the log,
    /// flag RESEND).
    pub fn resend_on_timeout(&mut self, acked: u64, timeout: Duration) {
        let outstanding = self
            .conn
            .as_ref()
            .is_some_and(|c| c.state == ConnState::Ready)
            && self.cursor > acked + 1;
        if !outstanding {
            self.ack_wait_since = None;
            return;
        }
        let now = Instant::now();
        let Some(since) = self.ack_wait_since else {
            self.ack_wait_since = Some(now);
            return;
        };
        if now.duration_since(since) < timeout {
            return;
        }
        if let Some(c) = self.conn.as_ref() {
            eprintln!(
                "verity: {} {}: no ACK for {} ms with seqs {}..{} unACKed; resending from {}",
                self.name,
                c.peer,
                timeout.as_millis(),
                acked + 1,
                self.cursor - 1,
                acked + 1,
            );
        }
        self.cursor = acked + 1;
        self.ack_wait_since = Some(now);
    }

    /// Writes released, unsent frames: resends (and frames the in-memory
    /// copy could not hold) from the log through the connection's buffer
    /// (up to `limit` bytes buffered), then fresh frames straight from
    /// memory. `released`: the core's output commit point on this channel.
    /// `Err`: the connection is lost.
    pub fn pump(
        &mut self,
        released: u64,
        limit: usize,
    ) -> Result<Result<(), std::io::Error>, WorkerError> {
        match self.conn.as_ref() {
            Some(c) if c.state == ConnState::Ready => {}
            _ => return Ok(Ok(())),
        }
        if let Some(first) = self.store.first_seq() {
            // Everything below the first record kept was ACKed.
            self.cursor = self.cursor.max(first);
        }
        self.drop_fresh_below(self.cursor);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Ok(()));
        };
        // The log serves everything below the in-memory frames.
        let log_through = if self.fresh.is_empty() {
            released
        } else {
            released.min(self.fresh_first - 1)
        };
        if self.cursor <= log_through && conn.wbuf.len() < limit {
            if let Some(reader) = self.store.reader_from(self.cursor)? {
                'records: for rec in reader {
                    let rec = rec?;
                    for f in frames(rec.payload) {
                        if f.seq < self.cursor {
                            continue;
                        }
                        if f.seq > log_through || conn.wbuf.len() >= limit {
                            break 'records;
                        }
                        let from = conn.wbuf.len();
                        conn.wbuf.extend_from_slice(f.bytes);
                        if f.seq <= self.sent_high {
                            set_resend_flag(&mut conn.wbuf[from..]);
                        }
                        self.cursor = f.seq + 1;
                    }
                }
            }
            self.sent_high = self.sent_high.max(self.cursor - 1);
        }
        if let Err(e) = conn.flush() {
            return Ok(Err(e));
        }
        if !conn.wbuf.is_empty()
            || self.fresh.is_empty()
            || self.cursor != self.fresh_first
            || self.fresh_first > released
        {
            return Ok(Ok(()));
        }
        // Fresh frames through `released`, straight from memory.
        let end = if released >= self.fresh_next - 1 {
            self.fresh.len()
        } else {
            frames(&self.fresh)
                .find(|f| f.seq > released)
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
                    .map_or((end, released + 1), |f| (f.offset + f.stride, f.seq + 1))
            };
            conn.wbuf.extend_from_slice(&self.fresh[written..boundary]);
            self.fresh.advance(boundary);
            self.fresh_first = next;
            if self.fresh.is_empty() {
                self.fresh_first = self.fresh_next;
            }
            self.cursor = next;
            self.sent_high = self.sent_high.max(next - 1);
        }
        Ok(match failed {
            Some(e) => Err(e),
            None => Ok(()),
        })
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
