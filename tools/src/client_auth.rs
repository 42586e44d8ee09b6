//! Client authentication for the sender and the receiver
//! (`wire/PROTOCOL.md`, Authentication): with a client secret configured, a
//! client answers the node's challenge and checks the node's answer to its
//! own, exactly as nodes do between themselves.

use std::io::Read;
use std::path::Path;

use verity_wire::auth::{self, Answerer, Side};
use verity_wire::HelloBody;

/// Reads a secret file: its bytes without trailing whitespace, at least
/// [`auth::MIN_SECRET_LEN`] of them.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
        b.pop();
    }
    if b.len() < auth::MIN_SECRET_LEN {
        return Err(format!(
            "{}: a secret needs at least {} bytes, the file has {}",
            path.display(),
            auth::MIN_SECRET_LEN,
            b.len()
        ));
    }
    Ok(b)
}

/// A fresh challenge from the operating system's random source.
pub fn challenge() -> std::io::Result<[u8; 32]> {
    let mut c = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut c)?;
    Ok(c)
}

/// Our answer to `peer_challenge` as (cluster, id, role) on `side`.
pub fn answer(
    secret: &[u8],
    who: (u64, u32, u16),
    side: Side,
    peer_challenge: &[u8; 32],
    own_challenge: &[u8; 32],
) -> [u8; 32] {
    let me = Answerer {
        cluster_id: who.0,
        node_id: who.1,
        role: who.2,
        side,
    };
    auth::response(secret, &me, peer_challenge, own_challenge)
}

/// Whether the peer's HELLO `h` (on `side`) answers `own_challenge`.
pub fn verify(secret: &[u8], h: &HelloBody, side: Side, own_challenge: &[u8; 32]) -> bool {
    let them = Answerer {
        cluster_id: h.cluster_id.get(),
        node_id: h.node_id.get(),
        role: h.role.get(),
        side,
    };
    auth::verify(secret, &them, own_challenge, &h.challenge, &h.response)
}
