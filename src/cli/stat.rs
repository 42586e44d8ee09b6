//! `verity stat`: a live view of running workers in the spirit of
//! AeronStat. It reads the configuration for each worker's
//! `metrics_listen`, scrapes their `/metrics` every `--interval`, and
//! prints a compact table per node and outbound channel: rates since the
//! last scrape, totals, unACKed frames, backpressure, state. `--once`
//! prints one table (two scrapes an interval apart, for the rates) and
//! exits; `--json` prints JSON Lines (one object per node per refresh; see
//! tools/FORMATS.md).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::{is_cluster_file, ClusterToml, NodeToml};
use crate::registry::Registry;
use verity_wire::json::Obj;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 ok; 1 a worker's metrics could not be read (--once); 2 usage or configuration error."
)]
pub struct StatArgs {
    /// node.toml or cluster.toml: every worker with `metrics_listen` is
    /// watched.
    #[arg(long)]
    pub config: PathBuf,
    /// Seconds between scrapes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one table (rates over one interval) and exit.
    #[arg(long)]
    pub once: bool,
    /// JSON Lines instead of the table (one object per node per refresh).
    #[arg(long)]
    pub json: bool,
}

/// One worker to watch.
struct Target {
    worker: String,
    addr: Option<SocketAddr>,
}

/// One sample line of the text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (what a worker serves); lines that
/// are not samples are skipped.
pub fn parse(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, BTreeMap::new()),
            Some((name, rest)) => (name, labels_of(rest.trim_end_matches('}'))),
        };
        out.push(Series {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `a="x",b="y"` (values escaped with backslashes) as a map.
fn labels_of(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return m;
        }
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(c) => v.push(c),
                    None => break,
                },
                '"' => break,
                c => v.push(c),
            }
        }
        m.insert(key.trim_start_matches(',').to_string(), v);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// GET `/metrics` from `addr`.
fn scrape(addr: SocketAddr) -> Result<Vec<Series>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("{addr}: {e}"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(parse(body))
        }
        _ => Err(format!(
            "{addr}: not a metrics answer: {:?}",
            text.lines().next().unwrap_or("")
        )),
    }
}

/// One node's row, from two scrapes `secs` apart (rates) or one.
#[derive(Debug, Default)]
struct Row {
    worker: String,
    node: String,
    state: String,
    accepted: f64,
    accepted_rate: f64,
    outputs_rate: f64,
    unacked: f64,
    duplicates: f64,
    gaps: f64,
    backpressure: f64,
    epoch: f64,
    channels: Vec<(String, String, f64, f64, f64, bool)>,
}

fn get(s: &[Series], name: &str, node: &str, extra: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|x| x.name == name && x.labels.get("node").map(String::as_str) == Some(node))
        .filter(|x| {
            extra
                .iter()
                .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|x| x.value)
        .sum()
}

fn rows(worker: &str, now: &[Series], before: Option<&[Series]>, secs: f64) -> Vec<Row> {
    let mut nodes: Vec<String> = now
        .iter()
        .filter(|s| s.name == "verity_epoch")
        .filter_map(|s| s.labels.get("node").cloned())
        .collect();
    nodes.dedup();
    let rate = |name: &str, node: &str| match before {
        Some(b) if secs > 0.0 => {
            ((get(now, name, node, &[]) - get(b, name, node, &[])) / secs).max(0.0)
        }
        _ => 0.0,
    };
    nodes
        .into_iter()
        .map(|node| {
            let mut channels = Vec::new();
            for s in now.iter().filter(|s| {
                s.name == "verity_out_channel_connected" && s.labels.get("node") == Some(&node)
            }) {
                let (ch, to) = (
                    s.labels.get("channel").cloned().unwrap_or_default(),
                    s.labels.get("to").cloned().unwrap_or_default(),
                );
                let l = [("channel", ch.as_str())];
                channels.push((
                    ch.clone(),
                    to,
                    get(now, "verity_out_channel_sent_seq", &node, &l),
                    get(now, "verity_out_channel_acked_seq", &node, &l),
                    get(now, "verity_out_channel_unacked_frames", &node, &l),
                    s.value == 1.0,
                ));
            }
            let backpressured = get(now, "verity_backpressured", &node, &[]) == 1.0;
            let state = if backpressured {
                "backpressured"
            } else if channels.iter().any(|c| !c.5) {
                "not-ready"
            } else {
                "ready"
            };
            let bp = match before {
                Some(_) => rate("verity_backpressure_seconds_total", &node),
                None => 0.0,
            };
            Row {
                worker: worker.to_string(),
                state: state.to_string(),
                accepted: get(now, "verity_records_accepted_total", &node, &[]),
                accepted_rate: rate("verity_records_accepted_total", &node),
                outputs_rate: rate("verity_outputs_total", &node),
                unacked: channels.iter().map(|c| c.4).sum(),
                duplicates: get(now, "verity_duplicates_dropped_total", &node, &[]),
                gaps: get(now, "verity_gaps_nacked_total", &node, &[]),
                backpressure: bp,
                epoch: get(now, "verity_epoch", &node, &[]),
                channels,
                node,
            }
        })
        .collect()
}

