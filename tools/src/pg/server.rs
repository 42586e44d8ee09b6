//! A private PostgreSQL server in a directory of ours, for the tests, chaos
//! and the demo: Debian's server binaries (`initdb`, `pg_ctl`), listening on
//! a loopback port only, with trust authentication for the `verity` role.
//! Run as root, the server runs as the `postgres` user (PostgreSQL refuses
//! root), so the directory is handed to that user.
//!
//! This is a real server (the tests stop, crash and restart it), never a
//! mock; where no server binaries are installed, starting one is an error
//! that says how to install them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server we started; stopped (immediately) when dropped.
pub struct LocalServer {
    dir: PathBuf,
    bin: PathBuf,
    addr: SocketAddr,
    /// Run its commands as this user (when we are root).
    user: Option<String>,
    running: bool,
    /// The directory is a temporary one of ours (the server's user could
    /// not reach the one asked for): removed when the server is dropped.
    temporary: bool,
}

/// Where the server binaries are: `$VERITY_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` holding `initdb`.
pub fn find_bin() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("VERITY_PG_BIN") {
        let b = PathBuf::from(b);
        if b.join("initdb").is_file() {
            return Ok(b);
        }
        return Err(format!("VERITY_PG_BIN={}: no initdb there", b.display()));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin: install them (`apt-get install postgresql`), or set VERITY_PG_BIN to their directory".to_string()
    })
}

fn is_root() -> bool {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { geteuid() == 0 }
}

impl LocalServer {
    /// Creates the cluster in `dir` (unless it holds one) and starts it on
    /// `addr`; returns once it accepts connections.
    pub fn start(dir: &Path, addr: SocketAddr) -> Result<LocalServer, String> {
        let bin = find_bin()?;
        let user = is_root().then(|| "postgres".to_string());
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(u) = &user {
            let st = Command::new("chown")
                .args(["-R", &format!("{u}:{u}")])
                .arg(&dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err(format!(
                    "chown {u} {}: {st} (does the `{u}` user exist? Debian's postgresql package creates it)",
                    dir.display()
                ));
            }
        }
        let mut temporary = false;
        let dir = match &user {
            // A directory under one the server's user cannot enter (a 0700
            // scratch TMPDIR, a home directory): the data goes to a fresh
            // directory of that user's under /tmp instead.
            Some(u) if !reachable(u, &dir) => {
                let out = Command::new("runuser")
                    .args([
                        "-u",
                        u,
                        "--",
                        "mktemp",
                        "-d",
                        "-p",
                        "/tmp",
                        "verity-pg-XXXXXX",
                    ])
                    .output()
                    .map_err(|e| format!("runuser mktemp: {e}"))?;
                let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || t.is_empty() {
                    return Err(format!(
                        "the {u} user cannot reach {} and mktemp as {u} failed: {}",
                        dir.display(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                eprintln!(
                    "verity: the {u} user cannot reach {}; the PostgreSQL data goes to {t} (removed at the end)",
                    dir.display()
                );
                temporary = true;
                PathBuf::from(t)
            }
            _ => dir,
        };
        let mut s = LocalServer {
            dir,
            bin,
            addr,
            user,
            running: false,
            temporary,
        };
        if !s.dir.join("PG_VERSION").exists() {
            let pgdata = s.dir.display().to_string();
            s.run(
                "initdb",
                &[
                    "-D",
                    &pgdata,
                    "-U",
                    "verity",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )?;
        }
        s.start_server()?;
        Ok(s)
    }

    /// A command of ours, as the server's user when we are root.
    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {}: {}\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses={} -p {} -c unix_socket_directories='' -c max_connections=200",
            self.addr.ip(),
            self.addr.port()
        );
        let pgdata = self.dir.display().to_string();
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &pgdata, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        )?;
        self.running = true;
        // pg_ctl -w returns once the server is ready; a connection proves it.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(&self.url(), postgres::NoTls) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > until => {
                    return Err(format!("the server at {} does not answer: {e}", self.addr))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The connection string of the `verity` role's `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=verity dbname=postgres connect_timeout=5",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server: `fast` (clients disconnected, a clean shutdown)
    /// or `immediate` (as a crash: WAL recovery at the next start).
    pub fn stop(&mut self, mode: &str) -> Result<(), String> {
        let pgdata = self.dir.display().to_string();
        self.run("pg_ctl", &["-D", &pgdata, "-m", mode, "-w", "stop"])?;
        self.running = false;
        Ok(())
    }

    /// Starts it again after [`LocalServer::stop`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.start_server()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop("immediate");
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `user` can write into `dir` (every directory above it
/// searchable by that user).
fn reachable(user: &str, dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", user, "--", "test", "-w"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
