//! Who is where (issue 10, points 0–2) through the `v6iot-edge` binary: answers leave from the
//! edge's address a request arrived at — for libcoap's `coap-client-notls` from each source to
//! each of the edge's addresses, on `[::]` and on `0.0.0.0` — and so do commands and their
//! retransmissions; a command for one device never goes under another's key, and another
//! device's answer never becomes its result.
//!
//! Tests on global addresses run in a network namespace of their own (`unshare`, root): one
//! veth pair, the edge's addresses on one end (a global one, a ULA, an NB-IoT ingress prefix,
//! two IPv4 networks), the clients' on the other. Nothing leaves the namespace.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::oscore::{self, ContextConfig, ContextInput, SecurityContext};

use super::oscore::{
    ANY_LOOPBACK4, Device, add_device, assert_changed, await_stat, code, edge_cli, plain_post,
    provision, result_of, secure, start_edge,
};
use super::{Edge, Mosquitto, TempDir, free_tcp_port, free_udp_port, runtime};

/// The edge's addresses: a global one, a ULA, an NB-IoT ingress prefix; two IPv4 networks.
const EDGE_V6: [&str; 3] = ["2001:db8:1::1", "fd00:1::1", "2001:db8:2::1"];
const EDGE_V4: [&str; 2] = ["192.0.2.1", "198.51.100.1"];
/// The clients' addresses, one in each of the edge's networks.
const CLIENT_V6: [&str; 3] = ["2001:db8:1::100", "fd00:1::100", "2001:db8:2::100"];
const CLIENT_V4: [&str; 2] = ["192.0.2.100", "198.51.100.100"];

/// Runs `f` on a thread of its own in a new network namespace (with every process it starts):
/// loopback up, and the addresses above on the two ends of a veth pair.
fn in_private_network<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    v6iot_testkit::require_root("a network namespace");
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): a network namespace needs root");
        let ip = |args: String| {
            let status = Command::new("ip")
                .args(args.split_whitespace())
                .status()
                .expect("`ip` (iproute2) is not installed: run scripts/test");
            assert!(status.success(), "ip {args}: {status}");
        };
        ip("link set lo up".into());
        ip("link add v0 type veth peer name v1".into());
        ip("link set v0 up".into());
        ip("link set v1 up".into());
        for (end, v6, v4) in [("v0", EDGE_V6, EDGE_V4), ("v1", CLIENT_V6, CLIENT_V4)] {
            for a in v6 {
                ip(format!("addr add {a}/64 dev {end} nodad"));
            }
            for a in v4 {
                ip(format!("addr add {a}/24 dev {end}"));
            }
        }
        f()
    });
    match thread.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A plain POST from libcoap's client at `from` to `to`: what it printed.
fn coap_client(from: &str, to: SocketAddr) -> String {
    plain_post(&["-a", from], to)
}

#[test]
fn every_address_of_the_edge_answers_from_itself() {
    in_private_network(|| {
        for listen in ["[::]", "0.0.0.0"] {
            let dir = TempDir::new("addr-libcoap");
            let creds = provision(dir.path());
            let port = free_udp_port();
            let edge = Edge::start(
                dir.path(),
                free_tcp_port(), // no broker: only the CoAP side is looked at
                &format!("listen = \"{listen}:{port}\""),
                &secure(&creds, "sender_persist_step = 64\n"),
            );
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            if listen == "[::]" {
                for from in CLIENT_V6 {
                    pairs.extend(EDGE_V6.iter().map(|to| (from, *to)));
                }
            }
            // IPv4 on the dual-stack socket (IPv4-mapped), and on an IPv4 socket.
            for from in CLIENT_V4 {
                pairs.extend(EDGE_V4.iter().map(|to| (from, *to)));
            }
            // A plain request is refused with 4.01 "OSCORE required": an answer, which the
            // client (connected to the address it asked) only sees from that address.
            let unanswered: Vec<String> = pairs
                .iter()
                .filter_map(|(from, to)| {
                    let to = SocketAddr::new(to.parse().unwrap(), port);
                    let text = coap_client(from, to);
                    (!text.contains("4.01")).then(|| format!("{from} → {to}: {text:?}"))
                })
                .collect();
            assert!(
                unanswered.is_empty(),
                "edge on {listen}: {} of {} pairs got no answer:\n{}",
                unanswered.len(),
                pairs.len(),
                unanswered.join("\n")
            );
            await_stat(&edge, "plain", pairs.len() as u64);
        }
    });
}

/// The next request from the edge at `sock` (connected to the edge's address: nothing from any
/// other gets through): its bytes.
fn next_request(sock: &UdpSocket) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "no request from the edge");
        if let Ok(n) = sock.recv(&mut buf) {
            let p = Packet::from_bytes(&buf[..n]).unwrap();
            if matches!(p.header.code, MessageClass::Request(_)) {
                return buf[..n].to_vec();
            }
        }
    }
}

