//! Happy Eyeballs (RFC 8305) on real sockets: IPv6 wins when both families answer, a refused
//! IPv6 address falls back to IPv4 at once, a silent one after the 250 ms attempt delay; and the
//! MQTT bridge, given a host name with both addresses, connects over IPv6.
//!
//! This machine's /etc/hosts maps `localhost` to 127.0.0.1 only, so the bridge test runs itself
//! again inside a private mount namespace (`unshare -m`, root) where /etc/hosts is bind-mounted
//! with `::1 localhost` and `127.0.0.1 localhost`; the host's /etc/hosts is never touched.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use v6iot_cloud_bridge::MqttConfig;
use v6iot_cloud_bridge::happy_eyeballs::{self, CONNECTION_ATTEMPT_DELAY};
use v6iot_cloud_bridge::topics::Topics;

fn v6(port: u16) -> SocketAddr {
    SocketAddr::new("::1".parse().unwrap(), port)
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new("127.0.0.1".parse().unwrap(), port)
}

/// A listener on [::1]:port whose accept queue is full: further SYNs are dropped, so a connect
/// to it neither succeeds nor fails (like a black-holed IPv6 path). Returns what keeps it so.
async fn silent_v6(port: u16) -> (tokio::net::TcpListener, TcpStream) {
    let socket = TcpSocket::new_v6().unwrap();
    socket.bind(v6(port)).unwrap();
    let listener = socket.listen(0).unwrap();
    let filler = TcpStream::connect(v6(port)).await.unwrap();
    // check: a further connection attempt does hang
    let probe =
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(v6(port))).await;
    assert!(
        probe.is_err(),
        "the full accept queue should drop SYNs on this kernel"
    );
    (listener, filler)
}

#[tokio::test]
async fn ipv6_wins_when_both_families_answer() {
    let port = free_port();
    let l6 = TcpListener::bind(v6(port)).await.unwrap();
    let _l4 = TcpListener::bind(v4(port)).await.unwrap();
    // the resolver's order does not matter: IPv6 goes first
    let (stream, addr) = happy_eyeballs::connect([v4(port), v6(port)], CONNECTION_ATTEMPT_DELAY)
        .await
        .unwrap();
    assert_eq!(addr, v6(port));
    assert_eq!(stream.peer_addr().unwrap(), v6(port));
    let (accepted, _) = l6.accept().await.unwrap();
    assert_eq!(accepted.local_addr().unwrap(), v6(port));
}

/// Wall-clock bounds on a machine shared with other builds: a fall-back "at once" is told from
/// one after the attempt delay by giving the delay a length no busy machine comes near
/// (the failure, not the delay, must start the next attempt).
const LONG_ATTEMPT_DELAY: Duration = Duration::from_secs(30);

/// Generous upper bound for what takes milliseconds on a quiet machine (connects on loopback,
/// a 250 ms attempt delay); what it tells apart is a fall-back that happens from one that waits
/// for the kernel's SYN retries (over a minute) or for [`LONG_ATTEMPT_DELAY`].
const BUSY_MACHINE_BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_refused_ipv6_address_falls_back_to_ipv4_at_once() {
    let port = free_port();
    let _l4 = TcpListener::bind(v4(port)).await.unwrap();
    let t0 = Instant::now();
    // the failure starts the next attempt without waiting for the attempt delay
    let (_, addr) = tokio::time::timeout(
        BUSY_MACHINE_BOUND,
        happy_eyeballs::connect([v4(port), v6(port)], LONG_ATTEMPT_DELAY),
    )
    .await
    .expect("the refused IPv6 attempt starts the IPv4 one at once")
    .unwrap();
    eprintln!("fell back in {:?}", t0.elapsed());
    assert_eq!(addr, v4(port));
}

#[tokio::test]
async fn a_silent_ipv6_address_falls_back_after_the_attempt_delay() {
    let port = free_port();
    let _silent = silent_v6(port).await;
    let _l4 = TcpListener::bind(v4(port)).await.unwrap();
    let t0 = Instant::now();
    let (_, addr) = happy_eyeballs::connect([v6(port), v4(port)], CONNECTION_ATTEMPT_DELAY)
        .await
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(addr, v4(port));
    // a timer never fires early: the lower bound holds on any machine
    assert!(took >= CONNECTION_ATTEMPT_DELAY, "took {took:?}");
    assert!(took < BUSY_MACHINE_BOUND, "took {took:?}");
}

#[tokio::test]
async fn all_addresses_failing_names_each() {
    let port = free_port();
    let e = happy_eyeballs::connect([v4(port), v6(port)], CONNECTION_ATTEMPT_DELAY)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&v6(port).to_string()) && e.contains(&v4(port).to_string()),
        "{e}"
    );
    let e = happy_eyeballs::connect([], CONNECTION_ATTEMPT_DELAY)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// The environment variable that marks the re-run inside the mount namespace.
