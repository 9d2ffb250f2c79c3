//! From a pack's bytes straight to the resolved pack as SenML JSON, in one pass and borrowing
//! from the input: what a gateway does with every report it forwards.
//!
//! [`resolve_to_json`] gives the same bytes as the owned path — [`from_cbor`](super::from_cbor)
//! or [`from_json`](super::from_json), then [`resolve`](super::resolve), then
//! [`ResolvedRecord::to_record`](super::ResolvedRecord::to_record) of each record and
//! [`to_json_vec`](super::to_json_vec) — and refuses exactly the inputs that path refuses, but
//! without its copies: text and byte strings stay slices of the input (unless JSON escapes or
//! CBOR chunks force a copy), records are resolved as they are decoded (base fields, validation
//! and the version carried from record to record), names are written as base name and name
//! without being joined, and the JSON goes into the caller's buffer.
//!
//! The decoders are serde visitors over the same deserializers (`serde_json`, `serde_cbor`) that
//! the owned decoders use, reading values the same way: unknown labels' values are read as
//! `serde_json::Value` / the CBOR decoder's own item type, as there, so nesting limits and errors
//! agree.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::string::ToString;
use alloc::vec::Vec;

use alloc::borrow::Cow;
use core::fmt;
use core::marker::PhantomData;

use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::SenmlError;
use super::base64url;
use super::raw::scalars_are;
use super::record::{Field, Kind, Number, Versions, check_record, count_present, expected};
use super::resolve::{absolute_time, add, check_finite, is_valid_name_parts};

/// The representation of the bytes handed to [`resolve_to_json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// SenML JSON, content format 110 (RFC 8428 §5).
    Json,
    /// SenML CBOR, content format 112 (RFC 8428 §6).
    Cbor,
}

/// Decodes the pack in `bytes`, resolves it against `now` (seconds since the Unix epoch, as for
/// [`resolve`](super::resolve)) and appends the resolved records to `out` as one SenML JSON
/// array; returns how many records it wrote.
///
/// The bytes written are those of [`to_json_vec`](super::to_json_vec) of the resolved records
/// (compact, fields in the order of the RFC's examples), except that with `first_member =
/// Some((label, text))` the first record starts with that extra member, `"label":"text"` (e.g. a
/// gateway's record id, an extension label of RFC 8428 §4.4). A pack with no records left after
/// resolution is written as `[]` and gives 0.
///
/// Fails with the [`SenmlError`] the owned decoders or [`resolve`](super::resolve) give for the
/// same input (the first one found may differ when an input has several faults); `out` is
/// then as it was.
pub fn resolve_to_json(
    encoding: Encoding,
    bytes: &[u8],
    now: f64,
    first_member: Option<(&str, &str)>,
    out: &mut Vec<u8>,
) -> Result<usize, SenmlError> {
    if !now.is_finite() {
        return Err(SenmlError::InvalidNow);
    }
    let mut records = match encoding {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            (&mut de)
                .deserialize_any(PackVisitor::<serde_json::Value> {
                    now,
                    json: true,
                    skip: PhantomData,
                })
                .and_then(|pack| de.end().map(|()| pack))
                .map_err(|e| SenmlError::Json(e.to_string()))??
        }
        Encoding::Cbor => {
            let mut de = serde_cbor::Deserializer::from_slice(bytes);
            (&mut de)
                .deserialize_any(PackVisitor::<super::cbor_value::CborValue> {
                    now,
                    json: false,
                    skip: PhantomData,
                })
                .and_then(|pack| de.end().map(|()| pack))
                .map_err(|e| SenmlError::Cbor(e.to_string()))??
        }
    };
    records.sort_by(|a, b| a.time.total_cmp(&b.time));
    let start = out.len();
    let written = write_json(&records, first_member, out);
    if written.is_err() {
        out.truncate(start);
    }
    written.map(|()| records.len())
}

/// The base fields in force, resolved records so far, the version check, the first fault.
struct PackState<'de> {
    now: f64,
    json: bool,
    index: usize,
    versions: Versions,
    base: Base<'de>,
    out: Vec<Resolved<'de>>,
    error: Option<SenmlError>,
}

