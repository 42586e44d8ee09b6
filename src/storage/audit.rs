//! The journal as an audit log (DESIGN §8): with `audit = true`, a SHA-256
//! hash chain over the journal's input records, so that changing, removing,
//! reordering or inserting a record is detectable (a CRC is not: anyone can
//! recompute it).
//!
//! The node hashes every input record it appends (position, kind, clock
//! reading, length, payload). At every snapshot (and at a clean stop) it
//! appends a **seal** record to the journal itself (record kind 4,
//! [`RecordKind::Seal`]):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8  | `first`: position of the first record the seal covers |
//! | 8  | 8  | `end`: position after the last record it covers |
//! | 16 | 8  | `records`: how many input records it covers |
//! | 24 | 32 | `prev`: the previous seal's `chain` (zeros for the first) |
//! | 56 | 32 | `chain`: SHA-256 of `"verity-audit-seal-v1"`, `prev`, `first`, `end`, `records` (u64 LE) and the SHA-256 of the covered records |
//!
//! A record's contribution to that inner SHA-256: position, kind,
//! timestamp and payload length (u64 LE each), then the payload.
//!
//! `verity-logdump` checks the chain of every journal it reads. Whoever can
//! rewrite the files can also recompute the chain: the node prints the
//! chain head (at most every 10 s, and at a clean stop) so it can be kept
//! elsewhere and compared later. Only the core's inputs are covered; the
//! seal records and the outbound logs are derived from them.

use sha2::{Digest, Sha256};

use crate::log::{LogError, OfflineReader};

use super::records::RecordKind;

/// Bytes of a seal record's payload.
pub const SEAL_BYTES: usize = 88;
const DOMAIN: &[u8] = b"verity-audit-seal-v1";

/// One seal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub first: u64,
    pub end: u64,
    pub records: u64,
    pub prev: [u8; 32],
    pub chain: [u8; 32],
}

impl Seal {
    pub fn encode(&self) -> [u8; SEAL_BYTES] {
        let mut b = [0u8; SEAL_BYTES];
        b[0..8].copy_from_slice(&self.first.to_le_bytes());
        b[8..16].copy_from_slice(&self.end.to_le_bytes());
        b[16..24].copy_from_slice(&self.records.to_le_bytes());
        b[24..56].copy_from_slice(&self.prev);
        b[56..88].copy_from_slice(&self.chain);
        b
    }

    pub fn decode(p: &[u8]) -> Option<Seal> {
        if p.len() != SEAL_BYTES {
            return None;
        }
        let u = |at: usize| {
            p.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let h = |at: usize| p.get(at..at + 32).and_then(|b| b.try_into().ok());
        Some(Seal {
            first: u(0)?,
            end: u(8)?,
            records: u(16)?,
            prev: h(24)?,
            chain: h(56)?,
        })
    }
}

/// `chain` of a seal from its fields and the SHA-256 of its records.
pub fn chain_of(prev: &[u8; 32], first: u64, end: u64, records: u64, inner: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(first.to_le_bytes());
    h.update(end.to_le_bytes());
    h.update(records.to_le_bytes());
    h.update(inner);
    h.finalize().into()
}

/// Hex of a chain value.
pub fn hex(h: &[u8; 32]) -> String {
    verity_wire::hex::hex(h)
}

/// The writer's side: records hashed since the last seal.
pub struct Audit {
    prev: [u8; 32],
    inner: Sha256,
    first: Option<u64>,
    end: u64,
    records: u64,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            prev: [0; 32],
            inner: Sha256::new(),
            first: None,
            end: 0,
            records: 0,
        }
    }
}

