//! `v6iot-sim probe` through the built binary, on `[::1]`: against `v6iot-sim device` (every
//! applicable check passes; with `--credentials` OSCORE too), against libcoap's
//! `coap-server-notls` (Debian `libcoap3-bin`; its results, and that it lacks OSCORE), and
//! against a port where nothing answers (every check fails, status 1).
//!
//! `scripts/test` installs libcoap; without it the libcoap test fails, naming the package.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use v6iot_simulator::probe::{CheckId, ProbeReport, Verdict};

mod common;

use common::Running;

/// Starts `v6iot-sim device` on a free port of `[::1]` (with `extra` flags); returns it and
/// its address from its first line.
fn device(extra: &[&str]) -> (Running, String) {
    let mut args = vec!["--interval", "500ms"];
    args.extend(extra);
    let (child, _, addr) = common::sim_device(&args, "warn", Stdio::null());
    (child, addr.to_string())
}

/// Runs `v6iot-sim probe coap://ADDR --json` with `extra` flags.
fn probe(addr: &str, extra: &[&str]) -> (Output, ProbeReport) {
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-sim"))
        .args(["probe", &format!("coap://{addr}"), "--json"])
        .args(extra)
        .output()
        .expect("run v6iot-sim probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: ProbeReport = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "probe printed no report ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report.schema, "v6iot-sim/probe/1");
    assert_eq!(report.checks.len(), CheckId::ALL.len());
    (out, report)
}

fn detail(report: &ProbeReport, check: CheckId) -> &str {
    &report
        .checks
        .iter()
        .find(|c| c.check == check)
        .unwrap()
        .detail
}

/// Every check but `except` passes (those have the verdicts given).
fn assert_verdicts(report: &ProbeReport, except: &[(CheckId, Verdict)]) {
    for r in &report.checks {
        let want = except
            .iter()
            .find(|(c, _)| *c == r.check)
            .map_or(Verdict::Pass, |(_, v)| *v);
        assert_eq!(r.verdict, want, "{:?}: {}", r.check, r.detail);
    }
}

#[test]
fn every_applicable_check_passes_against_the_simulated_device() {
    let (_dev, addr) = device(&[]);
    let (out, report) = probe(&addr, &[]);
    assert!(out.status.success(), "{report:?}");
    assert_verdicts(&report, &[(CheckId::Oscore, Verdict::NotApplicable)]);
    assert_eq!(
        (report.passed, report.failed, report.not_applicable),
        (13, 0, 1)
    );
    assert!(detail(&report, CheckId::Discovery).starts_with("7 links (3 observable)"));
    // /sensors/temperature's SenML (65 bytes) is the first resource larger than 64 bytes.
    assert!(
        detail(&report, CheckId::Block2).contains("in 2 blocks of 64 bytes"),
        "{report:?}"
    );
    assert!(detail(&report, CheckId::Observe).starts_with("/sensors/temperature: registered"));
    assert_eq!(detail(&report, CheckId::CriticalOption), "4.02 Bad Option");
}

#[test]
fn oscore_passes_with_the_devices_credentials_and_sequence_numbers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = common::provision(dir.path());
    let seq = dir.path().join("device.seq");
    let dev = common::OscoreSim::start(&csv, &seq, "500ms");
    let addr = dev.addr.to_string();
    let flags = [
        "--credentials",
        csv.to_str().unwrap(),
        "--id",
        common::DEVICE_ID,
    ];
    for round in 0..2 {
        // The second round is a replay unless the probe's mark file moved the numbers on.
        let (out, report) = probe(&addr, &flags);
        assert!(out.status.success(), "round {round}: {report:?}");
        assert_verdicts(
            &report,
            &[
                // Everything but discovery needs OSCORE: no plain resource to try.
                (CheckId::Block2, Verdict::NotApplicable),
                (CheckId::Observe, Verdict::NotApplicable),
            ],
        );
        assert!(
            detail(&report, CheckId::Oscore).ends_with("verified, inside 2.05 (ACK)"),
            "{report:?}"
        );
        assert_eq!(
            detail(&report, CheckId::Block2),
            "not offered: none of 7 resources answered in blocks (7 answered 4.01: OSCORE only)"
        );
    }
    let mark =
        std::fs::read_to_string(format!("{}.{}.probe.seq", csv.display(), common::DEVICE_ID))
            .unwrap();
    assert!(
        mark.starts_with("128"),
        "two probes, two marks of 64: {mark}"
    );
}

/// libcoap's example server: `coap-server-notls`, or the TLS builds' names.
fn coap_server() -> std::path::PathBuf {
    v6iot_testkit::system_binary_named(
        &["coap-server-notls", "coap-server", "coap-server-openssl"],
        "libcoap3-bin",
    )
}

/// Waits (bounded) until something answers a CoAP ping on `addr`.
fn await_ping(addr: &str) {
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket.connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        socket.send(&[0x40, 0, 0x12, 0x34]).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = socket.recv(&mut buf)
            && n == 4
            && buf[0] >> 4 == 0x7
        {
            return;
        }
    }
    panic!("nothing answered a ping on {addr}");
}

#[test]
fn libcoap_server_passes_what_it_offers_and_lacks_oscore() {
    let port = UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Running(
        Command::new(coap_server())
            .args(["-A", "::1", "-p", &port.to_string(), "-v", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start coap-server"),
    );
    let addr = format!("[::1]:{port}");
    await_ping(&addr);
    let (out, report) = probe(&addr, &[]);
    assert!(out.status.success(), "{report:?}");
    assert_verdicts(&report, &[(CheckId::Oscore, Verdict::NotApplicable)]);
    // libcoap's resources: /, /time (obs), /async, /example_data (obs).
    assert!(detail(&report, CheckId::Discovery).starts_with("4 links (2 observable)"));
    assert!(detail(&report, CheckId::Block2).starts_with("/: 136 bytes in 3 blocks"));
    assert!(detail(&report, CheckId::Observe).starts_with("/time: registered"));

    // With credentials: libcoap 4.3.1 has no OSCORE, the OSCORE option is an unknown critical
    // option to it.
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = common::provision(dir.path());
    let (out, report) = probe(
        &addr,
        &[
            "--credentials",
            csv.to_str().unwrap(),
            "--id",
            common::DEVICE_ID,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "a failed check: status 1");
    assert_verdicts(&report, &[(CheckId::Oscore, Verdict::Fail)]);
    assert_eq!(
        detail(&report, CheckId::Oscore),
        "protected GET /: unprotected 4.02 (ACK): OSCORE not supported"
    );
}

#[test]
fn a_silent_endpoint_fails_every_check_with_status_1() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("[::1]:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (out, report) = probe(&addr, &["--timeout", "50ms", "--silence", "50ms"]);
    assert_eq!(out.status.code(), Some(1));
    assert_verdicts(
        &report,
        &CheckId::ALL.map(|c| {
            (
                c,
                if c == CheckId::Oscore {
                    Verdict::NotApplicable
                } else {
                    Verdict::Fail
                },
            )
        }),
    );
    assert_eq!(
        detail(&report, CheckId::Ipv6),
        "nothing came back over IPv6"
    );
    assert_eq!(
        detail(&report, CheckId::Ping),
        "no answer after 3 transmissions"
    );
    assert_eq!(
        detail(&report, CheckId::Discovery),
        "not tried: the target never answered"
    );
    // Ping and CON were each sent three times, nothing else.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let mut n = 0;
    while silent.recv(&mut buf).is_ok() {
        n += 1;
    }
    assert_eq!(n, 6);
}
