//! The command line of `verity-recv` (and of `verity recv`, the engine
//! binary's copy of it, so a harness that has only the engine binary can
//! run the receiver as a process of its own and `kill -9` it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use super::{Durability, Receiver, RecvConfig};

/// Receive a Verity node's output, exactly once.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "verity-recv",
    version = env!("VERITY_VERSION"),
    about = "Receive a Verity node's output, exactly once",
    after_help = "\
Restarts: a non-empty --out is reopened, not truncated. Each channel's \
delivered seq is rebuilt from the file and sent to the nodes in RESUME, so \
they resend only what is missing. A torn tail left by a crash (a record cut \
short, failing its CRC, or out of sequence) is truncated, with a message \
naming the offset and the bytes dropped; nothing else is ever truncated \
without --fresh. A file that is not a received file is refused (exit 2) and \
left untouched, and so is a file another receiver has open.

Durability: `process` ACKs a record once write(2) put it in the file (it \
survives kill -9 of the receiver); `fsync` once fdatasync covered it (it \
survives a machine crash; one sync covers every connection's writes so far).

Exit status: 0 after --expect, --idle-secs, SIGTERM or SIGINT, with a last stdout \
line `verity-recv: records=N recovered=R duplicates=D ...`; 1 on a write or \
sync error; 2 on bad arguments or an --out it cannot use. \
Format of --out: tools/FORMATS.md, \"Received file\"."
)]
pub struct Args {
    /// Address to listen on (the node's node.sink).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Received file to write (format in tools/FORMATS.md); reopened if it
    /// exists.
    #[arg(long)]
    pub out: PathBuf,
    /// Start over: truncate --out (only a received file, or an empty one).
    #[arg(long)]
    pub fresh: bool,
    /// When to ACK: process (after write(2)) or fsync (after fdatasync).
    #[arg(long, default_value = "process")]
    pub durability: Durability,
    /// Exit once the file holds this many records (those found at start
    /// included).
    #[arg(long)]
    pub expect: Option<u64>,
    /// Exit after this many seconds without a new record (0: never).
    #[arg(long, default_value_t = 0)]
    pub idle_secs: u64,
    #[arg(long, default_value_t = 1)]
    pub cluster_id: u64,
    /// File holding the client secret the node is configured with
    /// (`client_secret_file`): both sides prove they hold it.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// TLS: our certificate (PEM chain naming the address nodes dial as an
    /// IP SAN); needs --tls-key. Turns TLS on.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM, mode 600).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS: nodes must present a certificate chaining to this CA file
    /// (mutual TLS); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
}

/// Runs the receiver until `--expect`, `--idle-secs`, SIGTERM or SIGINT;
/// `name` prefixes its messages.
pub fn run(a: &Args, name: &str) -> ExitCode {
    let mut cfg = RecvConfig::new(a.listen, &a.out);
    cfg.cluster_id = a.cluster_id;
    cfg.fresh = a.fresh;
    cfg.durability = a.durability;
    if let Some(f) = &a.secret_file {
        match crate::client_auth::load_secret(f) {
            Ok(secret) => cfg.secret = Some(secret),
            Err(e) => {
                eprintln!("{name}: --secret-file: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        match crate::tls::server_config(cert, key, a.tls_ca.as_deref()) {
            Ok(tls) => cfg.tls = Some(tls),
            Err(e) => {
                eprintln!("{name}: TLS: {e}");
                return ExitCode::from(2);
            }
        }
    }
    signals::install();
    let r = match Receiver::start(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let s = r.stats();
    if s.fresh_bytes > 0 {
        eprintln!(
            "{name}: {}: --fresh: truncated the file ({} bytes)",
            a.out.display(),
            s.fresh_bytes
        );
    }
    eprintln!(
        "{name}: listening on {}{}, writing {} (durability {}; {} records found, channels {:?})",
        r.addr(),
        match (&cfg.tls, &a.tls_ca) {
            (None, _) => "",
            (Some(_), None) => " (TLS)",
            (Some(_), Some(_)) => " (TLS, node certificates required)",
        },
        a.out.display(),
        a.durability,
        s.recovered,
        s.delivered
    );
    let mut last = (s.records, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let n = r.records();
        if let Some(e) = r.error() {
            eprintln!("{name}: {e}");
            return ExitCode::from(1);
        }
        if signals::stopped() || a.expect.is_some_and(|x| n >= x) {
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
                "{name}: records={} recovered={} duplicates={} gaps={} nacks={} connections={} bad_frames={} conflicts={} syncs={}",
                s.records, s.recovered, s.duplicates, s.gaps, s.nacks, s.connections, s.bad_frames, s.conflicts, s.syncs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM and SIGINT set a flag the main loop polls (a clean stop: the
/// file flushed and synced, the stats printed). Declared by hand: the tools
/// crate has no libc dependency.
pub(crate) mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    fn flag() -> &'static Arc<AtomicBool> {
        static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
        STOP.get_or_init(Arc::default)
    }

    pub fn install() {
        // signal-hook's handler only stores to the flag (async-signal-safe).
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, Arc::clone(flag()));
        }
    }

    pub fn stopped() -> bool {
        flag().load(Ordering::SeqCst)
    }
}
