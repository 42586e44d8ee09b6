//! The receiver survives its own restarts: a real node (`verity worker`) and
//! the receiver as a process of its own (`verity recv`, the command line of
//! `verity-recv`), real TCP, real `kill -9`. Restarted on the same `--out`,
//! it reopens the file and RESUMEs from it, so the node resends only what is
//! missing: the checker finds nothing lost and nothing duplicated, and the
//! file only grows. Before, a restart truncated the file (issue 11: `lost=N`).

mod common;
use common::free_addr;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use verity_tools::chaos::{self, Profile, Scenario};
use verity_tools::check::{self, App};
use verity_tools::formats::{scan_received, InputFormat, InputWriter};
use verity_tools::send::{send, Progress, Records, SendConfig, SendStats};

/// Bytes of the file header and of a doubler record (8-byte payload).
const HDR: u64 = 16;
const REC: u64 = 40;

struct Node {
    config: PathBuf,
    listen: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, sink: SocketAddr) -> Node {
        let listen = free_addr();
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\napp = \"doubler\"\ndata_dir = {:?}\nlisten = \"{listen}\"\nsink = \"{sink}\"\nsnapshot_interval_records = 5000\n\n[limits]\njournal_segment_bytes = 1048576\nmax_frame_len = 65536\nread_buffer_bytes = 262144\n",
                dir.join("node").display().to_string()
            ),
        )
        .unwrap();
        Node {
            config,
            listen,
            log: dir.join("node.log"),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_verity"))
                .args(["worker", "--config"])
                .arg(&self.config)
                .stdin(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.listen).is_err() {
            assert!(
                Instant::now() < until,
                "node did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `verity recv` as a child process; every incarnation's stdout and stderr
/// go to one log.
struct Recv {
    listen: SocketAddr,
    out: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Recv {
    fn new(dir: &Path, args: &[&str]) -> Recv {
        Recv {
            listen: free_addr(),
            out: dir.join("received.bin"),
            log: dir.join("recv.log"),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_verity"))
                .args(["recv", "--listen", &self.listen.to_string(), "--out"])
                .arg(&self.out)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.listen).is_err() {
            assert!(
                Instant::now() < until,
                "receiver did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM; its exit code.
    fn term(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        c.wait().unwrap().code()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Records in the file (doubler: every record is 40 bytes).
    fn records(&self) -> u64 {
        std::fs::metadata(&self.out)
            .map(|m| m.len().saturating_sub(HDR) / REC)
            .unwrap_or(0)
    }

    fn wait_records(&self, n: u64, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.records() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} records arrived: {}",
                self.records(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Recv {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn u64_file(path: &Path, n: u64) -> PathBuf {
    let mut w = InputWriter::create(InputFormat::U64, path).unwrap();
    for v in 1..=n {
        w.write_u64(v).unwrap();
    }
    w.finish().unwrap();
    path.to_path_buf()
}

fn send_file(to: SocketAddr, input: &Path, rate: Option<u64>) -> SendStats {
    let records = Records::load(InputFormat::U64, input).unwrap();
    let mut cfg = SendConfig::new(to, 1);
    cfg.rate = rate;
    cfg.give_up_after = Duration::from_secs(30);
    send(
        &cfg,
        &records,
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap()
}

/// The checker passes with nothing lost and nothing duplicated.
fn check_exact(input: &Path, received: &Path, n: u64) {
    let r = check::check(App::Doubler, &[input], received).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!((r.lost, r.duplicated, r.received), (0, 0, n), "{r}");
}

/// The good prefix of a snapshot of the file (what a reopen keeps).
fn good_prefix(bytes: &[u8]) -> &[u8] {
    let scan = scan_received(bytes, Path::new("snapshot")).unwrap();
    &bytes[..scan.good_bytes as usize]
}

/// Sends `n` records at `rate` while the receiver is `kill -9`ed and
/// restarted at each of `kill_at` records in its file; returns the
/// receiver's log.
fn killed_mid_stream(name: &str, args: &[&str], n: u64, rate: u64, kill_at: &[u64]) -> String {
    let t = tempfile::tempdir().unwrap();
    let input = u64_file(&t.path().join("input.u64"), n);
    let mut recv = Recv::new(t.path(), args);
    recv.start();
    let mut node = Node::new(t.path(), recv.listen);
    node.start();
    let to = node.listen;
    let inp = input.clone();
    let sender = std::thread::spawn(move || send_file(to, &inp, Some(rate)));
    let mut snapshots = Vec::new();
    for &at in kill_at {
        recv.wait_records(at, Duration::from_secs(30));
        recv.kill9();
        let before = std::fs::read(&recv.out).unwrap();
        recv.start();
        // The restart truncates nothing but a torn tail.
        let after = std::fs::read(&recv.out).unwrap();
        assert!(
            after.starts_with(good_prefix(&before)),
            "{name}: the reopen kept every good record"
        );
        snapshots.push(before);
    }
    assert_eq!(sender.join().unwrap().frames, n);
    recv.wait_records(n, Duration::from_secs(30));
    // Every resend the restarts caused has been absorbed by now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recv.term(), Some(0), "{name}: {}", recv.log_text());
    let fin = std::fs::read(&recv.out).unwrap();
    let mut len = 0;
    for s in &snapshots {
        // The file only grows, and what was there stays as it was.
        assert!(fin.starts_with(good_prefix(s)), "{name}");
        assert!(good_prefix(s).len() >= len, "{name}");
        len = good_prefix(s).len();
    }
    check_exact(&input, &recv.out, n);
    let log = recv.log_text();
    assert_eq!(
        log.matches("listening on").count(),
        kill_at.len() + 1,
        "{log}"
    );
    log
}

#[test]
fn receiver_kill_9_mid_stream_and_restart_on_the_same_file_loses_and_duplicates_nothing() {
    let log = killed_mid_stream("process", &[], 30_000, 15_000, &[6_000, 18_000]);
    // The last incarnation found what the others wrote.
    let last = log.lines().rfind(|l| l.contains("records=")).unwrap();
    assert!(
        last.starts_with("verity recv: records=30000 recovered="),
        "{log}"
    );
    let recovered: u64 = last
        .split_whitespace()
        .find_map(|w| w.strip_prefix("recovered="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(recovered >= 18_000, "{log}");
}

#[test]
fn an_fsync_receiver_acks_and_survives_kill_9_the_same_way() {
    let log = killed_mid_stream(
        "fsync",
        &["--durability", "fsync"],
        20_000,
        15_000,
        &[8_000],
    );
    assert!(log.contains("durability fsync"), "{log}");
    let syncs: u64 = log
        .lines()
        .rfind(|l| l.contains("records="))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("syncs=")))
        .unwrap()
        .parse()
        .unwrap();
    assert!(syncs > 0, "{log}");
}

#[test]
fn a_clean_restart_of_the_receiver_resumes_where_it_stopped() {
    let t = tempfile::tempdir().unwrap();
    let n = 20_000;
    let input = u64_file(&t.path().join("input.u64"), n);
    let mut recv = Recv::new(t.path(), &[]);
    recv.start();
    let mut node = Node::new(t.path(), recv.listen);
    node.start();
    let (to, inp) = (node.listen, input.clone());
    let sender = std::thread::spawn(move || send_file(to, &inp, Some(15_000)));
    recv.wait_records(5_000, Duration::from_secs(30));
    assert_eq!(recv.term(), Some(0));
    let stopped = std::fs::read(&recv.out).unwrap();
    let had = (stopped.len() as u64 - HDR) / REC;
    assert_eq!(
        HDR + had * REC,
        stopped.len() as u64,
        "a clean stop leaves no torn tail"
    );
    recv.start();
    assert_eq!(sender.join().unwrap().frames, n);
    recv.wait_records(n, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recv.term(), Some(0));
    let fin = std::fs::read(&recv.out).unwrap();
    assert!(fin.starts_with(&stopped), "earlier records intact");
    let log = recv.log_text();
    assert!(log.contains(&format!("{had} records found")), "{log}");
    assert!(
        log.contains(&format!("records={n} recovered={had} ")),
        "{log}"
    );
    check_exact(&input, &recv.out, n);
}

/// Issue 11, "Why" 2, as reported: every output ACKed, the receiver
/// restarted with the same `--out`: the file used to be truncated to 0 bytes
/// (`lost=10000`). Now it is kept, and the run goes on from there.
#[test]
fn a_receiver_restarted_with_the_same_out_keeps_what_it_acked() {
    let t = tempfile::tempdir().unwrap();
    let first = u64_file(&t.path().join("first.u64"), 10_000);
    let all = u64_file(&t.path().join("all.u64"), 20_000);
    let mut recv = Recv::new(t.path(), &[]);
    recv.start();
    let mut node = Node::new(t.path(), recv.listen);
    node.start();
    send_file(node.listen, &first, None);
    recv.wait_records(10_000, Duration::from_secs(30));
    // Give the node time to see every ACK, so it drops those frames for good.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recv.term(), Some(0));
    let size = std::fs::metadata(&recv.out).unwrap().len();
    assert_eq!(size, HDR + 10_000 * REC);
    recv.start();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recv.term(), Some(0));
    assert_eq!(
        std::fs::metadata(&recv.out).unwrap().len(),
        size,
        "not truncated"
    );
    check_exact(&first, &recv.out, 10_000);
    // And the run goes on: the next 10 000 land after the first.
    recv.start();
    send_file(node.listen, &all, None);
    recv.wait_records(20_000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(recv.term(), Some(0));
    check_exact(&all, &recv.out, 20_000);
    // With --fresh it starts over on purpose.
    recv.args = vec!["--fresh".into()];
    recv.start();
    assert_eq!(recv.term(), Some(0));
    assert_eq!(std::fs::metadata(&recv.out).unwrap().len(), HDR);
}

/// A chaos run with receiver kills (paced, so they land mid-stream) passes.
#[test]
fn a_chaos_run_with_receiver_kills_passes() {
    let mut s = Scenario::new(PathBuf::from(env!("CARGO_BIN_EXE_verity")));
    s.app = "doubler".into();
    s.workers = 2;
    s.messages = 30_000;
    s.rate = Some(15_000);
    s.profile = Profile::Crashes;
    s.kills = Some(2);
    s.receiver_kills = Some(3);
    s.seed = 11;
    let o = chaos::run(&s).unwrap();
    assert!(o.passed, "{}", o.last_line);
    assert!(o.last_line.ends_with("kills=2"), "{}", o.last_line);
    assert_eq!(o.receiver_kills_at.len(), 3);
    assert!(
        o.receiver_kills_at.iter().any(|&at| at < o.expected),
        "a receiver kill mid-stream: {:?} of {}",
        o.receiver_kills_at,
        o.expected
    );
}
