//! Devices one border router serves on the ideal medium: a fleet of the SDK's 6LoWPAN devices
//! (OSCORE, planned addresses, one thread, ZEP over one UDP socket: every frame delivered)
//! through the `v6iot-edge` binary (release) and mosquitto, in a network namespace of its own.
//! It reports how long the fleet took to attach and register, and how many devices had reports
//! acknowledged (stored durably at the edge) at the reporting rate asked for.
//!
//! Run (root; mosquitto installed):
//! `cargo bench -p v6iot-edge-router --bench border_fleet -- [DEVICES [PERIOD_S [SECONDS]]]`
//! (defaults 10000, 60, 120).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/e2e_mosquitto/lowpan_fleet.rs"]
#[allow(dead_code, unreachable_pub)]
mod lowpan_fleet;

use lowpan_fleet::{CHANNEL, Fleet, FleetConfig, PAN, PREFIX, ROUTER_EUI};
use v6iot_testkit::edge::seal_key;
use v6iot_testkit::{Mosquitto, Running, free_udp_port, wait_for};

fn kid(n: usize) -> Vec<u8> {
    (n as u32 + 1).to_be_bytes()[1..].to_vec()
}

fn secret(n: usize) -> Vec<u8> {
    let mut s = vec![0x5a; 16];
    s[..4].copy_from_slice(&(n as u32).to_be_bytes());
    s
}

fn credentials(n: usize) -> (Vec<u8>, Vec<u8>) {
    (kid(n), secret(n))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn edge(dir: &Path, args: &[&str], key: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("V6IOT_SEAL_KEY", key)
        .output()
        .unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let devices: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let period: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(120);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("needs root");
    assert!(
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success()
    );
    let dir = std::env::temp_dir().join(format!("v6iot-border-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Registry: a seal key and every device, its prefix the PAN's.
    let key_file = dir.join("seal.key");
    let key = seal_key(Path::new(env!("CARGO_BIN_EXE_v6iot-edge")), &key_file);
    let mut csv = String::from("id,kid_hex,secret_hex,salt_hex,class,prefixes\n");
    for n in 0..devices {
        let (name, _) = lowpan_fleet::id(n);
        csv += &format!("{name},{},{},,1,{PREFIX}\n", hex(&kid(n)), hex(&secret(n)));
    }
    std::fs::write(dir.join("devices.csv"), csv).unwrap();
    let out = edge(
        &dir,
        &[
            "devices",
            "import",
            dir.join("devices.csv").to_str().unwrap(),
        ],
        &key,
    );
    assert!(out.status.success(), "{out:?}");

    // Broker and edge.
    let broker = Mosquitto::on_loopback(&dir, "max_queued_messages 0\n");
    let mqtt = broker.port();
    let socket = Fleet::bind();
    let zep = free_udp_port();
    let config = format!(
        "site = \"t\"\nedge_id = \"e1\"\ndata_dir = \"{}\"\n[coap]\nlisten = \"[::1]:{}\"\nmax_lifetime = 90000\n\
         [mqtt]\nurl = \"mqtt://[::1]:{mqtt}\"\n[registry]\nseal_key_file = \"{}\"\n[lowpan]\n\
         max_neighbours = {}\n[[radio]]\npan_id = {PAN}\nchannel = {CHANNEL}\nprefix = \"{PREFIX}\"\n\
         router_eui64 = \"{ROUTER_EUI}\"\nzep_medium = \"{}\"\nzep_listen = \"[::1]:{zep}\"\n",
        dir.join("data").display(),
        free_udp_port(),
        key_file.display(),
        devices.max(16_384),
        socket.local_addr().unwrap(),
    );
    std::fs::write(dir.join("edge.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
        .args(["run", "--config", dir.join("edge.toml").to_str().unwrap()])
        .env("RUST_LOG", "warn,v6iot_edge_router::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let _edge = Running(child);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("edge running");
        if line.contains("edge router running") {
            break;
        }
    }
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l = log.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            l.lock().unwrap().push(line);
        }
    });

    let start = Instant::now();
    let fleet = Fleet::start(
        socket,
        format!("[::1]:{zep}").parse().unwrap(),
        FleetConfig {
            devices,
            reports: u64::MAX,
            every: Duration::from_secs(period),
            big_every: 0,
            credentials: Some(credentials),
        },
    );
    let limit = Duration::from_secs(seconds.max(60));
    wait_for("every device attached", limit, || {
        fleet
            .view
            .lock()
            .unwrap()
            .addresses
            .iter()
            .all(Option::is_some)
    });
    let attached = start.elapsed();
    wait_for("every device registered", limit, || {
        fleet.view.lock().unwrap().registered == devices
    });
    let registered = start.elapsed();
    println!(
        "border_fleet devices={devices} attached_s={:.1} registered_s={:.1}",
        attached.as_secs_f64(),
        registered.as_secs_f64()
    );
    let mut last = (Instant::now(), 0_u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(10));
        let v = fleet.view.lock().unwrap();
        let acked: u64 = v.acked.iter().sum();
        let reporting = v.acked.iter().filter(|&&a| a > 0).count();
        let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
        println!(
            "border_fleet t={:.0}s registered={} reporting={reporting} acked={acked} acked_per_s={rate:.0} frames_in={} frames_out={}",
            start.elapsed().as_secs_f64(),
            v.registered,
            v.frames_in,
            v.frames_out
        );
        last = (Instant::now(), acked);
    }
    if let Some(line) = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l.contains("border stats pan=0"))
    {
        println!("{line}");
    }
    if let Some(line) = log
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|l| l.contains("gateway stats"))
    {
        println!("{line}");
    }
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}
