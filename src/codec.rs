//! A small deterministic binary encoding for snapshots: little-endian integers,
//! length-prefixed strings and sequences. Decoding is bounds-checked and
//! returns [`CodecError`] on short or invalid input; it never panics.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl core::fmt::Display for CodecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for CodecError {}

pub trait Codec: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError>;
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError("input ends early"));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], CodecError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(input, N)?);
    Ok(a)
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
                Ok(<$t>::from_le_bytes(take_array(input)?))
            }
        }
    )*};
}
int_codec!(u8, u16, u32, u64, i64);

impl Codec for f64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(f64::from_bits(u64::from_le_bytes(take_array(input)?)))
    }
}

impl Codec for () {
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, CodecError> {
        Ok(())
    }
}

impl Codec for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError("bool is not 0 or 1")),
        }
    }
}

impl<const N: usize> Codec for [u8; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        take_array(input)
    }
}

/// Longest string or sequence a snapshot may hold (bounds a corrupt length).
pub const MAX_LEN: u64 = 1 << 30;

fn decode_len(input: &mut &[u8]) -> Result<usize, CodecError> {
    let n = u64::decode(input)?;
    if n > MAX_LEN || n > input.len() as u64 * 8 + 8 {
        return Err(CodecError("length prefix out of range"));
    }
    Ok(n as usize)
}

impl Codec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = decode_len(input)?;
        let bytes = take(input, n)?;
        core::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CodecError("string is not UTF-8"))
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        for x in self {
            x.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = decode_len(input)?;
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(T::decode(input)?);
        }
        Ok(v)
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                x.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1)?[0] {
            0 => Ok(None),
            1 => Ok(Some(T::decode(input)?)),
            _ => Err(CodecError("option tag is not 0 or 1")),
        }
    }
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
        self.1.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, CodecError> {
        Ok((A::decode(input)?, B::decode(input)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Codec + PartialEq + core::fmt::Debug>(v: T) {
        let mut buf = Vec::new();
        v.encode(&mut buf);
        let mut s = &buf[..];
        assert_eq!(T::decode(&mut s).unwrap(), v);
        assert!(s.is_empty());
        // Every strict prefix fails cleanly.
        for cut in 0..buf.len() {
            let mut s = &buf[..cut];
            let _ = T::decode(&mut s);
        }
    }

    #[test]
    fn values_round_trip_and_prefixes_never_panic() {
        round(7u64);
        round(-3i64);
        round(1.25f64);
        round(String::from("héllo"));
        round(vec![1u64, 2, 3]);
        round(Some((5u32, *b"ABCD")));
        round(Option::<u8>::None);
        round(true);
    }

    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_allocation() {
        let mut buf = Vec::new();
        u64::MAX.encode(&mut buf);
        let mut s = &buf[..];
        assert_eq!(
            String::decode(&mut s),
            Err(CodecError("length prefix out of range"))
        );
    }
}
