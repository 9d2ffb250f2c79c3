//! Telemetry normalisation: a device's SenML (CBOR or JSON) becomes one resolved SenML-JSON
//! array for the platform, with absolute times, full names and the record id; record ids.

use coap_lite::ResponseType;
use v6iot_sdk::coap::content_format;
use v6iot_sdk::senml::{self, Encoding};

/// Record ids: `base × 2^20 + n`, unique per edge router across restarts when `base` is the
/// boot time in Unix milliseconds.
#[derive(Debug)]
pub(in crate::ingress) struct RecordIds {
    base: u64,
    next: u64,
}

impl RecordIds {
    pub(in crate::ingress) fn new(base: u64) -> RecordIds {
        RecordIds {
            base: base.saturating_mul(1 << 20),
            next: 0,
        }
    }

    pub(in crate::ingress) fn next(&mut self) -> u64 {
        self.next += 1;
        self.base.wrapping_add(self.next)
    }
}

/// Why a telemetry body was refused.
#[derive(Debug)]
pub(in crate::ingress) struct Refusal {
    pub(in crate::ingress) code: ResponseType,
    pub(in crate::ingress) reason: String,
}

fn refuse(code: ResponseType, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// The encoding of a telemetry body by its Content-Format: `None` when it names none (CBOR is
/// tried, else JSON: no body is both); 4.15 for any format but SenML's, 4.00 for no body.
fn encoding(format: Option<u32>, body: &[u8]) -> Result<Option<Encoding>, Refusal> {
    if body.is_empty() {
        return Err(refuse(ResponseType::BadRequest, "empty telemetry body"));
    }
    match format.map(|f| u16::try_from(f).unwrap_or(u16::MAX)) {
        Some(content_format::SENML_CBOR) => Ok(Some(Encoding::Cbor)),
        Some(content_format::SENML_JSON) => Ok(Some(Encoding::Json)),
        None => Ok(None),
        Some(other) => Err(refuse(
            ResponseType::UnsupportedContentFormat,
            format!("content format {other}: telemetry is SenML-CBOR (112) or SenML-JSON (110)"),
        )),
    }
}

/// Decodes, validates and resolves a SenML body; returns the JSON array to publish, whose first
/// record carries `"rid"` (the record id, as a decimal string). One pass over the body, its
/// strings borrowed, the JSON written straight into the returned buffer
/// ([`senml::resolve_to_json`]).
pub(in crate::ingress) fn normalise(
    format: Option<u32>,
    body: &[u8],
    unix_ms: u64,
    id: u64,
) -> Result<Vec<u8>, Refusal> {
    let encoding = encoding(format, body)?;
    let mut digits = itoa::Buffer::new();
    let rid = digits.format(id);
    let now = unix_ms as f64 / 1000.0;
    // Room for the whole answer up front: JSON is two to three times the CBOR (quoted labels,
    // the base name repeated in every record), the rid comes on top.
    let mut out = Vec::with_capacity(body.len() * 3 + 64);
    let mut resolve = |e| senml::resolve_to_json(e, body, now, Some(("rid", rid)), &mut out);
    let result = match encoding {
        Some(e) => resolve(e),
        None => resolve(Encoding::Cbor).or_else(|_| resolve(Encoding::Json)),
    };
    match result {
        Ok(0) => Err(refuse(
            ResponseType::BadRequest,
            "SenML pack has no records",
        )),
        Ok(_) => Ok(out),
        Err(e) => Err(refuse(
            ResponseType::BadRequest,
            format!("invalid SenML: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use v6iot_sdk::senml::{PackBuilder, Record};

    /// `normalise` as it was before the one-pass path: the owned pack, `resolve`, `to_record`,
    /// `to_json_vec`, then `"rid"` spliced into the first record. The reference for the
    /// properties below (the Content-Format and empty-body checks are `normalise`'s own:
    /// `refuses_bad_bodies_with_clear_codes` holds them).
    fn reference(
        format: Option<u32>,
        body: &[u8],
        unix_ms: u64,
        id: u64,
    ) -> Result<Vec<u8>, Refusal> {
        let decode = |e| match e {
            Encoding::Json => senml::from_json(body),
            _ => senml::from_cbor(body),
        };
        let pack = match encoding(format, body)? {
            Some(e) => decode(e),
            None => decode(Encoding::Cbor).or_else(|_| decode(Encoding::Json)),
        }
        .map_err(|e| refuse(ResponseType::BadRequest, e.to_string()))?;
        let resolved = senml::resolve(&pack, unix_ms as f64 / 1000.0)
            .map_err(|e| refuse(ResponseType::BadRequest, e.to_string()))?;
        if resolved.is_empty() {
            return Err(refuse(ResponseType::BadRequest, "no records"));
        }
        let records: Vec<senml::Record> = resolved
            .iter()
            .map(senml::ResolvedRecord::to_record)
            .collect();
        let json = senml::to_json_vec(&records)
            .map_err(|e| refuse(ResponseType::BadRequest, e.to_string()))?;
        let rest = json.get(2..).unwrap_or_default();
        let mut out = format!("[{{\"rid\":\"{id}\"").into_bytes();
        if rest.first() != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        Ok(out)
    }

    /// Same bytes out, or the same CoAP code.
    fn agree(format: Option<u32>, body: &[u8], unix_ms: u64, id: u64) -> Result<(), TestCaseError> {
        match (
            reference(format, body, unix_ms, id),
            normalise(format, body, unix_ms, id),
        ) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b))
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.code, b.code),
            (a, b) => prop_assert!(false, "{body:02x?}: reference {a:?}, normalise {b:?}"),
        }
        Ok(())
    }

    /// Packs as devices send them: a base name and time, a few readings.
    fn device_pack() -> impl Strategy<Value = senml::Pack> {
        let reading = (
            "[a-z][a-z0-9_]{0,10}",
            proptest::option::of("[A-Za-z%]{1,4}"),
            prop_oneof![
                any::<f64>(),
                (-1000i32..1000).prop_map(f64::from),
                Just(21.5)
            ],
            proptest::option::of(-100.0f64..100.0),
        )
            .prop_map(|(n, u, v, t)| Record {
                n: Some(n),
                u,
                v: Some(v),
                t,
                ..Record::default()
            });
        (
            "urn:dev:[a-z0-9]{1,8}:",
            proptest::option::of(prop_oneof![1.7e9f64..1.8e9, -10.0f64..10.0]),
            proptest::collection::vec(reading, 0..4),
        )
            .prop_map(|(bn, bt, readings)| {
                let mut b = PackBuilder::new().base_name(bn);
                if let Some(bt) = bt {
                    b = b.base_time(bt);
                }
                for r in readings {
                    b.push(r);
                }
                b.build()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_normalise_matches_the_owned_path(
            pack in device_pack(),
            unix_ms in 1_700_000_000_000u64..1_800_000_000_000,
            id in any::<u64>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let Ok(cbor) = senml::to_cbor(&pack) else { return Ok(()) };
            let Ok(json) = senml::to_json_vec(&pack) else { return Ok(()) };
            for (format, mut body) in [(Some(112), cbor.clone()), (Some(110), json.clone()), (None, cbor), (None, json)] {
                agree(format, &body, unix_ms, id)?;
                for (at, byte) in &edits {
                    if !body.is_empty() {
                        let i = at.index(body.len());
                        body[i] = *byte;
                    }
                }
                agree(format, &body, unix_ms, id)?;
                agree(Some(60), &body, unix_ms, id)?;
            }
        }
    }

    #[test]
    fn resolves_and_tags_with_the_record_id() {
        let body = br#"[{"bn":"urn:dev:x:","bt":1700000000,"n":"temp","u":"Cel","v":21.5},{"n":"rh","u":"%RH","v":40,"t":1}]"#;
        let out = normalise(Some(110), body, 1_700_000_100_000, 42).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["rid"], "42");
        assert_eq!(v[0]["n"], "urn:dev:x:temp");
        assert_eq!(v[0]["t"], 1_700_000_000.0);
        assert_eq!(v[1]["n"], "urn:dev:x:rh");
        assert_eq!(v[1]["t"], 1_700_000_001.0);
        assert!(v[1].get("rid").is_none());
    }

    #[test]
    fn refuses_bad_bodies_with_clear_codes() {
        assert_eq!(
            normalise(Some(50), b"{}", 0, 1).unwrap_err().code,
            ResponseType::UnsupportedContentFormat
        );
        assert_eq!(
            normalise(Some(110), b"[{\"v\":\"x\"}]", 0, 1)
                .unwrap_err()
                .code,
            ResponseType::BadRequest
        );
        assert_eq!(
            normalise(None, b"\xff\x00", 0, 1).unwrap_err().code,
            ResponseType::BadRequest
        );
        assert_eq!(
            normalise(Some(112), b"", 0, 1).unwrap_err().code,
            ResponseType::BadRequest
        );
    }
}
