//! `verity config check|show` and the `cpu_affinity` key, from outside: a
//! valid file is OK (exit 0), an invalid one names the file and key (exit
//! 1), an unreadable one is exit 2; `show` prints every key with its
//! default and never a secret; a pinned worker runs on its CPU, and a CPU
//! the machine lacks stops it at start naming the key.

mod common;
use common::free_addr;
use common::node::Node;

use std::process::{Command, Output};

fn verity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn node_toml(dir: &std::path::Path, extra: &str) -> String {
    let p = dir.join("node.toml");
    std::fs::write(
        &p,
        format!(
            "[node]\napp = \"doubler\"\ndata_dir = \"data\"\nlisten = \"{}\"\nsink = \"{}\"\n{extra}",
            free_addr(),
            free_addr()
        ),
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn config_check_says_ok_invalid_or_unreadable_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = node_toml(dir.path(), "");
    let o = verity(&["config", "check", &good]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("config: OK"), "{}", text(&o));

    let bad = node_toml(dir.path(), "\n[limits]\nmax_unacked = 0\n");
    let o = verity(&["config", "check", &bad]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("INVALID {bad}: limits.max_unacked")),
        "{}",
        text(&o)
    );

    let o = verity(&["config", "check", "/nonexistent/node.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let o = verity(&["config", "check", &good, "--name", "w1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a cluster.toml"), "{}", text(&o));
}

#[test]
fn config_show_prints_every_key_with_defaults_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client.secret");
    verity_tools::client_auth::write_secret(&secret, "a-very-secret-client-key\n").unwrap();
    let f = node_toml(dir.path(), "client_secret_file = \"client.secret\"\n");
    let o = verity(&["config", "show", &f]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    for key in [
        "snapshot_interval_records = 200000",
        "durability = \"process\"",
        "max_unacked = 262144",
        "socket_buffer_bytes = 4194304",
        "dedup_window = 65536",
        "client_secret = \"(set)\"",
        "# metrics_listen: off",
    ] {
        assert!(t.contains(key), "{key} in {t}");
    }
    // data_dir relative to the file, shown resolved.
    assert!(
        t.contains(&format!(
            "data_dir = {:?}",
            dir.path().join("data").display().to_string()
        )),
        "{t}"
    );
    assert!(!t.contains("a-very-secret"), "{t}");
}

#[test]
fn a_pinned_worker_runs_on_its_cpu_and_a_missing_cpu_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "doubler", free_addr(), "");
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        cfg.replacen("[node]\n", "[node]\ncpu_affinity = [0]\n", 1),
    )
    .unwrap();
    node.start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim);
    assert_eq!(allowed, Some("0"), "{status}");
    assert!(
        node.wait_log("pinned to CPU 0 (cpu_affinity)")
            .contains("pinned to CPU 0 (cpu_affinity)"),
        "{}",
        node.log_text()
    );
    assert!(
        node.log_text().contains("limits: socket_buffer_bytes="),
        "{}",
        node.log_text()
    );
    assert_eq!(node.term(), Some(0), "{}", node.log_text());

    std::fs::write(
        &node.config,
        cfg.replacen("[node]\n", "[node]\ncpu_affinity = [1023]\n", 1),
    )
    .unwrap();
    let o = verity(&["worker", "--config", &node.config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot pin node 1 to CPU 1023 (cpu_affinity)"),
        "{}",
        text(&o)
    );

    std::fs::write(
        &node.config,
        cfg.replacen("[node]\n", "[node]\ncpu_affinity = [\"x\"]\n", 1),
    )
    .unwrap();
    let o = verity(&["config", "check", &node.config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("node.cpu_affinity"), "{}", text(&o));
}

/// `lock_memory = true`: a real worker locks its active segments (VmLck
/// in /proc grows to the journal's and the outbound log's first segments,
/// 1 MiB each in the test configuration) and stops cleanly; a value that
/// is not a boolean is refused naming the key.
#[test]
fn lock_memory_locks_the_active_segments_of_a_real_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "doubler", free_addr(), "");
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        cfg.replacen("[node]\n", "[node]\nlock_memory = true\n", 1),
    )
    .unwrap();
    let o = verity(&["config", "show", &node.config.display().to_string()]);
    assert!(text(&o).contains("lock_memory = true"), "{}", text(&o));
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|c| c & (1 << 14) != 0);
    if root {
        node.start();
        let locked_kib = || {
            std::fs::read_to_string(format!("/proc/{}/status", node.pid()))
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while locked_kib() < 2 * 1024 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(locked_kib() >= 2 * 1024, "VmLck {} kB", locked_kib());
        assert_eq!(node.term(), Some(0), "{}", node.log_text());
    }

    std::fs::write(
        &node.config,
        cfg.replacen("[node]\n", "[node]\nlock_memory = \"yes\"\n", 1),
    )
    .unwrap();
    let o = verity(&["config", "check", &node.config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("node.lock_memory"), "{}", text(&o));
}
