//! What reading any configuration file needs: the [`ConfigError`] that
//! names file and key, the [`Walker`] over a parsed TOML table, bounded and
//! private file reads (secrets, keys, certificates), and the checks of
//! addresses clients reach. `node.toml` (`node.rs`) and `cluster.toml`
//! (`cluster.rs`) are read with them.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::log::Durability;
use crate::registry::{AppSpec, Registry};

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

/// Walks a parsed TOML table, producing errors that name the file and key.
pub(crate) struct Walker<'a> {
    pub(crate) file: &'a Path,
    /// The apps an `app` key may name.
    pub(crate) apps: &'a Registry,
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

    /// An app name (one the registry holds), required: the app's spec.
    pub(crate) fn app(&self, t: &toml::Table, p: &str) -> Result<AppSpec, ConfigError> {
        let app = self.req_str(t, p, "app")?.to_owned();
        match self.apps.get(&app) {
            Some(spec) => Ok(spec),
            None => Err(self.err(
                &format!("{p}.app"),
                format!(
                    "unknown app {app:?} (one of: {})",
                    self.apps.names().join(", ")
                ),
            )),
        }
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

    /// `cpu_affinity`: a non-empty array of CPU numbers (each below
    /// 1024), or empty when the key is left out.
    pub(crate) fn cpus(
        &self,
        t: &toml::Table,
        p: &str,
        k: &str,
    ) -> Result<Vec<usize>, ConfigError> {
        let key = format!("{p}.{k}");
        let Some(v) = t.get(k) else {
            return Ok(Vec::new());
        };
        let toml::Value::Array(a) = v else {
            return Err(self.err(&key, "must be an array of CPU numbers, e.g. [2, 3]"));
        };
        if a.is_empty() {
            return Err(self.err(&key, "is empty: leave the key out for no pinning"));
        }
        a.iter()
            .map(|c| match c.as_integer() {
                Some(n) if (0..1024).contains(&n) => Ok(n as usize),
                _ => Err(self.err(&key, format!("{c:?} is not a CPU number (0 to 1023)"))),
            })
            .collect()
    }

    /// [`Walker::addr`] of a key that may be left out.
    pub(crate) fn opt_addr(
        &self,
        t: &toml::Table,
        p: &str,
        k: &str,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        match t.contains_key(k) {
            false => Ok(None),
            true => self.addr(t, p, k).map(Some),
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

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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

/// The cluster secret (HMAC key), or the client secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Reads a secret file named by configuration key `key` of `file`: the
/// file's bytes without trailing whitespace, at least
/// [`verity_wire::auth::MIN_SECRET_LEN`] of them. As ssh treats keys, the
/// file must be a regular file that group and others cannot access (mode
/// 600 or 400), of at most [`MAX_SECRET_FILE_LEN`] bytes.
pub fn read_secret(path: &Path, file: &Path, key: &str) -> Result<Secret, ConfigError> {
    let err = |m: String| ConfigError {
        file: file.to_owned(),
        key: key.into(),
        message: m,
    };
    let mut bytes = read_bounded(path, MAX_SECRET_FILE_LEN, true).map_err(err)?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.len() < verity_wire::auth::MIN_SECRET_LEN {
        return Err(err(format!(
            "{} holds {} bytes; a secret needs at least {}",
            path.display(),
            bytes.len(),
            verity_wire::auth::MIN_SECRET_LEN
        )));
    }
    Ok(Secret(bytes))
}
