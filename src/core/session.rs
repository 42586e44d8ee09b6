//! Who may use which connection: the decisions a node makes once a peer
//! has proved who it is (the proof itself, HELLO and the HMAC answer, is
//! `verity_wire::handshake`). Another node is admitted only at an epoch no
//! older than one already seen from it (fencing: a replaced instance of a
//! node never gets a connection back), and its newest connection replaces
//! an older one; a source channel has one producer at a time. The driver
//! names connections by a [`ConnId`] of its own and carries the decisions
//! out: ERROR with the refusal's code and text, close what was replaced.

use verity_wire::handshake::{Acceptor, Connector, Refusal};
use verity_wire::{ErrorCode, FrameView, Hello, Role};

use super::ids::peer_of;

/// The driver's name for one connection (the runtime: its slot).
pub type ConnId = usize;

/// A connection refused: ERROR `code` with `text`, then close it (the
/// handshake's refusal and the core's are one type).
pub type Refused = Refusal;

fn refused(code: ErrorCode, text: String) -> Refused {
    Refusal { code, text }
}

/// The sessions of one node: the epochs seen from other nodes and which
/// connection carries each input channel.
#[derive(Debug, Clone)]
pub struct Sessions {
    node: u32,
    nodes: u32,
    /// Node → highest epoch admitted from it (0: none yet).
    epochs: Vec<u32>,
    /// Node → the connection carrying its channel to this node.
    peer_conn: Vec<Option<ConnId>>,
    /// Source channel − 1 → the connection producing it.
    source_conn: Vec<Option<ConnId>>,
    /// Connections still in their handshake, and since when (ns).
    handshaking: Vec<(ConnId, u64)>,
}

impl Sessions {
    /// Node `node` of `nodes`, with source channels `1..=sources`.
    pub fn new(node: u32, nodes: u32, sources: usize) -> Sessions {
        Sessions {
            node,
            nodes,
            epochs: vec![0; nodes as usize],
            peer_conn: vec![None; nodes as usize],
            source_conn: vec![None; sources],
            handshaking: Vec::new(),
        }
    }

    /// `conn` starts its handshake at `now_ns` (a socket accepted or
    /// dialed; in-process links have none).
    pub fn opened(&mut self, conn: ConnId, now_ns: u64) {
        self.handshaking.retain(|&(c, _)| c != conn);
        self.handshaking.push((conn, now_ns));
    }

    /// `conn` finished its handshake (admitted, or RESUMEd as producer).
    pub fn established(&mut self, conn: ConnId) {
        self.handshaking.retain(|&(c, _)| c != conn);
    }

    /// Connections whose handshake has taken over `timeout_ns` by `now_ns`
    /// go to `expired` (to be refused `LIMIT_EXCEEDED` and closed; a dialed
    /// one is dialed again): a peer that accepts and stays silent, or
    /// connects and never says HELLO, holds no slot for good.
    pub fn expire(&mut self, now_ns: u64, timeout_ns: u64, expired: &mut Vec<ConnId>) {
        self.handshaking.retain(|&(c, since)| {
            let late = now_ns.saturating_sub(since) > timeout_ns;
            if late {
                expired.push(c);
            }
            !late
        });
    }

    /// When the oldest handshake under way times out, if any.
    pub fn handshake_deadline(&self, timeout_ns: u64) -> Option<u64> {
        self.handshaking
            .iter()
            .map(|&(_, since)| since.saturating_add(timeout_ns).saturating_add(1))
            .min()
    }

    /// Whether `epoch` of `node` is older than one already admitted.
    fn stale(&self, node: u32, epoch: u32) -> bool {
        let stale = self
            .epochs
            .get(node as usize)
            .is_some_and(|&seen| epoch < seen);
        // DELIBERATE DEFECT (feature `defect-accept-stale-epoch`, built only
        // by tests/sim_defects.rs): fencing lets an older epoch in.
        #[cfg(feature = "defect-accept-stale-epoch")]
        let stale = {
            let _ = stale;
            false
        };
        stale
    }

    /// A HELLO claims to come from node `node` at `epoch`, not proved yet:
    /// refuse at once a node that is not another node of this cluster, or
    /// an epoch fenced off.
    pub fn check_node(&self, node: u32, epoch: u32) -> Result<(), Refused> {
        if node >= self.nodes || node == self.node {
            return Err(refused(
                ErrorCode::UnknownPeer,
                format!("node id {node} is not another node of this cluster"),
            ));
        }
        if self.stale(node, epoch) {
            return Err(refused(
                ErrorCode::StaleEpoch,
                format!("node {node} epoch {epoch} is older than one already seen"),
            ));
        }
        Ok(())
    }

