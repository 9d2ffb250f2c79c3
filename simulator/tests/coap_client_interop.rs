//! `v6iot-sim device` against libcoap's `coap-client` (Debian `libcoap3-bin`), an independent
//! CoAP implementation. Each test starts its own simulated device on a free port of `[::1]`.
//!
//! `scripts/test` installs libcoap; without it these tests fail, naming the missing tool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use v6iot_sdk::senml;

mod common;

/// The libcoap client binary: Debian ships it as `coap-client-notls` (also `-openssl`, `-gnutls`).
fn coap_client() -> std::path::PathBuf {
    common::system_binary_named(
        &[
            "coap-client-notls",
            "coap-client",
            "coap-client-openssl",
            "coap-client-gnutls",
        ],
        "libcoap3-bin",
    )
}

/// A running `v6iot-sim device`, killed on drop; its log lines arrive on `log`.
struct Sim {
    _child: common::Running,
    uri: String,
    log: mpsc::Receiver<String>,
}

impl Sim {
    fn start(id: &str, interval: &str) -> Sim {
        // "v6iot-sim device ID serving CoAP on [::1]:PORT (Ctrl-C to stop)"
        let (mut child, _, addr) = common::sim_device(
            &["--id", id, "--interval", interval],
            "info",
            Stdio::piped(),
        );
        let (tx, log) = mpsc::channel();
        let stderr = child.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sim {
            _child: child,
            uri: format!("coap://{addr}"),
            log,
        }
    }

    /// Runs coap-client with `args`, the last being the resource path appended to the URI.
    fn client(&self, args: &[&str], path: &str) -> Output {
        let uri = format!("{}{}", self.uri, path);
        Command::new(coap_client())
            .args(args)
            .arg(&uri)
            .output()
            .expect("run coap-client")
    }

