//! The edge router's I/O: the CoAP socket, the outbox files, the MQTT connection and the
//! registry thread, around the sans-IO [`Gateway`] and its [`Ingress`]. Nothing here decides
//! anything about the protocol.
//!
//! ```text
//! UDP socket ──▶ Gateway (OSCORE) ──▶ Ingress ──appends──▶ outbox (group commit, fsync) ──▶ MQTT bridge ──▶ broker
//!      ▲            │   ▲               │  ▲                        │ result                      │ PUBACK
//!      │            │   └── protect ◀───┘  └──── handle_appended ◀──┘              ack id ◀───────┘
//!      │            └─ poll_persist ──▶ registry thread (SQLite) ── handle_persisted ─┐
//!      └──── ACK / 5.03 (held until the device's replay floor is durable) ◀───────────┘
//! ```

#[cfg(test)]
mod audit_full;
mod lowpan;
mod ops;
mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use v6iot_cloud_bridge::command::Command;
use v6iot_cloud_bridge::fanout::fanout;
use v6iot_cloud_bridge::message::NewMessage;
use v6iot_cloud_bridge::outbox::{self, AppendError, OutboxConfig, OutboxHandle};
use v6iot_cloud_bridge::tls::TlsOptions;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_cloud_bridge::{BridgeEvent, BridgeStats, MqttConfig, WsConfig, run_mqtt, run_websocket};

use crate::audit::checkpointer::CheckpointConfig;
use crate::audit::{AuditEvent, AuditKind};
use crate::config::EdgeConfig;
use crate::gateway::{
    Gateway, GatewayConfig, GatewayEvent, GatewayStats, KeyChange, audit_address, audit_time,
};
use crate::ingress::{
    AppendResult, AppendTicket, DownlinkCommand, DownlinkStats, Ingress, IngressConfig,
    IngressEvent, IngressStats,
};
use crate::journal::{CommandJournal, JournalWriter};
use crate::ops::live::Live;
use crate::ops::metrics::RadioSnapshot;
use crate::registry_worker::{FromRegistry, RegistryWorker};

/// Most datagrams taken from the socket per wake-up before the loop flushes answers.
const RECV_BATCH: usize = 256;
/// Appends of telemetry on their way to the outbox at once: one being written and synced,
/// one waiting for the next sync. What arrives meanwhile is gathered in the loop and goes as
/// one append when one of them completes (group commit without a task or a message per
/// wake-up).
const APPENDS_IN_FLIGHT: usize = 2;

/// What the running edge router shares with whoever started it (tests, the demo).
#[derive(Debug, Clone)]
pub struct EdgeHandle {
    /// The CoAP address actually bound.
    pub coap_addr: SocketAddr,
    /// MQTT bridge counters.
    pub bridge: Arc<BridgeStats>,
    /// A snapshot of the ingress counters, refreshed by the loop.
    pub ingress: Arc<std::sync::Mutex<IngressStats>>,
    /// A snapshot of the authentication gateway's counters, refreshed by the loop.
    pub gateway: Arc<std::sync::Mutex<GatewayStats>>,
    /// A snapshot of the border router's counters (empty without radios), refreshed every
    /// 250 ms.
    pub border: Arc<std::sync::Mutex<crate::border::stats::BorderStats>>,
    /// The metrics/dashboard listener's address actually bound (`ops.listen`).
    pub ops_addr: Option<SocketAddr>,
}

/// How often the gateway's counters are logged (when they changed).
const STATS_EVERY: Duration = Duration::from_millis(250);

/// Runs the edge router until `shutdown` completes. `ready` receives the handle once the socket
/// is bound, which happens last: after the outbox is open and every device's OSCORE context is
/// built, so the edge answers from its first datagram.
pub async fn run(
    config: EdgeConfig,
    ready: Option<tokio::sync::oneshot::Sender<EdgeHandle>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_reloads(config, ready, shutdown, None).await
}

