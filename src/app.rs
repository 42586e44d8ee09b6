//! The application API: a pipeline of sources, stateless steps, a key, a
//! keyed state computation and a sink, in the spirit of Wallaroo's
//! `source(..).to(stateless).key_by(f).to(state_computation).to_sink(..)`.
//!
//! Several sources may feed one keyed state (market spread: NBBO and orders).
//! Every step is a plain function of its arguments: the engine calls them in
//! journal order, so a replay of the journal reproduces every output.
//!
//! ```
//! use verity::app::{pipeline, App, Meta, Outputs, Reject};
//!
//! // Running sum per key (value mod 3) of big-endian u64 records.
//! fn decode(_: &Meta, bytes: &[u8]) -> Result<u64, Reject> {
//!     let b: [u8; 8] = bytes.try_into().map_err(|_| Reject("not 8 bytes"))?;
//!     Ok(u64::from_be_bytes(b))
//! }
//! let mut app = pipeline("sums")
//!     .source("numbers", decode)
//!     .key_by(|n: &u64| n % 3)
//!     .to_state(|n: u64, sum: &mut u64, emit: &mut dyn FnMut(u64)| {
//!         *sum += n;
//!         emit(*sum);
//!     })
//!     .to_sink(|sum: &u64, out: &mut Vec<u8>| out.extend_from_slice(&sum.to_be_bytes()));
//!
//! let mut out = Outputs::default();
//! for (seq, n) in [(1, 3u64), (2, 6)] {
//!     let meta = Meta { source: 0, seq, trace_id: seq, timestamp_ns: 0 };
//!     app.process(&meta, &n.to_be_bytes(), &mut out).unwrap();
//! }
//! let sums: Vec<u64> = out.iter().map(|o| u64::from_be_bytes(o.try_into().unwrap())).collect();
//! assert_eq!(sums, [3, 9]);
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::codec::{Codec, CodecError};

/// What the engine knows about an input record besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Index of the source in the order the pipeline declared it.
    pub source: usize,
    /// The record's seq on its channel (1, 2, 3, …).
    pub seq: u64,
    pub trace_id: u64,
    /// Clock reading when the node accepted the record (from the journal).
    pub timestamp_ns: u64,
}

/// A record an application cannot use (bad bytes): it goes to the dead-letter
/// log with its trace id and this reason; it is never dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject(pub &'static str);

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

/// Output payloads produced by one `process` call, in order, in one reused buffer.
#[derive(Debug, Default)]
pub struct Outputs {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Outputs {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    /// Appends one output written by `write`.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.bytes[start..end];
            start = end;
            s
        })
    }
}

/// What the engine drives: one deterministic state machine per node.
pub trait App: Send {
    fn name(&self) -> &str;
    /// Source names, in order; source `i` arrives on input channel `i + 1`.
    fn sources(&self) -> &[&'static str];
    /// Processes one input record, appending zero or more output payloads.
    /// `Err` means the record is not valid input for this app (dead letter);
    /// the state is then unchanged.
    fn process(&mut self, meta: &Meta, payload: &[u8], out: &mut Outputs) -> Result<(), Reject> {
        self.process_owned(meta, payload, None, out)
    }
    /// Like [`App::process`], but on a node of a cluster: with `owns`, the
    /// state computation runs only for messages whose key hash `owns`
    /// accepts (the keys this node owns); the other messages are another
    /// node's to process.
    fn process_owned(
        &mut self,
        meta: &Meta,
        payload: &[u8],
        owns: Option<&dyn Fn(u64) -> bool>,
        out: &mut Outputs,
    ) -> Result<(), Reject>;
    /// Routing: appends the key hash (FNV-1a 64 of the key's [`Codec`]
    /// encoding, see `routing`) of every message the record turns
    /// into after the stateless steps. `Err` as for [`App::process`].
    fn key_hashes(
        &mut self,
        meta: &Meta,
        payload: &[u8],
        hashes: &mut Vec<u64>,
    ) -> Result<(), Reject>;
    /// Serialises the whole state, deterministically (same state, same bytes).
    fn snapshot(&self, out: &mut Vec<u8>);
    /// Replaces the state with one from [`App::snapshot`].
    fn restore(&mut self, bytes: &[u8]) -> Result<(), CodecError>;
    /// Number of keys holding state (for reports).
    fn key_count(&self) -> usize;
}

/// Keys of keyed state: hashable for lookup, ordered for deterministic
/// snapshots, and encodable.
pub trait StateKey: Hash + Eq + Ord + Clone + Codec + Send + 'static {}
impl<T: Hash + Eq + Ord + Clone + Codec + Send + 'static> StateKey for T {}

/// Per-key state: starts as `Default`, encodable for snapshots.
pub trait State: Default + Codec + Send + 'static {}
impl<T: Default + Codec + Send + 'static> State for T {}

type Decode<M> = fn(&Meta, &[u8]) -> Result<M, Reject>;
type Step<M> = fn(M, &mut dyn FnMut(M));

/// Starts a pipeline named `name`.
pub fn pipeline<M>(name: &'static str) -> Sources<M> {
    Sources {
        name,
        sources: Vec::new(),
        steps: Vec::new(),
    }
}

/// Sources and stateless steps, before the key.
pub struct Sources<M> {
    name: &'static str,
    sources: Vec<(&'static str, Decode<M>)>,
    steps: Vec<Step<M>>,
}

impl<M: 'static> Sources<M> {
    /// Adds a source whose records `decode` turns into messages.
    pub fn source(mut self, name: &'static str, decode: Decode<M>) -> Self {
        self.sources.push((name, decode));
        self
    }
    /// A stateless step: each message becomes zero or more messages.
    pub fn to(mut self, step: Step<M>) -> Self {
        self.steps.push(step);
        self
    }
    /// Partitions messages by key; the state computation runs per key.
    pub fn key_by<K: StateKey>(self, key: fn(&M) -> K) -> Keyed<M, K> {
        Keyed { s: self, key }
    }
}

pub struct Keyed<M, K> {
    s: Sources<M>,
    key: fn(&M) -> K,
}

impl<M: 'static, K: StateKey> Keyed<M, K> {
    /// The state computation: gets the message and its key's state, emits outputs.
    pub fn to_state<S: State, O: 'static>(
        self,
        f: fn(M, &mut S, &mut dyn FnMut(O)),
    ) -> Stateful<M, K, S, O> {
        Stateful { k: self, f }
    }
}

