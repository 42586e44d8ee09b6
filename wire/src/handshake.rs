//! The HELLO exchange (`wire/PROTOCOL.md`, connection rules 1–3 and
//! Authentication) as a pure state machine for each side. The caller draws
//! the challenge from the operating system, encodes the HELLOs this returns
//! with its own epoch, and moves the frames; nothing here does I/O.
//!
//! Always three HELLOs: the connector's (a fresh challenge, no answer), the
//! acceptor's (its challenge and, flagged `HELLO_RESPONSE`, the answer to
//! the connector's), the connector's second (the same fields and challenge,
//! with its answer). Without a secret the answers are all zero and not
//! checked; with one they are HMAC-SHA256 ([`crate::auth`]) and must verify.
//! What the caller decides itself after the exchange: whether the peer's
//! node id is known, epoch fencing, which channel a client may use.

use crate::auth::{self, Answerer, Side};
use crate::body::{ErrorCode, HelloBody, Role};
use crate::decode::FrameView;
use crate::encode::Hello;
use crate::header::{flags, Kind, VERSION};

/// Who this side is: the fields of its HELLOs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    pub cluster_id: u64,
    pub node_id: u32,
    pub role: Role,
}

/// The other side, as its HELLO named it (proven once the exchange is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub node_id: u32,
    pub role: Role,
    /// The epoch in the header of its HELLO.
    pub epoch: u32,
}

/// Why the exchange failed: send ERROR `code` with `text`, then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub text: String,
}

impl Refusal {
    fn new(code: ErrorCode, text: impl Into<String>) -> Refusal {
        Refusal {
            code,
            text: text.into(),
        }
    }

    fn auth(why: impl core::fmt::Display) -> Refusal {
        Refusal::new(
            ErrorCode::AuthFailed,
            format!("authentication failed: {why}"),
        )
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.text)
    }
}

/// The name of a role in messages.
pub fn role_name(role: u16) -> &'static str {
    match Role::from_u16(role) {
        Some(Role::Node) => "node",
        Some(Role::Source) => "source",
        Some(Role::Sink) => "sink",
        Some(Role::Tool) => "tool",
        None => "unknown role",
    }
}

/// The HELLO body of `frame`, with whether it carries an answer.
fn hello<'a>(frame: &FrameView<'a>) -> Result<(&'a HelloBody, bool), Refusal> {
    match frame.hello() {
        Some(h) => Ok((h, frame.header.flags() & flags::HELLO_RESPONSE != 0)),
        None => Err(Refusal::new(
            ErrorCode::Protocol,
            format!("expected HELLO, got {}", kind_name(frame)),
        )),
    }
}