impl Audit {
    /// Adds an input record just appended at `position` (ending at `end`).
    pub fn add(&mut self, position: u64, end: u64, kind: u32, timestamp: u64, payload: &[u8]) {
        self.first.get_or_insert(position);
        self.end = end;
        self.records += 1;
        self.inner.update(position.to_le_bytes());
        self.inner.update(u64::from(kind).to_le_bytes());
        self.inner.update(timestamp.to_le_bytes());
        self.inner.update((payload.len() as u64).to_le_bytes());
        self.inner.update(payload);
    }

    /// Input records added since the last seal.
    pub fn pending(&self) -> u64 {
        self.records
    }

    /// The head of the chain: the last seal's `chain`.
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    /// The seal of the records added since the last one (`None`: none).
    pub fn seal(&mut self) -> Option<Seal> {
        let first = self.first?;
        let inner: [u8; 32] = std::mem::take(&mut self.inner).finalize().into();
        let chain = chain_of(&self.prev, first, self.end, self.records, &inner);
        let seal = Seal {
            first,
            end: self.end,
            records: self.records,
            prev: self.prev,
            chain,
        };
        *self = Audit {
            prev: chain,
            ..Audit::default()
        };
        Some(seal)
    }

    /// The state after a restart: the chain continues from the journal's
    /// last seal, with the input records after it hashed again.
    pub fn recover(journal: &crate::log::Log) -> Result<Audit, LogError> {
        let mut a = Audit::default();
        for rec in journal.reader_at(journal.first_position())? {
            let rec = rec?;
            match RecordKind::from_code(rec.kind) {
                Some(RecordKind::Seal) => {
                    if let Some(s) = Seal::decode(rec.payload) {
                        a = Audit {
                            prev: s.chain,
                            ..Audit::default()
                        };
                    }
                }
                Some(RecordKind::Input) => a.add(
                    rec.position,
                    rec.next_position(),
                    rec.kind,
                    rec.timestamp,
                    rec.payload,
                ),
                _ => {}
            }
        }
        Ok(a)
    }
}

/// What checking a journal's chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditCheck {
    /// Seals whose records were all present and matched.
    pub verified: u64,
    /// Seals whose first records were dropped with old segments: taken as
    /// they are (the chain is checked from them on).
    pub anchors: u64,
    /// Input records after the last seal (not covered yet).
    pub unsealed: u64,
    /// The last seal's chain.
    pub head: Option<[u8; 32]>,
    /// Where and why the chain breaks.
    pub broken: Option<(u64, String)>,
}

impl std::fmt::Display for AuditCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.broken {
            Some((p, why)) => write!(f, "audit chain BROKEN at position {p}: {why}"),
            None if self.verified + self.anchors == 0 => {
                write!(f, "audit: no seals ({} input records)", self.unsealed)
            }
            None => write!(
                f,
                "audit: {} seal(s) verified{}, head {}, {} input record(s) after the last seal",
                self.verified,
                if self.anchors > 0 {
                    " (the oldest retained seal covers records dropped with old segments: it is taken as the anchor, and the records before it are not verified)"
                } else {
                    ""
                },
                self.head.map(|h| hex(&h)).unwrap_or_default(),
                self.unsealed
            ),
        }
    }
}

