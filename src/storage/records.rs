//! What the node's logs hold: the record kinds and their payloads.
//!
//! | log | record kind | payload |
//! |-----|-------------|---------|
//! | `journal/` | 1 `INPUT` | DATA frames as they arrived (each header + payload + padding), one or more; the record's timestamp is the clock reading at acceptance |
//! | `journal/` | 4 `SEAL` | an audit seal ([`super::audit`], `audit = true` only) |
//! | `outbound/` | 2 `OUTPUT` | a run of output DATA frames to the sink, as sent (epoch 0) |
//! | `forward-N/` | 2 `OUTPUT` | a run of DATA frames forwarded to node N (cluster only) |
//! | `dead-letters/` | 3 `DEAD_LETTER` | a [`DeadLetterRecord`] (below) |
//!
//! `INPUT` and `OUTPUT` payloads are runs of whole wire frames back to back,
//! read with [`verity_wire::frames::frames`] (the record's CRC covers
//! them). Where each log lives in the
//! data directory: [`super::datadir`].
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

use std::borrow::Cow;

use crate::core::DeadLetter;

/// The kind of a log record (the `kind` field of `crate::log`'s record
/// header). The values are on disk: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RecordKind {
    /// Journal: DATA frames the node accepted.
    Input = 1,
    /// Outbound and forwarding logs: a run of DATA frames produced.
    Output = 2,
    /// Dead-letter log: one rejected input ([`DeadLetterRecord`]).
    DeadLetter = 3,
    /// Journal: an audit seal ([`super::audit::Seal`]).
    Seal = 4,
}

impl RecordKind {
    pub const ALL: [RecordKind; 4] = [
        RecordKind::Input,
        RecordKind::Output,
        RecordKind::DeadLetter,
        RecordKind::Seal,
    ];

    /// The value a log record carries.
    #[inline]
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The kind of a record's `kind` value; `None` for one this build does
    /// not write.
    #[inline]
    pub fn from_code(code: u32) -> Option<RecordKind> {
        Some(match code {
            1 => RecordKind::Input,
            2 => RecordKind::Output,
            3 => RecordKind::DeadLetter,
            4 => RecordKind::Seal,
            _ => return None,
        })
    }

    /// The name `verity-logdump` prints.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Input => "input",
            RecordKind::Output => "output",
            RecordKind::DeadLetter => "dead-letter",
            RecordKind::Seal => "seal",
        }
    }
}

/// A dead-letter record's payload (the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterRecord<'a> {
    pub journal_index: u64,
    pub channel: u32,
    pub seq: u64,
    pub trace_id: u64,
    /// The app's reason, UTF-8 as written (read back with
    /// [`DeadLetterRecord::reason_text`]).
    pub reason: &'a [u8],
}

impl<'a> DeadLetterRecord<'a> {
    /// Bytes before the reason.
    pub const FIXED_BYTES: usize = 32;

    /// The record of the core's dead letter `d`.
    pub fn of(d: &DeadLetter) -> DeadLetterRecord<'static> {
        DeadLetterRecord {
            journal_index: d.journal_index,
            channel: d.channel,
            seq: d.seq,
            trace_id: d.trace_id,
            reason: d.reason.as_bytes(),
        }
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(Self::FIXED_BYTES + self.reason.len());
        out.extend_from_slice(&self.journal_index.to_le_bytes());
        out.extend_from_slice(&self.channel.to_le_bytes());
        // The reason is the app's short text; a log record is far below 4 GiB.
        out.extend_from_slice(&(self.reason.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.trace_id.to_le_bytes());
        out.extend_from_slice(self.reason);
    }

    /// Reads a payload; `None` if it is shorter than its fields and the
    /// reason length it gives.
    pub fn decode(p: &'a [u8]) -> Option<DeadLetterRecord<'a>> {
        let u64_at = |at: usize| {
            p.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let u32_at = |at: usize| {
            p.get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let len = u32_at(12)? as usize;
        Some(DeadLetterRecord {
            journal_index: u64_at(0)?,
            channel: u32_at(8)?,
            seq: u64_at(16)?,
            trace_id: u64_at(24)?,
            reason: p.get(Self::FIXED_BYTES..Self::FIXED_BYTES.checked_add(len)?)?,
        })
    }

    /// The reason as text (invalid UTF-8 replaced).
    pub fn reason_text(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kinds_keep_their_on_disk_values() {
        let codes: Vec<u32> = RecordKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4]);
        for k in RecordKind::ALL {
            assert_eq!(RecordKind::from_code(k.code()), Some(k));
        }
        assert_eq!(RecordKind::from_code(0), None);
        assert_eq!(RecordKind::from_code(5), None);
    }

    #[test]
    fn a_dead_letter_round_trips_at_the_byte_table_offsets() {
        let d = DeadLetter {
            journal_index: 0x0102_0304_0506_0708,
            channel: 7,
            seq: 42,
            trace_id: 1 << 40 | 42,
            reason: "NBBO price is not finite",
        };
        let mut p = Vec::new();
        DeadLetterRecord::of(&d).encode(&mut p);
        assert_eq!(p.len(), 32 + d.reason.len());
        assert_eq!(p[0..8], d.journal_index.to_le_bytes());
        assert_eq!(p[8..12], 7u32.to_le_bytes());
        assert_eq!(p[12..16], (d.reason.len() as u32).to_le_bytes());
        assert_eq!(p[16..24], 42u64.to_le_bytes());
        assert_eq!(p[24..32], d.trace_id.to_le_bytes());
        assert_eq!(&p[32..], d.reason.as_bytes());
        let r = DeadLetterRecord::decode(&p).unwrap();
        assert_eq!(r, DeadLetterRecord::of(&d));
        assert_eq!(r.reason_text(), d.reason);
    }

    #[test]
    fn a_short_dead_letter_payload_does_not_decode() {
        let d = DeadLetter {
            journal_index: 1,
            channel: 2,
            seq: 3,
            trace_id: 4,
            reason: "why",
        };
        let mut p = Vec::new();
        DeadLetterRecord::of(&d).encode(&mut p);
        for cut in 0..p.len() {
            assert_eq!(DeadLetterRecord::decode(&p[..cut]), None, "cut {cut}");
        }
        // A reason length past any payload.
        p[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(DeadLetterRecord::decode(&p), None);
    }
}
