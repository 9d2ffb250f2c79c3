//! The fleet's multi-device driver: many SDK [`Device`]s in one thread — on UDP, or each on an
//! emulated NB-IoT modem and carrier ([`NbiotNode`], the fleet transport `nbiot`).
//!
//! [`ShardCore`] is sans-IO, like the cores it drives: datagrams in through
//! [`ShardCore::handle_datagram`], time through [`ShardCore::handle_timeout`], datagrams out
//! through [`ShardCore::poll_transmit`], its next deadline from [`ShardCore::poll_timeout`]. It
//! powers each device on at its planned start, keeps every device's deadline in one
//! [`TimerWheel`] (about one entry per device), passes datagrams through the [`LinkModel`]
//! (losses, delays, loss bursts), writes OSCORE state before confirming it (as `sdk::driver`
//! does), and counts what happened over time ([`Timeline`]): reports made and what became of
//! them, registrations (and how long each took), retransmissions. An emulated modem that
//! attaches asks for an address ([`ShardCore::poll_address_request`]: the one the link gives
//! its member, or a fresh one after a sleep when the carrier re-addresses it); the driver asks
//! the [`Link`] and answers with [`ShardCore::handle_address`]. Tests drive it on virtual
//! time against a stand-in edge; [`run`] drives it on the wall clock over a [`Link`].
//!
//! [`run`] is the thin driver: it moves datagrams between the core and the link, waits for the
//! core's deadline or a datagram, and while datagrams keep coming waits at most once per
//! [`PACE`], so one wake-up takes a batch. A turn wakes at most [`DEADLINES_PER_TURN`] due
//! devices before it reads the link again, so answers are not left waiting behind a storm's
//! timers. All protocol decisions stay in the SDK core.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use v6iot_sdk::coap::{Config, Device, ResourceTree};
use v6iot_sdk::nbiot::ModemConfig;
use v6iot_sdk::oscore::{DurableState, SecurityContext};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::{RegistrationCounts, UplinkConfig};

use crate::fleet::{FleetSensor, FleetShared, ReportCounts};
use crate::histogram::LatencyHistogram;
use crate::link::{AddressRequest, Arrival, Link};
use crate::linkmodel::{LinkModel, Verdict};
use crate::lowpan::node::LowpanNode;
use crate::lowpan::report::AirReport;
use crate::nbiot::fleet as nbiot_fleet;
use crate::nbiot::node::NbiotNode;
use crate::plan::{DeviceRef, Plan};
use crate::scenario::Transport;
use crate::timeline::{Counts, Timeline};
use crate::timer_wheel::TimerWheel;

/// How long a member waits before it tries again to store a mark that failed to store.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The shortest time between two waits while datagrams keep coming: a busy shard sleeps out
/// the rest of this after a pass, so that one wake-up takes a batch of datagrams (about
/// rate × `PACE` of them) instead of a few. Deadlines are met up to this late.
pub const PACE: Duration = Duration::from_millis(2);

/// Due deadlines one turn of [`run`] handles at most before it reads the link again (a few ms
/// of work: a power-on or a retransmission each). The rest stay due and come first in the next
/// turn, so an answer that arrived meanwhile reaches its device before the device's
/// retransmission timer does. Handling every due deadline first made a storm of a million
/// registrations collapse: one turn took seconds while the edge's answers waited unread.
pub const DEADLINES_PER_TURN: usize = 1024;

/// Datagrams held by the link model's delays at most; more are lost (counted).
pub const MAX_DELAYED: usize = 1 << 20;

/// Registration lifetime of fleet devices (they update at three quarters of it).
pub const LIFETIME: Duration = Duration::from_secs(600);

/// Where a shard writes its members' OSCORE state.
pub trait MemberStore: Send {
    /// Writes member `member`'s state durably.
    fn store(&mut self, member: usize, state: DurableState) -> io::Result<()>;
}

/// For devices without credentials: never asked to store anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl MemberStore for NoStore {
    fn store(&mut self, _member: usize, _state: DurableState) -> io::Result<()> {
        Ok(())
    }
}

impl MemberStore for Box<dyn MemberStore> {
    fn store(&mut self, member: usize, state: DurableState) -> io::Result<()> {
        self.as_mut().store(member, state)
    }
}

/// Which of a plan's devices a shard thread runs (every `threads`-th, from `thread`), and
/// how to power them on.
#[derive(Debug, Clone)]
pub struct Roster {
    /// The run's plan.
    pub plan: Arc<Plan>,
    /// This thread, 0-based.
    pub thread: u32,
    /// Shard threads.
    pub threads: u32,
    /// Per fleet, what its devices share.
    pub shared: Vec<Arc<FleetShared>>,
    /// The run's start.
    pub start: Instant,
    /// The edge router.
    pub edge: SocketAddr,
}

