//! NB-IoT end to end: a fleet of the SDK's NB-IoT devices on emulated modems and carrier
//! (a scenario fleet with `transport = "nbiot"`, run by `load::run` on the shard core: PSM asked for, `b=UQ`, every device at a carrier
//! address of its own, a new address after every sleep) against the real edge router (the
//! `v6iot-edge` binary, which the scenario starts and stops: OSCORE required, each device's
//! prefix checked) and a real mosquitto — all inside a network namespace this test creates
//! (root), where 2001:db8:100::/64 is routed to loopback.
//!
//! Platform commands published while their devices sleep are delivered in the devices' next
//! active window and their results published (`ok`, each run once); nothing is sent to a
//! sleeping device; a command whose TTL passes while its device sleeps is reported `expired`
//! and never delivered late; the devices that woke at new addresses kept reporting and the real
//! `v6iot-edge audit --address A --at T` names each for every address it used. At the broker
//! (`mosquitto_sub` on `v6iot/nb/+/status`) every device's status goes `sleeping` after its
//! window and `registered` again when it wakes, with `next_wake` once the edge knows its period.
//!
//! scripts/test installs mosquitto and mosquitto-clients; without them this test fails, naming
//! the missing tool. It runs the `v6iot-edge` binary of this build (`cargo test --workspace`
//! builds it; alone: `cargo build -p v6iot-edge-router --bin v6iot-edge`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use v6iot_edge_router::audit::AuditKind;
use v6iot_edge_router::config::EdgeConfig;
use v6iot_edge_router::registry_db::admin::format_time;
use v6iot_sdk::uplink::Binding;
use v6iot_simulator::load::{self, RunOptions};
use v6iot_simulator::nbiot::carrier::{CarrierPlan, Coverage, CoverageMix};
use v6iot_simulator::nbiot::emulator::EmulatorConfig;
use v6iot_simulator::nbiot::fleet::{CommandPlan, NbiotPlan};
use v6iot_simulator::plan::Plan;
use v6iot_simulator::report::Report;
use v6iot_simulator::scenario::{self, FleetSpec, Load, Managed, Partition, Sources, Transport};

mod common;

use common::{Mosquitto, Running, edge_binary, free_udp_port, system_binary};
use v6iot_testkit::mosquitto::pub_command;

const DEVICES: u64 = 4;
/// The active time the devices ask for, and the edge's listening window for `b=UQ`.
const ACTIVE: Duration = Duration::from_secs(4);

/// Commands for every other device, published `at` after the start with `ttl`; devices report
/// every `report_every` (and sleep in between).
struct Scenario {
    commands: CommandPlan,
    report_every: Duration,
    duration: Duration,
}

/// The edge's configuration file for `config` (what this test sets; the rest are defaults).
fn edge_toml(config: &EdgeConfig) -> String {
    format!(
        "site = \"nb\"\nedge_id = \"nb-edge\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"{}\"\n\
         queue_listen_window_s = {}\n[mqtt]\nurl = \"{}\"\n[registry]\nseal_key_file = \"{}\"\n\
         [security]\nrequire_oscore = true\n",
        config.data_dir.display(),
        config.coap.listen,
        config.coap.queue_listen_window_s,
        config.mqtt.url,
        config.registry.seal_key_file.as_ref().unwrap().display(),
    )
}

/// Provisions the fleet (allowed on the carrier's /64), runs the NB-IoT fleet against the
/// `v6iot-edge` binary (started and stopped by the scenario) and mosquitto; returns its report
/// and the edge's configuration (for the registry).
async fn run(dir: &Path, broker_port: u16, s: &Scenario) -> (Report, EdgeConfig) {
    let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let port = free_udp_port();
    let mut config = EdgeConfig::with_site("nb");
    config.coap.listen = SocketAddr::new(loopback, port);
    config.coap.queue_listen_window_s = ACTIVE.as_secs();
    config.mqtt.url = format!("mqtt://[::1]:{broker_port}");
    config.data_dir = dir.to_path_buf();
    let oscore = common::provision_fleet(dir, &mut config, DEVICES, "nb", "2001:db8:100::/64");
    let edge_conf = dir.join("edge.toml");
    std::fs::write(&edge_conf, edge_toml(&config)).unwrap();
    let nbiot = NbiotPlan {
        carrier: CarrierPlan {
            coverage: CoverageMix::All(Coverage::Ce0),
            loss: 0.0,
            emulator: EmulatorConfig {
                attach_delay: Duration::from_secs(1),
                readdress_after_sleep: true,
                ..EmulatorConfig::default()
            },
            readdress_share: 0.0,
            seed: 13,
        },
        active_time: ACTIVE,
        periodic_tau: Duration::from_secs(600),
        commands: Some(s.commands),
    };
    let mut fleet = FleetSpec::new("nb", DEVICES, 0.0);
    fleet.load = Load::Interval(s.report_every);
    fleet.id_prefix = "nb".into();
    fleet.transport = Transport::Nbiot(Box::new(nbiot));
    fleet.binding = Binding::UQ;
    fleet.oscore = Some(oscore);
    fleet.sources = Sources::Pool {
        prefix: "2001:db8:100::/64".parse().unwrap(),
        offset: 0,
    };
    let mut scenario = scenario::Scenario::single(fleet, config.coap.listen, &config.mqtt.url);
    scenario.edge.managed = Some(Managed {
        command: vec![
            edge_binary().display().to_string(),
            "run".into(),
            "--config".into(),
            edge_conf.display().to_string(),
        ],
        ready_within: Duration::from_secs(20),
    });
    scenario.broker.site = "nb".into();
    scenario.duration = s.duration;
    scenario.drain = Duration::from_secs(3);
    scenario.seed = seed_without_shift(&scenario);
    let options = RunOptions {
        workdir: Some(dir.join("run")),
        progress: false,
        ..RunOptions::default()
    };
    let report = load::run(scenario, options).await.unwrap();
    (report, config)
}

