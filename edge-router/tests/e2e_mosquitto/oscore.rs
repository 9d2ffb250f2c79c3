//! The authentication gateway through the `v6iot-edge` binary and a real mosquitto: devices
//! provisioned with the `devices` CLI speak OSCORE built with `v6iot_sdk::oscore` directly (so
//! the tests can also forge, tamper and replay), libcoap's `coap-client-notls` sends plain CoAP,
//! and Python aiocoap is an independent OSCORE device. Every attack is refused with its code,
//! counted (the edge's `gateway stats` log line), and nothing from it reaches the subscriber.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{
    self, ContextConfig, ContextInput, OscoreOption, SecurityContext, protect_request,
    protect_response, unprotect_request, unprotect_response,
};

use super::{Edge, Mosquitto, Seen, TempDir, free_udp_port, runtime, subscribe, wait_for};

/// The audit trail's checkpoints published and kept by the running edge.
mod audit_anchor;

/// The dashboard in headless chromium, with OSCORE devices and a plain-CoAP attempt.
mod ops_dashboard;

// ----- provisioning with the CLI -----

pub(super) struct Creds {
    pub(super) data: PathBuf,
    pub(super) key_file: PathBuf,
    pub(super) key_hex: String,
}

pub(super) fn edge_cli(creds: &Creds, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
        .args(args)
        .arg("--data-dir")
        .arg(&creds.data)
        .env("V6IOT_SEAL_KEY", &creds.key_hex)
        .output()
        .unwrap()
}

pub(super) fn provision(dir: &Path) -> Creds {
    let key_file = dir.join("seal.key");
    let key_hex =
        v6iot_testkit::edge::seal_key(Path::new(env!("CARGO_BIN_EXE_v6iot-edge")), &key_file);
    Creds {
        data: dir.join("data"),
        key_file,
        key_hex,
    }
}

pub(super) fn secret_of(kid: u8) -> Vec<u8> {
    (0..16)
        .map(|i| kid.wrapping_mul(31).wrapping_add(i))
        .collect()
}