impl Roster {
    /// The plan's index of member `i` (the collector's and the report's device number).
    pub fn local(&self, i: usize) -> u64 {
        u64::from(self.thread) + i as u64 * u64::from(self.threads.max(1))
    }

    /// The device member `i` is.
    pub fn device_ref(&self, i: usize) -> Option<DeviceRef> {
        self.plan.device(self.local(i))
    }

    /// Members this thread runs.
    pub fn members(&self) -> usize {
        let n = self.plan.len();
        let t = u64::from(self.thread);
        let k = u64::from(self.threads.max(1));
        if n <= t {
            0
        } else {
            (n - t).div_ceil(k) as usize
        }
    }

    /// When member `i` powers on.
    pub fn power_on_at(&self, i: usize) -> Instant {
        self.start
            + self
                .device_ref(i)
                .map_or(Duration::ZERO, |d| self.plan.start_offset(d))
    }

    /// Member `i`'s device as it powers on: its endpoint and application (its OSCORE context
    /// and uplink are added by the caller).
    pub fn device(
        &self,
        i: usize,
        tree: Arc<ResourceTree<FleetSensor>>,
    ) -> Option<Device<FleetSensor>> {
        let d = self.device_ref(i)?;
        let shared = self.shared.get(d.fleet)?.clone();
        let first = self.start + self.plan.first_report(d).unwrap_or(Duration::ZERO);
        let app = FleetSensor::new(shared, u32::try_from(d.n).ok()?, first);
        let coap = match &self.plan.fleet(d)?.transport {
            Transport::Udp | Transport::Lowpan(_) => Config::default(),
            Transport::Nbiot(nbiot) => nbiot.coap_config(usize::try_from(d.n).ok()?),
        };
        Some(Device::new(coap, self.plan.endpoint_seed(d), tree, app))
    }

    /// Member `i`'s device as it powers on at `now` with its uplink: on UDP, or behind its
    /// emulated modem and carrier for an NB-IoT fleet (`modems`: each fleet's modem settings;
    /// the uplink starts when the modem is ready).
    fn node(
        &self,
        i: usize,
        now: Instant,
        device: Device<FleetSensor>,
        modems: &[Option<ModemConfig>],
    ) -> Option<Node> {
        let d = self.device_ref(i)?;
        let uplink = self.uplink(i)?;
        match &self.plan.fleet(d)?.transport {
            Transport::Udp => Some(Node::Udp(device.with_uplink(now, uplink))),
            Transport::Lowpan(plan) => {
                let iid = u128::from(self.plan.address(d)?) as u64;
                Some(Node::Lowpan(Box::new(LowpanNode::new(
                    plan, iid, now, device, uplink,
                ))))
            }
            Transport::Nbiot(nbiot) => {
                let modem = modems.get(d.fleet)?.as_ref()?;
                let n = usize::try_from(d.n).ok()?;
                Some(Node::Nbiot(Box::new(nbiot_fleet::node(
                    nbiot,
                    modem,
                    n,
                    now,
                    (device, uplink),
                ))))
            }
        }
    }

    /// Member `i`'s uplink: it registers from when it powers on.
    fn uplink(&self, i: usize) -> Option<UplinkConfig> {
        let d = self.device_ref(i)?;
        let f = self.plan.fleet(d)?;
        Some(UplinkConfig {
            binding: f.binding,
            max_queued_reports: f.queue,
            lifetime: LIFETIME,
            ..UplinkConfig::new(self.edge, f.device_id(d.n))
        })
    }
}

/// What a member runs once powered on: the SDK's device on UDP, or on an emulated NB-IoT modem.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "UDP devices, the common case, stay inline in their member as before (no allocation per device); an NB-IoT node is boxed"
)]
pub enum Node {
    /// The CoAP core on UDP.
    Udp(Device<FleetSensor>),
    /// The SDK's NB-IoT device (its CoAP core on the AT driver) and its modem and carrier.
    Nbiot(Box<NbiotNode<FleetSensor>>),
    /// The SDK's 6LoWPAN device (its CoAP core on 802.15.4); its datagrams are MAC frames.
    Lowpan(Box<LowpanNode<FleetSensor>>),
}

/// Runs the same code on whichever node it is (both implement [`NodeCore`]).
macro_rules! each {
    ($node:expr, $d:ident => $e:expr) => {
        match $node {
            Node::Udp($d) => $e,
            Node::Nbiot(boxed) => {
                let $d = &mut **boxed;
                $e
            }
            Node::Lowpan(boxed) => {
                let $d = &mut **boxed;
                $e
            }
        }
    };
}

