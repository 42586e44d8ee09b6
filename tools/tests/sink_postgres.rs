//! verity-sink-postgres against a real PostgreSQL server (a private one per
//! test, from Debian's binaries: `verity_tools::pg::server`). These tests
//! fail, never skip, where the server binaries are missing; `.ci/run`
//! installs them.
//!
//! A raw-socket node stands in for the engine, to send what an honest node
//! would not: a second connection on a channel, a payload the row mapping
//! refuses. The real engine under kills and a database crash is in
//! tests/sink_postgres.rs of the engine crate.

mod common;
use common::raw_node::RawNode;
use common::TmpDir;

use std::time::Duration;

use verity_tools::formats::read_received;
use verity_tools::pg::server::LocalServer;
use verity_tools::pg::{self, Mappings, Sink, SinkConfig};
use verity_tools::ports::{any_port, free_addr};
use verity_wire::Kind;

struct Db {
    server: LocalServer,
    dir: TmpDir,
}

fn db(name: &str) -> Db {
    let dir = TmpDir::new("sinkpg", name);
    let server = LocalServer::start(&dir.join("pg"), free_addr().unwrap())
        .unwrap_or_else(|e| panic!("a PostgreSQL server is needed here: {e}"));
    Db { server, dir }
}

fn sink(db: &Db, app: &str) -> (Sink, SinkConfig) {
    let cfg = SinkConfig::new(any_port(), app, &db.server.url());
    let s = Sink::start(&cfg, &Mappings::builtin(), false, "test-sink").unwrap();
    (s, cfg)
}

fn count(cfg: &SinkConfig, sql: &str) -> i64 {
    let mut c = pg::connect(cfg).unwrap();
    c.query_one(sql, &[]).unwrap().get(0)
}

/// The ERROR the peer sent before closing, if any (text).
fn error_text(n: &mut RawNode) -> Option<String> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(Some(f)) = n.dec.decode() {
            if f.kind() == Kind::Error {
                return f.view().error().map(|(_, t)| t.to_string());
            }
        }
        if n.fill(until) != Some(true) {
            return None;
        }
    }
}

fn decision(seq: u64) -> Vec<u8> {
    let mut r = vec![0u8; pg::rows::DECISION_LEN];
    r[0..8].copy_from_slice(&seq.to_le_bytes());
    r[32..38].copy_from_slice(b"ORD000");
    r[38..42].copy_from_slice(b"AAPL");
    r
}

#[test]
fn each_record_is_one_row_and_resume_comes_from_the_database() {
    let db = db("once");
    let (s, cfg) = sink(&db, "doubler");
    let (mut n, resume) = RawNode::connect_resume(s.addr());
    assert_eq!(resume.get(&1001), Some(&0));
    n.send(1001, 1..=100);
    assert_eq!(n.ack(1001, 100, Duration::from_secs(10)), Some(100));
    // Resent (a node after a restart): dropped, ACKed again.
    n.send(1001, 50..=120);
    assert_eq!(n.ack(1001, 120, Duration::from_secs(10)), Some(120));
    assert_eq!(count(&cfg, "SELECT count(*) FROM verity_output"), 120);
    assert_eq!(
        count(
            &cfg,
            "SELECT delivered FROM verity_delivered WHERE channel = 1001"
        ),
        120
    );
    let st = s.stop();
    assert_eq!((st.records, st.duplicates), (120, 51));
    // A new sink on the same database: RESUME names what the table holds.
    let (s, _) = sink(&db, "doubler");
    let (mut n, resume) = RawNode::connect_resume(s.addr());
    assert_eq!(resume.get(&1001), Some(&120));
    n.send(1001, 121..=130);
    assert_eq!(n.ack(1001, 130, Duration::from_secs(10)), Some(130));
    s.stop();
    let out = db.dir.join("export.bin");
    let mut c = pg::connect(&cfg).unwrap();
    let t = pg::table_of(&cfg, &Mappings::builtin()).unwrap();
    assert_eq!(pg::export(&mut c, &t.name, &out).unwrap(), 130);
    let recs = read_received(&out).unwrap();
    for (i, r) in recs.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!((r.channel, r.seq), (1001, seq));
        assert_eq!(r.payload, seq.to_be_bytes());
    }
}

