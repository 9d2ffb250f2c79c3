//! Spoofed traffic cannot silence a plant's network (issue 10, point 3), through the real
//! `v6iot-edge` binary and mosquitto: inside a network namespace this test creates (root), the
//! victim /64 `2001:db8:100::/64` is routed to loopback (an AnyIP route) and non-local binds are
//! allowed, so the test can send from any address of it — as an attacker on the plant's link
//! could. Plain requests (libcoap's `coap-client-notls` and raw datagrams) and forgeries under
//! the device's kid come from that /64; the verified device in it is still served and its
//! report reaches the broker.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

use super::oscore::{
    Device, add_device, await_stat, edge_cli, plain_post, provision, quarantined, reported, secure,
    seqs, stats,
};
use super::{Edge, Mosquitto, TempDir, runtime, subscribe, wait_for};

/// The plant's network.
const VICTIM_NET: &str = "2001:db8:100::/64";

/// Runs `body` on a thread of its own inside a fresh network namespace with `prefix` routed to
/// loopback and non-local binds allowed; the processes it starts are in the namespace too.
fn in_private_network<T: Send + 'static>(
    prefix: &'static str,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    v6iot_testkit::require_root("a network namespace");
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a private network namespace (this test needs root, as the CI runs it)");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["-6", "route", "add", "local", prefix, "dev", "lo"],
        ] {
            let status = Command::new("ip")
                .args(&args)
                .status()
                .expect("`ip` is not installed: run scripts/test (it installs iproute2)");
            assert!(status.success(), "ip {}: {status}", args.join(" "));
        }
        // Only this namespace's setting: sockets may bind any address of the routed prefix.
        std::fs::write("/proc/sys/net/ipv6/ip_nonlocal_bind", "1").unwrap();
        body()
    })
    .join()
    .unwrap()
}

/// A plain `POST /t` (no OSCORE), Confirmable.
fn plain_report(mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.add_option(CoapOption::UriPath, b"t".to_vec());
    p.add_option(CoapOption::ContentFormat, vec![110]);
    p.payload = br#"[{"bn":"urn:dev:e2e:v1:","n":"seq","v":666}]"#.to_vec();
    p.to_bytes_unlimited().unwrap()
}

#[test]
fn spoofed_requests_from_a_plants_network_do_not_silence_its_verified_device() {
    in_private_network(VICTIM_NET, || {
        let dir = TempDir::new("spoofed-net");
        let creds = provision(dir.path());
        add_device(&creds, "v1", 1, VICTIM_NET);
        let broker = Mosquitto::start(dir.path());
        // A small unauthenticated budget for the /64 (20 datagrams), and a kid quarantined after
        // 5 failed verifications; the edge listens on [::1].
        let edge = Edge::start(
            dir.path(),
            broker.port,
            "",
            &secure(
                &creds,
                "rate_per_source = 20\nburst_per_source = 20\nquarantine_after = 5\n\
                 quarantine_s = 60\nreport_interval_s = 1\n",
            ),
        );
        let rt = runtime();
        let seen = subscribe(&rt, broker.port);

        // The device, at 2001:db8:100::7, registers and reports.
        let mut v1 = Device::registered("v1", 1, "[2001:db8:100::7]:0", edge.coap);
        let t = v1.telemetry(1);
        assert_eq!(v1.call(&t), ResponseType::Changed);

        // 1. Plain requests from the /64: five with libcoap's client, each from its own address
        //    (answered 4.01), then 25 raw ones from 25 more addresses (and one from the device's
        //    own address) at once: the /64's unauthenticated budget of 20 runs out.
        for i in 0..5 {
            let from = format!("2001:db8:100::c{i}");
            let body = r#"[{"bn":"urn:dev:e2e:v1:","n":"seq","v":666}]"#;
            let text = plain_post(&["-t", "110", "-a", &from, "-e", body], edge.coap);
            assert!(text.contains("4.01"), "coap-client got: {text}");
        }
        await_stat(&edge, "plain", 5);
        let spoofers: Vec<UdpSocket> = (0..25)
            .map(|i| {
                let addr = if i == 0 {
                    "[2001:db8:100::7]:0".to_owned()
                } else {
                    format!("[2001:db8:100::{:x}]:0", 0x1000 + i)
                };
                UdpSocket::bind(addr).unwrap()
            })
            .collect();
        for (i, s) in spoofers.iter().enumerate() {
            s.send_to(&plain_report(0x7000 + i as u16), edge.coap)
                .unwrap();
        }
        wait_for("30 plain requests counted", Duration::from_secs(10), || {
            let s = stats(&edge);
            s.get("plain").unwrap_or(&0) + s.get("source_limited").unwrap_or(&0) == 30
        });
        let s = stats(&edge);
        assert!(s["plain"] >= 20, "{s:?}");
        assert!(s["source_limited"] >= 1, "the budget never ran out: {s:?}");

        // 2. Forgeries under the device's kid (a wrong key) from another address of the /64:
        //    after 5 failed verifications the kid is quarantined, the rest refused unverified.
        let mut forger = Device::forger("v1", 1, "[2001:db8:100::bad]:0", edge.coap);
        forger.send_reports(666..686);
        await_stat(&edge, "quarantines", 1);
        await_stat(&edge, "decryption_failed", 5);
        await_stat(&edge, "kid_quarantined", 15);

        // 3. The verified device in that /64, from where it was verified, is served, and its
        //    reports reach the broker; nothing of the attack does.
        for seq in 2..=4 {
            let t = v1.telemetry(seq);
            assert_eq!(v1.call(&t), ResponseType::Changed, "v1's report {seq}");
        }
        wait_for(
            "v1's records at the broker",
            Duration::from_secs(10),
            || seqs(&seen, "v1") == [1, 2, 3, 4],
        );
        wait_for("the security reports", Duration::from_secs(10), || {
            reported(&seen, "kid_quarantined") == 15
                && reported(&seen, "plain_request") == stats(&edge)["plain"]
        });
        {
            let seen = seen.lock().unwrap();
            assert!(
                !seen.records.keys().any(|(_, seq)| *seq >= 666),
                "an attack reached the broker"
            );
            let quarantined = quarantined(&seen);
            assert_eq!(quarantined.len(), 1, "{:?}", seen.security);
            assert_eq!(quarantined[0]["kid"], "01");
        }
        // The kid's quarantine is in the device's audit history.
        let out = edge_cli(&creds, &["audit", "--device", "v1"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("kid 01 quarantined for 60 s"), "{text}");
    });
}
