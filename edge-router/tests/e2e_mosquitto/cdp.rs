//! Headless Debian `chromium` driven over the Chrome DevTools Protocol (its own WebSocket
//! protocol; the client is tokio-tungstenite, already in the tree): open a page, evaluate
//! expressions, collect console errors, exceptions and dialogs, take a screenshot.
//!
//! scripts/test installs `chromium`; without it the dashboard test fails naming the step.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A running headless browser with one attached page.
pub(crate) struct Browser {
    child: Child,
    ws: WebSocketStream<TcpStream>,
    session: String,
    next_id: u64,
    /// Console errors, uncaught exceptions, failed loads, dialogs: one line each.
    pub(crate) problems: Vec<String>,
    _profile: super::TempDir,
}

impl Browser {
    /// Starts chromium (headless, a fresh profile, no background traffic) with one blank page.
    pub(crate) async fn start() -> Browser {
        let profile = super::TempDir::new("chromium");
        // The flags every headless run here shares, then the DevTools protocol's own.
        let child = v6iot_testkit::chromium_headless(profile.path())
            .args([
                "--disable-default-apps",
                "--disable-extensions",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&port_file)
                && t.lines().count() >= 2
            {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut lines = text.lines();
        let port: u16 = lines.next().unwrap().trim().parse().unwrap();
        let path = lines.next().unwrap().trim().to_owned();
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
            _profile: profile,
        };
        let target = b
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({})).await;
        }
        b
    }

    /// Sends a command (to the page once attached) and returns its result; events that arrive
    /// meanwhile are examined for problems.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .unwrap()
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or_default() {
            "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
                self.problems.push(format!("console: {}", p["args"]));
            }
            "Runtime.exceptionThrown" => {
                self.problems
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                self.problems.push(format!("log: {}", p["entry"]));
            }
            "Page.javascriptDialogOpening" => {
                self.problems.push(format!("dialog: {}", p["message"]));
            }
            _ => {}
        }
    }

    /// Opens `url` in the page.
    pub(crate) async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expression` in the page; its JSON-able value.
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true` (bounded).
    pub(crate) async fn wait_for(&mut self, what: &str, expression: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expression).await == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "page: timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the page, saved to `path`.
    pub(crate) async fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
