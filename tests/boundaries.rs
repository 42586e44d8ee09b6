//! Trust at the boundaries (issue 11), tried from outside against a real
//! `verity worker` process: peers that lie in a RESUME, an ACK or a NACK,
//! a second producer on a channel, a resend with other bytes, peer text
//! that tries to forge log lines, floods that try to starve connection
//! slots, and a client written from `wire/PROTOCOL.md` alone.

mod common;
use common::node::{check_pass, send_file, u64_file, Node};
use common::peer::{
    connect_from, handshake, handshake_as, handshake_on, read_error, wait_ack_on, FakeSink,
};
use common::{any_port, free_addr};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity::wire::{Encoder, ErrorCode, Kind, ResumeEntry, Role};
use verity_tools::check::App;
use verity_tools::formats::InputFormat;
use verity_tools::recv::{Receiver, RecvConfig};
use verity_tools::send::{send, Progress, Records, SendConfig, SendStats};

/// The node's output channel to the sink (node.toml's node 1).
const SINK_CHANNEL: u32 = 1001;

fn put_u64(enc: &Encoder, b: &mut BytesMut, seq: u64, value: u64, resend: bool) {
    enc.data(b, 1, seq, 1 << 40 | seq, resend, &value.to_be_bytes())
        .unwrap();
}

/// Issue 11, "Why" 3, as reproduced: a client takes the sink address,
/// completes the handshake, says RESUME(delivered = 10^9) and closes; the
/// node used to drop every unACKed output. Now it refuses the RESUME and
/// the real receiver gets everything.
#[test]
fn a_sink_that_resumes_beyond_what_was_released_is_refused_and_nothing_is_lost() {
    let t = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink = l.local_addr().unwrap();
    let mut node = Node::new(t.path(), "doubler", sink, "");
    node.start();
    let input = u64_file(t.path(), 1000);
    let sent = send_file(node.listen, &input, InputFormat::U64, 1);
    assert_eq!(sent.acked, 1000, "all ACKed to the source");
    let mut liar = FakeSink::accept_resume(&l, &[ResumeEntry::new(SINK_CHANNEL, 1_000_000_000)]);
    let (code, text) = liar.error().expect("an ERROR for the lie");
    assert_eq!(code, ErrorCode::Protocol, "{text}");
    assert!(text.contains("RESUME for seq 1000000000"), "{text}");
    drop(liar);
    drop(l);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(sink, &received)).unwrap();
    assert!(
        recv.wait_for(1000, Duration::from_secs(20)),
        "{}",
        node.log_text()
    );
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &received);
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert!(log.contains("RESUME for seq 1000000000"), "logged: {log}");
    assert!(log.contains("violations=1"), "counted: {log}");
}