const INSIDE_ENV: &str = "V6IOT_DUAL_STACK_HOSTS";

/// Runs this very test again in a mount namespace where `localhost` has both addresses; there
/// (with [`INSIDE_ENV`] set) it runs [`dual_stack_name_inside`] instead.
#[test]
fn the_bridge_prefers_ipv6_for_a_dual_stack_name() {
    if std::env::var_os(INSIDE_ENV).is_some() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        return rt.block_on(dual_stack_name_inside());
    }
    require_root("a mount namespace (`unshare --mount`) with an /etc/hosts of its own");
    let dir = TempDir::new("hosts");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n").unwrap();
    let script = r#"set -eu
        mount --bind "$HOSTS" /etc/hosts
        exec "$TEST_BIN" --exact the_bridge_prefers_ipv6_for_a_dual_stack_name \
            --nocapture --test-threads 1"#;
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", script])
        .env("HOSTS", &hosts)
        .env("TEST_BIN", std::env::current_exe().unwrap())
        .env(INSIDE_ENV, "1")
        .output()
        .expect("unshare (util-linux) must be installed (Debian package util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    eprintln!("{stdout}{stderr}");
}

fn bridge_config(port: u16) -> MqttConfig {
    let mut c = MqttConfig::new(
        &format!("mqtt://localhost:{port}"),
        "edge-1",
        Topics::new("v6iot", "plant-a").unwrap(),
    );
    c.reconnect_min = Duration::from_millis(100);
    c
}

/// The bridge connected once and no attempt failed on the way: read from its counters, since
/// [`Bridge::connected`] consumes the events before the `Connected` one.
fn assert_one_connection_no_failure(bridge: &Bridge) {
    let stats = bridge.stats.snapshot();
    assert_eq!(
        (stats.connects, stats.connect_failures),
        (1, 0),
        "one connection, no failed attempt on the way: {stats:?}"
    );
}

/// Inside the namespace: the bridge, given `mqtt://localhost:PORT`, connects over IPv6 when
/// the broker listens on both families, and falls back to IPv4 when IPv6 refuses or is silent.
async fn dual_stack_name_inside() {
    init_tracing();
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host("localhost:1")
        .await
        .unwrap()
        .collect();
    assert!(
        resolved.iter().any(|a| a.is_ipv6()) && resolved.iter().any(|a| a.is_ipv4()),
        "localhost should have both addresses here: {resolved:?}"
    );
    let dir = TempDir::new("dual");
    let topics = Topics::new("v6iot", "plant-a").unwrap();

    // 1. the broker on both families: the bridge connects over IPv6
    {
        let broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V4, V6]));
        let mut bridge = Bridge::start(bridge_config(broker.port), 8);
        let addr = bridge.connected().await;
        assert_eq!(addr, v6(broker.port));
        assert_one_connection_no_failure(&bridge);
        bridge.outgoing.send(message(&topics, 1)).await.unwrap();
        assert_eq!(bridge.acks.recv().await, Some(1));
        bridge.stop().await.unwrap();
        eprintln!("dual stack broker: connected over {addr}");
    }
    // 2. IPv4 only (IPv6 refuses): IPv4 at once, long before the (lengthened) attempt delay
    {
        let broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V4]));
        let t0 = Instant::now();
        let mut config = bridge_config(broker.port);
        config.attempt_delay = LONG_ATTEMPT_DELAY;
        let mut bridge = Bridge::start(config, 8);
        let addr = bridge.connected().await;
        let took = t0.elapsed();
        assert_eq!(addr, v4(broker.port));
        assert!(took < BUSY_MACHINE_BOUND, "took {took:?}");
        assert_one_connection_no_failure(&bridge);
        bridge.stop().await.unwrap();
        eprintln!("IPv4-only broker, IPv6 refused: connected over {addr} in {took:?}");
    }
    // 3. IPv6 silent (SYNs dropped): IPv4 after the attempt delay, well within a second
    {
        let broker = Mosquitto::start(dir.path(), BrokerSpec::plain(&[V4]));
        let _silent = silent_v6(broker.port).await;
        let t0 = Instant::now();
        let mut bridge = Bridge::start(bridge_config(broker.port), 8);
        let addr = bridge.connected().await;
        let took = t0.elapsed();
        assert_eq!(addr, v4(broker.port));
        assert!(
            took >= CONNECTION_ATTEMPT_DELAY && took < BUSY_MACHINE_BOUND,
            "took {took:?}"
        );
        assert_one_connection_no_failure(&bridge);
        bridge.stop().await.unwrap();
        eprintln!("IPv4-only broker, IPv6 silent: connected over {addr} in {took:?}");
    }
}
