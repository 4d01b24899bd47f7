//! Every call into bincode lives here. bincode 2.0.1 is its last release and is flagged
//! unmaintained (RUSTSEC-2025-0141): when it is replaced, a new codec id gets a sibling
//! module and this one stays to read what was stored with it.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> Configuration {
    bincode::config::standard()
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

/// Bytes bincode may claim per payload byte: each value it reads claims its in-memory
/// size, at most 16 bytes (a `u128`) for as little as one varint byte.
const CLAIM_PER_BYTE: usize = 16;

/// Decodes a whole payload as `T`.
///
/// bincode allocates a string or byte buffer at the length its prefix states before it
/// reads the bytes, so a damaged prefix would ask for any amount of memory (a capacity
/// overflow panic, or an abort when the allocation fails). A limit makes it check each
/// claim first: [`CLAIM_PER_BYTE`] times the payload's length admits every payload
/// bincode wrote and bounds what a damaged one can allocate. bincode's limit is a type
/// parameter, so the payload's size picks the next power of two from a ladder.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let bound = bytes.len().saturating_mul(CLAIM_PER_BYTE).max(1024).checked_next_power_of_two();
    let bits = bound.map_or(usize::BITS, usize::trailing_zeros);
    macro_rules! ladder {
        ($($bits:literal)*) => {
            match bits {
                $($bits => decode_limited::<T, { 1usize << $bits }>(bytes),)*
                _ => decode_limited::<T, { usize::MAX }>(bytes),
            }
        };
    }
    ladder!(10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48)
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, String> {
    let config: Configuration<LittleEndian, Varint, Limit<LIMIT>> = config().with_limit::<LIMIT>();
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(bytes, config).map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => {
            "a length in the payload is larger than the payload itself: it is damaged or holds another type".to_owned()
        }
        e => e.to_string(),
    })?;
    if read != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value: the payload holds a different type or is damaged",
            bytes.len() - read
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_length_is_an_error_not_an_allocation() {
        // A string whose length prefix says 2^64 - 1 bytes (varint 0xFD + u64), then 1 byte.
        let mut payload = vec![0xfd];
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        payload.push(b'x');
        let e = decode::<String>(&payload).unwrap_err();
        assert!(e.contains("larger than the payload"), "{e}");
        // 2^40 bytes: would be a terabyte-sized allocation.
        let mut payload = vec![0xfd];
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<Vec<u8>>(&payload).is_err());
        assert!(decode::<serde_bytes_like::Buf>(&payload).is_err());
    }

    #[test]
    fn payloads_that_claim_the_most_per_byte_still_decode() {
        // u128 zeros: one byte each on the wire, 16 bytes each as claimed.
        let v = vec![0u128; 10_000];
        assert_eq!(decode::<Vec<u128>>(&encode(&v).unwrap()).unwrap(), v);
        let v: Vec<(u128, Option<()>, String)> = (0..1000).map(|i| (i, None, String::new())).collect();
        assert_eq!(decode::<Vec<(u128, Option<()>, String)>>(&encode(&v).unwrap()).unwrap(), v);
        let big = "x".repeat(3 << 20);
        assert_eq!(decode::<String>(&encode(&big).unwrap()).unwrap(), big);
        assert_eq!(decode::<u128>(&encode(&u128::MAX).unwrap()).unwrap(), u128::MAX);
        assert_eq!(decode::<()>(&encode(&()).unwrap()).unwrap(), ());
    }

    /// A byte buffer deserialized through `deserialize_byte_buf`, as `serde_bytes` does.
    mod serde_bytes_like {
        #[derive(Debug)]
        pub struct Buf(#[allow(dead_code)] pub Vec<u8>);

        impl<'de> serde::Deserialize<'de> for Buf {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Buf;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Buf, E> {
                        Ok(Buf(v))
                    }
                }
                d.deserialize_byte_buf(V)
            }
        }
    }
}