/// [`run`], taking new configurations (SIGHUP) from `reloads`: what can change live is
/// applied, what needs a restart is named in the log.
pub async fn run_with_reloads(
    mut config: EdgeConfig,
    ready: Option<tokio::sync::oneshot::Sender<EdgeHandle>>,
    shutdown: impl Future<Output = ()>,
    reloads: Option<mpsc::UnboundedReceiver<EdgeConfig>>,
) -> anyhow::Result<()> {
    let topics = Topics::new(&config.mqtt.topic_prefix, &config.site)?;
    let mut outbox_config = OutboxConfig::new(config.data_dir.join("outbox"));
    outbox_config.max_bytes = config.outbox.max_bytes;
    outbox_config.segment_bytes = config.outbox.segment_bytes.min(config.outbox.max_bytes / 2);
    outbox_config.max_batch = config.outbox.max_batch;
    outbox_config.max_batch_delay = Duration::from_millis(config.outbox.max_batch_delay_ms);
    outbox_config.min_sync_interval = Duration::from_micros(config.outbox.min_sync_interval_us);
    outbox_config.retry_after = Duration::from_secs(config.outbox.retry_after_s.max(1));
    let (outbox, to_publish, acker) = outbox::open(outbox_config)
        .await
        .with_context(|| format!("cannot open the outbox in {}", config.data_dir.display()))?;

    let mut mqtt = MqttConfig::new(&config.mqtt.url, &config.edge_id, topics.clone());
    mqtt.protocol = config.mqtt.protocol;
    mqtt.keep_alive = Duration::from_secs(config.mqtt.keep_alive);
    mqtt.max_in_flight = config.mqtt.max_in_flight;
    if let Some(id) = &config.mqtt.client_id {
        mqtt.client_id = id.clone();
    }
    mqtt.username = config.mqtt.username.clone();
    mqtt.password = config.mqtt.password.clone();
    mqtt.tls = TlsOptions {
        ca_file: config.mqtt.ca_file.clone(),
        client_cert: config.mqtt.client_cert.clone(),
        client_key: config.mqtt.client_key.clone(),
        server_name: config.mqtt.server_name.clone(),
    };
    mqtt.report_published = false; // one event per record, and the loop below drops them
    let bridge_stats = mqtt.stats.clone();
    let (mut live, ops_listener) = ops::start(&config, bridge_stats.clone(), &outbox).await?;

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
        wsc.tls = TlsOptions {
            ca_file: ws.ca_file.clone(),
            client_cert: ws.client_cert.clone(),
            client_key: ws.client_key.clone(),
            server_name: ws.server_name.clone(),
        };
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
    ingress_config.commands = config.commands.limits().context("commands.allow_devices")?;
    if config.coap.lab_accept_unregistered {
        tracing::warn!(
            "LAB MODE: telemetry from unregistered sources is accepted (coap.lab_accept_unregistered)"
        );
    }
    let require_oscore = config.security.require_oscore && !config.coap.lab_accept_unregistered;
    if !require_oscore {
        tracing::warn!(
            "LAB MODE: OSCORE is NOT required — plain CoAP requests are accepted unauthenticated \
             (security.require_oscore = false, or coap.lab_accept_unregistered); never in production"
        );
    }
    let registry = config
        .open_registry()
        .with_context(|| "cannot open the device registry".to_owned())?;
    for d in registry.duplicate_secrets() {
        tracing::error!(device = %d.device, holder = %d.holder, "{d}");
    }
    let (devices, load_devices) = match registry.device_keys() {
        Ok((devices, problems)) => {
            for p in problems {
                tracing::error!(error = %p, "device left out");
            }
            (devices, true)
        }
        Err(crate::registry_db::RegistryError::NoSealKey) if !require_oscore => {
            tracing::warn!("no registry seal key: no OSCORE devices (lab mode)");
            (Vec::new(), false)
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "cannot load the devices' OSCORE credentials (set registry.seal_key_file or \
                 V6IOT_SEAL_KEY; or, in a lab, security.require_oscore = false)",
            ));
        }
    };
    let (registry_tx, mut registry_rx) = mpsc::unbounded_channel::<FromRegistry>();
    let checkpoints = CheckpointConfig {
        file: Some(config.audit.checkpoint_path(&config.data_dir)),
        every: Duration::from_secs(config.audit.checkpoint_every_s),
        min_gap: Duration::from_secs(config.audit.checkpoint_min_gap_s),
        edge: config.edge_id.clone(),
    };
    let worker = RegistryWorker::start(
        registry,
        load_devices,
        checkpoints,
        config.registry.audit_lane_rows(),
        registry_tx,
    )
    .context("cannot start the registry thread")?;
    let ingress = Ingress::new(ingress_config, boot_ms);
    let mut echo_seed = [0u8; 8];
    getrandom::fill(&mut echo_seed).context("no random numbers for the Echo values")?;
    let gateway_config = GatewayConfig {
        require_oscore,
        persist_step: config.security.sender_persist_step,
        limits: config.security.limits(),
        edge_id: config.edge_id.clone(),
        report_interval: Duration::from_secs(config.security.report_interval_s),
        echo_seed: u64::from_le_bytes(echo_seed),
        ..GatewayConfig::default()
    };
    let security_topic = topics.edge_security(&config.edge_id);
    let mut gateway = Gateway::new(ingress, gateway_config);
    gateway.handle_devices(boot_ms, devices);
    tracing::info!(
        devices = gateway.device_count(),
        require_oscore,
        "authentication gateway ready"
    );
    let mut journal =
        CommandJournal::open(&config.data_dir.join("commands.jsonl")).with_context(|| {
            format!(
                "cannot open the command queue in {}",
                config.data_dir.display()
            )
        })?;
    for command in journal.pending() {
        gateway.ingress_mut().restore_command(command);
    }
    let mut journal = JournalWriter::new(journal);
    let stats = Arc::new(std::sync::Mutex::new(IngressStats::default()));
    let gateway_stats = Arc::new(std::sync::Mutex::new(GatewayStats::default()));
    let mut border = lowpan::BorderIo::open(&config)
        .await
        .context("cannot start the border router")?;
    let border_stats = Arc::new(std::sync::Mutex::new(
        border
            .as_ref()
            .map(lowpan::BorderIo::stats)
            .unwrap_or_default(),
    ));
    let mut logged_border = crate::border::stats::BorderStats::default();
    // The CoAP socket is bound only now, with every device's OSCORE context built: a
    // datagram that finds the port open is answered at once. Bound earlier, a registry of a
    // million devices kept requests unanswered in the socket buffer (or dropped them) for the
    // 10–17 s the keyring takes to build (issue 14); closed, the port refuses them and a
    // device retransmits.
    let (socket, local_addresses) =
        bind_udp(config.coap.listen, config.coap.socket_buffer_bytes)
            .with_context(|| format!("cannot bind CoAP on {}", config.coap.listen))?;
    let coap_addr = socket.local_addr()?;
    if let Some(ready) = ready {
        let _ = ready.send(EdgeHandle {
            coap_addr,
            bridge: bridge_stats,
            ingress: stats.clone(),
            gateway: gateway_stats.clone(),
            border: border_stats.clone(),
            ops_addr: ops_listener.as_ref().map(|l| l.addr),
        });
    }
    tracing::info!(%coap_addr, site = %config.site, edge = %config.edge_id, "edge router running");

    let mut receiver = udp::Receiver::new(local_addresses);
    let sender = udp::SendThread::start(&socket).context("cannot start the send thread")?;
    let mut out = Vec::new();
    let mut appends = Appends::default();
    let mut stats_tick = tokio::time::interval(STATS_EVERY);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged_stats = GatewayStats::default();
    let mut logged_commands = DownlinkStats::default();
    tokio::pin!(shutdown);
    let mut reloads = reloads;
    let mut stopping: Option<ops::Stop> = None;
    live.tick(&gateway);
    loop {
        // The command journal is written on the blocking pool, one batch at a time; the
        // commands in a batch go out once it is durable (the downlink holds them till then).
        if journal.is_idle()
            && let Some(batch) = gateway.ingress_mut().poll_journal()
        {
            journal.start(batch);
        }
        flush(
            &mut gateway,
            &outbox,
            &mut appends,
            &security_topic,
            &mut live,
        );
        while let Some((peer, bytes)) = gateway.poll_transmit() {
            // Devices on a PAN are answered through the radio.
            match border.as_mut() {
                Some(b) => out.extend(b.route_gateway_datagram(peer, bytes)),
                None => out.push((peer, bytes)),
            }
        }
        if let Some(b) = border.as_mut() {
            b.flush();
        }
        live.sent(out.len());
        sender.send(&mut out);
        drain_side_effects(&mut gateway, &worker, &mut live);
        if let Some(stop) = &stopping {
            let in_flight = !appends.in_flight.is_empty()
                || !appends.messages.is_empty()
                || gateway.ingress().waiting() > 0;
            if stop.done(in_flight, &outbox) {
                break;
            }
        }
        if let Ok(mut s) = stats.lock() {
            *s = *gateway.ingress().stats();
        }
        if let Ok(mut s) = gateway_stats.lock() {
            *s = *gateway.stats();
        }
        let deadline = [
            gateway.poll_timeout(),
            border.as_ref().and_then(|b| b.router.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            received = receiver.recv(&socket) => {
                let now = Instant::now();
                let wall = unix_ms();
                let mut got = match received {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(error = %e, "receive error");
                        0
                    }
                };
                let mut taken = 0;
                while got > 0 {
                    live.received(got);
                    for (peer, bytes) in receiver.datagrams() {
                        match peer {
                            Some(peer) => gateway.handle_datagram(now, wall, peer, bytes),
                            None => tracing::debug!("datagram without an IP source dropped"),
                        }
                    }
                    taken += got;
                    if got < udp::RECV_SLOTS || taken >= RECV_BATCH {
                        break;
                    }
                    got = receiver.try_recv(&socket).unwrap_or(0);
                }
                // The outbox reader, the fan-out and the MQTT session share this thread: let
                // them have a turn after every batch taken in. Otherwise a socket that is
                // always readable keeps the loop going until tokio's budget runs out, and
                // under overload the edge takes in far more than it publishes.
                if taken > 0 {
                    tokio::task::yield_now().await;
                }
            }
            Some(input) = lowpan::next(&mut border) => {
                if let Some(b) = border.as_mut() {
                    b.take_ready(input, RECV_BATCH, &mut gateway);
                }
            }
            Some((tickets, result)) = appends.in_flight.next(), if !appends.in_flight.is_empty() => {
                let now = Instant::now();
                for t in tickets {
                    gateway.handle_appended(now, t, result);
                }
                appends.start(&outbox);
            }
            written = journal.finished() => {
                let (id, outcome) = written?;
                gateway.handle_journal_written(Instant::now(), unix_ms(), id, outcome);
            }
            Some(message) = registry_rx.recv() => {
                let mut next = Some(message);
                while let Some(m) = next {
                    match m {
                        FromRegistry::Persisted { id, ok } => {
                            gateway.handle_persisted(Instant::now(), id, ok);
                        }
                        FromRegistry::Devices(devices) => {
                            live.devices(&devices);
                            gateway.handle_devices(unix_ms(), devices);
                        }
                        FromRegistry::Checkpoint(m) => {
                            tracing::debug!(rows = m.rows, head = %m.head, "audit checkpoint");
                            publish(&outbox, &security_topic, m.to_json());
                        }
                    }
                    next = registry_rx.try_recv().ok();
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
                gateway.handle_command(Instant::now(), wall, cmd);
            }
            _ = stats_tick.tick() => {
                if let Some(b) = border.as_mut() {
                    b.flush_capture();
                    let now_border = b.stats();
                    if now_border != logged_border {
                        lowpan::log_stats(&now_border, b.counters());
                        logged_border = now_border.clone();
                    }
                    live.radio(RadioSnapshot {
                        border: now_border.clone(),
                        io: b.counters().snapshot(),
                    });
                    if let Ok(mut s) = border_stats.lock() {
                        *s = now_border;
                    }
                }
                live.tick(&gateway);
                let now_stats = *gateway.stats();
                if now_stats != logged_stats {
                    log_gateway_stats(&now_stats);
                    logged_stats = now_stats;
                }
                let commands = *gateway.ingress().command_stats();
                if commands != logged_commands {
                    log_command_stats(&commands);
                    logged_commands = commands;
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                gateway.handle_timeout(now, unix_ms());
                if let Some(b) = border.as_mut() {
                    b.router.handle_timeout(now);
                }
            }
            Some(new) = next_reload(&mut reloads) => ops::reload(&mut config, new, &mut gateway),
            () = &mut shutdown, if stopping.is_none() => {
                stopping = Some(ops::Stop::begin(&config, &mut gateway, &live));
                live.tick(&gateway);
            }
            // while stopping: look again at what is in flight and at the outbox
            () = tokio::time::sleep(STOP_POLL), if stopping.is_some() => {}
        }
    }
    tracing::info!("edge router stopping: writing the command queue and OSCORE state");
    finish_journal(journal, &mut gateway).await?;
    drain_side_effects(&mut gateway, &worker, &mut live);
    live.tick(&gateway);
    sender.stop();
    if let Some(b) = border {
        b.stop();
    }
    worker.stop();
    let _ = stop_tx.send(true);
    for task in sink_tasks {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), task).await {
            tracing::warn!(error = %e, "a sink ended with an error");
        }
    }
    ops::report_outbox(&outbox);
    outbox.close().await;
    fanout_task.abort();
    if let Some(l) = ops_listener {
        l.stop();
    }
    Ok(())
}

