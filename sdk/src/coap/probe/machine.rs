//! The probe's checks as a sans-IO state machine.
//!
//! One exchange at a time: [`Probe::poll_transmit`] gives the next datagram,
//! [`Probe::handle_datagram`] takes what the target sent, [`Probe::poll_timeout`] says when
//! the current exchange times out (or, for malformed input, when its silence counts as the
//! answer) and [`Probe::handle_timeout`] acts on it. Confirmable requests are retransmitted
//! [`ProbeConfig::retransmits`] times with doubling timeouts (RFC 7252 §4.2). Datagrams that
//! are not CoAP, or belong to no exchange, are counted and dropped; an unrelated CON (a late
//! notification) is answered with a Reset.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

use super::{CheckId, CheckResult, Verdict};
use crate::coap::link::{self, Link};
use crate::coap::wire::{self, Block};
use crate::oscore::{self, RequestInfo, SecurityContext};
use crate::time::Instant;

/// How patient the probe is.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// How long the first transmission of an exchange waits for its answer.
    pub timeout: Duration,
    /// Retransmissions of a confirmable request before it times out.
    pub retransmits: u8,
    /// How long malformed input waits for an (unwanted) answer: silence this long is "ignored".
    pub silence: Duration,
    /// How long an Observe registration waits for its first notification.
    pub observe_wait: Duration,
    /// The Block2 size the probe asks for, as SZX (2 = 64 bytes).
    pub block_szx: u8,
    /// How many discovered resources are tried for Block2 at most.
    pub block_candidates: usize,
    /// The most blocks one transfer may take (a bound on a target that never ends one).
    pub max_blocks: u32,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            timeout: Duration::from_secs(1),
            retransmits: 2,
            silence: Duration::from_millis(800),
            observe_wait: Duration::from_secs(6),
            block_szx: 2,
            block_candidates: 8,
            max_blocks: 1024,
        }
    }
}

/// An unknown critical option (odd number, experimental range of RFC 7252 §12.2).
pub const UNKNOWN_CRITICAL_OPTION: u16 = 65001;

/// What a step of the probe is doing.
#[derive(Debug)]
enum Task {
    Ping,
    Con,
    Non,
    Discovery {
        body: Vec<u8>,
        next: Option<Block>,
    },
    Block(BlockSearch),
    ObserveRegister {
        path: String,
    },
    ObserveNotify {
        path: String,
        since: Instant,
    },
    Oscore {
        path: String,
        info: Option<Box<RequestInfo>>,
    },
    Malformed(CheckId),
    StillAlive,
}

/// The Block2 check's progress: which candidate, which block next, what came so far.
#[derive(Debug, Clone)]
struct BlockSearch {
    candidate: usize,
    /// Candidates that answered 4.01 (an OSCORE-only endpoint's resources).
    unauthorized: usize,
    next: u32,
    body: usize,
}

/// The datagram in flight and how it is matched.
#[derive(Debug, Clone)]
struct Exchange {
    bytes: Vec<u8>,
    message_id: u16,
    token: Vec<u8>,
    confirmable: bool,
    /// Malformed input: silence until the deadline is the expected answer.
    silent: bool,
    transmissions: u8,
    wait: Duration,
    deadline: Instant,
    acked: bool,
}

/// What came back for the exchange in flight.
#[derive(Debug)]
enum Reply {
    Response(Packet),
    Reset,
    Timeout,
}

/// The probe: the checks' queue, the exchange in flight, the results so far.
#[derive(Debug)]
pub struct Probe {
    config: ProbeConfig,
    ipv6: bool,
    queue: VecDeque<Task>,
    current: Option<(Task, Exchange)>,
    transmit: VecDeque<Vec<u8>>,
    results: Vec<CheckResult>,
    links: Vec<Link>,
    next_message_id: u16,
    next_token: u32,
    answered: usize,
    stray: usize,
    observe_token: Option<Vec<u8>>,
    oscore: Option<SecurityContext>,
}

impl Probe {
    /// A probe of a target (`ipv6`: its address is IPv6). `seed` picks the first message ID.
    /// `oscore`: `None` marks the OSCORE check not applicable.
    pub fn new(config: ProbeConfig, ipv6: bool, seed: u16) -> Probe {
        let queue = VecDeque::from([
            Task::Ping,
            Task::Con,
            Task::Non,
            Task::Discovery {
                body: Vec::new(),
                next: None,
            },
            Task::Block(BlockSearch {
                candidate: 0,
                unauthorized: 0,
                next: 0,
                body: 0,
            }),
            Task::ObserveRegister {
                path: String::new(),
            },
            Task::Malformed(CheckId::BadVersion),
            Task::Malformed(CheckId::Truncated),
            Task::Malformed(CheckId::TokenLength),
            Task::Malformed(CheckId::CriticalOption),
            Task::Malformed(CheckId::PayloadMarker),
            Task::StillAlive,
        ]);
        let mut probe = Probe {
            config,
            ipv6,
            queue,
            current: None,
            transmit: VecDeque::new(),
            results: Vec::new(),
            links: Vec::new(),
            next_message_id: seed,
            next_token: u32::from(seed) << 8,
            answered: 0,
            stray: 0,
            observe_token: None,
            oscore: None,
        };
        probe.record(
            CheckId::Oscore,
            Verdict::NotApplicable,
            "no credentials given (--credentials CSV --id ID)",
        );
        probe
    }

