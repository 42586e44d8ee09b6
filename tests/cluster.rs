//! The cluster as real processes: `verity worker --config cluster.toml
//! --name wN` per worker, real TCP between them (through test proxies where
//! a test cuts the link), real `kill -9`. The tools' sender and receiver
//! drive it; the independent checker judges.

mod common;
use common::cluster::Worker;
use common::peer::{impostor, impostor_at};
use common::{any_port, free_addr, free_run};

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity::wire::{Decoder, Encoder, ErrorCode, Kind, Role};
use verity_tools::check::{self, App};
use verity_tools::formats::InputFormat;
use verity_tools::gen::{self, GenConfig};
use verity_tools::recv::{Receiver, RecvConfig};
use verity_tools::send::{send, Progress, Records, SendConfig, SendStats};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A TCP proxy standing in for the network between workers: `cut()` closes
/// every connection through it and refuses new ones (a partition), `heal()`
/// lets traffic through again.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, g, s) = (cut.clone(), generation.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if c.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(to) else {
                            continue;
                        };
                        let gen = g.load(Ordering::SeqCst);
                        for (mut a, mut b) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (g, s) = (g.clone(), s.clone());
                            thread::spawn(move || {
                                a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                                let mut buf = vec![0u8; 64 << 10];
                                loop {
                                    if g.load(Ordering::SeqCst) != gen || s.load(Ordering::SeqCst) {
                                        break;
                                    }
                                    match a.read(&mut buf) {
                                        Ok(0) => break,
                                        Ok(n) => {
                                            if b.write_all(&buf[..n]).is_err() {
                                                break;
                                            }
                                        }
                                        Err(e)
                                            if e.kind() == std::io::ErrorKind::WouldBlock
                                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                                        Err(_) => break,
                                    }
                                }
                                let _ = a.shutdown(Shutdown::Both);
                                let _ = b.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            addr,
            cut,
            generation,
            stop,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Cluster {
    workers: Vec<Worker>,
    /// Per worker, when built with proxies: the proxy others dial it through.
    proxies: Vec<Proxy>,
}

impl Cluster {
    /// Writes cluster.toml for `n` workers running `app` with output to
    /// `sink`; with `proxied`, workers reach each other through proxies.
    fn new(dir: &Path, app: &str, n: usize, sink: SocketAddr, proxied: bool) -> Cluster {
        Cluster::with_shards(dir, app, &vec![1; n], sink, proxied)
    }

    /// As `new`, worker `i` hosting `shards[i]` nodes.
    fn with_shards(
        dir: &Path,
        app: &str,
        shards: &[u32],
        sink: SocketAddr,
        proxied: bool,
    ) -> Cluster {
        let n = shards.len();
        verity_tools::client_auth::write_secret(&dir.join("secret.key"), format!("{SECRET}\n"))
            .unwrap();
        let mut toml = format!(
            "[cluster]\nid = 1\napp = \"{app}\"\npartitions = 256\nsecret_file = \"secret.key\"\nsink = \"{sink}\"\nsnapshot_interval_records = 5000\n\n[limits]\njournal_segment_bytes = 1048576\nmax_frame_len = 65536\nread_buffer_bytes = 262144\n"
        );
        let config = dir.join("cluster.toml");
        let mut workers = Vec::new();
        let mut proxies = Vec::new();
        for i in 1..=n {
            let sources = free_addr();
            // Shard s listens on address's port + s.
            let address = free_run(shards[i - 1]);
            let mut advertise = String::new();
            if proxied {
                let p = Proxy::start(address);
                advertise = format!("advertise = \"{}\"\n", p.addr);
                proxies.push(p);
            }
            toml.push_str(&format!(
                "\n[[worker]]\nname = \"w{i}\"\naddress = \"{address}\"\n{advertise}sources = \"{sources}\"\nshards = {}\ndata_dir = \"w{i}\"\n",
                shards[i - 1]
            ));
            workers.push(Worker {
                name: format!("w{i}"),
                config: config.clone(),
                address,
                sources,
                log: dir.join(format!("w{i}.log")),
                child: None,
            });
        }
        std::fs::write(&config, toml).unwrap();
        Cluster { workers, proxies }
    }

    fn start(&mut self) {
        for w in &mut self.workers {
            w.start();
        }
    }

    fn logs(&self) -> String {
        self.workers
            .iter()
            .map(|w| format!("--- {} ---\n{}", w.name, w.log_text()))
            .collect()
    }
}

/// Market spread input of about `messages` records: (nbbo, orders) paths.
fn market_input(dir: &Path, messages: u64, seed: u64) -> (PathBuf, PathBuf) {
    let cfg = GenConfig::from_messages(seed, messages, gen::data_dir(None));
    gen::market_spread(&cfg, dir).unwrap();
    (dir.join("nbbo.msg"), dir.join("orders.msg"))
}

fn spawn_send(addr: SocketAddr, path: &Path, channel: u32) -> thread::JoinHandle<SendStats> {
    let records = Records::load(verity_tools::formats::InputFormat::Fixish, path).unwrap();
    thread::spawn(move || {
        let mut cfg = SendConfig::new(addr, channel);
        cfg.give_up_after = Duration::from_secs(60);
        send(
            &cfg,
            &records,
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap()
    })
}

fn expected(app: App, inputs: &[&Path], dir: &Path) -> u64 {
    let empty = dir.join("empty.bin");
    verity_tools::formats::ReceivedWriter::create(&empty)
        .unwrap()
        .finish()
        .unwrap();
    check::check(app, inputs, &empty).unwrap().expected
}

fn check_pass(app: App, inputs: &[&Path], received: &Path, logs: &str) {
    let report = check::check(app, inputs, received).unwrap();
    assert!(report.passed(), "{report}\n{logs}");
}

#[test]
fn three_workers_run_market_spread_through_kill_9_of_each() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 60_000, 3);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 3, recv.addr(), false);
    c.start();
    // NBBO into w1, orders into w2: both are forwarded to the owners.
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[1].sources, &orders, 2);
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    for i in [2, 0, 1] {
        thread::sleep(Duration::from_millis(300));
        c.workers[i].kill9();
        c.workers[i].start();
    }
    s1.join().unwrap();
    s2.join().unwrap();
    assert!(
        recv.wait_for(want, Duration::from_secs(60)),
        "{} of {want} outputs\n{}",
        recv.records(),
        c.logs()
    );
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    assert!(
        logs.contains("epoch=2"),
        "restarted workers have a higher epoch"
    );
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);

    // Each worker's data directory, re-run offline, regenerates its logged
    // outputs bit for bit, after its kill -9.
    let config = c.workers[0].config.to_str().unwrap().to_owned();
    for w in &c.workers {
        let (code, text) = run_bin(
            env!("CARGO_BIN_EXE_verity"),
            &["replay", "--config", &config, "--name", &w.name],
        );
        assert_eq!(code, Some(0), "{}: {text}", w.name);
        assert!(text.contains("replay: IDENTICAL"), "{}: {text}", w.name);
    }
}

