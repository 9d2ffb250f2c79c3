//! Telemetry by observation (RFC 7641): when an always-on device registers resources that are
//! observable and served as SenML, the edge router observes them, and every notification
//! becomes a record — acknowledged (for a Confirmable notification) only once stored.

use foldhash::HashMap;
use std::net::SocketAddr;

use v6iot_sdk::coap::{content_format, link};

/// The request id prefix of the edge's own observe requests (platform ids cannot start with `_`).
pub(super) const OBSERVE_REQ: &str = "_obs:";

/// Observable SenML resources in a registration's link format: (path, the format to ask for,
/// SenML-CBOR preferred). Read with the SDK's RFC 6690 reader (fuzzed, never panics: coap-lite's
/// `LinkFormatParser` panicked on some values a device can send); a document that is not link
/// format names no resource.
pub fn observable_senml(links: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for link in link::parse(links).unwrap_or_default() {
        let formats: Vec<u16> = link
            .attrs
            .iter()
            .filter(|a| a.name == "ct")
            .filter_map(|a| a.value.as_deref())
            .flat_map(|v| v.split(' ').filter_map(|c| c.parse::<u16>().ok()))
            .collect();
        let accept = if formats.contains(&content_format::SENML_CBOR) {
            Some(content_format::SENML_CBOR)
        } else if formats.contains(&content_format::SENML_JSON) {
            Some(content_format::SENML_JSON)
        } else {
            None
        };
        if let (true, Some(accept)) = (link.has("obs"), accept)
            && link.target.starts_with('/')
            && !link.target.contains("//")
        {
            out.push((link.target, accept));
        }
    }
    out
}

/// One observation the edge holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observed {
    pub(super) device: String,
    pub(super) path: String,
    pub(super) peer: SocketAddr,
}

/// The observations of all devices, by token.
#[derive(Debug, Default)]
pub(super) struct Observations {
    by_token: HashMap<[u8; 8], Observed>,
}

impl Observations {
    pub(super) fn insert(&mut self, token: [u8; 8], observed: Observed) {
        self.by_token.insert(token, observed);
    }

    /// The observation a notification with `token` belongs to: it must come from the observed
    /// device — the one it verified as (`identity`, wherever it sends from), or, for a device
    /// known by its address only, from the address it was observed at.
    pub(super) fn get(
        &self,
        token: &[u8],
        peer: SocketAddr,
        identity: Option<&str>,
    ) -> Option<&Observed> {
        let token: [u8; 8] = token.try_into().ok()?;
        self.by_token.get(&token).filter(|o| match identity {
            Some(device) => o.device == device,
            None => o.peer == peer,
        })
    }

    /// Forgets every observation of `device` (deregistered, expired, re-registered).
    pub(super) fn forget(&mut self, device: &str) {
        self.by_token.retain(|_, o| o.device != device);
    }

    /// `device` now sends from `peer`: its notifications come from there.
    pub(super) fn moved(&mut self, device: &str, peer: SocketAddr) {
        for o in self.by_token.values_mut().filter(|o| o.device == device) {
            o.peer = peer;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_token.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_observable_senml_resources() {
        let links = r#"</sensors/temperature>;rt="oic.r.temperature";if="core.s";ct="112 110";title="Temp, inside";obs,</actuators/valve>;ct="0 50";obs,</device/log>;ct=0,</p>;ct=110;obs"#;
        assert_eq!(
            observable_senml(links),
            vec![
                ("/sensors/temperature".to_owned(), 112),
                ("/p".to_owned(), 110)
            ]
        );
        assert!(observable_senml("garbage").is_empty());
        assert!(observable_senml("").is_empty());
    }

    /// The registration payload the fuzz target `edge_ingress_input` found crashing the edge in
    /// coap-lite's link-format parser (`begin > end` slicing a value that ends in an opening quote): now no resource, no panic.
    #[test]
    fn a_value_that_crashed_coap_lites_parser_names_no_resource() {
        let links = "</va,l\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0}e>;ct=\"";
        assert!(observable_senml(links).is_empty());
        assert!(observable_senml("</a>;obs;ct=\"").is_empty());
        assert_eq!(
            observable_senml("</a>;obs;ct=\"112 110\",</b>;ct=110,</c>;obs;ct=0"),
            vec![("/a".to_owned(), content_format::SENML_CBOR)]
        );
    }
}
