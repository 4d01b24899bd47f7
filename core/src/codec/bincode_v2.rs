//! Every call into bincode lives here. bincode 2.0.1 is its last release and is flagged
//! unmaintained (RUSTSEC-2025-0141): when it is replaced, a new codec id gets a sibling
//! module and this one stays to read what was stored with it.

use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(bytes, config()).map_err(|e| e.to_string())?;
    if read != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value: the payload holds a different type or is damaged",
            bytes.len() - read
        ));
    }
    Ok(value)
}
