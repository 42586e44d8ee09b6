//! verity-recv's storage: a reopened file keeps what it holds (a torn tail
//! is truncated at the first bad record, with a message), a file that is not
//! a received file is refused untouched, `--fresh` truncates on purpose, and
//! ACKs (and RESUMEs) name only what is durable at the configured level. A
//! raw-socket node stands in for the engine here; tests/recv_restart.rs runs
//! the real engine.

mod common;
use common::raw_node::RawNode;
use common::TmpDir;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use verity_tools::formats::{read_received, ReceivedWriter};
use verity_tools::ports::{any_port, free_addr};
use verity_tools::recv::{Durability, Receiver, RecvConfig};
use verity_wire::{Encoder, Kind};

fn tmp_dir(name: &str) -> TmpDir {
    TmpDir::new("recv", name)
}

/// Bytes of a record with an 8-byte payload (32-byte header, no padding).
const REC: u64 = 40;
/// Bytes of the file header.
const HDR: u64 = 16;

/// A received file with `per_channel` records on each of `channels`
/// (interleaved), payloads the seq: (path, its bytes).
fn received_file(dir: &Path, channels: &[u32], per_channel: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.join("r.bin");
    let mut w = ReceivedWriter::create(&path).unwrap();
    for seq in 1..=per_channel {
        for &c in channels {
            w.write(c, seq, 1 << 40 | seq, &seq.to_be_bytes()).unwrap();
        }
    }
    w.finish().unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, bytes)
}

fn recv_bin(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verity-recv"))
        .args(["--listen", &free_addr().unwrap().to_string(), "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_torn_tail_is_truncated_at_the_first_bad_record_and_delivered_rebuilt() {
    let dir = tmp_dir("torn");
    // Channels 7 and 9, seqs 1..=5 each: 10 records, 16 + 400 bytes.
    let (path, full) = received_file(&dir, &[1007, 1009], 5);
    assert_eq!(full.len() as u64, HDR + 10 * REC);
    let last = (HDR + 9 * REC) as usize;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    // (what, damage, where the good prefix ends, records kept)
    let cases: Vec<(&str, Damage, u64, u64)> = vec![
        (
            "a record cut short",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 13)),
            HDR + 9 * REC,
            9,
        ),
        (
            "a header cut short",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 20)),
            HDR + 9 * REC,
            9,
        ),
        (
            "a zeroed tail",
            Box::new(|b: &mut Vec<u8>| b.extend_from_slice(&[0; 4096])),
            HDR + 10 * REC,
            10,
        ),
        (
            "zeroed last two records",
            Box::new(|b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 2 * REC as usize..].fill(0)
            }),
            HDR + 8 * REC,
            8,
        ),
        (
            "a bad CRC",
            Box::new(move |b: &mut Vec<u8>| b[last + 35] ^= 0x40),
            HDR + 9 * REC,
            9,
        ),
        (
            "garbage appended",
            Box::new(|b: &mut Vec<u8>| {
                b.extend_from_slice(b"\x07garbage, not a record at all....!!")
            }),
            HDR + 10 * REC,
            10,
        ),
    ];
    for (what, damage, good, kept) in cases {
        let mut bytes = full.clone();
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
        let o = recv_bin(&["--expect", "0"], &path);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{what}: {err}");
        let dropped = bytes.len() as u64 - good;
        assert_eq!(
            err.matches("torn tail").count(),
            1,
            "{what}: one message: {err}"
        );
        assert!(
            err.contains(&format!(
                "{}: torn tail at byte offset {good}",
                path.display()
            )) && err.contains(&format!("dropping {dropped} bytes")),
            "{what}: {err}"
        );
        assert!(
            out.contains(&format!("records={kept} recovered={kept} ")),
            "{what}: {out}"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), good, "{what}");
        assert_eq!(fs::read(&path).unwrap(), full[..good as usize], "{what}");
        // Reopened again: nothing more to drop, no message.
        let o = recv_bin(&["--expect", "0"], &path);
        assert!(!text(&o).1.contains("torn tail"), "{what}: {}", text(&o).1);
    }

    // Delivered rebuilt, as the RESUMEs say: 9 records kept, channel 1009
    // (node 9's) at 4.
    let mut bytes = full.clone();
    bytes.truncate(bytes.len() - 1);
    fs::write(&path, &bytes).unwrap();
    let r = Receiver::start(&RecvConfig::new(any_port(), &path)).unwrap();
    assert_eq!(r.stats().recovered, 9);
    assert_eq!(r.stats().torn_bytes, REC - 1);
    let (mut node9, resume) = RawNode::connect_resume_as(r.addr(), 9);
    assert_eq!(resume, BTreeMap::from([(1009, 4)]));
    let (mut node7, resume) = RawNode::connect_resume_as(r.addr(), 7);
    assert_eq!(resume, BTreeMap::from([(1007, 5)]));
    // What the file holds is ACKed right after the RESUME (which drops
    // nothing at a node); node 9's 4 likewise.
    assert_eq!(node7.ack(1007, 5, Duration::from_secs(10)), Some(5));
    assert_eq!(node9.ack(1009, 4, Duration::from_secs(10)), Some(4));
    // The nodes resend from there: 1009:5 is written, 1007:5 is a duplicate.
    node9.send(1009, 5..=6);
    node7.send(1007, 5..=5);
    assert_eq!(node9.ack(1009, 6, Duration::from_secs(10)), Some(6));
    assert_eq!(
        node7.ack(1007, 5, Duration::from_secs(10)),
        Some(5),
        "the duplicate is ACKed again"
    );
    let st = r.stop().unwrap();
    assert_eq!((st.records, st.recovered, st.duplicates), (11, 9, 1));
    let recs = read_received(&path).unwrap();
    let seqs: Vec<(u32, u64)> = recs.iter().map(|r| (r.channel, r.seq)).collect();
    assert_eq!(seqs[9..], [(1009, 5), (1009, 6)]);
    assert_eq!(recs[9].offset, HDR + 9 * REC);
}

