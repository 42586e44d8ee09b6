//! `node.toml`: the configuration of one single-node worker. Every key is
//! documented in `docs/CONFIG.md`; unknown keys and bad values are errors that
//! name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::faults::Faults;
use super::limits::{parse_limits, parse_tls, Limits, TlsFiles};
use super::parse::{
    open_warning, parse_root, read_config, read_secret, refuse_open, ClientAddr, ConfigError,
    Secret, Walker,
};
use crate::core::NodeConfig;
use crate::log::Durability;
use crate::registry::{AppSpec, Registry};
use crate::routing::Routing;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeToml {
    /// The app it runs, as registered (`app` names it).
    pub app: AppSpec,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sink: SocketAddr,
    pub node_id: u32,
    pub cluster_id: u64,
    pub durability: Durability,
    pub snapshot_interval_records: u64,
    pub limits: Limits,
    /// Source and sink clients must authenticate with this secret.
    pub client_secret: Option<Secret>,
    /// `allow_unauthenticated`: sources and the sink may connect without a
    /// client secret on non-loopback addresses.
    pub allow_unauthenticated: bool,
    /// Set when the node runs open on a non-loopback address on purpose
    /// (`allow_unauthenticated = true`, no client secret): the warning the
    /// worker prints at start.
    pub open_warning: Option<String>,
    /// `[tls]`: the certificate, key and CA this node uses, when configured.
    pub tls: Option<TlsFiles>,
    /// The home of every source channel, indexed by channel - 1 (channel `c`
    /// carries the app's source `c - 1`). Always [`SourceHome::Here`] for a
    /// single node (`node.toml`).
    pub source_homes: Vec<SourceHome>,
    /// Set when the node is one of a cluster (`cluster.toml`).
    pub cluster: Option<ClusterNode>,
    /// Keep a hash chain over the journal (`storage::audit`).
    pub audit: bool,
    /// `metrics_listen`: where the worker process serves its metrics
    /// (Prometheus text), `/healthz` and `/readyz` over HTTP. `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// `cpu_affinity`: the CPU this node's event loop thread is pinned to
    /// (`None`: not pinned).
    pub cpu: Option<usize>,
    /// `lock_memory`: keep the active journal and outbound log segments
    /// locked in memory (`LogConfig::lock_memory`).
    pub lock_memory: bool,
    /// `idle`: what the event loop does when it has nothing to do.
    pub idle: Idle,
}

/// `idle`: what an event loop does when it has nothing to do (in the
/// spirit of Aeron's idle strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Sleep in `epoll_wait` until an event or the next timer: no CPU when
    /// idle; waking costs a few µs, and the kernel rounds a timer of less
    /// than 1 ms up to 1 ms.
    #[default]
    Sleep,
    /// Never sleep: poll without waiting, `sched_yield` between empty
    /// polls (a core busy, but given up to any other runnable thread).
    Yield,
    /// Never sleep nor yield: poll without waiting, over and over (a core
    /// all to itself; pin it with `cpu_affinity` to an isolated core).
    Spin,
}

impl Idle {
    /// `idle` of table `p`: `"sleep"` (the default), `"yield"` or `"spin"`.
    pub(super) fn parse(w: &Walker, t: &toml::Table, p: &str) -> Result<Idle, ConfigError> {
        match w.str(t, p, "idle")?.unwrap_or("sleep") {
            "sleep" => Ok(Idle::Sleep),
            "yield" => Ok(Idle::Yield),
            "spin" => Ok(Idle::Spin),
            other => Err(w.err(
                &format!("{p}.idle"),
                format!("{other:?} is not \"sleep\", \"yield\" or \"spin\""),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Idle::Sleep => "sleep",
            Idle::Yield => "yield",
            Idle::Spin => "spin",
        }
    }
}

/// Where a source channel lives: its home worker keeps the channel's seq
/// space and dedup state, and only it accepts the channel's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceHome {
    /// This worker is the channel's home.
    Here,
    /// Another worker is: a source that says HELLO here for this channel is
    /// answered with an ERROR naming `sources`, the home's source address.
    Elsewhere { worker: String, sources: SocketAddr },
}

/// Where another node is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAt {
    /// In another worker process: its node-to-node address.
    Remote(SocketAddr),
    /// A shard of this worker process: over an in-process ring link.
    Local,
}

