//! The core's vocabulary with its driver: what goes in ([`Input`], a
//! [`JournalEntry`] on replay), what comes out ([`Effects`], with its
//! [`OutFrames`] and [`DeadLetter`]s; [`nack_frames`] to frame its NACKs),
//! how a node is set up ([`NodeConfig`]) and what it counts
//! ([`NodeStats`]). The state machine itself is [`super::NodeCore`]
//! (`node.rs`).

use bytes::BytesMut;
use verity_wire::reorder::FROM_ON;
use verity_wire::{FrameView, NackRange};

use super::channel::Violation;
use super::ids::sink_channel;
use crate::codec::CodecError;
use crate::routing::Routing;

/// Limits and identities of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's index in the cluster (0 for a single node).
    pub node: u32,
    /// Key → partition → node; `None` for a single node owning every key.
    pub routing: Option<Routing>,
    /// Channel id of the node's output to the sink ([`sink_channel`]).
    pub sink_channel: u32,
    /// Output frames produced but not ACKed by the sink before the node stops
    /// taking input (backpressure).
    pub max_unacked: u64,
    /// Journal records not yet durable before the node stops taking input.
    pub max_undurable: u64,
    /// A gap still open is NACKed again at most once per this interval
    /// (a new gap is NACKed at once).
    pub nack_interval_ns: u64,
    pub max_frame_len: u32,
    /// Per input channel, the content checksums of this many last accepted
    /// frames are kept to catch a conflicting duplicate (a power of two;
    /// 0: none).
    pub dedup_window: usize,
    /// Per input channel, frames after a gap are kept up to this many seqs
    /// past `delivered` (a power of two; 0: none, NACK go-back-N) ...
    pub reorder_window: usize,
    /// ... and up to this many bytes.
    pub reorder_bytes: usize,
    /// Frames handed to a consumer with no ACK progress for this long go
    /// out again from the first unACKed one.
    pub resend_timeout_ns: u64,
    /// At most this many seqs past the consumer's ACK are handed to its
    /// connection (the send window).
    pub send_window: u64,
    /// A connection that has not finished its handshake this long after it
    /// opened is closed ([`Effects::handshake_expired`]).
    pub handshake_timeout_ns: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node: 0,
            routing: None,
            sink_channel: sink_channel(0),
            max_unacked: 1 << 18,
            max_undurable: 1 << 16,
            nack_interval_ns: 20_000_000,
            max_frame_len: verity_wire::DEFAULT_MAX_FRAME_LEN,
            dedup_window: 1 << 16,
            reorder_window: 1 << 16,
            reorder_bytes: 16 << 20,
            resend_timeout_ns: 1_000_000_000,
            send_window: u64::MAX,
            handshake_timeout_ns: 5_000_000_000,
        }
    }
}

/// One journal record as the core sees it: the clock reading at acceptance and
/// the whole DATA frame as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct JournalEntry<'a> {
    pub index: u64,
    pub timestamp_ns: u64,
    pub frame: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A validated DATA frame from a source connection, at clock `now_ns`.
    SourceData { frame: FrameView<'a>, now_ns: u64 },
    /// A validated DATA frame from the connection of node `from`.
    PeerData {
        from: u32,
        frame: FrameView<'a>,
        now_ns: u64,
    },
    /// Recovery: the next journal record, in journal order.
    Replay(JournalEntry<'a>),
    /// The journal is durable through its first `records` records.
    Durable { records: u64 },
    /// The consumer of `out` ACKed every seq up to `seq`.
    Ack { out: Out, seq: u64 },
    /// The consumer of `out` (re)connected: it has everything up to
    /// `delivered`.
    Resume { out: Out, delivered: u64 },
    /// The consumer of `out` asked for seqs again: the `ranges` (decoded
    /// and checked by the wire layer), or with none everything from `from`.
    Nack {
        out: Out,
        from: u64,
        ranges: &'a [NackRange],
    },
    /// The driver handed the frames of `out` through seq `through` to the
    /// consumer's connection.
    Sent { out: Out, through: u64 },
    /// The connection to the consumer of `out` is gone.
    Disconnected { out: Out },
    /// The clock reads `now_ns`: timers due fire (resend on timeout).
    Tick { now_ns: u64 },
    /// Recovery: the consumer of `out` had ACKed every seq through `acked`
    /// (the outbound log keeps nothing below).
    Recovered { out: Out, acked: u64 },
}

/// An outbound channel: to the sink, or to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Sink,
    Node(u32),
}

/// The [`Out`] of output index `o` (0: the sink, `1 + j`: node `j`).
pub(super) fn out_at(o: usize) -> Out {
    match o {
        0 => Out::Sink,
        o => Out::Node(o as u32 - 1),
    }
}

/// A record the app could not use, to be written to the dead-letter log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetter {
    pub journal_index: u64,
    pub channel: u32,
    pub seq: u64,
    pub trace_id: u64,
    pub reason: &'static str,
}

/// Frames for one outbound channel produced by one `handle`.
#[derive(Debug, Default)]
pub struct OutFrames {
    /// DATA frames in seq order: append to the outbound log.
    pub frames: BytesMut,
    /// Seqs of the frames in `frames`: `first..=last`.
    pub seqs: Option<(u64, u64)>,
}

