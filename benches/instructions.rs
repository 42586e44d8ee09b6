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

use bytes::BytesMut;
use verity::app::App;
use verity::core::Effects;
use verity::harness::workload::{
    core_of, doubler_runs, market_spread_runs, measure_live, measure_replay, Runs,
};
use verity_wire::{parse, Encoder, MAX_FRAME_LEN_LIMIT};

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
    let ms = || market_spread_runs(n, 1, &scratch);
    let inputs = match workload {
        "replay-market-spread" => ms().and_then(|r| run(r, market_spread(), Path::Replay)),
        "replay-doubler" => doubler_runs(1, n).and_then(|r| run(r, doubler(), Path::Replay)),
        "core-market-spread" => ms().and_then(|r| run(r, market_spread(), Path::Live)),
        "core-doubler" => doubler_runs(1, n).and_then(|r| run(r, doubler(), Path::Live)),
        "decode-1k" => Ok(decode_1k(n)),
        other => Err(format!("unknown workload {other:?} (replay-market-spread, replay-doubler, core-market-spread, core-doubler, decode-1k)")),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    match inputs {
        Ok(inputs) => println!("inputs {inputs}"),
        Err(e) => {
            eprintln!("instructions: {e}");
            std::process::exit(2);
        }
    }
}

enum Path {
    Replay,
    Live,
}

fn run(r: Runs, app: Box<dyn App>, path: Path) -> Result<u64, String> {
    let mut core = core_of(app);
    let mut fx = Effects::default();
    let outputs = match path {
        Path::Replay => measure_replay(&mut core, &mut fx, &r.runs)?,
        Path::Live => measure_live(&mut core, &mut fx, &r.runs)?,
    };
    eprintln!("instructions: {} inputs, {outputs} output bytes", r.inputs);
    Ok(r.inputs)
}

fn market_spread() -> Box<dyn App> {
    Box::new(verity::apps::market_spread::app())
}

fn doubler() -> Box<dyn App> {
    Box::new(verity::apps::doubler::app())
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
