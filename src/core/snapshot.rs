//! A node core's snapshot: what [`NodeCore::snapshot`] writes and
//! [`NodeCore::restore`] reads back (node, journal position, watermarks,
//! seq counters, then the app's state).

use super::io::SnapshotError;
use super::node::NodeCore;
use crate::codec::{Codec, CodecError};

const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"VRTYSNP2");

impl NodeCore {
    /// Serialises the core: node, journal position, watermarks, seq
    /// counters, app state. Call it between `handle`s once everything
    /// journaled is durable.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        SNAPSHOT_MAGIC.encode(out);
        self.app.name().to_owned().encode(out);
        self.cfg.node.encode(out);
        self.journal_next.encode(out);
        (self.inputs.len() as u64).encode(out);
        for c in &self.inputs {
            c.delivered.encode(out);
        }
        (self.outs.len() as u64).encode(out);
        for o in &self.outs {
            o.next_seq.encode(out);
        }
        self.app.snapshot(out);
    }

    /// Restores from [`NodeCore::snapshot`] bytes. Everything the snapshot
    /// covers counts as durable; outputs up to its seq counters as released.
    pub fn restore(&mut self, mut bytes: &[u8]) -> Result<(), SnapshotError> {
        let b = &mut bytes;
        if u64::decode(b)? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let name = String::decode(b)?;
        if name != self.app.name() {
            return Err(SnapshotError::WrongApp {
                snapshot: name,
                running: self.app.name().to_owned(),
            });
        }
        let node = u32::decode(b)?;
        if node != self.cfg.node {
            return Err(SnapshotError::WrongNode {
                snapshot: node,
                running: self.cfg.node,
            });
        }
        let journal_next = u64::decode(b)?;
        let n = u64::decode(b)? as usize;
        if n != self.inputs.len() {
            return Err(SnapshotError::WrongChannels {
                snapshot: n,
                running: self.inputs.len(),
            });
        }
        let mut delivered = Vec::with_capacity(n);
        for _ in 0..n {
            delivered.push(u64::decode(b)?);
        }
        let m = u64::decode(b)? as usize;
        if m != self.outs.len() {
            return Err(SnapshotError::WrongChannels {
                snapshot: m,
                running: self.outs.len(),
            });
        }
        let mut next_seqs = Vec::with_capacity(m);
        for _ in 0..m {
            let s = u64::decode(b)?;
            if s == 0 {
                return Err(SnapshotError::Corrupt(CodecError("seq counter is 0")));
            }
            next_seqs.push(s);
        }
        self.app.restore(b)?;
        for (c, d) in self.inputs.iter_mut().zip(&delivered) {
            c.restore(*d);
        }
        self.acked_in = delivered;
        self.ack_moved.iter_mut().for_each(|m| *m = false);
        self.journal_next = journal_next;
        self.durable = journal_next;
        for (o, s) in self.outs.iter_mut().zip(next_seqs) {
            o.next_seq = s;
            o.released = s - 1;
            o.acked = 0;
            o.sent = 0;
        }
        self.pending_acks.clear();
        self.pending_release.clear();
        Ok(())
    }
}
