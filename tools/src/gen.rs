//! Deterministic input generators: same seed and arguments, byte-identical files.
//!
//! - [`market_spread`]: `nbbo.msg` + `orders.msg` (fixish) from the reference
//!   initial NBBOs and legal symbols.
//! - [`u64_counters`]: the `u64` file 1..=N.
//! - [`text`]: a `lines` file of lines drawn from the word-count reference texts.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use verity_wire::time::{civil_from_days, days_from_civil};

use crate::formats::{
    FormatError, InputFormat, InputReader, InputWriter, Nbbo, Order, TRANSACT_TIME_LEN,
};

/// Env var naming the reference data directory.
pub const DATA_DIR_ENV: &str = "VERITY_DATA_DIR";
/// Initial NBBOs the NBBO stream starts from, relative to the data dir.
pub const INITIAL_NBBO_FILE: &str = "market-spread/350-symbols_initial-nbbo-fixish.msg";
/// Symbols orders are drawn from, relative to the data dir.
pub const LEGAL_SYMBOLS_FILE: &str = "market-spread/1400-legal-symbols.msg";
/// Directory of the text files lines are drawn from, relative to the data dir.
pub const TEXT_DIR: &str = "word-count";

/// The data dir: `explicit`, else `$VERITY_DATA_DIR`, else `tools/data` in
/// the repository (a copy of `shared/data`, so a clone runs on its own).
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data")),
    }
}

/// What went wrong while generating.
#[derive(Debug)]
pub enum GenError {
    /// A reference or output file could not be read or written.
    Format(FormatError),
    /// A reference data file is missing or unusable.
    Data { path: PathBuf, reason: String },
}

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenError::Format(e) => write!(f, "{e}"),
            GenError::Data { path, reason } => write!(
                f,
                "{}: {reason} (set --reference-data or {DATA_DIR_ENV} to the reference data directory)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for GenError {}

impl From<FormatError> for GenError {
    fn from(e: FormatError) -> Self {
        GenError::Format(e)
    }
}

fn data_err(path: &Path, reason: impl Into<String>) -> GenError {
    GenError::Data {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenFile {
    pub path: PathBuf,
    pub records: u64,
    pub bytes: u64,
}

/// What a generator wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenSummary {
    pub files: Vec<GenFile>,
}

impl fmt::Display for GenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, file) in self.files.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "gen: wrote {} records ({} bytes) to {}",
                file.records,
                file.bytes,
                file.path.display()
            )?;
        }
        Ok(())
    }
}

// The PRNG is Verity's one seeded generator (`verity_wire::rng`), the one
// the engine's fault shim and simulator draw from.
pub use verity_wire::rng::{splitmix64, Rng};

// ---------------------------------------------------------------------------
// Simple generators

/// Writes the `u64` file holding 1..=count (big-endian).
pub fn u64_counters(count: u64, out: &Path) -> Result<GenSummary, GenError> {
    let mut w = InputWriter::create(InputFormat::U64, out)?;
    for n in 1..=count {
        w.write_u64(n)?;
    }
    let (records, bytes) = (w.records(), w.bytes());
    w.finish()?;
    Ok(GenSummary {
        files: vec![GenFile {
            path: out.to_path_buf(),
            records,
            bytes,
        }],
    })
}

/// Configuration of [`text`].
#[derive(Debug, Clone)]
pub struct TextConfig {
    pub seed: u64,
    pub lines: u64,
    pub data_dir: PathBuf,
}

/// Writes `lines` lines, each a uniformly drawn non-empty line of the
/// `word-count/*.txt` reference files (files in name order).
pub fn text(cfg: &TextConfig, out: &Path) -> Result<GenSummary, GenError> {
    let dir = cfg.data_dir.join(TEXT_DIR);
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| data_err(&dir, format!("cannot list directory: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for name in &names {
        for rec in InputReader::open(InputFormat::Lines, name)? {
            let mut line = rec?.bytes;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.is_empty() {
                pool.push(line);
            }
        }
    }
    if pool.is_empty() {
        return Err(data_err(&dir, "no non-empty lines in any *.txt file"));
    }
    let mut rng = Rng::new(cfg.seed);
    let mut w = InputWriter::create(InputFormat::Lines, out)?;
    for _ in 0..cfg.lines {
        let i = rng.below(pool.len() as u64) as usize;
        w.write_record(&pool[i])?;
    }
    let (records, bytes) = (w.records(), w.bytes());
    w.finish()?;
    Ok(GenSummary {
        files: vec![GenFile {
            path: out.to_path_buf(),
            records,
            bytes,
        }],
    })
}

// ---------------------------------------------------------------------------
// Market spread

/// Configuration of [`market_spread`].
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    /// Orders to write to `orders.msg`.
    pub orders: u64,
    /// NBBO updates written to `nbbo.msg` after the initial NBBOs.
    pub nbbo_updates: u64,
    pub data_dir: PathBuf,
}

