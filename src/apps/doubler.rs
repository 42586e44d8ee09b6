//! doubler: each big-endian u64 `n` becomes the big-endian u64 `n * 2` (wrapping).

use crate::app::{pipeline, Meta, Pipeline, Reject};

pub fn decode_u64(_: &Meta, bytes: &[u8]) -> Result<u64, Reject> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Reject("u64 record is not 8 bytes"))?;
    Ok(u64::from_be_bytes(b))
}

pub fn encode_u64(n: &u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&n.to_be_bytes());
}

pub fn app() -> Pipeline<u64, (), (), u64> {
    pipeline("doubler")
        .source("numbers", decode_u64)
        .key_by(|_| ())
        .to_state(|n: u64, _: &mut (), emit: &mut dyn FnMut(u64)| emit(n.wrapping_mul(2)))
        .to_sink(encode_u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{App, Outputs};

    #[test]
    fn doubles_and_rejects_short_records() {
        let mut app = app();
        let mut out = Outputs::default();
        let meta = Meta {
            source: 0,
            seq: 1,
            trace_id: 1,
            timestamp_ns: 0,
        };
        app.process(&meta, &21u64.to_be_bytes(), &mut out).unwrap();
        app.process(&meta, &u64::MAX.to_be_bytes(), &mut out)
            .unwrap();
        let got: Vec<&[u8]> = out.iter().collect();
        assert_eq!(got[0], 42u64.to_be_bytes());
        assert_eq!(got[1], u64::MAX.wrapping_mul(2).to_be_bytes());
        assert_eq!(
            app.process(&meta, b"short", &mut out),
            Err(Reject("u64 record is not 8 bytes"))
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn the_one_unit_key_snapshots_as_a_map_of_one_key() {
        let mut app = app();
        let mut empty = Vec::new();
        app.snapshot(&mut empty);
        assert_eq!(app.key_count(), 0);
        let meta = Meta {
            source: 0,
            seq: 1,
            trace_id: 1,
            timestamp_ns: 0,
        };
        let mut out = Outputs::default();
        app.process(&meta, &1u64.to_be_bytes(), &mut out).unwrap();
        assert_eq!(app.key_count(), 1);
        let mut snap = Vec::new();
        app.snapshot(&mut snap);
        // A key count of 1; `()` keys and states encode as nothing.
        let mut expected = Vec::new();
        crate::codec::Codec::encode(&1u64, &mut expected);
        assert_eq!(snap, expected);
        let mut restored = super::app();
        restored.restore(&snap).unwrap();
        assert_eq!(restored.key_count(), 1);
        restored.restore(&empty).unwrap();
        assert_eq!(restored.key_count(), 0);
    }
}
