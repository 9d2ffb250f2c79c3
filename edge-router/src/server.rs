//! The edge router's I/O: the CoAP socket, the outbox files and the MQTT connection, around the
//! sans-IO [`Ingress`]. Nothing here decides anything about the protocol.
//!
//! ```text
//! UDP socket ──datagrams──▶ Ingress ──appends──▶ outbox (group commit, fsync) ──▶ MQTT bridge ──▶ broker
//!      ▲                      │  ▲                        │ result                        │ PUBACK
//!      └──── ACK / 5.03 ──────┘  └──── handle_appended ◀──┘                ack id ◀───────┘
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use v6iot_cloud_bridge::command::Command;
use v6iot_cloud_bridge::fanout::fanout;
use v6iot_cloud_bridge::outbox::{self, AppendError, OutboxConfig, OutboxHandle};
use v6iot_cloud_bridge::topics::Topics;
use v6iot_cloud_bridge::{BridgeEvent, BridgeStats, MqttConfig, WsConfig, run_mqtt, run_websocket};

use crate::config::EdgeConfig;
use crate::ingress::{
    AppendResult, AppendTicket, DownlinkCommand, Ingress, IngressConfig, IngressEvent, IngressStats,
};
use crate::journal::CommandJournal;

/// Most datagrams taken from the socket per wake-up before the loop flushes answers.
const RECV_BATCH: usize = 256;

/// What the running edge router shares with whoever started it (tests, the demo).
#[derive(Debug, Clone)]
pub struct EdgeHandle {
    /// The CoAP address actually bound.
    pub coap_addr: SocketAddr,
    /// MQTT bridge counters.
    pub bridge: Arc<BridgeStats>,
    /// A snapshot of the ingress counters, refreshed by the loop.
    pub ingress: Arc<std::sync::Mutex<IngressStats>>,
}

