//! `verity config check FILE [--name W]` validates a node.toml or a
//! cluster.toml as a worker would at start (every key, every file it
//! names: secrets, certificates), for every worker of a cluster or the one
//! named. `verity config show FILE [--name W]` prints the effective
//! configuration of each node, defaults filled in (secrets never shown).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::{is_cluster_file, ClusterToml, ConfigError, NodeToml};
use crate::registry::Registry;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 valid; 1 the configuration is invalid (the error names the file and key); 2 usage error or the file cannot be read."
)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub what: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE (node.toml or cluster.toml) as a worker would at start.
    Check(FileArgs),
    /// Print the effective configuration of each node, defaults filled in.
    Show(FileArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// node.toml or cluster.toml.
    pub file: PathBuf,
    /// Of a cluster.toml: only this worker (default: every worker).
    #[arg(long)]
    pub name: Option<String>,
}

/// The nodes `f` describes: (worker name, its nodes), or the error.
fn load(f: &FileArgs, apps: &Registry) -> Result<Vec<(String, Vec<NodeToml>)>, ConfigError> {
    if !is_cluster_file(&f.file) {
        if let Some(name) = &f.name {
            return Err(ConfigError {
                file: f.file.clone(),
                key: String::new(),
                message: format!("--name {name}: this is a node.toml, not a cluster.toml"),
            });
        }
        return NodeToml::load(&f.file, apps).map(|n| vec![(String::new(), vec![n])]);
    }
    let c = ClusterToml::load(&f.file, apps)?;
    let names: Vec<String> = match &f.name {
        Some(n) => vec![n.clone()],
        None => c.workers.iter().map(|w| w.name.clone()).collect(),
    };
    names
        .into_iter()
        .map(|n| Ok((n.clone(), c.node_tomls(&n, &f.file)?)))
        .collect()
}

pub fn run(a: &ConfigArgs, bin: &str, apps: &Registry) -> ExitCode {
    let (f, show) = match &a.what {
        ConfigCommand::Check(f) => (f, false),
        ConfigCommand::Show(f) => (f, true),
    };
    if let Err(e) = std::fs::File::open(&f.file) {
        eprintln!("{bin} config: {}: cannot read: {e}", f.file.display());
        return ExitCode::from(2);
    }
    let workers = match load(f, apps) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{bin} config: INVALID {e}");
            return ExitCode::from(1);
        }
    };
    if show {
        for (_, nodes) in &workers {
            for n in nodes {
                print!("{}", effective(n, &f.file));
            }
        }
        return ExitCode::SUCCESS;
    }
    let nodes: usize = workers.iter().map(|w| w.1.len()).sum();
    let first = &workers[0].1[0];
    let what = match first.cluster.as_ref() {
        None => format!("node {}", first.node_id),
        Some(_) => format!(
            "cluster {}, worker(s) {}, {nodes} node(s)",
            first.cluster_id,
            workers
                .iter()
                .map(|w| w.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!("config: OK {}: {what}, app {}", f.file.display(), first.app);
    ExitCode::SUCCESS
}

/// One node's effective configuration, as TOML-like text.
pub fn effective(n: &NodeToml, file: &Path) -> String {
    let mut t = String::new();
    let who = match &n.cluster {
        None => format!("node {}", n.node_id),
        Some(c) => format!("worker {}, shard {}, node {}", c.worker, c.shard, c.node),
    };
    let _ = writeln!(
        t,
        "# {}: {who} (effective: every key, defaults filled in)",
        file.display()
    );
    let _ = writeln!(t, "[node]");
    let _ = writeln!(t, "app = \"{}\"", n.app);
    let _ = writeln!(t, "data_dir = {:?}", n.data_dir.display().to_string());
    let _ = writeln!(t, "listen = \"{}\"", n.listen);
    let _ = writeln!(t, "sink = \"{}\"", n.sink);
    let _ = writeln!(t, "node_id = {}", n.node_id);
    let _ = writeln!(t, "cluster_id = {}", n.cluster_id);
    let durability = match n.durability {
        crate::log::Durability::Process => "process",
        crate::log::Durability::Fsync => "fsync",
    };
    let _ = writeln!(t, "durability = \"{durability}\"");
    let _ = writeln!(
        t,
        "snapshot_interval_records = {}",
        n.snapshot_interval_records
    );
    let _ = writeln!(t, "audit = {}", n.audit);
    let _ = writeln!(
        t,
        "client_secret = \"{}\"",
        if n.client_secret.is_some() {
            "(set)"
        } else {
            "(none)"
        }
    );
    let _ = writeln!(t, "allow_unauthenticated = {}", n.allow_unauthenticated);
    match n.metrics_listen {
        Some(m) => {
            let _ = writeln!(t, "metrics_listen = \"{m}\"");
        }
        None => t.push_str("# metrics_listen: off\n"),
    }
    match n.cpu {
        Some(c) => {
            let _ = writeln!(t, "cpu_affinity = [{c}]");
        }
        None => t.push_str("# cpu_affinity: not pinned\n"),
    }
    let _ = writeln!(t, "lock_memory = {}", n.lock_memory);
    let _ = writeln!(t, "idle = \"{}\"", n.idle.name());
    if let Some(c) = &n.cluster {
        let _ = writeln!(t, "# node-to-node address {}", c.address);
    }
    let _ = writeln!(t, "[limits]");
    for (k, v) in n.limits.entries() {
        let _ = writeln!(t, "{k} = {v}");
    }
    if let Some(tls) = &n.tls {
        let _ = writeln!(t, "[tls]");
        let _ = writeln!(t, "cert_file = {:?}", tls.cert_file.display().to_string());
        let _ = writeln!(t, "key_file = {:?}", tls.key_file.display().to_string());
        let _ = writeln!(t, "ca_file = {:?}", tls.ca_file.display().to_string());
        let _ = writeln!(t, "nodes = {}", tls.nodes);
        let _ = writeln!(t, "clients = {}", tls.clients);
        let _ = writeln!(t, "require_client_cert = {}", tls.require_client_cert);
    }
    t.push('\n');
    t
}
