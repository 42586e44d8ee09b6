//! `verity-trace`: the path of one message through a cluster, from the logs
//! every node already keeps (DESIGN §8). A DATA frame's trace id is set at
//! the source and inherited by everything derived from it, so one id finds:
//!
//! - where the source record was accepted (a journal: node, clock reading,
//!   channel, seq, journal position);
//! - where it was forwarded (a `forward-N` log: to which node, under which
//!   seq) and accepted again (that node's journal);
//! - the outputs it produced (an `outbound` log: sink channel, seq, payload)
//!   and any dead letter it became (with the reason).
//!
//! `--output CHANNEL:SEQ` starts from an output instead: its trace id names
//! the input it came from (its lineage). Reads with `log::OfflineLog`:
//! nothing is locked or changed. Only what the logs still retain is found
//! (a journal keeps the records since the older of its two snapshots; an
//! outbound log keeps frames until the consumer ACKs them).

use std::path::{Path, PathBuf};

use crate::core::peer_of;
use crate::log::{LogError, OfflineLog};
use crate::storage::datadir::{DEAD_LETTER_LOG, FORWARD_LOG_PREFIX, JOURNAL_LOG, OUTBOUND_LOG};
use crate::storage::{DeadLetterRecord, RecordKind};
use verity_wire::frames::frames;

/// Bits of a trace id below the source channel (as `verity-send` assigns
/// them: `channel << 40 | seq`).
pub const TRACE_SEQ_BITS: u32 = 40;

/// One node's data directory, and how to call it in the output.
#[derive(Debug, Clone)]
pub struct NodeDir {
    pub label: String,
    pub node: u32,
    pub data_dir: PathBuf,
}

/// Something a log says happened to the traced message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The node's label.
    pub at: String,
    /// Clock reading (ns since the Unix epoch) of the record; 0 if the log
    /// holds none.
    pub clock_ns: u64,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A journal accepted the frame (from a source, or from node `from`).
    Accepted {
        channel: u32,
        seq: u64,
        from: Option<u32>,
        position: u64,
    },
    /// A `forward-N` log holds the frame sent on to node `to`.
    Forwarded { to: u32, channel: u32, seq: u64 },
    /// An outbound log holds an output frame.
    Output {
        channel: u32,
        seq: u64,
        payload: Vec<u8>,
    },
    /// The record became a dead letter.
    DeadLetter {
        channel: u32,
        seq: u64,
        journal_index: u64,
        reason: String,
    },
}

impl Event {
    /// The event as one JSON object (`--json`, tools/FORMATS.md).
    pub fn to_json(&self, trace_id: u64) -> String {
        let o = verity_wire::json::Obj::new()
            .int("trace_id", trace_id)
            .str("at", &self.at)
            .int("time_ns", self.clock_ns);
        match &self.what {
            What::Accepted {
                channel,
                seq,
                from,
                position,
            } => {
                let o = o
                    .str("event", "accepted")
                    .int("channel", *channel as u64)
                    .int("seq", *seq)
                    .int("position", *position);
                match from {
                    Some(n) => o.int("from_node", *n as u64),
                    None => o,
                }
            }
            What::Forwarded { to, channel, seq } => o
                .str("event", "forwarded")
                .int("to_node", *to as u64)
                .int("channel", *channel as u64)
                .int("seq", *seq),
            What::Output {
                channel,
                seq,
                payload,
            } => o
                .str("event", "output")
                .int("channel", *channel as u64)
                .int("seq", *seq)
                .str("payload_hex", &verity_wire::hex::hex(payload)),
            What::DeadLetter {
                channel,
                seq,
                journal_index,
                reason,
            } => o
                .str("event", "dead_letter")
                .int("channel", *channel as u64)
                .int("seq", *seq)
                .int("journal_index", *journal_index)
                .str("reason", reason),
        }
        .build()
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clock = if self.clock_ns > 0 {
            verity_wire::time::rfc3339_ns(self.clock_ns)
        } else {
            "-".repeat(30)
        };
        write!(f, "{clock}  {:<10} ", self.at)?;
        match &self.what {
            What::Accepted {
                channel,
                seq,
                from,
                position,
            } => match from {
                None => write!(
                    f,
                    "accepted from source channel {channel} seq {seq} (journal position {position})"
                ),
                Some(n) => write!(
                    f,
                    "accepted from node {n} on channel {channel} seq {seq} (journal position {position})"
                ),
            },
            What::Forwarded { to, channel, seq } => {
                write!(f, "forwarded to node {to} on channel {channel} seq {seq}")
            }
            What::Output {
                channel,
                seq,
                payload,
            } => {
                write!(
                    f,
                    "output on channel {channel} seq {seq}, {} bytes: {}",
                    payload.len(),
                    verity_wire::hex::preview(payload, 48)
                )
            }
            What::DeadLetter {
                channel,
                seq,
                journal_index,
                reason,
            } => write!(
                f,
                "dead letter: channel {channel} seq {seq} (journal record {journal_index}): {reason}"
            ),
        }
    }
}

