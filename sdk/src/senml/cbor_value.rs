//! One CBOR data item as the SenML CBOR decoders read it (`serde_cbor::Value` needs `std`):
//! the scalar kinds a SenML field can hold, and anything else read whole and kept as `Other`.
//!
//! Arrays and maps are read item by item as this same type, as `serde_cbor::Value` reads them,
//! so the deserializer's nesting limit and its errors are the same. Tagged items arrive as
//! their content (serde_cbor without its `tags` feature), so a decimal fraction (tag 4) is an
//! array here and "not a number" to the decoder.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A CBOR data item, reduced to what SenML reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CborValue {
    /// Major types 0 and 1.
    Integer(i128),
    /// Half, single or double precision.
    Float(f64),
    /// A text string.
    Text(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// `true` or `false`.
    Bool(bool),
    /// An array, a map, `null` or `undefined`: read whole, its contents dropped.
    Other,
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = CborValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CBOR data item")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<CborValue, E> {
        Ok(CborValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<CborValue, E> {
        Ok(CborValue::Integer(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<CborValue, E> {
        Ok(CborValue::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<CborValue, E> {
        Ok(CborValue::Integer(v.into()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<CborValue, E> {
        i128::try_from(v)
            .map(CborValue::Integer)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<CborValue, E> {
        Ok(CborValue::Float(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<CborValue, E> {
        Ok(CborValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CborValue, E> {
        Ok(CborValue::Text(v.into()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<CborValue, E> {
        Ok(CborValue::Text(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<CborValue, E> {
        Ok(CborValue::Bytes(v.into()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<CborValue, E> {
        Ok(CborValue::Bytes(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<CborValue, E> {
        Ok(CborValue::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<CborValue, E> {
        Ok(CborValue::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<CborValue, D::Error> {
        CborValue::deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<CborValue, D::Error> {
        CborValue::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CborValue, A::Error> {
        while seq.next_element::<CborValue>()?.is_some() {}
        Ok(CborValue::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CborValue, A::Error> {
        while map.next_entry::<CborValue, CborValue>()?.is_some() {}
        Ok(CborValue::Other)
    }
}

impl<'de> Deserialize<'de> for CborValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CborValue, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> CborValue {
        serde_cbor::from_slice(bytes).unwrap()
    }

    #[test]
    fn items_read_as_serde_cbor_reads_them() {
        assert_eq!(read(&[0x18, 0x64]), CborValue::Integer(100));
        assert_eq!(read(&[0x20]), CborValue::Integer(-1));
        // Half precision 1.5, single 100000.0, double 1.1.
        assert_eq!(read(&[0xf9, 0x3e, 0x00]), CborValue::Float(1.5));
        assert_eq!(
            read(&[0xfa, 0x47, 0xc3, 0x50, 0x00]),
            CborValue::Float(100000.0)
        );
        assert_eq!(
            read(&[0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a]),
            CborValue::Float(1.1)
        );
        assert_eq!(read(&[0x61, b'a']), CborValue::Text("a".into()));
        assert_eq!(read(&[0x42, 1, 2]), CborValue::Bytes(alloc::vec![1, 2]));
        assert_eq!(read(&[0xf5]), CborValue::Bool(true));
        assert_eq!(read(&[0xf6]), CborValue::Other);
        assert_eq!(read(&[0x82, 0x01, 0xa1, 0x01, 0x02]), CborValue::Other);
        // Tag 4 (decimal fraction): its content, an array.
        assert_eq!(
            read(&[0xc4, 0x82, 0x21, 0x19, 0x6a, 0xb3]),
            CborValue::Other
        );
        // 2^64 − 1 and −2^64 fit i128.
        assert_eq!(
            read(&[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            CborValue::Integer(u64::MAX.into())
        );
        assert_eq!(
            read(&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            CborValue::Integer(-(i128::from(u64::MAX)) - 1)
        );
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let mut deep = alloc::vec![0x81; 10_000];
        deep.push(0x00);
        assert!(serde_cbor::from_slice::<CborValue>(&deep).is_err());
    }
}
