//! Shared by the wire tests: a seeded PRNG and a random [`Message`] generator.
#![allow(dead_code)]

use bytes::BytesMut;
use verity_wire::{Encoder, ErrorCode, Hello, Message, Role};

/// SplitMix64: small, seedable, good enough to drive property tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
    pub fn array32(&mut self) -> [u8; 32] {
        let mut a = [0u8; 32];
        for b in a.iter_mut() {
            *b = self.next_u64() as u8;
        }
        a
    }
}

const CODES: [ErrorCode; 11] = [
    ErrorCode::Protocol,
    ErrorCode::AuthFailed,
    ErrorCode::VersionUnsupported,
    ErrorCode::StaleEpoch,
    ErrorCode::UnknownChannel,
    ErrorCode::UnknownPeer,
    ErrorCode::LimitExceeded,
    ErrorCode::ShuttingDown,
    ErrorCode::Internal,
    ErrorCode::NotHome,
    ErrorCode::ChannelBusy,
];
const ROLES: [Role; 4] = [Role::Node, Role::Source, Role::Sink, Role::Tool];

/// A random valid message with a payload of at most `max_payload` bytes.
pub fn random_message(rng: &mut Rng, max_payload: usize) -> Message {
    let channel = rng.next_u64() as u32;
    let epoch = rng.next_u64() as u32;
    let seq = rng.next_u64();
    match rng.below(7) {
        0 => {
            let a = rng.below(4) as u8;
            let b = rng.below(4) as u8;
            Message::Hello {
                epoch,
                hello: Hello {
                    cluster_id: rng.next_u64(),
                    node_id: rng.next_u64() as u32,
                    role: ROLES[rng.below(4) as usize],
                    version_min: a.min(b),
                    version_max: a.max(b),
                    challenge: rng.array32(),
                    response: if rng.below(2) == 0 {
                        None
                    } else {
                        Some(rng.array32())
                    },
                },
            }
        }
        1 => {
            let n = rng.below((max_payload / 16 + 1).min(64) as u64) as usize;
            Message::Resume {
                epoch,
                entries: (0..n)
                    .map(|_| (rng.next_u64() as u32, rng.next_u64()))
                    .collect(),
            }
        }
        2 => {
            let len = rng.below(max_payload as u64 + 1) as usize;
            Message::Data {
                channel,
                seq,
                trace_id: rng.next_u64(),
                resend: rng.below(2) == 1,
                payload: rng.bytes(len),
            }
        }
        3 => Message::Ack {
            channel,
            epoch,
            seq,
        },
        4 => {
            // Selective repeat: up to 3 ascending ranges from `seq` on.
            let seq = seq.max(1);
            let mut ranges = Vec::new();
            let mut at = seq;
            for _ in 0..rng.below(4) {
                let last = at + rng.below(5);
                ranges.push((at, last));
                at = last + 2 + rng.below(5);
            }
            Message::Nack {
                channel,
                epoch,
                seq,
                ranges,
            }
        }
        5 => Message::Heartbeat {
            channel,
            epoch,
            seq,
        },
        _ => {
            let len = rng.below(64) as usize;
            // Mix ASCII and multi-byte characters.
            let text: String = (0..len)
                .map(|_| match rng.below(4) {
                    0 => 'é',
                    1 => '→',
                    _ => (b'a' + rng.below(26) as u8) as char,
                })
                .collect();
            Message::Error {
                epoch,
                code: CODES[rng.below(9) as usize],
                text,
            }
        }
    }
}

pub fn encode_all(msgs: &[Message]) -> BytesMut {
    let enc = Encoder::default();
    let mut buf = BytesMut::new();
    for m in msgs {
        m.encode(&enc, &mut buf).expect("test messages fit");
    }
    buf
}

/// Recomputes a frame's checksum after a test edited its bytes.
pub fn fix_crc(frame: &mut [u8]) {
    let crc = verity_wire::frame_crc(frame);
    frame[verity_wire::CRC_OFFSET..verity_wire::CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}
