//! Selective repeat, the consumer's half (`wire/PROTOCOL.md`, rule 6): the
//! DATA frames of one channel that arrived after a gap, kept (bounded in
//! count and bytes) until the gap is filled, and the ranges of seqs still
//! missing, to NACK. A new hole is NACKed at once, naming just it; every
//! hole still open is NACKed again once per interval while frames arrive
//! (the NACK, or the resend, may have been lost too).
//!
//! Used by the node core for its input channels and by the sinks: no I/O,
//! no clock (the caller passes `now_ns`), no allocation once the slots of
//! the window have grown to their frames' sizes.

use zerocopy::IntoBytes;

use crate::decode::FrameView;

/// What [`Reorder::hold`] did with a frame after a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Kept: it is taken back when the seqs before it have arrived.
    Held,
    /// A frame with this seq is kept already; `same`: with this content
    /// checksum.
    Already { same: bool },
    /// Not kept (past the window, or the byte bound is reached): the
    /// producer sends it again when asked.
    Dropped,
}

/// "Every seq from `first` on": a range for a go-back-N NACK (empty body).
pub const FROM_ON: u64 = u64::MAX;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Slot {
    /// The seq kept here (0: empty).
    seq: u64,
    crc: u32,
    bytes: Vec<u8>,
}

/// The out-of-order frames of one channel and its holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorder {
    /// Seq `s` is kept at `s & (window - 1)`, for `s` in
    /// `delivered + 2 ..= delivered + window` (sized on first use).
    slots: Vec<Slot>,
    window: u64,
    max_bytes: usize,
    held: usize,
    bytes: usize,
    /// Highest seq seen past `delivered` (kept or not); 0: none.
    seen: u64,
    /// When every open hole was last NACKed (`None`: no hole open).
    nacked_at: Option<u64>,
}

impl Reorder {
    /// Keeps up to `window` seqs past `delivered` (a power of two; 0:
    /// nothing, go-back-N) and at most `max_bytes` of frames.
    pub fn new(window: usize, max_bytes: usize) -> Reorder {
        debug_assert!(window == 0 || window.is_power_of_two());
        Reorder {
            slots: Vec::new(),
            window: window as u64,
            max_bytes,
            held: 0,
            bytes: 0,
            seen: 0,
            nacked_at: None,
        }
    }

    /// Frames kept.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Bytes of the frames kept.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether frame `seq` is kept.
    #[inline]
    pub fn holds(&self, seq: u64) -> bool {
        self.held > 0 && self.slots[(seq & (self.window - 1)) as usize].seq == seq
    }

    /// Frame `seq` arrived with `delivered + 1 < seq`: keeps it if it fits,
    /// and appends to `nacks` the (first, last) ranges to NACK now (one
    /// range `(delivered + 1, FROM_ON)` with a window of 0).
    #[allow(clippy::too_many_arguments)]
    pub fn hold(
        &mut self,
        delivered: u64,
        seq: u64,
        crc: u32,
        frame: &FrameView<'_>,
        now_ns: u64,
        interval_ns: u64,
        nacks: &mut Vec<(u64, u64)>,
    ) -> Hold {
        debug_assert!(seq > delivered + 1);
        let due = self
            .nacked_at
            .is_none_or(|at| now_ns.saturating_sub(at) >= interval_ns);
        if self.window == 0 {
            if due {
                self.nacked_at = Some(now_ns);
                nacks.push((delivered + 1, FROM_ON));
            }
            return Hold::Dropped;
        }
        let seen = self.seen.max(delivered);
        self.seen = seen.max(seq);
        let verdict = if seq - delivered > self.window {
            Hold::Dropped
        } else {
            if self.slots.is_empty() {
                self.slots = vec![Slot::default(); self.window as usize];
            }
            let slot = &mut self.slots[(seq & (self.window - 1)) as usize];
            if slot.seq == seq {
                Hold::Already {
                    same: slot.crc == crc,
                }
            } else if self.bytes + frame.stride > self.max_bytes {
                Hold::Dropped
            } else {
                debug_assert_eq!(slot.seq, 0, "slot of {seq} holds {}", slot.seq);
                slot.seq = seq;
                slot.crc = crc;
                // The frame as it arrived: header, payload, zero padding.
                slot.bytes.clear();
                slot.bytes.extend_from_slice(frame.header.as_bytes());
                slot.bytes.extend_from_slice(frame.payload);
                slot.bytes.resize(frame.stride, 0);
                self.held += 1;
                self.bytes += frame.stride;
                Hold::Held
            }
        };
        if due && self.nacked_at.is_some() {
            // A hole stayed open an interval: ask for every one again.
            self.holes(delivered, nacks);
            self.nacked_at = Some(now_ns);
        } else if seq > seen + 1 {
            // A new hole, right before this frame: ask for it at once (as
            // far as the window keeps what follows).
            let last = (seq - 1).min(delivered + self.window);
            if seen < last {
                nacks.push((seen + 1, last));
            }
            self.nacked_at.get_or_insert(now_ns);
        }
        verdict
    }

