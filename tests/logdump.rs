//! verity-logdump on logs written through the log API: `--limit` counts
//! what is printed (frame lines with `--frames`, records with `--records`),
//! a `--from` inside a record is a usage error naming the boundaries
//! around it, and a log whose segment header is damaged is reported as
//! DAMAGED with exit 1 while the other logs are still dumped; `--tail N`
//! prints the last N, `--hexdump` whole payloads, and `--follow` what a
//! live writer appends (across a segment roll) until SIGTERM or `--limit`.

use std::path::Path;
use std::process::Command;

use bytes::BytesMut;
use verity::log::{Durability, Log, LogConfig};
use verity::storage::RecordKind;
use verity_wire::Encoder;

/// Writes log `name` in `dir`: `records` records of 3 DATA frames each
/// (channel 1, seqs running on); returns each record's position.
fn write_log(dir: &Path, name: &str, records: u64) -> Vec<u64> {
    let mut log = open_log(dir, name);
    (0..records).map(|r| append(&mut log, r, 8)).collect()
}

fn open_log(dir: &Path, name: &str) -> Log {
    let config = LogConfig {
        segment_size_bytes: 1 << 20,
        durability: Durability::Process,
        ..LogConfig::default()
    };
    Log::open(dir, name, config).unwrap().0
}

/// Record `r`: 3 DATA frames (channel 1, seqs `3r+1..=3r+3`), each payload
/// the seq's 8 little-endian bytes repeated to `payload` bytes; its position.
fn append(log: &mut Log, r: u64, payload: usize) -> u64 {
    let enc = Encoder::default();
    let mut run = BytesMut::new();
    for f in 0..3 {
        let seq = r * 3 + f + 1;
        let body: Vec<u8> = seq
            .to_le_bytes()
            .iter()
            .copied()
            .cycle()
            .take(payload)
            .collect();
        enc.data(&mut run, 1, seq, seq, false, &body).unwrap();
    }
    log.append(RecordKind::Input.code(), 1_000 + r, &run)
        .unwrap()
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

#[test]
fn tail_prints_the_last_n_and_the_summary_still_covers_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let positions = write_log(dir.path(), "journal", 5);
    let j = dir.path().join("journal");
    let j = j.to_str().unwrap();
    let (code, out, err) = logdump(&[j, "--frames", "--tail", "4"]);
    assert_eq!(code, Some(0), "{err}");
    let seqs: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" channel=1 "))
        .filter_map(|l| l.split(" seq=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(seqs, ["12", "13", "14", "15"], "{out}");
    assert!(out.contains("journal: 1 segment(s), 5 records"), "{out}");
    let (code, out, _) = logdump(&[j, "--records", "--tail", "2"]);
    assert_eq!(code, Some(0));
    let at: Vec<String> = out
        .lines()
        .filter(|l| l.contains(" kind="))
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        at,
        [format!("@{}", positions[3]), format!("@{}", positions[4])]
    );
    // More than there is: all of it.
    let (_, out, _) = logdump(&[j, "--records", "--tail", "50"]);
    assert_eq!(out.lines().filter(|l| l.contains(" kind=")).count(), 5);
    let (code, _, err) = logdump(&[j, "--records", "--tail", "2", "--limit", "1"]);
    assert_eq!(
        code,
        Some(2),
        "--tail and --limit together are a usage error: {err}"
    );
}

#[test]
fn frames_show_payloads_as_hex_and_ascii_and_hexdump_shows_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open_log(dir.path(), "journal");
    append(&mut log, 0x41, 20);
    drop(log);
    let j = dir.path().join("journal");
    let (code, out, err) = logdump(&[j.to_str().unwrap(), "--frames", "--hexdump", "--limit", "1"]);
    assert_eq!(code, Some(0), "{err}");
    // Seq 0xc4 = 196: its bytes c4 00.. repeated to 20 bytes.
    assert!(
        out.contains("len=20 payload=c400000000000000c400000000000000… |................|"),
        "{out}"
    );
    assert!(
        out.contains(
            "    00000000  c4 00 00 00 00 00 00 00  c4 00 00 00 00 00 00 00  |................|"
        ),
        "{out}"
    );
    assert!(out.contains("    00000010  c4 00 00 00 "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" channel=1 ")).count(),
        1,
        "{out}"
    );
}

/// `verity-logdump ARGS` with stdout read line by line on a thread.
fn spawn_logdump(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_verity-logdump"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next `n` record lines from `rx`, each within 10 s.
fn record_lines(rx: &std::sync::mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("record line {i} of {n} did not come"))
        })
        .collect()
}

#[test]
fn follow_prints_what_a_live_writer_appends_across_a_segment_roll_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open_log(dir.path(), "journal");
    let first: Vec<u64> = (0..3).map(|r| append(&mut log, r, 8)).collect();
    let j = dir.path().join("journal");
    let (mut child, rx) =
        spawn_logdump(&[j.to_str().unwrap(), "--records", "--follow", "--tail", "1"]);
    let got = record_lines(&rx, 1);
    assert!(
        got[0].starts_with(&format!("journal @{} ", first[2])),
        "{got:?}"
    );
    // 40 records of 3 x 64 KiB: the 1 MiB segments roll several times while
    // the follower reads.
    let more: Vec<u64> = (3..43).map(|r| append(&mut log, r, 64 << 10)).collect();
    let got = record_lines(&rx, more.len());
    for (line, p) in got.iter().zip(&more) {
        assert!(
            line.starts_with(&format!("journal @{p} ")),
            "{line} (expected @{p})"
        );
    }
    assert!(std::fs::read_dir(&j).unwrap().count() > 2, "the log rolled");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM ends --follow cleanly");
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(5)).is_err(),
        "no summary after --follow"
    );
}

#[test]
fn follow_stops_after_limit_lines_and_needs_one_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open_log(dir.path(), "journal");
    append(&mut log, 0, 8);
    let j = dir.path().join("journal");
    let (mut child, rx) =
        spawn_logdump(&[j.to_str().unwrap(), "--frames", "--follow", "--limit", "5"]);
    assert_eq!(record_lines(&rx, 3).len(), 3);
    append(&mut log, 1, 8);
    let got = record_lines(&rx, 2);
    assert!(got[1].contains(" seq=5 "), "{got:?}");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "--limit 5 ends --follow"
    );
    write_log(dir.path(), "outbound", 1);
    let (code, _, err) = logdump(&[dir.path().to_str().unwrap(), "--follow"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--follow reads one log; this directory holds 2 (name one with --log: journal, outbound)"), "{err}");
}