impl OutFrames {
    pub(super) fn push_seq(&mut self, seq: u64) {
        self.seqs = Some((self.seqs.map_or(seq, |(f, _)| f), seq));
    }
}

/// What the driver must do after `handle`. Reused across calls: the driver
/// carries the effects out, then calls [`Effects::clear`].
#[derive(Debug, Default)]
pub struct Effects {
    /// `Some((index, timestamp_ns))`: journal the frame just handled as record `index`.
    pub journal_input: Option<(u64, u64)>,
    /// Output DATA frames for the sink, in seq order: append to the outbound log.
    pub outbound: BytesMut,
    /// Seqs of the frames in `outbound`: `first..=last`.
    pub outbound_seqs: Option<(u64, u64)>,
    /// Forwarded records for other nodes, indexed by node (this node's and
    /// untouched ones empty). Sized on first use.
    pub to_peers: Vec<OutFrames>,
    /// ACK (channel, seq) to send to sources and peers.
    pub acks: Vec<(u32, u64)>,
    /// NACK (channel, first, last) to send to sources and peers: the
    /// ranges of one channel in a row go in one NACK (at most
    /// `MAX_NACK_RANGES` each); `last` = [`FROM_ON`]: everything from
    /// `first` on (go-back-N).
    pub nacks: Vec<(u32, u64, u64)>,
    pub dead_letters: Vec<DeadLetter>,
    /// The consumer of an outbound channel needs everything from this seq
    /// on again (after its RESUME or NACK).
    pub resend: Option<(Out, u64)>,
    /// The frame just handled breaks the protocol: refuse its connection
    /// (ERROR `PROTOCOL`) and close it. Nothing was changed because of it.
    pub violation: Option<Violation>,
    /// (out, seq): no ACK progress for the resend timeout, frames go out
    /// again from seq (for the log).
    pub rewound: Vec<(Out, u64)>,
    /// Connections whose handshake took over the handshake timeout: refuse
    /// (`LIMIT_EXCEEDED`) and close them; dial a consumer again.
    pub handshake_expired: Vec<super::session::ConnId>,
}

impl Effects {
    pub fn clear(&mut self) {
        self.journal_input = None;
        self.outbound.clear();
        self.outbound_seqs = None;
        for o in &mut self.to_peers {
            if o.seqs.is_some() {
                o.frames.clear();
                o.seqs = None;
            }
        }
        self.acks.clear();
        self.nacks.clear();
        self.dead_letters.clear();
        self.resend = None;
        self.violation = None;
        self.rewound.clear();
        self.handshake_expired.clear();
    }

    /// Whether any node has forwarded frames in this batch.
    pub fn has_peer_frames(&self) -> bool {
        self.to_peers.iter().any(|o| o.seqs.is_some())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    pub accepted: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub dead_letters: u64,
    pub outputs: u64,
    /// Records forwarded to other nodes (once per owning node).
    pub forwarded: u64,
    pub unknown_channel: u64,
    /// Frames that broke the protocol ([`Effects::violation`]).
    pub violations: u64,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    BadMagic,
    WrongApp { snapshot: String, running: String },
    WrongChannels { snapshot: usize, running: usize },
    WrongNode { snapshot: u32, running: u32 },
    Corrupt(CodecError),
}

impl core::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SnapshotError::BadMagic => write!(f, "not a Verity node snapshot (bad magic)"),
            SnapshotError::WrongApp { snapshot, running } => write!(
                f,
                "snapshot is of app {snapshot:?} but this node runs {running:?}"
            ),
            SnapshotError::WrongChannels { snapshot, running } => write!(
                f,
                "snapshot has {snapshot} channels but this node has {running}"
            ),
            SnapshotError::WrongNode { snapshot, running } => write!(
                f,
                "snapshot is of node {snapshot} but this is node {running}"
            ),
            SnapshotError::Corrupt(e) => write!(f, "snapshot body is corrupt: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<CodecError> for SnapshotError {
    fn from(e: CodecError) -> Self {
        SnapshotError::Corrupt(e)
    }
}

/// The NACK frames of [`Effects::nacks`]: `each(channel, seq, ranges)`
/// once per run of one channel's ranges, at most
/// [`verity_wire::MAX_NACK_RANGES`] a frame; no ranges: every seq from
/// `seq` on (go-back-N).
pub fn nack_frames(nacks: &[(u32, u64, u64)], mut each: impl FnMut(u32, u64, &[(u64, u64)])) {
    let mut ranges = [(0u64, 0u64); verity_wire::MAX_NACK_RANGES];
    let mut i = 0;
    while i < nacks.len() {
        let channel = nacks[i].0;
        if nacks[i].2 == FROM_ON {
            each(channel, nacks[i].1, &[]);
            i += 1;
            continue;
        }
        let mut n = 0;
        while i < nacks.len()
            && nacks[i].0 == channel
            && nacks[i].2 != FROM_ON
            && n < ranges.len()
            && (n == 0 || nacks[i].1 > ranges[n - 1].1)
        {
            ranges[n] = (nacks[i].1, nacks[i].2);
            n += 1;
            i += 1;
        }
        each(channel, ranges[0].0, &ranges[..n]);
    }
}

/// Which input a frame from [`NodeCore::take_held`] came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldFrom {
    /// Its source's connection: [`Input::SourceData`].
    Source,
    /// Node `j`'s channel to this node: [`Input::PeerData`].
    Node(u32),
}
