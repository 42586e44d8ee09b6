//! Recovery's one journal replay loop, shared by the worker, `verity-replay`
//! and the simulator: a journal record is the run of DATA frames a node
//! accepted together (back to back, as they arrived) with one clock
//! reading, and each frame goes through the core again in journal order
//! (as `Input::Replay` would).

use verity_wire::frames::frames;

use super::io::Effects;
use super::node::NodeCore;

/// A journal frame the core did not take again: the journal does not
/// follow the snapshot's watermarks, or was written by another app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReplayed {
    /// The frame's journal index.
    pub index: u64,
}

impl NodeCore {
    /// Replays one journal record: every frame of `run` (stamped
    /// `timestamp_ns`) as [`Input::Replay`], effects into `fx` (not
    /// cleared), `each(index, fx)` after each frame. Returns how many
    /// frames it replayed.
    pub fn replay_record(
        &mut self,
        run: &[u8],
        timestamp_ns: u64,
        fx: &mut Effects,
        mut each: impl FnMut(u64, &Effects),
    ) -> Result<u64, NotReplayed> {
        let mut replayed = 0;
        for f in frames(run) {
            let index = self.journal_next();
            if !self.replay_frame(index, timestamp_ns, f, fx) {
                return Err(NotReplayed { index });
            }
            each(index, fx);
            replayed += 1;
        }
        Ok(replayed)
    }
}
