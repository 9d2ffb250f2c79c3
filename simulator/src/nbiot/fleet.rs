//! The NB-IoT fleet of `v6iot-sim run --transport nbiot`: how its devices are built (the SDK's
//! NB-IoT device on an emulated modem and carrier, PSM asked for, `b=UQ`), and the platform
//! commands queued for a share of them while they sleep ([`run_commands`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use v6iot_sdk::coap::{Config, Device};
use v6iot_sdk::nbiot::{ModemConfig, NbiotDevice, PsmRequest, T3324, T3412};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::UplinkConfig;

use super::carrier::CarrierPlan;
use super::node::NbiotNode;
use crate::fleet::FleetSensor;
use crate::load::mqtt_host_port;
use crate::scenario::BrokerSpec;

/// How an NB-IoT fleet behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct NbiotPlan {
    /// The carrier: coverage, loss, the emulated modems.
    pub carrier: CarrierPlan,
    /// The active time the devices ask for (T3324).
    pub active_time: Duration,
    /// The periodic TAU they ask for (T3412).
    pub periodic_tau: Duration,
    /// Platform commands for a share of the devices, if any.
    pub commands: Option<CommandPlan>,
}

impl NbiotPlan {
    /// The modem settings of every device.
    pub fn modem_config(&self) -> anyhow::Result<ModemConfig> {
        Ok(ModemConfig {
            psm: Some(PsmRequest {
                periodic_tau: T3412::encode(self.periodic_tau)?,
                active_time: T3324::encode(self.active_time)?,
            }),
            ..ModemConfig::new("v6iot.sim")
        })
    }

    /// CoAP settings of device `n`: its first retransmission waits at least one round trip of
    /// its coverage class (CE2's take seconds; RFC 7252's 2 s would resend every request).
    pub fn coap_config(&self, n: usize) -> Config {
        let round_trip = self.carrier.link(n as u64).latency().max * 2;
        Config {
            ack_timeout: Duration::from_secs(2).max(round_trip),
            ..Config::default()
        }
    }
}

/// Builds fleet device `n`'s node from its CoAP core and its uplink (started once the modem is
/// ready), powered on at `start`.
pub fn node(
    plan: &NbiotPlan,
    modem: &ModemConfig,
    n: usize,
    start: Instant,
    (core, uplink): (Device<FleetSensor>, UplinkConfig),
) -> NbiotNode<FleetSensor> {
    let device = NbiotDevice::new(start, core, modem.clone()).with_uplink(uplink);
    NbiotNode::new(start, device, plan.carrier.cellular(n as u64))
}

/// Commands for one device in `every`, published `at` after the start with `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandPlan {
    /// One device in this many gets a command (10: a tenth of the fleet).
    pub every: usize,
    /// When they are published, after the fleet starts (choose a time the devices sleep).
    pub at: Duration,
    /// How long each may wait for its device.
    pub ttl: Duration,
}

/// What became of the platform's commands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandReport {
    /// Published.
    pub sent: u64,
    /// Results by status (`ok`, `expired`, `timeout`, `reset`, `rejected`).
    pub results: std::collections::BTreeMap<String, u64>,
    /// Commands with no result at the end of the run (must be 0: nothing lost).
    pub missing: u64,
    /// Commands the devices ran (each `ok` result is one; more would mean a command ran twice).
    pub served: u64,
}

impl CommandReport {
    /// Adds `o` (another fleet's or shard's).
    pub fn add(&mut self, o: &CommandReport) {
        self.sent += o.sent;
        for (status, n) in &o.results {
            *self.results.entry(status.clone()).or_default() += n;
        }
        self.missing += o.missing;
        self.served += o.served;
    }
}

/// The NB-IoT figures of a fleet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NbiotReport {
    /// Devices attached (modem ready) at the end.
    pub attached: u64,
    /// Times the modems entered PSM.
    pub sleeps: u64,
    /// Wake-ups for the periodic TAU.
    pub tau_wakes: u64,
    /// Addresses changed on wake-up (each a move the edge verified and audited).
    pub readdressed: u64,
    /// Datagrams handed to the devices.
    pub downlinks: u64,
    /// Datagrams for devices in PSM, which the network could not deliver.
    pub unreachable: u64,
    /// Datagrams the carrier lost (both directions).
    pub lost: u64,
    /// `AT+NSOST`s that failed (the CoAP layer retransmits).
    pub modem_send_failures: u64,
    /// AT commands that timed out.
    pub modem_timeouts: u64,
    /// Platform commands (`PUT /actuators/valve`) the devices ran.
    pub commands_run: u64,
    /// What became of the platform's commands, if any were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandReport>,
}

