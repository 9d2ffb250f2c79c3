//! A stand-in edge and a virtual network (sans-IO), for testing the simulator itself: its
//! shard cores, link model, accounting and report on virtual time, deterministically, without
//! sockets, an edge router or a broker.
//!
//! [`StandInEdge`] answers what fleet devices send — `POST /rd` (2.01 with a location, or a
//! device's first 5.03 if its [`Script`] says so), `POST /rd/{loc}` (2.04), `POST /t` (2.04,
//! or what its [`Script`] says) — plain or
//! OSCORE-protected with the edge's side of each device's context, and "publishes" every
//! report it takes as the platform would see it (resolved SenML-JSON with `n`, `v`, `t`).
//! [`VirtualNet`] wires shard cores and a stand-in edge together with a fixed one-way delay and
//! hands the publications to a [`Deliveries`] collector, all on one virtual clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_credentials::DeviceRecord;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::{self, ContextConfig, OscoreOption, SecurityContext};
use v6iot_sdk::senml;
use v6iot_sdk::time::Instant;

use crate::collector::Deliveries;
use crate::fleet::WallClock;
use crate::shard::{MemberStore, ShardCore};

/// Max-Age of the stand-in's 5.03 to a registration (`Script::registration_busy_every`),
/// seconds.
pub const REGISTRATION_MAX_AGE: u8 = 3;

/// What the stand-in edge answers to reports and registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Script {
    /// Every n-th report (counting from 1) is refused with 4.00 (0: none).
    pub refuse_every: u64,
    /// Every n-th report gets 5.03 with Max-Age 1 first (0: none); the retry is taken.
    pub busy_every: u64,
    /// Every n-th report is taken but not published (a loss behind the edge; 0: none).
    pub lose_every: u64,
    /// The first registration (`POST /rd`) of every n-th device, counting devices (by
    /// endpoint name) in the order their first registration arrives from 1, gets 5.03 with
    /// Max-Age [`REGISTRATION_MAX_AGE`] (0: none), as an edge whose audit lane is full answers;
    /// the device's next registration is taken.
    pub registration_busy_every: u64,
}

/// What the stand-in edge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandInStats {
    /// Registrations answered 2.01.
    pub registrations: u64,
    /// Registrations answered 5.03 (`Script::registration_busy_every`).
    pub registration_busy: u64,
    /// Registration updates answered 2.04.
    pub updates: u64,
    /// Reports taken (2.04).
    pub reports: u64,
    /// Reports refused (4.00).
    pub refused: u64,
    /// 5.03 answers to reports.
    pub busy: u64,
    /// Reports taken but never published (`lose_every`).
    pub unpublished: u64,
    /// Retransmitted requests answered from the reply cache.
    pub repeats: u64,
    /// Requests that did not verify or parse (dropped).
    pub rejected: u64,
}

/// Replies kept for retransmitted requests at most (oldest forgotten first).
const MAX_REPLIES: usize = 1 << 20;

/// A sans-IO stand-in for the edge router. See the module docs.
#[derive(Debug)]
pub struct StandInEdge {
    contexts: HashMap<Vec<u8>, SecurityContext>,
    /// Device ids by peer, from their registrations (bounded by the devices that register).
    names: HashMap<SocketAddr, String>,
    replies: HashMap<(SocketAddr, u16), Vec<u8>>,
    reply_order: std::collections::VecDeque<(SocketAddr, u16)>,
    /// Reports counted for the script (each 5.03'd report counted once).
    seen_reports: u64,
    busy_pending: HashMap<SocketAddr, u64>,
    /// Endpoint names whose registration arrived (bounded by the devices that register).
    registering: std::collections::HashSet<String>,
    script: Script,
    published: std::collections::VecDeque<(String, Vec<u8>)>,
    /// Counters.
    pub stats: StandInStats,
}

impl StandInEdge {
    /// A plain stand-in (lab mode), answering per `script`.
    pub fn new(script: Script) -> StandInEdge {
        StandInEdge {
            contexts: HashMap::new(),
            names: HashMap::new(),
            replies: HashMap::new(),
            reply_order: std::collections::VecDeque::new(),
            seen_reports: 0,
            busy_pending: HashMap::new(),
            registering: std::collections::HashSet::new(),
            script,
            published: std::collections::VecDeque::new(),
            stats: StandInStats::default(),
        }
    }

    /// Adds the edge's side of `record`'s OSCORE context (Sender ID empty, Recipient ID = kid).
    pub fn add_device(&mut self, record: &DeviceRecord) -> Result<(), oscore::OscoreError> {
        let input = crate::credentials::edge_input(record);
        let config = ContextConfig {
            persist_step: 1 << 30,
            ..ContextConfig::default()
        };
        let mut ctx = SecurityContext::new(&input, config)?;
        if let Some(mark) = ctx.mark_to_persist() {
            ctx.persisted(mark);
        }
        self.contexts.insert(record.kid.clone(), ctx);
        Ok(())
    }

    /// What a report published: (topic, payload), oldest first.
    pub fn poll_publish(&mut self) -> Option<(String, Vec<u8>)> {
        self.published.pop_front()
    }

