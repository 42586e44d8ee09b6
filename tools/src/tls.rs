//! TLS for the tools' links (`verity-send`, `verity-recv`), and the
//! certificates `verity-gen tls` writes.
//!
//! rustls with the ring provider, TLS 1.3 only (every end is ours). A peer
//! is verified against a CA file; a server certificate must name the IP
//! address it was dialed at (an IP SAN): nodes, senders and receivers are
//! addressed by IP. See `wire/PROTOCOL.md`, "Transport security", for what
//! TLS protects and what the HELLO handshake (which still runs, inside the
//! TLS connection) adds.
//!
//! [`TlsStream`] is a blocking TLS connection over a `TcpStream` for one
//! thread; [`Link::split`] gives a writer and a reader for two threads
//! sharing one TLS session (the sender's record writer and ACK reader).

use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use verity_wire::text::Escaped;

/// The largest certificate or CA file read.
pub const MAX_CERT_FILE_LEN: u64 = 1 << 20;
/// The largest private key file read.
pub const MAX_KEY_FILE_LEN: u64 = 64 << 10;
/// Ciphertext read from the socket in one `read` (rustls itself takes at
/// most 4 KiB a call; a larger read saves system calls).
const READ_CHUNK: usize = 64 << 10;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a chain, or a CA bundle); at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > MAX_CERT_FILE_LEN {
        return Err(format!(
            "{shown} is {} bytes; at most {MAX_CERT_FILE_LEN} are read from a certificate file",
            meta.len()
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    certs_from_pem(&pem).map_err(|e| format!("{shown}: {e}"))
}

/// The certificates of PEM text; at least one.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// A private key file (PKCS#8, PKCS#1 or SEC1 PEM), checked as a secret
/// file: regular, mode 600 or 400 (`client_auth`), at most
/// [`MAX_KEY_FILE_LEN`] bytes.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = crate::client_auth::read_private(path, MAX_KEY_FILE_LEN)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{}: no usable PEM private key (-----BEGIN PRIVATE KEY-----, not encrypted): {e}",
            path.display()
        )
    })
}

/// A CA file as a root store.
fn roots(ca: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for c in load_certs(ca)? {
        store
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(Arc::new(store))
}

/// A client's TLS settings: the server's certificate must chain to `ca`
/// (and name the IP address dialed); with `ours` (certificate chain file,
/// key file) we present that certificate when the server asks for one.
pub fn client_config(ca: &Path, ours: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, String> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    let cfg = match ours {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?,
    };
    Ok(Arc::new(cfg))
}

/// A server's TLS settings: we present `cert` (chain file) with `key`;
/// with `client_ca`, every client must present a certificate chaining to
/// it (mutual TLS), otherwise none is asked for.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let b = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let b = match client_ca {
        None => b.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            b.with_client_cert_verifier(verifier)
        }
    };
    let cfg = b
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(cfg))
}

