//! Rows: how an output record becomes a row of the sink's table, and how a
//! batch of rows is written (binary `COPY ... FROM STDIN`, or multi-row
//! `INSERT`).
//!
//! Every table starts with `(channel integer, seq bigint, trace_id bigint)`
//! and ends with `payload bytea` (the record's bytes as the node sent them:
//! `verity-check` reads the table back through the same oracle as a
//! received file). Between them go the columns of the app's [`Mapping`]:
//! none for [`Bytes`], typed decision columns for [`MarketSpread`], or a
//! user's own, registered with [`Mappings::with`].

use std::collections::BTreeMap;
use std::sync::Arc;

use postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// One column value. `u64`s (seq, trace id) are stored as `bigint` with the
/// same 64 bits.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    Double(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Null,
}

impl Value {
    /// Appends the field in `COPY ... (FORMAT binary)` form: its length
    /// (-1 for NULL), then its bytes in network order.
    fn copy_field(&self, out: &mut Vec<u8>) {
        fn field(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        match self {
            Value::SmallInt(v) => field(out, &v.to_be_bytes()),
            Value::Int(v) => field(out, &v.to_be_bytes()),
            Value::BigInt(v) => field(out, &v.to_be_bytes()),
            Value::Double(v) => field(out, &v.to_bits().to_be_bytes()),
            Value::Bool(v) => field(out, &[*v as u8]),
            Value::Text(v) => field(out, v.as_bytes()),
            Value::Bytes(v) => field(out, v),
            Value::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::SmallInt(v) => v.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::BigInt(v) => v.to_sql(ty, out),
            Value::Double(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Bytes(v) => v.to_sql(ty, out),
            Value::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // The server checks each parameter against its column's type.
        true
    }

    to_sql_checked!();
}

/// A column of a mapping: its name and SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub sql_type: &'static str,
}

/// How an app's output record becomes the typed columns of a row. Pure: a
/// function of the payload alone.
pub trait Mapping: Send + Sync {
    /// The table used when the config names none.
    fn default_table(&self) -> &str;
    /// The columns between `trace_id` and `payload`.
    fn columns(&self) -> &[Column];
    /// Appends one value per column for `payload`, or says why it cannot.
    fn values(&self, payload: &[u8], out: &mut Vec<Value>) -> Result<(), String>;
}

/// Any app: `(channel, seq, trace_id, payload)` and nothing else.
pub struct Bytes;

impl Mapping for Bytes {
    fn default_table(&self) -> &str {
        "verity_output"
    }
    fn columns(&self) -> &[Column] {
        &[]
    }
    fn values(&self, _payload: &[u8], _out: &mut Vec<Value>) -> Result<(), String> {
        Ok(())
    }
}

/// Market-spread decisions (48 bytes, the byte table in
/// `src/apps/market_spread.rs` and `tools/FORMATS.md`) in typed columns.
/// `account` is NULL: a decision does not carry the order's account.
pub struct MarketSpread;

/// Bytes of a market-spread decision.
pub const DECISION_LEN: usize = 48;

const MARKET_SPREAD_COLUMNS: [Column; 9] = [
    Column {
        name: "order_seq",
        sql_type: "bigint NOT NULL",
    },
    Column {
        name: "order_id",
        sql_type: "text NOT NULL",
    },
    Column {
        name: "symbol",
        sql_type: "text NOT NULL",
    },
    Column {
        name: "account",
        sql_type: "integer",
    },
    Column {
        name: "accept",
        sql_type: "boolean NOT NULL",
    },
    Column {
        name: "reason",
        sql_type: "smallint NOT NULL",
    },
    Column {
        name: "bid",
        sql_type: "double precision NOT NULL",
    },
    Column {
        name: "offer",
        sql_type: "double precision NOT NULL",
    },
    Column {
        name: "nbbo_version",
        sql_type: "bigint NOT NULL",
    },
];

/// Text of a fixed-width ASCII field (`text` holds no NUL byte: each NUL or
/// invalid byte becomes U+FFFD; the exact bytes stay in `payload`).
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "\u{FFFD}")
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Mapping for MarketSpread {
    fn default_table(&self) -> &str {
        "market_spread_decisions"
    }
    fn columns(&self) -> &[Column] {
        &MARKET_SPREAD_COLUMNS
    }
    fn values(&self, p: &[u8], out: &mut Vec<Value>) -> Result<(), String> {
        if p.len() != DECISION_LEN {
            return Err(format!(
                "a market-spread decision has {DECISION_LEN} bytes, this payload {}",
                p.len()
            ));
        }
        out.extend([
            Value::BigInt(le_u64(p, 0) as i64),
            Value::Text(text(&p[32..38])),
            Value::Text(text(&p[38..42])),
            Value::Null,
            Value::Bool(p[42] != 0),
            Value::SmallInt(p[43] as i16),
            Value::Double(f64::from_bits(le_u64(p, 16))),
            Value::Double(f64::from_bits(le_u64(p, 24))),
            Value::BigInt(le_u64(p, 8) as i64),
        ]);
        Ok(())
    }
}

/// Row mappings by app name; an app with none gets [`Bytes`].
#[derive(Clone)]
pub struct Mappings {
    by_app: BTreeMap<String, Arc<dyn Mapping>>,
}

impl Mappings {
    /// Market spread's typed columns; every other app as bytes.
    pub fn builtin() -> Mappings {
        let mut by_app: BTreeMap<String, Arc<dyn Mapping>> = BTreeMap::new();
        by_app.insert("market-spread".into(), Arc::new(MarketSpread));
        Mappings { by_app }
    }

