//! `verity oracle`: the generic oracle (`crate::harness::oracle`) over a real run:
//! every node of a node.toml or cluster.toml replayed from its data
//! directory, judged against what the sink holds (a received file, or the
//! table of `verity sink-postgres`).

use std::path::PathBuf;
use std::process::ExitCode;

use verity_tools::formats::read_received;

use crate::config::{ClusterToml, NodeToml};
use crate::harness::oracle::judge;
use crate::registry::Registry;
use crate::replay::Output;

/// Judge a run of any app from outside: sources accepted once, outputs
/// equal to an offline replay of every node's journal.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Exit status: 0 PASS; 1 FAIL (a source record not journaled exactly once, or an \
output lost, duplicated, wrong or unexpected against the replay); 2 bad \
arguments, configuration, or a file or data directory it cannot read. The \
first stdout line is `check: PASS|FAIL app=... expected=... received=... \
lost=... duplicated=... reordered=... wrong=... unexpected=...`.")]
pub struct OracleArgs {
    /// node.toml, or cluster.toml (every worker and shard is replayed).
    #[arg(long)]
    pub config: PathBuf,
    /// The received file (verity-recv's format).
    #[arg(
        long,
        required_unless_present = "postgres",
        conflicts_with = "postgres"
    )]
    pub received: Option<PathBuf>,
    /// Instead: the table of the sink whose config file this is.
    #[arg(long, value_name = "SINK_TOML")]
    pub postgres: Option<PathBuf>,
    /// Records a source sent, as CHANNEL=COUNT; once per source.
    #[arg(long = "sent", value_name = "CHANNEL=COUNT", value_parser = parse_sent, required = true)]
    pub sent: Vec<(u32, u64)>,
}

fn parse_sent(s: &str) -> Result<(u32, u64), String> {
    let (c, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not CHANNEL=COUNT"))?;
    Ok((
        c.trim()
            .parse()
            .map_err(|e| format!("channel {c:?}: {e}"))?,
        n.trim().parse().map_err(|e| format!("count {n:?}: {e}"))?,
    ))
}

pub fn run(
    a: &OracleArgs,
    me: &str,
    apps: &Registry,
    rows: &verity_tools::pg::Mappings,
) -> ExitCode {
    let cfgs = match load(&a.config, apps) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{me}: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let exported;
    let received_path = match (&a.received, &a.postgres) {
        (Some(r), _) => r.clone(),
        (None, Some(p)) => match verity_tools::pg::export_temp(p, rows) {
            Ok(e) => {
                exported = e;
                exported.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("{me}: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("{me}: give --received FILE or --postgres SINK_TOML");
            return ExitCode::from(2);
        }
    };
    let received = match read_received(&received_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{me}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut nodes = Vec::new();
    for cfg in &cfgs {
        match crate::replay::regenerate_dir(&cfg.data_dir, cfg) {
            Ok(r) => nodes.push(r),
            Err(e) => {
                eprintln!("{me}: {}: {e}", cfg.data_dir.display());
                return ExitCode::from(2);
            }
        }
    }
    let app = cfgs
        .first()
        .map_or(String::new(), |c| c.app.name().to_owned());
    let (report, coverage) = judge(
        &app,
        &a.sent,
        &nodes,
        received.into_iter().map(|r| {
            (
                r.channel,
                Output {
                    seq: r.seq,
                    trace_id: r.trace_id,
                    payload: r.payload,
                },
            )
        }),
    );
    println!("{report}");
    println!("{coverage}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Every node the file describes: one for a node.toml, each worker's
/// shards for a cluster.toml.
fn load(
    path: &std::path::Path,
    apps: &Registry,
) -> Result<Vec<NodeToml>, crate::config::ConfigError> {
    if crate::config::is_cluster_file(path) {
        let c = ClusterToml::load(path, apps)?;
        let mut v = Vec::new();
        for w in &c.workers {
            v.extend(c.node_tomls(&w.name, path)?);
        }
        Ok(v)
    } else {
        Ok(vec![NodeToml::load(path, apps)?])
    }
}
