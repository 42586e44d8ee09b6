//! The fixed workloads of the instruction-count benchmark
//! (`benches/instructions.sh`, issue 15). Each builds its inputs first, then
//! runs them through a `measure_*` function; the script runs this binary
//! under `valgrind --tool=callgrind --toggle-collect='*measure_*'`, so only
//! the work inside those functions is counted, and divides by the inputs.
//! Nothing here reads a clock or a socket: the same build and arguments give
//! the same instructions, whatever the machine is doing besides.
//!
//! `instructions WORKLOAD [INPUTS]`:
//! - `replay-market-spread`, `replay-doubler`: journal runs (batches of
//!   source DATA frames, as the worker journals them) replayed through the
//!   core, as `verity replay` and recovery do;
//! - `core-market-spread`, `core-doubler`: the live path: source frames
//!   parsed and handed to the core one by one, then the batch made durable,
//!   sent and ACKed by the sink, as the worker's event loop does (no
//!   sockets, no files);
//! - `decode-1k`: `verity_wire::parse` (header, CRC) of 1 KiB DATA frames.
//!
//! It prints `inputs N` (what the counts are divided by). `cargo bench`
//! runs every bench target; this one then only says how to run it.

use std::hint::black_box;
use std::path::Path;

use bytes::BytesMut;
use verity::app::App;
use verity::core::{Effects, Input, NodeConfig, NodeCore, Out};
use verity_tools::formats::InputFormat;
use verity_tools::gen::{self, GenConfig};
use verity_tools::send::Records;
use verity_wire::{parse, Encoder, MAX_FRAME_LEN_LIMIT};

/// Source frames per journal run: about what one read of a busy source
/// connection brings (64 KiB of market-spread frames).
const RUN_FRAMES: usize = 512;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map(String::as_str).unwrap_or("--bench");
    if workload.starts_with("--") {
        eprintln!("instructions: run through benches/instructions.sh (callgrind counts the measure_* functions)");
        return;
    }
    let n: u64 = match args.get(1).map(|s| s.parse()) {
        None => 200_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!(
                "instructions: INPUTS must be a positive count, not {:?}",
                args[1]
            );
            std::process::exit(2);
        }
    };
    let scratch = std::env::temp_dir().join(format!("verity-instructions-{}", std::process::id()));
    let inputs = match workload {
        "replay-market-spread" => replay(market_spread_runs(n, &scratch), market_spread()),
        "replay-doubler" => replay(doubler_runs(n), doubler()),
        "core-market-spread" => live(market_spread_runs(n, &scratch), market_spread()),
        "core-doubler" => live(doubler_runs(n), doubler()),
        "decode-1k" => decode_1k(n),
        other => {
            eprintln!("instructions: unknown workload {other:?} (replay-market-spread, replay-doubler, core-market-spread, core-doubler, decode-1k)");
            std::process::exit(2);
        }
    };
    let _ = std::fs::remove_dir_all(&scratch);
    println!("inputs {inputs}");
}

fn market_spread() -> Box<dyn App> {
    Box::new(verity::apps::market_spread::app())
}

fn doubler() -> Box<dyn App> {
    Box::new(verity::apps::doubler::app())
}

/// Journal runs of `channels` (source channel `c + 1` holds `channels[c]`),
/// `RUN_FRAMES` frames of one channel each, the channels taking turns;
/// and the number of inputs.
fn runs_of(channels: &[&Records]) -> (Vec<BytesMut>, u64) {
    let enc = Encoder::default();
    let mut next = vec![0u64; channels.len()];
    let mut runs = Vec::new();
    loop {
        let mut any = false;
        for (c, records) in channels.iter().enumerate() {
            let mut run = BytesMut::new();
            let mut in_run = 0;
            while next[c] < records.len() && in_run < RUN_FRAMES {
                let seq = next[c] + 1;
                let channel = c as u32 + 1;
                let trace = (u64::from(channel) << 40) | seq;
                if enc
                    .data(&mut run, channel, seq, trace, false, records.get(seq))
                    .is_err()
                {
                    eprintln!(
                        "instructions: input {seq} of channel {channel} does not fit a frame"
                    );
                    std::process::exit(2);
                }
                next[c] += 1;
                in_run += 1;
            }
            if !run.is_empty() {
                any = true;
                runs.push(run);
            }
        }
        if !any {
            break;
        }
    }
    (runs, channels.iter().map(|r| r.len()).sum())
}

