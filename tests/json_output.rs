//! `--json` (tools/FORMATS.md), from outside: every line a tool prints is
//! one JSON object a real parser accepts, with the fields the format
//! names: logdump, replay, trace and sim over a real worker's data
//! directory, and the worker's own log with `--log-format json`.

mod common;
use common::free_addr;
use common::node::{send_file, u64_file, Node};

use std::process::Command;

use serde_json::Value;
use verity_tools::formats::InputFormat;

/// Runs `verity ARGS`; (exit code, stdout lines parsed as JSON objects).
fn json_lines(args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let o = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let lines = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect();
    (o.status.code(), lines)
}

#[test]
fn tools_print_json_lines_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "doubler", free_addr(), "");
    // The worker's own log as JSON Lines.
    let cfg = node.config.display().to_string();
    node.start_with(&["--log-format", "json"]);
    let input = u64_file(dir.path(), 300);
    send_file(node.listen, &input, InputFormat::U64, 1);
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    let mut events = Vec::new();
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(
            v["time_ns"]
                .as_u64()
                .is_some_and(|t| t > 1_700_000_000_000_000_000),
            "{l}"
        );
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
        events.push(v["event"].as_str().unwrap_or("").to_string());
    }
    for e in ["recovered", "limits", "snapshot", "stopped"] {
        assert!(events.iter().any(|x| x == e), "no {e} event in {log}");
    }
    let stopped = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "stopped")
        .unwrap();
    assert_eq!(stopped["accepted"], 300, "{stopped}");
    assert_eq!(stopped["node"], 1, "{stopped}");

    let data = node.data.display().to_string();
    let (code, lines) = json_lines(&["logdump", &data, "--records", "--json"]);
    assert_eq!(code, Some(0));
    let journal = lines.iter().find(|v| v["summary"] == "journal").unwrap();
    assert_eq!(journal["damaged"], false);
    assert_eq!(journal["channels"][0]["last_seq"], 300, "{journal}");
    assert!(lines
        .iter()
        .any(|v| v["log"] == "journal" && v["kind"] == "input" && v["time_ns"].is_u64()));

    let (code, lines) = json_lines(&["replay", "--config", &cfg, "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["replay"], "identical", "{}", lines[0]);
    assert_eq!(lines[0]["outs"][0]["regenerated"], 300, "{}", lines[0]);

    let (code, lines) = json_lines(&["trace", "--config", &cfg, "1:5", "--json"]);
    assert_eq!(code, Some(0));
    let kinds: Vec<&str> = lines.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(kinds, ["accepted", "output"], "{lines:?}");
    assert_eq!(lines[0]["seq"], 5);

    let (code, lines) = json_lines(&["sim", "--seeds", "1..3", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["seed"], 1);
    assert_eq!(lines[0]["result"], "pass", "{}", lines[0]);
    assert_eq!(lines[2]["summary"], "sim");
    assert_eq!(lines[2]["passed"], 2);
}
