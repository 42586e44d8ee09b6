//! criterion group `wire`: encode and decode (checksum verified) of batches of
//! DATA frames with 64-byte and 1 KiB payloads, against `memcpy` of the same
//! bytes measured in the same run.
//!
//! - `encode`: `Encoder::data` appends the batch to one reused `BytesMut`.
//! - `decode_view`: `parse` walks the batch in place (what a reader of a
//!   receive buffer or a ring does): bounds, CRC32C, body checks, no copy.
//! - `decode_stream`: the stream `Decoder` (bytes appended to its buffer, as a
//!   socket read would, then split into owned `Frame`s).
//! - `memcpy`: `copy_from_slice` of the batch's bytes into a preallocated buffer.
//! - `crc32c`: just the checksum of every frame (bytes `4..stride`, the range
//!   `parse` verifies), so decode can be read against its own floor.
//!
//! Frames/s = bytes/s ÷ stride (104 bytes for 64-byte payloads, 1064 for 1 KiB).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verity::wire::{crc32c, crc32c_accelerated, parse, Decoder, Encoder, DEFAULT_MAX_FRAME_LEN};

const FRAMES: usize = 1000;

fn batch(payload_len: usize) -> (BytesMut, Vec<u8>) {
    let enc = Encoder::default();
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 31) as u8).collect();
    let mut buf = BytesMut::with_capacity(FRAMES * (payload_len + 48));
    for seq in 1..=FRAMES as u64 {
        enc.data(&mut buf, 1, seq, seq, false, &payload)
            .expect("bench frame fits");
    }
    (buf, payload)
}

fn wire(c: &mut Criterion) {
    eprintln!(
        "crc32c kernel: {}",
        if crc32c_accelerated() {
            "AVX-512 VPCLMULQDQ"
        } else {
            "crc-fast (portable)"
        }
    );
    let mut g = c.benchmark_group("wire");
    g.sample_size(30);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(2));
    for (label, payload_len) in [("64B", 64usize), ("1KiB", 1024)] {
        let (stream, payload) = batch(payload_len);
        g.throughput(Throughput::Bytes(stream.len() as u64));

        g.bench_function(format!("memcpy/{label}"), |b| {
            let mut dst = vec![0u8; stream.len()];
            b.iter(|| {
                dst.copy_from_slice(black_box(&stream[..]));
                black_box(&dst);
            })
        });

        g.bench_function(format!("crc32c/{label}"), |b| {
            let stride = stream.len() / FRAMES;
            b.iter(|| {
                let mut sum = 0u32;
                for frame in black_box(&stream[..]).chunks_exact(stride) {
                    sum ^= crc32c(&frame[4..]);
                }
                black_box(sum)
            })
        });

        g.bench_function(format!("encode/{label}"), |b| {
            let enc = Encoder::default();
            let mut buf = BytesMut::with_capacity(stream.len());
            b.iter(|| {
                buf.clear();
                for seq in 1..=FRAMES as u64 {
                    let _ = enc.data(&mut buf, 1, seq, seq, false, black_box(&payload));
                }
                black_box(&buf);
            })
        });

        g.bench_function(format!("decode_view/{label}"), |b| {
            b.iter(|| {
                let mut at = 0;
                let mut sum = 0u64;
                while let Ok(Some(v)) = parse(black_box(&stream[at..]), DEFAULT_MAX_FRAME_LEN) {
                    sum = sum.wrapping_add(v.header.seq());
                    at += v.stride;
                }
                assert_eq!(at, stream.len());
                black_box(sum)
            })
        });

        g.bench_function(format!("decode_stream/{label}"), |b| {
            let mut dec = Decoder::with_capacity(DEFAULT_MAX_FRAME_LEN, stream.len());
            b.iter(|| {
                dec.extend(black_box(&stream[..]));
                let mut n = 0;
                while let Ok(Some(f)) = dec.decode() {
                    n += f.payload().len();
                }
                assert_eq!(n, FRAMES * payload_len);
                black_box(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
