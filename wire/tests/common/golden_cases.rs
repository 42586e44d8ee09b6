// Shared by tests/golden.rs and examples/golden_hex.rs: the messages behind PROTOCOL.md's golden vectors.
use verity_wire::{ErrorCode, Hello, Message, Role};

pub fn golden_messages() -> Vec<(&'static str, Message)> {
    let mut challenge = [0u8; 32];
    for (i, b) in challenge.iter_mut().enumerate() {
        *b = i as u8;
    }
    vec![
        (
            "hello",
            Message::Hello {
                epoch: 1,
                hello: Hello {
                    cluster_id: 0x0123_4567_89ab_cdef,
                    node_id: 2,
                    role: Role::Node,
                    version_min: 1,
                    version_max: 1,
                    challenge,
                    response: None,
                },
            },
        ),
        (
            "hello-response",
            Message::Hello {
                epoch: 5,
                hello: Hello {
                    cluster_id: 0x0123_4567_89ab_cdef,
                    node_id: 3,
                    role: Role::Source,
                    version_min: 1,
                    version_max: 1,
                    challenge: [0xaa; 32],
                    response: Some([0x55; 32]),
                },
            },
        ),
        (
            "resume",
            Message::Resume {
                epoch: 3,
                entries: vec![(1, 41), (2, 0)],
            },
        ),
        (
            "data",
            Message::Data {
                channel: 1,
                seq: 1,
                trace_id: 0x0000_0001_0000_0001,
                resend: false,
                payload: b"hello".to_vec(),
            },
        ),
        (
            "data-resend",
            Message::Data {
                channel: 7,
                seq: 1_000_000,
                trace_id: 0x0000_0007_000f_4240,
                resend: true,
                payload: vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3],
            },
        ),
        (
            "ack",
            Message::Ack {
                channel: 1,
                epoch: 1,
                seq: 1,
            },
        ),
        (
            "nack",
            Message::Nack {
                channel: 1,
                epoch: 2,
                seq: 42,
                ranges: vec![],
            },
        ),
        (
            "nack-ranges",
            Message::Nack {
                channel: 1,
                epoch: 2,
                seq: 42,
                ranges: vec![(42, 42), (45, 47)],
            },
        ),
        (
            "heartbeat",
            Message::Heartbeat {
                channel: 1,
                epoch: 1,
                seq: 7,
            },
        ),
        (
            "error",
            Message::Error {
                epoch: 1,
                code: ErrorCode::AuthFailed,
                text: "authentication failed".to_owned(),
            },
        ),
    ]
}
