//! The risk-limits app's own oracle: from the order records alone (record
//! `i` has seq `i + 1`), the decision every order must get, computed
//! sequentially per account without the engine; then a run's outputs, in
//! the order the sink received them, are checked against it: every order
//! decided exactly once, each decision the expected one bit for bit, and
//! per account in order.

use std::collections::BTreeMap;

use verity::app::Meta;

use crate::{decide, decode, decode_decision, Decision};

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Orders with a decision expected (valid records).
    pub expected: u64,
    /// Decisions received.
    pub received: u64,
    /// Of those, accepts.
    pub accepted: u64,
    /// The first problems found (empty: PASS).
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.expected == self.received
    }
}

impl core::fmt::Display for Report {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        write!(
            f,
            "check: {verdict} app={} expected={} received={} accepted={}",
            crate::NAME,
            self.expected,
            self.received,
            self.accepted
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The decision of every valid order record, by order seq.
pub fn expected(orders: &[Vec<u8>]) -> BTreeMap<u64, Decision> {
    let mut exposure: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (i, rec) in orders.iter().enumerate() {
        let seq = i as u64 + 1;
        let meta = Meta {
            source: 0,
            seq,
            trace_id: 0,
            timestamp_ns: 0,
        };
        if let Ok(o) = decode(&meta, rec) {
            let d = decide(o, exposure.entry(o.account).or_default());
            out.insert(seq, d);
        }
    }
    out
}

fn same(a: &Decision, b: &Decision) -> bool {
    a.order_seq == b.order_seq
        && a.account == b.account
        && a.side == b.side
        && a.accept == b.accept
        && a.order_id == b.order_id
        && a.symbol == b.symbol
        && a.notional.to_bits() == b.notional.to_bits()
        && a.before.to_bits() == b.before.to_bits()
        && a.after.to_bits() == b.after.to_bits()
}

/// Checks `outputs` (decision payloads in the order the sink received
/// them) against what `orders` must produce.
pub fn check<'a>(orders: &[Vec<u8>], outputs: impl IntoIterator<Item = &'a [u8]>) -> Report {
    let want = expected(orders);
    let mut r = Report {
        expected: want.len() as u64,
        ..Report::default()
    };
    let mut seen: BTreeMap<u64, ()> = BTreeMap::new();
    let mut last_of_account: BTreeMap<u32, u64> = BTreeMap::new();
    let problem = |r: &mut Report, p: String| {
        if r.problems.len() < 10 {
            r.problems.push(p);
        }
    };
    for payload in outputs {
        r.received += 1;
        let Some(d) = decode_decision(payload) else {
            let text = format!("output {} is not a decision record", r.received);
            problem(&mut r, text);
            continue;
        };
        if d.accept {
            r.accepted += 1;
        }
        if seen.insert(d.order_seq, ()).is_some() {
            problem(&mut r, format!("order {} decided twice", d.order_seq));
            continue;
        }
        match want.get(&d.order_seq) {
            None => problem(
                &mut r,
                format!("order {} has no decision to make", d.order_seq),
            ),
            Some(w) if !same(w, &d) => problem(
                &mut r,
                format!("order {}: got {d:?}, expected {w:?}", d.order_seq),
            ),
            Some(_) => {}
        }
        let last = last_of_account.entry(d.account).or_insert(0);
        if d.order_seq < *last {
            problem(
                &mut r,
                format!(
                    "account {}: order {} decided after order {}",
                    d.account, d.order_seq, *last
                ),
            );
        }
        *last = (*last).max(d.order_seq);
    }
    for seq in want.keys() {
        if !seen.contains_key(seq) {
            problem(&mut r, format!("order {seq} never decided"));
            break;
        }
    }
    r
}
