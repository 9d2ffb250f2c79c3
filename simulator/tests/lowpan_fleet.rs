//! A 6LoWPAN fleet end to end: `v6iot-sim run`'s `transport = "lowpan"` (the SDK's 6LoWPAN
//! devices on the shard core, through the simulator's in-process 802.15.4 medium on one ZEP
//! socket) against the real `v6iot-edge` binary as border router (its `[[radio]]` on ZEP, its
//! TUN up, OSCORE required) and a real mosquitto — inside a network namespace this test
//! creates (root). Every device attaches and registers with OSCORE, every report made reaches
//! mosquitto (made = delivered; nothing unsent, lost or refused), large reports go as
//! fragments, and the capture of everything on air decodes with tshark as 802.15.4 → 6LoWPAN
//! with zero malformed or bad-FCS frames. The same through a `v6iot-sim medium` process
//! between fleet and router (the fleet one ZEP participant of it); and with the airtime model
//! on, where the channel's contention shows in the report (back-offs, collisions, CoAP
//! retransmissions, never more than 250 kbit/s on air) and every report arrives or is still
//! queued at its device at the end — none lost, the report's classes adding up and its record
//! agreeing with the SDK's reporter.
//!
//! scripts/test installs mosquitto, tshark and iproute2; without them this test fails, naming
//! the missing tool. It runs the `v6iot-edge` binary of this build (`cargo test --workspace`
//! builds it; alone: `cargo build -p v6iot-edge-router --bin v6iot-edge`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../sdk/tests/tshark/mod.rs"]
mod tshark;

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use v6iot_edge_router::config::EdgeConfig;
use v6iot_simulator::load::{self, RunOptions};
use v6iot_simulator::lowpan::{LowpanPlan, MediumAt};
use v6iot_simulator::report::Report;
use v6iot_simulator::scenario::{self, FleetSpec, Load, Managed, Payload, Sources, Transport};

use common::{edge_binary, free_tcp_port, free_udp_port};

const DEVICES: u64 = 240;
/// Devices of the run through a `v6iot-sim medium` process.
const REMOTE_DEVICES: u64 = 120;
/// Devices of the run with the airtime model.
const AIRTIME_DEVICES: u64 = 40;
const PREFIX: &str = "2001:db8:1200:305::/64";
const PAN: u16 = 0xabcd;
const CHANNEL: u8 = 26;

/// Moves this thread into a new network namespace with loopback up.
fn enter_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): this test needs root");
    let out = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .expect("`ip` (Debian iproute2) is not installed: apt-get install iproute2");
    assert!(out.status.success(), "{out:?}");
}

/// Sockets of a run.
struct Ports {
    coap: u16,
    mqtt: u16,
    fleet_zep: u16,
    router_zep: u16,
    /// A `v6iot-sim medium` process between fleet and router, at this port.
    medium: Option<u16>,
}

/// A `v6iot-sim medium` process (ideal), the router its pinned peer; killed on drop.
struct MediumProcess(std::process::Child);

impl MediumProcess {
    fn start(port: u16, router: u16) -> MediumProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
            .args(["medium", "--listen", &format!("[::1]:{port}")])
            .args(["--peer", &format!("[::1]:{router}"), "--duration", "120s"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        MediumProcess(child)
    }
}

impl Drop for MediumProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The edge's configuration: OSCORE required, a TUN, one PAN on ZEP to the fleet's socket.
fn write_edge_config(dir: &Path, key: &Path, p: &Ports) -> PathBuf {
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "site = \"lp\"\nedge_id = \"lp-edge\"\ndata_dir = \"{data}\"\n\
             [coap]\nlisten = \"[::1]:{coap}\"\n[mqtt]\nurl = \"mqtt://[::1]:{mqtt}\"\n\
             [registry]\nseal_key_file = \"{key}\"\n[security]\nrequire_oscore = true\n\
             [lowpan]\ntun = \"v6pan0\"\n\
             [[radio]]\npan_id = {PAN}\nchannel = {CHANNEL}\nprefix = \"{PREFIX}\"\n\
             router_eui64 = \"02:00:00:00:00:00:00:01\"\n\
             zep_medium = \"[::1]:{medium}\"\nzep_listen = \"[::1]:{router}\"\n",
            data = dir.join("edge").display(),
            coap = p.coap,
            mqtt = p.mqtt,
            key = key.display(),
            medium = p.medium.unwrap_or(p.fleet_zep),
            router = p.router_zep,
        ),
    )
    .unwrap();
    path
}

/// Runs the fleet against the edge and mosquitto (both started by the run, in this
/// namespace); its report, and the capture's path.
/// How a run goes.
#[derive(Debug, Clone, Copy)]
struct Setup {
    devices: u64,
    /// Through a `v6iot-sim medium` process.
    remote: bool,
    /// The in-process medium's airtime model.
    airtime: bool,
}

