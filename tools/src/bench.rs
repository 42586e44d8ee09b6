//! `verity-bench`: end-to-end throughput and latency of one node against a
//! raw pipe measured in the same run.
//!
//! - **raw pipe**: the same sender(s) wired straight to the same receiver,
//!   same framing, same ACK protocol — everything but the engine.
//! - **engine**: sender(s) → `verity worker` (a child process, `process`
//!   durability) → receiver.
//! - **latency**: the engine again, with the senders paced at half the
//!   engine's measured maximum. Record `seq` is due at `start + (seq-1)/rate`
//!   and its latency is the receiver's arrival time minus that (open loop:
//!   a stall counts against us, no coordinated omission). HdrHistogram
//!   gives p50 / p99 / p99.9 / max. The same paced run also goes through
//!   the raw pipe and through a **relay** (the raw pipe with one more TCP
//!   hop: two threads copying bytes both ways, nothing else), the floor
//!   for anything that sits between the sources and the sink.
//!
//! - **cluster** (`--workers N`, N ≥ 2): the engine again as N worker
//!   processes of one cluster (`cluster.toml`), the sources spread over the
//!   workers (input `i` to worker `i mod N`), each record journaled where it
//!   arrives and forwarded to the node owning its key; reported against the
//!   single node of the same round.
//!
//! - **TLS** (`--tls`): each round also runs the raw pipe, the engine and
//!   (with `--workers`) the cluster with TLS on every link (`[tls]`:
//!   sources and sink, and mutual TLS between workers; the receiver
//!   requires the node's certificate), certificates from `verity-gen
//!   tls`'s code; reported as TLS ÷ plain of the same round (every other
//!   round runs the TLS variants first), with the engine's and the
//!   cluster's CPU per input, and a latency run through the engine over
//!   TLS at the same rate.
//!
//! Ratios, not absolute figures, are what compare across runs on a shared
//! machine.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::formats::{split_trace_id, InputFormat};
use crate::gen::{self, GenConfig};
use crate::ports::free_addr;
use crate::recv::{Receiver, RecvConfig};
use crate::send::{send, Progress, Records, SendConfig};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub app: String,
    pub messages: u64,
    pub seed: u64,
    /// The `verity` engine binary.
    pub engine: PathBuf,
    pub work_dir: PathBuf,
    /// Upper bound on the latency run's length.
    pub latency_seconds: f64,
    /// Throughput rounds (raw pipe, then engine) whose medians are reported.
    pub rounds: u32,
    /// With N ≥ 2: each round also runs the engine as an N-worker cluster.
    pub workers: u32,
    /// Another engine build run in every round too, reported as engine ÷
    /// baseline (A/B of two builds in the same run).
    pub baseline: Option<PathBuf>,
    /// Latency runs at this many msgs/s instead of half the engine's
    /// measured maximum.
    pub latency_rate: Option<f64>,
    /// Every round also runs with TLS on every link (see the module doc).
    pub tls: bool,
    /// The engine under test (not the baseline) serves its metrics
    /// (`metrics_listen`) and is scraped every second while it runs: with
    /// `baseline` set to the same binary, the A/B of the metrics' cost.
    pub metrics: bool,
    /// The engine under test's `idle` (sleep, yield, spin); `None`: its
    /// default.
    pub idle: Option<String>,
    /// The engine under test's `durability` (process, fsync); `None`: its
    /// default (process). With `baseline` set to the same binary, the A/B
    /// of fsync against process durability.
    pub durability: Option<String>,
    /// The engine under test keeps its audit hash chain (`audit = true`):
    /// with `baseline` set to the same binary, audit on ÷ audit off.
    pub audit: bool,
}

#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    pub app: String,
    pub inputs: u64,
    pub outputs: u64,
    pub raw_msgs_per_s: f64,
    pub engine_msgs_per_s: f64,
    /// Median over rounds of engine ÷ raw pipe, each pair measured back to back.
    pub ratio: f64,
    pub rounds: u32,
    pub latency_rate: f64,
    pub latency_rate_given: bool,
    pub raw_latency: Latency,
    /// The raw pipe through a byte relay (one more TCP hop and two more
    /// threads to wake, nothing else): a floor for the engine's latency.
    pub relay_latency: Latency,
    pub engine_latency: Latency,
    /// (workers, median msgs/s, median of per-round cluster ÷ single node).
    pub cluster: Option<(u32, f64, f64)>,
    /// (median baseline msgs/s, median of per-round engine ÷ baseline).
    pub baseline: Option<(f64, f64)>,
    /// Median of per-round engine ÷ baseline CPU ns per input (the
    /// process's user + system time over the run): less at the mercy of
    /// the scheduler than msgs/s on a shared machine.
    pub baseline_cpu: Option<f64>,
    /// With `tls`: the same runs over TLS.
    pub tls: Option<TlsResult>,
    /// msgs/s of each kind of run (raw pipe, engine, baseline, cluster,
    /// their TLS variants), round by round (the report's plot).
    pub per_round: Vec<(String, Vec<f64>)>,
}

/// The TLS runs of a bench: medians of msgs/s, and geometric means of the
/// per-round ratios TLS ÷ plain (each pair measured in the same round,
/// every other round TLS first: a run's place in the round matters on
/// this machine, the cluster's second run of a round being up to 1.5x
/// faster whichever it is).
#[derive(Debug, Clone, Default)]
pub struct TlsResult {
    pub raw_msgs_per_s: f64,
    pub raw_ratio: f64,
    pub engine_msgs_per_s: f64,
    pub engine_ratio: f64,
    /// Median engine CPU per input, plain and TLS (ns/msg), when known.
    pub engine_cpu_ns: Option<(f64, f64)>,
    /// (msgs/s, cluster TLS ÷ cluster plain) with `--workers`.
    pub cluster: Option<(f64, f64)>,
    /// Median CPU per input of all the cluster's workers, plain and TLS.
    pub cluster_cpu_ns: Option<(f64, f64)>,
    /// Through the engine over TLS at the latency run's rate.
    pub latency: Latency,
}

