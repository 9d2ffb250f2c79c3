//! `/metrics`: the edge's counters in the Prometheus text format (0.0.4) or OpenMetrics,
//! written by the official `prometheus-client` crate.
//!
//! Nothing is counted twice: at each scrape the [`EdgeCollector`] reads the counters the
//! cores already keep ([`GatewayStats`], [`LimitStats`], [`IngressStats`], [`DownlinkStats`],
//! [`RequestCounts`], the border router's [`BorderStats`] and its radios' [`RadioIo`], the
//! bridge's [`BridgeStats`], the outbox's stats) as the server loop
//! last copied them (at its stats tick, a few times a second: no work per datagram), and the
//! latency histograms the bridge fills where the time is measured.
//!
//! Names follow Prometheus conventions (`v6iot_` prefix, units in names, `_total` on
//! counters); labels take only fixed sets of values (a transport, a cause, a resource kind, a
//! response code, a PAN's index in the configuration): never a device id or an address.
//! The radio families (`v6iot_radio_*`, `v6iot_lowpan_*`, `v6iot_border_*`) appear only
//! when the border router runs (`[[radio]]` configured).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod family;
mod radio;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use v6iot_cloud_bridge::BridgeStats;
use v6iot_cloud_bridge::event::StatsSnapshot;
use v6iot_cloud_bridge::latency::HistogramSnapshot;
use v6iot_cloud_bridge::outbox::OutboxHandle;

use crate::border::stats::{BorderStats, PanStats};
use crate::gateway::GatewayStats;
use crate::gateway::limits::LimitStats;
use crate::ingress::{DownlinkStats, IngressStats, RequestCounts};
use crate::ops::dashboard::handle::BoardStats;
use crate::ops::http::HttpStats;
use family::{Family, one};

/// What the server loop copies out at its stats tick for the metrics.
#[derive(Debug, Clone, Default)]
pub struct EdgeSnapshot {
    /// UDP datagrams received (all, before any check).
    pub udp_in: u64,
    /// UDP datagrams handed to the send thread.
    pub udp_out: u64,
    /// The ingress's counters.
    pub ingress: IngressStats,
    /// The gateway's counters.
    pub gateway: GatewayStats,
    /// The rate limits' counters.
    pub limits: LimitStats,
    /// Platform commands: acceptance and refusals.
    pub downlink: DownlinkStats,
    /// Commands waiting or in flight.
    pub commands_pending: u64,
    /// Commands ended, by status (`ok`, `expired`, `timeout`, `reset`, `rejected`).
    pub commands_done: std::collections::BTreeMap<&'static str, u64>,
    /// Answered requests by resource and code.
    pub requests: RequestCounts,
    /// Registrations by binding: (`U`, `UQ`).
    pub registrations: (u64, u64),
    /// Queue-mode devices: (awake in their listening window, sleeping).
    pub queue_mode: (u64, u64),
    /// Registry devices by state: (active, quarantined, revoked).
    pub devices: (u64, u64, u64),
    /// Whether the edge is stopping.
    pub stopping: bool,
    /// The border router's counters and its radios', when it runs.
    pub radio: Option<RadioSnapshot>,
}

/// What the border router and the I/O under it counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RadioSnapshot {
    /// The border router's counters, one entry per PAN.
    pub border: BorderStats,
    /// What the radio and TUN drivers dropped below the border router (all PANs).
    pub io: RadioIo,
}

/// Drops below the border router: in the radio and TUN drivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RadioIo {
    /// ZEP datagrams that were not ZEP data, or malformed.
    pub zep_malformed: u64,
    /// Frames with a bad FCS.
    pub bad_fcs: u64,
    /// Frames on another channel.
    pub other_channel: u64,
    /// Frames or packets that could not be sent (socket or TUN full, errors).
    pub send_errors: u64,
}

/// Where the collector reads from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The loop's copy.
    pub edge: Arc<Mutex<EdgeSnapshot>>,
    /// The MQTT bridge's counters and publish latency.
    pub bridge: Arc<BridgeStats>,
    /// The outbox (gauges, the oldest record's age, sync latency).
    pub outbox: Option<OutboxHandle>,
    /// The listener's own counters.
    pub http: Arc<HttpStats>,
    /// The dashboard board's changes, when the dashboard is on.
    pub board: Option<Arc<BoardStats>>,
}

/// Reads [`Sources`] at every scrape (see the module docs).
#[derive(Debug)]
pub struct EdgeCollector(Sources);

/// The registry to encode at each scrape.
pub fn registry(sources: Sources) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(EdgeCollector(sources)));
    r
}