    fn text(&self, args: &[&str], path: &str) -> String {
        let out = self.client(args, path);
        assert!(
            out.status.success(),
            "coap-client {args:?} {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// An error answer: coap-client prints the code and diagnostic on stderr.
    fn error(&self, args: &[&str], path: &str) -> String {
        let out = self.client(args, path);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Waits (bounded) for a log line containing every one of `needles`.
    fn await_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line with {needles:?} within 10 s");
    }
}

fn expected_log(id: &str) -> String {
    // The documented format of /device/log, written out independently of the simulator.
    (0..64)
        .map(|i| format!("{i:04} {id} selftest step {:02} passed\n", i % 17))
        .collect()
}

#[test]
fn discovery_lists_every_resource_with_attributes() {
    let sim = Sim::start("disc-0001", "2s");
    let body = sim.text(&["-m", "get", "-A", "40"], "/.well-known/core");
    let links: Vec<&str> = body.trim().split(',').collect();
    for (path, needles) in [
        (
            "/sensors/temperature",
            &["rt=\"oic.r.temperature\"", "ct=\"112 110\"", "obs"][..],
        ),
        ("/sensors/pressure", &["ct=\"112 110\"", "obs"]),
        ("/actuators/valve", &["ct=\"0 50\"", "obs", "if=\"core.a\""]),
        ("/device/info", &["rt=\"v6iot.info\""]),
        ("/device/log", &["ct=0"]),
    ] {
        let link = links
            .iter()
            .find(|l| l.starts_with(&format!("<{path}>")))
            .unwrap_or_else(|| panic!("{path} missing from {body}"));
        for n in needles {
            assert!(link.contains(n), "{path}: `{n}` missing in {link}");
        }
    }
    // RFC 6690 §4.1 filtering.
    let filtered = sim.text(&["-m", "get"], "/.well-known/core?rt=v6iot.valve");
    assert_eq!(filtered.trim().split(',').count(), 1, "{filtered}");
    assert!(filtered.starts_with("</actuators/valve>"));
}

#[test]
fn get_in_both_senml_formats() {
    let sim = Sim::start("fmt-0002", "2s");
    let json = sim.text(&["-m", "get", "-A", "110"], "/sensors/temperature");
    let pack = senml::from_json(json.trim().as_bytes()).expect("SenML-JSON");
    let records = senml::resolve(&pack, 0.0).expect("resolves");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, "urn:dev:v6iot:fmt-0002:temperature");
    assert_eq!(records[0].unit.as_deref(), Some("Cel"));
    let t = records[0]
        .value
        .as_ref()
        .and_then(senml::Value::as_f64)
        .expect("numeric value");
    assert!((-40.0..=125.0).contains(&t), "{t}");

    let dir = std::env::temp_dir().join(format!("v6iot-cbor-{}", std::process::id()));
    let file = dir.with_extension("cbor");
    let out = sim.client(
        &["-m", "get", "-A", "112", "-o", file.to_str().unwrap()],
        "/sensors/pressure",
    );
    assert!(out.status.success());
    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let pack = senml::from_cbor(&bytes).expect("SenML-CBOR");
    let records = senml::resolve(&pack, 0.0).unwrap();
    assert_eq!(records[0].name, "urn:dev:v6iot:fmt-0002:pressure");
    assert_eq!(records[0].unit.as_deref(), Some("Pa"));

    // Without Accept the first declared format (SenML-CBOR) is served: CBOR array, not '['.
    let raw = sim.client(&["-m", "get"], "/sensors/temperature").stdout;
    assert_eq!(raw.first(), Some(&0x81), "a one-element CBOR array");

    let refused = sim.error(&["-m", "get", "-A", "50"], "/sensors/temperature");
    assert!(refused.starts_with("4.06"), "{refused}");
}

#[test]
fn put_switches_the_valve() {
    let sim = Sim::start("valve-0003", "2s");
    assert_eq!(sim.text(&["-m", "get"], "/actuators/valve").trim(), "off");
    sim.text(&["-m", "put", "-e", "on"], "/actuators/valve");
    assert_eq!(sim.text(&["-m", "get"], "/actuators/valve").trim(), "on");
    assert_eq!(
        sim.text(&["-m", "get", "-A", "50"], "/actuators/valve")
            .trim(),
        "{\"valve\":\"on\"}"
    );
    sim.text(&["-m", "put", "-t", "0", "-e", "off"], "/actuators/valve");
    assert_eq!(sim.text(&["-m", "get"], "/actuators/valve").trim(), "off");
    let bad = sim.error(&["-m", "put", "-e", "maybe"], "/actuators/valve");
    assert!(bad.starts_with("4.00"), "{bad}");
    let wrong_format = sim.error(&["-m", "put", "-t", "50", "-e", "{}"], "/actuators/valve");
    assert!(wrong_format.starts_with("4.15"), "{wrong_format}");
}

#[test]
fn observe_gets_three_notifications_then_cancels() {
    let sim = Sim::start("obs-0004", "300ms");
    // -s 2: observe for 2 s, then libcoap deregisters (GET with Observe = 1).
    let out = sim.text(
        &["-m", "get", "-s", "2", "-A", "110"],
        "/sensors/temperature",
    );
    let packs: Vec<&str> = out.split("][").collect();
    assert!(
        packs.len() >= 4,
        "registration response and ≥ 3 notifications, got {}: {out}",
        packs.len()
    );
    let mut times = Vec::new();
    for (i, p) in packs.iter().enumerate() {
        let text = match (i == 0, i == packs.len() - 1) {
            (true, true) => p.to_string(),
            (true, false) => format!("{p}]"),
            (false, true) => format!("[{p}"),
            (false, false) => format!("[{p}]"),
        };
        let pack =
            senml::from_json(text.trim().as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
        times.push(pack[0].bt.expect("base time"));
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "notifications in order: {times:?}"
    );
    sim.await_log(&["ObserveStarted", "ResourceId(0)"]);
    sim.await_log(&["ObserveEnded", "Deregistered"]);
}

#[test]
fn block2_download_matches_byte_for_byte() {
    let sim = Sim::start("blk-0005", "2s");
    let expected = expected_log("blk-0005");
    assert!(expected.len() > 2048);
    for szx in ["16", "64", "256", "1024"] {
        let file = std::env::temp_dir().join(format!("v6iot-log-{}-{szx}", std::process::id()));
        let out = sim.client(
            &["-m", "get", "-b", szx, "-o", file.to_str().unwrap()],
            "/device/log",
        );
        assert!(out.status.success());
        let got = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        assert_eq!(got.len(), expected.len(), "block size {szx}");
        assert!(
            got == expected.as_bytes(),
            "block size {szx}: content differs"
        );
    }
}

#[test]
fn block1_upload_round_trips() {
    let sim = Sim::start("up-0006", "2s");
    let body: String = (0..5000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(7) % 26) as u8))
        .collect();
    let src = std::env::temp_dir().join(format!("v6iot-up-{}", std::process::id()));
    std::fs::write(&src, &body).unwrap();
    let created = sim.text(
        &[
            "-m",
            "put",
            "-b",
            "64",
            "-t",
            "0",
            "-f",
            src.to_str().unwrap(),
        ],
        "/device/config",
    );
    assert!(
        !created.starts_with('4') && !created.starts_with('5'),
        "{created}"
    );
    let dst = src.with_extension("back");
    let out = sim.client(
        &["-m", "get", "-b", "128", "-o", dst.to_str().unwrap()],
        "/device/config",
    );
    assert!(out.status.success());
    let back = std::fs::read(&dst).unwrap();
    let _ = (std::fs::remove_file(&src), std::fs::remove_file(&dst));
    assert!(
        back == body.as_bytes(),
        "uploaded {} bytes, read back {}",
        body.len(),
        back.len()
    );
}

