//! verity-logdump on logs written through the log API: `--limit` counts
//! what is printed (frame lines with `--frames`, records with `--records`),
//! a `--from` inside a record is a usage error naming the boundaries
//! around it, and a log whose segment header is damaged is reported as
//! DAMAGED with exit 1 while the other logs are still dumped.

use std::path::Path;
use std::process::Command;

use bytes::BytesMut;
use verity::log::{Durability, Log, LogConfig};
use verity::storage::RecordKind;
use verity_wire::Encoder;

/// Writes log `name` in `dir`: `records` records of 3 DATA frames each
/// (channel 1, seqs running on); returns each record's position.
fn write_log(dir: &Path, name: &str, records: u64) -> Vec<u64> {
    let config = LogConfig {
        segment_size_bytes: 1 << 20,
        durability: Durability::Process,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(dir, name, config).unwrap();
    let enc = Encoder::default();
    let mut positions = Vec::new();
    for r in 0..records {
        let mut run = BytesMut::new();
        for f in 0..3 {
            let seq = r * 3 + f + 1;
            enc.data(&mut run, 1, seq, seq, false, &seq.to_le_bytes())
                .unwrap();
        }
        positions.push(
            log.append(RecordKind::Input.code(), 1_000 + r, &run)
                .unwrap(),
        );
    }
    positions
}

fn logdump(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_verity-logdump"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn limit_counts_what_is_printed_and_from_must_be_a_record_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let positions = write_log(dir.path(), "journal", 5);
    let journal = dir.path().join("journal");
    let j = journal.to_str().unwrap();
    let (code, out, err) = logdump(&[j, "--frames", "--limit", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" channel=1 ")).count(),
        4,
        "{out}"
    );
    let (code, out, _) = logdump(&[j, "--records", "--limit", "2"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().filter(|l| l.contains(" kind=")).count(),
        2,
        "{out}"
    );
    let at = positions[2].to_string();
    let (code, out, _) = logdump(&[j, "--records", "--from", &at]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().filter(|l| l.contains(" kind=")).count(),
        3,
        "{out}"
    );
    let inside = (positions[2] + 8).to_string();
    let (code, _, err) = logdump(&[j, "--records", "--from", &inside]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--from {inside} is not a record boundary: the records around it start at {} and {}",
            positions[2], positions[3]
        )),
        "{err}"
    );
}

#[test]
fn a_damaged_segment_header_is_exit_1_and_the_other_logs_are_still_dumped() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), "journal", 3);
    write_log(dir.path(), "outbound", 2);
    let seg = std::fs::read_dir(dir.path().join("outbound"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[..8].copy_from_slice(b"garbage!");
    std::fs::write(&seg, bytes).unwrap();
    let (code, out, err) = logdump(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("outbound: DAMAGED: cannot be read"), "{out}");
    assert!(
        out.contains("journal:"),
        "the journal is still dumped: {out}"
    );
    assert!(out.contains("read to its end"), "{out}");
}