/// How often a stop under way looks at what is left.
const STOP_POLL: Duration = Duration::from_millis(20);

/// The next reload, or never.
async fn next_reload(
    reloads: &mut Option<mpsc::UnboundedReceiver<EdgeConfig>>,
) -> Option<EdgeConfig> {
    match reloads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// At shutdown: waits for the journal batch being written and writes what is left (inline:
/// nothing else runs any more).
async fn finish_journal(journal: JournalWriter, gateway: &mut Gateway) -> anyhow::Result<()> {
    let (mut journal, last) = journal.stop().await?;
    if let Some((id, outcome)) = last {
        gateway.handle_journal_written(Instant::now(), unix_ms(), id, outcome);
    }
    while let Some(batch) = gateway.ingress_mut().poll_journal() {
        let outcome = crate::journal::outcome(batch.id, journal.write(&batch));
        gateway.handle_journal_written(Instant::now(), unix_ms(), batch.id, outcome);
    }
    Ok(())
}

fn log_command_stats(s: &DownlinkStats) {
    tracing::info!(
        "command stats accepted={} queue_full={} too_large={} not_allowed={} unencodable={} \
         journal_failures={} journal_rewrites={}",
        s.accepted,
        s.queue_full,
        s.too_large,
        s.not_allowed,
        s.unencodable,
        s.journal_failures,
        s.journal_rewrites
    );
}

/// Hands the gateway's state batches and audit rows to the registry thread (state first; audit
/// rows it has no room for are counted in the security report), tells the gateway the room
/// left in the audit lane (it refuses what it could not audit), and logs events.
fn drain_side_effects(gateway: &mut Gateway, worker: &RegistryWorker, live: &mut Live) {
    while let Some(batch) = gateway.poll_persist() {
        let id = batch.id;
        if !worker.persist(batch) {
            tracing::error!(
                batch = id,
                "registry thread gone: OSCORE state not persisted"
            );
        }
    }
    let mut rows = Vec::new();
    let wall = unix_ms();
    while let Some(event) = gateway.ingress_mut().poll_event() {
        live.ingress_event(&event, wall);
        log_event(&event);
        if let Some(row) = audit_row(&event) {
            rows.push(row);
        }
    }
    while let Some(event) = gateway.poll_event() {
        match &event {
            GatewayEvent::Keys(KeyChange::Unusable(device)) => {
                tracing::error!(%device, "credentials make no OSCORE context (empty kid?)");
            }
            // One per device at start: not worth a line each.
            GatewayEvent::Keys(KeyChange::Loaded { device, .. }) => {
                tracing::debug!(%device, "OSCORE context loaded");
            }
            other => tracing::info!(event = ?other, "gateway"),
        }
    }
    while let Some(event) = gateway.poll_security_event() {
        live.security_event(&event, wall);
        tracing::debug!(peer = %event.peer, cause = %event.cause, device = ?event.device, "refused");
    }
    while let Some(row) = gateway.poll_audit() {
        rows.push(row);
    }
    if !rows.is_empty() {
        let dropped = worker.audit(rows);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "audit rows dropped: the registry thread is behind (slow or full disk?)"
            );
            gateway.note_audit_dropped(Instant::now(), dropped);
        }
    }
    let lane = worker.audit_lane();
    gateway.handle_audit_room(lane.room);
    gateway.handle_audit_drain(Instant::now(), lane.taken, lane.cpu, lane.waiting);
}