impl Latency {
    fn json(&self) -> String {
        crate::json::Obj::new()
            .int("samples", self.samples)
            .int("p50_ns", self.p50_us * 1000)
            .int("p99_ns", self.p99_us * 1000)
            .int("p999_ns", self.p999_us * 1000)
            .int("max_ns", self.max_us * 1000)
            .raw(
                "gaps_over_ms",
                &format!(
                    "{{{}}}",
                    GAP_MS
                        .iter()
                        .zip(self.gaps_over)
                        .map(|(ms, n)| format!("\"{ms}\":{n}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            )
            .raw(
                "longest_gaps_ns",
                &format!(
                    "[{}]",
                    self.longest_gaps_us
                        .iter()
                        .map(|g| (g.0 * 1000).to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            )
            .str("engine_stalls", self.engine_stalls.as_deref().unwrap_or(""))
            .raw(
                "steady",
                &match self.steady {
                    None => "null".to_string(),
                    Some((n, p99, p999, max)) => crate::json::Obj::new()
                        .int("after_ns", (WARM_S * 1e9) as u64)
                        .int("samples", n)
                        .int("p99_ns", p99 * 1000)
                        .int("p999_ns", p999 * 1000)
                        .int("max_ns", max * 1000)
                        .build(),
                },
            )
            .build()
    }
}

impl BenchResult {
    /// The result as one JSON object (`verity-bench --json`,
    /// tools/FORMATS.md).
    pub fn to_json(&self) -> String {
        let mut o = crate::json::Obj::new()
            .str("app", &self.app)
            .int("inputs", self.inputs)
            .int("outputs", self.outputs)
            .int("rounds", self.rounds as u64)
            .num("raw_msgs_per_s", self.raw_msgs_per_s)
            .num("engine_msgs_per_s", self.engine_msgs_per_s)
            .num("engine_over_raw", self.ratio)
            .num("latency_rate", self.latency_rate)
            .raw("raw_latency", &self.raw_latency.json())
            .raw("relay_latency", &self.relay_latency.json())
            .raw("engine_latency", &self.engine_latency.json());
        if let Some((workers, rate, ratio)) = self.cluster {
            o = o
                .int("cluster_workers", workers as u64)
                .num("cluster_msgs_per_s", rate)
                .num("cluster_over_single", ratio);
        }
        if let Some((rate, ratio)) = self.baseline {
            o = o
                .num("baseline_msgs_per_s", rate)
                .num("engine_over_baseline", ratio);
        }
        if let Some(ratio) = self.baseline_cpu {
            o = o.num("engine_over_baseline_cpu", ratio);
        }
        if let Some(t) = &self.tls {
            o = o
                .num("tls_raw_msgs_per_s", t.raw_msgs_per_s)
                .num("tls_raw_over_plain", t.raw_ratio)
                .num("tls_engine_msgs_per_s", t.engine_msgs_per_s)
                .num("tls_engine_over_plain", t.engine_ratio)
                .raw("tls_engine_latency", &t.latency.json());
        }
        o.build()
    }
}

impl core::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        writeln!(
            f,
            "bench: app={} inputs={} outputs={}",
            self.app, self.inputs, self.outputs
        )?;
        writeln!(
            f,
            "bench: medians of {} rounds: raw pipe {:.0} msgs/s; engine {:.0} msgs/s; engine/raw {:.0}% (median of per-round ratios)",
            self.rounds,
            self.raw_msgs_per_s,
            self.engine_msgs_per_s,
            100.0 * self.ratio
        )?;
        writeln!(
            f,
            "bench: latency at {:.0} msgs/s ({}), input due time to output arrival:",
            self.latency_rate,
            if self.latency_rate_given {
                "--latency-rate"
            } else {
                "half the engine's max"
            }
        )?;
        writeln!(f, "bench:   raw pipe {}", self.raw_latency)?;
        writeln!(f, "bench:   relay    {}", self.relay_latency)?;
        write!(f, "bench:   engine   {}", self.engine_latency)?;
        if let Some((rate, ratio)) = self.baseline {
            write!(
                f,
                "\nbench: baseline engine {rate:.0} msgs/s; engine/baseline {:.1}% (median of per-round ratios)",
                100.0 * ratio
            )?;
        }
        if let Some(ratio) = self.baseline_cpu {
            write!(
                f,
                "\nbench: CPU per input, engine/baseline {:.1}% (median of per-round ratios)",
                100.0 * ratio
            )?;
        }
        if let Some((n, rate, ratio)) = self.cluster {
            write!(
                f,
                "\nbench: cluster of {n} worker processes: {rate:.0} msgs/s; cluster/single node {:.0}% (median of per-round ratios)",
                100.0 * ratio
            )?;
        }
        if let Some(t) = &self.tls {
            write!(
                f,
                "\nbench: TLS: raw pipe {:.0} msgs/s, TLS/plain {:.0}%; engine {:.0} msgs/s, TLS/plain {:.0}% (geometric means of per-round ratios, TLS first every other round)",
                t.raw_msgs_per_s,
                100.0 * t.raw_ratio,
                t.engine_msgs_per_s,
                100.0 * t.engine_ratio
            )?;
            if let Some((plain, tls)) = t.engine_cpu_ns {
                write!(
                    f,
                    "\nbench: TLS: engine CPU {plain:.0} ns/msg plain, {tls:.0} ns/msg TLS (medians)"
                )?;
            }
            if let Some((rate, ratio)) = t.cluster {
                write!(
                    f,
                    "\nbench: TLS: cluster {rate:.0} msgs/s, TLS/plain {:.0}% (geometric mean of per-round ratios)",
                    100.0 * ratio
                )?;
            }
            if let Some((plain, tls)) = t.cluster_cpu_ns {
                write!(
                    f,
                    "\nbench: TLS: cluster CPU (all workers) {plain:.0} ns/msg plain, {tls:.0} ns/msg TLS (medians)"
                )?;
            }
            write!(f, "\nbench:   engine over TLS {}", t.latency)?;
        }
        Ok(())
    }
}

struct Engine(Child);

impl Engine {
    /// The process's user + system CPU seconds so far (Linux `/proc`), the
    /// steadier signal than msgs/s on a shared machine.
    fn cpu_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks as f64 / 100.0)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a finished run's data directory (its processes are gone). A
/// round's logs are hundreds of MB of dirty page cache: left behind, the
/// kernel's writeback of them runs during the next rounds and takes their
/// CPU, so later rounds would measure the bench's own leftovers.
fn discard(cfg: &BenchConfig, run: &str) {
    let _ = std::fs::remove_dir_all(cfg.work_dir.join(run));
}

fn start_engine(
    cfg: &BenchConfig,
    run: &str,
    sink: SocketAddr,
    tls: Option<&Tls>,
) -> Result<(Engine, SocketAddr), String> {
    start_binary(cfg, &cfg.engine, run, sink, tls, cfg.metrics)
}

/// The certificates and TLS settings of the `--tls` runs.
struct Tls {
    dir: PathBuf,
    /// Senders: the node verified against the CA; our certificate.
    client: Arc<rustls::ClientConfig>,
    /// The receiver: its certificate; nodes must present theirs.
    sink: Arc<rustls::ServerConfig>,
}

impl Tls {
    fn new(work_dir: &Path) -> Result<Tls, String> {
        let dir = work_dir.join("certs");
        let names = ["node", "sink", "client"].map(String::from);
        crate::tls::generate(&dir, &["127.0.0.1".parse().map_err(|_| "ip")?], &names, 1)?;
        let ca = dir.join("ca.pem");
        // The senders present a certificate: the raw pipe's receiver
        // requires one (as it does of nodes).
        let ours = (dir.join("client.pem"), dir.join("client.key"));
        Ok(Tls {
            client: crate::tls::client_config(&ca, Some((&ours.0, &ours.1)))?,
            sink: crate::tls::server_config(
                &dir.join("sink.pem"),
                &dir.join("sink.key"),
                Some(&ca),
            )?,
            dir,
        })
    }

    /// The `[tls]` table of the engine's configuration.
    fn table(&self, nodes: bool) -> String {
        let f = |n: &str| format!("{:?}", self.dir.join(n).display().to_string());
        format!(
            "\n[tls]\ncert_file = {}\nkey_file = {}\nca_file = {}\nclients = true\nnodes = {nodes}\n",
            f("node.pem"),
            f("node.key"),
            f("ca.pem")
        )
    }
}

fn start_binary(
    cfg: &BenchConfig,
    engine: &Path,
    run: &str,
    sink: SocketAddr,
    tls: Option<&Tls>,
    metrics: bool,
) -> Result<(Engine, SocketAddr), String> {
    let listen = free_addr()?;
    let metrics = match metrics {
        true => Some(free_addr()?),
        false => None,
    };
    let dir = cfg.work_dir.join(run);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let toml = dir.join("node.toml");
    std::fs::write(
        &toml,
        format!(
            "[node]\napp = {:?}\ndata_dir = {:?}\nlisten = \"{listen}\"\nsink = \"{sink}\"\n{}{}{}",
            cfg.app,
            dir.join("data").display().to_string(),
            tuning(cfg, engine, run),
            metrics.map_or(String::new(), |m| format!("metrics_listen = \"{m}\"\n")),
            tls.map_or(String::new(), |t| t.table(false))
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("node.log")).map_err(|e| e.to_string())?;
    let child = Command::new(engine)
        .args(["worker", "--config"])
        .arg(&toml)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", engine.display()))?;
    let engine = Engine(child);
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        if Instant::now() > until {
            return Err("the engine did not start listening".into());
        }
        thread::sleep(Duration::from_millis(5));
    }
    if let Some(m) = metrics {
        thread::spawn(move || scrape(m));
    }
    Ok((engine, listen))
}

/// The `[node]` keys of the engine under test beyond the basics: `idle`
/// (`--idle`), `durability` (`--durability`), `audit` (`--audit`), and in
/// the latency runs `lock_memory` (when we may lock
/// memory). None for a baseline build, which may predate the keys.
///
/// `lock_memory` only where latency is measured: it takes the engine's
/// longest loop stalls from 25-45 ms to a few ms on this VM (its host
/// reclaims page cache), but in a throughput run of a few hundred ms,
/// locking (faulting in) whole 64 MiB segments up front cost 28% of the
/// msgs/s and 48% more CPU per input (A/B against the same build without
/// it, 3 rounds of 2 M inputs); the throughput figures stay those of the
/// default configuration.
fn tuning(cfg: &BenchConfig, engine: &Path, run: &str) -> String {
    let mut keys = String::new();
    if engine != cfg.engine {
        return keys;
    }
    if let Some(idle) = &cfg.idle {
        keys += &format!("idle = {idle:?}\n");
    }
    if let Some(durability) = &cfg.durability {
        keys += &format!("durability = {durability:?}\n");
    }
    if cfg.audit {
        keys += "audit = true\n";
    }
    if run.starts_with("latency") && can_lock_memory() {
        keys += "lock_memory = true\n";
    }
    keys
}

/// Whether the engine can run with `lock_memory` (its segments locked in
/// memory, as a tuned deployment runs): `CAP_IPC_LOCK` (bit 14 of the
/// effective set), or `RLIMIT_MEMLOCK` unlimited or at least 1 GiB (the
/// engine, our child, inherits both).
fn can_lock_memory() -> bool {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        });
    if caps.is_some_and(|c| c & (1 << 14) != 0) {
        return true;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    ok && (limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= 1 << 30)
}

/// GETs `/metrics` from `addr` every second until the engine is gone.
fn scrape(addr: SocketAddr) {
    use std::io::{Read, Write};
    while let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let _ = s.read_to_end(&mut Vec::new());
        thread::sleep(Duration::from_secs(1));
    }
}

/// Starts an `n`-worker cluster (one node each); returns the processes and
/// each worker's source address.
fn start_cluster(
    cfg: &BenchConfig,
    run: &str,
    sink: SocketAddr,
    n: u32,
    tls: Option<&Tls>,
) -> Result<(Vec<Engine>, Vec<SocketAddr>), String> {
    let dir = cfg.work_dir.join(run);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::client_auth::write_secret(&dir.join("secret"), "verity-bench-cluster-secret")
        .map_err(|e| e.to_string())?;
    let mut toml = format!(
        "[cluster]\napp = {:?}\nsecret_file = \"secret\"\nsink = \"{sink}\"\n{}",
        cfg.app,
        tls.map_or(String::new(), |t| t.table(true))
    );
    let mut sources = Vec::new();
    for i in 1..=n {
        let (address, src) = (free_addr()?, free_addr()?);
        toml.push_str(&format!(
            "\n[[worker]]\nname = \"w{i}\"\naddress = \"{address}\"\nsources = \"{src}\"\ndata_dir = \"w{i}\"\n"
        ));
        sources.push(src);
    }
    let config = dir.join("cluster.toml");
    std::fs::write(&config, toml).map_err(|e| e.to_string())?;
    let mut engines = Vec::new();
    for i in 1..=n {
        let log =
            std::fs::File::create(dir.join(format!("w{i}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(&cfg.engine)
            .args(["worker", "--config"])
            .arg(&config)
            .args(["--name", &format!("w{i}")])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cfg.engine.display()))?;
        engines.push(Engine(child));
    }
    let until = Instant::now() + Duration::from_secs(10);
    for s in &sources {
        while TcpStream::connect(s).is_err() {
            if Instant::now() > until {
                return Err("a cluster worker did not start listening".into());
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    Ok((engines, sources))
}

/// (records, channel, rate share) per input.
type Inputs = Vec<(Arc<Records>, u32)>;

fn generate(cfg: &BenchConfig) -> Result<(Inputs, u64), String> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| e.to_string())?;
    let ge = |e: gen::GenError| e.to_string();
    let fe = |e: crate::formats::FormatError| e.to_string();
    match cfg.app.as_str() {
        "doubler" | "sequence-window" => {
            let p = cfg.work_dir.join("input.u64");
            gen::u64_counters(cfg.messages, &p).map_err(ge)?;
            let r = Records::load(InputFormat::U64, &p).map_err(fe)?;
            let n = r.len();
            Ok((vec![(Arc::new(r), 1)], n))
        }
        "market-spread" => {
            let g = GenConfig::from_messages(cfg.seed, cfg.messages, gen::data_dir(None));
            gen::market_spread(&g, &cfg.work_dir).map_err(ge)?;
            let nbbo =
                Records::load(InputFormat::Fixish, &cfg.work_dir.join("nbbo.msg")).map_err(fe)?;
            let orders =
                Records::load(InputFormat::Fixish, &cfg.work_dir.join("orders.msg")).map_err(fe)?;
            let n = orders.len();
            Ok((vec![(Arc::new(nbbo), 1), (Arc::new(orders), 2)], n))
        }
        other => Err(format!(
            "verity-bench runs doubler, sequence-window or market-spread, not {other:?}"
        )),
    }
}

/// Sends every input (one thread each, optionally paced) and waits until the
/// receiver has `expect` records, the senders presenting themselves as
/// nodes (`as_node`: straight to the receiver, or through a relay) or as
/// sources (to an engine). Returns the elapsed seconds.
#[allow(clippy::too_many_arguments)]
fn drive(
    to: &[SocketAddr],
    inputs: &Inputs,
    total_rate: Option<f64>,
    total: u64,
    recv: &Receiver,
    expect: u64,
    progress: &[Arc<Progress>],
    tls: Option<&Tls>,
    as_node: bool,
) -> Result<f64, String> {
    let start = Instant::now();
    let mut threads = Vec::new();
    for (i, ((records, channel), p)) in inputs.iter().zip(progress).enumerate() {
        let mut cfg = SendConfig::new(to[i % to.len()], *channel);
        cfg.tls = tls.map(|t| t.client.clone());
        // Raw pipe or relay: the sender stands in for a node at the receiver.
        cfg.as_node = as_node;
        if let Some(r) = total_rate {
            // Each input gets its share of the rate.
            let rate = ((r * records.len() as f64 / total as f64) as u64).max(1);
            cfg.rate = Some(rate);
            // About 20 000 writes a second whatever the rate (a write each
            // 50 us): 16-record writes at millions of records a second woke
            // the receiver so often that the raw pipe itself fell behind
            // the schedule (p50 tens of ms at 4 M msgs/s).
            cfg.batch = (rate / 20_000).clamp(1, 1024) as usize;
        }
        let (records, p) = (Arc::clone(records), Arc::clone(p));
        threads.push(thread::spawn(move || {
            send(&cfg, &records, &p, &AtomicBool::new(false)).map_err(|e| e.to_string())
        }));
    }
    for t in threads {
        t.join().map_err(|_| "sender panicked".to_string())??;
    }
    if !recv.wait_for(expect, Duration::from_secs(120)) {
        return Err(format!(
            "only {} of {expect} records arrived",
            recv.records()
        ));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// One unpaced throughput run: a receiver writing `file`, what `start`
/// starts for it (given the receiver's address, it returns what to keep
/// alive and where the sources send), every input sent, `expect` outputs
/// awaited. Returns the inputs per second and what `start` kept.
fn timed_run<T>(
    cfg: &BenchConfig,
    inputs: &Inputs,
    total: u64,
    expect: u64,
    file: &str,
    tls: Option<&Tls>,
    start: impl FnOnce(SocketAddr) -> Result<(T, Vec<SocketAddr>), String>,
) -> Result<(f64, T), String> {
    // Fresh: every round writes the same file anew.
    let mut rc = RecvConfig::new(free_addr()?, &cfg.work_dir.join(file));
    rc.fresh = true;
    rc.tls = tls.map(|t| t.sink.clone());
    let recv = Receiver::start(&rc).map_err(|e| e.to_string())?;
    let (kept, to) = start(recv.addr())?;
    let progress: Vec<Arc<Progress>> = inputs.iter().map(|_| Arc::default()).collect();
    // Straight to the receiver: the raw pipe.
    let raw = to == [recv.addr()];
    let secs = drive(&to, inputs, None, total, &recv, expect, &progress, tls, raw)?;
    recv.stop().map_err(|e| e.to_string())?;
    Ok((total as f64 / secs, kept))
}

/// One ABBA block of `--baseline-engine`: the means of the engine's two
/// runs and of the baseline's two (msgs/s; CPU ns per input).
struct AbBlock {
    engine: f64,
    baseline: f64,
    engine_cpu: Option<f64>,
    baseline_cpu: Option<f64>,
}

pub fn run(cfg: &BenchConfig) -> Result<BenchResult, String> {
    let (inputs, outputs) = generate(cfg)?;
    let total: u64 = inputs.iter().map(|(r, _)| r.len()).sum();

    // Throughput, raw pipe and engine alternately, `rounds` times each; the
    // medians (a run is short, and the machine is shared) and the median of
    // the per-round ratios are reported.
    let mut raw_rates = Vec::new();
    let mut engine_rates = Vec::new();
    let mut ratios = Vec::new();
    let (mut cluster_rates, mut cluster_ratios) = (Vec::new(), Vec::new());
    let (mut base_rates, mut base_ratios) = (Vec::new(), Vec::new());
    let mut base_cpu_ratios = Vec::new();
    let tls = if cfg.tls {
        Some(Tls::new(&cfg.work_dir)?)
    } else {
        None
    };
    let (mut tls_raw, mut tls_raw_ratios) = (Vec::new(), Vec::new());
    let (mut tls_engine, mut tls_engine_ratios) = (Vec::new(), Vec::new());
    let (mut cpu_plain, mut cpu_tls) = (Vec::new(), Vec::new());
    let (mut tls_cluster, mut tls_cluster_ratios) = (Vec::new(), Vec::new());
    let (mut cluster_cpu_plain, mut cluster_cpu_tls) = (Vec::new(), Vec::new());
    // One engine run: msgs/s and its CPU ns per input.
    let engine_run = |name: &str, file: &str, tls: Option<&Tls>| {
        let (eng, (engine, cpu_start)) =
            timed_run(cfg, &inputs, total, outputs, file, tls, |sink| {
                let (engine, listen) = start_engine(cfg, name, sink, tls)?;
                // Startup (creating and scanning the first segments) is not counted.
                let cpu_start = engine.cpu_secs();
                Ok(((engine, cpu_start), vec![listen]))
            })?;
        let cpu = engine
            .cpu_secs()
            .zip(cpu_start)
            .map(|(end, start)| 1e9 * (end - start) / total as f64);
        drop(engine);
        discard(cfg, name);
        Ok::<_, String>((eng, cpu))
    };
    // One ABBA block of the engine under test and the baseline build
    // (`--baseline-engine`): the mean msgs/s of the engine's two runs and of
    // the baseline's two.
    let ab_block = |base: &Path, round: u32| {
        let baseline = |k: u32| {
            let name = format!("baseline-{round}-{k}");
            let (rate, (engine, cpu_start)) = timed_run(
                cfg,
                &inputs,
                total,
                outputs,
                "ab-baseline.bin",
                None,
                |sink| {
                    let (engine, listen) = start_binary(cfg, base, &name, sink, None, false)?;
                    let cpu_start = engine.cpu_secs();
                    Ok(((engine, cpu_start), vec![listen]))
                },
            )?;
            let cpu = engine
                .cpu_secs()
                .zip(cpu_start)
                .map(|(end, start)| 1e9 * (end - start) / total as f64);
            drop(engine);
            discard(cfg, &name);
            Ok::<_, String>((rate, cpu))
        };
        let e1 = engine_run(&format!("ab-engine-{round}-0"), "ab-engine.bin", None)?;
        let b1 = baseline(0)?;
        let b2 = baseline(1)?;
        let e2 = engine_run(&format!("ab-engine-{round}-1"), "ab-engine.bin", None)?;
        let mean = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (a + b) / 2.0);
        Ok::<_, String>(AbBlock {
            engine: (e1.0 + e2.0) / 2.0,
            baseline: (b1.0 + b2.0) / 2.0,
            engine_cpu: mean(e1.1, e2.1),
            baseline_cpu: mean(b1.1, b2.1),
        })
    };
    // One cluster run: msgs/s and the CPU ns per input of all its workers.
    let cluster_run = |name: &str, file: &str, tls: Option<&Tls>| {
        let (rate, (engines, cpu_start)) =
            timed_run(cfg, &inputs, total, outputs, file, tls, |sink| {
                let (engines, sources) = start_cluster(cfg, name, sink, cfg.workers, tls)?;
                let cpu_start: Option<f64> = engines.iter().map(Engine::cpu_secs).sum();
                Ok(((engines, cpu_start), sources))
            })?;
        let cpu_end: Option<f64> = engines.iter().map(Engine::cpu_secs).sum();
        let cpu = cpu_end
            .zip(cpu_start)
            .map(|(end, start)| 1e9 * (end - start) / total as f64);
        drop(engines);
        discard(cfg, name);
        Ok::<_, String>((rate, cpu))
    };
    let cpu_text = |cpu: Option<f64>| cpu.map_or("n/a".to_string(), |c| format!("{c:.0} ns/msg"));
    // The raw pipe and the single node, over TLS or not.
    let single = |round: u32, t: Option<&Tls>| {
        let tag = if t.is_some() { "-tls" } else { "" };
        let (raw, ()) = timed_run(
            cfg,
            &inputs,
            total,
            total,
            &format!("raw{tag}.bin"),
            t,
            |sink| Ok(((), vec![sink])),
        )?;
        let (eng, cpu) = engine_run(
            &format!("engine{tag}-{round}"),
            &format!("engine{tag}.bin"),
            t,
        )?;
        Ok::<_, String>((raw, eng, cpu))
    };
    for round in 0..cfg.rounds.max(1) {
        // With --tls, every other round runs the TLS variants first: the
        // order within a round (caches, the previous run's page cache
        // being freed) must not favour either.
        let tls_first = round % 2 == 1;
        let mut single_tls = None;
        if let (Some(t), true) = (&tls, tls_first) {
            single_tls = Some(single(round, Some(t))?);
        }
        // The A/B of two builds: engine, baseline, baseline, engine (ABBA),
        // apart from the raw pipe. A run's speed depends on what ran just
        // before it (a run after the raw pipe is slower: its page cache is
        // still being freed), and that drift cancels in ABBA; the engine
        // runs of the throughput figures above are not used for it.
        let ab = match &cfg.baseline {
            None => None,
            Some(base) => Some(ab_block(base, round)?),
        };
        let (raw, eng, cpu) = single(round, None)?;
        eprintln!(
            "bench: {} round {round}: raw pipe {raw:.0} msgs/s; engine {eng:.0} msgs/s; engine/raw {:.0}%; engine CPU {}",
            cfg.app,
            100.0 * eng / raw,
            cpu_text(cpu)
        );
        raw_rates.push(raw);
        engine_rates.push(eng);
        ratios.push(eng / raw);
        if let (Some(t), false) = (&tls, tls_first) {
            single_tls = Some(single(round, Some(t))?);
        }
        if let Some((raw_t, eng_t, cpu_t)) = single_tls {
            eprintln!(
                "bench: {} round {round}: TLS{}: raw pipe {raw_t:.0} msgs/s ({:.0}% of plain); engine {eng_t:.0} msgs/s ({:.0}% of plain); engine CPU {}",
                cfg.app,
                if tls_first { " (run first)" } else { "" },
                100.0 * raw_t / raw,
                100.0 * eng_t / eng,
                cpu_text(cpu_t)
            );
            tls_raw.push(raw_t);
            tls_raw_ratios.push(raw_t / raw);
            tls_engine.push(eng_t);
            tls_engine_ratios.push(eng_t / eng);
            if let (Some(p), Some(c)) = (cpu, cpu_t) {
                cpu_plain.push(p);
                cpu_tls.push(c);
            }
        }

        if let Some(ab) = ab {
            eprintln!(
                "bench: {} round {round}: A/B (ABBA): engine {:.0} msgs/s, baseline engine {:.0} msgs/s; engine/baseline {:.1}%; CPU engine {} baseline {}",
                cfg.app,
                ab.engine,
                ab.baseline,
                100.0 * ab.engine / ab.baseline,
                cpu_text(ab.engine_cpu),
                cpu_text(ab.baseline_cpu)
            );
            base_rates.push(ab.baseline);
            base_ratios.push(ab.engine / ab.baseline);
            if let (Some(e), Some(b)) = (ab.engine_cpu, ab.baseline_cpu) {
                base_cpu_ratios.push(e / b);
            }
        }
        if cfg.workers >= 2 {
            let tls_run =
                |t: &Tls| cluster_run(&format!("cluster-tls-{round}"), "cluster-tls.bin", Some(t));
            let mut cluster_tls = None;
            if let (Some(t), true) = (&tls, tls_first) {
                cluster_tls = Some(tls_run(t)?);
            }
            let (rate, cpu) = cluster_run(&format!("cluster-{round}"), "cluster.bin", None)?;
            cluster_rates.push(rate);
            cluster_ratios.push(rate / eng);
            if let (Some(t), false) = (&tls, tls_first) {
                cluster_tls = Some(tls_run(t)?);
            }
            if let Some((rate_t, cpu_t)) = cluster_tls {
                eprintln!(
                    "bench: {} round {round}: cluster {rate:.0} msgs/s, CPU {}; TLS{} {rate_t:.0} msgs/s ({:.0}% of plain), CPU {}",
                    cfg.app,
                    cpu_text(cpu),
                    if tls_first { " (run first)" } else { "" },
                    100.0 * rate_t / rate,
                    cpu_text(cpu_t)
                );
                tls_cluster.push(rate_t);
                tls_cluster_ratios.push(rate_t / rate);
                if let (Some(p), Some(c)) = (cpu, cpu_t) {
                    cluster_cpu_plain.push(p);
                    cluster_cpu_tls.push(c);
                }
            }
        }
    }
    // Round by round, before the medians sort them.
    let per_round: Vec<(String, Vec<f64>)> = [
        ("raw pipe".to_string(), &raw_rates),
        ("engine".to_string(), &engine_rates),
        ("baseline engine".to_string(), &base_rates),
        (format!("cluster of {}", cfg.workers), &cluster_rates),
        ("raw pipe, TLS".to_string(), &tls_raw),
        ("engine, TLS".to_string(), &tls_engine),
        (format!("cluster of {}, TLS", cfg.workers), &tls_cluster),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k, v.clone()))
    .collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let engine_rate = median(&mut engine_rates);
    let raw_rate = median(&mut raw_rates);
    let ratio = median(&mut ratios);
    let baseline = cfg
        .baseline
        .is_some()
        .then(|| (median(&mut base_rates), median(&mut base_ratios)));
    let baseline_cpu = (!base_cpu_ratios.is_empty()).then(|| median(&mut base_cpu_ratios));
    let cluster = (cfg.workers >= 2).then(|| {
        (
            cfg.workers,
            median(&mut cluster_rates),
            median(&mut cluster_ratios),
        )
    });

    // Latency at half the engine's maximum, bounded in time: through the
    // raw pipe (the harness's own latency), through a relay (one hop more,
    // the floor) and through the engine.
    let rate = cfg.latency_rate.unwrap_or(engine_rate / 2.0);
    let raw_lat = latency(cfg, &inputs, total, outputs, rate, Via::Raw, None)?;
    let relay_lat = latency(cfg, &inputs, total, outputs, rate, Via::Relay, None)?;
    let eng_lat = latency(cfg, &inputs, total, outputs, rate, Via::Engine, None)?;
    let tls = match &tls {
        None => None,
        Some(t) => Some(TlsResult {
            raw_msgs_per_s: median(&mut tls_raw),
            raw_ratio: geomean(&tls_raw_ratios),
            engine_msgs_per_s: median(&mut tls_engine),
            engine_ratio: geomean(&tls_engine_ratios),
            engine_cpu_ns: (!cpu_tls.is_empty())
                .then(|| (median(&mut cpu_plain), median(&mut cpu_tls))),
            cluster: (cfg.workers >= 2)
                .then(|| (median(&mut tls_cluster), geomean(&tls_cluster_ratios))),
            cluster_cpu_ns: (!cluster_cpu_tls.is_empty())
                .then(|| (median(&mut cluster_cpu_plain), median(&mut cluster_cpu_tls))),
            latency: latency(cfg, &inputs, total, outputs, rate, Via::Engine, Some(t))?,
        }),
    };

    Ok(BenchResult {
        app: cfg.app.clone(),
        inputs: total,
        outputs,
        raw_msgs_per_s: raw_rate,
        engine_msgs_per_s: engine_rate,
        ratio,
        rounds: cfg.rounds.max(1),
        latency_rate: rate,
        latency_rate_given: cfg.latency_rate.is_some(),
        raw_latency: raw_lat,
        relay_latency: relay_lat,
        engine_latency: eng_lat,
        cluster,
        baseline,
        baseline_cpu,
        tls,
        per_round,
    })
}

/// The geometric mean of ratios: over rounds that alternate which of two
/// runs goes first, a constant advantage of going second cancels out.
fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|r| r.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// Latency percentiles of one paced run.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// The percentile curve: (1 / (1 - p), latency at p in us), ten points
    /// a decade of 1 / (1 - p) up to the sample count, then the maximum.
    pub curve: Vec<(f64, u64)>,
    /// Gaps between consecutive outputs' arrivals at the receiver of at
    /// least each of [`GAP_MS`] ms: with the inputs paced, a gap is a stall
    /// somewhere between the senders and the receiver.
    pub gaps_over: [u64; GAP_MS.len()],
    /// The longest such gaps, longest first: (length, when it ended since
    /// the first output), us.
    pub longest_gaps_us: Vec<(u64, u64)>,
    /// Through the engine: its own account of its stalls (the `stalls`
    /// line it logs at a clean stop: iterations of 1 ms or more by what
    /// they were doing, and the longest).
    pub engine_stalls: Option<String>,
    /// The samples of inputs due [`WARM_S`] s or more after the senders
    /// started (the process's first second left out): samples, p99, p99.9
    /// and max, us. `None` when the run is shorter.
    pub steady: Option<(u64, u64, u64, u64)>,
}

/// Seconds after the senders' start from which a sample counts as steady
/// ([`Latency::steady`]): the first second of a new engine holds its
/// start-up (the first segments faulted in and locked, the threads
/// started), which a long-running node pays once.
pub const WARM_S: f64 = 1.0;

/// The gap lengths (ms) [`Latency::gaps_over`] counts.
pub const GAP_MS: [u64; 5] = [1, 2, 5, 10, 50];

/// How many of the longest gaps a latency run keeps.
const GAPS_KEPT: usize = 5;

/// Gaps between consecutive output arrivals (see [`Latency::gaps_over`]).
#[derive(Default)]
struct Gaps {
    first: Option<Instant>,
    last: Option<Instant>,
    over: [u64; GAP_MS.len()],
    longest_us: Vec<(u64, u64)>,
}

impl Gaps {
    fn arrived(&mut self, now: Instant) {
        let first = *self.first.get_or_insert(now);
        if let Some(last) = self.last.replace(now) {
            let us = now.saturating_duration_since(last).as_micros() as u64;
            for (n, ms) in self.over.iter_mut().zip(GAP_MS) {
                *n += u64::from(us >= ms * 1000);
            }
            if us >= GAP_MS[0] * 1000 {
                let at = self.longest_us.partition_point(|&g| g.0 >= us);
                let since = now.saturating_duration_since(first).as_micros() as u64;
                self.longest_us.insert(at, (us, since));
                self.longest_us.truncate(GAPS_KEPT);
            }
        }
    }
}

/// Stops the engine cleanly (SIGTERM; SIGKILL after 10 s) and returns the
/// summary of its `stalls` line from `log`.
fn stop_for_stalls(mut engine: Engine, log: &Path) -> Option<String> {
    // SAFETY: kill(2) on our own child's pid, which it still is: it is
    // reaped only below.
    unsafe { libc::kill(engine.0.id() as libc::pid_t, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(_)) = engine.0.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    drop(engine);
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("loop stalls of"))?;
    let (_, summary) = line.split_once("or more: ")?;
    Some(summary.trim().to_string())
}

/// The percentile curve of `h` (see [`Latency::curve`]).
fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let n = h.len();
    if n == 0 {
        return Vec::new();
    }
    let mut c: Vec<(f64, u64)> = (0..)
        .map(|i| 10f64.powf(i as f64 / 10.0))
        .take_while(|x| *x < n as f64)
        .map(|x| (x, h.value_at_quantile(1.0 - 1.0 / x)))
        .collect();
    c.push((n as f64, h.max()));
    c
}

impl core::fmt::Display for Latency {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "p50 {} us, p99 {} us, p99.9 {} us, max {} us ({} samples)",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.samples
        )?;
        let over: Vec<String> = GAP_MS
            .iter()
            .zip(self.gaps_over)
            .map(|(ms, n)| format!(">={ms}ms {n}"))
            .collect();
        let longest: Vec<String> = self
            .longest_gaps_us
            .iter()
            .map(|g| format!("{:.1} at {:.3} s", g.0 as f64 / 1e3, g.1 as f64 / 1e6))
            .collect();
        write!(
            f,
            "\nbench:            output gaps {}; longest ms: {}",
            over.join(", "),
            if longest.is_empty() {
                "none".into()
            } else {
                longest.join(", ")
            }
        )?;
        if let Some((n, p99, p999, max)) = self.steady {
            write!(
                f,
                "\nbench:            after the first {WARM_S} s: p99 {p99} us, p99.9 {p999} us, max {max} us ({n} samples)"
            )?;
        }
        if let Some(s) = &self.engine_stalls {
            write!(
                f,
                "\nbench:            engine stalls (its own account): {s}"
            )?;
        }
        Ok(())
    }
}