    /// Also checks OSCORE with `ctx` (the client's side: its Sender ID is what the endpoint
    /// knows as its Recipient ID). Its sender sequence must have a persisted mark with room for
    /// one request.
    #[must_use]
    pub fn with_oscore(mut self, ctx: SecurityContext) -> Probe {
        self.results.retain(|r| r.check != CheckId::Oscore);
        let at = self
            .queue
            .iter()
            .position(|t| matches!(t, Task::Malformed(_)))
            .unwrap_or(self.queue.len());
        self.queue.insert(
            at,
            Task::Oscore {
                path: String::new(),
                info: None,
            },
        );
        self.oscore = Some(ctx);
        self
    }

    /// True when every check has its result.
    pub fn is_done(&self) -> bool {
        self.current.is_none() && self.queue.is_empty() && self.transmit.is_empty()
    }

    /// The results so far (all of them once [`is_done`](Self::is_done)).
    pub fn results(&self) -> &[CheckResult] {
        &self.results
    }

    /// Datagrams that matched no exchange or were not CoAP.
    pub fn strays(&self) -> usize {
        self.stray
    }

    /// The next datagram to send to the target (starting the next check when none is in flight).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.transmit.is_empty() && self.current.is_none() {
            self.start_next(now);
        }
        self.transmit.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.as_ref().map(|(_, e)| e.deadline)
    }

    /// Retransmits or times out the exchange in flight if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some((_, ex)) = self.current.as_mut() else {
            return;
        };
        if now < ex.deadline {
            return;
        }
        if ex.confirmable && !ex.acked && !ex.silent && ex.transmissions <= self.config.retransmits
        {
            ex.transmissions += 1;
            ex.wait = ex.wait.saturating_mul(2);
            ex.deadline = after(now, ex.wait);
            self.transmit.push_back(ex.bytes.clone());
            return;
        }
        if let Some((task, ex)) = self.current.take() {
            self.on_reply(now, task, &ex, Reply::Timeout);
        }
    }

    /// Takes a datagram from the target.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        self.answered += 1;
        let Ok(packet) = wire::parse(bytes) else {
            self.stray += 1;
            return;
        };
        let kind = packet.header.get_type();
        let mid = packet.header.message_id;
        let is_response = matches!(packet.header.code, MessageClass::Response(_));
        let Some((_, ex)) = self.current.as_mut() else {
            self.unrelated(&packet);
            return;
        };
        let by_mid = mid == ex.message_id
            && matches!(kind, MessageType::Acknowledgement | MessageType::Reset);
        let by_token = is_response
            && packet.get_token() == ex.token.as_slice()
            && matches!(kind, MessageType::Confirmable | MessageType::NonConfirmable);
        if !by_mid && !by_token {
            self.unrelated(&packet);
            return;
        }
        if kind == MessageType::Acknowledgement && packet.header.code == MessageClass::Empty {
            // An empty ACK: the separate response follows; no more retransmissions.
            ex.acked = true;
            ex.deadline = after(now, self.config.timeout.saturating_mul(4));
            return;
        }
        let reply = if kind == MessageType::Reset {
            Reply::Reset
        } else {
            if kind == MessageType::Confirmable {
                self.transmit
                    .push_back(wire::empty_message(MessageType::Acknowledgement, mid));
            }
            Reply::Response(packet)
        };
        if let Some((task, ex)) = self.current.take() {
            self.on_reply(now, task, &ex, reply);
        }
    }

    /// A message for no exchange: a CON (a late notification, say) gets a Reset.
    fn unrelated(&mut self, packet: &Packet) {
        self.stray += 1;
        if packet.header.get_type() == MessageType::Confirmable {
            self.transmit.push_back(wire::empty_message(
                MessageType::Reset,
                packet.header.message_id,
            ));
        }
    }

    fn record(&mut self, check: CheckId, verdict: Verdict, detail: impl Into<String>) {
        self.results.push(CheckResult {
            check,
            verdict,
            detail: detail.into(),
        });
    }

    fn ids(&mut self) -> (u16, Vec<u8>) {
        let mid = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_token = self.next_token.wrapping_add(1);
        (mid, self.next_token.to_be_bytes().to_vec())
    }

    /// Starts the next task, or finishes (the IPv6 verdict) when none is left.
    fn start_next(&mut self, now: Instant) {
        while let Some(task) = self.queue.pop_front() {
            if self.answered == 0 && !matches!(task, Task::Ping | Task::Con) {
                self.skip(&task);
                continue;
            }
            let mut task = task;
            if let Some(ex) = self.exchange_for(now, &mut task) {
                self.transmit.push_back(ex.bytes.clone());
                self.current = Some((task, ex));
                return;
            }
        }
        if !self.results.iter().any(|r| r.check == CheckId::Ipv6) {
            let (verdict, detail) = match (self.ipv6, self.answered) {
                (false, _) => (Verdict::Fail, "the target is not an IPv6 address".into()),
                (true, 0) => (Verdict::Fail, "nothing came back over IPv6".into()),
                (true, n) => (Verdict::Pass, format!("{n} datagrams answered over IPv6")),
            };
            self.record(CheckId::Ipv6, verdict, detail);
        }
    }

    /// A task not run because the target never answered.
    fn skip(&mut self, task: &Task) {
        let check = match task {
            Task::Ping => CheckId::Ping,
            Task::Con => CheckId::Con,
            Task::Non => CheckId::Non,
            Task::Discovery { .. } => CheckId::Discovery,
            Task::Block(_) => CheckId::Block2,
            Task::ObserveRegister { .. } | Task::ObserveNotify { .. } => CheckId::Observe,
            Task::Oscore { .. } => CheckId::Oscore,
            Task::Malformed(c) => *c,
            Task::StillAlive => CheckId::StillAlive,
        };
        self.record(check, Verdict::Fail, "not tried: the target never answered");
    }

    /// The first datagram of `task`; `None` when the task ends without one (recorded).
    fn exchange_for(&mut self, now: Instant, task: &mut Task) -> Option<Exchange> {
        let (mid, token) = self.ids();
        let get = |kind, path: &str, token: Vec<u8>| request(kind, mid, token, path);
        let (bytes, confirmable, silent) = match task {
            Task::Ping | Task::StillAlive => (
                wire::empty_message(MessageType::Confirmable, mid),
                true,
                false,
            ),
            Task::Con => (
                get(MessageType::Confirmable, "/.well-known/core", token.clone()).encode(),
                true,
                false,
            ),
            Task::Non => (
                get(
                    MessageType::NonConfirmable,
                    "/.well-known/core",
                    token.clone(),
                )
                .encode(),
                false,
                false,
            ),
            Task::Discovery { next, .. } => {
                let mut p = get(MessageType::Confirmable, "/.well-known/core", token.clone());
                if let Some(b) = next {
                    p.add_option(CoapOption::Block2, block(b.num, b.szx));
                }
                (p.encode(), true, false)
            }
            Task::Block(search) => {
                let Some(path) = self.block_candidate(search.candidate) else {
                    let tried = search.candidate;
                    let locked = match search.unauthorized {
                        0 => String::new(),
                        n => format!(" ({n} answered 4.01: OSCORE only)"),
                    };
                    self.record(
                        CheckId::Block2,
                        Verdict::NotApplicable,
                        format!(
                            "not offered: none of {tried} resources answered in blocks{locked}"
                        ),
                    );
                    return None;
                };
                let mut p = get(MessageType::Confirmable, &path, token.clone());
                p.add_option(
                    CoapOption::Block2,
                    block(search.next, self.config.block_szx),
                );
                (p.encode(), true, false)
            }
            Task::ObserveRegister { path } => {
                let Some(link) = self.links.iter().find(|l| l.has("obs")).cloned() else {
                    self.record(
                        CheckId::Observe,
                        Verdict::NotApplicable,
                        "not offered: no resource in /.well-known/core says obs",
                    );
                    return None;
                };
                let mut p = get(MessageType::Confirmable, &link.target, token.clone());
                p.set_observe_value(0);
                self.observe_token = Some(token.clone());
                *path = link.target;
                (p.encode(), true, false)
            }
            Task::ObserveNotify { .. } => return None,
            Task::Oscore { path, info } => {
                let target = self
                    .block_candidate(0)
                    .unwrap_or_else(|| "/.well-known/core".into());
                let plain = get(MessageType::Confirmable, &target, token.clone());
                let ctx = self.oscore.as_mut()?;
                match oscore::protect_request(ctx, &plain) {
                    Ok((outer, i)) => {
                        *path = target;
                        *info = Some(Box::new(i));
                        (outer.encode(), true, false)
                    }
                    Err(e) => {
                        self.record(
                            CheckId::Oscore,
                            Verdict::Fail,
                            format!("cannot protect: {e}"),
                        );
                        return None;
                    }
                }
            }
            Task::Malformed(check) => (malformed(*check, mid, &token), true, true),
        };
        let wait = if silent {
            self.config.silence
        } else {
            self.config.timeout
        };
        let mut ex = Exchange::new(bytes, mid, token, confirmable, now, wait);
        ex.silent = silent;
        Some(ex)
    }

    /// The path of the `n`th Block2 candidate: discovered resources other than discovery
    /// itself, at most [`ProbeConfig::block_candidates`].
    fn block_candidate(&self, n: usize) -> Option<String> {
        if n >= self.config.block_candidates {
            return None;
        }
        self.links
            .iter()
            .map(|l| l.target.clone())
            .filter(|p| p != "/.well-known/core")
            .nth(n)
    }

    fn on_reply(&mut self, now: Instant, task: Task, ex: &Exchange, reply: Reply) {
        match task {
            Task::Ping | Task::StillAlive => {
                let check = if matches!(task, Task::Ping) {
                    CheckId::Ping
                } else {
                    CheckId::StillAlive
                };
                match reply {
                    Reply::Reset => self.record(check, Verdict::Pass, "Reset to an empty CON"),
                    Reply::Response(p) => self.record(
                        check,
                        Verdict::Fail,
                        format!("{} instead of a Reset", describe(&p)),
                    ),
                    Reply::Timeout => self.record(check, Verdict::Fail, timeout_text(ex)),
                }
            }
            Task::Con | Task::Non => self.on_simple_get(&task, ex, reply),
            Task::Discovery { body, next } => self.on_discovery(now, body, next, reply),
            Task::Block(search) => self.on_block(now, search, reply),
            Task::ObserveRegister { path } => self.on_observe_register(now, path, ex, reply),
            Task::ObserveNotify { path, since } => {
                let detail = match &reply {
                    Reply::Response(p) if p.get_observe_value().is_some() => {
                        // Cancel the observation (RFC 7641 §3.6): a Reset for a CON notification
                        // was queued as an ACK; answer with a Reset instead.
                        if p.header.get_type() == MessageType::Confirmable {
                            self.transmit.pop_back();
                            self.transmit.push_back(wire::empty_message(
                                MessageType::Reset,
                                p.header.message_id,
                            ));
                        } else {
                            self.transmit.push_back(wire::empty_message(
                                MessageType::Reset,
                                p.header.message_id,
                            ));
                        }
                        Ok(format!(
                            "{path}: registered, a notification after {} ms, cancelled with a Reset",
                            now.saturating_duration_since(since).as_millis()
                        ))
                    }
                    Reply::Response(p) => Err(format!(
                        "{path}: {} without Observe after the registration",
                        describe(p)
                    )),
                    Reply::Reset => Err(format!("{path}: Reset")),
                    Reply::Timeout => Err(format!(
                        "{path}: registered, but no notification within {} ms",
                        self.config.observe_wait.as_millis()
                    )),
                };
                match detail {
                    Ok(d) => self.record(CheckId::Observe, Verdict::Pass, d),
                    Err(d) => self.record(CheckId::Observe, Verdict::Fail, d),
                }
            }
            Task::Oscore { path, info } => self.on_oscore(&path, info, ex, reply),
            Task::Malformed(check) => self.on_malformed(check, reply),
        }
    }

    fn on_oscore(
        &mut self,
        path: &str,
        info: Option<Box<RequestInfo>>,
        ex: &Exchange,
        reply: Reply,
    ) {
        let (Some(ctx), Some(mut info)) = (self.oscore.as_mut(), info) else {
            return;
        };
        let (verdict, detail) = match reply {
            Reply::Response(p) if p.get_first_option(CoapOption::Oscore).is_some() => {
                match oscore::unprotect_response(ctx, &p, &mut info) {
                    Ok(inner) => (
                        if is_success(&inner) {
                            Verdict::Pass
                        } else {
                            Verdict::Fail
                        },
                        format!(
                            "protected GET {path}: protected {} verified, inside {}",
                            describe(&p),
                            describe(&inner)
                        ),
                    ),
                    Err(e) => (
                        Verdict::Fail,
                        format!("protected GET {path}: the answer does not verify: {e}"),
                    ),
                }
            }
            Reply::Response(p) => (
                Verdict::Fail,
                format!(
                    "protected GET {path}: unprotected {}{}",
                    describe(&p),
                    if p.header.code == MessageClass::Response(ResponseType::BadOption) {
                        ": OSCORE not supported"
                    } else {
                        ""
                    }
                ),
            ),
            Reply::Reset => (Verdict::Fail, format!("protected GET {path}: Reset")),
            Reply::Timeout => (Verdict::Fail, timeout_text(ex)),
        };
        self.record(CheckId::Oscore, verdict, detail);
    }

    fn on_simple_get(&mut self, task: &Task, ex: &Exchange, reply: Reply) {
        let check = if matches!(task, Task::Con) {
            CheckId::Con
        } else {
            CheckId::Non
        };
        match reply {
            Reply::Response(p) => {
                let how = match (check, p.header.get_type(), ex.acked) {
                    (CheckId::Con, MessageType::Acknowledgement, _) => "piggybacked in the ACK",
                    (CheckId::Con, _, true) => "empty ACK, then a separate response",
                    (CheckId::Non, MessageType::NonConfirmable, _) => "as a NON",
                    (CheckId::Non, MessageType::Confirmable, _) => "as a CON",
                    _ => "",
                };
                let verdict =
                    if matches!(p.header.code, MessageClass::Response(_)) && !how.is_empty() {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    };
                self.record(check, verdict, format!("{} {how}", describe(&p)));
            }
            Reply::Reset => self.record(check, Verdict::Fail, "Reset to a GET"),
            Reply::Timeout => self.record(check, Verdict::Fail, timeout_text(ex)),
        }
    }

    /// Discovery's answer to the block `asked` for (`None`: the first request, no Block2).
    /// Blocks are followed while they come in order, up to [`ProbeConfig::max_blocks`] and
    /// 64 KiB; then what came is read as link format.
    fn on_discovery(
        &mut self,
        now: Instant,
        mut body: Vec<u8>,
        asked: Option<Block>,
        reply: Reply,
    ) {
        let p = match reply {
            Reply::Response(p) => p,
            Reply::Reset => return self.record(CheckId::Discovery, Verdict::Fail, "Reset"),
            Reply::Timeout => {
                return self.record(CheckId::Discovery, Verdict::Fail, "no answer");
            }
        };
        if p.header.code != MessageClass::Response(ResponseType::Content) {
            return self.record(CheckId::Discovery, Verdict::Fail, describe(&p));
        }
        body.extend_from_slice(&p.payload);
        let block = wire::block_option(&p, CoapOption::Block2);
        let asked_num = asked.map_or(0, |b| b.num);
        if let Ok(Some(b)) = block
            && b.num != asked_num
        {
            let detail = format!("asked for block {asked_num}, got block {}", b.num);
            return self.record(CheckId::Discovery, Verdict::Fail, detail);
        }
        if let Ok(Some(b)) = block
            && b.more
            && b.num + 1 < self.config.max_blocks
            && body.len() < 64 * 1024
        {
            let next = Some(Block {
                num: b.num + 1,
                more: false,
                szx: b.szx,
            });
            self.queue.push_front(Task::Discovery { body, next });
            self.start_next(now);
            return;
        }
        let cf = wire::uint_option(&p, CoapOption::ContentFormat, 2)
            .ok()
            .flatten();
        let text = String::from_utf8_lossy(&body);
        match (cf, link::parse(&text)) {
            (Some(40), Some(links)) if !links.is_empty() => {
                let obs = links.iter().filter(|l| l.has("obs")).count();
                let detail = format!(
                    "{} links ({obs} observable) in {} bytes of link format",
                    links.len(),
                    body.len()
                );
                self.links = links;
                self.record(CheckId::Discovery, Verdict::Pass, detail);
            }
            (cf, _) => self.record(
                CheckId::Discovery,
                Verdict::Fail,
                format!("2.05 with content format {cf:?}, not link format with links"),
            ),
        }
    }

    fn on_block(&mut self, now: Instant, mut search: BlockSearch, reply: Reply) {
        let path = self.block_candidate(search.candidate).unwrap_or_default();
        let next_candidate = |s: &BlockSearch| BlockSearch {
            candidate: s.candidate + 1,
            unauthorized: s.unauthorized,
            next: 0,
            body: 0,
        };
        let p = match reply {
            Reply::Response(p) => p,
            Reply::Reset | Reply::Timeout if search.next > 0 => {
                let what = if matches!(reply, Reply::Reset) {
                    "Reset"
                } else {
                    "no answer"
                };
                return self.record(
                    CheckId::Block2,
                    Verdict::Fail,
                    format!("{path}: {what} to block {}", search.next),
                );
            }
            _ => {
                self.queue.push_front(Task::Block(next_candidate(&search)));
                return self.start_next(now);
            }
        };
        if search.next == 0 && p.header.code == MessageClass::Response(ResponseType::Unauthorized) {
            search.unauthorized += 1;
        }
        let block = wire::block_option(&p, CoapOption::Block2);
        let success = p.header.code == MessageClass::Response(ResponseType::Content);
        match block {
            Ok(Some(b)) if success && b.num == search.next && b.szx <= self.config.block_szx => {
                search.body += p.payload.len();
                if !b.more {
                    if search.next == 0 {
                        // One block only: not a multi-block transfer; try the next resource.
                        self.queue.push_front(Task::Block(next_candidate(&search)));
                        return self.start_next(now);
                    }
                    let detail = format!(
                        "{path}: {} bytes in {} blocks of {} bytes",
                        search.body,
                        search.next + 1,
                        b.size()
                    );
                    return self.record(CheckId::Block2, Verdict::Pass, detail);
                }
                if p.payload.len() != b.size() || search.next + 1 >= self.config.max_blocks {
                    let detail = format!(
                        "{path}: block {} holds {} bytes, not {}",
                        b.num,
                        p.payload.len(),
                        b.size()
                    );
                    return self.record(CheckId::Block2, Verdict::Fail, detail);
                }
                // Later blocks are asked for at the size the server chose.
                search.next = b.num + 1;
                self.config.block_szx = b.szx;
                self.queue.push_front(Task::Block(search));
                self.start_next(now);
            }
            Ok(None) if search.next == 0 => {
                if success
                    && p.payload.len()
                        > Block::size(Block {
                            num: 0,
                            more: false,
                            szx: self.config.block_szx,
                        })
                {
                    let detail = format!(
                        "{path}: {} bytes in one response, Block2 size ignored",
                        p.payload.len()
                    );
                    return self.record(CheckId::Block2, Verdict::Fail, detail);
                }
                self.queue.push_front(Task::Block(next_candidate(&search)));
                self.start_next(now);
            }
            _ if search.next == 0 && !success => {
                self.queue.push_front(Task::Block(next_candidate(&search)));
                self.start_next(now);
            }
            other => {
                let detail = format!(
                    "{path}: asked for block {}, got {} with Block2 {other:?}",
                    search.next,
                    describe(&p)
                );
                self.record(CheckId::Block2, Verdict::Fail, detail);
            }
        }
    }

    fn on_observe_register(&mut self, now: Instant, path: String, ex: &Exchange, reply: Reply) {
        match reply {
            Reply::Response(p) if p.get_observe_value().is_some() && is_success(&p) => {
                // Wait for the first notification on the same token.
                let mut wait = ex.clone();
                wait.message_id = wait.message_id.wrapping_add(0x8000);
                wait.confirmable = false;
                wait.deadline = after(now, self.config.observe_wait);
                self.current = Some((Task::ObserveNotify { path, since: now }, wait));
            }
            Reply::Response(p)
                if p.header.code == MessageClass::Response(ResponseType::Unauthorized) =>
            {
                self.record(
                    CheckId::Observe,
                    Verdict::NotApplicable,
                    format!("{path}: 4.01 without OSCORE (see the oscore check)"),
                );
            }
            Reply::Response(p) => self.record(
                CheckId::Observe,
                Verdict::Fail,
                format!("{path}: {} without Observe: not registered", describe(&p)),
            ),
            Reply::Reset => self.record(CheckId::Observe, Verdict::Fail, format!("{path}: Reset")),
            Reply::Timeout => self.record(
                CheckId::Observe,
                Verdict::Fail,
                format!("{path}: no answer"),
            ),
        }
    }

    fn on_malformed(&mut self, check: CheckId, reply: Reply) {
        let (verdict, detail) = match (check, reply) {
            (_, Reply::Timeout) => (Verdict::Pass, "silently ignored".to_owned()),
            (CheckId::CriticalOption, Reply::Response(p))
                if p.header.code == MessageClass::Response(ResponseType::BadOption) =>
            {
                (Verdict::Pass, "4.02 Bad Option".to_owned())
            }
            (CheckId::BadVersion | CheckId::Truncated, Reply::Reset) => (
                Verdict::Fail,
                "answered with a Reset (must be silently ignored)".into(),
            ),
            (CheckId::CriticalOption, Reply::Reset) => {
                (Verdict::Fail, "Reset instead of 4.02 Bad Option".into())
            }
            (_, Reply::Reset) => (Verdict::Pass, "rejected with a Reset".to_owned()),
            (_, Reply::Response(p)) => (Verdict::Fail, format!("answered {}", describe(&p))),
        };
        self.record(check, verdict, detail);
    }
}

