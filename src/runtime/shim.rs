//! The fault shim (DESIGN §6): between a connection and its socket, driven
//! by a seed. Each connection draws from its own PRNG stream, derived from
//! (seed, connection identity), so the same seed and the same traffic give
//! the same decisions. Per frame it may drop, duplicate, hold back and
//! release later (reorder), delay, flip a byte (the receiver's CRC check
//! must catch it: ERROR, reconnect, RESUME, resend) or close the
//! connection. Timed partitions of a worker pair are decided by the worker
//! (no connection between the two during the window).
//!
//! Only DATA, ACK, NACK and HEARTBEAT frames are touched: the handshake
//! (HELLO, RESUME) and ERROR pass unchanged, as a network that loses
//! packets still lets TCP connect. Every decision other than "pass" is
//! recorded for the fault log.
//!
//! Off unless `[faults]` configures it: a connection without a shim pays one
//! `Option` test per write batch, not per frame.

use std::collections::VecDeque;

pub use crate::config::faults::{Faults, Partition};
use bytes::{Buf, BytesMut};
use verity_wire::fnv::Fnv1a;
use verity_wire::frames::frames;
use verity_wire::rng::Rng;
use verity_wire::{Kind, CRC_OFFSET};

/// What the shim did to one frame (the fault log's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop,
    Duplicate,
    Reorder,
    Delay,
    Corrupt,
    Close,
}

impl Decision {
    pub const ALL: [Decision; 6] = [
        Decision::Drop,
        Decision::Duplicate,
        Decision::Reorder,
        Decision::Delay,
        Decision::Corrupt,
        Decision::Close,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Decision::Drop => "drop",
            Decision::Duplicate => "duplicate",
            Decision::Reorder => "reorder",
            Decision::Delay => "delay",
            Decision::Corrupt => "corrupt",
            Decision::Close => "close",
        }
    }
}

/// A frame held back: released when `at_ms` has passed, or after
/// `after_frames` more frames went through.
struct Held {
    at_ms: u64,
    after_frames: u64,
    bytes: Vec<u8>,
}

/// The shim of one connection.
pub struct Shim {
    rng: Rng,
    faults: std::sync::Arc<Faults>,
    id: String,
    /// Frames seen on this connection.
    frames: u64,
    held: VecDeque<Held>,
    /// Decisions not yet written to the fault log: (frame number, kind,
    /// channel, seq, decision).
    pub decisions: Vec<(u64, Kind, u32, u64, Decision)>,
}

