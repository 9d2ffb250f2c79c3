//! Broker and sink addresses: `mqtt://`, `mqtts://`, `ws://` and `wss://` URLs, split into the
//! parts the connector needs (scheme, host, port, path).
//!
//! Only what the bridge needs is accepted: no user info (credentials are configured apart), no
//! fragment. IPv6 literals are written in brackets (`mqtt://[::1]:1883`).

use std::net::IpAddr;

/// The transport a URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `mqtt://` (also `tcp://`): MQTT over TCP, default port 1883.
    Mqtt,
    /// `mqtts://` (also `ssl://`): MQTT over TLS, default port 8883.
    Mqtts,
    /// `ws://`: WebSocket over TCP, default port 80.
    Ws,
    /// `wss://`: WebSocket over TLS, default port 443.
    Wss,
}

impl Scheme {
    /// Whether the scheme runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    /// Whether this is one of the WebSocket schemes.
    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }
}

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad URL `{url}`: {why}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A parsed broker or sink URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query for WebSocket URLs (at least `/`); empty for MQTT URLs.
    pub path: String,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let bad = |why| UrlError {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("no scheme (expected mqtt://, mqtts://, ws:// or wss://)"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => Scheme::Mqtt,
            "mqtts" | "ssl" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(bad("unknown scheme (expected mqtt, mqtts, ws or wss)")),
        };
        if rest.contains('#') {
            return Err(bad("a fragment (#) is not allowed"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad(
                "user info is not allowed: configure username and password",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("the bracketed host is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains([' ', '[', ']', ':']) && !authority.starts_with('[') {
            return Err(bad("IPv6 literals must be written in brackets"));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("the port is not a number in 1..=65535")),
                Ok(p) => p,
            },
        };
        let path = if scheme.is_websocket() {
            if path.is_empty() {
                "/".to_owned()
            } else if path.starts_with('?') {
                format!("/{path}")
            } else {
                path.to_owned()
            }
        } else if path.is_empty() || path == "/" {
            String::new()
        } else {
            return Err(bad("an MQTT URL has no path"));
        };
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port`, with brackets around an IPv6 literal (as in a `Host` header).
    pub fn authority(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mqtt_urls() {
        let e = Endpoint::parse("mqtt://broker.example:1884").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.path.as_str()),
            (Scheme::Mqtt, "broker.example", 1884, "")
        );
        let e = Endpoint::parse("mqtts://[::1]").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Mqtts, "::1", 8883)
        );
        assert_eq!(e.authority(), "[::1]:8883");
        assert_eq!(e.ip(), Some("::1".parse().unwrap()));
        assert!(e.scheme.is_tls());
        let e = Endpoint::parse("MQTT://127.0.0.1/").unwrap();
        assert_eq!((e.port, e.authority()), (1883, "127.0.0.1:1883".to_owned()));
    }

    #[test]
    fn parses_websocket_urls_with_paths() {
        let e = Endpoint::parse("wss://sink.example/ingest?site=a").unwrap();
        assert_eq!(
            (e.scheme, e.port, e.path.as_str()),
            (Scheme::Wss, 443, "/ingest?site=a")
        );
        let e = Endpoint::parse("ws://[::1]:9000").unwrap();
        assert_eq!((e.port, e.path.as_str()), (9000, "/"));
        let e = Endpoint::parse("ws://h?x=1").unwrap();
        assert_eq!(e.path, "/?x=1");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "broker:1883",
            "http://broker",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/path",
            "mqtt://[::1",
            "mqtt://[nope]:1",
            "mqtt://::1:1883",
            "mqtt://[::1]x",
            "ws://h/#frag",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url} should be refused");
        }
    }
}
