//! The clients' side of the protocol, sans-IO: a source's send window
//! ([`SourceWindow`]) and a sink's per-channel delivery ledger
//! ([`SinkLedger`]). `verity-send`, `verity-recv` and the simulator's
//! clients all run these, so a simulated source resends and a simulated
//! sink deduplicates exactly as the shipped tools do (`wire/PROTOCOL.md`,
//! rules 1-6). Time comes in as nanoseconds from any fixed origin; nothing
//! here reads a clock.

use std::collections::BTreeMap;

use crate::body::ResumeEntry;
use crate::decode::FrameView;
use crate::encode::Encoder;
use crate::reorder::Reorder;
pub use crate::reorder::{Hold, FROM_ON};
use bytes::BytesMut;

/// A peer said something the protocol rules out: the connection must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DATA frames to send next: seqs `from..=to`; those `<= resend_through`
/// were sent before and carry the RESEND flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub from: u64,
    pub to: u64,
    pub resend_through: u64,
}

impl Batch {
    /// Frames in the batch.
    pub fn len(&self) -> u64 {
        self.to - self.from + 1
    }

    /// Never true: a batch has at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `seq` is sent again (the RESEND flag).
    pub fn resend(&self, seq: u64) -> bool {
        seq <= self.resend_through
    }
}

/// What a source has done on its connections so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Frames sent again (RESEND flag set).
    pub resent: u64,
    /// Resends started because nothing was ACKed for `resend_after`.
    pub timeouts: u64,
    /// NACKs taken.
    pub nacks: u64,
    /// Records a RESUME named below what had been ACKed (sent again).
    pub rewound: u64,
}

/// A source's producer side of one channel with `records` records
/// (seqs `1..=records`): the cursor, the window of unACKed frames, and the
/// resend on RESUME (rule 5: RESUME is authoritative, even below an earlier
/// ACK), NACK (rule 4) and silence (rule 3).
#[derive(Debug, Clone)]
pub struct SourceWindow {
    records: u64,
    window: u64,
    resend_after_ns: u64,
    acked: u64,
    next: u64,
    highest_sent: u64,
    /// Connected and RESUMEd: frames may go.
    ready: bool,
    /// `acked` when it last moved, and when.
    progress: (u64, u64),
    counts: SourceCounts,
    /// Ranges below `next` the node NACKed (selective repeat): sent again
    /// before anything new.
    resends: std::collections::VecDeque<(u64, u64)>,
}

/// Most NACKed ranges a source queues; past it, a NACK moves the cursor
/// back instead.
const MAX_SOURCE_RESENDS: usize = 256;

impl SourceWindow {
    /// A channel of `records` records; at most `window` unACKed; resend after
    /// `resend_after_ns` without an ACK. Sends nothing before a RESUME.
    pub fn new(records: u64, window: u64, resend_after_ns: u64) -> SourceWindow {
        SourceWindow {
            records,
            window: window.max(1),
            resend_after_ns,
            acked: 0,
            next: 1,
            highest_sent: 0,
            ready: false,
            progress: (0, 0),
            counts: SourceCounts::default(),
            resends: std::collections::VecDeque::new(),
        }
    }

    /// Highest seq the node has ACKed (or RESUMEd from).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest seq ever sent.
    pub fn highest_sent(&self) -> u64 {
        self.highest_sent
    }

    /// Every record is ACKed.
    pub fn done(&self) -> bool {
        self.acked >= self.records
    }

    pub fn counts(&self) -> SourceCounts {
        self.counts
    }

    /// The connection is gone: nothing goes until the next RESUME.
    pub fn disconnected(&mut self) {
        self.ready = false;
        self.resends.clear();
    }

    /// The node's RESUME says it holds `delivered` records of the channel:
    /// everything after them is sent (again). A RESUME naming more than
    /// the channel has is a violation.
    pub fn resume(&mut self, delivered: u64, now_ns: u64) -> Result<(), Violation> {
        if delivered > self.records {
            return Err(Violation(format!(
                "its RESUME says the channel holds {delivered} records; the input has {}",
                self.records
            )));
        }
        if delivered < self.acked {
            self.counts.rewound += self.acked - delivered;
        }
        self.acked = delivered;
        self.next = delivered + 1;
        self.progress = (delivered, now_ns);
        self.ready = true;
        self.resends.clear();
        Ok(())
    }