pub struct Stateful<M, K, S, O> {
    k: Keyed<M, K>,
    f: fn(M, &mut S, &mut dyn FnMut(O)),
}

impl<M: 'static, K: StateKey, S: State, O: 'static> Stateful<M, K, S, O> {
    /// The sink encoder: writes one output's payload bytes.
    pub fn to_sink(self, encode: fn(&O, &mut Vec<u8>)) -> Pipeline<M, K, S, O> {
        let names = self.k.s.sources.iter().map(|(n, _)| *n).collect();
        Pipeline {
            name: self.k.s.name,
            names,
            sources: self.k.s.sources,
            steps: self.k.s.steps,
            key: self.k.key,
            f: self.f,
            encode,
            states: HashMap::default(),
            unit: None,
            scratch: (Vec::new(), Vec::new()),
            key_buf: Vec::new(),
        }
    }
}

/// The hasher of the keyed-state map: fixed (no per-process random seed),
/// so the engine behaves the same in every run; keys are not
/// attacker-chosen hash-flood input here beyond what a bounded key space
/// allows. Word at a time (FxHash's rotate-xor-multiply, one step per 8
/// bytes and one per integer), then a multiply-xorshift finish so the low
/// bits the map indexes with depend on every input bit. Byte-at-a-time
/// FNV-1a was ~10% of market spread's time: a `[u8; 4]` symbol hashes as a
/// length (8 bytes) and 4 bytes, 12 dependent multiplies. Only the map
/// uses it: routing hashes keys with `routing::fnv1a64`, and snapshots sort
/// keys, so neither depends on it.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl KeyHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0 ^ (self.0 >> 32);
        let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// A built pipeline: implements [`App`].
pub struct Pipeline<M, K, S, O> {
    name: &'static str,
    names: Vec<&'static str>,
    sources: Vec<(&'static str, Decode<M>)>,
    steps: Vec<Step<M>>,
    key: fn(&M) -> K,
    f: fn(M, &mut S, &mut dyn FnMut(O)),
    encode: fn(&O, &mut Vec<u8>),
    states: HashMap<K, S, BuildHasherDefault<KeyHasher>>,
    /// The one key and its state when `K` is zero-sized (e.g. `()`: one
    /// state for every message, as the doubler has), instead of a map
    /// lookup per message; `states` then stays empty.
    unit: Option<(K, S)>,
    /// Reused between calls: messages between stateless steps.
    scratch: (Vec<M>, Vec<M>),
    /// Reused between calls: a key's encoding, for its hash.
    key_buf: Vec<u8>,
}

impl<M: Send + 'static, K: StateKey, S: State, O: 'static> Pipeline<M, K, S, O> {
    /// Every key is the same value: state lives in `unit`, not `states`.
    const UNIT_KEY: bool = std::mem::size_of::<K>() == 0;

    fn key_hash(&mut self, msg: &M) -> u64 {
        let key = (self.key)(msg);
        self.key_buf.clear();
        key.encode(&mut self.key_buf);
        crate::routing::fnv1a64(&self.key_buf)
    }

