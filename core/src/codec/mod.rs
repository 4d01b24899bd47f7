//! The artifact codec: a typed value becomes bytes in a small versioned envelope, plus a
//! bounded JSON preview made at write time so any tool can show the value without
//! knowing its Rust type.
//!
//! Envelope, format version 1 (all integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `BRAF` |
//! | 4 | format version (1) |
//! | 5 | codec id (1 = bincode 2, serde mode, standard config) |
//! | 6 | flags (bit 0: payload is zstd-compressed) |
//! | 7 | reserved, 0 |
//! | 8..10 | length of the type name |
//! | 10.. | the Rust type name (UTF-8), then the payload |

mod bincode_v2;
mod elements;

pub use elements::{decode_manifest, encode_elements, encode_manifest};

use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The first four bytes of every envelope: `BRAF`.
pub const MAGIC: [u8; 4] = *b"BRAF";
/// The newest envelope format this build writes and reads; an envelope with a higher
/// version is refused with `UnsupportedFormat`.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 10;
const FLAG_ZSTD: u8 = 1;

/// Payloads larger than this are zstd-compressed (when that makes them smaller).
pub(crate) const COMPRESS_THRESHOLD: usize = 64 * 1024;
/// Longest preview kept, in bytes, before the cut marker.
pub const PREVIEW_LIMIT: usize = 2048;

/// Which serializer produced the payload (byte 5 of the envelope). More may be added,
/// so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum CodecId {
    /// bincode 2 in serde mode with its standard configuration.
    Bincode2 = 1,
}

impl CodecId {
    fn from_byte(b: u8) -> Result<Self> {
        match b {
            1 => Ok(CodecId::Bincode2),
            codec => Err(Error::UnknownCodec { codec }),
        }
    }

    /// A short name for people, e.g. `bincode2`.
    pub fn as_str(self) -> &'static str {
        match self {
            CodecId::Bincode2 => "bincode2",
        }
    }
}

/// What the envelope says about the value inside, read without decoding it (see
/// [`inspect`]). Only [`inspect`] makes one; fields may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvelopeHeader {
    /// The envelope's format version, at most [`FORMAT_VERSION`].
    pub format_version: u8,
    /// The serializer of the payload.
    pub codec: CodecId,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// The stored value's type, as [`type_name_of`] names it; [`decode`] checks it.
    pub type_name: String,
    /// Where the payload starts in the envelope.
    pub payload_offset: usize,
}

/// A JSON rendering of a value, bounded in size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preview {
    /// JSON text; when `truncated`, the first `PREVIEW_LIMIT` bytes followed by a marker.
    pub text: String,
    /// Whether `text` was cut (then it is not valid JSON), or the value had no JSON form.
    pub truncated: bool,
}

impl Preview {
    /// The preview as a JSON value: the value itself when whole, else the cut text as a
    /// JSON string (a cut preview is not valid JSON).
    pub fn to_json_value(&self) -> serde_json::Value {
        if !self.truncated
            && let Ok(v) = serde_json::from_str(&self.text)
        {
            return v;
        }
        serde_json::Value::String(self.text.clone())
    }
}

/// A value ready to store: the envelope bytes and what is recorded beside them.
#[derive(Debug, Clone)]
pub struct EncodedArtifact {
    /// The envelope: header, type name, payload.
    pub bytes: Vec<u8>,
    /// The value's type name, as in the envelope (recorded beside it for listings).
    pub type_name: String,
    /// The bounded JSON rendering shown by tools that do not know the type.
    pub preview: Preview,
}

/// The type name recorded for `T` and checked on decode: `std::any::type_name`, with
/// the wrappers that serialize exactly like what they wrap taken off the top level (`&T`,
/// `Box<T>`, `Arc<T>`, `Rc<T>`, `Cow<T>`), and `str` / `[T]` named as their owned forms,
/// so a value set as `&str` reads back as `String`.
pub fn type_name_of<T: ?Sized>() -> String {
    canonical_type_name(std::any::type_name::<T>())
}

