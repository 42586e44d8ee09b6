//! Stalls: event-loop iterations that ran long, and what the loop was
//! doing in them.
//!
//! Every output waits for the loop that makes it: an iteration that spends
//! 5 ms on something else delays everything that arrives meanwhile by up
//! to 5 ms, which is what a latency tail is made of. The worker times each
//! part of an iteration ([`Stalls::lap`]); an iteration of at least
//! [`STALL`] counts as a stall under the part that took most of it ([`Doing`];
//! a read that rolled a log segment to a new file is `segment_roll`). The
//! counts, a histogram of every iteration's length and the [`KEPT`] longest
//! stalls go to the metrics (`verity_loop_stalls_total`,
//! `verity_loop_iteration_seconds`) and to the `stalls` line of a clean
//! stop, which `verity-bench` prints beside its latency figures.
//!
//! Per iteration this costs a clock read per part, never anything per
//! record.

use std::time::{Duration, Instant};

use super::metrics_sample::Histogram;

/// An iteration at least this long is a stall.
pub const STALL: Duration = Duration::from_millis(1);

/// A stall at least this long is also logged (`event="stall"`, rate-limited).
pub const STALL_LOG: Duration = Duration::from_millis(50);

/// How many of the longest stalls are kept (with what they were doing).
pub const KEPT: usize = 8;

/// The parts of an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// Accepting, reading, decoding, the core, appending to the logs.
    Read,
    /// A read that rolled the journal or an outbound log to a new segment.
    SegmentRoll,
    /// Making the journal durable (with `fsync`: waiting for the syncer).
    DurableWait,
    /// Dialing, handshakes and writing to the consumers.
    Send,
    /// Timers, ACK/NACK flushes, fault-shim bookkeeping.
    Timers,
    /// Writing a snapshot.
    Snapshot,
    /// Copying the counters for the metrics endpoint.
    Metrics,
}

impl Doing {
    pub const ALL: [Doing; 7] = [
        Doing::Read,
        Doing::SegmentRoll,
        Doing::DurableWait,
        Doing::Send,
        Doing::Timers,
        Doing::Snapshot,
        Doing::Metrics,
    ];

    /// The name in the metrics' `doing` label and the `stalls` line.
    pub fn name(self) -> &'static str {
        match self {
            Doing::Read => "read",
            Doing::SegmentRoll => "segment_roll",
            Doing::DurableWait => "durable_wait",
            Doing::Send => "send",
            Doing::Timers => "timers",
            Doing::Snapshot => "snapshot",
            Doing::Metrics => "metrics",
        }
    }
}

/// One stall: how long the iteration took and what took most of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    pub took: Duration,
    pub doing: Doing,
    /// When it began, since the meter was made (the loop's start).
    pub at: Duration,
}

/// The stall meter of one event loop.
#[derive(Debug)]
pub struct Stalls {
    born: Instant,
    began: Instant,
    last: Instant,
    spent: [Duration; Doing::ALL.len()],
    /// Stalls so far, by what they were doing (index: `Doing as usize`).
    pub counts: [u64; Doing::ALL.len()],
    /// Every iteration's length.
    pub iterations: Histogram,
    /// The longest stalls so far, longest first.
    pub longest: Vec<Stall>,
}

impl Stalls {
    pub fn new(now: Instant) -> Stalls {
        Stalls {
            born: now,
            began: now,
            last: now,
            spent: Default::default(),
            counts: Default::default(),
            iterations: Histogram::default(),
            longest: Vec::with_capacity(KEPT + 1),
        }
    }

    /// An iteration's work begins (the poll returned).
    pub fn begin(&mut self, now: Instant) {
        self.began = now;
        self.last = now;
        self.spent = Default::default();
    }

    /// The time since the last lap was spent `doing`.
    pub fn lap(&mut self, doing: Doing) {
        self.lap_at(doing, Instant::now());
    }

    fn lap_at(&mut self, doing: Doing, now: Instant) {
        self.spent[doing as usize] += now.saturating_duration_since(self.last);
        self.last = now;
    }

