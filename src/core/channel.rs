//! Channel state: the consumer's `delivered` watermark (the idempotent
//! structure that makes at-least-once delivery exactly-once) with the
//! content checksums of the frames it accepted recently, and the producer's
//! seq counter, ACK watermark and what it has sent, against which every
//! ACK, RESUME and NACK from its consumer is checked.

use std::collections::VecDeque;

use verity_wire::reorder::Reorder;

/// What a consumer does with a DATA frame, by its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `seq == delivered + 1`: journal it and process it.
    Accept,
    /// `seq <= delivered`: already accepted; drop it and re-ACK.
    Duplicate,
    /// `seq > delivered + 1`: something before it is missing: keep it for
    /// later if it fits ([`InChannel::reorder`]) and NACK what is missing.
    Gap,
}

/// A frame from a peer that breaks the protocol (`wire/PROTOCOL.md`,
/// connection rules): the connection gets ERROR `PROTOCOL` and is closed,
/// and nothing is released, dropped or accepted because of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// An ACK or RESUME naming a seq above the highest this node released
    /// on the channel, or a NACK (`what`) for a seq it never sent.
    Beyond {
        what: &'static str,
        channel: u32,
        seq: u64,
        highest: u64,
    },
    /// An ACK or RESUME below what the consumer had already ACKed: it went
    /// backwards, or it lost frames this node has dropped since.
    Backwards {
        what: &'static str,
        channel: u32,
        seq: u64,
        acked: u64,
    },
    /// A DATA frame with the seq of a frame accepted before but other
    /// content: a second producer, or one that changed a record it had sent.
    /// The first accepted version stands.
    Conflict { channel: u32, seq: u64 },
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Violation::Beyond {
                what: "NACK",
                channel,
                seq,
                highest,
            } => write!(
                f,
                "NACK for seq {seq} of channel {channel}, which was never sent (sent through {highest})"
            ),
            Violation::Beyond {
                what,
                channel,
                seq,
                highest,
            } => write!(
                f,
                "{what} for seq {seq} of channel {channel}, above the highest seq released on it ({highest})"
            ),
            Violation::Backwards {
                what,
                channel,
                seq,
                acked,
            } => write!(
                f,
                "{what} for seq {seq} of channel {channel} goes backwards: seqs through {acked} were ACKed and are gone from this node"
            ),
            Violation::Conflict { channel, seq } => write!(
                f,
                "DATA seq {seq} of channel {channel} differs from the frame accepted with that seq (the first accepted version stands)"
            ),
        }
    }
}

/// Consumer side of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InChannel {
    pub id: u32,
    /// Highest seq accepted (0: none).
    pub delivered: u64,
    /// Frames that arrived after a gap, and the gaps to NACK (selective
    /// repeat).
    pub reorder: Reorder,
    /// Content checksums ([`verity_wire::frames::content_crc`]) of the last
    /// accepted frames: seq `s` at `s & (len - 1)`, for `s` in
    /// `max(known_after, delivered - len) + 1 ..= delivered` (empty: none kept).
    crcs: Vec<u32>,
    /// Seqs up to here were accepted before this process knew them (a
    /// snapshot): their checksums are unknown.
    known_after: u64,
}

impl InChannel {
    /// A channel keeping the checksums of its last `window` accepted frames
    /// (a power of two, or 0 for none) and frames after a gap in `reorder`.
    pub fn new(id: u32, window: usize, reorder: Reorder) -> InChannel {
        debug_assert!(window == 0 || window.is_power_of_two());
        InChannel {
            id,
            delivered: 0,
            reorder,
            crcs: vec![0; window],
            known_after: 0,
        }
    }

    /// Classifies `seq` and, on `Accept`, advances `delivered`.
    #[inline]
    pub fn offer(&mut self, seq: u64) -> Verdict {
        if seq <= self.delivered {
            return Verdict::Duplicate;
        }
        if seq == self.delivered + 1 {
            self.delivered = seq;
            return Verdict::Accept;
        }
        Verdict::Gap
    }

    /// Sets `delivered` (a snapshot's, or a replayed record's seq).
    pub fn restore(&mut self, delivered: u64) {
        self.delivered = delivered;
        self.known_after = delivered;
        self.reorder.clear();
    }

    /// Keeps the content checksum of the frame just accepted as `seq`.
    #[inline]
    pub fn remember(&mut self, seq: u64, crc: u32) {
        let len = self.crcs.len() as u64;
        if len > 0 {
            self.crcs[(seq & (len - 1)) as usize] = crc;
        }
    }