/// The audit row of an ingress event, if it is one the trail keeps.
pub(crate) fn audit_row(event: &IngressEvent) -> Option<AuditEvent> {
    let now = audit_time(unix_ms());
    match event {
        IngressEvent::Registered { endpoint, address } => Some(
            AuditEvent::new(AuditKind::Registration, endpoint.clone())
                .at(now)
                .address(audit_address(*address))
                .detail(format!("registered from {address}")),
        ),
        IngressEvent::CommandDone {
            endpoint,
            req,
            status: "ok",
            code,
        } => Some(
            AuditEvent::new(AuditKind::CommandDelivered, endpoint.clone())
                .at(now)
                .detail(format!(
                    "command {req} answered {}",
                    code.as_deref().unwrap_or("-")
                )),
        ),
        _ => None,
    }
}

fn log_gateway_stats(s: &GatewayStats) {
    tracing::info!(
        "gateway stats authenticated={} responses_verified={} refused={} plain={} unknown_kid={} \
         decryption_failed={} replay={} malformed={} not_active={} address_refused={} \
         endpoint_mismatch={} bad_responses={} replies_suppressed={} duplicates={} \
         address_changes={} protect_failures={} source_limited={} kid_quarantined={} \
         kid_limited={} resets_ignored={} device_limited={} quarantines={} echo_challenges={} \
         address_conflicts={} stale_elsewhere={} unreachable={} audit_busy={}",
        s.authenticated,
        s.responses_verified,
        s.refused,
        s.plain,
        s.unknown_kid,
        s.decryption_failed,
        s.replay,
        s.malformed,
        s.not_active,
        s.address_refused,
        s.endpoint_mismatch,
        s.bad_responses,
        s.replies_suppressed,
        s.duplicates,
        s.address_changes,
        s.protect_failures,
        s.source_limited,
        s.kid_quarantined,
        s.kid_limited,
        s.resets_ignored,
        s.device_limited,
        s.quarantines,
        s.echo_challenges,
        s.address_conflicts,
        s.stale_elsewhere,
        s.unreachable,
        s.audit_busy
    );
}

