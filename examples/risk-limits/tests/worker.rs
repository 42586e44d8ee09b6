//! The risk-limits app in a real worker process of its own binary (the
//! engine's command line, registered as a user registers it): real TCP
//! from `verity-send`, into `verity-recv`, the worker `kill -9`ed mid-run
//! and restarted on its data directory. Its oracle then finds every order
//! decided exactly once and right, and `replay` of the journal through this
//! build is IDENTICAL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use verity_risk_limits::{generate_orders, oracle};
use verity_tools::formats::read_received;
use verity_tools::ports::{any_port, free_addr};
use verity_tools::recv::{Receiver, RecvConfig};
use verity_tools::send::{send, Progress, Records, SendConfig};

const BIN: &str = env!("CARGO_BIN_EXE_verity-risk-limits");

/// A scratch directory, removed at drop.
/// A scratch directory (tempfile's, removed when dropped) and its path.
struct Scratch(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let t = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        Scratch(t.path().to_path_buf(), t)
    }
}

fn start_worker(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(BIN)
        .args(["worker", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the worker starts")
}

#[test]
fn a_worker_of_the_user_binary_killed_mid_run_decides_every_order_once() {
    let dir = Scratch::new("verity-rl-worker-");
    let n = 20_000;
    let orders = generate_orders(11, n);

    let out = dir.0.join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &out)).unwrap();
    let listen = free_addr().unwrap();
    let config = dir.0.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\napp = \"risk-limits\"\ndata_dir = {:?}\nlisten = \"{listen}\"\nsink = \"{}\"\n",
            dir.0.join("data").display().to_string(),
            recv.addr()
        ),
    )
    .unwrap();
    let log = dir.0.join("worker.log");
    let mut worker = start_worker(&config, &log);

    // The sender goes on through the crash: it reconnects and resends from
    // the restarted worker's RESUME.
    let records = Records::from_vec(orders.clone());
    let sender = thread::spawn(move || {
        let mut cfg = SendConfig::new(listen, 1);
        cfg.rate = Some(20_000);
        send(
            &cfg,
            &records,
            &Progress::default(),
            &AtomicBool::new(false),
        )
    });
    assert!(
        recv.wait_for(3_000, Duration::from_secs(30)),
        "no outputs: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    let mut worker = start_worker(&config, &log);
    let sent = sender.join().unwrap().expect("every order ACKed");
    assert!(
        sent.connects >= 2,
        "the sender reconnected after the kill: {sent:?}"
    );
    let done = recv.wait_for(n, Duration::from_secs(60));
    let _ = Command::new("kill").arg(worker.id().to_string()).status(); // SIGTERM
    let deadline = Instant::now() + Duration::from_secs(20);
    while worker.try_wait().unwrap().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = worker.kill();
    recv.stop().unwrap();
    assert!(
        done,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let received = read_received(&out).unwrap();
    let report = oracle::check(&orders, received.iter().map(|r| &r.payload[..]));
    assert!(report.passed(), "{report}");
    assert!(report.accepted > 0 && report.accepted < n, "{report}");

    let replay = Command::new(BIN)
        .args(["replay", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.status.success() && text.contains("replay: IDENTICAL"),
        "{text}"
    );
}