    /// Adds (or replaces) the mapping of `app`.
    pub fn with(mut self, app: &str, mapping: Arc<dyn Mapping>) -> Mappings {
        self.by_app.insert(app.to_string(), mapping);
        self
    }

    pub fn get(&self, app: &str) -> Arc<dyn Mapping> {
        self.by_app
            .get(app)
            .cloned()
            .unwrap_or_else(|| Arc::new(Bytes))
    }
}

/// A table name as the config gives it: `name` or `schema.name`, each part
/// a lower-case SQL identifier (letters, digits, `_`; not starting with a
/// digit; at most 63 bytes). Shown quoted in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn parse(s: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.len() <= 63
                && !p.as_bytes()[0].is_ascii_digit()
                && p.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        };
        if parts.len() > 2 || !parts.iter().all(ok) {
            return Err(format!(
                "{s:?} is not a table name: `name` or `schema.name`, each of lower-case letters, digits and _ (not starting with a digit, at most 63 bytes)"
            ));
        }
        Ok(TableName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Quoted for SQL: `"schema"."name"`.
    pub fn sql(&self) -> String {
        self.0
            .split('.')
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl core::fmt::Display for TableName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a batch's rows go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// `COPY table FROM STDIN (FORMAT binary)`.
    #[default]
    Copy,
    /// Multi-row `INSERT ... VALUES (...), (...)` with bound parameters.
    Insert,
}

impl std::str::FromStr for WriteMode {
    type Err = String;
    fn from_str(s: &str) -> Result<WriteMode, String> {
        match s {
            "copy" => Ok(WriteMode::Copy),
            "insert" => Ok(WriteMode::Insert),
            other => Err(format!("unknown write mode {other:?} (copy or insert)")),
        }
    }
}

impl core::fmt::Display for WriteMode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WriteMode::Copy => "copy",
            WriteMode::Insert => "insert",
        })
    }
}

/// The SQL of one table and its mapping.
#[derive(Clone)]
pub struct Table {
    pub name: TableName,
    pub mapping: Arc<dyn Mapping>,
}

impl Table {
    /// Every column name in order.
    pub fn column_names(&self) -> Vec<&str> {
        let mut v = vec!["channel", "seq", "trace_id"];
        v.extend(self.mapping.columns().iter().map(|c| c.name));
        v.push("payload");
        v
    }