#[test]
fn a_record_out_of_sequence_ends_the_good_prefix() {
    let dir = tmp_dir("oos");
    let (path, full) = received_file(&dir, &[3], 4);
    // Seq 6 after 4 (a record whose seq does not follow delivered + 1).
    let mut w = ReceivedWriter::append(
        fs::OpenOptions::new().append(true).open(&path).unwrap(),
        &path,
        full.len() as u64,
    );
    w.write(3, 6, 6, &6u64.to_be_bytes()).unwrap();
    w.finish().unwrap();
    let o = recv_bin(&["--expect", "0"], &path);
    let (_, err) = text(&o);
    assert!(
        err.contains("torn tail at byte offset 176")
            && err.contains("channel 3 seq 6, expected seq 5")
            && err.contains("dropping 40 bytes"),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), full);
}

#[test]
fn a_file_that_is_not_a_received_file_is_refused_and_left_untouched() {
    let dir = tmp_dir("refuse");
    let path = dir.join("input.u64");
    let mut bytes = Vec::new();
    for v in 1..=1000u64 {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    fs::write(&path, &bytes).unwrap();
    for args in [&[][..], &["--fresh"][..]] {
        let o = recv_bin(args, &path);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("input.u64: not a received file") && err.contains("refusing"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), bytes, "{args:?}: untouched");
    }
    // A received file of another version, too.
    let (path, mut full) = received_file(&dir, &[1], 3);
    full[8] = 9;
    fs::write(&path, &full).unwrap();
    let o = recv_bin(&[], &path);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("format version 9"), "{}", text(&o).1);
    assert_eq!(fs::read(&path).unwrap(), full);
}

#[test]
fn fresh_truncates_on_purpose_and_a_restart_without_it_keeps_everything() {
    let dir = tmp_dir("fresh");
    let (path, full) = received_file(&dir, &[1, 2], 50);
    let o = recv_bin(&["--expect", "0"], &path);
    assert!(text(&o).0.contains("records=100 recovered=100 "));
    assert_eq!(fs::read(&path).unwrap(), full, "a reopen changes nothing");
    let o = recv_bin(&["--expect", "0", "--fresh"], &path);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--fresh: truncated the file (4016 bytes)"),
        "{err}"
    );
    assert!(out.contains("records=0 recovered=0 "), "{out}");
    assert_eq!(fs::read(&path).unwrap(), b"VRTYRECV\x01\0\0\0\0\0\0\0");
    // An empty file, or a header cut short, is a new file.
    fs::write(&path, b"VRTY").unwrap();
    let o = recv_bin(&["--expect", "0"], &path);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(fs::metadata(&path).unwrap().len(), HDR);
}

#[test]
fn a_second_receiver_on_the_same_file_is_refused() {
    let dir = tmp_dir("busy");
    let path = dir.join("r.bin");
    let r = Receiver::start(&RecvConfig::new(any_port(), &path)).unwrap();
    let o = recv_bin(&[], &path);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("another receiver has this file open"),
        "{}",
        text(&o).1
    );
    r.stop().unwrap();
    assert_eq!(recv_bin(&["--expect", "0"], &path).status.code(), Some(0));
}

/// Holds each `fdatasync` back until the test releases it, and records the
/// file length each one covers.
#[derive(Default)]
struct Gate {
    m: Mutex<(u32, Vec<u64>)>,
    cv: Condvar,
}

