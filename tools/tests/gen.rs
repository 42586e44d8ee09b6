//! verity-gen: determinism from the seed, validity of what it writes, typed
//! errors for missing reference data, and generated market-spread data
//! checked end to end through a test-only engine model and the checker.

mod common;
use common::TmpDir;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use verity_tools::check::{check, App};
use verity_tools::formats::{read_input, InputFormat, Nbbo, Order, ReceivedWriter};
use verity_tools::gen::{self, GenConfig, GenError, TextConfig};

fn tmp_dir(name: &str) -> TmpDir {
    TmpDir::new("gen", name)
}

fn cfg(seed: u64, orders: u64, nbbo_updates: u64) -> GenConfig {
    GenConfig {
        seed,
        orders,
        nbbo_updates,
        data_dir: gen::data_dir(None),
    }
}

fn bodies(path: &Path) -> Vec<Vec<u8>> {
    read_input(InputFormat::Fixish, path)
        .unwrap()
        .into_iter()
        .map(|r| r.bytes)
        .collect()
}

#[test]
fn market_spread_same_seed_gives_byte_identical_files() {
    let dir = tmp_dir("same-seed");
    let a = gen::market_spread(&cfg(42, 3000, 2000), &dir.join("a")).unwrap();
    let b = gen::market_spread(&cfg(42, 3000, 2000), &dir.join("b")).unwrap();
    gen::market_spread(&cfg(43, 3000, 2000), &dir.join("c")).unwrap();
    assert_eq!(a.files.len(), 2);
    assert_eq!((a.files[0].records, a.files[1].records), (2350, 3000));
    for name in ["nbbo.msg", "orders.msg"] {
        let x = fs::read(dir.join("a").join(name)).unwrap();
        assert_eq!(x, fs::read(dir.join("b").join(name)).unwrap(), "{name}");
        assert_ne!(x, fs::read(dir.join("c").join(name)).unwrap(), "{name}");
    }
    assert_eq!(a.files[0].bytes, b.files[0].bytes);
}

#[test]
fn market_spread_records_are_valid_and_cover_every_decision_reason() {
    let dir = tmp_dir("valid");
    let data = gen::data_dir(None);
    gen::market_spread(&cfg(7, 20_000, 20_000), &dir).unwrap();
    let nbbos = bodies(&dir.join("nbbo.msg"));
    let initial = bodies(&data.join(gen::INITIAL_NBBO_FILE));
    assert_eq!(
        &nbbos[..350],
        &initial[..],
        "starts with the initial NBBOs verbatim"
    );
    let mut wide = [0usize; 4];
    let mut quoted = HashSet::new();
    for body in &nbbos[350..] {
        let n = Nbbo::parse(body).expect("valid NBBO");
        assert!(n.bid > 0.0 && n.offer >= n.bid, "{n:?}");
        for p in [n.bid, n.offer] {
            assert_eq!((p * 100.0).round() / 100.0, p, "cents: {n:?}");
        }
        assert!(n.transact_time.starts_with(b"20160902-"));
        quoted.insert(n.symbol);
        let spread = n.offer - n.bid;
        let reason = if spread >= 0.05 {
            2
        } else if spread / ((n.bid + n.offer) / 2.0) >= 0.05 {
            3
        } else {
            0
        };
        wide[reason] += 1;
    }
    assert!(wide[0] > wide[2] && wide[2] > 0 && wide[3] > 0, "{wide:?}");

    let legal: HashSet<Vec<u8>> = fs::read(data.join(gen::LEGAL_SYMBOLS_FILE))
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    let mut unquoted_orders = 0;
    let mut times = Vec::new();
    for body in bodies(&dir.join("orders.msg")) {
        let o = Order::parse(&body).expect("valid order");
        assert!(legal.contains(&o.symbol[..]));
        assert!(o.side == 1 || o.side == 2);
        assert!(o.order_id.iter().all(|c| c.is_ascii_alphanumeric()));
        assert!(o.quantity > 0.0 && o.price > 0.0);
        if !initial.iter().any(|n| n[1..5] == o.symbol) {
            unquoted_orders += 1;
        }
        times.push(o.transact_time);
    }
    assert!(
        unquoted_orders > 0,
        "some orders are for symbols without an NBBO"
    );
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "transact times advance"
    );
}

#[test]
fn messages_split_about_half_and_half() {
    let c = GenConfig::from_messages(1, 10_000, PathBuf::new());
    assert_eq!(c.orders, 5000);
    assert_eq!(c.nbbo_updates + gen::INITIAL_NBBO_COUNT, 5000);
}

