//! Market spread into PostgreSQL through the real engine: a 3-worker
//! cluster (real processes, real TCP) writes through `verity sink-postgres`
//! (a process of its own) into a private PostgreSQL server, while the
//! schedule `kill -9`s workers and the sink, kills a worker while the sink
//! is down, and stops the database as by a crash and restarts it. The table
//! must then hold every expected decision exactly once, judged by the
//! independent oracle (through an export of the table), and every node's
//! journal must replay bit for bit.
//!
//! Needs Debian's PostgreSQL server binaries (`.ci/run` installs them): a
//! machine without them fails here, it does not skip.

use std::path::PathBuf;

use verity_tools::chaos::{self, Profile, Scenario, SinkTarget};

fn scenario(seed: u64) -> Scenario {
    let mut s = Scenario::new(PathBuf::from(env!("CARGO_BIN_EXE_verity")));
    s.app = "market-spread".into();
    s.workers = 3;
    s.messages = 60_000;
    s.profile = Profile::Crashes;
    s.seed = seed;
    s.sink = SinkTarget::Postgres { url: None };
    s.receiver_kills = Some(2);
    s
}

#[test]
fn sink_kills_a_database_crash_and_a_worker_kill_while_the_sink_is_down_lose_nothing() {
    for seed in [1, 2] {
        let s = scenario(seed);
        let o = chaos::run(&s).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(o.passed, "seed {seed}: {}", o.last_line);
        assert_eq!(o.receiver_kills_at.len(), 2, "seed {seed}: two sink kills");
        assert_eq!(o.db_restarts_at.len(), 1, "seed {seed}: a database crash");
        assert!(
            o.sink_outage.is_some(),
            "seed {seed}: a worker killed while the sink was down"
        );
        assert!(
            o.last_line.contains("lost=0 duplicated=0"),
            "{}",
            o.last_line
        );
    }
}

#[test]
fn the_demo_flags_name_the_sink() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["demo", "--sink", "kafka"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--sink: unknown sink \"kafka\" (file or postgres)"),
        "{err}"
    );
}
