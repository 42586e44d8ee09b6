//! `verity-chaos`: the real cluster (real processes, real TCP) under a fault
//! schedule derived from a seed — the Dagon/Spike of Verity. From a scenario
//! (app, workers, shards, messages, rate, durability, fault profile) and a
//! seed it:
//!
//! 1. generates the input and writes `cluster.toml` with a `[faults]` table
//!    (the engine's socket-level shim: drop, duplicate, reorder, delay,
//!    corrupt, close) and timed partitions of worker pairs;
//! 2. starts the receiver (`verity recv`, a process of its own), the workers
//!    (`verity worker`) and the senders;
//! 3. `kill -9`s and restarts workers, and pauses them (SIGSTOP/SIGCONT), at
//!    moments of the run drawn from the seed (fractions of the input ACKed),
//!    and `kill -9`s and restarts the receiver (at fractions of the outputs
//!    in its file: it reopens the file and RESUMEs from it);
//! 4. waits for every output (counted in the received file, across receiver
//!    restarts), stops everything (SIGTERM), runs the
//!    independent checker and `verity replay` of every node's data directory
//!    (its journal re-run offline must regenerate the outputs its logs still
//!    hold, bit for bit), and prints a report: messages, faults of each kind
//!    injected (from the workers' fault logs), kills, pauses, receiver kills,
//!    duplicates absorbed, NACKs, resends, recovery times, replays, then the command
//!    that reproduces the run and, last, `check: PASS ...` or
//!    `check: FAIL ...` (FAIL also when a replay differs).
//!
//! The schedule is a pure function of (scenario, seed); its hash is printed,
//! and the same seed prints the same hash. The engine's own faults follow
//! from the same seed (`[faults] seed`), per connection.

use std::io::{Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// With `--json`, the run's human report goes to stderr and stdout holds
/// only the JSON lines.
pub static HUMAN_TO_STDERR: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A line of the human report: stdout, or stderr under `--json`.
macro_rules! say {
    ($($t:tt)*) => {
        if HUMAN_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!($($t)*)
        } else {
            println!($($t)*)
        }
    };
}

use crate::check::{self, App};
use crate::formats::{InputFormat, ReceivedReader};
use crate::gen::{self, GenConfig, Rng, TextConfig};
use crate::ports::{free_addr, free_run};
use crate::report::chaos::{EventKind, Timeline};
use crate::send::{self, Progress, Records, SendConfig, SendStats};

/// A named set of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// No faults: the baseline.
    None,
    /// Drop, duplicate, reorder and delay frames.
    FlakyNet,
    /// Drop 1% of the frames every worker writes (DATA, ACK, NACK,
    /// HEARTBEAT): what loss costs (selective repeat keeps it small).
    Lossy,
    /// Flip bits (the CRC catches them) and close connections.
    Corrupt,
    /// `kill -9` and restart every worker and the receiver, pause some
    /// workers (SIGSTOP/SIGCONT).
    Crashes,
    /// Cut pairs of workers off from each other for a while.
    Partitions,
    /// Everything above.
    All,
}

impl Profile {
    pub const ALL: [Profile; 7] = [
        Profile::None,
        Profile::FlakyNet,
        Profile::Lossy,
        Profile::Corrupt,
        Profile::Crashes,
        Profile::Partitions,
        Profile::All,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::None => "none",
            Profile::FlakyNet => "flaky-net",
            Profile::Lossy => "lossy",
            Profile::Corrupt => "corrupt",
            Profile::Crashes => "crashes",
            Profile::Partitions => "partitions",
            Profile::All => "all",
        }
    }

    fn net(self) -> bool {
        matches!(self, Profile::FlakyNet | Profile::All)
    }
    fn corrupt(self) -> bool {
        matches!(self, Profile::Corrupt | Profile::All)
    }
    fn crashes(self) -> bool {
        matches!(self, Profile::Crashes | Profile::All)
    }
    fn partitions(self) -> bool {
        matches!(self, Profile::Partitions | Profile::All)
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown profile {s:?} (one of: {})",
                    Profile::ALL.map(|p| p.name()).join(", ")
                )
            })
    }
}

/// Where the outputs go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SinkTarget {
    /// `verity recv`, into a received file.
    #[default]
    File,
    /// `verity sink-postgres`, into PostgreSQL: a private server in the
    /// run's directory (`url` `None`; the schedule then also restarts it),
    /// or the database at `url`.
    Postgres { url: Option<String> },
}

impl SinkTarget {
    /// `file` or `postgres`, with the database's `url` when one is given.
    pub fn parse(name: &str, url: Option<String>) -> Result<SinkTarget, String> {
        match (name, url) {
            ("file", None) => Ok(SinkTarget::File),
            ("file", Some(_)) => Err("a database URL needs --sink postgres".into()),
            ("postgres", url) => Ok(SinkTarget::Postgres { url }),
            (other, _) => Err(format!("unknown sink {other:?} (file or postgres)")),
        }
    }

    fn postgres(&self) -> bool {
        matches!(self, SinkTarget::Postgres { .. })
    }
}

/// A run's inputs written by its caller (an app `verity-check` does not
/// know): the files in source order with their channels and formats, and
/// how many outputs they make (the run waits for that many).
#[derive(Debug, Clone)]
pub struct GeneratedInputs {
    pub files: Vec<(PathBuf, InputFormat, u32)>,
    pub expected_outputs: u64,
}

/// Writes a run's inputs into the directory it is given, from the seed and
/// the message count (a user binary's demo: the app's registered generator).
pub type GenerateFn = dyn Fn(&Path, u64, u64) -> Result<GeneratedInputs, String> + Send + Sync;

/// See [`GenerateFn`].
#[derive(Clone)]
pub struct InputGenerator(pub Arc<GenerateFn>);

impl core::fmt::Debug for InputGenerator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("InputGenerator")
    }
}

/// An app's own oracle over the received file (`Ok(summary)` or `Err(what
/// is wrong)`), judged on top of the generic oracle.
#[derive(Clone)]
pub struct ReceivedOracle(pub Arc<JudgeFn>);

/// See [`ReceivedOracle`]: the received file's path to a verdict.
pub type JudgeFn = dyn Fn(&Path) -> Result<String, String> + Send + Sync;

impl core::fmt::Debug for ReceivedOracle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ReceivedOracle")
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub app: String,
    pub workers: u32,
    pub shards: u32,
    pub messages: u64,
    /// Records per second per source (`None`: as fast as the cluster takes).
    pub rate: Option<u64>,
    /// `process` or `fsync`.
    pub durability: String,
    pub profile: Profile,
    pub seed: u64,
    /// Kills instead of the profile's (each worker first, then drawn).
    pub kills: Option<u32>,
    /// Receiver kills instead of the profile's.
    pub receiver_kills: Option<u32>,
    /// Per-frame drop, duplicate and reorder probabilities (ppm) instead
    /// of the profile's.
    pub drop: Option<u32>,
    pub duplicate: Option<u32>,
    pub reorder: Option<u32>,
    /// The receiver: a file, or PostgreSQL.
    pub sink: SinkTarget,
    /// The inputs of an app the tools' generators do not know (`None`: the
    /// tools generate them).
    pub inputs: Option<InputGenerator>,
    /// Source channels of such an app.
    pub source_count: Option<u32>,
    /// Such an app's own oracle.
    pub app_oracle: Option<ReceivedOracle>,
    /// The `verity` engine binary.
    pub engine: PathBuf,
    /// Work directory (a fresh temporary one when `None`).
    pub dir: Option<PathBuf>,
    /// Keep the work directory after a PASS.
    pub keep: bool,
    /// The command line that runs this scenario, without its arguments
    /// (for the reproduction line).
    pub command: String,
}

impl Scenario {
    /// How many source channels the app reads (market spread: NBBO and
    /// orders; the others one).
    pub fn sources(&self) -> u32 {
        if let Some(n) = self.source_count {
            n
        } else if self.app == "market-spread" {
            2
        } else {
            1
        }
    }