    /// The node ACKs every seq up to `seq`. An ACK beyond what was sent is
    /// a violation; an older one changes nothing.
    pub fn ack(&mut self, seq: u64, now_ns: u64) -> Result<(), Violation> {
        if seq <= self.acked {
            return Ok(());
        }
        if seq > self.highest_sent {
            return Err(Violation(format!(
                "ACK for seq {seq}; only {} were sent",
                self.highest_sent
            )));
        }
        self.acked = seq;
        self.progress = (seq, now_ns);
        self.next = self.next.max(seq + 1);
        self.trim();
        Ok(())
    }

    /// The node found a gap at `seq`: with no `ranges`, send again
    /// everything from there; else just the (first, last) ranges (the node
    /// kept what came after them).
    pub fn nack(&mut self, seq: u64, ranges: &[(u64, u64)]) {
        self.counts.nacks += 1;
        if ranges.is_empty() {
            self.go_back(seq);
            return;
        }
        for &(first, last) in ranges {
            let (f, l) = (first.max(self.acked + 1), last.min(self.next - 1));
            if f > l || self.resends.iter().any(|&(a, b)| a <= f && l <= b) {
                continue;
            }
            if self.resends.len() == MAX_SOURCE_RESENDS {
                self.go_back(f);
                return;
            }
            self.resends.push_back((f, l));
        }
    }

    fn go_back(&mut self, seq: u64) {
        if seq > self.acked && seq < self.next {
            self.next = seq;
        }
        self.trim();
    }

    /// Queued ranges keep to `acked + 1 ..= next - 1`.
    fn trim(&mut self) {
        let (lo, hi) = (self.acked + 1, self.next - 1);
        self.resends.retain_mut(|r| {
            r.0 = r.0.max(lo);
            r.1 = r.1.min(hi);
            r.0 <= r.1
        });
    }

    /// The next frames to send, at most `max`, inside the window; first,
    /// after `resend_after` without an ACK and with frames outstanding, the
    /// cursor goes back to the first unACKed seq. `None`: nothing to send.
    pub fn poll(&mut self, now_ns: u64, max: u64) -> Option<Batch> {
        if !self.ready || max == 0 {
            return None;
        }
        if self.next > self.acked + 1
            && now_ns.saturating_sub(self.progress.1) > self.resend_after_ns
        {
            self.next = self.acked + 1;
            self.progress.1 = now_ns;
            self.counts.timeouts += 1;
            self.resends.clear();
        }
        if let Some(&(from, to)) = self.resends.front() {
            return Some(Batch {
                from,
                to: to.min(from.saturating_add(max - 1)),
                resend_through: self.highest_sent,
            });
        }
        let end = self
            .records
            .min(self.acked + self.window)
            .min(self.next.saturating_add(max - 1));
        (end >= self.next).then_some(Batch {
            from: self.next,
            to: end,
            resend_through: self.highest_sent,
        })
    }

    /// The frames of `batch` are on their way (call before writing them:
    /// the node may ACK them before the write returns).
    pub fn sent(&mut self, batch: Batch) {
        if batch.from <= batch.resend_through {
            self.counts.resent += batch.resend_through.min(batch.to) - batch.from + 1;
        }
        if let Some(r) = self.resends.front_mut() {
            if r.0 == batch.from {
                // A NACKed range (or its first part) went.
                r.0 = batch.to + 1;
                if r.0 > r.1 {
                    self.resends.pop_front();
                }
                return;
            }
        }
        self.next = batch.to + 1;
        self.highest_sent = self.highest_sent.max(batch.to);
    }
}

/// What a sink does with one DATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next seq of its channel: write it, then [`SinkLedger::delivered`].
    Deliver,
    /// Already delivered: drop it (and ACK again what is delivered).
    Duplicate { delivered: u64 },
    /// A seq after a gap: hand it to [`SinkLedger::gap`], which keeps it
    /// for its turn if it fits and says what to NACK.
    Gap,
}

