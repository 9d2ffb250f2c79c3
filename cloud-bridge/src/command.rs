//! Commands from the platform: `{prefix}/{site}/{device}/cmd/{req}` carrying
//!
//! ```json
//! {"method": "PUT", "path": "/actuators/valve", "payload": "on",
//!  "content_format": 0, "ttl": 60, "confirmable": true}
//! ```
//!
//! `method` is GET, PUT, POST or DELETE; `path` starts with `/`; the payload is either
//! `payload` (a string, sent as its UTF-8 bytes) or `payload_b64` (standard base64), or
//! neither (empty); `content_format` is the CoAP Content-Format number; `ttl` is how long the
//! command may wait for its device, in seconds (default 60); `confirmable` asks for a CON
//! request (default true). Unknown fields are ignored.
//!
//! A command that cannot be parsed is not forwarded: [`rejection_payload`] is what the bridge
//! publishes to `…/cmd/{req}/result` instead.

use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use crate::topics::{Topics, valid_level};

/// How long a command may wait for its device when `ttl` is absent.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The longest `ttl` accepted (7 days).
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// The request method of a command (the CoAP method the edge will use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
}

impl Method {
    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    fn parse(s: &str) -> Option<Method> {
        [Method::Get, Method::Put, Method::Post, Method::Delete]
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// A parsed command for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Device id (topic level).
    pub device: String,
    /// Request id (topic level); the result goes to `…/{device}/cmd/{req}/result`.
    pub req: String,
    /// Request method.
    pub method: Method,
    /// Resource path, starting with `/` (may carry a `?query`).
    pub path: String,
    /// Request payload.
    pub payload: Vec<u8>,
    /// CoAP Content-Format of the payload, if given.
    pub content_format: Option<u16>,
    /// How long the command may wait for its device.
    pub ttl: Duration,
    /// Whether the edge should send a confirmable (CON) request.
    pub confirmable: bool,
    /// When the bridge received it.
    pub received_at: Instant,
}

impl Command {
    /// When the command expires.
    pub fn expires_at(&self) -> Instant {
        self.received_at + self.ttl
    }

    /// Whether the command has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at()
    }
}

/// Why a command was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The topic is not `{prefix}/{site}/{device}/cmd/{req}` of this site.
    #[error("topic `{0}` is not a command topic of this site")]
    NotACommandTopic(String),
    /// The device level is not a usable topic level.
    #[error("device `{0}` is not a valid device id (empty, starts with _, or has / + # NUL)")]
    BadDevice(String),
    /// The request level is not a usable topic level.
    #[error("request id `{0}` is not a valid request id (empty, starts with _, or has / + # NUL)")]
    BadReq(String),
    /// The payload is not a JSON object of the expected shape.
    #[error("payload is not a valid command JSON object: {0}")]
    BadJson(String),
    /// `method` is absent.
    #[error("missing `method` (GET, PUT, POST or DELETE)")]
    MissingMethod,
    /// `method` is not one of the four.
    #[error("unknown method `{0}` (expected GET, PUT, POST or DELETE)")]
    UnknownMethod(String),
    /// `path` is absent.
    #[error("missing `path`")]
    MissingPath,
    /// `path` does not start with `/`, or has whitespace or control characters.
    #[error("`path` `{0}` must start with / and have no whitespace or control characters")]
    BadPath(String),
    /// Both payload forms are present.
    #[error("give `payload` or `payload_b64`, not both")]
    BothPayloads,
    /// `payload_b64` is not base64.
    #[error("`payload_b64` is not valid base64: {0}")]
    BadBase64(String),
    /// `ttl` is 0 or too large.
    #[error("`ttl` must be 1..={MAX_TTL_SECS} seconds, got {0}")]
    BadTtl(u64),
    /// The edge could not take the command.
    #[error("{0}")]
    NotAccepted(&'static str),
}

/// A command that was not forwarded, and where its error result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `(device, req)` from the topic, when the topic had that shape (then the error result
    /// goes to `topics.command_result(device, req)`).
    pub levels: Option<(String, String)>,
    /// Why.
    pub error: CommandError,
}

impl Rejection {
    /// The request id for the result (empty when the topic had none).
    pub fn req(&self) -> &str {
        self.levels.as_ref().map_or("", |(_, r)| r.as_str())
    }
}

#[derive(Deserialize)]
struct Raw {
    method: Option<String>,
    path: Option<String>,
    payload: Option<String>,
    payload_b64: Option<String>,
    content_format: Option<u16>,
    ttl: Option<u64>,
    confirmable: Option<bool>,
}