impl NbiotReport {
    /// Adds one device's figures.
    pub fn add_node(&mut self, node: &NbiotNode<FleetSensor>) {
        let e = node.cellular.modem.stats();
        self.sleeps += e.sleeps;
        self.tau_wakes += e.tau_wakes;
        self.readdressed += e.readdressed;
        self.downlinks += e.downlinks;
        self.unreachable += e.unreachable;
        let c = node.cellular.carrier.stats();
        self.lost += c.lost_up + c.lost_down;
        let m = node.device.modem().stats();
        self.modem_send_failures += m.send_failures;
        self.modem_timeouts += node.device.modem().client_stats().timeouts;
        self.attached += u64::from(node.device.modem().is_ready());
        self.commands_run += u64::from(node.device.device().app().commands());
    }

    /// Adds `o` (another shard's or fleet's).
    pub fn add(&mut self, o: &NbiotReport) {
        self.attached += o.attached;
        self.sleeps += o.sleeps;
        self.tau_wakes += o.tau_wakes;
        self.readdressed += o.readdressed;
        self.downlinks += o.downlinks;
        self.unreachable += o.unreachable;
        self.lost += o.lost;
        self.modem_send_failures += o.modem_send_failures;
        self.modem_timeouts += o.modem_timeouts;
        self.commands_run += o.commands_run;
        if let Some(c) = &o.commands {
            self.commands.get_or_insert_default().add(c);
        }
    }
}

/// Publishes the commands of `plan` to devices `0, every, 2·every, …` of `devices` (ids from
/// `id`), `plan.at` after `start`, then collects results until `until` or all are in.
pub async fn run_commands(
    view: BrokerSpec,
    fleet: usize,
    plan: CommandPlan,
    ids: Vec<String>,
    start: Instant,
    until: Instant,
) -> anyhow::Result<CommandReport> {
    let (host, port) = mqtt_host_port(&view.url)?;
    let mut options = MqttOptions::new(
        format!("v6iot-sim-cmd-{}-{fleet}", std::process::id()),
        host,
        port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 4096);
    let results_filter = format!("{}/{}/+/cmd/+/result", view.prefix, view.site);
    client
        .subscribe(&results_filter, QoS::AtLeastOnce)
        .await
        .context("subscribe to command results")?;
    let results: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let collected = results.clone();
    let pump = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    if let (Some(req), Some(status)) = (
                        v.get("req").and_then(|r| r.as_str()),
                        v.get("status").and_then(|r| r.as_str()),
                    ) && let Ok(mut map) = collected.lock()
                    {
                        map.insert(req.to_owned(), status.to_owned());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    sleep_until(start + plan.at).await;
    let body = serde_json::json!({
        "method": "PUT",
        "path": "/actuators/valve",
        "payload": "on",
        "ttl": plan.ttl.as_secs_f64().ceil() as u64,
    })
    .to_string();
    let targets: Vec<&String> = ids.iter().step_by(plan.every.max(1)).collect();
    for (k, id) in targets.iter().enumerate() {
        let topic = format!("{}/{}/{id}/cmd/c{k}", view.prefix, view.site);
        client
            .publish(topic, QoS::AtLeastOnce, false, body.clone())
            .await
            .context("publish a command")?;
    }
    let sent = targets.len() as u64;
    while Instant::now() < until {
        if results
            .lock()
            .map(|m| m.len() as u64 >= sent)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pump.abort();
    let _ = client.disconnect().await;
    let map = results
        .lock()
        .map_err(|_| anyhow::anyhow!("command results poisoned"))?;
    let mut report = CommandReport {
        sent,
        ..CommandReport::default()
    };
    for k in 0..targets.len() {
        match map.get(&format!("c{k}")) {
            Some(status) => *report.results.entry(status.clone()).or_default() += 1,
            None => report.missing += 1,
        }
    }
    Ok(report)
}

async fn sleep_until(t: Instant) {
    if let Some(t) = t.to_std() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
    }
}
