//! Fuzzes the edge router's ingress: runs of datagrams from a few peers (registrations,
//! telemetry, responses to commands, garbage), with time moving and outbox results coming back
//! in any order. Every answer the ingress sends must itself parse as CoAP.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use v6iot_cloud_bridge::topics::Topics;
use v6iot_edge_router::ingress::{
    AppendResult, DownlinkCommand, Ingress, IngressConfig, JournalWritten,
};
use v6iot_sdk::coap::wire;

/// A valid registration, so later datagrams from peer 0 reach the telemetry and command paths.
const REGISTER: &[u8] = b"\x42\x02\x00\x01\x01\x02\xb2rd\x41\x28\x45ep=d0";

fuzz_target!(|data: &[u8]| {
    let Ok(topics) = Topics::new("v6iot", "f") else {
        return;
    };
    let mut config = IngressConfig::new(topics);
    // Message IDs and tokens as in every run (the default draws them from the OS).
    config.random_seed = Some([0; 18]);
    let mut ingress = Ingress::new(config, 1);
    let peers: [SocketAddr; 3] = [
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5683)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], 5683)),
        SocketAddr::from(([127, 0, 0, 1], 40000)),
    ];
    let start = Instant::now();
    let mut now = start;
    let mut unix_ms = 1_700_000_000_000u64;
    ingress.handle_datagram(now, unix_ms, peers[0], REGISTER);
    let mut pending = Vec::new();
    let mut rest = data;
    // Frame: [len][control][len bytes] …
    while let [len, ctl, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        let step = Duration::from_millis(u64::from(ctl >> 3) * 250);
        now += step;
        unix_ms += step.as_millis() as u64;
        ingress.handle_timeout(now, unix_ms);
        let peer = peers[usize::from(ctl & 3) % 3];
        ingress.handle_datagram(now, unix_ms, peer, datagram);
        if ctl & 4 != 0 {
            let command = DownlinkCommand {
                device: "d0".into(),
                req: format!("r{}", ctl),
                method: "PUT".into(),
                path: "/valve?x=1".into(),
                payload: datagram.to_vec(),
                content_format: Some(0),
                expires_unix_ms: unix_ms + 5_000,
                confirmable: ctl & 1 == 0,
                observe: false,
                accept: None,
            };
            ingress.handle_command(now, unix_ms, command);
        }
        while let Some(a) = ingress.poll_append() {
            if let Some(t) = a.ticket {
                pending.push(t);
            }
        }
        // Outbox results arrive in any order, some refusals among them.
        if let Some(t) = pending.pop() {
            let result = match ctl % 5 {
                0 => AppendResult::Full {
                    retry_after: Duration::from_secs(1),
                },
                1 => AppendResult::Failed,
                _ => AppendResult::Stored,
            };
            ingress.handle_appended(t, result);
        }
        while let Some((_, bytes)) = ingress.poll_transmit() {
            assert!(
                wire::parse(&bytes).is_ok(),
                "the ingress sent a malformed message"
            );
        }
        while ingress.poll_event().is_some() {}
        // Journal batches are written, or fail, in their own time.
        if let Some(b) = ingress.poll_journal() {
            let outcome = if ctl & 0x40 == 0 {
                JournalWritten::Durable {
                    rewritten: b.rewrite.is_some(),
                }
            } else {
                JournalWritten::Failed
            };
            ingress.handle_journal_written(now, unix_ms, b.id, outcome);
        }
    }
});