#[test]
fn separate_response_arrives_after_empty_ack() {
    let sim = Sim::start("sep-0007", "2s");
    let t0 = std::time::Instant::now();
    let out = sim.text(&["-m", "post"], "/device/selftest");
    assert_eq!(out.trim(), "selftest of sep-0007 passed");
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "answered after the self test ran"
    );
}

#[test]
fn errors_have_the_right_codes() {
    let sim = Sim::start("err-0008", "2s");
    assert!(sim.error(&["-m", "get"], "/no/such").starts_with("4.04"));
    assert!(
        sim.error(&["-m", "delete"], "/sensors/temperature")
            .starts_with("4.05")
    );
    assert!(
        sim.error(&["-m", "post", "-e", "x"], "/.well-known/core")
            .starts_with("4.05")
    );
    // Unknown critical option 2049 (odd): 4.02 Bad Option.
    assert!(
        sim.error(&["-m", "get", "-O", "2049,x"], "/device/info")
            .starts_with("4.02")
    );
    // The device keeps serving after errors.
    assert!(
        sim.text(&["-m", "get"], "/device/info")
            .contains("\"model\":\"v6iot-sim-sensor\"")
    );
}

/// Binds a global address of the v6iot plan inside a private network namespace (so no packet
/// can leave the machine) and queries the device there with coap-client.
#[test]
fn serves_on_a_global_plan_address_inside_a_namespace() {
    common::require_root("a network namespace (`unshare --net`) with a global address on lo");
    let addr = "2001:db8:1200:305:12:3456:78ab:cdef";
    let planned = v6iot_sdk::addr::DeviceAddress::parse(addr.parse().unwrap())
        .expect("address fits the plan");
    assert_eq!(
        (
            planned.plant(),
            planned.line(),
            planned.class(),
            planned.serial()
        ),
        (3, 5, 0x12, 0x3456_78ab_cdef)
    );
    let script = r#"
        set -eu
        ip link set lo up
        ip -6 addr add "$ADDR/64" dev lo nodad
        exec 3< <(exec "$SIM" device --bind "[$ADDR]:5683" --id ns-0009 2>/dev/null)
        sim=$!
        trap 'kill "$sim" 2>/dev/null' EXIT
        read -r first <&3
        echo "$first"
        "$CLIENT" -m get "coap://[$ADDR]:5683/device/info"
        echo
        "$CLIENT" -m get -A 110 "coap://[$ADDR]:5683/sensors/temperature"
    "#;
    let out = Command::new("unshare")
        .args(["--net", "--", "bash", "-c", script])
        .env("ADDR", addr)
        .env("SIM", env!("CARGO_BIN_EXE_v6iot-sim"))
        .env("CLIENT", coap_client())
        .output()
        .expect("unshare (util-linux) must be installed (Debian package util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "namespace script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("serving CoAP on [{addr}]:5683")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\"address\":\"{addr}\"")),
        "{stdout}"
    );
    assert!(stdout.contains("urn:dev:v6iot:ns-0009:"), "{stdout}");
}