    /// When the open gaps are due to be NACKed again (`None`: no gap open).
    pub fn deadline(&self, interval_ns: u64) -> Option<u64> {
        self.nacked_at.map(|at| at.saturating_add(interval_ns))
    }

    /// At `now_ns`, with no frame arriving: if a gap has stayed open for
    /// the interval since it was last NACKed, appends every open one to
    /// `nacks` (the NACK or the resend may have been lost, and nothing
    /// more may come to tell: the producer's window is full, or it had no
    /// more to send).
    pub fn renack(
        &mut self,
        delivered: u64,
        now_ns: u64,
        interval_ns: u64,
        nacks: &mut Vec<(u64, u64)>,
    ) {
        let Some(at) = self.nacked_at else {
            return;
        };
        if now_ns.saturating_sub(at) < interval_ns {
            return;
        }
        if self.window == 0 {
            nacks.push((delivered + 1, FROM_ON));
        } else {
            self.holes(delivered, nacks);
        }
        self.nacked_at = Some(now_ns);
    }

    /// Appends the missing ranges past `delivered` up to the highest seq
    /// seen (at most [`crate::MAX_NACK_RANGES`], within the window).
    fn holes(&self, delivered: u64, nacks: &mut Vec<(u64, u64)>) {
        let end = self.seen.min(delivered + self.window);
        let mut open: Option<u64> = None;
        let start = nacks.len();
        for s in delivered + 1..=end {
            let kept =
                !self.slots.is_empty() && self.slots[(s & (self.window - 1)) as usize].seq == s;
            match (kept, open) {
                (false, None) => open = Some(s),
                (true, Some(first)) => {
                    nacks.push((first, s - 1));
                    open = None;
                    if nacks.len() - start == crate::MAX_NACK_RANGES {
                        return;
                    }
                }
                _ => {}
            }
        }
        if let Some(first) = open {
            nacks.push((first, end));
        }
    }

    /// `delivered` reached `next - 1`: appends frame `next` to `out` and
    /// forgets it, if it is kept. The caller takes every kept frame this
    /// way in seq order.
    pub fn take(&mut self, next: u64, out: &mut Vec<u8>) -> bool {
        if self.held == 0 {
            return false;
        }
        let slot = &mut self.slots[(next & (self.window - 1)) as usize];
        if slot.seq != next {
            return false;
        }
        out.extend_from_slice(&slot.bytes);
        slot.seq = 0;
        self.held -= 1;
        self.bytes -= slot.bytes.len();
        if self.held == 0 && self.seen <= next {
            self.nacked_at = None;
        }
        true
    }

    /// Frame `seq` arrived in order (`delivered + 1`): forgets a kept copy
    /// of it, returning its checksum (a resend raced the kept frame's turn).
    pub fn accepted(&mut self, seq: u64) -> Option<u32> {
        if self.held == 0 {
            if self.seen <= seq {
                self.nacked_at = None;
            }
            return None;
        }
        let slot = &mut self.slots[(seq & (self.window - 1)) as usize];
        if slot.seq != seq {
            return None;
        }
        slot.seq = 0;
        self.held -= 1;
        self.bytes -= slot.bytes.len();
        Some(slot.crc)
    }

