//! Raw protocol peers played by a test: a source client that completes
//! the handshake and then sends what the test wants (well-formed or not),
//! and a sink that accepts a node's output connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity::wire::handshake::{Acceptor, Connector, Me, Peer};
use verity::wire::{Decoder, Encoder, ErrorCode, Frame, Kind, ResumeEntry, Role};

fn source_me(channel: u32) -> Me {
    Me {
        cluster_id: 1,
        node_id: channel,
        role: Role::Source,
    }
}

/// Connects as the source of `channel` and completes the HELLO exchange
/// (no secret); the node's RESUME is left unread.
pub fn handshake(addr: SocketAddr) -> TcpStream {
    handshake_as(addr, 1, None).expect("handshake")
}

/// The HELLO exchange as the source of `channel` (with `secret`, if any):
/// the stream after our answer, or the node's ERROR (code, text).
pub fn handshake_as(
    addr: SocketAddr,
    channel: u32,
    secret: Option<&[u8]>,
) -> Result<TcpStream, (ErrorCode, String)> {
    let mut s = TcpStream::connect(addr).expect("connect");
    let (c, hello) = Connector::start(source_me(channel), [7; 32]);
    let mut b = BytesMut::new();
    Encoder::default().hello(&mut b, 0, &hello).unwrap();
    s.write_all(&b).unwrap();
    // Exactly the node's HELLO (or an ERROR): nothing after it is read, so
    // the RESUME stays for the caller.
    let f = read_frame(&mut s).ok_or((ErrorCode::Internal, "closed".to_owned()))?;
    if f.kind() == Kind::Error {
        let v = f.view();
        let (code, text) = v.error().unwrap();
        return Err((code, text.to_owned()));
    }
    let (answer, _) = c
        .on_hello(&f.view(), secret, Role::Node, None)
        .map_err(|r| (r.code, r.text))?;
    let mut b = BytesMut::new();
    Encoder::default().hello(&mut b, 0, &answer).unwrap();
    s.write_all(&b).unwrap();
    Ok(s)
}

/// Reads one whole frame, byte-exact: never a byte past its end.
pub fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut dec = Decoder::default();
    let mut head = [0u8; 8];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let stride = (len.max(40) + 7) & !7;
    let mut rest = vec![0u8; stride - 8];
    s.read_exact(&mut rest).ok()?;
    dec.extend(&head);
    dec.extend(&rest);
    dec.decode().ok()?
}

/// Reads frames until an ERROR (returns its code and text) or EOF (None).
pub fn read_error(s: &mut TcpStream) -> Option<(ErrorCode, String)> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut dec = Decoder::default();
    let mut buf = [0u8; 4096];
    loop {
        while let Ok(Some(f)) = dec.decode() {
            if f.kind() == Kind::Error {
                let (c, t) = f.view().error().unwrap();
                return Some((c, t.to_owned()));
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => dec.extend(&buf[..n]),
        }
    }
}

/// The sink end of a node's output connection, played by the test.
pub struct FakeSink {
    pub s: TcpStream,
    dec: Decoder,
    /// The node's sink channel (from its first DATA, or 1001 by default).
    pub channel: u32,
    /// Who the node said it is.
    pub node: Peer,
}

impl FakeSink {
    /// Accepts the node's connection, completes the HELLO exchange as the
    /// sink, and says RESUME(`delivered` = 0 on channel 1001).
    pub fn accept(l: &TcpListener) -> FakeSink {
        FakeSink::accept_resume(l, &[ResumeEntry::new(1001, 0)])
    }

    /// As [`FakeSink::accept`], with a RESUME of the test's choosing.
    pub fn accept_resume(l: &TcpListener, resume: &[ResumeEntry]) -> FakeSink {
        let (mut s, _) = l.accept().unwrap();
        let me = Me {
            cluster_id: 1,
            node_id: 0,
            role: Role::Sink,
        };
        let mut a = Acceptor::new(me, [9; 32]);
        let first = read_frame(&mut s).expect("the node's HELLO");
        let hello = a.on_hello(&first.view(), None, &[Role::Node]).unwrap();
        let mut b = BytesMut::new();
        Encoder::default().hello(&mut b, 0, &hello).unwrap();
        s.write_all(&b).unwrap();
        let answer = read_frame(&mut s).expect("the node's answer");
        let node = a.on_answer(&answer.view(), None).unwrap();
        let mut b = BytesMut::new();
        Encoder::default().resume(&mut b, 0, resume).unwrap();
        s.write_all(&b).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        FakeSink {
            s,
            dec: Decoder::default(),
            channel: 1001,
            node,
        }
    }

    /// (kind, seq, flags) of the frames that arrive within `wait`, stopping
    /// early once `enough` have.
    pub fn frames(&mut self, wait: Duration, enough: usize) -> Vec<(Kind, u64, u16)> {
        let until = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Ok(Some(f)) = self.dec.decode() {
                out.push((f.kind(), f.header().seq(), f.header().flags()));
            }
            if out.len() >= enough || Instant::now() >= until {
                return out;
            }
            match self.s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => self.dec.extend(&buf[..n]),
                Err(_) => {} // read timeout: look at the clock again
            }
        }
    }

    /// Sends an ACK or a NACK on the node's sink channel.
    pub fn send(&mut self, kind: Kind, seq: u64) {
        let mut b = BytesMut::new();
        match kind {
            Kind::Ack => Encoder::default()
                .ack(&mut b, self.channel, 0, seq)
                .unwrap(),
            _ => Encoder::default()
                .nack(&mut b, self.channel, 0, seq)
                .unwrap(),
        };
        self.s.write_all(&b).unwrap();
    }

    /// Reads until the node's ERROR (code, text) or the close (None).
    pub fn error(&mut self) -> Option<(ErrorCode, String)> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        loop {
            while let Ok(Some(f)) = self.dec.decode() {
                if f.kind() == Kind::Error {
                    let (c, t) = f.view().error().unwrap();
                    return Some((c, t.to_owned()));
                }
            }
            if Instant::now() >= until {
                return None;
            }
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.dec.extend(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return None,
            }
        }
    }
}