/// A sink's record of each channel's `delivered` (the highest seq taken
/// in order), the frames kept after a gap, and what to NACK (rules 1, 2,
/// 4 and 6 on the consumer side).
#[derive(Debug, Clone, Default)]
pub struct SinkLedger {
    delivered: BTreeMap<u32, u64>,
    /// Per channel: frames after a gap, and the gaps' NACK pacing.
    reorder: BTreeMap<u32, Reorder>,
    /// Frames kept per channel (0: none; a gap is NACKed go-back-N), and
    /// their bytes.
    window: (usize, usize),
    nack_interval_ns: u64,
}

impl SinkLedger {
    /// A ledger that starts from `delivered` (what the sink's store holds)
    /// and NACKs a gap again at most once per `nack_interval_ns`. It keeps
    /// no frame after a gap (go-back-N) unless [`SinkLedger::keep`] says so.
    pub fn new(delivered: BTreeMap<u32, u64>, nack_interval_ns: u64) -> SinkLedger {
        SinkLedger {
            delivered,
            reorder: BTreeMap::new(),
            window: (0, 0),
            nack_interval_ns,
        }
    }

    /// Selective repeat: frames after a gap are kept, up to `window` seqs
    /// past `delivered` (a power of two) and `bytes` per channel.
    pub fn keep(mut self, window: usize, bytes: usize) -> SinkLedger {
        debug_assert!(window == 0 || window.is_power_of_two());
        self.window = (window, bytes);
        self
    }

    /// Highest seq delivered on `channel` (0: none).
    pub fn get(&self, channel: u32) -> u64 {
        self.delivered.get(&channel).copied().unwrap_or(0)
    }

    /// Every channel's `delivered`.
    pub fn all(&self) -> &BTreeMap<u32, u64> {
        &self.delivered
    }

    /// DATA `seq` of `channel` arrived.
    pub fn offer(&mut self, channel: u32, seq: u64) -> Verdict {
        let delivered = self.get(channel);
        if seq <= delivered {
            return Verdict::Duplicate { delivered };
        }
        if seq == delivered + 1 {
            return Verdict::Deliver;
        }
        Verdict::Gap
    }

    /// Frame `frame` (content checksum `crc`) came after a gap at `now_ns`:
    /// kept for its turn if it fits; the (first, last) ranges to NACK now
    /// are appended to `nacks` (`last` = [`FROM_ON`]: every seq from
    /// `first` on, an empty NACK body). [`Hold::Already`] with `same:
    /// false`: another version of a kept seq (a conflict).
    pub fn gap(
        &mut self,
        frame: &FrameView<'_>,
        crc: u32,
        now_ns: u64,
        nacks: &mut Vec<(u64, u64)>,
    ) -> Hold {
        let (channel, seq) = (frame.header.channel(), frame.header.seq());
        let delivered = self.get(channel);
        let (window, bytes) = self.window;
        let interval = self.nack_interval_ns;
        self.reorder
            .entry(channel)
            .or_insert_with(|| Reorder::new(window, bytes))
            .hold(delivered, seq, crc, frame, now_ns, interval, nacks)
    }

    /// At `now_ns`: the gaps of `channel` still open an interval after
    /// they were last NACKed, appended to `nacks` (call it when no frame
    /// came for a while).
    pub fn renack(&mut self, channel: u32, now_ns: u64, nacks: &mut Vec<(u64, u64)>) {
        let delivered = self.get(channel);
        if let Some(r) = self.reorder.get_mut(&channel) {
            r.renack(delivered, now_ns, self.nack_interval_ns, nacks);
        }
    }

    /// The kept frame whose turn came on `channel` (`delivered + 1`), if
    /// any: appended to `out`. Deliver it as any other, then take the next.
    pub fn take(&mut self, channel: u32, out: &mut Vec<u8>) -> bool {
        let next = self.get(channel) + 1;
        self.reorder
            .get_mut(&channel)
            .is_some_and(|r| r.take(next, out))
    }

    /// `seq` of `channel` was written (after [`Verdict::Deliver`]).
    pub fn delivered(&mut self, channel: u32, seq: u64) {
        let d = self.delivered.entry(channel).or_insert(0);
        debug_assert_eq!(seq, *d + 1, "channel {channel} delivered out of order");
        *d = seq;
        if let Some(r) = self.reorder.get_mut(&channel) {
            r.accepted(seq);
        }
    }