/// A seed under which the fleet's phases are not shifted: device n first reports at
/// 0.2 s + fract(n × 0.618) × the interval after the start (device 0 at once), as the timings
/// of these tests assume.
fn seed_without_shift(scenario: &scenario::Scenario) -> u64 {
    (0..4096u64)
        .min_by_key(|&seed| {
            let mut s = scenario.clone();
            s.seed = seed;
            let plan = Plan::new(s, Partition::WHOLE);
            plan.device(0).and_then(|d| plan.first_report(d)).unwrap()
        })
        .unwrap()
}

/// Runs `body` inside a fresh network namespace with the carrier's /64 routed to loopback, with
/// mosquitto started there, on a tokio runtime made there.
fn in_private_network<T: Send + 'static>(
    body: impl FnOnce(&tokio::runtime::Runtime, &Path, u16) -> T + Send + 'static,
) -> T {
    common::in_private_network(
        "2001:db8:100::/64",
        "with the carrier's /64 routed to loopback",
        move || {
            let dir = tempfile::tempdir().unwrap();
            let broker = Mosquitto::on_loopback(dir.path(), "");
            let out = body(&common::runtime(), dir.path(), broker.port());
            drop(broker);
            out
        },
    )
}

/// What `v6iot-edge audit --address ADDR --at TIME --data-dir DIR` prints: the device that
/// held `address` at `at`.
fn who_had(data_dir: &Path, address: Ipv6Addr, at: &str) -> String {
    let out = Command::new(edge_binary())
        .args(["audit", "--address", &address.to_string(), "--at", at])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "v6iot-edge audit --address {address} --at {at}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The addresses each device was bound to or moved to, by the audit trail; for each of them
/// the real `v6iot-edge audit --address A --at T` (T: when the trail has the device take A)
/// names the device.
fn audited_addresses(config: &EdgeConfig) -> Vec<(String, BTreeSet<Ipv6Addr>)> {
    let registry = config.open_registry().unwrap();
    let log = registry.audit();
    let mut out = Vec::new();
    for n in 0..DEVICES {
        let id = format!("nb{n:06}");
        let taken: Vec<(Ipv6Addr, String)> = log
            .history(&id)
            .unwrap()
            .into_iter()
            .filter(|r| {
                matches!(
                    r.event.kind,
                    AuditKind::AddressBound | AuditKind::AddressChanged
                )
            })
            .filter_map(|r| Some((r.event.address?, format_time(r.event.at))))
            .collect();
        for (address, at) in &taken {
            assert_eq!(
                who_had(&config.data_dir, *address, at),
                id,
                "audit --address {address} --at {at} names {id}"
            );
        }
        out.push((id, taken.into_iter().map(|(a, _)| a).collect()));
    }
    out
}

/// `mosquitto_sub` on the devices' status topics (`v6iot/nb/+/status`, retained) in the test's
/// namespace, writing `topic payload` lines to a file; stopped on drop.
struct StatusWatch {
    _child: Running,
    file: PathBuf,
}

impl StatusWatch {
    /// Subscribes and waits until a probe published on the topic has arrived (subscribed).
    fn start(dir: &Path, port: u16) -> StatusWatch {
        let file = dir.join("status.log");
        let child = Command::new(system_binary("mosquitto_sub", "mosquitto-clients"))
            .args(["-h", "::1", "-p", &port.to_string(), "-v"])
            .args(["-t", "v6iot/nb/+/status"])
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let watch = StatusWatch {
            _child: Running(child),
            file,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !watch
            .lines()
            .iter()
            .any(|l| l.starts_with("v6iot/nb/probe/status "))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto_sub did not subscribe"
            );
            let status = pub_command("::1", port, "v6iot/nb/probe/status")
                .args(["-m", "{}"])
                .status()
                .unwrap();
            assert!(status.success(), "mosquitto_pub of the probe");
            std::thread::sleep(Duration::from_millis(100));
        }
        watch
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Each device's status messages, in order: `(device, message)`.
    fn statuses(&self) -> Vec<(String, serde_json::Value)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let (topic, payload) = l.split_once(' ')?;
                let device = topic.strip_prefix("v6iot/nb/")?.strip_suffix("/status")?;
                (device != "probe")
                    .then(|| (device.to_owned(), serde_json::from_str(payload).unwrap()))
            })
            .collect()
    }
}