/// Every ACK, RESUME or NACK that names what was never sent, or goes
/// back below what was ACKed, is an ERROR and a close, and nothing is
/// dropped: the last, honest, connection gets everything unACKed.
#[test]
fn acks_resumes_and_nacks_that_are_impossible_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut node = Node::new(t.path(), "doubler", l.local_addr().unwrap(), "");
    node.start();
    let input = u64_file(t.path(), 20);
    send_file(node.listen, &input, InputFormat::U64, 1);
    let data = |f: &[(Kind, u64, u16)]| -> Vec<u64> {
        f.iter()
            .filter(|f| f.0 == Kind::Data)
            .map(|f| f.1)
            .collect()
    };
    let mut refused = 0;
    let mut expect_refusal = |sink: &mut FakeSink, what: &str| {
        let (code, text) = sink.error().expect("an ERROR");
        assert_eq!(code, ErrorCode::Protocol, "{text}");
        assert!(text.contains(what), "{what}: {text}");
        refused += 1;
    };
    let resume = |d: u64| [ResumeEntry::new(SINK_CHANNEL, d)];
    // An ACK going backwards.
    let mut s = FakeSink::accept_resume(&l, &resume(0));
    assert_eq!(
        data(&s.frames(Duration::from_secs(5), 20)),
        (1..=20).collect::<Vec<_>>()
    );
    s.send(Kind::Ack, 10);
    s.send(Kind::Ack, 5);
    expect_refusal(&mut s, "ACK for seq 5 of channel 1001 goes backwards");
    // An ACK above anything released.
    let mut s = FakeSink::accept_resume(&l, &resume(10));
    assert_eq!(
        data(&s.frames(Duration::from_secs(5), 10)),
        (11..=20).collect::<Vec<_>>()
    );
    s.send(Kind::Ack, 21);
    expect_refusal(
        &mut s,
        "ACK for seq 21 of channel 1001, above the highest seq released",
    );
    // A NACK for a seq never sent.
    let mut s = FakeSink::accept_resume(&l, &resume(10));
    s.frames(Duration::from_secs(5), 10);
    s.send(Kind::Nack, 25);
    expect_refusal(
        &mut s,
        "NACK for seq 25 of channel 1001, which was never sent",
    );
    // A NACK whose last range names a seq never sent: refused whole.
    let mut s = FakeSink::accept_resume(&l, &resume(10));
    s.frames(Duration::from_secs(5), 10);
    s.send_nack_ranges(&[(12, 12), (15, 26)]);
    expect_refusal(
        &mut s,
        "NACK for seq 26 of channel 1001, which was never sent",
    );
    // NACK ranges out of order: the frame is malformed.
    let mut s = FakeSink::accept_resume(&l, &resume(10));
    s.frames(Duration::from_secs(5), 10);
    s.send_nack_ranges(&[(15, 16), (12, 12)]);
    expect_refusal(&mut s, "ranges not ascending and disjoint");
    // A RESUME below what was ACKed (the consumer lost what it ACKed).
    let mut s = FakeSink::accept_resume(&l, &resume(3));
    expect_refusal(&mut s, "RESUME for seq 3 of channel 1001 goes backwards");
    // An ACK for another channel on this connection.
    let mut s = FakeSink::accept_resume(&l, &resume(10));
    s.frames(Duration::from_secs(5), 10);
    s.channel = 1002;
    s.send(Kind::Ack, 20);
    expect_refusal(
        &mut s,
        "ACK for channel 1002 on the connection of channel 1001",
    );
    // The honest sink: 11..=20 again (nothing was dropped), then ACKed.
    let mut s = FakeSink::accept_resume(&l, &resume(10));
    assert_eq!(
        data(&s.frames(Duration::from_secs(5), 10)),
        (11..=20).collect::<Vec<_>>()
    );
    s.send(Kind::Ack, 20);
    assert!(
        data(&s.frames(Duration::from_millis(1500), usize::MAX)).is_empty(),
        "nothing more once everything is ACKed"
    );
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert_eq!(refused, 7);
    assert!(log.contains("violations=5"), "{log}");
    assert!(log.contains("unacked=0"), "{log}");
}

/// Issue 11, "Why" 4: a client that connects as the source of a channel
/// while `verity-send` streams it used to be given the channel's RESUME
/// and could send seqs of its own (`wrong=44`). Now it is refused with
/// CHANNEL_BUSY, with and without a client secret.
#[test]
fn a_second_producer_on_an_active_channel_is_refused_and_cannot_change_results() {
    for secret in [None, Some(b"client-secret-0123456789".to_vec())] {
        let t = tempfile::tempdir().unwrap();
        let input = u64_file(t.path(), 20_000);
        let received = t.path().join("received.bin");
        let mut rc = RecvConfig::new(any_port(), &received);
        rc.secret = secret.clone();
        let recv = Receiver::start(&rc).unwrap();
        let mut node = Node::new(t.path(), "doubler", recv.addr(), "");
        if secret.is_some() {
            verity_tools::client_auth::write_secret(
                &t.path().join("client.key"),
                "client-secret-0123456789",
            )
            .unwrap();
            let text = std::fs::read_to_string(&node.config).unwrap();
            let text = text.replacen(
                "[node]\n",
                "[node]\nclient_secret_file = \"client.key\"\n",
                1,
            );
            std::fs::write(&node.config, text).unwrap();
        }
        node.start();
        let records = Records::load(InputFormat::U64, &input).unwrap();
        let mut cfg = SendConfig::new(node.listen, 1);
        cfg.rate = Some(10_000);
        cfg.secret = secret.clone();
        let sender = thread::spawn(move || {
            send(
                &cfg,
                &records,
                &Progress::default(),
                &AtomicBool::new(false),
            )
            .unwrap()
        });
        thread::sleep(Duration::from_millis(400));
        let second = handshake_as(node.listen, 1, secret.as_deref());
        let (code, text) = second.expect_err("refused");
        assert_eq!(code, ErrorCode::ChannelBusy, "{text}");
        assert!(text.contains("channel 1 has a producer already"), "{text}");
        let stats = sender.join().unwrap();
        assert_eq!(stats.acked, 20_000);
        assert!(recv.wait_for(20_000, Duration::from_secs(20)));
        recv.stop().unwrap();
        check_pass(App::Doubler, &[&input], &received);
        // Once the sender is gone the channel is free again.
        let again = handshake_as(node.listen, 1, secret.as_deref());
        assert!(again.is_ok(), "{:?}", again.err());
        assert_eq!(node.term(), Some(0));
    }
}