    /// The iteration ends: returns the stall if it was one.
    pub fn end(&mut self) -> Option<Stall> {
        let took = self.last.saturating_duration_since(self.began);
        self.iterations.observe(took);
        if took < STALL {
            return None;
        }
        let mut doing = Doing::Read;
        for d in Doing::ALL {
            if self.spent[d as usize] > self.spent[doing as usize] {
                doing = d;
            }
        }
        self.counts[doing as usize] += 1;
        let at = self.began.saturating_duration_since(self.born);
        let stall = Stall { took, doing, at };
        let at = self.longest.partition_point(|s| s.took >= took);
        if at < KEPT {
            self.longest.insert(at, stall);
            self.longest.truncate(KEPT);
        }
        Some(stall)
    }

    /// The `stalls` line of a clean stop: counts by part, then the longest,
    /// e.g. `total=3 read=1 segment_roll=0 ... snapshot=2 metrics=0;
    /// longest ms: 12.5 snapshot at 3.012 s, 4.1 snapshot at 1.007 s`
    /// (times since the loop started).
    pub fn summary(&self) -> String {
        let total: u64 = self.counts.iter().sum();
        let mut s = format!("total={total}");
        for d in Doing::ALL {
            s += &format!(" {}={}", d.name(), self.counts[d as usize]);
        }
        s += "; longest ms:";
        for (i, st) in self.longest.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            s += &format!(
                "{sep}{:.1} {} at {:.3} s",
                st.took.as_secs_f64() * 1e3,
                st.doing.name(),
                st.at.as_secs_f64()
            );
        }
        if self.longest.is_empty() {
            s += " none";
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One iteration at `t0` with the given parts, in order.
    fn iteration(s: &mut Stalls, t0: Instant, parts: &[(Doing, Duration)]) -> Option<Stall> {
        s.begin(t0);
        let mut t = t0;
        for &(d, took) in parts {
            t += took;
            s.lap_at(d, t);
        }
        s.end()
    }

    #[test]
    fn a_short_iteration_is_no_stall_but_is_in_the_histogram() {
        let t0 = Instant::now();
        let mut s = Stalls::new(t0);
        let parts = [(Doing::Read, Duration::from_micros(300))];
        assert_eq!(iteration(&mut s, t0, &parts), None);
        assert_eq!(s.counts, [0; 7]);
        assert_eq!(s.iterations.count(), 1);
        assert!(s.longest.is_empty());
        assert!(s.summary().ends_with("longest ms: none"), "{}", s.summary());
    }

    #[test]
    fn a_stall_is_counted_under_the_part_that_took_most_of_it() {
        let t0 = Instant::now();
        let mut s = Stalls::new(t0);
        let parts = [
            (Doing::Read, ms(1)),
            (Doing::Snapshot, ms(3)),
            (Doing::Send, ms(1)),
        ];
        let stall = iteration(&mut s, t0, &parts).expect("5 ms is a stall");
        assert_eq!(stall.doing, Doing::Snapshot);
        assert_eq!(stall.took, ms(5));
        assert_eq!(s.counts[Doing::Snapshot as usize], 1);
        assert_eq!(s.counts.iter().sum::<u64>(), 1);
        // Parts of the same kind add up; the next iteration starts afresh.
        let parts = [
            (Doing::Read, ms(1)),
            (Doing::Timers, ms(1)),
            (Doing::Read, ms(1)),
        ];
        let stall = iteration(&mut s, t0 + ms(10), &parts).expect("3 ms");
        assert_eq!(stall.doing, Doing::Read);
    }

    #[test]
    fn the_longest_stalls_are_kept_longest_first_and_bounded() {
        let t0 = Instant::now();
        let mut s = Stalls::new(t0);
        for i in 1..=20u64 {
            let took = ms(1 + (i * 7) % 20);
            iteration(&mut s, t0 + ms(100 * i), &[(Doing::DurableWait, took)]);
        }
        assert_eq!(s.longest.len(), KEPT);
        assert!(s.longest.windows(2).all(|w| w[0].took >= w[1].took));
        assert_eq!(s.longest[0].took, ms(20));
        assert_eq!(s.counts[Doing::DurableWait as usize], 20);
        let line = s.summary();
        assert!(
            line.starts_with("total=20 read=0 segment_roll=0 durable_wait=20"),
            "{line}"
        );
        assert!(
            line.contains("longest ms: 20.0 durable_wait at 1.700 s, 19.0 durable_wait at"),
            "{line}"
        );
    }
}
