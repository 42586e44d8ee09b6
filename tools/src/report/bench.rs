//! The `verity-bench --report` page: per app, msgs/s of every kind of run
//! round by round, the latency percentile curves (HdrHistogram style) and
//! a table of the figures the text report gives.

use super::chart::{percentile_ticks, Axis, Chart, Scale, Series};
use super::{micros, si, Page};
use crate::bench::{BenchResult, Latency};

/// An id made of letters, digits and '-'.
fn id(prefix: &str, app: &str) -> String {
    let tail: String = app
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{prefix}-{tail}")
}

fn throughput(r: &BenchResult) -> Chart {
    let rounds = r.per_round.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let mut x = Axis::new("round", Scale::Linear, |v| format!("{v:.0}"));
    x.ticks = Some(
        (1..=rounds.max(1))
            .map(|i| (i as f64, i.to_string()))
            .collect(),
    );
    let mut y = Axis::new("msgs/s (inputs)", Scale::Linear, si);
    y.from_zero = true;
    Chart {
        id: id("throughput", &r.app),
        title: format!("{}: throughput per round", r.app),
        x,
        y,
        series: r
            .per_round
            .iter()
            .map(|(kind, v)| Series {
                name: kind.clone(),
                points: v
                    .iter()
                    .enumerate()
                    .map(|(i, rate)| ((i + 1) as f64, *rate))
                    .collect(),
            })
            .collect(),
        markers: Vec::new(),
    }
}

/// The latency runs with samples: (name, latency).
fn latencies(r: &BenchResult) -> Vec<(&'static str, &Latency)> {
    let mut v = vec![("raw pipe", &r.raw_latency), ("engine", &r.engine_latency)];
    if let Some(t) = &r.tls {
        v.push(("engine over TLS", &t.latency));
    }
    v.retain(|(_, l)| !l.curve.is_empty());
    v
}

fn latency(r: &BenchResult) -> Option<Chart> {
    let runs = latencies(r);
    let max_x = runs
        .iter()
        .flat_map(|(_, l)| l.curve.last().map(|p| p.0))
        .fold(0.0, f64::max);
    if runs.is_empty() {
        return None;
    }
    let mut x = Axis::new("percentile", Scale::Log, |v| format!("{v}"));
    x.ticks = Some(percentile_ticks(max_x));
    Some(Chart {
        id: id("latency", &r.app),
        title: format!(
            "{}: latency by percentile at {} msgs/s (input due time to output arrival)",
            r.app,
            si(r.latency_rate)
        ),
        x,
        y: Axis::new("latency", Scale::Log, micros),
        series: runs
            .iter()
            .map(|(name, l)| Series {
                name: name.to_string(),
                points: l.curve.iter().map(|&(x, us)| (x, us as f64)).collect(),
            })
            .collect(),
        markers: Vec::new(),
    })
}

fn row(run: &str, rate: f64, ratio: String, l: Option<&Latency>) -> Vec<String> {
    let mut r = vec![run.to_string(), format!("{rate:.0}"), ratio];
    match l {
        Some(l) => {
            r.extend([l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples].map(|v| v.to_string()))
        }
        None => r.extend(std::iter::repeat_n(String::new(), 5)),
    }
    r
}

fn figures(r: &BenchResult) -> Vec<Vec<String>> {
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let mut rows = vec![
        row(
            "raw pipe",
            r.raw_msgs_per_s,
            String::new(),
            Some(&r.raw_latency),
        ),
        row(
            "engine",
            r.engine_msgs_per_s,
            format!("{} of raw pipe", pct(r.ratio)),
            Some(&r.engine_latency),
        ),
    ];
    if let Some((rate, ratio)) = r.baseline {
        rows.push(row(
            "baseline engine",
            rate,
            format!("engine/baseline {}", pct(ratio)),
            None,
        ));
    }
    if let Some((n, rate, ratio)) = r.cluster {
        let name = format!("cluster of {n}");
        rows.push(row(
            &name,
            rate,
            format!("{} of single node", pct(ratio)),
            None,
        ));
    }
    if let Some(t) = &r.tls {
        rows.push(row(
            "raw pipe, TLS",
            t.raw_msgs_per_s,
            format!("{} of plain", pct(t.raw_ratio)),
            None,
        ));
        rows.push(row(
            "engine, TLS",
            t.engine_msgs_per_s,
            format!("{} of plain", pct(t.engine_ratio)),
            Some(&t.latency),
        ));
        if let Some((rate, ratio)) = t.cluster {
            rows.push(row(
                "cluster, TLS",
                rate,
                format!("{} of plain", pct(ratio)),
                None,
            ));
        }
    }
    rows
}

/// The whole page for the apps benched so far.
pub fn page(results: &[BenchResult]) -> String {
    let mut p = Page::new("verity-bench report");
    p.p("Throughput: every input sent unpaced and every output awaited, per round (medians reported). Latency: the senders paced at a fixed rate; each record's latency is its output's arrival minus the input's due time (open loop, no coordinated omission). Raw pipe: the same sender and receiver wired directly, without the engine.");
    for r in results {
        p.h2(&format!(
            "{}: {} inputs, {} outputs, {} rounds",
            r.app, r.inputs, r.outputs, r.rounds
        ));
        p.chart(&throughput(r));
        if let Some(c) = latency(r) {
            p.chart(&c);
        }
        p.table(
            &[
                "run",
                "msgs/s (median)",
                "ratio (median of per-round)",
                "p50 µs",
                "p99 µs",
                "p99.9 µs",
                "max µs",
                "latency samples",
            ],
            &figures(r),
        );
        p.pre(&r.to_string());
    }
    p.html()
}
