//! The generic oracle: judges a run of any app without knowing what the app
//! computes, from three things it can check from outside the run:
//!
//! 1. **Every source record accepted exactly once across the cluster.** Each
//!    source channel is journaled by exactly one node (its home), and that
//!    node's journal holds its seqs 1..=N, each once, in order (the replay
//!    below refuses a journal whose seqs do not follow on), where N is what
//!    the source sent.
//! 2. **The sink holds exactly what an offline replay regenerates.** Each
//!    node's journal is re-run from the earliest state it still has (the
//!    empty state when the journal was never trimmed) through a fresh core
//!    of the app: the outputs it regenerates on the node's sink channel
//!    must be the received records of that channel, seq for seq, trace id
//!    and payload byte for byte, with nothing received past the last one
//!    (no loss, no duplicate, no extra).
//! 3. **Per key, outputs follow journal order.** The replay processes the
//!    journal in order, so outputs identical to the replay's are in the
//!    order the journal gives every key; nothing is left to check once 2
//!    holds, and a reordered output fails 2.
//!
//! Outputs received below the first seq the replay regenerates (the journal
//! before the oldest retained snapshot was trimmed) cannot be regenerated:
//! they are counted as unverified, and checked for seqs 1..=k each once.
//!
//! An app with an oracle of its own (`verity-check`, or one its crate
//! ships) is judged by that one on top; this one needs nothing from the
//! app but its registered build.

use std::collections::BTreeMap;
use std::fmt;

use verity_tools::check::{CheckReport, Class};

use crate::replay::{Output, Regenerated};

/// What [`judge`] found besides the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Received outputs compared with a regenerated one.
    pub compared: u64,
    /// Received outputs below the replays' reach (seqs checked only).
    pub unverified: u64,
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "oracle: generic: {} outputs compared with the replay of the journals, {} below the oldest retained snapshot (seqs checked only)",
            self.compared, self.unverified
        )
    }
}

