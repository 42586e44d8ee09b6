//! Every decode and encode error, each from a minimal frame that has exactly that fault.

mod common;

use bytes::BytesMut;
use common::fix_crc;
use verity_wire::{
    flags, Decoder, EncodeError, Encoder, ErrorCode, Hello, Kind, Role, WireError, HEADER_LEN,
    MAX_ERROR_TEXT_LEN,
};

fn data_frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Encoder::default()
        .data(&mut buf, 1, 1, 9, false, payload)
        .unwrap();
    buf.to_vec()
}

fn hello() -> Hello {
    Hello {
        cluster_id: 1,
        node_id: 2,
        role: Role::Node,
        version_min: 1,
        version_max: 1,
        challenge: [7; 32],
        response: None,
    }
}

/// Decodes `bytes` as a whole stream with the default limits.
fn decode_err(bytes: &[u8]) -> WireError {
    decode_err_max(bytes, verity_wire::DEFAULT_MAX_FRAME_LEN)
}

fn decode_err_max(bytes: &[u8], max: u32) -> WireError {
    let mut dec = Decoder::new(max);
    dec.extend(bytes);
    match dec.decode() {
        Ok(Some(f)) => panic!("decoded a frame from a faulty stream: {f:?}"),
        Ok(None) => dec.finish().expect_err("stream must not end cleanly"),
        Err(e) => e,
    }
}

#[test]
fn bad_magic_is_rejected() {
    let mut f = data_frame(b"abc");
    f[8] = b'X';
    assert_eq!(
        decode_err(&f),
        WireError::BadMagic {
            found: u16::from_le_bytes([b'X', 0x59])
        }
    );
}

#[test]
fn garbage_is_rejected_early_without_waiting_for_a_frame() {
    // An HTTP request: the magic check fires first.
    let mut dec = Decoder::default();
    dec.extend(b"GET / HTTP/1.1\r\n");
    assert!(matches!(dec.decode(), Err(WireError::BadMagic { .. })));
    // A plausible magic and version but a length far over the maximum.
    let mut dec = Decoder::default();
    dec.extend(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0x56, 0x59]);
    assert_eq!(dec.decode(), Ok(None));
    dec.extend(&[1]);
    assert!(matches!(dec.decode(), Err(WireError::BadLength { .. })));
    // A plausible length, then a wrong magic: judged at the 10th byte.
    let mut dec = Decoder::default();
    dec.extend(&[0, 0, 0, 0, 48, 0, 0, 0, b'X']);
    assert_eq!(dec.decode(), Ok(None), "9 bytes cannot be judged yet");
    dec.extend(b"Z");
    assert!(matches!(dec.decode(), Err(WireError::BadMagic { .. })));
}

#[test]
fn unsupported_version_is_rejected_with_its_own_error_code() {
    let mut f = data_frame(b"abc");
    f[10] = 2;
    let e = decode_err(&f);
    assert_eq!(e, WireError::UnsupportedVersion { found: 2 });
    assert_eq!(e.error_code(), ErrorCode::VersionUnsupported);
}

#[test]
fn length_below_the_header_is_rejected() {
    let mut f = data_frame(b"");
    f[4..8].copy_from_slice(&39u32.to_le_bytes());
    assert_eq!(
        decode_err(&f),
        WireError::BadLength {
            len: 39,
            min: 40,
            max: 1 << 20
        }
    );
}

#[test]
fn length_above_the_configured_maximum_is_rejected_before_buffering_it() {
    let f = data_frame(&[0u8; 100]);
    let e = decode_err_max(&f[..12], 128);
    assert_eq!(
        e,
        WireError::BadLength {
            len: 140,
            min: 40,
            max: 128
        }
    );
    // The same frame passes with a larger limit.
    let mut dec = Decoder::new(256);
    dec.extend(&f);
    assert!(dec.decode().unwrap().is_some());
}

