//! `node.toml`: the configuration of one single-node worker. Every key is
//! documented in `docs/CONFIG.md`; unknown keys and bad values are errors that
//! name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::log::Durability;

/// A configuration error, naming the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeToml {
    pub app: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub sink: SocketAddr,
    pub node_id: u32,
    pub cluster_id: u64,
    pub durability: Durability,
    pub snapshot_interval_records: u64,
    pub limits: Limits,
    /// Source and sink clients must authenticate with this secret.
    pub client_secret: Option<crate::cluster::Secret>,
    /// Set when the node is one of a cluster (`cluster.toml`).
    pub cluster: Option<crate::cluster::ClusterNode>,
    /// Keep a hash chain over the journal (`runtime::audit`).
    pub audit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_len: u32,
    pub max_unacked: u64,
    pub max_undurable: u64,
    pub max_connections: usize,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub journal_segment_bytes: u64,
    /// Resend from the first unACKed seq after this long without ACK
    /// progress while frames are unACKed (DESIGN §3.1: "on timeout").
    pub resend_timeout_ms: u64,
    /// ACKs to a producer wait up to this long to be merged into one (0:
    /// every batch's ACK goes out at once).
    pub ack_delay_us: u64,
    /// A connection (either direction) whose HELLO exchange has not
    /// completed after this long is closed (and an outbound one redialed).
    pub handshake_timeout_ms: u64,
    /// An established connection holding an incomplete frame this long is
    /// closed.
    pub frame_timeout_ms: u64,
    /// Inbound connections still in their handshake (never counted against
    /// `max_connections`); when full, the oldest is closed.
    pub max_handshakes: usize,
    /// Inbound connections from one remote IP address.
    pub max_connections_per_address: usize,
    /// Per input channel, content checksums of the last this-many accepted
    /// frames (a power of two).
    pub dedup_window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: verity_wire::DEFAULT_MAX_FRAME_LEN,
            max_unacked: 1 << 18,
            max_undurable: 1 << 16,
            max_connections: 64,
            read_buffer_bytes: 2 << 20,
            write_buffer_bytes: 1 << 20,
            journal_segment_bytes: 64 << 20,
            resend_timeout_ms: 1000,
            ack_delay_us: 200,
            handshake_timeout_ms: 5000,
            frame_timeout_ms: 10_000,
            max_handshakes: 64,
            max_connections_per_address: 16,
            dedup_window: 1 << 16,
        }
    }
}

/// Walks a parsed TOML table, producing errors that name the file and key.
pub(crate) struct Walker<'a> {
    pub(crate) file: &'a Path,
}

impl Walker<'_> {
    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn reject_unknown(
        &self,
        table: &toml::Table,
        prefix: &str,
        known: &[&str],
    ) -> Result<(), ConfigError> {
        for k in table.keys() {
            if !known.contains(&k.as_str()) {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                return Err(self.err(
                    &key,
                    format!("unknown key (known here: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn str<'t>(
        &self,
        t: &'t toml::Table,
        p: &str,
        k: &str,
    ) -> Result<Option<&'t str>, ConfigError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(&format!("{p}.{k}"), "must be a string")),
        }
    }

    pub(crate) fn req_str<'t>(
        &self,
        t: &'t toml::Table,
        p: &str,
        k: &str,
    ) -> Result<&'t str, ConfigError> {
        self.str(t, p, k)?
            .ok_or_else(|| self.err(&format!("{p}.{k}"), "is required"))
    }

    pub(crate) fn int(
        &self,
        t: &toml::Table,
        p: &str,
        k: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let key = format!("{p}.{k}");
        let v = match t.get(k) {
            None => return Ok(default),
            Some(toml::Value::Integer(i)) => *i,
            Some(_) => return Err(self.err(&key, "must be an integer")),
        };
        if v < 0 || (v as u64) < min || (v as u64) > max {
            return Err(self.err(&key, format!("must be in {min}..={max}, got {v}")));
        }
        Ok(v as u64)
    }

    /// A boolean (default `false`).
    pub(crate) fn bool(&self, t: &toml::Table, p: &str, k: &str) -> Result<bool, ConfigError> {
        match t.get(k) {
            None => Ok(false),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(self.err(&format!("{p}.{k}"), "must be true or false")),
        }
    }

    /// A probability in `0.0..=1.0` (default 0), in parts per million.
    pub(crate) fn ppm(&self, t: &toml::Table, p: &str, k: &str) -> Result<u32, ConfigError> {
        let key = format!("{p}.{k}");
        let v = match t.get(k) {
            None => return Ok(0),
            Some(toml::Value::Float(f)) => *f,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(_) => return Err(self.err(&key, "must be a number (a probability)")),
        };
        if !(0.0..=1.0).contains(&v) {
            return Err(self.err(&key, format!("must be a probability in 0..=1, got {v}")));
        }
        Ok((v * 1e6).round() as u32)
    }

    /// An app name (`one of crate::apps::NAMES`), required.
    pub(crate) fn app(&self, t: &toml::Table, p: &str) -> Result<String, ConfigError> {
        let app = self.req_str(t, p, "app")?.to_owned();
        if !crate::apps::NAMES.contains(&app.as_str()) {
            return Err(self.err(
                &format!("{p}.app"),
                format!(
                    "unknown app {app:?} (one of: {})",
                    crate::apps::NAMES.join(", ")
                ),
            ));
        }
        Ok(app)
    }

    /// `durability`: "process" (default) or "fsync".
    pub(crate) fn durability(&self, t: &toml::Table, p: &str) -> Result<Durability, ConfigError> {
        match self.str(t, p, "durability")?.unwrap_or("process") {
            "process" => Ok(Durability::Process),
            "fsync" => Ok(Durability::Fsync),
            other => Err(self.err(
                &format!("{p}.durability"),
                format!("{other:?} is not \"process\" or \"fsync\""),
            )),
        }
    }

    pub(crate) fn addr(
        &self,
        t: &toml::Table,
        p: &str,
        k: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let s = self.req_str(t, p, k)?;
        s.parse().map_err(|_| {
            self.err(
                &format!("{p}.{k}"),
                format!("{s:?} is not an address like 127.0.0.1:7100"),
            )
        })
    }
}