#[test]
fn a_command_and_its_retransmission_leave_from_the_address_the_device_used() {
    in_private_network(|| {
        let dir = TempDir::new("addr-command");
        let creds = provision(dir.path());
        add_device(&creds, "m1", 1, "2001:db8::/32");
        let broker = Mosquitto::start(dir.path());
        let port = free_udp_port();
        let edge = Edge::start(
            dir.path(),
            broker.port,
            &format!("listen = \"[::]:{port}\""),
            &secure(&creds, "sender_persist_step = 64\n"),
        );
        let rt = runtime();
        let results = super::subscribe_results(&rt, broker.port);
        // The device reaches the edge at its NB-IoT ingress address; its socket takes
        // datagrams from that address only.
        let nbiot: SocketAddr = format!("[{}]:{port}", EDGE_V6[2]).parse().unwrap();
        let mut m1 = Device::new("m1", 1, &format!("[{}]:0", CLIENT_V6[2]), nbiot);
        m1.sock.connect(nbiot).unwrap();
        m1.register();

        super::mosquitto_pub(
            broker.port,
            "v6iot/t/m1/cmd/c1",
            r#"{"method":"PUT","path":"/valve","payload":"on","content_format":0}"#,
        );
        let first = next_request(&m1.sock);
        // Not answered: the edge retransmits, the same bytes from the same address.
        let again = next_request(&m1.sock);
        assert_eq!(
            again, first,
            "the retransmission is the same protected message"
        );
        m1.inbox.push_back(Packet::from_bytes(&again).unwrap());
        let (_, inner) = m1.serve();
        assert_eq!(inner.payload, b"on");
        assert_changed(&result_of(&results, "c1", Duration::from_secs(10)));
        drop(edge);
    });
}

/// A response under `dev`'s own key to the edge's request `request`, which `dev` cannot read:
/// the binding comes from a request of its own making with the same token and message ID.
/// What a device that is not the command's target can answer at best.
fn forged_answer(dev: &mut SecurityContext, kid: u8, secret: &[u8], request: &Packet) -> Vec<u8> {
    let input = ContextInput {
        master_secret: secret.to_vec(),
        master_salt: Vec::new(),
        id_context: None,
        sender_id: Vec::new(),
        recipient_id: vec![kid],
    };
    let mut own_edge = SecurityContext::new(&input, ContextConfig::default()).unwrap();
    let mark = own_edge.mark_to_persist().unwrap();
    own_edge.persisted(mark);
    let mut plain = Packet::new();
    plain.header.set_type(MessageType::Confirmable);
    plain.header.code = MessageClass::Request(RequestType::Put);
    plain.header.message_id = request.header.message_id;
    plain.set_token(request.get_token().to_vec());
    let (mine, _) = oscore::protect_request(&mut own_edge, &plain).unwrap();
    let (_, mut info) = oscore::unprotect_request(dev, &mine).unwrap();
    let mut response = Packet::new();
    response.header.set_type(MessageType::Acknowledgement);
    response.header.message_id = request.header.message_id;
    response.header.code = MessageClass::Response(ResponseType::Changed);
    response.set_token(request.get_token().to_vec());
    response.payload = b"forged by m2".to_vec();
    oscore::protect_response(dev, &response, &mut info, false)
        .unwrap()
        .to_bytes()
        .unwrap()
}

#[test]
fn a_device_at_another_devices_address_gets_none_of_its_commands() {
    let dir = TempDir::new("addr-conflict");
    let creds = provision(dir.path());
    add_device(&creds, "m1", 1, ANY_LOOPBACK4);
    add_device(&creds, "m2", 2, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    let edge = start_edge(dir.path(), broker.port, &creds);
    let rt = runtime();
    let results = super::subscribe_results(&rt, broker.port);
    let mut m1 = Device::new("m1", 1, "127.0.0.2:0", edge.coap);
    let p = m1.sock.local_addr().unwrap();
    m1.register();

    // m1 leaves P (its NAT mapping ran out); m2 gets P (port reuse) and verifies there. It is
    // not served: the edge asks it to confirm the address, and m2 does not answer (yet).
    m1.rebind("127.0.0.3:0");
    let mut m2 = Device::new("m2", 2, &p.to_string(), edge.coap);
    let reg = m2.registration();
    let challenge = m2.exchange(&reg);
    assert_eq!(code(&challenge), ResponseType::Unauthorized);
    await_stat(&edge, "address_conflicts", 1);
    let audit = edge_cli(&creds, &["audit", "--device", "m2"]);
    let audit = String::from_utf8_lossy(&audit.stdout).into_owned();
    assert!(
        audit.contains("address_conflict") && audit.contains("m1"),
        "the conflict is audited, naming both: {audit}"
    );

    // A command for m1 goes to m1's address under m1's key: m2, there now, cannot read it.
    super::mosquitto_pub(
        broker.port,
        "v6iot/t/m1/cmd/c1",
        r#"{"method":"PUT","path":"/valve","payload":"secret","content_format":0}"#,
    );
    let sent = Packet::from_bytes(&next_request(&m2.sock)).unwrap();
    assert!(oscore::unprotect_request(&mut m2.ctx, &sent).is_err());
    // m2's answer under its own key is no result of m1's.
    let forged = forged_answer(&mut m2.ctx, 2, &super::oscore::secret_of(2), &sent);
    m2.sock.send_to(&forged, edge.coap).unwrap();
    await_stat(&edge, "bad_responses", 1);
    assert!(!results.lock().unwrap().contains_key("c1"));

    // m1, at its new address, confirms it (Echo) and gets the command's retransmission there.
    let t = m1.telemetry(1);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    assert_eq!(m1.echoes, 1);
    await_stat(&edge, "address_changes", 1);
    let (_, inner) = m1.serve();
    assert_eq!(inner.payload, b"secret");
    let result = result_of(&results, "c1", Duration::from_secs(10));
    assert_changed(&result);
    assert!(
        result.get("payload").is_none(),
        "m1's answer, not m2's: {result}"
    );
}