/// As `each!`, for a shared reference.
macro_rules! each_ref {
    ($node:expr, $d:ident => $e:expr) => {
        match $node {
            Node::Udp($d) => $e,
            Node::Nbiot(boxed) => {
                let $d = &**boxed;
                $e
            }
            Node::Lowpan(boxed) => {
                let $d = &**boxed;
                $e
            }
        }
    };
}

impl Node {
    /// Its CoAP core (the device's counters).
    pub fn core(&self) -> &Device<FleetSensor> {
        match self {
            Node::Udp(d) => d,
            Node::Nbiot(n) => n.device.device(),
            Node::Lowpan(n) => n.device.coap(),
        }
    }

    /// The 6LoWPAN device, for a 6LoWPAN fleet's member.
    pub fn lowpan(&self) -> Option<&LowpanNode<FleetSensor>> {
        match self {
            Node::Lowpan(n) => Some(n),
            Node::Udp(_) | Node::Nbiot(_) => None,
        }
    }

    /// The NB-IoT device and its modem, for an NB-IoT fleet's member.
    pub fn nbiot(&self) -> Option<&NbiotNode<FleetSensor>> {
        match self {
            Node::Udp(_) | Node::Lowpan(_) => None,
            Node::Nbiot(n) => Some(n),
        }
    }

    fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        each!(self, d => NodeCore::handle_datagram(d, now, peer, bytes));
    }

    fn handle_timeout(&mut self, now: Instant) {
        each!(self, d => NodeCore::handle_timeout(d, now));
    }

    fn poll_timeout(&self) -> Option<Instant> {
        each_ref!(self, d => NodeCore::poll_timeout(d))
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        each!(self, d => NodeCore::poll_transmit(d))
    }

    fn log_events(&mut self) {
        each!(self, d => while let Some(event) = NodeCore::poll_event(d) {
            tracing::debug!(?event, "device event");
        });
    }

    fn state_to_persist(&self) -> Option<DurableState> {
        each_ref!(self, d => NodeCore::state_to_persist(d))
    }

    fn state_persisted(&mut self, now: Instant, state: DurableState) {
        each!(self, d => NodeCore::state_persisted(d, now, state));
    }

    fn poll_address_request(&mut self) -> Option<AddressRequest> {
        each!(self, d => NodeCore::poll_address_request(d))
    }

    fn handle_address(&mut self, now: Instant, address: Option<IpAddr>) {
        each!(self, d => NodeCore::handle_address(d, now, address));
    }
}

/// A sans-IO device core as a shard drives it: datagrams and time in; datagrams, deadlines and
/// the OSCORE state to write out.
pub trait NodeCore {
    /// What it reports (logged at debug level).
    type Event: std::fmt::Debug;
    /// A datagram for it from `peer`.
    fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]);
    /// Time has reached its deadline.
    fn handle_timeout(&mut self, now: Instant);
    /// Its next deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// A datagram to send: (destination, bytes).
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    /// Its next event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// OSCORE state to write before it may go on.
    fn state_to_persist(&self) -> Option<DurableState>;
    /// `state` is durable.
    fn state_persisted(&mut self, now: Instant, state: DurableState);
    /// It wants an address from the link (an emulated modem attaching, or re-attaching with a
    /// new address after a sleep).
    fn poll_address_request(&mut self) -> Option<AddressRequest> {
        None
    }
    /// The link's answer: the member's address (`None` when the link cannot give one).
    fn handle_address(&mut self, _now: Instant, _address: Option<IpAddr>) {}
}

impl NodeCore for Device<FleetSensor> {
    type Event = v6iot_sdk::coap::Event;

    fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        Device::handle_datagram(self, now, peer, bytes);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Device::handle_timeout(self, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Device::poll_timeout(self)
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        Device::poll_transmit(self).map(|t| (t.destination, t.contents))
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        Device::poll_event(self)
    }

    fn state_to_persist(&self) -> Option<DurableState> {
        Device::state_to_persist(self)
    }

    fn state_persisted(&mut self, now: Instant, state: DurableState) {
        Device::state_persisted(self, now, state);
    }
}

/// One device of a shard.
pub struct Member {
    device: Option<Node>,
    /// The deadline of the earliest entry the wheel holds for this member (µs since the
    /// shard's origin, plus 1; 0 for none). A later deadline is not queued while an earlier
    /// entry is: when that one comes due the member's deadline is read again.
    queued: u64,
    /// Registrations seen so far.
    regs: u16,
    powered: bool,
    /// Its socket failed for good; it is out of the loop.
    dead: bool,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("queued", &self.queued)
            .field("powered", &self.powered)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl Default for Member {
    fn default() -> Self {
        Member::new()
    }
}

impl Member {
    /// A member that powers on later (its device is built then).
    pub fn new() -> Member {
        Member {
            device: None,
            queued: 0,
            regs: 0,
            powered: false,
            dead: false,
        }
    }

