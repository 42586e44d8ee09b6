//! `verity sim` (and `verity-sim`): the deterministic simulator. Runs the
//! production node cores of a cluster under simulated network faults,
//! crashes and restarts, one seed at a time, and checks every run with the
//! independent oracle.
//!
//! `--seed 7`, `--seeds 1..1000`, `--check-determinism` (each seed twice:
//! same hash of all outputs and journals).

use std::process::ExitCode;
use std::time::Instant;

use crate::harness::sim_run;
use crate::registry::Registry;
use crate::sim::SimParams;

/// The flags of `verity sim` and `verity-sim`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Exit status: 0 every seed passed the oracle; 1 a seed failed (each prints the command that reproduces it); 2 usage error."
)]
pub struct SimArgs {
    /// One seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// A range of seeds, A..B (B excluded) or A..=B; never empty.
    #[arg(long)]
    pub seeds: Option<verity_tools::SeedRange>,
    /// Run every seed twice and compare the hashes of all outputs and journals.
    #[arg(long)]
    pub check_determinism: bool,
    /// Force the app instead of drawing it from the seed.
    #[arg(long)]
    pub app: Option<String>,
    /// Print one line per seed.
    #[arg(long, short)]
    pub verbose: bool,
    /// JSON Lines: one object per seed, then a summary (tools/FORMATS.md).
    #[arg(long)]
    pub json: bool,
}

/// Runs the seeds `a` names, each judged by the oracle; prints one line
/// per failure (per seed with `--verbose`) and a summary. `me` names the
/// command in messages.
pub fn run(a: &SimArgs, me: &str, apps: &Registry) -> ExitCode {
    // Output piped into `head` ends the run quietly, as other Unix tools
    // do, instead of a panic in println!.
    // SAFETY: restoring a signal's default disposition at startup, before
    // any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let seeds = match (a.seed, a.seeds) {
        (Some(s), _) => verity_tools::SeedRange::one(s),
        (None, Some(r)) => r,
        (None, None) => verity_tools::SeedRange { first: 1, end: 101 },
    };
    if let Some(app) = a.app.as_deref().filter(|app| !apps.contains(app)) {
        eprintln!(
            "{me}: --app: unknown app {app:?} (one of: {})",
            apps.names().join(", ")
        );
        return ExitCode::from(2);
    }
    // How to run one seed again: the standalone binary from the source
    // tree, or the subcommand of whatever binary this is.
    let command = if me == "verity-sim" {
        "cargo run --release --bin verity-sim --".to_string()
    } else {
        me.to_string()
    };
    let started = Instant::now();
    let base = std::env::temp_dir().join(format!("verity-sim-{}", std::process::id()));
    let (mut passed, mut failed, mut crashes, mut events) = (0u64, 0u64, 0u64, 0u64);
    let (mut zombies, mut holds) = (0u64, 0u64);
    for seed in seeds.seeds() {
        let mut p = SimParams::swarm(seed);
        if let Some(app) = &a.app {
            p.app = app.clone();
        }
        let dir = base.join(seed.to_string());
        let first = sim_run::run(&p, &dir, apps);
        let second = if a.check_determinism {
            Some(sim_run::run(&p, &base.join(format!("{seed}-again")), apps))
        } else {
            None
        };
        let repro = format!(
            "{command} --seed {seed}{}{}",
            a.app
                .as_ref()
                .map(|x| format!(" --app {x}"))
                .unwrap_or_default(),
            if a.check_determinism {
                " --check-determinism"
            } else {
                ""
            }
        );
        match first {
            Ok(o) => {
                let det = match &second {
                    Some(Ok(o2)) if o2.hash != o.hash => Some(format!(
                        "non-deterministic: hash {:016x} then {:016x}",
                        o.hash, o2.hash
                    )),
                    Some(Err(e)) => Some(format!("second run failed: {e}")),
                    _ => None,
                };
                crashes += o.crashes;
                zombies += o.zombies;
                holds += o.holds;
                events += o.events;
                if a.json {
                    let result = if o.passed && det.is_none() {
                        "pass"
                    } else {
                        "fail"
                    };
                    println!(
                        "{}",
                        verity_tools::json::Obj::new()
                            .int("seed", seed)
                            .str("result", result)
                            .str("app", &o.params.app)
                            .int("nodes", o.params.nodes as u64)
                            .int("messages", o.params.messages)
                            .int("forwarded", o.forwarded)
                            .int("crashes", o.crashes)
                            .int("zombies", o.zombies)
                            .int("virtual_ns", o.virtual_us * 1000)
                            .str("hash", &format!("{:016x}", o.hash))
                            .str("verdict", &o.verdict)
                            .str("determinism", det.as_deref().unwrap_or(""))
                            .str("reproduce", &repro)
                            .build()
                    );
                }
                if o.passed && det.is_none() {
                    passed += 1;
                    if a.verbose && !a.json {
                        println!(
                            "seed {seed}: PASS app={} nodes={} forwarded={} msgs={} drop={:.1}% dup={:.1}% reorder={:.1}% partitions={} crashes={} zombies={} fsync={} virtual={:.3}s hash={:016x}",
                            o.params.app,
                            o.params.nodes,
                            o.forwarded,
                            o.params.messages,
                            o.params.drop_ppm as f64 / 1e4,
                            o.params.dup_ppm as f64 / 1e4,
                            o.params.reorder_ppm as f64 / 1e4,
                            o.params.partitions.len(),
                            o.crashes,
                            o.zombies,
                            o.params.fsync,
                            o.virtual_us as f64 / 1e6,
                            o.hash
                        );
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    let _ = std::fs::remove_dir_all(base.join(format!("{seed}-again")));
                } else {
                    failed += 1;
                    if a.json {
                        continue;
                    }
                    println!(
                        "seed {seed}: FAIL app={} ({:?})\n  {}\n  {}\n  reproduce: {repro}",
                        o.params.app,
                        o.params,
                        o.verdict.replace('\n', "\n  "),
                        det.unwrap_or_default()
                    );
                }
            }
            Err(e) => {
                failed += 1;
                match a.json {
                    true => println!(
                        "{}",
                        verity_tools::json::Obj::new()
                            .int("seed", seed)
                            .str("result", "error")
                            .str("error", &e.to_string())
                            .str("reproduce", &repro)
                            .build()
                    ),
                    false => println!("seed {seed}: ERROR {e}\n  reproduce: {repro}"),
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    if a.json {
        println!(
            "{}",
            verity_tools::json::Obj::new()
                .str("summary", "sim")
                .int("seeds", seeds.len())
                .int("passed", passed)
                .int("failed", failed)
                .int("crashes", crashes)
                .int("zombies", zombies)
                .int("holds", holds)
                .int("events", events)
                .num("seconds", started.elapsed().as_secs_f64())
                .bool("determinism_checked", a.check_determinism)
                .build()
        );
    } else {
        println!(
        "sim: seeds={} passed={passed} failed={failed} crashes={crashes} zombies={zombies} holds={holds} events={events} seconds={:.1}{}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        if a.check_determinism {
            " determinism=checked"
        } else {
            ""
        }
    );
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