    /// Appends to `out` the NACK of `channel` for `nacks` (what
    /// [`SinkLedger::gap`] returned; nothing when it is empty).
    pub fn nack(enc: &Encoder, out: &mut BytesMut, channel: u32, nacks: &[(u64, u64)]) {
        match nacks {
            [] => {}
            [(first, FROM_ON)] => {
                let _ = enc.nack(out, channel, 0, *first);
            }
            ranges => {
                for chunk in ranges.chunks(crate::MAX_NACK_RANGES) {
                    let _ = enc.nack_ranges(out, channel, 0, chunk[0].0, chunk);
                }
            }
        }
    }

    /// The sink's greeting to the producer of `channel` on a new
    /// connection: RESUME with what is delivered, then an ACK of it (a
    /// RESUME alone releases nothing at the node), appended to `out`.
    /// Send it once what it names is durable.
    pub fn greet(&self, channel: u32, enc: &Encoder, out: &mut BytesMut) {
        let d = self.get(channel);
        let _ = enc.resume(out, 0, &[ResumeEntry::new(channel, d)]);
        if d > 0 {
            let _ = enc.ack(out, channel, 0, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn nothing_goes_before_resume_then_a_window() {
        let mut w = SourceWindow::new(100, 10, S);
        assert_eq!(w.poll(0, 4), None);
        w.resume(0, 0).unwrap();
        let b = w.poll(0, 4).unwrap();
        assert_eq!((b.from, b.to, b.resend_through), (1, 4, 0));
        w.sent(b);
        let b = w.poll(0, 100).unwrap();
        assert_eq!((b.from, b.to), (5, 10), "the window stops at acked + 10");
        w.sent(b);
        assert_eq!(w.poll(0, 100), None);
        w.ack(6, 1).unwrap();
        assert_eq!(w.poll(1, 100).map(|b| (b.from, b.to)), Some((11, 16)));
    }

    #[test]
    fn resume_below_an_ack_is_authoritative() {
        let mut w = SourceWindow::new(20, 20, S);
        w.resume(0, 0).unwrap();
        let b = w.poll(0, 20).unwrap();
        w.sent(b);
        w.ack(15, 0).unwrap();
        w.disconnected();
        assert_eq!(w.poll(0, 20), None, "nothing goes while disconnected");
        w.resume(12, 0).unwrap();
        assert_eq!(w.acked(), 12);
        assert_eq!(w.counts().rewound, 3);
        let b = w.poll(0, 20).unwrap();
        assert_eq!((b.from, b.to, b.resend_through), (13, 20, 20));
        assert!(b.resend(20));
    }

    #[test]
    fn a_lying_resume_or_ack_is_a_violation() {
        let mut w = SourceWindow::new(5, 10, S);
        assert!(w.resume(6, 0).is_err(), "RESUME beyond the input");
        w.resume(0, 0).unwrap();
        let b = w.poll(0, 2).unwrap();
        w.sent(b);
        let e = w.ack(3, 0).unwrap_err();
        assert!(e.0.contains("ACK for seq 3; only 2 were sent"), "{e}");
        // A new sender: the node holds 4 from an earlier run; re-ACKing
        // what it RESUMEd is no lie.
        let mut w = SourceWindow::new(5, 10, S);
        w.resume(4, 0).unwrap();
        w.ack(4, 0).unwrap();
        assert!(w.ack(5, 0).is_err(), "5 was never sent");
    }

    #[test]
    fn a_nack_with_ranges_sends_just_those_then_goes_on() {
        let mut w = SourceWindow::new(50, 50, S);
        w.resume(0, 0).unwrap();
        let b = w.poll(0, 10).unwrap();
        w.sent(b);
        w.nack(3, &[(3, 4), (8, 8)]);
        let b = w.poll(0, 10).unwrap();
        assert_eq!((b.from, b.to, b.resend_through), (3, 4, 10));
        w.sent(b);
        let b = w.poll(0, 10).unwrap();
        assert_eq!((b.from, b.to), (8, 8));
        w.sent(b);
        let b = w.poll(0, 10).unwrap();
        assert_eq!((b.from, b.to), (11, 20), "then on from the cursor");
        w.sent(b);
        assert_eq!(w.counts().resent, 3);
        // An ACK past a queued range drops it; a RESUME drops them all.
        w.nack(12, &[(12, 12)]);
        w.ack(12, 0).unwrap();
        assert_eq!(w.poll(0, 10).map(|b| b.from), Some(21));
        w.nack(14, &[(14, 15)]);
        w.resume(13, 0).unwrap();
        assert_eq!(w.poll(0, 10).map(|b| b.from), Some(14));
    }

    #[test]
    fn nack_rewinds_and_silence_resends() {
        let mut w = SourceWindow::new(50, 50, S);
        w.resume(0, 0).unwrap();
        let b = w.poll(0, 10).unwrap();
        w.sent(b);
        w.nack(4, &[]);
        assert_eq!(w.poll(0, 3).map(|b| (b.from, b.to)), Some((4, 6)));
        let b = w.poll(0, 7).unwrap();
        w.sent(b);
        w.ack(10, 0).unwrap();
        let b = w.poll(0, 5).unwrap();
        w.sent(b);
        // 11..=15 outstanding, no ACK for longer than resend_after.
        assert_eq!(w.poll(S / 2, 5).map(|b| b.from), Some(16));
        let b = w.poll(S + 1, 5).unwrap();
        assert_eq!((b.from, b.to), (11, 15));
        assert_eq!(w.counts().timeouts, 1);
        assert_eq!(w.counts().nacks, 1);
        w.sent(b);
        assert_eq!(w.counts().resent, 7 + 5, "4..=10 after the NACK, 11..=15");
    }

    #[test]
    fn sink_delivers_in_order_drops_duplicates_paces_nacks() {
        let data = |seq| {
            let mut b = BytesMut::new();
            Encoder::default()
                .data(&mut b, 7, seq, 0, false, b"x")
                .unwrap();
            b
        };
        let mut l = SinkLedger::new(BTreeMap::from([(7, 3)]), 50);
        assert_eq!(l.offer(7, 2), Verdict::Duplicate { delivered: 3 });
        assert_eq!(l.offer(7, 4), Verdict::Deliver);
        l.delivered(7, 4);
        assert_eq!(l.offer(7, 6), Verdict::Gap);
        let mut nacks = Vec::new();
        let (six, seven) = (data(6), data(7));
        let six = crate::parse(&six, 1 << 20).unwrap().unwrap();
        let seven = crate::parse(&seven, 1 << 20).unwrap().unwrap();
        assert_eq!(l.gap(&six, 6, 0, &mut nacks), Hold::Dropped, "go-back-N");
        assert_eq!(nacks, vec![(5, FROM_ON)]);
        nacks.clear();
        l.gap(&seven, 7, 10, &mut nacks);
        assert!(nacks.is_empty(), "once per interval");
        l.gap(&seven, 7, 61, &mut nacks);
        assert_eq!(nacks, vec![(5, FROM_ON)]);
        assert_eq!(l.offer(8, 1), Verdict::Deliver, "a new channel starts at 1");
        // Selective repeat: 6 and 7 kept, 5 NACKed alone, then taken in order.
        let mut k = SinkLedger::new(BTreeMap::from([(7, 4)]), 50).keep(16, 1 << 20);
        nacks.clear();
        assert_eq!(k.gap(&six, 6, 0, &mut nacks), Hold::Held);
        assert_eq!(k.gap(&seven, 7, 1, &mut nacks), Hold::Held);
        assert_eq!(nacks, vec![(5, 5)]);
        let mut out = Vec::new();
        assert!(!k.take(7, &mut out), "5 is missing");
        k.delivered(7, 5);
        assert!(k.take(7, &mut out));
        k.delivered(7, 6);
        assert!(k.take(7, &mut out));
        k.delivered(7, 7);
        assert!(!k.take(7, &mut out));
        assert_eq!(out, [&data(6)[..], &data(7)[..]].concat());
        let mut out = BytesMut::new();
        l.greet(7, &Encoder::default(), &mut out);
        let mut dec = crate::Decoder::new(crate::DEFAULT_MAX_FRAME_LEN);
        dec.extend(&out);
        let resume = dec.decode().unwrap().unwrap();
        assert_eq!(resume.view().resume_delivered(7), Some(4));
        let ack = dec.decode().unwrap().unwrap();
        assert_eq!((ack.kind(), ack.header().seq()), (crate::Kind::Ack, 4));
    }
}