fn kind_name(frame: &FrameView<'_>) -> &'static str {
    Kind::from_u8(frame.header.kind).map_or("an unknown kind", Kind::name)
}

/// The checks every HELLO gets: cluster id, a version in common.
fn common(me: &Me, h: &HelloBody) -> Result<(), Refusal> {
    if h.cluster_id.get() != me.cluster_id {
        return Err(Refusal::auth(format_args!(
            "cluster id {} (this side is in cluster {})",
            h.cluster_id.get(),
            me.cluster_id
        )));
    }
    if h.version_min > VERSION || h.version_max < VERSION {
        return Err(Refusal::new(
            ErrorCode::VersionUnsupported,
            format!(
                "no protocol version in common (peer speaks {}..={}, this side {VERSION})",
                h.version_min, h.version_max
            ),
        ));
    }
    Ok(())
}

fn answerer(me: &Me, side: Side) -> Answerer {
    Answerer {
        cluster_id: me.cluster_id,
        node_id: me.node_id,
        role: me.role as u16,
        side,
    }
}

/// Our answer to `theirs`, having sent `ours` (zero without a secret).
fn answer(
    me: &Me,
    side: Side,
    secret: Option<&[u8]>,
    theirs: &[u8; 32],
    ours: &[u8; 32],
) -> [u8; 32] {
    match secret {
        Some(s) => auth::response(s, &answerer(me, side), theirs, ours),
        None => [0; 32],
    }
}

/// Whether the peer's HELLO `h` answers `ours` (always, without a secret).
fn verified(h: &HelloBody, side: Side, secret: Option<&[u8]>, ours: &[u8; 32]) -> bool {
    let Some(secret) = secret else {
        return true;
    };
    let them = Answerer {
        cluster_id: h.cluster_id.get(),
        node_id: h.node_id.get(),
        role: h.role.get(),
        side,
    };
    auth::verify(secret, &them, ours, &h.challenge, &h.response)
}

fn peer(h: &HelloBody, epoch: u32) -> Result<Peer, Refusal> {
    let role = Role::from_u16(h.role.get())
        .ok_or_else(|| Refusal::new(ErrorCode::Protocol, "unknown role"))?;
    Ok(Peer {
        node_id: h.node_id.get(),
        role,
        epoch,
    })
}

/// The side that opened the connection.
#[derive(Debug, Clone)]
pub struct Connector {
    me: Me,
    challenge: [u8; 32],
}

impl Connector {
    /// Starts an exchange with a fresh `challenge`: the connector and its
    /// first HELLO.
    pub fn start(me: Me, challenge: [u8; 32]) -> (Connector, Hello) {
        let hello = Hello {
            cluster_id: me.cluster_id,
            node_id: me.node_id,
            role: me.role,
            version_min: VERSION,
            version_max: VERSION,
            challenge,
            response: None,
        };
        (Connector { me, challenge }, hello)
    }

    /// The acceptor's HELLO, which must come from a `role` (with node id
    /// `node_id`, when given) and, with a `secret`, answer our challenge.
    /// Ok: our second HELLO (our answer to its challenge) and the peer.
    pub fn on_hello(
        &self,
        frame: &FrameView<'_>,
        secret: Option<&[u8]>,
        role: Role,
        node_id: Option<u32>,
    ) -> Result<(Hello, Peer), Refusal> {
        let (h, answered) = hello(frame)?;
        common(&self.me, h)?;
        if !answered {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                "the accepting side's HELLO carries no answer (flag HELLO_RESPONSE)",
            ));
        }
        if h.role.get() != role as u16 {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                format!(
                    "the peer says it is a {}; a {} was expected here",
                    role_name(h.role.get()),
                    role_name(role as u16)
                ),
            ));
        }
        if node_id.is_some_and(|n| n != h.node_id.get()) {
            return Err(Refusal::new(
                ErrorCode::UnknownPeer,
                format!(
                    "node id {} answered where node {} was expected",
                    h.node_id.get(),
                    node_id.unwrap_or(0)
                ),
            ));
        }
        if !verified(h, Side::Acceptor, secret, &self.challenge) {
            return Err(Refusal::auth("the peer's answer to our challenge is wrong"));
        }
        let response = answer(
            &self.me,
            Side::Connector,
            secret,
            &h.challenge,
            &self.challenge,
        );
        let (_, first) = Connector::start(self.me, self.challenge);
        let second = Hello {
            response: Some(response),
            ..first
        };
        Ok((second, peer(h, frame.header.epoch())?))
    }
}

/// The side that accepted the connection.
#[derive(Debug, Clone)]
pub struct Acceptor {
    me: Me,
    challenge: [u8; 32],
    /// The connector's first HELLO, once seen.
    first: Option<(HelloBody, u32)>,
}

impl Acceptor {
    /// An acceptor that will challenge with `challenge`.
    pub fn new(me: Me, challenge: [u8; 32]) -> Acceptor {
        Acceptor {
            me,
            challenge,
            first: None,
        }
    }