/// The `[limits]` table, shared by `node.toml` and `cluster.toml`.
pub(crate) fn parse_limits(w: &Walker<'_>, limits: &toml::Table) -> Result<Limits, ConfigError> {
    w.reject_unknown(
        limits,
        "limits",
        &[
            "max_frame_len",
            "max_unacked",
            "max_undurable",
            "max_connections",
            "read_buffer_bytes",
            "write_buffer_bytes",
            "journal_segment_bytes",
            "resend_timeout_ms",
            "ack_delay_us",
            "handshake_timeout_ms",
        ],
    )?;
    let d = Limits::default();
    let l = "limits";
    let limits = Limits {
        max_frame_len: w.int(
            limits,
            l,
            "max_frame_len",
            d.max_frame_len as u64,
            verity_wire::HEADER_LEN as u64 + 64,
            verity_wire::MAX_FRAME_LEN_LIMIT as u64,
        )? as u32,
        max_unacked: w.int(limits, l, "max_unacked", d.max_unacked, 1, 1 << 30)?,
        max_undurable: w.int(limits, l, "max_undurable", d.max_undurable, 1, 1 << 30)?,
        max_connections: w.int(
            limits,
            l,
            "max_connections",
            d.max_connections as u64,
            1,
            4096,
        )? as usize,
        read_buffer_bytes: w.int(
            limits,
            l,
            "read_buffer_bytes",
            d.read_buffer_bytes as u64,
            4096,
            1 << 30,
        )? as usize,
        write_buffer_bytes: w.int(
            limits,
            l,
            "write_buffer_bytes",
            d.write_buffer_bytes as u64,
            4096,
            1 << 30,
        )? as usize,
        journal_segment_bytes: w.int(
            limits,
            l,
            "journal_segment_bytes",
            d.journal_segment_bytes,
            1 << 16,
            4 << 30,
        )?,
        resend_timeout_ms: w.int(
            limits,
            l,
            "resend_timeout_ms",
            d.resend_timeout_ms,
            1,
            3_600_000,
        )?,
        ack_delay_us: w.int(limits, l, "ack_delay_us", d.ack_delay_us, 0, 1_000_000)?,
        handshake_timeout_ms: w.int(
            limits,
            l,
            "handshake_timeout_ms",
            d.handshake_timeout_ms,
            10,
            3_600_000,
        )?,
        // Parsed by the configuration change that documents them.
        ..d
    };
    if (limits.read_buffer_bytes as u64) < limits.max_frame_len as u64 * 2 {
        return Err(w.err(
            "limits.read_buffer_bytes",
            format!(
                "must be at least twice limits.max_frame_len ({})",
                limits.max_frame_len
            ),
        ));
    }
    if limits.ack_delay_us >= limits.resend_timeout_ms * 1000 / 2 {
        return Err(w.err(
            "limits.ack_delay_us",
            format!(
                "must be under half of limits.resend_timeout_ms ({} ms): a producer would time out and resend before the ACK leaves",
                limits.resend_timeout_ms
            ),
        ));
    }
    if limits.journal_segment_bytes < limits.max_frame_len as u64 * 2 {
        return Err(w.err(
            "limits.journal_segment_bytes",
            "must be at least twice limits.max_frame_len",
        ));
    }
    Ok(limits)
}

/// Reads a configuration file, naming it in the error.
pub(crate) fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        key: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// Parses TOML text into its root table, naming the file in the error.
pub(crate) fn parse_root(text: &str, file: &Path) -> Result<toml::Table, ConfigError> {
    text.parse().map_err(|e: toml::de::Error| ConfigError {
        file: file.to_owned(),
        key: String::new(),
        message: format!("not valid TOML: {}", e.to_string().trim()),
    })
}

impl NodeToml {
    pub fn load(path: &Path) -> Result<NodeToml, ConfigError> {
        NodeToml::parse(&read_config(path)?, path)
    }

    pub fn parse(text: &str, file: &Path) -> Result<NodeToml, ConfigError> {
        let w = Walker { file };
        let root = parse_root(text, file)?;
        w.reject_unknown(&root, "", &["node", "limits"])?;
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
                "audit",
            ],
        )?;
        let app = w.app(node, "node")?;
        let durability = w.durability(node, "node")?;
        let limits = parse_limits(&w, limits)?;
        Ok(NodeToml {
            app,
            data_dir: PathBuf::from(w.req_str(node, "node", "data_dir")?),
            listen: w.addr(node, "node", "listen")?,
            sink: w.addr(node, "node", "sink")?,
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
            client_secret: match w.str(node, "node", "client_secret_file")? {
                None => None,
                Some(f) => Some(crate::cluster::config::read_secret(
                    &file.parent().unwrap_or(Path::new(".")).join(f),
                    file,
                    "node.client_secret_file",
                )?),
            },
            cluster: None,
            audit: w.bool(node, "node", "audit")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        NodeToml::parse(s, Path::new("node.toml"))
    }

    #[test]
    fn a_good_file_parses_with_defaults_filled_in() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.app, "market-spread");
        assert_eq!(c.durability, Durability::Fsync);
        assert_eq!(c.limits.max_unacked, 1000);
        assert_eq!(c.limits.max_frame_len, 1 << 20);
        assert_eq!(c.snapshot_interval_records, 200_000);
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
}