/// Telemetry appends: those in flight to the outbox and the records gathered for the next.
#[derive(Default)]
struct Appends {
    in_flight: FuturesUnordered<StoreFuture>,
    tickets: Vec<AppendTicket>,
    messages: Vec<NewMessage>,
}

impl Appends {
    /// Sends what was gathered as one append, unless [`APPENDS_IN_FLIGHT`] are under way.
    fn start(&mut self, outbox: &OutboxHandle) {
        if self.messages.is_empty() || self.in_flight.len() >= APPENDS_IN_FLIGHT {
            return;
        }
        let tickets = std::mem::take(&mut self.tickets);
        let messages = std::mem::take(&mut self.messages);
        self.in_flight
            .push(store(outbox.clone(), tickets, messages));
    }
}

/// The future of one telemetry append.
type StoreFuture =
    std::pin::Pin<Box<dyn Future<Output = (Vec<AppendTicket>, AppendResult)> + Send>>;

/// Stores `messages` durably; resolves with their tickets and what became of them.
fn store(
    outbox: OutboxHandle,
    tickets: Vec<AppendTicket>,
    messages: Vec<NewMessage>,
) -> StoreFuture {
    Box::pin(async move {
        let result = match outbox.append(messages).await {
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
        (tickets, result)
    })
}

/// Hands the ingress's appends to the outbox (telemetry gathered into [`Appends`], status
/// messages and security reports on their own).
fn flush(
    gateway: &mut Gateway,
    outbox: &OutboxHandle,
    appends: &mut Appends,
    security_topic: &str,
    live: &mut Live,
) {
    let mut fire_and_forget = Vec::new();
    let wall = unix_ms();
    while let Some(a) = gateway.ingress_mut().poll_append() {
        match a.ticket {
            Some(t) => {
                live.telemetry(&a.message, wall);
                appends.tickets.push(t);
                appends.messages.push(a.message);
            }
            None => fire_and_forget.push(a.message),
        }
    }
    appends.start(outbox);
    if let Some(report) = gateway.poll_security_report(Instant::now(), unix_ms()) {
        tracing::warn!(counts = ?report.counts, quarantined = report.quarantined.len(), "security report");
        fire_and_forget.push(NewMessage {
            topic: security_topic.to_owned(),
            payload: report.to_json(),
            retain: false,
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
}

/// Hands one message (not retained) to the outbox, without waiting for it.
fn publish(outbox: &OutboxHandle, topic: &str, payload: Vec<u8>) {
    let handle = outbox.clone();
    let message = NewMessage {
        topic: topic.to_owned(),
        payload,
        retain: false,
    };
    tokio::spawn(async move {
        if let Err(e) = handle.append(vec![message]).await {
            tracing::warn!(error = %e, "message not stored");
        }
    });
}

/// A UDP socket with large kernel buffers (bursts from many devices), for tokio; on a wildcard
/// address it reports each datagram's local address (`true`: see `udp`'s module docs).
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<(UdpSocket, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `[::]` also takes IPv4 (mapped addresses): one socket for dual-stack plants.
        if let Err(e) = socket.set_only_v6(false) {
            tracing::warn!(error = %e, %addr, "IPv6-only socket: IPv4 devices cannot reach it");
        }
    }
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::warn!(error = %e, "cannot enlarge the UDP send buffer");
    }
    let local_addresses = udp::want_local_addresses(&socket, addr)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok((UdpSocket::from_std(socket.into())?, local_addresses))
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