/// The text of a TLS failure (a certificate refused, a handshake or record
/// error, an alert from the peer), escaped (it may hold names from the
/// peer's certificate); `None` for any other I/O error.
pub fn failure(e: &io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(Escaped(&inner.to_string()).to_string())
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn lock(c: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panicked holder cannot leave a TLS session half-updated in a way
    // that matters more than the error the next record then raises.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands `data` (ciphertext) to rustls, 4 KiB at a time as it takes it,
/// and moves the plaintext it yields to `plain`. `Ok(true)`: the peer
/// closed the session (close_notify).
fn feed(conn: &mut Connection, mut data: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
    let mut closed = false;
    while !data.is_empty() && !closed {
        if conn.read_tls(&mut data)? == 0 {
            // Nothing more is taken after the peer's close_notify.
            break;
        }
        conn.process_new_packets().map_err(tls_err)?;
        // Drained after every record batch: rustls keeps at most 16 KiB
        // of plaintext and refuses to read more beyond that.
        let mut r = conn.reader();
        loop {
            match r.fill_buf() {
                Ok([]) => {
                    closed = true;
                    break;
                }
                Ok(b) => {
                    let n = b.len();
                    plain.extend_from_slice(b);
                    r.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(closed)
}

/// Plaintext received and not yet read, and whether the peer is done.
#[derive(Default)]
struct Inbox {
    plain: Vec<u8>,
    at: usize,
    eof: bool,
}

impl Inbox {
    /// Copies what is held into `buf`; `None` when nothing is held.
    fn take(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.at < self.plain.len() {
            let n = buf.len().min(self.plain.len() - self.at);
            buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
            self.at += n;
            return Some(n);
        }
        self.eof.then_some(0)
    }

    fn clear(&mut self) {
        self.plain.clear();
        self.at = 0;
    }
}

/// A blocking TLS connection (client or server) for one thread. The
/// socket's read timeout applies to every read, the handshake's included.
pub struct TlsStream {
    conn: Connection,
    sock: TcpStream,
    cipher: Vec<u8>,
    inbox: Inbox,
}

impl TlsStream {
    /// Our end of a connection to `server_ip`, whose certificate must name
    /// that address.
    pub fn client(
        config: Arc<ClientConfig>,
        sock: TcpStream,
        server_ip: IpAddr,
    ) -> io::Result<TlsStream> {
        let mut conn = ClientConnection::new(config, ServerName::IpAddress(server_ip.into()))
            .map_err(tls_err)?;
        // Plaintext written before the handshake ends waits in rustls;
        // the callers write whole batches (bounded by their own window).
        conn.set_buffer_limit(None);
        Ok(TlsStream::over(conn.into(), sock))
    }

    /// The server end of an accepted connection.
    pub fn server(config: Arc<ServerConfig>, sock: TcpStream) -> io::Result<TlsStream> {
        let mut conn = rustls::ServerConnection::new(config).map_err(tls_err)?;
        conn.set_buffer_limit(None);
        Ok(TlsStream::over(conn.into(), sock))
    }

    fn over(conn: Connection, sock: TcpStream) -> TlsStream {
        TlsStream {
            conn,
            sock,
            cipher: vec![0; READ_CHUNK],
            inbox: Inbox::default(),
        }
    }

    /// Runs the handshake to its end. Errors: the socket's, or a TLS
    /// failure ([`failure`] gives its text).
    pub fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.write_pending()?;
            if !self.conn.is_handshaking() {
                break;
            }
            if self.read_more()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the TLS handshake",
                ));
            }
        }
        // Our last flight (a client's Finished).
        self.write_pending()
    }

    /// Reads ciphertext from the socket and processes it; `Ok(true)` at
    /// the end of the stream.
    fn read_more(&mut self) -> io::Result<bool> {
        let n = self.sock.read(&mut self.cipher)?;
        if n == 0 {
            self.inbox.eof = true;
            return Ok(true);
        }
        self.inbox.clear();
        let closed = feed(&mut self.conn, &self.cipher[..n], &mut self.inbox.plain);
        match closed {
            Ok(c) => self.inbox.eof |= c,
            Err(e) => {
                // The alert that says why, if the socket takes it.
                let _ = self.conn.write_tls(&mut self.sock);
                return Err(e);
            }
        }
        Ok(false)
    }

    fn write_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.inbox.take(buf) {
                return Ok(n);
            }
            // Handshake messages, key updates: out before we wait.
            self.write_pending()?;
            self.read_more()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.write_pending()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}

/// A client's connection, plain TCP or TLS, for the handshake phase (one
/// thread) and then split into a writer and a reader.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Link {
    fn sock(&self) -> &TcpStream {
        match self {
            Link::Plain(s) => s,
            Link::Tls(t) => &t.sock,
        }
    }

    pub fn set_read_timeout(&self, d: Option<std::time::Duration>) -> io::Result<()> {
        self.sock().set_read_timeout(d)
    }

    /// A writer and a reader for two threads.
    ///
    /// Over TLS both share the one session behind a mutex, and only the
    /// writer ever writes to the socket: it encrypts under the lock into a
    /// buffer of its own, then writes that buffer with the lock released;
    /// the reader reads ciphertext with the lock released and takes the
    /// lock only to decrypt it. So neither blocks the other on the socket
    /// (a writer stuck on a full send buffer does not stop the reader from
    /// taking the ACKs that drain it), and records leave in the order
    /// rustls made them (one writer). Records the reader's processing
    /// queues (a key update, an alert) leave with the writer's next write
    /// or [`LinkWriter::flush_pending`].
    pub fn split(self) -> io::Result<(LinkWriter, LinkReader)> {
        match self {
            Link::Plain(s) => {
                let r = s.try_clone()?;
                Ok((
                    LinkWriter {
                        sock: s,
                        tls: None,
                        out: Vec::new(),
                    },
                    LinkReader { sock: r, tls: None },
                ))
            }
            Link::Tls(t) => {
                let TlsStream {
                    conn,
                    sock,
                    cipher,
                    inbox,
                } = *t;
                let r = sock.try_clone()?;
                let conn = Arc::new(Mutex::new(conn));
                Ok((
                    LinkWriter {
                        sock,
                        tls: Some(Arc::clone(&conn)),
                        out: Vec::new(),
                    },
                    LinkReader {
                        sock: r,
                        tls: Some(SharedIn {
                            conn,
                            cipher,
                            inbox,
                        }),
                    },
                ))
            }
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(t) => t.flush(),
        }
    }
}