#[test]
fn missing_reference_data_is_a_typed_error_naming_the_path() {
    let dir = tmp_dir("missing");
    let cfg = GenConfig {
        data_dir: dir.join("no-data"),
        ..cfg(1, 10, 10)
    };
    let err = gen::market_spread(&cfg, &dir.join("out")).unwrap_err();
    assert!(matches!(err, GenError::Data { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("no-data/market-spread/350-symbols"),
        "{err}"
    );
    let err = gen::text(
        &TextConfig {
            seed: 1,
            lines: 3,
            data_dir: dir.join("no-data"),
        },
        &dir.join("t.txt"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no-data/word-count"), "{err}");
}

#[test]
fn u64_counters_and_text_are_deterministic() {
    let dir = tmp_dir("simple");
    gen::u64_counters(1000, &dir.join("n.u64")).unwrap();
    let values: Vec<u64> = read_input(InputFormat::U64, &dir.join("n.u64"))
        .unwrap()
        .into_iter()
        .map(|r| u64::from_be_bytes(r.bytes.try_into().unwrap()))
        .collect();
    assert_eq!(values, (1..=1000).collect::<Vec<u64>>());

    let text = |seed, name: &str| {
        let cfg = TextConfig {
            seed,
            lines: 200,
            data_dir: gen::data_dir(None),
        };
        gen::text(&cfg, &dir.join(name)).unwrap();
        fs::read(dir.join(name)).unwrap()
    };
    let a = text(5, "a.txt");
    assert_eq!(a, text(5, "b.txt"));
    assert_ne!(a, text(6, "c.txt"));
    let source: HashSet<String> = ["bill_of_rights.txt", "simple.txt"]
        .iter()
        .flat_map(|f| {
            fs::read_to_string(gen::data_dir(None).join("word-count").join(f))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let lines: Vec<&str> = std::str::from_utf8(&a).unwrap().lines().collect();
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| !l.is_empty() && source.contains(*l)));
}

/// Test-only engine model: interleaves the two generated streams with its own
/// PRNG and decides each order on the latest NBBO of its symbol.
fn model_market_spread(nbbos: &[Vec<u8>], orders: &[Vec<u8>], received: &Path, seed: u64) {
    let mut w = ReceivedWriter::create(received).unwrap();
    let mut latest: HashMap<[u8; 4], (u64, f64, f64)> = HashMap::new();
    let (mut i, mut j) = (0usize, 0usize);
    let mut x = seed | 1;
    let mut out_seq = 0;
    while j < orders.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i < nbbos.len() && x & 1 == 0 {
            let n = Nbbo::parse(&nbbos[i]).unwrap();
            i += 1;
            latest.insert(n.symbol, (i as u64, n.bid, n.offer));
            continue;
        }
        let o = Order::parse(&orders[j]).unwrap();
        j += 1;
        let (v, bid, offer) = latest.get(&o.symbol).copied().unwrap_or((0, 0.0, 0.0));
        let (d, reason) = if v == 0 {
            (0u8, 1u8)
        } else if offer - bid >= 0.05 {
            (0, 2)
        } else if (offer - bid) / ((bid + offer) / 2.0) >= 0.05 {
            (0, 3)
        } else {
            (1, 0)
        };
        let mut p = Vec::with_capacity(48);
        p.extend_from_slice(&(j as u64).to_le_bytes());
        p.extend_from_slice(&v.to_le_bytes());
        p.extend_from_slice(&bid.to_le_bytes());
        p.extend_from_slice(&offer.to_le_bytes());
        p.extend_from_slice(&o.order_id);
        p.extend_from_slice(&o.symbol);
        p.extend_from_slice(&[d, reason, 0, 0, 0, 0]);
        out_seq += 1;
        w.write(1, out_seq, (2u64 << 40) | j as u64, &p).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn generated_market_spread_passes_the_checker_for_a_modelled_engine() {
    let dir = tmp_dir("e2e");
    gen::market_spread(&cfg(11, 5000, 5000), &dir).unwrap();
    let (nbbo, orders) = (dir.join("nbbo.msg"), dir.join("orders.msg"));
    let received = dir.join("received.bin");
    model_market_spread(&bodies(&nbbo), &bodies(&orders), &received, 99);
    let report = check(App::MarketSpread, &[&nbbo, &orders], &received).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(
        (report.expected, report.received, report.ok),
        (5000, 5000, 5000)
    );
}

#[test]
fn binary_writes_the_same_files_as_the_library() {
    let dir = tmp_dir("bin");
    let exe = env!("CARGO_BIN_EXE_verity-gen");
    let status = Command::new(exe)
        .args([
            "market-spread",
            "--seed",
            "42",
            "--orders",
            "3000",
            "--nbbo",
            "2000",
            "--out-dir",
        ])
        .arg(dir.join("cli"))
        .status()
        .unwrap();
    assert!(status.success());
    gen::market_spread(&cfg(42, 3000, 2000), &dir.join("lib")).unwrap();
    for name in ["nbbo.msg", "orders.msg"] {
        assert_eq!(
            fs::read(dir.join("cli").join(name)).unwrap(),
            fs::read(dir.join("lib").join(name)).unwrap()
        );
    }
    let out = Command::new(exe)
        .args(["market-spread", "--messages", "100"])
        .arg("--data-dir")
        .arg(dir.join("nowhere"))
        .arg("--out-dir")
        .arg(dir.join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
    let out = Command::new(exe)
        .args(["u64", "--count", "3", "--out"])
        .arg(dir.join("n.u64"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(fs::read(dir.join("n.u64")).unwrap().len(), 24);
}
