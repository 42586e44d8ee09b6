//! Logic of the `verity-*` tools, kept in a library so the engine's demo can reuse it.
//!
//! - [`formats`]: input record files (fixish, lines, u64), the received file,
//!   market-spread record layouts. Byte tables in `tools/FORMATS.md`.
//! - [`gen`]: deterministic input generators (`verity-gen`).
//! - [`check`]: the independent oracle (`verity-check`); it does not use the
//!   engine's code.
//! - [`send`] and [`recv`]: the source and sink clients (`verity-send`,
//!   `verity-recv`), at-least-once senders and deduplicating receivers.
//! - [`pg`]: `verity-sink-postgres`, the sink that writes outputs into
//!   PostgreSQL exactly once, and a private server for tests and the demo.
//! - [`tls`]: their TLS transport, and the certificates of `verity-gen tls`.
//! - [`report`]: the HTML pages with SVG plots of `--report` (bench, chaos).
//!
//! This crate depends on `verity-wire` only, never on the engine: the engine's
//! `demo` uses it, and the checker stays independent of what it checks.

pub mod bench;
pub mod chaos;
pub mod check;
pub mod client_auth;
pub mod formats;
pub mod gen;
/// The JSON Lines writer (verity-wire's: the engine's readers share it).
pub use verity_wire::json;
pub mod net;
pub mod pg;
pub mod ports;
pub mod recv;
pub mod report;
pub mod send;
pub mod startup;
pub mod tls;

/// A range of seeds as `--seeds` spells it, for every tool that takes one
/// (`verity-chaos`, `verity-sim`, `verity sim`): `A..B` (B excluded) or
/// `A..=B`. Never empty: `5..1`, `3..3` and `3..=2` are errors, as is a
/// range past `u64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    /// Excluded.
    pub end: u64,
}

impl SeedRange {
    /// The one seed `seed`.
    pub fn one(seed: u64) -> SeedRange {
        SeedRange {
            first: seed,
            end: seed.saturating_add(1),
        }
    }

    pub fn seeds(self) -> std::ops::Range<u64> {
        self.first..self.end
    }

    pub fn len(self) -> u64 {
        self.end - self.first
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

impl std::str::FromStr for SeedRange {
    type Err = String;
    fn from_str(s: &str) -> Result<SeedRange, String> {
        let num = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("{s:?}: {v:?} is not a seed: {e}"))
        };
        let (first, end) = if let Some((a, b)) = s.split_once("..=") {
            let b = num(b)?;
            (
                num(a)?,
                b.checked_add(1)
                    .ok_or_else(|| format!("{s:?}: the range ends past the last seed"))?,
            )
        } else if let Some((a, b)) = s.split_once("..") {
            (num(a)?, num(b)?)
        } else {
            return Err(format!("{s:?} is not A..B (B excluded) or A..=B"));
        };
        if end <= first {
            return Err(format!(
                "{s:?} holds no seed: the end must come after the start (A..B runs A to B - 1)"
            ));
        }
        Ok(SeedRange { first, end })
    }
}

#[cfg(test)]
mod tests {
    use super::SeedRange;

    #[test]
    fn seed_ranges_are_never_empty_or_reversed() {
        assert_eq!("1..4".parse::<SeedRange>().unwrap().seeds(), 1..4);
        assert_eq!("1..=4".parse::<SeedRange>().unwrap().seeds(), 1..5);
        assert_eq!(" 7 .. 9".parse::<SeedRange>().unwrap().len(), 2);
        for (bad, why) in [
            ("5..1", "holds no seed"),
            ("3..3", "holds no seed"),
            ("3..=2", "holds no seed"),
            ("1..=18446744073709551615", "past the last seed"),
            ("1-5", "is not A..B"),
            ("a..5", "is not a seed"),
            ("..5", "is not a seed"),
        ] {
            let e = bad.parse::<SeedRange>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(SeedRange::one(u64::MAX).len(), 0);
    }
}

/// RFC 3339 with nanoseconds, for people (verity-wire's, the one formatter).
pub use verity_wire::time::rfc3339_ns;

/// Now, in ns since the Unix epoch (0 if the clock is before it).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The lines of a worker's JSON Lines log (`--log-format json`) that are
/// `event`s of the given name.
pub fn events<'a>(log: &'a str, event: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let tag = format!("\"event\":\"{event}\"");
    log.lines()
        .filter(move |l| l.starts_with('{') && l.contains(&tag))
}

/// The raw value of top-level field `key` in one of the engine's JSON
/// log lines (flat objects whose numbers are unquoted): `"key":123` gives
/// `123`, a string gives its text with the quotes. Not a general JSON
/// parser: only for the engine's own flat lines.
pub fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = match rest.starts_with('"') {
        true => rest[1..].find('"').map(|e| e + 2)?,
        false => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(&rest[..end])
}

#[cfg(test)]
mod event_tests {
    #[test]
    fn events_and_fields_of_json_lines() {
        let log = "text line\n{\"time_ns\":1,\"event\":\"stopped\",\"duplicates\":7,\"message\":\"a, b\"}\n{\"event\":\"recovered\"}\n";
        let stops: Vec<&str> = super::events(log, "stopped").collect();
        assert_eq!(stops.len(), 1);
        assert_eq!(super::json_field(stops[0], "duplicates"), Some("7"));
        assert_eq!(super::json_field(stops[0], "message"), Some("\"a, b\""));
        assert_eq!(super::json_field(stops[0], "nope"), None);
    }
}
