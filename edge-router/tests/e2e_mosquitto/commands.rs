//! Who may command which device, through the `v6iot-edge` binary and a real mosquitto: the
//! README's `acl_file` (with a `password_file`, no anonymous clients) decides which MQTT
//! identities may publish commands for which devices, and the edge's `[commands]` allow-list
//! and bounds refuse the rest with an error result. The edge itself logs in with a password
//! over plain `mqtt://` on loopback, which needs `allow_plain_password = true`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    Edge, Mosquitto, TempDir, free_tcp_port, runtime, spawn_subscriber_as, start_valve, wait_for,
};

/// The README's ACL for site `plant-a`, as the test's site `t`.
fn documented_acl() -> String {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("# acl_file\n")
        .expect("the README documents the acl_file");
    let block = &readme[start..];
    let end = block.find("```").expect("the acl_file block ends");
    block[..end].replace("/plant-a/", "/t/")
}

const USERS: [(&str, &str); 3] = [
    ("edge-1", "edge-secret"),
    ("platform", "platform-secret"),
    ("ops-line1", "ops-secret"),
];

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

/// A mosquitto with the documented ACL, the users' passwords, and no anonymous clients.
fn broker_with_acl(dir: &Path) -> Mosquitto {
    let passwd = dir.join("passwd");
    for (i, (user, pw)) in USERS.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .args(["-b"])
            .arg(&passwd)
            .args([user, pw])
            .status()
            .expect("mosquitto_passwd (Debian mosquitto) is not installed: run scripts/test");
        assert!(status.success());
    }
    let acl = dir.join("acl");
    std::fs::write(&acl, documented_acl()).unwrap();
    let port = free_tcp_port();
    let conf = dir.join("mosquitto-acl.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nlistener {port} ::1\nallow_anonymous false\npassword_file {}\n\
             acl_file {}\npersistence false\nlog_dest stderr\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let mut m = Mosquitto {
        child: None,
        port,
        conf,
    };
    m.restart();
    m
}

/// Publishes as `user` (MQTT 5, QoS 1, so the broker says why it refuses); returns what
/// mosquitto_pub printed on standard error.
fn publish_as(port: u16, user: Option<&str>, topic: &str, payload: &str) -> String {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "::1", "-p", &port.to_string(), "-V", "5", "-q", "1"]);
    if let Some(user) = user {
        cmd.args(["-u", user, "-P", password(user)]);
    }
    let out = cmd
        .args(["-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub (Debian mosquitto-clients) is not installed: run scripts/test");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_broker_acl_and_the_edge_allow_list_decide_who_commands_which_device() {
    let dir = TempDir::new("acl");
    let broker = broker_with_acl(dir.path());
    let url = format!("mqtt://[::1]:{}", broker.port);
    // Over plain mqtt:// a password needs the explicit opt-in: without it the edge refuses to
    // start, naming the key.
    let mqtt = format!(
        "username = \"edge-1\"\npassword = \"{}\"\n",
        password("edge-1")
    );
    let conf = dir.path().join("refused.toml");
    std::fs::write(
        &conf,
        format!("site = \"t\"\n[mqtt]\nurl = \"{url}\"\n{mqtt}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_v6iot-edge"))
        .arg("check-config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mqtt.allow_plain_password"), "{err}");

    let edge = Edge::configured(
        dir.path(),
        &url,
        "",
        &format!("{mqtt}allow_plain_password = true\n"),
        "[commands]\nallow_devices = [\"valve-*\"]\n",
    );
    let rt = runtime();
    let results: Arc<Mutex<HashMap<String, serde_json::Value>>> = Arc::default();
    let r = results.clone();
    spawn_subscriber_as(
        &rt,
        broker.port,
        "platform",
        Some(("platform", password("platform"))),
        "v6iot/t/+/cmd/+/result",
        true,
        move |_, payload| {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            r.lock()
                .unwrap()
                .insert(v["req"].as_str().unwrap().to_owned(), v);
        },
    );
    let valve = start_valve(
        &rt,
        edge.coap,
        "valve-1",
        v6iot_sdk::uplink::Binding::U,
        Duration::from_millis(500),
    );
    edge.await_log("endpoint: \"valve-1\"", Duration::from_secs(10));
    let result = |req: &str| results.lock().unwrap().get(req).cloned();

    // The platform's command for a device outside the edge's allow-list: the broker lets it
    // through (the platform may command any device), the edge refuses it. Sent until the
    // edge's command subscription is up.
    let mut probe = 0;
    wait_for(
        "the edge to answer a command",
        Duration::from_secs(15),
        || {
            probe += 1;
            let stderr = publish_as(
                broker.port,
                Some("platform"),
                &format!("v6iot/t/heater/cmd/p{probe}"),
                r#"{"method":"PUT","path":"/valve","payload":"on"}"#,
            );
            assert!(stderr.is_empty(), "{stderr}");
            std::thread::sleep(Duration::from_millis(200));
            results.lock().unwrap().keys().any(|k| k.starts_with('p'))
        },
    );
    let refused = results
        .lock()
        .unwrap()
        .values()
        .find(|v| v["req"].as_str().unwrap().starts_with('p'))
        .cloned()
        .unwrap();
    assert_eq!(refused["status"], "rejected");
    assert_eq!(
        refused["error"],
        "not allowed: device `heater` is not in commands.allow_devices"
    );

    // The line-1 operator may command valve-1 but not valve-3: the broker refuses that PUBLISH
    // ("Not authorized"), so the edge never sees it; the allowed one runs on the device.
    let stderr = publish_as(
        broker.port,
        Some("ops-line1"),
        "v6iot/t/valve-3/cmd/a1",
        r#"{"method":"PUT","path":"/valve","payload":"on"}"#,
    );
    assert!(stderr.contains("Not authorized"), "{stderr}");
    let stderr = publish_as(
        broker.port,
        Some("ops-line1"),
        "v6iot/t/valve-1/cmd/a2",
        r#"{"method":"PUT","path":"/valve","payload":"on","content_format":0}"#,
    );
    assert!(stderr.is_empty(), "{stderr}");
    wait_for("result of a2", Duration::from_secs(10), || {
        result("a2").is_some()
    });
    super::oscore::assert_changed(&result("a2").unwrap());
    assert!(valve.lock().unwrap().iter().any(|(what, _)| *what == "put"));
    // a1 was published before a2 and never reached the edge.
    assert!(result("a1").is_none());

    // No identity, no connection.
    let stderr = publish_as(broker.port, None, "v6iot/t/valve-1/cmd/a3", "{}");
    assert!(
        stderr.to_lowercase().contains("not authori"),
        "refused at CONNECT: {stderr}"
    );

    // A command too large for the device's path: refused with its size, never sent.
    let big = "x".repeat(1100);
    publish_as(
        broker.port,
        Some("platform"),
        "v6iot/t/valve-1/cmd/a4",
        &format!(r#"{{"method":"PUT","path":"/valve","payload":"{big}"}}"#),
    );
    wait_for("result of a4", Duration::from_secs(10), || {
        result("a4").is_some()
    });
    let a4 = result("a4").unwrap();
    assert_eq!(a4["status"], "rejected");
    assert!(
        a4["error"].as_str().unwrap().starts_with("too large"),
        "{a4}"
    );
    let puts = valve
        .lock()
        .unwrap()
        .iter()
        .filter(|(what, _)| *what == "put")
        .count();
    assert_eq!(puts, 1, "only a2 reached the device");
    edge.await_log("not_allowed=", Duration::from_secs(5));
}
