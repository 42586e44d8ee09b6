//! Reading records in place: `Reader` (a bounded scan from a position) and
//! `Tailer` (a cursor that follows the log as it grows).

use super::error::LogError;
use super::format::{self, RecordFault};
use super::Log;

/// A record borrowed from the mapping. Its CRC was verified when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub position: u64,
    pub kind: u32,
    pub timestamp: u64,
    pub payload: &'a [u8],
    next_position: u64,
}

impl<'a> Record<'a> {
    /// Position of the record that follows this one (if any is appended).
    pub fn next_position(&self) -> u64 {
        self.next_position
    }
}

impl Log {
    /// Reads the record at `position`, skipping to the next segment when
    /// `position` is past the last record of a sealed segment. `Ok(None)` at
    /// `end`.
    pub(crate) fn read_step(
        &self,
        position: u64,
        end: u64,
    ) -> Result<Option<Record<'_>>, LogError> {
        let mut position = position;
        // At most one hop to the next segment, then a record or an error.
        for _ in 0..2 {
            if position >= end {
                return Ok(None);
            }
            let index = self.segment_index(position)?;
            let segment = &self.segments[index];
            let offset = position - segment.base;
            assert!(offset <= segment.data_bytes);
            match format::parse_record(&segment.data()[offset as usize..], position) {
                Ok(parsed) => {
                    return Ok(Some(Record {
                        position,
                        kind: parsed.kind,
                        timestamp: parsed.timestamp,
                        payload: parsed.payload,
                        next_position: position + parsed.span_bytes,
                    }))
                }
                Err(RecordFault::Empty) | Err(RecordFault::NoRoom)
                    if index + 1 < self.segments.len() =>
                {
                    position = self.segments[index + 1].base;
                }
                Err(fault) => {
                    return Err(LogError::InvalidRecord {
                        path: segment.path.clone(),
                        offset: segment.file_offset(position),
                        position,
                        reason: fault.describe(),
                    })
                }
            }
        }
        // Two hops in a row means an empty sealed segment, which rolling
        // never produces.
        let index = self.segment_index(position)?;
        Err(LogError::InvalidRecord {
            path: self.segments[index].path.clone(),
            offset: self.segments[index].file_offset(position),
            position,
            reason: "sealed segment holds no record",
        })
    }

    fn segment_index(&self, position: u64) -> Result<usize, LogError> {
        let after = self.segments.partition_point(|s| s.base <= position);
        if after == 0 || position > self.end {
            return Err(LogError::PositionOutOfRange {
                position,
                first: self.first_position(),
                end: self.end,
            });
        }
        Ok(after - 1)
    }
}

/// Iterates the records from a position up to the end of the log as it was
/// when the reader was made. Stops after the first error.
pub struct Reader<'a> {
    log: &'a Log,
    position: u64,
    end: u64,
    failed: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(log: &'a Log, position: u64) -> Reader<'a> {
        Reader {
            log,
            position,
            end: log.end_position(),
            failed: false,
        }
    }

    /// Position of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.log.read_step(self.position, self.end) {
            Ok(Some(record)) => {
                assert!(record.next_position > self.position);
                self.position = record.next_position;
                Some(Ok(record))
            }
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// A cursor that follows the log: `next` returns `Ok(None)` when caught up
/// and picks up records appended later. It holds no borrow, so the owner can
/// append and tail in the same loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tailer {
    position: u64,
}

impl Tailer {
    pub fn new(position: u64) -> Tailer {
        Tailer { position }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next record, or `Ok(None)` if the log has nothing past the cursor
    /// yet. On error the cursor stays where it was.
    pub fn next<'a>(&mut self, log: &'a Log) -> Result<Option<Record<'a>>, LogError> {
        let record = log.read_step(self.position, log.end_position())?;
        if let Some(record) = &record {
            assert!(record.next_position > self.position);
            self.position = record.next_position;
        }
        Ok(record)
    }
}
