//! One dashboard WebSocket session: the token first, then the page's queries in and an
//! update out every second (and at once after a query): the window of rows it asked for, the
//! security events it has not seen, the selected device's sparkline, the outbox gauge and the
//! publish rate.
//!
//! Bounded: messages and frames up to [`MAX_MESSAGE`] bytes (tungstenite refuses more); text
//! only; a message that is not one of ours, a binary one, a wrong token or none within
//! [`AUTH_TIMEOUT`] closes the session and is counted.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::Dashboard;
use super::board::{Query, View};
use crate::ops::http::HttpStats;

/// The largest message or frame taken from the page, bytes.
pub const MAX_MESSAGE: usize = 4096;
/// How long the page has to send its token.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an update goes out.
pub const UPDATE_EVERY: Duration = Duration::from_secs(1);

/// What the page sends (JSON text messages with a `type`).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromPage {
    /// The token (the first message).
    Auth {
        /// As configured.
        token: String,
    },
    /// The window of rows it shows.
    Query(Query),
    /// The device whose sparkline it shows.
    Select {
        /// Its id.
        device: String,
    },
}

impl FromPage {
    /// Parses one message (never panics); `None` for anything that is not one of ours.
    #[must_use]
    pub fn parse(text: &str) -> Option<FromPage> {
        serde_json::from_str(text).ok()
    }
}

/// Runs one session on `stream` (the 101 answer already sent; `rest` is what was read past
/// the request head).
pub async fn run(stream: TcpStream, rest: Vec<u8>, d: &Dashboard, stats: &HttpStats) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws =
        WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await;
    let authed = match tokio::time::timeout(AUTH_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            matches!(FromPage::parse(t.as_str()), Some(FromPage::Auth { token }) if d.token_matches(&token))
        }
        _ => false,
    };
    if !authed {
        HttpStats::inc(&stats.token_refused);
        tracing::info!("dashboard: a session without the right token was refused");
        let _ = ws.send(Message::text(r#"{"type":"refused"}"#)).await;
        close(&mut ws, CloseCode::Policy, "token").await;
        return;
    }
    if session(&mut ws, d).await.is_err() {
        HttpStats::inc(&stats.bad_frames);
        close(&mut ws, CloseCode::Unsupported, "bad message").await;
    }
}

/// A message the session does not take.
struct Bad;

async fn session(ws: &mut WebSocketStream<TcpStream>, d: &Dashboard) -> Result<(), Bad> {
    let mut query = Query {
        limit: 50,
        ..Query::default()
    };
    let mut selected: Option<String> = None;
    let mut seen_event = 0u64;
    let mut rate = Rate::new(d.bridge.snapshot().acked, Instant::now());
    let mut tick = tokio::time::interval(UPDATE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            incoming = ws.next() => match incoming {
                None | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(Message::Text(t))) => match FromPage::parse(t.as_str()) {
                    Some(FromPage::Query(q)) => query = q,
                    Some(FromPage::Select { device }) => {
                        selected = Some(device.chars().take(256).collect());
                    }
                    Some(FromPage::Auth { .. }) | None => return Err(Bad),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) => return Err(Bad),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "dashboard: feed closed");
                    return Err(Bad);
                }
            },
        }
        let Some(update) = update(d, &query, selected.as_deref(), &mut seen_event, &mut rate).await
        else {
            tracing::warn!("dashboard: the board's thread has ended; closing the feed");
            return Ok(());
        };
        if ws.send(Message::text(update)).await.is_err() {
            return Ok(());
        }
    }
}

/// The publish rate from the acknowledged counter.
struct Rate {
    last: u64,
    at: Instant,
    per_second: f64,
}

impl Rate {
    fn new(acked: u64, at: Instant) -> Rate {
        Rate {
            last: acked,
            at,
            per_second: 0.0,
        }
    }

    fn update(&mut self, acked: u64, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        if dt >= 0.5 {
            self.per_second = acked.saturating_sub(self.last) as f64 / dt;
            self.last = acked;
            self.at = now;
        }
        self.per_second
    }
}

/// One update, read on the board's thread (the feed waits for it, the data path does not);
/// `None` when that thread has ended.
async fn update(
    d: &Dashboard,
    query: &Query,
    selected: Option<&str>,
    seen_event: &mut u64,
    rate: &mut Rate,
) -> Option<String> {
    let (q, seen, device) = (query.clone(), *seen_event, selected.map(str::to_owned));
    let View {
        page,
        events,
        spark,
        devices,
        not_shown,
    } = d
        .board
        .read(move |b| b.view(&q, seen, device.as_deref()))
        .await?;
    if let Some(last) = events.last() {
        *seen_event = last.seq;
    }
    let bridge = d.bridge.snapshot();
    let outbox = d.outbox.as_ref().map(|o| o.stats());
    let update = serde_json::json!({
        "type": "update",
        "page": page,
        "events": events,
        "spark": spark.map(|points| serde_json::json!({"device": selected, "points": points})),
        "summary": {
            "devices": devices,
            "not_shown": not_shown,
            "outbox_records": outbox.as_ref().map_or(0, |o| o.pending_messages),
            "outbox_bytes": outbox.as_ref().map_or(0, |o| o.stored_bytes),
            "outbox_max_bytes": outbox.as_ref().map_or(0, |o| o.max_bytes),
            "publish_rate": rate.update(bridge.acked, Instant::now()),
            "published": bridge.acked,
            "mqtt_connected": bridge.connects > bridge.disconnects,
            "stopping": d.stopping.load(Ordering::Relaxed),
        }
    });
    Some(update.to_string())
}

async fn close(ws: &mut WebSocketStream<TcpStream>, code: CloseCode, reason: &'static str) {
    let _ = ws
        .close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .await;
}
