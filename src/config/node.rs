//! `node.toml`: the configuration of one single-node worker. Every key is
//! documented in `docs/CONFIG.md`; unknown keys and bad values are errors that
//! name the key.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::cluster::{Secret, SourceHome};
use crate::core::NodeConfig;
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
    pub cluster: Option<super::cluster::ClusterNode>,
    /// Keep a hash chain over the journal (`storage::audit`).
    pub audit: bool,
}

/// `[tls]`: the files a node's TLS connections use, checked and loaded at
/// parse (`docs/CONFIG.md`). The PEM texts are as read; nothing here parses
/// the certificates beyond their PEM markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `cert_file`, resolved against the configuration file's directory.
    pub cert_file: PathBuf,
    /// `key_file`, resolved likewise.
    pub key_file: PathBuf,
    /// `ca_file`, resolved likewise.
    pub ca_file: PathBuf,
    /// This worker's certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// This worker's private key (PEM); never printed.
    pub key_pem: Secret,
    /// The CA certificates peers' certificates must chain to (PEM).
    pub ca_pem: Vec<u8>,
    /// Node-to-node links use mutual TLS.
    pub nodes: bool,
    /// Source connections and the sink connection use TLS.
    pub clients: bool,
    /// Sources must present a certificate that chains to `ca_file`.
    pub require_client_cert: bool,
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
    /// An established connection holding an incomplete frame for longer
    /// than this is closed (ERROR `LIMIT_EXCEEDED`).
    pub frame_timeout_ms: u64,
    /// Inbound connections still in their handshake; they never count
    /// against `max_connections`. When full, a new connection closes the
    /// oldest handshaking one.
    pub max_handshakes: usize,
    /// Inbound connections (handshaking or established) from one remote IP
    /// address; one more is refused with ERROR `LIMIT_EXCEEDED`.
    pub max_connections_per_address: usize,
    /// Per input channel: the content checksums of the last this-many
    /// accepted frames are kept to catch a duplicate whose content differs
    /// (a power of two).
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
        self.bool_or(t, p, k, false)
    }

    /// A boolean with a default.
    pub(crate) fn bool_or(
        &self,
        t: &toml::Table,
        p: &str,
        k: &str,
        default: bool,
    ) -> Result<bool, ConfigError> {
        match t.get(k) {
            None => Ok(default),
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
            "frame_timeout_ms",
            "max_handshakes",
            "max_connections_per_address",
            "dedup_window",
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
        frame_timeout_ms: w.int(
            limits,
            l,
            "frame_timeout_ms",
            d.frame_timeout_ms,
            10,
            3_600_000,
        )?,
        max_handshakes: w.int(
            limits,
            l,
            "max_handshakes",
            d.max_handshakes as u64,
            1,
            65536,
        )? as usize,
        max_connections_per_address: w.int(
            limits,
            l,
            "max_connections_per_address",
            d.max_connections_per_address as u64,
            1,
            65536,
        )? as usize,
        dedup_window: w.int(
            limits,
            l,
            "dedup_window",
            d.dedup_window as u64,
            1024,
            1 << 24,
        )? as usize,
    };
    if !limits.dedup_window.is_power_of_two() {
        return Err(w.err(
            "limits.dedup_window",
            format!("{} is not a power of two", limits.dedup_window),
        ));
    }
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

/// The largest secret file read (`secret_file`, `client_secret_file`, the
/// tools' `--secret-file`).
pub const MAX_SECRET_FILE_LEN: u64 = 4096;
/// The largest TLS private key file read (`tls.key_file`).
pub const MAX_KEY_FILE_LEN: u64 = 64 << 10;
/// The largest certificate file read (`tls.cert_file`, `tls.ca_file`).
pub const MAX_CERT_FILE_LEN: u64 = 1 << 20;

/// What a file's type is, for "is not a regular file" errors.
fn file_kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads the regular file `path`, at most `max` bytes. With `private` (a
/// secret or a private key), a file that group or others may read, write or
/// execute (any of mode bits 0o077) is refused, as ssh refuses such keys.
/// Type, mode and size are those of the opened file (`fstat`), not of a
/// separate look at the path; the open is non-blocking, so a FIFO is refused
/// instead of waiting for a writer. The error names the file.
pub(crate) fn read_bounded(path: &Path, max: u64, private: bool) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{shown} is not a regular file (it is {})",
            file_kind(meta.file_type())
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if private && mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: group or others can access it, and it holds a secret; run `chmod 600 {shown}`"
        ));
    }
    let too_long = |len: u64| format!("{shown} is {len} bytes; at most {max} are read from it");
    if meta.len() > max {
        return Err(too_long(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > max {
        // It grew after the fstat.
        return Err(too_long(bytes.len() as u64));
    }
    Ok(bytes)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `[tls]` (`docs/CONFIG.md`): paths relative to `base`, every file read
/// and checked now.
pub(crate) fn parse_tls(
    w: &Walker<'_>,
    t: &toml::Table,
    base: &Path,
) -> Result<TlsFiles, ConfigError> {
    w.reject_unknown(
        t,
        "tls",
        &[
            "cert_file",
            "key_file",
            "ca_file",
            "nodes",
            "clients",
            "require_client_cert",
        ],
    )?;
    let cert_file = base.join(w.req_str(t, "tls", "cert_file")?);
    let key_file = base.join(w.req_str(t, "tls", "key_file")?);
    let ca_file = base.join(w.req_str(t, "tls", "ca_file")?);
    let nodes = w.bool_or(t, "tls", "nodes", true)?;
    let clients = w.bool_or(t, "tls", "clients", true)?;
    let require_client_cert = w.bool_or(t, "tls", "require_client_cert", false)?;
    if !nodes && !clients {
        return Err(w.err(
            "tls",
            "tls.nodes and tls.clients are both false: TLS would protect nothing (remove [tls], or set one of them)",
        ));
    }
    if require_client_cert && !clients {
        return Err(w.err(
            "tls.require_client_cert",
            "needs tls.clients = true (sources present certificates only over TLS)",
        ));
    }
    let cert_pem = read_bounded(&cert_file, MAX_CERT_FILE_LEN, false)
        .map_err(|m| w.err("tls.cert_file", m))?;
    if !contains(&cert_pem, b"-----BEGIN CERTIFICATE-----") {
        return Err(w.err(
            "tls.cert_file",
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert_file.display()
            ),
        ));
    }
    let key_pem =
        read_bounded(&key_file, MAX_KEY_FILE_LEN, true).map_err(|m| w.err("tls.key_file", m))?;
    if contains(&key_pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(w.err(
            "tls.key_file",
            format!(
                "{} is encrypted and a worker cannot ask for its passphrase; decrypt it (openssl pkey -in KEY -out PLAIN_KEY) and keep it mode 600",
                key_file.display()
            ),
        ));
    }
    if !contains(&key_pem, b"PRIVATE KEY-----") {
        return Err(w.err(
            "tls.key_file",
            format!(
                "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
                key_file.display()
            ),
        ));
    }
    let ca_pem =
        read_bounded(&ca_file, MAX_CERT_FILE_LEN, false).map_err(|m| w.err("tls.ca_file", m))?;
    if !contains(&ca_pem, b"-----BEGIN CERTIFICATE-----") {
        return Err(w.err(
            "tls.ca_file",
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ca_file.display()
            ),
        ));
    }
    Ok(TlsFiles {
        cert_file,
        key_file,
        ca_file,
        cert_pem,
        key_pem: Secret(key_pem),
        ca_pem,
        nodes,
        clients,
        require_client_cert,
    })
}

/// An address clients reach: a source listener or the sink.
pub(crate) struct ClientAddr {
    /// Its configuration key (`node.listen`, `worker[1].sources`, ...).
    pub(crate) key: String,
    pub(crate) addr: SocketAddr,
    pub(crate) sink: bool,
}

impl ClientAddr {
    fn is_open(&self) -> bool {
        !self.addr.ip().to_canonical().is_loopback()
    }
}

/// Without a client secret, every client address must be loopback (`p`:
/// the table holding `client_secret_file` and `allow_unauthenticated`).
pub(crate) fn refuse_open(
    w: &Walker<'_>,
    p: &str,
    addrs: &[ClientAddr],
) -> Result<(), ConfigError> {
    let Some(a) = addrs.iter().find(|a| a.is_open()) else {
        return Ok(());
    };
    let risk = if a.sink {
        "the node would send its output to whatever answers there, and take its ACKs, without authentication"
    } else if a.addr.ip().is_unspecified() {
        "it listens on every interface, so anyone who can reach this host could connect as a source and send input"
    } else {
        "anyone who can reach it could connect as a source and send input"
    };
    Err(w.err(
        &a.key,
        format!(
            "{} is not a loopback address and no {p}.client_secret_file is set: {risk}. Set {p}.client_secret_file (verity-send and verity-recv then take the same file as --secret-file), or set {p}.allow_unauthenticated = true to run open on purpose",
            a.addr
        ),
    ))
}

/// The warning of a node running open on purpose: without a client secret
/// and with `allow_unauthenticated`, the client addresses that are not
/// loopback (`None` if all are).
pub(crate) fn open_warning(p: &str, addrs: &[ClientAddr]) -> Option<String> {
    let open: Vec<String> = addrs
        .iter()
        .filter(|a| a.is_open())
        .map(|a| format!("{} = {}", a.key, a.addr))
        .collect();
    if open.is_empty() {
        return None;
    }
    Some(format!(
        "{p}.allow_unauthenticated = true and no {p}.client_secret_file: sources and the sink connect without authentication on addresses that are not loopback ({}); anyone who can reach them can send input or take output. Set {p}.client_secret_file to require authentication",
        open.join(", ")
    ))
}

/// The number of sources of `app` (its source channels are `1..=S`).
pub(crate) fn source_count(app: &str) -> usize {
    crate::apps::build(app).map_or(0, |a| a.sources().len())
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
            resend_timeout_ns: self.limits.resend_timeout_ms.saturating_mul(1_000_000),
            handshake_timeout_ns: self.limits.handshake_timeout_ms.saturating_mul(1_000_000),
            ..NodeConfig::default()
        }
    }

    pub fn load(path: &Path) -> Result<NodeToml, ConfigError> {
        NodeToml::parse(&read_config(path)?, path)
    }

    pub fn parse(text: &str, file: &Path) -> Result<NodeToml, ConfigError> {
        let w = Walker { file };
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
            Some(f) => Some(super::cluster::read_secret(
                &base.join(f),
                file,
                "node.client_secret_file",
            )?),
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
            source_homes: vec![SourceHome::Here; source_count(&app)],
            app,
            data_dir: PathBuf::from(w.req_str(node, "node", "data_dir")?),
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
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
        let c = NodeToml::parse(&text, &t.path().join("node.toml")).unwrap();
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
        let c = NodeToml::parse(&format!("{GOOD}{TLS}"), &t.path().join("node.toml")).unwrap();
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
            let e = NodeToml::parse(&text, &t.path().join("node.toml")).unwrap_err();
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
