//! The one error type of the SenML codecs and of resolution.

use alloc::string::String;

/// Why a SenML pack could not be decoded, encoded or resolved.
///
/// Record numbers in the variants count from 0, in the order the records appear in the pack.
/// The `Display` text names the record, the field (by its JSON label, also for CBOR input)
/// and the problem, e.g. ``record 2: field `v` is not a number``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SenmlError {
    /// The input is not well-formed JSON (or trails other data after the JSON text).
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The input is not well-formed CBOR (truncated, trailing data, nested too deeply, ...).
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    /// The input is well-formed but its top level is not an array of records.
    #[error("not a SenML pack: top level is not an array")]
    NotAnArray,
    /// An element of the pack array is not a map (a JSON object).
    #[error("record {record}: not a map")]
    NotAMap {
        /// Position of the record in the pack.
        record: usize,
    },
    /// A CBOR map key is neither an integer nor a text string.
    #[error("record {record}: a label is neither an integer nor a text string")]
    InvalidLabel {
        /// Position of the record in the pack.
        record: usize,
    },
    /// A known field appears twice in the same record.
    #[error("record {record}: field `{field}` appears more than once")]
    DuplicateField {
        /// Position of the record in the pack.
        record: usize,
        /// JSON label of the field.
        field: &'static str,
    },
    /// A field has the wrong type or an out-of-range value.
    #[error("record {record}: field `{field}` is not {expected}")]
    InvalidField {
        /// Position of the record in the pack.
        record: usize,
        /// JSON label of the field.
        field: &'static str,
        /// What the field should have been, e.g. "a number", "a finite number".
        expected: &'static str,
    },
    /// An unknown field whose label ends in `_`: RFC 8428 §4.4 requires rejecting the pack.
    #[error(
        "record {record}: unknown field `{}` must be understood (its label ends in `_`)",
        .label.escape_debug()
    )]
    MustUnderstand {
        /// Position of the record in the pack.
        record: usize,
        /// The label as it appeared in the input.
        label: String,
    },
    /// A record carries more than one of `v`, `vs`, `vb`, `vd` (RFC 8428 §4.2).
    #[error("record {record}: more than one value field")]
    MultipleValues {
        /// Position of the record in the pack.
        record: usize,
    },
    /// The pack uses a SenML version newer than this implementation (RFC 8428 §4.4).
    #[error("record {record}: SenML version {version} is not supported (newest known is 10)")]
    UnsupportedVersion {
        /// Position of the record in the pack.
        record: usize,
        /// The version found.
        version: i64,
    },
    /// Records of one pack have different versions (RFC 8428 §4.4).
    #[error(
        "record {record}: SenML version {version} differs from the pack's version {pack_version}"
    )]
    VersionMismatch {
        /// Position of the record in the pack.
        record: usize,
        /// The version in force at this record.
        version: i64,
        /// The version in force at the first record.
        pack_version: i64,
    },
    /// After resolution the record has no name: neither a base name nor a name.
    #[error("record {record}: no name (neither a base name nor a name)")]
    MissingName {
        /// Position of the record in the pack.
        record: usize,
    },
    /// The concatenated name breaks the character rules of RFC 8428 §4.5.1.
    #[error("record {record}: name `{}` has invalid characters", .name.escape_debug())]
    InvalidName {
        /// Position of the record in the pack.
        record: usize,
        /// The concatenated (base name + name) name.
        name: String,
    },
    /// After resolution the record has neither a value nor a sum (RFC 8428 §4.2).
    #[error("record {record}: neither a value nor a sum")]
    MissingValue {
        /// Position of the record in the pack.
        record: usize,
    },
    /// Adding a base field to its regular field (or `now` to a relative time) overflowed.
    #[error("record {record}: resolved `{field}` is not a finite number")]
    Overflow {
        /// Position of the record in the pack.
        record: usize,
        /// JSON label of the regular field that was resolved.
        field: &'static str,
    },
    /// The `now` passed to [`resolve`](super::resolve) is NaN or infinite.
    #[error("`now` is not a finite number")]
    InvalidNow,
    /// The serializer failed (not expected for packs that pass validation).
    #[error("cannot encode the pack: {0}")]
    Encode(String),
}
