//! verity-check against received files built here by test-only expected-output
//! builders (written from the spec, not from the engine nor from the checker),
//! first correct (PASS), then with one planted fault each (exactly that class,
//! count 1, FAIL).

mod common;
use common::TmpDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use verity_tools::check::{check, App, CheckError, CheckReport};
use verity_tools::formats::ReceivedWriter;

fn tmp_dir(name: &str) -> TmpDir {
    TmpDir::new("check", name)
}

const OUT_CHANNEL: u32 = 7;

#[derive(Clone, Debug)]
struct Out {
    channel: u32,
    seq: u64,
    trace: u64,
    payload: Vec<u8>,
}

fn out(trace: u64, payload: Vec<u8>) -> Out {
    Out {
        channel: OUT_CHANNEL,
        seq: 0,
        trace,
        payload,
    }
}

fn trace(channel: u64, seq: u64) -> u64 {
    (channel << 40) | seq
}

/// Output seqs as the engine assigns them: 1, 2, 3, ... per channel.
fn renumber(outs: &mut [Out]) {
    let mut next = std::collections::HashMap::new();
    for o in outs {
        let n = next.entry(o.channel).or_insert(0u64);
        *n += 1;
        o.seq = *n;
    }
}

fn write_received(path: &Path, outs: &[Out]) {
    let mut w = ReceivedWriter::create(path).unwrap();
    for o in outs {
        w.write(o.channel, o.seq, o.trace, &o.payload).unwrap();
    }
    w.finish().unwrap();
}

fn run(dir: &Path, app: App, inputs: &[PathBuf], outs: &[Out]) -> CheckReport {
    let received = dir.join("received.bin");
    write_received(&received, outs);
    check(app, inputs, &received).unwrap()
}

fn counts(r: &CheckReport) -> [u64; 5] {
    [r.lost, r.duplicated, r.reordered, r.wrong, r.unexpected]
}

const LOST: usize = 0;
const DUPLICATED: usize = 1;
const REORDERED: usize = 2;
const WRONG: usize = 3;
const UNEXPECTED: usize = 4;

fn assert_pass(r: &CheckReport) {
    assert!(r.passed(), "{r}");
    assert_eq!(r.expected, r.received, "{r}");
    assert_eq!(r.ok, r.expected, "{r}");
    assert!(r.to_string().starts_with("check: PASS app="), "{r}");
}

fn assert_only(r: &CheckReport, class: usize) {
    let mut want = [0u64; 5];
    want[class] = 1;
    assert_eq!(counts(r), want, "{r}");
    assert!(!r.passed());
    assert!(r.summary_line().starts_with("check: FAIL "), "{r}");
    assert_eq!(r.first_problems.len(), 1, "{r}");
}

/// Plants each generic fault in a correct output list and checks the verdict.
/// `swap` = two arrival positions holding consecutive outputs of one key.
fn plant_generic_faults(
    dir: &Path,
    app: App,
    inputs: &[PathBuf],
    good: &[Out],
    swap: (usize, usize),
) {
    let mut good = good.to_vec();
    renumber(&mut good);
    assert_pass(&run(dir, app, inputs, &good));

    // Lost by the engine: the record never got an output seq.
    let mut v = good.clone();
    v.remove(good.len() / 2);
    renumber(&mut v);
    assert_only(&run(dir, app, inputs, &v), LOST);

    // Duplicated: same trace id and payload under a new seq.
    let mut v = good.clone();
    v.push(good[1].clone());
    renumber(&mut v);
    assert_only(&run(dir, app, inputs, &v), DUPLICATED);

    // Two outputs of one key emitted in the wrong order (seqs stay in order).
    let mut v = good.clone();
    let (a, b) = swap;
    let (ta, pa) = (v[a].trace, v[a].payload.clone());
    v[a].trace = v[b].trace;
    v[a].payload = v[b].payload.clone();
    v[b].trace = ta;
    v[b].payload = pa;
    assert_only(&run(dir, app, inputs, &v), REORDERED);

    // Payload altered.
    let mut v = good.clone();
    let last = v[2].payload.len() - 1;
    v[2].payload[last] ^= 0x01;
    assert_only(&run(dir, app, inputs, &v), WRONG);

    // A record whose trace id matches no input.
    let mut v = good.clone();
    v.push(out(trace(1, 1_000_000), good[0].payload.clone()));
    renumber(&mut v);
    assert_only(&run(dir, app, inputs, &v), UNEXPECTED);

    // Receiver faults on the output channel's seqs.
    let mut v = good.clone();
    v.insert(3, good[2].clone());
    let r = run(dir, app, inputs, &v);
    assert_only(&r, DUPLICATED);
    assert!(r.first_problems[0].contains("delivered again"), "{r}");

    let mut v = good.clone();
    v.remove(3);
    let r = run(dir, app, inputs, &v);
    assert_eq!(counts(&r), [1, 0, 1, 0, 0], "{r}");
    assert!(r.to_string().contains("seq jumped from 3 to 5"), "{r}");
}

