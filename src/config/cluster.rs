//! `cluster.toml`: one file for the whole cluster (`docs/CONFIG.md`).
//! `verity worker --config cluster.toml --name w2` will start worker `w2`.
//! Bad or inconsistent configuration is an error naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::faults::{Faults, Partition};
use super::limits::{parse_limits, parse_tls, Limits, TlsFiles};
use super::node::{ClusterNode, Idle, NodeToml, PeerAt, SourceHome};
use super::parse::{
    open_warning, parse_root, read_config, read_secret, refuse_open, ClientAddr, ConfigError,
    Secret, Walker,
};
use crate::log::Durability;
use crate::registry::{AppSpec, Registry};
use crate::routing::{Routing, MAX_NODES};

/// One worker process and the nodes (shards) it hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub name: String,
    /// Node-to-node listener.
    pub address: SocketAddr,
    /// The address other workers dial to reach this one (default:
    /// `address`; differs when a proxy or NAT sits between workers).
    pub advertise: SocketAddr,
    /// Source (sender) listener.
    pub sources: SocketAddr,
    pub shards: u32,
    pub data_dir: PathBuf,
    /// The source channels homed at this worker, ascending: from its
    /// `source_channels`, or (when no worker sets that key) channel `c` at
    /// worker `(c - 1) mod W` in file order.
    pub source_channels: Vec<u32>,
    /// Where the worker process serves its metrics over HTTP (off: `None`).
    pub metrics_listen: Option<SocketAddr>,
    /// `cpu_affinity`: shard `i` is pinned to entry `i` mod its length
    /// (empty: not pinned).
    pub cpu_affinity: Vec<usize>,
    /// `lock_memory`: as `node.lock_memory`, for every shard.
    pub lock_memory: bool,
    /// `idle`: as `node.idle`, for every shard.
    pub idle: Idle,
}

impl WorkerSpec {
    /// Node-to-node listeners of the worker's shards: `address`, port + i.
    pub fn node_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        (0..self.shards).map(|i| shifted(self.address, i))
    }

    /// Every address the worker listens on.
    fn ports(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.node_addresses().collect();
        v.push(self.sources);
        v.extend(self.metrics_listen);
        v
    }
}

/// `a` with its port moved up by `by` (callers keep it in range).
fn shifted(mut a: SocketAddr, by: u32) -> SocketAddr {
    a.set_port((a.port() as u32 + by).min(u16::MAX as u32) as u16);
    a
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterToml {
    pub cluster_id: u64,
    pub app: AppSpec,
    pub partitions: u32,
    /// The file holding the cluster secret (HMAC key), resolved against the
    /// configuration file's directory.
    pub secret_file: PathBuf,
    /// Source and sink clients must authenticate with this secret (loaded).
    pub client_secret: Option<Secret>,
    /// `allow_unauthenticated`: sources and the sink may connect without a
    /// client secret on non-loopback addresses.
    pub allow_unauthenticated: bool,
    /// `[tls]`, the same for every worker (each reads the files at the
    /// configured paths on its own host).
    pub tls: Option<TlsFiles>,
    pub sink: SocketAddr,
    pub durability: Durability,
    pub snapshot_interval_records: u64,
    /// Every node keeps a hash chain over its journal.
    pub audit: bool,
    pub workers: Vec<WorkerSpec>,
    pub limits: Limits,
    /// The fault shim's configuration (`[faults]`); `None`: off.
    pub faults: Option<Faults>,
}

/// `[faults]`: the fault shim (`docs/CONFIG.md`).
fn parse_faults(
    w: &Walker<'_>,
    f: &toml::Table,
    workers: &[WorkerSpec],
) -> Result<Faults, ConfigError> {
    w.reject_unknown(
        f,
        "faults",
        &[
            "seed",
            "drop",
            "duplicate",
            "reorder",
            "delay",
            "delay_max_ms",
            "corrupt",
            "close",
            "partition",
        ],
    )?;
    let mut partitions = Vec::new();
    match f.get("partition") {
        None => {}
        Some(toml::Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                let p = format!("faults.partition[{i}]");
                let toml::Value::Table(t) = v else {
                    return Err(w.err(&p, "must be a table ([[faults.partition]])"));
                };
                w.reject_unknown(t, &p, &["a", "b", "start_unix_ms", "end_unix_ms"])?;
                let mut names = [String::new(), String::new()];
                for (k, n) in ["a", "b"].into_iter().zip(names.iter_mut()) {
                    let name = w.req_str(t, &p, k)?;
                    if !workers.iter().any(|s| s.name == name) {
                        return Err(w.err(&format!("{p}.{k}"), format!("no worker {name:?}")));
                    }
                    *n = name.to_owned();
                }
                if names[0] == names[1] {
                    return Err(w.err(&format!("{p}.b"), "must differ from a"));
                }
                let start = w.int(t, &p, "start_unix_ms", 0, 0, i64::MAX as u64)?;
                let end = w.int(t, &p, "end_unix_ms", 0, 0, i64::MAX as u64)?;
                if end <= start {
                    return Err(w.err(&format!("{p}.end_unix_ms"), "must be after start_unix_ms"));
                }
                let [a, b] = names;
                partitions.push(Partition {
                    a,
                    b,
                    start_unix_ms: start,
                    end_unix_ms: end,
                });
            }
        }
        Some(_) => return Err(w.err("faults.partition", "must be an array of tables")),
    }
    Ok(Faults {
        seed: w.int(f, "faults", "seed", 1, 0, i64::MAX as u64)?,
        drop_ppm: w.ppm(f, "faults", "drop")?,
        duplicate_ppm: w.ppm(f, "faults", "duplicate")?,
        reorder_ppm: w.ppm(f, "faults", "reorder")?,
        delay_ppm: w.ppm(f, "faults", "delay")?,
        delay_max_ms: w.int(f, "faults", "delay_max_ms", 20, 1, 60_000)?,
        corrupt_ppm: w.ppm(f, "faults", "corrupt")?,
        close_ppm: w.ppm(f, "faults", "close")?,
        partitions,
    })
}

