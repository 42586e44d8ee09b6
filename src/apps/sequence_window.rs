//! sequence window: u64 values keyed by `value mod 2`; the state is the last 4
//! values of the key; each input emits the window (4 big-endian u64, oldest
//! first, 0 where not yet filled). Lost, duplicated or reordered input shows
//! up as a window that is not an arithmetic run.

use crate::app::{pipeline, Pipeline};
use crate::codec::{Codec, CodecError};

pub const KEYS: u64 = 2;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Window(pub [u64; 4]);

impl Codec for Window {
    fn encode(&self, out: &mut Vec<u8>) {
        for v in self.0 {
            v.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let mut w = [0u64; 4];
        for v in w.iter_mut() {
            *v = u64::decode(input)?;
        }
        Ok(Window(w))
    }
}

fn encode(w: &Window, out: &mut Vec<u8>) {
    for v in w.0 {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn app() -> Pipeline<u64, u64, Window, Window> {
    pipeline("sequence-window")
        .source("values", super::doubler::decode_u64)
        .key_by(|v: &u64| v % KEYS)
        .to_state(|v: u64, w: &mut Window, emit: &mut dyn FnMut(Window)| {
            w.0.rotate_left(1);
            w.0[3] = v;
            emit(*w);
        })
        .to_sink(encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{App, Meta, Outputs};

    #[test]
    fn windows_per_key_slide_over_the_last_four_values() {
        let mut app = app();
        let mut out = Outputs::default();
        for v in 1..=9u64 {
            let meta = Meta {
                source: 0,
                seq: v,
                trace_id: v,
                timestamp_ns: 0,
            };
            app.process(&meta, &v.to_be_bytes(), &mut out).unwrap();
        }
        let windows: Vec<[u64; 4]> = out
            .iter()
            .map(|o| {
                let mut w = [0u64; 4];
                for (i, c) in o.chunks(8).enumerate() {
                    w[i] = u64::from_be_bytes(c.try_into().unwrap());
                }
                w
            })
            .collect();
        assert_eq!(windows[0], [0, 0, 0, 1]);
        assert_eq!(windows[2], [0, 0, 1, 3]);
        assert_eq!(windows[8], [3, 5, 7, 9]);
        assert_eq!(windows[7], [2, 4, 6, 8]);
        // Snapshot and restore give the same state.
        let mut snap = Vec::new();
        app.snapshot(&mut snap);
        let mut other = super::app();
        other.restore(&snap).unwrap();
        let mut again = Vec::new();
        other.snapshot(&mut again);
        assert_eq!(snap, again);
        assert_eq!(other.key_count(), 2);
    }
}
