//! The consumer's greeting on a connection it just admitted
//! (`wire/PROTOCOL.md` rule 5): what the runtime and the simulator send
//! first, as the core decides it.

use bytes::BytesMut;
use verity_wire::{Encoder, ResumeEntry};

use super::node::NodeCore;
use super::session::Producer;

impl NodeCore {
    /// What this node, as consumer, says first on a connection it just
    /// admitted (PROTOCOL.md rule 5), encoded into `out` with `epoch`: a
    /// RESUME with the channel's `delivered`; to another node also an ACK
    /// of what is durable, when above 0 (a RESUME drops nothing at the
    /// producer; only an ACK does). `false`: no such channel here.
    pub fn greet(&self, producer: Producer, epoch: u32, enc: &Encoder, out: &mut BytesMut) -> bool {
        let (channel, delivered) = match producer {
            Producer::Source(channel) => {
                let Some(c) = self.inputs().iter().find(|c| c.id == channel) else {
                    return false;
                };
                (channel, c.delivered)
            }
            Producer::Node(from) => match self.peer_in(from) {
                Some(c) if from != self.node() => (c.id, c.delivered),
                _ => return false,
            },
        };
        let _ = enc.resume(out, epoch, &[ResumeEntry::new(channel, delivered)]);
        let acked = self.input_acked(channel);
        if matches!(producer, Producer::Node(_)) && acked > 0 {
            let _ = enc.ack(out, channel, epoch, acked);
        }
        true
    }
}