/// What a latency run's records go through between the senders and the
/// receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Nothing: the raw pipe.
    Raw,
    /// [`Relay`]: the raw pipe with one more hop, bytes copied both ways.
    Relay,
    /// The engine.
    Engine,
}

/// A byte relay between the senders and the receiver: each connection
/// accepted is copied both ways to a connection of its own to the receiver,
/// by two threads of this process (a blocking read of up to 64 KiB, then
/// a write of what it read). No protocol, no journal, no app: a floor for
/// any design that puts a hop between the sources and the sink, measured
/// on the same machine in the same run as the engine.
struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Result<Relay, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(from) = conn else { continue };
                let Ok(upstream) = TcpStream::connect(to) else {
                    continue;
                };
                let _ = from.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (Ok(from2), Ok(up2)) = (from.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                thread::spawn(move || copy_until_eof(from, up2));
                thread::spawn(move || copy_until_eof(upstream, from2));
            }
        });
        Ok(Relay {
            addr,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until `from` ends or either fails, then closes
/// `to`'s sending side.
fn copy_until_eof(mut from: TcpStream, mut to: TcpStream) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// One paced run at `rate` inputs/s (bounded by `latency_seconds`), through
/// the engine, a [`Relay`] or straight to the receiver.
fn latency(
    cfg: &BenchConfig,
    inputs: &Inputs,
    total: u64,
    outputs: u64,
    rate: f64,
    via: Via,
    tls: Option<&Tls>,
) -> Result<Latency, String> {
    let through_engine = via == Via::Engine;
    let limit = ((rate * cfg.latency_seconds) as u64).clamp(1000, total);
    let mut lat_inputs: Inputs = Vec::new();
    let mut lat_total = 0;
    for (r, c) in inputs {
        let n = (r.len() as u128 * limit as u128 / total as u128) as u64;
        let sub: Vec<Vec<u8>> = (1..=n.max(1)).map(|s| r.get(s).to_vec()).collect();
        lat_total += sub.len() as u64;
        lat_inputs.push((Arc::new(Records::from_vec(sub)), *c));
    }
    let expect = if !through_engine || outputs == total {
        lat_total
    } else {
        // market spread: one decision per order (the second input).
        lat_inputs.get(1).map_or(0, |(r, _)| r.len())
    };
    let prog: Vec<Arc<Progress>> = lat_inputs.iter().map(|_| Arc::default()).collect();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    // The output's trace id names its input (channel, seq), hence its due time.
    let schedule: Vec<(u64, f64, Arc<Progress>)> = lat_inputs
        .iter()
        .zip(&prog)
        .map(|((r, c), p)| {
            let share = (rate * r.len() as f64 / lat_total as f64).max(1.0);
            (*c as u64, share, Arc::clone(p))
        })
        .collect();
    let steady = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let gaps = Arc::new(Mutex::new(Gaps::default()));
    let hook = {
        let hist = Arc::clone(&hist);
        let steady = Arc::clone(&steady);
        let gaps = Arc::clone(&gaps);
        Arc::new(move |_: u32, _: u64, trace: u64| {
            if let Ok(mut g) = gaps.lock() {
                g.arrived(Instant::now());
            }
            let (channel, seq) = split_trace_id(trace);
            let Some((_, r, p)) = schedule.iter().find(|(c, _, _)| *c == channel) else {
                return;
            };
            let Some(start) = p.started.get() else { return };
            let after = seq.saturating_sub(1) as f64 / r;
            let due = *start + Duration::from_secs_f64(after);
            let us = Instant::now().saturating_duration_since(due).as_micros() as u64;
            if let Ok(mut h) = hist.lock() {
                let _ = h.record(us.max(1));
            }
            if after >= WARM_S {
                if let Ok(mut h) = steady.lock() {
                    let _ = h.record(us.max(1));
                }
            }
        })
    };
    let name = match (via, tls.is_some()) {
        (Via::Engine, false) => "latency-engine",
        (Via::Engine, true) => "latency-engine-tls",
        (Via::Relay, _) => "latency-relay",
        (Via::Raw, _) => "latency-raw",
    };
    let mut rc = RecvConfig::new(free_addr()?, &cfg.work_dir.join(format!("{name}.bin")));
    rc.on_record = Some(hook);
    rc.fresh = true;
    rc.tls = tls.map(|t| t.sink.clone());
    let recv = Receiver::start(&rc).map_err(|e| e.to_string())?;
    let (engine, relay, to) = match via {
        Via::Engine => {
            let (e, l) = start_engine(cfg, name, recv.addr(), tls)?;
            (Some(e), None, l)
        }
        Via::Relay => {
            let r = Relay::start(recv.addr())?;
            let at = r.addr;
            (None, Some(r), at)
        }
        Via::Raw => (None, None, recv.addr()),
    };
    // Through the relay, the senders still speak to the receiver, as nodes.
    drive(
        &[to],
        &lat_inputs,
        Some(rate),
        lat_total,
        &recv,
        expect,
        &prog,
        tls,
        via != Via::Engine,
    )?;
    drop(relay);
    let engine_stalls =
        engine.and_then(|e| stop_for_stalls(e, &cfg.work_dir.join(name).join("node.log")));
    discard(cfg, name);
    recv.stop().map_err(|e| e.to_string())?;
    let g = gaps.lock().map_err(|_| "gap lock poisoned".to_string())?;
    let h = hist
        .lock()
        .map_err(|_| "histogram lock poisoned".to_string())?;
    let st = steady
        .lock()
        .map_err(|_| "histogram lock poisoned".to_string())?;
    let steady = (!st.is_empty()).then(|| {
        (
            st.len(),
            st.value_at_quantile(0.99),
            st.value_at_quantile(0.999),
            st.max(),
        )
    });
    Ok(Latency {
        samples: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        curve: curve(&h),
        gaps_over: g.over,
        longest_gaps_us: g.longest_us.clone(),
        engine_stalls,
        steady,
    })
}

/// The `verity` binary beside the running one (both live in target/<profile>/).
pub fn default_engine() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("verity")))
        .unwrap_or_else(|| PathBuf::from("verity"))
}

pub fn default_work_dir(app: &str) -> PathBuf {
    std::env::temp_dir().join(format!("verity-bench-{app}-{}", std::process::id()))
}

pub fn remove_work_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
