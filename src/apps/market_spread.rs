//! market spread: an NBBO stream and an order stream (Wallaroo's "fixish"
//! records, big-endian) feed one state per symbol. Each order is decided
//! against the latest NBBO the node processed for its symbol:
//!
//! 1. no NBBO yet → reject (reason 1);
//! 2. `offer - bid >= 0.05` → reject (reason 2);
//! 3. `(offer - bid) / mid >= 0.05`, `mid = (bid + offer) / 2` → reject (reason 3);
//! 4. otherwise accept (reason 0).
//!
//! Which NBBO an order sees depends on how the two streams interleaved at the
//! node — a non-derivable input the journal records — so every decision
//! carries the NBBO's version (its seq on the NBBO channel) and the bid and
//! offer it used, and `verity-check` verifies it against that NBBO.
//!
//! Decision record, 48 bytes, little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | order_seq (the order's seq on the orders channel) |
//! | 8  | 8 | nbbo_version (seq of the NBBO used on the NBBO channel; 0 = none) |
//! | 16 | 8 | bid, f64 (0.0 if none) |
//! | 24 | 8 | offer, f64 (0.0 if none) |
//! | 32 | 6 | order_id |
//! | 38 | 4 | symbol |
//! | 42 | 1 | decision: 1 accept, 0 reject |
//! | 43 | 1 | reason: 0 accepted, 1 no NBBO, 2 spread ≥ 0.05, 3 spread/mid ≥ 0.05 |
//! | 44 | 4 | reserved, zero |

use crate::app::{pipeline, Meta, Pipeline, Reject};
use crate::codec::{Codec, CodecError};

/// Source index (and channel − 1) of the NBBO stream.
pub const NBBO_SOURCE: usize = 0;
/// Source index (and channel − 1) of the order stream.
pub const ORDER_SOURCE: usize = 1;

pub const NBBO_LEN: usize = 42;
pub const ORDER_LEN: usize = 53;
pub const DECISION_LEN: usize = 48;
pub const MAX_SPREAD: f64 = 0.05;
pub const MAX_RELATIVE_SPREAD: f64 = 0.05;

pub type Symbol = [u8; 4];

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Msg {
    Nbbo {
        version: u64,
        symbol: Symbol,
        bid: f64,
        offer: f64,
    },
    Order {
        seq: u64,
        order_id: [u8; 6],
        symbol: Symbol,
    },
}

impl Msg {
    fn symbol(&self) -> Symbol {
        match self {
            Msg::Nbbo { symbol, .. } | Msg::Order { symbol, .. } => *symbol,
        }
    }
}

fn be_f64(b: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    f64::from_be_bytes(a)
}

/// NBBO: type 2, symbol[4], transact time[21], bid f64, offer f64.
pub fn decode_nbbo(meta: &Meta, b: &[u8]) -> Result<Msg, Reject> {
    if b.len() != NBBO_LEN {
        return Err(Reject("NBBO record is not 42 bytes"));
    }
    if b[0] != 2 {
        return Err(Reject("NBBO record type is not 2"));
    }
    let mut symbol = [0u8; 4];
    symbol.copy_from_slice(&b[1..5]);
    let bid = be_f64(&b[26..34]);
    let offer = be_f64(&b[34..42]);
    if !bid.is_finite() || !offer.is_finite() {
        return Err(Reject("NBBO price is not finite"));
    }
    Ok(Msg::Nbbo {
        version: meta.seq,
        symbol,
        bid,
        offer,
    })
}

/// Order: type 1, side, account u32, order_id[6], symbol[4], qty f64, price f64, time[21].
pub fn decode_order(meta: &Meta, b: &[u8]) -> Result<Msg, Reject> {
    if b.len() != ORDER_LEN {
        return Err(Reject("order record is not 53 bytes"));
    }
    if b[0] != 1 {
        return Err(Reject("order record type is not 1"));
    }
    let mut order_id = [0u8; 6];
    order_id.copy_from_slice(&b[6..12]);
    let mut symbol = [0u8; 4];
    symbol.copy_from_slice(&b[12..16]);
    Ok(Msg::Order {
        seq: meta.seq,
        order_id,
        symbol,
    })
}

/// Per symbol: the latest NBBO processed.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SymbolState {
    pub nbbo: Option<(u64, f64, f64)>,
}

