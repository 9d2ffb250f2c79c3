//! SenML, Sensor Measurement Lists (RFC 8428), in JSON and CBOR.
//!
//! A SenML *pack* is an array of *records*. A [`Record`] holds the fields of RFC 8428 Table 1
//! under their SenML labels (`bn`, `bt`, …, `n`, `u`, `v`, …), all optional; base fields apply
//! to later records too. The codecs turn a pack into bytes and back:
//!
//! | representation | content format | media type | encode | decode |
//! |---|---|---|---|---|
//! | JSON (§5) | [`CONTENT_FORMAT_JSON`] = 110 | `application/senml+json` | [`to_json`], [`to_json_vec`] | [`from_json`] |
//! | CBOR (§6) | [`CONTENT_FORMAT_CBOR`] = 112 | `application/senml+cbor` | [`to_cbor`] | [`from_cbor`] |
//!
//! [`resolve`] applies the base fields and makes times absolute against a `now` passed in,
//! giving [`ResolvedRecord`]s (§4.6). Everything here is pure: no I/O, no clock.
//!
//! Decoders never panic on any input. They reject malformed input, wrong types, more than one
//! value field in a record, unknown labels ending in `_` (§4.4), unsupported or mixed versions
//! and non-finite numbers with a [`SenmlError`] that names the record and field; other unknown
//! labels are ignored. Encoders refuse packs that [`validate`] rejects.
//!
//! # Example
//!
//! A device encodes a temperature reading to CBOR; the receiver decodes and resolves it.
//!
//! ```
//! use v6iot_sdk::senml::{self, PackBuilder, Record, Value};
//!
//! let pack = PackBuilder::new()
//!     .base_name("urn:dev:mac:0024befffe804ff1:")
//!     .record(Record::measurement("temp", "Cel", 23.5))
//!     .build();
//! let bytes = senml::to_cbor(&pack)?;
//! // [{-2: "urn:dev:mac:0024befffe804ff1:", 0: "temp", 1: "Cel", 2: 23.5}]
//! assert_eq!(bytes[..3], [0x81, 0xa4, 0x21]);
//!
//! let decoded = senml::from_cbor(&bytes)?;
//! assert_eq!(decoded, pack);
//!
//! // No time in the record: it was measured "now", which the receiver supplies.
//! let now = 1_700_000_000.0;
//! let resolved = senml::resolve(&decoded, now)?;
//! assert_eq!(resolved[0].name, "urn:dev:mac:0024befffe804ff1:temp");
//! assert_eq!(resolved[0].unit.as_deref(), Some("Cel"));
//! assert_eq!(resolved[0].value, Some(Value::Float(23.5)));
//! assert_eq!(resolved[0].time, now);
//! # Ok::<(), senml::SenmlError>(())
//! ```

mod base64url;
mod cbor;
mod cbor_value;
mod error;
mod json;
mod raw;
mod record;
mod resolve;
mod resolved_json;
mod ser;

pub use cbor::{from_cbor, to_cbor};
pub use error::SenmlError;
pub use json::{from_json, to_json, to_json_vec};
pub use record::{Pack, PackBuilder, Record, SENML_VERSION, validate};
pub use resolve::{RELATIVE_TIME_LIMIT, ResolvedRecord, Value, is_valid_name, resolve};
pub use resolved_json::{Encoding, resolve_to_json};

/// CoAP Content-Format of `application/senml+json` (RFC 8428 §12.3).
pub const CONTENT_FORMAT_JSON: u16 = 110;
/// CoAP Content-Format of `application/senml+cbor` (RFC 8428 §12.3).
pub const CONTENT_FORMAT_CBOR: u16 = 112;
/// Media type of SenML JSON.
pub const MEDIA_TYPE_JSON: &str = "application/senml+json";
/// Media type of SenML CBOR.
pub const MEDIA_TYPE_CBOR: &str = "application/senml+cbor";