fn canonical_type_name(mut name: &str) -> String {
    loop {
        if let Some(rest) = name.strip_prefix("&mut ").or_else(|| name.strip_prefix('&')) {
            name = rest;
            continue;
        }
        let wrapped = ["alloc::boxed::Box<", "alloc::sync::Arc<", "alloc::rc::Rc<", "alloc::borrow::Cow<"]
            .iter()
            .find_map(|w| name.strip_prefix(w).and_then(|r| r.strip_suffix('>')));
        match wrapped {
            Some(inner) => name = inner,
            None => break,
        }
    }
    if name == "str" {
        return "alloc::string::String".to_owned();
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        // `[T]` (a slice) serializes like `Vec<T>`; `[T; N]` (an array) does not.
        let mut depth = 0i32;
        let top_level_semicolon = inner.chars().any(|c| {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth -= 1,
                _ => {}
            }
            c == ';' && depth == 0
        });
        if !top_level_semicolon {
            return format!("alloc::vec::Vec<{}>", canonical_type_name(inner));
        }
    }
    name.to_owned()
}

/// Encodes `value` in an envelope and renders its preview.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<EncodedArtifact> {
    let type_name = type_name_of::<T>();
    let bytes = encode_payload_envelope(value)?;
    Ok(EncodedArtifact { bytes, type_name, preview: preview_of(value) })
}

/// An envelope without a preview: for per-element envelopes, which are never shown alone.
pub(crate) fn encode_payload_envelope<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let type_name = type_name_of::<T>();
    let payload = bincode_v2::encode(value).map_err(|reason| Error::Encode { type_name: type_name.clone(), reason })?;
    let (payload, compressed) = maybe_compress(payload);
    wrap(&type_name, CodecId::Bincode2, compressed, &payload)
}

fn maybe_compress(payload: Vec<u8>) -> (Vec<u8>, bool) {
    if payload.len() <= COMPRESS_THRESHOLD {
        return (payload, false);
    }
    match zstd::bulk::compress(&payload, 1) {
        Ok(c) if c.len() < payload.len() => (c, true),
        _ => (payload, false),
    }
}

fn wrap(type_name: &str, codec: CodecId, compressed: bool, payload: &[u8]) -> Result<Vec<u8>> {
    let name_len = u16::try_from(type_name.len()).map_err(|_| Error::Encode {
        type_name: type_name.to_owned(),
        reason: "type name longer than 65535 bytes".into(),
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + type_name.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(codec as u8);
    out.push(if compressed { FLAG_ZSTD } else { 0 });
    out.push(0);
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(type_name.as_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reads the envelope header without touching the payload.
pub fn inspect(bytes: &[u8]) -> Result<EnvelopeHeader> {
    let corrupt = |reason: String| Error::CorruptEnvelope { reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("{} bytes, shorter than the {HEADER_LEN}-byte header", bytes.len())));
    }
    if bytes[0..4] != MAGIC {
        return Err(corrupt(format!(
            "magic is {:02x?}, expected {:02x?} (\"BRAF\"): not a braid artifact",
            &bytes[0..4],
            MAGIC
        )));
    }
    let format_version = bytes[4];
    if format_version == 0 || format_version > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat { found: format_version, supported: FORMAT_VERSION });
    }
    let codec = CodecId::from_byte(bytes[5])?;
    let flags = bytes[6];
    if flags & !FLAG_ZSTD != 0 {
        return Err(corrupt(format!("unknown flags 0x{flags:02x}")));
    }
    let name_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let payload_offset = HEADER_LEN + name_len;
    let name = bytes
        .get(HEADER_LEN..payload_offset)
        .ok_or_else(|| corrupt(format!("type name of {name_len} bytes runs past the end")))?;
    let type_name = std::str::from_utf8(name).map_err(|_| corrupt("type name is not UTF-8".into()))?.to_owned();
    Ok(EnvelopeHeader { format_version, codec, compressed: flags & FLAG_ZSTD != 0, type_name, payload_offset })
}

/// Decodes an envelope into `T`, refusing a value stored as another type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let header = inspect(bytes)?;
    let requested = type_name_of::<T>();
    if header.type_name != requested {
        return Err(Error::TypeMismatch { stored: header.type_name, requested });
    }
    decode_payload(bytes, &header)
}