#[test]
fn verity_trace_follows_orders_through_forwarding_to_their_decisions_and_back() {
    let t = tempfile::tempdir().unwrap();
    // Small enough that every log stays in its first 1 MiB segment: the
    // journals keep every record (trimming drops whole segments only).
    let (nbbo, orders) = market_input(t.path(), 6_000, 5);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 3, recv.addr(), false);
    c.start();
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[1].sources, &orders, 2);
    s1.join().unwrap();
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(recv.wait_for(want, Duration::from_secs(30)), "{}", c.logs());
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    recv.stop().unwrap();
    let config = c.workers[0].config.to_str().unwrap().to_owned();
    let n = Records::load(InputFormat::Fixish, &orders).unwrap().len();
    let (mut forwarded_seen, mut local_seen) = (0, 0);
    for seq in (1..=10).map(|i| n * i / 10) {
        let (code, text) = run_bin(
            env!("CARGO_BIN_EXE_verity-trace"),
            &["--config", &config, &format!("2:{seq}")],
        );
        assert_eq!(code, Some(0), "{text}");
        // Accepted by w2 from its source ...
        assert!(
            text.contains(&format!(
                "w2         accepted from source channel 2 seq {seq} "
            )),
            "{text}"
        );
        // ... one decision out ...
        let outputs: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" output on channel 100"))
            .collect();
        assert_eq!(outputs.len(), 1, "one decision per order: {text}");
        // ... forwarded, and accepted by the owner, exactly when another
        // node decides.
        let decided_by_w2 = outputs[0].contains("w2 ");
        let forwarded = text.contains("forwarded to node");
        let accepted_elsewhere = text
            .lines()
            .any(|l| l.contains("accepted from node 1 on channel"));
        assert_eq!(forwarded, !decided_by_w2, "{text}");
        assert_eq!(accepted_elsewhere, !decided_by_w2, "{text}");
        if decided_by_w2 {
            local_seen += 1;
        } else {
            forwarded_seen += 1;
        }
        // And back: the decision's lineage names the order.
        let out = outputs[0]
            .split("output on channel ")
            .nth(1)
            .unwrap_or_default();
        let mut it = out
            .split(|ch: char| !ch.is_ascii_digit())
            .filter(|p| !p.is_empty());
        let (channel, oseq) = (it.next().unwrap(), it.next().unwrap());
        let (code, back) = run_bin(
            env!("CARGO_BIN_EXE_verity-trace"),
            &[
                "--config",
                &config,
                "--output",
                &format!("{channel}:{oseq}"),
            ],
        );
        assert_eq!(code, Some(0), "{back}");
        assert!(
            back.contains(&format!("(source channel 2, seq {seq})")),
            "{back}"
        );
    }
    // Seeded data and a fixed partition map: these orders include some
    // decided by another node (forwarding exercised) and some by w2.
    assert!(
        forwarded_seen > 0 && local_seen > 0,
        "{forwarded_seen} forwarded, {local_seen} local"
    );
    // An id no source ever used: nothing found, exit 1.
    let (code, text) = run_bin(
        env!("CARGO_BIN_EXE_verity-trace"),
        &["--config", &config, "7:1"],
    );
    assert_eq!(code, Some(1), "{text}");
}