/// Issue 11, "What to build" 4: a frame with an accepted seq but other
/// bytes is a protocol violation; the first accepted version stands, and
/// a true resend (same bytes, flag RESEND) is an ordinary duplicate.
#[test]
fn a_duplicate_whose_bytes_differ_is_refused_and_the_first_version_stands() {
    let t = tempfile::tempdir().unwrap();
    let input = u64_file(t.path(), 10);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut node = Node::new(t.path(), "doubler", recv.addr(), "");
    node.start();
    let enc = Encoder::default();
    let mut s = handshake(node.listen);
    let mut b = BytesMut::new();
    for seq in 1..=5 {
        put_u64(&enc, &mut b, seq, seq, false);
    }
    s.write_all(&b).unwrap();
    wait_ack_on(&mut s, 1, 5);
    let mut b = BytesMut::new();
    put_u64(&enc, &mut b, 3, 999, true);
    s.write_all(&b).unwrap();
    let (code, text) = read_error(&mut s).expect("an ERROR");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(text.contains("DATA seq 3 of channel 1 differs"), "{text}");
    // The honest producer: a true resend of 3, then the rest.
    let mut s = handshake(node.listen);
    let mut b = BytesMut::new();
    put_u64(&enc, &mut b, 3, 3, true);
    for seq in 6..=10 {
        put_u64(&enc, &mut b, seq, seq, false);
    }
    s.write_all(&b).unwrap();
    wait_ack_on(&mut s, 1, 10);
    assert!(recv.wait_for(10, Duration::from_secs(10)));
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &received);
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert!(log.contains("duplicates=1"), "the true resend: {log}");
    assert!(log.contains("violations=1"), "{log}");
}

/// Issue 15, item 7: frames after a gap are kept, the gap is NACKed at
/// once naming just the missing seqs, and once they come the kept frames
/// are accepted in order: nothing is sent twice.
#[test]
fn a_gap_from_a_source_is_nacked_by_range_and_what_followed_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let input = u64_file(t.path(), 12);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut node = Node::new(t.path(), "doubler", recv.addr(), "");
    node.start();
    let enc = Encoder::default();
    let mut s = handshake(node.listen);
    // 1..=3, then 6..=8 and 10..=12: 4, 5 and 9 are "lost".
    let mut b = BytesMut::new();
    for seq in [1, 2, 3, 6, 7, 8, 10, 11, 12] {
        put_u64(&enc, &mut b, seq, seq, false);
    }
    s.write_all(&b).unwrap();
    // The node NACKs each gap at once, by range.
    let mut nacks = Vec::new();
    let mut dec = verity::wire::Decoder::default();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        while let Ok(Some(f)) = dec.decode() {
            if f.kind() == Kind::Nack {
                let v = f.view();
                let r = v.nack_ranges().unwrap();
                nacks.push(
                    r.iter()
                        .map(|r| (r.first.get(), r.last.get()))
                        .collect::<Vec<_>>(),
                );
            }
        }
        if nacks.len() >= 2 {
            break;
        }
        let n = s.read(&mut buf).expect("the node NACKs");
        assert!(n > 0, "closed");
        dec.extend(&buf[..n]);
    }
    assert_eq!(nacks[0], vec![(4, 5)], "{nacks:?}");
    assert_eq!(nacks[1], vec![(9, 9)], "{nacks:?}");
    // Only the missing ones are sent again.
    let mut b = BytesMut::new();
    for seq in [4, 5, 9] {
        put_u64(&enc, &mut b, seq, seq, true);
    }
    s.write_all(&b).unwrap();
    wait_ack_on(&mut s, 1, 12);
    assert!(recv.wait_for(12, Duration::from_secs(10)));
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &received);
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert!(log.contains("accepted=12 "), "{log}");
    assert!(
        log.contains("duplicates=0 "),
        "nothing was sent twice: {log}"
    );
}

