//! The deterministic core of a node (DESIGN.md §2): `handle(input, effects)`.
//!
//! Inputs are decoded frames, journal records on replay, durability and
//! clock readings the driver passes in; effects are what the driver must do:
//! journal the input, append output frames to the outbound log, send ACKs and
//! NACKs, write dead letters, release outputs to the sink. The core reads no
//! clock, socket, file, thread, environment or random source, so the real
//! runtime and the simulator drive the same code, and a node's behaviour is a
//! pure function of (snapshot, journal).

pub mod channel;
mod greet;
mod ids;
mod node;
mod replay;
pub mod session;

pub use channel::{InChannel, OutChannel, Transmit, Verdict, Violation};
pub use ids::{
    peer_channel, peer_of, sink_channel, FORWARD_PREFIX_LEN, PEER_CHANNEL_BASE, SINK_CHANNEL_BASE,
};
pub use node::{
    nack_frames, DeadLetter, Effects, HeldFrom, Input, JournalEntry, NodeConfig, NodeCore,
    NodeStats, Out, OutFrames, SnapshotError,
};
pub use replay::NotReplayed;
pub use session::{ConnId, Producer, Refused, Sessions};

#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod tests;
