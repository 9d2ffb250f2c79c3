//! Fuzzes the CoAP device core's input path: a run of datagrams from two peers, with time
//! moving between them, into a device with observable, block-wise and deferred resources.
//! Every answer the core sends must itself parse as CoAP.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use v6iot_sdk::coap::{
    App, Changed, Code, Config, Device, Reply, Resource, ResourceTree, Response, Ticket, wire,
};

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

fuzz_target!(|data: &[u8]| {
    let config = Config {
        block_szx: 2,
        max_body: 2048,
        ..Config::default()
    };
    let mut device = Device::new(config, 1, tree(), Fz::default());
    let peers: [SocketAddr; 2] = [
        "[2001:db8::1]:5683".parse().unwrap(),
        "[2001:db8::2]:40000".parse().unwrap(),
    ];
    let start = Instant::now();
    let mut now = start;
    // Frame: [len][peer/time byte][len bytes of datagram] ...
    let mut rest = data;
    while let [len, ctl, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(ctl >> 1) * 500);
        device.handle_timeout(now);
        device.handle_datagram(now, peers[usize::from(ctl & 1)], datagram);
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
