//! The CBOR representation, `application/senml+cbor` (RFC 8428 §6).

use alloc::string::ToString;
use alloc::vec::Vec;

use serde::Serialize;

use super::cbor_value::CborValue as Cbor;

use super::SenmlError;
use super::raw::RawPack;
use super::record::{Field, Kind, Pack, Record, RecordAssembler, Typed, expected, validate};
use super::ser::{PackSer, Style};

/// Encodes a pack as SenML CBOR: a definite-length array of maps with the integer labels of
/// RFC 8428 Table 4.
///
/// Numbers are written as CBOR integers when integral and exact (|x| ≤ 2^53, not −0), otherwise
/// as the shortest of half, single or double precision float that holds the value exactly.
/// Fails if the pack does not pass [`validate`](super::validate).
pub fn to_cbor(pack: &[Record]) -> Result<Vec<u8>, SenmlError> {
    validate(pack)?;
    // Sized up front for a typical report (a few records with short names): one allocation
    // instead of several as the buffer grows.
    let mut out = Vec::with_capacity(64 + 48 * pack.len());
    PackSer {
        pack,
        style: Style::Cbor,
    }
    .serialize(&mut serde_cbor::Serializer::new(&mut out))
    .map_err(|e| SenmlError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a SenML CBOR pack (definite or indefinite length array).
///
/// Numeric fields accept CBOR integers and half, single or double floats. Integer labels not
/// in Table 4 are ignored; text labels are extension labels, ignored unless they end in `_`
/// (RFC 8428 §4.4). Tagged values are read as their content, so decimal fractions (tag 4) are
/// rejected as "not a number". The decoded pack passes [`validate`](super::validate).
pub fn from_cbor(bytes: &[u8]) -> Result<Pack, SenmlError> {
    let raw: RawPack<Cbor, Cbor> =
        serde_cbor::from_slice(bytes).map_err(|e| SenmlError::Cbor(e.to_string()))?;
    raw.into_pack(record)
}

fn record(index: usize, entries: Vec<(Cbor, Cbor)>) -> Result<Record, SenmlError> {
    let mut asm = RecordAssembler::new(index);
    for (label, value) in entries {
        let field = match label {
            Cbor::Integer(i) => Field::from_cbor_label(i),
            Cbor::Text(label) => {
                asm.unknown(&label)?;
                None
            }
            _ => {
                return Err(SenmlError::InvalidLabel {
                    record: asm.index(),
                });
            }
        };
        // Unknown integer labels cannot end in `_`: ignore them.
        let Some(field) = field else { continue };
        asm.claim(field)?;
        let typed = typed(&asm, field, value)?;
        asm.set(field, typed)?;
    }
    Ok(asm.finish())
}

fn typed(asm: &RecordAssembler, field: Field, value: Cbor) -> Result<Typed, SenmlError> {
    let kind = field.kind();
    match (kind, value) {
        (Kind::Text, Cbor::Text(s)) => Ok(Typed::Text(s)),
        (Kind::Number, Cbor::Integer(i)) => Ok(Typed::Number(i as f64)),
        (Kind::Number, Cbor::Float(x)) => Ok(Typed::Number(x)),
        // RFC 8428 §6: "For the version number, only an unsigned integer is allowed."
        (Kind::Version, Cbor::Integer(i)) if i >= 0 => {
            Ok(Typed::Version(i64::try_from(i).unwrap_or(i64::MAX)))
        }
        (Kind::Bool, Cbor::Bool(b)) => Ok(Typed::Bool(b)),
        (Kind::Data, Cbor::Bytes(b)) => Ok(Typed::Data(b)),
        _ => Err(asm.invalid(field, expected(kind))),
    }
}
