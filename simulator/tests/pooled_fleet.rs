//! A fleet on one socket per thread, each device at its own IPv6 address (shared/DESIGN.md §4,
//! `v6iot-sim run --source-prefix`), against the real edge router (in this process, requiring
//! OSCORE and checking every device's source address against its provisioned prefix) and the
//! simulator's embedded MQTT broker — all inside a network namespace this test creates (root),
//! where 2001:db8:100::/64 is routed to loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use v6iot_edge_router::config::EdgeConfig;
use v6iot_edge_router::gateway::GatewayStats;
use v6iot_simulator::load::{self, RunOptions};
use v6iot_simulator::report::Report;
use v6iot_simulator::scenario::{FleetSpec, Scenario, Sources};

mod common;

const DEVICES: u64 = 60;

/// Provisions `DEVICES` devices allowed on `allowed`, starts an edge and a broker, runs the
/// fleet from the pool in `sources` over 2 shard threads; returns the fleet's report and the
/// edge gateway's counters at the end.
async fn run_fleet(dir: &std::path::Path, allowed: &str, sources: &str) -> (Report, GatewayStats) {
    let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let broker = v6iot_simulator::broker::start(loopback).unwrap();
    let mut config = EdgeConfig::with_site("pool");
    config.coap.listen = SocketAddr::new(loopback, 0);
    config.mqtt.url = format!("mqtt://[{}]:{}", broker.ip(), broker.port());
    config.data_dir = dir.to_path_buf();
    let oscore = common::provision_fleet(dir, &mut config, DEVICES, "pool", allowed);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let edge = tokio::spawn(v6iot_edge_router::server::run(
        config,
        Some(ready_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let handle = ready_rx.await.expect("the edge router starts");
    let mut fleet = FleetSpec::new("pool", DEVICES, 300.0);
    fleet.id_prefix = "pool".into();
    fleet.oscore = Some(oscore);
    fleet.sources = Sources::Pool {
        prefix: sources.parse().unwrap(),
        offset: 0,
    };
    let broker_url = format!("mqtt://[{}]:{}", broker.ip(), broker.port());
    let mut scenario = Scenario::single(fleet, handle.coap_addr, &broker_url);
    scenario.broker.site = "pool".into();
    scenario.duration = Duration::from_millis(1500);
    scenario.drain = Duration::from_secs(2);
    scenario.threads = 2;
    let options = RunOptions {
        workdir: Some(dir.join("run")),
        ..RunOptions::default()
    };
    let report = load::run(scenario, options).await.unwrap();
    let _ = stop_tx.send(());
    edge.await.unwrap().unwrap();
    let gateway = *handle.gateway.lock().unwrap();
    (report, gateway)
}

/// Runs `body` inside a fresh network namespace with the pool's /64 routed to loopback, on a
/// tokio runtime made there (its threads are in the namespace too).
fn in_private_network<T: Send + 'static>(
    body: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    common::in_private_network(
        "2001:db8:100::/64",
        "with 2001:db8:100::/64 routed to loopback",
        move || body(&common::runtime()),
    )
}

#[test]
fn every_device_reports_from_its_own_address_and_everything_arrives() {
    let (r, _) = in_private_network(|rt| {
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(run_fleet(
            dir.path(),
            "2001:db8:100::/64",
            "2001:db8:100::/64",
        ))
    });
    assert!(r.checks.consistent, "{}", r.to_json());
    let t = &r.total;
    assert_eq!(t.registered, DEVICES, "{}", r.to_json());
    assert!(
        t.sent >= 300,
        "300/s for 1.5 s, after registering: {}",
        r.to_json()
    );
    assert_eq!(
        (t.acknowledged, t.delivered),
        (t.made, t.made),
        "{}",
        r.to_json()
    );
    assert_eq!(
        (t.lost, t.refused, t.unsent_at_end),
        (0, 0, 0),
        "{}",
        r.to_json()
    );
    assert_eq!(t.oscore.responses_rejected, 0, "{}", r.to_json());
    assert!(t.oscore.responses_verified >= t.sent, "{}", r.to_json());
}

/// The same fleet provisioned for another /64: the edge sees the pool's addresses, which are
/// outside every device's allowed prefix. It verifies each registration and refuses it with a
/// protected 4.03, which the device verifies. One refusal per device is below the edge's kid
/// quarantine (a kid's failures, not a network's, since the admission lanes), so nothing is
/// quarantined. Nothing is acknowledged or published.
#[test]
fn the_edge_sees_the_pool_addresses_and_refuses_them_outside_the_allowed_prefix() {
    let (r, gateway) = in_private_network(|rt| {
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(run_fleet(
            dir.path(),
            "2001:db8:200::/64",
            "2001:db8:100::/64",
        ))
    });
    let t = &r.total;
    assert_eq!(t.registered, 0, "{}", r.to_json());
    assert_eq!((t.acknowledged, t.delivered), (0, 0), "{}", r.to_json());
    // The refusals happened and arrived: a run where nothing reached the edge fails here.
    assert!(gateway.address_refused > 0, "{gateway:?}");
    assert_eq!(
        gateway.authenticated, gateway.address_refused,
        "every verified request was refused for its address: {gateway:?}"
    );
    assert_eq!(
        (t.oscore.responses_verified, t.oscore.responses_rejected),
        (gateway.address_refused, 0),
        "each refusal reached its device protected and verified: {} {gateway:?}",
        r.to_json()
    );
    // Each device's registration refused once, for no other cause; no kid quarantined.
    assert_eq!(gateway.address_refused, DEVICES, "{gateway:?}");
    assert_eq!(gateway.refused, gateway.address_refused, "{gateway:?}");
    assert_eq!(
        (gateway.quarantines, gateway.kid_quarantined),
        (0, 0),
        "{gateway:?}"
    );
}

/// One wait of an address pool reads its socket until it is empty (up to
/// `POOL_CALLS_PER_WAIT` batches): 5,000 answers queued for 5,000 devices — more than the
/// 1,024 a wait used to take, while a storm's answers went unread — all come out of one
/// `receive`, each to its own member.
#[test]
fn one_wait_of_a_pool_reads_everything_queued() {
    use v6iot_simulator::link::{AddressPool, Arrival, Link, POOL_CALLS_PER_WAIT, POOL_SLOTS};
    const MEMBERS: usize = 5000;
    const { assert!(MEMBERS <= POOL_CALLS_PER_WAIT * POOL_SLOTS) };
    let (delivered, members) = common::in_private_network(
        "2001:db8:100::/64",
        "with 2001:db8:100::/64 routed to loopback",
        || {
            let network: Ipv6Addr = "2001:db8:100::".parse().unwrap();
            let mut pool = AddressPool::bind(network, 5683, 1, 1, MEMBERS).unwrap();
            let edge = std::net::UdpSocket::bind("[::1]:0").unwrap();
            for i in 0..MEMBERS {
                let to = SocketAddr::from((pool.member_address(i).unwrap(), 5683));
                edge.send_to(&(i as u32).to_be_bytes(), to).unwrap();
            }
            let mut members = vec![0u32; MEMBERS];
            let delivered = pool
                .receive(Duration::from_secs(1), &mut |arrival| {
                    let Arrival::Datagram { member, bytes, .. } = arrival else {
                        panic!("{arrival:?}");
                    };
                    assert_eq!(bytes, (member as u32).to_be_bytes(), "member {member}");
                    members[member] += 1;
                })
                .unwrap();
            (delivered, members)
        },
    );
    assert_eq!(delivered, MEMBERS, "datagrams delivered by one wait");
    assert!(members.iter().all(|&n| n == 1), "each member its own");
}
