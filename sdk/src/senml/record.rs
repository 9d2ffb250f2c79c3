//! The unresolved SenML record, the pack builder, and pack validation.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use super::SenmlError;

/// The SenML version of RFC 8428, assumed when a pack has no `bver` field.
pub const SENML_VERSION: i64 = 10;

/// A SenML Pack: the records of one SenML document, in order (RFC 8428 §4).
pub type Pack = Vec<Record>;

/// One SenML record as it appears in a pack, before resolution (RFC 8428 §4.1, §4.2).
///
/// Field names are the SenML labels. Every field is optional. Base fields (`b…`) apply to this
/// record and to the records after it, up to the next record with the same base field; use
/// [`resolve`](super::resolve) to apply them. A valid record has at most one of the value
/// fields `v`, `vs`, `vb`, `vd`, and all its numbers are finite; [`validate`] checks that.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// Base Name: prepended to the names of this and later records.
    pub bn: Option<String>,
    /// Base Time: added to the times of this and later records.
    pub bt: Option<f64>,
    /// Base Unit: the unit of this and later records that have no `u`.
    pub bu: Option<String>,
    /// Base Value: added to the `v` of this and later records.
    pub bv: Option<f64>,
    /// Base Sum: added to the `s` of this and later records.
    pub bs: Option<f64>,
    /// Base Version: SenML version of the pack (positive, default [`SENML_VERSION`]).
    pub bver: Option<i64>,
    /// Name of the sensor or parameter, appended to the base name.
    pub n: Option<String>,
    /// Unit of the value, e.g. `"Cel"`.
    pub u: Option<String>,
    /// Numeric value.
    pub v: Option<f64>,
    /// String value.
    pub vs: Option<String>,
    /// Boolean value.
    pub vb: Option<bool>,
    /// Data value: base64url without padding in JSON, a byte string in CBOR.
    pub vd: Option<Vec<u8>>,
    /// Sum: the value integrated over time, in unit × seconds.
    pub s: Option<f64>,
    /// Time in seconds: absolute (Unix epoch) from 2^28 on, relative to "now" below that.
    pub t: Option<f64>,
    /// Update time: the longest time in seconds before the sensor gives a new reading.
    pub ut: Option<f64>,
}

impl Record {
    /// A record with a name, a unit and a numeric value, e.g. `measurement("temp", "Cel", 21.5)`.
    pub fn measurement(name: impl Into<String>, unit: impl Into<String>, value: f64) -> Self {
        Record {
            n: Some(name.into()),
            u: Some(unit.into()),
            v: Some(value),
            ..Record::default()
        }
    }

    /// A record with a name and a string value (`vs`).
    pub fn string_value(name: impl Into<String>, value: impl Into<String>) -> Self {
        Record {
            n: Some(name.into()),
            vs: Some(value.into()),
            ..Record::default()
        }
    }

    /// A record with a name and a boolean value (`vb`).
    pub fn bool_value(name: impl Into<String>, value: bool) -> Self {
        Record {
            n: Some(name.into()),
            vb: Some(value),
            ..Record::default()
        }
    }

    /// A record with a name and a data value (`vd`).
    pub fn data_value(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            n: Some(name.into()),
            vd: Some(value.into()),
            ..Record::default()
        }
    }

    /// Sets the time `t` (absolute from 2^28 on, relative to "now" below).
    #[must_use]
    pub fn with_time(mut self, t: f64) -> Self {
        self.t = Some(t);
        self
    }

    /// Sets the sum `s`.
    #[must_use]
    pub fn with_sum(mut self, s: f64) -> Self {
        self.s = Some(s);
        self
    }

    /// Sets the update time `ut`.
    #[must_use]
    pub fn with_update_time(mut self, ut: f64) -> Self {
        self.ut = Some(ut);
        self
    }

    /// Sets the unit `u`.
    #[must_use]
    pub fn with_unit(mut self, u: impl Into<String>) -> Self {
        self.u = Some(u.into());
        self
    }

    /// How many of the value fields `v`, `vs`, `vb`, `vd` are present.
    pub fn value_count(&self) -> usize {
        count_present([
            self.v.is_some(),
            self.vs.is_some(),
            self.vb.is_some(),
            self.vd.is_some(),
        ])
    }

    /// Whether the record has any regular (non-base) field.
    pub(crate) fn has_regular_fields(&self) -> bool {
        self.n.is_some()
            || self.u.is_some()
            || self.value_count() > 0
            || self.s.is_some()
            || self.t.is_some()
            || self.ut.is_some()
    }
}

