//! The channel-id scheme, one place for it: sources produce channels
//! `1..`, node `n` sends its outputs to the sink on `1000 + n`, and node
//! `from` sends to node `to` on `0x1_0000 + from * MAX_NODES + to`
//! (`wire/PROTOCOL.md`, Channels).

use crate::routing::MAX_NODES;

/// First channel id of node-to-node channels (sources use `1..`, sinks `1000..`).
pub const PEER_CHANNEL_BASE: u32 = 0x0001_0000;
/// First channel id of node → sink channels.
pub const SINK_CHANNEL_BASE: u32 = 1000;
/// Bytes a forwarded record carries before the record: source index (u32 LE),
/// reserved (u32, 0), source seq (u64 LE).
pub const FORWARD_PREFIX_LEN: usize = 16;

/// The channel node `node` sends its outputs to the sink on.
pub fn sink_channel(node: u32) -> u32 {
    SINK_CHANNEL_BASE + node
}

/// The channel from node `from` to node `to`.
pub fn peer_channel(from: u32, to: u32) -> u32 {
    PEER_CHANNEL_BASE + from * MAX_NODES + to
}

/// `(from, to)` of a node-to-node channel id.
pub fn peer_of(channel: u32) -> Option<(u32, u32)> {
    let c = channel.checked_sub(PEER_CHANNEL_BASE)?;
    let (from, to) = (c / MAX_NODES, c % MAX_NODES);
    (from < MAX_NODES).then_some((from, to))
}