    /// The content checksum kept for an accepted `seq`, if still kept.
    pub fn remembered(&self, seq: u64) -> Option<u32> {
        let len = self.crcs.len() as u64;
        let kept = seq > self.known_after && seq <= self.delivered && self.delivered - seq < len;
        kept.then(|| self.crcs[(seq & (len - 1)) as usize])
    }
}

/// Producer side of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutChannel {
    pub id: u32,
    /// Seq the next output gets.
    pub next_seq: u64,
    /// Highest seq the consumer ACKed (durable there).
    pub acked: u64,
    /// Highest seq whose producing journal records are durable (output commit):
    /// frames up to here may leave the node.
    pub released: u64,
    /// Highest seq that may have reached the consumer: handed to a
    /// connection by this process, or released before it started (a
    /// predecessor may have sent those). A consumer's word about later
    /// seqs is taken only as far as this: the rest is sent again and it
    /// drops duplicates. So a consumer can never make the node drop what
    /// no instance of it ever sent.
    pub sent: u64,
    /// The consumer's RESUME arrived on its current connection: frames may
    /// go out on it.
    pub ready: bool,
    /// The next seq to hand to the consumer's connection.
    pub cursor: u64,
    /// Since when (ns) frames handed to the consumer have waited for ACK
    /// progress (`None`: nothing outstanding, or not measured yet).
    waiting_since: Option<u64>,
    /// Ranges of seqs below the cursor the consumer NACKed (selective
    /// repeat): sent again before anything from the cursor on.
    resends: VecDeque<(u64, u64)>,
}

/// Most NACKed ranges an outbound channel queues; past it, a NACK moves
/// the cursor back instead (go-back-N from the first range).
pub const MAX_RESEND_RANGES: usize = 256;

/// Frames of an outbound channel to hand to its consumer's connection now:
/// seqs `from..=to`, those up to `resend_through` flagged `RESEND` (they may
/// have reached the consumer before). The driver writes what its buffer
/// takes, then reports how far with [`OutChannel::transmitted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub from: u64,
    pub to: u64,
    pub resend_through: u64,
}

impl OutChannel {
    pub fn new(id: u32) -> OutChannel {
        OutChannel {
            id,
            next_seq: 1,
            acked: 0,
            released: 0,
            sent: 0,
            ready: false,
            cursor: 1,
            waiting_since: None,
            resends: VecDeque::new(),
        }
    }

    /// The watermark order every step keeps (TigerBeetle style: a broken
    /// invariant is a bug here, never bad input, and stops the node rather
    /// than letting it lose or forge data): ACKed ≤ sent ≤ released ≤
    /// produced, and the cursor never below what was ACKed.
    fn check(&self) {
        let produced = self.next_seq - 1;
        assert!(
            self.acked <= self.sent && self.sent <= self.released && self.released <= produced,
            "channel {}: acked {} <= sent {} <= released {} <= produced {produced}",
            self.id,
            self.acked,
            self.sent,
            self.released
        );
        assert!(
            self.cursor >= 1,
            "channel {}: cursor {} below seq 1",
            self.id,
            self.cursor
        );
        for &(f, l) in &self.resends {
            assert!(
                self.acked < f && f <= l && l < self.cursor && l <= self.sent,
                "channel {}: NACKed range {f}..={l} outside acked {} < .. < cursor {}",
                self.id,
                self.acked,
                self.cursor
            );
        }
    }

    /// Frames produced but not yet ACKed.
    pub fn unacked(&self) -> u64 {
        self.next_seq - 1 - self.acked
    }