/// Decodes without the type-name check, for a value whose type was renamed or moved.
/// The payload must still parse as `T` exactly, or this fails.
pub fn decode_unchecked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let header = inspect(bytes)?;
    decode_payload(bytes, &header)
}

fn decode_payload<T: DeserializeOwned>(bytes: &[u8], header: &EnvelopeHeader) -> Result<T> {
    let payload = &bytes[header.payload_offset..];
    let decompressed;
    let payload = if header.compressed {
        decompressed = zstd::stream::decode_all(payload)
            .map_err(|e| Error::CorruptEnvelope { reason: format!("compressed payload does not decompress: {e}") })?;
        &decompressed[..]
    } else {
        payload
    };
    match header.codec {
        CodecId::Bincode2 => {
            bincode_v2::decode(payload).map_err(|reason| Error::Decode { type_name: type_name_of::<T>(), reason })
        }
    }
}

/// Renders `value` as JSON, stopping once `PREVIEW_LIMIT` bytes are written so a huge
/// value never builds a huge string.
pub(crate) fn preview_of<T: Serialize + ?Sized>(value: &T) -> Preview {
    let mut w = BoundedWriter { buf: Vec::with_capacity(128), limit: PREVIEW_LIMIT, overflowed: false };
    let result = serde_json::to_writer(&mut w, value);
    let BoundedWriter { mut buf, overflowed, .. } = w;
    match result {
        Ok(()) => Preview { text: String::from_utf8_lossy(&buf).into_owned(), truncated: false },
        Err(_) if overflowed => {
            buf.truncate(PREVIEW_LIMIT);
            let mut text = String::from_utf8_lossy(&buf).into_owned();
            // A multi-byte character cut in half shows as U+FFFD; drop it.
            while text.ends_with('\u{FFFD}') {
                text.pop();
            }
            text.push_str(" …[preview cut at 2048 bytes]");
            Preview { text, truncated: true }
        }
        Err(e) => Preview { text: format!("<no JSON preview: {e}>"), truncated: true },
    }
}

