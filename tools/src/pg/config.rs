//! The sink's TOML file (`docs/CONFIG.md`, "verity-sink-postgres"). Paths
//! in it are relative to the file; an unknown key, a wrong type or a bad
//! value is an error naming the file and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::rows::{TableName, WriteMode};

/// Everything `verity-sink-postgres run` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Where nodes connect (their `sink`).
    pub listen: SocketAddr,
    pub cluster_id: u64,
    /// The app whose outputs arrive: chooses the row mapping.
    pub app: String,
    /// The client secret nodes must prove they hold (`client_secret_file`).
    pub client_secret_file: Option<PathBuf>,
    /// TLS towards the nodes: certificate, key, and a CA for node
    /// certificates.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub max_frame_len: u32,
    /// libpq-style connection string: `host=... port=... user=... dbname=...`
    /// or `postgresql://user@host:port/db`.
    pub url: String,
    /// The password, read from `password_file` (not written in the file).
    pub password: Option<String>,
    /// The output table (`None`: the mapping's default).
    pub table: Option<TableName>,
    pub watermark_table: TableName,
    /// Most rows in one transaction.
    pub batch_rows: usize,
    pub write: WriteMode,
    /// Backoff between attempts to reach the database: first, then doubling
    /// up to the most.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Create the tables when they do not exist.
    pub create_tables: bool,
}

impl SinkConfig {
    /// Defaults, for a sink on `listen` writing into the database at `url`.
    pub fn new(listen: SocketAddr, app: &str, url: &str) -> SinkConfig {
        SinkConfig {
            listen,
            cluster_id: 1,
            app: app.to_string(),
            client_secret_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            max_frame_len: verity_wire::DEFAULT_MAX_FRAME_LEN,
            url: url.to_string(),
            password: None,
            table: None,
            watermark_table: TableName::parse("verity_delivered").expect("a valid name"),
            batch_rows: 10_000,
            write: WriteMode::Copy,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            create_tables: true,
        }
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<SinkConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        SinkConfig::parse(&text, path)
    }

    /// Parses `text`, the contents of `path` (relative paths are resolved
    /// against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<SinkConfig, String> {
        let shown = path.display().to_string();
        let top: Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{shown}: {}", e.to_string().trim_end()))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut w = Keys {
            file: &shown,
            base: &base,
        };
        let listen = w.string(&top, "", "listen")?.ok_or_else(|| {
            format!("{shown}: `listen` is required (the address nodes name as their sink)")
        })?;
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| format!("{shown}: listen = {listen:?}: {e}"))?;
        let app = w
            .string(&top, "", "app")?
            .ok_or_else(|| format!("{shown}: `app` is required (the app whose outputs arrive: market-spread, or any other name for bytes)"))?;
        let pg = match top.get("postgres") {
            Some(Value::Table(t)) => t.clone(),
            Some(_) => return Err(format!("{shown}: [postgres] must be a table")),
            None => {
                return Err(format!(
                    "{shown}: the [postgres] table is required (url = ...)"
                ))
            }
        };
        let url = w
            .string(&pg, "postgres.", "url")?
            .ok_or_else(|| format!("{shown}: postgres.url is required (e.g. \"host=127.0.0.1 port=5432 user=verity dbname=verity\")"))?;
        let mut c = SinkConfig::new(listen, &app, &url);
        if let Some(id) = w.int(&top, "", "cluster_id", 0, u64::MAX)? {
            c.cluster_id = id;
        }
        c.client_secret_file = w.path(&top, "", "client_secret_file")?;
        if let Some(n) = w.int(&top, "", "max_frame_len", 104, 64 << 20)? {
            c.max_frame_len = n as u32;
        }
        match top.get("tls") {
            None => {}
            Some(Value::Table(t)) => {
                w.only(t, "tls.", &["cert", "key", "ca"])?;
                c.tls_cert = w.path(t, "tls.", "cert")?;
                c.tls_key = w.path(t, "tls.", "key")?;
                c.tls_ca = w.path(t, "tls.", "ca")?;
                if c.tls_cert.is_none() || c.tls_key.is_none() {
                    return Err(format!("{shown}: [tls] needs both cert and key"));
                }
            }
            Some(_) => return Err(format!("{shown}: [tls] must be a table")),
        }
        w.only(
            &top,
            "",
            &[
                "listen",
                "app",
                "cluster_id",
                "client_secret_file",
                "max_frame_len",
                "tls",
                "postgres",
            ],
        )?;
        w.only(
            &pg,
            "postgres.",
            &[
                "url",
                "password_file",
                "table",
                "watermark_table",
                "batch_rows",
                "write",
                "retry_initial_ms",
                "retry_max_ms",
                "create_tables",
            ],
        )?;
        if let Some(p) = w.path(&pg, "postgres.", "password_file")? {
            let b = crate::client_auth::read_private(&p, 4096)?;
            let s = String::from_utf8(b)
                .map_err(|_| format!("{}: the password is not UTF-8", p.display()))?;
            c.password = Some(s.trim_end().to_string());
        }
        let name = |key: &str, v: String| {
            TableName::parse(&v).map_err(|e| format!("{shown}: postgres.{key}: {e}"))
        };
        if let Some(t) = w.string(&pg, "postgres.", "table")? {
            c.table = Some(name("table", t)?);
        }
        if let Some(t) = w.string(&pg, "postgres.", "watermark_table")? {
            c.watermark_table = name("watermark_table", t)?;
        }
        if let Some(n) = w.int(&pg, "postgres.", "batch_rows", 1, 1_000_000)? {
            c.batch_rows = n as usize;
        }
        if let Some(m) = w.string(&pg, "postgres.", "write")? {
            c.write = m
                .parse()
                .map_err(|e| format!("{shown}: postgres.write: {e}"))?;
        }
        if let Some(n) = w.int(&pg, "postgres.", "retry_initial_ms", 1, 60_000)? {
            c.retry_initial_ms = n;
        }
        if let Some(n) = w.int(&pg, "postgres.", "retry_max_ms", 1, 600_000)? {
            c.retry_max_ms = n;
        }
        if c.retry_max_ms < c.retry_initial_ms {
            return Err(format!(
                "{shown}: postgres.retry_max_ms ({}) is below postgres.retry_initial_ms ({})",
                c.retry_max_ms, c.retry_initial_ms
            ));
        }
        if let Some(b) = w.bool(&pg, "postgres.", "create_tables")? {
            c.create_tables = b;
        }
        if c.table.as_ref() == Some(&c.watermark_table) {
            return Err(format!(
                "{shown}: postgres.table and postgres.watermark_table are both {:?}",
                c.watermark_table.as_str()
            ));
        }
        Ok(c)
    }
}

