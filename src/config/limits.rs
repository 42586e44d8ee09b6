//! The `[limits]` and `[tls]` tables, shared by `node.toml` and
//! `cluster.toml` (`docs/CONFIG.md`).

use std::path::{Path, PathBuf};

use super::parse::{
    contains, read_bounded, ConfigError, Secret, Walker, MAX_CERT_FILE_LEN, MAX_KEY_FILE_LEN,
};

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
    /// Per input channel: DATA frames that arrive after a gap are kept, up
    /// to this many seqs past the channel's `delivered` (selective repeat;
    /// a power of two, or 0 to drop them and NACK go-back-N).
    pub reorder_window: usize,
    /// Per input channel: the bytes of the frames kept after a gap.
    pub reorder_bytes: usize,
    /// SO_RCVBUF and SO_SNDBUF asked of the kernel for every connection
    /// (it may grant less: `net.core.rmem_max` / `wmem_max`; the worker
    /// says what it got).
    pub socket_buffer_bytes: usize,
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
            // 32 MiB, not 64: a market-spread node fed 4 M inputs used 25%
            // less CPU and never waited on its preparer at a roll (64 MiB:
            // 80-180 ms waits in most runs; the log reuses dropped segments
            // sooner when they are smaller, so it touches less fresh
            // memory, which is slow on a VM); with fsync as fast, with
            // shorter stalls. docs/OPERATIONS.md, "Disk".
            journal_segment_bytes: 32 << 20,
            resend_timeout_ms: 1000,
            ack_delay_us: 200,
            handshake_timeout_ms: 5000,
            frame_timeout_ms: 10_000,
            max_handshakes: 64,
            max_connections_per_address: 16,
            dedup_window: 1 << 16,
            reorder_window: 1 << 16,
            reorder_bytes: 16 << 20,
            socket_buffer_bytes: 4 << 20,
        }
    }
}

impl Limits {
    /// Every key with its value, in the order of [`LIMIT_KEYS`] (what
    /// `verity config show` prints and a worker logs at start).
    pub fn entries(&self) -> [(&'static str, u64); 17] {
        [
            ("socket_buffer_bytes", self.socket_buffer_bytes as u64),
            ("max_frame_len", self.max_frame_len as u64),
            ("max_unacked", self.max_unacked),
            ("max_undurable", self.max_undurable),
            ("max_connections", self.max_connections as u64),
            ("read_buffer_bytes", self.read_buffer_bytes as u64),
            ("write_buffer_bytes", self.write_buffer_bytes as u64),
            ("journal_segment_bytes", self.journal_segment_bytes),
            ("resend_timeout_ms", self.resend_timeout_ms),
            ("ack_delay_us", self.ack_delay_us),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("max_handshakes", self.max_handshakes as u64),
            (
                "max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("dedup_window", self.dedup_window as u64),
            ("reorder_window", self.reorder_window as u64),
            ("reorder_bytes", self.reorder_bytes as u64),
        ]
    }
}

#[cfg(test)]
#[test]
fn entries_name_every_limit_key() {
    let keys: Vec<&str> = Limits::default().entries().iter().map(|e| e.0).collect();
    assert_eq!(keys, LIMIT_KEYS);
}

/// The `[limits]` table, shared by `node.toml` and `cluster.toml`.
pub(crate) fn parse_limits(w: &Walker<'_>, t: &toml::Table) -> Result<Limits, ConfigError> {
    w.reject_unknown(t, "limits", LIMIT_KEYS)?;
    let d = Limits::default();
    let int = |key: &str, default: u64, lo: u64, hi: u64| w.int(t, "limits", key, default, lo, hi);
    let (frame_min, frame_max) = (
        verity_wire::HEADER_LEN as u64 + 64,
        verity_wire::MAX_FRAME_LEN_LIMIT as u64,
    );
    let hour_ms = 3_600_000;
    let limits = Limits {
        max_frame_len: int(
            "max_frame_len",
            d.max_frame_len as u64,
            frame_min,
            frame_max,
        )? as u32,
        max_unacked: int("max_unacked", d.max_unacked, 1, 1 << 30)?,
        max_undurable: int("max_undurable", d.max_undurable, 1, 1 << 30)?,
        max_connections: int("max_connections", d.max_connections as u64, 1, 4096)? as usize,
        read_buffer_bytes: int(
            "read_buffer_bytes",
            d.read_buffer_bytes as u64,
            4096,
            1 << 30,
        )? as usize,
        write_buffer_bytes: int(
            "write_buffer_bytes",
            d.write_buffer_bytes as u64,
            4096,
            1 << 30,
        )? as usize,
        journal_segment_bytes: int(
            "journal_segment_bytes",
            d.journal_segment_bytes,
            1 << 16,
            4 << 30,
        )?,
        resend_timeout_ms: int("resend_timeout_ms", d.resend_timeout_ms, 1, hour_ms)?,
        ack_delay_us: int("ack_delay_us", d.ack_delay_us, 0, 1_000_000)?,
        handshake_timeout_ms: int("handshake_timeout_ms", d.handshake_timeout_ms, 10, hour_ms)?,
        frame_timeout_ms: int("frame_timeout_ms", d.frame_timeout_ms, 10, hour_ms)?,
        max_handshakes: int("max_handshakes", d.max_handshakes as u64, 1, 65536)? as usize,
        max_connections_per_address: int(
            "max_connections_per_address",
            d.max_connections_per_address as u64,
            1,
            65536,
        )? as usize,
        dedup_window: int("dedup_window", d.dedup_window as u64, 1024, 1 << 24)? as usize,
        reorder_window: int("reorder_window", d.reorder_window as u64, 0, 1 << 20)? as usize,
        reorder_bytes: int("reorder_bytes", d.reorder_bytes as u64, 0, 1 << 30)? as usize,
        socket_buffer_bytes: int(
            "socket_buffer_bytes",
            d.socket_buffer_bytes as u64,
            4096,
            1 << 30,
        )? as usize,
    };
    check_limits(w, &limits)?;
    Ok(limits)
}

/// Every key of `[limits]`.
const LIMIT_KEYS: &[&str] = &[
    "socket_buffer_bytes",
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
    "reorder_window",
    "reorder_bytes",
];

/// The rules between `[limits]` keys, each in range by itself.
fn check_limits(w: &Walker<'_>, limits: &Limits) -> Result<(), ConfigError> {
    if !limits.dedup_window.is_power_of_two() {
        return Err(w.err(
            "limits.dedup_window",
            format!("{} is not a power of two", limits.dedup_window),
        ));
    }
    if limits.reorder_window != 0 && !limits.reorder_window.is_power_of_two() {
        return Err(w.err(
            "limits.reorder_window",
            format!(
                "{} is not a power of two (or 0: no frames kept after a gap)",
                limits.reorder_window
            ),
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
    Ok(())
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
