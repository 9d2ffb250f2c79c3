//! An edge started with many devices in its registry answers from the first datagram that
//! finds its port open: the CoAP socket is bound only once every OSCORE context is built.

use std::io::ErrorKind;
use std::time::Instant as StdInstant;

use super::oscore::{edge_cli, provision};
use super::*;

/// Devices in the registry: enough that building their contexts takes seconds in a debug
/// build (20,000 took 3.7 s on the loaded 2-core CI machine), well beyond [`SILENCE`].
const DEVICES: usize = 20_000;
/// How long a ping to a bound port may go unanswered: generous, because the whole suite runs
/// beside this test on 2 cores and a ready edge can still be descheduled for a while; an edge
/// bound before loading stays silent for the whole load (seconds).
const SILENCE: Duration = Duration::from_millis(1_500);

/// The edge binary, its stderr collected line by line (no waiting for "running").
struct Starting {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Starting {
    fn spawn(config: &Path) -> Starting {
        let mut child = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let theirs = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                theirs.lock().unwrap().push(line);
            }
        });
        Starting { child, log }
    }

    fn line_with(&self, needle: &str) -> Option<usize> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .position(|l| l.contains(needle))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Imports `n` OSCORE devices through `v6iot-edge devices import`.
fn import_devices(dir: &Path, creds: &oscore::Creds, n: usize) {
    let csv = dir.join("fleet.csv");
    let mut text = String::from("id,kid_hex,secret_hex,salt_hex,class,prefixes\n");
    for i in 0..n {
        text.push_str(&format!("d{i},{i:08x},{i:032x},,1,\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let out = edge_cli(creds, &["devices", "import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

/// A CoAP ping (Confirmable, empty) with message id `mid`.
fn ping(mid: u16) -> [u8; 4] {
    let [hi, lo] = mid.to_be_bytes();
    [0x40, 0x00, hi, lo]
}

#[test]
fn an_edge_loading_many_devices_answers_its_first_datagram() {
    let dir = TempDir::new("startup");
    let creds = provision(dir.path());
    import_devices(dir.path(), &creds, DEVICES);
    let coap: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let config = dir.path().join("edge.toml");
    // No broker: the edge starts and answers CoAP without one.
    std::fs::write(
        &config,
        format!(
            "site = \"t\"\nedge_id = \"e1\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"{coap}\"\n\
             [mqtt]\nurl = \"mqtt://[::1]:{}\"\n[registry]\nseal_key_file = \"{}\"\n\
             [security]\nrequire_oscore = true\n",
            creds.data.display(),
            free_tcp_port(),
            creds.key_file.display()
        ),
    )
    .unwrap();
    let probe = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    probe.connect(coap).unwrap();
    probe.set_read_timeout(Some(SILENCE)).unwrap();
    let edge = Starting::spawn(&config);

    // Closed, the port refuses (ICMP port unreachable, seen on a connected socket); open, it
    // answers the ping with a Reset. Silence means bound but not answering.
    let deadline = StdInstant::now() + Duration::from_secs(60);
    let mut refused = 0u32;
    let mut buf = [0u8; 64];
    let answer = loop {
        assert!(StdInstant::now() < deadline, "no answer within 60 s");
        let mid = u16::try_from(refused % 60_000).unwrap();
        probe.send(&ping(mid)).unwrap();
        match probe.recv(&mut buf) {
            Ok(n) => break buf[..n].to_vec(),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!(
                "a ping to the open CoAP port went unanswered for {SILENCE:?} ({e}): the \
                 socket was bound before the edge could answer; log: {:?}",
                edge.log.lock().unwrap()
            ),
        }
    };
    // A Reset (type 3, empty) to the ping.
    assert_eq!(answer.len(), 4, "{answer:?}");
    assert_eq!(answer[0] & 0x30, 0x30, "a Reset: {answer:?}");
    // The probe watched the edge start (the port was closed at first) …
    assert!(refused > 0, "the port was open before the first probe");
    // … and it answered once its devices were loaded.
    let loaded = edge
        .line_with(&format!("devices={DEVICES}"))
        .expect("the gateway logs its devices");
    wait_for("edge router running", Duration::from_secs(10), || {
        edge.line_with("edge router running").is_some()
    });
    assert!(edge.line_with("edge router running").unwrap() > loaded);
}
