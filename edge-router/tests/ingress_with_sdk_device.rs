//! The SDK's device core (client side: registration and reports) against the edge router's
//! ingress core, both sans-IO, wired together on virtual time. The test plays the outbox.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use v6iot_sdk::time::Instant as SdkInstant;

use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::ingress::{
    Append, AppendResult, DownlinkCommand, Ingress, IngressConfig, IngressEvent, JournalEntry,
    JournalWritten,
};
use v6iot_sdk::coap::{
    App, Changed, Config, Device, Resource, ResourceTree, Response, content_format as cf,
};
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::uplink::{Binding, RegistrationState, UplinkConfig};

/// A sensor that reports one reading per second.
struct Meter {
    next: SdkInstant,
    reading: f64,
    to_send: Vec<Vec<u8>>,
    valve: bool,
    observed: Option<v6iot_sdk::coap::ResourceId>,
}

impl App for Meter {
    fn poll_timeout(&self) -> Option<SdkInstant> {
        Some(self.next)
    }

    fn handle_timeout(&mut self, now: SdkInstant) -> Changed {
        self.next = now + Duration::from_secs(1);
        self.reading += 1.0;
        if let Some(id) = self.observed {
            // Observed mode: no reports; the change notifies the edge, which observes `energy`.
            return Changed::NONE.with(id);
        }
        self.to_send.push(energy_pack(self.reading));
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.to_send.pop().map(|b| (cf::SENML_CBOR, b))
    }
}

fn energy_pack(reading: f64) -> Vec<u8> {
    let pack = PackBuilder::new()
        .base_name("urn:dev:test:m1:")
        .record(Record::measurement("energy", "J", reading))
        .build();
    senml::to_cbor(&pack).unwrap()
}

/// The device's time (the SDK's instant) of the test's std instant `t`, taken after the epoch.
fn sdk(t: Instant) -> SdkInstant {
    SdkInstant::from_std(t).unwrap()
}

const EDGE: &str = "[2001:db8::e]:5683";
const DEV: &str = "[2001:db8::100]:40000";

struct Net {
    now: Instant,
    unix_ms: u64,
    device: Device<Meter>,
    ingress: Ingress,
    stored: Vec<Append>,
    /// What the outbox answers to the next appends.
    outbox_full: bool,
    /// The device's radio is off: datagrams to it are lost.
    asleep: bool,
    /// The command journal's entries, as the driver wrote them (every batch durable).
    journal: Vec<JournalEntry>,
}

impl Net {
    fn new(lifetime: Duration) -> Net {
        Net::build(lifetime, Binding::U, false)
    }

    fn with_binding(lifetime: Duration, binding: Binding) -> Net {
        Net::build(lifetime, binding, false)
    }

    /// `observable`: `/energy` is observable SenML, so the edge observes it.
    fn build(lifetime: Duration, binding: Binding, observable: bool) -> Net {
        // The test's std clock, from the SDK's epoch on, so every instant converts (`sdk`).
        let now = SdkInstant::now().to_std().unwrap();
        let mut tree = ResourceTree::new();
        let energy = Resource::new("energy");
        let energy = if observable {
            energy.observable()
        } else {
            energy
        };
        tree.add(
            energy
                .rt("energy")
                .content_formats(&[cf::SENML_CBOR])
                .get(|m: &mut Meter, _| {
                    Response::content(cf::SENML_CBOR, energy_pack(m.reading)).into()
                }),
        )
        .unwrap();
        tree.add(
            Resource::new("valve")
                .content_formats(&[cf::TEXT_PLAIN])
                .get(|m: &mut Meter, _| {
                    Response::content(
                        cf::TEXT_PLAIN,
                        if m.valve {
                            b"on".to_vec()
                        } else {
                            b"off".to_vec()
                        },
                    )
                    .into()
                })
                .put(|m: &mut Meter, r| {
                    m.valve = r.payload == b"on";
                    Response::code(v6iot_sdk::coap::Code::Changed).into()
                }),
        )
        .unwrap();
        let app = Meter {
            next: sdk(now) + Duration::from_secs(1),
            reading: 0.0,
            to_send: Vec::new(),
            valve: false,
            observed: None,
        };
        let uplink = UplinkConfig {
            lifetime,
            binding,
            ..UplinkConfig::new(EDGE.parse().unwrap(), "m1")
        };
        let device =
            Device::new(Config::default(), 3, Arc::new(tree), app).with_uplink(sdk(now), uplink);
        let ingress = Ingress::new(
            IngressConfig::new(Topics::new("v6iot", "site1").unwrap()),
            1_700_000_000_000,
        );
        Net {
            now,
            unix_ms: 1_700_000_000_000,
            device,
            ingress,
            stored: Vec::new(),
            outbox_full: false,
            asleep: false,
            journal: Vec::new(),
        }
    }