/// Typed reads of one table's keys, naming file and key in every error.
struct Keys<'a> {
    file: &'a str,
    base: &'a Path,
}

impl Keys<'_> {
    fn only(&mut self, t: &Table, prefix: &str, known: &[&str]) -> Result<(), String> {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                return Err(format!(
                    "{}: unknown key `{prefix}{k}` (known here: {})",
                    self.file,
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn string(&mut self, t: &Table, prefix: &str, key: &str) -> Result<Option<String>, String> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!(
                "{}: `{prefix}{key}` must be a string, not {}",
                self.file,
                v.type_str()
            )),
        }
    }

    fn bool(&mut self, t: &Table, prefix: &str, key: &str) -> Result<Option<bool>, String> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(format!(
                "{}: `{prefix}{key}` must be true or false, not {}",
                self.file,
                v.type_str()
            )),
        }
    }

    fn int(
        &mut self,
        t: &Table,
        prefix: &str,
        key: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, String> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Integer(n)) if *n >= 0 && (*n as u64) >= min && (*n as u64) <= max => {
                Ok(Some(*n as u64))
            }
            Some(Value::Integer(n)) => Err(format!(
                "{}: `{prefix}{key}` = {n} is out of range ({min}..={max})",
                self.file
            )),
            Some(v) => Err(format!(
                "{}: `{prefix}{key}` must be an integer, not {}",
                self.file,
                v.type_str()
            )),
        }
    }

    fn path(&mut self, t: &Table, prefix: &str, key: &str) -> Result<Option<PathBuf>, String> {
        Ok(self.string(t, prefix, key)?.map(|p| self.base.join(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SinkConfig, String> {
        SinkConfig::parse(text, Path::new("/etc/verity/sink.toml"))
    }

    const MIN: &str = "listen = \"127.0.0.1:7100\"\napp = \"market-spread\"\n[postgres]\nurl = \"host=127.0.0.1 user=verity\"\n";

    #[test]
    fn the_smallest_file_takes_the_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(
            c,
            SinkConfig::new(
                "127.0.0.1:7100".parse().unwrap(),
                "market-spread",
                "host=127.0.0.1 user=verity"
            )
        );
        assert_eq!(c.batch_rows, 10_000);
        assert_eq!(c.watermark_table.as_str(), "verity_delivered");
    }

    #[test]
    fn every_key_is_read_and_paths_are_relative_to_the_file() {
        let c = parse(&format!(
            "{MIN}table = \"app.decisions\"\nwatermark_table = \"app.wm\"\nbatch_rows = 500\nwrite = \"insert\"\nretry_initial_ms = 10\nretry_max_ms = 20\ncreate_tables = false\n"
        ))
        .unwrap();
        assert_eq!(c.table.unwrap().as_str(), "app.decisions");
        assert_eq!(c.watermark_table.as_str(), "app.wm");
        assert_eq!(
            (
                c.batch_rows,
                c.write,
                c.retry_initial_ms,
                c.retry_max_ms,
                c.create_tables
            ),
            (500, WriteMode::Insert, 10, 20, false)
        );
        let c = parse(&format!("client_secret_file = \"client.secret\"\n{MIN}")).unwrap();
        assert_eq!(
            c.client_secret_file.unwrap(),
            Path::new("/etc/verity/client.secret")
        );
    }

    #[test]
    fn mistakes_name_the_file_and_the_key() {
        for (text, want) in [
            (
                format!("{MIN}tabel = \"x\"\n"),
                "unknown key `postgres.tabel`",
            ),
            (format!("lissen = 1\n{MIN}"), "unknown key `lissen`"),
            (
                format!("{MIN}batch_rows = 0\n"),
                "`postgres.batch_rows` = 0 is out of range",
            ),
            (
                format!("{MIN}batch_rows = \"10\"\n"),
                "must be an integer, not string",
            ),
            (
                format!("{MIN}write = \"upsert\"\n"),
                "unknown write mode \"upsert\"",
            ),
            (
                format!("{MIN}table = \"Bad-Name\"\n"),
                "postgres.table: \"Bad-Name\" is not a table name",
            ),
            (format!("{MIN}table = \"verity_delivered\"\n"), "are both"),
            (
                format!("{MIN}retry_initial_ms = 50\nretry_max_ms = 10\n"),
                "below",
            ),
            (
                "app = \"x\"\n[postgres]\nurl = \"\"\n".to_string(),
                "`listen` is required",
            ),
            (
                "listen = \"127.0.0.1:1\"\napp = \"x\"\n".to_string(),
                "[postgres] table is required",
            ),
            (
                "listen = \"nowhere\"\napp = \"x\"\n".to_string(),
                "listen = \"nowhere\"",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("/etc/verity/sink.toml: "), "{e}");
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }
}