    /// The device's CoAP core.
    pub fn device(&self) -> Option<&Device<FleetSensor>> {
        self.device.as_ref().map(Node::core)
    }

    /// The device as it runs (UDP or NB-IoT).
    pub fn node(&self) -> Option<&Node> {
        self.device.as_ref()
    }

    /// Whether it powered on.
    pub fn powered(&self) -> bool {
        self.powered
    }
}

/// What a shard counted besides what its devices count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    /// Waits for datagrams that returned (driver).
    pub waits: u64,
    /// Pauses of [`PACE`] taken while busy (driver).
    pub pauses: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams handed out to send.
    pub sent: u64,
    /// Datagrams dropped because the send failed (the core retransmits Confirmable ones).
    pub send_failures: u64,
    /// Datagrams for a member that was not powered on or is dead.
    pub unroutable: u64,
    /// Datagrams the link model lost, device to edge.
    pub link_lost_up: u64,
    /// Datagrams the link model lost, edge to device.
    pub link_lost_down: u64,
    /// Datagrams lost because the link model's delay queue was full.
    pub delay_overflow: u64,
    /// Members whose socket failed for good.
    pub dead: u64,
    /// Failed writes of OSCORE state (retried after a second).
    pub store_failures: u64,
    /// Addresses the members asked the link for (emulated modems attaching).
    #[serde(default)]
    pub addresses: u64,
}

/// A datagram to send: from member `member` to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The member that sends it.
    pub member: usize,
    /// Where to.
    pub destination: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A datagram the link model holds back.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    Up(Outgoing),
    Down {
        member: usize,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
}

/// The members of one shard thread, sans-IO. See the module docs.
pub struct ShardCore<St: MemberStore> {
    roster: Roster,
    members: Vec<Member>,
    /// Per member until it powers on: its OSCORE context (`None` for a plain device).
    contexts: Vec<Option<Box<SecurityContext>>>,
    tree: Arc<ResourceTree<FleetSensor>>,
    store: St,
    wheel: TimerWheel,
    /// Members whose wheel entries came due, from `due_next` on not yet handled (a bounded
    /// turn left them; [`ShardCore::handle_timeout_at_most`]).
    due: Vec<u32>,
    due_next: usize,
    /// When the first of the unhandled `due` entries was taken from the wheel.
    due_since: Option<Instant>,
    out: VecDeque<Outgoing>,
    held: BinaryHeap<Reverse<(Instant, u64)>>,
    held_items: HashMap<u64, Held>,
    next_held: u64,
    link: LinkModel,
    /// Per fleet: the modem settings of an NB-IoT fleet's devices.
    modems: Vec<Option<ModemConfig>>,
    /// Members that asked for an address, and what they asked.
    addressing: VecDeque<(usize, AddressRequest)>,
    /// Members whose state failed to store: when to try again (at most one per member).
    retry_store: HashMap<usize, Instant>,
    timeline: Timeline,
    /// The thread's CPU per interval (only `cpu_s` of each bucket is used).
    cpu: Timeline,
    /// Per fleet: power-on to first registration.
    registration: Vec<LatencyHistogram>,
    timer_lag: LatencyHistogram,
    stats: ShardStats,
    /// Reports made and not yet resolved (acknowledged, refused or dropped) at the devices.
    pending: i64,
}

/// Everything a shard hands back at the end of a run.
#[derive(Debug)]
pub struct ShardResult {
    /// The members, with their devices (whose applications know each report's fate).
    pub members: Vec<Member>,
    /// Which devices they are.
    pub roster: Roster,
    /// What happened over time.
    pub timeline: Timeline,
    /// Per fleet: time from power-on to first registration.
    pub registration: Vec<LatencyHistogram>,
    /// How late deadlines were handled (a busy simulator shows here).
    pub timer_lag: LatencyHistogram,
    /// Datagram counts.
    pub stats: ShardStats,
    /// CPU the thread used, seconds (0 in tests on virtual time).
    pub cpu_s: f64,
    /// The thread's CPU per interval.
    pub cpu: Timeline,
    /// What the shard's medium carried, when its members were 6LoWPAN devices.
    pub air: Option<AirReport>,
}

