//! The server's operations side: starting the metrics/dashboard listener, the stop's
//! bookkeeping, and reloads (SIGHUP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use v6iot_cloud_bridge::BridgeStats;
use v6iot_cloud_bridge::outbox::OutboxHandle;

use crate::config::EdgeConfig;
use crate::gateway::Gateway;
use crate::ops::dashboard::handle::UPDATE_QUEUE;
use crate::ops::dashboard::{Board, BoardHandle, Dashboard};
use crate::ops::http::{self, HttpStats, OpsState};
use crate::ops::live::Live;
use crate::ops::metrics::{self, Sources};

/// The running listener.
pub(super) struct Listener {
    pub(super) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub(super) fn stop(self) {
        self.task.abort();
    }
}

/// Binds `ops.listen` (when set) and serves metrics and, with a token, the dashboard.
pub(super) async fn start(
    config: &EdgeConfig,
    bridge: Arc<BridgeStats>,
    outbox: &OutboxHandle,
) -> anyhow::Result<(Live, Option<Listener>)> {
    let topic_head = format!("{}/{}/", config.mqtt.topic_prefix, config.site);
    let Some(addr) = config.ops.listen else {
        return Ok((Live::new(topic_head, None), None));
    };
    let token = config.ops.token()?;
    let listener = http::bind(addr).await?;
    let addr = listener.local_addr()?;
    let board = token
        .as_ref()
        .map(|_| BoardHandle::spawn(Board::new(config.ops.dashboard_max_devices), UPDATE_QUEUE))
        .transpose()?;
    // (the configuration was checked at start: a bad [[radio]] cannot reach here)
    let pans = config
        .border()
        .ok()
        .flatten()
        .map(|b| b.pans)
        .unwrap_or_default();
    let live = Live::new(topic_head, board.clone())
        .with_lowpan_prefixes(pans.into_iter().map(|p| p.prefix));
    let dashboard = match (token, board) {
        (Some(token), Some(board)) => Some(Dashboard::new(
            token,
            board,
            bridge.clone(),
            Some(outbox.clone()),
            live.stopping.clone(),
        )),
        _ => None,
    };
    let stats = Arc::new(HttpStats::default());
    let registry = metrics::registry(Sources {
        edge: live.snapshot.clone(),
        bridge,
        outbox: Some(outbox.clone()),
        http: stats.clone(),
        board: live.board.as_ref().map(|b| b.stats().clone()),
    });
    tracing::info!(
        %addr,
        dashboard = dashboard.is_some(),
        "metrics on http://{addr}/metrics{}",
        if dashboard.is_some() { ", dashboard on /" } else { "" }
    );
    let state = Arc::new(OpsState {
        registry,
        dashboard,
        stats,
    });
    let task = tokio::spawn(http::serve(listener, state, config.ops.max_connections));
    Ok((live, Some(Listener { addr, task })))
}

/// A stop under way: new requests get 5.03; it ends when nothing is in flight and the
/// broker has every record, or at the deadline.
pub(super) struct Stop {
    pub(super) deadline: Instant,
}

impl Stop {
    /// Begins the stop.
    pub(super) fn begin(config: &EdgeConfig, gateway: &mut Gateway, live: &Live) -> Stop {
        gateway
            .ingress_mut()
            .start_draining(config.ops.stop_retry_after_s);
        live.stop();
        tracing::info!(
            flush_s = config.ops.stop_flush_s,
            "stopping: new requests get 5.03, finishing what is in flight and flushing the outbox"
        );
        Stop {
            deadline: Instant::now() + Duration::from_secs(config.ops.stop_flush_s),
        }
    }

    /// Whether the loop may end: nothing in flight and the outbox flushed, or time is up.
    pub(super) fn done(&self, in_flight: bool, outbox: &OutboxHandle) -> bool {
        let flushed = !in_flight && outbox.stats().pending_messages == 0;
        flushed || Instant::now() >= self.deadline
    }
}

/// After the loop: says what the outbox keeps for the next start.
pub(super) fn report_outbox(outbox: &OutboxHandle) {
    let s = outbox.stats();
    if s.pending_messages == 0 {
        tracing::info!("stopped: the outbox is flushed, the broker has every record");
    } else {
        tracing::warn!(
            records = s.pending_messages,
            bytes = s.stored_bytes,
            "stopped with {} records ({} bytes) not yet acknowledged by the broker: they stay in \
             the outbox and are published after the next start",
            s.pending_messages,
            s.stored_bytes
        );
    }
}

/// Applies what a new configuration can change live (the rate limits and quarantine
/// settings; the log levels were applied by whoever read the file) and names the keys that
/// need a restart.
pub(super) fn reload(current: &mut EdgeConfig, new: EdgeConfig, gateway: &mut Gateway) {
    if new.security.limits() != current.security.limits() {
        gateway.set_limits(new.security.limits());
        tracing::info!("reload: new rate limits and quarantine settings in force");
    }
    let mut restart = Vec::new();
    let mut live = new.clone();
    live.security = current.security.clone();
    live.log = current.log.clone();
    macro_rules! differs {
        ($($field:ident),*) => {
            $(if live.$field != current.$field { restart.push(stringify!($field)); })*
        };
    }
    differs!(
        site, edge_id, data_dir, coap, mqtt, websocket, outbox, registry, commands, audit, ops
    );
    let (a, b) = (&new.security, &current.security);
    if (a.require_oscore, a.sender_persist_step, a.report_interval_s)
        != (b.require_oscore, b.sender_persist_step, b.report_interval_s)
    {
        restart.push("security (require_oscore, sender_persist_step, report_interval_s)");
    }
    if restart.is_empty() {
        tracing::info!("reload: done");
    } else {
        tracing::warn!(
            sections = %restart.join(", "),
            "reload: these changed and take effect only after a restart"
        );
    }
    let keep = new.security.clone();
    current.security = keep;
    current.log = new.log;
}
