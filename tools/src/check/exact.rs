//! Matching for apps whose outputs are fully derivable from the inputs
//! (doubler, word-count, sequence-window): every expected output has one exact
//! payload, a key, and a position in input order.

use std::collections::HashMap;

use super::{CheckReport, Class, Received};
use crate::formats::{show_trace_id, split_trace_id, FormatError, ReceivedRecord};

/// Expected outputs, grouped per input seq (compressed rows: outputs of input
/// seq `s` are `outs[starts[s-1]..starts[s]]`).
pub(crate) struct Expected {
    /// The source channel whose trace ids these outputs carry.
    pub source_channel: u64,
    starts: Vec<usize>,
    outs: Vec<Out>,
    bytes: Vec<u8>,
}

struct Out {
    start: usize,
    len: usize,
    key: u64,
}

impl Expected {
    pub fn new(source_channel: u32) -> Expected {
        Expected {
            source_channel: source_channel as u64,
            starts: vec![0],
            outs: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Adds an output of the current input (the inputs are ended by `end_input`).
    pub fn push(&mut self, key: u64, payload: &[u8]) {
        self.outs.push(Out {
            start: self.bytes.len(),
            len: payload.len(),
            key,
        });
        self.bytes.extend_from_slice(payload);
    }

    /// Closes the current input (seq = number of closed inputs).
    pub fn end_input(&mut self) {
        self.starts.push(self.outs.len());
    }

    fn payload(&self, j: usize) -> &[u8] {
        let o = &self.outs[j];
        &self.bytes[o.start..o.start + o.len]
    }

    /// Outputs of input `seq`, as a range of output indexes; `None` when no
    /// input has that seq.
    fn range(&self, seq: u64) -> Option<std::ops::Range<usize>> {
        let inputs = (self.starts.len() - 1) as u64;
        if seq == 0 || seq > inputs {
            return None;
        }
        let s = seq as usize;
        Some(self.starts[s - 1]..self.starts[s])
    }

    pub fn len(&self) -> usize {
        self.outs.len()
    }
}

/// Classifies `records` (those with `include[i]`) against `expected`.
pub(crate) fn check(
    expected: &Expected,
    received: &mut Received,
    report: &mut CheckReport,
    describe: fn(&[u8]) -> String,
) -> Result<(), FormatError> {
    report.expected = expected.len() as u64;
    let mut matched = vec![false; expected.len()];
    // Per key: output index of the previous record of that key, in arrival order.
    let mut last_of_key: HashMap<u64, usize> = HashMap::new();
    let mut pending: Vec<(ReceivedRecord, std::ops::Range<usize>)> = Vec::new();
    while let Some(r) = received.next(report)? {
        let (ch, seq) = split_trace_id(r.trace_id);
        let range = if ch == expected.source_channel {
            expected.range(seq)
        } else {
            None
        };
        let Some(range) = range else {
            report.problem(Class::Unexpected, || {
                format!(
                    "output channel {} seq {} at byte offset {}: trace id {} matches no input record",
                    r.channel,
                    r.seq,
                    r.offset,
                    show_trace_id(r.trace_id)
                )
            });
            continue;
        };
        if range.is_empty() {
            report.problem(Class::Unexpected, || {
                format!(
                    "output channel {} seq {}: trace id {} is an input that produces no output; got {}",
                    r.channel,
                    r.seq,
                    show_trace_id(r.trace_id),
                    describe(&r.payload)
                )
            });
            continue;
        }
        let same = |j: &usize| expected.payload(*j) == r.payload.as_slice();
        if let Some(j) = range.clone().filter(same).find(|j| !matched[*j]) {
            matched[j] = true;
            report.ok += 1;
            let key = expected.outs[j].key;
            if let Some(prev) = last_of_key.insert(key, j) {
                if j < prev {
                    report.problem(Class::Reordered, || {
                        format!(
                            "output channel {} seq {}: {} (trace id {}) arrived after the output of a later input of the same key ({})",
                            r.channel,
                            r.seq,
                            describe(&r.payload),
                            show_trace_id(r.trace_id),
                            describe(expected.payload(prev))
                        )
                    });
                }
            }
        } else if range.clone().any(|j| same(&j)) {
            report.problem(Class::Duplicated, || {
                format!(
                    "output channel {} seq {}: {} (trace id {}) received again",
                    r.channel,
                    r.seq,
                    describe(&r.payload),
                    show_trace_id(r.trace_id)
                )
            });
        } else {
            pending.push((r, range));
        }
    }
    // Payloads that match nothing: wrong if their input still has an
    // unmatched output, else an extra output.
    for (r, range) in pending {
        if let Some(j) = range.clone().find(|j| !matched[*j]) {
            matched[j] = true;
            report.problem(Class::Wrong, || {
                format!(
                    "output channel {} seq {} (trace id {}): expected {}, got {}",
                    r.channel,
                    r.seq,
                    show_trace_id(r.trace_id),
                    describe(expected.payload(j)),
                    describe(&r.payload)
                )
            });
        } else {
            report.problem(Class::Unexpected, || {
                format!(
                    "output channel {} seq {} (trace id {}): {} is beyond the {} output(s) its input produces",
                    r.channel,
                    r.seq,
                    show_trace_id(r.trace_id),
                    describe(&r.payload),
                    range.len()
                )
            });
        }
    }
    for seq in 1..expected.starts.len() as u64 {
        let Some(range) = expected.range(seq) else {
            continue;
        };
        for j in range {
            if !matched[j] {
                report.problem(Class::Lost, || {
                    format!(
                        "trace id {}: {} never received",
                        show_trace_id(crate::formats::trace_id(
                            expected.source_channel as u32,
                            seq
                        )),
                        describe(expected.payload(j))
                    )
                });
            }
        }
    }
    Ok(())
}

/// Renders bytes as text when printable, else as hex.
pub(crate) fn show_bytes(b: &[u8]) -> String {
    if b.iter().all(|c| (0x20..0x7f).contains(c) || *c == b'\t') {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        let hex: String = b.iter().map(|c| format!("{c:02x}")).collect();
        format!("0x{hex}")
    }
}