fn run_fleet(dir: &Path, setup: Setup) -> (Report, PathBuf) {
    let Setup {
        devices,
        remote,
        airtime,
    } = setup;
    let p = Ports {
        coap: free_udp_port(),
        mqtt: free_tcp_port(),
        fleet_zep: free_udp_port(),
        router_zep: free_udp_port(),
        medium: remote.then(free_udp_port),
    };
    let _medium = p
        .medium
        .map(|port| MediumProcess::start(port, p.router_zep));
    let data = dir.join("edge");
    let mut config = EdgeConfig::with_site("lp");
    config.data_dir = data.clone();
    let oscore = common::provision_fleet(&data, &mut config, devices, "lp", PREFIX);
    let key = config.registry.seal_key_file.clone().unwrap();
    let edge_toml = write_edge_config(dir, &key, &p);
    let mosquitto_conf = dir.join("mosquitto.conf");
    std::fs::write(
        &mosquitto_conf,
        format!("listener {} ::1\nallow_anonymous true\nuser root\n", p.mqtt),
    )
    .unwrap();
    let pcap = dir.join("air.pcap");
    let router: SocketAddr = format!("[::1]:{}", p.router_zep).parse().unwrap();
    let plan = LowpanPlan {
        listen: format!("[::1]:{}", p.fleet_zep).parse().unwrap(),
        pcap: Some(pcap.clone()),
        medium: match p.medium {
            Some(port) => MediumAt::Remote(format!("[::1]:{port}").parse().unwrap()),
            None => MediumAt::InProcess { router },
        },
        airtime,
        // With the airtime model, devices hear each other (CSMA/CA works; in a star every
        // device is a hidden terminal to every other, and without link-layer ACKs from the
        // devices their collided fragments are simply gone).
        flat: airtime,
        ..LowpanPlan::new(PAN, CHANNEL, router)
    };
    let mut fleet = FleetSpec::new("motes", devices, 0.0);
    fleet.id_prefix = "lp".into();
    fleet.load = Load::Interval(Duration::from_secs(4));
    // Reports of about 100 bytes: with OSCORE and CoAP they take two frames (fragments).
    fleet.payload = Payload {
        pad: 60,
        ..Payload::default()
    };
    fleet.ramp = Duration::from_secs(3);
    fleet.transport = Transport::Lowpan(Box::new(plan));
    fleet.oscore = Some(oscore);
    fleet.sources = Sources::Pool {
        prefix: PREFIX.parse().unwrap(),
        offset: 1,
    };
    let edge_addr: SocketAddr = format!("[::1]:{}", p.coap).parse().unwrap();
    let mut s = scenario::Scenario::single(fleet, edge_addr, &format!("mqtt://[::1]:{}", p.mqtt));
    s.name = "lowpan".into();
    s.broker.site = "lp".into();
    s.duration = Duration::from_secs(12);
    s.drain = Duration::from_secs(20);
    s.edge.managed = Some(Managed {
        command: vec![
            edge_binary().display().to_string(),
            "run".into(),
            "--config".into(),
            edge_toml.display().to_string(),
        ],
        ready_within: Duration::from_secs(20),
    });
    s.broker.managed = Some(Managed {
        command: vec![
            common::mosquitto_binary().display().to_string(),
            "-c".into(),
            mosquitto_conf.display().to_string(),
        ],
        ready_within: Duration::from_secs(10),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = dir.join("work");
    let options = RunOptions {
        workdir: Some(work.clone()),
        ..RunOptions::default()
    };
    match rt.block_on(load::run(s, options)) {
        Ok(r) => (r, pcap),
        Err(e) => panic!(
            "{e:#}\nedge log:\n{}",
            std::fs::read_to_string(work.join("edge.log")).unwrap_or_default()
        ),
    }
}

#[test]
fn a_lowpan_fleet_registers_with_oscore_and_every_report_reaches_mosquitto() {
    run_and_check(Setup {
        devices: DEVICES,
        remote: false,
        airtime: false,
    });
}

#[test]
fn a_lowpan_fleet_reaches_the_router_through_a_medium_process() {
    run_and_check(Setup {
        devices: REMOTE_DEVICES,
        remote: true,
        airtime: false,
    });
}

#[test]
fn with_the_airtime_model_contention_shows_in_the_report() {
    let report = run_and_check(Setup {
        devices: AIRTIME_DEVICES,
        remote: false,
        airtime: true,
    });
    let json = report.to_json();
    let air = report.total.lowpan.and_then(|l| l.air).unwrap();
    assert!(
        air.backoffs >= air.transmissions,
        "a back-off before every frame: {json}"
    );
    assert!(air.air_bytes > 0, "{json}");
    assert!(
        air.peak_on_air_bps > 0.0 && air.peak_on_air_bps <= 250_000.0,
        "never more than 250 kbit/s on air: {json}"
    );
}

fn run_and_check(setup: Setup) -> Report {
    let Setup {
        devices, remote, ..
    } = setup;
    common::require_root("a network namespace and the border router's TUN");
    let tshark = tshark::Tshark::find();
    let _ = edge_binary();
    let (report, pcap) = std::thread::spawn(move || {
        enter_namespace();
        let dir = tempfile::tempdir().unwrap();
        let out = run_fleet(dir.path(), setup);
        // The capture outlives the namespace's directory.
        let keep =
            tshark::temp_dir(&format!("lowpan-fleet-{remote}-{}", setup.airtime)).join("air.pcap");
        std::fs::copy(&out.1, &keep).unwrap();
        (out.0, keep)
    })
    .join()
    .unwrap();
    let t = &report.total;
    let json = report.to_json();
    assert_eq!(t.devices, devices, "{json}");
    assert!(
        t.adds_up(),
        "made = delivered + unsent + lost + refused: {json}"
    );
    let lowpan = t.lowpan.as_ref().expect("a lowpan section");
    eprintln!(
        "made {} delivered {} unsent {} lost {:?} refused {} registered {}; checks {:?}; lowpan {lowpan:?}",
        t.made,
        t.delivered,
        t.unsent_at_end,
        t.lost_by_cause,
        t.refused,
        t.registered,
        report.checks
    );
    // Every report made is accounted for, the record agrees with the SDK's reporter, and
    // nothing acknowledged was lost (issue 11: a report made before its device attached was
    // thrown away unheard, and showed up as one "acknowledged, not delivered").
    assert!(report.checks.consistent, "{json}");
    assert_eq!(t.lost_by_cause.acknowledged_not_delivered, 0, "{json}");
    let air = lowpan.air.as_ref().expect("the medium's figures");
    if !setup.airtime {
        // The ideal medium: everything arrives.
        assert_eq!(t.registered, devices, "every device registered: {json}");
        assert!(t.made >= 2 * devices, "reports made: {json}");
        assert_eq!(
            t.delivered, t.made,
            "every report made reached mosquitto: {json}"
        );
        assert_eq!((t.unsent_at_end, t.lost, t.refused), (0, 0, 0), "{json}");
        assert!(t.oscore.responses_verified >= t.made, "OSCORE: {json}");
        assert_eq!(lowpan.attached, devices, "{json}");
        assert!(
            air.fragments_up >= t.made,
            "every report went as fragments: {json}"
        );
    } else {
        // A crowded channel: everything gets through in the end (CoAP retransmits what
        // collided), or is still queued at its device when the run stops — never lost.
        assert_eq!(t.registered, devices, "{json}");
        assert_eq!((t.lost, t.refused), (0, 0), "{json}");
        assert_eq!(t.delivered + t.unsent_at_end, t.made, "{json}");
        // Most get through within the drain; how many are still queued then depends on how
        // far the CoAP retransmission timers got, which a loaded CI machine stretches (89 % seen
        // once under a full ./scripts/test, 95-98 % alone). The guarantee is the line above.
        assert!(t.delivered * 10 >= t.made * 8, "{json}");
        assert!(t.retransmissions > 0, "{json}");
    }
    assert_eq!(air.frames_up, lowpan.frames_out, "{json}");
    assert!(
        lowpan.frames_in > 0 && lowpan.frames_in <= air.frames_down,
        "{json}"
    );
    assert_eq!(
        air.captured,
        air.transmissions + air.acks,
        "the capture has every frame on air: {json}"
    );

    // Wireshark agrees: every frame 802.15.4 → 6LoWPAN with a good FCS, none malformed.
    let rows = tshark.fields(&pcap, &[], &["frame.protocols", "wpan.fcs_ok"]);
    assert_eq!(rows.len() as u64, air.captured);
    let acks = rows.iter().filter(|r| r[0] == "wpan").count();
    assert_eq!(acks as u64, air.acks, "link-layer ACKs");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[1], "1", "frame {i}: bad FCS");
        assert!(
            r[0] == "wpan" || r[0].starts_with("wpan:6lowpan"),
            "frame {i}: {r:?}"
        );
    }
    assert_eq!(
        tshark.count(&pcap, &[], "_ws.malformed || wpan.fcs.bad"),
        0,
        "malformed or bad-FCS frames"
    );
    let coap = tshark.count(&pcap, &[], "coap");
    assert!(
        coap as u64 >= 2 * t.made,
        "CoAP decoded in {coap} frames: {json}"
    );
    report
}