// ---------------------------------------------------------------------------
// doubler

fn u64_file(path: &Path, values: &[u64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    fs::write(path, bytes).unwrap();
}

#[test]
fn doubler_pass_and_each_planted_fault_is_classified() {
    let dir = tmp_dir("doubler");
    let input = dir.join("in.u64");
    let values = [5u64, 1, (1 << 63) + 3, 7, 0, 42, 9, 11];
    u64_file(&input, &values);
    let good: Vec<Out> = values
        .iter()
        .enumerate()
        .map(|(i, n)| {
            out(
                trace(1, i as u64 + 1),
                n.wrapping_mul(2).to_be_bytes().to_vec(),
            )
        })
        .collect();
    plant_generic_faults(&dir, App::Doubler, &[input], &good, (4, 5));
}

// ---------------------------------------------------------------------------
// word-count: builder written from the spec with chars, not bytes.

fn word_count_outputs(lines: &[&str]) -> Vec<Out> {
    let mut counts = std::collections::HashMap::<String, u64>::new();
    let mut outs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut word = String::new();
        let mut words = Vec::new();
        for c in line.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '\'' {
                word.push(c.to_ascii_lowercase());
            } else if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
        }
        for w in words {
            let n = counts.entry(w.clone()).or_default();
            *n += 1;
            outs.push(out(
                trace(1, i as u64 + 1),
                format!("{w}\t{n}").into_bytes(),
            ));
        }
    }
    outs
}

#[test]
fn word_count_pass_and_each_planted_fault_is_classified() {
    let dir = tmp_dir("wc");
    let input = dir.join("in.txt");
    let lines = [
        "Hello, world! it's a TEST",
        "hello HELLO\r",
        "",
        "café x-ray 42 o'neil",
        "test  hello",
    ];
    // The last line has no '\n': it still counts.
    fs::write(&input, lines.join("\n")).unwrap();
    let good = word_count_outputs(&lines);
    assert_eq!(good.len(), 14);
    assert_eq!(good[5].payload, b"hello\t2");
    assert_eq!(good[13].payload, b"hello\t4");
    // good[0] = hello 1, good[5] = hello 2: one key, consecutive.
    plant_generic_faults(&dir, App::WordCount, &[input], &good, (0, 5));
}

#[test]
fn word_count_extra_output_of_a_real_line_is_unexpected() {
    let dir = tmp_dir("wc-extra");
    let input = dir.join("in.txt");
    fs::write(&input, "a b\n").unwrap();
    let mut v = word_count_outputs(&["a b"]);
    v.push(out(trace(1, 1), b"c\t1".to_vec()));
    renumber(&mut v);
    assert_only(&run(&dir, App::WordCount, &[input], &v), UNEXPECTED);
}

// ---------------------------------------------------------------------------
// sequence-window

fn window_outputs(values: &[u64]) -> Vec<Out> {
    let mut windows: [Vec<u64>; 2] = [vec![0; 4], vec![0; 4]];
    let mut outs = Vec::new();
    for (i, &n) in values.iter().enumerate() {
        let w = &mut windows[(n % 2) as usize];
        w.remove(0);
        w.push(n);
        let payload = w.iter().flat_map(|v| v.to_be_bytes()).collect();
        outs.push(out(trace(1, i as u64 + 1), payload));
    }
    outs
}