/// Judges a run: `sent` is (source channel, records sent) per source,
/// `nodes` each node's replay, `received` what the sink holds as
/// (channel, output) in the order it was written.
pub fn judge(
    app: &str,
    sent: &[(u32, u64)],
    nodes: &[Regenerated],
    received: impl IntoIterator<Item = (u32, Output)>,
) -> (CheckReport, Coverage) {
    let mut report = CheckReport::new(app);
    let mut coverage = Coverage::default();
    // 1. Each source channel: journaled at exactly one node, 1..=N.
    for &(channel, n) in sent {
        let at: Vec<&(u32, u64, u64)> = nodes
            .iter()
            .flat_map(|r| r.sources.iter())
            .filter(|s| s.0 == channel)
            .collect();
        match at.as_slice() {
            [] if n > 0 => report.problem(Class::Lost, || {
                format!("source channel {channel}: {n} records sent, none journaled by any node")
            }),
            [] => {}
            [(_, _, delivered)] => {
                if *delivered < n {
                    report.problem(Class::Lost, || {
                        format!(
                            "source channel {channel}: {n} records sent, the journal holds seqs up to {delivered}"
                        )
                    });
                } else if *delivered > n {
                    report.problem(Class::Unexpected, || {
                        format!(
                            "source channel {channel}: {n} records sent, the journal holds seqs up to {delivered}"
                        )
                    });
                }
            }
            more => report.problem(Class::Duplicated, || {
                format!(
                    "source channel {channel}: journaled by {} nodes; a source record is accepted at its home only",
                    more.len()
                )
            }),
        }
    }
    // 2. The sink's records per channel against the replay.
    let mut by_channel: BTreeMap<u32, Vec<Output>> = BTreeMap::new();
    for (channel, o) in received {
        report.received += 1;
        by_channel.entry(channel).or_default().push(o);
    }
    for r in nodes {
        report.expected += r.first_seq - 1 + r.outputs.len() as u64;
        let got = by_channel.remove(&r.channel).unwrap_or_default();
        let mut next = 1u64;
        let mut regenerated = r.outputs.iter().peekable();
        for o in &got {
            if o.seq < next {
                report.problem(Class::Duplicated, || {
                    format!("output channel {} seq {}: received again", r.channel, o.seq)
                });
                continue;
            }
            while next < o.seq {
                report.problem(Class::Lost, || {
                    format!("output channel {} seq {next}: never received", r.channel)
                });
                next += 1;
                if regenerated.peek().is_some_and(|g| g.seq < next) {
                    regenerated.next();
                }
            }
            next = o.seq + 1;
            if o.seq < r.first_seq {
                coverage.unverified += 1;
                report.ok += 1;
                continue;
            }
            match regenerated.next() {
                Some(g) if g.seq == o.seq && g == o => {
                    coverage.compared += 1;
                    report.ok += 1;
                }
                Some(g) if g.seq == o.seq => report.problem(Class::Wrong, || {
                    format!(
                        "output channel {} seq {}: received trace id {:#x} payload {} bytes, the replay regenerates trace id {:#x} payload {} bytes{}",
                        r.channel,
                        o.seq,
                        o.trace_id,
                        o.payload.len(),
                        g.trace_id,
                        g.payload.len(),
                        if g.payload == o.payload { " (same payload)" } else { " (payload differs)" }
                    )
                }),
                _ => report.problem(Class::Unexpected, || {
                    format!(
                        "output channel {} seq {}: received, but the replay of the node's journal regenerates no such output",
                        r.channel, o.seq
                    )
                }),
            }
        }
        for g in regenerated {
            report.problem(Class::Lost, || {
                format!(
                    "output channel {} seq {} (trace id {:#x}): regenerated by the replay, never received",
                    r.channel, g.seq, g.trace_id
                )
            });
        }
    }
    for (channel, got) in by_channel {
        for o in got {
            report.problem(Class::Unexpected, || {
                format!(
                    "output channel {channel} seq {}: no node sends on this channel",
                    o.seq
                )
            });
        }
    }
    (report, coverage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(seq: u64, b: u8) -> Output {
        Output {
            seq,
            trace_id: seq,
            payload: vec![b],
        }
    }

    fn node(first_seq: u64, outputs: Vec<Output>) -> Regenerated {
        Regenerated {
            channel: 1001,
            first_seq,
            outputs,
            sources: vec![(1, 0, 3)],
            from_record: 0,
        }
    }

    fn run(received: Vec<Output>) -> CheckReport {
        let n = node(1, (1..=3).map(|s| out(s, 7)).collect());
        judge(
            "x",
            &[(1, 3)],
            &[n],
            received.into_iter().map(|o| (1001, o)),
        )
        .0
    }

    #[test]
    fn the_same_outputs_pass() {
        let r = run((1..=3).map(|s| out(s, 7)).collect());
        assert!(r.passed(), "{r}");
        assert_eq!((r.ok, r.expected, r.received), (3, 3, 3));
    }

    #[test]
    fn a_lost_a_doubled_a_wrong_and_an_extra_output_are_each_named() {
        let r = run(vec![out(1, 7), out(3, 7)]);
        assert_eq!(r.lost, 1, "{r}");
        assert!(r.first_problems[0].contains("seq 2: never received"), "{r}");
        let r = run(vec![out(1, 7), out(2, 7), out(2, 7), out(3, 7)]);
        assert_eq!(r.duplicated, 1, "{r}");
        let r = run(vec![out(1, 7), out(2, 8), out(3, 7)]);
        assert_eq!(r.wrong, 1, "{r}");
        assert!(r.first_problems[0].contains("(payload differs)"), "{r}");
        let r = run((1..=4).map(|s| out(s, 7)).collect());
        assert_eq!(r.unexpected, 1, "{r}");
        let r = run(vec![out(1, 7), out(2, 7)]);
        assert_eq!(r.lost, 1, "{r}");
        assert!(r.first_problems[0].contains("regenerated by the replay, never received"));
    }

    #[test]
    fn reordered_outputs_fail_as_wrong() {
        let mut v: Vec<Output> = (1..=3).map(|s| out(s, s as u8)).collect();
        let n = node(1, v.clone());
        v.swap(0, 1);
        v[0].seq = 1;
        v[1].seq = 2;
        let (r, _) = judge("x", &[(1, 3)], &[n], v.into_iter().map(|o| (1001, o)));
        assert_eq!(r.wrong, 2, "{r}");
    }

    #[test]
    fn outputs_below_the_replays_reach_count_as_unverified() {
        let n = node(3, vec![out(3, 7)]);
        let (r, c) = judge("x", &[(1, 3)], &[n], (1..=3).map(|s| (1001, out(s, 7))));
        assert!(r.passed(), "{r}");
        assert_eq!((c.compared, c.unverified), (1, 2));
    }

    #[test]
    fn a_source_journaled_short_twice_or_nowhere_fails() {
        let judge1 = |sources: Vec<Vec<(u32, u64, u64)>>| {
            let nodes: Vec<Regenerated> = sources
                .into_iter()
                .map(|s| Regenerated {
                    sources: s,
                    channel: 1001,
                    first_seq: 1,
                    ..Regenerated::default()
                })
                .collect();
            judge("x", &[(1, 3)], &nodes, std::iter::empty()).0
        };
        assert_eq!(judge1(vec![vec![(1, 0, 2)]]).lost, 1);
        assert_eq!(judge1(vec![vec![]]).lost, 1);
        assert_eq!(judge1(vec![vec![(1, 0, 3)], vec![(1, 0, 3)]]).duplicated, 1);
        assert!(judge1(vec![vec![(1, 0, 3)], vec![]]).passed());
    }
}