/// Runs a binary; returns its exit code and its stdout and stderr.
fn run_bin(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Shards of one worker exchange frames over in-process rings: w1 hosts
/// nodes 0 and 1, w2 node 2; sources go to w1 (shard 0 forwards to shard 1
/// over a ring) and to w2; w1 is killed with both its shards.
#[test]
fn shards_of_one_worker_share_records_over_rings_and_survive_kill_9() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 60_000, 8);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::with_shards(t.path(), "market-spread", &[2, 1], recv.addr(), false);
    c.start();
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[1].sources, &orders, 2);
    thread::sleep(Duration::from_millis(300));
    c.workers[0].kill9();
    c.workers[0].start();
    s1.join().unwrap();
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(
        recv.wait_for(want, Duration::from_secs(60)),
        "{} of {want}\n{}",
        recv.records(),
        c.logs()
    );
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
    // Every node produced outputs on its own sink channel.
    let records = verity_tools::formats::read_received(&received).unwrap();
    for channel in [1000, 1001, 1002] {
        assert!(
            records.iter().any(|r| r.channel == channel),
            "node {} sent outputs",
            channel - 1000
        );
    }
    assert!(t.path().join("w1/shard-0").is_dir() && t.path().join("w1/shard-1").is_dir());
    assert!(
        logs.contains("node 1 (epoch"),
        "shard 1 connected over its link: {logs}"
    );
}

#[test]
fn a_peer_with_the_wrong_secret_or_cluster_is_refused_and_the_cluster_runs_on() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 20_000, 4);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 2, recv.addr(), false);
    c.start();
    let w1 = c.workers[0].address;
    // Posing as w2 with the wrong secret, and with another cluster id.
    let (code, text) = impostor(w1, 1, 1, b"not-the-secret-at-all").expect("an ERROR");
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(text.contains("authentication failed"), "{text}");
    let (code, text) = impostor(w1, 2, 1, SECRET.as_bytes()).expect("an ERROR");
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(text.contains("authentication failed"), "{text}");
    // A node id that is not in the cluster, and the worker's own id.
    let (code, _) = impostor(w1, 1, 9, SECRET.as_bytes()).expect("an ERROR");
    assert_eq!(code, ErrorCode::UnknownPeer);
    let (code, _) = impostor(w1, 1, 0, SECRET.as_bytes()).expect("an ERROR");
    assert_eq!(code, ErrorCode::UnknownPeer);
    // Fencing: w2 (node 1) said HELLO with epoch 1; an instance of node 1
    // from before it (epoch 0), even with the secret, is refused.
    let until = Instant::now() + Duration::from_secs(10);
    while !c.workers[0]
        .log_text()
        .contains("node 1 (epoch 1) connected")
    {
        assert!(Instant::now() < until, "{}", c.logs());
        thread::sleep(Duration::from_millis(20));
    }
    let (code, text) = impostor_at(w1, 1, 1, SECRET.as_bytes(), 0).expect("an ERROR");
    assert_eq!(code, ErrorCode::StaleEpoch, "{text}");
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[0].sources, &orders, 2);
    s1.join().unwrap();
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(recv.wait_for(want, Duration::from_secs(60)), "{}", c.logs());
    let logs = c.logs();
    assert!(
        logs.contains("authentication failed") && logs.contains("127.0.0.1:"),
        "refusals are logged with the peer address: {logs}"
    );
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0));
    }
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
}