#[test]
fn sequence_window_pass_and_each_planted_fault_is_classified() {
    let dir = tmp_dir("sw");
    let input = dir.join("in.u64");
    let values: Vec<u64> = (1..=12).collect();
    u64_file(&input, &values);
    let good = window_outputs(&values);
    let win = |o: &Out| -> Vec<u64> {
        o.payload
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert_eq!(win(&good[0]), [0, 0, 0, 1]);
    assert_eq!(win(&good[2]), [0, 0, 1, 3]);
    assert_eq!(win(&good[8]), [3, 5, 7, 9]);
    // Outputs for inputs 5 and 7: key 1, consecutive within the key.
    plant_generic_faults(&dir, App::SequenceWindow, &[input], &good, (4, 6));
}

// ---------------------------------------------------------------------------
// market-spread: hand-made records and a test-only engine model.

fn fixish(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn nbbo_rec(sym: &[u8; 4], bid: f64, offer: f64) -> Vec<u8> {
    let mut r = vec![2u8];
    r.extend_from_slice(sym);
    r.extend_from_slice(b"20160902-15:47:52.000");
    r.extend_from_slice(&bid.to_be_bytes());
    r.extend_from_slice(&offer.to_be_bytes());
    assert_eq!(r.len(), 42);
    r
}

fn order_rec(sym: &[u8; 4], id: &[u8; 6]) -> Vec<u8> {
    let mut r = vec![1u8, 1];
    r.extend_from_slice(&77u32.to_be_bytes());
    r.extend_from_slice(id);
    r.extend_from_slice(sym);
    r.extend_from_slice(&100.0f64.to_be_bytes());
    r.extend_from_slice(&10.0f64.to_be_bytes());
    r.extend_from_slice(b"20160902-15:47:52.001");
    assert_eq!(r.len(), 53);
    r
}

/// (decision, reason) as one pair keeps the argument list short.
fn decision(
    order_seq: u64,
    version: u64,
    bid: f64,
    offer: f64,
    id: &[u8],
    sym: &[u8],
    (d, reason): (u8, u8),
) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&order_seq.to_le_bytes());
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&bid.to_le_bytes());
    p.extend_from_slice(&offer.to_le_bytes());
    p.extend_from_slice(id);
    p.extend_from_slice(sym);
    p.push(d);
    p.push(reason);
    p.extend_from_slice(&[0; 4]);
    assert_eq!(p.len(), 48);
    p
}

fn rule(bid: f64, offer: f64) -> (u8, u8) {
    if offer - bid >= 0.05 {
        (0, 2)
    } else if (offer - bid) / ((bid + offer) / 2.0) >= 0.05 {
        (0, 3)
    } else {
        (1, 0)
    }
}

enum Ev {
    N(usize),
    O(usize),
}

/// A model of the engine for one interleaving: latest valid NBBO per symbol.
fn market_outputs(nbbos: &[Vec<u8>], orders: &[Vec<u8>], events: &[Ev]) -> Vec<Out> {
    let mut latest = std::collections::HashMap::<Vec<u8>, (u64, f64, f64)>::new();
    let mut outs = Vec::new();
    let f = |b: &[u8]| f64::from_be_bytes(b.try_into().unwrap());
    for ev in events {
        match *ev {
            Ev::N(seq) => {
                let r = &nbbos[seq - 1];
                if r.len() == 42
                    && r[0] == 2
                    && f(&r[26..34]).is_finite()
                    && f(&r[34..42]).is_finite()
                {
                    latest.insert(r[1..5].to_vec(), (seq as u64, f(&r[26..34]), f(&r[34..42])));
                }
            }
            Ev::O(seq) => {
                let r = &orders[seq - 1];
                if r.len() != 53 || r[0] != 1 {
                    continue;
                }
                let (id, sym) = (&r[6..12], &r[12..16]);
                let p = match latest.get(sym) {
                    None => decision(seq as u64, 0, 0.0, 0.0, id, sym, (0, 1)),
                    Some(&(v, bid, offer)) => {
                        decision(seq as u64, v, bid, offer, id, sym, rule(bid, offer))
                    }
                };
                outs.push(out(trace(2, seq as u64), p));
            }
        }
    }
    outs
}

struct Market {
    dir: TmpDir,
    inputs: Vec<PathBuf>,
    good: Vec<Out>,
}