/// The body and content type for a scrape; OpenMetrics when `accept` asks for it.
///
/// # Errors
///
/// Formatting failed (never with these metrics; reported as a 500).
pub fn encode(
    registry: &Registry,
    accept: &str,
) -> Result<(String, &'static str), std::fmt::Error> {
    let mut body = String::with_capacity(16 * 1024);
    if accept.contains("application/openmetrics-text") {
        prometheus_client::encoding::text::encode(&mut body, registry)?;
        Ok((
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, registry)?;
        Ok((body, "text/plain; version=0.0.4; charset=utf-8"))
    }
}

/// One histogram, encoded from a snapshot.
#[derive(Debug)]
struct Histo(HistogramSnapshot);

impl EncodeMetric for Histo {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &self.0.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes families one after the other.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(value);
        let e = self
            .0
            .encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(e)
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: f64,
    ) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(value);
        let e = self
            .0
            .encode_descriptor(name, help, unit, g.metric_type())?;
        g.encode(e)
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        h: HistogramSnapshot,
    ) -> Result<(), std::fmt::Error> {
        let h = Histo(h);
        let e = self
            .0
            .encode_descriptor(name, help, Some(&Unit::Seconds), h.metric_type())?;
        h.encode(e)
    }

    /// Writes each family of `families` over `source`.
    fn families<S>(&mut self, families: &[Family<S>], source: &S) -> std::fmt::Result {
        for f in families {
            f.encode_one(self, source)?;
        }
        Ok(())
    }
}

impl Collector for EdgeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self
            .0
            .edge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = Out(encoder);
        out.families(EDGE, &s)?;
        requests(&mut out, &s)?;
        if let Some(r) = &s.radio {
            radio::encode(&mut out, r)?;
        }
        north(&mut out, &self.0)?;
        out.families(HTTP, self.0.http.as_ref())?;
        if let Some(b) = &self.0.board {
            out.families(BOARD, b.as_ref())?;
        }
        Ok(())
    }
}

/// A border router's counter summed over its PANs (0 without radios).
fn lowpan(s: &EdgeSnapshot, counter: fn(&PanStats) -> u64) -> u64 {
    s.radio
        .as_ref()
        .map_or(0, |r| r.border.pans.iter().map(counter).sum())
}

/// Command statuses, in the order written.
const COMMAND_STATUSES: [&str; 5] = ["ok", "expired", "timeout", "reset", "rejected"];

