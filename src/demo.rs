//! `verity demo`: the main job on built-in defaults. Generates a data set from
//! a seed, starts a node (or, with `--nodes N`, a cluster of N worker
//! processes) as child processes, the receiver and the sender(s), `kill -9`s
//! nodes at moments drawn from the seed (each worker at least once when there
//! are enough kills) and restarts them, then stops everything, runs the
//! independent checker and prints a report whose last line is
//! `check: PASS ...` or `check: FAIL ...`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use verity_tools::check::{self, App as CheckApp};
use verity_tools::formats::InputFormat;
use verity_tools::gen::{self, GenConfig, Rng, TextConfig};
use verity_tools::recv::{Receiver, RecvConfig};
use verity_tools::send::{self, Progress, Records, SendConfig, SendStats};

use crate::log::{Durability, Log, LogConfig};

#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub app: String,
    pub seed: u64,
    pub messages: u64,
    pub kills: u32,
    /// Worker processes: 1 runs a single node (`node.toml`), more a cluster
    /// (`cluster.toml`).
    pub nodes: u32,
    pub durability: Durability,
    /// Work directory; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    pub keep: bool,
}

/// How the demo ended.
pub struct DemoOutcome {
    pub passed: bool,
    pub last_line: String,
}

fn free_addr() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map_err(|e| format!("no free port: {e}"))
}

struct Node {
    exe: PathBuf,
    /// Arguments after `verity worker`.
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new(&self.exe)
            .arg("worker")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the node ({}): {e}", self.exe.display()))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    fn kill9(&mut self) -> Result<(), String> {
        if let Some(mut c) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            c.kill().map_err(|e| format!("kill -9 failed: {e}"))?;
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERM and wait: the node finishes its batch, snapshots, exits 0.
    fn stop(&mut self) -> Result<bool, String> {
        let Some(mut c) = self.child.take() else {
            return Ok(false);
        };
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return Ok(status.success()),
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Ok(false);
                }
            }
        }
    }

    /// Whether it died on its own (a crash the demo did not cause).
    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Inputs of one app: (file, format, channel).
type Inputs = Vec<(PathBuf, InputFormat, u32)>;

fn generate(args: &DemoArgs, dir: &Path) -> Result<Inputs, String> {
    let data = gen::data_dir(None);
    let e = |e: gen::GenError| e.to_string();
    Ok(match args.app.as_str() {
        "market-spread" => {
            let cfg = GenConfig::from_messages(args.seed, args.messages, data);
            gen::market_spread(&cfg, dir).map_err(e)?;
            vec![
                (dir.join("nbbo.msg"), InputFormat::Fixish, 1),
                (dir.join("orders.msg"), InputFormat::Fixish, 2),
            ]
        }
        "doubler" | "sequence-window" => {
            let f = dir.join("input.u64");
            gen::u64_counters(args.messages, &f).map_err(e)?;
            vec![(f, InputFormat::U64, 1)]
        }
        "word-count" => {
            let f = dir.join("input.txt");
            let cfg = TextConfig {
                seed: args.seed,
                lines: args.messages,
                data_dir: data,
            };
            gen::text(&cfg, &f).map_err(e)?;
            vec![(f, InputFormat::Lines, 1)]
        }
        other => {
            return Err(format!(
                "unknown app {other:?} (one of: {})",
                crate::apps::NAMES.join(", ")
            ))
        }
    })
}

fn count_dead_letters(data_dir: &Path) -> u64 {
    let cfg = LogConfig {
        prepare_ahead: false,
        prefault: false,
        ..LogConfig::default()
    };
    let Ok((log, _)) = Log::open(data_dir, "dead-letters", cfg) else {
        return 0;
    };
    let Ok(reader) = log.reader_at(log.first_position()) else {
        return 0;
    };
    reader.filter(|r| r.is_ok()).count() as u64
}

fn worker_name(args: &DemoArgs, i: usize) -> String {
    if args.nodes <= 1 {
        "the node".into()
    } else {
        format!("w{}", i + 1)
    }
}