    /// Node `node` proved on `conn` that it runs at `epoch`, or (this node
    /// being the producer) answered our HELLO at `epoch`: checked as in
    /// [`Sessions::check_node`], then the epoch is the newest seen.
    pub fn fence(&mut self, node: u32, epoch: u32) -> Result<(), Refused> {
        self.check_node(node, epoch)?;
        let seen = &mut self.epochs[node as usize];
        *seen = (*seen).max(epoch);
        Ok(())
    }

    /// Node `node` proved on `conn` that it runs at `epoch`: fenced, then
    /// `conn` carries its channel to this node. Returns the connection it
    /// replaces (to close), if any.
    pub fn admit_node(
        &mut self,
        conn: ConnId,
        node: u32,
        epoch: u32,
    ) -> Result<Option<ConnId>, Refused> {
        self.fence(node, epoch)?;
        self.established(conn);
        let old = self.peer_conn[node as usize].replace(conn);
        Ok(old.filter(|&o| o != conn))
    }

    /// A source proved on `conn` that it produces `channel` (its HELLO's
    /// node id). `elsewhere`: the address of the channel's home when that
    /// is another node (a redirect: the refusal's text is the address and
    /// nothing else). `holder`: who holds a connection, for the text.
    pub fn admit_source(
        &mut self,
        conn: ConnId,
        channel: u32,
        elsewhere: Option<String>,
        holder: impl Fn(ConnId) -> Option<String>,
    ) -> Result<(), Refused> {
        let sources = self.source_conn.len();
        let Some(idx) = (channel as usize).checked_sub(1).filter(|&i| i < sources) else {
            return Err(refused(
                ErrorCode::UnknownChannel,
                format!(
                    "channel {channel} (the HELLO's node id) is not a source of this app (its sources are channels 1..={sources})"
                ),
            ));
        };
        if let Some(home) = elsewhere {
            return Err(refused(ErrorCode::NotHome, home));
        }
        if let Some(other) = self.source_conn[idx].filter(|&o| o != conn) {
            if let Some(who) = holder(other) {
                return Err(refused(
                    ErrorCode::ChannelBusy,
                    format!(
                        "channel {channel} has a producer already (connected from {who}); retry later"
                    ),
                ));
            }
        }
        self.source_conn[idx] = Some(conn);
        self.established(conn);
        Ok(())
    }

    /// The accepting side's half of the HELLO exchange: a connection's
    /// first HELLO, from one of `roles`. Ok: our HELLO to send back. A node
    /// is refused here already, before it proves anything, when it is not
    /// another node of the cluster or its epoch is fenced off.
    pub fn accept_hello(
        &self,
        acceptor: &mut Acceptor,
        frame: &FrameView<'_>,
        secret: Option<&[u8]>,
        roles: &[Role],
    ) -> Result<Hello, Refused> {
        let hello = acceptor.on_hello(frame, secret, roles)?;
        if let Some(claim) = acceptor.claimed().filter(|c| c.role == Role::Node) {
            self.check_node(claim.node_id, claim.epoch)?;
        }
        Ok(hello)
    }

    /// The dialing side's half: the consumer's HELLO (role `role`; node
    /// `node` when it is another node, which is then fenced). Ok: our
    /// answer to send.
    pub fn dial_answer(
        &mut self,
        connector: &Connector,
        frame: &FrameView<'_>,
        secret: Option<&[u8]>,
        role: Role,
        node: Option<u32>,
    ) -> Result<Hello, Refused> {
        let (hello, peer) = connector.on_hello(frame, secret, role, node)?;
        if let Some(to) = node {
            self.fence(to, peer.epoch)?;
        }
        Ok(hello)
    }

    /// `conn` is closed: it carries no channel any more.
    pub fn closed(&mut self, conn: ConnId) {
        self.established(conn);
        for c in self.source_conn.iter_mut().chain(self.peer_conn.iter_mut()) {
            if *c == Some(conn) {
                *c = None;
            }
        }
    }

    /// The connection carrying input `channel` (a source's, or another
    /// node's channel to this one), for its ACKs and NACKs.
    pub fn conn_for_channel(&self, channel: u32) -> Option<ConnId> {
        match peer_of(channel) {
            Some((from, _)) => *self.peer_conn.get(from as usize)?,
            None => *self.source_conn.get((channel as usize).checked_sub(1)?)?,
        }
    }