/// The base fields (RFC 8428 §4.1): those of one record, or those in force.
#[derive(Default)]
struct Base<'de> {
    bn: Option<Cow<'de, str>>,
    bt: Option<f64>,
    bu: Option<Cow<'de, str>>,
    bv: Option<f64>,
    bs: Option<f64>,
}

impl<'de> Base<'de> {
    /// The base fields in force after a record with `record`'s: each one it sets replaces the
    /// one before.
    fn apply(&mut self, record: Base<'de>) {
        if record.bn.is_some() {
            self.bn = record.bn;
        }
        if record.bu.is_some() {
            self.bu = record.bu;
        }
        self.bt = record.bt.or(self.bt);
        self.bv = record.bv.or(self.bv);
        self.bs = record.bs.or(self.bs);
    }
}

/// One record as decoded, its text and data borrowed where the input allows.
#[derive(Default)]
struct RecordRef<'de> {
    base: Base<'de>,
    bver: Option<i64>,
    n: Option<Cow<'de, str>>,
    u: Option<Cow<'de, str>>,
    v: Option<f64>,
    vs: Option<Cow<'de, str>>,
    vb: Option<bool>,
    vd: Option<Cow<'de, [u8]>>,
    s: Option<f64>,
    t: Option<f64>,
    ut: Option<f64>,
}

/// A resolved value, borrowed.
enum ValueRef<'de> {
    Float(f64),
    Text(Cow<'de, str>),
    Bool(bool),
    Data(Cow<'de, [u8]>),
}

/// A resolved record: [`ResolvedRecord`](super::ResolvedRecord) with its name as base name and
/// name, not yet joined.
struct Resolved<'de> {
    bn: Option<Cow<'de, str>>,
    n: Option<Cow<'de, str>>,
    unit: Option<Cow<'de, str>>,
    value: Option<ValueRef<'de>>,
    sum: Option<f64>,
    time: f64,
    update_time: Option<f64>,
}

impl<'de> RecordRef<'de> {
    fn value_count(&self) -> usize {
        count_present([
            self.v.is_some(),
            self.vs.is_some(),
            self.vb.is_some(),
            self.vd.is_some(),
        ])
    }

    fn has_regular_fields(&self) -> bool {
        self.value_count() > 0
            || [&self.n, &self.u].iter().any(|x| x.is_some())
            || [self.s, self.t, self.ut].iter().any(Option::is_some)
    }

    /// Stores a type-checked value; `field` was claimed, so each is set once.
    fn set(&mut self, field: Field, value: Typed<'de>) -> bool {
        match (field, value) {
            (Field::Bn, Typed::Text(x)) => self.base.bn = Some(x),
            (Field::Bu, Typed::Text(x)) => self.base.bu = Some(x),
            (Field::N, Typed::Text(x)) => self.n = Some(x),
            (Field::U, Typed::Text(x)) => self.u = Some(x),
            (Field::Vs, Typed::Text(x)) => self.vs = Some(x),
            (Field::Bt, Typed::Number(x)) => self.base.bt = Some(x),
            (Field::Bv, Typed::Number(x)) => self.base.bv = Some(x),
            (Field::Bs, Typed::Number(x)) => self.base.bs = Some(x),
            (Field::V, Typed::Number(x)) => self.v = Some(x),
            (Field::S, Typed::Number(x)) => self.s = Some(x),
            (Field::T, Typed::Number(x)) => self.t = Some(x),
            (Field::Ut, Typed::Number(x)) => self.ut = Some(x),
            (Field::Bver, Typed::Version(x)) => self.bver = Some(x),
            (Field::Vb, Typed::Bool(x)) => self.vb = Some(x),
            (Field::Vd, Typed::Data(x)) => self.vd = Some(x),
            _ => return false,
        }
        true
    }
}