#[test]
fn garbage_on_the_node_to_node_and_source_ports_disturbs_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 30_000, 5);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 2, recv.addr(), false);
    c.start();
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[0].sources, &orders, 2);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        for w in &c.workers {
            for addr in [w.address, w.sources] {
                let mut g = vec![0u8; 200 + round * 37];
                for x in g.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *x = seed as u8;
                }
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.write_all(&g);
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    s1.join().unwrap();
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(recv.wait_for(want, Duration::from_secs(60)), "{}", c.logs());
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
}

#[test]
fn a_partition_between_two_workers_heals_and_the_check_passes() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 40_000, 6);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 2, recv.addr(), true);
    c.start();
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[1].sources, &orders, 2);
    thread::sleep(Duration::from_millis(200));
    for p in &c.proxies {
        p.cut();
    }
    let during = recv.records();
    thread::sleep(Duration::from_millis(1500));
    for p in &c.proxies {
        p.heal();
    }
    s1.join().unwrap();
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(
        recv.wait_for(want, Duration::from_secs(60)),
        "{} of {want} (at the cut: {during})\n{}",
        recv.records(),
        c.logs()
    );
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
}

#[test]
fn bad_cluster_configuration_is_an_error_naming_the_key() {
    let t = tempfile::tempdir().unwrap();
    let c = Cluster::new(t.path(), "market-spread", 2, free_addr(), false);
    let run = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_verity"))
            .args(["worker", "--config"])
            .arg(&c.workers[0].config)
            .args(["--name", name])
            .output()
            .unwrap()
    };
    let out = run("w9");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--name") && err.contains("w1, w2"), "{err}");
    verity_tools::client_auth::write_secret(&t.path().join("secret.key"), "short").unwrap();
    let out = run("w1");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.secret_file"), "{err}");
    // An own address this machine does not have.
    let text = std::fs::read_to_string(&c.workers[0].config).unwrap();
    let bad = text.replacen(
        &format!("address = \"{}\"", c.workers[0].address),
        "address = \"192.0.2.1:7101\"",
        1,
    );
    verity_tools::client_auth::write_secret(&t.path().join("secret.key"), SECRET).unwrap();
    std::fs::write(&c.workers[0].config, bad).unwrap();
    let out = run("w1");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("worker[0].address") || err.contains("192.0.2.1"),
        "{err}"
    );
}

/// The fault shim on every connection (drop, duplicate, reorder, delay,
/// corrupt, close) and a timed partition between two workers: nothing is
/// lost, duplicated or reordered at the receiver, and every kind of fault
/// was injected and logged.
#[test]
fn the_fault_shim_injects_every_fault_and_the_check_still_passes() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 40_000, 9);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 3, recv.addr(), false);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut toml = std::fs::read_to_string(&c.workers[0].config).unwrap();
    toml.push_str(&format!(
        "\n[faults]\nseed = 11\ndrop = 0.002\nduplicate = 0.002\nreorder = 0.002\ndelay = 0.002\ndelay_max_ms = 30\ncorrupt = 0.0005\nclose = 0.0003\n\n[[faults.partition]]\na = \"w1\"\nb = \"w3\"\nstart_unix_ms = {}\nend_unix_ms = {}\n",
        now_ms + 300,
        now_ms + 1300
    ));
    std::fs::write(&c.workers[0].config, toml).unwrap();
    c.start();
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    let s2 = spawn_send(c.workers[1].sources, &orders, 2);
    s1.join().unwrap();
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(
        recv.wait_for(want, Duration::from_secs(90)),
        "{} of {want}\n{}",
        recv.records(),
        c.logs()
    );
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
    let mut faults = String::new();
    for i in 1..=3 {
        faults.push_str(
            &std::fs::read_to_string(t.path().join(format!("w{i}/faults.log"))).unwrap_or_default(),
        );
    }
    for kind in [
        "drop",
        "duplicate",
        "reorder",
        "delay",
        "corrupt",
        "close",
        "partition cuts",
    ] {
        assert!(
            faults.contains(kind),
            "no {kind} in the fault logs:\n{}",
            &faults[..faults.len().min(3000)]
        );
    }
}