/// Runs the edge router until `shutdown` completes. `ready` receives the handle once the socket
/// is bound and the outbox open.
pub async fn run(
    config: EdgeConfig,
    ready: Option<tokio::sync::oneshot::Sender<EdgeHandle>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config.mqtt.topic_prefix, &config.site)?;
    let socket = bind_udp(config.coap.listen, config.coap.socket_buffer_bytes)
        .with_context(|| format!("cannot bind CoAP on {}", config.coap.listen))?;
    let coap_addr = socket.local_addr()?;

    let mut outbox_config = OutboxConfig::new(config.data_dir.join("outbox"));
    outbox_config.max_bytes = config.outbox.max_bytes;
    outbox_config.segment_bytes = config.outbox.segment_bytes.min(config.outbox.max_bytes / 2);
    outbox_config.max_batch = config.outbox.max_batch;
    outbox_config.max_batch_delay = Duration::from_millis(config.outbox.max_batch_delay_ms);
    outbox_config.retry_after = Duration::from_secs(config.outbox.retry_after_s.max(1));
    let (outbox, to_publish, acker) = outbox::open(outbox_config)
        .await
        .with_context(|| format!("cannot open the outbox in {}", config.data_dir.display()))?;

    let mut mqtt = MqttConfig::new(&config.mqtt.url, &config.edge_id, topics.clone());
    mqtt.protocol = config.mqtt.protocol;
    mqtt.keep_alive = Duration::from_secs(config.mqtt.keep_alive);
    if let Some(id) = &config.mqtt.client_id {
        mqtt.client_id = id.clone();
    }
    mqtt.username = config.mqtt.username.clone();
    mqtt.password = config.mqtt.password.clone();
    mqtt.ca_file = config.mqtt.ca_file.clone();
    mqtt.client_cert = config.mqtt.client_cert.clone();
    mqtt.client_key = config.mqtt.client_key.clone();
    mqtt.server_name = config.mqtt.server_name.clone();
    mqtt.report_published = false; // one event per record, and the loop below drops them
    let bridge_stats = mqtt.stats.clone();

    // One durable stream, one or two sinks; an id is acknowledged to the outbox only once
    // every sink has it.
    let sinks = if config.websocket.is_some() { 2 } else { 1 };
    let (mut ports, fanout_task) = fanout(
        to_publish,
        move |id| acker.ack(id),
        NonZeroUsize::new(sinks).unwrap_or(NonZeroUsize::MIN),
        NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
    );
    let (command_tx, mut command_rx) = mpsc::channel::<Command>(1024);
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<BridgeEvent>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut sink_tasks = Vec::new();
    if let Some(ws) = &config.websocket
        && let Some(port) = ports.pop()
    {
        let mut wsc = WsConfig::new(&ws.url);
        wsc.ca_file = ws.ca_file.clone();
        wsc.client_cert = ws.client_cert.clone();
        wsc.client_key = ws.client_key.clone();
        wsc.server_name = ws.server_name.clone();
        let events = event_tx.clone();
        let stop = stop_signal(stop_rx.clone());
        sink_tasks.push(tokio::spawn(async move {
            run_websocket(wsc, port.outgoing, port.acks, Some(events), stop).await
        }));
    }
    let Some(mqtt_port) = ports.pop() else {
        anyhow::bail!("internal: no MQTT sink port");
    };
    let stop = stop_signal(stop_rx.clone());
    sink_tasks.push(tokio::spawn(async move {
        run_mqtt(
            mqtt,
            mqtt_port.outgoing,
            mqtt_port.acks,
            command_tx,
            Some(event_tx),
            stop,
        )
        .await
    }));
    tokio::spawn(async move {
        while let Some(e) = event_rx.recv().await {
            match e {
                BridgeEvent::Published { .. } => {}
                other => tracing::info!(event = ?other, "mqtt"),
            }
        }
    });

    let boot_ms = unix_ms();
    let mut ingress_config = IngressConfig::new(topics.clone());
    ingress_config.max_body = config.coap.max_body;
    ingress_config.min_lifetime = Duration::from_secs(config.coap.min_lifetime);
    ingress_config.max_lifetime = Duration::from_secs(config.coap.max_lifetime);
    ingress_config.lab_accept_unregistered = config.coap.lab_accept_unregistered;
    ingress_config.listen_window = Duration::from_secs(config.coap.queue_listen_window_s);
    if config.coap.lab_accept_unregistered {
        tracing::warn!(
            "LAB MODE: telemetry from unregistered sources is accepted (coap.lab_accept_unregistered)"
        );
    }
    let mut ingress = Ingress::new(ingress_config, boot_ms);
    let mut journal =
        CommandJournal::open(&config.data_dir.join("commands.jsonl")).with_context(|| {
            format!(
                "cannot open the command queue in {}",
                config.data_dir.display()
            )
        })?;
    for command in journal.pending() {
        ingress.restore_command(command);
    }
    let stats = Arc::new(std::sync::Mutex::new(IngressStats::default()));
    if let Some(ready) = ready {
        let _ = ready.send(EdgeHandle {
            coap_addr,
            bridge: bridge_stats,
            ingress: stats.clone(),
        });
    }
    tracing::info!(%coap_addr, site = %config.site, edge = %config.edge_id, "edge router running");

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Vec<AppendTicket>, AppendResult)>();
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(shutdown);
    loop {
        // Queued commands are on disk before anything they caused is sent.
        let mut entries = Vec::new();
        while let Some(e) = ingress.poll_journal() {
            entries.push(e);
        }
        if let Err(e) = journal.write(&entries) {
            tracing::error!(error = %e, "command queue journal write failed");
        }
        flush(&socket, &mut ingress, &outbox, &done_tx).await;
        if let Ok(mut s) = stats.lock() {
            *s = *ingress.stats();
        }
        let deadline = ingress.poll_timeout();
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let now = Instant::now();
                let wall = unix_ms();
                match received {
                    Ok((len, peer)) => {
                        if let Some(bytes) = buf.get(..len) {
                            ingress.handle_datagram(now, wall, peer, bytes);
                        }
                        for _ in 1..RECV_BATCH {
                            match socket.try_recv_from(&mut buf) {
                                Ok((len, peer)) => {
                                    if let Some(bytes) = buf.get(..len) {
                                        ingress.handle_datagram(now, wall, peer, bytes);
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "receive error"),
                }
            }
            Some((tickets, result)) = done_rx.recv() => {
                for t in tickets {
                    ingress.handle_appended(t, result);
                }
                while let Ok((tickets, result)) = done_rx.try_recv() {
                    for t in tickets {
                        ingress.handle_appended(t, result);
                    }
                }
            }
            Some(command) = command_rx.recv() => {
                let wall = unix_ms();
                let ttl_ms = u64::try_from(command.ttl.as_millis()).unwrap_or(u64::MAX);
                let cmd = DownlinkCommand {
                    device: command.device,
                    req: command.req,
                    method: command.method.as_str().to_owned(),
                    path: command.path,
                    payload: command.payload,
                    content_format: command.content_format,
                    expires_unix_ms: wall.saturating_add(ttl_ms),
                    confirmable: command.confirmable,
                    observe: false,
                    accept: None,
                };
                ingress.handle_command(Instant::now(), wall, cmd);
            }
            () = sleep_until(deadline) => ingress.handle_timeout(Instant::now(), unix_ms()),
            () = &mut shutdown => break,
        }
        while let Some(event) = ingress.poll_event() {
            log_event(&event);
        }
    }
    tracing::info!("edge router stopping");
    let _ = stop_tx.send(true);
    outbox.close().await;
    for task in sink_tasks {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), task).await {
            tracing::warn!(error = %e, "a sink ended with an error");
        }
    }
    fanout_task.abort();
    Ok(())
}

