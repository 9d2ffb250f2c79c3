//! The operations listener: a small HTTP/1.1 server on tokio for a handful of routes —
//! `GET /metrics`, the dashboard's static files and its WebSocket feed (`/ws`). One request
//! per connection (`Connection: close`), so there is no pipelining to get wrong.
//!
//! Bounded everywhere: [`MAX_HEAD`] bytes of request head (more: 431 and close), the head
//! within [`HEAD_TIMEOUT`], `max_connections` at once (more: closed at once), request heads
//! parsed by `httparse` (malformed: 400 and close), no request bodies (a body: 413). Every
//! refusal is counted in [`HttpStats`] and shows in `/metrics`. Nothing here panics on input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::ops::dashboard::{self, Dashboard};
use crate::ops::metrics;

/// The largest request head taken, bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The address could not be bound.
    #[error("cannot bind the metrics/dashboard listener on {addr}: {source}")]
    Bind {
        /// The address (`ops.listen`).
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The listener's counters (exported under `v6iot_http_*` and `v6iot_dashboard_*`).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests answered, by route: metrics, page, feed, not found.
    pub(crate) metrics: AtomicU64,
    pub(crate) page: AtomicU64,
    pub(crate) feed: AtomicU64,
    pub(crate) not_found: AtomicU64,
    /// Closed: a head that does not parse, a wrong method, a body.
    pub(crate) malformed: AtomicU64,
    /// Closed: a head over [`MAX_HEAD`].
    pub(crate) oversized: AtomicU64,
    /// Closed: no head within [`HEAD_TIMEOUT`].
    pub(crate) timed_out: AtomicU64,
    /// Closed at once: `max_connections` were open.
    pub(crate) over_limit: AtomicU64,
    /// Feed sessions refused: no token, a wrong one, or not in time.
    pub(crate) token_refused: AtomicU64,
    /// Feed sessions ended by a malformed, oversized or unexpected frame or message.
    pub(crate) bad_frames: AtomicU64,
}

impl HttpStats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (outcome, count) of every request, for `/metrics`.
    #[must_use]
    pub fn requests(&self) -> Vec<(&'static str, u64)> {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("metrics", r(&self.metrics)),
            ("page", r(&self.page)),
            ("feed", r(&self.feed)),
            ("not_found", r(&self.not_found)),
            ("malformed", r(&self.malformed)),
            ("oversized", r(&self.oversized)),
            ("timed_out", r(&self.timed_out)),
            ("over_limit", r(&self.over_limit)),
        ]
    }

    /// (cause, count) of feed sessions refused or ended for bad input.
    #[must_use]
    pub fn feed_refusals(&self) -> Vec<(&'static str, u64)> {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("token", r(&self.token_refused)),
            ("bad_frame", r(&self.bad_frames)),
        ]
    }
}

/// What the listener serves.
#[derive(Debug)]
pub struct OpsState {
    /// The metrics registry (its collector reads the edge's counters).
    pub registry: Registry,
    /// The dashboard, when a token is configured.
    pub dashboard: Option<Dashboard>,
    /// Counters.
    pub stats: Arc<HttpStats>,
}

/// Binds `addr`.
///
/// # Errors
///
/// [`OpsError::Bind`], naming the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, OpsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind { addr, source })
}

/// Serves `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "ops listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            HttpStats::inc(&state.stats.over_limit);
            drop(stream);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            connection(stream, &state).await;
            drop(permit);
        });
    }
}

/// A parsed request head: only what the routes need.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// `GET`, …
    pub method: String,
    /// The request target (`/metrics`).
    pub path: String,
    /// The `Accept` header.
    pub accept: String,
    /// `Upgrade: websocket`.
    pub upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<String>,
    /// A `Content-Length` other than 0, or a `Transfer-Encoding`.
    pub has_body: bool,
}

/// What reading a head gave.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadResult {
    /// A head, and how many bytes of the buffer it took.
    Complete(Head, usize),
    /// More bytes needed.
    Partial,
    /// Not HTTP/1.x.
    Malformed,
}

/// Parses a request head from `buf` (sans-IO; never panics, whatever the bytes).
pub fn parse_head(buf: &[u8]) -> HeadResult {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return HeadResult::Partial,
        Err(_) => return HeadResult::Malformed,
    };
    let mut head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        ..Head::default()
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("accept") {
            head.accept = value.into_owned();
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket = value.eq_ignore_ascii_case("websocket");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value.trim().to_owned());
        } else if (h.name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            head.has_body = true;
        }
    }
    HeadResult::Complete(head, len)
}

