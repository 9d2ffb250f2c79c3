//! The JSON representation, `application/senml+json` (RFC 8428 §5).

use alloc::string::String;
use alloc::string::ToString;
use alloc::vec::Vec;

use serde_json::Value as Json;

use super::SenmlError;
use super::base64url;
use super::raw::RawPack;
use super::record::{Field, Kind, Pack, Record, RecordAssembler, Typed, expected, validate};
use super::ser::{PackSer, Style};

/// Encodes a pack as SenML JSON text (compact, no whitespace).
///
/// Fails if the pack does not pass [`validate`](super::validate) (more than one value field,
/// a NaN or infinite number, a bad `bver`), since such a pack cannot be sent as SenML.
pub fn to_json(pack: &[Record]) -> Result<String, SenmlError> {
    validate(pack)?;
    serde_json::to_string(&PackSer {
        pack,
        style: Style::Json,
    })
    .map_err(|e| SenmlError::Encode(e.to_string()))
}

/// Encodes a pack as SenML JSON bytes (UTF-8); see [`to_json`].
pub fn to_json_vec(pack: &[Record]) -> Result<Vec<u8>, SenmlError> {
    to_json(pack).map(String::into_bytes)
}

/// Decodes a SenML JSON pack.
///
/// Numbers may be integers or floats; `vd` must be base64url (unpadded, or correctly padded).
/// Unknown labels are ignored unless they end in `_` (RFC 8428 §4.4). The decoded pack passes
/// [`validate`](super::validate).
pub fn from_json(bytes: &[u8]) -> Result<Pack, SenmlError> {
    let raw: RawPack<String, Json> =
        serde_json::from_slice(bytes).map_err(|e| SenmlError::Json(e.to_string()))?;
    raw.into_pack(record)
}

fn record(index: usize, entries: Vec<(String, Json)>) -> Result<Record, SenmlError> {
    let mut asm = RecordAssembler::new(index);
    for (label, value) in entries {
        let Some(field) = Field::from_label(&label) else {
            asm.unknown(&label)?;
            continue;
        };
        asm.claim(field)?;
        let typed = typed(&asm, field, value)?;
        asm.set(field, typed)?;
    }
    Ok(asm.finish())
}

fn typed(asm: &RecordAssembler, field: Field, value: Json) -> Result<Typed, SenmlError> {
    let kind = field.kind();
    let wrong = || asm.invalid(field, expected(kind));
    match (kind, value) {
        (Kind::Text, Json::String(s)) => Ok(Typed::Text(s)),
        (Kind::Number, Json::Number(n)) => n.as_f64().map(Typed::Number).ok_or_else(wrong),
        (Kind::Version, Json::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Ok(Typed::Version(i64::try_from(u).unwrap_or(i64::MAX))),
            // Negative integers: validation reports them as not positive.
            (None, Some(i)) => Ok(Typed::Version(i)),
            (None, None) => Err(wrong()),
        },
        (Kind::Bool, Json::Bool(b)) => Ok(Typed::Bool(b)),
        (Kind::Data, Json::String(s)) => base64url::decode(&s)
            .map(Typed::Data)
            .ok_or_else(|| asm.invalid(field, "base64url text")),
        (Kind::Data, _) => Err(asm.invalid(field, "base64url text")),
        _ => Err(wrong()),
    }
}