struct BoundedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.limit + 4 - self.buf.len().min(self.limit + 4);
        if data.len() > room {
            self.buf.extend_from_slice(&data[..room]);
            self.overflowed = true;
            return Err(std::io::Error::other("preview limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        scores: Vec<f64>,
        tags: BTreeMap<String, i32>,
        maybe: Option<Box<Sample>>,
    }

    #[test]
    fn round_trip_and_preview() {
        let v = Sample { id: 7, name: "x".into(), scores: vec![1.5], tags: [("a".into(), 1)].into(), maybe: None };
        let enc = encode(&v).unwrap();
        assert_eq!(decode::<Sample>(&enc.bytes).unwrap(), v);
        assert!(!enc.preview.truncated);
        assert_eq!(
            enc.preview.to_json_value(),
            serde_json::json!({"id":7,"name":"x","scores":[1.5],"tags":{"a":1},"maybe":null})
        );
        let h = inspect(&enc.bytes).unwrap();
        assert_eq!(h.type_name, type_name_of::<Sample>());
        assert_eq!(h.codec, CodecId::Bincode2);
    }

    #[test]
    fn wrong_type_names_both() {
        let enc = encode(&42u64).unwrap();
        let e = decode::<i64>(&enc.bytes).unwrap_err();
        assert_eq!(e, Error::TypeMismatch { stored: "u64".into(), requested: "i64".into() });
        assert!(e.to_string().contains("`u64`") && e.to_string().contains("`i64`"));
        // Bypassing the check still refuses a payload that does not fit exactly.
        let enc = encode(&(1u8, 2u8, 3u8)).unwrap();
        assert!(decode_unchecked::<u8>(&enc.bytes).is_err());
    }

    #[test]
    fn corrupted_envelopes_are_errors() {
        let enc = encode(&"hello".to_string()).unwrap();
        let mut b = enc.bytes.clone();
        b[0] = b'X';
        assert!(matches!(decode::<String>(&b), Err(Error::CorruptEnvelope { .. })));
        let mut b = enc.bytes.clone();
        b[4] = 9;
        assert!(matches!(decode::<String>(&b), Err(Error::UnsupportedFormat { found: 9, .. })));
        let mut b = enc.bytes.clone();
        b[5] = 200;
        assert!(matches!(decode::<String>(&b), Err(Error::UnknownCodec { codec: 200 })));
        assert!(decode::<String>(&enc.bytes[..5]).is_err());
        let truncated = &enc.bytes[..enc.bytes.len() - 2];
        assert!(matches!(decode::<String>(truncated), Err(Error::Decode { .. })));
        let mut b = enc.bytes.clone();
        b[8] = 0xff;
        assert!(matches!(decode::<String>(&b), Err(Error::CorruptEnvelope { .. })));
    }

    #[test]
    fn equivalent_types_share_a_name() {
        let enc = encode("abc").unwrap();
        assert_eq!(decode::<String>(&enc.bytes).unwrap(), "abc");
        let v = vec![1u64, 2];
        let enc = encode(&v[..]).unwrap();
        assert_eq!(decode::<Vec<u64>>(&enc.bytes).unwrap(), v);
        let enc = encode(&Box::new(&5u8)).unwrap();
        assert_eq!(decode::<u8>(&enc.bytes).unwrap(), 5);
        // Arrays are not vectors: different encodings.
        assert_eq!(type_name_of::<[u8; 4]>(), "[u8; 4]");
        assert_eq!(type_name_of::<[[u8; 2]]>(), "alloc::vec::Vec<[u8; 2]>");
    }

    #[test]
    fn large_payloads_compress() {
        let v: Vec<u64> = vec![3; 100_000];
        let enc = encode(&v).unwrap();
        assert!(inspect(&enc.bytes).unwrap().compressed);
        assert!(enc.bytes.len() < 10_000);
        assert_eq!(decode::<Vec<u64>>(&enc.bytes).unwrap(), v);
        let mut b = enc.bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        b.truncate(last - 10);
        assert!(decode::<Vec<u64>>(&b).is_err());
    }

    #[test]
    fn preview_is_cut_with_marker() {
        let v: Vec<u64> = (0..100_000).collect();
        let p = encode(&v).unwrap().preview;
        assert!(p.truncated);
        assert!(p.text.len() < PREVIEW_LIMIT + 64);
        assert!(p.text.starts_with("[0,1,2,"));
        assert!(p.text.ends_with("…[preview cut at 2048 bytes]"));
        assert!(p.to_json_value().is_string());
        let s = "é".repeat(5000);
        let p = preview_of(&s);
        assert!(p.truncated && !p.text.contains('\u{FFFD}'));
    }

    #[test]
    fn preview_of_unrepresentable_value_does_not_fail_encode() {
        let mut m = BTreeMap::new();
        m.insert((1, 2), 3);
        let enc = encode(&m).unwrap();
        assert!(enc.preview.text.starts_with("<no JSON preview"));
        assert_eq!(decode::<BTreeMap<(i32, i32), i32>>(&enc.bytes).unwrap(), m);
    }

    fn sample() -> impl Strategy<Value = Sample> {
        let leaf = (
            any::<u64>(),
            ".{0,20}",
            prop::collection::vec(any::<f64>().prop_filter("nan", |f| !f.is_nan()), 0..10),
            prop::collection::btree_map(".{0,5}", any::<i32>(), 0..5),
        )
            .prop_map(|(id, name, scores, tags)| Sample { id, name, scores, tags, maybe: None });
        leaf.prop_recursive(3, 10, 1, |inner| {
            (inner, any::<u64>()).prop_map(|(s, id)| Sample { id, maybe: Some(Box::new(s.clone())), ..s })
        })
    }

    proptest! {
        #[test]
        fn structs_round_trip(v in sample()) {
            let enc = encode(&v).unwrap();
            prop_assert_eq!(decode::<Sample>(&enc.bytes).unwrap(), v);
        }

        #[test]
        fn byte_vectors_round_trip(v in prop::collection::vec(any::<u8>(), 0..200_000)) {
            let enc = encode(&v).unwrap();
            prop_assert_eq!(decode::<Vec<u8>>(&enc.bytes).unwrap(), v);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Sample>(&bytes);
            let _ = inspect(&bytes);
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&bytes);
            let _ = decode::<String>(&b);
        }
    }
}
