//! Live metrics (`metrics_listen`): each shard's event loop copies its
//! counters into a [`Sample`] about ten times a second ([`PUBLISH_EVERY`];
//! one short lock, nothing per record) and a thread of the worker process
//! serves the newest samples over HTTP: `/metrics` in the Prometheus text
//! format (0.0.4), `/healthz` and `/readyz`. A scrape never touches the
//! event loop: it reads the copies. `docs/METRICS.md` lists every metric.
//!
//! Counters count from the process's start (a restart resets them, which
//! Prometheus's `rate()` handles); what lives in the data directory (the
//! journal, the outbound logs, the channels' seqs) is reported as gauges.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often an event loop publishes its sample.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A node whose event loop has not published for this long is not healthy
/// (`/healthz` answers 503 naming it).
pub const SILENT_AFTER: Duration = Duration::from_secs(5);

pub use super::metrics_sample::{Histogram, InSample, OutSample, Sample, BUCKETS, FAULT_KINDS};

/// The newest sample of every node of the process, as published.
pub struct Hub {
    slots: Vec<Mutex<Option<(Instant, Sample)>>>,
    /// What `/metrics` reports as `verity_build_info`.
    version: &'static str,
}

impl Hub {
    /// A hub for `nodes` shards (slot = the shard's index in the process).
    pub fn new(nodes: usize, version: &'static str) -> Arc<Hub> {
        Arc::new(Hub {
            slots: (0..nodes).map(|_| Mutex::new(None)).collect(),
            version,
        })
    }

    pub fn publish(&self, slot: usize, sample: Sample) {
        if let Some(s) = self.slots.get(slot) {
            // A poisoned lock only means a scrape panicked: the slot is
            // a plain value, overwrite it.
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            *g = Some((Instant::now(), sample));
        }
    }

    fn read(&self) -> Vec<Option<(Instant, Sample)>> {
        self.slots
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// `/healthz`: every node recovered and its event loop publishing.
    pub fn health(&self, now: Instant) -> Result<String, String> {
        let mut bad = Vec::new();
        let slots = self.read();
        for (i, s) in slots.iter().enumerate() {
            match s {
                None => bad.push(format!("shard {i}: starting (recovering)")),
                Some((at, s)) if now.duration_since(*at) > SILENT_AFTER => bad.push(format!(
                    "node {}: event loop silent for {:.1} s",
                    s.node,
                    now.duration_since(*at).as_secs_f64()
                )),
                Some(_) => {}
            }
        }
        match bad.is_empty() {
            true => Ok(format!("ok: {} node(s) serving\n", slots.len())),
            false => Err(bad.join("\n") + "\n"),
        }
    }

    /// `/readyz`: healthy, and every outbound channel (the sink, the
    /// other nodes) connected and RESUMEd, so records make progress.
    pub fn ready(&self, now: Instant) -> Result<String, String> {
        self.health(now)?;
        let mut bad = Vec::new();
        for (_, s) in self.read().iter().flatten() {
            for o in s.outbound.iter().filter(|o| !o.connected) {
                bad.push(format!(
                    "node {}: {} at {} not connected",
                    s.node, o.to, o.addr
                ));
            }
        }
        match bad.is_empty() {
            true => Ok("ready\n".into()),
            false => Err(bad.join("\n") + "\n"),
        }
    }

    /// `/metrics`: the Prometheus text format of the newest samples.
    pub fn render(&self) -> String {
        let samples: Vec<Sample> = self.read().into_iter().flatten().map(|s| s.1).collect();
        render(&samples, self.version)
    }
}

/// Serves `hub` on `addr` from a thread of its own (tiny_http's), until
/// the process ends: `/metrics`, `/healthz`, `/readyz`; 404 otherwise.
pub fn serve(addr: SocketAddr, hub: Arc<Hub>) -> std::io::Result<JoinHandle<()>> {
    let server = tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("");
                let (code, ctype, body) = match path {
                    "/metrics" => (
                        200,
                        "text/plain; version=0.0.4; charset=utf-8",
                        hub.render(),
                    ),
                    "/healthz" | "/readyz" => {
                        let r = match path {
                            "/healthz" => hub.health(Instant::now()),
                            _ => hub.ready(Instant::now()),
                        };
                        match r {
                            Ok(b) => (200, "text/plain; charset=utf-8", b),
                            Err(b) => (503, "text/plain; charset=utf-8", b),
                        }
                    }
                    _ => (
                        404,
                        "text/plain; charset=utf-8",
                        "not found: try /metrics, /healthz or /readyz\n".into(),
                    ),
                };
                let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
                if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", ctype) {
                    resp = resp.with_header(h);
                }
                // A client that went away is its own business.
                let _ = req.respond(resp);
            }
        })
}