    #[inline(always)]
    fn run_state(&mut self, msg: M, owns: Option<&dyn Fn(u64) -> bool>, out: &mut Outputs) {
        if let Some(owns) = owns {
            let h = self.key_hash(&msg);
            if !owns(h) {
                return;
            }
        }
        let key = (self.key)(&msg);
        let state = if Self::UNIT_KEY {
            &mut self.unit.get_or_insert_with(|| (key, S::default())).1
        } else {
            self.states.entry(key).or_default()
        };
        let encode = self.encode;
        (self.f)(msg, state, &mut |o: O| out.push_with(|buf| encode(&o, buf)));
    }

    /// [`App::process_owned`]'s body, inlined into both entry points.
    #[inline(always)]
    fn run(
        &mut self,
        meta: &Meta,
        payload: &[u8],
        owns: Option<&dyn Fn(u64) -> bool>,
        out: &mut Outputs,
    ) -> Result<(), Reject> {
        if self.steps.is_empty() {
            let msg = self.decode(meta, payload)?;
            self.run_state(msg, owns, out);
            return Ok(());
        }
        self.messages(meta, payload)?;
        let mut msgs = std::mem::take(&mut self.scratch.0);
        for m in msgs.drain(..) {
            self.run_state(m, owns, out);
        }
        self.scratch.0 = msgs;
        Ok(())
    }

    /// The record as a message, by its source's decoder.
    #[inline(always)]
    fn decode(&self, meta: &Meta, payload: &[u8]) -> Result<M, Reject> {
        let Some(&(_, decode)) = self.sources.get(meta.source) else {
            return Err(Reject("record from an unknown source"));
        };
        decode(meta, payload)
    }

    /// Decodes the record and runs the stateless steps; the messages that
    /// reach the key are left in `self.scratch.0`.
    fn messages(&mut self, meta: &Meta, payload: &[u8]) -> Result<(), Reject> {
        let msg = self.decode(meta, payload)?;
        // Stateless steps fan out through two reused buffers.
        let (mut msgs, mut next) = std::mem::take(&mut self.scratch);
        msgs.clear();
        msgs.push(msg);
        for i in 0..self.steps.len() {
            let step = self.steps[i];
            next.clear();
            for m in msgs.drain(..) {
                step(m, &mut |o| next.push(o));
            }
            std::mem::swap(&mut msgs, &mut next);
        }
        self.scratch = (msgs, next);
        Ok(())
    }
}

impl<M: Send + 'static, K: StateKey, S: State, O: 'static> App for Pipeline<M, K, S, O> {
    fn name(&self) -> &str {
        self.name
    }

    fn sources(&self) -> &[&'static str] {
        &self.names
    }

    fn process(&mut self, meta: &Meta, payload: &[u8], out: &mut Outputs) -> Result<(), Reject> {
        // Its own copy of the body with `owns` known to be `None`: a
        // single node's path, without the ownership test or a second call.
        self.run(meta, payload, None, out)
    }

    fn process_owned(
        &mut self,
        meta: &Meta,
        payload: &[u8],
        owns: Option<&dyn Fn(u64) -> bool>,
        out: &mut Outputs,
    ) -> Result<(), Reject> {
        self.run(meta, payload, owns, out)
    }

    fn key_hashes(
        &mut self,
        meta: &Meta,
        payload: &[u8],
        hashes: &mut Vec<u64>,
    ) -> Result<(), Reject> {
        self.messages(meta, payload)?;
        let msgs = std::mem::take(&mut self.scratch.0);
        for m in &msgs {
            let h = self.key_hash(m);
            hashes.push(h);
        }
        self.scratch.0 = msgs;
        Ok(())
    }

    fn snapshot(&self, out: &mut Vec<u8>) {
        let mut keys: Vec<&K> = self
            .states
            .keys()
            .chain(self.unit.iter().map(|(k, _)| k))
            .collect();
        keys.sort();
        (keys.len() as u64).encode(out);
        for k in keys {
            k.encode(out);
            if let Some(s) = self.states.get(k).or(self.unit.as_ref().map(|(_, s)| s)) {
                s.encode(out);
            }
        }
    }

    fn restore(&mut self, mut bytes: &[u8]) -> Result<(), CodecError> {
        let n = u64::decode(&mut bytes)?;
        let mut states = HashMap::default();
        let mut unit = None;
        for _ in 0..n {
            let k = K::decode(&mut bytes)?;
            let s = S::decode(&mut bytes)?;
            if Self::UNIT_KEY {
                unit = Some((k, s));
            } else {
                states.insert(k, s);
            }
        }
        if !bytes.is_empty() {
            return Err(CodecError("trailing bytes after the last key"));
        }
        self.states = states;
        self.unit = unit;
        Ok(())
    }

    fn key_count(&self) -> usize {
        self.states.len() + usize::from(self.unit.is_some())
    }
}