#[test]
fn checksum_mismatch_is_rejected() {
    let mut f = data_frame(b"payload");
    f[HEADER_LEN + 2] ^= 0x10;
    assert!(matches!(decode_err(&f), WireError::ChecksumMismatch { .. }));
}

#[test]
fn nonzero_padding_is_a_checksum_mismatch() {
    let mut f = data_frame(b"abc"); // 43 bytes + 5 padding
    assert_eq!(f.len(), 48);
    f[47] = 1;
    assert!(matches!(decode_err(&f), WireError::ChecksumMismatch { .. }));
}

#[test]
fn nonzero_padding_under_a_matching_checksum_is_a_malformed_body() {
    let mut f = data_frame(b"abc");
    f[47] = 1;
    fix_crc(&mut f);
    assert!(matches!(
        decode_err(&f),
        WireError::MalformedBody {
            reason: "padding after the payload not zero",
            ..
        }
    ));
}

#[test]
fn unknown_kind_is_rejected_including_reserved_control_numbers() {
    for kind in [0u8, 8, 16, 17, 31, 255] {
        let mut f = data_frame(b"");
        f[11] = kind;
        fix_crc(&mut f);
        assert_eq!(decode_err(&f), WireError::UnknownKind { kind });
    }
}

#[test]
fn nonzero_reserved_header_field_is_malformed() {
    let mut f = data_frame(b"");
    f[14] = 1;
    fix_crc(&mut f);
    assert!(matches!(
        decode_err(&f),
        WireError::MalformedHeader {
            kind: Kind::Data,
            ..
        }
    ));
}

#[test]
fn unknown_flag_bits_are_malformed() {
    let mut f = data_frame(b"");
    f[12] = 0x02;
    fix_crc(&mut f);
    assert!(matches!(
        decode_err(&f),
        WireError::MalformedHeader {
            kind: Kind::Data,
            ..
        }
    ));
    // RESEND is allowed on DATA, not on ACK.
    let mut buf = BytesMut::new();
    Encoder::default().ack(&mut buf, 1, 1, 1).unwrap();
    let mut f = buf.to_vec();
    f[12] = flags::RESEND as u8;
    fix_crc(&mut f);
    assert!(matches!(
        decode_err(&f),
        WireError::MalformedHeader {
            kind: Kind::Ack,
            ..
        }
    ));
}

/// Builds a frame of `kind` with an arbitrary body (bypassing the typed encoders).
fn raw(kind: Kind, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    Encoder::default()
        .frame(&mut buf, kind, flags, 0, 1, 0, 0, &[body])
        .unwrap();
    buf.to_vec()
}

fn body_reason(bytes: &[u8]) -> (Kind, &'static str) {
    match decode_err(bytes) {
        WireError::MalformedBody { kind, reason } => (kind, reason),
        other => panic!("expected MalformedBody, got {other:?}"),
    }
}

#[test]
fn ack_heartbeat_with_a_body_are_malformed() {
    for kind in [Kind::Ack, Kind::Heartbeat] {
        assert_eq!(body_reason(&raw(kind, 0, b"x")), (kind, "must be empty"));
    }
}

/// A NACK with header seq `seq` and these (first, last) ranges, unchecked.
fn nack(seq: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
    let body: Vec<u8> = ranges
        .iter()
        .flat_map(|&(f, l)| [f.to_le_bytes(), l.to_le_bytes()].concat())
        .collect();
    let mut buf = BytesMut::new();
    Encoder::default()
        .frame(&mut buf, Kind::Nack, 0, 5, 1, seq, 0, &[&body])
        .unwrap();
    buf.to_vec()
}