/// Issue 11, "Why" 5: each worker used to keep its own seq space for a
/// source channel, so sending a channel to w1 and then the same records
/// to w2 (what an at-least-once sender does when w1 dies) processed them
/// twice (`duplicated=10000`). A channel now has one home; the others
/// redirect its sender there.
#[test]
fn a_source_sent_through_two_workers_is_processed_once_at_its_home() {
    let t = tempfile::tempdir().unwrap();
    let input = t.path().join("input.u64");
    let mut w = verity_tools::formats::InputWriter::create(InputFormat::U64, &input).unwrap();
    for v in 1..=10_000 {
        w.write_u64(v).unwrap();
    }
    w.finish().unwrap();
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "doubler", 3, recv.addr(), false);
    c.start();
    let records = Records::load(InputFormat::U64, &input).unwrap();
    let send_via = |worker: usize| -> SendStats {
        let mut cfg = SendConfig::new(c.workers[worker].sources, 1);
        cfg.give_up_after = Duration::from_secs(30);
        send(
            &cfg,
            &records,
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap()
    };
    // Channel 1's home is w1 (channel c at worker (c - 1) mod 3).
    let first = send_via(1);
    assert_eq!((first.acked, first.redirects), (10_000, 1), "{first:?}");
    let again = send_via(2);
    assert_eq!(again.redirects, 1, "{again:?}");
    assert_eq!(again.frames, 0, "the home has every record already");
    assert!(
        recv.wait_for(10_000, Duration::from_secs(30)),
        "{}",
        c.logs()
    );
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let stats = recv.stop().unwrap();
    assert_eq!(stats.records, 10_000);
    let report = check::check(App::Doubler, &[&input], &received).unwrap();
    assert_eq!(report.duplicated, 0, "{report}");
    check_pass(App::Doubler, &[&input], &received, &c.logs());
}

/// Issue 11, "Why" 3, between nodes: a peer that answers w1's connection
/// as w2 (it holds the cluster secret) and RESUMEs with a seq w1 never
/// released is refused; nothing w1 keeps for w2 is dropped, and the real
/// w2 gets it all.
#[test]
fn a_peer_node_that_lies_in_its_resume_is_refused_and_nothing_is_dropped() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 4_000, 6);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 2, recv.addr(), false);
    let w2_address = c.workers[1].address;
    // w2 is played by the test until the lie is told.
    let fake = TcpListener::bind(w2_address).unwrap();
    c.workers[0].start();
    let s1 = spawn_send(c.workers[0].sources, &nbbo, 1);
    s1.join().unwrap();
    let (mut s, _) = fake.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = verity::wire::handshake::Me {
        cluster_id: 1,
        node_id: 1,
        role: Role::Node,
    };
    let mut a = verity::wire::handshake::Acceptor::new(me, [3; 32]);
    let mut dec = Decoder::default();
    let mut next = |s: &mut TcpStream| -> verity::wire::Frame {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = dec.decode().unwrap() {
                return f;
            }
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed");
            dec.extend(&buf[..n]);
        }
    };
    let first = next(&mut s);
    let hello = a
        .on_hello(&first.view(), Some(SECRET.as_bytes()), &[Role::Node])
        .unwrap();
    let mut b = BytesMut::new();
    Encoder::default().hello(&mut b, 1, &hello).unwrap();
    s.write_all(&b).unwrap();
    let answer = next(&mut s);
    a.on_answer(&answer.view(), Some(SECRET.as_bytes()))
        .unwrap();
    let channel = verity::core::peer_channel(0, 1);
    let mut b = BytesMut::new();
    Encoder::default()
        .resume(
            &mut b,
            1,
            &[verity::wire::ResumeEntry::new(channel, 1_000_000_000)],
        )
        .unwrap();
    s.write_all(&b).unwrap();
    let error = loop {
        let f = next(&mut s);
        if f.kind() == Kind::Error {
            let v = f.view();
            let (code, text) = v.error().unwrap();
            break (code, text.to_owned());
        }
    };
    assert_eq!(error.0, ErrorCode::Protocol, "{}", error.1);
    assert!(error.1.contains("RESUME for seq 1000000000"), "{}", error.1);
    drop(s);
    drop(fake);
    // The real w2: it gets what w1 kept, and the orders.
    c.workers[1].start();
    let s2 = spawn_send(c.workers[1].sources, &orders, 2);
    s2.join().unwrap();
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(recv.wait_for(want, Duration::from_secs(60)), "{}", c.logs());
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    assert!(logs.contains("RESUME for seq 1000000000"), "{logs}");
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
}