impl Exchange {
    fn new(
        bytes: Vec<u8>,
        message_id: u16,
        token: Vec<u8>,
        confirmable: bool,
        now: Instant,
        wait: Duration,
    ) -> Exchange {
        Exchange {
            bytes,
            message_id,
            token,
            confirmable,
            silent: false,
            transmissions: 1,
            wait,
            deadline: after(now, wait),
            acked: false,
        }
    }
}

/// A GET of `path` (split into Uri-Path options).
fn request(kind: MessageType, mid: u16, token: Vec<u8>, path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(token);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p
}

trait Encode {
    fn encode(&self) -> Vec<u8>;
}

impl Encode for Packet {
    fn encode(&self) -> Vec<u8> {
        wire::encode(self).unwrap_or_default()
    }
}

fn block(num: u32, szx: u8) -> Vec<u8> {
    Block {
        num,
        more: false,
        szx,
    }
    .encode()
}

/// The malformed datagram of `check`.
fn malformed(check: CheckId, mid: u16, token: &[u8]) -> Vec<u8> {
    let good = request(
        MessageType::Confirmable,
        mid,
        token.to_vec(),
        "/.well-known/core",
    );
    let mut bytes = good.encode();
    match check {
        CheckId::BadVersion => {
            if let Some(b) = bytes.first_mut() {
                *b = (*b & 0x3f) | 0x80;
            }
        }
        CheckId::Truncated => bytes.truncate(3),
        CheckId::TokenLength => {
            // Token length 9 (reserved) and nine token bytes.
            let [m0, m1] = mid.to_be_bytes();
            bytes = vec![0x49, 0x01, m0, m1];
            bytes.extend_from_slice(&[0x5a; 9]);
        }
        CheckId::CriticalOption => {
            let mut p = good;
            p.add_option(CoapOption::Unknown(UNKNOWN_CRITICAL_OPTION), vec![1]);
            bytes = p.encode();
        }
        CheckId::PayloadMarker => bytes.push(0xff),
        _ => {}
    }
    bytes
}