    /// Handles one datagram from `from`; the answer to send back, if any.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        let Ok(outer) = wire::parse(bytes) else {
            self.stats.rejected += 1;
            return None;
        };
        if let Some(reply) = self.replies.get(&(from, outer.header.message_id)) {
            self.stats.repeats += 1;
            return Some(reply.clone());
        }
        let kid = OscoreOption::from_packet(&outer).ok().and_then(|o| o.kid);
        let reply = match kid {
            Some(kid) => {
                let mut ctx = self.contexts.remove(&kid)?;
                let reply = self.protected(&mut ctx, from, &outer);
                self.contexts.insert(kid, ctx);
                reply
            }
            None => self.answer(from, &outer).and_then(|r| wire::encode(&r)),
        }?;
        if self.replies.len() >= MAX_REPLIES
            && let Some(old) = self.reply_order.pop_front()
        {
            self.replies.remove(&old);
        }
        self.replies
            .insert((from, outer.header.message_id), reply.clone());
        self.reply_order.push_back((from, outer.header.message_id));
        Some(reply)
    }

    fn protected(
        &mut self,
        ctx: &mut SecurityContext,
        from: SocketAddr,
        outer: &Packet,
    ) -> Option<Vec<u8>> {
        let Ok((inner, mut info)) = oscore::unprotect_request(ctx, outer) else {
            self.stats.rejected += 1;
            return None;
        };
        let mut inner = inner;
        inner.header.message_id = outer.header.message_id;
        inner.set_token(outer.get_token().to_vec());
        let answer = self.answer(from, &inner)?;
        let protected = oscore::protect_response(ctx, &answer, &mut info, false).ok()?;
        wire::encode(&protected)
    }

    /// The plain answer to a request.
    fn answer(&mut self, from: SocketAddr, p: &Packet) -> Option<Packet> {
        let path: Vec<Vec<u8>> = p
            .get_option(CoapOption::UriPath)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        let mut r = Packet::new();
        r.header.set_type(MessageType::Acknowledgement);
        r.header.message_id = p.header.message_id;
        r.set_token(p.get_token().to_vec());
        let code = match (p.header.code, path.as_slice()) {
            (MessageClass::Request(RequestType::Post), [rd]) if rd == b"rd" => {
                let ep = p
                    .get_option(CoapOption::UriQuery)
                    .and_then(|q| {
                        q.iter().find_map(|v| {
                            v.strip_prefix(b"ep=")
                                .map(|e| String::from_utf8_lossy(e).into_owned())
                        })
                    })
                    .unwrap_or_default();
                if !self.registering.contains(&ep) {
                    self.registering.insert(ep.clone());
                    let n = self.registering.len() as u64;
                    let k = self.script.registration_busy_every;
                    if k > 0 && n.is_multiple_of(k) {
                        self.stats.registration_busy += 1;
                        r.add_option(CoapOption::MaxAge, vec![REGISTRATION_MAX_AGE]);
                        r.header.code = MessageClass::Response(ResponseType::ServiceUnavailable);
                        return Some(r);
                    }
                }
                self.names.insert(from, ep);
                self.stats.registrations += 1;
                r.add_option(CoapOption::LocationPath, b"rd".to_vec());
                r.add_option(
                    CoapOption::LocationPath,
                    self.stats.registrations.to_string().into_bytes(),
                );
                ResponseType::Created
            }
            (MessageClass::Request(RequestType::Post), [rd, _]) if rd == b"rd" => {
                self.stats.updates += 1;
                ResponseType::Changed
            }
            (MessageClass::Request(RequestType::Post), [t]) if t == b"t" => {
                self.report(from, p, &mut r)
            }
            _ => ResponseType::NotFound,
        };
        r.header.code = MessageClass::Response(code);
        Some(r)
    }

    fn report(&mut self, from: SocketAddr, p: &Packet, r: &mut Packet) -> ResponseType {
        // The report's number; a device's next request after a 5.03 is the same report.
        let (n, retry) = match self.busy_pending.remove(&from) {
            Some(n) => (n, true),
            None => {
                self.seen_reports += 1;
                (self.seen_reports, false)
            }
        };
        let every = |k: u64| k > 0 && n % k == 0;
        if every(self.script.busy_every) && !retry {
            self.busy_pending.insert(from, n);
            self.stats.busy += 1;
            r.add_option(CoapOption::MaxAge, vec![1]);
            return ResponseType::ServiceUnavailable;
        }
        if every(self.script.refuse_every) {
            self.stats.refused += 1;
            return ResponseType::BadRequest;
        }
        self.stats.reports += 1;
        if every(self.script.lose_every) {
            self.stats.unpublished += 1;
        } else {
            self.publish(from, &p.payload);
        }
        ResponseType::Changed
    }

    /// The platform's message for a report: `[{"n": "…:seq", "v": seq, "t": time}, …]`.
    fn publish(&mut self, from: SocketAddr, payload: &[u8]) {
        let pack = senml::from_cbor(payload).or_else(|_| senml::from_json(payload));
        let Ok(records) = pack.and_then(|p| senml::resolve(&p, 0.0)) else {
            self.stats.rejected += 1;
            return;
        };
        let json: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let v = match &r.value {
                    Some(senml::Value::Float(v)) => serde_json::json!(v),
                    _ => serde_json::Value::Null,
                };
                serde_json::json!({"n": r.name, "v": v, "t": r.time})
            })
            .collect();
        let device = self.names.get(&from).cloned().unwrap_or_default();
        let body = serde_json::to_vec(&json).unwrap_or_default();
        self.published
            .push_back((format!("v6iot/site/{device}/telemetry"), body));
    }
}

