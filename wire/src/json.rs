//! JSON Lines output of the engine and the tools (`--json`, the JSON log;
//! every format is in tools/FORMATS.md): one flat object per line, built
//! field by field. Times are integer ns since the Unix epoch, never text.
//! Here, below every crate, so the engine's offline readers (logdump,
//! replay, trace) and the tools share one writer.

use std::fmt::Write as _;

/// `s` as a JSON string literal (quotes, backslashes and control
/// characters escaped).
pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// One JSON object, built field by field.
#[derive(Debug, Default, Clone)]
pub struct Obj(String);

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&string(k));
        self.0.push(':');
    }

    pub fn str(mut self, k: &str, v: &str) -> Obj {
        self.key(k);
        self.0.push_str(&string(v));
        self
    }

    /// A number (integer or finite float); a non-finite float is `null`.
    pub fn num(mut self, k: &str, v: impl Into<f64> + std::fmt::Display + Copy) -> Obj {
        self.key(k);
        match v.into().is_finite() {
            true => {
                let _ = write!(self.0, "{v}");
            }
            false => self.0.push_str("null"),
        }
        self
    }

    /// A u64 exactly (above 2^53 too).
    pub fn int(mut self, k: &str, v: u64) -> Obj {
        self.key(k);
        let _ = write!(self.0, "{v}");
        self
    }

    pub fn bool(mut self, k: &str, v: bool) -> Obj {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    /// An array of strings.
    pub fn strs(mut self, k: &str, vs: &[String]) -> Obj {
        self.key(k);
        let items: Vec<String> = vs.iter().map(|v| string(v)).collect();
        let _ = write!(self.0, "[{}]", items.join(","));
        self
    }

    /// Already-encoded JSON (an object or an array of objects).
    pub fn raw(mut self, k: &str, json: &str) -> Obj {
        self.key(k);
        self.0.push_str(json);
        self
    }

    /// The object's text (no newline).
    pub fn build(self) -> String {
        match self.0.is_empty() {
            true => "{}".into(),
            false => self.0 + "}",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_escapes() {
        let o = Obj::new()
            .str("a", "x\"\n\u{1b}")
            .int("n", u64::MAX)
            .num("f", 0.5)
            .num("nan", f64::NAN)
            .bool("ok", true)
            .strs("l", &["p".into()])
            .build();
        assert_eq!(
            o,
            "{\"a\":\"x\\\"\\n\\u001b\",\"n\":18446744073709551615,\"f\":0.5,\"nan\":null,\"ok\":true,\"l\":[\"p\"]}"
        );
        assert_eq!(Obj::new().build(), "{}");
    }
}
