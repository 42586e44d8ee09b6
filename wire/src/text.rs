//! Text a peer supplies (the text of an ERROR frame), made safe to log.
//!
//! A peer's words must never become an operator's log lines or terminal
//! commands: [`Escaped`] prints printable text as it is and everything else
//! as an escape (`\n`, `\u{1b}`, `\u{202e}` ...): no newline can forge a
//! log line, no control sequence reaches a terminal, no bidi control
//! reorders what is shown. It stops after [`LOG_TEXT_MAX`] characters and
//! says how many bytes it left out.

use core::fmt;

/// Characters of peer text a log line shows at most.
pub const LOG_TEXT_MAX: usize = 200;

/// `text` for a log line: escaped and bounded (see the module docs).
pub struct Escaped<'a>(pub &'a str);

/// Whether `c` is shown as it is: printable ASCII, or a non-ASCII letter,
/// digit or mark-free symbol that is not a control, format (bidi,
/// zero-width) or separator character.
fn shown(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    // Format characters (bidi overrides and isolates, zero-width joiners,
    // the BOM), line and paragraph separators, and other invisible ones.
    let invisible = matches!(c as u32,
        0x80..=0x9f | 0xad | 0x61c | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e
        | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb | 0xe0000..=0xe007f);
    !invisible && !c.is_control() && !c.is_whitespace()
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (at, c)) in self.0.char_indices().enumerate() {
            if n == LOG_TEXT_MAX {
                return write!(f, "...(+{} bytes)", self.0.len() - at);
            }
            if shown(c) {
                fmt::Write::write_char(f, c)?;
            } else {
                match c {
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c => write!(f, "\\u{{{:x}}}", c as u32)?,
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_escapes_and_bidi_controls_are_escaped() {
        let forged = "bye\nverity: stopped cleanly: accepted=0\x1b[2J\u{202e}evil\u{2066}";
        let s = Escaped(forged).to_string();
        assert_eq!(
            s,
            "bye\\nverity: stopped cleanly: accepted=0\\u{1b}[2J\\u{202e}evil\\u{2066}"
        );
        assert!(s.chars().all(|c| !c.is_control()));
    }

    #[test]
    fn plain_text_and_letters_pass_and_long_text_is_cut() {
        assert_eq!(
            Escaped("authentication failed").to_string(),
            "authentication failed"
        );
        assert_eq!(
            Escaped("Größe überschritten").to_string(),
            "Größe überschritten"
        );
        let long = "x".repeat(5000);
        let s = Escaped(&long).to_string();
        assert_eq!(s, format!("{}...(+4800 bytes)", "x".repeat(200)));
    }
}
