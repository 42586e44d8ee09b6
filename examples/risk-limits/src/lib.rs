//! # Per-account risk limits: an app Verity does not ship
//!
//! Written against `verity` as a library, exactly as an outside crate would
//! write it: the pipeline API ([`verity::app`]), registered with
//! [`verity::registry::Registry`], run by the engine's own command line
//! (`src/main.rs`).
//!
//! One source, the order stream (market spread's order records). Orders are
//! keyed by **account**. Each account has an open notional per side (buy,
//! sell): the sum of quantity × price of the orders accepted on that side.
//! An order is rejected when it would push its side's open notional over
//! [`LIMIT`]; otherwise it is accepted and added. Every order yields a
//! [`Decision`] carrying the account's exposure on its side before and
//! after it.
//!
//! [`oracle`] computes, from the order records alone, the decisions the app
//! must produce, and checks a run's outputs against them.

pub mod oracle;

use verity::app::{pipeline, Meta, Pipeline, Reject};

/// The name the app is registered under (the `app` configuration key).
pub const NAME: &str = "risk-limits";

/// Open notional an account may hold on one side.
pub const LIMIT: f64 = 250_000_000.0;

/// An order record (`../shared/data/README.md`): 53 bytes, big-endian.
pub const ORDER_LEN: usize = 53;

/// A decision record: 48 bytes, little-endian (see [`encode`]).
pub const DECISION_LEN: usize = 48;

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

/// What the app reads of an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Order {
    /// Its seq on the order channel.
    pub seq: u64,
    pub account: u32,
    pub side: Side,
    pub order_id: [u8; 6],
    pub symbol: [u8; 4],
    /// Quantity × price.
    pub notional: f64,
}

/// What the app decides about one order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub order_seq: u64,
    pub account: u32,
    pub side: Side,
    pub accept: bool,
    pub order_id: [u8; 6],
    pub symbol: [u8; 4],
    pub notional: f64,
    /// The account's open notional on the order's side before the order...
    pub before: f64,
    /// ...and after it (equal to `before` when rejected).
    pub after: f64,
}

fn be_f64(b: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    f64::from_be_bytes(a)
}

/// Reads an order record: type 1, side (1 buy, 2 sell), account `u32`,
/// order id [6], symbol [4], quantity `f64`, price `f64`, transact time [21].
pub fn decode(meta: &Meta, b: &[u8]) -> Result<Order, Reject> {
    if b.len() != ORDER_LEN {
        return Err(Reject("order record is not 53 bytes"));
    }
    if b[0] != 1 {
        return Err(Reject("order record type is not 1"));
    }
    let side = match b[1] {
        1 => Side::Buy,
        2 => Side::Sell,
        _ => return Err(Reject("order side is not 1 (buy) or 2 (sell)")),
    };
    let account = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    let mut order_id = [0u8; 6];
    order_id.copy_from_slice(&b[6..12]);
    let mut symbol = [0u8; 4];
    symbol.copy_from_slice(&b[12..16]);
    let (quantity, price) = (be_f64(&b[16..24]), be_f64(&b[24..32]));
    let notional = quantity * price;
    if !(quantity >= 0.0 && price >= 0.0 && notional.is_finite()) {
        return Err(Reject("order quantity or price is negative or not finite"));
    }
    Ok(Order {
        seq: meta.seq,
        account,
        side,
        order_id,
        symbol,
        notional,
    })
}

/// The per-account step: `exposure` is (buy, sell) open notional.
pub fn decide(o: Order, exposure: &mut (f64, f64)) -> Decision {
    let open = match o.side {
        Side::Buy => &mut exposure.0,
        Side::Sell => &mut exposure.1,
    };
    let before = *open;
    let accept = before + o.notional <= LIMIT;
    if accept {
        *open = before + o.notional;
    }
    Decision {
        order_seq: o.seq,
        account: o.account,
        side: o.side,
        accept,
        order_id: o.order_id,
        symbol: o.symbol,
        notional: o.notional,
        before,
        after: *open,
    }
}

/// Writes a decision: order seq `u64`, account `u32`, side `u8` (1 buy, 2
/// sell), accept `u8`, order id [6], symbol [4], then notional, before and
/// after as `f64` bits; little-endian.
pub fn encode(d: &Decision, out: &mut Vec<u8>) {
    let mut r = [0u8; DECISION_LEN];
    r[0..8].copy_from_slice(&d.order_seq.to_le_bytes());
    r[8..12].copy_from_slice(&d.account.to_le_bytes());
    r[12] = match d.side {
        Side::Buy => 1,
        Side::Sell => 2,
    };
    r[13] = d.accept as u8;
    r[14..20].copy_from_slice(&d.order_id);
    r[20..24].copy_from_slice(&d.symbol);
    r[24..32].copy_from_slice(&d.notional.to_bits().to_le_bytes());
    r[32..40].copy_from_slice(&d.before.to_bits().to_le_bytes());
    r[40..48].copy_from_slice(&d.after.to_bits().to_le_bytes());
    out.extend_from_slice(&r);
}

