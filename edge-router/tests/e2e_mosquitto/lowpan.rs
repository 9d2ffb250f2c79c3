//! The border router end to end, each test in a network namespace of its own (`unshare -n`):
//! the `v6iot-edge` binary serves a PAN over ZEP (its `[[radio]]`) to a fleet of the SDK's
//! 6LoWPAN devices, with a TUN interface to the namespace's kernel; libcoap's
//! `coap-client-notls` and an OSCORE client reach devices by their global addresses; telemetry
//! reaches mosquitto, a platform command reaches a device and its result comes back, the audit
//! trail names the device; tshark decodes the router's capture down to CoAP.
//!
//! Needs root (namespaces, TUN) and Debian's mosquitto, mosquitto-clients, libcoap3-bin,
//! tshark and iproute2 (scripts/test installs them); a missing tool fails the test, naming it.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, DurableState, SecurityContext, protect_request, unprotect_response,
};

use super::ops::scrape;
use super::oscore::{Creds, add_device, assert_changed, edge_cli, provision, result_of, secret_of};
use super::{
    Edge, Mosquitto, TempDir, free_tcp_port, free_udp_port, mosquitto_pub, runtime, subscribe,
    subscribe_results, wait_for,
};

mod lowpan_fleet;
#[path = "../../../sdk/tests/tshark/mod.rs"]
mod tshark;

use lowpan_fleet::{
    CHANNEL, Fleet, FleetConfig, PAN, PREFIX, ROUTER_EUI, ROUTER_GLOBAL, big_note, id, planned,
};

/// Device n's kid and master secret, as `add_device` registered them.
fn credentials(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (_, kid) = id(n);
    (vec![kid], secret_of(kid))
}

/// Moves this test's thread (and what it starts) into a new network namespace, loopback up.
fn enter_namespace() {
    v6iot_testkit::require_root("a network namespace and a TUN device");
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): the border router tests need root");
    ip(&["link", "set", "lo", "up"]);
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (Debian iproute2) is not installed: apt-get install iproute2");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a test adds to the border router's configuration.
struct Options {
    /// A TUN `v6pan0`.
    tun: bool,
    /// `/metrics` on this address.
    ops: Option<SocketAddr>,
}

/// The edge router with OSCORE required and one PAN on ZEP to `fleet`; its capture in `pcap`.
fn start_border(
    dir: &Path,
    broker: u16,
    creds: &Creds,
    fleet: SocketAddr,
    zep_port: u16,
    pcap: &Path,
    options: Options,
) -> Edge {
    let tun = if options.tun {
        "tun = \"v6pan0\"\n"
    } else {
        ""
    };
    let ops = options
        .ops
        .map_or(String::new(), |a| format!("[ops]\nlisten = \"{a}\"\n"));
    Edge::start(
        dir,
        broker,
        &format!("listen = \"[::1]:{}\"", free_udp_port()),
        &format!(
            "[registry]\nseal_key_file = \"{}\"\n[security]\nrequire_oscore = true\n\
             sender_persist_step = 64\n[lowpan]\n{tun}pcap = \"{}\"\n[[radio]]\npan_id = {PAN}\n\
             channel = {CHANNEL}\nprefix = \"{PREFIX}\"\nrouter_eui64 = \"{ROUTER_EUI}\"\n\
             zep_medium = \"{fleet}\"\nzep_listen = \"[::1]:{zep_port}\"\n{ops}",
            creds.key_file.display(),
            pcap.display()
        ),
    )
}

/// Stops the edge with SIGTERM (its capture flushed) and waits for it.
fn stop_gracefully(edge: &mut Edge) {
    if let Some(mut child) = edge.child.take() {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "edge exit: {exit:?}");
    }
}

fn coap_client(args: &[&str]) -> Output {
    Command::new("coap-client-notls").args(args).output().expect(
        "coap-client-notls (Debian libcoap3-bin) is not installed: run scripts/test, or apt-get install libcoap3-bin",
    )
}

/// Wireshark's OSCORE contexts (its `oscore_contexts` table) for the devices' requests (kid =
/// the device's Sender ID, answers under the same context) and for requests to `commanded`
/// (the edge's Sender ID is empty: Wireshark takes the first context with an empty one).
fn oscore_contexts(devices: usize, commanded: usize) -> Vec<String> {
    let entry = |sender: &str, recipient: &str, kid: u8| {
        let secret: String = secret_of(kid).iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "-o uat:oscore_contexts:\"{sender}\",\"{recipient}\",\"{secret}\",\"\",\"\",\"AES-CCM-16-64-128 (CCM*)\""
        )
    };
    let mut v: Vec<String> = (0..devices)
        .map(|n| {
            let (_, kid) = id(n);
            entry(&format!("{kid:02x}"), "", kid)
        })
        .collect();
    let (_, kid) = id(commanded);
    v.push(entry("", &format!("{kid:02x}"), kid));
    v
}