impl Gate {
    fn hook(self: &Arc<Self>) -> verity_tools::recv::SyncHook {
        let g = Arc::clone(self);
        Arc::new(move |target| {
            let mut s = g.m.lock().unwrap();
            s.1.push(target);
            g.cv.notify_all();
            let until = Instant::now() + Duration::from_secs(20);
            while s.0 == 0 && Instant::now() < until {
                s = g.cv.wait_timeout(s, Duration::from_millis(50)).unwrap().0;
            }
            s.0 = s.0.saturating_sub(1);
        })
    }

    fn release(&self) {
        self.m.lock().unwrap().0 += 1;
        self.cv.notify_all();
    }

    /// The lengths the syncs so far were asked to cover, once there are `n`.
    fn targets(&self, n: usize) -> Vec<u64> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut s = self.m.lock().unwrap();
        while s.1.len() < n && Instant::now() < until {
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        s.1.clone()
    }
}

fn wait_len(path: &Path, len: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    while fs::metadata(path).unwrap().len() < len {
        assert!(Instant::now() < until, "the file never reached {len} bytes");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn fsync_acks_and_resumes_wait_for_the_sync_that_covers_them_and_one_sync_serves_all() {
    let dir = tmp_dir("fsync");
    let path = dir.join("r.bin");
    let gate = Arc::new(Gate::default());
    let mut rc = RecvConfig::new(any_port(), &path);
    rc.durability = Durability::Fsync;
    rc.before_sync = Some(gate.hook());
    let r = Receiver::start(&rc).unwrap();
    let short = Duration::from_millis(300);
    // Four nodes connect; nothing is written yet, so no sync is needed.
    let mut nodes: Vec<RawNode> = (0..4)
        .map(|k| RawNode::connect_resume_as(r.addr(), 1 + k).0)
        .collect();
    assert!(gate.targets(0).is_empty());

    // Node 0 sends 100 records: written, a sync starts, no ACK until it ends.
    nodes[0].send(1001, 1..=100);
    let after_a = HDR + 100 * REC;
    assert_eq!(gate.targets(1), [after_a]);
    assert_eq!(nodes[0].ack(1001, 100, short), None, "ACK before the sync");
    // Three more write while that sync is held: they wait too.
    for (i, n) in nodes[1..].iter_mut().enumerate() {
        n.send(1002 + i as u32, 1..=50);
    }
    let after_all = after_a + 150 * REC;
    wait_len(&path, after_all);
    for (i, n) in nodes[1..].iter_mut().enumerate() {
        assert_eq!(n.ack(1002 + i as u32, 50, Duration::from_millis(100)), None);
    }
    // The first sync ends: node 0's ACK; one sync then covers the other three.
    gate.release();
    assert_eq!(nodes[0].ack(1001, 100, Duration::from_secs(10)), Some(100));
    assert_eq!(gate.targets(2), [after_a, after_all]);
    for (i, n) in nodes[1..].iter_mut().enumerate() {
        assert_eq!(n.ack(1002 + i as u32, 50, Duration::from_millis(100)), None);
    }
    gate.release();
    for (i, n) in nodes[1..].iter_mut().enumerate() {
        assert_eq!(
            n.ack(1002 + i as u32, 50, Duration::from_secs(10)),
            Some(50)
        );
    }
    // Covered by a sync that finished: no further sync.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gate.targets(2).len(), 2);
    assert_eq!(r.stats().syncs, 2);

    // A RESUME names only durable records: a node connecting while a sync
    // is held hears nothing until it ends.
    nodes[0].send(1001, 101..=110);
    let after_b = after_all + 10 * REC;
    assert_eq!(gate.targets(3)[2], after_b);
    let mut late = RawNode::connect(r.addr());
    assert_eq!(late.resume(short), None, "RESUME before the sync");
    gate.release();
    assert_eq!(
        late.resume(Duration::from_secs(10)),
        Some(BTreeMap::from([(1001, 110)]))
    );
    assert_eq!(nodes[0].ack(1001, 110, Duration::from_secs(10)), Some(110));
    let st = r.stop().unwrap();
    assert_eq!((st.records, st.syncs), (260, 3));
    assert_eq!(read_received(&path).unwrap().len(), 260);
}

#[test]
fn process_durability_acks_once_written_without_syncing() {
    let dir = tmp_dir("process");
    let path = dir.join("r.bin");
    let gate = Arc::new(Gate::default());
    let mut rc = RecvConfig::new(any_port(), &path);
    rc.before_sync = Some(gate.hook());
    let r = Receiver::start(&rc).unwrap();
    let (mut n, resume) = RawNode::connect_resume_as(r.addr(), 5);
    assert_eq!(resume, BTreeMap::from([(1005, 0)]));
    n.send(1005, 1..=1000);
    assert_eq!(n.ack(1005, 1000, Duration::from_secs(10)), Some(1000));
    // ACKed means in the file.
    assert!(fs::metadata(&path).unwrap().len() >= HDR + 1000 * REC);
    assert!(gate.targets(0).is_empty());
    let st = r.stop().unwrap();
    assert_eq!((st.records, st.syncs), (1000, 0));
}

/// Issue 11, "What to build" 4, at the sink: a resend must carry the bytes
/// of the first send. A duplicate with other bytes is refused (PROTOCOL),
/// the record in the file stands; a true resend (flag RESEND) is an
/// ordinary duplicate.
#[test]
fn a_duplicate_whose_bytes_differ_is_refused_and_the_written_record_stands() {
    let dir = tmp_dir("conflict");
    let path = dir.join("r.bin");
    let r = Receiver::start(&RecvConfig::new(any_port(), &path)).unwrap();
    let (mut n, _) = RawNode::connect_resume(r.addr());
    n.send(1001, 1..=5);
    assert_eq!(n.ack(1001, 5, Duration::from_secs(10)), Some(5));
    let frame = |resend: bool, value: u64| {
        let mut b = BytesMut::new();
        Encoder::default()
            .data(&mut b, 1001, 3, 1 << 40 | 3, resend, &value.to_be_bytes())
            .unwrap();
        b
    };
    // The same bytes again, flagged RESEND: a duplicate, re-ACKed.
    n.s.write_all(&frame(true, 3)).unwrap();
    assert_eq!(n.ack(1001, 5, Duration::from_secs(10)), Some(5));
    // Seq 3 with another value: refused.
    n.s.write_all(&frame(true, 999)).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let error = loop {
        if let Ok(Some(f)) = n.dec.decode() {
            if f.kind() == Kind::Error {
                let v = f.view();
                let (code, text) = v.error().unwrap();
                break (code, text.to_owned());
            }
            continue;
        }
        assert_eq!(n.fill(until), Some(true), "an ERROR before the close");
    };
    assert_eq!(error.0, verity_wire::ErrorCode::Protocol);
    assert!(
        error.1.contains("DATA seq 3 of channel 1001 differs"),
        "{}",
        error.1
    );
    let stats = r.stop().unwrap();
    assert_eq!(
        (stats.duplicates, stats.conflicts, stats.records),
        (1, 1, 5)
    );
    let records = read_received(&path).unwrap();
    assert_eq!(
        records[2].payload,
        3u64.to_be_bytes(),
        "the first version stands"
    );
}

/// Issue 15, item 7, at the sink: frames after a gap are kept, the gap is
/// NACKed at once by range (and again on the timer while nothing comes),
/// the resend of just the missing seqs completes the file in order, and
/// nothing is a duplicate.
#[test]
fn frames_after_a_gap_are_kept_and_just_the_gap_is_nacked() {
    let dir = tmp_dir("reorder");
    let path = dir.join("r.bin");
    let r = Receiver::start(&RecvConfig::new(any_port(), &path)).unwrap();
    let (mut n, _) = RawNode::connect_resume(r.addr());
    // One write: 1..=3, 6..=8, 10 (4, 5 and 9 "lost").
    let mut b = BytesMut::new();
    for seq in [1, 2, 3, 6, 7, 8, 10] {
        Encoder::default()
            .data(&mut b, 1001, seq, 1 << 40 | seq, false, &seq.to_be_bytes())
            .unwrap();
    }
    n.s.write_all(&b).unwrap();
    // The NACKs, each naming just its gap; the first again on the timer.
    let until = Instant::now() + Duration::from_secs(10);
    let mut nacks: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut acked = 0;
    while nacks.len() < 3 {
        while let Ok(Some(f)) = n.dec.decode() {
            if f.kind() == Kind::Ack {
                acked = acked.max(f.header().seq());
            }
            if f.kind() == Kind::Nack {
                let v = f.view();
                let ranges = v.nack_ranges().unwrap();
                nacks.push(
                    ranges
                        .iter()
                        .map(|r| (r.first.get(), r.last.get()))
                        .collect(),
                );
            }
        }
        if nacks.len() >= 3 {
            break;
        }
        assert_eq!(n.fill(until), Some(true), "NACKs: {nacks:?}");
    }
    assert_eq!(nacks[0], vec![(4, 5)]);
    assert_eq!(nacks[1], vec![(9, 9)]);
    assert_eq!(nacks[2], vec![(4, 5), (9, 9)], "every open gap, again");
    assert_eq!(acked, 3, "kept frames are not written, so not ACKed");
    n.send(1001, 4..=5);
    n.send(1001, 9..=9);
    assert_eq!(n.ack(1001, 10, Duration::from_secs(10)), Some(10));
    let stats = r.stop().unwrap();
    assert_eq!((stats.records, stats.duplicates), (10, 0));
    let records = read_received(&path).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "in seq order");
    for r in &records {
        assert_eq!(r.payload, r.seq.to_be_bytes(), "seq {}", r.seq);
    }
}
