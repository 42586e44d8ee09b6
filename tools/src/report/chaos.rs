//! The `verity-chaos --report` page: per seed, the input and output rates
//! over the run (records/s in the 100 ms buckets the run sampled), with
//! what the run did to the cluster marked on them: kills, pauses, partition
//! windows, recoveries, receiver kills, failovers, database restarts.

use std::time::{Duration, Instant};

use super::chart::{Axis, Chart, Marker, Scale, Series};
use super::{seconds, si, Page};

/// How often a run samples its counts.
pub const BUCKET: Duration = Duration::from_millis(100);

/// (seconds, records/s) points.
pub type Points = Vec<(f64, f64)>;

/// What the run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `kill -9` of a worker (then a restart).
    Kill,
    /// SIGSTOP to SIGCONT of a worker.
    Pause,
    /// Two workers cut off from each other.
    Partition,
    /// From a killed worker's restart to its `recovered` event.
    Recovery,
    /// `kill -9` of the receiver (then a restart).
    ReceiverKill,
    /// A sender gave up on its worker for another.
    Failover,
    /// The private PostgreSQL server stopped as by a crash and restarted.
    DbRestart,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Kill => "kill -9 of a worker",
            EventKind::Pause => "pause (SIGSTOP to SIGCONT)",
            EventKind::Partition => "partition",
            EventKind::Recovery => "recovery (restart to recovered)",
            EventKind::ReceiverKill => "kill -9 of the receiver",
            EventKind::Failover => "sender failover",
            EventKind::DbRestart => "database restart",
        }
    }

    /// The same colour for a kind on every seed's plot.
    pub fn colour(self) -> &'static str {
        match self {
            EventKind::Kill => "#e41a1c",
            EventKind::Pause => "#984ea3",
            EventKind::Partition => "#ff7f00",
            EventKind::Recovery => "#4daf4a",
            EventKind::ReceiverKill => "#377eb8",
            EventKind::Failover => "#a65628",
            EventKind::DbRestart => "#f781bf",
        }
    }
}

/// One thing the run did, in seconds since the senders started.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub at: f64,
    /// The end of a span (pause, partition, recovery).
    pub until: Option<f64>,
    pub what: String,
}

/// What a chaos run records as it goes: its counts every [`BUCKET`] and
/// what it did when.
#[derive(Debug, Clone)]
pub struct Timeline {
    origin: Instant,
    last: Option<Instant>,
    /// (seconds since the senders started, input records ACKed, outputs
    /// the receiver holds).
    pub samples: Vec<(f64, u64, u64)>,
    pub events: Vec<Event>,
}

impl Timeline {
    /// Times count from `origin` (when the senders started).
    pub fn new(origin: Instant) -> Timeline {
        Timeline {
            origin,
            last: None,
            samples: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.origin).as_secs_f64()
    }

    /// Records the counts if a bucket has passed since the last sample.
    pub fn sample(&mut self, inputs: u64, outputs: u64) {
        let now = Instant::now();
        if self.last.is_none_or(|l| now.duration_since(l) >= BUCKET) {
            self.sample_now(inputs, outputs);
        }
    }

    /// Records the counts now (the run's first and last).
    pub fn sample_now(&mut self, inputs: u64, outputs: u64) {
        let now = Instant::now();
        self.last = Some(now);
        self.samples.push((self.secs(now), inputs, outputs));
    }

    /// Something done at `at` (until `until`, for a span).
    pub fn mark(&mut self, kind: EventKind, at: Instant, until: Option<Instant>, what: String) {
        let (at, until) = (self.secs(at), until.map(|u| self.secs(u)));
        self.mark_secs(kind, at, until, what);
    }

    /// Likewise, in seconds since the senders started.
    pub fn mark_secs(&mut self, kind: EventKind, at: f64, until: Option<f64>, what: String) {
        self.events.push(Event {
            kind,
            at,
            until,
            what,
        });
    }

    /// (input rate, output rate): records/s over each bucket, at its end.
    pub fn rates(&self) -> (Points, Points) {
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for w in self.samples.windows(2) {
            let ((t0, i0, o0), (t1, i1, o1)) = (w[0], w[1]);
            let dt = t1 - t0;
            if dt <= 0.0 {
                continue;
            }
            inputs.push((t1, i1.saturating_sub(i0) as f64 / dt));
            outputs.push((t1, o1.saturating_sub(o0) as f64 / dt));
        }
        (inputs, outputs)
    }
}

/// One seed of a run, for the page.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    /// `check: PASS ...`, `check: FAIL ...` or the error.
    pub verdict: String,
    /// The command that reproduces the seed.
    pub reproduce: String,
    /// None when the run stopped before its senders started.
    pub timeline: Option<Timeline>,
}

fn chart(seed: u64, t: &Timeline) -> Chart {
    let (inputs, outputs) = t.rates();
    let mut x = Axis::new("seconds since the senders started", Scale::Linear, seconds);
    x.from_zero = true;
    let mut y = Axis::new("records/s", Scale::Linear, si);
    y.from_zero = true;
    Chart {
        id: format!("timeline-{seed}"),
        title: format!("seed {seed}: input and output rates"),
        x,
        y,
        series: vec![
            Series {
                name: "inputs ACKed /s".into(),
                points: inputs,
            },
            Series {
                name: "outputs received /s".into(),
                points: outputs,
            },
        ],
        markers: t
            .events
            .iter()
            .map(|e| Marker {
                kind: e.kind.name().into(),
                at: e.at,
                until: e.until,
                label: e.what.clone(),
                colour: Some(e.kind.colour()),
            })
            .collect(),
    }
}

fn events_table(t: &Timeline) -> Vec<Vec<String>> {
    let mut ev: Vec<&Event> = t.events.iter().collect();
    ev.sort_by(|a, b| a.at.total_cmp(&b.at));
    ev.iter()
        .map(|e| {
            vec![
                format!("{:.3}", e.at),
                e.until.map_or(String::new(), |u| format!("{:.3}", u)),
                e.kind.name().to_string(),
                e.what.clone(),
            ]
        })
        .collect()
}

/// The whole page for the seeds run so far.
pub fn page(scenario: &str, seeds: &[SeedReport]) -> String {
    let mut p = Page::new("verity-chaos report");
    p.p(&format!("Scenario: {scenario}. Rates are records per second over the 100 ms buckets the run sampled: inputs as ACKed to the senders, outputs as counted in the receiver's file (or table). Vertical lines and bands mark what the run did to the cluster, from the moment it did it."));
    for s in seeds {
        p.h2(&format!("seed {}", s.seed));
        p.pre(&format!("{}\nreproduce: {}", s.verdict, s.reproduce));
        match &s.timeline {
            Some(t) if t.samples.len() >= 2 => {
                p.chart(&chart(s.seed, t));
                p.table(&["at (s)", "until (s)", "what", "detail"], &events_table(t));
            }
            _ => {
                p.p("No timeline: the run stopped before its senders started.");
            }
        }
    }
    p.html()
}
