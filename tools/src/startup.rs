//! `verity-bench --starts N`: how long a worker takes from exec to
//! accepting a connection on an empty data directory, against the time
//! the same binary takes to exec and exit (`--version`) in the same run,
//! so that a slow or busy machine shows in both.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::ports::free_addr;

/// Medians and extremes of one `--starts` measurement, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Starts {
    pub runs: u32,
    /// exec → the worker's listener accepts a connection.
    pub listening_ms: (f64, f64, f64),
    /// exec → exit of `engine --version`.
    pub exec_ms: (f64, f64, f64),
}

impl Starts {
    /// One JSON object (tools/FORMATS.md).
    pub fn to_json(&self) -> String {
        verity_wire::json::Obj::new()
            .int("starts", u64::from(self.runs))
            .num("listening_ms_median", self.listening_ms.1)
            .num("listening_ms_min", self.listening_ms.0)
            .num("listening_ms_max", self.listening_ms.2)
            .num("exec_ms_median", self.exec_ms.1)
            .build()
    }
}

impl std::fmt::Display for Starts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo, med, hi) = self.listening_ms;
        write!(
            f,
            "bench: start, {} runs on an empty data directory: exec -> listening median {med:.1} ms (min {lo:.1}, max {hi:.1}); exec -> exit of --version median {:.1} ms; the start's own part {:.1} ms",
            self.runs,
            self.exec_ms.1,
            med - self.exec_ms.1
        )
    }
}

/// (min, median, max) of `v` (not empty).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// `runs` starts of `engine` running `app` on a fresh data directory under
/// `work_dir`, each stopped with SIGTERM once it accepted a connection,
/// alternating with `runs` execs of `engine --version`.
pub fn measure(engine: &Path, app: &str, work_dir: &Path, runs: u32) -> Result<Starts, String> {
    let runs = runs.max(1);
    let dir = work_dir.join("starts");
    let (mut listening, mut exec) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let t = Instant::now();
        let status = Command::new(engine)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", engine.display()))?;
        exec.push(t.elapsed().as_secs_f64() * 1e3);
        if !status.success() {
            return Err(format!("{} --version: {status}", engine.display()));
        }
        listening.push(one_start(engine, app, &dir.join(i.to_string()))?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Starts {
        runs,
        listening_ms: spread(listening),
        exec_ms: spread(exec),
    })
}

/// One start on the empty data directory `dir`: milliseconds from exec to
/// an accepted connection.
fn one_start(engine: &Path, app: &str, dir: &Path) -> Result<f64, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (listen, sink) = (free_addr()?, free_addr()?);
    let toml = dir.join("node.toml");
    std::fs::write(
        &toml,
        format!("[node]\napp = {app:?}\ndata_dir = \"data\"\nlisten = \"{listen}\"\nsink = \"{sink}\"\n"),
    )
    .map_err(|e| format!("{}: {e}", toml.display()))?;
    let t = Instant::now();
    let mut child = Command::new(engine)
        .args(["worker", "--config"])
        .arg(&toml)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", engine.display()))?;
    let result = loop {
        if TcpStream::connect(listen).is_ok() {
            break Ok(t.elapsed().as_secs_f64() * 1e3);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("the worker exited before it listened: {status}"));
        }
        if t.elapsed() > Duration::from_secs(10) {
            break Err("the worker did not listen within 10 s".to_string());
        }
        thread::sleep(Duration::from_micros(200));
    };
    // SIGTERM, a clean stop, so no worker outlives the measurement.
    // SAFETY: kill(2) on our own child's pid, which we have not waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    result
}
