//! Artifact envelopes from a damaged store or a hostile peer: `codec::inspect`, typed
//! `decode` / `decode_unchecked` for several types, and the per-element manifests a
//! foreach reads its items from. Every input must give a value or an error, never a
//! panic; a value that decodes must encode and decode back to itself.
#![no_main]

use std::fmt::Debug;

use braid_core::codec;
use braidflow_fuzz::Record;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `bytes` as `T` (checked and unchecked); a value that decodes must round-trip.
fn decode_as<T: DeserializeOwned + Serialize + PartialEq + Debug>(bytes: &[u8]) {
    let checked = codec::decode::<T>(bytes);
    let unchecked = codec::decode_unchecked::<T>(bytes);
    if let Ok(v) = &checked {
        // The type check is the only difference between the two.
        assert_eq!(unchecked.as_ref().ok(), Some(v), "decode succeeded but decode_unchecked did not");
    }
    if let Ok(v) = unchecked {
        let again = codec::encode(&v).expect("a decoded value encodes");
        let back = codec::decode::<T>(&again.bytes).expect("an encoded value decodes");
        assert_eq!(back, v, "round trip changed the value");
    }
}

fuzz_target!(|data: &[u8]| {
    let header = codec::inspect(data);
    if let Ok(h) = &header {
        assert!(h.payload_offset <= data.len());
        assert_eq!(h.format_version, codec::FORMAT_VERSION);
    }
    decode_as::<u64>(data);
    decode_as::<String>(data);
    decode_as::<Vec<u64>>(data);
    decode_as::<Record>(data);
    decode_as::<Option<(i8, String)>>(data);
    // Not self-describing: bincode refuses `deserialize_any`; it must say so, not panic.
    let _ = codec::decode::<serde_json::Value>(data);
    let _ = codec::decode_unchecked::<serde_json::Value>(data);

    if let Ok(elements) = codec::decode_manifest(data) {
        for element in &elements {
            let _ = codec::inspect(element);
            decode_as::<u64>(element);
            decode_as::<String>(element);
        }
        let again = codec::encode_manifest(&elements).expect("a decoded manifest encodes");
        assert_eq!(codec::decode_manifest(&again).expect("an encoded manifest decodes"), elements);
    }
});
