//! TLS on a worker's connections between hosts (`[tls]`, docs/CONFIG.md):
//! the rustls settings built from the configured files, and [`TlsConn`],
//! one non-blocking TLS connection driven by the worker's edge-triggered
//! event loop.
//!
//! rustls with the ring provider, TLS 1.3 only. The HELLO handshake runs
//! inside the TLS connection unchanged (`wire/PROTOCOL.md`, "Transport
//! security"). In-process links between shards never use TLS.

use std::io::{self, BufRead, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use verity_wire::text::Escaped;

use crate::config::TlsFiles;

/// Ciphertext read from the socket in one `read` once a connection is
/// established (rustls itself takes at most 4 KiB a call).
const READ_CHUNK: usize = 64 << 10;
/// The same while its handshakes run: one whole TLS record and a header.
const HANDSHAKE_READ_CHUNK: usize = 17 << 10;
/// Encrypted records rustls may hold for the socket (and plaintext
/// written before the TLS handshake ends); a write beyond it waits for
/// the socket, as a full `wbuf` does.
const BUFFER_LIMIT: usize = 256 << 10;

/// The rustls settings of a worker's TLS connections.
pub(crate) struct TlsSetup {
    /// Server side of the source listener (`tls.clients`); asks sources
    /// for a certificate only with `tls.require_client_cert`.
    pub sources: Option<Arc<ServerConfig>>,
    /// Server side of the node-to-node listener (`tls.nodes`): every
    /// client presents a certificate chaining to `ca_file`.
    pub nodes: Option<Arc<ServerConfig>>,
    /// Client side to the sink (`tls.clients`): the sink's certificate
    /// chains to `ca_file`; we present ours if it asks.
    pub sink: Option<Arc<ClientConfig>>,
    /// Client side to other nodes (`tls.nodes`): the same settings.
    pub peers: Option<Arc<ClientConfig>>,
}

impl TlsSetup {
    /// Builds the settings `files` asks for; the error names the key
    /// whose file is unusable.
    pub fn new(files: &TlsFiles) -> Result<TlsSetup, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = certs_of(&files.cert_pem)
            .map_err(|e| format!("tls.cert_file: {}: {e}", files.cert_file.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&files.key_pem.0).map_err(|e| {
            format!(
                "tls.key_file: {}: no usable PEM private key: {e}",
                files.key_file.display()
            )
        })?;
        let ca = |e: String| format!("tls.ca_file: {}: {e}", files.ca_file.display());
        let mut roots = RootCertStore::empty();
        for c in certs_of(&files.ca_pem).map_err(ca)? {
            roots
                .add(c)
                .map_err(|e| ca(format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let pair = |e: rustls::Error| {
            format!(
                "tls.cert_file and tls.key_file ({} with {}): {e}",
                files.cert_file.display(),
                files.key_file.display()
            )
        };
        let versions = &[&rustls::version::TLS13];
        let server = |require: bool| -> Result<Arc<ServerConfig>, String> {
            let b = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .map_err(|e| e.to_string())?;
            let b = if require {
                let v =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| ca(e.to_string()))?;
                b.with_client_cert_verifier(v)
            } else {
                b.with_no_client_auth()
            };
            Ok(Arc::new(
                b.with_single_cert(certs.clone(), key.clone_key())
                    .map_err(pair)?,
            ))
        };
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(pair)?;
        let client = Arc::new(client);
        Ok(TlsSetup {
            sources: files
                .clients
                .then(|| server(files.require_client_cert))
                .transpose()?,
            nodes: files.nodes.then(|| server(true)).transpose()?,
            sink: files.clients.then(|| client.clone()),
            peers: files.nodes.then_some(client),
        })
    }
}

fn certs_of(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// A TLS failure as an I/O error; [`failure`] gives its text back.
fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The text of a TLS failure (a certificate refused, a handshake or
/// record error, an alert from the peer), escaped (it may name what the
/// peer's certificate says); `None` for any other I/O error.
pub(crate) fn failure(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(Escaped(&inner.to_string()).to_string())
}

/// What one [`TlsConn::fill`] did.
pub(crate) struct Filled {
    /// `false`: the peer closed (TCP end of stream, or close_notify).
    pub open: bool,
    /// Nothing is held here, and the socket was found empty (`WouldBlock`)
    /// or shorter than asked by this call's own read (`short`).
    pub drained: bool,
    /// This call's read of the socket was short.
    pub short: bool,
    /// Records could not all be written (the socket would block).
    pub write_blocked: bool,
}

/// One non-blocking TLS connection over a registered mio socket.
///
/// Reads: ciphertext is read from the socket into `cipher` (64 KiB a
/// `read`), handed to rustls as it takes it, and the plaintext moved to
/// the caller's buffer; plaintext or ciphertext still held here when the
/// caller's budget is spent keeps the connection marked readable, since
/// no new edge will announce it. Writes: plaintext goes into rustls
/// (bounded by [`BUFFER_LIMIT`]), records out to the socket; records the
/// socket did not take are written on the next flush, also when the
/// caller has no plaintext left to write ([`TlsConn::wants_write`]).
pub(crate) struct TlsConn {
    pub sock: TcpStream,
    tls: Connection,
    cipher: Vec<u8>,
    /// `cipher[at..len]`: read from the socket, not yet taken by rustls.
    at: usize,
    len: usize,
}

impl TlsConn {
    /// The server end of an accepted connection.
    pub fn server(config: &Arc<ServerConfig>, sock: TcpStream) -> io::Result<TlsConn> {
        let tls = rustls::ServerConnection::new(config.clone()).map_err(tls_err)?;
        Ok(TlsConn::over(tls.into(), sock))
    }

    /// Our end of a connection dialed to `ip`, whose certificate must name
    /// that address (an IP SAN).
    pub fn client(config: &Arc<ClientConfig>, sock: TcpStream, ip: IpAddr) -> io::Result<TlsConn> {
        let tls = ClientConnection::new(config.clone(), ServerName::IpAddress(ip.into()))
            .map_err(tls_err)?;
        Ok(TlsConn::over(tls.into(), sock))
    }

    fn over(mut tls: Connection, sock: TcpStream) -> TlsConn {
        tls.set_buffer_limit(Some(BUFFER_LIMIT));
        TlsConn {
            sock,
            tls,
            cipher: Vec::new(),
            at: 0,
            len: 0,
        }
    }

    /// Records are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Reads up to `max` bytes of plaintext into `buf` (for `Conn::fill`).
    /// `handshaking`: the connection is not yet established (a smaller
    /// read). Records rustls makes on the way (handshake messages, alerts,
    /// key updates) are written at once.
    pub fn fill(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        handshaking: bool,
    ) -> io::Result<Filled> {
        let mut f = Filled {
            open: true,
            drained: false,
            short: false,
            write_blocked: false,
        };
        let mut got = 0;
        loop {
            // Plaintext rustls holds.
            let mut r = self.tls.reader();
            loop {
                match r.fill_buf() {
                    // The peer's close_notify, after everything it sent.
                    Ok([]) => {
                        f.open = got > 0;
                        return Ok(f);
                    }
                    Ok(b) => {
                        let n = b.len().min(max - got);
                        buf.extend_from_slice(&b[..n]);
                        r.consume(n);
                        got += n;
                        if got == max {
                            return Ok(f);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            // Ciphertext read but not yet taken: at most 4 KiB a call.
            if self.at < self.len {
                let mut rest = &self.cipher[self.at..self.len];
                let n = self.tls.read_tls(&mut rest)?;
                if n == 0 {
                    // Nothing is taken after the peer's close_notify.
                    f.open = got > 0;
                    return Ok(f);
                }
                self.at += n;
                if let Err(e) = self.tls.process_new_packets() {
                    // The alert that says why, if the socket takes it.
                    let _ = self.tls.write_tls(&mut self.sock);
                    return Err(tls_err(e));
                }
                // Handshake flights, alerts, key updates: out at once.
                if !self.send()? {
                    f.write_blocked = true;
                }
                continue;
            }
            if f.short {
                // This call's own read found the socket's queue shorter
                // than asked, and everything it read is handed over.
                f.drained = true;
                return Ok(f);
            }
            if got > 0 {
                return Ok(f);
            }
            let want = if handshaking {
                HANDSHAKE_READ_CHUNK
            } else {
                READ_CHUNK
            };
            if self.cipher.len() != want {
                self.cipher = vec![0; want];
            }
            match self.sock.read(&mut self.cipher) {
                Ok(0) => {
                    f.open = false;
                    return Ok(f);
                }
                Ok(n) => {
                    (self.at, self.len) = (0, n);
                    f.short = n < want;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    f.drained = true;
                    return Ok(f);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what rustls holds for the socket; `Ok(false)` when the
    /// socket would block with records still held.
    pub fn send(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypts as much of `bytes` as rustls takes and writes records to
    /// the socket: the plaintext bytes taken, `WouldBlock` when none (the
    /// socket is full and rustls holds its limit).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Room first: what is held leaves before more is made.
        self.send()?;
        let n = self.tls.writer().write(bytes)?;
        self.send()?;
        if n == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::runtime::conn::{Conn, Stream};
    use mio::{Events, Interest, Poll, Token};
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// A CA and one certificate for 127.0.0.1 (server and client use), as
    /// `[tls]` would load them.
    fn files() -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let cert = p.signed_by(&key, &issuer).unwrap();
        TlsFiles {
            cert_file: PathBuf::from("node.pem"),
            key_file: PathBuf::from("node.key"),
            ca_file: PathBuf::from("ca.pem"),
            cert_pem: cert.pem().into_bytes(),
            key_pem: Secret(key.serialize_pem().into_bytes()),
            ca_pem: ca_pem.into_bytes(),
            nodes: true,
            clients: true,
            require_client_cert: true,
        }
    }

    /// The worker's read and write paths over one TLS connection under
    /// mio's edge-triggered readiness, the way its loop drives them: read
    /// while `readable` (small budgets, so plaintext and ciphertext stay
    /// held in the TLS layer with no new edge to announce them), flush only
    /// on writable events. A small upload arrives with its FIN before the
    /// loop looks (one edge for both: a short read must not end the
    /// reading); a large one arrives over many edges. Then the peer waits
    /// before reading a reply larger than the socket buffers (records
    /// rustls holds must go out on writable events, with `wbuf` empty). A
    /// lost edge shows as a stall: the test fails at its deadline.
    #[test]
    fn edge_triggered_reads_and_writes_lose_nothing() {
        exchange(20 << 10, 2 << 20);
        exchange(3 << 20, 2 << 20);
    }

    /// `up` bytes from a TLS client to a worker `Conn`, then its FIN; `down`
    /// bytes back.
    fn exchange(up: usize, down: usize) {
        let setup = TlsSetup::new(&files()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client_cfg = setup.sink.clone().unwrap();
        let peer = std::thread::spawn(move || {
            let sock = std::net::TcpStream::connect(addr).unwrap();
            let conn =
                ClientConnection::new(client_cfg, ServerName::IpAddress(addr.ip().into())).unwrap();
            let mut s = rustls::StreamOwned::new(conn, sock);
            let up: Vec<u8> = (0..up).map(|i| (i % 251) as u8).collect();
            s.write_all(&up).unwrap();
            s.flush().unwrap();
            s.sock.shutdown(std::net::Shutdown::Write).unwrap();
            // Let the server's replies pile up against full buffers.
            std::thread::sleep(Duration::from_millis(300));
            let mut down = vec![0u8; down];
            s.read_exact(&mut down).unwrap();
            assert!(down.iter().enumerate().all(|(i, &b)| b == (i % 241) as u8));
        });
        let (sock, from) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        // A small send buffer: rustls's records outlast `wbuf`, and only
        // writable events get them out.
        let size: libc::c_int = 8 << 10;
        // SAFETY: setsockopt(2) on the socket we own, with a pointer to a
        // c_int that lives for the call and its exact size.
        unsafe {
            use std::os::unix::io::AsRawFd;
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let mut sock = TcpStream::from_std(sock);
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut sock, Token(1), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        let tls = TlsConn::server(setup.sources.as_ref().unwrap(), sock).unwrap();
        let mut c = Conn::over(Stream::Tls(Box::new(tls)), from, 1 << 20, 1 << 20);
        c.readable = false;
        let mut events = Events::with_capacity(16);
        let mut got = Vec::new();
        let mut closed = false;
        let mut queued = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(closed && queued && !c.wants_flush()) {
            assert!(
                Instant::now() < deadline,
                "stalled: {} of {up} bytes read, closed {closed}, queued {queued}",
                got.len()
            );
            if !c.readable || closed {
                // Before the first look everything the peer sends arrives
                // (a single edge for the data and its FIN).
                if !closed {
                    let ms = if got.is_empty() { 200 } else { 1 };
                    std::thread::sleep(Duration::from_millis(ms));
                }
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
                for ev in events.iter() {
                    c.readable |= ev.is_readable() || ev.is_read_closed();
                    c.read_closed |= ev.is_read_closed();
                    c.writable |= ev.is_writable();
                }
            }
            while c.readable && !closed {
                match c.fill(7000) {
                    Ok(true) => {}
                    Ok(false) => closed = true,
                    Err(e) => panic!("read: {e}"),
                }
                let b = c.dec.read_buf();
                got.extend_from_slice(b);
                b.clear();
            }
            if closed && !queued {
                assert_eq!(got.len(), up);
                assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                let reply: Vec<u8> = (0..down).map(|i| (i % 241) as u8).collect();
                c.wbuf.extend_from_slice(&reply);
                c.writable = true;
                queued = true;
            }
            if c.writable && c.wants_flush() {
                c.flush().unwrap();
            }
        }
        peer.join().unwrap();
    }
}