fn market() -> Market {
    let dir = tmp_dir(&format!("ms-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    let mut nan_nbbo = nbbo_rec(b"AAAA", 1.0, 1.0);
    nan_nbbo[26..34].copy_from_slice(&f64::NAN.to_be_bytes());
    let mut bad_type = nbbo_rec(b"AAAA", 9.0, 9.01);
    bad_type[0] = 3;
    let nbbos = vec![
        nbbo_rec(b"AAAA", 10.00, 10.01), // 1 accept
        nbbo_rec(b"BBBB", 1.00, 1.10),   // 2 reason 2
        bad_type,                        // 3 dead letter
        nbbo_rec(b"AAAA", 10.00, 10.20), // 4 reason 2
        nbbo_rec(b" CCC", 0.50, 0.54),   // 5 reason 3
        nan_nbbo,                        // 6 dead letter
        nbbo_rec(b"AAAA", 10.00, 10.02), // 7 accept
    ];
    let mut short_order = order_rec(b"AAAA", b"SHORT1");
    short_order.pop();
    let orders = vec![
        order_rec(b"AAAA", b"ORD001"), // 1
        order_rec(b"DDDD", b"ORD002"), // 2 never an NBBO
        order_rec(b"BBBB", b"ORD003"), // 3
        short_order,                   // 4 dead letter
        order_rec(b"AAAA", b"ORD005"), // 5
        order_rec(b" CCC", b"ORD006"), // 6
        order_rec(b"AAAA", b"ORD007"), // 7
        order_rec(b" CCC", b"ORD008"), // 8
        order_rec(b"AAAA", b"ORD009"), // 9
    ];
    use Ev::*;
    let events = [
        O(1),
        N(1),
        O(2),
        N(2),
        O(3),
        N(3),
        O(4),
        O(5),
        N(4),
        O(6),
        N(5),
        O(7),
        N(6),
        O(8),
        N(7),
        O(9),
    ];
    let good = market_outputs(&nbbos, &orders, &events);
    let inputs = vec![dir.join("nbbo.msg"), dir.join("orders.msg")];
    fs::write(&inputs[0], fixish(&nbbos)).unwrap();
    fs::write(&inputs[1], fixish(&orders)).unwrap();
    Market { dir, inputs, good }
}

/// Index in `good` of the decision for order `seq`.
fn at(m: &Market, seq: u64) -> usize {
    m.good
        .iter()
        .position(|o| o.trace == trace(2, seq))
        .unwrap()
}

fn set_u64(p: &mut [u8], at: usize, v: u64) {
    p[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn market_spread_pass_and_each_planted_fault_is_classified() {
    let m = market();
    assert_eq!(m.good.len(), 8);
    // Every reason shows up in this interleaving.
    let reasons: Vec<u8> = m.good.iter().map(|o| o.payload[43]).collect();
    assert_eq!(
        reasons,
        [1, 1, 2, 0, 1, 2, 3, 0],
        "order 1 (no NBBO yet) ... order 9 (v7)"
    );
    // Orders 5 and 7 are consecutive decisions for AAAA (order 5 is at index 3).
    let swap = (at(&m, 5), at(&m, 7));
    plant_generic_faults(&m.dir, App::MarketSpread, &m.inputs, &m.good, swap);

    let mut good = m.good.clone();
    renumber(&mut good);
    // An NBBO's trace id, or a dead-lettered order's, produces no output.
    for t in [trace(1, 1), trace(2, 4)] {
        let mut v = good.clone();
        v.push(out(t, good[0].payload.clone()));
        renumber(&mut v);
        assert_only(&run(&m.dir, App::MarketSpread, &m.inputs, &v), UNEXPECTED);
    }
}

#[test]
fn market_spread_decision_citing_wrong_bid_is_wrong() {
    let m = market();
    let mut v = m.good.clone();
    renumber(&mut v);
    let i = at(&m, 5);
    v[i].payload[16..24].copy_from_slice(&9.99f64.to_le_bytes());
    let r = run(&m.dir, App::MarketSpread, &m.inputs, &v);
    assert_only(&r, WRONG);
    assert!(r.first_problems[0].contains("bid/offer"), "{r}");
}

#[test]
fn market_spread_decision_against_the_rule_is_wrong() {
    let m = market();
    let mut v = m.good.clone();
    renumber(&mut v);
    let i = at(&m, 9); // accepted
    v[i].payload[42] = 0;
    v[i].payload[43] = 2;
    assert_only(&run(&m.dir, App::MarketSpread, &m.inputs, &v), WRONG);
}

#[test]
fn market_spread_decision_citing_another_symbols_nbbo_is_wrong() {
    let m = market();
    let mut v = m.good.clone();
    renumber(&mut v);
    // Order 5 (AAAA) cites NBBO 2 (BBBB), bid/offer and decision consistent with it.
    let i = at(&m, 5);
    set_u64(&mut v[i].payload, 8, 2);
    v[i].payload[16..24].copy_from_slice(&1.00f64.to_le_bytes());
    v[i].payload[24..32].copy_from_slice(&1.10f64.to_le_bytes());
    v[i].payload[42] = 0;
    v[i].payload[43] = 2;
    let r = run(&m.dir, App::MarketSpread, &m.inputs, &v);
    assert_only(&r, WRONG);
    assert!(r.first_problems[0].contains("of symbol \"BBBB\""), "{r}");
}

#[test]
fn market_spread_decision_citing_a_dead_lettered_nbbo_is_wrong() {
    let m = market();
    let mut v = m.good.clone();
    renumber(&mut v);
    let i = at(&m, 7); // cites 4; NBBO 3 is invalid
    set_u64(&mut v[i].payload, 8, 3);
    v[i].payload[16..24].copy_from_slice(&9.0f64.to_le_bytes());
    v[i].payload[24..32].copy_from_slice(&9.01f64.to_le_bytes());
    v[i].payload[42] = 1;
    v[i].payload[43] = 0;
    assert_only(&run(&m.dir, App::MarketSpread, &m.inputs, &v), WRONG);
}

#[test]
fn market_spread_cited_versions_going_backwards_are_reordered() {
    let m = market();
    let mut v = m.good.clone();
    renumber(&mut v);
    // Order 7 cited NBBO 4 (after order 5's NBBO 1); make order 9 cite NBBO 1
    // although order 7 cited 4: consistent decision, but time went backwards.
    let i = at(&m, 9);
    set_u64(&mut v[i].payload, 8, 1);
    v[i].payload[16..24].copy_from_slice(&10.00f64.to_le_bytes());
    v[i].payload[24..32].copy_from_slice(&10.01f64.to_le_bytes());
    v[i].payload[42] = 1;
    v[i].payload[43] = 0;
    let r = run(&m.dir, App::MarketSpread, &m.inputs, &v);
    assert_only(&r, REORDERED);
    assert!(
        r.first_problems[0].contains("cites NBBO version 1 after"),
        "{r}"
    );

    // "No NBBO" again after a version was cited.
    let mut v = m.good.clone();
    renumber(&mut v);
    let i = at(&m, 9);
    v[i].payload = decision(9, 0, 0.0, 0.0, b"ORD009", b"AAAA", (0, 1));
    assert_only(&run(&m.dir, App::MarketSpread, &m.inputs, &v), REORDERED);
}

#[test]
fn market_spread_any_consistent_interleaving_passes() {
    let m = market();
    // All NBBOs first: every order sees the last valid NBBO of its symbol.
    let nbbos = fs::read(&m.inputs[0]).unwrap();
    let orders = fs::read(&m.inputs[1]).unwrap();
    let split = |b: &[u8]| {
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let n = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
            v.push(b[i + 4..i + 4 + n].to_vec());
            i += 4 + n;
        }
        v
    };
    let (n, o) = (split(&nbbos), split(&orders));
    let events: Vec<Ev> = (1..=n.len())
        .map(Ev::N)
        .chain((1..=o.len()).map(Ev::O))
        .collect();
    let mut v = market_outputs(&n, &o, &events);
    renumber(&mut v);
    assert_pass(&run(&m.dir, App::MarketSpread, &m.inputs, &v));
}

// ---------------------------------------------------------------------------
// errors and the binary

#[test]
fn wrong_number_of_inputs_is_a_usage_error() {
    let dir = tmp_dir("usage");
    let received = dir.join("r.bin");
    write_received(&received, &[]);
    let err = check(App::MarketSpread, &[dir.join("x")], &received).unwrap_err();
    assert!(matches!(err, CheckError::Usage(_)), "{err}");
}

#[test]
fn truncated_received_file_is_an_error_naming_file_and_offset() {
    let dir = tmp_dir("trunc");
    let input = dir.join("in.u64");
    u64_file(&input, &[1, 2]);
    let received = dir.join("r.bin");
    let mut outs = vec![
        out(trace(1, 1), 2u64.to_be_bytes().to_vec()),
        out(trace(1, 2), 4u64.to_be_bytes().to_vec()),
    ];
    renumber(&mut outs);
    write_received(&received, &outs);
    let mut bytes = fs::read(&received).unwrap();
    bytes.truncate(bytes.len() - 3);
    fs::write(&received, bytes).unwrap();
    let err = check(App::Doubler, &[&input], &received).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("r.bin") && msg.contains("offset 56"), "{msg}");
    // A damaged record (a flipped bit) is a typed error too, not a panic.
    write_received(&received, &outs);
    let mut bytes = fs::read(&received).unwrap();
    bytes[56 + 33] ^= 1;
    fs::write(&received, bytes).unwrap();
    let err = check(App::Doubler, &[&input], &received).unwrap_err();
    assert!(
        matches!(err, CheckError::Format(_)) && err.to_string().contains("offset 56"),
        "{err}"
    );
}

#[test]
fn binary_exits_0_on_pass_1_on_fail_2_on_errors() {
    let dir = tmp_dir("bin");
    let input = dir.join("in.u64");
    u64_file(&input, &[1, 2, 3]);
    let mut outs: Vec<Out> = (1..=3u64)
        .map(|n| out(trace(1, n), (2 * n).to_be_bytes().to_vec()))
        .collect();
    renumber(&mut outs);
    let good = dir.join("good.bin");
    write_received(&good, &outs);
    outs.pop();
    let bad = dir.join("bad.bin");
    write_received(&bad, &outs);
    let exe = env!("CARGO_BIN_EXE_verity-check");
    let run = |received: &Path, app: &str| {
        Command::new(exe)
            .args(["--app", app, "--input"])
            .arg(&input)
            .arg("--received")
            .arg(received)
            .output()
            .unwrap()
    };
    let ok = run(&good, "doubler");
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "check: PASS app=doubler expected=3 received=3 lost=0 duplicated=0 reordered=0 wrong=0 unexpected=0"
    );
    let fail = run(&bad, "doubler");
    assert_eq!(fail.status.code(), Some(1));
    let text = String::from_utf8_lossy(&fail.stdout);
    assert!(
        text.starts_with("check: FAIL app=doubler expected=3 received=2 lost=1 "),
        "{text}"
    );
    assert!(text.contains("channel 1 seq 3"), "{text}");
    assert_eq!(
        run(&dir.join("missing.bin"), "doubler").status.code(),
        Some(2)
    );
    // A damaged received file: exit 2 with the file and offset, no panic.
    let mut bytes = fs::read(&good).unwrap();
    bytes[16 + 40 + 20] ^= 4;
    let damaged = dir.join("damaged.bin");
    fs::write(&damaged, bytes).unwrap();
    let out = run(&damaged, "doubler");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged.bin: corrupt record at byte offset 56"),
        "{err}"
    );
    // Not a received file at all.
    let out = run(&input, "doubler");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a received file"));
    assert_eq!(run(&good, "no-such-app").status.code(), Some(2));
    assert_eq!(run(&good, "market-spread").status.code(), Some(2));
}

#[test]
fn receiver_out_of_order_seqs_are_reordered_not_lost() {
    let dir = tmp_dir("seq-order");
    let input = dir.join("in.u64");
    u64_file(&input, &[1, 2, 3, 4]);
    let mut v: Vec<Out> = (1..=4u64)
        .map(|n| out(trace(1, n), (2 * n).to_be_bytes().to_vec()))
        .collect();
    renumber(&mut v);
    // Whole records 2 and 3 swapped, seqs included: 1, 3, 2, 4.
    v.swap(1, 2);
    let r = run(&dir, App::Doubler, &[input], &v);
    // The gap 1 -> 3, the step back 3 -> 2, and the values out of order.
    assert_eq!(counts(&r), [0, 0, 3, 0, 0], "{r}");
    assert_eq!(r.ok, 4, "{r}");
}
