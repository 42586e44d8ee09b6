//! The file formats of tools/FORMATS.md: round trips, byte layouts, and typed
//! errors (file + offset) for malformed files.

mod common;
use common::TmpDir;
use std::fs;
use std::path::Path;

use verity_tools::formats::{
    read_input, read_received, received_record_bytes, scan_received, split_trace_id, trace_id,
    Decision, FormatError, InputFormat, InputReader, InputWriter, Nbbo, Order, ReceivedReader,
    ReceivedWriter, MAX_RECORD_BYTES,
};

fn tmp_dir(name: &str) -> TmpDir {
    TmpDir::new("formats", name)
}

fn records(format: InputFormat, path: &Path) -> Vec<Vec<u8>> {
    read_input(format, path)
        .unwrap()
        .into_iter()
        .map(|r| r.bytes)
        .collect()
}

#[test]
fn fixish_round_trip_and_layout() {
    let dir = tmp_dir("fixish");
    let path = dir.join("f.msg");
    let mut w = InputWriter::create(InputFormat::Fixish, &path).unwrap();
    w.write_record(b"abc").unwrap();
    w.write_record(b"").unwrap();
    w.write_record(&[9u8; 300]).unwrap();
    assert_eq!((w.records(), w.bytes()), (3, 4 + 3 + 4 + 4 + 300));
    w.finish().unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..11], b"\0\0\0\x03abc\0\0\0\0");
    assert_eq!(&bytes[11..15], &[0, 0, 1, 44]);
    let recs = read_input(InputFormat::Fixish, &path).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!((recs[1].offset, recs[2].offset), (7, 11));
    assert_eq!(recs[0].bytes, b"abc");
    assert_eq!(recs[2].bytes, vec![9u8; 300]);
}