fn decode_everything(tshark: &tshark::Tshark, pcap: &Path, oscore: &[String]) -> Vec<Vec<String>> {
    let rows = tshark.fields(pcap, oscore, &["frame.protocols", "wpan.fcs_ok"]);
    let verbose = || tshark.verbose(pcap, oscore);
    assert!(!rows.is_empty());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[1], "1", "frame {i}: bad FCS\n{}", verbose());
        assert!(r[0].starts_with("wpan:6lowpan"), "frame {i}: {r:?}");
    }
    assert_eq!(
        tshark.count(
            pcap,
            oscore,
            // Malformed, or any expert note of warning level (0x00600000) or above.
            "_ws.malformed || _ws.expert.severity >= 0x00600000 || wpan.fcs.bad"
        ),
        0,
        "{}",
        verbose()
    );
    tshark.fields(
        pcap,
        oscore,
        &[
            "ipv6.src",
            "ipv6.dst",
            "coap.code",
            "coap.opt.uri_path_recon",
            "6lowpan.reassembled.length",
            "udp.length",
        ],
    )
}

/// The border router's log line counters of PAN 0 (`border stats pan=0 …`).
fn border_stat(edge: &Edge, key: &str) -> Option<u64> {
    let log = edge.log.lock().unwrap();
    let line = log
        .iter()
        .rev()
        .find(|l| l.contains("border stats pan=0"))?;
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn global_reachability_libcoap_and_an_oscore_client_reach_devices_through_the_tun() {
    enter_namespace();
    let tshark = tshark::Tshark::find();
    let dir = TempDir::new("lowpan-reach");
    let creds = provision(dir.path());
    for n in 0..2 {
        let (name, kid) = id(n);
        add_device(&creds, &name, kid, PREFIX);
    }
    let broker = Mosquitto::start(dir.path());
    let socket = Fleet::bind();
    let zep_port = free_udp_port();
    let pcap = dir.path().join("router.pcap");
    let fleet_addr = socket.local_addr().unwrap();
    let mut edge = start_border(
        dir.path(),
        broker.port,
        &creds,
        fleet_addr,
        zep_port,
        &pcap,
        Options {
            tun: true,
            ops: None,
        },
    );
    let fleet = Fleet::start(
        socket,
        format!("[::1]:{zep_port}").parse().unwrap(),
        FleetConfig {
            devices: 2,
            reports: 2,
            every: Duration::from_millis(400),
            big_every: 0,
            credentials: Some(credentials),
        },
    );
    fleet.await_view(
        "both devices attached and reporting",
        Duration::from_secs(20),
        |v| v.addresses.iter().all(Option::is_some) && v.acked.iter().all(|&a| a >= 1),
    );
    // The kernel routes the PAN's /64 to the TUN, which has the router's address.
    let route = ip(&["-6", "route", "show", PREFIX]);
    assert!(route.contains("dev v6pan0"), "{route}");
    assert!(ip(&["-6", "addr", "show", "dev", "v6pan0"]).contains(&ROUTER_GLOBAL.to_string()));

    // libcoap's client, an unmodified IPv6 host program, GETs the device's resource
    // directory by its global address (the one plain request an OSCORE device answers). The
    // answer is larger than a frame: the device fragments it, the router reassembles it.
    let device = planned(1).to_ipv6();
    let out = coap_client(&[
        "-m",
        "get",
        "-B",
        "20",
        &format!("coap://[{device}]/.well-known/core"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("</valve>") && text.contains("self-test-report"),
        "{out:?}"
    );

    // An OSCORE-protected request from the host: the edge's side of device 1's context, its
    // sequence numbers far above the edge's own.
    let (_, kid) = id(1);
    let input = ContextInput {
        master_secret: secret_of(kid),
        master_salt: Vec::new(),
        id_context: None,
        sender_id: Vec::new(),
        recipient_id: vec![kid],
    };
    let mut ctx = SecurityContext::restore_state(
        &input,
        ContextConfig::default(),
        DurableState {
            sender_mark: 1 << 20,
            replay_floor: 0,
        },
    )
    .unwrap();
    let mark = ctx.mark_to_persist().unwrap();
    ctx.persisted(mark);
    let mut get = Packet::new();
    get.header.set_type(MessageType::Confirmable);
    get.header.code = MessageClass::Request(RequestType::Get);
    get.header.message_id = 0x4242;
    get.set_token(vec![7, 7]);
    get.add_option(CoapOption::UriPath, b"valve".to_vec());
    let (protected, mut info) = protect_request(&mut ctx, &get).unwrap();
    let sock = UdpSocket::bind("[::]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let bytes = protected.to_bytes().unwrap();
    let mut buf = [0_u8; 1500];
    let answer = (0..3)
        .find_map(|_| {
            sock.send_to(&bytes, SocketAddr::from((device, 5683)))
                .unwrap();
            let (n, from) = sock.recv_from(&mut buf).ok()?;
            assert_eq!(from.ip(), std::net::IpAddr::V6(device));
            Packet::from_bytes(&buf[..n]).ok()
        })
        .expect("the device's protected answer");
    let inner = unprotect_response(&mut ctx, &answer, &mut info).unwrap();
    assert_eq!(
        inner.header.code,
        MessageClass::Response(ResponseType::Content)
    );
    assert_eq!(inner.payload, b"0");

    wait_for("border stats", Duration::from_secs(5), || {
        border_stat(&edge, "from_host").is_some_and(|n| n >= 2)
    });
    assert!(border_stat(&edge, "to_host").unwrap() >= 2);
    stop_gracefully(&mut edge);
    drop(fleet);

    // Wireshark agrees: every frame of the router's capture decodes as 802.15.4 → 6LoWPAN →
    // IPv6, none malformed; the fragmented answer reassembles to what libcoap printed.
    let rows = decode_everything(&tshark, &pcap, &oscore_contexts(2, 1));
    let host_gets: Vec<_> = rows
        .iter()
        .filter(|r| r[1] == device.to_string() && r[3] == "/.well-known/core")
        .collect();
    assert!(!host_gets.is_empty(), "{rows:?}");
    let reassembled: Vec<_> = rows
        .iter()
        .filter(|r| !r[4].is_empty() && r[0] == device.to_string() && r[2] == "69")
        .collect();
    assert!(!reassembled.is_empty(), "a reassembled 2.05: {rows:?}");
    let payload = tshark.fields(
        &pcap,
        &oscore_contexts(2, 1),
        &["6lowpan.reassembled.length", "udp.payload"],
    );
    let link_format = text.trim().as_bytes().to_vec();
    let hex: String = link_format.iter().map(|b| format!("{b:02x}")).collect();
    // The reassembled UDP payload is the CoAP answer: header, options, 0xff, then exactly
    // the link format libcoap printed.
    assert!(
        payload
            .iter()
            .any(|r| !r[0].is_empty() && r[1].replace(':', "").ends_with(&format!("ff{hex}"))),
        "reassembled payload {payload:?} vs {text}"
    );
}

#[test]
fn end_to_end_a_lowpan_fleet_registers_reports_and_takes_commands_and_wireshark_agrees() {
    enter_namespace();
    let tshark = tshark::Tshark::find();
    let dir = TempDir::new("lowpan-e2e");
    let creds = provision(dir.path());
    let devices = 4;
    for n in 0..devices {
        let (name, kid) = id(n);
        add_device(&creds, &name, kid, PREFIX);
    }
    let broker = Mosquitto::start(dir.path());
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let results = subscribe_results(&rt, broker.port);
    let socket = Fleet::bind();
    let zep_port = free_udp_port();
    let pcap = dir.path().join("router.pcap");
    let ops: SocketAddr = format!("[::1]:{}", free_tcp_port()).parse().unwrap();
    let mut edge = start_border(
        dir.path(),
        broker.port,
        &creds,
        socket.local_addr().unwrap(),
        zep_port,
        &pcap,
        Options {
            tun: false,
            ops: Some(ops),
        },
    );
    let reports = 4;
    let fleet = Fleet::start(
        socket,
        format!("[::1]:{zep_port}").parse().unwrap(),
        FleetConfig {
            devices,
            reports,
            every: Duration::from_millis(300),
            big_every: 3,
            credentials: Some(credentials),
        },
    );
    // Every report of every device reaches the broker, once.
    wait_for(
        "every report at the broker",
        Duration::from_secs(30),
        || seen.lock().unwrap().records.len() == devices * reports as usize,
    );
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.duplicates, 0);
        for n in 0..devices {
            let (name, _) = id(n);
            for seq in 1..=reports {
                assert!(s.records.contains_key(&(name.clone(), seq)), "{name} {seq}");
            }
            // The big report went in fragments and arrived whole.
            let big = &s.records[&(name.clone(), 3)];
            let note = big
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["n"].as_str().unwrap().ends_with(":note"))
                .unwrap();
            assert_eq!(note["vs"].as_str(), Some(big_note(3).as_str()));
        }
    }

    // A platform command reaches device 2 over the radio; its result comes back.
    mosquitto_pub(
        broker.port,
        "v6iot/t/ld2/cmd/c1",
        r#"{"method":"PUT","path":"/valve","payload":"1","content_format":0}"#,
    );
    assert_changed(&result_of(&results, "c1", Duration::from_secs(15)));
    assert_eq!(*fleet.valves.lock().unwrap(), [false, false, true, false]);

    // The audit trail knows who held device 2's address.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let addr = planned(2).to_ipv6().to_string();
    let out = edge_cli(&creds, &["audit", "--address", &addr, "--at", &now]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("ld2"), "{out:?}");

    wait_for("border stats", Duration::from_secs(5), || {
        border_stat(&edge, "local_in")
            .is_some_and(|n| n >= (devices * (reports as usize + 1)) as u64)
    });
    assert_eq!(border_stat(&edge, "drops"), Some(0));
    // /metrics counts at least the frames the fleet sent (and the router's frames the fleet
    // took), and no drop.
    let (fleet_out, fleet_in) = {
        let v = fleet.view.lock().unwrap();
        (v.frames_out, v.frames_in)
    };
    assert!(fleet_out > 0 && fleet_in > 0);
    let pan0 = [("pan", "0")];
    wait_for("the frames on /metrics", Duration::from_secs(5), || {
        let m = scrape(ops);
        m.value("v6iot_radio_frames_received", &pan0) >= fleet_out as f64
            && m.value("v6iot_radio_frames_sent", &pan0) >= fleet_in as f64
    });
    let m = scrape(ops);
    assert_eq!(m.value("v6iot_border_drops", &pan0), 0.0);
    let to_gateway = m.value(
        "v6iot_border_packets_forwarded",
        &[("pan", "0"), ("path", "radio_to_gateway")],
    );
    assert!(to_gateway >= (devices * (reports as usize + 1)) as f64);
    // the gateway's CoAP datagrams by transport: the radio's are lowpan (one PAN here)
    let lowpan = [("transport", "lowpan")];
    assert_eq!(
        m.value("v6iot_coap_datagrams_received", &lowpan),
        to_gateway
    );
    let from_gateway = m.value(
        "v6iot_border_packets_forwarded",
        &[("pan", "0"), ("path", "gateway_to_radio")],
    );
    assert!(from_gateway > 0.0);
    assert_eq!(m.value("v6iot_coap_datagrams_sent", &lowpan), from_gateway);
    stop_gracefully(&mut edge);
    let frames_out = fleet.view.lock().unwrap().frames_out;
    drop(fleet);

    // Wireshark agrees: registration, telemetry, the command, fragmented reports.
    let rows = decode_everything(&tshark, &pcap, &oscore_contexts(devices, 2));
    assert!(
        rows.len() as u64 >= frames_out,
        "every frame the fleet sent is captured"
    );
    let router = ROUTER_GLOBAL.to_string();
    let d2 = planned(2).to_ipv6().to_string();
    let coap: Vec<_> = rows.iter().filter(|r| !r[2].is_empty()).collect();
    // OSCORE hides the inner method and path: the outer code is POST (2) for requests,
    // FETCH-free 2.04 (68) for answers.
    assert!(
        coap.iter()
            .any(|r| r[0] == d2 && r[1] == router && r[2] == "2"),
        "the device's protected requests: {coap:?}"
    );
    assert!(
        coap.iter()
            .any(|r| r[0] == router && r[1] == d2 && r[2] == "2"),
        "the command to the device: {coap:?}"
    );
    let reassembled: Vec<_> = rows.iter().filter(|r| !r[4].is_empty()).collect();
    assert!(
        reassembled.len() >= devices,
        "the big reports reassembled: {rows:?}"
    );
    for r in &reassembled {
        // The reassembled datagram is the IPv6 payload: UDP length + 40.
        assert_eq!(
            r[4].parse::<usize>().unwrap(),
            r[5].parse::<usize>().unwrap() + 40,
            "{r:?}"
        );
    }
}
