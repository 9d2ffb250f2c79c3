//! `v6iot-sim demo`: everything in one process on loopback — an embedded MQTT broker
//! (rumqttd), the edge router with its durable outbox, and a fleet of simulated devices that
//! register and report — then a summary of what reached the broker.
//!
//! Security is as in production: the demo provisions fresh OSCORE credentials for every device
//! (as `v6iot-sim provision` does), imports them into the edge's registry under a fresh seal key,
//! and the edge requires OSCORE (its default); every registration and report is protected.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use anyhow::Context as _;
use v6iot_credentials::Ipv6Prefix;
use v6iot_edge_router::config::EdgeConfig;

use crate::load::{self, RunOptions};
use crate::provision::{ProvisionPlan, provision_edge};
use crate::report::Report;
use crate::scenario::{FleetSpec, Scenario};

/// Size of a demo run.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    /// Devices.
    pub devices: usize,
    /// Reporting period.
    pub duration: Duration,
    /// Reports per second over the fleet.
    pub rate: f64,
    /// Show a progress bar.
    pub progress: bool,
}

/// Runs the demo and returns the fleet's report.
pub async fn run(plan: DemoPlan) -> anyhow::Result<Report> {
    let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let broker = crate::broker::start(loopback)?;
    let data_dir = std::env::temp_dir().join(format!("v6iot-demo-{}", std::process::id()));
    let mut config = EdgeConfig::with_site("demo");
    config.edge_id = "demo-edge".into();
    config.coap.listen = std::net::SocketAddr::new(loopback, 0);
    config.mqtt.url = format!("mqtt://[{}]:{}", broker.ip(), broker.port());
    config.data_dir = data_dir.clone();
    let oscore = provision_edge(
        &data_dir,
        &mut config,
        &ProvisionPlan {
            devices: plan.devices as u64,
            first: 0,
            id_prefix: "dev".into(),
            class: 1,
            prefix: "::1/128"
                .parse::<Ipv6Prefix>()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        },
    )?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let edge = tokio::spawn(v6iot_edge_router::server::run(
        config,
        Some(ready_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let handle = ready_rx.await.context("the edge router did not start")?;
    println!(
        "broker   mqtt://[{}]:{} (embedded rumqttd)",
        broker.ip(),
        broker.port()
    );
    println!(
        "edge     coap://{} → outbox {} → MQTT",
        handle.coap_addr,
        data_dir.join("outbox").display()
    );
    println!(
        "devices  {} on [::1], OSCORE-protected, {:.0} reports/s for {:.0} s",
        plan.devices,
        plan.rate,
        plan.duration.as_secs_f64()
    );
    let mut fleet = FleetSpec::new("demo", plan.devices as u64, plan.rate);
    fleet.id_prefix = "dev".into();
    fleet.oscore = Some(oscore);
    let mut scenario = Scenario::single(
        fleet,
        handle.coap_addr,
        &format!("mqtt://[{}]:{}", broker.ip(), broker.port()),
    );
    scenario.name = "demo".into();
    scenario.duration = plan.duration;
    scenario.broker.site = "demo".into();
    let report = load::run(
        scenario,
        RunOptions {
            progress: plan.progress,
            workdir: Some(data_dir.join("sim")),
            ..RunOptions::default()
        },
    )
    .await;
    let _ = stop_tx.send(());
    let _ = edge.await;
    let _ = std::fs::remove_dir_all(&data_dir);
    report
}

/// The human summary of a demo run.
pub fn summary(r: &Report) -> String {
    r.summary()
}
