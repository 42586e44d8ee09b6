//! Raw protocol peers played by a test: a source client that completes
//! the handshake and then sends what the test wants (well-formed or not),
//! and a sink that accepts a node's output connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity::wire::auth::{self, Answerer, Side};
use verity::wire::handshake::{Acceptor, Connector, Me, Peer};
use verity::wire::{Decoder, Encoder, ErrorCode, Frame, Hello, Kind, ResumeEntry, Role};

fn source_me(channel: u32) -> Me {
    Me {
        cluster_id: 1,
        node_id: channel,
        role: Role::Source,
    }
}

/// Connects as the source of channel 1 and completes the HELLO exchange
/// (no secret), up to and with the node's RESUME.
pub fn handshake(addr: SocketAddr) -> TcpStream {
    handshake_as(addr, 1, None).expect("handshake")
}

/// The HELLO exchange as the source of `channel` (with `secret`, if any):
/// the stream after the node's RESUME, or the node's ERROR (code, text).
pub fn handshake_as(
    addr: SocketAddr,
    channel: u32,
    secret: Option<&[u8]>,
) -> Result<TcpStream, (ErrorCode, String)> {
    handshake_on(
        TcpStream::connect(addr).expect("connect"),
        channel,
        secret,
        Role::Source,
    )
}

/// The HELLO exchange over a connected stream, as `role` producing
/// `channel`.
pub fn handshake_on(
    mut s: TcpStream,
    channel: u32,
    secret: Option<&[u8]>,
    role: Role,
) -> Result<TcpStream, (ErrorCode, String)> {
    let me = Me {
        role,
        ..source_me(channel)
    };
    let (c, hello) = Connector::start(me, [7; 32]);
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
    // The node admits us (RESUME) or refuses (ERROR) only now.
    let f = read_frame(&mut s).ok_or((ErrorCode::Internal, "closed".to_owned()))?;
    match f.kind() {
        Kind::Resume => Ok(s),
        Kind::Error => {
            let v = f.view();
            let (code, text) = v.error().unwrap();
            Err((code, text.to_owned()))
        }
        k => Err((ErrorCode::Internal, format!("unexpected {k}"))),
    }
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
        FakeSink::accept_as(l, resume, Role::Sink)
    }

    /// As [`FakeSink::accept_resume`], saying it is a `role`.
    pub fn accept_as(l: &TcpListener, resume: &[ResumeEntry], role: Role) -> FakeSink {
        let (mut s, _) = l.accept().unwrap();
        let me = Me {
            cluster_id: 1,
            node_id: 0,
            role,
        };
        let mut a = Acceptor::new(me, [9; 32]);
        let first = read_frame(&mut s).expect("the node's HELLO");
        let hello = a.on_hello(&first.view(), None, &[Role::Node]).unwrap();
        let mut b = BytesMut::new();
        Encoder::default().hello(&mut b, 0, &hello).unwrap();
        s.write_all(&b).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut sink = FakeSink {
            s,
            dec: Decoder::default(),
            channel: 1001,
            node: Peer {
                node_id: 0,
                role: Role::Node,
                epoch: 0,
            },
        };
        // The node's answer, or its ERROR (a refusal the test reads).
        let answer = match sink.frames_raw(Duration::from_secs(10), 1).pop() {
            Some(f) if f.kind() == Kind::Hello => f,
            Some(f) => {
                // Put the ERROR back for `error()`.
                sink.dec.extend(f.as_bytes());
                return sink;
            }
            None => return sink,
        };
        sink.node = a.on_answer(&answer.view(), None).unwrap();
        let s = &mut sink.s;
        let mut b = BytesMut::new();
        Encoder::default().resume(&mut b, 0, resume).unwrap();
        s.write_all(&b).unwrap();
        sink
    }

    /// Whole frames that arrive within `wait`, stopping once `enough` have.
    fn frames_raw(&mut self, wait: Duration, enough: usize) -> Vec<Frame> {
        let until = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while out.len() < enough {
                match self.dec.decode() {
                    Ok(Some(f)) => out.push(f),
                    _ => break,
                }
            }
            if out.len() >= enough || Instant::now() >= until {
                return out;
            }
            match self.s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => self.dec.extend(&buf[..n]),
                Err(_) => {}
            }
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

    /// Sends a NACK naming these (first, last) ranges of the node's sink
    /// channel, as given (a lying or malformed one too).
    pub fn send_nack_ranges(&mut self, ranges: &[(u64, u64)]) {
        let body: Vec<u8> = ranges
            .iter()
            .flat_map(|&(f, l)| [f.to_le_bytes(), l.to_le_bytes()].concat())
            .collect();
        let seq = ranges.first().map_or(0, |r| r.0);
        let mut b = BytesMut::new();
        Encoder::default()
            .frame(&mut b, Kind::Nack, 0, self.channel, 0, seq, 0, &[&body])
            .unwrap();
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

/// A TCP connection to `to` from the loopback address `from` (127.x.y.z):
/// another "host" as far as the node's per-address limits go.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        return Err(std::io::ErrorKind::Unsupported.into());
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2)/bind(2)/connect(2) calls with a sockaddr_in
    // that lives across each call and its exact size; the fd is owned by
    // the TcpStream made from it (or closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Reads frames until an ACK of `seq` (or more) on `channel`.