/// A virtual network: shard cores and a stand-in edge on one virtual clock. See the module
/// docs.
pub struct VirtualNet<St: MemberStore> {
    /// The shard cores (one per simulated thread).
    pub cores: Vec<ShardCore<St>>,
    /// The edge.
    pub edge: StandInEdge,
    /// What reached the "broker".
    pub deliveries: Deliveries,
    clock: WallClock,
    delay: Duration,
    publish_delay: Duration,
    now: Instant,
    events: BinaryHeap<Reverse<(Instant, u64)>>,
    items: HashMap<u64, Hop>,
    next: u64,
}

enum Hop {
    ToEdge {
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    ToDevice {
        core: usize,
        member: usize,
        bytes: Vec<u8>,
    },
}

/// The virtual address of member `member` of core `core`.
fn address(core: usize, member: usize) -> SocketAddr {
    let bits = (0xfd00_u128 << 112) | (1u128 << 64) | ((core as u128) << 32) | member as u128;
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(bits), 40000, 0, 0))
}

fn from_address(a: SocketAddr) -> Option<(usize, usize)> {
    let SocketAddr::V6(a) = a else { return None };
    let bits = u128::from(*a.ip());
    Some((
        ((bits >> 32) & 0xffff_ffff) as usize,
        (bits & 0xffff_ffff) as usize,
    ))
}

impl<St: MemberStore> VirtualNet<St> {
    /// Cores and an edge `delay` apart (one way); the edge publishes `publish_delay` after it
    /// takes a report; the clock starts at `start`, which is `clock`'s Unix time.
    pub fn new(
        cores: Vec<ShardCore<St>>,
        edge: StandInEdge,
        deliveries: Deliveries,
        clock: WallClock,
        start: Instant,
        delay: Duration,
        publish_delay: Duration,
    ) -> Self {
        VirtualNet {
            cores,
            edge,
            deliveries,
            clock,
            delay,
            publish_delay,
            now: start,
            events: BinaryHeap::new(),
            items: HashMap::new(),
            next: 0,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn schedule(&mut self, at: Instant, hop: Hop) {
        self.events.push(Reverse((at, self.next)));
        self.items.insert(self.next, hop);
        self.next += 1;
    }

    /// Runs until `until` (or until nothing is left to do).
    pub fn run_until(&mut self, until: Instant) {
        loop {
            // What the cores have to send goes out now (also what they made before the run).
            self.send(self.now);
            let core_next = self.cores.iter().filter_map(|c| c.poll_timeout()).min();
            let hop_next = self.events.peek().map(|r| r.0.0);
            let Some(next) = [core_next, hop_next].into_iter().flatten().min() else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            while let Some(&Reverse((at, key))) = self.events.peek() {
                if at > now {
                    break;
                }
                self.events.pop();
                match self.items.remove(&key) {
                    Some(Hop::ToEdge { from, bytes }) => {
                        if let Some(reply) = self.edge.handle_datagram(from, &bytes)
                            && let Some((core, member)) = from_address(from)
                        {
                            self.schedule(
                                now + self.delay,
                                Hop::ToDevice {
                                    core,
                                    member,
                                    bytes: reply,
                                },
                            );
                        }
                        while let Some((topic, payload)) = self.edge.poll_publish() {
                            let unix = self.clock.unix(now + self.publish_delay);
                            self.deliveries.record(&topic, &payload, unix);
                        }
                    }
                    Some(Hop::ToDevice {
                        core,
                        member,
                        bytes,
                    }) => {
                        if let Some(c) = self.cores.get_mut(core) {
                            // From the edge the devices know (the scenario's address).
                            let edge = c.roster().edge;
                            c.handle_datagram(now, member, edge, &bytes);
                        }
                    }
                    None => {}
                }
            }
            for c in &mut self.cores {
                c.handle_timeout(now);
            }
            self.send(now);
        }
        self.now = self.now.max(until);
    }

    /// The cores' datagrams on their way to the edge, sent at `now`.
    fn send(&mut self, now: Instant) {
        let mut sends = Vec::new();
        for (i, c) in self.cores.iter_mut().enumerate() {
            while let Some(o) = c.poll_transmit() {
                sends.push((address(i, o.member), o.bytes));
            }
        }
        for (from, bytes) in sends {
            self.schedule(now + self.delay, Hop::ToEdge { from, bytes });
        }
    }
}
