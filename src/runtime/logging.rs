//! The worker's log: `tracing` events, filtered RUST_LOG-style, written
//! to stderr one line each, as text or as JSON Lines (`--log-format`).
//! Every line carries a timestamp, the level, and the node, worker, shard
//! and epoch of the event loop (thread) that logged it, so the lines of
//! two shards, or of two incarnations, can be told apart.
//!
//! Text: `2026-12-06T15:55:03.123456789Z INFO  [node=1 worker=w1 shard=0
//! epoch=3] stopped cleanly: accepted=...`.
//! JSON: `{"time_ns":..,"level":"INFO","target":"verity::runtime::node",
//! "node":1,"worker":"w1","shard":0,"epoch":3,"event":"stopped",
//! "message":"stopped cleanly: ..", ..fields}` (tools/FORMATS.md lists
//! the events).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use verity_wire::json::string as json_str;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who is logging: set by each event loop's thread.
#[derive(Debug, Clone, Default)]
struct Who {
    node: Option<u32>,
    worker: String,
    shard: Option<u32>,
    epoch: Option<u32>,
}

thread_local! {
    static WHO: RefCell<Who> = RefCell::new(Who::default());
}

/// The calling thread logs for node `node` (of `worker`, shard `shard`).
pub fn set_node(node: u32, worker: &str, shard: u32) {
    WHO.with(|w| {
        let mut w = w.borrow_mut();
        w.node = Some(node);
        w.worker = worker.to_string();
        w.shard = Some(shard);
    });
}

/// The calling thread's node runs at `epoch` (known once its data
/// directory is open).
pub fn set_epoch(epoch: u32) {
    WHO.with(|w| w.borrow_mut().epoch = Some(epoch));
}

/// Installs the process's logger: `filter` (RUST_LOG syntax: `info`,
/// `warn,verity::runtime::outbound=debug`), else the `RUST_LOG`
/// environment variable, else `info`. Errors name what did not parse.
pub fn init(format: LogFormat, filter: Option<&str>) -> Result<(), String> {
    let spec = match filter {
        Some(f) => f.to_string(),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    };
    let targets: Targets = spec
        .parse()
        .map_err(|e| format!("log filter {spec:?}: {e}"))?;
    let subscriber = tracing_subscriber::registry()
        .with(Lines { format })
        .with(targets);
    // A second init (tests, a library caller) keeps the first logger.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// The layer that writes each event as one line.
struct Lines {
    format: LogFormat,
}

/// An event's fields, as visited.
#[derive(Default)]
struct Fields {
    message: String,
    /// (name, value, value is a number or boolean: unquoted in JSON).
    rest: Vec<(&'static str, String, bool)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name => self.rest.push((name, format!("{value:?}"), false)),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            name => self.rest.push((name, value.to_string(), false)),
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest.push((field.name(), value.to_string(), true));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest.push((field.name(), value.to_string(), true));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest.push((field.name(), value.to_string(), true));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.rest
            .push((field.name(), value.to_string(), value.is_finite()));
    }
}

/// One line of `event` in `format` (with its newline).
fn line(format: LogFormat, event: &Event<'_>, time_ns: u64) -> String {
    let mut f = Fields::default();
    event.record(&mut f);
    let meta = event.metadata();
    let who = WHO.with(|w| w.borrow().clone());
    let mut s = String::new();
    match format {
        LogFormat::Text => {
            let _ = write!(
                s,
                "{} {:<5} ",
                verity_wire::time::rfc3339_ns(time_ns),
                meta.level().as_str()
            );
            let mut tags = Vec::new();
            if let Some(n) = who.node {
                tags.push(format!("node={n}"));
            }
            if !who.worker.is_empty() {
                tags.push(format!("worker={}", who.worker));
            }
            if let Some(sh) = who.shard.filter(|_| !who.worker.is_empty()) {
                tags.push(format!("shard={sh}"));
            }
            if let Some(e) = who.epoch {
                tags.push(format!("epoch={e}"));
            }
            if !tags.is_empty() {
                let _ = write!(s, "[{}] ", tags.join(" "));
            }
            // The message says it all for people; the fields are for
            // machines (JSON).
            s.push_str(&f.message);
        }
        LogFormat::Json => {
            let _ = write!(
                s,
                "{{\"time_ns\":{time_ns},\"level\":\"{}\",\"target\":{}",
                meta.level().as_str(),
                json_str(meta.target())
            );
            if let Some(n) = who.node {
                let _ = write!(s, ",\"node\":{n}");
            }
            if !who.worker.is_empty() {
                let _ = write!(s, ",\"worker\":{}", json_str(&who.worker));
            }
            if let Some(sh) = who.shard {
                let _ = write!(s, ",\"shard\":{sh}");
            }
            if let Some(e) = who.epoch {
                let _ = write!(s, ",\"epoch\":{e}");
            }
            for (k, v, bare) in &f.rest {
                let v = if *bare { v.clone() } else { json_str(v) };
                let _ = write!(s, ",{}:{v}", json_str(k));
            }
            let _ = write!(s, ",\"message\":{}}}", json_str(&f.message));
        }
    }
    s.push('\n');
    s
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let text = line(self.format, event, super::os::now_ns());
        // One write per line: lines of two threads never interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_needs() {
        assert_eq!(json_str("a\"b\\c\nd\u{1b}"), "\"a\\\"b\\\\c\\nd\\u001b\"");
    }

    #[test]
    fn a_bad_filter_is_named() {
        let e = init(LogFormat::Text, Some("info,=[")).unwrap_err();
        assert!(e.contains("log filter"), "{e}");
    }
}