/// Runs the demo; prints progress and the report to stdout.
pub fn run(args: &DemoArgs) -> Result<DemoOutcome, String> {
    let started = Instant::now();
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "verity-demo-{}-{}-{}",
            args.app,
            args.seed,
            std::process::id()
        )),
    };
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "demo: app={} seed={} messages={} kills={} nodes={} durability={:?} dir={}",
        args.app,
        args.seed,
        args.messages,
        args.kills,
        args.nodes.max(1),
        args.durability,
        dir.display()
    );
    let inputs = generate(args, &dir)?;
    let mut total = 0;
    let mut records = Vec::new();
    for (path, format, channel) in &inputs {
        let r = Records::load(*format, path).map_err(|e| e.to_string())?;
        total += r.len();
        records.push((r, *channel));
    }
    println!(
        "demo: generated {total} input records in {:.1?}",
        started.elapsed()
    );
    let outcome = run_with(args, &dir, &inputs, records, total, started)?;
    if !args.keep && args.dir.is_none() && outcome.passed {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

fn run_with(
    args: &DemoArgs,
    dir: &Path,
    inputs: &Inputs,
    records: Vec<(Records, u32)>,
    total: u64,
    started: Instant,
) -> Result<DemoOutcome, String> {
    let sink = free_addr()?;
    let received_path = dir.join("received.bin");
    let receiver =
        Receiver::start(&RecvConfig::new(sink, &received_path)).map_err(|e| e.to_string())?;
    let durability = match args.durability {
        Durability::Process => "process",
        Durability::Fsync => "fsync",
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let snapshot_every = (total / 8).max(1000);
    let segment = 16u64 << 20;
    // (node, data dir, source listener) per worker.
    let mut nodes = Vec::new();
    let mut data_dirs = Vec::new();
    let mut source_addrs = Vec::new();
    if args.nodes <= 1 {
        let listen = free_addr()?;
        let data_dir = dir.join("node");
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\napp = {:?}\ndata_dir = {:?}\nlisten = \"{listen}\"\nsink = \"{}\"\ndurability = \"{durability}\"\nsnapshot_interval_records = {snapshot_every}\n\n[limits]\njournal_segment_bytes = {segment}\n",
                args.app,
                data_dir.display().to_string(),
                receiver.addr(),
            ),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        nodes.push(Node {
            exe: exe.clone(),
            args: vec!["--config".into(), config.display().to_string()],
            log: dir.join("node.log"),
            child: None,
            starts: 0,
        });
        data_dirs.push(data_dir);
        source_addrs.push(listen);
    } else {
        let secret = dir.join("cluster.secret");
        let mut rng = Rng::new(args.seed ^ 0x7365_6372_6574);
        let key: String = (0..32).map(|_| format!("{:02x}", rng.below(256))).collect();
        std::fs::write(&secret, key).map_err(|e| format!("{}: {e}", secret.display()))?;
        let mut toml = format!(
            "[cluster]\nid = 1\napp = {:?}\npartitions = 4096\nsecret_file = \"cluster.secret\"\nsink = \"{}\"\ndurability = \"{durability}\"\nsnapshot_interval_records = {snapshot_every}\n\n[limits]\njournal_segment_bytes = {segment}\n",
            args.app,
            receiver.addr(),
        );
        for i in 1..=args.nodes {
            let (address, sources) = (free_addr()?, free_addr()?);
            toml.push_str(&format!(
                "\n[[worker]]\nname = \"w{i}\"\naddress = \"{address}\"\nsources = \"{sources}\"\ndata_dir = \"w{i}\"\n"
            ));
            data_dirs.push(dir.join(format!("w{i}")));
            source_addrs.push(sources);
        }
        let config = dir.join("cluster.toml");
        std::fs::write(&config, toml).map_err(|e| format!("{}: {e}", config.display()))?;
        for i in 1..=args.nodes {
            nodes.push(Node {
                exe: exe.clone(),
                args: vec![
                    "--config".into(),
                    config.display().to_string(),
                    "--name".into(),
                    format!("w{i}"),
                ],
                log: dir.join(format!("w{i}.log")),
                child: None,
                starts: 0,
            });
        }
    }
    for n in &mut nodes {
        n.start()?;
    }

    // Kill moments: fractions of the input acked, drawn from the seed; the
    // victims: every worker once (in a seeded order) while kills last, then
    // drawn.
    let mut rng = Rng::new(args.seed ^ 0x6b69_6c6c);
    let mut kill_at: Vec<u64> = (0..args.kills)
        .map(|_| total / 20 + rng.below((total * 9 / 10).max(1)))
        .collect();
    kill_at.sort_unstable();
    let mut victims: Vec<usize> = (0..nodes.len()).collect();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.below(i as u64 + 1) as usize);
    }
    while victims.len() < kill_at.len() {
        victims.push(rng.below(nodes.len() as u64) as usize);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = records.iter().map(|_| Arc::default()).collect();
    let send_started = Instant::now();
    let mut senders = Vec::new();
    for (i, ((recs, channel), p)) in records.into_iter().zip(&progress).enumerate() {
        // Sources spread over the workers (NBBO to w1, orders to w2, ...).
        let mut cfg = SendConfig::new(source_addrs[i % source_addrs.len()], channel);
        cfg.give_up_after = Duration::from_secs(30);
        let (p, stop) = (Arc::clone(p), Arc::clone(&stop));
        senders.push(thread::spawn(move || {
            send::send(&cfg, &recs, &p, &stop).map_err(|e| e.to_string())
        }));
    }

    let mut kills = Vec::new();
    let acked = |progress: &[Arc<Progress>]| -> u64 {
        progress
            .iter()
            .map(|p| p.acked.load(Ordering::Relaxed))
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while senders.iter().any(|s| !s.is_finished()) {
        if Instant::now() > deadline {
            stop.store(true, Ordering::SeqCst);
            break;
        }
        if let Some((status, log)) = nodes
            .iter_mut()
            .find_map(|n| n.exited().map(|s| (s, n.log.clone())))
        {
            stop.store(true, Ordering::SeqCst);
            for s in senders {
                let _ = s.join();
            }
            return Err(format!(
                "a node exited on its own ({status}); see {}",
                log.display()
            ));
        }
        let a = acked(&progress);
        if kills.len() < kill_at.len() && a >= kill_at[kills.len()] {
            let v = victims[kills.len()];
            nodes[v].kill9()?;
            let t = Instant::now();
            nodes[v].start()?;
            println!(
                "demo: kill -9 #{} of {} at {a}/{total} input records acked ({:.0}%); restarted",
                kills.len() + 1,
                worker_name(args, v),
                a as f64 * 100.0 / total.max(1) as f64
            );
            kills.push(t);
        }
        thread::sleep(Duration::from_millis(2));
    }
    let mut send_stats = Vec::new();
    for s in senders {
        match s.join() {
            Ok(Ok(st)) => send_stats.push(st),
            Ok(Err(e)) => return Err(format!("sender: {e}")),
            Err(_) => return Err("a sender thread panicked".into()),
        }
    }
    let send_secs = send_started.elapsed().as_secs_f64();
    // Kills the schedule did not reach (inputs finished first) happen now,
    // while outputs may still be in flight.
    while kills.len() < kill_at.len() {
        let v = victims[kills.len()];
        nodes[v].kill9()?;
        nodes[v].start()?;
        println!(
            "demo: kill -9 #{} of {} after the input was all acked; restarted",
            kills.len() + 1,
            worker_name(args, v)
        );
        kills.push(Instant::now());
    }

    // How many outputs to wait for: the checker's expectation (computed from
    // the inputs alone), then wait for the receiver to have them all.
    let input_paths: Vec<&PathBuf> = inputs.iter().map(|(p, _, _)| p).collect();
    let app: CheckApp = args.app.parse()?;
    let expected = check::check(app, &input_paths, &received_path)
        .map_err(|e| e.to_string())?
        .expected;
    if !receiver.wait_for(expected, Duration::from_secs(120)) {
        println!(
            "demo: only {} of {expected} outputs arrived within 120 s",
            receiver.records()
        );
    }
    let mut clean = true;
    for n in &mut nodes {
        clean &= n.stop()?;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let rstats = receiver.stop().map_err(|e| e.to_string())?;
    let report = check::check(app, &input_paths, &received_path).map_err(|e| e.to_string())?;
    let dead: u64 = data_dirs.iter().map(|d| count_dead_letters(d)).sum();
    let sum = |f: fn(&SendStats) -> u64| send_stats.iter().map(f).sum::<u64>();
    println!(
        "report: inputs={total} outputs={} send_seconds={send_secs:.2} throughput={:.0} inputs/s (kills and restarts included) total_seconds={total_secs:.1}",
        rstats.records,
        total as f64 / send_secs.max(1e-9),
    );
    println!(
        "report: nodes={} node starts={} kills={} clean_exit={} frames_sent={} resent={} sender_connects={} nacks={}",
        nodes.len(),
        nodes.iter().map(|n| n.starts).sum::<u32>(),
        kills.len(),
        clean,
        sum(|s| s.frames),
        sum(|s| s.resent),
        sum(|s| s.connects),
        sum(|s| s.nacks) + rstats.nacks,
    );
    println!(
        "report: duplicates absorbed by the receiver={} gaps dropped={} dead letters={dead}",
        rstats.duplicates, rstats.gaps
    );
    for line in report.to_string().lines().skip(1) {
        println!("{line}");
    }
    println!(
        "reproduce: cargo run --release -- demo --app {} --seed {} --messages {} --kills {} --nodes {}{}",
        args.app,
        args.seed,
        args.messages,
        args.kills,
        args.nodes.max(1),
        if args.durability == Durability::Fsync {
            " --durability fsync"
        } else {
            ""
        }
    );
    let passed = report.passed() && clean;
    let last_line = format!(
        "check: {} app={} sent={total} received={} lost={} duplicated={} reordered={} wrong={} unexpected={} kills={}",
        if passed { "PASS" } else { "FAIL" },
        args.app,
        rstats.records,
        report.lost,
        report.duplicated,
        report.reordered,
        report.wrong,
        report.unexpected,
        kills.len()
    );
    if !clean {
        println!(
            "demo: a node did not exit cleanly on SIGTERM; see the logs in {}",
            dir.display()
        );
    }
    println!("{last_line}");
    Ok(DemoOutcome { passed, last_line })
}