impl<St: MemberStore> ShardCore<St> {
    /// A core for the roster's members, none powered on yet: member `i` powers on at its
    /// planned time as a device on `tree` with `contexts[i]` (OSCORE, or none), writing its
    /// OSCORE state to `store`; `link` models the network; counts over time in intervals of
    /// `bucket`.
    pub fn new(
        roster: Roster,
        contexts: Vec<Option<Box<SecurityContext>>>,
        tree: Arc<ResourceTree<FleetSensor>>,
        store: St,
        link: LinkModel,
        bucket: Duration,
    ) -> Self {
        let mut wheel = TimerWheel::new(roster.start);
        let mut members: Vec<Member> = (0..roster.members()).map(|_| Member::new()).collect();
        for (i, m) in members.iter_mut().enumerate() {
            let at = roster.power_on_at(i);
            m.queued = micros_key(roster.start, at);
            wheel.insert(at, i as u32);
        }
        let fleets = roster.plan.scenario().fleets.len();
        let modems = roster
            .plan
            .scenario()
            .fleets
            .iter()
            .map(|f| match &f.transport {
                Transport::Udp | Transport::Lowpan(_) => None,
                Transport::Nbiot(nbiot) => nbiot
                    .modem_config()
                    .inspect_err(|e| tracing::error!(fleet = %f.name, error = %e, "the fleet's PSM timers cannot be encoded; its devices stay off"))
                    .ok(),
            })
            .collect();
        ShardCore {
            timeline: Timeline::new(roster.start, bucket),
            cpu: Timeline::new(roster.start, bucket),
            roster,
            members,
            contexts,
            tree,
            store,
            wheel,
            due: Vec::new(),
            due_next: 0,
            due_since: None,
            out: VecDeque::new(),
            held: BinaryHeap::new(),
            held_items: HashMap::new(),
            next_held: 0,
            link,
            modems,
            addressing: VecDeque::new(),
            retry_store: HashMap::new(),
            registration: (0..fleets).map(|_| LatencyHistogram::new()).collect(),
            timer_lag: LatencyHistogram::new(),
            stats: ShardStats::default(),
            pending: 0,
        }
    }

    /// Which devices it runs.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Counts so far.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Reports made and not yet resolved at the devices (queued, or on their way).
    pub fn pending_reports(&self) -> i64 {
        self.pending
    }

    /// Whether every member powered on.
    pub fn all_powered(&self) -> bool {
        self.members.iter().all(|m| m.powered || m.dead)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        let o = self.out.pop_front()?;
        self.stats.sent += 1;
        Some(o)
    }

    /// The next member that asks the link for an address: its answer goes to
    /// [`ShardCore::handle_address`].
    pub fn poll_address_request(&mut self) -> Option<(usize, AddressRequest)> {
        let request = self.addressing.pop_front()?;
        self.stats.addresses += 1;
        Some(request)
    }

    /// The link's answer to member `member`'s address request (`None`: it has none to give).
    pub fn handle_address(&mut self, now: Instant, member: usize, address: Option<IpAddr>) {
        self.drive(now, member, |d| d.handle_address(now, address));
    }