/// How many of `present` are true (of the value fields, for [`Record::value_count`]).
pub(crate) fn count_present<const N: usize>(present: [bool; N]) -> usize {
    present.into_iter().filter(|&p| p).count()
}

/// Builds a pack for one device: base fields once on the first record, then the readings.
///
/// ```
/// use v6iot_sdk::senml::{PackBuilder, Record};
///
/// let pack = PackBuilder::new()
///     .base_name("urn:dev:mac:0024befffe804ff1:")
///     .base_time(1_700_000_000.0)
///     .record(Record::measurement("temp", "Cel", 21.5))
///     .record(Record::measurement("rh", "%RH", 40.0).with_time(1.0))
///     .build();
/// assert_eq!(pack.len(), 2);
/// assert_eq!(pack[0].bn.as_deref(), Some("urn:dev:mac:0024befffe804ff1:"));
/// assert_eq!(pack[1].bn, None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PackBuilder {
    base: Record,
    records: Vec<Record>,
}

impl PackBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the base name `bn`, e.g. `"urn:dev:mac:0024befffe804ff1:"`.
    #[must_use]
    pub fn base_name(mut self, bn: impl Into<String>) -> Self {
        self.base.bn = Some(bn.into());
        self
    }

    /// Sets the base time `bt` (seconds since the Unix epoch, or relative below 2^28).
    #[must_use]
    pub fn base_time(mut self, bt: f64) -> Self {
        self.base.bt = Some(bt);
        self
    }

    /// Sets the base unit `bu`.
    #[must_use]
    pub fn base_unit(mut self, bu: impl Into<String>) -> Self {
        self.base.bu = Some(bu.into());
        self
    }

    /// Sets the base value `bv`.
    #[must_use]
    pub fn base_value(mut self, bv: f64) -> Self {
        self.base.bv = Some(bv);
        self
    }

    /// Sets the base sum `bs`.
    #[must_use]
    pub fn base_sum(mut self, bs: f64) -> Self {
        self.base.bs = Some(bs);
        self
    }

    /// Sets the base version `bver`. Leave it unset for the default, version 10.
    #[must_use]
    pub fn version(mut self, bver: i64) -> Self {
        self.base.bver = Some(bver);
        self
    }

    /// Appends a record.
    #[must_use]
    pub fn record(mut self, record: Record) -> Self {
        self.records.push(record);
        self
    }

    /// Appends a record through a mutable reference (for loops).
    pub fn push(&mut self, record: Record) -> &mut Self {
        self.records.push(record);
        self
    }

    /// The pack. The builder's base fields go onto the first record, except where that record
    /// sets the same base field itself; with no records, the pack is one record of base fields
    /// alone (if any were set).
    pub fn build(self) -> Pack {
        let PackBuilder { base, mut records } = self;
        match records.first_mut() {
            Some(first) => {
                first.bn = first.bn.take().or(base.bn);
                first.bt = first.bt.or(base.bt);
                first.bu = first.bu.take().or(base.bu);
                first.bv = first.bv.or(base.bv);
                first.bs = first.bs.or(base.bs);
                first.bver = first.bver.or(base.bver);
            }
            None if base != Record::default() => records.push(base),
            None => {}
        }
        records
    }
}