fn is_success(p: &Packet) -> bool {
    u8::from(p.header.code) >> 5 == 2
}

/// `2.05 (NON)` style text for a message.
fn describe(p: &Packet) -> String {
    let code = u8::from(p.header.code);
    let kind = match p.header.get_type() {
        MessageType::Confirmable => "CON",
        MessageType::NonConfirmable => "NON",
        MessageType::Acknowledgement => "ACK",
        MessageType::Reset => "RST",
    };
    format!("{}.{:02} ({kind})", code >> 5, code & 0x1f)
}

/// `now + d`, or the end of time (a configured wait too long to count is as good as forever).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(Instant::MAX)
}

fn timeout_text(ex: &Exchange) -> String {
    format!("no answer after {} transmissions", ex.transmissions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `probe` against `answer` (datagram in → datagrams out) on virtual time; returns the
    /// virtual time it took.
    fn run(probe: &mut Probe, mut answer: impl FnMut(&[u8]) -> Vec<Vec<u8>>) -> Duration {
        let start = Instant::ZERO;
        let mut now = start;
        for _ in 0..10_000 {
            while let Some(d) = probe.poll_transmit(now) {
                for reply in answer(&d) {
                    probe.handle_datagram(now, &reply);
                }
            }
            if probe.is_done() {
                return now - start;
            }
            now = probe.poll_timeout().expect("a deadline while not done");
            probe.handle_timeout(now);
        }
        panic!("the probe did not finish");
    }

    fn verdict(p: &Probe, c: CheckId) -> Verdict {
        p.results().iter().find(|r| r.check == c).unwrap().verdict
    }

    #[test]
    fn a_silent_target_fails_quickly_without_the_later_checks() {
        let mut probe = Probe::new(ProbeConfig::default(), true, 7);
        let mut sent = 0;
        let took = run(&mut probe, |_| {
            sent += 1;
            vec![]
        });
        // Ping and CON, each three transmissions (1 + 2 + 4 s), nothing else sent.
        assert_eq!(sent, 6);
        assert_eq!(took, Duration::from_secs(14));
        assert_eq!(verdict(&probe, CheckId::Ipv6), Verdict::Fail);
        assert_eq!(verdict(&probe, CheckId::CriticalOption), Verdict::Fail);
        assert_eq!(probe.results().len(), CheckId::ALL.len());
    }

    /// A minimal server: ping → RST, GET /.well-known/core → one link, 2.05 for anything else
    /// parseable (so it ignores critical options); malformed input ignored.
    fn sloppy(d: &[u8]) -> Vec<Vec<u8>> {
        let Ok(p) = wire::parse(d) else {
            return vec![];
        };
        let mid = p.header.message_id;
        if p.header.code == MessageClass::Empty {
            return vec![wire::empty_message(MessageType::Reset, mid)];
        }
        let mut r = Packet::new();
        r.header
            .set_type(if p.header.get_type() == MessageType::Confirmable {
                MessageType::Acknowledgement
            } else {
                MessageType::NonConfirmable
            });
        r.header.message_id = mid;
        r.header.code = MessageClass::Response(ResponseType::Content);
        r.set_token(p.get_token().to_vec());
        r.add_option(CoapOption::ContentFormat, vec![40]);
        r.payload = b"</a>;ct=0".to_vec();
        vec![r.encode()]
    }

    #[test]
    fn a_server_that_ignores_critical_options_fails_that_check_only() {
        let mut probe = Probe::new(ProbeConfig::default(), true, 7);
        run(&mut probe, sloppy);
        for c in [
            CheckId::Ipv6,
            CheckId::Ping,
            CheckId::Con,
            CheckId::Non,
            CheckId::Discovery,
            CheckId::BadVersion,
            CheckId::Truncated,
            CheckId::TokenLength,
            CheckId::PayloadMarker,
            CheckId::StillAlive,
        ] {
            assert_eq!(
                verdict(&probe, c),
                Verdict::Pass,
                "{c:?}: {:?}",
                probe.results()
            );
        }
        assert_eq!(verdict(&probe, CheckId::CriticalOption), Verdict::Fail);
        assert_eq!(verdict(&probe, CheckId::Block2), Verdict::NotApplicable);
        assert_eq!(verdict(&probe, CheckId::Observe), Verdict::NotApplicable);
        assert_eq!(verdict(&probe, CheckId::Oscore), Verdict::NotApplicable);
    }

    /// Discovery answered in 16-byte blocks that always say "more": block `num(asked)`.
    fn endless_discovery(num: impl Fn(u32) -> u32) -> impl FnMut(&[u8]) -> Vec<Vec<u8>> {
        move |d| {
            let Ok(p) = wire::parse(d) else {
                return vec![];
            };
            let mid = p.header.message_id;
            if p.header.code == MessageClass::Empty {
                return vec![wire::empty_message(MessageType::Reset, mid)];
            }
            let asked = wire::block_option(&p, CoapOption::Block2)
                .ok()
                .flatten()
                .map_or(0, |b| b.num);
            let mut r = Packet::new();
            r.header.set_type(MessageType::Acknowledgement);
            r.header.message_id = mid;
            r.header.code = MessageClass::Response(ResponseType::Content);
            r.set_token(p.get_token().to_vec());
            r.add_option(CoapOption::ContentFormat, vec![40]);
            let b = Block {
                num: num(asked),
                more: true,
                szx: 0,
            };
            r.add_option(CoapOption::Block2, b.encode());
            r.payload = b"</aaaaaaaaaaaa>,".to_vec();
            vec![r.encode()]
        }
    }

    #[test]
    fn discovery_in_endless_blocks_ends_at_max_blocks() {
        let config = ProbeConfig {
            max_blocks: 40,
            ..ProbeConfig::default()
        };
        let mut probe = Probe::new(config, true, 7);
        let mut asked = 0;
        let mut answer = endless_discovery(|n| n);
        run(&mut probe, |d| {
            asked += 1;
            answer(d)
        });
        assert_eq!(verdict(&probe, CheckId::Discovery), Verdict::Pass);
        let detail = &probe
            .results()
            .iter()
            .find(|r| r.check == CheckId::Discovery);
        assert!(
            detail.is_some_and(|r| r.detail.starts_with("40 links")),
            "{detail:?}"
        );
        assert_eq!(probe.results().len(), CheckId::ALL.len());
        assert!(asked < 200, "{asked} datagrams");
    }

    #[test]
    fn discovery_that_repeats_block_zero_fails_instead_of_looping() {
        let mut probe = Probe::new(ProbeConfig::default(), true, 7);
        run(&mut probe, endless_discovery(|_| 0));
        let r = probe
            .results()
            .iter()
            .find(|r| r.check == CheckId::Discovery);
        assert_eq!(
            r.map(|r| (r.verdict, r.detail.as_str())),
            Some((Verdict::Fail, "asked for block 1, got block 0"))
        );
        assert_eq!(probe.results().len(), CheckId::ALL.len());
    }

    #[test]
    fn timeouts_too_long_to_count_end_at_the_end_of_time() {
        let config = ProbeConfig {
            timeout: Duration::MAX,
            silence: Duration::MAX,
            observe_wait: Duration::MAX,
            ..ProbeConfig::default()
        };
        let mut probe = Probe::new(config, true, 7);
        let took = run(&mut probe, |_| vec![]);
        assert_eq!(took, Instant::MAX - Instant::ZERO);
        assert_eq!(verdict(&probe, CheckId::Ping), Verdict::Fail);
        assert_eq!(probe.results().len(), CheckId::ALL.len());
    }
}
