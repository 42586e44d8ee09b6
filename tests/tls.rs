//! TLS between hosts (`[tls]`, docs/CONFIG.md; wire/PROTOCOL.md,
//! "Transport security") as real processes over loopback: workers,
//! verity-send and verity-recv's code with certificates `verity-gen tls`
//! makes (rcgen) in each test's directory. Nothing here is committed
//! key material.

mod common;
use common::cluster::{logs, Worker};
use common::node::{check_pass, u64_file, Node};
use common::{any_port, free_addr};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity::wire::handshake::{Connector, Me};
use verity::wire::{Encoder, ErrorCode, Role};
use verity_tools::check::{self, App};
use verity_tools::formats::InputFormat;
use verity_tools::gen::{self, GenConfig};
use verity_tools::recv::{Receiver, RecvConfig};
use verity_tools::send::{send, Progress, Records, SendConfig, SendError, SendStats};
use verity_tools::tls;

/// A CA and certificates for `names` (all for 127.0.0.1) in `dir/sub`.
fn certs(dir: &Path, sub: &str, names: &[&str]) -> PathBuf {
    let out = dir.join(sub);
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    tls::generate(&out, &["127.0.0.1".parse().unwrap()], &names, 1).unwrap();
    out
}

/// `[tls]` for a configuration in `dir`, with the certificates in `certs/`.
fn tls_table(name: &str, extra: &str) -> String {
    format!(
        "\n[tls]\ncert_file = \"certs/{name}.pem\"\nkey_file = \"certs/{name}.key\"\nca_file = \"certs/ca.pem\"\n{extra}"
    )
}

/// A receiver over TLS presenting `certs/sink.pem`; with `mutual`, nodes
/// must present a certificate from `certs/ca.pem`.
fn tls_receiver(dir: &Path, certs: &Path, mutual: bool, file: &str) -> Receiver {
    let mut rc = RecvConfig::new(any_port(), &dir.join(file));
    let ca = certs.join("ca.pem");
    rc.tls = Some(
        tls::server_config(
            &certs.join("sink.pem"),
            &certs.join("sink.key"),
            mutual.then_some(ca.as_path()),
        )
        .unwrap(),
    );
    Receiver::start(&rc).unwrap()
}