/// Issue 11, "Why" 8: with both secrets set, an unauthenticated flood of
/// idle connections on w2's and w3's node-to-node ports kept a killed and
/// restarted w1 from rejoining. The flood now fills only the handshake
/// pool, and from its own addresses; w1 rejoins and the check passes.
#[test]
fn a_restarted_worker_rejoins_during_an_idle_flood_of_the_node_ports() {
    let t = tempfile::tempdir().unwrap();
    let (nbbo, orders) = market_input(t.path(), 20_000, 7);
    let received = t.path().join("received.bin");
    let mut rc = RecvConfig::new(any_port(), &received);
    rc.secret = Some(b"client-secret-0123456789".to_vec());
    let recv = Receiver::start(&rc).unwrap();
    let mut c = Cluster::new(t.path(), "market-spread", 3, recv.addr(), false);
    verity_tools::client_auth::write_secret(
        &t.path().join("client.key"),
        "client-secret-0123456789",
    )
    .unwrap();
    let config = std::fs::read_to_string(&c.workers[0].config).unwrap();
    std::fs::write(
        &c.workers[0].config,
        config.replacen(
            "[cluster]\n",
            "[cluster]\nclient_secret_file = \"client.key\"\n",
            1,
        ),
    )
    .unwrap();
    c.start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for (k, target) in [c.workers[1].address, c.workers[2].address]
        .into_iter()
        .enumerate()
    {
        for i in 0..5u8 {
            let stop = stop.clone();
            flood.push(thread::spawn(move || {
                let from = std::net::Ipv4Addr::new(127, 0, 2 + k as u8, 10 + i);
                let mut open: Vec<TcpStream> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    open.retain(|s| {
                        let _ = s.set_nonblocking(true);
                        let mut b = [0u8; 4096];
                        matches!((&*s).read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
                    });
                    while open.len() < 40 {
                        match common::peer::connect_from(from, target) {
                            Ok(s) => open.push(s),
                            Err(_) => break,
                        }
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }));
        }
    }
    thread::sleep(Duration::from_millis(300));
    let secret = verity_tools::client_auth::load_secret(&t.path().join("client.key")).unwrap();
    let sends: Vec<_> = [(&nbbo, 1, 0usize), (&orders, 2, 1)]
        .into_iter()
        .map(|(path, channel, w)| {
            let records = Records::load(InputFormat::Fixish, path).unwrap();
            let mut cfg = SendConfig::new(c.workers[w].sources, channel);
            cfg.give_up_after = Duration::from_secs(60);
            cfg.secret = Some(secret.clone());
            cfg.rate = Some(10_000);
            thread::spawn(move || {
                send(
                    &cfg,
                    &records,
                    &Progress::default(),
                    &AtomicBool::new(false),
                )
                .unwrap()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(400));
    c.workers[0].kill9();
    c.workers[0].start();
    for s in sends {
        s.join().unwrap();
    }
    let want = expected(App::MarketSpread, &[&nbbo, &orders], t.path());
    assert!(recv.wait_for(want, Duration::from_secs(60)), "{}", c.logs());
    stop.store(true, Ordering::SeqCst);
    for f in flood {
        f.join().unwrap();
    }
    for w in &mut c.workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
    let logs = c.logs();
    assert!(logs.contains("epoch=2"), "{logs}");
    assert!(
        logs.contains("limits.max_handshakes") && logs.contains("max_connections_per_address"),
        "the flood filled the handshake pool and its addresses' share: {logs}"
    );
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received, &logs);
}