pub(super) fn add_device(creds: &Creds, id: &str, kid: u8, prefix: &str) {
    let out = edge_cli(
        creds,
        &[
            "devices",
            "add",
            "--id",
            id,
            "--kid",
            &hex::encode([kid]),
            "--secret",
            &hex::encode(secret_of(kid)),
            "--prefix",
            prefix,
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

/// Loopback IPv4 (mapped) prefixes: all of 127/8, or one address.
pub(super) const ANY_LOOPBACK4: &str = "::ffff:127.0.0.0/104";

/// An edge router that requires OSCORE, listening on 127.0.0.1 (devices send from 127.0.0.1
/// and 127.0.0.2, both loopback, to test addresses and moves).
pub(super) fn start_edge(dir: &Path, broker: u16, creds: &Creds) -> Edge {
    start_edge_with(dir, broker, creds, "sender_persist_step = 64\n")
}

/// [`start_edge`] with `extra` after `require_oscore` (see [`secure`]).
pub(super) fn start_edge_with(dir: &Path, broker: u16, creds: &Creds, extra: &str) -> Edge {
    // Returns once the edge logged "edge router running": its devices are loaded by then.
    Edge::start(dir, broker, &loopback_listen(), &secure(creds, extra))
}

/// The `[coap]` table's `listen` on a free port of 127.0.0.1.
pub(super) fn loopback_listen() -> String {
    format!("listen = \"127.0.0.1:{}\"", free_udp_port())
}

/// The `[registry]` and `[security]` tables of an edge that requires OSCORE, followed by
/// `extra` (more `[security]` keys, then any further tables).
pub(super) fn secure(creds: &Creds, extra: &str) -> String {
    format!(
        "[registry]\nseal_key_file = \"{}\"\n[security]\nrequire_oscore = true\n{extra}",
        creds.key_file.display()
    )
}

/// A plain (unprotected) `POST /t` to `to` with libcoap's client, with its further `args`:
/// what it printed.
pub(super) fn plain_post(args: &[&str], to: SocketAddr) -> String {
    let out = Command::new("coap-client-notls")
        .args(["-m", "post", "-B", "5"])
        .args(args)
        .arg(format!("coap://{to}/t"))
        .output()
        .expect("coap-client-notls (Debian libcoap3-bin) is not installed: run scripts/test");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The quarantined kids named in every security report received so far.
pub(super) fn quarantined(seen: &Seen) -> Vec<&serde_json::Value> {
    seen.security
        .iter()
        .flat_map(|r| r["quarantined"].as_array().into_iter().flatten())
        .collect()
}

/// The edge's latest counters, from its `gateway stats` log line.
pub(super) fn stats(edge: &Edge) -> HashMap<String, u64> {
    let log = edge.log.lock().unwrap();
    let Some(line) = log.iter().rev().find(|l| l.contains("gateway stats")) else {
        return HashMap::new();
    };
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

pub(super) fn await_stat(edge: &Edge, key: &str, value: u64) {
    wait_for(
        &format!("gateway stats {key}={value}"),
        Duration::from_secs(10),
        || stats(edge).get(key) == Some(&value),
    );
}

// ----- a device speaking OSCORE by hand -----

pub(super) struct Device {
    id: String,
    pub(super) sock: UdpSocket,
    pub(super) ctx: SecurityContext,
    edge: SocketAddr,
    next_mid: u16,
    /// Requests from the edge that arrived while waiting for a response.
    pub(super) inbox: VecDeque<Packet>,
    /// Echo challenges answered (the edge confirming a new address, RFC 9175).
    pub(super) echoes: u32,
}

impl Device {
    pub(super) fn new(id: &str, kid: u8, bind: &str, edge: SocketAddr) -> Device {
        Device::with_secret(id, kid, &secret_of(kid), bind, edge)
    }

    pub(super) fn with_secret(
        id: &str,
        kid: u8,
        secret: &[u8],
        bind: &str,
        edge: SocketAddr,
    ) -> Device {
        let input = ContextInput {
            master_secret: secret.to_vec(),
            master_salt: Vec::new(),
            id_context: None,
            sender_id: vec![kid],
            recipient_id: Vec::new(),
        };
        let mut ctx = SecurityContext::new(&input, ContextConfig::default()).unwrap();
        let mark = ctx.mark_to_persist().unwrap();
        ctx.persisted(mark);
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Device {
            id: id.to_owned(),
            sock,
            ctx,
            edge,
            next_mid: 0x100 * u16::from(kid),
            inbox: VecDeque::new(),
            echoes: 0,
        }
    }

    /// [`Device::new`], registered (2.01).
    pub(super) fn registered(id: &str, kid: u8, bind: &str, edge: SocketAddr) -> Device {
        let mut device = Device::new(id, kid, bind, edge);
        device.register();
        device
    }

    /// Registers (`POST /rd`) and expects 2.01.
    pub(super) fn register(&mut self) {
        let reg = self.registration();
        assert_eq!(self.call(&reg), ResponseType::Created, "{}", self.id);
    }

    /// `id`'s kid under a wrong key, past the Partial IVs the real device used (so it is the
    /// key that fails, not the replay check).
    pub(super) fn forger(id: &str, kid: u8, bind: &str, edge: SocketAddr) -> Device {
        let mut forger = Device::with_secret(id, kid, &[0x55; 16], bind, edge);
        for _ in 0..20 {
            let t = forger.telemetry(0);
            let _ = forger.protect(&t);
        }
        forger
    }

    /// Sends reports `seqs` protected, at once, waiting for no answer.
    pub(super) fn send_reports(&mut self, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            let t = self.telemetry(seq);
            let (bytes, _) = self.protect(&t);
            self.sock.send_to(&bytes, self.edge).unwrap();
        }
    }

    /// Moves the device to another local address (a re-attach); the context stays.
    pub(super) fn rebind(&mut self, bind: &str) {
        self.sock = UdpSocket::bind(bind).unwrap();
        self.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }

    fn request(
        &mut self,
        method: RequestType,
        path: &str,
        query: &[String],
        body: &[u8],
    ) -> Packet {
        self.next_mid = self.next_mid.wrapping_add(1);
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = self.next_mid;
        p.set_token(self.next_mid.to_be_bytes().to_vec());
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        if path == "t" {
            p.add_option(CoapOption::ContentFormat, vec![110]);
        } else if path == "rd" {
            p.add_option(CoapOption::ContentFormat, vec![40]);
        }
        p.payload = body.to_vec();
        p
    }

    pub(super) fn registration(&mut self) -> Packet {
        let q = vec![format!("ep={}", self.id), "lt=600".to_owned()];
        self.request(RequestType::Post, "rd", &q, b"</valve>;ct=0")
    }

    pub(super) fn telemetry(&mut self, seq: u64) -> Packet {
        let body = format!(
            r#"[{{"bn":"urn:dev:e2e:{}:","n":"seq","v":{seq}}},{{"n":"flow","u":"m3/s","v":{}}}]"#,
            self.id,
            seq as f64 * 0.5
        );
        self.request(RequestType::Post, "t", &[], body.as_bytes())
    }

    /// Protects `p`; the bytes to send.
    pub(super) fn protect(&mut self, p: &Packet) -> (Vec<u8>, oscore::RequestInfo) {
        let (protected, info) = protect_request(&mut self.ctx, p).unwrap();
        (protected.to_bytes_unlimited().unwrap(), info)
    }

    /// Sends a protected request and returns the verified response's code. A protected 4.01
    /// with an Echo option (the edge confirming the device's new address, RFC 9175) is
    /// answered once, as the SDK and aiocoap do: the request again with the value, as a new
    /// message.
    pub(super) fn call(&mut self, p: &Packet) -> ResponseType {
        let inner = self.exchange(p);
        let echo = inner
            .get_first_option(CoapOption::Unknown(wire::ECHO))
            .cloned();
        let Some(echo) = echo.filter(|_| code(&inner) == ResponseType::Unauthorized) else {
            return code(&inner);
        };
        self.echoes += 1;
        let mut again = p.clone();
        self.next_mid = self.next_mid.wrapping_add(1);
        again.header.message_id = self.next_mid;
        again.set_token(self.next_mid.to_be_bytes().to_vec());
        again.add_option(CoapOption::Unknown(wire::ECHO), echo);
        code(&self.exchange(&again))
    }

    /// Sends a protected request and returns the verified response.
    pub(super) fn exchange(&mut self, p: &Packet) -> Packet {
        let (bytes, mut info) = self.protect(p);
        let answer = self.send_and_wait(&bytes, p.get_token());
        unprotect_response(&mut self.ctx, &answer, &mut info)
            .unwrap_or_else(|e| panic!("the edge's answer does not verify: {e:?} {answer:?}"))
    }

    /// Sends `requests` protected, all at once (retransmitting the unanswered every 2 s), and
    /// returns the codes of the verified answers, in the requests' order.
    fn burst(&mut self, requests: &[Packet]) -> Vec<ResponseType> {
        let mut pending: Vec<(Vec<u8>, Vec<u8>, oscore::RequestInfo)> = requests
            .iter()
            .map(|p| {
                let (bytes, info) = self.protect(p);
                (p.get_token().to_vec(), bytes, info)
            })
            .collect();
        let mut codes: HashMap<Vec<u8>, ResponseType> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut next_send = Instant::now();
        let mut buf = [0u8; 2048];
        while codes.len() < pending.len() {
            assert!(
                Instant::now() < deadline,
                "no answer to {} requests",
                pending.len() - codes.len()
            );
            if Instant::now() >= next_send {
                for (token, bytes, _) in &pending {
                    if !codes.contains_key(token) {
                        self.sock.send_to(bytes, self.edge).unwrap();
                    }
                }
                next_send = Instant::now() + Duration::from_secs(2);
            }
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let p = Packet::from_bytes(&buf[..n]).unwrap();
            let token = p.get_token().to_vec();
            if codes.contains_key(&token) {
                continue;
            }
            if let Some((_, _, info)) = pending.iter_mut().find(|(t, _, _)| *t == token) {
                let inner = unprotect_response(&mut self.ctx, &p, info).unwrap();
                codes.insert(token, code(&inner));
            }
        }
        requests.iter().map(|p| codes[p.get_token()]).collect()
    }

    /// Sends `bytes` (retransmitting) until a response with `token` arrives.
    fn send_and_wait(&mut self, bytes: &[u8], token: &[u8]) -> Packet {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut next_send = Instant::now();
        let mut buf = [0u8; 2048];
        loop {
            assert!(Instant::now() < deadline, "no answer from the edge");
            if Instant::now() >= next_send {
                self.sock.send_to(bytes, self.edge).unwrap();
                next_send = Instant::now() + Duration::from_secs(2);
            }
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let p = Packet::from_bytes(&buf[..n]).unwrap();
            if u8::from(p.header.code) >> 5 == 0 && u8::from(p.header.code) != 0 {
                self.inbox.push_back(p);
            } else if p.get_token() == token {
                return p;
            }
        }
    }

    /// Waits for a request from the edge, verifies it and answers 2.04 (protected); returns
    /// the request's Partial IV and the inner request.
    pub(super) fn serve(&mut self) -> (u64, Packet) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 2048];
        let (packet, from) = loop {
            if let Some(p) = self.inbox.pop_front() {
                break (p, self.edge);
            }
            assert!(Instant::now() < deadline, "no request from the edge");
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                let p = Packet::from_bytes(&buf[..n]).unwrap();
                if u8::from(p.header.code) >> 5 == 0 && u8::from(p.header.code) != 0 {
                    break (p, from);
                }
            }
        };
        let piv = OscoreOption::from_packet(&packet)
            .unwrap()
            .partial_iv
            .unwrap();
        let (inner, mut info) = unprotect_request(&mut self.ctx, &packet).unwrap();
        let mut response = Packet::new();
        response.header.set_type(MessageType::Acknowledgement);
        response.header.message_id = packet.header.message_id;
        response.header.code = MessageClass::Response(ResponseType::Changed);
        response.set_token(packet.get_token().to_vec());
        let protected = protect_response(&mut self.ctx, &response, &mut info, false).unwrap();
        self.sock
            .send_to(&protected.to_bytes_unlimited().unwrap(), from)
            .unwrap();
        (piv, inner)
    }
}

pub(super) fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(c) => c,
        other => panic!("not a response: {other:?}"),
    }
}