/// The families read from the loop's copy, in the order they are written.
const EDGE: &[Family<EdgeSnapshot>] = &[
    Family::counters(
        "v6iot_coap_datagrams_received",
        "CoAP datagrams received, by transport (udp: the socket; lowpan: from the radios to \
         the border router's gateway)",
        "transport",
        |s| vec![("udp", s.udp_in), ("lowpan", lowpan(s, |p| p.local_in))],
    ),
    Family::counters(
        "v6iot_coap_datagrams_sent",
        "CoAP datagrams sent, by transport (udp: handed to the send thread; lowpan: from the \
         gateway onto the radios)",
        "transport",
        |s| vec![("udp", s.udp_out), ("lowpan", lowpan(s, |p| p.local_out))],
    ),
    Family::counters(
        "v6iot_coap_ingress_datagrams",
        "datagrams the ingress took, by outcome",
        "outcome",
        |s| {
            let i = &s.ingress;
            vec![
                ("malformed", i.malformed),
                ("duplicate", i.duplicates),
                ("unexpected", i.unexpected),
                ("request", i.requests),
            ]
        },
    ),
    Family::counters(
        "v6iot_telemetry_records",
        "telemetry records, by outcome (stored, busy: 5.03 outbox full, failed: 5.00)",
        "outcome",
        |s| {
            let i = &s.ingress;
            vec![
                ("stored", i.telemetry_stored),
                ("busy", i.telemetry_busy),
                ("failed", i.store_failures),
            ]
        },
    ),
    Family::counter(
        "v6iot_auth_verified",
        "OSCORE requests that verified",
        |s| one(s.gateway.authenticated),
    ),
    Family::counters(
        "v6iot_auth_refusals",
        "messages refused by the authentication gateway, by cause",
        "cause",
        |s| {
            let g = &s.gateway;
            vec![
                ("plain", g.plain),
                ("unknown_kid", g.unknown_kid),
                ("decryption_failed", g.decryption_failed),
                ("replay", g.replay),
                ("malformed", g.malformed),
                ("not_active", g.not_active),
                ("address_refused", g.address_refused),
                ("endpoint_mismatch", g.endpoint_mismatch),
                ("bad_response", g.bad_responses),
            ]
        },
    ),
    Family::counter(
        "v6iot_audit_busy",
        "verified requests (new bindings, registrations) answered 5.03 because the audit lane had \
         no room for their rows",
        |s| one(s.gateway.audit_busy),
    ),
    Family::counter(
        "v6iot_quarantines",
        "kid quarantines begun (repeated failed verifications under one kid)",
        |s| one(s.gateway.quarantines),
    ),
    Family::counters(
        "v6iot_rate_limited",
        "datagrams dropped or answered 5.03 by a limit, by scope (source: a network's \
         unauthenticated budget; device: a verified device's rate; kid_quarantined, kid_limited: \
         a kid in quarantine or out of refusal budget)",
        "scope",
        |s| {
            let l = &s.limits;
            vec![
                ("source", l.source_limited),
                ("device", l.device_limited),
                ("kid_quarantined", l.kid_quarantined),
                ("kid_limited", l.kid_limited),
            ]
        },
    ),
    Family::gauge(
        "v6iot_rate_limit_tracked_sources",
        "source networks in the rate limiter's table",
        |s| one(s.limits.tracked_sources),
    ),
    Family::gauges(
        "v6iot_devices",
        "devices in the registry, by state",
        "state",
        |s| {
            let (active, quarantined, revoked) = s.devices;
            vec![
                ("active", active),
                ("quarantined", quarantined),
                ("revoked", revoked),
            ]
        },
    ),
    Family::gauges(
        "v6iot_registrations",
        "registered devices, by binding (U always reachable, UQ queue mode)",
        "binding",
        |s| vec![("U", s.registrations.0), ("UQ", s.registrations.1)],
    ),
    Family::gauges(
        "v6iot_queue_mode_devices",
        "queue-mode devices (UQ, e.g. NB-IoT in PSM): awake in their listening window or sleeping",
        "state",
        |s| vec![("awake", s.queue_mode.0), ("sleeping", s.queue_mode.1)],
    ),
    Family::counters(
        "v6iot_commands_received",
        "platform commands, by what the edge did with them",
        "outcome",
        |s| {
            let d = &s.downlink;
            vec![
                ("queued", d.accepted),
                ("queue_full", d.queue_full),
                ("too_large", d.too_large),
                ("not_allowed", d.not_allowed),
                ("unencodable", d.unencodable),
            ]
        },
    ),
    Family::counters(
        "v6iot_commands_ended",
        "platform commands ended, by status (ok: delivered and answered)",
        "status",
        |s| {
            COMMAND_STATUSES
                .into_iter()
                .map(|k| (k, s.commands_done.get(k).copied().unwrap_or(0)))
                .collect()
        },
    ),
    Family::gauge(
        "v6iot_commands_pending",
        "platform commands waiting or in flight",
        |s| one(s.commands_pending),
    ),
    Family::gauge(
        "v6iot_edge_stopping",
        "1 while the edge is stopping (new requests get 5.03)",
        |s| one(u64::from(s.stopping)),
    ),
];

/// The listener's own families.
const HTTP: &[Family<HttpStats>] = &[
    Family::counters(
        "v6iot_http_requests",
        "requests to the metrics/dashboard listener, by outcome",
        "outcome",
        HttpStats::requests,
    ),
    Family::counters(
        "v6iot_dashboard_feed_refusals",
        "dashboard feed sessions refused or closed, by cause (token, bad_frame)",
        "cause",
        HttpStats::feed_refusals,
    ),
];

/// The dashboard board's family (when the dashboard is on).
const BOARD: &[Family<BoardStats>] = &[Family::counters(
    "v6iot_dashboard_updates",
    "changes the data path handed to the dashboard's board, by outcome (queued, dropped: its \
     queue was full)",
    "outcome",
    |b| vec![("queued", b.queued()), ("dropped", b.dropped())],
)];

/// The MQTT session's counters.
const MQTT: &[Family<StatsSnapshot>] = &[
    Family::gauge(
        "v6iot_mqtt_connected",
        "1 while the MQTT connection to the broker is up",
        |b| one(u64::from(b.connects > b.disconnects)),
    ),
    Family::counter("v6iot_mqtt_connects", "MQTT connections established", |b| {
        one(b.connects)
    }),
    Family::counter(
        "v6iot_mqtt_connect_failures",
        "MQTT connection attempts that failed",
        |b| one(b.connect_failures),
    ),
    Family::counter(
        "v6iot_mqtt_publishes",
        "PUBLISHes sent (first sends and re-sends)",
        |b| one(b.published),
    ),
    Family::counter(
        "v6iot_mqtt_republishes",
        "PUBLISHes sent again after a reconnection",
        |b| one(b.republished),
    ),
    Family::counter(
        "v6iot_mqtt_acks",
        "PUBLISHes the broker acknowledged",
        |b| one(b.acked),
    ),
    Family::counter(
        "v6iot_mqtt_refusals",
        "PUBLISHes an MQTT 5 broker refused",
        |b| one(b.refused),
    ),
];

