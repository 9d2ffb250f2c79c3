//! MQTT over TLS to a real mosquitto with rcgen certificates: CA pinning, mutual TLS, the SNI /
//! verification name override, and refusals (wrong CA, missing client certificate).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_cloud_bridge::{BridgeEvent, MqttConfig};

struct Setup {
    _dir: TempDir,
    certs: Certs,
    broker: Mosquitto,
    topics: Topics,
}

/// mosquitto with a plain listener on 127.0.0.1 (for the test's receiver) and a TLS listener on
/// both loopback addresses.
fn setup(require_certificate: bool) -> Setup {
    init_tracing();
    let dir = TempDir::new("tls");
    let certs = make_certs(dir.path());
    let broker = Mosquitto::start(
        dir.path(),
        BrokerSpec {
            plain: vec![V4],
            tls: Some((
                vec![V6, V4],
                TlsListener {
                    certs: certs.clone(),
                    require_certificate,
                },
            )),
            acl: None,
        },
    );
    Setup {
        _dir: dir,
        certs,
        broker,
        topics: Topics::new("v6iot", "plant-a").unwrap(),
    }
}

impl Setup {
    fn config(&self, url: &str, protocol: u8) -> MqttConfig {
        let mut c = MqttConfig::new(url, "edge-1", self.topics.clone());
        c.protocol = protocol;
        c.tls.ca_file = Some(self.certs.ca.clone());
        c.reconnect_min = Duration::from_millis(100);
        c.reconnect_max = Duration::from_millis(300);
        c
    }

    async fn delivers(&self, config: MqttConfig) {
        let mut sub = Sub::start(V4, self.broker.port, &["v6iot/plant-a/+/telemetry"]).await;
        let mut bridge = Bridge::start(config, 8);
        bridge.connected().await;
        for id in 1..=20 {
            bridge
                .outgoing
                .send(message(&self.topics, id))
                .await
                .unwrap();
        }
        for _ in 1..=20 {
            let (_, p) = sub.recv(Duration::from_secs(10)).await.expect("delivered");
            let id = u64::from_be_bytes(p[..8].try_into().unwrap());
            assert_eq!(p, payload(id));
        }
        let mut acked: Vec<u64> = Vec::new();
        while acked.len() < 20 {
            acked.push(bridge.acks.recv().await.unwrap());
        }
        acked.sort_unstable();
        assert_eq!(acked, (1..=20).collect::<Vec<_>>());
        bridge.stop().await.unwrap();
    }

    /// The bridge must fail to connect, say why, and publish nothing.
    async fn refused(&self, config: MqttConfig, why: &[&str]) {
        let mut sub = Sub::start(V4, self.broker.port, &["v6iot/#"]).await;
        let mut bridge = Bridge::start(config, 8);
        for id in 1..=5 {
            bridge
                .outgoing
                .send(message(&self.topics, id))
                .await
                .unwrap();
        }
        // two failures in a row: it retries, and fails the same way
        for _ in 0..2 {
            let ev = bridge
                .event(Duration::from_secs(10), |e| {
                    matches!(
                        e,
                        BridgeEvent::ConnectFailed { .. } | BridgeEvent::Connected { .. }
                    )
                })
                .await;
            let BridgeEvent::ConnectFailed { reason } = ev else {
                panic!("connected although it must not: {ev:?}")
            };
            assert!(
                why.iter().any(|w| reason.contains(w)),
                "{reason:?} should say one of {why:?}"
            );
        }
        assert_eq!(
            sub.recv(Duration::from_millis(300)).await,
            None,
            "nothing published"
        );
        assert!(bridge.acks.try_recv().is_err(), "nothing acked");
        let s = bridge.stats.snapshot();
        assert_eq!((s.connects, s.acked), (0, 0));
        assert!(s.connect_failures >= 2);
        bridge.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_pinned_ca() {
    let s = setup(false);
    s.delivers(s.config(&format!("mqtts://localhost:{}", s.broker.tls_port), 4))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_an_ip_literal_with_a_server_name_override_mqtt_5() {
    let s = setup(false);
    let mut c = s.config(&format!("mqtts://[::1]:{}", s.broker.tls_port), 5);
    c.tls.server_name = Some("localhost".into());
    s.delivers(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let s = setup(true);
    let mut c = s.config(&format!("mqtts://localhost:{}", s.broker.tls_port), 4);
    c.tls.client_cert = Some(s.certs.client_cert.clone());
    c.tls.client_key = Some(s.certs.client_key.clone());
    s.delivers(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused() {
    let s = setup(false);
    let mut c = s.config(&format!("mqtts://localhost:{}", s.broker.tls_port), 4);
    c.tls.ca_file = Some(s.certs.other_ca.clone());
    s.refused(c, &["invalid peer certificate", "UnknownIssuer"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_is_refused() {
    let s = setup(false);
    let mut c = s.config(&format!("mqtts://localhost:{}", s.broker.tls_port), 4);
    c.tls.server_name = Some("broker.elsewhere.test".into());
    s.refused(c, &["invalid peer certificate", "NotValidForName"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_client_certificate_is_refused() {
    let s = setup(true);
    let c = s.config(&format!("mqtts://localhost:{}", s.broker.tls_port), 4);
    // TLS 1.3: the client's handshake is done before the server checks for a certificate; the
    // server's alert arrives on the first read, and the bridge names it.
    s.refused(c, &["received fatal alert: CertificateRequired"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_fail_at_start_not_at_each_retry() {
    let s = setup(false);
    let mut c = s.config(&format!("mqtts://localhost:{}", s.broker.tls_port), 4);
    c.tls.client_cert = Some(s.certs.client_cert.clone());
    let mut bridge = Bridge::start(c.clone(), 8);
    let e = bridge.stop().await.unwrap_err().to_string();
    assert!(e.contains("client_cert and client_key"), "{e}");
    c.tls.client_key = Some(s.certs.server_cert.clone()); // a certificate, not a key
    let mut bridge = Bridge::start(c, 8);
    let e = bridge.stop().await.unwrap_err().to_string();
    assert!(e.contains("client key"), "{e}");
}