/// `n` market-spread inputs (half NBBO, half orders; seed 1), from the
/// generator the tools use.
fn market_spread_runs(n: u64, scratch: &Path) -> (Vec<BytesMut>, u64) {
    let cfg = GenConfig::from_messages(1, n, gen::data_dir(None));
    let loaded = gen::market_spread(&cfg, scratch)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            let load = |f: &str| {
                Records::load(InputFormat::Fixish, &scratch.join(f)).map_err(|e| e.to_string())
            };
            Ok((load("nbbo.msg")?, load("orders.msg")?))
        });
    match loaded {
        Ok((nbbo, orders)) => runs_of(&[&nbbo, &orders]),
        Err(e) => {
            eprintln!("instructions: market-spread inputs: {e}");
            std::process::exit(2);
        }
    }
}

/// `n` doubler inputs: the counters 1..=n.
fn doubler_runs(n: u64) -> (Vec<BytesMut>, u64) {
    let records = Records::from_vec((1..=n).map(|i| i.to_le_bytes().to_vec()).collect());
    runs_of(&[&records])
}

fn replay((runs, inputs): (Vec<BytesMut>, u64), app: Box<dyn App>) -> u64 {
    let mut core = NodeCore::new(app, NodeConfig::default());
    let mut fx = Effects::default();
    let outputs = measure_replay(&mut core, &mut fx, &runs);
    eprintln!("instructions: replayed {inputs} inputs, {outputs} output bytes");
    inputs
}

/// What recovery and `verity replay` do per journal record.
#[inline(never)]
fn measure_replay(core: &mut NodeCore, fx: &mut Effects, runs: &[BytesMut]) -> usize {
    let mut outputs = 0;
    for (i, run) in runs.iter().enumerate() {
        fx.clear();
        if core.replay_record(run, i as u64, fx, |_, _| {}).is_err() {
            eprintln!("instructions: journal run {i} was not replayed");
            std::process::exit(1);
        }
        outputs += fx.outbound.len();
    }
    black_box(outputs)
}

fn live((runs, inputs): (Vec<BytesMut>, u64), app: Box<dyn App>) -> u64 {
    let mut core = NodeCore::new(app, NodeConfig::default());
    let mut fx = Effects::default();
    let outputs = measure_live(&mut core, &mut fx, &runs);
    eprintln!(
        "instructions: {inputs} inputs through the core, {outputs} output bytes, journal {}",
        core.journal_next()
    );
    inputs
}

/// What the worker's event loop asks of the core per read batch: each
/// frame parsed and handled, then the batch durable, its outputs handed
/// to the sink and ACKed.
#[inline(never)]
fn measure_live(core: &mut NodeCore, fx: &mut Effects, runs: &[BytesMut]) -> usize {
    let mut outputs = 0;
    for (i, run) in runs.iter().enumerate() {
        fx.clear();
        let mut at = 0;
        while at < run.len() {
            let Ok(Some(frame)) = parse(&run[at..], MAX_FRAME_LEN_LIMIT) else {
                eprintln!("instructions: run {i} holds a bad frame at {at}");
                std::process::exit(1);
            };
            at += frame.stride;
            fx.journal_input = None;
            core.handle(
                Input::SourceData {
                    frame,
                    now_ns: i as u64,
                },
                fx,
            );
            fx.acks.clear();
            fx.nacks.clear();
        }
        let records = core.journal_next();
        core.handle(Input::Durable { records }, fx);
        let last = core.out().next_seq - 1;
        core.handle(
            Input::Sent {
                out: Out::Sink,
                through: last,
            },
            fx,
        );
        core.handle(
            Input::Ack {
                out: Out::Sink,
                seq: last,
            },
            fx,
        );
        outputs += fx.outbound.len();
    }
    black_box(outputs)
}

/// `n` parses of 1 KiB DATA frames (a buffer of 1024 of them, read over
/// and over).
fn decode_1k(n: u64) -> u64 {
    let enc = Encoder::default();
    let mut buf = BytesMut::new();
    let payload = [0x5au8; 1024];
    for seq in 1..=1024 {
        if enc.data(&mut buf, 1, seq, seq, false, &payload).is_err() {
            eprintln!("instructions: a 1 KiB frame does not encode");
            std::process::exit(2);
        }
    }
    let rounds = n.div_ceil(1024);
    black_box(measure_decode(&buf, rounds));
    rounds * 1024
}

#[inline(never)]
fn measure_decode(buf: &[u8], rounds: u64) -> u64 {
    let mut sum = 0u64;
    for _ in 0..rounds {
        let mut at = 0;
        while at < buf.len() {
            match parse(black_box(&buf[at..]), MAX_FRAME_LEN_LIMIT) {
                Ok(Some(v)) => {
                    sum = sum.wrapping_add(v.header.seq());
                    at += v.stride;
                }
                _ => {
                    eprintln!("instructions: a frame did not parse at {at}");
                    std::process::exit(1);
                }
            }
        }
    }
    sum
}