    pub fn create_sql(&self) -> String {
        let mut cols = vec![
            "channel integer NOT NULL".to_string(),
            "seq bigint NOT NULL".into(),
            "trace_id bigint NOT NULL".into(),
        ];
        cols.extend(
            self.mapping
                .columns()
                .iter()
                .map(|c| format!("\"{}\" {}", c.name, c.sql_type)),
        );
        cols.push("payload bytea NOT NULL".into());
        cols.push("PRIMARY KEY (channel, seq)".into());
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.name.sql(),
            cols.join(", ")
        )
    }

    fn quoted_columns(&self) -> String {
        self.column_names()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn copy_sql(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.name.sql(),
            self.quoted_columns()
        )
    }

    /// `INSERT` of `rows` rows with numbered parameters.
    pub fn insert_sql(&self, rows: usize) -> String {
        let n = self.column_names().len();
        let mut s = format!(
            "INSERT INTO {} ({}) VALUES ",
            self.name.sql(),
            self.quoted_columns()
        );
        for r in 0..rows {
            s.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..n {
                if c > 0 {
                    s.push_str(", ");
                }
                s.push_str(&format!("${}", r * n + c + 1));
            }
            s.push(')');
        }
        s
    }
}

/// Rows waiting for their transaction, as one app's values in column order.
#[derive(Default)]
pub struct Batch {
    values: Vec<Value>,
    rows: usize,
}

/// The most parameters one statement may bind (PostgreSQL's limit).
const MAX_PARAMS: usize = 65_535;