/// Sends what the ingress has to send and hands its appends to the outbox (one group per call).
async fn flush(
    socket: &UdpSocket,
    ingress: &mut Ingress,
    outbox: &OutboxHandle,
    done: &mpsc::UnboundedSender<(Vec<AppendTicket>, AppendResult)>,
) {
    let mut tickets = Vec::new();
    let mut messages = Vec::new();
    let mut fire_and_forget = Vec::new();
    while let Some(a) = ingress.poll_append() {
        match a.ticket {
            Some(t) => {
                tickets.push(t);
                messages.push(a.message);
            }
            None => fire_and_forget.push(a.message),
        }
    }
    if !messages.is_empty() {
        let handle = outbox.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let result = match handle.append(messages).await {
                Ok(_) => AppendResult::Stored,
                Err(AppendError::Full { retry_after }) => {
                    tracing::warn!(
                        records = tickets.len(),
                        ?retry_after,
                        "outbox full: devices told to retry later (5.03)"
                    );
                    AppendResult::Full { retry_after }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "records not stored");
                    AppendResult::Failed
                }
            };
            let _ = done.send((tickets, result));
        });
    }
    if !fire_and_forget.is_empty() {
        let handle = outbox.clone();
        tokio::spawn(async move {
            if let Err(e) = handle.append(fire_and_forget).await {
                tracing::warn!(error = %e, "status messages not stored");
            }
        });
    }
    while let Some((to, bytes)) = ingress.poll_transmit() {
        let sent = match socket.try_send_to(&bytes, to) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                socket.send_to(&bytes, to).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::debug!(peer = %to, error = %e, "send failed");
        }
    }
}

/// A UDP socket with large kernel buffers (bursts from many devices), for tokio.
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `[::]` also takes IPv4 (mapped addresses): one socket for dual-stack plants.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::warn!(error = %e, "cannot enlarge the UDP send buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn log_event(event: &IngressEvent) {
    match event {
        IngressEvent::Refused { peer, code, reason } => {
            tracing::info!(%peer, %code, %reason, "refused")
        }
        other => tracing::info!(event = ?other, "device"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