/// What one node of a cluster needs to know beyond a single node's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The worker's name in `cluster.toml`.
    pub worker: String,
    /// This node's index (its node id on the wire).
    pub node: u32,
    /// Its shard index within the worker; shard 0 accepts the sources.
    pub shard: u32,
    pub routing: Routing,
    /// This node's node-to-node listener (the worker's address, port + shard).
    pub address: SocketAddr,
    /// Every other node: (index, where it is).
    pub peers: Vec<(u32, PeerAt)>,
    pub secret: Secret,
    /// The worker name of every node, by index (partitions name workers).
    pub node_workers: Vec<String>,
    /// The fault shim, when `[faults]` configures it.
    pub faults: Option<std::sync::Arc<Faults>>,
}

impl NodeToml {
    /// The core's configuration for these settings (the worker's, and
    /// `verity-replay`'s, which must build the very same core).
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            node: self.cluster.as_ref().map_or(0, |c| c.node),
            routing: self.cluster.as_ref().map(|c| c.routing.clone()),
            sink_channel: 1000 + self.node_id,
            max_unacked: self.limits.max_unacked,
            max_undurable: self.limits.max_undurable,
            max_frame_len: self.limits.max_frame_len,
            dedup_window: self.limits.dedup_window,
            reorder_window: self.limits.reorder_window,
            reorder_bytes: self.limits.reorder_bytes,
            resend_timeout_ns: self.limits.resend_timeout_ms.saturating_mul(1_000_000),
            handshake_timeout_ns: self.limits.handshake_timeout_ms.saturating_mul(1_000_000),
            ..NodeConfig::default()
        }
    }

    /// What the node's data depends on, as its data directory records it
    /// (`SHAPE`): cluster id, app, node id, node index and count, and the
    /// partition count (0 for a single node).
    pub fn shape(&self) -> String {
        let (node, nodes, partitions) = self.cluster.as_ref().map_or((0, 1, 0), |c| {
            (c.node, c.routing.nodes(), c.routing.partitions())
        });
        format!(
            "cluster_id={} app={} node_id={} node={node} nodes={nodes} partitions={partitions}",
            self.cluster_id,
            self.app.name(),
            self.node_id
        )
    }

    /// Reads and checks the file at `path`; its `app` must be one of
    /// `apps`.
    pub fn load(path: &Path, apps: &Registry) -> Result<NodeToml, ConfigError> {
        NodeToml::parse(&read_config(path)?, path, apps)
    }

    /// [`NodeToml::load`] of the text `text` of file `file`.
    pub fn parse(text: &str, file: &Path, apps: &Registry) -> Result<NodeToml, ConfigError> {
        let w = Walker { file, apps };
        let root = parse_root(text, file)?;
        w.reject_unknown(&root, "", &["node", "limits", "tls"])?;
        let empty = toml::Table::new();
        let table = |k: &str| -> Result<&toml::Table, ConfigError> {
            match root.get(k) {
                None => Ok(&empty),
                Some(toml::Value::Table(t)) => Ok(t),
                Some(_) => Err(w.err(k, "must be a table")),
            }
        };
        let node = table("node")?;
        let limits = table("limits")?;
        w.reject_unknown(
            node,
            "node",
            &[
                "app",
                "data_dir",
                "listen",
                "sink",
                "node_id",
                "cluster_id",
                "durability",
                "snapshot_interval_records",
                "client_secret_file",
                "allow_unauthenticated",
                "audit",
                "metrics_listen",
                "cpu_affinity",
                "lock_memory",
                "idle",
            ],
        )?;
        let app = w.app(node, "node")?;
        let durability = w.durability(node, "node")?;
        let limits = parse_limits(&w, limits)?;
        let base = file.parent().unwrap_or(Path::new("."));
        let listen = w.addr(node, "node", "listen")?;
        let sink = w.addr(node, "node", "sink")?;
        let client_secret = match w.str(node, "node", "client_secret_file")? {
            None => None,
            Some(f) => Some(read_secret(&base.join(f), file, "node.client_secret_file")?),
        };
        let allow_unauthenticated = w.bool(node, "node", "allow_unauthenticated")?;
        let client_addrs = [
            ClientAddr {
                key: "node.listen".into(),
                addr: listen,
                sink: false,
            },
            ClientAddr {
                key: "node.sink".into(),
                addr: sink,
                sink: true,
            },
        ];
        let open_warning = match (&client_secret, allow_unauthenticated) {
            (Some(_), _) => None,
            (None, false) => {
                refuse_open(&w, "node", &client_addrs)?;
                None
            }
            (None, true) => open_warning("node", &client_addrs),
        };
        let tls = match root.get("tls") {
            None => None,
            Some(toml::Value::Table(t)) => Some(parse_tls(&w, t, base)?),
            Some(_) => return Err(w.err("tls", "must be a table")),
        };
        Ok(NodeToml {
            source_homes: vec![SourceHome::Here; app.sources().len()],
            app,
            // Relative to the file, as every other path in it.
            data_dir: base.join(w.req_str(node, "node", "data_dir")?),
            listen,
            sink,
            node_id: w.int(node, "node", "node_id", 1, 1, u32::MAX as u64)? as u32,
            cluster_id: w.int(node, "node", "cluster_id", 1, 0, i64::MAX as u64)?,
            durability,
            snapshot_interval_records: w.int(
                node,
                "node",
                "snapshot_interval_records",
                200_000,
                1,
                1 << 40,
            )?,
            limits,
            client_secret,
            allow_unauthenticated,
            open_warning,
            tls,
            cluster: None,
            audit: w.bool(node, "node", "audit")?,
            metrics_listen: w.opt_addr(node, "node", "metrics_listen")?,
            cpu: w.cpus(node, "node", "cpu_affinity")?.first().copied(),
            lock_memory: w.bool(node, "node", "lock_memory")?,
            idle: Idle::parse(&w, node, "node")?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::parse::read_bounded;
    use std::os::unix::fs::PermissionsExt;

    const GOOD: &str = r#"
[node]
app = "market-spread"
data_dir = "/tmp/verity-node"
listen = "127.0.0.1:7100"
sink = "127.0.0.1:7200"
durability = "fsync"

[limits]
max_unacked = 1000
"#;

    fn parse(s: &str) -> Result<NodeToml, ConfigError> {
        NodeToml::parse(s, Path::new("node.toml"), &Registry::builtin())
    }

    /// `data_dir` is relative to the file, as every other path in it; an
    /// absolute one is taken as given.
    #[test]
    fn a_relative_data_dir_is_relative_to_the_file() {
        let text = GOOD.replace("/tmp/verity-node", "data/n1");
        let c = NodeToml::parse(
            &text,
            Path::new("/etc/verity/node.toml"),
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/verity/data/n1"));
        let c = NodeToml::parse(
            GOOD,
            Path::new("/etc/verity/node.toml"),
            &Registry::builtin(),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/tmp/verity-node"));
    }

    /// The `app` key names an app of the registry the file is read with:
    /// a user's app is accepted by a registry holding it (with its source
    /// channels), and an unknown name is refused with the registry's names.
    #[test]
    fn the_app_is_one_the_registry_holds() {
        use crate::app::{pipeline, App, Reject};
        fn pass() -> impl App {
            pipeline("pass")
                .source("a", |_, b: &[u8]| Ok::<_, Reject>(b.to_vec()))
                .source("b", |_, b: &[u8]| Ok::<_, Reject>(b.to_vec()))
                .key_by(|_: &Vec<u8>| 0u8)
                .to_state(|v: Vec<u8>, _: &mut (), emit: &mut dyn FnMut(Vec<u8>)| emit(v))
                .to_sink(|v: &Vec<u8>, out: &mut Vec<u8>| out.extend_from_slice(v))
        }
        let apps = Registry::builtin().with("pass", pass);
        let text = GOOD.replace("market-spread", "pass");
        let c = NodeToml::parse(&text, Path::new("node.toml"), &apps).unwrap();
        assert_eq!(c.app.name(), "pass");
        assert_eq!(c.app.sources(), ["a", "b"]);
        assert_eq!(c.source_homes.len(), 2);
        assert_eq!(c.app.build().name(), "pass");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "node.app");
        assert!(
            e.message
                .contains("unknown app \"pass\" (one of: doubler, word-count"),
            "{e}"
        );
        let e = NodeToml::parse(&text, Path::new("node.toml"), &Registry::empty()).unwrap_err();
        assert!(e.message.contains("unknown app"), "{e}");
    }

    #[test]
    fn a_good_file_parses_with_defaults_filled_in() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.app.name(), "market-spread");
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.limits.max_unacked, 1000);
        assert_eq!(c.limits.max_frame_len, 1 << 20);
        assert_eq!(c.snapshot_interval_records, 200_000);
        assert_eq!(c.limits.frame_timeout_ms, 10_000);
        assert_eq!(c.limits.max_handshakes, 64);
        assert_eq!(c.limits.max_connections_per_address, 16);
        assert_eq!(c.limits.max_connections, 64);
        assert_eq!(c.limits.dedup_window, 65536);
        assert!(!c.allow_unauthenticated);
        assert_eq!(c.open_warning, None);
        assert_eq!(c.tls, None);
        // market-spread has two sources; a single node is home to both.
        assert_eq!(c.source_homes, vec![SourceHome::Here, SourceHome::Here]);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("durability", "durabilty"),
                "node.durabilty",
                "unknown key",
            ),
            (
                GOOD.replace("\"fsync\"", "\"sometimes\""),
                "node.durability",
                "is not",
            ),
            (
                GOOD.replace("max_unacked = 1000", "max_unacked = -1"),
                "limits.max_unacked",
                "must be in",
            ),
            (
                GOOD.replace("market-spread", "nope"),
                "node.app",
                "unknown app",
            ),
            (
                GOOD.replace("127.0.0.1:7200", "localhost"),
                "node.sink",
                "not an address",
            ),
            (
                GOOD.replace("app = \"market-spread\"\n", ""),
                "node.app",
                "is required",
            ),
            (format!("{GOOD}\n[extra]\n"), "extra", "unknown key"),
            (
                GOOD.replace("[node]\n", "[node]\naudit = \"yes\"\n"),
                "node.audit",
                "must be true or false",
            ),
            (
                GOOD.replace(
                    "max_unacked = 1000",
                    "max_unacked = 1000\nresend_timeout_ms = 100\nack_delay_us = 50000",
                ),
                "limits.ack_delay_us",
                "under half of limits.resend_timeout_ms",
            ),
            (
                GOOD.replace("max_unacked = 1000", "max_unacked = \"lots\""),
                "limits.max_unacked",
                "must be an integer",
            ),
        ];
        for (text, key, msg) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(msg), "{e}");
            assert!(e.to_string().starts_with("node.toml: "), "{e}");
        }
        let e = parse("[node\n").unwrap_err();
        assert!(e.message.contains("not valid TOML"), "{e}");
    }

    /// Writes `bytes` to `dir/name` with exactly `mode` (not masked by the
    /// umask).
    pub(crate) fn file_with_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn with_limit(line: &str) -> String {
        GOOD.replace("max_unacked = 1000", &format!("max_unacked = 1000\n{line}"))
    }

    #[test]
    fn the_new_limits_parse_in_range() {
        let c = parse(&with_limit(
            "frame_timeout_ms = 250\nmax_handshakes = 8\nmax_connections_per_address = 2\ndedup_window = 1024",
        ))
        .unwrap();
        assert_eq!(c.limits.frame_timeout_ms, 250);
        assert_eq!(c.limits.max_handshakes, 8);
        assert_eq!(c.limits.max_connections_per_address, 2);
        assert_eq!(c.limits.dedup_window, 1024);
        let c = parse(&with_limit(
            "frame_timeout_ms = 3600000\nmax_handshakes = 65536\nmax_connections_per_address = 65536\ndedup_window = 16777216",
        ))
        .unwrap();
        assert_eq!(c.limits.frame_timeout_ms, 3_600_000);
        assert_eq!(c.limits.max_handshakes, 65536);
        assert_eq!(c.limits.max_connections_per_address, 65536);
        assert_eq!(c.limits.dedup_window, 1 << 24);
    }

    #[test]
    fn bad_new_limits_name_the_key() {
        let cases = [
            (
                "frame_timeout_ms = 9",
                "limits.frame_timeout_ms",
                "must be in 10..=3600000",
            ),
            (
                "frame_timeout_ms = 3600001",
                "limits.frame_timeout_ms",
                "must be in",
            ),
            (
                "frame_timeout_ms = \"10s\"",
                "limits.frame_timeout_ms",
                "must be an integer",
            ),
            (
                "max_handshakes = 0",
                "limits.max_handshakes",
                "must be in 1..=65536",
            ),
            (
                "max_handshakes = 65537",
                "limits.max_handshakes",
                "must be in",
            ),
            (
                "max_connections_per_address = 0",
                "limits.max_connections_per_address",
                "must be in 1..=65536",
            ),
            (
                "max_connections_per_address = 70000",
                "limits.max_connections_per_address",
                "must be in",
            ),
            (
                "dedup_window = 512",
                "limits.dedup_window",
                "must be in 1024..=16777216",
            ),
            (
                "dedup_window = 33554432",
                "limits.dedup_window",
                "must be in",
            ),
            (
                "dedup_window = 3000",
                "limits.dedup_window",
                "3000 is not a power of two",
            ),
            (
                "dedup_window = 1.5",
                "limits.dedup_window",
                "must be an integer",
            ),
            ("max_handshake = 3", "limits.max_handshake", "unknown key"),
        ];
        for (line, key, msg) in cases {
            let e = parse(&with_limit(line)).unwrap_err();
            assert_eq!(e.key, key, "{line}: {e}");
            assert!(e.message.contains(msg), "{line}: {e}");
        }
    }

    #[test]
    fn a_non_loopback_client_address_without_a_secret_is_refused() {
        let cases = [
            (
                "listen = \"127.0.0.1:7100\"",
                "listen = \"0.0.0.0:7100\"",
                "node.listen",
                "0.0.0.0:7100",
            ),
            (
                "listen = \"127.0.0.1:7100\"",
                "listen = \"[::]:7100\"",
                "node.listen",
                "[::]:7100",
            ),
            (
                "listen = \"127.0.0.1:7100\"",
                "listen = \"192.0.2.7:7100\"",
                "node.listen",
                "192.0.2.7:7100",
            ),
            (
                "sink = \"127.0.0.1:7200\"",
                "sink = \"198.51.100.3:7200\"",
                "node.sink",
                "198.51.100.3:7200",
            ),
        ];
        for (from, to, key, addr) in cases {
            let e = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.contains(addr), "{e}");
            assert!(e.message.contains("not a loopback address"), "{e}");
            assert!(e.message.contains("node.client_secret_file"), "{e}");
            assert!(
                e.message.contains("node.allow_unauthenticated = true"),
                "{e}"
            );
        }
        // Loopback in every form keeps working without a secret.
        for (from, to) in [
            ("127.0.0.1:7100", "127.8.9.10:7100"),
            ("127.0.0.1:7100", "[::1]:7100"),
            ("127.0.0.1:7100", "[::ffff:127.0.0.1]:7100"),
        ] {
            let c = parse(&GOOD.replace(from, to)).unwrap();
            assert_eq!(c.open_warning, None);
        }
    }

    #[test]
    fn allow_unauthenticated_runs_open_with_a_warning() {
        let open = GOOD
            .replace("[node]\n", "[node]\nallow_unauthenticated = true\n")
            .replace("127.0.0.1:7100", "0.0.0.0:7100");
        let c = parse(&open).unwrap();
        assert!(c.allow_unauthenticated);
        let warning = c.open_warning.expect("a warning");
        assert!(warning.contains("node.listen = 0.0.0.0:7100"), "{warning}");
        assert!(!warning.contains("node.sink"), "{warning}");
        assert!(warning.contains("without authentication"), "{warning}");
        // Nothing to warn about on loopback.
        let c = parse(&GOOD.replace("[node]\n", "[node]\nallow_unauthenticated = true\n")).unwrap();
        assert_eq!(c.open_warning, None);
        let e =
            parse(&GOOD.replace("[node]\n", "[node]\nallow_unauthenticated = 1\n")).unwrap_err();
        assert_eq!(e.key, "node.allow_unauthenticated");
        assert!(e.message.contains("must be true or false"), "{e}");
    }

    #[test]
    fn a_client_secret_makes_non_loopback_addresses_fine() {
        let t = tempfile::tempdir().unwrap();
        file_with_mode(t.path(), "client.key", b"client-secret-0123456789\n", 0o600);
        let text = GOOD
            .replace("[node]\n", "[node]\nclient_secret_file = \"client.key\"\n")
            .replace("127.0.0.1:7100", "0.0.0.0:7100")
            .replace("127.0.0.1:7200", "192.0.2.1:7200");
        let c = NodeToml::parse(&text, &t.path().join("node.toml"), &Registry::builtin()).unwrap();
        assert_eq!(
            c.client_secret.map(|s| s.0),
            Some(b"client-secret-0123456789".to_vec())
        );
        assert_eq!(c.open_warning, None);
    }

    /// PEM-looking files for `[tls]` (only the markers are checked).
    fn tls_files(dir: &Path) {
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        file_with_mode(dir, "node.crt", cert, 0o644);
        file_with_mode(dir, "ca.crt", cert, 0o644);
        file_with_mode(
            dir,
            "node.key",
            b"-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n",
            0o600,
        );
    }

    const TLS: &str =
        "\n[tls]\ncert_file = \"node.crt\"\nkey_file = \"node.key\"\nca_file = \"ca.crt\"\n";

    #[test]
    fn tls_files_resolve_against_the_config_and_are_loaded() {
        let t = tempfile::tempdir().unwrap();
        tls_files(t.path());
        let c = NodeToml::parse(
            &format!("{GOOD}{TLS}"),
            &t.path().join("node.toml"),
            &Registry::builtin(),
        )
        .unwrap();
        let tls = c.tls.expect("[tls]");
        assert_eq!(tls.cert_file, t.path().join("node.crt"));
        assert_eq!(tls.key_file, t.path().join("node.key"));
        assert_eq!(tls.ca_file, t.path().join("ca.crt"));
        assert!(tls.cert_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(tls.key_pem.0.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        assert!(tls.ca_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(tls.nodes && tls.clients && !tls.require_client_cert);
        assert!(
            !format!("{tls:?}").contains("MC4C"),
            "the key is not printed"
        );
        let c = NodeToml::parse(
            &format!("{GOOD}{TLS}nodes = false\nrequire_client_cert = true\n"),
            &t.path().join("node.toml"),
            &Registry::builtin(),
        )
        .unwrap();
        let tls = c.tls.expect("[tls]");
        assert!(!tls.nodes && tls.clients && tls.require_client_cert);
    }

    #[test]
    fn bad_tls_settings_name_the_key() {
        let t = tempfile::tempdir().unwrap();
        tls_files(t.path());
        file_with_mode(
            t.path(),
            "open.key",
            b"-----BEGIN PRIVATE KEY-----\n",
            0o644,
        );
        file_with_mode(t.path(), "plain.txt", b"hello\n", 0o600);
        file_with_mode(
            t.path(),
            "enc.key",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n",
            0o600,
        );
        let cases = [
            (
                TLS.replace("cert_file = \"node.crt\"\n", ""),
                "tls.cert_file",
                "is required",
            ),
            (
                TLS.replace("key_file = \"node.key\"\n", ""),
                "tls.key_file",
                "is required",
            ),
            (
                TLS.replace("ca_file = \"ca.crt\"\n", ""),
                "tls.ca_file",
                "is required",
            ),
            (
                TLS.replace("ca.crt", "missing.crt"),
                "tls.ca_file",
                "cannot read",
            ),
            (
                TLS.replace("node.crt", "."),
                "tls.cert_file",
                "not a regular file",
            ),
            (
                TLS.replace("node.crt", "plain.txt"),
                "tls.cert_file",
                "no PEM certificate",
            ),
            (
                TLS.replace("ca.crt", "plain.txt"),
                "tls.ca_file",
                "no PEM certificate",
            ),
            (
                TLS.replace("node.key", "plain.txt"),
                "tls.key_file",
                "no PEM private key",
            ),
            (
                TLS.replace("node.key", "open.key"),
                "tls.key_file",
                "chmod 600",
            ),
            (
                TLS.replace("node.key", "enc.key"),
                "tls.key_file",
                "encrypted",
            ),
            (
                format!("{TLS}nodes = false\nclients = false\n"),
                "tls",
                "both false",
            ),
            (
                format!("{TLS}clients = false\nrequire_client_cert = true\n"),
                "tls.require_client_cert",
                "needs tls.clients = true",
            ),
            (
                format!("{TLS}nodes = \"yes\"\n"),
                "tls.nodes",
                "must be true or false",
            ),
            (format!("{TLS}verify = true\n"), "tls.verify", "unknown key"),
            (
                TLS.replace("\"node.crt\"", "7"),
                "tls.cert_file",
                "must be a string",
            ),
            ("\ntls = 3\n".to_owned(), "tls", "must be a table"),
        ];
        for (tls, key, msg) in cases {
            let text = if tls.starts_with("\ntls =") {
                format!("{tls}{GOOD}")
            } else {
                format!("{GOOD}{tls}")
            };
            let e = NodeToml::parse(&text, &t.path().join("node.toml"), &Registry::builtin())
                .unwrap_err();
            assert_eq!(e.key, key, "{tls}: {e}");
            assert!(e.message.contains(msg), "{tls}: {e}");
        }
    }

    #[test]
    fn read_bounded_takes_a_public_file_of_any_mode_but_not_an_oversized_one() {
        let t = tempfile::tempdir().unwrap();
        let p = file_with_mode(t.path(), "ca.crt", b"0123456789", 0o644);
        assert_eq!(read_bounded(&p, 10, false).unwrap(), b"0123456789");
        let e = read_bounded(&p, 9, false).unwrap_err();
        assert!(e.contains("is 10 bytes; at most 9"), "{e}");
        let e = read_bounded(&p, 4096, true).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    }
}