#[test]
fn nack_ranges_that_break_the_body_rules_are_malformed() {
    let reason = |b: &[u8]| body_reason(b).1;
    assert_eq!(
        reason(&raw(Kind::Nack, 0, b"x")),
        "length is not a multiple of 16"
    );
    let many: Vec<(u64, u64)> = (0..65).map(|i| (3 * i + 1, 3 * i + 1)).collect();
    assert_eq!(reason(&nack(1, &many)), "more than 64 ranges");
    assert_eq!(
        reason(&nack(5, &[(5, 4)])),
        "a range is empty or starts at seq 0"
    );
    assert_eq!(
        reason(&nack(0, &[(0, 4)])),
        "a range is empty or starts at seq 0"
    );
    assert_eq!(
        reason(&nack(4, &[(5, 6)])),
        "first range does not start at the header's seq"
    );
    assert_eq!(
        reason(&nack(5, &[(5, 6), (6, 8)])),
        "ranges not ascending and disjoint"
    );
    assert_eq!(
        reason(&nack(5, &[(5, 6), (2, 3)])),
        "ranges not ascending and disjoint"
    );
    // Well formed: 64 ranges, or none (go-back-N).
    for ok in [nack(1, &many[..64]), nack(9, &[])] {
        let mut dec = verity_wire::Decoder::default();
        dec.extend(&ok);
        assert!(dec.decode().unwrap().is_some());
    }
    // The encoder refuses what the decoder would.
    let mut buf = BytesMut::new();
    let e = Encoder::default()
        .nack_ranges(&mut buf, 5, 1, 5, &[(5, 6), (6, 8)])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "NACK ranges: ranges not ascending and disjoint"
    );
    assert!(buf.is_empty(), "nothing written");
}

#[test]
fn hello_bodies_that_break_the_layout_are_malformed() {
    use zerocopy::IntoBytes;
    let good = hello().to_body();
    assert_eq!(
        body_reason(&raw(Kind::Hello, 0, &good.as_bytes()[..79])).1,
        "length is not 80 bytes"
    );
    let mut b = good;
    b.role = 9.into();
    assert_eq!(
        body_reason(&raw(Kind::Hello, 0, b.as_bytes())).1,
        "unknown role"
    );
    let mut b = good;
    b.version_min = 3;
    b.version_max = 2;
    assert_eq!(
        body_reason(&raw(Kind::Hello, 0, b.as_bytes())).1,
        "version_min above version_max"
    );
    let mut b = good;
    b.response = [1; 32];
    assert_eq!(
        body_reason(&raw(Kind::Hello, 0, b.as_bytes())).1,
        "response set without flag HELLO_RESPONSE"
    );
    // With the flag it is fine.
    let f = raw(Kind::Hello, flags::HELLO_RESPONSE, b.as_bytes());
    let mut dec = Decoder::default();
    dec.extend(&f);
    assert!(dec.decode().unwrap().is_some());
}

#[test]
fn resume_bodies_that_break_the_layout_are_malformed() {
    assert_eq!(
        body_reason(&raw(Kind::Resume, 0, &[0u8; 17])).1,
        "length is not a multiple of 16"
    );
    let mut entry = [0u8; 16];
    entry[4] = 1;
    assert_eq!(
        body_reason(&raw(Kind::Resume, 0, &entry)).1,
        "entry reserved field not zero"
    );
}

#[test]
fn error_bodies_that_break_the_layout_are_malformed() {
    assert_eq!(
        body_reason(&raw(Kind::Error, 0, &[1, 0, 0])).1,
        "shorter than 8 bytes"
    );
    assert_eq!(
        body_reason(&raw(Kind::Error, 0, &[99, 0, 0, 0, 0, 0, 0, 0])).1,
        "unknown error code"
    );
    assert_eq!(
        body_reason(&raw(Kind::Error, 0, &[1, 0, 0, 0, 1, 0, 0, 0])).1,
        "reserved field not zero"
    );
    assert_eq!(
        body_reason(&raw(Kind::Error, 0, &[1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe])).1,
        "text is not UTF-8"
    );
    let mut long = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
    long.extend(std::iter::repeat_n(b'a', MAX_ERROR_TEXT_LEN + 1));
    assert_eq!(
        body_reason(&raw(Kind::Error, 0, &long)).1,
        "text longer than 4096 bytes"
    );
}