/// The writing half of a split [`Link`].
pub struct LinkWriter {
    sock: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    out: Vec<u8>,
}

impl LinkWriter {
    /// Closes the connection both ways (the reader's blocked read returns).
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// Writes the records rustls queued on its own (key updates, alerts).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        self.write_all(&[])
    }
}

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(conn) = &self.tls else {
            return self.sock.write(buf);
        };
        self.out.clear();
        {
            let mut c = lock(conn);
            if !buf.is_empty() {
                c.writer().write_all(buf)?;
            }
            while c.wants_write() {
                c.write_tls(&mut self.out)?;
            }
        }
        self.sock.write_all(&self.out)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => self.sock.write_all(buf),
            // One `write` takes it all.
            Some(_) => self.write(buf).map(|_| ()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct SharedIn {
    conn: Arc<Mutex<Connection>>,
    cipher: Vec<u8>,
    inbox: Inbox,
}

/// The reading half of a split [`Link`].
pub struct LinkReader {
    sock: TcpStream,
    tls: Option<SharedIn>,
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(t) = self.tls.as_mut() else {
            return self.sock.read(buf);
        };
        loop {
            if let Some(n) = t.inbox.take(buf) {
                return Ok(n);
            }
            // The socket without the lock: the writer goes on meanwhile.
            let n = self.sock.read(&mut t.cipher)?;
            if n == 0 {
                t.inbox.eof = true;
                continue;
            }
            t.inbox.clear();
            let mut c = lock(&t.conn);
            t.inbox.eof |= feed(&mut c, &t.cipher[..n], &mut t.inbox.plain)?;
        }
    }
}

/// What `verity-gen tls` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// (name, certificate file, key file), the CA first.
    pub files: Vec<(String, std::path::PathBuf, std::path::PathBuf)>,
}

impl core::fmt::Display for Generated {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (name, cert, key)) in self.files.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{name}: {} {}", cert.display(), key.display())?;
        }
        Ok(())
    }
}

