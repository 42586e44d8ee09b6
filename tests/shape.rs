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