/// Issue 11, "Why" 6: the text of a peer's ERROR used to reach the log
/// raw, so a peer could forge log lines and write escape sequences to an
/// operator's terminal.
#[test]
fn peer_text_reaches_the_log_escaped() {
    let t = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut node = Node::new(t.path(), "doubler", l.local_addr().unwrap(), "");
    node.start();
    let forged = "bye\nverity: stopped cleanly: accepted=999\x1b[2J\u{202e}gnp.exe";
    // From a source...
    let mut s = handshake(node.listen);
    let mut b = BytesMut::new();
    Encoder::default()
        .error(&mut b, 0, ErrorCode::Internal, forged)
        .unwrap();
    s.write_all(&b).unwrap();
    // ...and from the sink.
    let mut sink = FakeSink::accept(&l);
    sink.s.write_all(&b).unwrap();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert!(
        !log.contains('\x1b') && !log.contains('\u{202e}'),
        "{log:?}"
    );
    let stops = log
        .lines()
        .filter(|l| l.contains("] stopped cleanly"))
        .count();
    assert_eq!(stops, 1, "a forged stop line: {log}");
    let escaped = "bye\\nverity: stopped cleanly: accepted=999\\u{1b}[2J\\u{202e}gnp.exe";
    assert_eq!(log.matches(escaped).count(), 2, "{log}");
}

/// Issue 11, "Why" 7: a worker whose source or sink address is not
/// loopback does not start open; `allow_unauthenticated` starts it with a
/// warning.
#[test]
fn a_worker_reachable_off_loopback_needs_a_client_secret() {
    let t = tempfile::tempdir().unwrap();
    let port = free_addr().port();
    let config = t.path().join("node.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[node]\napp = \"doubler\"\ndata_dir = {:?}\nlisten = \"0.0.0.0:{port}\"\nsink = \"127.0.0.1:1\"\n{extra}",
                t.path().join("data").display().to_string()
            ),
        )
        .unwrap();
    };
    write("");
    let out = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["worker", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("client_secret_file") && err.contains("0.0.0.0"),
        "{err}"
    );
    write("allow_unauthenticated = true\n");
    let log = t.path().join("open.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["worker", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "did not start");
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("WARNING"), "{text}");
}

