//! Telemetry normalisation: a device's SenML (CBOR or JSON) becomes one resolved SenML-JSON
//! array for the platform, with absolute times, full names and the record id.

use coap_lite::ResponseType;
use v6iot_sdk::coap::content_format;
use v6iot_sdk::senml;

/// Record ids: `base × 2^20 + n`, unique per edge router across restarts when `base` is the
/// boot time in Unix milliseconds.
#[derive(Debug)]
pub(super) struct RecordIds {
    base: u64,
    next: u64,
}

impl RecordIds {
    pub(super) fn new(base: u64) -> RecordIds {
        RecordIds {
            base: base.saturating_mul(1 << 20),
            next: 0,
        }
    }

    pub(super) fn next(&mut self) -> u64 {
        self.next += 1;
        self.base.wrapping_add(self.next)
    }
}

/// Why a telemetry body was refused.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) code: ResponseType,
    pub(super) reason: String,
}

fn refuse(code: ResponseType, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// Decodes, validates and resolves a SenML body; returns the JSON array to publish, whose first
/// record carries `"rid"` (the record id, as a decimal string).
pub(super) fn normalise(
    format: Option<u32>,
    body: &[u8],
    unix_ms: u64,
    id: u64,
) -> Result<Vec<u8>, Refusal> {
    if body.is_empty() {
        return Err(refuse(ResponseType::BadRequest, "empty telemetry body"));
    }
    let pack = match format.map(|f| u16::try_from(f).unwrap_or(u16::MAX)) {
        Some(content_format::SENML_CBOR) => senml::from_cbor(body),
        Some(content_format::SENML_JSON) => senml::from_json(body),
        None => senml::from_cbor(body).or_else(|_| senml::from_json(body)),
        Some(other) => {
            return Err(refuse(
                ResponseType::UnsupportedContentFormat,
                format!(
                    "content format {other}: telemetry is SenML-CBOR (112) or SenML-JSON (110)"
                ),
            ));
        }
    }
    .map_err(|e| refuse(ResponseType::BadRequest, format!("invalid SenML: {e}")))?;
    let resolved = senml::resolve(&pack, unix_ms as f64 / 1000.0)
        .map_err(|e| refuse(ResponseType::BadRequest, format!("invalid SenML: {e}")))?;
    if resolved.is_empty() {
        return Err(refuse(
            ResponseType::BadRequest,
            "SenML pack has no records",
        ));
    }
    let records: Vec<senml::Record> = resolved
        .iter()
        .map(senml::ResolvedRecord::to_record)
        .collect();
    let json = senml::to_json_vec(&records)
        .map_err(|e| refuse(ResponseType::BadRequest, format!("invalid SenML: {e}")))?;
    // `[{…` → `[{"rid":"…",…`: the id rides in the first record as an extension label.
    let rest = json.get(2..).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"[{\"rid\":\"");
    push_decimal(&mut out, id);
    out.extend_from_slice(b"\"");
    if rest.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// Appends `n` in decimal (once per record: no formatting machinery).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn record_ids_are_written_in_decimal() {
        for n in [0, 7, 10, 42, 1_000_001, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
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