    /// Forgets everything (the channel restarts from a snapshot's
    /// `delivered`).
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.seq = 0;
        }
        self.held = 0;
        self.bytes = 0;
        self.seen = 0;
        self.nacked_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Encoder;
    use bytes::BytesMut;

    /// DATA frame `seq` with 8 payload bytes: 48 bytes.
    fn frame(seq: u64) -> BytesMut {
        let mut b = BytesMut::new();
        Encoder::default()
            .data(&mut b, 1, seq, 0, false, &[seq as u8; 8])
            .unwrap();
        b
    }

    fn hold_crc(
        r: &mut Reorder,
        delivered: u64,
        seq: u64,
        crc: u32,
        now: u64,
    ) -> (Hold, Vec<(u64, u64)>) {
        let mut n = Vec::new();
        let b = frame(seq);
        let v = crate::parse(&b, 1 << 20).unwrap().unwrap();
        let h = r.hold(delivered, seq, crc, &v, now, 100, &mut n);
        (h, n)
    }

    fn hold(r: &mut Reorder, delivered: u64, seq: u64, now: u64) -> (Hold, Vec<(u64, u64)>) {
        hold_crc(r, delivered, seq, seq as u32, now)
    }

    #[test]
    fn a_new_hole_is_nacked_at_once_and_only_it() {
        let mut r = Reorder::new(16, 1 << 20);
        // delivered 4; 5 lost; 6, 7 arrive.
        assert_eq!(hold(&mut r, 4, 6, 0), (Hold::Held, vec![(5, 5)]));
        assert_eq!(hold(&mut r, 4, 7, 1), (Hold::Held, vec![]));
        // 8, 9 lost; 10 arrives: only the new hole.
        assert_eq!(hold(&mut r, 4, 10, 2), (Hold::Held, vec![(8, 9)]));
        assert_eq!(r.held(), 3);
        // An interval later, every open hole again.
        assert_eq!(hold(&mut r, 4, 11, 150), (Hold::Held, vec![(5, 5), (8, 9)]));
        assert_eq!(hold(&mut r, 4, 12, 160), (Hold::Held, vec![]));
    }

    #[test]
    fn kept_frames_come_back_in_seq_order_once() {
        let mut r = Reorder::new(8, 1 << 20);
        hold(&mut r, 0, 3, 0);
        hold(&mut r, 0, 2, 0);
        assert_eq!(hold(&mut r, 0, 3, 0).0, Hold::Already { same: true });
        let mut out = Vec::new();
        assert!(!r.take(1, &mut out), "1 never arrived");
        assert_eq!(r.accepted(1), None);
        assert!(r.take(2, &mut out));
        assert!(r.take(3, &mut out));
        assert!(!r.take(4, &mut out));
        assert_eq!(
            out,
            [frame(2), frame(3)].concat(),
            "the frames as they arrived"
        );
        assert_eq!((r.held(), r.held_bytes()), (0, 0));
    }

    #[test]
    fn the_window_and_the_byte_bound_drop_what_does_not_fit() {
        let mut r = Reorder::new(4, 96);
        assert_eq!(hold(&mut r, 0, 5, 0).0, Hold::Dropped, "past the window");
        assert_eq!(hold(&mut r, 0, 2, 0).0, Hold::Held);
        assert_eq!(hold(&mut r, 0, 3, 0).0, Hold::Held);
        assert_eq!(hold(&mut r, 0, 4, 0).0, Hold::Dropped, "96 bytes kept");
        assert_eq!(r.held_bytes(), 96);
        // A resend of a kept seq with other bytes is told apart.
        assert_eq!(
            hold_crc(&mut r, 0, 2, 99, 0).0,
            Hold::Already { same: false }
        );
    }

    #[test]
    fn a_frame_accepted_in_order_replaces_its_kept_copy() {
        let mut r = Reorder::new(8, 1 << 20);
        hold(&mut r, 0, 2, 0);
        assert_eq!(r.accepted(2), Some(2));
        assert_eq!(r.held(), 0);
        let mut out = Vec::new();
        assert!(!r.take(2, &mut out));
    }

    #[test]
    fn without_a_window_a_gap_asks_for_everything_from_it_once_per_interval() {
        let mut r = Reorder::new(0, 0);
        assert_eq!(hold(&mut r, 4, 6, 0), (Hold::Dropped, vec![(5, FROM_ON)]));
        assert_eq!(hold(&mut r, 4, 7, 50), (Hold::Dropped, vec![]));
        assert_eq!(hold(&mut r, 4, 7, 100), (Hold::Dropped, vec![(5, FROM_ON)]));
    }

    #[test]
    fn an_open_gap_is_nacked_again_on_the_timer_without_arrivals() {
        let mut r = Reorder::new(16, 1 << 20);
        hold(&mut r, 4, 6, 0);
        assert_eq!(r.deadline(100), Some(100));
        let mut n = Vec::new();
        r.renack(4, 99, 100, &mut n);
        assert!(n.is_empty(), "not yet");
        r.renack(4, 100, 100, &mut n);
        assert_eq!(n, vec![(5, 5)]);
        assert_eq!(r.deadline(100), Some(200));
        // Filled: the timer stops.
        assert_eq!(r.accepted(5), None);
        let mut out = Vec::new();
        assert!(r.take(6, &mut out));
        assert_eq!(r.deadline(100), None);
        // Go-back-N too.
        let mut g = Reorder::new(0, 0);
        hold(&mut g, 4, 6, 0);
        n.clear();
        g.renack(4, 150, 100, &mut n);
        assert_eq!(n, vec![(5, FROM_ON)]);
        g.accepted(5);
        assert_eq!(g.deadline(100), None);
    }

    #[test]
    fn at_most_64_ranges_per_nack() {
        let mut r = Reorder::new(1024, 1 << 20);
        let mut last = Vec::new();
        for s in (2..400).step_by(2) {
            last = hold(&mut r, 0, s, 0).1;
        }
        assert_eq!(last, vec![(397, 397)]);
        let (_, all) = hold(&mut r, 0, 400, 1000);
        assert_eq!(all.len(), crate::MAX_NACK_RANGES);
        assert_eq!(all[0], (1, 1));
    }
}