impl<'de> PackState<'de> {
    /// Validates record `self.index` and resolves it against the base fields in force
    /// (RFC 8428 §4.6; the same steps as [`resolve`](super::resolve)).
    fn record(&mut self, r: RecordRef<'de>) -> Result<(), SenmlError> {
        let index = self.index;
        let numbers = [r.base.bt, r.base.bv, r.base.bs, r.v, r.s, r.t, r.ut];
        check_record(index, numbers, r.value_count(), r.bver, &mut self.versions)?;
        let regular = r.has_regular_fields();
        let base = &mut self.base;
        base.apply(r.base);

        let value = if let Some(v) = r.v {
            Some(ValueRef::Float(base.bv.map_or(v, |bv| bv + v)))
        } else if let Some(vs) = r.vs {
            Some(ValueRef::Text(vs))
        } else if let Some(vb) = r.vb {
            Some(ValueRef::Bool(vb))
        } else if let Some(vd) = r.vd {
            Some(ValueRef::Data(vd))
        } else {
            base.bv.map(ValueRef::Float)
        };
        let sum = add(base.bs, r.s);
        if value.is_none() && sum.is_none() {
            if regular {
                return Err(SenmlError::MissingValue { record: index });
            }
            return Ok(());
        }
        let number = match &value {
            Some(ValueRef::Float(x)) => Some(*x),
            _ => None,
        };
        check_finite(index, number, sum)?;

        let bn = base.bn.as_deref().unwrap_or("");
        let n = r.n.as_deref().unwrap_or("");
        if bn.is_empty() && n.is_empty() {
            return Err(SenmlError::MissingName { record: index });
        }
        if !is_valid_name_parts(bn, n) {
            return Err(SenmlError::InvalidName {
                record: index,
                name: [bn, n].concat(),
            });
        }

        let time = absolute_time(index, base.bt, r.t, self.now)?;

        self.out.push(Resolved {
            bn: base.bn.clone(),
            n: r.n,
            unit: r.u.or_else(|| base.bu.clone()),
            value,
            sum,
            time,
            update_time: r.ut,
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// The top level: an array of records. Anything else is consumed and refused.
struct PackVisitor<S> {
    now: f64,
    json: bool,
    skip: PhantomData<S>,
}

impl<'de, S: Deserialize<'de>> Visitor<'de> for PackVisitor<S> {
    type Value = Result<Vec<Resolved<'de>>, SenmlError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut state = PackState {
            now: self.now,
            json: self.json,
            index: 0,
            versions: Versions::default(),
            base: Base::default(),
            out: Vec::new(),
            error: None,
        };
        while let Some(was_map) = seq.next_element_seed(RecordSeed::<S> {
            state: &mut state,
            skip: PhantomData,
        })? {
            if !was_map && state.error.is_none() {
                state.error = Some(SenmlError::NotAMap {
                    record: state.index,
                });
            }
            state.index += 1;
        }
        Ok(match state.error {
            Some(e) => Err(e),
            None => Ok(state.out),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(SenmlError::NotAnArray))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    scalars_are!(Err(SenmlError::NotAnArray));
}

/// One element of the pack, read into the pack's state; answers whether it was a map.
struct RecordSeed<'s, 'de, S> {
    state: &'s mut PackState<'de>,
    skip: PhantomData<S>,
}

impl<'de, S: Deserialize<'de>> DeserializeSeed<'de> for RecordSeed<'_, 'de, S> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Deserialize<'de>> Visitor<'de> for RecordSeed<'_, 'de, S> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let state = self.state;
        let index = state.index;
        let mut record = RecordRef::default();
        let mut seen = 0u16;
        let mut fault = None;
        while let Some(label) = map.next_key_seed(LabelSeed { json: state.json })? {
            let field = match label {
                Label::Field(field) => field,
                Label::Unknown => {
                    map.next_value::<S>()?;
                    continue;
                }
                Label::MustUnderstand(label) => {
                    map.next_value::<S>()?;
                    if fault.is_none() {
                        fault = Some(SenmlError::MustUnderstand {
                            record: index,
                            label,
                        });
                    }
                    continue;
                }
                Label::Invalid => {
                    map.next_value::<S>()?;
                    if fault.is_none() {
                        fault = Some(SenmlError::InvalidLabel { record: index });
                    }
                    continue;
                }
            };
            let value = map.next_value::<Scalar<'de>>()?;
            if fault.is_some() {
                continue;
            }
            let bit = field.bit();
            if seen & bit != 0 {
                fault = Some(SenmlError::DuplicateField {
                    record: index,
                    field: field.label(),
                });
                continue;
            }
            seen |= bit;
            let typed = typed(state.json, field, value);
            if !typed.is_some_and(|t| record.set(field, t)) {
                let what = match (state.json, field.kind()) {
                    (true, Kind::Data) => "base64url text",
                    (_, kind) => expected(kind),
                };
                fault = Some(SenmlError::InvalidField {
                    record: index,
                    field: field.label(),
                    expected: what,
                });
            }
        }
        if state.error.is_none() {
            state.error = match fault {
                Some(e) => Some(e),
                None => state.record(record).err(),
            };
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }

    scalars_are!(false);
}

/// A map key of a record, classified.
enum Label {
    /// A field of RFC 8428 Table 1 (by its JSON label, or its CBOR integer label).
    Field(Field),
    /// Any other label: its value is read and ignored.
    Unknown,
    /// An unknown text label ending in `_` (RFC 8428 §4.4): the pack is refused.
    MustUnderstand(String),
    /// A CBOR key that is neither an integer nor a text string.
    Invalid,
}

struct LabelSeed {
    json: bool,
}

impl<'de> DeserializeSeed<'de> for LabelSeed {
    type Value = Label;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Label, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LabelSeed {
    type Value = Label;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML label")
    }

    fn visit_str<E: de::Error>(self, label: &str) -> Result<Label, E> {
        let known = if self.json {
            Field::from_label(label)
        } else {
            None
        };
        Ok(match known {
            Some(field) => Label::Field(field),
            None if label.ends_with('_') => Label::MustUnderstand(label.to_owned()),
            None => Label::Unknown,
        })
    }

    fn visit_i64<E: de::Error>(self, label: i64) -> Result<Label, E> {
        self.visit_i128(label.into())
    }

    fn visit_u64<E: de::Error>(self, label: u64) -> Result<Label, E> {
        self.visit_i128(label.into())
    }

    fn visit_i128<E: de::Error>(self, label: i128) -> Result<Label, E> {
        Ok(match Field::from_cbor_label(label) {
            // Unknown integer labels cannot end in `_`: ignored.
            Some(field) if !self.json => Label::Field(field),
            _ => Label::Unknown,
        })
    }

    fn visit_u128<E: de::Error>(self, label: u128) -> Result<Label, E> {
        let label = i128::try_from(label).map_err(|_| E::custom("integer too large"))?;
        self.visit_i128(label)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Label, E> {
        Ok(Label::Invalid)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Label, E> {
        Ok(Label::Invalid)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Label, E> {
        Ok(Label::Invalid)
    }

    fn visit_none<E: de::Error>(self) -> Result<Label, E> {
        Ok(Label::Invalid)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Label, E> {
        Ok(Label::Invalid)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Label, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Label, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Label, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Label::Invalid)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Label, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Label::Invalid)
    }
}

/// The value of a known field before its type is checked; arrays, maps and nulls are `Other`
/// (always the wrong type).
enum Scalar<'de> {
    Int(i128),
    Float(f64),
    Bool(bool),
    Text(Cow<'de, str>),
    Bytes(Cow<'de, [u8]>),
    Other,
}

/// A field value after type checking.
enum Typed<'de> {
    Text(Cow<'de, str>),
    Number(f64),
    Version(i64),
    Bool(bool),
    Data(Cow<'de, [u8]>),
}

/// The value `field` takes from `value`, as the owned decoders type it; `None` if the type is
/// wrong.
fn typed(json: bool, field: Field, value: Scalar<'_>) -> Option<Typed<'_>> {
    match (field.kind(), value) {
        (Kind::Text, Scalar::Text(s)) => Some(Typed::Text(s)),
        // What `i as f64` gives (both round to nearest), without the i128 conversion's cost.
        (Kind::Number, Scalar::Int(i)) => Some(Typed::Number(match i64::try_from(i) {
            Ok(i) => i as f64,
            Err(_) => i as f64,
        })),
        (Kind::Number, Scalar::Float(x)) => Some(Typed::Number(x)),
        // CBOR allows only unsigned integers; a negative JSON one fails validation the same way.
        (Kind::Version, Scalar::Int(i)) if i >= 0 => {
            Some(Typed::Version(i64::try_from(i).unwrap_or(i64::MAX)))
        }
        (Kind::Version, Scalar::Int(i)) if json => i64::try_from(i).ok().map(Typed::Version),
        (Kind::Bool, Scalar::Bool(b)) => Some(Typed::Bool(b)),
        (Kind::Data, Scalar::Bytes(b)) if !json => Some(Typed::Data(b)),
        (Kind::Data, Scalar::Text(s)) if json => {
            base64url::decode(&s).map(|d| Typed::Data(Cow::Owned(d)))
        }
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML field value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(u.into()))
    }

    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Self::Value, E> {
        Ok(Scalar::Int(i))
    }

    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Self::Value, E> {
        i128::try_from(u)
            .map(Scalar::Int)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(x))
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(s)))
    }

    fn visit_borrowed_bytes<E: de::Error>(self, b: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Scalar::Bytes(Cow::Borrowed(b)))
    }

    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<Self::Value, E> {
        Ok(Scalar::Bytes(Cow::Owned(b.to_vec())))
    }

    fn visit_byte_buf<E: de::Error>(self, b: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Scalar::Bytes(Cow::Owned(b)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// Writes the resolved pack as [`to_json_vec`](super::to_json_vec) would write the records'
/// [`to_record`](super::ResolvedRecord::to_record)s: compact, the fields of each in
/// `Field::ENCODING_ORDER` (n, u, t, ut, v|vs|vb|vd, s), numbers as integers where exact. Labels
/// and names are written as they are (names passed §4.5.1, so they need no escaping); text
/// values and numbers go through serde_json, as they did there.
fn write_json(
    records: &[Resolved<'_>],
    first_member: Option<(&str, &str)>,
    out: &mut Vec<u8>,
) -> Result<(), SenmlError> {
    out.push(b'[');
    let mut extra = first_member;
    for (i, r) in records.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"{" } else { b",{" });
        if let Some((label, text)) = extra.take() {
            write_text(out, label)?;
            out.push(b':');
            write_text(out, text)?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"n\":\"");
        out.extend_from_slice(r.bn.as_deref().unwrap_or("").as_bytes());
        out.extend_from_slice(r.n.as_deref().unwrap_or("").as_bytes());
        out.push(b'"');
        if let Some(u) = &r.unit {
            out.extend_from_slice(b",\"u\":");
            write_text(out, u)?;
        }
        out.extend_from_slice(b",\"t\":");
        write_number(out, r.time)?;
        if let Some(ut) = r.update_time {
            out.extend_from_slice(b",\"ut\":");
            write_number(out, ut)?;
        }
        match &r.value {
            Some(ValueRef::Float(x)) => {
                out.extend_from_slice(b",\"v\":");
                write_number(out, *x)?;
            }
            Some(ValueRef::Text(x)) => {
                out.extend_from_slice(b",\"vs\":");
                write_text(out, x)?;
            }
            Some(ValueRef::Bool(x)) => {
                out.extend_from_slice(if *x {
                    b",\"vb\":true"
                } else {
                    b",\"vb\":false"
                });
            }
            Some(ValueRef::Data(x)) => {
                out.extend_from_slice(b",\"vd\":\"");
                // The base64url alphabet needs no escaping.
                out.extend_from_slice(base64url::encode(x).as_bytes());
                out.push(b'"');
            }
            None => {}
        }
        if let Some(sum) = r.sum {
            out.extend_from_slice(b",\"s\":");
            write_number(out, sum)?;
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

fn encode_error(e: serde_json::Error) -> SenmlError {
    SenmlError::Encode(e.to_string())
}

/// A JSON string, escaped by serde_json.
fn write_text(out: &mut Vec<u8>, text: &str) -> Result<(), SenmlError> {
    write_json_value(out, text)
}

/// A number as the encoders write it: an integer when exact, else serde_json's shortest float.
fn write_number(out: &mut Vec<u8>, x: f64) -> Result<(), SenmlError> {
    match Number::from(x) {
        Number::Int(i) => write_json_value(out, &i),
        Number::Float(x) => write_json_value(out, &x),
    }
}

/// One value as serde_json writes it, appended to `out`: straight into the buffer with `std`
/// (serde_json's writer API needs `std::io`), through a short-lived vector without it.
fn write_json_value<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), SenmlError> {
    #[cfg(feature = "std")]
    {
        serde_json::to_writer(out, value).map_err(encode_error)
    }
    #[cfg(not(feature = "std"))]
    {
        out.extend_from_slice(&serde_json::to_vec(value).map_err(encode_error)?);
        Ok(())
    }
}
