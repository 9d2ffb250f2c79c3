//! `v6iot-sim device --credentials` against Python aiocoap, an independent OSCORE
//! implementation, acting as the edge: it reads, writes and observes resources with the
//! device's credentials (Sender ID empty, Recipient ID = the kid), including a Block2 body, and
//! its plain requests are refused with 4.01 except discovery.
//!
//! `scripts/test` installs aiocoap into the venv `target/pyenv`; `V6IOT_PYENV` names another
//! venv. Without it these tests fail, naming what to install.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{DEVICE_ID, OscoreSim, provision};
use v6iot_credentials::DeviceRecord;

/// The venv with aiocoap: `V6IOT_PYENV`, else the workspace's `target/pyenv`.
fn pyenv() -> PathBuf {
    let dir = std::env::var_os("V6IOT_PYENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv"),
        PathBuf::from,
    );
    // the venv's Python is a link to the interpreter it was made with: a venv made by another
    // user (or whose base Python is gone) has the client script but cannot run it
    assert!(
        dir.join("bin/aiocoap-client").is_file() && dir.join("bin/python").exists(),
        "aiocoap is not installed at {}: run scripts/test (it runs `python3 -m venv \
         target/pyenv && target/pyenv/bin/pip install -r scripts/aiocoap-requirements.txt`) or set \
         V6IOT_PYENV to a venv that has it",
        dir.display()
    );
    dir
}

/// aiocoap's view of the device's security context: a context directory (where aiocoap keeps
/// its own sequence numbers) and the credentials file mapping the device's URIs to it.
fn aiocoap_credentials(dir: &Path, record: &DeviceRecord, sim: &OscoreSim) -> PathBuf {
    let ctx = dir.join("aiocoap-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let settings = serde_json::json!({
        "sender-id_hex": "",
        "recipient-id_hex": hex::encode(&record.kid),
        "secret_hex": hex::encode(record.master_secret.as_bytes()),
        "salt_hex": record.master_salt.as_deref().map(hex::encode).unwrap_or_default(),
    });
    std::fs::write(ctx.join("settings.json"), settings.to_string()).unwrap();
    let creds = dir.join("client.json");
    let map = serde_json::json!({
        format!("coap://{}/*", sim.addr): { "oscore": { "basedir": format!("{}/", ctx.display()) } }
    });
    std::fs::write(&creds, map.to_string()).unwrap();
    creds
}

fn client(credentials: Option<&Path>, args: &[&str], uri: &str) -> Output {
    let mut cmd = Command::new(pyenv().join("bin/aiocoap-client"));
    cmd.arg("--no-pretty-print").arg("--no-color");
    if let Some(c) = credentials {
        cmd.arg("--credentials").arg(c);
    }
    cmd.args(args)
        .arg(uri)
        .output()
        .expect("run aiocoap-client")
}

fn ok_text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "aiocoap-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn aiocoap_reads_writes_and_block2_over_oscore_plain_gets_4_01() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, record) = provision(dir.path());
    let sim = OscoreSim::start(&csv, &dir.path().join("t.seq"), "1s");
    let creds = aiocoap_credentials(dir.path(), &record, &sim);
    let uri = |path: &str| format!("coap://{}{path}", sim.addr);

    let info = ok_text(&client(Some(&creds), &[], &uri("/device/info")));
    let info: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
    assert_eq!(info["id"], DEVICE_ID);

    // Over 2 KiB: aiocoap fetches it block by block, each block its own OSCORE exchange.
    let log = ok_text(&client(Some(&creds), &[], &uri("/device/log")));
    assert_eq!(
        log.trim_end(),
        v6iot_simulator::sensor::boot_log(DEVICE_ID).trim_end()
    );

    let put = client(
        Some(&creds),
        &["-m", "PUT", "--content-format", "0", "--payload", "on"],
        &uri("/actuators/valve"),
    );
    ok_text(&put);
    let valve = ok_text(&client(
        Some(&creds),
        &["--accept", "0"],
        &uri("/actuators/valve"),
    ));
    assert_eq!(valve.trim(), "on");

    let senml = ok_text(&client(
        Some(&creds),
        &["--accept", "application/senml+json"],
        &uri("/sensors/temperature"),
    ));
    let records: serde_json::Value = serde_json::from_str(senml.trim()).unwrap();
    assert!(records[0]["v"].as_f64().is_some(), "{senml}");

    // Without OSCORE: 4.01 everywhere but discovery.
    let plain = client(None, &[], &uri("/device/info"));
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("4.01 Unauthorized"), "{stderr}");
    let links = ok_text(&client(None, &[], &uri("/.well-known/core")));
    assert!(links.contains("</sensors/temperature>"), "{links}");
}

const OBSERVE_SCRIPT: &str = r#"
import asyncio, json, sys
from aiocoap import Context, Message, GET

async def main(uri, creds):
    ctx = await Context.create_client_context()
    with open(creds) as f:
        ctx.client_credentials.load_from_dict(json.load(f))
    req = ctx.request(Message(code=GET, uri=uri, observe=0))
    first = await req.response
    print("first", first.code, flush=True)
    n = 0
    async for r in req.observation:
        print("notification", r.code, r.opt.observe, flush=True)
        n += 1
        if n == 3:
            break
    req.observation.cancel()
    await ctx.shutdown()

asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
"#;

#[test]
fn aiocoap_observes_over_oscore() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, record) = provision(dir.path());
    let sim = OscoreSim::start(&csv, &dir.path().join("t.seq"), "100ms");
    let creds = aiocoap_credentials(dir.path(), &record, &sim);
    let script = dir.path().join("observe.py");
    std::fs::write(&script, OBSERVE_SCRIPT).unwrap();
    let out = Command::new(pyenv().join("bin/python"))
        .arg(&script)
        .arg(format!("coap://{}/sensors/temperature", sim.addr))
        .arg(&creds)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "observe failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("first 2.05"), "{stdout}");
    let notes: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("notification 2.05"))
        .copied()
        .collect();
    assert_eq!(notes.len(), 3, "{stdout}");
}