    /// The newest epoch admitted from `node` (0: none).
    pub fn epoch_of(&self, node: u32) -> u32 {
        self.epochs.get(node as usize).copied().unwrap_or(0)
    }
}

/// The producer at the other end of a connection this node admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// A source producing input channel `channel`.
    Source(u32),
    /// Another node, producing its channel to this one.
    Node(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_epoch_of_a_node_is_fenced_off_and_a_newer_connection_replaces_the_old() {
        let mut s = Sessions::new(0, 3, 2);
        assert_eq!(s.admit_node(10, 1, 4), Ok(None));
        assert_eq!(
            s.conn_for_channel(crate::core::peer_channel(1, 0)),
            Some(10)
        );
        // The same epoch again (a reconnect) replaces the old connection.
        assert_eq!(s.admit_node(11, 1, 4), Ok(Some(10)));
        assert_eq!(s.admit_node(12, 1, 5), Ok(Some(11)));
        let r = s.admit_node(13, 1, 4).unwrap_err();
        assert_eq!(r.code, ErrorCode::StaleEpoch);
        assert_eq!(
            s.conn_for_channel(crate::core::peer_channel(1, 0)),
            Some(12)
        );
        assert_eq!(s.check_node(1, 3).unwrap_err().code, ErrorCode::StaleEpoch);
        assert_eq!(s.epoch_of(1), 5);
        // Not another node of the cluster.
        assert_eq!(s.check_node(0, 9).unwrap_err().code, ErrorCode::UnknownPeer);
        assert_eq!(s.check_node(3, 9).unwrap_err().code, ErrorCode::UnknownPeer);
        // The producer side fences the consumer's epoch the same way.
        assert_eq!(s.fence(2, 7), Ok(()));
        assert_eq!(s.fence(2, 6).unwrap_err().code, ErrorCode::StaleEpoch);
        s.closed(12);
        assert_eq!(s.conn_for_channel(crate::core::peer_channel(1, 0)), None);
    }

    #[test]
    fn a_handshake_that_takes_too_long_expires_and_a_finished_one_never_does() {
        let mut s = Sessions::new(0, 2, 1);
        let mut expired = Vec::new();
        s.opened(1, 100);
        s.opened(2, 150);
        s.opened(3, 160);
        assert_eq!(s.handshake_deadline(1_000), Some(1_101));
        assert_eq!(s.admit_node(2, 1, 1), Ok(None), "admitted: done");
        assert_eq!(s.admit_source(3, 1, None, |_| None), Ok(()));
        s.expire(1_100, 1_000, &mut expired);
        assert!(expired.is_empty(), "not over the timeout yet");
        s.expire(1_101, 1_000, &mut expired);
        assert_eq!(expired, vec![1]);
        assert_eq!(s.handshake_deadline(1_000), None);
        // Closed before its time: gone too.
        s.opened(4, 0);
        s.closed(4);
        s.expire(u64::MAX, 1, &mut expired);
        assert_eq!(expired, vec![1]);
        // Dialed again: the clock starts over.
        s.opened(5, 0);
        s.opened(5, 500);
        s.expire(1_200, 1_000, &mut expired);
        assert_eq!(expired, vec![1]);
        s.established(5);
        s.expire(u64::MAX, 0, &mut expired);
        assert_eq!(expired, vec![1]);
    }

    #[test]
    fn a_source_channel_has_one_producer_and_a_home() {
        let mut s = Sessions::new(0, 1, 2);
        let who = |c: ConnId| Some(format!("conn {c}"));
        assert_eq!(s.admit_source(1, 1, None, who), Ok(()));
        let r = s.admit_source(2, 1, None, who).unwrap_err();
        assert_eq!(r.code, ErrorCode::ChannelBusy);
        assert!(r.text.contains("conn 1"), "{r}");
        // A holder that is gone no longer holds it.
        assert_eq!(s.admit_source(2, 1, None, |_| None), Ok(()));
        assert_eq!(s.conn_for_channel(1), Some(2));
        let r = s.admit_source(3, 3, None, who).unwrap_err();
        assert_eq!(r.code, ErrorCode::UnknownChannel);
        let r = s
            .admit_source(3, 2, Some("127.0.0.1:9".into()), who)
            .unwrap_err();
        assert_eq!(
            (r.code, r.text.as_str()),
            (ErrorCode::NotHome, "127.0.0.1:9")
        );
        s.closed(2);
        assert_eq!(s.admit_source(3, 1, None, who), Ok(()));
    }
}