/// `source_channels` of the `[[worker]]` tables (`workers`, already parsed
/// into `specs`): homes every source channel `1..=S` of `app` at exactly one
/// worker. Without the key anywhere, channel `c` goes to worker
/// `(c - 1) mod W`.
fn home_sources(
    w: &Walker<'_>,
    app: &AppSpec,
    workers: &[toml::Value],
    specs: &mut [WorkerSpec],
) -> Result<(), ConfigError> {
    let names = app.sources();
    let s = names.len();
    let list = || {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{} = {n}", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut home: Vec<Option<usize>> = vec![None; s];
    let mut any = false;
    for (i, v) in workers.iter().enumerate() {
        let Some(value) = v.as_table().and_then(|t| t.get("source_channels")) else {
            continue;
        };
        any = true;
        let key = format!("worker[{i}].source_channels");
        let toml::Value::Array(a) = value else {
            return Err(w.err(
                &key,
                "must be an array of source channel numbers, e.g. [1, 2]",
            ));
        };
        for v in a {
            let c = match v {
                toml::Value::Integer(c) if (1..=s as i64).contains(c) => *c as usize,
                toml::Value::Integer(c) => {
                    return Err(w.err(
                        &key,
                        format!(
                        "unknown source channel {c}: app {app:?} has source channels 1..={s} ({})",
                        list()
                    ),
                    ))
                }
                _ => {
                    return Err(w.err(
                        &key,
                        "must be an array of source channel numbers, e.g. [1, 2]",
                    ))
                }
            };
            match home[c - 1] {
                Some(h) if h == i => {
                    return Err(w.err(&key, format!("lists source channel {c} twice")))
                }
                Some(h) => {
                    return Err(w.err(
                        &key,
                        format!(
                            "source channel {c} is homed twice: already at worker {:?}",
                            specs[h].name
                        ),
                    ))
                }
                None => home[c - 1] = Some(i),
            }
        }
    }
    if !any {
        for (c, h) in home.iter_mut().enumerate() {
            *h = Some(c % specs.len());
        }
    }
    for (c, h) in home.iter().enumerate() {
        let Some(h) = *h else {
            return Err(w.err(
                "worker.source_channels",
                format!(
                    "source channel {} ({}) has no home: list it in the source_channels of one worker (once any worker sets source_channels, every channel 1..={s} needs a home)",
                    c + 1,
                    names[c]
                ),
            ));
        };
        specs[h].source_channels.push(c as u32 + 1);
    }
    Ok(())
}

/// A node of the cluster: worker `worker`, shard `shard`, global index `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef {
    pub index: u32,
    pub worker: usize,
    pub shard: u32,
}

impl ClusterToml {
    /// Reads and checks the file at `path`; its `app` must be one of
    /// `apps`.
    pub fn load(path: &Path, apps: &Registry) -> Result<ClusterToml, ConfigError> {
        ClusterToml::parse(&read_config(path)?, path, apps)
    }