    pub fn new(engine: PathBuf) -> Scenario {
        Scenario {
            app: "market-spread".into(),
            workers: 3,
            shards: 1,
            messages: 200_000,
            rate: None,
            durability: "process".into(),
            profile: Profile::All,
            seed: 1,
            kills: None,
            receiver_kills: None,
            drop: None,
            duplicate: None,
            reorder: None,
            sink: SinkTarget::File,
            inputs: None,
            source_count: None,
            app_oracle: None,
            engine,
            dir: None,
            keep: false,
            // verity-chaos is in verity-tools and needs the engine beside
            // it: this works as printed from the workspace root.
            command: "cargo build --release --workspace && ./target/release/verity-chaos".into(),
        }
    }

    /// The arguments that reproduce this scenario (after `command`).
    pub fn args(&self) -> String {
        let mut a = format!(
            "--app {} --workers {} --messages {} --profile {} --seed {}",
            self.app,
            self.workers,
            self.messages,
            self.profile.name(),
            self.seed
        );
        if self.shards != 1 {
            a.push_str(&format!(" --shards {}", self.shards));
        }
        if let Some(k) = self.kills {
            a.push_str(&format!(" --kills {k}"));
        }
        if let Some(k) = self.receiver_kills {
            a.push_str(&format!(" --receiver-kills {k}"));
        }
        for (flag, ppm) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if let Some(ppm) = ppm {
                a.push_str(&format!(" --{flag} {}%", ppm as f64 / 1e4));
            }
        }
        if let Some(r) = self.rate {
            a.push_str(&format!(" --rate {r}"));
        }
        if self.durability != "process" {
            a.push_str(&format!(" --durability {}", self.durability));
        }
        match &self.sink {
            SinkTarget::File => {}
            SinkTarget::Postgres { url: None } => a.push_str(" --sink postgres"),
            SinkTarget::Postgres { url: Some(u) } => {
                a.push_str(&format!(" --sink postgres --pg-url {u:?}"))
            }
        }
        a
    }
}

/// Per-frame fault probabilities, parts per million.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameFaults {
    pub drop: u32,
    pub duplicate: u32,
    pub reorder: u32,
    pub delay: u32,
    pub delay_max_ms: u64,
    pub corrupt: u32,
    pub close: u32,
}

/// Everything a run will do to the cluster, drawn from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub frames: FrameFaults,
    /// (input records ACKed, worker): `kill -9`, then restart.
    pub kills: Vec<(u64, usize)>,
    /// (input records ACKed, worker, milliseconds): SIGSTOP, then SIGCONT.
    pub pauses: Vec<(u64, usize, u64)>,
    /// (ms after the senders start, duration ms, worker a, worker b).
    pub partitions: Vec<(u64, u64, usize, usize)>,
    /// Output records in the received file: `kill -9` the receiver, then
    /// restart it on the same file.
    pub receiver_kills: Vec<u64>,
    /// (input records ACKed, source, worker): the sender of that source
    /// gives up on its connection and fails over to that worker (not the
    /// channel's home), as an at-least-once sender does when its worker
    /// seems gone; the worker redirects it home (`NOT_HOME`).
    pub failovers: Vec<(u64, usize, usize)>,
    /// PostgreSQL sink: at the first receiver kill, (worker, ms): while
    /// the sink is down that worker is `kill -9`ed and restarted, and the
    /// sink stays down that long.
    pub sink_outage: Option<(usize, u64)>,
    /// Private PostgreSQL server: output rows in the table at which it is
    /// stopped as by a crash (`pg_ctl stop -m immediate`) and started again.
    pub db_restarts: Vec<u64>,
}

impl Schedule {
    /// The schedule of `s` for `total` input records making `outputs`
    /// output records.
    pub fn draw(s: &Scenario, total: u64, outputs: u64) -> Schedule {
        let mut r = Rng::new(s.seed ^ 0x6368_616f_735f_7631);
        let p = s.profile;
        let workers = s.workers.max(1) as usize;
        // Per-frame probabilities scaled to the run's size: a few dozen
        // faults of each kind per run (an input crosses up to two
        // connections, to the node it is sent to and to its owner; an
        // output one, to the sink; ACKs besides).
        let frames_total = (2 * total + outputs).max(1);
        let per = |r: &mut Rng, lo: u64, hi: u64| -> u32 {
            let events = lo + r.below(hi - lo + 1);
            ((events * 1_000_000) / frames_total).clamp(1, 5_000) as u32
        };
        let lossy = if p == Profile::Lossy { 10_000 } else { 0 };
        let drop = if p.net() { per(&mut r, 20, 60) } else { lossy };
        let duplicate = if p.net() { per(&mut r, 30, 90) } else { 0 };
        let reorder = if p.net() { per(&mut r, 30, 90) } else { 0 };
        let frames = FrameFaults {
            drop: s.drop.unwrap_or(drop),
            duplicate: s.duplicate.unwrap_or(duplicate),
            reorder: s.reorder.unwrap_or(reorder),
            delay: if p.net() { per(&mut r, 30, 90) } else { 0 },
            delay_max_ms: 5 + r.below(25),
            corrupt: if p.corrupt() { per(&mut r, 5, 15) } else { 0 },
            close: if p.corrupt() { per(&mut r, 3, 8) } else { 0 },
        };
        let n_kills = match s.kills {
            Some(k) => k as usize,
            None if p.crashes() => workers.max(3),
            None => 0,
        };
        // Every worker once (in a seeded order) while kills last, then drawn.
        let mut order: Vec<usize> = (0..workers).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, r.below(i as u64 + 1) as usize);
        }
        let at = |r: &mut Rng| total / 20 + r.below((total * 9 / 10).max(1));
        let mut kills: Vec<(u64, usize)> = (0..n_kills)
            .map(|i| {
                let w = order
                    .get(i)
                    .copied()
                    .unwrap_or_else(|| r.below(workers as u64) as usize);
                (at(&mut r), w)
            })
            .collect();
        kills.sort_unstable();
        let mut pauses = Vec::new();
        if p.crashes() {
            for _ in 0..2 {
                let w = r.below(workers as u64) as usize;
                pauses.push((at(&mut r), w, 100 + r.below(600)));
            }
            pauses.sort_unstable();
        }
        let mut partitions = Vec::new();
        if p.partitions() && workers >= 2 {
            for _ in 0..2 {
                let a = r.below(workers as u64) as usize;
                let b = (a + 1 + r.below(workers as u64 - 1) as usize) % workers;
                // Early in the run (runs of 10^5..10^6 inputs take 1-3 s).
                partitions.push((r.below(600), 200 + r.below(800), a, b));
            }
            partitions.sort_unstable();
        }
        // Drawn last, so the draws above stay what they were before
        // receiver kills existed.
        let n_receiver_kills = match s.receiver_kills {
            Some(k) => k as usize,
            None if p.crashes() => 1 + r.below(2) as usize,
            None => 0,
        };
        let mut receiver_kills: Vec<u64> = (0..n_receiver_kills)
            .map(|_| outputs / 20 + r.below((outputs * 9 / 10).max(1)))
            .collect();
        receiver_kills.sort_unstable();
        // Drawn after the receiver kills, likewise.
        let mut failovers = Vec::new();
        if p.crashes() && workers >= 2 {
            let sources = s.sources().max(1) as u64;
            let source = r.below(sources) as usize;
            // Any worker but the channel's home (channel c at (c - 1) mod W).
            let home = source % workers;
            let to = (home + 1 + r.below(workers as u64 - 1) as usize) % workers;
            failovers.push((at(&mut r), source, to));
        }
        // Drawn after the failovers, likewise.
        let mut sink_outage = None;
        let mut db_restarts = Vec::new();
        if p.crashes() && s.sink.postgres() {
            if !receiver_kills.is_empty() {
                sink_outage = Some((r.below(workers as u64) as usize, 200 + r.below(600)));
            }
            if s.sink == (SinkTarget::Postgres { url: None }) {
                db_restarts.push(outputs / 20 + r.below((outputs * 9 / 10).max(1)));
            }
        }
        Schedule {
            frames,
            kills,
            pauses,
            partitions,
            receiver_kills,
            failovers,
            sink_outage,
            db_restarts,
        }
    }

    /// FNV-1a of the schedule's canonical text: the same seed (and
    /// scenario) gives the same hash.
    pub fn hash(&self) -> u64 {
        verity_wire::fnv::fnv1a64(format!("{self:?}").as_bytes())
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub passed: bool,
    /// `check: PASS ...` or `check: FAIL ...`.
    pub last_line: String,
    pub schedule_hash: u64,
    /// Outputs the oracle expects.
    pub expected: u64,
    /// Outputs in the received file at each receiver kill.
    pub receiver_kills_at: Vec<u64>,
    /// Rows in the table at each restart of the private PostgreSQL server.
    pub db_restarts_at: Vec<u64>,
    /// The worker killed while the sink was down, and for how long it was.
    pub sink_outage: Option<(usize, u64)>,
    /// Input and output counts over the run, and what it did when
    /// (`--report`).
    pub timeline: Timeline,
}