/// Writes a new CA (`ca.pem`, `ca.key`) to `out_dir` and, for every name,
/// `NAME.pem` and `NAME.key`: an ECDSA P-256 key and a certificate signed
/// by the CA with `ips` as its IP SANs, good for both server and client
/// authentication. Certificates are valid from the start of the current
/// year for `years` years. Keys are written mode 600 (`client_auth`).
pub fn generate(
    out_dir: &Path,
    ips: &[IpAddr],
    names: &[String],
    years: u32,
) -> Result<Generated, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    if ips.is_empty() {
        return Err(
            "at least one --ip is needed: certificates name the addresses peers dial".into(),
        );
    }
    for n in names {
        let ok = !n.is_empty()
            && n != "ca"
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !n.starts_with('.');
        if !ok {
            return Err(format!(
                "bad name {:?}: letters, digits, '-', '_' and '.' (not first), and not \"ca\"",
                Escaped(n)
            ));
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The year now, near enough (a day's error at the turn of a year is
    // covered: validity starts on 1 January).
    let year = 1970 + (secs / 31_556_952) as i32;
    let (from, to) = (
        rcgen::date_time_ymd(year, 1, 1),
        rcgen::date_time_ymd(year + years.max(1) as i32, 1, 1),
    );
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: a peer holding another such CA's certificate is
    // told "unknown issuer", not "bad signature".
    let tag = crate::client_auth::challenge().map_err(|e| format!("no random source: {e}"))?;
    let tag: String = tag[..6].iter().map(|b| format!("{b:02x}")).collect();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Verity CA {tag} (verity-gen tls)"),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = from;
    ca.not_after = to;
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let mut files = Vec::new();
    let write = |name: &str, cert: String, key: String| -> Result<_, String> {
        let (c, k) = (
            out_dir.join(format!("{name}.pem")),
            out_dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert).map_err(|e| format!("{}: {e}", c.display()))?;
        crate::client_auth::write_secret(&k, key).map_err(|e| format!("{}: {e}", k.display()))?;
        Ok((name.to_owned(), c, k))
    };
    files.push(write("ca", ca_cert.pem(), ca_key.serialize_pem())?);
    let issuer = Issuer::new(ca, ca_key);
    for name in names {
        let key = KeyPair::generate().map_err(e)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.subject_alt_names = ips.iter().map(|&ip| SanType::IpAddress(ip)).collect();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = from;
        p.not_after = to;
        let cert = p.signed_by(&key, &issuer).map_err(e)?;
        files.push(write(name, cert.pem(), key.serialize_pem())?);
    }
    Ok(Generated { files })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    /// A fresh scratch directory (tempfile's, removed when dropped) and
    /// the not-yet-existing `certs` directory in it.
    fn dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::Builder::new()
            .prefix(&format!("verity-tls-{name}-"))
            .tempdir()
            .unwrap();
        let d = t.path().join("certs");
        (t, d)
    }

    #[test]
    fn generated_keys_are_private_and_a_readable_key_is_refused() {
        let (_scratch, d) = dir("keys");
        let g = generate(&d, &["127.0.0.1".parse().unwrap()], &["w1".into()], 1).unwrap();
        assert_eq!(g.files.len(), 2);
        for (_, _, key) in &g.files {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let key = d.join("w1.key");
        assert!(load_key(&key).is_ok());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_key(&key).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        let e = generate(&d, &[], &["w1".into()], 1).unwrap_err();
        assert!(e.contains("--ip"), "{e}");
        let e = generate(&d, &["127.0.0.1".parse().unwrap()], &["../x".into()], 1).unwrap_err();
        assert!(e.contains("bad name"), "{e}");
    }

    /// A split link's writer and reader run at once over one session: the
    /// peer echoes, far more than the socket buffers hold, so a writer
    /// that blocked the reader (holding the session while stuck on the
    /// socket) would deadlock. Mutual TLS, verified both ways.
    #[test]
    fn a_split_link_writes_and_reads_at_once_over_one_session() {
        let (_scratch, d) = dir("split");
        generate(
            &d,
            &["127.0.0.1".parse().unwrap()],
            &["server".into(), "client".into()],
            1,
        )
        .unwrap();
        let ca = d.join("ca.pem");
        let server =
            server_config(&d.join("server.pem"), &d.join("server.key"), Some(&ca)).unwrap();
        let client =
            client_config(&ca, Some((&d.join("client.pem"), &d.join("client.key")))).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut s = TlsStream::server(server, sock).unwrap();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut t = TlsStream::client(client, sock, addr.ip()).unwrap();
        t.handshake().unwrap();
        let (mut w, mut r) = Link::Tls(Box::new(t)).split().unwrap();
        const TOTAL: usize = 24 << 20;
        let started = Instant::now();
        let writer = std::thread::spawn(move || {
            let chunk: Vec<u8> = (0..64 << 10).map(|i| (i % 253) as u8).collect();
            for _ in 0..TOTAL / chunk.len() {
                w.write_all(&chunk).unwrap();
            }
            w
        });
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        while got < TOTAL {
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {got}");
            assert!(buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == ((got + i) % (64 << 10) % 253) as u8));
            got += n;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        let w = writer.join().unwrap();
        w.shutdown();
        echo.join().unwrap();
    }
}
