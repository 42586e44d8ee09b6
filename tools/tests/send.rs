//! verity-send against a node that lies: a RESUME naming more records than
//! the input has, and an ACK for a seq never sent, each end the run with a
//! typed `Violation` naming the node (and nothing is counted as ACKed that
//! was not sent). A raw-socket node stands in for the engine: it does the
//! real HELLO exchange, then says what the test tells it to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use verity_tools::send::{send, Progress, Records, SendConfig, SendError};
use verity_wire::handshake::{Acceptor, Me};
use verity_wire::{Decoder, Encoder, Kind, ResumeEntry, Role, DEFAULT_MAX_FRAME_LEN};

/// Reads frames until `want` arrives; None: the sender closed first.
fn read_until(s: &mut TcpStream, dec: &mut Decoder, want: Kind) -> Option<verity_wire::Frame> {
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(f) = dec.decode().ok()? {
            if f.kind() == want {
                return Some(f);
            }
        }
        let got = s.read(&mut chunk).ok()?;
        if got == 0 {
            return None;
        }
        dec.extend(&chunk[..got]);
    }
}

/// A node on loopback that takes one source connection, answers its
/// HELLO, then RESUMEs channel 1 from `delivered` and, after the first
/// DATA, ACKs `ack` (if any). Returns its address.
fn lying_node(delivered: u64, ack: Option<u64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let enc = Encoder::default();
        let mut dec = Decoder::new(DEFAULT_MAX_FRAME_LEN);
        let me = Me {
            cluster_id: 1,
            node_id: 0,
            role: Role::Node,
        };
        let mut acceptor = Acceptor::new(me, [7; 32]);
        let Some(first) = read_until(&mut s, &mut dec, Kind::Hello) else {
            return;
        };
        let hello = acceptor
            .on_hello(&first.view(), None, &[Role::Source])
            .unwrap();
        let mut out = BytesMut::new();
        enc.hello(&mut out, 0, &hello).unwrap();
        s.write_all(&out).unwrap();
        let Some(answer) = read_until(&mut s, &mut dec, Kind::Hello) else {
            return;
        };
        acceptor.on_answer(&answer.view(), None).unwrap();
        out.clear();
        enc.resume(&mut out, 0, &[ResumeEntry::new(1, delivered)])
            .unwrap();
        s.write_all(&out).unwrap();
        if let Some(seq) = ack {
            if read_until(&mut s, &mut dec, Kind::Data).is_some() {
                out.clear();
                enc.ack(&mut out, 1, 0, seq).unwrap();
                let _ = s.write_all(&out);
            }
        }
        // Hold the connection until the sender gives up on it.
        let mut sink = [0u8; 4096];
        while s.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    addr
}

fn run(addr: SocketAddr, records: u64) -> Result<verity_tools::send::SendStats, SendError> {
    let mut cfg = SendConfig::new(addr, 1);
    cfg.give_up_after = Duration::from_secs(5);
    // One record a write, so the lie comes while most are unsent.
    cfg.batch = 1;
    cfg.rate = Some(1_000);
    let recs = Records::from_vec((0..records).map(|i| format!("r{i}").into_bytes()).collect());
    send(&cfg, &recs, &Progress::default(), &AtomicBool::new(false))
}

#[test]
fn a_resume_beyond_the_input_is_a_violation() {
    let addr = lying_node(10, None);
    match run(addr, 5) {
        Err(SendError::Violation { addr: a, what }) => {
            assert_eq!(a, addr);
            assert!(
                what.contains("RESUME says the channel holds 10 records; the input has 5"),
                "{what}"
            );
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn an_ack_for_a_seq_never_sent_is_a_violation() {
    let addr = lying_node(0, Some(1_000));
    match run(addr, 50) {
        Err(SendError::Violation { what, .. }) => {
            assert!(what.starts_with("ACK for seq 1000; only "), "{what}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}
