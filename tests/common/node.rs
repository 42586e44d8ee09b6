//! A single-node worker as a real process (`verity worker --config
//! node.toml`), and the tools that feed and check it.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::free_addr;
use verity_tools::check::{self, App};
use verity_tools::formats::{InputFormat, InputWriter};
use verity_tools::send::{send, Progress, Records, SendConfig, SendStats};

pub struct Node {
    pub config: PathBuf,
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn new(dir: &Path, app: &str, sink: SocketAddr, limits: &str) -> Node {
        let listen = free_addr();
        let data = dir.join("node");
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\napp = \"{app}\"\ndata_dir = {:?}\nlisten = \"{listen}\"\nsink = \"{sink}\"\nsnapshot_interval_records = 5000\n\n[limits]\njournal_segment_bytes = 1048576\nmax_frame_len = 65536\nread_buffer_bytes = 262144\n{limits}\n",
                data.display().to_string()
            ),
        )
        .unwrap();
        Node {
            config,
            data,
            listen,
            log: dir.join("node.log"),
            child: None,
        }
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// [`Node::start`] with more arguments for `verity worker`.
    pub fn start_with(&mut self, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_verity"))
            .args(["worker", "--config"])
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Wait until it listens.
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.listen).is_err() {
            assert!(
                Instant::now() < until,
                "node did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM; returns the exit code.
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
            assert!(Instant::now() < until, "node ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle` (polled for up to 10 s; after that the
    /// log as it is, for the caller's assertion to show).
    pub fn wait_log(&self, needle: &str) -> String {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if log.contains(needle) || std::time::Instant::now() >= until {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn u64_file(dir: &Path, n: u64) -> PathBuf {
    let p = dir.join("input.u64");
    let mut w = InputWriter::create(InputFormat::U64, &p).unwrap();
    for v in 1..=n {
        w.write_u64(v).unwrap();
    }
    w.finish().unwrap();
    p
}

pub fn send_file(addr: SocketAddr, path: &Path, format: InputFormat, channel: u32) -> SendStats {
    let records = Records::load(format, path).unwrap();
    let mut cfg = SendConfig::new(addr, channel);
    cfg.give_up_after = Duration::from_secs(20);
    send(
        &cfg,
        &records,
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap()
}

pub fn check_pass(app: App, inputs: &[&Path], received: &Path) {
    let report = check::check(app, inputs, received).unwrap();
    assert!(report.passed(), "{report}");
}
