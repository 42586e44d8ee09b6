//! Frames that arrive after a gap (selective repeat): kept in the input's
//! bounded reorder window (`verity_wire::reorder`), the missing ranges
//! NACKed at once, and handed back to the driver in turn
//! ([`NodeCore::take_held`]). The re-NACK of gaps no frame came to is on
//! the core's timer (`Input::Tick`, `node.rs`).

use verity_wire::frames::content_crc;
use verity_wire::reorder::Hold;
use verity_wire::FrameView;

use super::channel::Violation;
use super::io::{Effects, HeldFrom};
use super::node::NodeCore;

impl NodeCore {
    /// A frame after a gap on input `idx`: kept for its turn if it fits;
    /// what is missing is NACKed by range (a new gap at once).
    #[inline(never)]
    pub(super) fn gap(&mut self, idx: usize, frame: FrameView<'_>, now_ns: u64, fx: &mut Effects) {
        self.stats.gaps += 1;
        let (channel, seq) = (frame.header.channel(), frame.header.seq());
        let crc = content_crc(&frame);
        let input = &mut self.inputs[idx];
        let mut ranges = core::mem::take(&mut self.nack_scratch);
        ranges.clear();
        let delivered = input.delivered;
        let interval = self.cfg.nack_interval_ns;
        let kept = input
            .reorder
            .hold(delivered, seq, crc, &frame, now_ns, interval, &mut ranges);
        fx.nacks
            .extend(ranges.iter().map(|&(first, last)| (channel, first, last)));
        self.nack_scratch = ranges;
        if kept == (Hold::Already { same: false }) {
            // Two versions of one seq: a second producer, or a changed
            // record. The kept one stays.
            self.violation(Violation::Conflict { channel, seq }, fx);
        }
    }

    /// A frame kept after a gap whose turn has come, if any: its bytes
    /// are appended to `out` and the input it came on is returned. The
    /// driver handles it next as it would a frame just read
    /// ([`Input::SourceData`] or [`Input::PeerData`] from that node), and
    /// journals it, until this returns `None`.
    pub fn take_held(&mut self, out: &mut Vec<u8>) -> Option<HeldFrom> {
        let idx = self.held_ready.take()?;
        let input = &mut self.inputs[idx];
        if !input.reorder.take(input.delivered + 1, out) {
            return None;
        }
        Some(match idx.checked_sub(self.sources) {
            None => HeldFrom::Source,
            Some(j) => HeldFrom::Node(j as u32),
        })
    }

    /// Whether [`NodeCore::take_held`] has a frame.
    #[inline]
    pub fn held_ready(&self) -> bool {
        self.held_ready.is_some()
    }

    /// Frames kept after gaps, over every input channel.
    pub fn held_frames(&self) -> usize {
        self.inputs.iter().map(|i| i.reorder.held()).sum()
    }
}