    /// The connector's first HELLO, from one of `roles` (those allowed on
    /// this listener). Ok: our HELLO to send (our challenge and our answer
    /// to its challenge).
    pub fn on_hello(
        &mut self,
        frame: &FrameView<'_>,
        secret: Option<&[u8]>,
        roles: &[Role],
    ) -> Result<Hello, Refusal> {
        let (h, answered) = hello(frame)?;
        if self.first.is_some() {
            return Err(Refusal::new(ErrorCode::Protocol, "a second first HELLO"));
        }
        common(&self.me, h)?;
        if answered {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                "the first HELLO carries an answer (flag HELLO_RESPONSE) before any challenge",
            ));
        }
        if !roles.iter().any(|&r| r as u16 == h.role.get()) {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                format!(
                    "a {} may not connect here (this listener takes: {})",
                    role_name(h.role.get()),
                    roles
                        .iter()
                        .map(|&r| role_name(r as u16))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        self.first = Some((*h, frame.header.epoch()));
        let response = answer(
            &self.me,
            Side::Acceptor,
            secret,
            &h.challenge,
            &self.challenge,
        );
        Ok(Hello {
            cluster_id: self.me.cluster_id,
            node_id: self.me.node_id,
            role: self.me.role,
            version_min: VERSION,
            version_max: VERSION,
            challenge: self.challenge,
            response: Some(response),
        })
    }

    /// Who the first HELLO named (not yet proven), once it arrived.
    pub fn claimed(&self) -> Option<Peer> {
        let (h, epoch) = self.first.as_ref()?;
        peer(h, *epoch).ok()
    }

    /// The connector's second HELLO: the same fields as its first, with
    /// its answer to our challenge. Ok: the peer, proven.
    pub fn on_answer(&self, frame: &FrameView<'_>, secret: Option<&[u8]>) -> Result<Peer, Refusal> {
        let (h, answered) = hello(frame)?;
        let Some((first, epoch)) = self.first.as_ref() else {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                "an answer before the first HELLO",
            ));
        };
        if !answered {
            return Err(Refusal::new(
                ErrorCode::Protocol,
                "the second HELLO carries no answer (flag HELLO_RESPONSE)",
            ));
        }
        if h.cluster_id != first.cluster_id
            || h.node_id != first.node_id
            || h.role != first.role
            || h.challenge != first.challenge
            || frame.header.epoch() != *epoch
        {
            return Err(Refusal::auth(
                "the second HELLO does not repeat the first one's cluster id, node id, role, challenge and epoch",
            ));
        }
        if !verified(h, Side::Connector, secret, &self.challenge) {
            return Err(Refusal::auth("wrong answer to the challenge"));
        }
        peer(first, *epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Encoder};
    use bytes::BytesMut;

    const SECRET: &[u8] = b"a secret of 16+ bytes";

    fn frame(hello: &Hello, epoch: u32) -> BytesMut {
        let mut b = BytesMut::new();
        Encoder::default().hello(&mut b, epoch, hello).unwrap();
        b
    }

    fn me(node_id: u32, role: Role) -> Me {
        Me {
            cluster_id: 7,
            node_id,
            role,
        }
    }

    /// Runs the three HELLOs; the acceptor's secret may differ.
    fn exchange(
        connector: Option<&[u8]>,
        acceptor: Option<&[u8]>,
    ) -> Result<(Peer, Peer), Refusal> {
        let (c, h1) = Connector::start(me(3, Role::Source), [1; 32]);
        let mut a = Acceptor::new(me(9, Role::Node), [2; 32]);
        let f1 = frame(&h1, 5);
        let h2 = a.on_hello(
            &parse(&f1, 1 << 20).unwrap().unwrap(),
            acceptor,
            &[Role::Source],
        )?;
        let f2 = frame(&h2, 11);
        let (h3, node) = c.on_hello(
            &parse(&f2, 1 << 20).unwrap().unwrap(),
            connector,
            Role::Node,
            None,
        )?;
        let f3 = frame(&h3, 5);
        let client = a.on_answer(&parse(&f3, 1 << 20).unwrap().unwrap(), acceptor)?;
        Ok((client, node))
    }

    #[test]
    fn three_hellos_with_and_without_a_secret() {
        let want = (
            Peer {
                node_id: 3,
                role: Role::Source,
                epoch: 5,
            },
            Peer {
                node_id: 9,
                role: Role::Node,
                epoch: 11,
            },
        );
        assert_eq!(exchange(None, None), Ok(want));
        assert_eq!(exchange(Some(SECRET), Some(SECRET)), Ok(want));
    }

    #[test]
    fn a_wrong_or_missing_secret_fails_on_the_side_that_checks() {
        let other: &[u8] = b"another secret 16 bytes";
        let e = exchange(Some(SECRET), Some(other)).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFailed);
        // The acceptor requires a secret; the client has none.
        assert_eq!(
            exchange(None, Some(SECRET)).unwrap_err().code,
            ErrorCode::AuthFailed
        );
        assert_eq!(
            exchange(Some(SECRET), None).unwrap_err().code,
            ErrorCode::AuthFailed
        );
    }

    #[test]
    fn a_role_the_listener_does_not_take_is_refused() {
        let (_, h1) = Connector::start(me(3, Role::Sink), [1; 32]);
        let mut a = Acceptor::new(me(9, Role::Node), [2; 32]);
        let f1 = frame(&h1, 0);
        let e = a
            .on_hello(
                &parse(&f1, 1 << 20).unwrap().unwrap(),
                None,
                &[Role::Source],
            )
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Protocol);
        assert!(e.text.contains("a sink may not connect here"), "{e}");
    }

    #[test]
    fn the_connector_checks_who_answers() {
        let (c, _) = Connector::start(me(3, Role::Node), [1; 32]);
        let mut a = Acceptor::new(me(4, Role::Source), [2; 32]);
        let (_, h1) = Connector::start(me(3, Role::Node), [1; 32]);
        let f1 = frame(&h1, 0);
        let h2 = a
            .on_hello(&parse(&f1, 1 << 20).unwrap().unwrap(), None, &[Role::Node])
            .unwrap();
        let f2 = frame(&h2, 0);
        let v = parse(&f2, 1 << 20).unwrap().unwrap();
        assert_eq!(
            c.on_hello(&v, None, Role::Sink, None).unwrap_err().code,
            ErrorCode::Protocol
        );
        let e = c.on_hello(&v, None, Role::Source, Some(5)).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownPeer);
        assert!(c.on_hello(&v, None, Role::Source, Some(4)).is_ok());
    }

    #[test]
    fn an_answer_that_changes_the_first_hello_is_refused() {
        let (c, h1) = Connector::start(me(3, Role::Source), [1; 32]);
        let mut a = Acceptor::new(me(9, Role::Node), [2; 32]);
        let f1 = frame(&h1, 0);
        let h2 = a
            .on_hello(
                &parse(&f1, 1 << 20).unwrap().unwrap(),
                None,
                &[Role::Source],
            )
            .unwrap();
        let f2 = frame(&h2, 0);
        let (h3, _) = c
            .on_hello(
                &parse(&f2, 1 << 20).unwrap().unwrap(),
                None,
                Role::Node,
                None,
            )
            .unwrap();
        let changed = Hello { node_id: 4, ..h3 };
        let f3 = frame(&changed, 0);
        let e = a
            .on_answer(&parse(&f3, 1 << 20).unwrap().unwrap(), None)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFailed);
        // A first HELLO that already claims to answer is refused.
        let mut b = Acceptor::new(me(9, Role::Node), [2; 32]);
        let f = frame(&h3, 0);
        let e = b
            .on_hello(&parse(&f, 1 << 20).unwrap().unwrap(), None, &[Role::Source])
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Protocol);
    }
}