/// Sends `bytes` from a fresh socket on `bind` and returns the (unprotected) answer's code.
fn send_raw(bind: &str, edge: SocketAddr, bytes: &[u8]) -> ResponseType {
    let sock = UdpSocket::bind(bind).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(bytes, edge).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no answer from the edge to {bytes:02x?}: {e}"));
    code(&Packet::from_bytes(&buf[..n]).unwrap())
}

/// An attack: what it is, its bytes, the answer it gets and the edge's counter of it (name,
/// value) once it was counted.
type Attack<'a> = (&'a str, Vec<u8>, ResponseType, (&'a str, u64));

/// Sends each attack in turn, each from its own loopback address (127.0.0.3, .4, …), expects
/// its answer, and waits for the edge to count it.
fn attack(edge: &Edge, attacks: Vec<Attack>) {
    for (i, (what, bytes, answer, (counter, value))) in attacks.into_iter().enumerate() {
        let from = format!("127.0.0.{}:0", 3 + i);
        assert_eq!(send_raw(&from, edge.coap, &bytes), answer, "{what}");
        await_stat(edge, counter, value);
    }
}

fn with_mid(bytes: &[u8], mid: u16) -> Vec<u8> {
    let mut p = Packet::from_bytes(bytes).unwrap();
    p.header.message_id = mid;
    p.to_bytes_unlimited().unwrap()
}

/// The platform's command results by request id, as `subscribe_results` collects them.
pub(super) type Results = Arc<Mutex<HashMap<String, serde_json::Value>>>;

/// Waits (up to `within`) for command `req`'s result at the broker, and returns it.
pub(super) fn result_of(results: &Results, req: &str, within: Duration) -> serde_json::Value {
    wait_for(&format!("result of {req}"), within, || {
        results.lock().unwrap().contains_key(req)
    });
    results.lock().unwrap()[req].clone()
}

/// Asserts that `r` is the result of a command its device answered with 2.04.
pub(super) fn assert_changed(r: &serde_json::Value) {
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str()),
        (Some("ok"), Some("2.04")),
        "{r}"
    );
}

