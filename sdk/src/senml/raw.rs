//! The shape of a pack, read in one pass by either decoder: an array of maps, each map kept as
//! its list of (label, value) pairs in input order so that duplicate labels can be seen.
//!
//! Anything that is not an array (at the top) or not a map (an element) is consumed and
//! reported as such instead of failing inside serde, so the decoders can say what was wrong.

use alloc::vec::Vec;

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::SenmlError;
use super::record::{Pack, Record, validate};

/// The top level of a SenML document.
pub(crate) enum RawPack<K, V> {
    /// An array, element by element.
    Array(Vec<RawRecord<K, V>>),
    /// Something other than an array.
    NotArray,
}

/// One element of the pack array.
pub(crate) enum RawRecord<K, V> {
    /// A map, as its entries in input order.
    Map(Vec<(K, V)>),
    /// Something other than a map.
    NotMap,
}

impl<K, V> RawPack<K, V> {
    /// The pack: each element's entries made a record by `record(index, entries)`, the whole
    /// checked by [`validate`] (what both decoders do once the shape is read).
    pub(crate) fn into_pack(
        self,
        mut record: impl FnMut(usize, Vec<(K, V)>) -> Result<Record, SenmlError>,
    ) -> Result<Pack, SenmlError> {
        let RawPack::Array(elements) = self else {
            return Err(SenmlError::NotAnArray);
        };
        let mut pack = Vec::with_capacity(elements.len());
        for (index, element) in elements.into_iter().enumerate() {
            let RawRecord::Map(entries) = element else {
                return Err(SenmlError::NotAMap { record: index });
            };
            pack.push(record(index, entries)?);
        }
        validate(&pack)?;
        Ok(pack)
    }
}

/// The `visit_*` methods for the scalar types, all answering `$other`.
macro_rules! scalars_are {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}
pub(crate) use scalars_are;

struct PackVisitor<K, V>(PhantomData<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for PackVisitor<K, V> {
    type Value = RawPack<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // No capacity from the size hint: a forged length must not allocate.
        let mut records = Vec::new();
        while let Some(record) = seq.next_element()? {
            records.push(record);
        }
        Ok(RawPack::Array(records))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RawPack::NotArray)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    scalars_are!(RawPack::NotArray);
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for RawPack<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PackVisitor(PhantomData))
    }
}

struct RecordVisitor<K, V>(PhantomData<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for RecordVisitor<K, V> {
    type Value = RawRecord<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(RawRecord::Map(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawRecord::NotMap)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    scalars_are!(RawRecord::NotMap);
}

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for RawRecord<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordVisitor(PhantomData))
    }
}
