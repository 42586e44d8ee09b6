//! `metrics_listen`: a real worker serves Prometheus text, `/healthz` and
//! `/readyz` over HTTP; the counters move with the records sent; a
//! malformed request does not stop the endpoint; a taken port stops the
//! worker at start naming the key; and in a cluster a peer's `kill -9`
//! shows up as a reconnect in the other worker's metrics and log, and
//! refused handshakes are counted by reason (stale epoch, auth failed).

mod common;
use common::cluster::Worker;
use common::free_addr;
use common::node::{send_file, u64_file, Node};
use common::peer::impostor_at;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use verity::wire::ErrorCode;
use verity_tools::formats::InputFormat;

/// GET `path` (HTTP/1.0): (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (code, body)
}

/// The value of the first sample of `name` whose labels hold each of
/// `labels` (`key="value"` as printed).
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, v) = rest.rsplit_once("} ")?;
        let set: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|want| set.contains(want))
            .then(|| v.parse().ok())?
    })
}

/// Polls `path` until `ok` holds of the body, for up to 10 s.
fn wait_for(addr: SocketAddr, path: &str, ok: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(addr, path);
        if ok(code, &body) || Instant::now() > until {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn with_metrics(node: &Node, addr: SocketAddr) {
    let text = std::fs::read_to_string(&node.config).unwrap();
    let text = text.replacen(
        "[node]\n",
        &format!("[node]\nmetrics_listen = \"{addr}\"\n"),
        1,
    );
    std::fs::write(&node.config, text).unwrap();
}

#[test]
fn a_worker_serves_metrics_health_and_readiness_that_move() {
    let dir = tempfile::tempdir().unwrap();
    // No receiver at the sink address: the node serves, but is not ready.
    let sink = free_addr();
    let mut node = Node::new(dir.path(), "doubler", sink, "");
    let m = free_addr();
    with_metrics(&node, m);
    node.start();
    let (code, body) = wait_for(m, "/healthz", |c, _| c == 200);
    assert_eq!(code, 200, "{body}");
    let (code, body) = get(m, "/readyz");
    assert_eq!(code, 503);
    assert!(
        body.contains(&format!("node 1: sink at {sink} not connected")),
        "{body}"
    );

    let input = u64_file(dir.path(), 1000);
    send_file(node.listen, &input, InputFormat::U64, 1);
    let l = "node=\"1\"";
    let accepted = |t: &str| value(t, "verity_records_accepted_total", &[l]);
    let (_, text) = wait_for(m, "/metrics", |_, t| accepted(t) == Some(1000.0));
    assert_eq!(accepted(&text), Some(1000.0), "{text}");
    assert!(text.contains("# TYPE verity_records_accepted_total counter\n"));
    let ch1 = "channel=\"1\"";
    assert_eq!(
        value(&text, "verity_in_channel_delivered_seq", &[l, ch1]),
        Some(1000.0),
        "{text}"
    );
    // Doubler: one output per input, none ACKed (no receiver).
    let sink = "to=\"sink\"";
    assert_eq!(
        value(&text, "verity_out_channel_produced_seq", &[l, sink]),
        Some(1000.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "verity_out_channel_unacked_frames", &[l, sink]),
        Some(1000.0)
    );
    assert_eq!(
        value(&text, "verity_out_channel_connected", &[l, sink]),
        Some(0.0)
    );
    assert!(
        value(&text, "verity_accept_to_durable_seconds_count", &[l]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The sender's connection, and the start-up probe's.
    assert_eq!(
        value(&text, "verity_connections_total", &[l, "kind=\"source\""]),
        Some(2.0)
    );

    // Garbage on the endpoint: that client gets an error, the rest go on.
    let mut s = TcpStream::connect(m).unwrap();
    s.write_all(b"\x00\x01 not http at all\r\n\r\n").unwrap();
    drop(s);
    assert_eq!(get(m, "/nope").0, 404);
    assert_eq!(get(m, "/healthz").0, 200);
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
}

#[test]
fn a_taken_metrics_port_stops_the_worker_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node = Node::new(dir.path(), "doubler", free_addr(), "");
    with_metrics(&node, taken.local_addr().unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["worker", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot serve metrics on {} (metrics_listen)",
            taken.local_addr().unwrap()
        )),
        "{err}"
    );
}

#[test]
fn a_peer_killed_and_restarted_shows_as_a_reconnect_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    verity_tools::client_auth::write_secret(
        &dir.path().join("secret.key"),
        "0123456789abcdef0123\n",
    )
    .unwrap();
    let sink = free_addr();
    let mut toml = format!(
        "[cluster]\nid = 1\napp = \"doubler\"\npartitions = 16\nsecret_file = \"secret.key\"\nsink = \"{sink}\"\n"
    );
    let mut workers = Vec::new();
    let mut metrics = Vec::new();
    for i in 1..=2 {
        let (address, sources, m) = (free_addr(), free_addr(), free_addr());
        toml.push_str(&format!(
            "\n[[worker]]\nname = \"w{i}\"\naddress = \"{address}\"\nsources = \"{sources}\"\ndata_dir = \"w{i}\"\nmetrics_listen = \"{m}\"\n"
        ));
        workers.push(Worker {
            name: format!("w{i}"),
            config: dir.path().join("cluster.toml"),
            address,
            sources,
            log: dir.path().join(format!("w{i}.log")),
            child: None,
        });
        metrics.push(m);
    }
    std::fs::write(dir.path().join("cluster.toml"), toml).unwrap();
    for w in &mut workers {
        w.start();
    }
    let to_w2 = ["worker=\"w1\"", "to=\"node 1\""];
    let connects = |t: &str| value(t, "verity_out_channel_connects_total", &to_w2);
    let (_, text) = wait_for(metrics[0], "/metrics", |_, t| connects(t) == Some(1.0));
    assert_eq!(connects(&text), Some(1.0), "{text}");
    workers[1].kill9();
    let (_, text) = wait_for(metrics[0], "/metrics", |_, t| {
        value(t, "verity_out_channel_connected", &to_w2) == Some(0.0)
    });
    assert_eq!(
        value(&text, "verity_out_channel_connected", &to_w2),
        Some(0.0),
        "{text}"
    );
    workers[1].start();
    let (_, text) = wait_for(metrics[0], "/metrics", |_, t| connects(t) == Some(2.0));
    assert_eq!(connects(&text), Some(2.0), "{text}");
    let (code, body) = wait_for(metrics[1], "/healthz", |c, _| c == 200);
    assert_eq!(code, 200, "{body}");
    assert!(
        value(&text, "verity_epoch", &["worker=\"w1\""]) == Some(1.0),
        "{text}"
    );
    let (_, w2) = get(metrics[1], "/metrics");
    assert_eq!(
        value(&w2, "verity_epoch", &["worker=\"w2\""]),
        Some(2.0),
        "{w2}"
    );
    // Refused handshakes by reason: node 1 at its old epoch 1 (a zombie of
    // the instance killed; w1 has seen epoch 2), and the wrong secret.
    let secret = b"0123456789abcdef0123";
    let (code, _) = impostor_at(workers[0].address, 1, 1, secret, 1).expect("an ERROR");
    assert_eq!(code, ErrorCode::StaleEpoch);
    let (code, _) =
        impostor_at(workers[0].address, 1, 1, b"not-the-secret-at-all", 9).expect("an ERROR");
    assert_eq!(code, ErrorCode::AuthFailed);
    let failures = |t: &str, reason: &str| {
        value(
            t,
            "verity_handshake_failures_total",
            &["worker=\"w1\"", reason],
        )
    };
    let (_, text) = wait_for(metrics[0], "/metrics", |_, t| {
        failures(t, "reason=\"auth_failed\"") == Some(1.0)
    });
    assert_eq!(
        failures(&text, "reason=\"stale_epoch\""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        failures(&text, "reason=\"auth_failed\""),
        Some(1.0),
        "{text}"
    );
    // `verity stat` watches both workers from the cluster's file.
    let o = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["stat", "--once", "--json", "--interval", "0.2", "--config"])
        .arg(dir.path().join("cluster.toml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("\"worker\":\"w1\",\"node\":0,"), "{out}");
    assert!(lines[1].contains("\"worker\":\"w2\",\"node\":1,"), "{out}");
    assert!(lines[1].contains("\"epoch\":2,"), "{out}");
    workers[1].kill9();
    let o = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["stat", "--once", "--interval", "0.1", "--config"])
        .arg(dir.path().join("cluster.toml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("w2") && out.contains("DOWN"), "{out}");
    workers[1].start();

    // The peer's log says so too.
    let log = workers[0].log_text();
    assert!(
        log.contains("lost:") && log.contains("reconnecting"),
        "{log}"
    );
    for w in &mut workers {
        assert_eq!(w.term(), Some(0), "{}", w.log_text());
    }
}
