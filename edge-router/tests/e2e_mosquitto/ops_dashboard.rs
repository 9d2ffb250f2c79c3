//! The dashboard in a real browser: headless Debian chromium, driven over the DevTools
//! protocol, opens the page with the token, sees OSCORE devices appear as they report (one
//! whose id and value hold HTML, shown as text), sees the security event of a plain-CoAP
//! attempt, logs no console error, and a screenshot is saved; a wrong token is refused. The
//! edge's log holds none of the secrets the test used.

use super::super::cdp::Browser;
use super::super::ops::{Scraped, scrape};
use super::*;

const TOKEN: &str = "dashboard-token-0123456789";

/// Where the screenshot goes (a test artifact): `target/test-artifacts/`.
fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("test-artifacts")
        .join(name)
}

#[test]
fn the_dashboard_shows_devices_and_security_events_in_chromium() {
    let dir = TempDir::new("dashboard");
    let broker = Mosquitto::start(dir.path());
    let creds = provision(dir.path());
    let odd = "<b>pump<i>";
    add_device(&creds, "valve-1", 1, ANY_LOOPBACK4);
    add_device(&creds, odd, 2, ANY_LOOPBACK4);
    let ops_port = super::super::free_tcp_port();
    let edge = start_edge_with(
        dir.path(),
        broker.port,
        &creds,
        &format!("[ops]\nlisten = \"[::1]:{ops_port}\"\ndashboard_token = \"{TOKEN}\"\n"),
    );
    let mut valve = Device::new("valve-1", 1, "127.0.0.1:0", edge.coap);
    let mut pump = Device::new(odd, 2, "127.0.0.1:0", edge.coap);
    for d in [&mut valve, &mut pump] {
        d.register();
    }
    for seq in 1..=5 {
        let t = valve.telemetry(seq);
        assert_eq!(valve.call(&t), ResponseType::Changed);
    }
    let body = r#"[{"bn":"urn:dev:e2e:pump:","n":"label","vs":"<script>alert(1)</script><img src=x onerror=alert(2)>"}]"#;
    let t = pump.request(RequestType::Post, "t", &[], body.as_bytes());
    assert_eq!(pump.call(&t), ResponseType::Changed);

    let rt = runtime();
    rt.block_on(async {
        let mut browser = Browser::start().await;
        browser
            .navigate(&format!("http://[::1]:{ops_port}/#token={TOKEN}"))
            .await;
        browser
            .wait_for(
                "both devices in the table",
                "document.querySelectorAll('#viewport .row').length === 2",
                Duration::from_secs(20),
            )
            .await;
        let rows = browser
            .eval("[...document.querySelectorAll('#viewport .row')].map(r => [...r.children].map(c => c.textContent))")
            .await;
        let rows = rows.as_array().unwrap();
        let pump_row = rows.iter().find(|r| r[0] == odd).expect("the odd id shown as text");
        assert_eq!(
            pump_row[5],
            "label=<script>alert(1)</script><img src=x onerror=alert(2)>"
        );
        let valve_row = rows.iter().find(|r| r[0] == "valve-1").unwrap();
        assert_eq!(valve_row[3], "registered");
        assert_eq!(valve_row[5], "seq=5");
        // nothing the devices sent became an element
        assert_eq!(
            browser
                .eval("document.querySelectorAll('#viewport b, #viewport i, #viewport img, #viewport script').length")
                .await,
            serde_json::json!(0)
        );
        // a plain CoAP request (no OSCORE) is refused and shows as a security event
        let mut plain = Packet::new();
        plain.header.set_type(MessageType::Confirmable);
        plain.header.code = MessageClass::Request(RequestType::Post);
        plain.header.message_id = 0x4242;
        plain.add_option(CoapOption::UriPath, b"t".to_vec());
        assert_eq!(
            send_raw("127.0.0.1:0", edge.coap, &plain.to_bytes().unwrap()),
            ResponseType::Unauthorized
        );
        browser
            .wait_for(
                "the plain attempt among the security events",
                "[...document.querySelectorAll('#events li')].some(li => li.textContent.includes('plain'))",
                Duration::from_secs(10),
            )
            .await;
        // sorted and filtered by the edge (the page asks for a window, the rows come back)
        let order = "[...document.querySelectorAll('#viewport .row')].sort((a, b) => \
                     parseFloat(a.style.top) - parseFloat(b.style.top)).map(r => r.dataset.device).join(',')";
        assert_eq!(browser.eval(order).await, serde_json::json!(format!("{odd},valve-1")));
        browser
            .eval("document.querySelector('#thead span[data-sort=\"id\"]').click()")
            .await;
        browser
            .wait_for(
                "the table sorted by id backwards",
                &format!("{order} === 'valve-1,{odd}'"),
                Duration::from_secs(10),
            )
            .await;
        browser
            .eval("(() => { const f = document.getElementById('filter'); f.value = 'VALVE'; \
                   f.dispatchEvent(new Event('input')); })()")
            .await;
        browser
            .wait_for(
                "only the valve after the filter",
                &format!("{order} === 'valve-1'"),
                Duration::from_secs(10),
            )
            .await;
        browser
            .eval("(() => { const f = document.getElementById('filter'); f.value = ''; \
                   f.dispatchEvent(new Event('input')); })()")
            .await;
        browser
            .wait_for(
                "both again",
                "document.querySelectorAll('#viewport .row').length === 2",
                Duration::from_secs(10),
            )
            .await;
        // select the valve: its sparkline is drawn from the five values
        browser
            .eval("document.querySelector('#viewport .row[data-device=\"valve-1\"]').click()")
            .await;
        browser
            .wait_for(
                "the sparkline",
                "document.getElementById('selected').textContent === 'valve-1'",
                Duration::from_secs(5),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(browser.eval("document.getElementById('rate') !== null").await, serde_json::json!(true));
        browser.screenshot(&artifact("dashboard.png")).await;
        assert!(browser.problems.is_empty(), "the page logged: {:?}", browser.problems);

        // a wrong token: refused, nothing shown
        browser
            .navigate(&format!("http://[::1]:{ops_port}/#token=not-the-token-at-all"))
            .await;
        browser
            .wait_for(
                "the refusal",
                "document.getElementById('status').textContent.includes('refused')",
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(
            browser.eval("document.querySelectorAll('#viewport .row').length").await,
            serde_json::json!(0)
        );
    });
    let m: Scraped = scrape(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], ops_port)));
    assert_eq!(
        m.value("v6iot_dashboard_feed_refusals", &[("cause", "token")]),
        1.0
    );
    assert_eq!(m.value("v6iot_auth_refusals", &[("cause", "plain")]), 1.0);
    assert_eq!(m.value("v6iot_auth_verified", &[]), 8.0);
    // none of the secrets this test used is in the edge's log
    let log = edge.log.lock().unwrap().join("\n");
    assert!(log.contains("edge router running"), "the log was kept");
    for secret in [
        hex::encode(secret_of(1)),
        hex::encode(secret_of(2)),
        creds.key_hex.clone(),
        TOKEN.to_owned(),
    ] {
        assert!(!log.contains(&secret), "a secret in the edge's log");
    }
}
