//! One outbound channel's log (DESIGN §3.1): every frame the node produced
//! on the channel (to the sink: `outbound/`; to node N: `forward-N/`) until
//! the consumer ACKs it, with an index of the records still kept.
//!
//! Each record ([`RecordKind::Output`]) is a run of DATA frames with
//! consecutive seqs, as the core encoded one batch. At start the index is
//! rebuilt from the log; frames produced again by journal replay are
//! verified bit for bit against the log instead of being logged twice (the
//! app must be deterministic). The runtime's outbound path
//! (`runtime/outpath.rs`) sends from it: the connection, cursor and pump
//! are the runtime's.

use std::collections::VecDeque;
use std::path::Path;

use verity_wire::frames::frames;

use super::records::RecordKind;
use crate::log::{Log, LogConfig, LogError, Reader, Recovery};

/// One record of the log not yet wholly ACKed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Seq of the record's first frame.
    pub first_seq: u64,
    /// Seq of its last frame.
    pub last_seq: u64,
    /// Its log position.
    pub position: u64,
}

/// Why an outbound log cannot be opened or replayed into.
#[derive(Debug)]
pub enum OutboundError {
    Log(LogError),
    /// A record of log `log` at `position` holds no frame.
    EmptyRecord {
        log: String,
        position: u64,
    },
    /// Replay produced frame `seq` with other bytes than log `log` holds
    /// (a non-deterministic app, or the wrong journal).
    Mismatch {
        log: String,
        seq: u64,
    },
}

impl core::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OutboundError::Log(e) => write!(f, "{e}"),
            OutboundError::EmptyRecord { log, position } => {
                write!(f, "{log} record at {position} holds no frame")
            }
            OutboundError::Mismatch { log, seq } => write!(
                f,
                "replay produced a different frame for seq {seq} than {log} holds (non-deterministic app or wrong journal)"
            ),
        }
    }
}

impl std::error::Error for OutboundError {}

impl From<LogError> for OutboundError {
    fn from(e: LogError) -> Self {
        OutboundError::Log(e)
    }
}

/// An outbound log and the index of its records still needed.
pub struct OutboundLog {
    name: String,
    log: Log,
    /// Every record not yet wholly ACKed, in seq (and log) order.
    index: VecDeque<IndexEntry>,
    /// Highest seq in the log at start: frames up to it that are produced
    /// again (replay, or inputs resent after journal damage) are checked
    /// against the log instead of being logged twice.
    logged_through: u64,
}

impl OutboundLog {
    /// Opens (recovering) the log `name` in `dir` and rebuilds the index of
    /// the frames it still holds.
    pub fn open(
        dir: &Path,
        name: &str,
        cfg: LogConfig,
    ) -> Result<(OutboundLog, Recovery), OutboundError> {
        let (log, rec) = Log::open(dir, name, cfg)?;
        let mut index = VecDeque::new();
        let mut last_logged = 0;
        for r in log.reader_at(log.first_position())? {
            let r = r?;
            let mut seqs = frames(r.payload).map(|f| f.seq);
            let (Some(first), last) = (seqs.next(), seqs.last()) else {
                return Err(OutboundError::EmptyRecord {
                    log: name.to_owned(),
                    position: r.position,
                });
            };
            let last = last.unwrap_or(first);
            index.push_back(IndexEntry {
                first_seq: first,
                last_seq: last,
                position: r.position,
            });
            last_logged = last;
        }
        Ok((
            OutboundLog {
                name: name.to_owned(),
                log,
                index,
                logged_through: last_logged,
            },
            rec,
        ))
    }

    /// The log's directory name (`outbound`, `forward-N`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log itself (durability: `commit`, `durable_mark`).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Highest seq the log held at start (0: none).
    pub fn logged_through(&self) -> u64 {
        self.logged_through
    }

    /// Seq of the first frame still kept: everything below it was ACKed.
    pub fn first_seq(&self) -> Option<u64> {
        self.index.front().map(|e| e.first_seq)
    }

    /// Records not yet wholly ACKed.
    pub fn unacked_records(&self) -> usize {
        self.index.len()
    }

    /// Logs a batch of frames with consecutive seqs `first..=last` as one
    /// record; those with seq <= [`OutboundLog::logged_through`] are in the
    /// log already and are verified bit for bit (replay only: live, every
    /// frame is new and nothing is walked).
    pub fn log_frames(
        &mut self,
        run: &[u8],
        (first, last): (u64, u64),
        clock_ns: u64,
    ) -> Result<(), OutboundError> {
        if first > self.logged_through {
            if !run.is_empty() {
                let p = self.log.append(RecordKind::Output.code(), clock_ns, run)?;
                self.index.push_back(IndexEntry {
                    first_seq: first,
                    last_seq: last,
                    position: p,
                });
            }
            return Ok(());
        }
        let mut new_from = None;
        for f in frames(run) {
            if f.seq > self.logged_through {
                new_from = Some(f.offset);
                break;
            }
            if let Some(logged) = self.logged_frame(f.seq)? {
                if logged != f.bytes {
                    return Err(OutboundError::Mismatch {
                        log: self.name.clone(),
                        seq: f.seq,
                    });
                }
            }
        }
        if let Some(from) = new_from {
            let rest = &run[from..];
            let first = frames(rest).next().map_or(0, |f| f.seq);
            let p = self.log.append(RecordKind::Output.code(), clock_ns, rest)?;
            self.index.push_back(IndexEntry {
                first_seq: first,
                last_seq: last.max(first),
                position: p,
            });
        }
        Ok(())
    }

