//! verity-send: sends an input file to a node's source listener, at least
//! once, resending whatever is unACKed after a reconnect.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use verity_tools::formats::InputFormat;
use verity_tools::send::{send, Progress, Records, SendConfig};

#[derive(Parser)]
#[command(
    name = "verity-send",
    version = env!("VERITY_VERSION"),
    about = "Send a record file to a Verity node, at least once",
    after_help = "Exit status: 0 every record ACKed; 1 gave up (the node refused it, or no connection for --give-up-secs); 2 usage error or an input file it cannot read."
)]
struct Args {
    /// The node's source address (node.listen).
    #[arg(long)]
    to: SocketAddr,
    /// Input file.
    #[arg(long)]
    input: PathBuf,
    /// Input format: fixish, lines or u64.
    #[arg(long)]
    format: InputFormat,
    /// Channel id: source i of the app is channel i + 1.
    #[arg(long, default_value_t = 1)]
    channel: u32,
    /// Records per second (default: as fast as the node takes them).
    #[arg(long)]
    rate: Option<u64>,
    /// Frames per write.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// File holding the client secret the node is configured with
    /// (`client_secret_file`): both sides prove they hold it.
    #[arg(long)]
    secret_file: Option<std::path::PathBuf>,
    /// Give up after this many seconds without a connection.
    #[arg(long, default_value_t = 60)]
    give_up_secs: u64,
    /// TLS: the node's certificate must chain to this CA file (and name
    /// the --to address as an IP SAN). Turns TLS on.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TLS: our client certificate (PEM chain), for a node that requires
    /// one (tls.require_client_cert); needs --tls-ca and --tls-key.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM, mode 600).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let records = match Records::load(a.format, &a.input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("verity-send: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = SendConfig::new(a.to, a.channel);
    cfg.rate = a.rate;
    cfg.batch = a.batch.max(1);
    cfg.cluster_id = a.cluster_id;
    if let Some(f) = &a.secret_file {
        match verity_tools::client_auth::load_secret(f) {
            Ok(secret) => cfg.secret = Some(secret),
            Err(e) => {
                eprintln!("verity-send: --secret-file: {e}");
                return ExitCode::from(2);
            }
        }
    }
    cfg.give_up_after = Duration::from_secs(a.give_up_secs);
    if let Some(ca) = &a.tls_ca {
        let ours = a.tls_cert.as_deref().zip(a.tls_key.as_deref());
        match verity_tools::tls::client_config(ca, ours) {
            Ok(tls) => cfg.tls = Some(tls),
            Err(e) => {
                eprintln!("verity-send: TLS: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let progress = Arc::new(Progress::default());
    let stop = AtomicBool::new(false);
    let n = records.len();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let bar = std::io::stderr().is_terminal().then(|| {
        let (p, d) = (Arc::clone(&progress), Arc::clone(&done));
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let s = p.sent.load(Ordering::Relaxed);
                let k = p.acked.load(Ordering::Relaxed);
                let pct = (k * 100).checked_div(n).unwrap_or(100);
                let width = 30;
                let fill = (pct as usize * width) / 100;
                eprint!(
                    "\r[{}{}] {pct:3}% sent {s}/{n} acked {k}",
                    "#".repeat(fill),
                    " ".repeat(width - fill)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!();
        })
    });
    let result = send(&cfg, &records, &progress, &stop);
    done.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    match result {
        Ok(s) => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "verity-send: records={} acked={} frames={} resent={} connects={} nacks={} rewound={} seconds={:.2} rate={:.0}/s",
                s.records,
                s.acked,
                s.frames,
                s.resent,
                s.connects,
                s.nacks,
                s.rewound,
                secs,
                s.records as f64 / secs.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("verity-send: {e}");
            ExitCode::from(1)
        }
    }
}
