//! One outbound channel of a node as the runtime keeps it (DESIGN §3.1): the
//! connection the node opened to the consumer (the sink, or another node),
//! the log of every frame produced on it until the consumer ACKs it, and the
//! cursor of the next frame to write. The sink and every peer get one each;
//! they differ only in the handshake (peers authenticate).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::link::LinkEnd;
use super::worker::{frames_in, Conn, ConnState, WorkerError, KIND_OUTPUT};
use crate::log::{Log, LogConfig, Recovery};

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) struct OutPath {
    /// For messages: "sink" or "node 2".
    pub name: String,
    /// The peer node, or `None` for the sink.
    pub node: Option<u32>,
    pub addr: SocketAddr,
    pub conn: Option<Conn>,
    pub retry_at: Instant,
    pub backoff: Duration,
    pub log: Log,
    /// (first seq, last seq, log position) of every record (a run of
    /// frames) not yet wholly ACKed.
    pub index: VecDeque<(u64, u64, u64)>,
    /// Next seq to write.
    pub cursor: u64,
    /// Highest seq in the log at start: frames up to it that are produced
    /// again (replay, or inputs resent after journal damage) are checked
    /// against the log instead of being logged twice.
    pub logged_through: u64,
    /// The challenge we sent in our HELLO on the current connection.
    pub challenge: [u8; 32],
    pub connects: u64,
    /// When the consumer last ACKed something new (timeout resend).
    pub progress_at: Instant,
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
        let (log, rec) = Log::open(dir, log_name, cfg)?;
        let mut index = VecDeque::new();
        let mut last_logged = 0;
        for r in log.reader_at(log.first_position())? {
            let r = r?;
            let mut frames = frames_in(r.payload).map(|(seq, _, _)| seq);
            let (Some(first), last) = (frames.next(), frames.last()) else {
                return Err(WorkerError::Replay(format!(
                    "{log_name} record at {} holds no frame",
                    r.position
                )));
            };
            let last = last.unwrap_or(first);
            index.push_back((first, last, r.position));
            last_logged = last;
        }
        Ok((
            OutPath {
                name,
                node,
                addr,
                conn: None,
                retry_at: Instant::now(),
                backoff: BACKOFF_MIN,
                log,
                index,
                cursor: 1,
                logged_through: last_logged,
                challenge: [0; 32],
                connects: 0,
                progress_at: Instant::now(),
                local: None,
            },
            rec,
        ))
    }

    /// Logs a batch of frames with consecutive seqs `first..=last` as one
    /// record; those with seq <= `logged_through` are in the log already and
    /// are verified bit for bit (replay only: live, every frame is new and
    /// nothing is walked).
    pub fn log_frames(&mut self, frames: &[u8], (first, last): (u64, u64)) -> Result<(), WorkerError> {
        if first > self.logged_through {
            if !frames.is_empty() {
                let p = self.log.append(KIND_OUTPUT, 0, frames)?;
                self.index.push_back((first, last, p));
            }
            return Ok(());
        }
        let mut new_from = None;
        for (seq, at, stride) in frames_in(frames) {
            if seq > self.logged_through {
                new_from = Some(at);
                break;
            }
            if let Some(logged) = self.logged_frame(seq)? {
                if logged != frames[at..at + stride] {
                    return Err(WorkerError::Replay(format!(
                        "replay produced a different frame for seq {seq} to {} than its outbound log holds (non-deterministic app or wrong journal)",
                        self.name
                    )));
                }
            }
        }
        if let Some(from) = new_from {
            let run = &frames[from..];
            let first = frames_in(run).next().map_or(0, |(seq, _, _)| seq);
            let p = self.log.append(KIND_OUTPUT, 0, run)?;
            self.index.push_back((first, last.max(first), p));
        }
        Ok(())
    }

    /// The logged bytes of frame `seq`, if it is still in the log.
    fn logged_frame(&self, seq: u64) -> Result<Option<Vec<u8>>, WorkerError> {
        let i = self.index.partition_point(|&(_, last, _)| last < seq);
        let Some(&(first, _, pos)) = self.index.get(i) else {
            return Ok(None);
        };
        if seq < first {
            return Ok(None);
        }
        let Some(rec) = self.log.reader_at(pos)?.next().transpose()? else {
            return Ok(None);
        };
        Ok(frames_in(rec.payload)
            .find(|&(s, _, _)| s == seq)
            .map(|(_, at, stride)| rec.payload[at..at + stride].to_vec()))
    }

    /// Drops wholly ACKed records from the index and whole log segments
    /// below the first record still needed.
    pub fn trim(&mut self, acked: u64) -> Result<(), WorkerError> {
        let mut dropped = false;
        while let Some(&(_, last, _)) = self.index.front() {
            if last > acked {
                break;
            }
            self.index.pop_front();
            dropped = true;
        }
        if dropped {
            self.progress_at = Instant::now();
            let below = self
                .index
                .front()
                .map_or(self.log.end_position(), |&(_, _, p)| p);
            self.log.drop_below(below)?;
        }
        Ok(())
    }

    /// A connection attempt failed: back off.
    pub fn failed(&mut self) {
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Copies released, unsent frames from the log to the connection's
    /// buffer (up to `limit` bytes buffered). `released`: the core's output
    /// commit point on this channel.
    pub fn fill(&mut self, released: u64, limit: usize) -> Result<(), WorkerError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if conn.state != ConnState::Ready {
            return Ok(());
        }
        if let Some(&(first, _, _)) = self.index.front() {
            // Everything below the first record kept was ACKed.
            self.cursor = self.cursor.max(first);
        }
        if self.cursor <= released && conn.wbuf.len() < limit {
            let cursor = self.cursor;
            let i = self.index.partition_point(|&(_, last, _)| last < cursor);
            if let Some(&(_, _, pos)) = self.index.get(i) {
                'records: for rec in self.log.reader_at(pos)? {
                    let rec = rec?;
                    for (seq, at, stride) in frames_in(rec.payload) {
                        if seq < self.cursor {
                            continue;
                        }
                        if seq > released || conn.wbuf.len() >= limit {
                            break 'records;
                        }
                        conn.wbuf.extend_from_slice(&rec.payload[at..at + stride]);
                        self.cursor = seq + 1;
                    }
                }
            }
        }
        Ok(())
    }
}