/// The fields of RFC 8428 Table 1, with their JSON labels and CBOR labels (Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Bn,
    Bt,
    Bu,
    Bv,
    Bs,
    Bver,
    N,
    U,
    V,
    Vs,
    Vb,
    Vd,
    S,
    T,
    Ut,
}

/// The JSON type a field carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Number,
    Version,
    Bool,
    Data,
}

/// A field value after type checking, before it is stored in a [`Record`].
#[derive(Debug)]
pub(crate) enum Typed {
    Text(String),
    Number(f64),
    Version(i64),
    Bool(bool),
    Data(Vec<u8>),
}

impl Field {
    /// All fields, in the order the encoders write them (the order of the RFC 8428 examples).
    pub(crate) const ENCODING_ORDER: [Field; 15] = [
        Field::Bn,
        Field::Bt,
        Field::Bu,
        Field::Bv,
        Field::Bs,
        Field::Bver,
        Field::N,
        Field::U,
        Field::T,
        Field::Ut,
        Field::V,
        Field::Vs,
        Field::Vb,
        Field::Vd,
        Field::S,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Field::Bn => "bn",
            Field::Bt => "bt",
            Field::Bu => "bu",
            Field::Bv => "bv",
            Field::Bs => "bs",
            Field::Bver => "bver",
            Field::N => "n",
            Field::U => "u",
            Field::V => "v",
            Field::Vs => "vs",
            Field::Vb => "vb",
            Field::Vd => "vd",
            Field::S => "s",
            Field::T => "t",
            Field::Ut => "ut",
        }
    }

    pub(crate) fn cbor_label(self) -> i64 {
        match self {
            Field::Bver => -1,
            Field::Bn => -2,
            Field::Bt => -3,
            Field::Bu => -4,
            Field::Bv => -5,
            Field::Bs => -6,
            Field::N => 0,
            Field::U => 1,
            Field::V => 2,
            Field::Vs => 3,
            Field::Vb => 4,
            Field::S => 5,
            Field::T => 6,
            Field::Ut => 7,
            Field::Vd => 8,
        }
    }

    pub(crate) fn from_label(label: &str) -> Option<Field> {
        Some(match label {
            "bn" => Field::Bn,
            "bt" => Field::Bt,
            "bu" => Field::Bu,
            "bv" => Field::Bv,
            "bs" => Field::Bs,
            "bver" => Field::Bver,
            "n" => Field::N,
            "u" => Field::U,
            "v" => Field::V,
            "vs" => Field::Vs,
            "vb" => Field::Vb,
            "vd" => Field::Vd,
            "s" => Field::S,
            "t" => Field::T,
            "ut" => Field::Ut,
            _ => return None,
        })
    }

    pub(crate) fn from_cbor_label(label: i128) -> Option<Field> {
        Some(match label {
            -1 => Field::Bver,
            -2 => Field::Bn,
            -3 => Field::Bt,
            -4 => Field::Bu,
            -5 => Field::Bv,
            -6 => Field::Bs,
            0 => Field::N,
            1 => Field::U,
            2 => Field::V,
            3 => Field::Vs,
            4 => Field::Vb,
            5 => Field::S,
            6 => Field::T,
            7 => Field::Ut,
            8 => Field::Vd,
            _ => return None,
        })
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Field::Bn | Field::Bu | Field::N | Field::U | Field::Vs => Kind::Text,
            Field::Bt | Field::Bv | Field::Bs | Field::V | Field::S | Field::T | Field::Ut => {
                Kind::Number
            }
            Field::Bver => Kind::Version,
            Field::Vb => Kind::Bool,
            Field::Vd => Kind::Data,
        }
    }

    pub(super) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Kind of value a field must have, for error messages.
pub(crate) fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "a text string",
        Kind::Number => "a number",
        Kind::Version => "a positive integer",
        Kind::Bool => "a boolean",
        Kind::Data => "a byte string",
    }
}