#[test]
fn a_second_connection_on_a_channel_is_refused_and_no_row_is_doubled() {
    let db = db("second");
    let (s, cfg) = sink(&db, "doubler");
    let (mut a, _) = RawNode::connect_resume(s.addr());
    a.send(1001, 1..=10);
    assert_eq!(a.ack(1001, 10, Duration::from_secs(10)), Some(10));
    // Another client claiming the same node: it takes over from 10.
    let (mut b, resume) = RawNode::connect_resume(s.addr());
    assert_eq!(resume.get(&1001), Some(&10));
    b.send_with(1001, 11..=20, |seq| vec![0xbb; seq as usize % 7 + 1]);
    assert_eq!(b.ack(1001, 20, Duration::from_secs(10)), Some(20));
    // The first one goes on from where it was: its commit finds the
    // watermark moved, and it is refused.
    a.send(1001, 11..=15);
    let text = error_text(&mut a).expect("an ERROR for the stale connection");
    assert!(
        text.contains("channel 1001: the database's watermark is 20, not 10"),
        "{text}"
    );
    assert_eq!(count(&cfg, "SELECT count(*) FROM verity_output"), 20);
    assert_eq!(
        count(
            &cfg,
            "SELECT count(*) FROM verity_output WHERE seq > 10 AND get_byte(payload, 0) = 187"
        ),
        10,
        "rows 11..=20 are the second client's"
    );
    // The second one is unharmed.
    b.send(1001, 21..=22);
    assert_eq!(b.ack(1001, 22, Duration::from_secs(10)), Some(22));
    assert_eq!(s.stop().conflicts, 1);
}

#[test]
fn a_payload_the_mapping_refuses_is_named_and_other_nodes_go_on() {
    let db = db("mapping");
    let (s, cfg) = sink(&db, "market-spread");
    let (mut good, _) = RawNode::connect_resume_as(s.addr(), 1);
    good.send_with(1001, 1..=5, decision);
    assert_eq!(good.ack(1001, 5, Duration::from_secs(10)), Some(5));
    let (mut bad, _) = RawNode::connect_resume_as(s.addr(), 2);
    bad.send_with(1002, 1..=1, |_| vec![1; 10]);
    let text = error_text(&mut bad).expect("an ERROR");
    assert!(
        text.contains("DATA seq 1 of channel 1002 cannot go into market_spread_decisions: a market-spread decision has 48 bytes, this payload 10"),
        "{text}"
    );
    good.send_with(1001, 6..=10, decision);
    assert_eq!(good.ack(1001, 10, Duration::from_secs(10)), Some(10));
    assert_eq!(
        count(
            &cfg,
            "SELECT count(*) FROM market_spread_decisions WHERE symbol = 'AAPL' AND order_id = 'ORD000' AND order_seq = seq AND account IS NULL"
        ),
        10
    );
    assert_eq!(
        count(
            &cfg,
            "SELECT count(*) FROM market_spread_decisions WHERE channel = 1002"
        ),
        0
    );
    s.stop();
}

#[test]
fn while_the_database_is_down_nothing_is_acked_and_nothing_is_lost() {
    let mut db = db("down");
    let (s, cfg) = sink(&db, "doubler");
    let (mut n, _) = RawNode::connect_resume(s.addr());
    n.send(1001, 1..=10);
    assert_eq!(n.ack(1001, 10, Duration::from_secs(10)), Some(10));
    db.server.stop("fast").unwrap();
    n.send(1001, 11..=30);
    assert_eq!(
        n.ack(1001, 30, Duration::from_millis(1500)),
        None,
        "nothing is ACKed while the database is down"
    );
    db.server.restart().unwrap();
    assert_eq!(n.ack(1001, 30, Duration::from_secs(20)), Some(30));
    assert_eq!(count(&cfg, "SELECT count(*) FROM verity_output"), 30);
    assert_eq!(
        count(
            &cfg,
            "SELECT count(DISTINCT seq) FROM verity_output WHERE seq BETWEEN 1 AND 30"
        ),
        30
    );
    assert!(s.stop().db_errors > 0);
}

#[test]
fn a_bad_config_file_exits_2_naming_the_file_and_key() {
    let dir = TmpDir::new("sinkpg", "config");
    let f = dir.join("sink.toml");
    std::fs::write(
        &f,
        "listen = \"127.0.0.1:1\"\napp = \"x\"\n[postgres]\nurl = \"host=127.0.0.1\"\nbatch = 5\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_verity-sink-postgres"))
        .args(["run", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}: unknown key `postgres.batch`", f.display())),
        "{err}"
    );
}

/// A work directory under a scratch directory only its owner may enter
/// (mkdtemp's 0700, as the README runner's TMPDIR): the private server
/// still starts (run as root, its data goes to a directory of the server's
/// user, removed when it stops), where initdb failed with "Permission
/// denied".
#[test]
fn a_private_server_starts_under_a_directory_only_its_owner_may_enter() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TmpDir::new("sinkpg", "private");
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = LocalServer::start(&dir.join("pg"), free_addr().unwrap())
        .unwrap_or_else(|e| panic!("a PostgreSQL server is needed here: {e}"));
    let data = server.dir().to_path_buf();
    let mut c = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    drop(c);
    drop(server);
    if !data.starts_with(&*dir) {
        assert!(!data.exists(), "{} left behind", data.display());
    }
}
