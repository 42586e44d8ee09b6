//! A worker of a cluster as a real process (`verity worker --config
//! cluster.toml --name wN`).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// One worker process.
pub struct Worker {
    pub name: String,
    pub config: PathBuf,
    pub address: SocketAddr,
    pub sources: SocketAddr,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Worker {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_verity"))
            .args(["worker", "--config"])
            .arg(&self.config)
            .args(["--name", &self.name])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.sources).is_err() {
            assert!(
                Instant::now() < until,
                "{} did not start: {}",
                self.name,
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn term(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < until, "{} ignored SIGTERM", self.name);
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every worker's log, headed by its name.
pub fn logs(workers: &[Worker]) -> String {
    workers
        .iter()
        .map(|w| format!("--- {} ---\n{}", w.name, w.log_text()))
        .collect()
}