#[test]
fn a_stream_that_ends_inside_a_frame_is_truncated() {
    let f = data_frame(b"hello world");
    for cut in 1..f.len() {
        assert_eq!(
            decode_err(&f[..cut]),
            WireError::Truncated { buffered: cut },
            "cut at {cut}"
        );
    }
}

#[test]
fn a_poisoned_decoder_keeps_returning_the_error_and_its_position() {
    let good = data_frame(b"ok");
    let mut bad = data_frame(b"bad");
    bad[HEADER_LEN] ^= 1;
    let mut dec = Decoder::default();
    dec.extend(&good);
    dec.extend(&bad);
    dec.extend(&good);
    assert!(dec.decode().unwrap().is_some());
    let e = dec.decode().unwrap_err();
    assert!(matches!(e, WireError::ChecksumMismatch { .. }));
    assert_eq!(dec.position(), good.len() as u64);
    assert_eq!(dec.decode(), Err(e));
    assert_eq!(dec.finish(), Err(e));
}

#[test]
fn encoder_refuses_oversized_frames_and_appends_nothing() {
    let enc = Encoder::new(128);
    let mut buf = BytesMut::from(&b"xyz"[..]);
    assert_eq!(
        enc.data(&mut buf, 1, 1, 1, false, &[0u8; 89]),
        Err(EncodeError::TooLarge {
            frame_len: 129,
            max: 128
        })
    );
    assert_eq!(&buf[..], b"xyz");
    assert!(enc.data(&mut buf, 1, 1, 1, false, &[0u8; 88]).is_ok());
    let long = "x".repeat(MAX_ERROR_TEXT_LEN + 1);
    let mut buf = BytesMut::new();
    assert_eq!(
        Encoder::default().error(&mut buf, 1, ErrorCode::Internal, &long),
        Err(EncodeError::ErrorTextTooLong {
            len: MAX_ERROR_TEXT_LEN + 1
        })
    );
    assert!(buf.is_empty());
    let mut h = hello();
    h.version_min = 2;
    assert_eq!(
        Encoder::default().hello(&mut buf, 1, &h),
        Err(EncodeError::HelloVersions { min: 2, max: 1 })
    );
    assert!(buf.is_empty());
}

#[test]
fn error_messages_name_the_fault() {
    let e = WireError::BadLength {
        len: 7,
        min: 40,
        max: 1024,
    };
    assert_eq!(
        e.to_string(),
        "bad frame length 7 (must be 40..=1024 bytes)"
    );
    let e = WireError::MalformedBody {
        kind: Kind::Hello,
        reason: "unknown role",
    };
    assert_eq!(e.to_string(), "malformed HELLO body: unknown role");
}

/// `parse_covered` (a journal record's frames: the record's own CRC covers
/// them) skips only the frame's CRC; every other check still runs.
#[test]
fn parse_covered_skips_the_frame_crc_and_nothing_else() {
    let mut b = BytesMut::new();
    Encoder::default()
        .data(&mut b, 1, 7, 0, false, b"payload")
        .unwrap();
    let mut bad_crc = b.to_vec();
    bad_crc[0] ^= 0xff;
    assert!(matches!(
        verity_wire::parse(&bad_crc, 1 << 20),
        Err(WireError::ChecksumMismatch { .. })
    ));
    let v = verity_wire::parse_covered(&bad_crc, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!((v.header.seq(), v.payload), (7, &b"payload"[..]));
    let mut bad_magic = b.to_vec();
    bad_magic[8] = b'X';
    assert!(matches!(
        verity_wire::parse_covered(&bad_magic, 1 << 20),
        Err(WireError::BadMagic { .. })
    ));
    let mut bad_reserved = b.to_vec();
    bad_reserved[verity_wire::RESERVED_OFFSET] = 1;
    assert!(matches!(
        verity_wire::parse_covered(&bad_reserved, 1 << 20),
        Err(WireError::MalformedHeader { .. })
    ));
}
