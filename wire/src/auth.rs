//! HELLO authentication (`PROTOCOL.md`, "Authentication"): each side proves
//! it holds the cluster secret by answering the other's 32-byte challenge
//! with an HMAC-SHA256. Pure computation: the caller draws the challenges
//! (from the OS) and moves the frames.
//!
//! The MAC covers a domain tag, the cluster id, who answers (node id, role
//! and whether it accepted or opened the connection) and both challenges,
//! so an answer cannot be replayed on another connection, reflected back to
//! its author, or reused by the other end of the same connection.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Which end of the connection computes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Side {
    /// The side that accepted the connection (answers first).
    Acceptor = 1,
    /// The side that opened it (answers second).
    Connector = 2,
}

/// Domain separation: a MAC for anything else never equals one of these.
pub const AUTH_TAG: &[u8; 16] = b"verity-hello-v1\0";

/// The smallest secret accepted (bytes): shorter keys are guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// Who answers: the fields of the answering side's HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answerer {
    pub cluster_id: u64,
    pub node_id: u32,
    pub role: u16,
    pub side: Side,
}

/// The answer `who` gives to `peer_challenge`, having sent `own_challenge`:
/// HMAC-SHA256(secret, tag ‖ cluster_id ‖ node_id ‖ role ‖ side ‖
/// peer_challenge ‖ own_challenge), integers little-endian.
pub fn response(
    secret: &[u8],
    who: &Answerer,
    peer_challenge: &[u8; 32],
    own_challenge: &[u8; 32],
) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(AUTH_TAG);
    mac.update(&who.cluster_id.to_le_bytes());
    mac.update(&who.node_id.to_le_bytes());
    mac.update(&who.role.to_le_bytes());
    mac.update(&[who.side as u8]);
    mac.update(peer_challenge);
    mac.update(own_challenge);
    mac.finalize().into_bytes().into()
}

/// Checks an answer in constant time.
pub fn verify(
    secret: &[u8],
    who: &Answerer,
    peer_challenge: &[u8; 32],
    own_challenge: &[u8; 32],
    answer: &[u8; 32],
) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(AUTH_TAG);
    mac.update(&who.cluster_id.to_le_bytes());
    mac.update(&who.node_id.to_le_bytes());
    mac.update(&who.role.to_le_bytes());
    mac.update(&[who.side as u8]);
    mac.update(peer_challenge);
    mac.update(own_challenge);
    mac.verify_slice(answer).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(side: Side) -> Answerer {
        Answerer {
            cluster_id: 7,
            node_id: 2,
            role: 1,
            side,
        }
    }

    #[test]
    fn the_golden_mac_of_protocol_md() {
        let text = include_str!("../PROTOCOL.md");
        let golden = text
            .split("```mac\n")
            .nth(1)
            .and_then(|t| t.split('\n').next())
            .expect("PROTOCOL.md has a golden MAC");
        let peer: [u8; 32] = core::array::from_fn(|i| i as u8);
        let own: [u8; 32] = core::array::from_fn(|i| 32 + i as u8);
        let who = Answerer {
            cluster_id: 7,
            node_id: 2,
            role: 1,
            side: Side::Acceptor,
        };
        let mac = response(b"verity-test-secret-0001", &who, &peer, &own);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, golden);
    }

    #[test]
    fn the_right_secret_verifies_and_anything_else_does_not() {
        let (s, c1, c2) = (b"0123456789abcdef0123", [1u8; 32], [2u8; 32]);
        let r = response(s, &who(Side::Acceptor), &c1, &c2);
        assert!(verify(s, &who(Side::Acceptor), &c1, &c2, &r));
        assert!(!verify(
            b"0123456789abcdef0124",
            &who(Side::Acceptor),
            &c1,
            &c2,
            &r
        ));
        assert!(
            !verify(s, &who(Side::Connector), &c1, &c2, &r),
            "reflection"
        );
        assert!(
            !verify(s, &who(Side::Acceptor), &c2, &c1, &r),
            "swapped challenges"
        );
        let mut other = who(Side::Acceptor);
        other.cluster_id = 8;
        assert!(!verify(s, &other, &c1, &c2, &r), "another cluster");
        other = who(Side::Acceptor);
        other.node_id = 3;
        assert!(!verify(s, &other, &c1, &c2, &r), "another node");
        let mut bad = r;
        bad[31] ^= 1;
        assert!(!verify(s, &who(Side::Acceptor), &c1, &c2, &bad));
    }
}