/// Reads one head; `None` when the connection is to be closed (already answered or counted).
async fn read_head(stream: &mut TcpStream, stats: &HttpStats) -> Option<(Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let read = async {
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            match parse_head(&buf) {
                HeadResult::Complete(_, len) if len > MAX_HEAD => return Some(Err(431)),
                HeadResult::Complete(head, len) => {
                    let rest = buf.get(len..).unwrap_or_default().to_vec();
                    return Some(Ok((head, rest)));
                }
                HeadResult::Malformed => return Some(Err(400)),
                HeadResult::Partial if buf.len() > MAX_HEAD => return Some(Err(431)),
                HeadResult::Partial => {}
            }
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, read).await {
        Err(_) => {
            HttpStats::inc(&stats.timed_out);
            None
        }
        Ok(None) => None,
        Ok(Some(Ok(got))) => Some(got),
        Ok(Some(Err(code))) => {
            HttpStats::inc(if code == 431 {
                &stats.oversized
            } else {
                &stats.malformed
            });
            let _ = respond(stream, code, "text/plain", &[], b"bad request\n").await;
            linger(stream).await;
            None
        }
    }
}

/// After an answer to a request that was not read whole: reads (and drops) what the client
/// still sends, bounded in bytes and time, so that closing does not reset the connection
/// before the client has read the answer.
async fn linger(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024usize;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

async fn connection(mut stream: TcpStream, state: &OpsState) {
    let Some((head, rest)) = read_head(&mut stream, &state.stats).await else {
        return;
    };
    let stats = &state.stats;
    if head.method != "GET" || head.has_body {
        HttpStats::inc(&stats.malformed);
        let code = if head.has_body { 413 } else { 405 };
        let _ = respond(&mut stream, code, "text/plain", &[], b"only GET\n").await;
        return;
    }
    let path = head.path.split('?').next().unwrap_or_default();
    let result = match (path, &state.dashboard) {
        ("/metrics", _) => {
            HttpStats::inc(&stats.metrics);
            match metrics::encode(&state.registry, &head.accept) {
                Ok((body, ctype)) => respond(&mut stream, 200, ctype, &[], body.as_bytes()).await,
                Err(_) => respond(&mut stream, 500, "text/plain", &[], b"encoding failed\n").await,
            }
        }
        ("/ws", Some(d)) if head.upgrade_websocket => {
            let Some(key) = head.ws_key.as_deref() else {
                HttpStats::inc(&stats.malformed);
                let _ = respond(&mut stream, 400, "text/plain", &[], b"no key\n").await;
                return;
            };
            HttpStats::inc(&stats.feed);
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            dashboard::feed::run(stream, rest, d, stats).await;
            return;
        }
        (route, Some(_)) => match dashboard::asset(route) {
            Some((ctype, body)) => {
                HttpStats::inc(&stats.page);
                respond(
                    &mut stream,
                    200,
                    ctype,
                    dashboard::SECURITY_HEADERS,
                    body.as_bytes(),
                )
                .await
            }
            None => not_found(&mut stream, stats).await,
        },
        (_, None) => not_found(&mut stream, stats).await,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "ops listener: write failed");
    }
}

async fn not_found(stream: &mut TcpStream, stats: &HttpStats) -> std::io::Result<()> {
    HttpStats::inc(&stats.not_found);
    respond(stream, 404, "text/plain", &[], b"not found\n").await
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\n",
        reason(code),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn heads_parse_or_are_refused() {
        let HeadResult::Complete(h, n) =
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\nrest")
        else {
            panic!("complete");
        };
        assert_eq!(n, 54);
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.accept.as_str()),
            ("GET", "/metrics", "text/plain")
        );
        assert!(!h.has_body && !h.upgrade_websocket);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHo"),
            HeadResult::Partial
        );
        assert_eq!(
            parse_head(b"\x16\x03\x01 tls hello\r\n\r\n"),
            HeadResult::Malformed
        );
        let HeadResult::Complete(h, _) = parse_head(
            b"GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: abc\r\nContent-Length: 5\r\n\r\n",
        ) else {
            panic!("complete");
        };
        assert!(h.upgrade_websocket && h.has_body);
        assert_eq!(h.ws_key.as_deref(), Some("abc"));
        // more headers than parsed: refused, not a panic
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(req.as_bytes()), HeadResult::Malformed);
    }
}
