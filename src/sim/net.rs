//! The simulated network: every link between two actors, with its faults
//! (loss, duplication, latency and jitter, reordering, cuts during
//! partitions), the order of its control frames, and the generation of each
//! node's connections, which a crash or a restart ends.

use std::collections::BTreeMap;

use verity_wire::Kind;

use super::params::SimParams;
use verity_wire::rng::Rng;

/// An end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Actor {
    Source(usize),
    Node(u32),
    Sink,
}

/// Every link of the run.
pub(super) struct Net {
    drop_ppm: u32,
    dup_ppm: u32,
    reorder_ppm: u32,
    latency_us: u64,
    jitter_us: u64,
    partitions: Vec<(u64, u64)>,
    node_partitions: Vec<(u64, u64, u32, u32)>,
    /// Per node: bumped at every crash and restart, so frames in flight on
    /// the old connections vanish (TCP connections die).
    gens: Vec<u64>,
    /// Per link, when its last control frame (anything but DATA) arrives:
    /// they arrive in the order sent, as over TCP (a consumer's ACKs never
    /// overtake each other), while DATA frames may be reordered.
    control_at: BTreeMap<(Actor, Actor), u64>,
    pub(super) frames_sent: u64,
    pub(super) frames_dropped: u64,
}

impl Net {
    pub(super) fn new(p: &SimParams, nodes: u32) -> Net {
        Net {
            drop_ppm: p.drop_ppm,
            dup_ppm: p.dup_ppm,
            reorder_ppm: p.reorder_ppm,
            latency_us: p.latency_us,
            jitter_us: p.jitter_us,
            partitions: p.partitions.clone(),
            node_partitions: p.node_partitions.clone(),
            gens: vec![0; nodes as usize],
            control_at: BTreeMap::new(),
            frames_sent: 0,
            frames_dropped: 0,
        }
    }

    /// The link from `from` to `to` is cut at `at` (a partition).
    fn cut(&self, from: Actor, to: Actor, at: u64) -> bool {
        if self.partitions.iter().any(|&(s, e)| at >= s && at < e) {
            return true;
        }
        let (Actor::Node(a), Actor::Node(b)) = (from, to) else {
            return false;
        };
        self.node_partitions
            .iter()
            .any(|&(s, e, x, y)| at >= s && at < e && ((a, b) == (x, y) || (a, b) == (y, x)))
    }

    fn gen_of(&self, a: Actor) -> u64 {
        match a {
            Actor::Node(n) => self.gens[n as usize],
            _ => 0,
        }
    }

    /// The generations of the connection between `from` and `to` now: a
    /// frame sent on it arrives only if they are still the same.
    pub(super) fn connection(&self, from: Actor, to: Actor) -> (u64, u64) {
        (self.gen_of(from), self.gen_of(to))
    }

    /// Node `n` crashed or restarted: its connections are gone.
    pub(super) fn reset(&mut self, n: u32) {
        self.gens[n as usize] += 1;
    }

    /// Puts one frame on the link from `from` to `to` at `now`: the delays
    /// after which its copies arrive (none: lost; two: duplicated).
    pub(super) fn transmit(
        &mut self,
        rng: &mut Rng,
        now: u64,
        from: Actor,
        to: Actor,
        frame: &[u8],
    ) -> [Option<u64>; 2] {
        let mut delays = [None; 2];
        self.frames_sent += 1;
        if self.cut(from, to, now) || rng.below(1_000_000) < self.drop_ppm as u64 {
            self.frames_dropped += 1;
            return delays;
        }
        let copies = if rng.below(1_000_000) < self.dup_ppm as u64 {
            2
        } else {
            1
        };
        let control = frame.get(verity_wire::KIND_OFFSET) != Some(&(Kind::Data as u8));
        for slot in delays.iter_mut().take(copies) {
            let mut delay = self.latency_us + rng.below(self.jitter_us + 1);
            if rng.below(1_000_000) < self.reorder_ppm as u64 {
                delay += rng.below(5_000);
            }
            if control {
                let last = self.control_at.entry((from, to)).or_insert(0);
                let at = (now + delay).max(*last + 1);
                *last = at;
                delay = at - now;
            }
            *slot = Some(delay);
        }
        delays
    }
}