/// Issue 11, "Why" 8, first attack: clients that complete the handshake
/// and then send DATA one byte at a time used to hold every connection
/// slot. Now only one of them can hold the channel it names, and only
/// until `limits.frame_timeout_ms`; the real senders get through.
#[test]
fn clients_that_trickle_a_frame_are_closed_and_real_sources_get_through() {
    let t = tempfile::tempdir().unwrap();
    let cfg =
        verity_tools::gen::GenConfig::from_messages(3, 4000, verity_tools::gen::data_dir(None));
    verity_tools::gen::market_spread(&cfg, t.path()).unwrap();
    let (nbbo, orders) = (t.path().join("nbbo.msg"), t.path().join("orders.msg"));
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut node = Node::new(
        t.path(),
        "market-spread",
        recv.addr(),
        "frame_timeout_ms = 1000",
    );
    node.start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for i in 0..63u32 {
        let (listen, stop) = (node.listen, stop.clone());
        attackers.push(thread::spawn(move || {
            let from = Ipv4Addr::new(127, 0, 0, 2 + (i / 16) as u8);
            let Ok(s) = connect_from(from, listen) else {
                return false;
            };
            let Ok(mut s) = handshake_on(s, 2, None, Role::Source) else {
                return false;
            };
            // A DATA frame, one byte every 100 ms, never finished.
            let mut b = BytesMut::new();
            Encoder::default()
                .data(&mut b, 2, 1, 1, false, &[0; 4000])
                .unwrap();
            for byte in b.iter() {
                if stop.load(Ordering::SeqCst) || s.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            true
        }));
    }
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let senders = [(nbbo.clone(), 1), (orders.clone(), 2)].map(|(path, channel)| {
        let listen = node.listen;
        thread::spawn(move || -> SendStats {
            let records = Records::load(InputFormat::Fixish, &path).unwrap();
            let mut cfg = SendConfig::new(listen, channel);
            cfg.give_up_after = Duration::from_secs(30);
            send(
                &cfg,
                &records,
                &Progress::default(),
                &AtomicBool::new(false),
            )
            .unwrap()
        })
    });
    let stats: Vec<SendStats> = senders.map(|s| s.join().unwrap()).into_iter().collect();
    stop.store(true, Ordering::SeqCst);
    let established = attackers
        .into_iter()
        .map(|a| a.join().unwrap())
        .filter(|&e| e)
        .count();
    assert!(
        established <= 1,
        "{established} trickling clients got a channel"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        stats[1].retries > 0,
        "the orders sender waited for its channel"
    );
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert!(
        log.contains("left incomplete for over limits.frame_timeout_ms"),
        "{log}"
    );
    thread::sleep(Duration::from_millis(200));
    let expected = {
        let empty = t.path().join("empty.bin");
        verity_tools::formats::ReceivedWriter::create(&empty)
            .unwrap()
            .finish()
            .unwrap();
        verity_tools::check::check(App::MarketSpread, &[&nbbo, &orders], &empty)
            .unwrap()
            .expected
    };
    assert!(recv.wait_for(expected, Duration::from_secs(10)));
    recv.stop().unwrap();
    check_pass(App::MarketSpread, &[&nbbo, &orders], &received);
}

/// Issue 11, "Why" 8, second attack: 200 idle connections, reopened as
/// soon as they were closed, used to refuse every legitimate connection
/// and write thousands of log lines. Now the flood fills only the
/// handshake pool and its own addresses' share; real sources connect and
/// the log stays short.
#[test]
fn an_idle_connection_flood_does_not_keep_sources_out_or_flood_the_log() {
    let t = tempfile::tempdir().unwrap();
    let input = u64_file(t.path(), 5000);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut node = Node::new(
        t.path(),
        "doubler",
        recv.addr(),
        "handshake_timeout_ms = 2000",
    );
    node.start();
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..10u8 {
        let (listen, stop) = (node.listen, stop.clone());
        flood.push(thread::spawn(move || {
            let from = Ipv4Addr::new(127, 0, 1, 10 + i);
            let mut open: Vec<TcpStream> = Vec::new();
            let mut opened = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // Reopen whatever the node closed.
                open.retain(|s| {
                    let _ = s.set_nonblocking(true);
                    let mut byte = [0u8; 4096];
                    // Anything read is the node's ERROR before its close.
                    matches!((&*s).read(&mut byte), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while open.len() < 20 {
                    match connect_from(from, listen) {
                        Ok(s) => {
                            open.push(s);
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            opened
        }));
    }
    thread::sleep(Duration::from_millis(500));
    // 13 legitimate connection attempts, as in the issue, then a send.
    for _ in 0..13 {
        let s = handshake_as(node.listen, 1, None);
        assert!(s.is_ok(), "{:?}", s.err());
        // Closed before the next: the channel is free again once the node
        // has seen the close.
        drop(s);
        thread::sleep(Duration::from_millis(50));
    }
    let stats = send_file(node.listen, &input, InputFormat::U64, 1);
    assert_eq!(stats.acked, 5000);
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let opened: u64 = flood.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(opened > 200, "the flood opened {opened} connections");
    assert!(recv.wait_for(5000, Duration::from_secs(10)));
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &received);
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    let lines = log.lines().count();
    assert!(lines < 400, "{lines} log lines");
    assert!(
        log.contains("similar lines about connections suppressed"),
        "{log}"
    );
}

/// Issue 11, "What to build" 8: the bytes a connection may buffer before
/// its handshake is done are bounded by what a handshake needs.
#[test]
fn before_its_handshake_a_connection_may_not_announce_a_big_frame() {
    let t = tempfile::tempdir().unwrap();
    let mut node = Node::new(t.path(), "doubler", free_addr(), "");
    node.start();
    let mut s = TcpStream::connect(node.listen).unwrap();
    let mut b = BytesMut::new();
    Encoder::default()
        .data(&mut b, 1, 1, 1, false, &vec![0u8; 60_000])
        .unwrap();
    s.write_all(&b[..64]).unwrap();
    let (code, text) = read_error(&mut s).expect("an ERROR");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(
        text.contains("bad frame length 60040 (must be 40..=4144 bytes)"),
        "{text}"
    );
    assert_eq!(node.term(), Some(0));
}

/// A peer with the wrong role is refused: a sink on the source port, a
/// source answering where the node dialed its sink, a source or a sink
/// connecting to the receiver.
#[test]
fn a_peer_whose_role_does_not_fit_the_connection_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut node = Node::new(t.path(), "doubler", l.local_addr().unwrap(), "");
    node.start();
    let s = TcpStream::connect(node.listen).unwrap();
    let (code, text) = handshake_on(s, 1, None, Role::Sink).expect_err("refused");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(text.contains("a sink may not connect here"), "{text}");
    let mut impostor = FakeSink::accept_as(&l, &[], Role::Source);
    let (code, text) = impostor.error().expect("refused");
    assert_eq!(code, ErrorCode::Protocol);
    assert!(
        text.contains("the peer says it is a source; a sink was expected"),
        "{text}"
    );
    let recv = Receiver::start(&RecvConfig::new(any_port(), &t.path().join("r.bin"))).unwrap();
    for role in [Role::Source, Role::Sink] {
        let s = TcpStream::connect(recv.addr()).unwrap();
        let (code, _) = handshake_on(s, 1, None, role).expect_err("refused");
        assert_eq!(code, ErrorCode::Protocol);
    }
    recv.stop().unwrap();
    assert_eq!(node.term(), Some(0));
}

/// Issue 11, "Why" 9: verity-send gave up on LIMIT_EXCEEDED; now it backs
/// off and tries again.
#[test]
fn verity_send_retries_a_limit_exceeded_with_backoff() {
    let t = tempfile::tempdir().unwrap();
    let input = u64_file(t.path(), 1000);
    let received = t.path().join("received.bin");
    let recv = Receiver::start(&RecvConfig::new(any_port(), &received)).unwrap();
    let mut node = Node::new(
        t.path(),
        "doubler",
        recv.addr(),
        "max_connections_per_address = 1\nhandshake_timeout_ms = 400",
    );
    node.start();
    // The start-up probe's connection is gone by now.
    thread::sleep(Duration::from_millis(200));
    // Holds this address's one connection until the handshake timeout.
    let idle = TcpStream::connect(node.listen).unwrap();
    thread::sleep(Duration::from_millis(50));
    let stats = send_file(node.listen, &input, InputFormat::U64, 1);
    drop(idle);
    assert_eq!(stats.acked, 1000);
    assert!(stats.retries > 0, "{stats:?} {}", node.log_text());
    assert!(recv.wait_for(1000, Duration::from_secs(10)));
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &received);
}

// --- A client and a sink written from wire/PROTOCOL.md alone ---

/// CRC32C, bit by bit, as PROTOCOL.md defines it (reflected 0x82F63B78,
/// init and final XOR 0xFFFFFFFF).
fn spec_crc(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// One frame per the header table: 40-byte header, payload, zero padding
/// to 8, CRC over bytes 4..stride.
#[allow(clippy::too_many_arguments)]
fn spec_frame(
    kind: u8,
    flags: u16,
    channel: u32,
    epoch: u32,
    seq: u64,
    trace: u64,
    payload: &[u8],
) -> Vec<u8> {
    let len = 40 + payload.len();
    let stride = (len + 7) & !7;
    let mut f = vec![0u8; stride];
    f[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    f[8..10].copy_from_slice(&0x5956u16.to_le_bytes());
    f[10] = 1;
    f[11] = kind;
    f[12..14].copy_from_slice(&flags.to_le_bytes());
    f[16..20].copy_from_slice(&channel.to_le_bytes());
    f[20..24].copy_from_slice(&epoch.to_le_bytes());
    f[24..32].copy_from_slice(&seq.to_le_bytes());
    f[32..40].copy_from_slice(&trace.to_le_bytes());
    f[40..len].copy_from_slice(payload);
    let crc = spec_crc(&f[4..]);
    f[0..4].copy_from_slice(&crc.to_le_bytes());
    f
}

/// HELLO body: cluster_id, node_id, role, version_min, version_max,
/// challenge, response.
fn spec_hello(node_id: u32, role: u16, challenge: [u8; 32], answer: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(80);
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&node_id.to_le_bytes());
    body.extend_from_slice(&role.to_le_bytes());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&challenge);
    body.extend_from_slice(&[0; 32]);
    spec_frame(1, answer as u16, 0, 0, 0, 0, &body)
}

/// Reads one frame per the header table; checks its CRC; returns
/// (kind, flags, channel, seq, payload).
fn spec_read(s: &mut TcpStream) -> (u8, u16, u32, u64, Vec<u8>) {
    let mut head = [0u8; 40];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let stride = (len + 7) & !7;
    let mut rest = vec![0u8; stride - 40];
    s.read_exact(&mut rest).unwrap();
    let mut whole = head.to_vec();
    whole.extend_from_slice(&rest);
    assert_eq!(
        u32::from_le_bytes(head[0..4].try_into().unwrap()),
        spec_crc(&whole[4..])
    );
    let flags = u16::from_le_bytes(head[12..14].try_into().unwrap());
    let channel = u32::from_le_bytes(head[16..20].try_into().unwrap());
    let seq = u64::from_le_bytes(head[24..32].try_into().unwrap());
    (head[11], flags, channel, seq, rest[..len - 40].to_vec())
}

/// Issue 11, "What to build" 7: "A client written from the spec alone must
/// interoperate". A source and a sink built from PROTOCOL.md's tables, no
/// code of the project's: three HELLOs (no secret: answers all zero),
/// RESUME, DATA, ACK.
#[test]
fn a_source_and_a_sink_written_from_the_spec_alone_interoperate() {
    let t = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut node = Node::new(t.path(), "doubler", l.local_addr().unwrap(), "");
    node.start();
    // The source: channel 1 (the HELLO's node id names it), role 2.
    let mut src = TcpStream::connect(node.listen).unwrap();
    src.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    src.write_all(&spec_hello(1, 2, [5; 32], false)).unwrap();
    let (kind, flags, ..) = spec_read(&mut src);
    assert_eq!(
        (kind, flags & 1),
        (1, 1),
        "the node's HELLO carries an answer"
    );
    src.write_all(&spec_hello(1, 2, [5; 32], true)).unwrap();
    let (kind, _, _, _, body) = spec_read(&mut src);
    assert_eq!(kind, 2, "RESUME");
    assert_eq!(body.len(), 16);
    assert_eq!(u32::from_le_bytes(body[0..4].try_into().unwrap()), 1);
    assert_eq!(u64::from_le_bytes(body[8..16].try_into().unwrap()), 0);
    let mut data = Vec::new();
    for seq in 1..=100u64 {
        data.extend(spec_frame(
            3,
            0,
            1,
            0,
            seq,
            1 << 40 | seq,
            &(seq * 7).to_be_bytes(),
        ));
    }
    src.write_all(&data).unwrap();
    loop {
        let (kind, _, channel, seq, _) = spec_read(&mut src);
        assert_eq!(kind, 4, "only ACKs now");
        if channel == 1 && seq == 100 {
            break;
        }
    }
    // The sink: accept, answer the node's HELLO, check its answer, RESUME.
    let (mut sink, _) = l.accept().unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (kind, flags, ..) = spec_read(&mut sink);
    assert_eq!((kind, flags), (1, 0), "the node's first HELLO");
    sink.write_all(&spec_hello(0, 3, [6; 32], true)).unwrap();
    let (kind, flags, ..) = spec_read(&mut sink);
    assert_eq!((kind, flags), (1, 1), "the node's answer");
    let mut resume = Vec::new();
    resume.extend_from_slice(&SINK_CHANNEL.to_le_bytes());
    resume.extend_from_slice(&[0; 4]);
    resume.extend_from_slice(&0u64.to_le_bytes());
    sink.write_all(&spec_frame(2, 0, 0, 0, 0, 0, &resume))
        .unwrap();
    for seq in 1..=100u64 {
        let (kind, _, channel, got, payload) = spec_read(&mut sink);
        assert_eq!((kind, channel, got), (3, SINK_CHANNEL, seq));
        assert_eq!(payload, (seq * 14).to_be_bytes(), "the doubler's output");
    }
    sink.write_all(&spec_frame(4, 0, SINK_CHANNEL, 0, 100, 0, &[]))
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(node.term(), Some(0));
    let log = node.log_text();
    assert!(log.contains("unacked=0"), "{log}");
    assert!(log.contains("violations=0"), "{log}");
}

/// A network namespace with a veth pair: a second "host" at `peer_ip`,
/// reaching this one at `host_ip`. Removed on drop.
struct NetNs {
    name: String,
    host_if: String,
    host_ip: std::net::Ipv4Addr,
}

impl NetNs {
    /// `None` when this process may not create namespaces (not root).
    fn create(tag: u8) -> Option<NetNs> {
        let name = format!("vtb{}-{tag}", std::process::id());
        let (host_if, peer_if) = (
            format!("vh{tag}{}", std::process::id() % 10000),
            format!("vp{tag}{}", std::process::id() % 10000),
        );
        let net = 80 + tag;
        let ns = NetNs {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: Ipv4Addr::new(10, net, 0, 1),
        };
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let host_cidr = format!("10.{net}.0.1/24");
        let peer_cidr = format!("10.{net}.0.2/24");
        let ok = ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]) && ip(&["link", "set", &peer_if, "netns", &name])
            && ip(&["addr", "add", &host_cidr, "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "netns", "exec", &name, "ip", "addr", "add", &peer_cidr, "dev", &peer_if,
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", &peer_if, "up"]);
        assert!(ok, "setting up network namespace {name}");
        Some(ns)
    }

    /// Cuts the second host off: its end of the link goes down, so nothing
    /// it sent is answered and no FIN or reset ever comes (a host that died,
    /// or a partition).
    fn cut(&self) {
        let peer_if = self.host_if.replacen("vh", "vp", 1);
        let ok = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "ip", "link", "set", &peer_if, "down",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cutting the link");
    }

    /// Runs `f` on a thread inside the namespace (its sockets are made there).
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: setns(2) moves only this thread into the namespace
            // the open file names.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A producer whose host dies or is cut off sends no FIN: its connection
/// used to stay open for good, and with it the channel (every new producer
/// got CHANNEL_BUSY). TCP keepalive and a user timeout on every connection
/// now drop it within about 20 s, and the next producer gets the channel.
/// Runs in a network namespace (root only; elsewhere it says so and skips).
#[test]
fn a_producer_cut_off_without_a_fin_loses_its_channel_to_the_next() {
    let Some(ns) = NetNs::create(1) else {
        eprintln!("skipped: creating a network namespace needs root");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let input = u64_file(t.path(), 20_000);
    let received = t.path().join("received.bin");
    let secret = b"client-secret-0123456789".to_vec();
    let mut rc = RecvConfig::new(any_port(), &received);
    rc.secret = Some(secret.clone());
    let recv = Receiver::start(&rc).unwrap();
    verity_tools::client_auth::write_secret(&t.path().join("client.key"), &secret).unwrap();
    let mut node = Node::new(t.path(), "doubler", recv.addr(), "");
    let port = free_addr().port();
    let listen = std::net::SocketAddr::from((ns.host_ip, port));
    let text = std::fs::read_to_string(&node.config).unwrap();
    let text = text
        .replace(
            &format!("listen = \"{}\"", node.listen),
            &format!("listen = \"{listen}\""),
        )
        .replacen(
            "[node]\n",
            "[node]\nclient_secret_file = \"client.key\"\n",
            1,
        );
    std::fs::write(&node.config, text).unwrap();
    node.listen = listen;
    node.start();
    let records = Arc::new(Records::load(InputFormat::U64, &input).unwrap());
    let mut cfg = SendConfig::new(listen, 1);
    cfg.secret = Some(secret.clone());
    let first = {
        let (mut cfg, records) = (cfg.clone(), Arc::clone(&records));
        cfg.rate = Some(2_000);
        cfg.give_up_after = Duration::from_secs(3);
        ns.run(move || {
            send(
                &cfg,
                &records,
                &Progress::default(),
                &AtomicBool::new(false),
            )
        })
    };
    thread::sleep(Duration::from_millis(1500));
    ns.cut();
    let started = Instant::now();
    cfg.give_up_after = Duration::from_secs(60);
    let second = send(
        &cfg,
        &records,
        &Progress::default(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let took = started.elapsed();
    assert!(first.join().unwrap().is_err(), "the cut-off sender gave up");
    assert_eq!(second.acked, 20_000);
    assert!(
        second.retries > 0,
        "the channel was busy at first: {second:?}"
    );
    assert!(
        took < Duration::from_secs(45),
        "the dead connection held the channel {took:?}"
    );
    assert!(recv.wait_for(20_000, Duration::from_secs(20)));
    recv.stop().unwrap();
    check_pass(App::Doubler, &[&input], &received);
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
}
