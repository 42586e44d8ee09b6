//! Channel state: the consumer's `delivered` watermark (the idempotent
//! structure that makes at-least-once delivery exactly-once) and the
//! producer's seq counter and ACK watermark.

/// What a consumer does with a DATA frame, by its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `seq == delivered + 1`: journal it and process it.
    Accept,
    /// `seq <= delivered`: already accepted; drop it and re-ACK.
    Duplicate,
    /// `seq > delivered + 1`: something before it is missing; drop it.
    /// `nack` is `Some(delivered + 1)` when a NACK should be sent now.
    Gap { nack: Option<u64> },
}

/// Consumer side of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InChannel {
    pub id: u32,
    /// Highest seq accepted (0: none).
    pub delivered: u64,
    /// The `delivered + 1` a NACK was last sent for, and when (ns), so a
    /// burst of out-of-order frames costs one NACK per interval, not one each.
    nacked: Option<(u64, u64)>,
}

impl InChannel {
    pub fn new(id: u32) -> InChannel {
        InChannel {
            id,
            delivered: 0,
            nacked: None,
        }
    }

    /// Classifies `seq` and, on `Accept`, advances `delivered`.
    pub fn offer(&mut self, seq: u64, now_ns: u64, nack_interval_ns: u64) -> Verdict {
        if seq <= self.delivered {
            return Verdict::Duplicate;
        }
        let want = self.delivered + 1;
        if seq == want {
            self.delivered = seq;
            self.nacked = None;
            return Verdict::Accept;
        }
        let nack = match self.nacked {
            Some((w, at)) if w == want && now_ns.saturating_sub(at) < nack_interval_ns => None,
            _ => {
                self.nacked = Some((want, now_ns));
                Some(want)
            }
        };
        Verdict::Gap { nack }
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
}

impl OutChannel {
    pub fn new(id: u32) -> OutChannel {
        OutChannel {
            id,
            next_seq: 1,
            acked: 0,
            released: 0,
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

    /// Applies an ACK; ignores stale ones and ACKs beyond what was released
    /// (a confused or malicious peer), returning whether it moved.
    pub fn ack(&mut self, seq: u64) -> bool {
        if seq <= self.acked || seq > self.released {
            return false;
        }
        self.acked = seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_dropped_and_the_watermark_only_moves_by_one() {
        let mut c = InChannel::new(1);
        assert_eq!(c.offer(1, 0, 10), Verdict::Accept);
        assert_eq!(c.offer(1, 0, 10), Verdict::Duplicate);
        assert_eq!(c.offer(2, 0, 10), Verdict::Accept);
        assert_eq!(c.offer(1, 0, 10), Verdict::Duplicate);
        assert_eq!(c.delivered, 2);
    }

    #[test]
    fn a_gap_nacks_once_per_interval_and_closes_on_resend() {
        let mut c = InChannel::new(1);
        assert_eq!(c.offer(3, 100, 50), Verdict::Gap { nack: Some(1) });
        assert_eq!(c.offer(4, 120, 50), Verdict::Gap { nack: None });
        assert_eq!(c.offer(5, 160, 50), Verdict::Gap { nack: Some(1) });
        assert_eq!(c.delivered, 0, "nothing past a gap is accepted");
        assert_eq!(c.offer(1, 170, 50), Verdict::Accept);
        assert_eq!(c.offer(3, 170, 50), Verdict::Gap { nack: Some(2) });
        assert_eq!(c.offer(2, 171, 50), Verdict::Accept);
        assert_eq!(c.offer(3, 171, 50), Verdict::Accept);
    }

    #[test]
    fn acks_beyond_released_or_backwards_are_ignored() {
        let mut o = OutChannel::new(9);
        assert_eq!((o.assign(), o.assign(), o.assign()), (1, 2, 3));
        assert!(!o.ack(1), "nothing released yet");
        o.released = 2;
        assert!(o.ack(2));
        assert!(!o.ack(1));
        assert!(!o.ack(3));
        assert_eq!((o.acked, o.unacked()), (2, 1));
    }
}