/// CoAP requests answered by resource and code: the one family with two labels of its own.
fn requests(out: &mut Out<'_>, s: &EdgeSnapshot) -> Result<(), std::fmt::Error> {
    let mut e = out.0.encode_descriptor(
        "v6iot_coap_requests",
        "CoAP requests answered, by resource (rd, rd_location, t, other) and response code",
        None,
        MetricType::Counter,
    )?;
    for (kind, code, n) in s.requests.iter() {
        let labels = [("path", kind.label()), ("code", code.as_str())];
        ConstCounter::new(n).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

fn north(out: &mut Out<'_>, sources: &Sources) -> Result<(), std::fmt::Error> {
    out.families(MQTT, &sources.bridge.snapshot())?;
    out.histogram(
        "v6iot_mqtt_publish_duration",
        "from a PUBLISH to its PUBACK",
        sources.bridge.publish_latency.snapshot(),
    )?;
    if let Some(outbox) = &sources.outbox {
        let o = outbox.stats();
        out.gauge(
            "v6iot_outbox_records",
            "records durable in the outbox and not yet acknowledged by the broker",
            None,
            o.pending_messages as f64,
        )?;
        out.gauge(
            "v6iot_outbox",
            "record bytes in the outbox's live segments",
            Some(&Unit::Bytes),
            o.stored_bytes as f64,
        )?;
        out.gauge(
            "v6iot_outbox_limit",
            "the outbox's bound (outbox.max_bytes)",
            Some(&Unit::Bytes),
            o.max_bytes as f64,
        )?;
        let age = outbox.oldest_pending_age().unwrap_or(Duration::ZERO);
        out.gauge(
            "v6iot_outbox_oldest_record_age",
            "how long the oldest unacknowledged record has been waiting (0: none)",
            Some(&Unit::Seconds),
            age.as_secs_f64(),
        )?;
        out.counter(
            "v6iot_outbox_fsyncs",
            "outbox group commits synced",
            o.fsyncs,
        )?;
        out.histogram(
            "v6iot_outbox_sync_duration",
            "one outbox group commit: the write and its fdatasync",
            outbox.sync_latency(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a registry over `edge` as `/metrics` does and parses it as Prometheus does.
    pub(super) fn scrape_edge(edge: EdgeSnapshot) -> prometheus_parse::Scrape {
        let r = registry(Sources {
            edge: Arc::new(Mutex::new(edge)),
            bridge: Arc::default(),
            outbox: None,
            http: Arc::default(),
            board: None,
        });
        let (body, _) = encode(&r, "text/plain").unwrap();
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
    }

    /// The value of the sample `name` with exactly these labels; `None` when absent.
    pub(super) fn value(
        s: &prometheus_parse::Scrape,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        let mut found = s.samples.iter().filter(|x| {
            x.metric == name
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        });
        let sample = found.next()?;
        assert!(found.next().is_none(), "{name} {labels:?} twice");
        match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(v),
            ref other => panic!("{name}: {other:?}"),
        }
    }

    /// Requests held back for the audit trail are a counter of their own.
    #[test]
    fn requests_the_audit_lane_had_no_room_for_are_counted() {
        let s = scrape_edge(EdgeSnapshot {
            gateway: GatewayStats {
                audit_busy: 7,
                ..GatewayStats::default()
            },
            ..EdgeSnapshot::default()
        });
        assert_eq!(value(&s, "v6iot_audit_busy_total", &[]), Some(7.0));
    }

    /// Queue-mode devices by state: awake and sleeping, each as its own sample.
    #[test]
    fn queue_mode_devices_appear_by_state() {
        let s = scrape_edge(EdgeSnapshot {
            registrations: (4, 5),
            queue_mode: (2, 3),
            ..EdgeSnapshot::default()
        });
        let gauge = |name, labels| value(&s, name, labels);
        assert_eq!(
            gauge("v6iot_queue_mode_devices", &[("state", "awake")]),
            Some(2.0)
        );
        assert_eq!(
            gauge("v6iot_queue_mode_devices", &[("state", "sleeping")]),
            Some(3.0)
        );
        assert_eq!(
            gauge("v6iot_registrations", &[("binding", "UQ")]),
            Some(5.0)
        );
    }
}
