//! A node as a sink sees one, over a raw socket: the HELLO exchange, DATA
//! frames, and the ACKs and RESUME that come back (verity-recv and
//! verity-sink-postgres tests).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity_wire::handshake::{Connector, Me};
use verity_wire::{Decoder, Encoder, Kind, Role};

/// A node as the receiver sees one: HELLO, then DATA; it reads ACKs.
pub struct RawNode {
    pub s: TcpStream,
    pub dec: Decoder,
    pub enc: Encoder,
}

impl RawNode {
    /// Connects and does the HELLO exchange (wire/PROTOCOL.md: three
    /// HELLOs); `connect_resume` also waits for the RESUME.
    pub fn connect(addr: SocketAddr) -> RawNode {
        RawNode::connect_as(addr, 1)
    }

    /// As node `node`, which sends on channel 1000 + `node`.
    pub fn connect_as(addr: SocketAddr, node: u32) -> RawNode {
        let s = TcpStream::connect(addr).unwrap();
        let me = Me {
            cluster_id: 1,
            node_id: node,
            role: Role::Node,
        };
        let (c, hello) = Connector::start(me, [4; 32]);
        let enc = Encoder::default();
        let mut b = BytesMut::new();
        enc.hello(&mut b, 1, &hello).unwrap();
        let mut n = RawNode {
            s,
            dec: Decoder::default(),
            enc,
        };
        n.s.write_all(&b).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let answer = loop {
            if let Ok(Some(f)) = n.dec.decode() {
                let (answer, _) = c.on_hello(&f.view(), None, Role::Sink, None).unwrap();
                break answer;
            }
            assert_eq!(n.fill(until), Some(true), "the receiver's HELLO");
        };
        let mut b = BytesMut::new();
        n.enc.hello(&mut b, 1, &answer).unwrap();
        n.s.write_all(&b).unwrap();
        n
    }

    /// Connects and returns the RESUME's (channel, delivered) entries.
    pub fn connect_resume(addr: SocketAddr) -> (RawNode, BTreeMap<u32, u64>) {
        RawNode::connect_resume_as(addr, 1)
    }

    /// As node `node`.
    pub fn connect_resume_as(addr: SocketAddr, node: u32) -> (RawNode, BTreeMap<u32, u64>) {
        let mut n = RawNode::connect_as(addr, node);
        let r = n.resume(Duration::from_secs(10)).expect("a RESUME");
        (n, r)
    }

    /// Waits up to `timeout` for the RESUME.
    pub fn resume(&mut self, timeout: Duration) -> Option<BTreeMap<u32, u64>> {
        let until = Instant::now() + timeout;
        loop {
            while let Ok(Some(f)) = self.dec.decode() {
                if f.kind() == Kind::Resume {
                    let entries = f.view().resume_entries().unwrap();
                    return Some(
                        entries
                            .iter()
                            .map(|e| (e.channel.get(), e.delivered.get()))
                            .collect(),
                    );
                }
            }
            if !self.fill(until)? {
                return None;
            }
        }
    }

    /// Reads more bytes until `until`; false at EOF, None at the deadline.
    pub fn fill(&mut self, until: Instant) -> Option<bool> {
        let left = until.checked_duration_since(Instant::now())?;
        self.s
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.s.read(&mut buf) {
            Ok(0) => Some(false),
            Ok(n) => {
                self.dec.extend(&buf[..n]);
                Some(true)
            }
            Err(_) if Instant::now() >= until => None,
            Err(_) => Some(true),
        }
    }

    /// DATA frames `seqs` of `channel`, payload the seq (8 bytes BE), one write.
    pub fn send(&mut self, channel: u32, seqs: std::ops::RangeInclusive<u64>) {
        self.send_with(channel, seqs, |seq| seq.to_be_bytes().to_vec());
    }

    /// DATA frames `seqs` of `channel`, payloads from `payload`, one write.
    pub fn send_with(
        &mut self,
        channel: u32,
        seqs: std::ops::RangeInclusive<u64>,
        payload: impl Fn(u64) -> Vec<u8>,
    ) {
        let mut b = BytesMut::new();
        for seq in seqs {
            self.enc
                .data(&mut b, channel, seq, 1 << 40 | seq, false, &payload(seq))
                .unwrap();
        }
        self.s.write_all(&b).unwrap();
    }

    /// The highest ACK of `channel` that arrives within `timeout`, once it
    /// reaches `seq` (or what arrived by then).
    pub fn ack(&mut self, channel: u32, seq: u64, timeout: Duration) -> Option<u64> {
        let until = Instant::now() + timeout;
        let mut best = None;
        loop {
            while let Ok(Some(f)) = self.dec.decode() {
                if f.kind() == Kind::Ack && f.header().channel() == channel {
                    best = best.max(Some(f.header().seq()));
                }
            }
            if best.is_some_and(|b| b >= seq) {
                return best;
            }
            match self.fill(until) {
                Some(true) => {}
                _ => return best,
            }
        }
    }
}
