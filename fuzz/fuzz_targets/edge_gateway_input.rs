//! Fuzzes the edge router's authentication gateway: runs of datagrams from a few peers, each
//! arriving at one of several of the edge's addresses — raw bytes, and requests or responses
//! two real device contexts protect (at each other's addresses too) and the input then tampers
//! with — with time moving, commands going out, persistence batches and outbox results coming
//! back in any order, Echo challenges answered (RFC 9175: a device repeats its request with the
//! value the gateway asked for), and registry reloads (a device revoked and reinstated); empty
//! ACKs and Resets naming the edge's own requests, responses to its tokens (stale or not),
//! sources spoofed from many networks against small limits (source table overflow, kid
//! quarantine), and the audit lane's room going up and down. Every datagram the gateway sends must parse as CoAP; with OSCORE required, no
//! plain request from a peer may ever be answered with anything but an error; the tables stay in
//! their bounds.

#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use libfuzzer_sys::fuzz_target;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::Peer;
use v6iot_edge_router::gateway::{
    DeviceKeys, Gateway, GatewayConfig, LimitsConfig, Rate, StoredState,
};
use v6iot_edge_router::ingress::{
    AppendResult, DownlinkCommand, Ingress, IngressConfig, JournalWritten,
};
use v6iot_edge_router::registry_db::{DeviceState, MasterSecret};
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, RequestInfo, SecurityContext, protect_request, unprotect_response,
};

/// Device i's secret: `[3 + i; 16]`; its kid: `[1 + i]`.
fn secret(i: u8) -> Vec<u8> {
    vec![3 + i; 16]
}

/// d0 in `state`, d1 always active.
fn devices(state: DeviceState) -> Vec<DeviceKeys> {
    (0u8..2)
        .map(|i| DeviceKeys {
            id: format!("d{i}"),
            kid: vec![1 + i],
            master_secret: MasterSecret::new(secret(i)),
            master_salt: Vec::new(),
            prefixes: Vec::new(),
            state: if i == 0 { state } else { DeviceState::Active },
            stored: StoredState::default(),
        })
        .collect()
}

fn device(i: u8) -> Option<SecurityContext> {
    let input = ContextInput {
        master_secret: secret(i),
        master_salt: Vec::new(),
        id_context: None,
        sender_id: vec![1 + i],
        recipient_id: Vec::new(),
    };
    let mut ctx = SecurityContext::new(&input, ContextConfig::default()).ok()?;
    let mark = ctx.mark_to_persist()?;
    ctx.persisted(mark);
    Some(ctx)
}

/// A device: its context, the Echo value it was last asked for, and the bindings of its
/// latest requests (to read the gateway's answers).
struct Dev {
    ctx: SecurityContext,
    echo: Option<Vec<u8>>,
    sent: Vec<(Vec<u8>, RequestInfo)>,
}

impl Dev {
    /// Reads an answer to one of its requests; remembers an Echo challenge.
    fn read(&mut self, bytes: &[u8]) {
        let Ok(p) = wire::parse(bytes) else { return };
        let Some(i) = self.sent.iter().position(|(t, _)| t == p.get_token()) else {
            return;
        };
        let (_, mut info) = self.sent.swap_remove(i);
        if let Ok(inner) = unprotect_response(&mut self.ctx, &p, &mut info)
            && inner.header.code == MessageClass::Response(ResponseType::Unauthorized)
        {
            self.echo = inner
                .get_first_option(CoapOption::Unknown(wire::ECHO))
                .cloned();
        }
    }
}

/// A request of a device: registration, telemetry or anything, with `body` as payload.
fn request(kind: u8, mid: u16, body: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(if kind & 8 == 0 {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    });
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    p.header.code = MessageClass::Request(RequestType::Post);
    match kind % 3 {
        0 => {
            p.add_option(CoapOption::UriPath, b"rd".to_vec());
            p.add_option(CoapOption::UriQuery, b"ep=d0".to_vec());
        }
        1 => {
            p.add_option(CoapOption::UriPath, b"t".to_vec());
            p.add_option(CoapOption::ContentFormat, vec![110]);
        }
        _ => p.add_option(CoapOption::UriPath, body.iter().take(4).copied().collect()),
    }
    p.payload = body.to_vec();
    p
}