/// What an event loop measures for its samples besides the counters it
/// keeps anyway: backpressure time and batch latencies. Only a worker with
/// `metrics_listen` has one; its costs are per read batch and per
/// [`PUBLISH_EVERY`], never per record.
pub struct Meter {
    hub: Arc<Hub>,
    slot: usize,
    next_publish: Instant,
    /// How long the start took (recovery).
    pub recovery: Duration,
    pub last_snapshot: Instant,
    backpressured_since: Option<Instant>,
    backpressure: Duration,
    /// Read batches not yet durable: (journal index after the batch, when
    /// it was read).
    batches: std::collections::VecDeque<(u64, Instant)>,
    /// Batches durable in this iteration, awaiting their outputs' release.
    durable: Vec<Instant>,
    to_durable: Histogram,
    to_released: Histogram,
}

impl Meter {
    pub fn new(hub: Arc<Hub>, slot: usize, recovery: Duration) -> Meter {
        let now = Instant::now();
        Meter {
            hub,
            slot,
            next_publish: now,
            recovery,
            last_snapshot: now,
            backpressured_since: None,
            backpressure: Duration::ZERO,
            batches: Default::default(),
            durable: Vec::new(),
            to_durable: Histogram::default(),
            to_released: Histogram::default(),
        }
    }

    /// A read batch at `at` took the journal to `journal_next`.
    pub fn batch_read(&mut self, journal_next: u64, at: Instant) {
        match self.batches.back_mut() {
            // Still the same iteration's reads: one batch.
            Some(b) if b.1 == at => b.0 = journal_next,
            _ => self.batches.push_back((journal_next, at)),
        }
    }

    /// Journal records below `durable` are durable at `now`.
    pub fn durable(&mut self, durable: u64, now: Instant) {
        while let Some(&(end, at)) = self.batches.front() {
            if end > durable {
                break;
            }
            self.batches.pop_front();
            self.to_durable.observe(now.duration_since(at));
            self.durable.push(at);
        }
    }

    /// What became durable has been handed to the consumers' connections.
    pub fn released(&mut self, now: Instant) {
        for at in self.durable.drain(..) {
            self.to_released.observe(now.duration_since(at));
        }
    }

    /// Whether the core refuses input, at `now`.
    pub fn backpressure(&mut self, on: bool, now: Instant) -> Option<bool> {
        match (self.backpressured_since, on) {
            (None, true) => {
                self.backpressured_since = Some(now);
                Some(true)
            }
            (Some(since), false) => {
                self.backpressure += now.duration_since(since);
                self.backpressured_since = None;
                Some(false)
            }
            _ => None,
        }
    }

    /// Whether a sample is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_publish
    }

    /// Publishes `sample`, completed with what the meter measured.
    pub fn publish(&mut self, mut sample: Sample, now: Instant) {
        sample.backpressure_seconds = (self.backpressure
            + self
                .backpressured_since
                .map_or(Duration::ZERO, |s| now.duration_since(s)))
        .as_secs_f64();
        sample.backpressured = self.backpressured_since.is_some();
        sample.recovery_seconds = self.recovery.as_secs_f64();
        sample.snapshot_age_seconds = now.duration_since(self.last_snapshot).as_secs_f64();
        sample.accept_to_durable = self.to_durable.clone();
        sample.accept_to_released = self.to_released.clone();
        self.hub.publish(self.slot, sample);
        self.next_publish = now + PUBLISH_EVERY;
    }
}