pub fn wait_ack_on(s: &mut TcpStream, channel: u32, seq: u64) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut dec = Decoder::default();
    let mut buf = [0u8; 4096];
    loop {
        while let Ok(Some(f)) = dec.decode() {
            if f.kind() == Kind::Ack && f.header().channel() == channel && f.header().seq() >= seq {
                return;
            }
            assert_ne!(f.kind(), Kind::Error, "{:?}", f.view().error());
        }
        let n = s.read(&mut buf).expect("the node ACKs");
        assert!(n > 0, "connection closed before ACK {seq}");
        dec.extend(&buf[..n]);
    }
}

/// Connects to a worker's node-to-node port as node `node_id` and answers
/// its challenge with `secret`; returns what the worker said last.
pub fn impostor(
    addr: SocketAddr,
    cluster_id: u64,
    node_id: u32,
    secret: &[u8],
) -> Option<(ErrorCode, String)> {
    impostor_at(addr, cluster_id, node_id, secret, 1)
}

/// As `impostor`, saying HELLO with `epoch`.
pub fn impostor_at(
    addr: SocketAddr,
    cluster_id: u64,
    node_id: u32,
    secret: &[u8],
    epoch: u32,
) -> Option<(ErrorCode, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let enc = Encoder::default();
    let my_challenge = [7u8; 32];
    let hello = Hello {
        cluster_id,
        node_id,
        role: Role::Node,
        version_min: 1,
        version_max: 1,
        challenge: my_challenge,
        response: None,
    };
    let mut b = BytesMut::new();
    enc.hello(&mut b, epoch, &hello).unwrap();
    s.write_all(&b).unwrap();
    let mut dec = Decoder::default();
    let mut buf = [0u8; 4096];
    loop {
        while let Ok(Some(f)) = dec.decode() {
            match f.kind() {
                Kind::Error => {
                    let (c, t) = f.view().error().unwrap();
                    return Some((c, t.to_owned()));
                }
                Kind::Hello => {
                    let h = f.view().hello().unwrap();
                    let me = Answerer {
                        cluster_id,
                        node_id,
                        role: Role::Node as u16,
                        side: Side::Connector,
                    };
                    let answer = auth::response(secret, &me, &h.challenge, &my_challenge);
                    let reply = Hello {
                        response: Some(answer),
                        ..hello
                    };
                    let mut b = BytesMut::new();
                    enc.hello(&mut b, epoch, &reply).unwrap();
                    if s.write_all(&b).is_err() {
                        return None;
                    }
                }
                _ => {}
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => dec.extend(&buf[..n]),
        }
    }
}