/// Sender settings over TLS: the node verified against `ca`, and our
/// client certificate `client` (a (cert, key) pair) if any.
fn tls_sender(
    to: SocketAddr,
    channel: u32,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> SendConfig {
    let mut cfg = SendConfig::new(to, channel);
    cfg.give_up_after = Duration::from_secs(30);
    cfg.tls = Some(tls::client_config(ca, client).unwrap());
    cfg
}

fn spawn_send(
    cfg: SendConfig,
    records: Records,
) -> thread::JoinHandle<Result<SendStats, SendError>> {
    thread::spawn(move || {
        send(
            &cfg,
            &records,
            &Progress::default(),
            &AtomicBool::new(false),
        )
    })
}

fn send_now(cfg: &SendConfig, records: &Records) -> Result<SendStats, SendError> {
    send(cfg, records, &Progress::default(), &AtomicBool::new(false))
}

/// The stop line's `tls_failed=` count.
fn tls_failed(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("tls_failed=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// A single node with TLS on its source and sink connections (the sink
/// requiring the node's certificate: mutual), fed by verity-send's code
/// over TLS, killed -9 and restarted mid-stream: every record arrives
/// exactly once, over TLS again after the restart.
#[test]
fn a_node_over_tls_survives_kill_9_and_passes_the_check() {
    let t = tempfile::tempdir().unwrap();
    let c = certs(t.path(), "certs", &["node", "sink"]);
    let input = u64_file(t.path(), 60_000);
    let recv = tls_receiver(t.path(), &c, true, "received.bin");
    let mut node = Node::new(t.path(), "doubler", recv.addr(), &tls_table("node", ""));
    node.start();
    let mut cfg = tls_sender(node.listen, 1, &c.join("ca.pem"), None);
    cfg.rate = Some(40_000);
    let records = Records::load(InputFormat::U64, &input).unwrap();
    let sender = spawn_send(cfg, records);
    thread::sleep(Duration::from_millis(500));
    node.kill9();
    node.start();
    let stats = sender.join().unwrap().unwrap();
    assert_eq!(stats.acked, 60_000);
    assert!(stats.connects >= 2, "{stats:?}");
    assert!(
        recv.wait_for(60_000, Duration::from_secs(30)),
        "{} records\n{}",
        recv.records(),
        node.log_text()
    );
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    assert_eq!(tls_failed(&log), 0, "{log}");
    let rs = recv.stop().unwrap();
    assert!(rs.connections >= 2, "{rs:?}");
    check_pass(App::Doubler, &[&input], &t.path().join("received.bin"));
}

/// With `require_client_cert`, a source presenting a certificate from
/// another CA, or none, is refused by TLS (the sender says why and does
/// not retry); the node logs it naming the peer and keeps serving the
/// source whose certificate chains to `ca_file`.
#[test]
fn a_source_certificate_from_another_ca_or_none_is_refused_and_others_carry_on() {
    let t = tempfile::tempdir().unwrap();
    let c = certs(t.path(), "certs", &["node", "sink", "client"]);
    let other = certs(t.path(), "other", &["client"]);
    let input = u64_file(t.path(), 40_000);
    let recv = tls_receiver(t.path(), &c, false, "received.bin");
    let mut node = Node::new(
        t.path(),
        "doubler",
        recv.addr(),
        &tls_table("node", "require_client_cert = true\n"),
    );
    node.start();
    let ca = c.join("ca.pem");
    let records = || Records::load(InputFormat::U64, &input).unwrap();
    let mut good = tls_sender(
        node.listen,
        1,
        &ca,
        Some((&c.join("client.pem"), &c.join("client.key"))),
    );
    good.rate = Some(20_000);
    let good = spawn_send(good, records());
    thread::sleep(Duration::from_millis(300));
    // Another CA's client certificate.
    let cfg = tls_sender(
        node.listen,
        2,
        &ca,
        Some((&other.join("client.pem"), &other.join("client.key"))),
    );
    let started = Instant::now();
    let e = send_now(&cfg, &records()).expect_err("refused");
    assert!(matches!(e, SendError::Tls { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up at once"
    );
    // No client certificate at all.
    let cfg = tls_sender(node.listen, 2, &ca, None);
    let e = send_now(&cfg, &records()).expect_err("refused");
    assert!(matches!(e, SendError::Tls { .. }), "{e}");
    // The good source was never disturbed.
    let stats = good.join().unwrap().unwrap();
    assert_eq!(stats.acked, 40_000);
    assert_eq!(stats.connects, 1, "{stats:?}");
    assert!(
        recv.wait_for(40_000, Duration::from_secs(30)),
        "{}",
        node.log_text()
    );
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    assert_eq!(tls_failed(&log), 2, "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(log.contains("lost: TLS: "), "{log}");
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &t.path().join("received.bin"));
}

/// A plain-TCP client on a TLS source port (it says HELLO in clear) is
/// closed; so are a silent connection and a TLS connection that says no
/// HELLO, by the handshake timeout; a TLS source on the same port carries
/// on undisturbed.
#[test]
fn plain_tcp_on_a_tls_port_is_closed_and_others_carry_on() {
    let t = tempfile::tempdir().unwrap();
    let c = certs(t.path(), "certs", &["node", "sink"]);
    let input = u64_file(t.path(), 40_000);
    let recv = tls_receiver(t.path(), &c, true, "received.bin");
    let limits = format!("handshake_timeout_ms = 1000\n{}", tls_table("node", ""));
    let mut node = Node::new(t.path(), "doubler", recv.addr(), &limits);
    node.start();
    let ca = c.join("ca.pem");
    let mut cfg = tls_sender(node.listen, 1, &ca, None);
    cfg.rate = Some(20_000);
    let good = spawn_send(cfg, Records::load(InputFormat::U64, &input).unwrap());
    thread::sleep(Duration::from_millis(300));
    // Silent: no TLS handshake at all, or a TLS handshake and no HELLO.
    // The handshake timeout closes both.
    let silent = TcpStream::connect(node.listen).unwrap();
    let sock = TcpStream::connect(node.listen).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let client = tls::client_config(&ca, None).unwrap();
    let mut quiet = tls::TlsStream::client(client, sock, node.listen.ip()).unwrap();
    quiet.handshake().unwrap();
    let opened = Instant::now();
    let mut said = Vec::new();
    let r = quiet.read_to_end(&mut said);
    assert!(r.is_ok(), "closed: {r:?}");
    let waited = opened.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    // The worker's ERROR, over TLS.
    let f = verity::wire::parse(&said, 65536)
        .unwrap()
        .expect("an ERROR frame");
    assert_eq!(f.error().map(|e| e.0), Some(ErrorCode::LimitExceeded));
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = (&silent).read_to_end(&mut Vec::new());
    assert!(r.is_ok(), "closed: {r:?}");
    for _ in 0..3 {
        let mut s = TcpStream::connect(node.listen).unwrap();
        let me = Me {
            cluster_id: 1,
            node_id: 2,
            role: Role::Source,
        };
        let (_, hello) = Connector::start(me, [7; 32]);
        let mut b = BytesMut::new();
        Encoder::default().hello(&mut b, 0, &hello).unwrap();
        s.write_all(&b).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Whatever comes back (a TLS alert at most), then the close.
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "closed, not timed out: {r:?}"
        );
        assert!(got.len() < 64, "no Verity HELLO in clear: {got:?}");
        assert!(
            got.first().is_none_or(|&b| b == 0x15),
            "a TLS alert record: {got:?}"
        );
    }
    let stats = good.join().unwrap().unwrap();
    assert_eq!(stats.acked, 40_000);
    assert_eq!(stats.connects, 1, "{stats:?}");
    assert!(
        recv.wait_for(40_000, Duration::from_secs(30)),
        "{}",
        node.log_text()
    );
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    assert_eq!(tls_failed(&log), 3, "{log}");
    assert!(log.contains(" refused=2 "), "{log}");
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &t.path().join("received.bin"));
}

/// The HELLO handshake runs inside TLS: with `client_secret_file`, a TLS
/// source without the secret is refused with AUTH_FAILED (an ERROR sent
/// over TLS), one with the wrong secret finds the node's answer wrong, the
/// right one gets through, and so does the sink's.
#[test]
fn the_hmac_handshake_runs_inside_tls() {
    let t = tempfile::tempdir().unwrap();
    let c = certs(t.path(), "certs", &["node", "sink"]);
    let secret = b"client-secret-0123456789".to_vec();
    verity_tools::client_auth::write_secret(&t.path().join("client.key"), &secret).unwrap();
    let input = u64_file(t.path(), 20_000);
    let mut rc = RecvConfig::new(any_port(), &t.path().join("received.bin"));
    rc.secret = Some(secret.clone());
    rc.tls = Some(
        tls::server_config(
            &c.join("sink.pem"),
            &c.join("sink.key"),
            Some(&c.join("ca.pem")),
        )
        .unwrap(),
    );
    let recv = Receiver::start(&rc).unwrap();
    let mut node = Node::new(t.path(), "doubler", recv.addr(), &tls_table("node", ""));
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        text.replacen(
            "[node]\n",
            "[node]\nclient_secret_file = \"client.key\"\n",
            1,
        ),
    )
    .unwrap();
    node.start();
    let records = Records::load(InputFormat::U64, &input).unwrap();
    let mut cfg = tls_sender(node.listen, 1, &c.join("ca.pem"), None);
    cfg.give_up_after = Duration::from_secs(5);
    // No secret: the node refuses our answer with an ERROR (over TLS).
    match send_now(&cfg, &records) {
        Err(SendError::Refused { code, text, .. }) => {
            assert_eq!(code, ErrorCode::AuthFailed, "{text}")
        }
        other => panic!("no secret over TLS: {other:?}"),
    }
    // The wrong secret: we find the node's answer to our challenge wrong.
    cfg.secret = Some(b"another-secret-0123456789".to_vec());
    match send_now(&cfg, &records) {
        Err(SendError::Refused { code, text, .. }) => {
            assert_eq!(code, ErrorCode::AuthFailed, "{text}")
        }
        other => panic!("wrong secret over TLS: {other:?}"),
    }
    cfg.secret = Some(secret);
    let stats = send_now(&cfg, &records).unwrap();
    assert_eq!(stats.acked, 20_000);
    assert!(
        recv.wait_for(20_000, Duration::from_secs(30)),
        "{}",
        node.log_text()
    );
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    assert!(log.contains("auth_refused=1"), "{log}");
    assert_eq!(tls_failed(&log), 0, "{log}");
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &t.path().join("received.bin"));
}

/// The worker verifies the sink: a receiver whose certificate does not
/// chain to `ca_file` gets nothing, and the log says why; a receiver with
/// a good certificate on the same address then gets everything.
#[test]
fn a_sink_whose_certificate_does_not_chain_to_ca_file_gets_nothing() {
    let t = tempfile::tempdir().unwrap();
    let c = certs(t.path(), "certs", &["node", "sink"]);
    let other = certs(t.path(), "other", &["sink"]);
    let input = u64_file(t.path(), 5_000);
    let mut rc = RecvConfig::new(any_port(), &t.path().join("impostor.bin"));
    rc.tls =
        Some(tls::server_config(&other.join("sink.pem"), &other.join("sink.key"), None).unwrap());
    let impostor = Receiver::start(&rc).unwrap();
    let sink = impostor.addr();
    let mut node = Node::new(t.path(), "doubler", sink, &tls_table("node", ""));
    node.start();
    let cfg = tls_sender(node.listen, 1, &c.join("ca.pem"), None);
    let records = Records::load(InputFormat::U64, &input).unwrap();
    assert_eq!(send_now(&cfg, &records).unwrap().acked, 5_000);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(impostor.records(), 0);
    let log = node.log_text();
    assert!(
        log.contains("sink") && log.contains("lost: TLS: invalid peer certificate: UnknownIssuer"),
        "{log}"
    );
    impostor.stop().unwrap();
    // The real sink on the same address.
    let mut rc = RecvConfig::new(sink, &t.path().join("received.bin"));
    rc.tls = Some(tls::server_config(&c.join("sink.pem"), &c.join("sink.key"), None).unwrap());
    let recv = Receiver::start(&rc).unwrap();
    assert!(
        recv.wait_for(5_000, Duration::from_secs(30)),
        "{}",
        node.log_text()
    );
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &t.path().join("received.bin"));
}