pub(super) fn seqs(seen: &Arc<Mutex<Seen>>, device: &str) -> Vec<u64> {
    let mut v: Vec<u64> = seen
        .lock()
        .unwrap()
        .records
        .keys()
        .filter(|(d, _)| d == device)
        .map(|(_, s)| *s)
        .collect();
    v.sort_unstable();
    v
}

/// Publishes the command `req` (PUT /valve `payload`) for m1, serves it at the device and waits
/// for its result at the broker; the edge's Partial IV and the inner request.
fn command_round_trip(
    broker: u16,
    results: &Results,
    device: &mut Device,
    req: &str,
    payload: &str,
) -> (u64, Packet) {
    super::mosquitto_pub(
        broker,
        &format!("v6iot/t/m1/cmd/{req}"),
        &format!(r#"{{"method":"PUT","path":"/valve","payload":"{payload}","content_format":0}}"#),
    );
    let served = device.serve();
    result_of(results, req, Duration::from_secs(10));
    served
}

// ----- the tests -----

#[test]
fn protected_devices_report_and_every_attack_is_refused() {
    let dir = TempDir::new("oscore-attacks");
    let creds = provision(dir.path());
    add_device(&creds, "m1", 1, ANY_LOOPBACK4);
    add_device(&creds, "m2", 2, "::ffff:127.0.0.1/128");
    add_device(&creds, "r1", 3, ANY_LOOPBACK4);
    add_device(&creds, "q1", 4, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    let edge = start_edge(dir.path(), broker.port, &creds);
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);

    // A protected device registers and reports; the records arrive intact.
    let mut m1 = Device::registered("m1", 1, "127.0.0.1:0", edge.coap);
    let mut accepted = Vec::new();
    for seq in 1..=3 {
        let t = m1.telemetry(seq);
        if seq == 3 {
            // Keep this one's bytes for the replay below.
            let (bytes, mut info) = m1.protect(&t);
            let answer = m1.send_and_wait(&bytes, t.get_token());
            let inner = unprotect_response(&mut m1.ctx, &answer, &mut info).unwrap();
            assert_eq!(code(&inner), ResponseType::Changed);
            accepted = bytes;
        } else {
            assert_eq!(m1.call(&t), ResponseType::Changed);
        }
    }
    wait_for(
        "m1's records at the broker",
        Duration::from_secs(10),
        || seqs(&seen, "m1") == [1, 2, 3],
    );
    let record = seen.lock().unwrap().records[&("m1".to_owned(), 2)].clone();
    assert_eq!(record[1]["v"].as_f64(), Some(1.0), "{record}");
    assert_eq!(record[1]["u"].as_str(), Some("m3/s"), "{record}");

    // Plain CoAP from libcoap's client: 4.01.
    let body = r#"[{"bn":"urn:dev:e2e:m1:","n":"seq","v":666}]"#;
    let text = plain_post(&["-t", "110", "-e", body], edge.coap);
    assert!(text.contains("4.01"), "coap-client got: {text}");
    await_stat(&edge, "plain", 1);

    let mut stranger = Device::new("x9", 9, "127.0.0.1:0", edge.coap);
    let t = stranger.telemetry(666);
    let (unknown_kid, _) = stranger.protect(&t);
    let mut forger = Device::forger("m1", 1, "127.0.0.1:0", edge.coap);
    let t = forger.telemetry(666);
    let (wrong_key, _) = forger.protect(&t);
    let t = m1.telemetry(666);
    let (mut flipped, _) = m1.protect(&t);
    let last = flipped.len() - 3;
    flipped[last] ^= 0x01;
    let replayed = with_mid(&accepted, 0x7777);
    // Each attack from its own loopback address: the edge answers at most 4 failures per
    // source and 5 s, and drops the rest silently.
    use ResponseType::{BadRequest, Unauthorized};
    attack(
        &edge,
        vec![
            ("unknown kid", unknown_kid, Unauthorized, ("unknown_kid", 1)),
            // m1's kid, past m1's Partial IVs, so it is the key that fails
            ("wrong key", wrong_key, BadRequest, ("decryption_failed", 1)),
            ("flipped bit", flipped, BadRequest, ("decryption_failed", 2)),
            // captured, sent again by someone else
            ("replay", replayed, Unauthorized, ("replay", 1)),
        ],
    );

    // Outside the allowed prefix: m2 may only send from 127.0.0.1; from 127.0.0.2 it gets a
    // protected 4.03.
    let mut m2 = Device::new("m2", 2, "127.0.0.2:0", edge.coap);
    let t = m2.telemetry(666);
    assert_eq!(m2.call(&t), ResponseType::Forbidden);
    await_stat(&edge, "address_refused", 1);

    // Revoked with the CLI while the edge runs: refused (4.01) once the edge noticed (it polls
    // the registry about once a second).
    let mut r1 = Device::registered("r1", 3, "127.0.0.1:0", edge.coap);
    let out = edge_cli(&creds, &["devices", "revoke", "r1"]);
    assert!(out.status.success(), "{out:?}");
    edge.await_log("Dropped", Duration::from_secs(10));
    let t = r1.telemetry(666);
    let (bytes, _) = r1.protect(&t);
    let answer = r1.send_and_wait(&bytes, t.get_token());
    assert_eq!(code(&answer), ResponseType::Unauthorized);
    await_stat(&edge, "not_active", 1);

    // Quarantined with the CLI while the edge runs: 4.03.
    let mut q1 = Device::registered("q1", 4, "127.0.0.1:0", edge.coap);
    let out = edge_cli(&creds, &["devices", "set-state", "q1", "quarantined"]);
    assert!(out.status.success(), "{out:?}");
    edge.await_log("Some(Quarantined)", Duration::from_secs(10));
    let t = q1.telemetry(666);
    let (bytes, _) = q1.protect(&t);
    let answer = q1.send_and_wait(&bytes, t.get_token());
    assert_eq!(code(&answer), ResponseType::Forbidden);
    await_stat(&edge, "not_active", 2);

    // Everything counted, nothing from any attack at the broker (m1 still works).
    let t = m1.telemetry(4);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    wait_for("m1's 4th record", Duration::from_secs(10), || {
        seqs(&seen, "m1") == [1, 2, 3, 4]
    });
    let s = stats(&edge);
    assert_eq!(s["refused"], 8, "{s:?}");
    let seen = seen.lock().unwrap();
    assert!(
        !seen.records.keys().any(|(_, seq)| *seq == 666),
        "an attack reached the broker: {:?}",
        seen.records.keys()
    );
    assert!(seen.records.keys().all(|(d, _)| d == "m1"));
    assert_eq!(seen.duplicates, 0);
    // The audit trail has the failures and the bindings.
    let out = edge_cli(&creds, &["audit", "--device", "m2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("auth_failure"), "{text}");
}

#[test]
fn replays_after_a_kill_9_are_refused_and_edge_sequence_numbers_never_repeat() {
    let dir = TempDir::new("oscore-restart");
    let creds = provision(dir.path());
    add_device(&creds, "m1", 1, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    let mut edge = start_edge(dir.path(), broker.port, &creds);
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let results = super::subscribe_results(&rt, broker.port);

    let mut m1 = Device::registered("m1", 1, "127.0.0.1:0", edge.coap);
    let t = m1.telemetry(1);
    let (accepted, mut info) = m1.protect(&t);
    let answer = m1.send_and_wait(&accepted, t.get_token());
    assert_eq!(
        code(&unprotect_response(&mut m1.ctx, &answer, &mut info).unwrap()),
        ResponseType::Changed
    );

    // Commands before the crash: a round trip each; the device notes the edge's Partial IVs.
    let mut before = Vec::new();
    for n in 0..3 {
        let req = format!("b{n}");
        let (piv, inner) = command_round_trip(broker.port, &results, &mut m1, &req, "on");
        assert_eq!(inner.payload, b"on");
        before.push(piv);
        assert_changed(&results.lock().unwrap()[&req]);
    }

    edge.kill9();
    edge.restart();

    // The message accepted before the crash, replayed after it: 4.01, nothing stored.
    let answer = m1.send_and_wait(&with_mid(&accepted, 0x0999), t.get_token());
    assert_eq!(code(&answer), ResponseType::Unauthorized);
    await_stat(&edge, "replay", 1);

    // The device goes on (registrations live in memory: it registers again).
    m1.register();
    let t = m1.telemetry(2);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    wait_for("records 1 and 2", Duration::from_secs(10), || {
        seqs(&seen, "m1") == [1, 2]
    });

    let mut after = Vec::new();
    for n in 0..3 {
        let req = format!("a{n}");
        let (piv, _) = command_round_trip(broker.port, &results, &mut m1, &req, "off");
        after.push(piv);
    }
    let max_before = before.iter().max().unwrap();
    assert!(
        after.iter().all(|p| p > max_before),
        "an edge sequence number repeated across kill -9: before {before:?}, after {after:?}"
    );
    // Since the restart the edge verified exactly the registration and the second report: the
    // replay never reached the ingress. (The broker may see record 1 twice: the outbox
    // republishes what mosquitto had not acknowledged before the kill — at-least-once.)
    await_stat(&edge, "responses_verified", 3);
    let s = stats(&edge);
    assert_eq!((s["authenticated"], s["refused"]), (2, 1), "{s:?}");
}

#[test]
fn a_device_that_changes_address_keeps_its_session_and_the_audit_trail_knows() {
    let dir = TempDir::new("oscore-move");
    let creds = provision(dir.path());
    add_device(&creds, "m1", 1, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    let edge = start_edge(dir.path(), broker.port, &creds);
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let results = super::subscribe_results(&rt, broker.port);

    let mut m1 = Device::registered("m1", 1, "127.0.0.1:0", edge.coap);
    let t = m1.telemetry(1);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    // A message held back (Partial IV n); n + 1 arrives from the device's address.
    let held = m1.telemetry(99);
    let (withheld, _) = m1.protect(&held);
    let t = m1.telemetry(2);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    // n, replayed from 127.0.0.2, verifies (never seen) but is older than the newest: no
    // answer, nothing stored, and the device stays where it is.
    let replayer = UdpSocket::bind("127.0.0.2:0").unwrap();
    replayer
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    replayer.send_to(&withheld, edge.coap).unwrap();
    await_stat(&edge, "stale_elsewhere", 1);
    assert!(
        replayer.recv_from(&mut [0u8; 512]).is_err(),
        "no answer to a stale request"
    );
    // Commands still go to the device's address.
    let (_, inner) = command_round_trip(broker.port, &results, &mut m1, "mv0", "at home");
    assert_eq!(inner.payload, b"at home");
    // The device stays at each address a while (the edge's audit times have millisecond
    // resolution; the question's time must lie clearly inside the stay, not within the
    // millisecond of the move).
    let stay = Duration::from_millis(20);
    std::thread::sleep(stay);
    let at_first = time::OffsetDateTime::now_utc();
    std::thread::sleep(stay);

    // NB-IoT re-attach: same context, new address. The edge confirms it with an Echo round
    // trip (RFC 9175) before it moves anything.
    m1.rebind("127.0.0.2:0");
    let t = m1.telemetry(3);
    assert_eq!(m1.call(&t), ResponseType::Changed);
    assert_eq!(m1.echoes, 1, "the move was confirmed by an Echo round trip");
    await_stat(&edge, "address_changes", 1);
    await_stat(&edge, "echo_challenges", 1);
    let at_second = time::OffsetDateTime::now_utc();
    wait_for("the three records", Duration::from_secs(10), || {
        seqs(&seen, "m1") == [1, 2, 3]
    });

    // The session continues: a command reaches the device at its new address.
    super::mosquitto_pub(
        broker.port,
        "v6iot/t/m1/cmd/mv1",
        r#"{"method":"PUT","path":"/valve","payload":"on","content_format":0}"#,
    );
    let (_, inner) = m1.serve();
    assert_eq!(inner.payload, b"on");
    result_of(&results, "mv1", Duration::from_secs(10));

    // Who had which address when: the audit CLI answers both questions.
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let ask = |addr: &str, at: time::OffsetDateTime| {
        let out = edge_cli(&creds, &["audit", "--address", addr, "--at", &rfc3339(at)]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let history = || {
        String::from_utf8_lossy(&edge_cli(&creds, &["audit", "--device", "m1"]).stdout).into_owned()
    };
    let (ok, text) = ask("::ffff:127.0.0.1", at_first);
    assert!(
        ok && text.contains("m1"),
        "{text} (asked for {}); m1's rows:\n{}",
        rfc3339(at_first),
        history()
    );
    let (ok, text) = ask("::ffff:127.0.0.2", at_second);
    assert!(ok && text.contains("m1"), "{text}");
    let (ok, text) = ask("::ffff:127.0.0.1", at_second);
    assert!(!ok, "127.0.0.1 is no longer m1's after the move: {text}");
    let (ok, text) = ask("::ffff:127.0.0.2", at_first);
    assert!(!ok, "127.0.0.2 was not m1's before the move: {text}");
}

// ----- interop with Python aiocoap as the device -----

/// The Python of the venv with aiocoap: `V6IOT_PYENV`, else the workspace's `target/pyenv`
/// (made by scripts/test). Missing, the test fails naming the install step; it never skips.
fn aiocoap_python() -> PathBuf {
    let dir = std::env::var_os("V6IOT_PYENV").map_or_else(
        || {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            root.join("target/pyenv")
        },
        PathBuf::from,
    );
    let python = dir.join("bin/python");
    assert!(
        dir.join("bin/aiocoap-client").is_file() && python.exists(),
        "aiocoap is not installed at {}: run scripts/test (it runs `python3 -m venv \
         target/pyenv && target/pyenv/bin/pip install -r scripts/aiocoap-requirements.txt`) or set \
         V6IOT_PYENV to a venv that has it",
        dir.display()
    );
    python
}

const AIOCOAP_DEVICE: &str = r#"
import asyncio, json, sys
import aiocoap, aiocoap.oscore
from aiocoap import Message, Code

async def main(ctxdir, edge, ep, seq):
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials[f"coap://{edge}/*"] = aiocoap.oscore.FilesystemSecurityContext(ctxdir)
    reg = Message(code=Code.POST, uri=f"coap://{edge}/rd?ep={ep}&lt=600",
                  payload=b"</valve>;ct=0", content_format=40)
    r = await ctx.request(reg).response
    print("registration", r.code, flush=True)
    body = json.dumps([{"bn": f"urn:dev:e2e:{ep}:", "n": "seq", "v": int(seq)},
                       {"n": "flow", "u": "m3/s", "v": 3.5}]).encode()
    r = await ctx.request(Message(code=Code.POST, uri=f"coap://{edge}/t",
                                  payload=body, content_format=110)).response
    print("telemetry", r.code, flush=True)
    await ctx.shutdown()

asyncio.run(main(*sys.argv[1:5]))
"#;

#[test]
fn aiocoap_as_an_oscore_device_registers_and_reports() {
    let python = aiocoap_python();
    let dir = TempDir::new("oscore-aiocoap");
    let creds = provision(dir.path());
    add_device(&creds, "py1", 0x21, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    let edge = start_edge(dir.path(), broker.port, &creds);
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);

    let ctxdir = dir.path().join("py1-oscore");
    std::fs::create_dir_all(&ctxdir).unwrap();
    let settings = serde_json::json!({
        "sender-id_hex": hex::encode([0x21]),
        "recipient-id_hex": "",
        "secret_hex": hex::encode(secret_of(0x21)),
        "salt_hex": "",
    });
    std::fs::write(ctxdir.join("settings.json"), settings.to_string()).unwrap();
    let script = dir.path().join("device.py");
    std::fs::write(&script, AIOCOAP_DEVICE).unwrap();
    let run = |seq: &str| {
        let out = Command::new(&python)
            .arg(&script)
            .arg(&ctxdir)
            .arg(edge.coap.to_string())
            .arg("py1")
            .arg(seq)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "aiocoap device failed: {text}");
        assert!(text.contains("registration 2.01 Created"), "{text}");
        assert!(text.contains("telemetry 2.04 Changed"), "{text}");
    };
    run("7");
    wait_for(
        "aiocoap's record at the broker",
        Duration::from_secs(10),
        || seqs(&seen, "py1") == [7],
    );
    let record = seen.lock().unwrap().records[&("py1".to_owned(), 7)].clone();
    assert_eq!(record[1]["v"].as_f64(), Some(3.5), "{record}");
    await_stat(&edge, "authenticated", 2);
    // Run again: a new process, a new port, so a move. The edge confirms it with an Echo
    // challenge (RFC 9175), which aiocoap answers by repeating its request with the value.
    run("8");
    wait_for(
        "aiocoap's second record at the broker",
        Duration::from_secs(10),
        || seqs(&seen, "py1") == [7, 8],
    );
    await_stat(&edge, "echo_challenges", 1);
    await_stat(&edge, "address_changes", 1);
    // the challenged registration, its repeat with the Echo value, the report
    await_stat(&edge, "authenticated", 5);
}

/// Sums a count over every security report received so far.
pub(super) fn reported(seen: &Arc<Mutex<Seen>>, cause: &str) -> u64 {
    seen.lock()
        .unwrap()
        .security
        .iter()
        .filter_map(|r| r["counts"][cause].as_u64())
        .sum()
}

#[test]
fn floods_are_limited_a_failing_kid_is_quarantined_and_other_devices_go_on() {
    let dir = TempDir::new("oscore-flood");
    let creds = provision(dir.path());
    add_device(&creds, "m1", 1, ANY_LOOPBACK4);
    add_device(&creds, "m2", 2, ANY_LOOPBACK4);
    let broker = Mosquitto::start(dir.path());
    // Small limits, so that a bounded test flood exceeds them; reports every second.
    let edge = start_edge_with(
        dir.path(),
        broker.port,
        &creds,
        "rate_per_source = 200\nburst_per_source = 200\nrate_per_device = 20\n\
         burst_per_device = 20\nquarantine_after = 10\nfailure_window_s = 10\n\
         quarantine_s = 60\nreport_interval_s = 1\n",
    );
    let rt = runtime();
    let seen = subscribe(&rt, broker.port);
    let mut m1 = Device::registered("m1", 1, "127.0.0.1:0", edge.coap);

    // 1. A flood of CoAP pings from 127.0.0.9 (nothing to authenticate): the source's bucket
    //    (200/s) drops most of them unread.
    let flooder = UdpSocket::bind("127.0.0.9:0").unwrap();
    let mut ping = Packet::new();
    ping.header.set_type(MessageType::Confirmable);
    ping.header.code = MessageClass::Empty;
    for mid in 0..3000u16 {
        ping.header.message_id = mid;
        flooder
            .send_to(&ping.to_bytes_unlimited().unwrap(), edge.coap)
            .unwrap();
    }
    wait_for(
        "the source rate limit to engage",
        Duration::from_secs(10),
        || {
            stats(&edge)
                .get("source_limited")
                .is_some_and(|n| *n >= 1000)
        },
    );

    // 2. Forgeries under m1's kid with a wrong key, from 127.0.0.10: after 10 failed
    //    verifications the kid is quarantined, and the rest (not from where m1 was verified)
    //    is refused unverified. Unknown kids from 127.0.0.11 are counted and quarantine
    //    nothing: no source is ever quarantined.
    let mut forger = Device::forger("m1", 1, "127.0.0.10:0", edge.coap);
    forger.send_reports(666..766);
    await_stat(&edge, "quarantines", 1);
    await_stat(&edge, "decryption_failed", 10);
    await_stat(&edge, "kid_quarantined", 90);
    let mut stranger = Device::new("x9", 9, "127.0.0.11:0", edge.coap);
    stranger.send_reports(666..716);
    await_stat(&edge, "unknown_kid", 50);
    assert_eq!(stats(&edge)["quarantines"], 1);

    // 3. An authenticated device over its own rate (20/s), 60 reports at once: some answers
    //    are 5.03, none of those records is stored, the others are.
    let mut m2 = Device::registered("m2", 2, "127.0.0.2:0", edge.coap);
    let mut m2_ok = Vec::new();
    let mut m2_limited = 0;
    let reports: Vec<Packet> = (1..=60).map(|seq| m2.telemetry(seq)).collect();
    for (seq, answer) in (1..=60).zip(m2.burst(&reports)) {
        match answer {
            ResponseType::Changed => m2_ok.push(seq),
            ResponseType::ServiceUnavailable => m2_limited += 1,
            other => panic!("m2's report {seq}: {other:?}"),
        }
    }
    assert!(m2_limited > 0, "the device rate limit never engaged");
    assert!(!m2_ok.is_empty());

    // Meanwhile m1, from the address it was verified at, is unaffected by its kid's quarantine:
    // every report accepted.
    for seq in 1..=10 {
        let t = m1.telemetry(seq);
        assert_eq!(m1.call(&t), ResponseType::Changed, "m1's report {seq}");
    }
    wait_for("m1's and m2's records", Duration::from_secs(10), || {
        seqs(&seen, "m1") == (1..=10).collect::<Vec<_>>() && seqs(&seen, "m2") == m2_ok
    });
    await_stat(&edge, "device_limited", m2_limited);

    // The security reports on _edge/e1/security say what happened, with the quarantine.
    wait_for("the security reports", Duration::from_secs(10), || {
        reported(&seen, "source_limited") == stats(&edge)["source_limited"]
            && reported(&seen, "device_limited") == m2_limited
            && reported(&seen, "kid_quarantined") == 90
            && reported(&seen, "unknown_kid") == 50
    });
    {
        let seen = seen.lock().unwrap();
        let quarantined = quarantined(&seen);
        assert_eq!(quarantined.len(), 1, "{:?}", seen.security);
        assert_eq!(quarantined[0]["kid"], "01");
        assert_eq!(quarantined[0]["device"], "m1");
        assert_eq!(seen.security[0]["edge"], "e1");
        // Nothing of the floods reached the broker.
        assert!(seen.records.keys().all(|(d, _)| d == "m1" || d == "m2"));
        assert!(!seen.records.keys().any(|(_, seq)| *seq >= 666));
    }
    // The quarantine is in the audit trail (read with the sqlite3 CLI), and the chain holds.
    let db = creds.data.join("registry.db");
    wait_for(
        "the quarantine's audit row",
        Duration::from_secs(10),
        || {
            let out = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT detail FROM audit WHERE kind = 'auth_failure' AND detail LIKE '%quarantined%';")
            .output()
            .expect("sqlite3 is not installed: run scripts/test");
            String::from_utf8_lossy(&out.stdout).contains("kid 01 quarantined for 60 s")
        },
    );
    let out = edge_cli(&creds, &["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
}
