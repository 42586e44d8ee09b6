//! An in-process link between two shards (nodes) of one worker process:
//! two SPSC byte rings (one each way) carrying the same frames a TCP
//! connection would, and the `mio::Waker` of the other shard's event loop
//! (DESIGN §5). A link end looks like a socket to the worker: `write` takes
//! bytes, `read_into` gives bytes back; frames may be split across ring
//! records at any byte, as across TCP segments, and the decoder does not care.

use std::sync::Arc;

use bytes::BytesMut;
use mio::{Poll, Waker};

use crate::ring::{self, ClaimError, Consumer, Producer};

/// In-process wiring of one shard to the other shards of its worker
/// process (empty for a worker with one node).
#[derive(Default)]
pub struct ShardLinks {
    /// The shard's event loop, with the waker the other shards use
    /// registered on it as the worker's `WAKER` token.
    pub poll: Option<Poll>,
    /// That waker (the one a `Poll` may have): the shard's journal syncer
    /// wakes the loop with it too.
    pub waker: Option<Arc<Waker>>,
    /// (node, end): our channel to that node (we produce, it ACKs).
    pub to: Vec<(u32, LinkEnd)>,
    /// (node, end): that node's channel to us (we consume).
    pub from: Vec<(u32, LinkEnd)>,
}

/// One end of an in-process link.
pub struct LinkEnd {
    tx: Producer,
    rx: Consumer,
    /// Wakes the shard at the other end (its event loop may be asleep).
    peer: Arc<Waker>,
    /// Set by `prepare_sleep` when we announced a sleep on `rx`.
    sleeping: bool,
}

impl std::fmt::Debug for LinkEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEnd").finish_non_exhaustive()
    }
}

/// Makes a link between a shard woken by `a_waker` and one woken by
/// `b_waker`: returns (a's end, b's end).
pub fn link(
    capacity_bytes: usize,
    a_waker: Arc<Waker>,
    b_waker: Arc<Waker>,
) -> Result<(LinkEnd, LinkEnd), ring::CapacityError> {
    let (a_tx, b_rx) = ring::channel(capacity_bytes)?;
    let (b_tx, a_rx) = ring::channel(capacity_bytes)?;
    Ok((
        LinkEnd {
            tx: a_tx,
            rx: a_rx,
            peer: b_waker,
            sleeping: false,
        },
        LinkEnd {
            tx: b_tx,
            rx: b_rx,
            peer: a_waker,
            sleeping: false,
        },
    ))
}

impl LinkEnd {
    /// Writes as much of `bytes` as the ring has room for; wakes the other
    /// shard if it sleeps. Returns the bytes taken (0 when the ring is full:
    /// try again after the other side has read).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut done = 0;
        let max = self.tx.max_len();
        while done < bytes.len() {
            let n = (bytes.len() - done).min(max);
            match self.tx.claim(n) {
                Ok(mut c) => {
                    c.copy_from_slice(&bytes[done..done + n]);
                    c.stage();
                    done += n;
                }
                Err(ClaimError::Full { free_bytes, .. }) if free_bytes > 64 => {
                    // Room for a smaller piece: take what fits.
                    let fit = (free_bytes - 64).min(n);
                    match self.tx.claim(fit) {
                        Ok(mut c) => {
                            c.copy_from_slice(&bytes[done..done + fit]);
                            c.stage();
                            done += fit;
                        }
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        if self.tx.publish().is_needed() {
            self.peer.wake()?;
        }
        Ok(done)
    }

    /// Appends what the other side wrote (whole ring records, at least one
    /// if there is any, until `max` bytes are reached) to `buf`. Returns the
    /// bytes appended.
    pub fn read_into(&mut self, buf: &mut BytesMut, max: usize) -> usize {
        if std::mem::take(&mut self.sleeping) {
            self.rx.finish_sleep();
        }
        let mut n = 0;
        while n < max {
            let len = match self.rx.peek() {
                Some(rec) => {
                    buf.extend_from_slice(rec);
                    rec.len()
                }
                None => break,
            };
            n += len;
            // Mark it read (the iterator's first record is the one peeked).
            let _ = self.rx.read().next();
        }
        self.rx.release();
        n
    }

    /// Call before the event loop sleeps: `false` means bytes are waiting
    /// (don't sleep); `true` means the other side will wake us.
    pub fn prepare_sleep(&mut self) -> bool {
        let ok = self.rx.prepare_sleep();
        self.sleeping = ok;
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};

    #[test]
    fn bytes_cross_in_order_split_anywhere_and_a_sleeping_side_is_woken() {
        let (pa, pb) = (Poll::new().unwrap(), Poll::new().unwrap());
        let wa = Arc::new(Waker::new(pa.registry(), Token(7)).unwrap());
        let wb = Arc::new(Waker::new(pb.registry(), Token(7)).unwrap());
        let (mut a, mut b) = link(1024, wa, wb).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut got = BytesMut::new();
        let mut sent = 0;
        let mut pb = pb;
        let mut events = mio::Events::with_capacity(4);
        while got.len() < data.len() {
            sent += a.write(&data[sent..]).unwrap();
            if !b.prepare_sleep() {
                b.read_into(&mut got, 300);
                continue;
            }
            // Nothing waiting: the next write must wake b's poll.
            if sent < data.len() {
                sent += a.write(&data[sent..]).unwrap();
                pb.poll(&mut events, Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                assert!(events.iter().any(|e| e.token() == Token(7)), "woken");
            }
            b.read_into(&mut got, 300);
        }
        assert_eq!(&got[..], &data[..]);
    }
}
