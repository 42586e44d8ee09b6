#![no_main]
//! verity-wire's CRC32C kernel against crc-fast (the fallback it replaced) and,
//! for short inputs, a bit-by-bit CRC32C, at every offset into the input so
//! the masked first-block load sees all alignments and lengths.

use libfuzzer_sys::fuzz_target;

fn bitwise(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ if crc & 1 != 0 { 0x82F6_3B78 } else { 0 };
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    // A bounded number of suffixes: the first 64 offsets cover every alignment.
    for start in 0..data.len().min(64) {
        let buf = &data[start..];
        let ours = verity_wire::crc32c(buf);
        assert_eq!(
            ours,
            crc_fast::crc32_iscsi(buf),
            "offset {start} len {}",
            buf.len()
        );
        if buf.len() <= 512 {
            assert_eq!(ours, bitwise(buf), "offset {start} len {}", buf.len());
        }
    }
});