/// The `(device, req)` levels of `topic` if it has the shape `{prefix}/{site}/X/cmd/Y` for
/// this site, whether or not X and Y are valid levels.
fn command_levels(topics: &Topics, topic: &str) -> Option<(String, String)> {
    let filter = topics.command_filter();
    let base = filter.strip_suffix("/+/cmd/+")?;
    let rest = topic.strip_prefix(base)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let (device, cmd, req) = (levels.next()?, levels.next()?, levels.next()?);
    (levels.next().is_none() && cmd == "cmd").then(|| (device.to_owned(), req.to_owned()))
}

/// Parses one command message. Never panics, whatever the bytes.
pub fn parse_command(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    received_at: Instant,
) -> Result<Command, Rejection> {
    let (device, req) = match topics.parse_command(topic) {
        Some((device, req)) => (device.to_owned(), req.to_owned()),
        None => {
            // Not forwarded; find out which level is wrong, and whether a result topic exists.
            let levels = command_levels(topics, topic);
            let error = match &levels {
                None => CommandError::NotACommandTopic(topic.to_owned()),
                Some((device, _)) if !valid_level(device) => {
                    CommandError::BadDevice(device.clone())
                }
                Some((_, req)) => CommandError::BadReq(req.clone()),
            };
            return Err(Rejection { levels, error });
        }
    };
    let reject = |error| Rejection {
        levels: Some((device.clone(), req.clone())),
        error,
    };
    let raw: Raw = serde_json::from_slice(payload)
        .map_err(|e| reject(CommandError::BadJson(e.to_string())))?;
    let method = match raw.method {
        None => return Err(reject(CommandError::MissingMethod)),
        Some(m) => Method::parse(&m).ok_or_else(|| reject(CommandError::UnknownMethod(m)))?,
    };
    let path = raw.path.ok_or_else(|| reject(CommandError::MissingPath))?;
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(reject(CommandError::BadPath(path)));
    }
    let payload = match (raw.payload, raw.payload_b64) {
        (Some(_), Some(_)) => return Err(reject(CommandError::BothPayloads)),
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| reject(CommandError::BadBase64(e.to_string())))?,
        (None, None) => Vec::new(),
    };
    let ttl = match raw.ttl {
        None => DEFAULT_TTL,
        Some(s @ 1..=MAX_TTL_SECS) => Duration::from_secs(s),
        Some(s) => return Err(reject(CommandError::BadTtl(s))),
    };
    Ok(Command {
        device,
        req,
        method,
        path,
        payload,
        content_format: raw.content_format,
        ttl,
        confirmable: raw.confirmable.unwrap_or(true),
        received_at,
    })
}