impl Codec for SymbolState {
    fn encode(&self, out: &mut Vec<u8>) {
        self.nbbo.map(|(v, b, o)| (v, (b, o))).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = Option::<(u64, (f64, f64))>::decode(input)?;
        Ok(SymbolState {
            nbbo: n.map(|(v, (b, o))| (v, b, o)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub order_seq: u64,
    pub nbbo_version: u64,
    pub bid: f64,
    pub offer: f64,
    pub order_id: [u8; 6],
    pub symbol: Symbol,
    pub accept: bool,
    pub reason: u8,
}

/// The rule, on the NBBO the order saw.
pub fn decide(nbbo: Option<(f64, f64)>) -> (bool, u8) {
    let Some((bid, offer)) = nbbo else {
        return (false, 1);
    };
    let spread = offer - bid;
    if spread >= MAX_SPREAD {
        return (false, 2);
    }
    let mid = (bid + offer) / 2.0;
    if spread / mid >= MAX_RELATIVE_SPREAD {
        return (false, 3);
    }
    (true, 0)
}

fn step(msg: Msg, state: &mut SymbolState, emit: &mut dyn FnMut(Decision)) {
    match msg {
        Msg::Nbbo {
            version,
            bid,
            offer,
            ..
        } => state.nbbo = Some((version, bid, offer)),
        Msg::Order {
            seq,
            order_id,
            symbol,
        } => {
            let (accept, reason) = decide(state.nbbo.map(|(_, b, o)| (b, o)));
            let (nbbo_version, bid, offer) = state.nbbo.unwrap_or((0, 0.0, 0.0));
            emit(Decision {
                order_seq: seq,
                nbbo_version,
                bid,
                offer,
                order_id,
                symbol,
                accept,
                reason,
            });
        }
    }
}

pub fn encode_decision(d: &Decision, out: &mut Vec<u8>) {
    // Built on the stack and appended once (one capacity check, not nine).
    let mut r = [0u8; DECISION_LEN];
    r[0..8].copy_from_slice(&d.order_seq.to_le_bytes());
    r[8..16].copy_from_slice(&d.nbbo_version.to_le_bytes());
    r[16..24].copy_from_slice(&d.bid.to_bits().to_le_bytes());
    r[24..32].copy_from_slice(&d.offer.to_bits().to_le_bytes());
    r[32..38].copy_from_slice(&d.order_id);
    r[38..42].copy_from_slice(&d.symbol);
    r[42] = d.accept as u8;
    r[43] = d.reason;
    out.extend_from_slice(&r);
}

pub fn app() -> Pipeline<Msg, Symbol, SymbolState, Decision> {
    pipeline("market-spread")
        .source("nbbo", decode_nbbo)
        .source("orders", decode_order)
        .key_by(Msg::symbol)
        .to_state(step)
        .to_sink(encode_decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{App, Outputs};

    fn nbbo(symbol: &[u8; 4], bid: f64, offer: f64) -> Vec<u8> {
        let mut b = vec![2u8];
        b.extend_from_slice(symbol);
        b.extend_from_slice(b"20260101-09:30:00.000");
        b.extend_from_slice(&bid.to_be_bytes());
        b.extend_from_slice(&offer.to_be_bytes());
        b
    }

    fn order(symbol: &[u8; 4], id: &[u8; 6]) -> Vec<u8> {
        let mut b = vec![1u8, 1];
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(id);
        b.extend_from_slice(symbol);
        b.extend_from_slice(&100.0f64.to_be_bytes());
        b.extend_from_slice(&10.0f64.to_be_bytes());
        b.extend_from_slice(b"20260101-09:30:00.001");
        b
    }

    fn meta(source: usize, seq: u64) -> Meta {
        Meta {
            source,
            seq,
            trace_id: seq,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn decisions_follow_the_rule_and_cite_the_nbbo_used() {
        let mut app = app();
        let mut out = Outputs::default();
        let o = |app: &mut Pipeline<_, _, _, _>, out: &mut Outputs, seq, sym: &[u8; 4]| {
            app.process(&meta(ORDER_SOURCE, seq), &order(sym, b"ORD001"), out)
                .unwrap()
        };
        o(&mut app, &mut out, 1, b" IBM"); // no NBBO yet
        app.process(
            &meta(NBBO_SOURCE, 1),
            &nbbo(b" IBM", 100.00, 100.01),
            &mut out,
        )
        .unwrap();
        o(&mut app, &mut out, 2, b" IBM"); // tight: accept
        app.process(
            &meta(NBBO_SOURCE, 2),
            &nbbo(b" IBM", 100.00, 100.06),
            &mut out,
        )
        .unwrap();
        o(&mut app, &mut out, 3, b" IBM"); // absolute spread (100.05 - 100.00 is just under 0.05 in f64)
        app.process(&meta(NBBO_SOURCE, 3), &nbbo(b"PENY", 0.50, 0.54), &mut out)
            .unwrap();
        o(&mut app, &mut out, 4, b"PENY"); // relative spread: 0.04 / 0.52 ≥ 5%
        let d: Vec<&[u8]> = out.iter().collect();
        assert_eq!(d.len(), 4);
        assert!(d.iter().all(|r| r.len() == DECISION_LEN));
        let field = |r: &[u8], at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap());
        assert_eq!((d[0][42], d[0][43], field(d[0], 8)), (0, 1, 0));
        assert_eq!((d[1][42], d[1][43], field(d[1], 8)), (1, 0, 1));
        assert_eq!((d[2][42], d[2][43], field(d[2], 8)), (0, 2, 2));
        assert_eq!((d[3][42], d[3][43], field(d[3], 8)), (0, 3, 3));
        assert_eq!(field(d[3], 0), 4, "order seq");
        assert_eq!(&d[3][38..42], b"PENY");
        assert_eq!(f64::from_bits(field(d[1], 16)), 100.00);
    }

    #[test]
    fn bad_records_are_rejected_not_panicked_on() {
        let mut app = app();
        let mut out = Outputs::default();
        assert!(app.process(&meta(0, 1), b"", &mut out).is_err());
        assert!(app.process(&meta(1, 1), &[0u8; 53], &mut out).is_err());
        let mut n = nbbo(b"AAAA", f64::NAN, 1.0);
        assert_eq!(
            app.process(&meta(0, 1), &n, &mut out),
            Err(Reject("NBBO price is not finite"))
        );
        n.truncate(41);
        assert!(app.process(&meta(0, 1), &n, &mut out).is_err());
        assert!(out.is_empty());
        assert_eq!(app.key_count(), 0, "a rejected record leaves no state");
    }

    #[test]
    fn the_shared_reference_nbbo_file_decodes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tools/data/market-spread/350-symbols_initial-nbbo-fixish.msg"
        );
        let bytes = std::fs::read(path).unwrap();
        let mut app = app();
        let mut out = Outputs::default();
        let mut at = 0;
        let mut n = 0;
        while at + 4 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let rec = &bytes[at + 4..at + 4 + len];
            app.process(&meta(NBBO_SOURCE, n + 1), rec, &mut out)
                .unwrap();
            at += 4 + len;
            n += 1;
        }
        assert_eq!(n, 350);
        assert_eq!(app.key_count(), 350);
    }
}