/// At the broker: every device's status went `sleeping` after its window and `registered`
/// again when it woke; a device whose wake-up period the edge knew (after two wake-ups) was
/// `sleeping` with `next_wake` (Unix seconds, after the message's time) and then `registered`.
fn check_statuses(statuses: &[(String, serde_json::Value)]) {
    let mut with_next_wake = 0;
    for n in 0..DEVICES {
        let id = format!("nb{n:06}");
        let states: Vec<&serde_json::Value> = statuses
            .iter()
            .filter(|(d, _)| *d == id)
            .map(|(_, m)| m)
            .collect();
        let state = |m: &serde_json::Value| m["state"].as_str().unwrap_or_default().to_owned();
        let woke = states
            .windows(2)
            .filter(|w| state(w[0]) == "sleeping" && state(w[1]) == "registered")
            .map(|w| w[0])
            .collect::<Vec<_>>();
        assert!(
            !woke.is_empty(),
            "{id} was sleeping, then registered: {states:?}"
        );
        for m in woke {
            if let Some(next) = m["next_wake"].as_f64() {
                assert!(next > m["t"].as_f64().unwrap(), "{m}");
                with_next_wake += 1;
            }
        }
    }
    assert!(
        with_next_wake >= 1,
        "a sleeping status with next_wake: {statuses:?}"
    );
}

/// Commands published while their devices sleep arrive in the devices' next window; each is
/// `ok` and ran once; nothing reached a sleeping device; the devices moved after their sleeps
/// and kept reporting, and the audit names each device for each of its addresses.
#[test]
fn a_sleeping_device_gets_its_command_when_it_wakes_and_its_moves_are_audited() {
    let scenario = Scenario {
        // Published at 9 s for devices 0 and 2, asleep then: they report at about 0 s and 3 s
        // (fleet phases), every 12 s, and sleep 4 s after their last uplink.
        commands: CommandPlan {
            every: 2,
            at: Duration::from_secs(9),
            ttl: Duration::from_secs(120),
        },
        report_every: Duration::from_secs(12),
        duration: Duration::from_secs(36),
    };
    let (r, audited, statuses) = in_private_network(move |rt, dir, port| {
        let watch = StatusWatch::start(dir, port);
        let (r, config) = rt.block_on(run(dir, port, &scenario));
        (r, audited_addresses(&config), watch.statuses())
    });
    let t = &r.total;
    let nb = t.nbiot.as_ref().expect("an NB-IoT report");
    let c = nb.commands.as_ref().expect("a command report");
    assert_eq!(t.registered, DEVICES, "{t:?}");
    assert_eq!(c.sent, 2, "{c:?}");
    assert_eq!(c.results.get("ok"), Some(&2), "{c:?}");
    assert_eq!((c.missing, c.served), (0, 2), "each ran once: {c:?}");
    assert!(nb.sleeps >= DEVICES, "{nb:?}");
    assert_eq!(
        nb.unreachable, 0,
        "nothing sent to a sleeping device: {nb:?}"
    );
    assert!(nb.readdressed >= DEVICES, "{nb:?}");
    // Reports kept arriving from the new addresses.
    assert!(t.made >= 2 * DEVICES, "{t:?}");
    assert_eq!(
        (t.acknowledged, t.delivered, t.lost),
        (t.made, t.made, 0),
        "{t:?}"
    );
    for (id, addresses) in &audited {
        assert!(
            addresses.len() >= 2,
            "{id} woke at a new address and the audit has both: {addresses:?}"
        );
    }
    check_statuses(&statuses);
}

/// A command whose TTL passes while its device sleeps is reported `expired`; the device never
/// runs it. Reports every 30 s: devices 0 and 2 report at about 0 s and 7 s (fleet phases)
/// and sleep from about 6 s and 12 s; the commands, from 14 s with a TTL of 5 s, expire before
/// their next reports (30 s and 37 s).
#[test]
fn a_command_whose_ttl_passes_in_the_sleep_is_expired_never_delivered_late() {
    let scenario = Scenario {
        commands: CommandPlan {
            every: 2,
            at: Duration::from_secs(14),
            ttl: Duration::from_secs(5),
        },
        report_every: Duration::from_secs(30),
        duration: Duration::from_secs(36),
    };
    let (r, _) = in_private_network(move |rt, dir, port| rt.block_on(run(dir, port, &scenario)));
    let t = &r.total;
    let nb = t.nbiot.as_ref().expect("an NB-IoT report");
    let c = nb.commands.as_ref().expect("a command report");
    assert_eq!(c.sent, 2, "{c:?}");
    assert_eq!(c.results.get("expired"), Some(&2), "{c:?}");
    assert_eq!((c.missing, c.served), (0, 0), "never delivered late: {c:?}");
    assert!(
        t.made >= DEVICES,
        "the devices woke and reported after: {t:?}"
    );
    assert_eq!(nb.unreachable, 0, "{nb:?}");
}