/// Reads a decision record back ([`encode`]'s layout); `None`: not one.
pub fn decode_decision(b: &[u8]) -> Option<Decision> {
    if b.len() != DECISION_LEN {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let side = match b[12] {
        1 => Side::Buy,
        2 => Side::Sell,
        _ => return None,
    };
    let mut order_id = [0u8; 6];
    order_id.copy_from_slice(&b[14..20]);
    let mut symbol = [0u8; 4];
    symbol.copy_from_slice(&b[20..24]);
    Some(Decision {
        order_seq: u64_at(0),
        account: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        side,
        accept: b[13] == 1,
        order_id,
        symbol,
        notional: f64::from_bits(u64_at(24)),
        before: f64::from_bits(u64_at(32)),
        after: f64::from_bits(u64_at(40)),
    })
}

/// The app: orders → per-account decisions.
pub fn app() -> Pipeline<Order, u32, (f64, f64), Decision> {
    pipeline(NAME)
        .source("orders", decode)
        .key_by(|o: &Order| o.account)
        .to_state(
            |o: Order, exposure: &mut (f64, f64), emit: &mut dyn FnMut(Decision)| {
                emit(decide(o, exposure))
            },
        )
        .to_sink(encode)
}

/// An order record as [`decode`] reads it (for tests and generators).
pub fn order_record(side: Side, account: u32, id: [u8; 6], quantity: f64, price: f64) -> Vec<u8> {
    let mut b = vec![
        1u8,
        match side {
            Side::Buy => 1,
            Side::Sell => 2,
        },
    ];
    b.extend_from_slice(&account.to_be_bytes());
    b.extend_from_slice(&id);
    b.extend_from_slice(b"ACME");
    b.extend_from_slice(&quantity.to_be_bytes());
    b.extend_from_slice(&price.to_be_bytes());
    b.extend_from_slice(b"20261203-09:30:00.000");
    b
}

/// `n` orders over 10 accounts, drawn from `seed`, sized so that accounts
/// reach [`LIMIT`] (quantity 100..=50 000, price 10.00..=500.00).
pub fn generate_orders(seed: u64, n: u64) -> Vec<Vec<u8>> {
    let mut rng = verity::wire::rng::Rng::new(seed);
    (1..=n)
        .map(|i| {
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let account = rng.below(10) as u32;
            let mut order_id = [0u8; 6];
            order_id.copy_from_slice(format!("{:06}", i % 1_000_000).as_bytes());
            let quantity = rng.range(100, 50_000) as f64;
            let price = rng.range(1_000, 50_000) as f64 / 100.0;
            order_record(side, account, order_id, quantity, price)
        })
        .collect()
}

/// The app's input generator for `demo` and `sim`
/// ([`verity::registry::Registry::with_inputs`]): `messages` orders on its
/// one source, one decision each.
pub fn inputs(seed: u64, messages: u64) -> verity::registry::AppInputs {
    verity::registry::AppInputs {
        sources: vec![generate_orders(seed, messages)],
        expected_outputs: messages,
    }
}

/// [`oracle::check`] as the registry takes it
/// ([`verity::registry::Registry::with_oracle`]): judged on top of the
/// engine's generic oracle.
pub fn judge(inputs: &verity::registry::AppInputs, outputs: &[Vec<u8>]) -> Result<String, String> {
    let orders = inputs.sources.first().map_or(&[][..], |o| &o[..]);
    let report = oracle::check(orders, outputs.iter().map(Vec::as_slice));
    if report.passed() {
        Ok(report.to_string())
    } else {
        Err(report.to_string())
    }
}

/// Decisions as typed rows of `verity sink-postgres`
/// ([`verity::cli::main_with_rows`]); a payload that is not a decision is
/// refused, named by channel and seq.
pub struct Rows;

const ROW_COLUMNS: [verity::cli::rows::Column; 8] = {
    use verity::cli::rows::Column;
    [
        Column {
            name: "order_seq",
            sql_type: "bigint NOT NULL",
        },
        Column {
            name: "account",
            sql_type: "bigint NOT NULL",
        },
        Column {
            name: "side",
            sql_type: "text NOT NULL",
        },
        Column {
            name: "accept",
            sql_type: "boolean NOT NULL",
        },
        Column {
            name: "order_id",
            sql_type: "text NOT NULL",
        },
        Column {
            name: "notional",
            sql_type: "double precision NOT NULL",
        },
        Column {
            name: "exposure_before",
            sql_type: "double precision NOT NULL",
        },
        Column {
            name: "exposure_after",
            sql_type: "double precision NOT NULL",
        },
    ]
};

impl verity::cli::rows::Mapping for Rows {
    fn default_table(&self) -> &str {
        "risk_limit_decisions"
    }
    fn columns(&self) -> &[verity::cli::rows::Column] {
        &ROW_COLUMNS
    }
    fn values(
        &self,
        payload: &[u8],
        out: &mut Vec<verity::cli::rows::Value>,
    ) -> Result<(), String> {
        use verity::cli::rows::Value;
        let d = decode_decision(payload)
            .ok_or_else(|| format!("not a {DECISION_LEN}-byte risk-limits decision"))?;
        out.extend([
            Value::BigInt(d.order_seq as i64),
            Value::BigInt(d.account as i64),
            Value::Text(match d.side {
                Side::Buy => "buy".into(),
                Side::Sell => "sell".into(),
            }),
            Value::Bool(d.accept),
            Value::Text(String::from_utf8_lossy(&d.order_id).replace('\0', "\u{FFFD}")),
            Value::Double(d.notional),
            Value::Double(d.before),
            Value::Double(d.after),
        ]);
        Ok(())
    }
}

/// The row mappings of this crate's binary: the built-in ones and
/// risk-limits' [`Rows`].
pub fn rows() -> verity::cli::rows::Mappings {
    verity::cli::rows::Mappings::builtin().with(NAME, std::sync::Arc::new(Rows))
}

/// The registry of this crate's binary: the reference apps, and
/// risk-limits with its input generator and its own oracle.
pub fn registry() -> verity::registry::Registry {
    verity::registry::Registry::builtin()
        .with(NAME, app)
        .with_inputs(NAME, inputs)
        .with_oracle(NAME, judge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use verity::app::{App, Outputs};

    fn meta(seq: u64) -> Meta {
        Meta {
            source: 0,
            seq,
            trace_id: seq,
            timestamp_ns: 0,
        }
    }

    #[test]
    fn an_order_over_the_limit_is_rejected_and_leaves_the_exposure() {
        let mut a = app();
        let mut out = Outputs::default();
        let big = LIMIT / 1000.0;
        let orders = [
            order_record(Side::Buy, 7, *b"000001", 600.0, big), // 0.6 LIMIT
            order_record(Side::Buy, 7, *b"000002", 500.0, big), // would be 1.1
            order_record(Side::Sell, 7, *b"000003", 500.0, big), // other side
            order_record(Side::Buy, 8, *b"000004", 500.0, big), // other account
            order_record(Side::Buy, 7, *b"000005", 400.0, big), // exactly 1.0
        ];
        for (i, o) in orders.iter().enumerate() {
            a.process(&meta(i as u64 + 1), o, &mut out).unwrap();
        }
        let d: Vec<Decision> = out.iter().map(|b| decode_decision(b).unwrap()).collect();
        let verdicts: Vec<(bool, f64, f64)> = d
            .iter()
            .map(|d| (d.accept, d.before / big, d.after / big))
            .collect();
        assert_eq!(
            verdicts,
            [
                (true, 0.0, 600.0),
                (false, 600.0, 600.0),
                (true, 0.0, 500.0),
                (true, 0.0, 500.0),
                (true, 600.0, 1000.0),
            ]
        );
        assert_eq!(d[1].order_id, *b"000002");
        assert_eq!(d[4].order_seq, 5);
    }

    #[test]
    fn bad_records_are_rejected_not_panicked_on() {
        let mut a = app();
        let mut out = Outputs::default();
        let good = order_record(Side::Buy, 1, *b"000001", 1.0, 1.0);
        let mut bad_side = good.clone();
        bad_side[1] = 3;
        let negative = order_record(Side::Buy, 1, *b"000001", -1.0, 1.0);
        for b in [&good[..10], &bad_side[..], &negative[..], &[][..]] {
            assert!(a.process(&meta(1), b, &mut out).is_err());
        }
        assert_eq!(out.iter().count(), 0);
    }

    #[test]
    fn a_snapshot_restores_the_exposures() {
        let mut a = app();
        let mut out = Outputs::default();
        let o = order_record(Side::Sell, 3, *b"000001", 10.0, 10.0);
        a.process(&meta(1), &o, &mut out).unwrap();
        let mut snap = Vec::new();
        a.snapshot(&mut snap);
        let mut b = app();
        b.restore(&snap).unwrap();
        let mut out2 = Outputs::default();
        b.process(&meta(2), &o, &mut out2).unwrap();
        let d = decode_decision(out2.iter().next().unwrap()).unwrap();
        assert_eq!((d.before, d.after), (100.0, 200.0));
    }

    #[test]
    fn rows_give_each_decision_field_its_typed_column() {
        use verity::cli::rows::{Mapping, Value};
        let d = Decision {
            order_seq: 9,
            account: 4,
            side: Side::Sell,
            accept: false,
            order_id: *b"000009",
            symbol: *b"ACME",
            notional: 1.5e8,
            before: 2e8,
            after: 2e8,
        };
        let mut payload = Vec::new();
        encode(&d, &mut payload);
        let mut v = Vec::new();
        Rows.values(&payload, &mut v).unwrap();
        assert_eq!(
            v,
            vec![
                Value::BigInt(9),
                Value::BigInt(4),
                Value::Text("sell".into()),
                Value::Bool(false),
                Value::Text("000009".into()),
                Value::Double(1.5e8),
                Value::Double(2e8),
                Value::Double(2e8),
            ]
        );
        assert_eq!(v.len(), Rows.columns().len());
        let e = Rows.values(&payload[..47], &mut v).unwrap_err();
        assert!(e.contains("not a 48-byte risk-limits decision"), "{e}");
    }
}