impl GenConfig {
    /// Splits `messages` (total records over both files) about half and
    /// half: the NBBO file gets `max(messages / 2, initial)` records, of which
    /// `initial` (350) are the initial NBBOs; orders get the rest.
    pub fn from_messages(seed: u64, messages: u64, data_dir: PathBuf) -> GenConfig {
        let initial = INITIAL_NBBO_COUNT;
        let nbbo_total = (messages / 2).max(initial);
        GenConfig {
            seed,
            orders: messages.saturating_sub(nbbo_total),
            nbbo_updates: nbbo_total - initial,
            data_dir,
        }
    }
}

/// Records in [`INITIAL_NBBO_FILE`].
pub const INITIAL_NBBO_COUNT: u64 = 350;
/// File names written by [`market_spread`] into the out dir.
pub const NBBO_FILE: &str = "nbbo.msg";
pub const ORDERS_FILE: &str = "orders.msg";

/// Start of generated transact times: 2016-09-02 (the reference data's day) 09:30:00.000.
const START_DAY: (i64, u32, u32) = (2016, 9, 2);
const START_MS: u64 = (9 * 3600 + 30 * 60) * 1000;
const MS_PER_DAY: u64 = 24 * 3600 * 1000;

/// Highest price the walk starts from: $10 M, in cents.
const MAX_PRICE_CENTS: i64 = 1_000_000_000;

/// Walk state of one symbol, in integer cents so rounding never drifts.
struct Quote {
    symbol: [u8; 4],
    bid_cents: i64,
    offer_cents: i64,
}

/// Writes `out_dir/nbbo.msg` (initial NBBOs verbatim, then `nbbo_updates`
/// random-walk updates) and `out_dir/orders.msg` (`orders` orders over the
/// legal symbols), both fixish.
pub fn market_spread(cfg: &GenConfig, out_dir: &Path) -> Result<GenSummary, GenError> {
    let initial_path = cfg.data_dir.join(INITIAL_NBBO_FILE);
    let legal_path = cfg.data_dir.join(LEGAL_SYMBOLS_FILE);
    if !initial_path.is_file() {
        return Err(data_err(&initial_path, "missing reference file"));
    }
    if !legal_path.is_file() {
        return Err(data_err(&legal_path, "missing reference file"));
    }
    let mut initial: Vec<Vec<u8>> = Vec::new();
    let mut quotes: Vec<Quote> = Vec::new();
    for rec in InputReader::open(InputFormat::Fixish, &initial_path)? {
        let rec = rec?;
        let nbbo = Nbbo::parse(&rec.bytes).ok_or_else(|| {
            data_err(
                &initial_path,
                format!("record at byte offset {} is not a valid NBBO", rec.offset),
            )
        })?;
        // Clamped so the walk's integer arithmetic cannot overflow on odd data.
        let bid_cents = ((nbbo.bid * 100.0).round() as i64).clamp(1, MAX_PRICE_CENTS);
        let offer_cents = ((nbbo.offer * 100.0).round() as i64).clamp(bid_cents, MAX_PRICE_CENTS);
        quotes.push(Quote {
            symbol: nbbo.symbol,
            bid_cents,
            offer_cents,
        });
        initial.push(rec.bytes);
    }
    if quotes.is_empty() {
        return Err(data_err(&initial_path, "no NBBO records"));
    }
    let legal = read_legal_symbols(&legal_path)?;
    // Index of each legal symbol's quote, if it has one (orders price near it).
    let quote_of: Vec<Option<usize>> = legal
        .iter()
        .map(|s| quotes.iter().position(|q| &q.symbol == s))
        .collect();

    fs::create_dir_all(out_dir).map_err(|e| {
        GenError::Format(FormatError::Io {
            path: out_dir.to_path_buf(),
            source: e,
        })
    })?;
    let nbbo_path = out_dir.join(NBBO_FILE);
    let orders_path = out_dir.join(ORDERS_FILE);
    let mut nbbo_w = InputWriter::create(InputFormat::Fixish, &nbbo_path)?;
    let mut orders_w = InputWriter::create(InputFormat::Fixish, &orders_path)?;
    for body in &initial {
        nbbo_w.write_record(body)?;
    }

    let mut rng = Rng::new(cfg.seed);
    let mut clock = Clock::new();
    let (mut nbbo_left, mut orders_left) = (cfg.nbbo_updates, cfg.orders);
    while nbbo_left + orders_left > 0 {
        // Interleave the two streams in proportion to what is left, so order
        // prices follow the walk as it was at that moment.
        let pick_nbbo = rng.below(nbbo_left + orders_left) < nbbo_left;
        clock.advance_ms(rng.below(3));
        if pick_nbbo {
            nbbo_left -= 1;
            let i = rng.below(quotes.len() as u64) as usize;
            let q = &mut quotes[i];
            walk(&mut rng, q);
            let nbbo = Nbbo {
                symbol: q.symbol,
                transact_time: clock.render(),
                bid: q.bid_cents as f64 / 100.0,
                offer: q.offer_cents as f64 / 100.0,
            };
            nbbo_w.write_record(&nbbo.encode())?;
        } else {
            orders_left -= 1;
            let i = rng.below(legal.len() as u64) as usize;
            let mid_cents = match quote_of[i] {
                Some(q) => (quotes[q].bid_cents + quotes[q].offer_cents) / 2,
                None => rng.range(100, 20_000),
            };
            let price_cents =
                (mid_cents + rng.range(-(mid_cents / 100 + 2), mid_cents / 100 + 2)).max(1);
            let order = Order {
                side: 1 + rng.below(2) as u8,
                account: rng.below(100_000) as u32,
                order_id: order_id(&mut rng),
                symbol: legal[i],
                quantity: (rng.range(1, 100) * 100) as f64,
                price: price_cents as f64 / 100.0,
                transact_time: clock.render(),
            };
            orders_w.write_record(&order.encode())?;
        }
    }
    let nbbo_file = GenFile {
        path: nbbo_path,
        records: nbbo_w.records(),
        bytes: nbbo_w.bytes(),
    };
    let orders_file = GenFile {
        path: orders_path,
        records: orders_w.records(),
        bytes: orders_w.bytes(),
    };
    nbbo_w.finish()?;
    orders_w.finish()?;
    Ok(GenSummary {
        files: vec![nbbo_file, orders_file],
    })
}