/// The table of one refresh.
fn table(at_ns: u64, rows: &[Row], down: &[(String, String)]) -> String {
    let mut t = format!("verity stat {}\n", verity_tools::rfc3339_ns(at_ns));
    t += &format!(
        "{:<10} {:>5} {:<13} {:>11} {:>11} {:>12} {:>9} {:>8} {:>8} {:>6} {:>6}\n",
        "WORKER",
        "NODE",
        "STATE",
        "IN/s",
        "OUT/s",
        "ACCEPTED",
        "UNACKED",
        "DUPS",
        "GAPS",
        "BP%",
        "EPOCH"
    );
    for r in rows {
        t += &format!(
            "{:<10} {:>5} {:<13} {:>11.0} {:>11.0} {:>12.0} {:>9.0} {:>8.0} {:>8.0} {:>6.1} {:>6.0}\n",
            if r.worker.is_empty() { "-" } else { &r.worker },
            r.node,
            r.state,
            r.accepted_rate,
            r.outputs_rate,
            r.accepted,
            r.unacked,
            r.duplicates,
            r.gaps,
            100.0 * r.backpressure,
            r.epoch
        );
        for (ch, to, sent, acked, unacked, up) in &r.channels {
            t += &format!(
                "{:<10} {:>5}   -> {:<8} channel {:<6} sent {:<10.0} acked {:<10.0} unacked {:<8.0} {}\n",
                "",
                "",
                to,
                ch,
                sent,
                acked,
                unacked,
                if *up { "connected" } else { "DISCONNECTED" }
            );
        }
    }
    for (w, why) in down {
        t += &format!("{:<10} {:>5} {:<13} {why}\n", w, "-", "DOWN");
    }
    t
}

/// A label that holds a number (node, channel) as a JSON number; any other
/// text as a string.
fn label_json(o: Obj, k: &str, v: &str) -> Obj {
    match v.parse::<u64>() {
        Ok(n) => o.int(k, n),
        Err(_) => o.str(k, v),
    }
}

/// The JSON Lines of one refresh: one object per node, one per worker down.
fn json(at_ns: u64, rows: &[Row], down: &[(String, String)]) -> String {
    let mut t = String::new();
    for r in rows {
        let chans: Vec<String> = r
            .channels
            .iter()
            .map(|(ch, to, sent, acked, unacked, up)| {
                label_json(Obj::new(), "channel", ch)
                    .str("to", to)
                    .num("sent_seq", *sent)
                    .num("acked_seq", *acked)
                    .num("unacked", *unacked)
                    .bool("connected", *up)
                    .build()
            })
            .collect();
        let o = label_json(
            Obj::new().int("time_ns", at_ns).str("worker", &r.worker),
            "node",
            &r.node,
        )
        .str("state", &r.state)
        .num("accepted_per_s", (r.accepted_rate * 10.0).round() / 10.0)
        .num("outputs_per_s", (r.outputs_rate * 10.0).round() / 10.0)
        .num("accepted", r.accepted)
        .num("unacked", r.unacked)
        .num("duplicates", r.duplicates)
        .num("gaps", r.gaps)
        .num("backpressure_share", (r.backpressure * 1e4).round() / 1e4)
        .num("epoch", r.epoch)
        .raw("channels", &format!("[{}]", chans.join(",")));
        t += &o.build();
        t.push('\n');
    }
    for (w, why) in down {
        let o = Obj::new()
            .int("time_ns", at_ns)
            .str("worker", w)
            .str("state", "down")
            .str("error", why);
        t += &o.build();
        t.push('\n');
    }
    t
}

