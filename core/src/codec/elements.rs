//! Splitting a sequence into per-element envelopes, so a foreach can hand each branch its
//! item without knowing the element type: the value is walked through serde at write
//! time, while its type is still known, and each element gets its own envelope.

use serde::ser::{self, Impossible, Serialize, SerializeSeq, SerializeTuple};

use super::{encode_payload_envelope, type_name_of};
use crate::error::{Error, Result};

/// Encodes each element of `value` (a `Vec`, slice, array, tuple or anything serde
/// serializes as a sequence) in its own envelope. Anything else is an error that names
/// the type.
pub fn encode_elements<T: Serialize + ?Sized>(value: &T) -> Result<Vec<Vec<u8>>> {
    value.serialize(Splitter).map_err(|e| Error::Encode { type_name: type_name_of::<T>(), reason: e.0 })
}

/// Packs per-element envelopes into one blob: the manifest a foreach reads its items from.
pub fn encode_manifest(elements: &[Vec<u8>]) -> Result<Vec<u8>> {
    encode_payload_envelope(elements)
}

/// Unpacks a manifest made by [`encode_manifest`].
pub fn decode_manifest(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    super::decode_unchecked::<Vec<Vec<u8>>>(bytes)
}

#[derive(Debug)]
pub(crate) struct SplitError(String);

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SplitError {}

impl ser::Error for SplitError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        SplitError(msg.to_string())
    }
}

fn not_a_sequence<T>(what: &str) -> std::result::Result<T, SplitError> {
    Err(SplitError(format!(
        "a foreach needs a sequence (Vec, slice, array or tuple) to fan out over, but this value serializes as {what}"
    )))
}

struct Splitter;

struct Elements(Vec<Vec<u8>>);

impl Elements {
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> std::result::Result<(), SplitError> {
        self.0.push(encode_payload_envelope(v).map_err(|e| SplitError(e.to_string()))?);
        Ok(())
    }
}

impl SerializeSeq for Elements {
    type Ok = Vec<Vec<u8>>;
    type Error = SplitError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> std::result::Result<(), SplitError> {
        self.push(v)
    }
    fn end(self) -> std::result::Result<Self::Ok, SplitError> {
        Ok(self.0)
    }
}

impl SerializeTuple for Elements {
    type Ok = Vec<Vec<u8>>;
    type Error = SplitError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> std::result::Result<(), SplitError> {
        self.push(v)
    }
    fn end(self) -> std::result::Result<Self::Ok, SplitError> {
        Ok(self.0)
    }
}

type Out = std::result::Result<Vec<Vec<u8>>, SplitError>;

impl ser::Serializer for Splitter {
    type Ok = Vec<Vec<u8>>;
    type Error = SplitError;
    type SerializeSeq = Elements;
    type SerializeTuple = Elements;
    type SerializeTupleStruct = Impossible<Vec<Vec<u8>>, SplitError>;
    type SerializeTupleVariant = Impossible<Vec<Vec<u8>>, SplitError>;
    type SerializeMap = Impossible<Vec<Vec<u8>>, SplitError>;
    type SerializeStruct = Impossible<Vec<Vec<u8>>, SplitError>;
    type SerializeStructVariant = Impossible<Vec<Vec<u8>>, SplitError>;

    fn serialize_seq(self, len: Option<usize>) -> std::result::Result<Elements, SplitError> {
        Ok(Elements(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> std::result::Result<Elements, SplitError> {
        Ok(Elements(Vec::with_capacity(len)))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Out {
        v.serialize(self)
    }
    fn serialize_bool(self, _: bool) -> Out {
        not_a_sequence("a bool")
    }
    fn serialize_i8(self, _: i8) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_i16(self, _: i16) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_i32(self, _: i32) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_i64(self, _: i64) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_u8(self, _: u8) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_u16(self, _: u16) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_u32(self, _: u32) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_u64(self, _: u64) -> Out {
        not_a_sequence("an integer")
    }
    fn serialize_f32(self, _: f32) -> Out {
        not_a_sequence("a float")
    }
    fn serialize_f64(self, _: f64) -> Out {
        not_a_sequence("a float")
    }
    fn serialize_char(self, _: char) -> Out {
        not_a_sequence("a char")
    }
    fn serialize_str(self, _: &str) -> Out {
        not_a_sequence("a string")
    }
    fn serialize_bytes(self, v: &[u8]) -> Out {
        let mut e = Elements(Vec::with_capacity(v.len()));
        for b in v {
            e.push(b)?;
        }
        Ok(e.0)
    }
    fn serialize_none(self) -> Out {
        not_a_sequence("None")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Out {
        not_a_sequence("an Option")
    }
    fn serialize_unit(self) -> Out {
        not_a_sequence("()")
    }
    fn serialize_unit_struct(self, name: &'static str) -> Out {
        not_a_sequence(&format!("the unit struct {name}"))
    }
    fn serialize_unit_variant(self, name: &'static str, _: u32, _: &'static str) -> Out {
        not_a_sequence(&format!("a variant of enum {name}"))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Out {
        not_a_sequence(&format!("a variant of enum {name}"))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleStruct, SplitError> {
        not_a_sequence(&format!("the tuple struct {name}"))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleVariant, SplitError> {
        not_a_sequence(&format!("a variant of enum {name}"))
    }
    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Self::SerializeMap, SplitError> {
        not_a_sequence("a map")
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> std::result::Result<Self::SerializeStruct, SplitError> {
        not_a_sequence(&format!("the struct {name} (a Range is a struct: collect it into a Vec)"))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeStructVariant, SplitError> {
        not_a_sequence(&format!("a variant of enum {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    #[test]
    fn splits_sequences_into_typed_envelopes() {
        let v: Vec<u64> = (0..10).collect();
        let parts = encode_elements(&v).unwrap();
        assert_eq!(parts.len(), 10);
        assert_eq!(decode::<u64>(&parts[7]).unwrap(), 7);
        assert!(decode::<i32>(&parts[7]).is_err());
        let t = ("a".to_string(), 5u8);
        let parts = encode_elements(&t).unwrap();
        assert_eq!(decode::<String>(&parts[0]).unwrap(), "a");
        assert_eq!(decode::<u8>(&parts[1]).unwrap(), 5);
        let nested = vec![vec![1u32, 2], vec![3]];
        let parts = encode_elements(&nested).unwrap();
        assert_eq!(decode::<Vec<u32>>(&parts[1]).unwrap(), vec![3]);
        assert!(encode_elements(&Vec::<u64>::new()).unwrap().is_empty());
        let m = encode_manifest(&encode_elements(&v).unwrap()).unwrap();
        let back = decode_manifest(&m).unwrap();
        assert_eq!(decode::<u64>(&back[3]).unwrap(), 3);
        let arr = [1.5f64, 2.5];
        assert_eq!(decode::<f64>(&encode_elements(&arr).unwrap()[1]).unwrap(), 2.5);
    }

    #[test]
    fn non_sequences_are_refused_by_name() {
        let e = encode_elements(&5u64).unwrap_err().to_string();
        assert!(e.contains("needs a sequence") && e.contains("u64"), "{e}");
        let e = encode_elements(&(0..5u64)).unwrap_err().to_string();
        assert!(e.contains("Range"), "{e}");
        let m: std::collections::BTreeMap<u8, u8> = Default::default();
        assert!(encode_elements(&m).unwrap_err().to_string().contains("map"));
    }
}
