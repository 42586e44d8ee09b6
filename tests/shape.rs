//! A data directory records the shape of the cluster its data belongs to
//! (cluster id, app, node, node count, partitions): a worker restarted on
//! it under another shape (here another app) stops with an error naming
//! both, instead of reading another app's state or routing keys elsewhere;
//! under the same configuration it starts again.

mod common;
use common::free_addr;
use common::node::Node;

use std::process::Command;

#[test]
fn a_worker_on_a_data_directory_of_another_shape_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), "doubler", free_addr(), "");
    node.start();
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let shape = std::fs::read_to_string(node.data.join("SHAPE")).unwrap();
    assert_eq!(
        shape.trim(),
        "cluster_id=1 app=doubler node_id=1 node=0 nodes=1 partitions=0"
    );
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(&node.config, text.replace("doubler", "sequence-window")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(["worker", "--config"])
        .arg(&node.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("this data directory belongs to `cluster_id=1 app=doubler node_id=1 node=0 nodes=1 partitions=0`, and the configuration says `cluster_id=1 app=sequence-window"),
        "{err}"
    );
    std::fs::write(&node.config, text).unwrap();
    node.start();
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
}

/// `limits.socket_buffer_bytes` is asked of the kernel, and the worker
/// says what it was granted (Linux reports twice what it keeps for data,
/// up to net.core.rmem_max / wmem_max).
#[test]
fn a_worker_says_what_socket_buffers_it_was_granted() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(
        dir.path(),
        "doubler",
        free_addr(),
        "socket_buffer_bytes = 65536",
    );
    node.start();
    node.wait_log("socket buffers:");
    assert_eq!(node.term(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("socket buffers:"))
        .unwrap_or_else(|| panic!("no socket buffer line: {log}"));
    assert!(
        line.contains(
            "asked 65536 bytes each way (limits.socket_buffer_bytes), the kernel granted receive "
        ),
        "{line}"
    );
    let said = line.split_once("socket buffers:").map_or("", |x| x.1);
    let granted: Vec<usize> = said
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // [65536, receive, send]: Linux grants at least what was asked here.
    assert!(
        granted.len() >= 3 && granted[1] >= 65536 && granted[2] >= 65536,
        "{line}"
    );
}