#[test]
fn fixish_length_prefix_past_end_of_file_names_file_and_offset() {
    let dir = tmp_dir("fixish-trunc");
    let path = dir.join("bad.msg");
    fs::write(&path, b"\0\0\0\x02ab\0\0\0\x09abc").unwrap();
    let mut it = InputReader::open(InputFormat::Fixish, &path).unwrap();
    assert_eq!(it.next().unwrap().unwrap().bytes, b"ab");
    let err = it.next().unwrap().unwrap_err();
    match &err {
        FormatError::Truncated {
            path: p,
            offset,
            needed,
            available,
        } => {
            assert_eq!(
                (p.as_path(), *offset, *needed, *available),
                (path.as_path(), 6, 13, 7)
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("bad.msg") && err.to_string().contains("offset 6"));
    assert!(it.next().is_none(), "a reader stops after an error");

    // A partial length prefix.
    fs::write(&path, b"\0\0\0\x01a\0\0").unwrap();
    let err = read_input(InputFormat::Fixish, &path).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::Truncated {
                offset: 5,
                needed: 4,
                available: 2,
                ..
            }
        ),
        "{err}"
    );

    // A length over the limit is refused without allocating it.
    fs::write(&path, (MAX_RECORD_BYTES + 1).to_be_bytes()).unwrap();
    let err = read_input(InputFormat::Fixish, &path).unwrap_err();
    assert!(
        matches!(err, FormatError::TooLarge { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn lines_final_line_without_newline_counts_and_empty_lines_are_records() {
    let dir = tmp_dir("lines");
    let path = dir.join("t.txt");
    fs::write(&path, "one\n\nthree\r\nlast").unwrap();
    let recs = records(InputFormat::Lines, &path);
    assert_eq!(recs, [&b"one"[..], b"", b"three\r", b"last"]);
    fs::write(&path, "a\n").unwrap();
    assert_eq!(records(InputFormat::Lines, &path), [b"a"]);
    fs::write(&path, "").unwrap();
    assert!(records(InputFormat::Lines, &path).is_empty());

    let mut w = InputWriter::create(InputFormat::Lines, &path).unwrap();
    w.write_record(b"x y").unwrap();
    assert!(matches!(
        w.write_record(b"a\nb"),
        Err(FormatError::Unwritable { .. })
    ));
    w.finish().unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"x y\n");
}

#[test]
fn u64_big_endian_and_trailing_bytes_are_an_error() {
    let dir = tmp_dir("u64");
    let path = dir.join("n.u64");
    let mut w = InputWriter::create(InputFormat::U64, &path).unwrap();
    w.write_u64(1).unwrap();
    w.write_u64(0x0102_0304_0506_0708).unwrap();
    assert!(w.write_record(b"short").is_err());
    w.finish().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(
        &bytes[..16],
        &[0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(records(InputFormat::U64, &path).len(), 2);
    bytes.extend_from_slice(&[0, 0, 0]);
    fs::write(&path, bytes).unwrap();
    let err = read_input(InputFormat::U64, &path).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::Truncated {
                offset: 16,
                needed: 8,
                available: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn input_format_names_parse() {
    for f in [InputFormat::Fixish, InputFormat::Lines, InputFormat::U64] {
        assert_eq!(f.name().parse::<InputFormat>().unwrap(), f);
    }
    assert!("csv".parse::<InputFormat>().is_err());
}

#[test]
fn received_round_trip_and_little_endian_layout() {
    let dir = tmp_dir("recv");
    let path = dir.join("r.bin");
    let mut w = ReceivedWriter::create(&path).unwrap();
    w.write(3, 1, trace_id(2, 5), b"hello").unwrap();
    w.write(3, 2, trace_id(1, 1 << 39), b"").unwrap();
    w.flush().unwrap();
    assert_eq!(w.records(), 2);
    assert_eq!(w.written(), 16 + 40 + 32);
    w.finish().unwrap();
    let bytes = fs::read(&path).unwrap();
    // File header: magic, version 1, reserved.
    assert_eq!(&bytes[0..8], b"VRTYRECV");
    assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
    assert_eq!(&bytes[12..16], &[0; 4]);
    // Record 1 at 16: 32-byte header, 5 payload bytes, 3 of padding.
    assert_eq!(bytes.len(), 16 + 32 + 8 + 32);
    let r = &bytes[16..56];
    assert_eq!(&r[4..8], &5u32.to_le_bytes());
    assert_eq!(&r[8..12], &3u32.to_le_bytes());
    assert_eq!(&r[12..16], &[0; 4]);
    assert_eq!(&r[16..24], &1u64.to_le_bytes());
    assert_eq!(&r[24..32], &((2u64 << 40) | 5).to_le_bytes());
    assert_eq!(&r[32..37], b"hello");
    assert_eq!(&r[37..40], &[0; 3]);
    // The CRC32C covers everything after it, padding included.
    assert_eq!(&r[0..4], &verity_wire::crc32c(&r[4..]).to_le_bytes());
    assert_eq!(received_record_bytes(5), 40);
    assert_eq!(received_record_bytes(0), 32);
    assert_eq!(received_record_bytes(8), 40);
    let recs = read_received(&path).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].channel, recs[0].seq, recs[0].offset), (3, 1, 16));
    assert_eq!(split_trace_id(recs[0].trace_id), (2, 5));
    assert_eq!(recs[0].payload, b"hello");
    assert_eq!(
        (recs[1].seq, recs[1].offset, recs[1].payload.len()),
        (2, 56, 0)
    );
    assert_eq!(split_trace_id(recs[1].trace_id), (1, 1 << 39));
    // A file with no records is its header alone; an empty file has none either.
    let empty = dir.join("e.bin");
    ReceivedWriter::create(&empty).unwrap().finish().unwrap();
    assert_eq!(fs::read(&empty).unwrap().len(), 16);
    assert!(read_received(&empty).unwrap().is_empty());
    fs::write(&empty, b"").unwrap();
    assert!(read_received(&empty).unwrap().is_empty());
}

#[test]
fn truncated_received_record_names_file_and_offset() {
    let dir = tmp_dir("recv-trunc");
    let path = dir.join("r.bin");
    let mut w = ReceivedWriter::create(&path).unwrap();
    w.write(1, 1, 1, b"abcd").unwrap();
    w.write(1, 2, 2, b"efgh").unwrap();
    w.finish().unwrap();
    let full = fs::read(&path).unwrap();
    assert_eq!(full.len(), 16 + 40 + 40);
    // Cut in the second record's padding, its payload, then its header.
    for (cut, needed, available) in [(2usize, 40u64, 38u64), (6, 40, 34), (10, 32, 30)] {
        fs::write(&path, &full[..full.len() - cut]).unwrap();
        let mut r = ReceivedReader::open(&path).unwrap();
        assert!(r.read_record().unwrap().is_some());
        let err = r.read_record().unwrap_err();
        match &err {
            FormatError::Truncated {
                offset,
                needed: n,
                available: a,
                ..
            } => assert_eq!((*offset, *n, *a), (56, needed, available)),
            other => panic!("{other}"),
        }
        assert_eq!(r.offset(), 56, "the reader stays at the bad record");
        let msg = err.to_string();
        assert!(msg.contains("r.bin") && msg.contains("offset 56"), "{msg}");
    }
    let err = read_received(&dir.join("nope.bin")).unwrap_err();
    assert!(matches!(err, FormatError::Io { .. }) && err.to_string().contains("nope.bin"));
}

#[test]
fn received_file_damage_is_a_typed_error_naming_file_and_offset() {
    let dir = tmp_dir("recv-damage");
    let path = dir.join("r.bin");
    let mut w = ReceivedWriter::create(&path).unwrap();
    for seq in 1..=3 {
        w.write(1, seq, seq, &seq.to_be_bytes()).unwrap();
    }
    w.finish().unwrap();
    let full = fs::read(&path).unwrap();
    let second = 16 + 40;
    // A flipped payload bit, a flipped header bit, a zeroed record.
    for (at, what) in [
        (second + 33, "payload"),
        (second + 17, "seq"),
        (second, "crc"),
    ] {
        let mut b = full.clone();
        b[at] ^= 0x10;
        fs::write(&path, &b).unwrap();
        let err = read_received(&path).unwrap_err();
        assert!(
            matches!(err, FormatError::Corrupt { offset, .. } if offset == second as u64),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("offset 56") && err.to_string().contains("CRC32C"));
    }
    let mut b = full.clone();
    b[second..second + 40].fill(0);
    fs::write(&path, &b).unwrap();
    assert!(matches!(
        read_received(&path).unwrap_err(),
        FormatError::Corrupt { offset: 56, .. }
    ));
    // Nonzero reserved bytes under a CRC that matches are refused too.
    let mut b = full.clone();
    b[second + 12] = 1;
    let crc = verity_wire::crc32c(&b[second + 4..second + 40]);
    b[second..second + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &b).unwrap();
    let err = read_received(&path).unwrap_err();
    assert!(err.to_string().contains("reserved or padding"), "{err}");
    // A length above the limit.
    let mut b = full.clone();
    b[second + 4..second + 8].copy_from_slice(&(MAX_RECORD_BYTES + 1).to_le_bytes());
    fs::write(&path, &b).unwrap();
    assert!(matches!(
        read_received(&path).unwrap_err(),
        FormatError::TooLarge { offset: 56, .. }
    ));
    // Not a received file; another version; a header cut short.
    fs::write(&path, b"1,2,3\n4,5,6\n7,8,9\n").unwrap();
    let err = read_received(&path).unwrap_err();
    assert!(matches!(err, FormatError::NotReceived { .. }), "{err}");
    assert!(err.to_string().contains("not a received file"), "{err}");
    let mut b = full.clone();
    b[8] = 2;
    fs::write(&path, &b).unwrap();
    let err = read_received(&path).unwrap_err();
    assert!(
        matches!(err, FormatError::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );
    fs::write(&path, &full[..5]).unwrap();
    assert!(matches!(
        read_received(&path).unwrap_err(),
        FormatError::Truncated { offset: 0, .. }
    ));
}

#[test]
fn scan_stops_at_the_first_bad_record_and_rebuilds_delivered() {
    let dir = tmp_dir("recv-scan");
    let path = dir.join("r.bin");
    let mut w = ReceivedWriter::create(&path).unwrap();
    for seq in 1..=3 {
        w.write(1, seq, seq, &seq.to_be_bytes()).unwrap();
        w.write(2, seq, seq, b"xyz").unwrap();
    }
    // Channel 1 jumps: 4 is missing.
    w.write(1, 5, 5, &5u64.to_be_bytes()).unwrap();
    w.write(2, 4, 4, b"xyz").unwrap();
    w.finish().unwrap();
    let scan = |p: &Path| scan_received(fs::File::open(p).unwrap(), p).unwrap();
    let s = scan(&path);
    assert_eq!(s.records, 6);
    assert_eq!(s.good_bytes, 16 + 6 * 40);
    assert_eq!(
        s.delivered.into_iter().collect::<Vec<_>>(),
        [(1, 3), (2, 3)]
    );
    let bad = s.bad.expect("out of sequence");
    assert!(
        matches!(
            bad,
            FormatError::OutOfSequence {
                offset: 256,
                channel: 1,
                seq: 5,
                expected: 4,
                ..
            }
        ),
        "{bad}"
    );
    // A whole file scans whole; a cut one up to its last whole record.
    let full = fs::read(&path).unwrap();
    fs::write(&path, &full[..16 + 4 * 40 + 7]).unwrap();
    let s = scan(&path);
    assert_eq!((s.records, s.good_bytes), (4, 16 + 4 * 40));
    assert!(matches!(s.bad, Some(FormatError::Truncated { .. })));
    fs::write(&path, &full[..16 + 4 * 40]).unwrap();
    let s = scan(&path);
    assert_eq!((s.records, s.good_bytes), (4, 16 + 4 * 40));
    assert!(s.bad.is_none());
    // Empty, and a header cut short: nothing good.
    fs::write(&path, b"").unwrap();
    let s = scan(&path);
    assert_eq!((s.records, s.good_bytes), (0, 0));
    assert!(s.bad.is_none());
    fs::write(&path, &full[..10]).unwrap();
    let s = scan(&path);
    assert_eq!((s.records, s.good_bytes), (0, 0));
    assert!(s.bad.is_some());
    // Not a received file: an error, not a torn tail.
    fs::write(&path, b"hello, world, this is not it").unwrap();
    assert!(matches!(
        scan_received(fs::File::open(&path).unwrap(), &path),
        Err(FormatError::NotReceived { .. })
    ));
}

#[test]
fn market_spread_records_parse_and_encode() {
    let nbbo = Nbbo {
        symbol: *b" ABC",
        transact_time: *b"20160902-15:47:52.000",
        bid: 1.25,
        offer: 1.26,
    };
    let body = nbbo.encode();
    assert_eq!(body[0], 2);
    assert_eq!(&body[26..34], &1.25f64.to_be_bytes());
    assert_eq!(Nbbo::parse(&body), Some(nbbo));
    let mut bad = body;
    bad[0] = 1;
    assert_eq!(Nbbo::parse(&bad), None);
    assert_eq!(Nbbo::parse(&body[..41]), None);
    let mut inf = body;
    inf[34..42].copy_from_slice(&f64::INFINITY.to_be_bytes());
    assert_eq!(Nbbo::parse(&inf), None);

    let order = Order {
        side: 2,
        account: 0x0102_0304,
        order_id: *b"AB12CD",
        symbol: *b"MSFT",
        quantity: 300.0,
        price: 57.5,
        transact_time: *b"20160902-15:47:52.001",
    };
    let body = order.encode();
    assert_eq!(&body[..6], &[1, 2, 1, 2, 3, 4]);
    assert_eq!(&body[12..16], b"MSFT");
    assert_eq!(Order::parse(&body), Some(order));
    assert_eq!(Order::parse(&body[..52]), None);

    let d = Decision {
        order_seq: 9,
        nbbo_version: 4,
        bid: 1.25,
        offer: 1.26,
        order_id: *b"AB12CD",
        symbol: *b"MSFT",
        decision: 1,
        reason: 0,
        reserved: [0; 4],
    };
    let p = d.encode();
    assert_eq!(&p[0..8], &9u64.to_le_bytes());
    assert_eq!(&p[16..24], &1.25f64.to_le_bytes());
    assert_eq!(&p[32..42], b"AB12CDMSFT");
    assert_eq!((p[42], p[43]), (1, 0));
    assert_eq!(Decision::parse(&p), Some(d));
    assert_eq!(Decision::parse(&p[..47]), None);
}

#[test]
fn reference_nbbo_files_parse_as_valid_fixish() {
    let dir = verity_tools::gen::data_dir(None).join("market-spread");
    for (name, n) in [
        ("350-symbols_initial-nbbo-fixish.msg", 350),
        ("1400-symbols_initial-nbbo-fixish.msg", 1400),
    ] {
        let recs = records(InputFormat::Fixish, &dir.join(name));
        assert_eq!(recs.len(), n);
        assert!(recs.iter().all(|r| Nbbo::parse(r).is_some()));
    }
}