/// Parses a trace id: decimal, `0x…` hex, or `CHANNEL:SEQ` of a source.
pub fn parse_trace_id(s: &str) -> Option<u64> {
    if let Some((c, q)) = s.split_once(':') {
        let (c, q) = (c.parse::<u64>().ok()?, q.parse::<u64>().ok()?);
        if c >= 1 << (64 - TRACE_SEQ_BITS) || q >= 1 << TRACE_SEQ_BITS {
            return None;
        }
        return Some(c << TRACE_SEQ_BITS | q);
    }
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Every frame of every log of `node` whose trace id is `id`, as events.
fn scan_node(node: &NodeDir, id: u64, events: &mut Vec<Event>) -> Result<(), LogError> {
    let listing = match std::fs::read_dir(&node.data_dir) {
        Ok(l) => l,
        Err(e) => {
            // Another machine's node, or one never started: the others
            // still tell their part.
            eprintln!(
                "verity-trace: {} ({}): skipped: {e}",
                node.label,
                node.data_dir.display()
            );
            return Ok(());
        }
    };
    let mut logs: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    logs.sort();
    for dir in logs {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let kind = match name.as_str() {
            JOURNAL_LOG => 0,
            OUTBOUND_LOG => 1,
            DEAD_LETTER_LOG => 3,
            n if n.starts_with(FORWARD_LOG_PREFIX) => 2,
            _ => continue,
        };
        let log = OfflineLog::open(&dir)?;
        let mut reader = log.reader(log.first_position());
        while let Some(r) = reader.next_record()? {
            if kind == 3 {
                if r.kind == RecordKind::DeadLetter.code() {
                    if let Some(e) = dead_letter(node, r.payload, id) {
                        events.push(e);
                    }
                }
                continue;
            }
            // Journals also hold audit seals: only input records carry frames.
            if kind == 0 && r.kind != RecordKind::Input.code() {
                continue;
            }
            for f in frames(r.payload) {
                if f.header.trace_id() != id {
                    continue;
                }
                let (channel, seq) = (f.header.channel(), f.seq);
                let what = match kind {
                    0 => What::Accepted {
                        channel,
                        seq,
                        from: peer_of(channel).map(|(from, _)| from),
                        position: r.position,
                    },
                    2 => What::Forwarded {
                        to: peer_of(channel).map_or(0, |(_, to)| to),
                        channel,
                        seq,
                    },
                    _ => What::Output {
                        channel,
                        seq,
                        payload: f.payload().to_vec(),
                    },
                };
                events.push(Event {
                    at: node.label.clone(),
                    clock_ns: r.timestamp,
                    what,
                });
            }
        }
    }
    Ok(())
}

/// Everything the nodes' logs hold about trace id `id`, in clock order
/// (records without a clock reading keep their place after their node's).
pub fn trace(nodes: &[NodeDir], id: u64) -> Result<Vec<Event>, LogError> {
    let mut events = Vec::new();
    for n in nodes {
        scan_node(n, id, &mut events)?;
    }
    // Accepted before forwarded before output at equal clocks.
    let rank = |w: &What| match w {
        What::Accepted { from: None, .. } => 0,
        What::Forwarded { .. } => 1,
        What::Accepted { .. } => 2,
        What::DeadLetter { .. } => 3,
        What::Output { .. } => 4,
    };
    // Records without a clock reading (logs from before outputs carried
    // one) after those with.
    events.sort_by_key(|e| (e.clock_ns == 0, e.clock_ns, rank(&e.what)));
    Ok(events)
}

/// The trace id of output `seq` on channel `channel`, from the nodes'
/// outbound logs (`None`: not retained).
pub fn output_trace_id(nodes: &[NodeDir], channel: u32, seq: u64) -> Result<Option<u64>, LogError> {
    for n in nodes {
        let dir = n.data_dir.join(OUTBOUND_LOG);
        if !dir.is_dir() {
            continue;
        }
        let log = OfflineLog::open(&dir)?;
        let mut reader = log.reader(log.first_position());
        while let Some(r) = reader.next_record()? {
            for f in frames(r.payload) {
                if f.seq == seq && f.header.channel() == channel {
                    return Ok(Some(f.header.trace_id()));
                }
            }
        }
    }
    Ok(None)
}

/// A dead-letter record if it is of trace id `id`.
fn dead_letter(node: &NodeDir, p: &[u8], id: u64) -> Option<Event> {
    let d = DeadLetterRecord::decode(p)?;
    if d.trace_id != id {
        return None;
    }
    Some(Event {
        at: node.label.clone(),
        clock_ns: 0,
        what: What::DeadLetter {
            channel: d.channel,
            seq: d.seq,
            journal_index: d.journal_index,
            reason: d.reason_text().into_owned(),
        },
    })
}

/// The nodes of a configuration: a node.toml's single node, or every shard
/// of every worker of a cluster.toml.
pub fn nodes_of_config(
    path: &Path,
    apps: &crate::registry::Registry,
) -> Result<Vec<NodeDir>, crate::config::ConfigError> {
    use crate::config::ClusterToml;
    use crate::config::NodeToml;
    if crate::config::is_cluster_file(path) {
        // The data directories only: no secret is read.
        let c = ClusterToml::load(path, apps)?;
        return Ok(c
            .nodes()
            .into_iter()
            .map(|n| {
                let w = &c.workers[n.worker];
                let (label, data_dir) = if w.shards > 1 {
                    (
                        format!("{}/{}", w.name, n.shard),
                        w.data_dir.join(format!("shard-{}", n.shard)),
                    )
                } else {
                    (w.name.clone(), w.data_dir.clone())
                };
                NodeDir {
                    label,
                    node: n.index,
                    data_dir,
                }
            })
            .collect());
    }
    let n = NodeToml::load(path, apps)?;
    Ok(vec![NodeDir {
        label: "node".into(),
        node: 0,
        data_dir: n.data_dir,
    }])
}