    /// Moves every datagram and append until nothing is left.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.device.poll_transmit() {
                assert_eq!(t.destination, EDGE.parse::<SocketAddr>().unwrap());
                self.ingress.handle_datagram(
                    self.now,
                    self.unix_ms,
                    DEV.parse::<SocketAddr>().unwrap(),
                    &t.contents,
                );
                moved = true;
            }
            while let Some(a) = self.ingress.poll_append() {
                if let Some(ticket) = a.ticket {
                    let result = if self.outbox_full {
                        AppendResult::Full {
                            retry_after: Duration::from_secs(3),
                        }
                    } else {
                        self.stored.push(a.clone());
                        AppendResult::Stored
                    };
                    self.ingress.handle_appended(ticket, result);
                } else {
                    self.stored.push(a);
                }
                moved = true;
            }
            while let Some(b) = self.ingress.poll_journal() {
                self.journal.extend(b.entries.iter().cloned());
                let outcome = JournalWritten::Durable {
                    rewritten: b.rewrite.is_some(),
                };
                self.ingress
                    .handle_journal_written(self.now, self.unix_ms, b.id, outcome);
                moved = true;
            }
            while let Some((to, bytes)) = self.ingress.poll_transmit() {
                assert_eq!(to.remote, DEV.parse::<SocketAddr>().unwrap());
                if !self.asleep {
                    self.device
                        .handle_datagram(sdk(self.now), EDGE.parse().unwrap(), &bytes);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances virtual time to the next deadline of either side (bounded by `until`).
    fn step_until(&mut self, until: Instant) {
        while self.now < until {
            let device = self.device.poll_timeout().and_then(SdkInstant::to_std);
            let next = [device, self.ingress.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until)
                .min(until);
            self.unix_ms += (next - self.now).as_millis() as u64;
            self.now = next.max(self.now);
            self.device.handle_timeout(sdk(self.now));
            self.ingress.handle_timeout(self.now, self.unix_ms);
            self.settle();
        }
    }

    /// Runs the device and the edge for `d` of virtual time.
    fn step_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.step_until(until);
    }

    /// The first record's value of each stored telemetry message, in order.
    fn values(&self) -> Vec<f64> {
        self.telemetry()
            .iter()
            .map(|r| r[0]["v"].as_f64().unwrap())
            .collect()
    }

    fn telemetry(&self) -> Vec<serde_json::Value> {
        self.stored
            .iter()
            .filter(|a| a.message.topic == "v6iot/site1/m1/telemetry")
            .map(|a| serde_json::from_slice(&a.message.payload).unwrap())
            .collect()
    }
}

#[test]
fn device_registers_reports_and_every_report_is_stored_once() {
    let mut net = Net::new(Duration::from_secs(300));
    net.settle();
    assert!(net.device.registration().unwrap().is_registered());
    assert_eq!(
        net.ingress.directory().get("m1").unwrap().address,
        DEV.parse().unwrap()
    );
    let status = &net.stored[0];
    assert_eq!(status.message.topic, "v6iot/site1/m1/status");
    assert!(status.message.retain);
    assert!(String::from_utf8_lossy(&status.message.payload).contains("\"state\":\"registered\""));
    let links = &net.ingress.directory().get("m1").unwrap().links;
    assert!(links.contains("</energy>;rt=\"energy\""), "{links}");

    net.step_for(Duration::from_secs(10));
    let records = net.telemetry();
    assert_eq!(records.len(), 10);
    assert_eq!(
        net.values(),
        (1..=10).map(f64::from).collect::<Vec<_>>(),
        "in order, none lost or repeated"
    );
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r[0]["rid"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10, "every record has its own id");
    assert_eq!(records[0][0]["n"], "urn:dev:test:m1:energy");
    assert!(
        records[0][0]["t"].as_f64().unwrap() > 1.7e9,
        "absolute time"
    );
    let stats = net.device.reporter().unwrap().stats();
    assert_eq!((stats.acked, stats.rejected), (10, 0));
    assert_eq!(net.ingress.stats().telemetry_stored, 10);
}