/// A source's sender: its records, its configuration and its stop flag
/// (a failover stops it and starts another).
struct Source {
    records: Arc<Records>,
    cfg: SendConfig,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl Source {
    fn spawn(&self) -> thread::JoinHandle<Result<SendStats, String>> {
        let (cfg, recs) = (self.cfg.clone(), Arc::clone(&self.records));
        let (progress, stop) = (Arc::clone(&self.progress), Arc::clone(&self.stop));
        thread::spawn(move || send::send(&cfg, &recs, &progress, &stop).map_err(|e| e.to_string()))
    }

    /// A finished thread, to stand in while a sender is replaced.
    fn spawn_nothing(&self) -> thread::JoinHandle<Result<SendStats, String>> {
        thread::spawn(|| Ok(SendStats::default()))
    }
}

/// Stops every sender.
fn stop_senders(sources: &[Source]) {
    for s in sources {
        s.stop.store(true, Ordering::SeqCst);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Moves the restarted workers of `recovering` (worker, killed at, its
/// recoveries then) that have recovered since into `recovery_ms`.
fn note_recoveries(
    recovering: &mut Vec<(usize, Instant, usize)>,
    workers: &[Worker],
    recovery_ms: &mut Vec<u64>,
    timeline: &mut Timeline,
) {
    recovering.retain(|&(w, at, before)| {
        if workers[w].recoveries() > before {
            let ms = at.elapsed().as_millis() as u64;
            recovery_ms.push(ms);
            let what = format!("{} recovered {ms} ms after its kill", workers[w].name);
            timeline.mark(EventKind::Recovery, at, Some(Instant::now()), what);
            false
        } else {
            true
        }
    });
}

/// `verity replay` of one node of a stopped worker: (identical, a short
/// summary, the full output).
/// `<engine> oracle` over the run (every node's journal replayed, judged
/// against the received file): its verdict and its coverage line.
fn generic_oracle(
    s: &Scenario,
    dir: &Path,
    received: &Path,
    sent: &[(u32, u64)],
) -> Result<(check::CheckReport, String), String> {
    let mut cmd = Command::new(&s.engine);
    cmd.args(["oracle", "--config"])
        .arg(dir.join("cluster.toml"))
        .arg("--received")
        .arg(received);
    for (c, n) in sent {
        cmd.args(["--sent", &format!("{c}={n}")]);
    }
    let o = cmd
        .output()
        .map_err(|e| format!("{} oracle: {e}", s.engine.display()))?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if !matches!(o.status.code(), Some(0 | 1)) {
        return Err(format!(
            "{} oracle: {}: {}{}",
            s.engine.display(),
            o.status,
            text,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let mut lines = text.lines();
    let summary = lines.next().unwrap_or_default();
    let field = |k: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut r = check::CheckReport::new(&s.app);
    r.expected = field("expected");
    r.received = field("received");
    r.lost = field("lost");
    r.duplicated = field("duplicated");
    r.reordered = field("reordered");
    r.wrong = field("wrong");
    r.unexpected = field("unexpected");
    r.ok = r
        .received
        .saturating_sub(r.duplicated + r.wrong + r.unexpected);
    let mut coverage = String::new();
    for l in lines {
        match l.strip_prefix("  ") {
            Some(p) => r.first_problems.push(p.to_string()),
            None => coverage = l.to_string(),
        }
    }
    if o.status.code() == Some(1) && r.passed() {
        // A FAIL whose counts did not parse is still a FAIL.
        r.unexpected = r.unexpected.max(1);
    }
    Ok((r, coverage))
}

fn replay_node(w: &Worker, shard: u32) -> (bool, String, String) {
    let out = Command::new(&w.engine)
        .arg("replay")
        .arg("--config")
        .arg(&w.config)
        .args(["--name", &w.name, "--shard", &shard.to_string()])
        .output();
    let who = format!("{}/{shard}", w.name);
    match out {
        Err(e) => (false, format!("{who} not run"), e.to_string()),
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            // "R frames regenerated; N identical, ..." per outbound log:
            // frames still in the logs (not dropped after their ACK).
            let identical: u64 = text
                .lines()
                .filter_map(|l| l.split("frames regenerated; ").nth(1))
                .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
                .sum();
            let ok = o.status.success() && text.contains("replay: IDENTICAL");
            let verdict = if ok { "identical" } else { "DIFFERENT" };
            (
                ok,
                format!("{who} {verdict} ({identical} frames compared)"),
                text,
            )
        }
    }
}

/// A child process of the run (a worker, the receiver): its log file
/// (every incarnation's stderr appended) and how often it was started.
struct Proc {
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    fn new(log: PathBuf) -> Proc {
        Proc {
            log,
            child: None,
            starts: 0,
        }
    }

    /// Starts `cmd` with stderr (and, with `stdout`, stdout) appended to
    /// the log.
    fn spawn(&mut self, mut cmd: Command, stdout: bool, what: &str) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let out = match stdout {
            true => Stdio::from(
                log.try_clone()
                    .map_err(|e| format!("{}: {e}", self.log.display()))?,
            ),
            false => Stdio::null(),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    fn signal(&self, sig: libc_signal::Signal) {
        if let Some(c) = &self.child {
            libc_signal::send(c.id(), sig);
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (after SIGCONT, in case it is paused) and wait: true on
    /// exit 0.
    fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        libc_signal::send(c.id(), libc_signal::Signal::Cont);
        libc_signal::send(c.id(), libc_signal::Signal::Term);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return false;
                }
            }
        }
    }

    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(libc_signal::Signal::Cont);
        self.kill9();
    }
}

/// One worker process.
struct Worker {
    name: String,
    engine: PathBuf,
    config: PathBuf,
    sources: SocketAddr,
    proc: Proc,
}

impl Worker {
    fn start(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.engine);
        // JSON Lines: the run reads the worker's events (recovered,
        // stopped) by their fields, not by scraping its text.
        cmd.args(["worker", "--log-format", "json", "--config"])
            .arg(&self.config)
            .args(["--name", &self.name]);
        let what = self.engine.display().to_string();
        self.proc.spawn(cmd, false, &what)
    }

    /// How many times it finished recovery (its `recovered` events).
    fn recoveries(&self) -> usize {
        let log = self.proc.log_text();
        crate::events(&log, "recovered").count()
    }
}

/// The receiver: `<engine> recv` (or `<engine> sink-postgres run`), a
/// process of its own so that it can be `kill -9`ed and restarted on the
/// same file (table) mid-run.
struct RecvProc {
    engine: PathBuf,
    listen: SocketAddr,
    /// `recv`'s file, or the sink's config file.
    out: PathBuf,
    postgres: bool,
    durability: String,
    /// Its stdout (the stats line) and stderr.
    proc: Proc,
}

impl RecvProc {
    /// Starts it (the first time with `--fresh`: a `--dir` may hold an
    /// earlier run's file) and waits until it listens.
    fn start(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.engine);
        if self.postgres {
            cmd.args(["sink-postgres", "run", "--config"])
                .arg(&self.out);
        } else {
            cmd.args(["recv", "--listen", &self.listen.to_string(), "--out"])
                .arg(&self.out)
                .args(["--durability", &self.durability]);
        }
        if self.proc.starts == 0 {
            cmd.arg("--fresh");
        }
        let what = format!(
            "{} {}",
            self.engine.display(),
            if self.postgres {
                "sink-postgres"
            } else {
                "recv"
            }
        );
        self.proc.spawn(cmd, true, &what)?;
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.listen).is_err() {
            if let Some(status) = self.proc.exited() {
                return Err(format!(
                    "the receiver exited at start ({status}): {}",
                    self.proc.log_text()
                ));
            }
            if Instant::now() > until {
                return Err(format!(
                    "the receiver did not start: {}",
                    self.proc.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Sum of a `key=N` field over the stats lines of the incarnations that
    /// stopped cleanly (a killed one prints none), and how many there are.
    fn stats_field(&self, key: &str) -> (u64, usize) {
        let text = self.proc.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(": records=") && l.contains(" duplicates="))
            .collect();
        let sum = lines
            .iter()
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{key}=")))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum();
        (sum, lines.len())
    }
}

/// Counts the records in the received file as the receiver appends them:
/// what is in the file, not what the receiver says, and the same across its
/// restarts. A record not yet whole is counted at a later poll; a file that
/// shrank (only `--fresh` does that) is counted again from its start.
struct Follower {
    path: PathBuf,
    offset: u64,
    records: u64,
}

impl Follower {
    fn new(path: &Path) -> Follower {
        Follower {
            path: path.to_path_buf(),
            offset: 0,
            records: 0,
        }
    }

    fn poll(&mut self) -> u64 {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self.records;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            (self.offset, self.records) = (0, 0);
        }
        let mut r = if self.offset == 0 {
            ReceivedReader::new(f, &self.path)
        } else {
            if f.seek(SeekFrom::Start(self.offset)).is_err() {
                return self.records;
            }
            ReceivedReader::resume(f, &self.path, self.offset)
        };
        // Up to the end, or to a record still being written.
        while let Ok(Some(_)) = r.read_record() {
            self.records += 1;
        }
        self.offset = r.offset();
        self.records
    }
}

/// Counts the rows in the sink's table: the sum of its watermarks (a row is
/// in the table exactly when its channel's watermark covers it). While the
/// database does not answer, the last count stands.
struct TableCount {
    cfg: crate::pg::SinkConfig,
    db: Option<postgres::Client>,
    records: u64,
}

impl TableCount {
    fn poll(&mut self) -> u64 {
        if self.db.as_ref().is_none_or(|d| d.is_closed()) {
            self.db = crate::pg::connect(&self.cfg).ok();
        }
        let sql = format!(
            "SELECT coalesce(sum(delivered), 0)::bigint FROM {}",
            self.cfg.watermark_table.sql()
        );
        match self.db.as_mut().map(|d| d.query_one(&sql, &[])) {
            Some(Ok(row)) => self.records = row.get::<_, i64>(0) as u64,
            Some(Err(_)) => self.db = None,
            None => {}
        }
        self.records
    }
}

/// What the receiver holds: records in its file, or rows in its table.
enum Outputs {
    File(Follower),
    Table(Box<TableCount>),
}

impl Outputs {
    fn poll(&mut self) -> u64 {
        match self {
            Outputs::File(f) => f.poll(),
            Outputs::Table(t) => t.poll(),
        }
    }

    fn records(&self) -> u64 {
        match self {
            Outputs::File(f) => f.records,
            Outputs::Table(t) => t.records,
        }
    }
}

/// The private PostgreSQL server's restarts: once the table holds the next
/// of the scheduled counts (`now`: whatever it holds), it is stopped as by
/// a crash and started again.
fn db_step(
    server: &mut Option<crate::pg::server::LocalServer>,
    outputs: &mut Outputs,
    done: &mut Vec<u64>,
    at: &[u64],
    expected: u64,
    now: bool,
    timeline: &mut Timeline,
) -> Result<(), String> {
    let Some(srv) = server.as_mut() else {
        return Ok(());
    };
    let Some(&due) = at.get(done.len()) else {
        return Ok(());
    };
    let n = outputs.poll();
    if n >= due || now {
        let stopped = Instant::now();
        srv.stop("immediate")?;
        thread::sleep(Duration::from_millis(300));
        srv.restart()?;
        done.push(n);
        let what = format!("PostgreSQL stopped as by a crash at {n} outputs, restarted");
        timeline.mark(EventKind::DbRestart, stopped, None, what);
        say!(
            "chaos: PostgreSQL stopped as by a crash (#{}) at {n}/{expected} outputs in the table; restarted",
            done.len()
        );
    }
    Ok(())
}

/// Kills -9 and restarts the receiver once its file holds the next of the
/// scheduled output counts `at` (`now`: whatever it holds); returns the
/// outputs in the file. Both kills go on the timeline.
/// During the first, with `outage` (worker, ms), that worker is `kill -9`ed
/// and restarted while the receiver is down, and the receiver stays down
/// that long.
#[allow(clippy::too_many_arguments)]
fn receiver_step(
    receiver: &mut RecvProc,
    outputs: &mut Outputs,
    kills_at: &mut Vec<u64>,
    at: &[u64],
    expected: u64,
    now: bool,
    outage: Option<(usize, u64)>,
    workers: &mut [Worker],
    recovering: &mut Vec<(usize, Instant, usize)>,
    timeline: &mut Timeline,
) -> Result<u64, String> {
    let n = outputs.poll();
    if let Some(&due) = at.get(kills_at.len()) {
        if n >= due || now {
            let what = format!("kill -9 of the receiver at {n}/{expected} outputs");
            timeline.mark(EventKind::ReceiverKill, Instant::now(), None, what);
            receiver.proc.kill9();
            let mut during = String::new();
            if let (Some((w, ms)), true) = (outage, kills_at.is_empty()) {
                let before = workers[w].recoveries();
                let what = format!("kill -9 of {} while the sink is down", workers[w].name);
                timeline.mark(EventKind::Kill, Instant::now(), None, what);
                workers[w].proc.kill9();
                workers[w].start()?;
                recovering.push((w, Instant::now(), before));
                thread::sleep(Duration::from_millis(ms));
                during = format!(
                    "; while it was down for {ms} ms, kill -9 of {} and a restart",
                    workers[w].name
                );
            }
            receiver.start()?;
            kills_at.push(n);
            say!(
                "chaos: kill -9 #{} of the receiver at {n}/{expected} outputs in its {}{during}; restarted",
                kills_at.len(),
                if receiver.postgres { "table" } else { "file" }
            );
        }
    }
    Ok(n)
}

/// Signals to the run's children: kill(2) with libc's signal numbers (a
/// direct syscall keeps the timing tight).
mod libc_signal {
    #[derive(Clone, Copy)]
    pub enum Signal {
        Stop,
        Cont,
        Term,
    }

    pub fn send(pid: u32, sig: Signal) {
        let n = match sig {
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Term => libc::SIGTERM,
        };
        // SAFETY: kill(2) with our own child's pid and a valid signal number;
        // no memory is passed.
        unsafe {
            libc::kill(pid as libc::pid_t, n);
        }
    }
}

/// Input files of an app: (file, format, channel).
fn generate(s: &Scenario, dir: &Path) -> Result<Vec<(PathBuf, InputFormat, u32)>, String> {
    let data = gen::data_dir(None);
    let e = |e: gen::GenError| e.to_string();
    Ok(match s.app.as_str() {
        "market-spread" => {
            let cfg = GenConfig::from_messages(s.seed, s.messages, data);
            gen::market_spread(&cfg, dir).map_err(e)?;
            vec![
                (dir.join("nbbo.msg"), InputFormat::Fixish, 1),
                (dir.join("orders.msg"), InputFormat::Fixish, 2),
            ]
        }
        "doubler" | "sequence-window" => {
            let f = dir.join("input.u64");
            gen::u64_counters(s.messages, &f).map_err(e)?;
            vec![(f, InputFormat::U64, 1)]
        }
        "word-count" => {
            let f = dir.join("input.txt");
            let cfg = TextConfig {
                seed: s.seed,
                lines: s.messages,
                data_dir: data,
            };
            gen::text(&cfg, &f).map_err(e)?;
            vec![(f, InputFormat::Lines, 1)]
        }
        other => return Err(format!("unknown app {other:?}")),
    })
}

/// Counts of the fault log lines by decision, over every worker.
fn fault_counts(dirs: &[PathBuf]) -> Vec<(&'static str, u64)> {
    let kinds = [
        "drop",
        "duplicate",
        "reorder",
        "delay",
        "corrupt",
        "close",
        "partition",
    ];
    let mut counts = vec![0u64; kinds.len()];
    for d in dirs {
        for entry in walk_fault_logs(d) {
            let text = std::fs::read_to_string(entry).unwrap_or_default();
            for line in text.lines() {
                for (i, k) in kinds.iter().enumerate() {
                    let hit = if *k == "partition" {
                        line.contains(" partition cuts ")
                    } else {
                        line.ends_with(&format!(" {k}"))
                    };
                    if hit {
                        counts[i] += 1;
                    }
                }
            }
        }
    }
    kinds.into_iter().zip(counts).collect()
}

/// `faults.log` of a worker's data directory and of its shards.
fn walk_fault_logs(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![dir.join("faults.log")];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("shard-") {
                v.push(e.path().join("faults.log"));
            }
        }
    }
    v.into_iter().filter(|p| p.exists()).collect()
}

/// Sum of field `key` over every worker's `stopped` events (a clean stop).
fn sum_field(logs: &[String], key: &str) -> u64 {
    logs.iter()
        .flat_map(|t| crate::events(t, "stopped"))
        .filter_map(|l| crate::json_field(l, key)?.parse::<u64>().ok())
        .sum()
}

/// Runs the scenario; prints progress and the report to stdout.
/// A share of frames as parts per million: `1%` or `0.01` is 10 000;
/// 0 to 100%.
pub fn parse_share(s: &str) -> Result<u32, String> {
    let (text, scale) = match s.strip_suffix('%') {
        Some(p) => (p, 1e4),
        None => (s, 1e6),
    };
    let v: f64 = text.trim().parse().map_err(|_| {
        format!("{s:?} is not a share: write a percentage (1%) or a fraction (0.01)")
    })?;
    let ppm = (v * scale).round();
    if !(0.0..=1e6).contains(&ppm) {
        return Err(format!("{s:?} is not between 0 and 100%"));
    }
    Ok(ppm as u32)
}

pub fn run(s: &Scenario) -> Result<Outcome, String> {
    let started = Instant::now();
    // The app's own oracle in verity-check, when it has one; the generic
    // oracle judges every run.
    let app: Option<App> = s.app.parse().ok();
    let dir = match &s.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "verity-chaos-{}-{}-{}-{}",
            s.app,
            s.profile.name(),
            s.seed,
            std::process::id()
        )),
    };
    if s.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (inputs, generated_outputs) = match (&s.inputs, app) {
        (Some(g), _) => {
            let g = (g.0)(&dir, s.seed, s.messages)?;
            (g.files, Some(g.expected_outputs))
        }
        (None, Some(_)) => (generate(s, &dir)?, None),
        (None, None) => {
            return Err(format!(
                "app {:?}: the tools have no generator for it; its binary's demo generates its inputs (Registry::with_inputs)",
                s.app
            ))
        }
    };
    let mut records = Vec::new();
    let mut total = 0;
    for (path, format, channel) in &inputs {
        let r = Records::load(*format, path).map_err(|e| e.to_string())?;
        total += r.len();
        records.push((r, *channel));
    }
    // The expected output count: the generator's, or the oracle's from the
    // inputs alone.
    let input_paths: Vec<&PathBuf> = inputs.iter().map(|(p, _, _)| p).collect();
    let expected = match (generated_outputs, app) {
        (Some(n), _) => n,
        (None, Some(app)) => {
            let empty = dir.join("empty.bin");
            crate::formats::ReceivedWriter::create(&empty)
                .and_then(|w| w.finish().map(|_| ()))
                .map_err(|e| e.to_string())?;
            check::check(app, &input_paths, &empty)
                .map_err(|e| e.to_string())?
                .expected
        }
        (None, None) => 0,
    };
    let schedule = Schedule::draw(s, total, expected);
    say!(
        "chaos: app={} workers={} shards={} messages={total} profile={} seed={} durability={} schedule={:016x} dir={}",
        s.app,
        s.workers,
        s.shards,
        s.profile.name(),
        s.seed,
        s.durability,
        schedule.hash(),
        dir.display()
    );
    let outcome = run_with(
        s, &schedule, app, &dir, &inputs, records, total, expected, started,
    )?;
    if !s.keep && s.dir.is_none() && outcome.passed {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
fn run_with(
    s: &Scenario,
    schedule: &Schedule,
    app: Option<App>,
    dir: &Path,
    inputs: &[(PathBuf, InputFormat, u32)],
    records: Vec<(Records, u32)>,
    total: u64,
    expected: u64,
    started: Instant,
) -> Result<Outcome, String> {
    let received_path = dir.join("received.bin");
    let listen = free_addr()?;
    // PostgreSQL: a private server in the run's directory unless a URL is
    // given, and the sink's config file.
    let mut db_server = None;
    let sink_cfg = match &s.sink {
        SinkTarget::File => None,
        SinkTarget::Postgres { url } => {
            let url = match url {
                Some(u) => u.clone(),
                None => {
                    let srv = crate::pg::server::LocalServer::start(&dir.join("pg"), free_addr()?)?;
                    let u = srv.url();
                    db_server = Some(srv);
                    u
                }
            };
            let text = format!(
                "listen = \"{listen}\"\napp = {:?}\n\n[postgres]\nurl = {url:?}\ntable = \"verity_chaos_outputs\"\nretry_initial_ms = 20\nretry_max_ms = 500\n",
                s.app
            );
            let path = dir.join("sink.toml");
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Some((path.clone(), crate::pg::SinkConfig::parse(&text, &path)?))
        }
    };
    let mut receiver = RecvProc {
        engine: s.engine.clone(),
        listen,
        out: sink_cfg
            .as_ref()
            .map_or(received_path.clone(), |(p, _)| p.clone()),
        postgres: sink_cfg.is_some(),
        durability: s.durability.clone(),
        proc: Proc::new(dir.join("recv.log")),
    };
    receiver.start()?;
    let mut outputs = match &sink_cfg {
        None => Outputs::File(Follower::new(&received_path)),
        Some((_, cfg)) => Outputs::Table(Box::new(TableCount {
            cfg: cfg.clone(),
            db: None,
            records: 0,
        })),
    };
    let mut receiver_kills_at: Vec<u64> = Vec::new();
    let mut db_restarts_at: Vec<u64> = Vec::new();

    // cluster.toml: the workers, the faults, the partitions (wall clock,
    // from when the senders will start).
    crate::client_auth::write_secret(
        &dir.join("cluster.secret"),
        format!("chaos-secret-{:016x}", s.seed),
    )
    .map_err(|e| e.to_string())?;
    let f = schedule.frames;
    let mut toml = format!(
        "[cluster]\nid = 1\napp = {:?}\npartitions = 4096\nsecret_file = \"cluster.secret\"\nsink = \"{}\"\ndurability = {:?}\nsnapshot_interval_records = {}\n\n[limits]\njournal_segment_bytes = {}\nresend_timeout_ms = 300\n",
        s.app,
        receiver.listen,
        s.durability,
        (total / 8).max(1000),
        16u64 << 20,
    );
    let mut workers = Vec::new();
    let mut data_dirs = Vec::new();
    for i in 1..=s.workers.max(1) {
        let (address, sources) = (free_run(s.shards.max(1))?, free_addr()?);
        toml.push_str(&format!(
            "\n[[worker]]\nname = \"w{i}\"\naddress = \"{address}\"\nsources = \"{sources}\"\nshards = {}\ndata_dir = \"w{i}\"\n",
            s.shards.max(1)
        ));
        data_dirs.push(dir.join(format!("w{i}")));
        workers.push(Worker {
            name: format!("w{i}"),
            engine: s.engine.clone(),
            config: dir.join("cluster.toml"),
            sources,
            proc: Proc::new(dir.join(format!("w{i}.log"))),
        });
    }
    let any_frames = f.drop + f.duplicate + f.reorder + f.delay + f.corrupt + f.close > 0;
    // Partition windows count from about when the senders start.
    let t0 = unix_ms() + 200;
    if any_frames || !schedule.partitions.is_empty() {
        toml.push_str(&format!(
            "\n[faults]\nseed = {}\ndrop = {}\nduplicate = {}\nreorder = {}\ndelay = {}\ndelay_max_ms = {}\ncorrupt = {}\nclose = {}\n",
            s.seed,
            f.drop as f64 / 1e6,
            f.duplicate as f64 / 1e6,
            f.reorder as f64 / 1e6,
            f.delay as f64 / 1e6,
            f.delay_max_ms,
            f.corrupt as f64 / 1e6,
            f.close as f64 / 1e6,
        ));
        for &(at, dur, a, b) in &schedule.partitions {
            toml.push_str(&format!(
                "\n[[faults.partition]]\na = \"w{}\"\nb = \"w{}\"\nstart_unix_ms = {}\nend_unix_ms = {}\n",
                a + 1,
                b + 1,
                t0 + at,
                t0 + at + dur
            ));
        }
    }
    std::fs::write(dir.join("cluster.toml"), toml).map_err(|e| e.to_string())?;
    for w in &mut workers {
        w.start()?;
    }
    let until = Instant::now() + Duration::from_secs(20);
    for w in &mut workers {
        while TcpStream::connect(w.sources).is_err() {
            if let Some(status) = w.proc.exited() {
                return Err(format!(
                    "{} exited at start ({status}): {}",
                    w.name,
                    w.proc.log_text()
                ));
            }
            if Instant::now() > until {
                return Err(format!("{} did not start: {}", w.name, w.proc.log_text()));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    let progress: Vec<Arc<Progress>> = records.iter().map(|_| Arc::default()).collect();
    let send_sizes: Vec<u64> = records.iter().map(|(r, _)| r.len()).collect();
    let send_started = Instant::now();
    let mut timeline = Timeline::new(send_started);
    timeline.sample_now(0, outputs.records());
    // The partition windows are wall-clock times (the engine's shim
    // reads them from cluster.toml).
    let send_unix_ms = unix_ms() as f64 - 1000.0 * timeline.secs(Instant::now());
    let since_send = |unix: u64| (unix as f64 - send_unix_ms) / 1000.0;
    for &(at, dur, a, b) in &schedule.partitions {
        let what = format!(
            "w{} and w{} cut off from each other for {dur} ms",
            a + 1,
            b + 1
        );
        let span = (since_send(t0 + at), since_send(t0 + at + dur));
        timeline.mark_secs(EventKind::Partition, span.0, Some(span.1), what);
    }
    let mut senders = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    for (i, ((recs, channel), p)) in records.into_iter().zip(&progress).enumerate() {
        // Each source to its channel's home (channel c at worker (c - 1)
        // mod W: NBBO to w1, orders to w2, ...).
        let mut cfg = SendConfig::new(workers[i % workers.len()].sources, channel);
        cfg.give_up_after = Duration::from_secs(60);
        // With partitions scheduled, the input is paced over about 2 s so
        // the windows (in the first 1.6 s) fall while records flow.
        let pace = (!schedule.partitions.is_empty()).then(|| (recs.len() / 2).max(1));
        cfg.rate = s.rate.or(pace);
        let source = Source {
            records: Arc::new(recs),
            cfg,
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::clone(p),
        };
        senders.push(source.spawn());
        sources.push(source);
    }
    let mut failovers = 0usize;
    let acked = |progress: &[Arc<Progress>]| -> u64 {
        progress
            .iter()
            .map(|p| p.acked.load(Ordering::Relaxed))
            .sum()
    };

    let mut kills = 0usize;
    let mut pauses = 0usize;
    // (worker, paused until, paused at)
    let mut paused: Vec<(usize, Instant, Instant)> = Vec::new();
    // (worker, restarted at, recoveries before)
    let mut recovering: Vec<(usize, Instant, usize)> = Vec::new();
    let mut recovery_ms: Vec<u64> = Vec::new();
    // How often the received file is read for progress.
    const POLL: Duration = Duration::from_millis(20);
    let mut last_poll = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut failure = None;
    loop {
        let senders_done = senders.iter().all(|t| t.is_finished());
        let a = acked(&progress);
        timeline.sample(a, outputs.records());
        if senders_done && kills >= schedule.kills.len() && pauses >= schedule.pauses.len() {
            break;
        }
        if Instant::now() > deadline {
            failure = Some("the run did not finish in 600 s".to_string());
            stop_senders(&sources);
            break;
        }
        if let Some((name, status, log)) = workers
            .iter_mut()
            .find_map(|w| {
                w.proc
                    .exited()
                    .map(|st| (w.name.clone(), st, w.proc.log.clone()))
            })
            .or_else(|| {
                let st = receiver.proc.exited()?;
                Some(("the receiver".into(), st, receiver.proc.log.clone()))
            })
        {
            failure = Some(format!(
                "{name} exited on its own ({status}); see {}",
                log.display()
            ));
            stop_senders(&sources);
            break;
        }
        if last_poll.elapsed() >= POLL {
            last_poll = Instant::now();
            if let Err(e) = receiver_step(
                &mut receiver,
                &mut outputs,
                &mut receiver_kills_at,
                &schedule.receiver_kills,
                expected,
                false,
                schedule.sink_outage,
                &mut workers,
                &mut recovering,
                &mut timeline,
            )
            .and_then(|_| {
                db_step(
                    &mut db_server,
                    &mut outputs,
                    &mut db_restarts_at,
                    &schedule.db_restarts,
                    expected,
                    false,
                    &mut timeline,
                )
            }) {
                failure = Some(e);
                stop_senders(&sources);
                break;
            }
        }
        // Kills (after the input is all ACKed, the rest happen at once).
        if let Some(&(at, w)) = schedule.kills.get(kills) {
            if a >= at || senders_done {
                let before = workers[w].recoveries();
                let what = format!("kill -9 of {} at {a}/{total} inputs ACKed", workers[w].name);
                timeline.mark(EventKind::Kill, Instant::now(), None, what);
                workers[w].proc.kill9();
                workers[w].start()?;
                paused.retain(|&(p, _, stopped)| {
                    if p == w {
                        let what = format!("{} paused, then killed", workers[w].name);
                        timeline.mark(EventKind::Pause, stopped, Some(Instant::now()), what);
                    }
                    p != w
                });
                recovering.push((w, Instant::now(), before));
                kills += 1;
                say!(
                    "chaos: kill -9 #{kills} of {} at {a}/{total} input records ACKed; restarted",
                    workers[w].name
                );
            }
        }
        if let Some(&(at, source, to)) = schedule.failovers.get(failovers) {
            if a >= at || senders_done {
                // The sender gives up on its connection and tries another
                // worker, which sends it home again.
                let src = &mut sources[source];
                src.stop.store(true, Ordering::SeqCst);
                let stopped = std::mem::replace(&mut senders[source], src.spawn_nothing());
                let _ = stopped.join();
                src.stop = Arc::new(AtomicBool::new(false));
                src.cfg.addr = workers[to].sources;
                senders[source] = src.spawn();
                failovers += 1;
                let what = format!(
                    "the sender of channel {} fails over to {}",
                    src.cfg.channel, workers[to].name
                );
                timeline.mark(EventKind::Failover, Instant::now(), None, what);
                say!(
                    "chaos: the sender of channel {} fails over to {} at {a}/{total} input records ACKed",
                    src.cfg.channel, workers[to].name
                );
            }
        }
        if let Some(&(at, w, ms)) = schedule.pauses.get(pauses) {
            if (a >= at || senders_done) && !paused.iter().any(|&(p, _, _)| p == w) {
                workers[w].proc.signal(libc_signal::Signal::Stop);
                let now = Instant::now();
                paused.push((w, now + Duration::from_millis(ms), now));
                pauses += 1;
                say!(
                    "chaos: SIGSTOP #{pauses} of {} for {ms} ms at {a}/{total} input records ACKed",
                    workers[w].name
                );
            }
        }
        let now = Instant::now();
        paused.retain(|&(w, until, stopped)| {
            if now >= until {
                workers[w].proc.signal(libc_signal::Signal::Cont);
                let what = format!(
                    "SIGSTOP of {} for {} ms",
                    workers[w].name,
                    (now - stopped).as_millis()
                );
                timeline.mark(EventKind::Pause, stopped, Some(now), what);
                false
            } else {
                true
            }
        });
        note_recoveries(&mut recovering, &workers, &mut recovery_ms, &mut timeline);
        thread::sleep(Duration::from_millis(2));
    }
    for &(w, _, stopped) in &paused {
        workers[w].proc.signal(libc_signal::Signal::Cont);
        let what = format!(
            "SIGSTOP of {}, SIGCONT at the end of the run",
            workers[w].name
        );
        timeline.mark(EventKind::Pause, stopped, Some(Instant::now()), what);
    }
    let mut send_stats: Vec<SendStats> = Vec::new();
    for t in senders {
        match t.join() {
            Ok(Ok(st)) => send_stats.push(st),
            Ok(Err(e)) => {
                failure.get_or_insert(format!("sender: {e}"));
            }
            Err(_) => {
                failure.get_or_insert("a sender thread panicked".into());
            }
        }
    }
    let send_secs = send_started.elapsed().as_secs_f64();
    let input_paths: Vec<&PathBuf> = inputs.iter().map(|(p, _, _)| p).collect();
    // Wait for every output (still timing recoveries, still killing the
    // receiver when its file reaches the next scheduled count; kills still
    // due once every output is in happen then).
    let until = Instant::now() + Duration::from_secs(120);
    while failure.is_none() && Instant::now() < until {
        note_recoveries(&mut recovering, &workers, &mut recovery_ms, &mut timeline);
        let all_in = outputs.poll() >= expected;
        timeline.sample(acked(&progress), outputs.records());
        if all_in
            && receiver_kills_at.len() >= schedule.receiver_kills.len()
            && (db_server.is_none() || db_restarts_at.len() >= schedule.db_restarts.len())
        {
            break;
        }
        if let Some(st) = receiver.proc.exited() {
            failure = Some(format!(
                "the receiver exited on its own ({st}); see {}",
                receiver.proc.log.display()
            ));
            break;
        }
        if let Err(e) = receiver_step(
            &mut receiver,
            &mut outputs,
            &mut receiver_kills_at,
            &schedule.receiver_kills,
            expected,
            all_in,
            schedule.sink_outage,
            &mut workers,
            &mut recovering,
            &mut timeline,
        )
        .and_then(|_| {
            db_step(
                &mut db_server,
                &mut outputs,
                &mut db_restarts_at,
                &schedule.db_restarts,
                expected,
                all_in,
                &mut timeline,
            )
        }) {
            failure = Some(e);
            break;
        }
        thread::sleep(POLL);
    }
    timeline.sample_now(acked(&progress), outputs.poll());
    if outputs.poll() < expected {
        say!(
            "chaos: only {} of {expected} outputs arrived within 120 s",
            outputs.records()
        );
    }
    let mut clean = true;
    for w in &mut workers {
        clean &= w.proc.stop();
    }
    let receiver_clean = receiver.proc.stop();
    let received = outputs.poll();
    let (receiver_duplicates, clean_incarnations) = receiver.stats_field("duplicates");
    let (receiver_nacks, _) = receiver.stats_field("nacks");
    if let Some((_, cfg)) = &sink_cfg {
        // The table, read back in (channel, seq) order, through the same
        // oracle as a received file (its name is in the file: whatever
        // rows the engine binary maps the app's outputs to).
        let table = crate::pg::table_of(cfg, &crate::pg::Mappings::builtin())?;
        let mut db = crate::pg::connect(cfg)?;
        crate::pg::export(&mut db, &table.name, &received_path)?;
    }
    // The generic oracle, then the app's own on top (when verity-check has
    // one and the tools wrote the inputs it reads).
    let sent: Vec<(u32, u64)> = inputs
        .iter()
        .zip(&send_sizes)
        .map(|((_, _, c), n)| (*c, *n))
        .collect();
    let generic = generic_oracle(s, dir, &received_path, &sent)?;
    let own = app.filter(|_| s.inputs.is_none());
    let report = match own {
        Some(app) => check::check(app, &input_paths, &received_path).map_err(|e| e.to_string())?,
        None => generic.0.clone(),
    };
    // Every node's data directory, re-run offline through the engine's own
    // core (`verity replay`): after all the kills, each must regenerate its
    // logged outputs bit for bit.
    let mut replays = Vec::new();
    for w in &workers {
        for shard in 0..s.shards.max(1) {
            replays.push(replay_node(w, shard));
        }
    }
    let replays_identical = replays.iter().all(|r| r.0);
    let logs: Vec<String> = workers.iter().map(|w| w.proc.log_text()).collect();
    // Violations between the workers, or by the senders and the receiver,
    // mean a peer broke the protocol: with honest peers there are none.
    let violations = sum_field(&logs, "violations");
    let sum = |f: fn(&SendStats) -> u64| send_stats.iter().map(f).sum::<u64>();
    let faults = fault_counts(&data_dirs);
    say!(
        "report: inputs={total} outputs={received} send_seconds={send_secs:.2} throughput={:.0} inputs/s total_seconds={:.1}",
        total as f64 / send_secs.max(1e-9),
        started.elapsed().as_secs_f64()
    );
    say!(
        "report: faults injected: {}",
        faults
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    recovery_ms.sort_unstable();
    say!(
        "report: kills={kills} receiver_kills={} db_restarts={} sender_failovers={failovers} redirects={} pauses={pauses} partitions={} worker starts={} receiver starts={} clean_exit={clean} receiver_clean_exit={receiver_clean} recovery_ms={:?}",
        receiver_kills_at.len(),
        db_restarts_at.len(),
        sum(|s| s.redirects),
        schedule.partitions.len(),
        workers.iter().map(|w| w.proc.starts).sum::<u32>(),
        receiver.proc.starts,
        recovery_ms
    );
    say!(
        "report: duplicates absorbed by the receiver={receiver_duplicates} (counted by {clean_incarnations} of its {} incarnations: a killed one reports none) by the nodes={} nacks={} resends: sender={} sender_timeouts={} nodes={} dead letters={}",
        receiver.proc.starts,
        sum_field(&logs, "duplicates"),
        sum(|s| s.nacks) + receiver_nacks,
        sum(|s| s.resent),
        sum(|s| s.timeouts),
        logs.iter().map(|t| t.matches("resending from").count() as u64).sum::<u64>(),
        sum_field(&logs, "dead_letters"),
    );
    say!(
        "report: frames not yet ACKed by their consumer when the workers stopped: {} (kept in the outbound logs, sent again at the next start); protocol violations={violations}",
        sum_field(&logs, "unacked")
    );
    say!(
        "report: checker: ok={} lost={} duplicated={} reordered={} wrong={} unexpected={} (of {} expected)",
        report.ok,
        report.lost,
        report.duplicated,
        report.reordered,
        report.wrong,
        report.unexpected,
        report.expected
    );
    for line in report.to_string().lines().skip(1) {
        say!("{line}");
    }
    say!(
        "report: generic oracle: ok={} lost={} duplicated={} wrong={} unexpected={} (of {} regenerated); {}",
        generic.0.ok,
        generic.0.lost,
        generic.0.duplicated,
        generic.0.wrong,
        generic.0.unexpected,
        generic.0.expected,
        generic.1.trim_start_matches("oracle: generic: ")
    );
    if own.is_some() {
        for line in generic.0.to_string().lines().skip(1) {
            say!("{line}");
        }
    }
    say!(
        "report: replay: {}",
        replays
            .iter()
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    for r in replays.iter().filter(|r| !r.0) {
        say!(
            "chaos: replay of {} did not regenerate its outputs:\n{}",
            r.1,
            r.2
        );
    }
    if let Some(f) = &failure {
        say!("chaos: {f}");
    }
    if !clean {
        say!(
            "chaos: a worker did not exit cleanly on SIGTERM; see the logs in {}",
            dir.display()
        );
    }
    if !receiver_clean {
        say!(
            "chaos: the receiver did not exit cleanly on SIGTERM; see {}",
            receiver.proc.log.display()
        );
    }
    if violations > 0 {
        say!(
            "chaos: {violations} protocol violations between honest peers (see `PROTOCOL` in the worker logs in {})",
            dir.display()
        );
    }
    let own_verdict = s.app_oracle.as_ref().map(|o| (o.0)(&received_path));
    match &own_verdict {
        Some(Ok(summary)) => say!("report: the app's own oracle: PASS: {summary}"),
        Some(Err(why)) => say!("report: the app's own oracle: FAIL: {why}"),
        None => {}
    }
    let passed = report.passed()
        && generic.0.passed()
        && !matches!(own_verdict, Some(Err(_)))
        && clean
        && receiver_clean
        && failure.is_none()
        && replays_identical
        && violations == 0;
    say!(
        "reproduce: {} {}  (schedule {:016x})",
        s.command,
        s.args(),
        schedule.hash()
    );
    let last_line = format!(
        "check: {} app={} sent={total} received={} lost={} duplicated={} reordered={} wrong={} unexpected={} kills={kills}",
        if passed { "PASS" } else { "FAIL" },
        s.app,
        received,
        report.lost,
        report.duplicated,
        report.reordered,
        report.wrong,
        report.unexpected,
    );
    say!("{last_line}");
    Ok(Outcome {
        passed,
        last_line,
        schedule_hash: schedule.hash(),
        expected,
        receiver_kills_at,
        db_restarts_at,
        sink_outage: schedule.sink_outage,
        timeline,
    })
}

/// One seed's result as a JSON object (`verity-chaos --json`,
/// tools/FORMATS.md): the scenario, the verdict, the check line's counts.
pub fn outcome_json(s: &Scenario, r: &Result<Outcome, String>) -> String {
    use crate::json::Obj;
    let mut o = Obj::new()
        .int("seed", s.seed)
        .str("app", &s.app)
        .str("profile", s.profile.name())
        .str("reproduce", &format!("{} {}", s.command, s.args()));
    match r {
        Err(e) => o.str("result", "error").str("error", e).build(),
        Ok(out) => {
            o = o
                .str("result", if out.passed { "pass" } else { "fail" })
                .str("schedule", &format!("{:016x}", out.schedule_hash))
                .int("expected", out.expected);
            // The check line's `key=value` counts, as numbers.
            for (k, v) in out
                .last_line
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
            {
                o = match v.parse::<u64>() {
                    Ok(n) => o.int(k, n),
                    Err(_) => o.str(k, v),
                };
            }
            o.build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let mut s = Scenario::new(PathBuf::from("verity"));
        for p in Profile::ALL {
            s.profile = p;
            s.seed = 7;
            let a = Schedule::draw(&s, 100_000, 50_000);
            assert_eq!(a, Schedule::draw(&s, 100_000, 50_000));
            assert_eq!(a.hash(), Schedule::draw(&s, 100_000, 50_000).hash());
            s.seed = 8;
            if p != Profile::None {
                assert_ne!(
                    a.hash(),
                    Schedule::draw(&s, 100_000, 50_000).hash(),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn profiles_draw_their_faults_and_all_draws_every_kind() {
        let mut s = Scenario::new(PathBuf::from("verity"));
        s.profile = Profile::None;
        let none = Schedule::draw(&s, 1000, 1000);
        assert_eq!(none.frames.drop + none.frames.corrupt, 0);
        assert!(none.kills.is_empty() && none.partitions.is_empty());
        assert!(none.receiver_kills.is_empty());
        s.profile = Profile::All;
        let all = Schedule::draw(&s, 1000, 1000);
        assert!(all.frames.drop > 0 && all.frames.duplicate > 0 && all.frames.reorder > 0);
        assert!(all.frames.delay > 0 && all.frames.corrupt > 0 && all.frames.close > 0);
        assert!(all.kills.len() >= 3 && !all.pauses.is_empty() && !all.partitions.is_empty());
        // Every worker is killed at least once.
        for w in 0..3 {
            assert!(all.kills.iter().any(|&(_, k)| k == w), "worker {w}");
        }
        // The receiver too, in crashes and all, at outputs inside the run;
        // --receiver-kills overrides the count, for any profile.
        for p in [Profile::Crashes, Profile::All] {
            s.profile = p;
            for seed in 1..50 {
                s.seed = seed;
                let d = Schedule::draw(&s, 1000, 800);
                assert!((1..=2).contains(&d.receiver_kills.len()), "{p:?} {seed}");
                assert!(d.receiver_kills.iter().all(|&at| (40..800).contains(&at)));
            }
        }
        s.profile = Profile::FlakyNet;
        assert!(Schedule::draw(&s, 1000, 800).receiver_kills.is_empty());
        s.receiver_kills = Some(4);
        assert_eq!(Schedule::draw(&s, 1000, 800).receiver_kills.len(), 4);
        assert!(s.args().contains("--receiver-kills 4"), "{}", s.args());
    }

    #[test]
    fn profile_names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        assert!("nope".parse::<Profile>().is_err());
    }

    #[test]
    fn shares_parse_as_percentages_or_fractions_and_lossy_drops_one_percent() {
        assert_eq!(parse_share("1%"), Ok(10_000));
        assert_eq!(parse_share("0.01"), Ok(10_000));
        assert_eq!(parse_share("0.1%"), Ok(1_000));
        assert_eq!(parse_share("100%"), Ok(1_000_000));
        assert!(parse_share("101%").is_err());
        assert!(parse_share("-1%").is_err());
        assert!(parse_share("lots").is_err());
        let mut s = Scenario::new(PathBuf::from("verity"));
        s.profile = Profile::Lossy;
        let d = Schedule::draw(&s, 1000, 500);
        assert_eq!(d.frames.drop, 10_000);
        assert_eq!(d.frames.duplicate + d.frames.reorder + d.frames.corrupt, 0);
        assert!(d.kills.is_empty() && d.partitions.is_empty());
        s.drop = Some(50_000);
        s.reorder = Some(10_000);
        let d = Schedule::draw(&s, 1000, 500);
        assert_eq!((d.frames.drop, d.frames.reorder), (50_000, 10_000));
        assert!(s.args().contains(" --drop 5% --reorder 1%"), "{}", s.args());
    }
}
