//! `verity-bench` end to end, small: the raw pipe, the relay and the engine
//! (one node and a 2-worker cluster) each deliver every output. A bench that cannot
//! run is found here, not when someone needs a figure. No timing is
//! asserted: speed is judged by the bench's own ratios, never by a test.

use verity_tools::bench::{run, BenchConfig};

#[test]
fn the_bench_runs_the_raw_pipe_the_node_and_a_cluster_to_the_end() {
    let t = tempfile::tempdir().unwrap();
    for app in ["doubler", "market-spread"] {
        let cfg = BenchConfig {
            app: app.into(),
            messages: 20_000,
            seed: 1,
            engine: env!("CARGO_BIN_EXE_verity").into(),
            work_dir: t.path().join(app),
            latency_seconds: 0.2,
            rounds: 1,
            workers: 2,
            baseline: None,
            latency_rate: Some(50_000.0),
            tls: false,
            metrics: false,
            idle: None,
            durability: None,
            audit: false,
        };
        let r = run(&cfg).unwrap_or_else(|e| panic!("{app}: {e}"));
        assert_eq!(r.inputs, 20_000, "{app}");
        assert!(
            r.raw_msgs_per_s > 0.0 && r.engine_msgs_per_s > 0.0,
            "{app}: {r:?}"
        );
        // The latency run went through all three paths: the relay carries
        // every record the raw pipe does (the same senders, as nodes).
        assert!(
            r.raw_latency.samples > 0 && r.engine_latency.samples > 0,
            "{app}: {r:?}"
        );
        assert_eq!(r.relay_latency.samples, r.raw_latency.samples, "{app}");
        assert!(r.to_json().contains("\"relay_latency\""), "{app}");
    }
}

/// `verity-bench --tls` (small): every variant of a round, plain and over
/// TLS (raw pipe, single node, a 2-worker cluster), delivers all its
/// outputs, and the TLS figures are reported.
#[test]
fn verity_bench_runs_every_variant_over_tls() {
    let t = tempfile::tempdir().unwrap();
    let cfg = BenchConfig {
        app: "doubler".into(),
        messages: 20_000,
        seed: 1,
        engine: env!("CARGO_BIN_EXE_verity").into(),
        work_dir: t.path().join("bench"),
        latency_seconds: 0.1,
        rounds: 2,
        workers: 2,
        baseline: None,
        latency_rate: Some(20_000.0),
        tls: true,
        metrics: true,
        idle: None,
        durability: Some("fsync".into()),
        audit: true,
    };
    let r = run(&cfg).unwrap();
    let tls = r.tls.as_ref().expect("TLS figures");
    assert!(
        tls.raw_msgs_per_s > 0.0 && tls.engine_msgs_per_s > 0.0,
        "{r}"
    );
    assert!(tls.cluster.is_some_and(|(rate, _)| rate > 0.0), "{r}");
    assert!(tls.latency.samples > 0, "{r}");
    assert!(r.to_string().contains("TLS/plain"), "{r}");
}

/// `verity-bench --starts`: every start reaches listening (else an error)
/// and is stopped; the figures are there (not judged: a benchmark, not a
/// timed test).
#[test]
fn the_start_measurement_starts_and_stops_a_worker_each_time() {
    let t = tempfile::tempdir().unwrap();
    let engine = std::path::Path::new(env!("CARGO_BIN_EXE_verity"));
    let s = verity_tools::startup::measure(engine, "market-spread", t.path(), 3).unwrap();
    assert_eq!(s.runs, 3);
    let (lo, med, hi) = s.listening_ms;
    assert!(lo > 0.0 && lo <= med && med <= hi, "{s:?}");
    assert!(s.exec_ms.1 > 0.0, "{s:?}");
    assert!(s
        .to_json()
        .starts_with("{\"starts\":3,\"listening_ms_median\":"));
    assert!(
        !t.path().join("starts").exists(),
        "the measurement removes its data directories"
    );
}