/// TLS files rustls cannot use stop the worker at start with an error
/// naming the key: a key that is not the certificate's, a certificate
/// whose PEM body is not DER.
#[test]
fn unusable_tls_files_stop_the_worker_with_an_error_naming_the_key() {
    let t = tempfile::tempdir().unwrap();
    certs(t.path(), "certs", &["node", "sink"]);
    let sink = free_addr();
    std::fs::write(
        t.path().join("bad.pem"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases = [
        (
            tls_table("node", "").replace("certs/node.key", "certs/sink.key"),
            "tls.cert_file and tls.key_file",
        ),
        (
            tls_table("node", "").replace("certs/node.pem", "bad.pem"),
            "tls.cert_file",
        ),
    ];
    for (table, key) in cases {
        let node = Node::new(t.path(), "doubler", sink, &table);
        let mut child = Command::new(env!("CARGO_BIN_EXE_verity"))
            .args(["worker", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > until {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = status.unwrap_or_else(|| panic!("{key}: the worker ran on: {err}"));
        assert!(!status.success(), "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// Three workers with mutual TLS between nodes (and TLS to sources and
/// the sink) run market spread through a kill -9 of each: the check
/// passes. A client with another CA's certificate, and a plain-TCP peer,
/// on a node-to-node port are closed by TLS and disturb nothing.
#[test]
fn three_workers_with_mutual_tls_survive_kill_9_and_pass_the_check() {
    let t = tempfile::tempdir().unwrap();
    let c = certs(t.path(), "certs", &["node", "sink"]);
    let other = certs(t.path(), "other", &["node"]);
    let gc = GenConfig::from_messages(5, 40_000, gen::data_dir(None));
    gen::market_spread(&gc, t.path()).unwrap();
    let (nbbo, orders) = (t.path().join("nbbo.msg"), t.path().join("orders.msg"));
    let recv = tls_receiver(t.path(), &c, true, "received.bin");
    verity_tools::client_auth::write_secret(
        &t.path().join("secret.key"),
        "0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    let mut toml = format!(
        "[cluster]\napp = \"market-spread\"\npartitions = 256\nsecret_file = \"secret.key\"\nsink = \"{}\"\nsnapshot_interval_records = 5000\n\n[limits]\njournal_segment_bytes = 1048576\nmax_frame_len = 65536\nread_buffer_bytes = 262144\n{}",
        recv.addr(),
        tls_table("node", "nodes = true\nclients = true\n")
    );
    let config = t.path().join("cluster.toml");
    let mut procs = Vec::new();
    let mut addresses = Vec::new();
    for i in 1..=3 {
        let (address, sources) = (free_addr(), free_addr());
        toml.push_str(&format!(
            "\n[[worker]]\nname = \"w{i}\"\naddress = \"{address}\"\nsources = \"{sources}\"\ndata_dir = \"w{i}\"\n"
        ));
        addresses.push(address);
        procs.push(Worker {
            name: format!("w{i}"),
            config: config.clone(),
            address,
            sources,
            log: t.path().join(format!("w{i}.log")),
            child: None,
        });
    }
    std::fs::write(&config, toml).unwrap();
    for p in &mut procs {
        p.start();
    }
    let ca = c.join("ca.pem");
    let mut s1 = tls_sender(procs[0].sources, 1, &ca, None);
    let mut s2 = tls_sender(procs[1].sources, 2, &ca, None);
    s1.rate = Some(15_000);
    s2.rate = Some(15_000);
    let s1 = spawn_send(s1, Records::load(InputFormat::Fixish, &nbbo).unwrap());
    let s2 = spawn_send(s2, Records::load(InputFormat::Fixish, &orders).unwrap());
    // On w1's node-to-node port: another CA's node certificate, and plain
    // TCP; both closed.
    thread::sleep(Duration::from_millis(300));
    let impostor = tls::client_config(
        &ca,
        Some((&other.join("node.pem"), &other.join("node.key"))),
    )
    .unwrap();
    let sock = TcpStream::connect(addresses[0]).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = tls::TlsStream::client(Arc::clone(&impostor), sock, addresses[0].ip()).unwrap();
    // TLS 1.3: the client's handshake ends before the server has judged
    // its certificate; the refusal comes as an alert on the first read.
    let refused = s.handshake().and_then(|()| s.read(&mut [0u8; 64]));
    let e = refused.expect_err("refused");
    assert!(tls::failure(&e).is_some_and(|r| r.contains("alert")), "{e}");
    let mut plain = TcpStream::connect(addresses[0]).unwrap();
    plain.write_all(&[0u8; 64]).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    let r = plain.read_to_end(&mut sink);
    assert!(
        r.is_ok()
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed: {r:?}"
    );
    for i in [2, 0, 1] {
        thread::sleep(Duration::from_millis(300));
        procs[i].kill9();
        procs[i].start();
    }
    s1.join().unwrap().unwrap();
    s2.join().unwrap().unwrap();
    let empty = t.path().join("empty.bin");
    verity_tools::formats::ReceivedWriter::create(&empty)
        .unwrap()
        .finish()
        .unwrap();
    let want = check::check(App::MarketSpread, &[&nbbo, &orders], &empty)
        .unwrap()
        .expected;

    assert!(
        recv.wait_for(want, Duration::from_secs(60)),
        "{} of {want}\n{}",
        recv.records(),
        logs(&procs)
    );
    for p in &mut procs {
        assert_eq!(p.term(), Some(0), "{}", p.log_text());
    }
    let all = logs(&procs);
    assert!(all.contains("epoch=2"), "restarted: {all}");
    assert!(all.contains("node connection from 127.0.0.1:"), "{all}");
    assert!(all.contains("UnknownIssuer"), "{all}");
    recv.stop().unwrap();
    let report = check::check(
        App::MarketSpread,
        &[&nbbo, &orders],
        &t.path().join("received.bin"),
    )
    .unwrap();
    assert!(report.passed(), "{report}\n{all}");
}