fn targets(a: &StatArgs, apps: &Registry) -> Result<Vec<Target>, String> {
    if is_cluster_file(&a.config) {
        let c = ClusterToml::load(&a.config, apps).map_err(|e| e.to_string())?;
        Ok(c.workers
            .iter()
            .map(|w| Target {
                worker: w.name.clone(),
                addr: w.metrics_listen,
            })
            .collect())
    } else {
        let n = NodeToml::load(&a.config, apps).map_err(|e| e.to_string())?;
        Ok(vec![Target {
            worker: String::new(),
            addr: n.metrics_listen,
        }])
    }
}

pub fn run(a: &StatArgs, bin: &str, apps: &Registry) -> ExitCode {
    if !(a.interval.is_finite() && a.interval >= 0.05) {
        eprintln!(
            "{bin} stat: --interval {} is not at least 0.05 s",
            a.interval
        );
        return ExitCode::from(2);
    }
    let targets = match targets(a, apps) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{bin} stat: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if targets.iter().all(|t| t.addr.is_none()) {
        eprintln!(
            "{bin} stat: no worker in {} sets metrics_listen (docs/METRICS.md)",
            a.config.display()
        );
        return ExitCode::from(2);
    }
    let every = Duration::from_secs_f64(a.interval);
    let mut before: Vec<Option<(Instant, Vec<Series>)>> = targets.iter().map(|_| None).collect();
    let mut first = true;
    loop {
        let mut all = Vec::new();
        let mut down = Vec::new();
        for (t, prev) in targets.iter().zip(before.iter_mut()) {
            let name = if t.worker.is_empty() {
                "-".to_string()
            } else {
                t.worker.clone()
            };
            let Some(addr) = t.addr else {
                down.push((name, "no metrics_listen in the configuration".to_string()));
                continue;
            };
            match scrape(addr) {
                Ok(now) => {
                    let at = Instant::now();
                    let (b, secs) = match prev.as_ref() {
                        Some((t0, b)) => (Some(b.as_slice()), at.duration_since(*t0).as_secs_f64()),
                        None => (None, 0.0),
                    };
                    all.extend(rows(&t.worker, &now, b, secs));
                    *prev = Some((at, now));
                }
                Err(e) => {
                    *prev = None;
                    down.push((name, e));
                }
            }
        }
        // --once: the first scrape only primes the rates.
        if !(a.once && first) {
            let at = verity_tools::unix_ns();
            let text = match a.json {
                true => json(at, &all, &down),
                false => table(at, &all, &down),
            };
            let mut out = std::io::stdout().lock();
            if !a.json && !a.once {
                // Clear the screen: a refreshing view.
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::SUCCESS; // stdout closed (a pipe's reader left)
            }
            if a.once {
                return match down.iter().any(|d| !d.1.starts_with("no metrics_listen")) {
                    true => ExitCode::from(1),
                    false => ExitCode::SUCCESS,
                };
            }
        }
        first = false;
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_worker_serves() {
        let s = parse(
            "# HELP x y\n# TYPE x counter\nx_total{node=\"1\",worker=\"w\\\"1\",to=\"node 2\"} 42\nup 1\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels["worker"], "w\"1");
        assert_eq!(s[0].labels["to"], "node 2");
        assert_eq!(s[0].value, 42.0);
        assert!(s[1].labels.is_empty());
    }

    #[test]
    fn rates_come_from_two_scrapes() {
        let a =
            parse("verity_epoch{node=\"3\"} 1\nverity_records_accepted_total{node=\"3\"} 100\n");
        let b =
            parse("verity_epoch{node=\"3\"} 1\nverity_records_accepted_total{node=\"3\"} 300\n");
        let r = rows("w1", &b, Some(&a), 2.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].accepted_rate, 100.0);
        assert_eq!(r[0].accepted, 300.0);
        let t = table(0, &r, &[("w2".into(), "127.0.0.1:1: refused".into())]);
        assert!(
            t.contains("w1") && t.contains("ready") && t.contains("w2") && t.contains("DOWN"),
            "{t}"
        );
        let j = json(5, &r, &[]);
        assert!(
            j.starts_with("{\"time_ns\":5,\"worker\":\"w1\",\"node\":3,"),
            "{j}"
        );
    }
}
