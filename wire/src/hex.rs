//! Bytes as text for the tools (logdump, trace): lowercase hex, a short
//! preview with its ASCII beside it, and the `hexdump -C` style block.
//!
//! Only printable ASCII is shown as itself in the ASCII column; every other
//! byte is a `.`, so no payload can put a control sequence on a terminal.

use core::fmt::Write as _;

/// `bytes` as lowercase hex, two digits a byte, nothing between.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `bytes` as the ASCII column of a dump: printable ASCII as itself, every
/// other byte `.`.
pub fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b' '..=b'~' => b as char,
            _ => '.',
        })
        .collect()
}

/// The first `n` bytes as hex, then their ASCII between bars, then `…` when
/// `bytes` is longer: `0100ff… |..A|` style, for one-line listings.
pub fn preview(bytes: &[u8], n: usize) -> String {
    let shown = &bytes[..bytes.len().min(n)];
    let more = if bytes.len() > n { "…" } else { "" };
    format!("{}{more} |{}|", hex(shown), ascii(shown))
}

/// The whole of `bytes` as `hexdump -C` lines, each starting with
/// `indent`: the offset, 16 bytes in hex (a gap after 8), their ASCII.
/// Every line ends with `\n`; no bytes, no lines.
pub fn dump(bytes: &[u8], indent: &str) -> String {
    let mut s = String::new();
    for (i, row) in bytes.chunks(16).enumerate() {
        let _ = write!(s, "{indent}{:08x}  ", i * 16);
        for k in 0..16 {
            match row.get(k) {
                Some(b) => {
                    let _ = write!(s, "{b:02x} ");
                }
                None => s.push_str("   "),
            }
            if k == 7 {
                s.push(' ');
            }
        }
        let _ = writeln!(s, " |{}|", ascii(row));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn ascii_hides_control_and_high_bytes() {
        assert_eq!(ascii(b"A z~\x1b\n\x7f\xff"), "A z~....");
    }

    #[test]
    fn preview_cuts_at_n_and_says_so() {
        assert_eq!(preview(b"AB", 4), "4142 |AB|");
        assert_eq!(preview(b"ABCDEF", 2), "4142… |AB|");
    }

    #[test]
    fn dump_is_hexdump_c_style_with_a_short_last_row() {
        let bytes: Vec<u8> = (0x41..0x41 + 18).collect();
        let d = dump(&bytes, "  ");
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "  00000000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|"
        );
        assert_eq!(
            lines[1],
            "  00000010  51 52                                             |QR|"
        );
        assert_eq!(dump(&[], "  "), "");
    }
}