/// Collects the fields of one record while decoding, rejecting duplicates and
/// must-understand labels.
pub(crate) struct RecordAssembler {
    index: usize,
    seen: u16,
    record: Record,
}

impl RecordAssembler {
    pub(crate) fn new(index: usize) -> Self {
        RecordAssembler {
            index,
            seen: 0,
            record: Record::default(),
        }
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// An error for `field` in this record.
    pub(crate) fn invalid(&self, field: Field, expected: &'static str) -> SenmlError {
        SenmlError::InvalidField {
            record: self.index,
            field: field.label(),
            expected,
        }
    }

    /// Handles a label this implementation does not know (RFC 8428 §4.4).
    pub(crate) fn unknown(&self, label: &str) -> Result<(), SenmlError> {
        if label.ends_with('_') {
            Err(SenmlError::MustUnderstand {
                record: self.index,
                label: label.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    /// Marks `field` as present; errors if it already was.
    pub(crate) fn claim(&mut self, field: Field) -> Result<(), SenmlError> {
        if self.seen & field.bit() != 0 {
            return Err(SenmlError::DuplicateField {
                record: self.index,
                field: field.label(),
            });
        }
        self.seen |= field.bit();
        Ok(())
    }

    /// Stores a type-checked value.
    pub(crate) fn set(&mut self, field: Field, value: Typed) -> Result<(), SenmlError> {
        let r = &mut self.record;
        match (field, value) {
            (Field::Bn, Typed::Text(x)) => r.bn = Some(x),
            (Field::Bu, Typed::Text(x)) => r.bu = Some(x),
            (Field::N, Typed::Text(x)) => r.n = Some(x),
            (Field::U, Typed::Text(x)) => r.u = Some(x),
            (Field::Vs, Typed::Text(x)) => r.vs = Some(x),
            (Field::Bt, Typed::Number(x)) => r.bt = Some(x),
            (Field::Bv, Typed::Number(x)) => r.bv = Some(x),
            (Field::Bs, Typed::Number(x)) => r.bs = Some(x),
            (Field::V, Typed::Number(x)) => r.v = Some(x),
            (Field::S, Typed::Number(x)) => r.s = Some(x),
            (Field::T, Typed::Number(x)) => r.t = Some(x),
            (Field::Ut, Typed::Number(x)) => r.ut = Some(x),
            (Field::Bver, Typed::Version(x)) => r.bver = Some(x),
            (Field::Vb, Typed::Bool(x)) => r.vb = Some(x),
            (Field::Vd, Typed::Data(x)) => r.vd = Some(x),
            (field, _) => return Err(self.invalid(field, expected(field.kind()))),
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Record {
        self.record
    }
}

/// Checks the rules of RFC 8428 that hold before resolution:
///
/// - at most one of `v`, `vs`, `vb`, `vd` per record (§4.2);
/// - every number finite (JSON cannot carry NaN or infinities, §5);
/// - `bver` a positive integer no greater than [`SENML_VERSION`], the same version in force at
///   every record (§4.4).
///
/// The decoders run this on what they decode and the encoders on what they encode. Name rules,
/// and the rule that a record needs a value or a sum, apply after base fields are applied:
/// [`resolve`](super::resolve) checks those.
pub fn validate(pack: &[Record]) -> Result<(), SenmlError> {
    let mut versions = Versions::default();
    for (index, r) in pack.iter().enumerate() {
        let numbers = [r.bt, r.bv, r.bs, r.v, r.s, r.t, r.ut];
        check_record(index, numbers, r.value_count(), r.bver, &mut versions)?;
    }
    Ok(())
}

/// The version in force while a pack is checked record by record, and the pack's version.
#[derive(Debug)]
pub(crate) struct Versions {
    in_force: i64,
    pack: Option<i64>,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            in_force: SENML_VERSION,
            pack: None,
        }
    }
}

/// The fields `numbers` holds, in its order.
const NUMBERS: [Field; 7] = [
    Field::Bt,
    Field::Bv,
    Field::Bs,
    Field::V,
    Field::S,
    Field::T,
    Field::Ut,
];

/// The rules of [`validate`] for record `index`, whose `bt`, `bv`, `bs`, `v`, `s`, `t` and `ut`
/// are `numbers` (in that order); `versions` carries the pack's versions from record to record.
pub(crate) fn check_record(
    index: usize,
    numbers: [Option<f64>; 7],
    value_count: usize,
    bver: Option<i64>,
    versions: &mut Versions,
) -> Result<(), SenmlError> {
    for (field, x) in NUMBERS.into_iter().zip(numbers) {
        if x.is_some_and(|x| !x.is_finite()) {
            return Err(SenmlError::InvalidField {
                record: index,
                field: field.label(),
                expected: "a finite number",
            });
        }
    }
    if value_count > 1 {
        return Err(SenmlError::MultipleValues { record: index });
    }
    if let Some(version) = bver {
        if version < 1 {
            return Err(SenmlError::InvalidField {
                record: index,
                field: Field::Bver.label(),
                expected: expected(Kind::Version),
            });
        }
        if version > SENML_VERSION {
            return Err(SenmlError::UnsupportedVersion {
                record: index,
                version,
            });
        }
        versions.in_force = version;
    }
    match versions.pack {
        None => versions.pack = Some(versions.in_force),
        Some(pack_version) if pack_version != versions.in_force => {
            return Err(SenmlError::VersionMismatch {
                record: index,
                version: versions.in_force,
                pack_version,
            });
        }
        Some(_) => {}
    }
    Ok(())
}

/// A number as the encoders write it: an integer when that is exact, else a float.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
    Int(i64),
    Float(f64),
}

/// Largest magnitude below which every integer is exactly representable in an `f64`.
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

impl From<f64> for Number {
    fn from(x: f64) -> Self {
        // Integral when the cast to i64 and back is exact (in range, so the cast does not saturate).
        let integral = x.abs() <= EXACT_INT_LIMIT && (x as i64) as f64 == x;
        if integral && !(x == 0.0 && x.is_sign_negative()) {
            // In range and integral, so the cast is exact.
            Number::Int(x as i64)
        } else {
            Number::Float(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8428 Table 4, row by row.
    #[test]
    fn labels_match_table_4() {
        let table = [
            ("bver", -1),
            ("bn", -2),
            ("bt", -3),
            ("bu", -4),
            ("bv", -5),
            ("bs", -6),
            ("n", 0),
            ("u", 1),
            ("v", 2),
            ("vs", 3),
            ("vb", 4),
            ("s", 5),
            ("t", 6),
            ("ut", 7),
            ("vd", 8),
        ];
        for (label, cbor) in table {
            let field = Field::from_label(label).unwrap();
            assert_eq!(field.label(), label);
            assert_eq!(field.cbor_label(), cbor);
            assert_eq!(Field::from_cbor_label(cbor.into()), Some(field));
        }
        for field in Field::ENCODING_ORDER {
            assert_eq!(Field::from_label(field.label()), Some(field));
            assert_eq!(
                Field::from_cbor_label(field.cbor_label().into()),
                Some(field)
            );
        }
        assert_eq!(Field::from_cbor_label(9), None);
        assert_eq!(Field::from_cbor_label(-7), None);
        assert_eq!(Field::from_label("bver_"), None);
    }

    #[test]
    fn numbers_become_integers_only_when_exact() {
        let int = |x: f64| matches!(Number::from(x), Number::Int(i) if i as f64 == x);
        assert!(int(0.0) && int(-5.0) && int(9_007_199_254_740_992.0));
        assert!(!int(-0.0) && !int(0.5) && !int(18_014_398_509_481_984.0));
    }
}