    /// [`ClusterToml::load`] of the text `text` of file `file`.
    pub fn parse(text: &str, file: &Path, apps: &Registry) -> Result<ClusterToml, ConfigError> {
        let w = Walker { file, apps };
        let root = parse_root(text, file)?;
        w.reject_unknown(&root, "", &["cluster", "worker", "limits", "faults", "tls"])?;
        let cluster = match root.get("cluster") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(w.err("cluster", "must be a table")),
            None => return Err(w.err("cluster", "is required")),
        };
        w.reject_unknown(
            cluster,
            "cluster",
            &[
                "id",
                "app",
                "partitions",
                "secret_file",
                "client_secret_file",
                "sink",
                "durability",
                "snapshot_interval_records",
                "audit",
                "allow_unauthenticated",
            ],
        )?;
        let app = w.app(cluster, "cluster")?;
        let durability = w.durability(cluster, "cluster")?;
        let partitions = w.int(cluster, "cluster", "partitions", 4096, 1, 1 << 16)? as u32;
        if !partitions.is_power_of_two() {
            return Err(w.err(
                "cluster.partitions",
                format!("{partitions} is not a power of two"),
            ));
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let secret_file = base.join(w.req_str(cluster, "cluster", "secret_file")?);
        let client_secret = match w.str(cluster, "cluster", "client_secret_file")? {
            None => None,
            Some(f) => Some(read_secret(
                &base.join(f),
                file,
                "cluster.client_secret_file",
            )?),
        };

        let workers = match root.get("worker") {
            Some(toml::Value::Array(a)) => a,
            Some(_) => return Err(w.err("worker", "must be an array of tables ([[worker]])")),
            None => return Err(w.err("worker", "at least one [[worker]] is required")),
        };
        let mut specs: Vec<WorkerSpec> = Vec::new();
        for (i, v) in workers.iter().enumerate() {
            let p = format!("worker[{i}]");
            let toml::Value::Table(t) = v else {
                return Err(w.err(&p, "must be a table"));
            };
            w.reject_unknown(
                t,
                &p,
                &[
                    "name",
                    "address",
                    "advertise",
                    "sources",
                    "shards",
                    "data_dir",
                    "source_channels",
                    "metrics_listen",
                    "cpu_affinity",
                    "lock_memory",
                    "idle",
                ],
            )?;
            let name = w.req_str(t, &p, "name")?.to_owned();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(w.err(
                    &format!("{p}.name"),
                    format!("{name:?}: use letters, digits, - and _"),
                ));
            }
            if specs.iter().any(|s| s.name == name) {
                return Err(w.err(
                    &format!("{p}.name"),
                    format!("duplicate worker name {name:?}"),
                ));
            }
            let address = w.addr(t, &p, "address")?;
            let advertise = if t.contains_key("advertise") {
                w.addr(t, &p, "advertise")?
            } else {
                address
            };
            let sources = w.addr(t, &p, "sources")?;
            let shards = w.int(t, &p, "shards", 1, 1, 64)? as u32;
            // Shard i listens for nodes on address's port + i.
            if address.port() as u32 + shards - 1 > u16::MAX as u32 {
                return Err(w.err(
                    &format!("{p}.address"),
                    format!(
                        "{address}: {shards} shards need ports up to port + {}",
                        shards - 1
                    ),
                ));
            }
            let spec = WorkerSpec {
                name,
                address,
                advertise,
                sources,
                shards,
                data_dir: base.join(w.req_str(t, &p, "data_dir")?),
                source_channels: Vec::new(),
                metrics_listen: w.opt_addr(t, &p, "metrics_listen")?,
                cpu_affinity: w.cpus(t, &p, "cpu_affinity")?,
                lock_memory: w.bool(t, &p, "lock_memory")?,
                idle: Idle::parse(&w, t, &p)?,
            };
            for s in &specs {
                for (key, a) in [("address", address), ("sources", sources)] {
                    if s.ports().contains(&a) {
                        return Err(w.err(
                            &format!("{p}.{key}"),
                            format!("{a} is already used by worker {:?}", s.name),
                        ));
                    }
                }
                if let Some(a) = spec.ports().into_iter().find(|a| s.ports().contains(a)) {
                    return Err(w.err(
                        &format!("{p}.address"),
                        format!(
                            "its shards' port {a} is already used by worker {:?}",
                            s.name
                        ),
                    ));
                }
            }
            if let Some(m) = spec.metrics_listen {
                if m == sources || spec.node_addresses().any(|a| a == m) {
                    return Err(w.err(
                        &format!("{p}.metrics_listen"),
                        format!("{m} is also the worker's sources or node address"),
                    ));
                }
            }
            if spec.node_addresses().any(|a| a == sources) {
                return Err(w.err(
                    &format!("{p}.sources"),
                    "must differ from address (and the ports of its shards)",
                ));
            }
            specs.push(spec);
        }
        home_sources(&w, &app, workers, &mut specs)?;
        let nodes: u32 = specs.iter().map(|s| s.shards).sum();
        if nodes > MAX_NODES {
            return Err(w.err("worker", format!("{nodes} nodes exceed {MAX_NODES}")));
        }
        if let Err(e) = Routing::new(partitions, nodes) {
            return Err(w.err("cluster.partitions", e.to_string()));
        }
        for (i, a) in specs.iter().enumerate() {
            for b in &specs[i + 1..] {
                if a.data_dir == b.data_dir {
                    return Err(w.err(
                        "worker.data_dir",
                        format!(
                            "workers {:?} and {:?} share {}",
                            a.name,
                            b.name,
                            a.data_dir.display()
                        ),
                    ));
                }
            }
        }
        let faults = match root.get("faults") {
            None => None,
            Some(toml::Value::Table(_)) if !cfg!(feature = "fault-shim") => {
                return Err(w.err(
                    "faults",
                    "this build has no fault shim (built without the `fault-shim` feature)",
                ))
            }
            Some(toml::Value::Table(f)) => Some(parse_faults(&w, f, &specs)?),
            Some(_) => return Err(w.err("faults", "must be a table")),
        };
        let limits = match root.get("limits") {
            None => Limits::default(),
            Some(toml::Value::Table(l)) => parse_limits(&w, l)?,
            Some(_) => return Err(w.err("limits", "must be a table")),
        };
        let sink = w.addr(cluster, "cluster", "sink")?;
        let allow_unauthenticated = w.bool(cluster, "cluster", "allow_unauthenticated")?;
        if client_secret.is_none() && !allow_unauthenticated {
            let mut addrs: Vec<ClientAddr> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| ClientAddr {
                    key: format!("worker[{i}].sources"),
                    addr: s.sources,
                    sink: false,
                })
                .collect();
            addrs.push(ClientAddr {
                key: "cluster.sink".into(),
                addr: sink,
                sink: true,
            });
            refuse_open(&w, "cluster", &addrs)?;
        }
        let tls = match root.get("tls") {
            None => None,
            Some(toml::Value::Table(t)) => Some(parse_tls(&w, t, base)?),
            Some(_) => return Err(w.err("tls", "must be a table")),
        };
        Ok(ClusterToml {
            cluster_id: w.int(cluster, "cluster", "id", 1, 0, i64::MAX as u64)?,
            app,
            partitions,
            secret_file,
            client_secret,
            allow_unauthenticated,
            tls,
            sink,
            durability,
            snapshot_interval_records: w.int(
                cluster,
                "cluster",
                "snapshot_interval_records",
                200_000,
                1,
                1 << 40,
            )?,
            audit: w.bool(cluster, "cluster", "audit")?,
            workers: specs,
            limits,
            faults,
        })
    }

    /// Every node, in index order (workers in file order, shards within).
    pub fn nodes(&self) -> Vec<NodeRef> {
        let mut v = Vec::new();
        for (wi, w) in self.workers.iter().enumerate() {
            for shard in 0..w.shards {
                v.push(NodeRef {
                    index: v.len() as u32,
                    worker: wi,
                    shard,
                });
            }
        }
        v
    }

    pub fn routing(&self) -> Routing {
        // Validated in `parse`.
        Routing::new(self.partitions, self.nodes().len() as u32)
            .unwrap_or_else(|_| unreachable!("cluster shape validated at parse"))
    }

    /// Reads the cluster secret (see [`read_secret`]).
    pub fn load_secret(&self, file: &Path) -> Result<Secret, ConfigError> {
        read_secret(&self.secret_file, file, "cluster.secret_file")
    }

    /// The settings of the nodes (one per shard) worker `name` runs
    /// (`verity worker --config cluster.toml --name NAME`). `file` is the
    /// configuration's path, for errors.
    pub fn node_tomls(&self, name: &str, file: &Path) -> Result<Vec<NodeToml>, ConfigError> {
        let wi = self.worker(name).map_err(|mut e| {
            e.file = file.to_owned();
            e
        })?;
        let spec = &self.workers[wi];
        let secret = self.load_secret(file)?;
        let nodes = self.nodes();
        let open = match (&self.client_secret, self.allow_unauthenticated) {
            (None, true) => open_warning(
                "cluster",
                &[
                    ClientAddr {
                        key: format!("worker[{wi}].sources"),
                        addr: spec.sources,
                        sink: false,
                    },
                    ClientAddr {
                        key: "cluster.sink".into(),
                        addr: self.sink,
                        sink: true,
                    },
                ],
            ),
            _ => None,
        };
        let source_homes = self.source_homes(wi);
        let mut out = Vec::new();
        for me in nodes.iter().filter(|n| n.worker == wi) {
            let peers = nodes
                .iter()
                .filter(|n| n.index != me.index)
                .map(|n| {
                    let at = if n.worker == wi {
                        PeerAt::Local
                    } else {
                        PeerAt::Remote(shifted(self.workers[n.worker].advertise, n.shard))
                    };
                    (n.index, at)
                })
                .collect();
            let data_dir = if spec.shards == 1 {
                spec.data_dir.clone()
            } else {
                spec.data_dir.join(format!("shard-{}", me.shard))
            };
            out.push(NodeToml {
                app: self.app.clone(),
                data_dir,
                listen: spec.sources,
                sink: self.sink,
                node_id: me.index,
                cluster_id: self.cluster_id,
                durability: self.durability,
                snapshot_interval_records: self.snapshot_interval_records,
                audit: self.audit,
                limits: self.limits.clone(),
                client_secret: self.client_secret.clone(),
                allow_unauthenticated: self.allow_unauthenticated,
                open_warning: open.clone(),
                tls: self.tls.clone(),
                metrics_listen: spec.metrics_listen,
                cpu: match spec.cpu_affinity.len() {
                    0 => None,
                    n => Some(spec.cpu_affinity[me.shard as usize % n]),
                },
                lock_memory: spec.lock_memory,
                idle: spec.idle,
                source_homes: source_homes.clone(),
                cluster: Some(ClusterNode {
                    worker: spec.name.clone(),
                    node: me.index,
                    shard: me.shard,
                    routing: self.routing(),
                    address: shifted(spec.address, me.shard),
                    peers,
                    secret: secret.clone(),
                    node_workers: nodes
                        .iter()
                        .map(|n| self.workers[n.worker].name.clone())
                        .collect(),
                    faults: self.faults.clone().map(std::sync::Arc::new),
                }),
            });
        }
        Ok(out)
    }

    /// The home of every source channel as worker `wi` sees it, indexed by
    /// channel - 1.
    pub fn source_homes(&self, wi: usize) -> Vec<SourceHome> {
        (1..=self.app.sources().len() as u32)
            .map(|c| match self.source_home(c) {
                Some(h) if h != wi => SourceHome::Elsewhere {
                    worker: self.workers[h].name.clone(),
                    sources: self.workers[h].sources,
                },
                // `parse` gave every channel exactly one home.
                _ => SourceHome::Here,
            })
            .collect()
    }

    /// The index of the worker source channel `channel` is homed at.
    pub fn source_home(&self, channel: u32) -> Option<usize> {
        self.workers
            .iter()
            .position(|s| s.source_channels.contains(&channel))
    }

    /// The worker called `name`, or an error naming the choices.
    pub fn worker(&self, name: &str) -> Result<usize, ConfigError> {
        self.workers
            .iter()
            .position(|w| w.name == name)
            .ok_or_else(|| ConfigError {
                file: PathBuf::new(),
                key: "--name".into(),
                message: format!(
                    "no worker {name:?} in the configuration (workers: {})",
                    self.workers
                        .iter()
                        .map(|w| w.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const GOOD: &str = r#"
[cluster]
id = 7
app = "market-spread"
partitions = 4096
secret_file = "secret.key"
sink = "127.0.0.1:7200"

[[worker]]
name = "w1"
address = "127.0.0.1:7101"
sources = "127.0.0.1:7100"
data_dir = "data/w1"

[[worker]]
name = "w2"
address = "127.0.0.1:7111"
sources = "127.0.0.1:7110"
shards = 2
data_dir = "data/w2"

[limits]
max_unacked = 5000
"#;

    fn parse(s: &str) -> Result<ClusterToml, ConfigError> {
        ClusterToml::parse(
            s,
            Path::new("/etc/verity/cluster.toml"),
            &Registry::builtin(),
        )
    }

    #[test]
    fn a_good_file_parses_and_paths_resolve_against_it() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.cluster_id, 7);
        assert_eq!(c.workers.len(), 2);
        assert_eq!(c.nodes().len(), 3);
        assert_eq!(c.secret_file, Path::new("/etc/verity/secret.key"));
        assert_eq!(c.workers[1].data_dir, Path::new("/etc/verity/data/w2"));
        assert_eq!(c.limits.max_unacked, 5000);
        assert_eq!(c.routing().nodes(), 3);
        assert_eq!(c.worker("w2").unwrap(), 1);
        let e = c.worker("w9").unwrap_err();
        assert!(e.message.contains("workers: w1, w2"), "{e}");
    }

    #[test]
    fn inconsistent_files_name_the_key() {
        let cases = [
            (
                GOOD.replace("4096", "1000"),
                "cluster.partitions",
                "not a power of two",
            ),
            (
                GOOD.replace("name = \"w2\"", "name = \"w1\""),
                "worker[1].name",
                "duplicate",
            ),
            (
                GOOD.replace("127.0.0.1:7111", "127.0.0.1:7101"),
                "worker[1].address",
                "already used",
            ),
            (
                GOOD.replace("data/w2", "data/w1"),
                "worker.data_dir",
                "share",
            ),
            (
                GOOD.replace("shards = 2", "shards = 0"),
                "worker[1].shards",
                "must be in",
            ),
            (
                GOOD.replace("partitions = 4096", "partitions = 2"),
                "cluster.partitions",
                "only 2 partitions",
            ),
            (
                GOOD.replace("secret_file", "secret"),
                "cluster.secret",
                "unknown key",
            ),
            (
                GOOD.replace("max_unacked = 5000", "max_unacked = 0"),
                "limits.max_unacked",
                "must be in",
            ),
            (
                GOOD.replace("[[worker]]\nname = \"w1\"", "[[worker]]\nname = \"w 1\""),
                "worker[0].name",
                "use letters",
            ),
        ];
        for (text, key, msg) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    use crate::config::node::tests::file_with_mode;
    use std::time::Instant;

    fn read(p: &Path) -> Result<Secret, ConfigError> {
        read_secret(p, Path::new("cluster.toml"), "cluster.secret_file")
    }

    #[test]
    fn a_secret_file_is_refused_unless_only_its_owner_can_access_it() {
        let t = tempfile::tempdir().unwrap();
        let secret = b"0123456789abcdef0123\n";
        for (mode, octal) in [
            (0o640, "0640"),
            (0o604, "0604"),
            (0o602, "0602"),
            (0o620, "0620"),
            (0o610, "0610"),
        ] {
            let p = file_with_mode(t.path(), "secret.key", secret, mode);
            let e = read(&p).unwrap_err();
            assert_eq!(e.key, "cluster.secret_file", "{e}");
            assert!(e.message.contains(&p.display().to_string()), "{e}");
            assert!(e.message.contains(&format!("mode {octal}")), "{e}");
            assert!(
                e.message.contains(&format!("chmod 600 {}", p.display())),
                "{e}"
            );
        }
        for mode in [0o600, 0o400] {
            let p = file_with_mode(t.path(), "secret.key", secret, mode);
            assert_eq!(read(&p).unwrap().0, b"0123456789abcdef0123");
        }
    }

    #[test]
    fn a_secret_that_is_not_a_regular_file_is_refused_without_reading_it() {
        let t = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            e.message
                .contains("/dev/zero is not a regular file (it is a character device)"),
            "{e}"
        );
        std::fs::create_dir(t.path().join("dir")).unwrap();
        std::fs::set_permissions(t.path().join("dir"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let e = read(&t.path().join("dir")).unwrap_err();
        assert!(
            e.message.contains("not a regular file (it is a directory)"),
            "{e}"
        );
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = t.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let started = Instant::now();
        let e = read(&fifo).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            e.message.contains("not a regular file (it is a FIFO)"),
            "{e}"
        );
        let e = read(&t.path().join("absent")).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn an_over_long_secret_file_is_refused_with_its_size() {
        let t = tempfile::tempdir().unwrap();
        let p = file_with_mode(t.path(), "secret.key", &[b'k'; 4097], 0o600);
        let e = read(&p).unwrap_err();
        assert!(e.message.contains("is 4097 bytes; at most 4096"), "{e}");
        let p = file_with_mode(t.path(), "secret.key", &[b'k'; 4096], 0o600);
        assert_eq!(read(&p).unwrap().0.len(), 4096);
        let p = file_with_mode(t.path(), "secret.key", b"short\n", 0o600);
        let e = read(&p).unwrap_err();
        assert!(e.message.contains("needs at least 16"), "{e}");
    }

    #[test]
    fn client_secret_file_is_checked_like_the_cluster_secret() {
        let t = tempfile::tempdir().unwrap();
        file_with_mode(t.path(), "client.key", b"client-secret-0123456789", 0o644);
        let text = GOOD.replace(
            "secret_file = \"secret.key\"",
            "secret_file = \"secret.key\"\nclient_secret_file = \"client.key\"",
        );
        let e = ClusterToml::parse(&text, &t.path().join("cluster.toml"), &Registry::builtin())
            .unwrap_err();
        assert_eq!(e.key, "cluster.client_secret_file");
        assert!(e.message.contains("mode 0644"), "{e}");
    }

    #[test]
    fn non_loopback_source_or_sink_addresses_need_a_client_secret() {
        let cases = [
            ("127.0.0.1:7110", "0.0.0.0:7110", "worker[1].sources"),
            ("127.0.0.1:7100", "[::]:7100", "worker[0].sources"),
            ("127.0.0.1:7200", "10.1.2.3:7200", "cluster.sink"),
        ];
        for (from, to, key) in cases {
            let e = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(to), "{e}");
            assert!(e.message.contains("cluster.client_secret_file"), "{e}");
            assert!(
                e.message.contains("cluster.allow_unauthenticated = true"),
                "{e}"
            );
            let open = GOOD
                .replace(from, to)
                .replace("[cluster]\n", "[cluster]\nallow_unauthenticated = true\n");
            assert!(parse(&open).unwrap().allow_unauthenticated);
        }
        // Node-to-node addresses always authenticate with the cluster secret.
        parse(&GOOD.replace("127.0.0.1:7111", "192.0.2.1:7111")).unwrap();
    }

    #[test]
    fn each_worker_of_an_open_cluster_gets_a_warning_naming_its_open_addresses() {
        let t = tempfile::tempdir().unwrap();
        file_with_mode(t.path(), "secret.key", b"0123456789abcdef0123", 0o600);
        let file = t.path().join("cluster.toml");
        let text = GOOD
            .replace("[cluster]\n", "[cluster]\nallow_unauthenticated = true\n")
            .replace("127.0.0.1:7110", "0.0.0.0:7110");
        let c = ClusterToml::parse(&text, &file, &Registry::builtin()).unwrap();
        for n in c.node_tomls("w1", &file).unwrap() {
            assert_eq!(n.open_warning, None);
            assert!(n.allow_unauthenticated);
        }
        let w2 = c.node_tomls("w2", &file).unwrap();
        assert_eq!(w2.len(), 2);
        for n in w2 {
            let warning = n.open_warning.expect("a warning");
            assert!(
                warning.contains("worker[1].sources = 0.0.0.0:7110"),
                "{warning}"
            );
            assert!(!warning.contains("cluster.sink"), "{warning}");
        }
    }

    #[test]
    fn source_channels_default_to_round_robin_over_the_workers() {
        // market-spread: channel 1 (nbbo) and 2 (orders) over two workers.
        let c = parse(GOOD).unwrap();
        assert_eq!(c.workers[0].source_channels, vec![1]);
        assert_eq!(c.workers[1].source_channels, vec![2]);
        assert_eq!(c.source_home(1), Some(0));
        assert_eq!(c.source_home(2), Some(1));
        let w2 = SourceHome::Elsewhere {
            worker: "w2".into(),
            sources: "127.0.0.1:7110".parse().unwrap(),
        };
        let w1 = SourceHome::Elsewhere {
            worker: "w1".into(),
            sources: "127.0.0.1:7100".parse().unwrap(),
        };
        assert_eq!(c.source_homes(0), vec![SourceHome::Here, w2.clone()]);
        assert_eq!(c.source_homes(1), vec![w1.clone(), SourceHome::Here]);
        // One source, two workers: the first worker is its home.
        let c = parse(&GOOD.replace("market-spread", "doubler")).unwrap();
        assert_eq!(c.workers[0].source_channels, vec![1]);
        assert!(c.workers[1].source_channels.is_empty());
        assert_eq!(c.source_homes(1), vec![w1.clone()]);
        // Every node of a worker gets its table.
        let t = tempfile::tempdir().unwrap();
        file_with_mode(t.path(), "secret.key", b"0123456789abcdef0123", 0o600);
        let file = t.path().join("cluster.toml");
        let c = ClusterToml::parse(GOOD, &file, &Registry::builtin()).unwrap();
        for n in c.node_tomls("w2", &file).unwrap() {
            assert_eq!(n.source_homes, vec![w1.clone(), SourceHome::Here]);
        }
        for n in c.node_tomls("w1", &file).unwrap() {
            assert_eq!(n.source_homes, vec![SourceHome::Here, w2.clone()]);
        }
    }

    #[test]
    fn source_channels_set_explicitly_home_every_channel_once() {
        let c =
            parse(&GOOD.replace("shards = 2\n", "shards = 2\nsource_channels = [2, 1]\n")).unwrap();
        assert!(c.workers[0].source_channels.is_empty());
        assert_eq!(c.workers[1].source_channels, vec![1, 2]);
        let c = parse(
            &GOOD
                .replace("shards = 2\n", "shards = 2\nsource_channels = [1]\n")
                .replace(
                    "data_dir = \"data/w1\"",
                    "data_dir = \"data/w1\"\nsource_channels = [2]",
                ),
        )
        .unwrap();
        assert_eq!(c.workers[0].source_channels, vec![2]);
        assert_eq!(c.workers[1].source_channels, vec![1]);
    }

    #[test]
    fn bad_source_channels_name_the_key() {
        let w1 = |v: &str| {
            GOOD.replace(
                "data_dir = \"data/w1\"",
                &format!("data_dir = \"data/w1\"\nsource_channels = {v}"),
            )
        };
        let cases = [
            (
                w1("[3]"),
                "worker[0].source_channels",
                "unknown source channel 3",
            ),
            (
                w1("[0]"),
                "worker[0].source_channels",
                "unknown source channel 0",
            ),
            (
                w1("[1, 1, 2]"),
                "worker[0].source_channels",
                "lists source channel 1 twice",
            ),
            (
                w1("[1]"),
                "worker.source_channels",
                "source channel 2 (orders) has no home",
            ),
            (
                w1("[]"),
                "worker.source_channels",
                "source channel 1 (nbbo) has no home",
            ),
            (w1("1"), "worker[0].source_channels", "must be an array"),
            (
                w1("[\"1\"]"),
                "worker[0].source_channels",
                "must be an array",
            ),
            (
                w1("[1, 2]").replace("shards = 2\n", "shards = 2\nsource_channels = [2]\n"),
                "worker[1].source_channels",
                "source channel 2 is homed twice: already at worker \"w1\"",
            ),
        ];
        for (text, key, msg) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
        let e = parse(&w1("[3]")).unwrap_err();
        assert!(e.message.contains("1..=2 (1 = nbbo, 2 = orders)"), "{e}");
    }

    #[test]
    fn limits_and_tls_apply_to_every_worker() {
        let t = tempfile::tempdir().unwrap();
        file_with_mode(t.path(), "secret.key", b"0123456789abcdef0123", 0o600);
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        file_with_mode(t.path(), "w.crt", cert, 0o644);
        file_with_mode(t.path(), "ca.crt", cert, 0o644);
        file_with_mode(
            t.path(),
            "w.key",
            b"-----BEGIN EC PRIVATE KEY-----\n",
            0o600,
        );
        let file = t.path().join("cluster.toml");
        let text = format!(
            "{}\n[tls]\ncert_file = \"w.crt\"\nkey_file = \"w.key\"\nca_file = \"ca.crt\"\nclients = false\n",
            GOOD.replace("max_unacked = 5000", "max_unacked = 5000\ndedup_window = 4096\nframe_timeout_ms = 500")
        );
        let c = ClusterToml::parse(&text, &file, &Registry::builtin()).unwrap();
        let tls = c.tls.clone().expect("[tls]");
        assert_eq!(tls.key_file, t.path().join("w.key"));
        assert!(tls.nodes && !tls.clients);
        for name in ["w1", "w2"] {
            for n in c.node_tomls(name, &file).unwrap() {
                assert_eq!(n.tls.as_ref(), Some(&tls));
                assert_eq!(n.limits.dedup_window, 4096);
                assert_eq!(n.limits.frame_timeout_ms, 500);
            }
        }
        file_with_mode(
            t.path(),
            "w.key",
            b"-----BEGIN EC PRIVATE KEY-----\n",
            0o640,
        );
        let e = ClusterToml::parse(&text, &file, &Registry::builtin()).unwrap_err();
        assert_eq!(e.key, "tls.key_file");
        assert!(e.message.contains("mode 0640"), "{e}");
        let e = ClusterToml::parse(
            &text.replace("[tls]", "[tls]\nca = 1"),
            &file,
            &Registry::builtin(),
        )
        .unwrap_err();
        assert_eq!(e.key, "tls.ca");
    }
}
