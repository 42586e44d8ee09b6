//! Fixed in-memory workloads of the core, for the speed gates of issue 15:
//! `benches/instructions.rs` runs them under callgrind (only the
//! `measure_*` functions are counted) and `tests/alloc.rs` counts their
//! heap allocations. Inputs are built first (journal runs of source DATA
//! frames, as the worker reads and journals them); then:
//!
//! - [`measure_replay`]: the runs replayed through the core, as recovery and
//!   `verity replay` do;
//! - [`measure_live`]: each frame parsed and handed to the core, then the
//!   batch made durable, sent and ACKed by the sink, as the worker's event
//!   loop does (no sockets, no files).

use std::hint::black_box;
use std::path::Path;

use bytes::BytesMut;
use verity_tools::formats::InputFormat;
use verity_tools::gen::{self, GenConfig};
use verity_tools::send::Records;
use verity_wire::{parse, Encoder, MAX_FRAME_LEN_LIMIT};

use crate::app::App;
use crate::core::{Effects, Input, NodeConfig, NodeCore, Out};

/// Source frames per journal run: about what one read of a busy source
/// connection brings (64 KiB of market-spread frames).
pub const RUN_FRAMES: usize = 512;

/// Journal runs and the number of inputs they hold.
pub struct Runs {
    pub runs: Vec<BytesMut>,
    pub inputs: u64,
}

/// Journal runs of `channels` (source channel `c + 1` holds `channels[c]`),
/// [`RUN_FRAMES`] frames of one channel each, the channels taking turns.
pub fn runs_of(channels: &[&Records]) -> Result<Runs, String> {
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
                enc.data(&mut run, channel, seq, trace, false, records.get(seq))
                    .map_err(|e| format!("input {seq} of channel {channel}: {e}"))?;
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
    let inputs = channels.iter().map(|r| r.len()).sum();
    Ok(Runs { runs, inputs })
}

/// About `n` market-spread inputs (half NBBO, half orders; `seed`), from
/// the generator the tools use, written to and read back from `scratch`.
pub fn market_spread_runs(n: u64, seed: u64, scratch: &Path) -> Result<Runs, String> {
    let cfg = GenConfig::from_messages(seed, n, gen::data_dir(None));
    gen::market_spread(&cfg, scratch).map_err(|e| e.to_string())?;
    let load =
        |f: &str| Records::load(InputFormat::Fixish, &scratch.join(f)).map_err(|e| e.to_string());
    runs_of(&[&load("nbbo.msg")?, &load("orders.msg")?])
}

/// `n` doubler inputs: the counters `first..first + n`.
pub fn doubler_runs(first: u64, n: u64) -> Result<Runs, String> {
    let records = Records::from_vec(
        (first..first + n)
            .map(|i| i.to_le_bytes().to_vec())
            .collect(),
    );
    runs_of(&[&records])
}

/// A single node's core of `app` with the default configuration.
pub fn core_of(app: Box<dyn App>) -> NodeCore {
    NodeCore::new(app, NodeConfig::default())
}

/// What recovery and `verity replay` do per journal record: each run
/// replayed through `core`. Returns the output bytes.
#[inline(never)]
pub fn measure_replay(
    core: &mut NodeCore,
    fx: &mut Effects,
    runs: &[BytesMut],
) -> Result<usize, String> {
    let mut outputs = 0;
    for (i, run) in runs.iter().enumerate() {
        fx.clear();
        core.replay_record(run, i as u64, fx, |_, _| {})
            .map_err(|e| format!("journal run {i} was not replayed (input {})", e.index))?;
        outputs += fx.outbound.len();
    }
    Ok(black_box(outputs))
}

/// What the worker's event loop asks of the core per read batch: each
/// frame parsed and handled, then the batch durable, its outputs handed to
/// the sink and ACKed. Returns the output bytes.
#[inline(never)]
pub fn measure_live(
    core: &mut NodeCore,
    fx: &mut Effects,
    runs: &[BytesMut],
) -> Result<usize, String> {
    let mut outputs = 0;
    for (i, run) in runs.iter().enumerate() {
        fx.clear();
        let mut at = 0;
        while at < run.len() {
            let Ok(Some(frame)) = parse(&run[at..], MAX_FRAME_LEN_LIMIT) else {
                return Err(format!("run {i} holds a bad frame at {at}"));
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
    Ok(black_box(outputs))
}