fuzz_target!(|data: &[u8]| {
    let Ok(topics) = Topics::new("v6iot", "f") else {
        return;
    };
    let (Some(d0), Some(d1)) = (device(0), device(1)) else {
        return;
    };
    let mut devs = [d0, d1].map(|ctx| Dev {
        ctx,
        echo: None,
        sent: Vec::new(),
    });
    let require_oscore = data.first().is_none_or(|b| b & 1 == 0);
    // Small limits, so that a short input reaches the overflow bucket and the kid quarantine.
    const MAX_TRACKED: usize = 2;
    let limits = LimitsConfig {
        per_source: Rate {
            per_second: 5.0,
            burst: 6.0,
        },
        failures_to_quarantine: 3,
        max_tracked: MAX_TRACKED,
        ..LimitsConfig::default()
    };
    let config = GatewayConfig {
        require_oscore,
        persist_step: 8,
        limits,
        ..GatewayConfig::default()
    };
    let mut ingress_config = IngressConfig::new(topics);
    ingress_config.random_seed = Some([0; 18]);
    let mut gateway = Gateway::new(Ingress::new(ingress_config, 1), config);
    let mut unix_ms = 1_700_000_000_000u64;
    gateway.handle_devices(unix_ms, devices(DeviceState::Active));
    let peers: [SocketAddr; 3] = [
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5683)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], 5683)),
        SocketAddr::from(([127, 0, 0, 1], 40000)),
    ];
    // The edge's addresses a datagram may arrive at (`None`: a socket bound to one address).
    let locals: [Option<IpAddr>; 3] = [
        None,
        Some(IpAddr::from([0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1])),
        Some(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1])),
    ];
    let mut now = Instant::now();
    let mut pending = Vec::new();
    let mut batches = Vec::new();
    let mut mid = 0u16;
    // The edge's own requests: (peer, message ID, token).
    let mut sent: Vec<(Peer, u16, Vec<u8>)> = Vec::new();
    let mut rest = data.get(1..).unwrap_or_default();
    // Frame: [len][control][flip][len bytes] …
    while let [len, ctl, flip, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let step = Duration::from_millis(u64::from(ctl >> 5) * 300);
        now += step;
        unix_ms += step.as_millis() as u64;
        gateway.handle_timeout(now, unix_ms);
        let remote = match ctl & 3 {
            // A source spoofed from a network of its own.
            3 => SocketAddr::from(([0x2001, 0xdb8, u16::from(*flip), 9, 0, 0, 0, 1], 5683)),
            i => peers[usize::from(i)],
        };
        let peer = Peer {
            remote,
            local: locals[usize::from(flip.rotate_left(3)) % 3],
        };
        mid = mid.wrapping_add(1);
        let datagram = if ctl & 4 != 0 {
            // A genuine protected request of either device (with the Echo value it was asked
            // for, if any), maybe with one bit flipped.
            let dev = &mut devs[usize::from(flip & 0x20 != 0)];
            let mut plain = request(*flip, mid, body);
            if let Some(echo) = dev.echo.take() {
                plain.add_option(CoapOption::Unknown(wire::ECHO), echo);
            }
            let Ok((p, info)) = protect_request(&mut dev.ctx, &plain) else {
                return;
            };
            if dev.sent.len() >= 8 {
                dev.sent.remove(0);
            }
            dev.sent.push((p.get_token().to_vec(), info));
            let Some(mut bytes) = wire::encode(&p) else {
                return;
            };
            if flip & 0x80 != 0 && !bytes.is_empty() {
                let i = usize::from(*flip) % bytes.len();
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << (flip & 7);
                }
            }
            bytes
        } else {
            body.to_vec()
        };
        gateway.handle_datagram(now, unix_ms, peer, &datagram);
        match ctl & 0x18 {
            0x08 => gateway.handle_command(
                now,
                unix_ms,
                DownlinkCommand {
                    device: format!("d{}", flip & 1),
                    req: format!("r{ctl}"),
                    method: "PUT".into(),
                    path: "/valve".into(),
                    payload: body.to_vec(),
                    content_format: Some(0),
                    expires_unix_ms: unix_ms + 5_000,
                    confirmable: ctl & 1 == 0,
                    observe: false,
                    accept: None,
                },
            ),
            0x10 if flip & 0x40 != 0 => {
                let state = if flip & 0x20 != 0 {
                    DeviceState::Revoked
                } else {
                    DeviceState::Active
                };
                gateway.handle_devices(unix_ms, devices(state));
            }
            0x18 if !sent.is_empty() => {
                // An empty ACK or Reset naming a request of the edge, or a response (plain,
                // with the body as payload) to one of its tokens, from its peer or another.
                let (to, their_mid, token) = sent[usize::from(*flip) % sent.len()].clone();
                let from = if flip & 1 == 0 { to } else { peer };
                let kind = match flip >> 6 {
                    0 => MessageType::Acknowledgement,
                    1 => MessageType::Reset,
                    2 => MessageType::Confirmable,
                    _ => MessageType::NonConfirmable,
                };
                let bytes = if flip & 0x80 == 0 {
                    wire::empty_message(kind, their_mid)
                } else {
                    let mut p = Packet::new();
                    p.header.set_type(kind);
                    p.header.message_id = their_mid;
                    p.header.code = MessageClass::Response(coap_lite::ResponseType::Changed);
                    p.set_token(token);
                    p.payload = body.to_vec();
                    wire::encode(&p).unwrap_or_default()
                };
                gateway.handle_datagram(now, unix_ms, from, &bytes);
            }
            _ => {}
        }
        if flip & 0x0f == 0x0f {
            gateway.note_audit_dropped(now, len as u64);
        }
        if flip & 0x0f == 0x0e {
            // The audit lane's room, around the gateway's reserve (4,096 rows): registrations
            // and new bindings held back with 5.03, or let through.
            gateway.handle_audit_room(usize::from(*ctl) * 20);
        }
        while let Some(a) = gateway.ingress_mut().poll_append() {
            if let Some(t) = a.ticket {
                pending.push(t);
            }
        }
        if let Some(t) = pending.pop() {
            let result = match ctl % 3 {
                0 => AppendResult::Failed,
                _ => AppendResult::Stored,
            };
            gateway.handle_appended(now, t, result);
        }
        while let Some(b) = gateway.poll_persist() {
            batches.push(b.id);
        }
        // Batches complete (or fail) in their own time.
        if flip & 0x10 != 0
            && let Some(id) = batches.pop()
        {
            gateway.handle_persisted(now, id, flip & 0x08 == 0);
        }
        while let Some((to, bytes)) = gateway.poll_transmit() {
            let Ok(p) = wire::parse(&bytes) else {
                panic!("the gateway sent a malformed message");
            };
            for dev in &mut devs {
                dev.read(&bytes);
            }
            if matches!(p.header.code, MessageClass::Request(_)) && sent.len() < 64 {
                sent.push((to, p.header.message_id, p.get_token().to_vec()));
            }
        }
        let tables = gateway.tables();
        assert!(tables.sources <= MAX_TRACKED as u64, "{tables:?}");
        assert!(tables.devices <= MAX_TRACKED as u64, "{tables:?}");
        // Failures are counted only for kids with a context: the two devices' at most.
        assert!(tables.kids <= 2, "{tables:?}");
        assert!(tables.failures.reply_windows <= 4096, "{tables:?}");
        while gateway.poll_audit().is_some() {}
        while gateway.poll_security_event().is_some() {}
        while gateway.poll_event().is_some() {}
        while gateway.ingress_mut().poll_event().is_some() {}
        // Journal batches are written, or fail, in their own time.
        if let Some(b) = gateway.ingress_mut().poll_journal() {
            let outcome = if flip & 0x04 == 0 {
                JournalWritten::Durable {
                    rewritten: b.rewrite.is_some() && flip & 0x02 == 0,
                }
            } else {
                JournalWritten::Failed
            };
            gateway.handle_journal_written(now, unix_ms, b.id, outcome);
        }
    }
});
