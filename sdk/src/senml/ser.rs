//! One `Serialize` for both representations: text labels and base64url data for JSON,
//! integer labels and byte strings for CBOR.
//!
//! Fields are written in [`Field::ENCODING_ORDER`], the order of the RFC 8428 examples, and
//! numbers as integers where that is exact (see [`Number`]). serde_cbor then writes floats in the
//! smallest of half, single and double precision that holds them exactly; with both rules the
//! CBOR example of RFC 8428 §6 is reproduced byte for byte.

use alloc::string::String;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::base64url;
use super::record::{Field, Number, Record};

/// Which representation's labels and data encoding to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Json,
    Cbor,
}

/// A pack, ready for a serde serializer.
pub(crate) struct PackSer<'a> {
    pub(crate) pack: &'a [Record],
    pub(crate) style: Style,
}

impl Serialize for PackSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.pack.len()))?;
        for record in self.pack {
            seq.serialize_element(&RecordSer {
                record,
                style: self.style,
            })?;
        }
        seq.end()
    }
}

struct RecordSer<'a> {
    record: &'a Record,
    style: Style,
}

enum Out<'a> {
    Text(&'a str),
    Number(Number),
    Int(i64),
    Bool(bool),
    Data(&'a [u8]),
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Number::Int(i) => s.serialize_i64(i),
            Number::Float(x) => s.serialize_f64(x),
        }
    }
}

fn get(r: &Record, field: Field) -> Option<Out<'_>> {
    fn num(x: Option<f64>) -> Option<Out<'static>> {
        x.map(|x| Out::Number(Number::from(x)))
    }
    fn text(x: &Option<String>) -> Option<Out<'_>> {
        x.as_deref().map(Out::Text)
    }
    match field {
        Field::Bn => text(&r.bn),
        Field::Bt => num(r.bt),
        Field::Bu => text(&r.bu),
        Field::Bv => num(r.bv),
        Field::Bs => num(r.bs),
        Field::Bver => r.bver.map(Out::Int),
        Field::N => text(&r.n),
        Field::U => text(&r.u),
        Field::V => num(r.v),
        Field::Vs => text(&r.vs),
        Field::Vb => r.vb.map(Out::Bool),
        Field::Vd => r.vd.as_deref().map(Out::Data),
        Field::S => num(r.s),
        Field::T => num(r.t),
        Field::Ut => num(r.ut),
    }
}

impl Serialize for RecordSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let present = Field::ENCODING_ORDER
            .into_iter()
            .filter(|&f| get(self.record, f).is_some())
            .count();
        let mut map = s.serialize_map(Some(present))?;
        for field in Field::ENCODING_ORDER {
            let Some(value) = get(self.record, field) else {
                continue;
            };
            match self.style {
                Style::Json => map.serialize_key(field.label())?,
                Style::Cbor => map.serialize_key(&field.cbor_label())?,
            }
            match value {
                Out::Text(x) => map.serialize_value(x)?,
                Out::Number(x) => map.serialize_value(&x)?,
                Out::Int(x) => map.serialize_value(&x)?,
                Out::Bool(x) => map.serialize_value(&x)?,
                Out::Data(x) => match self.style {
                    Style::Json => map.serialize_value(&base64url::encode(x))?,
                    Style::Cbor => map.serialize_value(&Bytes(x))?,
                },
            }
        }
        map.end()
    }
}

/// A byte string (serde serializes a bare `&[u8]` as a sequence).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}
