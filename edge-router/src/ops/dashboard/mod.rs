//! The live dashboard: a static page (HTML, CSS, JavaScript embedded in the binary: no build
//! step, no CDN, works offline) and its WebSocket feed ([`feed`]) over the [`Board`], which
//! lives on a thread of its own ([`handle`]) so the data path never waits for a query.
//!
//! Access: the page itself holds no data; the feed needs the configured token, which the
//! page takes from the URL's fragment (`/#token=…`, never sent to the server in a request
//! line, so never in a proxy's log) and sends as its first message.

pub mod board;
pub mod feed;
pub mod handle;

use std::sync::Arc;

use v6iot_cloud_bridge::BridgeStats;
use v6iot_cloud_bridge::outbox::OutboxHandle;

pub use board::Board;
pub use handle::BoardHandle;

/// Headers of the dashboard's files: only its own scripts, styles and feed; no framing.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
];

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");
const ICON: &str = include_str!("favicon.svg");

/// The file at `path`: (content type, body).
#[must_use]
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX)),
        "/app.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/app.css" => Some(("text/css; charset=utf-8", STYLE)),
        "/favicon.svg" | "/favicon.ico" => Some(("image/svg+xml", ICON)),
        _ => None,
    }
}

/// What the feed reads.
#[derive(Debug)]
pub struct Dashboard {
    token: String,
    /// The model on its thread, fed by the server loop.
    pub board: BoardHandle,
    /// Publish counters (the publish rate).
    pub bridge: Arc<BridgeStats>,
    /// The outbox gauge.
    pub outbox: Option<OutboxHandle>,
    /// Whether the edge is stopping.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Dashboard {
    /// A dashboard with `token`.
    #[must_use]
    pub fn new(
        token: String,
        board: BoardHandle,
        bridge: Arc<BridgeStats>,
        outbox: Option<OutboxHandle>,
        stopping: Arc<std::sync::atomic::AtomicBool>,
    ) -> Dashboard {
        Dashboard {
            token,
            board,
            bridge,
            outbox,
            stopping,
        }
    }

    /// Whether `offered` is the token (compared in constant time for equal lengths).
    #[must_use]
    pub fn token_matches(&self, offered: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_token_must_match_exactly() {
        let d = Dashboard::new(
            "0123456789abcdef".into(),
            BoardHandle::spawn(Board::new(1), 1).unwrap(),
            Arc::new(BridgeStats::default()),
            None,
            Arc::default(),
        );
        assert!(d.token_matches("0123456789abcdef"));
        assert!(!d.token_matches("0123456789abcdeF"));
        assert!(!d.token_matches("0123456789abcde"));
        assert!(!d.token_matches(""));
    }

    /// The page renders device-supplied text with `textContent` only: no `innerHTML`,
    /// `outerHTML`, `insertAdjacentHTML` or `document.write` anywhere in the script, and
    /// nothing loaded from elsewhere.
    #[test]
    fn the_page_never_parses_data_as_html_and_loads_nothing_from_elsewhere() {
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(bad), "app.js uses {bad}");
        }
        assert!(SCRIPT.contains("textContent"));
        for file in [INDEX, SCRIPT, STYLE] {
            assert!(
                !file.contains("http://") && !file.contains("https://"),
                "{file}"
            );
        }
    }
}