    /// Takes the next seq.
    pub fn assign(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Checks a consumer's claim that it holds every seq through `seq`
    /// (`what`: an ACK or a RESUME): never above what was released, never
    /// below what it ACKed before.
    fn claim(&self, what: &'static str, seq: u64) -> Result<(), Violation> {
        if seq > self.released {
            return Err(Violation::Beyond {
                what,
                channel: self.id,
                seq,
                highest: self.released,
            });
        }
        if seq < self.acked {
            return Err(Violation::Backwards {
                what,
                channel: self.id,
                seq,
                acked: self.acked,
            });
        }
        Ok(())
    }

    /// Applies an ACK of every seq through `seq`, as far as this process
    /// sent; returns whether `acked` moved (progress: the resend timer
    /// starts over).
    pub fn ack(&mut self, seq: u64) -> Result<bool, Violation> {
        self.claim("ACK", seq)?;
        let upto = seq.min(self.sent);
        if upto <= self.acked {
            return Ok(false);
        }
        self.acked = upto;
        self.waiting_since = None;
        self.trim_resends();
        self.check();
        Ok(true)
    }

    /// The consumer (re)connected having accepted every seq through
    /// `delivered`: frames go out again from the returned seq on. Nothing
    /// is dropped: `delivered` may not be durable there yet (only an ACK
    /// says so).
    pub fn resume(&mut self, delivered: u64) -> Result<u64, Violation> {
        self.claim("RESUME", delivered)?;
        #[cfg(not(feature = "defect-no-resend-on-resume"))]
        let from = (delivered.min(self.sent) + 1).max(self.acked + 1);
        // DELIBERATE DEFECT (feature `defect-no-resend-on-resume`, built
        // only by tests/sim_defects.rs): the RESUME cursor is ignored and
        // the producer carries on from where it was.
        #[cfg(feature = "defect-no-resend-on-resume")]
        let from = self.cursor.max(self.acked + 1);
        self.cursor = from;
        self.ready = true;
        self.waiting_since = None;
        self.resends.clear();
        self.check();
        Ok(from)
    }

    /// The consumer asked for seqs again: with no `ranges`, every seq from
    /// `from` on (go-back-N); else just those (selective repeat; decoding
    /// checked they ascend from `from`). Returns the first seq that goes
    /// out again, if any.
    pub fn nack(
        &mut self,
        from: u64,
        ranges: impl ExactSizeIterator<Item = (u64, u64)> + Clone,
    ) -> Result<Option<u64>, Violation> {
        let (id, sent) = (self.id, self.sent);
        let beyond = |seq| Violation::Beyond {
            what: "NACK",
            channel: id,
            seq,
            highest: sent,
        };
        if from == 0 || from > self.sent {
            return Err(beyond(from));
        }
        // Checked before anything moves (the resend timer too): a NACK is
        // taken whole or refused whole.
        if let Some(last) = ranges.clone().map(|r| r.1).find(|&l| l > sent) {
            return Err(beyond(last));
        }
        self.waiting_since = None;
        if ranges.len() == 0 {
            return Ok(Some(self.go_back(from)));
        }
        let mut first_out = None;
        for (first, last) in ranges {
            // Below the ACK it is gone (and not missed); from the cursor
            // on it goes out anyway.
            let (f, l) = (first.max(self.acked + 1), last.min(self.cursor - 1));
            if f > l {
                continue;
            }
            if self.resends.iter().any(|&(a, b)| a <= f && l <= b) {
                continue; // asked again before the first resend went out
            }
            if self.resends.len() == MAX_RESEND_RANGES {
                // The cursor covers the rest.
                first_out.get_or_insert(self.go_back(f));
                break;
            }
            self.resends.push_back((f, l));
            first_out.get_or_insert(f);
        }
        self.check();
        Ok(first_out)
    }

    /// Everything from `from` (at least the first unACKed seq) goes out
    /// again: the cursor moves back and queued ranges past it go.
    fn go_back(&mut self, from: u64) -> u64 {
        let from = from.max(self.acked + 1);
        self.cursor = self.cursor.min(from);
        self.trim_resends();
        from
    }

    /// Queued ranges keep to `acked + 1 ..= cursor - 1`: below, the
    /// consumer has the seqs; from the cursor on, they go out anyway.
    fn trim_resends(&mut self) {
        let (lo, hi) = (self.acked + 1, self.cursor - 1);
        self.resends.retain_mut(|r| {
            r.0 = r.0.max(lo);
            r.1 = r.1.min(hi);
            r.0 <= r.1
        });
    }

    /// Seqs the consumer NACKed that wait to go out again.
    pub fn resends_queued(&self) -> usize {
        self.resends.len()
    }

    /// The consumer's connection is gone: nothing goes out until its next
    /// RESUME.
    pub fn disconnected(&mut self) {
        self.ready = false;
        self.waiting_since = None;
        self.resends.clear();
    }

    /// What to hand to the consumer's connection now, if anything: the
    /// released frames from the cursor on, at most `window` seqs past what
    /// the consumer ACKed.
    pub fn transmit(&self, window: u64) -> Option<Transmit> {
        if !self.ready {
            return None;
        }
        if let Some(&(from, to)) = self.resends.front() {
            // NACKed ranges first: all below the cursor, all sent before.
            return Some(Transmit {
                from,
                to,
                resend_through: self.sent,
            });
        }
        let from = self.cursor.max(self.acked + 1);
        let to = self.released.min(self.acked.saturating_add(window));
        (from <= to).then_some(Transmit {
            from,
            to,
            resend_through: self.sent,
        })
    }

    /// Frames through `through` were handed to the consumer's connection
    /// (what [`OutChannel::transmit`] named: a NACKed range, below the
    /// cursor, or frames from the cursor on).
    pub fn transmitted(&mut self, through: u64) {
        debug_assert!(through <= self.released, "sent {through} > released");
        if through < self.cursor {
            if let Some(r) = self.resends.front_mut() {
                if through >= r.0 {
                    r.0 = through + 1;
                    if r.0 > r.1 {
                        self.resends.pop_front();
                    }
                }
            }
            return;
        }
        let through = through.min(self.released);
        self.sent = self.sent.max(through);
        self.cursor = self.cursor.max(through + 1);
        self.check();
    }

    /// At `now_ns`: frames handed to the consumer with no ACK progress for
    /// `timeout_ns` go out again from the first unACKed one (an ACK, or
    /// the frames, may have been lost). Returns that seq when it rewound.
    pub fn tick(&mut self, now_ns: u64, timeout_ns: u64) -> Option<u64> {
        let outstanding = self.ready && self.cursor > self.acked + 1;
        if !outstanding {
            self.waiting_since = None;
            return None;
        }
        match self.waiting_since {
            Some(since) if now_ns.saturating_sub(since) >= timeout_ns => {
                self.cursor = self.acked + 1;
                self.resends.clear();
                self.waiting_since = Some(now_ns);
                Some(self.cursor)
            }
            Some(_) => None,
            None => {
                self.waiting_since = Some(now_ns);
                None
            }
        }
    }

    /// When [`OutChannel::tick`] would next rewind, if frames are waiting.
    pub fn deadline(&self, timeout_ns: u64) -> Option<u64> {
        let outstanding = self.ready && self.cursor > self.acked + 1;
        outstanding
            .then_some(self.waiting_since)
            .flatten()
            .map(|t| t.saturating_add(timeout_ns))
    }

    /// Recovery (after the journal replay released what it regenerated):
    /// the consumer had ACKed every seq through `acked` (the outbound log
    /// keeps nothing below `acked + 1`), and every seq released so far may
    /// have been sent by this node's previous instance.
    pub fn recovered(&mut self, acked: u64) {
        let acked = acked.min(self.released);
        self.acked = self.acked.max(acked);
        self.sent = self.sent.max(self.released);
        self.trim_resends();
        self.check();
    }

    /// Output commit moved: frames through `seq` may leave the node.
    pub fn release(&mut self, seq: u64) {
        assert!(
            seq >= self.released,
            "channel {}: release went back from {} to {seq}",
            self.id,
            self.released
        );
        self.released = seq;
        self.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Reorder {
        Reorder::new(0, 0)
    }

    #[test]
    fn duplicates_are_dropped_and_the_watermark_only_moves_by_one() {
        let mut c = InChannel::new(1, 0, none());
        assert_eq!(c.offer(1), Verdict::Accept);
        assert_eq!(c.offer(1), Verdict::Duplicate);
        assert_eq!(c.offer(2), Verdict::Accept);
        assert_eq!(c.offer(1), Verdict::Duplicate);
        assert_eq!(c.offer(3), Verdict::Accept);
        assert_eq!(c.offer(5), Verdict::Gap);
        assert_eq!(c.delivered, 3, "nothing past a gap is accepted");
    }

    #[test]
    fn checksums_are_kept_for_the_window_and_not_for_seqs_before_a_restore() {
        let mut c = InChannel::new(1, 4, none());
        for s in 1..=6 {
            assert_eq!(c.offer(s), Verdict::Accept);
            c.remember(s, 100 + s as u32);
        }
        assert_eq!(c.remembered(6), Some(106));
        assert_eq!(c.remembered(3), Some(103));
        assert_eq!(c.remembered(2), None, "out of the window");
        assert_eq!(c.remembered(7), None, "not accepted");
        c.restore(6);
        assert_eq!(c.remembered(6), None, "before the restore: unknown");
        assert_eq!(c.offer(7), Verdict::Accept);
        c.remember(7, 107);
        assert_eq!(c.remembered(7), Some(107));
        assert_eq!(InChannel::new(1, 0, none()).remembered(0), None);
    }

    #[test]
    fn acks_beyond_released_or_backwards_are_violations_and_count_only_as_far_as_sent() {
        let mut o = OutChannel::new(9);
        assert_eq!((o.assign(), o.assign(), o.assign()), (1, 2, 3));
        assert!(matches!(
            o.ack(1),
            Err(Violation::Beyond { highest: 0, .. })
        ));
        o.released = 3;
        assert_eq!(
            o.ack(2),
            Ok(false),
            "nothing sent yet: taken as far as sent"
        );
        o.transmitted(2);
        assert_eq!(o.ack(2), Ok(true));
        assert!(matches!(
            o.ack(1),
            Err(Violation::Backwards { acked: 2, .. })
        ));
        assert_eq!(o.ack(2), Ok(false), "the same ACK again is fine");
        assert!(matches!(o.ack(4), Err(Violation::Beyond { .. })));
        assert_eq!((o.acked, o.unacked()), (2, 1));
    }

    #[test]
    fn resume_and_nack_are_checked_against_released_and_sent() {
        let mut o = OutChannel::new(9);
        for _ in 0..10 {
            o.assign();
        }
        o.released = 10;
        // A fresh node released 1..=10 and sent 1..=6.
        o.transmitted(6);
        // A consumer claiming 8 gets 7.. again: 7 and 8 were never sent.
        assert_eq!(o.resume(8), Ok(7));
        assert_eq!(o.acked, 0, "a RESUME drops nothing");
        assert_eq!(o.ack(8), Ok(true));
        assert_eq!(o.acked, 6, "an ACK counts only as far as sent");
        assert!(matches!(
            o.resume(1_000_000_000),
            Err(Violation::Beyond {
                what: "RESUME",
                highest: 10,
                ..
            })
        ));
        assert!(matches!(o.resume(3), Err(Violation::Backwards { .. })));
        assert!(matches!(
            o.nack(7, [].into_iter()),
            Err(Violation::Beyond { what: "NACK", .. })
        ));
        assert_eq!(
            o.nack(6, [].into_iter()),
            Ok(Some(7)),
            "never below what was ACKed"
        );
        assert!(o.nack(0, [].into_iter()).is_err());
        // After a restart: its log kept seqs from 5 on, and anything
        // released before may have been sent by the previous instance.
        let mut again = OutChannel::new(9);
        for _ in 0..10 {
            again.assign();
        }
        again.released = 10;
        again.recovered(4);
        assert_eq!((again.acked, again.sent), (4, 10));
        assert_eq!(again.resume(8), Ok(9));
        assert_eq!(again.ack(8), Ok(true));
        assert_eq!(again.acked, 8);
        assert!(matches!(again.resume(3), Err(Violation::Backwards { .. })));
    }

    fn released(n: u64) -> OutChannel {
        let mut o = OutChannel::new(3);
        for _ in 0..n {
            o.assign();
        }
        o.released = n;
        o
    }

    #[test]
    fn frames_go_out_from_the_resume_cursor_as_far_as_released_and_resends_are_flagged() {
        let mut o = released(10);
        assert_eq!(
            o.transmit(u64::MAX),
            None,
            "nothing before the consumer's RESUME"
        );
        assert_eq!(o.resume(0), Ok(1));
        let t = o.transmit(u64::MAX).unwrap();
        assert_eq!((t.from, t.to, t.resend_through), (1, 10, 0));
        o.transmitted(4);
        assert_eq!(o.transmit(u64::MAX).map(|t| t.from), Some(5));
        // A NACK goes back; the frames sent before are resends now.
        assert_eq!(o.nack(2, [].into_iter()), Ok(Some(2)));
        let t = o.transmit(u64::MAX).unwrap();
        assert_eq!((t.from, t.resend_through), (2, 4));
        o.transmitted(10);
        assert_eq!(o.transmit(u64::MAX), None);
        o.released = 12;
        o.next_seq = 13;
        assert_eq!(o.transmit(u64::MAX).map(|t| (t.from, t.to)), Some((11, 12)));
        // The connection goes: nothing until the next RESUME.
        o.disconnected();
        assert_eq!(o.transmit(u64::MAX), None);
        assert_eq!(o.resume(7), Ok(8));
        assert_eq!(
            o.transmit(u64::MAX).map(|t| (t.from, t.resend_through)),
            Some((8, 10))
        );
    }

    #[test]
    fn no_ack_progress_for_the_timeout_sends_again_from_the_first_unacked() {
        let mut o = released(10);
        o.resume(0).unwrap();
        assert_eq!(o.tick(0, 100), None, "nothing outstanding yet");
        o.transmitted(10);
        assert_eq!(o.tick(1_000, 100), None, "the timer starts");
        assert_eq!(o.deadline(100), Some(1_100));
        assert_eq!(o.tick(1_050, 100), None);
        assert_eq!(o.ack(4), Ok(true));
        assert_eq!(o.deadline(100), None, "progress restarts the timer");
        assert_eq!(o.tick(1_060, 100), None);
        assert_eq!(o.tick(1_200, 100), Some(5), "rewound to the first unACKed");
        assert_eq!(
            o.transmit(u64::MAX).map(|t| (t.from, t.resend_through)),
            Some((5, 10))
        );
        o.transmitted(10);
        assert_eq!(o.ack(10), Ok(true));
        assert_eq!(
            o.tick(9_999, 100),
            None,
            "everything ACKed: nothing to wait for"
        );
        assert_eq!(o.deadline(100), None);
    }

    #[test]
    fn a_nack_with_ranges_sends_just_those_again_then_goes_on_from_the_cursor() {
        let mut o = released(20);
        o.resume(0).unwrap();
        o.transmitted(12);
        // The consumer misses 3 and 6..=7.
        assert_eq!(o.nack(3, [(3, 3), (6, 7)].into_iter()), Ok(Some(3)));
        assert_eq!(o.resends_queued(), 2);
        let t = o.transmit(u64::MAX).unwrap();
        assert_eq!((t.from, t.to, t.resend_through), (3, 3, 12));
        o.transmitted(3);
        let t = o.transmit(u64::MAX).unwrap();
        assert_eq!((t.from, t.to), (6, 7));
        o.transmitted(6);
        assert_eq!(
            o.transmit(u64::MAX).map(|t| (t.from, t.to)),
            Some((7, 7)),
            "a part went"
        );
        o.transmitted(7);
        assert_eq!(
            o.transmit(u64::MAX).map(|t| (t.from, t.to)),
            Some((13, 20)),
            "then on from the cursor"
        );
        assert_eq!((o.sent, o.cursor), (12, 13), "resends move neither");
        // The same gap NACKed again before its resend left: queued once.
        o.nack(9, [(9, 10)].into_iter()).unwrap();
        o.nack(9, [(9, 10)].into_iter()).unwrap();
        assert_eq!(o.resends_queued(), 1);
        // An ACK past a queued range drops it.
        assert_eq!(o.ack(10), Ok(true));
        assert_eq!(o.resends_queued(), 0);
        // Below the ACK a range is gone; from the cursor on it goes out
        // with the cursor anyway.
        assert_eq!(o.nack(9, [(9, 11)].into_iter()), Ok(Some(11)));
        assert_eq!(o.transmit(u64::MAX).map(|t| (t.from, t.to)), Some((11, 11)));
        assert_eq!(o.nack(11, [].into_iter()), Ok(Some(11)), "go-back-N");
        assert_eq!(o.resends_queued(), 0, "the cursor covers the queue");
        assert_eq!(o.nack(11, [(11, 12)].into_iter()), Ok(None));
        assert_eq!(o.transmit(u64::MAX).map(|t| (t.from, t.to)), Some((11, 20)));
    }

    #[test]
    fn a_nack_range_never_sent_is_refused_whole() {
        let mut o = released(20);
        o.resume(0).unwrap();
        o.transmitted(8);
        assert!(matches!(
            o.nack(2, [(2, 2), (5, 9)].into_iter()),
            Err(Violation::Beyond {
                what: "NACK",
                seq: 9,
                highest: 8,
                ..
            })
        ));
        assert_eq!(o.resends_queued(), 0, "nothing queued from a refused NACK");
        assert_eq!(o.cursor, 9);
    }

    #[test]
    fn too_many_nacked_ranges_fall_back_to_going_back() {
        let mut o = released(2_000);
        o.resume(0).unwrap();
        o.transmitted(1_000);
        for k in 0..MAX_RESEND_RANGES as u64 {
            o.nack(2 * k + 1, [(2 * k + 1, 2 * k + 1)].into_iter())
                .unwrap();
        }
        assert_eq!(o.resends_queued(), MAX_RESEND_RANGES);
        let next = 2 * MAX_RESEND_RANGES as u64 + 1;
        assert_eq!(o.nack(next, [(next, next)].into_iter()), Ok(Some(next)));
        assert_eq!(o.cursor, next, "the cursor went back instead");
        // Reconnecting, or a timeout, forgets the queue: the cursor covers it.
        o.disconnected();
        assert_eq!(o.resends_queued(), 0);
    }
}