#[test]
fn full_outbox_gets_5_03_and_the_device_retries_after_max_age() {
    let mut net = Net::new(Duration::from_secs(300));
    net.settle();
    net.outbox_full = true;
    net.step_for(Duration::from_millis(1500));
    assert!(net.telemetry().is_empty());
    assert_eq!(net.device.reporter().unwrap().stats().busy, 1);
    assert_eq!(net.ingress.stats().telemetry_busy, 1);
    net.outbox_full = false;
    net.step_for(Duration::from_secs(10));
    let values = net.values();
    assert_eq!(
        values.first(),
        Some(&1.0),
        "the refused report was kept and sent again first"
    );
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1.0), "{values:?}");
    assert_eq!(net.device.reporter().unwrap().stats().rejected, 0);
}

#[test]
fn registration_is_kept_alive_and_expires_when_the_device_goes_quiet() {
    let mut net = Net::new(Duration::from_secs(60));
    net.settle();
    net.step_for(Duration::from_secs(200));
    assert!(
        net.ingress.stats().updates >= 3,
        "updated every 45 s: {:?}",
        net.ingress.stats()
    );
    assert_eq!(net.ingress.stats().expirations, 0);
    // The device stops (its datagrams are no longer delivered); the edge expires it.
    let silent = net.now;
    let mut events = Vec::new();
    let mut now = silent;
    while let Some(t) = net
        .ingress
        .poll_timeout()
        .filter(|t| *t < silent + Duration::from_secs(120))
    {
        now = t;
        net.ingress.handle_timeout(now, net.unix_ms);
        events.extend(std::iter::from_fn(|| net.ingress.poll_event()));
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, IngressEvent::Expired { endpoint } if endpoint == "m1")),
        "{events:?}"
    );
    let gone = std::iter::from_fn(|| net.ingress.poll_append())
        .last()
        .unwrap();
    assert!(String::from_utf8_lossy(&gone.message.payload).contains("\"state\":\"gone\""));
    assert!(now > silent);
}

#[test]
fn re_registers_after_the_edge_forgets_it() {
    let mut net = Net::new(Duration::from_secs(60));
    net.settle();
    // The edge restarts and knows nothing.
    net.ingress = Ingress::new(
        IngressConfig::new(Topics::new("v6iot", "site1").unwrap()),
        1_700_000_100_000,
    );
    net.step_for(Duration::from_secs(60));
    assert!(
        net.device.registration().unwrap().registrations() >= 2,
        "{:?}",
        net.device.registration().unwrap().state()
    );
    assert!(matches!(
        net.device.registration().unwrap().state(),
        RegistrationState::Registered { .. }
    ));
    assert!(net.ingress.directory().get("m1").is_some());
    let values = net.values();
    assert_eq!(
        values,
        (1..=values.len()).map(|v| v as f64).collect::<Vec<_>>(),
        "no report lost across the edge restart"
    );
    assert!(values.len() >= 55, "{}", values.len());
    assert_eq!(net.device.reporter().unwrap().stats().rejected, 0);
}

// ----- commands -----

fn command(req: &str, method: &str, payload: &[u8], ttl_ms: u64, net: &Net) -> DownlinkCommand {
    DownlinkCommand {
        device: "m1".into(),
        req: req.into(),
        method: method.into(),
        path: "/valve".into(),
        payload: payload.to_vec(),
        content_format: Some(0),
        expires_unix_ms: net.unix_ms + ttl_ms,
        confirmable: true,
        observe: false,
        accept: None,
    }
}

fn results(net: &Net) -> Vec<serde_json::Value> {
    net.stored
        .iter()
        .filter(|a| a.message.topic.contains("/cmd/"))
        .map(|a| {
            let mut v: serde_json::Value = serde_json::from_slice(&a.message.payload).unwrap();
            v["topic"] = a.message.topic.clone().into();
            v
        })
        .collect()
}

#[test]
fn command_to_an_always_on_device_runs_at_once() {
    let mut net = Net::new(Duration::from_secs(300));
    net.settle();
    let c = command("r1", "PUT", b"on", 60_000, &net);
    net.ingress.handle_command(net.now, net.unix_ms, c);
    net.settle();
    assert!(net.device.app().valve);
    let r = results(&net);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["topic"], "v6iot/site1/m1/cmd/r1/result");
    assert_eq!(
        (r[0]["status"].as_str(), r[0]["code"].as_str()),
        (Some("ok"), Some("2.04"))
    );
    // Read it back; a duplicate delivery of the same request id is not run twice.
    let c = command("r2", "GET", b"", 60_000, &net);
    net.ingress.handle_command(net.now, net.unix_ms, c.clone());
    net.ingress.handle_command(net.now, net.unix_ms, c);
    net.settle();
    let r = results(&net);
    assert_eq!(r.len(), 2);
    assert_eq!(r[1]["payload"], "on");
    assert_eq!(
        net.journal.len(),
        4,
        "queued and done for each: {:?}",
        net.journal
    );
}

