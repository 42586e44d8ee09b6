//! The Prometheus text format (0.0.4) of the metrics' samples: every
//! family once, `# HELP` and `# TYPE` before its lines (docs/METRICS.md
//! lists them).

use std::fmt::Write as _;

use super::metrics_sample::{Histogram, Sample, BUCKETS, FAULT_KINDS};
use super::stalls::Doing;

/// Metric families in the order first seen, each with its lines.
#[derive(Default)]
struct Families {
    order: Vec<&'static str>,
    lines: std::collections::HashMap<&'static str, (&'static str, &'static str, String)>,
}

impl Families {
    fn family(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> &mut String {
        if !self.lines.contains_key(name) {
            self.order.push(name);
        }
        &mut self
            .lines
            .entry(name)
            .or_insert((kind, help, String::new()))
            .2
    }

    fn point(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &str,
        v: f64,
    ) {
        let out = self.family(name, kind, help);
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: &str, v: u64) {
        self.point(name, "counter", help, labels, v as f64);
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: &str, v: f64) {
        self.point(name, "gauge", help, labels, v);
    }

    fn histogram(&mut self, name: &'static str, help: &'static str, labels: &str, h: &Histogram) {
        let out = self.family(name, "histogram", help);
        let mut cum = 0;
        for (i, c) in h.counts.iter().enumerate() {
            cum += c;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
    }

    fn finish(self) -> String {
        let mut s = String::new();
        for name in self.order {
            if let Some((kind, help, lines)) = self.lines.get(name) {
                let _ = writeln!(s, "# HELP {name} {help}");
                let _ = writeln!(s, "# TYPE {name} {kind}");
                s.push_str(lines);
            }
        }
        s
    }
}

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text format of `samples`.
pub fn render(samples: &[Sample], version: &str) -> String {
    let mut f = Families::default();
    f.gauge(
        "verity_build_info",
        "Always 1; the labels say which build runs.",
        &format!("version=\"{}\"", esc(version)),
        1.0,
    );
    for s in samples {
        let l = format!(
            "node=\"{}\",worker=\"{}\",shard=\"{}\"",
            s.node,
            esc(&s.worker),
            s.shard
        );
        f.gauge(
            "verity_node_info",
            "Always 1; the labels name the node's app.",
            &format!("{l},app=\"{}\"", esc(&s.app)),
            1.0,
        );
        f.gauge(
            "verity_epoch",
            "This instance's epoch (one more at every start).",
            &l,
            s.epoch as f64,
        );
        traffic(&mut f, &l, s);
        storage(&mut f, &l, s);
        channels(&mut f, &l, s);
    }
    f.finish()
}

/// Records, frames, connections and resends.
fn traffic(f: &mut Families, l: &str, s: &Sample) {
    f.counter(
        "verity_records_accepted_total",
        "Records accepted from sources and other nodes (journaled), since the process started.",
        l,
        s.core.accepted,
    );
    f.counter(
        "verity_duplicates_dropped_total",
        "Frames dropped as duplicates (seq already accepted).",
        l,
        s.core.duplicates,
    );
    f.counter(
        "verity_gaps_nacked_total",
        "Gaps seen on an inbound channel (a NACK asks for the missing seqs).",
        l,
        s.core.gaps,
    );
    f.counter(
        "verity_dead_letters_total",
        "Records the app refused (kept in the dead-letter log).",
        l,
        s.core.dead_letters,
    );
    f.counter(
        "verity_outputs_total",
        "Outputs produced by the app.",
        l,
        s.core.outputs,
    );
    f.counter(
        "verity_records_forwarded_total",
        "Records forwarded to the node that owns their key.",
        l,
        s.core.forwarded,
    );
    f.counter(
        "verity_protocol_violations_total",
        "Frames that broke the protocol (the connection was closed).",
        l,
        s.core.violations,
    );
    f.counter(
        "verity_bad_frames_total",
        "Frames that did not decode (bad CRC, bad header).",
        l,
        s.bad_frames,
    );
    for (kind, v) in [
        ("source", s.sources_accepted),
        ("sink", s.sink_connects),
        ("peer", s.peer_connects),
    ] {
        f.counter(
            "verity_connections_total",
            "Connections established, by kind (source: accepted; sink and peer: dialed).",
            &format!("{l},kind=\"{kind}\""),
            v,
        );
    }
    for (reason, v) in [
        ("auth_failed", s.auth_refused),
        ("stale_epoch", s.stale_epoch_refused),
        ("tls_failed", s.tls_failed),
        ("limit", s.refused_limit),
    ] {
        f.counter(
            "verity_handshake_failures_total",
            "Connections refused or closed before serving, by reason.",
            &format!("{l},reason=\"{reason}\""),
            v,
        );
    }
    f.counter(
        "verity_nacks_received_total",
        "NACKs received from consumers (sink, other nodes).",
        l,
        s.nacks_received,
    );
    for (cause, v) in [
        ("nack", s.resends_nack),
        ("resume", s.resends_resume),
        ("timeout", s.resends_timeout),
    ] {
        f.counter(
            "verity_resends_total",
            "Times an outbound channel went back to resend, by cause.",
            &format!("{l},cause=\"{cause}\""),
            v,
        );
    }
}

/// The logs, snapshots, backpressure, recovery, the fault shim and the
/// latency histograms.
fn storage(f: &mut Families, l: &str, s: &Sample) {
    f.gauge(
        "verity_journal_records",
        "Records in the journal (its next index).",
        l,
        s.journal_records as f64,
    );
    f.gauge(
        "verity_journal_bytes",
        "Bytes of journal kept on disk (first to last record).",
        l,
        s.journal_bytes as f64,
    );
    f.gauge(
        "verity_journal_durable_lag_bytes",
        "Journal bytes appended but not yet durable (fsync durability; 0 with process).",
        l,
        s.durable_lag_bytes as f64,
    );
    f.gauge(
        "verity_dead_letter_records",
        "Records in the dead-letter log.",
        l,
        s.dead_letter_records as f64,
    );
    f.gauge(
        "verity_dead_letter_bytes",
        "Bytes of the dead-letter log.",
        l,
        s.dead_letter_bytes as f64,
    );
    f.counter(
        "verity_snapshots_total",
        "Snapshots written.",
        l,
        s.snapshots,
    );
    f.gauge(
        "verity_snapshot_age_seconds",
        "Seconds since this process last wrote a snapshot (since start when none).",
        l,
        s.snapshot_age_seconds,
    );
    f.point(
        "verity_backpressure_seconds_total",
        "counter",
        "Seconds the core refused input (full outbound windows) since the process started.",
        l,
        s.backpressure_seconds,
    );
    f.gauge(
        "verity_backpressured",
        "1 while the core refuses input.",
        l,
        if s.backpressured { 1.0 } else { 0.0 },
    );
    f.gauge(
        "verity_recovery_seconds",
        "How long the start took: snapshot restore and journal replay.",
        l,
        s.recovery_seconds,
    );
    f.gauge(
        "verity_recovery_replayed_records",
        "Journal records replayed at start.",
        l,
        s.replayed as f64,
    );
    for (kind, v) in FAULT_KINDS.iter().zip(s.faults) {
        f.counter(
            "verity_fault_decisions_total",
            "Fault-shim decisions ([faults]), by kind.",
            &format!("{l},kind=\"{kind}\""),
            v,
        );
    }
    f.histogram(
        "verity_accept_to_durable_seconds",
        "From a read batch's accept to its journal records being durable (one observation per batch).",
        l,
        &s.accept_to_durable,
    );
    f.histogram(
        "verity_accept_to_released_seconds",
        "From a read batch's accept to its outputs handed to their consumers' connections (one observation per batch).",
        l,
        &s.accept_to_released,
    );
    for (d, v) in Doing::ALL.iter().zip(s.stalls) {
        f.counter(
            "verity_loop_stalls_total",
            "Event-loop iterations of 1 ms or more, by what took most of them.",
            &format!("{l},doing=\"{}\"", d.name()),
            v,
        );
    }
    f.histogram(
        "verity_loop_iteration_seconds",
        "How long each event-loop iteration worked (from the poll's return to the next poll).",
        l,
        &s.loop_iteration,
    );
}

/// Per inbound and outbound channel.
fn channels(f: &mut Families, l: &str, s: &Sample) {
    for c in &s.inbound {
        f.gauge(
            "verity_in_channel_delivered_seq",
            "Highest seq accepted on an inbound channel.",
            &format!("{l},channel=\"{}\"", c.channel),
            c.delivered as f64,
        );
    }
    for o in &s.outbound {
        let cl = format!("{l},channel=\"{}\",to=\"{}\"", o.channel, esc(&o.to));
        for (name, help, v) in [
            (
                "verity_out_channel_produced_seq",
                "Highest seq produced on an outbound channel.",
                o.produced,
            ),
            (
                "verity_out_channel_released_seq",
                "Highest seq released (its journal records durable).",
                o.released,
            ),
            (
                "verity_out_channel_sent_seq",
                "Highest seq handed to the consumer's connection.",
                o.sent,
            ),
            (
                "verity_out_channel_acked_seq",
                "Highest seq the consumer ACKed.",
                o.acked,
            ),
            (
                "verity_out_channel_unacked_frames",
                "Frames produced and not yet ACKed by the consumer (kept in the outbound log).",
                o.unacked,
            ),
            (
                "verity_out_channel_log_bytes",
                "Bytes of the outbound log.",
                o.log_bytes,
            ),
        ] {
            f.gauge(name, help, &cl, v as f64);
        }
        f.gauge(
            "verity_out_channel_connected",
            "1 while the consumer is connected and RESUMEd.",
            &cl,
            if o.connected { 1.0 } else { 0.0 },
        );
        f.counter(
            "verity_out_channel_connects_total",
            "Connections made to the consumer.",
            &cl,
            o.connects,
        );
    }
}
