//! The OSCORE mode of `v6iot-flood`: credentials, sequence numbers reserved on disk, requests
//! protected in advance (in sequence-number order per socket), the registration.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use v6iot_credentials::{DeviceRecord, csv};
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{self, ContextConfig, SecurityContext};

use crate::Cli;

/// One socket's device, ready to go.
pub(crate) struct Prepared {
    /// The device id (its RD endpoint name).
    pub(crate) id: String,
    /// The protected registration request.
    pub(crate) registration: Vec<u8>,
    /// The protected telemetry requests, in sequence-number order.
    pub(crate) requests: Vec<Vec<u8>>,
}

fn read_devices(path: &Path, wanted: usize) -> anyhow::Result<Vec<DeviceRecord>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the credentials {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !csv::is_skipped(l));
    let header = lines.next().context("the credentials file is empty")?;
    csv::check_header(header).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let devices = lines
        .take(wanted)
        .enumerate()
        .map(|(i, l)| {
            csv::parse_line(l)
                .map_err(|e| anyhow::anyhow!("{} device line {}: {e}", path.display(), i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        devices.len() == wanted,
        "{} has {} devices; --sockets {wanted} needs one per socket",
        path.display(),
        devices.len()
    );
    Ok(devices)
}

/// `kid_hex next_free_sequence_number` per line.
fn read_seq(path: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (kid, seq) = l
                .split_once(' ')
                .with_context(|| format!("{}: bad line `{l}`", path.display()))?;
            Ok((kid.to_owned(), seq.trim().parse()?))
        })
        .collect()
}

fn write_seq(path: &Path, seq: &HashMap<String, u64>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut lines: Vec<String> = seq.iter().map(|(k, v)| format!("{k} {v}")).collect();
    lines.sort();
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(lines.join("\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reserves the sequence numbers on disk, then protects every request of the run.
pub(crate) fn prepare(cli: &Cli, path: &Path) -> anyhow::Result<Vec<Prepared>> {
    let devices = read_devices(path, cli.sockets)?;
    let seq_path = cli.seq_file.clone().unwrap_or_else(|| {
        let mut p = path.as_os_str().to_owned();
        p.push(".flood-seq");
        PathBuf::from(p)
    });
    let per_socket = cli.presign.unwrap_or_else(|| {
        let total = 150_000.0 * (cli.warmup + cli.secs);
        (total / cli.sockets as f64).ceil() as usize
    });
    let per_socket = per_socket
        .min(usize::try_from(cli.max_requests / cli.sockets as u64 + 1).unwrap_or(usize::MAX));
    let mut seq = read_seq(&seq_path)?;
    let mut starts = Vec::with_capacity(devices.len());
    for d in &devices {
        let start = seq.get(&hex::encode(&d.kid)).copied().unwrap_or(0);
        // the registration and the telemetry, plus the context's own persist step
        seq.insert(hex::encode(&d.kid), start + per_socket as u64 + 1 + 1024);
        starts.push(start);
    }
    write_seq(&seq_path, &seq).with_context(|| format!("write {}", seq_path.display()))?;
    let body = crate::request_template(cli)?;
    let template = wire::parse(&body).context("re-read the request template")?;
    let began = Instant::now();
    let prepared = devices
        .iter()
        .zip(starts)
        .map(|(d, start)| protect_all(cli, d, start, per_socket, &template))
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "oscore: {} devices, {per_socket} requests each protected in {:.1} s; sequence numbers reserved in {}",
        prepared.len(),
        began.elapsed().as_secs_f64(),
        seq_path.display()
    );
    Ok(prepared)
}

fn protect_all(
    cli: &Cli,
    d: &DeviceRecord,
    start: u64,
    count: usize,
    template: &Packet,
) -> anyhow::Result<Prepared> {
    let input = v6iot_simulator::credentials::device_input(d);
    let config = ContextConfig {
        persist_step: 1024,
        ..ContextConfig::default()
    };
    let mut ctx = SecurityContext::restore(&input, config, start)
        .map_err(|e| anyhow::anyhow!("device {}: {e}", d.id))?;
    let mut protect = |packet: &Packet| -> anyhow::Result<Vec<u8>> {
        loop {
            match oscore::protect_request(&mut ctx, packet) {
                Ok((p, _)) => return wire::encode(&p).context("encode"),
                // reserved on disk already (prepare wrote start + count + margin)
                Err(oscore::OscoreError::PersistPending) => {
                    if let Some(mark) = ctx.mark_to_persist() {
                        ctx.persisted(mark);
                    }
                }
                Err(e) => anyhow::bail!("device {}: {e}", d.id),
            }
        }
    };
    let mut reg = Packet::new();
    reg.header.set_type(MessageType::Confirmable);
    reg.header.code = MessageClass::Request(RequestType::Post);
    reg.header.message_id = 1;
    reg.set_token(vec![0xfe, 0xed, 0, 1]);
    reg.add_option(CoapOption::UriPath, b"rd".to_vec());
    for q in [
        format!("ep={}", d.id),
        "lt=3600".to_owned(),
        "b=U".to_owned(),
    ] {
        reg.add_option(CoapOption::UriQuery, q.into_bytes());
    }
    reg.add_option(CoapOption::ContentFormat, wire::write_uint(40));
    reg.payload = format!("<{}>;ct=112", cli.path).into_bytes();
    let registration = protect(&reg)?;
    let requests = (0..count)
        .map(|_| protect(template))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Prepared {
        id: d.id.clone(),
        registration,
        requests,
    })
}

/// Registers the socket's device: up to five tries, two seconds each; a 2.xx (the OSCORE
/// outer 2.04) is success.
pub(crate) fn register(socket: &UdpSocket, p: &Prepared) -> anyhow::Result<()> {
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        socket
            .send(&p.registration)
            .context("send the registration")?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok(len) = socket.recv(&mut buf) else {
                continue;
            };
            let Some(answer) = buf.get(..len).and_then(|b| wire::parse(b).ok()) else {
                continue;
            };
            if answer.header.message_id != 1 {
                continue;
            }
            let code = u8::from(answer.header.code);
            anyhow::ensure!(
                code >> 5 == 2,
                "device {}: registration refused with {}.{:02}",
                p.id,
                code >> 5,
                code & 31
            );
            return Ok(());
        }
    }
    anyhow::bail!("device {}: no answer to the registration", p.id)
}