/// Checks the chain of a journal read from its first retained record.
pub fn verify(mut reader: OfflineReader<'_>, first_position: u64) -> Result<AuditCheck, LogError> {
    let mut check = AuditCheck::default();
    let mut pending = Audit::default();
    let mut last: Option<Seal> = None;
    while let Some(r) = reader.next_record()? {
        match RecordKind::from_code(r.kind) {
            Some(RecordKind::Input) => {
                let end = r.position
                    + crate::log::format::align_up(
                        (crate::log::format::RECORD_HEADER_BYTES + r.payload.len()) as u64,
                    );
                pending.add(r.position, end, r.kind, r.timestamp, r.payload)
            }
            Some(RecordKind::Seal) => {
                let Some(s) = Seal::decode(r.payload) else {
                    check.broken = Some((r.position, "a seal record of the wrong size".into()));
                    return Ok(check);
                };
                let covered = std::mem::take(&mut pending);
                if let Some(l) = &last {
                    if s.prev != l.chain {
                        check.broken = Some((
                            r.position,
                            "the seal does not continue the previous one (a seal was removed or replaced)".into(),
                        ));
                        return Ok(check);
                    }
                }
                if last.is_none() && s.first < first_position {
                    // Its first records went with a dropped segment.
                    check.anchors += 1;
                } else {
                    let inner: [u8; 32] = covered.inner.finalize().into();
                    let first_ok = covered.first == Some(s.first) && covered.end == s.end;
                    if !first_ok
                        || covered.records != s.records
                        || chain_of(&s.prev, s.first, s.end, s.records, &inner) != s.chain
                    {
                        check.broken = Some((
                            r.position,
                            format!(
                                "the {} input record(s) before this seal do not hash to it (it covers {} from position {}): a record was changed, removed or inserted",
                                covered.records, s.records, s.first
                            ),
                        ));
                        return Ok(check);
                    }
                    check.verified += 1;
                }
                check.head = Some(s.chain);
                last = Some(s);
            }
            _ => {}
        }
    }
    check.unsealed = pending.records;
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Log, LogConfig, OfflineLog};

    const KIND_INPUT: u32 = RecordKind::Input.code();
    const KIND_SEAL: u32 = RecordKind::Seal.code();

    /// A journal of `n` input records with a seal every `every`.
    fn journal(dir: &std::path::Path, n: u32, every: u32) -> Vec<u64> {
        let (mut log, _) = Log::open(dir, "journal", LogConfig::default()).unwrap();
        let mut audit = Audit::default();
        let mut seals = Vec::new();
        for i in 1..=n {
            let payload = vec![i as u8; 64];
            let p = log.append(KIND_INPUT, i as u64, &payload).unwrap();
            audit.add(p, log.end_position(), KIND_INPUT, i as u64, &payload);
            if i % every == 0 {
                let s = audit.seal().unwrap();
                assert_eq!(Seal::decode(&s.encode()), Some(s));
                seals.push(log.append(KIND_SEAL, 0, &s.encode()).unwrap());
            }
        }
        seals
    }

    fn check(dir: &std::path::Path) -> AuditCheck {
        let log = OfflineLog::open(&dir.join("journal")).unwrap();
        verify(log.reader(0), 0).unwrap()
    }

    #[test]
    fn a_whole_chain_verifies_and_a_restart_continues_it() {
        let t = tempfile::tempdir().unwrap();
        journal(t.path(), 100, 10);
        let c = check(t.path());
        assert_eq!(
            (c.verified, c.unsealed, c.broken.clone()),
            (10, 0, None),
            "{c}"
        );
        // What a restarted node would continue from: the last seal's chain.
        let (log, _) = Log::open(t.path(), "journal", LogConfig::default()).unwrap();
        let a = Audit::recover(&log).unwrap();
        assert_eq!(Some(a.head()), c.head);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn a_removed_seal_breaks_the_chain_at_the_next_one() {
        let t = tempfile::tempdir().unwrap();
        let seals = journal(t.path(), 30, 10);
        // Rewrite the journal without the second seal (CRCs all valid).
        let dir = t.path().join("journal");
        let old = OfflineLog::open(&dir).unwrap();
        let mut recs = Vec::new();
        let mut r = old.reader(0);
        while let Some(rec) = r.next_record().unwrap() {
            if rec.position != seals[1] {
                recs.push((rec.kind, rec.timestamp, rec.payload.to_vec()));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let (mut log, _) = Log::open(t.path(), "journal", LogConfig::default()).unwrap();
        for (k, ts, p) in recs {
            log.append(k, ts, &p).unwrap();
        }
        drop(log);
        let c = check(t.path());
        assert!(c.broken.is_some(), "{c}");
        assert_eq!(c.verified, 1, "{c}");
    }
}