impl Shim {
    /// The shim of the connection named `id` (deterministic: e.g.
    /// `"node 0 -> node 2 #3"`).
    pub fn new(faults: std::sync::Arc<Faults>, id: String) -> Shim {
        let mut h = Fnv1a::new();
        h.write(&faults.seed.to_le_bytes());
        h.write(id.as_bytes());
        Shim {
            rng: Rng::new(h.finish()),
            faults,
            id,
            frames: 0,
            held: VecDeque::new(),
            decisions: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn roll(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.below(1_000_000) < ppm as u64
    }

    /// Moves the whole frames at the front of `from` (the connection's
    /// queued frames) through the faults into `to` (bytes for the socket),
    /// and releases held frames that are due. Returns `true` when the
    /// connection must be closed now.
    pub fn pass(&mut self, from: &mut BytesMut, to: &mut BytesMut, now_ms: u64) -> bool {
        self.release(to, now_ms, false);
        // The connection's own frames, whole and valid: read in place.
        while let Some(f) = frames(from).next() {
            let (stride, h) = (f.stride, *f.header);
            let kind = h.kind();
            let touch = matches!(
                kind,
                Some(Kind::Data | Kind::Ack | Kind::Nack | Kind::Heartbeat)
            );
            if !touch {
                to.extend_from_slice(&from[..stride]);
                from.advance(stride);
                continue;
            }
            self.frames += 1;
            let frame_no = self.frames;
            let (channel, seq) = (h.channel(), h.seq());
            let kind = kind.unwrap_or(Kind::Data);
            let note =
                |d: Decision, s: &mut Self| s.decisions.push((frame_no, kind, channel, seq, d));
            let f = self.faults.clone();
            if self.roll(f.close_ppm) {
                note(Decision::Close, self);
                from.advance(stride);
                return true;
            }
            if self.roll(f.drop_ppm) {
                note(Decision::Drop, self);
                from.advance(stride);
                continue;
            }
            let mut bytes = from[..stride].to_vec();
            from.advance(stride);
            if kind == Kind::Data && self.roll(f.corrupt_ppm) {
                // Flip one bit of a byte the CRC covers (anything past the
                // CRC field): the receiver must catch it.
                const COVERED: usize = CRC_OFFSET + 4;
                let at = COVERED + self.rng.below((bytes.len() - COVERED) as u64) as usize;
                bytes[at] ^= 1 << self.rng.below(8);
                note(Decision::Corrupt, self);
            }
            // Only DATA is held back: control frames keep their order, as
            // TCP keeps it (an ACK overtaking a later ACK would look like an
            // ACK going backwards, a protocol violation).
            if kind == Kind::Data && self.roll(f.delay_ppm) {
                let d = 1 + self.rng.below(f.delay_max_ms.max(1));
                note(Decision::Delay, self);
                self.held.push_back(Held {
                    at_ms: now_ms + d,
                    after_frames: u64::MAX,
                    bytes,
                });
                continue;
            }
            if kind == Kind::Data && self.roll(f.reorder_ppm) {
                let after = 1 + self.rng.below(8);
                note(Decision::Reorder, self);
                self.held.push_back(Held {
                    at_ms: u64::MAX,
                    after_frames: self.frames + after,
                    bytes,
                });
                continue;
            }
            to.extend_from_slice(&bytes);
            if self.roll(f.duplicate_ppm) {
                note(Decision::Duplicate, self);
                to.extend_from_slice(&bytes);
            }
            self.release(to, now_ms, false);
        }
        false
    }

    /// Releases held frames that are due (all of them with `all`).
    fn release(&mut self, to: &mut BytesMut, now_ms: u64, all: bool) {
        let frames = self.frames;
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            if all || h.at_ms <= now_ms || h.after_frames <= frames {
                if let Some(h) = self.held.remove(i) {
                    to.extend_from_slice(&h.bytes);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Writes the decisions not yet logged as fault-log lines:
    /// `UNIX_MS CONNECTION frame=N KIND channel=C seq=S DECISION`.
    pub fn write_decisions(&mut self, log: &mut impl std::io::Write, now_ms: u64) {
        for (n, kind, ch, seq, d) in self.decisions.drain(..) {
            let _ = writeln!(
                log,
                "{now_ms} {} frame={n} {kind} channel={ch} seq={seq} {}",
                self.id,
                d.name()
            );
        }
    }

    /// Whether frames are held back (the connection has work later even
    /// with nothing queued).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Frames held when no more come: release the reordered ones now (a
    /// reorder needs later frames; without them it would be a drop).
    pub fn flush_reordered(&mut self, to: &mut BytesMut, now_ms: u64) {
        let frames = self.frames;
        for h in self.held.iter_mut() {
            if h.at_ms == u64::MAX {
                h.after_frames = frames;
            }
        }
        self.release(to, now_ms, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use verity_wire::{parse, Encoder, Header, HEADER_LEN};

    fn frames(n: u64) -> BytesMut {
        let mut b = BytesMut::new();
        let enc = Encoder::default();
        for seq in 1..=n {
            enc.data(&mut b, 1, seq, seq, false, &seq.to_le_bytes())
                .unwrap();
        }
        b
    }

    fn seqs(b: &[u8]) -> Vec<Option<u64>> {
        let mut at = 0;
        let mut v = Vec::new();
        // Possibly corrupted frames (even their frame_len): not `frames()`.
        while let Some(h) = Header::peek(&b[at..]) {
            let stride = verity_wire::stride((h.frame_len() as usize).max(HEADER_LEN));
            v.push(match parse(&b[at..at + stride], 1 << 20) {
                Ok(Some(f)) => Some(f.header.seq()),
                _ => None,
            });
            at += stride;
        }
        v
    }

    fn run(f: &Faults, id: &str) -> (Vec<Option<u64>>, Vec<Decision>, bool) {
        let mut s = Shim::new(Arc::new(f.clone()), id.into());
        let mut from = frames(2000);
        let mut to = BytesMut::new();
        let closed = s.pass(&mut from, &mut to, 0);
        s.flush_reordered(&mut to, 0);
        s.release(&mut to, u64::MAX - 1, true);
        let d = s.decisions.iter().map(|d| d.4).collect();
        (seqs(&to), d, closed)
    }

    #[test]
    fn off_passes_everything_unchanged() {
        let (out, d, closed) = run(&Faults::default(), "c");
        assert_eq!(out, (1..=2000).map(Some).collect::<Vec<_>>());
        assert!(d.is_empty() && !closed);
    }

    #[test]
    fn the_same_seed_and_connection_give_the_same_decisions_and_others_differ() {
        let f = Faults {
            seed: 9,
            drop_ppm: 20_000,
            duplicate_ppm: 20_000,
            reorder_ppm: 20_000,
            delay_ppm: 20_000,
            delay_max_ms: 10,
            ..Faults::default()
        };
        let a = run(&f, "node 0 -> node 1 #1");
        assert_eq!(a, run(&f, "node 0 -> node 1 #1"));
        assert_ne!(a.1, run(&f, "node 0 -> node 1 #2").1);
        assert_ne!(
            a.1,
            run(
                &Faults {
                    seed: 10,
                    ..f.clone()
                },
                "node 0 -> node 1 #1"
            )
            .1
        );
        for d in [
            Decision::Drop,
            Decision::Duplicate,
            Decision::Reorder,
            Decision::Delay,
        ] {
            assert!(a.1.contains(&d), "{d:?} happened");
        }
        // Drops are missing; the rest arrive (duplicates twice).
        let dup = a.1.iter().filter(|d| **d == Decision::Duplicate).count();
        let drops = a.1.iter().filter(|d| **d == Decision::Drop).count();
        assert_eq!(a.0.len(), 2000 - drops + dup);
        assert!(a.0.iter().all(Option::is_some));
        // Held frames come out after later ones.
        let good: Vec<u64> = a.0.iter().flatten().copied().collect();
        assert!(good.windows(2).any(|w| w[1] < w[0]), "reordered");
    }

    #[test]
    fn a_corrupted_frame_fails_its_checksum() {
        let f = Faults {
            seed: 5,
            corrupt_ppm: 1_000_000,
            ..Faults::default()
        };
        for seed in 0..50 {
            let mut s = Shim::new(Arc::new(Faults { seed, ..f.clone() }), "c".into());
            let mut from = frames(1);
            let mut to = BytesMut::new();
            s.pass(&mut from, &mut to, 0);
            assert_eq!(s.decisions[0].4, Decision::Corrupt);
            assert!(
                !matches!(parse(&to, 1 << 20), Ok(Some(_))),
                "seed {seed}: a flipped bit is caught"
            );
        }
    }

    #[test]
    fn close_stops_the_connection_at_that_frame() {
        let f = Faults {
            seed: 1,
            close_ppm: 10_000,
            ..Faults::default()
        };
        let (out, d, closed) = run(&f, "c");
        assert!(closed);
        assert_eq!(d, vec![Decision::Close]);
        assert!(out.len() < 2000);
    }

    #[test]
    fn the_handshake_is_never_touched() {
        let f = Faults {
            seed: 3,
            drop_ppm: 1_000_000,
            ..Faults::default()
        };
        let mut b = BytesMut::new();
        Encoder::default()
            .resume(&mut b, 0, &[verity_wire::ResumeEntry::new(1, 5)])
            .unwrap();
        let mut s = Shim::new(Arc::new(f), "c".into());
        let mut to = BytesMut::new();
        let n = b.len();
        s.pass(&mut b, &mut to, 0);
        assert_eq!(to.len(), n, "RESUME passes a drop-everything shim");
    }
}