    /// When [`ShardCore::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = self.held.peek().map(|r| r.0.0);
        [self.wheel.poll_timeout(), held, self.due_since]
            .into_iter()
            .flatten()
            .min()
    }

    /// A datagram for member `member` from `peer`, through the link model.
    pub fn handle_datagram(&mut self, now: Instant, member: usize, peer: SocketAddr, bytes: &[u8]) {
        let fleet = self.roster.device_ref(member).map_or(0, |d| d.fleet);
        match self.link.judge(now, fleet, bytes.len()) {
            Verdict::Now => self.deliver(now, member, peer, bytes),
            Verdict::Lost => {
                self.stats.link_lost_down += 1;
                self.timeline.counts(now).link_lost += 1;
            }
            Verdict::At(at) => self.hold(
                now,
                at,
                Held::Down {
                    member,
                    peer,
                    bytes: bytes.to_vec(),
                },
            ),
        }
    }

    /// Member `member`'s socket failed for good: it leaves the loop.
    pub fn handle_failure(&mut self, member: usize) {
        if let Some(m) = self.members.get_mut(member)
            && !m.dead
        {
            m.dead = true;
            self.stats.dead += 1;
        }
    }

    /// Lets time pass: datagrams the link held come out, devices due are woken (or powered on).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_at_most(now, usize::MAX);
    }

    /// As [`ShardCore::handle_timeout`], waking at most `max` due members (the held datagrams
    /// all come out); the others stay due ([`ShardCore::poll_timeout`] says so) and the next
    /// call wakes them first. Returns whether any are left.
    pub fn handle_timeout_at_most(&mut self, now: Instant, max: usize) -> bool {
        while let Some(&Reverse((at, key))) = self.held.peek() {
            if at > now {
                break;
            }
            self.held.pop();
            match self.held_items.remove(&key) {
                Some(Held::Up(o)) => self.out.push_back(o),
                Some(Held::Down {
                    member,
                    peer,
                    bytes,
                }) => self.deliver(now, member, peer, &bytes),
                None => {}
            }
        }
        if self.due_next >= self.due.len() {
            self.due.clear();
            self.due_next = 0;
        }
        // Entries that came due since are queued behind the ones left over.
        let before = self.due.len();
        self.wheel.expire(now, &mut self.due);
        if self.due.len() > before && self.due_since.is_none() {
            self.due_since = Some(now);
        }
        let end = self.due.len().min(self.due_next.saturating_add(max));
        while self.due_next < end {
            let i = self.due.get(self.due_next).copied();
            self.due_next += 1;
            if let Some(i) = i {
                self.wake(now, i as usize);
            }
        }
        let left = self.due_next < self.due.len();
        if !left {
            self.due_since = None;
        }
        left
    }

    /// Member `i`'s wheel entry came due: powers it on, or wakes its device if its deadline
    /// has come (else queues its deadline again).
    fn wake(&mut self, now: Instant, i: usize) {
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        if m.dead || m.queued == 0 || micros_key(self.roster.start, now) < m.queued {
            return; // stale: replaced by an earlier entry already handled, or not due
        }
        let deadline = m.queued;
        m.queued = 0;
        self.timer_lag.record_us(
            micros_key(self.roster.start, now).saturating_sub(deadline),
            1,
        );
        if !m.powered {
            self.power_on(now, i);
            return;
        }
        let wake = self.deadline(i).is_some_and(|d| d <= now);
        if wake {
            self.drive(now, i, |d| d.handle_timeout(now));
        } else {
            self.arm(i);
        }
    }

    /// Builds member `i`'s device (with its credentials) and starts its registration (an
    /// NB-IoT device first brings its modem up and attaches).
    fn power_on(&mut self, now: Instant, i: usize) {
        let Some(device) = self.roster.device(i, self.tree.clone()) else {
            return;
        };
        let ctx = self.contexts.get_mut(i).and_then(Option::take);
        let device = match ctx {
            Some(ctx) => device.with_credentials(*ctx),
            None => device,
        };
        let Some(node) = self.roster.node(i, now, device, &self.modems) else {
            return;
        };
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        m.powered = true;
        m.device = Some(node);
        // Built with its uplink, the device has sent its first registration already: counted
        // from nothing.
        self.drive_counted_from_start(now, i, |_| {});
    }

    fn deliver(&mut self, now: Instant, member: usize, peer: SocketAddr, bytes: &[u8]) {
        if self
            .members
            .get(member)
            .is_none_or(|m| m.dead || !m.powered)
        {
            self.stats.unroutable += 1;
            return;
        }
        self.stats.received += 1;
        self.timeline.counts(now).datagrams_received += 1;
        self.drive(now, member, |d| d.handle_datagram(now, peer, bytes));
    }

    /// Runs `f` on member `i`'s device, then takes what it has to hand out (events, OSCORE
    /// state to store, datagrams), counts what changed and arms its next deadline.
    fn drive(&mut self, now: Instant, i: usize, f: impl FnOnce(&mut Node)) {
        self.drive_from(now, i, false, f);
    }

    /// As [`ShardCore::drive`] on a device just built: its registration requests are counted
    /// from none (what it sent while being built included).
    fn drive_counted_from_start(&mut self, now: Instant, i: usize, f: impl FnOnce(&mut Node)) {
        self.drive_from(now, i, true, f);
    }

    fn drive_from(&mut self, now: Instant, i: usize, fresh: bool, f: impl FnOnce(&mut Node)) {
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        let Some(device) = m.device.as_mut() else {
            return;
        };
        let mut before = Snapshot::of(device.core());
        if fresh {
            before.registration = RegistrationCounts::default();
        }
        f(device);
        device.log_events();
        let retry = self.retry_store.get(&i).copied();
        if retry.is_none_or(|t| t <= now) {
            self.retry_store.remove(&i);
            while let Some(state) = device.state_to_persist() {
                match self.store.store(i, state) {
                    Ok(()) => device.state_persisted(now, state),
                    Err(e) => {
                        tracing::error!(?state, error = %e, "cannot store the OSCORE state (sequence-number mark, replay floor); messages wait");
                        self.stats.store_failures += 1;
                        self.retry_store.insert(i, now + STORE_RETRY);
                        break;
                    }
                }
            }
        }
        let mut sends = Vec::new();
        while let Some(t) = device.poll_transmit() {
            sends.push(t);
        }
        if let Some(request) = device.poll_address_request() {
            self.addressing.push_back((i, request));
        }
        let after = Snapshot::of(device.core());
        let (before_regs, regs) = (m.regs, after.registrations);
        m.regs = regs.max(before_regs);
        let counts = self.timeline.counts(now);
        after.add_to(&before, counts);
        if regs > before_regs {
            if before_regs == 0 {
                counts.registered += 1;
                counts.reregistered += u64::from(regs - 1);
                let on = self.roster.power_on_at(i);
                let fleet = self.roster.device_ref(i).map_or(0, |d| d.fleet);
                if let Some(h) = self.registration.get_mut(fleet) {
                    h.record_us(micros(now.saturating_duration_since(on)), 1);
                }
            } else {
                counts.reregistered += u64::from(regs - before_regs);
            }
        }
        self.pending += after.pending() - before.pending();
        let fleet = self.roster.device_ref(i).map_or(0, |d| d.fleet);
        for (destination, bytes) in sends {
            let o = Outgoing {
                member: i,
                destination,
                bytes,
            };
            match self.link.judge(now, fleet, o.bytes.len()) {
                Verdict::Now => {
                    self.timeline.counts(now).datagrams_sent += 1;
                    self.out.push_back(o);
                }
                Verdict::Lost => {
                    self.stats.link_lost_up += 1;
                    self.timeline.counts(now).link_lost += 1;
                }
                Verdict::At(at) => {
                    self.timeline.counts(now).datagrams_sent += 1;
                    self.hold(now, at, Held::Up(o));
                }
            }
        }
        self.arm(i);
    }

    fn hold(&mut self, now: Instant, at: Instant, item: Held) {
        if self.held_items.len() >= MAX_DELAYED {
            self.stats.delay_overflow += 1;
            self.timeline.counts(now).link_lost += 1;
            return;
        }
        let key = self.next_held;
        self.next_held += 1;
        self.held.push(Reverse((at, key)));
        self.held_items.insert(key, item);
    }

    /// Member `i`'s next deadline: its device's, or the retry of a state that failed to store.
    fn deadline(&self, i: usize) -> Option<Instant> {
        let m = self.members.get(i)?;
        if m.dead {
            return None;
        }
        if !m.powered {
            return Some(self.roster.power_on_at(i));
        }
        let device = m.device.as_ref()?.poll_timeout();
        match (device, self.retry_store.get(&i).copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Queues member `i`'s deadline unless an entry at or before it is queued already.
    fn arm(&mut self, i: usize) {
        let Some(t) = self.deadline(i) else {
            return;
        };
        let key = micros_key(self.roster.start, t);
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        if m.queued == 0 || key < m.queued {
            m.queued = key;
            self.wheel.insert(t, i as u32);
        }
    }

    /// Ends the run: the members, their counts and the thread's CPU.
    pub fn finish(self, cpu_s: f64) -> ShardResult {
        ShardResult {
            members: self.members,
            roster: self.roster,
            timeline: self.timeline,
            registration: self.registration,
            timer_lag: self.timer_lag,
            stats: self.stats,
            cpu_s,
            cpu: self.cpu,
            air: None,
        }
    }

    /// Counts `seconds` of the thread's CPU, used from `since` to `now`, in the intervals of
    /// that span.
    pub fn add_cpu(&mut self, since: Instant, now: Instant, seconds: f64) {
        self.cpu.spread_cpu(since, now, seconds);
    }
}

/// A device's counters before and after an input, to count what the input changed.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    reports: ReportCounts,
    registrations: u16,
    /// What the device's registration requests came to (attempts, failures by kind).
    registration: RegistrationCounts,
    retransmissions: u64,
}