/// The error result: `{"req":…,"status":"rejected","error":"…"}`.
pub fn rejection_payload(req: &str, reason: &str) -> Vec<u8> {
    serde_json::json!({ "req": req, "status": "rejected", "error": reason })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::new("v6iot", "plant-a").unwrap()
    }

    fn parse(topic: &str, payload: &str) -> Result<Command, Rejection> {
        parse_command(&topics(), topic, payload.as_bytes(), Instant::now())
    }

    fn error(topic: &str, payload: &str) -> CommandError {
        parse(topic, payload).unwrap_err().error
    }

    const T: &str = "v6iot/plant-a/valve-7/cmd/r42";

    #[test]
    fn parses_a_full_command() {
        let c = parse(
            T,
            r#"{"method":"PUT","path":"/actuators/valve","payload":"on","content_format":0,
                "ttl":30,"confirmable":false,"extra":1}"#,
        )
        .unwrap();
        assert_eq!((c.device.as_str(), c.req.as_str()), ("valve-7", "r42"));
        assert_eq!(c.method, Method::Put);
        assert_eq!(c.path, "/actuators/valve");
        assert_eq!(c.payload, b"on");
        assert_eq!(c.content_format, Some(0));
        assert_eq!(c.ttl, Duration::from_secs(30));
        assert!(!c.confirmable);
        assert_eq!(c.expires_at(), c.received_at + Duration::from_secs(30));
        assert!(!c.is_expired(c.received_at));
        assert!(c.is_expired(c.received_at + Duration::from_secs(30)));
    }

    #[test]
    fn defaults_and_base64_payloads() {
        let c = parse(T, r#"{"method":"get","path":"/sensors/temperature"}"#).unwrap();
        assert_eq!(c.method, Method::Get);
        assert!(c.payload.is_empty());
        assert_eq!(c.content_format, None);
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert!(c.confirmable);
        let c = parse(
            T,
            r#"{"method":"POST","path":"/x?y=1","payload_b64":"AAH/"}"#,
        )
        .unwrap();
        assert_eq!(c.payload, [0, 1, 255]);
        assert_eq!(c.path, "/x?y=1");
        let c = parse(T, r#"{"method":"DELETE","path":"/log"}"#).unwrap();
        assert_eq!(c.method.as_str(), "DELETE");
    }

    #[test]
    fn rejects_each_bad_field_with_a_reason() {
        assert!(matches!(error(T, "not json"), CommandError::BadJson(_)));
        assert!(matches!(error(T, ""), CommandError::BadJson(_)));
        assert!(matches!(error(T, "[1,2]"), CommandError::BadJson(_)));
        assert!(matches!(
            error(T, r#"{"method":"PUT","path":"/a","ttl":"x"}"#),
            CommandError::BadJson(_)
        ));
        assert!(matches!(
            error(T, r#"{"method":"PUT","path":"/a","payload":{"a":1}}"#),
            CommandError::BadJson(_)
        ));
        assert!(matches!(
            error(T, r#"{"method":"PUT","path":"/a","content_format":70000}"#),
            CommandError::BadJson(_)
        ));
        assert_eq!(error(T, r#"{"path":"/a"}"#), CommandError::MissingMethod);
        assert_eq!(
            error(T, r#"{"method":"PATCH","path":"/a"}"#),
            CommandError::UnknownMethod("PATCH".into())
        );
        assert_eq!(error(T, r#"{"method":"GET"}"#), CommandError::MissingPath);
        assert_eq!(
            error(T, r#"{"method":"GET","path":"a"}"#),
            CommandError::BadPath("a".into())
        );
        assert_eq!(
            error(T, r#"{"method":"GET","path":"/a b"}"#),
            CommandError::BadPath("/a b".into())
        );
        assert_eq!(
            error(
                T,
                r#"{"method":"PUT","path":"/a","payload":"x","payload_b64":"eA=="}"#
            ),
            CommandError::BothPayloads
        );
        assert!(matches!(
            error(T, r#"{"method":"PUT","path":"/a","payload_b64":"!!"}"#),
            CommandError::BadBase64(_)
        ));
        assert_eq!(
            error(T, r#"{"method":"PUT","path":"/a","ttl":0}"#),
            CommandError::BadTtl(0)
        );
        assert_eq!(
            error(T, r#"{"method":"PUT","path":"/a","ttl":99999999}"#),
            CommandError::BadTtl(99_999_999)
        );
        let r = parse(T, r#"{"method":"PATCH","path":"/a"}"#).unwrap_err();
        assert_eq!(r.levels, Some(("valve-7".into(), "r42".into())));
        assert_eq!(r.req(), "r42");
    }

    #[test]
    fn rejects_bad_levels_but_keeps_them_for_the_result_topic() {
        let ok = r#"{"method":"GET","path":"/a"}"#;
        let r = parse("v6iot/plant-a/_edge/cmd/1", ok).unwrap_err();
        assert_eq!(r.error, CommandError::BadDevice("_edge".into()));
        assert_eq!(r.levels, Some(("_edge".into(), "1".into())));
        let r = parse("v6iot/plant-a/d/cmd/_x", ok).unwrap_err();
        assert_eq!(r.error, CommandError::BadReq("_x".into()));
        let r = parse("v6iot/plant-a//cmd/1", ok).unwrap_err();
        assert_eq!(r.error, CommandError::BadDevice(String::new()));
        for t in [
            "v6iot/plant-b/d/cmd/1",
            "v6iot/plant-a/d/cmd/1/result",
            "v6iot/plant-a/d/x/1",
        ] {
            let r = parse(t, ok).unwrap_err();
            assert_eq!(r.levels, None, "{t}");
            assert!(matches!(r.error, CommandError::NotACommandTopic(_)));
            assert_eq!(r.req(), "");
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut x: u32 = 12345;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = parse_command(&topics(), T, &bytes, Instant::now());
        }
    }

    #[test]
    fn rejection_payload_is_json_with_the_reason() {
        let p = rejection_payload("r1", "missing `path`");
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["req"], "r1");
        assert_eq!(v["status"], "rejected");
        assert_eq!(v["error"], "missing `path`");
        // the topic the result goes to
        assert_eq!(
            topics().command_result("valve-7", "r1"),
            "v6iot/plant-a/valve-7/cmd/r1/result"
        );
    }
}
