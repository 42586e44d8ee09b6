//! `verity trace` (and `verity-trace`): the path of one message through a cluster, from the logs
//! the nodes already keep (journals, forwarding logs, outbound logs, dead
//! letters), read without locking or changing them.
//!
//! - `verity-trace --config cluster.toml 2:57` (source channel 2, seq 57;
//!   or the trace id as `0x…` or decimal)
//! - `verity-trace --config cluster.toml --output 1001:17`: the lineage of
//!   output seq 17 of sink channel 1001, back to its input
//! - `verity-trace --data-dir w1 --data-dir w2 ID`: directories instead of
//!   a configuration (labelled by directory name)
//!
//! Exit 0: found; 1: nothing in the retained logs; 2: bad arguments or files.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::registry::Registry;
use crate::trace::{nodes_of_config, output_trace_id, parse_trace_id, trace, NodeDir};

/// The flags of `verity trace` and `verity-trace`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Exit status: 0 the message was found; 1 nothing about it in the retained logs; 2 bad arguments, configuration or files."
)]
pub struct TraceArgs {
    /// The trace id: SOURCE_CHANNEL:SEQ, 0xHEX or decimal.
    #[arg(required_unless_present = "output")]
    pub id: Option<String>,
    /// Start from this output instead: SINK_CHANNEL:SEQ.
    #[arg(long, conflicts_with = "id")]
    pub output: Option<String>,
    /// node.toml or cluster.toml: every node's data directory.
    #[arg(long, required_unless_present = "data_dir")]
    pub config: Option<PathBuf>,
    /// A node's data directory (repeat for several).
    #[arg(long, conflicts_with = "config")]
    pub data_dir: Vec<PathBuf>,
    /// JSON Lines: one object per event (tools/FORMATS.md); nothing else
    /// on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Prints the path of the message `a` names; exit 0 found, 1 nothing in
/// the retained logs, 2 bad arguments or files.
pub fn run(a: &TraceArgs, me: &str, apps: &Registry) -> ExitCode {
    let nodes = match &a.config {
        Some(path) => match nodes_of_config(path, apps) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{me}: bad configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => a
            .data_dir
            .iter()
            .enumerate()
            .map(|(i, d)| NodeDir {
                label: d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("dir{i}")),
                node: i as u32,
                data_dir: d.clone(),
            })
            .collect(),
    };
    let id = match (&a.id, &a.output) {
        (Some(id), _) => match parse_trace_id(id) {
            Some(id) => id,
            None => {
                eprintln!("{me}: {id:?} is not CHANNEL:SEQ, 0xHEX or a number");
                return ExitCode::from(2);
            }
        },
        (None, Some(out)) => {
            let parsed = out
                .split_once(':')
                .and_then(|(c, s)| Some((c.parse::<u32>().ok()?, s.parse::<u64>().ok()?)));
            let Some((channel, seq)) = parsed else {
                eprintln!("{me}: --output {out:?} is not CHANNEL:SEQ");
                return ExitCode::from(2);
            };
            match output_trace_id(&nodes, channel, seq) {
                Ok(Some(id)) => {
                    if !a.json {
                        println!("output channel {channel} seq {seq} has trace id {id:#x}");
                    }
                    id
                }
                Ok(None) => {
                    println!("output channel {channel} seq {seq} is not in the retained outbound logs (they keep frames until the sink ACKs them)");
                    return ExitCode::from(1);
                }
                Err(e) => {
                    eprintln!("{me}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (None, None) => return ExitCode::from(2),
    };
    if !a.json {
        println!(
            "trace {id:#x} (source channel {}, seq {})",
            id >> crate::trace::TRACE_SEQ_BITS,
            id & ((1 << crate::trace::TRACE_SEQ_BITS) - 1)
        );
    }
    match trace(&nodes, id) {
        Ok(events) if events.is_empty() => {
            let text = format!("nothing in the retained logs of {} node(s) (a journal keeps the records since the older of its two snapshots)", nodes.len());
            match a.json {
                true => eprintln!("{me}: {text}"),
                false => println!("{text}"),
            }
            ExitCode::from(1)
        }
        Ok(events) => {
            for e in &events {
                match a.json {
                    true => println!("{}", e.to_json(id)),
                    false => println!("  {e}"),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{me}: {e}");
            ExitCode::from(2)
        }
    }
}