/// One random-walk step of a quote: the mid moves by up to ±0.5% (at least a
/// cent), then the spread is drawn: 80% tight (1-4 cents), 12% absolutely
/// wide (5-50 cents), 8% relatively wide (5-10% of the mid; under $1 that
/// stays below 5 cents, which is the "spread/mid" rejection).
fn walk(rng: &mut Rng, q: &mut Quote) {
    let mid2 = q.bid_cents + q.offer_cents; // twice the mid, in cents
    let mid = (mid2 / 2).max(2);
    let step = (mid / 200).max(1);
    let mid = (mid + rng.range(-step, step)).max(2);
    let r = rng.below(100);
    let spread = if r < 80 {
        rng.range(1, 4)
    } else if r < 92 {
        rng.range(5, 50)
    } else {
        let lo = (mid * 5 + 99) / 100; // ceil; mid > 0
        let hi = (mid * 10 + 99) / 100;
        rng.range(lo, hi).max(1)
    };
    let bid = (mid - spread / 2).max(1);
    q.bid_cents = bid;
    q.offer_cents = bid + spread;
}

/// Six ASCII characters from `[0-9A-Z]`.
fn order_id(rng: &mut Rng) -> [u8; 6] {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = [0u8; 6];
    let mut bits = rng.next_u64();
    for c in &mut id {
        *c = ALPHABET[(bits % 36) as usize];
        bits /= 36;
    }
    id
}

/// Reads the legal-symbols file: one symbol per line, right-justified to 4.
fn read_legal_symbols(path: &Path) -> Result<Vec<[u8; 4]>, GenError> {
    let mut out = Vec::new();
    for (i, rec) in InputReader::open(InputFormat::Lines, path)?.enumerate() {
        let rec = rec?;
        let mut line = rec.bytes;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let sym: [u8; 4] = line.as_slice().try_into().map_err(|_| {
            data_err(
                path,
                format!(
                    "line {} (byte offset {}) is not a 4-byte symbol",
                    i + 1,
                    rec.offset
                ),
            )
        })?;
        out.push(sym);
    }
    if out.is_empty() {
        return Err(data_err(path, "no symbols"));
    }
    Ok(out)
}

/// Deterministic transact-time clock.
struct Clock {
    day: i64,
    ms: u64,
}

impl Clock {
    fn new() -> Clock {
        let (y, m, d) = START_DAY;
        Clock {
            day: days_from_civil(y, m, d),
            ms: START_MS,
        }
    }

    fn advance_ms(&mut self, ms: u64) {
        self.ms += ms;
        while self.ms >= MS_PER_DAY {
            self.ms -= MS_PER_DAY;
            self.day += 1;
        }
    }

    /// `YYYYMMDD-HH:MM:SS.mmm`
    fn render(&self) -> [u8; TRANSACT_TIME_LEN] {
        let (y, m, d) = civil_from_days(self.day);
        let ms = self.ms;
        let s = format!(
            "{y:04}{m:02}{d:02}-{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
        let mut out = [b'0'; TRANSACT_TIME_LEN];
        let n = s.len().min(TRANSACT_TIME_LEN);
        out[..n].copy_from_slice(&s.as_bytes()[..n]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_and_rollover() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for day in [0i64, 17_046, 17_167, 20_000, 11_016] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        let mut c = Clock::new();
        assert_eq!(&c.render(), b"20160902-09:30:00.000");
        c.advance_ms(MS_PER_DAY * 29 + 1);
        assert_eq!(&c.render(), b"20161001-09:30:00.001");
    }

    #[test]
    fn rng_is_deterministic_and_below_is_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn from_messages_splits_half_and_half() {
        let c = GenConfig::from_messages(1, 1_000_000, PathBuf::new());
        assert_eq!(c.orders, 500_000);
        assert_eq!(c.nbbo_updates + INITIAL_NBBO_COUNT, 500_000);
        let small = GenConfig::from_messages(1, 100, PathBuf::new());
        assert_eq!(small.nbbo_updates, 0);
        assert_eq!(small.orders, 0);
    }
}
