//! market-spread: one decision per valid order. Which NBBO an order sees
//! depends on the interleaving of the two streams at the node (a
//! non-derivable input), so each decision is verified against the NBBO it
//! cites: the cited version must be a valid NBBO of the same symbol with the
//! same bid/offer, the decision must follow the rule for that bid/offer, and
//! per symbol the cited versions never go backwards in order-seq order.

use std::collections::HashMap;
use std::path::Path;

use super::exact::show_bytes;
use super::{CheckReport, Class, Received};
use crate::formats::{
    show_trace_id, split_trace_id, FormatError, InputFormat, InputReader, Nbbo, Order, DECISION_LEN,
};

/// Source channel of the order stream (the NBBO stream is channel 1).
pub(crate) const ORDER_CHANNEL: u64 = 2;

/// The rule, in f64 exactly as specified: (decision, reason).
pub(crate) fn decide(bid: f64, offer: f64) -> (u8, u8) {
    if offer - bid >= 0.05 {
        return (0, 2);
    }
    let mid = (bid + offer) / 2.0;
    if (offer - bid) / mid >= 0.05 {
        return (0, 3);
    }
    (1, 0)
}

fn show_symbol(s: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(s))
}

fn le_u64(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A decision payload, parsed by the oracle's own reading of the byte table.
struct Cited {
    order_seq: u64,
    version: u64,
    bid: f64,
    offer: f64,
    order_id: [u8; 6],
    symbol: [u8; 4],
    decision: u8,
    reason: u8,
    reserved: [u8; 4],
}

fn parse_decision(p: &[u8]) -> Option<Cited> {
    if p.len() != DECISION_LEN {
        return None;
    }
    let mut order_id = [0u8; 6];
    order_id.copy_from_slice(&p[32..38]);
    let mut symbol = [0u8; 4];
    symbol.copy_from_slice(&p[38..42]);
    let mut reserved = [0u8; 4];
    reserved.copy_from_slice(&p[44..48]);
    Some(Cited {
        order_seq: le_u64(p, 0),
        version: le_u64(p, 8),
        bid: f64::from_bits(le_u64(p, 16)),
        offer: f64::from_bits(le_u64(p, 24)),
        order_id,
        symbol,
        decision: p[42],
        reason: p[43],
        reserved,
    })
}

/// Why a decision is wrong, or `None` when it is a correct decision for
/// `order` (seq `seq`) given the NBBO it cites.
fn verify(c: &Cited, seq: u64, order: &Order, nbbos: &[Option<Nbbo>]) -> Option<String> {
    if c.order_seq != seq {
        return Some(format!(
            "order_seq field is {}, trace id says {seq}",
            c.order_seq
        ));
    }
    if c.order_id != order.order_id {
        return Some(format!(
            "order_id {} differs from the order's {}",
            show_bytes(&c.order_id),
            show_bytes(&order.order_id)
        ));
    }
    if c.symbol != order.symbol {
        return Some(format!(
            "symbol {} differs from the order's {}",
            show_symbol(&c.symbol),
            show_symbol(&order.symbol)
        ));
    }
    if c.reserved != [0; 4] {
        return Some(format!("reserved bytes {:?} are not zero", c.reserved));
    }
    if c.version == 0 {
        if c.bid.to_bits() != 0 || c.offer.to_bits() != 0 {
            return Some(format!(
                "cites no NBBO but bid/offer are {}/{} (must be 0.0/0.0)",
                c.bid, c.offer
            ));
        }
        if (c.decision, c.reason) != (0, 1) {
            return Some(format!(
                "cites no NBBO but decision/reason are {}/{} (must be 0/1)",
                c.decision, c.reason
            ));
        }
        return None;
    }
    let cited = usize::try_from(c.version - 1)
        .ok()
        .and_then(|i| nbbos.get(i))
        .copied()
        .flatten();
    let Some(nbbo) = cited else {
        return Some(format!(
            "cites NBBO version {}, which is not a valid record of the NBBO file",
            c.version
        ));
    };
    if nbbo.symbol != order.symbol {
        return Some(format!(
            "cites NBBO version {} of symbol {}, the order is for {}",
            c.version,
            show_symbol(&nbbo.symbol),
            show_symbol(&order.symbol)
        ));
    }
    if c.bid.to_bits() != nbbo.bid.to_bits() || c.offer.to_bits() != nbbo.offer.to_bits() {
        return Some(format!(
            "cites NBBO version {} with bid/offer {}/{}, that NBBO has {}/{}",
            c.version, c.bid, c.offer, nbbo.bid, nbbo.offer
        ));
    }
    let want = decide(nbbo.bid, nbbo.offer);
    if (c.decision, c.reason) != want {
        return Some(format!(
            "decision/reason {}/{} for bid/offer {}/{}, the rule gives {}/{}",
            c.decision, c.reason, nbbo.bid, nbbo.offer, want.0, want.1
        ));
    }
    None
}

pub(crate) fn check(
    nbbo_path: &Path,
    orders_path: &Path,
    received: &mut Received,
    report: &mut CheckReport,
) -> Result<(), FormatError> {
    let mut nbbos: Vec<Option<Nbbo>> = Vec::new();
    for rec in InputReader::open(InputFormat::Fixish, nbbo_path)? {
        nbbos.push(Nbbo::parse(&rec?.bytes));
    }
    let mut orders: Vec<Option<Order>> = Vec::new();
    for rec in InputReader::open(InputFormat::Fixish, orders_path)? {
        orders.push(Order::parse(&rec?.bytes));
    }
    report.expected = orders.iter().filter(|o| o.is_some()).count() as u64;

    let mut delivered = vec![false; orders.len()];
    // Per symbol, in arrival order: the previous order seq; and the
    // (order seq, cited version) of every correct decision.
    let mut last_seq_of: HashMap<[u8; 4], u64> = HashMap::new();
    let mut cited_of: HashMap<[u8; 4], Vec<(u64, u64)>> = HashMap::new();
    while let Some(r) = received.next(report)? {
        let (ch, seq) = split_trace_id(r.trace_id);
        let order = if ch == ORDER_CHANNEL && seq > 0 {
            usize::try_from(seq - 1)
                .ok()
                .and_then(|k| orders.get(k))
                .copied()
                .flatten()
        } else {
            None
        };
        let Some(order) = order else {
            report.problem(Class::Unexpected, || {
                format!(
                    "output channel {} seq {} at byte offset {}: trace id {} is not a valid order",
                    r.channel,
                    r.seq,
                    r.offset,
                    show_trace_id(r.trace_id)
                )
            });
            continue;
        };
        let k = (seq - 1) as usize;
        if delivered[k] {
            report.problem(Class::Duplicated, || {
                format!(
                    "output channel {} seq {}: decision for order seq {seq} (trace id {}) received again",
                    r.channel,
                    r.seq,
                    show_trace_id(r.trace_id)
                )
            });
            continue;
        }
        delivered[k] = true;
        let verdict = match parse_decision(&r.payload) {
            None => Err(format!(
                "payload of {} bytes, a decision has {DECISION_LEN}",
                r.payload.len()
            )),
            Some(c) => match verify(&c, seq, &order, &nbbos) {
                Some(why) => Err(why),
                None => Ok(c),
            },
        };
        match verdict {
            Err(why) => report.problem(Class::Wrong, || {
                format!(
                    "output channel {} seq {} (trace id {}), order seq {seq} symbol {}: {why}",
                    r.channel,
                    r.seq,
                    show_trace_id(r.trace_id),
                    show_symbol(&order.symbol)
                )
            }),
            Ok(c) => {
                report.ok += 1;
                if let Some(prev) = last_seq_of.insert(order.symbol, seq) {
                    if seq < prev {
                        report.problem(Class::Reordered, || {
                            format!(
                                "output channel {} seq {}: decision for order seq {seq} of symbol {} arrived after the one for order seq {prev}",
                                r.channel,
                                r.seq,
                                show_symbol(&order.symbol)
                            )
                        });
                    }
                }
                cited_of
                    .entry(order.symbol)
                    .or_default()
                    .push((seq, c.version));
            }
        }
    }
    // Cited versions per symbol, in order-seq order, never go backwards
    // (0 = "no NBBO yet" can only come before any version > 0).
    let mut symbols: Vec<&[u8; 4]> = cited_of.keys().collect();
    symbols.sort();
    for sym in symbols {
        let mut list = cited_of[sym].clone();
        list.sort_unstable();
        let mut max: Option<(u64, u64)> = None; // (version, order seq citing it)
        for (seq, v) in list {
            match max {
                Some((mv, mseq)) if v < mv => report.problem(Class::Reordered, || {
                    format!(
                        "symbol {}: order seq {seq} (trace id {}) cites NBBO version {v} after order seq {mseq} cited version {mv}",
                        show_symbol(sym),
                        show_trace_id(crate::formats::trace_id(ORDER_CHANNEL as u32, seq))
                    )
                }),
                Some((mv, _)) if v == mv => {}
                _ => max = Some((v, seq)),
            }
        }
    }
    for (k, order) in orders.iter().enumerate() {
        if let (Some(order), false) = (order, delivered[k]) {
            let seq = k as u64 + 1;
            report.problem(Class::Lost, || {
                format!(
                    "trace id {}: decision for order seq {seq} (order id {}, symbol {}) never received",
                    show_trace_id(crate::formats::trace_id(ORDER_CHANNEL as u32, seq)),
                    show_bytes(&order.order_id),
                    show_symbol(&order.symbol)
                )
            });
        }
    }
    Ok(())
}