/// `COPY (FORMAT binary)` header: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl Batch {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn clear(&mut self) {
        self.values.clear();
        self.rows = 0;
    }

    /// Adds the row of one record; on a payload the mapping refuses, the
    /// batch is unchanged.
    pub fn push(
        &mut self,
        table: &Table,
        channel: u32,
        seq: u64,
        trace_id: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let at = self.values.len();
        self.values.extend([
            Value::Int(channel as i32),
            Value::BigInt(seq as i64),
            Value::BigInt(trace_id as i64),
        ]);
        if let Err(e) = table.mapping.values(payload, &mut self.values) {
            self.values.truncate(at);
            return Err(e);
        }
        self.values.push(Value::Bytes(payload.to_vec()));
        let want = table.mapping.columns().len() + 4;
        if self.values.len() - at != want {
            let got = self.values.len() - at - 4;
            self.values.truncate(at);
            return Err(format!(
                "the row mapping gave {got} values for {} columns",
                want - 4
            ));
        }
        self.rows += 1;
        Ok(())
    }

    /// The whole `COPY (FORMAT binary)` stream of the batch.
    pub fn copy_bytes(&self, table: &Table) -> Vec<u8> {
        let n = table.column_names().len();
        let mut out = Vec::with_capacity(COPY_HEADER.len() + self.values.len() * 16 + 2);
        out.extend_from_slice(COPY_HEADER);
        for row in self.values.chunks(n) {
            out.extend_from_slice(&(n as i16).to_be_bytes());
            for v in row {
                v.copy_field(&mut out);
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// Writes the rows inside `tx`.
    pub fn write(
        &self,
        tx: &mut postgres::Transaction<'_>,
        table: &Table,
        mode: WriteMode,
    ) -> Result<(), postgres::Error> {
        if self.rows == 0 {
            return Ok(());
        }
        match mode {
            WriteMode::Copy => {
                use std::io::Write;
                let mut w = tx.copy_in(&table.copy_sql())?;
                // An I/O error of the writer is the connection's: `finish`
                // reports it as a postgres error.
                let _ = w.write_all(&self.copy_bytes(table));
                w.finish()?;
            }
            WriteMode::Insert => {
                let n = table.column_names().len();
                let per = (MAX_PARAMS / n).max(1);
                let mut prepared: Option<(usize, postgres::Statement)> = None;
                for chunk in self.values.chunks(per * n) {
                    let rows = chunk.len() / n;
                    let stmt = match &prepared {
                        Some((r, s)) if *r == rows => s.clone(),
                        _ => {
                            let s = tx.prepare(&table.insert_sql(rows))?;
                            prepared = Some((rows, s.clone()));
                            s
                        }
                    };
                    let params: Vec<&(dyn ToSql + Sync)> =
                        chunk.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                    tx.execute(&stmt, &params)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Vec<u8> {
        let mut r = vec![0u8; DECISION_LEN];
        r[0..8].copy_from_slice(&7u64.to_le_bytes());
        r[8..16].copy_from_slice(&3u64.to_le_bytes());
        r[16..24].copy_from_slice(&100.25f64.to_bits().to_le_bytes());
        r[24..32].copy_from_slice(&100.5f64.to_bits().to_le_bytes());
        r[32..38].copy_from_slice(b"ORD001");
        r[38..42].copy_from_slice(b"AAPL");
        r[42] = 1;
        r[43] = 0;
        r
    }

    #[test]
    fn market_spread_columns_follow_the_decision_byte_table() {
        let mut v = Vec::new();
        MarketSpread.values(&decision(), &mut v).unwrap();
        assert_eq!(
            v,
            vec![
                Value::BigInt(7),
                Value::Text("ORD001".into()),
                Value::Text("AAPL".into()),
                Value::Null,
                Value::Bool(true),
                Value::SmallInt(0),
                Value::Double(100.25),
                Value::Double(100.5),
                Value::BigInt(3),
            ]
        );
        assert_eq!(v.len(), MarketSpread.columns().len());
        let e = MarketSpread.values(&[0; 47], &mut v).unwrap_err();
        assert!(e.contains("48 bytes, this payload 47"), "{e}");
    }

    #[test]
    fn a_nul_in_a_text_field_does_not_reach_postgres() {
        let mut d = decision();
        d[33] = 0;
        let mut v = Vec::new();
        MarketSpread.values(&d, &mut v).unwrap();
        assert_eq!(v[1], Value::Text("O\u{FFFD}D001".into()));
    }

    #[test]
    fn binary_copy_stream_has_header_fields_and_trailer() {
        let table = Table {
            name: TableName::parse("t").unwrap(),
            mapping: Arc::new(Bytes),
        };
        let mut b = Batch::default();
        b.push(&table, 1001, 5, 9, b"xy").unwrap();
        let s = b.copy_bytes(&table);
        assert_eq!(&s[..11], b"PGCOPY\n\xff\r\n\0");
        let mut want = COPY_HEADER.to_vec();
        want.extend_from_slice(&4i16.to_be_bytes());
        for f in [
            &1001i32.to_be_bytes()[..],
            &5i64.to_be_bytes()[..],
            &9i64.to_be_bytes()[..],
            b"xy",
        ] {
            want.extend_from_slice(&(f.len() as i32).to_be_bytes());
            want.extend_from_slice(f);
        }
        want.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(s, want);
    }

    #[test]
    fn a_refused_payload_leaves_the_batch_as_it_was() {
        let table = Table {
            name: TableName::parse("t").unwrap(),
            mapping: Arc::new(MarketSpread),
        };
        let mut b = Batch::default();
        b.push(&table, 1001, 1, 1, &decision()).unwrap();
        assert!(b.push(&table, 1001, 2, 2, b"short").is_err());
        assert_eq!(b.rows(), 1);
        assert_eq!(b.values.len(), 13);
    }

    #[test]
    fn table_names_are_checked_and_quoted() {
        assert_eq!(TableName::parse("a.b_1").unwrap().sql(), "\"a\".\"b_1\"");
        for bad in ["", "A", "1x", "a.b.c", "x;drop", "a\"b", &"x".repeat(64)] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
        let t = Table {
            name: TableName::parse("t").unwrap(),
            mapping: Arc::new(Bytes),
        };
        assert_eq!(
            t.insert_sql(2),
            "INSERT INTO \"t\" (\"channel\", \"seq\", \"trace_id\", \"payload\") VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)"
        );
    }
}