#[test]
fn command_to_a_queue_mode_device_waits_for_its_uplink() {
    let mut net = Net::with_binding(Duration::from_secs(300), Binding::UQ);
    net.settle();
    // Long after its last uplink its listening window is closed: the command waits.
    net.device = rebuild_quiet(net.device);
    net.asleep = true;
    net.step_for(Duration::from_millis(25_500));
    let c = command("q1", "PUT", b"on", 120_000, &net);
    net.ingress.handle_command(net.now, net.unix_ms, c);
    net.settle();
    assert!(results(&net).is_empty(), "nothing sent while it sleeps");
    assert_eq!(net.ingress.pending_commands(), 1);
    // The device wakes and reports: the command goes out in its listening window.
    net.asleep = false;
    let report = senml::to_cbor(
        &PackBuilder::new()
            .record(Record::measurement("urn:dev:x:e", "J", 1.0))
            .build(),
    )
    .unwrap();
    net.device
        .report(sdk(net.now), cf::SENML_CBOR, report)
        .unwrap();
    net.settle();
    assert!(net.device.app().valve, "the command ran after the uplink");
    let r = results(&net);
    assert_eq!((r.len(), r[0]["status"].as_str()), (1, Some("ok")));
}

/// The same device without its periodic reports (so it only speaks when the test says).
fn rebuild_quiet(device: Device<Meter>) -> Device<Meter> {
    let mut device = device;
    device.app_mut().next = SdkInstant::now() + Duration::from_secs(1 << 30);
    device
}

#[test]
fn commands_to_unknown_devices_are_rejected_and_ttl_expires() {
    let mut net = Net::with_binding(Duration::from_secs(300), Binding::UQ);
    net.settle();
    let mut c = command("x1", "PUT", b"on", 60_000, &net);
    c.device = "nobody".into();
    net.ingress.handle_command(net.now, net.unix_ms, c);
    net.settle();
    let r = results(&net);
    assert_eq!(r[0]["status"], "rejected");
    assert_eq!(r[0]["topic"], "v6iot/site1/nobody/cmd/x1/result");
    assert!(r[0]["error"].as_str().unwrap().contains("not registered"));
    // Queue mode, asleep, TTL 5 s: it expires.
    net.device = rebuild_quiet(net.device);
    net.asleep = true;
    net.step_for(Duration::from_secs(25));
    let c = command("x2", "PUT", b"on", 5_000, &net);
    net.ingress.handle_command(net.now, net.unix_ms, c);
    net.step_for(Duration::from_secs(10));
    let r = results(&net);
    assert_eq!(r.last().unwrap()["status"], "expired");
    assert_eq!(net.ingress.pending_commands(), 0);
}

#[test]
fn command_to_a_silent_device_times_out() {
    let mut net = Net::new(Duration::from_secs(300));
    net.settle();
    net.asleep = true;
    let c = command("t1", "PUT", b"on", 600_000, &net);
    net.ingress.handle_command(net.now, net.unix_ms, c);
    net.step_for(Duration::from_secs(120));
    let r = results(&net);
    assert_eq!(r.last().unwrap()["status"], "timeout", "{r:?}");
}

#[test]
fn the_edge_observes_observable_senml_resources_and_stores_each_notification() {
    let mut net = Net::build(Duration::from_secs(300), Binding::U, true);
    let energy = net.device.tree().find("energy").unwrap();
    net.device.app_mut().observed = Some(energy);
    net.settle();
    assert_eq!(
        net.ingress.observation_count(),
        1,
        "the edge observes /energy (obs, ct=112)"
    );
    assert_eq!(net.device.endpoint().observer_count(), 1);
    net.step_for(Duration::from_secs(5));
    let values = net.values();
    assert_eq!(
        values,
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        "the current value, then one record per change"
    );
    assert_eq!(
        net.device.reporter().unwrap().stats().sent,
        0,
        "no reports were sent: all by observation"
    );
    // After 24 h a notification is Confirmable; the edge acknowledges it once stored.
    let day = net.now + Duration::from_secs(24 * 3600);
    net.device.app_mut().next = sdk(day);
    net.step_until(day + Duration::from_millis(10));
    assert_eq!(
        net.device.endpoint().observer_count(),
        1,
        "the CON notification was acknowledged"
    );
    assert!(net.device.endpoint().stats().retransmissions == 0);
}
