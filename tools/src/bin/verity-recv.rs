//! verity-recv: accepts sink connections from nodes, drops duplicates by seq,
//! ACKs, and writes the received records to a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use verity_tools::recv::{Receiver, RecvConfig};

#[derive(Parser)]
#[command(
    name = "verity-recv",
    version,
    about = "Receive a Verity node's output, exactly once"
)]
struct Args {
    /// Address to listen on (the node's node.sink).
    #[arg(long)]
    listen: SocketAddr,
    /// Received file to write (format in tools/FORMATS.md).
    #[arg(long)]
    out: PathBuf,
    /// Exit once this many records arrived.
    #[arg(long)]
    expect: Option<u64>,
    /// Exit after this many seconds without a new record (0: never).
    #[arg(long, default_value_t = 0)]
    idle_secs: u64,
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// File holding the client secret the node is configured with
    /// (`client_secret_file`): both sides prove they hold it.
    #[arg(long)]
    secret_file: Option<std::path::PathBuf>,
    /// TLS: our certificate (PEM chain naming the address nodes dial as an
    /// IP SAN); needs --tls-key. Turns TLS on.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM, mode 600).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS: nodes must present a certificate chaining to this CA file
    /// (mutual TLS); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut cfg = RecvConfig::new(a.listen, &a.out);
    cfg.cluster_id = a.cluster_id;
    if let Some(f) = &a.secret_file {
        match verity_tools::client_auth::load_secret(f) {
            Ok(secret) => cfg.secret = Some(secret),
            Err(e) => {
                eprintln!("verity-recv: --secret-file: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        match verity_tools::tls::server_config(cert, key, a.tls_ca.as_deref()) {
            Ok(tls) => cfg.tls = Some(tls),
            Err(e) => {
                eprintln!("verity-recv: TLS: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let r = match Receiver::start(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verity-recv: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "verity-recv: listening on {}{}, writing {}",
        r.addr(),
        match (&cfg.tls, &a.tls_ca) {
            (None, _) => "",
            (Some(_), None) => " (TLS)",
            (Some(_), Some(_)) => " (TLS, node certificates required)",
        },
        a.out.display()
    );
    let mut last = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let n = r.records();
        if let Some(e) = r.error() {
            eprintln!("verity-recv: {e}");
            return ExitCode::from(1);
        }
        if a.expect.is_some_and(|x| n >= x) {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if a.idle_secs > 0 && last.1.elapsed() > Duration::from_secs(a.idle_secs) {
            break;
        }
    }
    match r.stop() {
        Ok(s) => {
            println!(
                "verity-recv: records={} duplicates={} gaps={} nacks={} connections={} bad_frames={}",
                s.records, s.duplicates, s.gaps, s.nacks, s.connections, s.bad_frames
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("verity-recv: {e}");
            ExitCode::from(1)
        }
    }
}