impl Snapshot {
    fn of(d: &Device<FleetSensor>) -> Snapshot {
        Snapshot {
            reports: *d.app().counts(),
            registrations: d
                .registration()
                .map_or(0, |r| u16::try_from(r.registrations()).unwrap_or(u16::MAX)),
            registration: d
                .registration()
                .map_or(RegistrationCounts::default(), |r| r.counts()),
            retransmissions: d.endpoint().stats().retransmissions,
        }
    }

    fn pending(&self) -> i64 {
        i64::from(self.reports.made) - self.reports.resolved() as i64
    }

    /// Adds what changed since `before` to `c`.
    fn add_to(&self, before: &Snapshot, c: &mut Counts) {
        let (a, b) = (&self.reports, &before.reports);
        let d = |x: u32, y: u32| u64::from(x.saturating_sub(y));
        c.made += d(a.made, b.made);
        c.acknowledged += d(a.acked, b.acked);
        c.refused += d(a.refused, b.refused);
        c.dropped += d(a.dropped, b.dropped);
        c.busy_503 += d(a.busy, b.busy);
        c.timeouts += d(a.timeouts, b.timeouts);
        c.forbidden += d(a.forbidden, b.forbidden);
        let (a, b) = (&self.registration, &before.registration);
        c.registration_attempts += d(a.attempts, b.attempts);
        c.registration_busy_503 += d(a.busy, b.busy);
        c.registration_refused += d(a.refused, b.refused);
        c.registration_unanswered += d(a.unanswered, b.unanswered);
        c.retransmissions += self.retransmissions.saturating_sub(before.retransmissions);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `at` as a wheel key: µs since `origin`, plus 1 (0 means none).
fn micros_key(origin: Instant, at: Instant) -> u64 {
    micros(at.saturating_duration_since(origin)).saturating_add(1)
}

/// CPU time this thread used so far, seconds.
pub fn thread_cpu() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// When the driver stops.
#[derive(Debug, Clone, Copy)]
pub struct Stop {
    /// The end of the reporting period: from then on the run ends as soon as every report is
    /// resolved at the devices.
    pub soft: Instant,
    /// The end of the drain: the run ends then whatever is left.
    pub hard: Instant,
}

/// Runs the core over `link` on the wall clock until `stop`, then hands back what it counted.
pub fn run<St: MemberStore, L: Link>(
    core: ShardCore<St>,
    link: &mut L,
    stop: Stop,
) -> io::Result<ShardResult> {
    run_with(core, link, stop, &mut |_, _| {})
}

/// How often the driver tells its caller how the run goes.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// As [`run`], calling `progress` with the totals so far and the reports pending at the devices
/// about every [`PROGRESS_EVERY`].
pub fn run_with<St: MemberStore, L: Link>(
    mut core: ShardCore<St>,
    link: &mut L,
    stop: Stop,
    progress: &mut dyn FnMut(&Counts, i64),
) -> io::Result<ShardResult> {
    let cpu_start = thread_cpu();
    let mut cpu_mark = cpu_start;
    let mut cpu_mark_at = Instant::now();
    let mut next_sample = Instant::now() + PROGRESS_EVERY;
    let mut samples = 0u32;
    // When the last wait returned datagrams, the shard was busy then.
    let mut busy_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // Reports due before the soft stop are made before the stop is judged: what a run
        // makes is a function of the plan, not of when the last wait ended.
        let behind = core.handle_timeout_at_most(now, DEADLINES_PER_TURN);
        if now >= stop.hard
            || (now >= stop.soft && core.pending_reports() <= 0 && core.all_powered())
        {
            break;
        }
        if now >= next_sample {
            progress(&core.timeline.total(), core.pending_reports());
            samples += 1;
            if samples.is_multiple_of(4) {
                let cpu = thread_cpu();
                core.add_cpu(cpu_mark_at, now, cpu - cpu_mark);
                cpu_mark = cpu;
                cpu_mark_at = now;
            }
            next_sample = now + PROGRESS_EVERY;
        }
        send(&mut core, link);
        let next = core
            .poll_timeout()
            .map_or(stop.hard, |t| t.min(stop.hard))
            .min(next_sample);
        // Busy: let datagrams gather for the rest of the pace before looking at the sockets
        // (not while deadlines are left over from this turn).
        if let Some(rest) = busy_since
            .filter(|_| !behind)
            .and_then(|b| (b + PACE).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(rest.min(stop.hard.saturating_duration_since(Instant::now())));
            core.stats.pauses += 1;
        }
        let wait = next.saturating_duration_since(Instant::now());
        let mut now = None;
        link.receive(wait, &mut |arrival| {
            // the clock is read once per wait, when the first datagram is handed over
            let now = *now.get_or_insert_with(Instant::now);
            match arrival {
                Arrival::Datagram {
                    member,
                    peer,
                    bytes,
                } => core.handle_datagram(now, member, peer, bytes),
                Arrival::Failed { member, error } => {
                    tracing::warn!(%error, "device socket failed; the device stops");
                    core.handle_failure(member);
                }
            }
        })?;
        core.stats.waits += 1;
        busy_since = now;
        send(&mut core, link);
    }
    let end = Instant::now();
    progress(&core.timeline.total(), core.pending_reports());
    let cpu = thread_cpu();
    core.add_cpu(cpu_mark_at, end, cpu - cpu_mark);
    Ok(core.finish(cpu - cpu_start))
}

/// Answers the members' address requests from the link (which may make them send), then sends
/// what the core produced, in order.
fn send<St: MemberStore, L: Link>(core: &mut ShardCore<St>, link: &mut L) {
    while let Some((member, request)) = core.poll_address_request() {
        let address = match request {
            AddressRequest::Current => link.address(member),
            AddressRequest::Fresh => link
                .readdress(member)
                .inspect_err(|e| tracing::warn!(error = %e, "no new address for the member"))
                .ok(),
        };
        core.handle_address(Instant::now(), member, address);
    }
    while let Some(o) = core.poll_transmit() {
        if let Err(e) = link.send(o.member, o.destination, &o.bytes) {
            core.stats.send_failures += 1;
            tracing::warn!(peer = %o.destination, error = %e, "send failed; datagram dropped");
        }
    }
}
