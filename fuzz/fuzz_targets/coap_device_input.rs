//! Fuzzes the CoAP device core's input path: a run of datagrams from two peers, with time
//! moving between them, into a device with observable, block-wise and deferred resources.
//! Every answer the core sends must itself parse as CoAP.
//!
//! When the first byte is odd the device has OSCORE credentials (with a persist step of 4, so
//! messages wait for marks), and frames with control bit 0x80 that parse as requests are
//! protected with the edge's context first, so the fuzzer reaches the resources through
//! verified OSCORE; control bit 0x20 confirms the mark the device asks for.

#![no_main]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::coap::{
    App, Changed, Code, Config, Device, Reply, Resource, ResourceTree, Response, Ticket, wire,
};
use v6iot_sdk::oscore::{self, ContextConfig, ContextInput, SecurityContext};
use v6iot_sdk::time::Instant;

#[derive(Default)]
struct Fz {
    value: Vec<u8>,
    tickets: Vec<Ticket>,
}

impl App for Fz {}

fn tree() -> Arc<ResourceTree<Fz>> {
    static TREE: OnceLock<Arc<ResourceTree<Fz>>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = ResourceTree::new();
        let _ = t.add(
            Resource::new("v")
                .content_formats(&[0, 50])
                .observable()
                .get(|s: &mut Fz, _| Response::content(0, s.value.clone()).into())
                .put(|s: &mut Fz, r| {
                    s.value = r.payload.to_vec();
                    Response::code(Code::Changed).into()
                }),
        );
        let _ = t.add(Resource::new("big").get(|_, _| Response::content(42, vec![7; 5000]).into()));
        let _ = t.add(Resource::new("slow").post(|s: &mut Fz, r| {
            s.tickets.push(r.ticket);
            Reply::Separate
        }));
        Arc::new(t)
    })
    .clone()
}

/// One side's context of the device's credentials (kid 0x2a; the edge's Sender ID is empty).
fn context(device_side: bool) -> SecurityContext {
    let (sender_id, recipient_id) = if device_side {
        (vec![0x2a], Vec::new())
    } else {
        (Vec::new(), vec![0x2a])
    };
    let input = ContextInput {
        master_secret: vec![0x11; 16],
        master_salt: Vec::new(),
        id_context: None,
        sender_id,
        recipient_id,
    };
    let config = ContextConfig {
        persist_step: 4,
        ..ContextConfig::default()
    };
    SecurityContext::new(&input, config).unwrap()
}

/// `datagram` protected with the edge's context when it parses as a request.
fn protect<'a>(edge: &mut SecurityContext, datagram: &'a [u8]) -> Cow<'a, [u8]> {
    if let Some(m) = edge.mark_to_persist() {
        edge.persisted(m);
    }
    match wire::parse(datagram) {
        Ok(p) if wire::is_request_code(u8::from(p.header.code)) => {
            oscore::protect_request(edge, &p)
                .ok()
                .and_then(|(outer, _)| wire::encode(&outer))
                .map_or(Cow::Borrowed(datagram), Cow::Owned)
        }
        _ => Cow::Borrowed(datagram),
    }
}

fuzz_target!(|data: &[u8]| {
    let config = Config {
        block_szx: 2,
        max_body: 2048,
        ..Config::default()
    };
    let secure = data.first().is_some_and(|b| b & 1 == 1);
    let mut device = Device::new(config, 1, tree(), Fz::default());
    let mut edge = None;
    if secure {
        device = device.with_credentials(context(true));
        edge = Some(context(false));
    }
    let peers: [SocketAddr; 2] = [
        "[2001:db8::1]:5683".parse().unwrap(),
        "[2001:db8::2]:40000".parse().unwrap(),
    ];
    // Virtual time: the same input takes the same path every run.
    let start = Instant::ZERO;
    let mut now = start;
    // Frame: [len][peer/time byte][len bytes of datagram] ...
    let mut rest = data;
    while let [len, ctl, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(ctl >> 1) * 500);
        device.handle_timeout(now);
        let datagram = match edge.as_mut() {
            Some(e) if ctl & 0x80 != 0 => protect(e, datagram),
            _ => Cow::Borrowed(datagram),
        };
        device.handle_datagram(now, peers[usize::from(ctl & 1)], &datagram);
        if ctl & 0x20 != 0
            && let Some(state) = device.state_to_persist()
        {
            device.state_persisted(now, state);
        }
        if ctl & 0x40 != 0
            && let Some(id) = device.tree().find("v")
        {
            device.notify(now, Changed::NONE.with(id));
        }
        if let Some(t) = device.app_mut().tickets.pop() {
            let _ = device.respond_separately(now, t, Response::code(Code::Changed));
        }
        while let Some(t) = device.poll_transmit() {
            assert!(
                wire::parse(&t.contents).is_ok(),
                "the core sent a malformed message"
            );
        }
        while device.poll_event().is_some() {}
    }
    assert!(now < start + Duration::from_secs(1 << 20));
});