use super::metrics_text::render;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        let mut s = Sample {
            node: 2,
            worker: "w\"1".into(),
            core: crate::core::NodeStats {
                accepted: 7,
                ..Default::default()
            },
            outbound: vec![OutSample {
                channel: 1,
                to: "sink".into(),
                addr: "127.0.0.1:1".into(),
                connected: false,
                ..OutSample::default()
            }],
            ..Sample::default()
        };
        s.accept_to_durable.observe(Duration::from_micros(30));
        s.accept_to_durable.observe(Duration::from_secs(60));
        s
    }

    #[test]
    fn text_format_has_help_type_and_cumulative_buckets() {
        let t = render(&[sample()], "0.1.0");
        assert!(t.contains("# TYPE verity_records_accepted_total counter\n"));
        assert!(t.contains(
            "verity_records_accepted_total{node=\"2\",worker=\"w\\\"1\",shard=\"0\"} 7\n"
        ));
        // 30 µs falls in le=5e-5; 60 s only in +Inf; buckets are cumulative.
        assert!(t.contains("le=\"0.000025\"} 0\n"), "{t}");
        assert!(t.contains("le=\"0.00005\"} 1\n"), "{t}");
        assert!(t.contains("le=\"10\"} 1\n"), "{t}");
        assert!(t.contains("le=\"+Inf\"} 2\n"), "{t}");
        assert!(t.contains(
            "verity_accept_to_durable_seconds_count{node=\"2\",worker=\"w\\\"1\",shard=\"0\"} 2\n"
        ));
        // Every family once, HELP before TYPE before its lines.
        let types = t
            .lines()
            .filter(|l| l.starts_with("# TYPE verity_resends_total "))
            .count();
        assert_eq!(types, 1);
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = line.split_once(['{', ' ']).unwrap_or((line, ""));
            assert!(name.starts_with("verity_"), "{line}");
            assert!(!rest.is_empty(), "{line}");
        }
    }

    /// Every family a worker serves (a sample with a channel each way).
    fn families() -> Vec<String> {
        let mut s = sample();
        s.inbound.push(InSample::default());
        render(&[s], "x")
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn metrics_md_lists_every_metric_and_no_other() {
        let doc = include_str!("../../docs/METRICS.md");
        let served = families();
        for name in &served {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "docs/METRICS.md lacks {name}"
            );
        }
        for line in doc.lines().filter(|l| l.starts_with("| `verity_")) {
            let name = line.split('`').nth(1).unwrap_or("");
            assert!(
                served.iter().any(|s| s == name),
                "docs/METRICS.md lists {name}, not served"
            );
        }
    }

    #[test]
    fn the_grafana_dashboard_queries_only_served_metrics() {
        let dash = include_str!("../../docs/grafana/verity.json");
        let served = families();
        let mut queried = 0;
        for (i, _) in dash.match_indices("verity_") {
            let name: String = dash[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "verity_overview" {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                served.iter().any(|s| s == base),
                "the dashboard queries {name}"
            );
            queried += 1;
        }
        assert!(queried > 20, "{queried}");
    }

    #[test]
    fn health_and_readiness_name_what_is_wrong() {
        let hub = Hub::new(2, "x");
        let now = Instant::now();
        let e = hub.health(now).unwrap_err();
        assert!(
            e.contains("shard 0: starting") && e.contains("shard 1"),
            "{e}"
        );
        hub.publish(0, sample());
        hub.publish(1, Sample::default());
        assert!(hub.health(Instant::now()).is_ok());
        let e = hub.ready(Instant::now()).unwrap_err();
        assert!(
            e.contains("node 2: sink at 127.0.0.1:1 not connected"),
            "{e}"
        );
        let e = hub.health(Instant::now() + SILENT_AFTER * 2).unwrap_err();
        assert!(e.contains("event loop silent"), "{e}");
    }
}