    /// The logged bytes of frame `seq`, if it is still in the log.
    pub fn logged_frame(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        let i = self.index.partition_point(|e| e.last_seq < seq);
        let Some(e) = self.index.get(i) else {
            return Ok(None);
        };
        if seq < e.first_seq {
            return Ok(None);
        }
        let Some(rec) = self.log.reader_at(e.position)?.next().transpose()? else {
            return Ok(None);
        };
        Ok(frames(rec.payload)
            .find(|f| f.seq == seq)
            .map(|f| f.bytes.to_vec()))
    }

    /// A reader from the record that holds frame `seq` (or, if the log
    /// holds none, the first record after it) to the log's end; `None`
    /// when no kept record reaches `seq`.
    pub fn reader_from(&self, seq: u64) -> Result<Option<Reader<'_>>, LogError> {
        let i = self.index.partition_point(|e| e.last_seq < seq);
        match self.index.get(i) {
            None => Ok(None),
            Some(e) => Ok(Some(self.log.reader_at(e.position)?)),
        }
    }

    /// Drops wholly ACKed records (every seq <= `acked`) from the index and
    /// whole log segments below the first record still needed.
    pub fn trim(&mut self, acked: u64) -> Result<(), LogError> {
        let mut dropped = false;
        while let Some(e) = self.index.front() {
            if e.last_seq > acked {
                break;
            }
            self.index.pop_front();
            dropped = true;
        }
        if dropped {
            let below = self
                .index
                .front()
                .map_or(self.log.end_position(), |e| e.position);
            self.log.drop_below(below)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use verity_wire::Encoder;

    fn cfg() -> LogConfig {
        LogConfig {
            segment_size_bytes: 1 << 16,
            prepare_ahead: false,
            ..LogConfig::default()
        }
    }

    /// DATA frames `seqs` on channel 1000, payload `tag` and the seq.
    fn run(seqs: std::ops::RangeInclusive<u64>, tag: u8) -> BytesMut {
        let mut b = BytesMut::new();
        for s in seqs {
            Encoder::default()
                .data(&mut b, 1000, s, s, false, &[tag, s as u8])
                .unwrap();
        }
        b
    }

    #[test]
    fn a_reopened_log_rebuilds_its_index_and_verifies_replayed_frames() {
        let t = tempfile::tempdir().unwrap();
        {
            let (mut o, _) = OutboundLog::open(t.path(), "outbound", cfg()).unwrap();
            assert_eq!((o.first_seq(), o.logged_through()), (None, 0));
            o.log_frames(&run(1..=3, 7), (1, 3), 11).unwrap();
            o.log_frames(&run(4..=5, 7), (4, 5), 12).unwrap();
            assert_eq!(o.unacked_records(), 2);
        }
        let (mut o, _) = OutboundLog::open(t.path(), "outbound", cfg()).unwrap();
        assert_eq!(o.first_seq(), Some(1));
        assert_eq!(o.logged_through(), 5);
        assert_eq!(o.unacked_records(), 2);
        let want = run(4..=4, 7);
        assert_eq!(o.logged_frame(4).unwrap().as_deref(), Some(&want[..]));
        assert_eq!(o.logged_frame(6).unwrap(), None);
        // Replay: the same frames again are verified, not logged twice; the
        // new tail of a batch is logged.
        o.log_frames(&run(1..=3, 7), (1, 3), 11).unwrap();
        o.log_frames(&run(4..=6, 7), (4, 6), 12).unwrap();
        assert_eq!(o.unacked_records(), 3);
        assert_eq!(
            o.logged_frame(6).unwrap().as_deref(),
            Some(&run(6..=6, 7)[..])
        );
        // Other bytes for a logged seq are a mismatch.
        let e = o.log_frames(&run(2..=2, 8), (2, 2), 11).err().unwrap();
        assert!(matches!(e, OutboundError::Mismatch { seq: 2, .. }), "{e}");
    }

    #[test]
    fn trim_drops_wholly_acked_records_and_reader_from_finds_a_seq() {
        let t = tempfile::tempdir().unwrap();
        let (mut o, _) = OutboundLog::open(t.path(), "forward-1", cfg()).unwrap();
        for k in 0..4u64 {
            let (a, b) = (1 + 10 * k, 10 + 10 * k);
            o.log_frames(&run(a..=b, 1), (a, b), 0).unwrap();
        }
        let seq_at = |o: &OutboundLog, s: u64| {
            o.reader_from(s)
                .unwrap()
                .and_then(|mut r| r.next())
                .map(|r| frames(r.unwrap().payload).next().unwrap().seq)
        };
        assert_eq!(seq_at(&o, 15), Some(11));
        assert_eq!(seq_at(&o, 41), None);
        o.trim(15).unwrap();
        assert_eq!(o.first_seq(), Some(11));
        o.trim(20).unwrap();
        assert_eq!(o.first_seq(), Some(21));
        assert_eq!(o.unacked_records(), 2);
        o.trim(40).unwrap();
        assert_eq!((o.first_seq(), o.unacked_records()), (None, 0));
    }

    #[test]
    fn a_record_without_frames_is_refused_at_open() {
        let t = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Log::open(t.path(), "outbound", cfg()).unwrap();
            log.append(RecordKind::Output.code(), 0, b"not frames")
                .unwrap();
        }
        let e = OutboundLog::open(t.path(), "outbound", cfg())
            .err()
            .unwrap();
        assert!(
            matches!(e, OutboundError::EmptyRecord { position: 0, .. }),
            "{e}"
        );
    }
}
