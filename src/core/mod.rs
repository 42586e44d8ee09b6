//! The deterministic core of a node (DESIGN.md §2): `handle(input, effects)`.
//!
//! Inputs are decoded frames, journal records on replay, durability and
//! clock readings the driver passes in; effects are what the driver must do:
//! journal the input, append output frames to the outbound log, send ACKs and
//! NACKs, write dead letters, release outputs to the sink. The core reads no
//! clock, socket, file, thread, environment or random source, so the real
//! runtime and the simulator drive the same code, and a node's behaviour is a
//! pure function of (snapshot, journal).
//!
//! | file | holds |
//! |---|---|
//! | `io.rs` | the vocabulary with the driver: `Input`, `Effects`, `NodeConfig`, `NodeStats` |
//! | `node.rs` | [`NodeCore`]: channels, routing, the app, output commit |
//! | `gaps.rs` | frames after a gap: kept, NACKed by range, handed back in turn |
//! | `replay.rs` | the journal replay loop |
//! | `snapshot.rs` | the core's snapshot and restore |
//! | `channel.rs`, `session.rs`, `greet.rs`, `ids.rs` | one channel's state, who may use which connection, the HELLO exchange, channel ids |

pub mod channel;
mod gaps;
mod greet;
mod ids;
mod io;
mod node;
mod replay;
pub mod session;
mod snapshot;

pub use channel::{InChannel, OutChannel, Transmit, Verdict, Violation};
pub use ids::{
    peer_channel, peer_of, sink_channel, FORWARD_PREFIX_LEN, PEER_CHANNEL_BASE, SINK_CHANNEL_BASE,
};
pub use io::{
    nack_frames, DeadLetter, Effects, HeldFrom, Input, JournalEntry, NodeConfig, NodeStats, Out,
    OutFrames, SnapshotError,
};
pub use node::NodeCore;
pub use replay::NotReplayed;
pub use session::{ConnId, Producer, Refused, Sessions};

#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod tests;
