//! A fleet of the SDK's 6LoWPAN devices (`LowpanDevice`, planned addresses, OSCORE) on one
//! thread, talking ZEP v2 over one UDP socket point to point with the edge's border router:
//! frames from the router go to the device they are addressed to (broadcasts to all).

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use v6iot_sdk::addr::{DeviceAddress, SitePrefix};
use v6iot_sdk::coap::{
    App, Changed, Code, Config, Device, Resource, ResourceTree, Response, content_format as cf,
};
use v6iot_sdk::lowpan::device::{LowpanConfig, LowpanDevice, UplinkTarget};
use v6iot_sdk::oscore::{ContextConfig, ContextInput, SecurityContext};
use v6iot_sdk::radio::MacFrame;
use v6iot_sdk::radio::mac::{DataHeader, LinkAddr, PanId};
use v6iot_sdk::radio::zep::{self, NtpTime, ZepHeader};
use v6iot_sdk::senml::{self, PackBuilder, Record};
use v6iot_sdk::time::Instant;
use v6iot_sdk::uplink::{RegistrationState, UplinkConfig};

pub(super) const PAN: u16 = 0xabcd;
pub(super) const CHANNEL: u8 = 26;
pub(super) const PREFIX: &str = "2001:db8:1200:305::/64";
pub(super) const ROUTER_EUI: &str = "02:00:00:00:00:00:00:01";
pub(super) const ROUTER_GLOBAL: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x1200, 0x305, 0, 0, 0, 1);

/// Device `n`'s planned address: site 2001:db8:1200::/48, plant 3, line 5, class 0x12.
pub(super) fn planned(n: usize) -> DeviceAddress {
    let site: SitePrefix = "2001:db8:1200::/48".parse().unwrap();
    DeviceAddress::new(site, 3, 5, 0x12, 0x3456_0000 + n as u64).unwrap()
}

/// Device `n`'s name and one-byte OSCORE kid (tests have fewer than 255 devices).
pub(super) fn id(n: usize) -> (String, u8) {
    (format!("ld{n}"), (n % 255) as u8 + 1)
}

/// A sensor with a valve: reports `reports` SenML-CBOR packs (with a `seq` record; every
/// `big_every`-th with a long text record, so it is fragmented), one every `every`.
pub(super) struct Node {
    id: String,
    next: Instant,
    every: Duration,
    reports: u64,
    big_every: u64,
    seq: u64,
    pending: Option<Vec<u8>>,
    valve: Arc<Mutex<Vec<bool>>>,
    index: usize,
}

/// The text of a big report's `note` record.
pub(super) fn big_note(seq: u64) -> String {
    format!(
        "{seq}: {}",
        "the quick brown fox jumps over the lazy dog ".repeat(5)
    )
}

impl App for Node {
    fn poll_timeout(&self) -> Option<Instant> {
        (self.seq < self.reports).then_some(self.next)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        self.seq += 1;
        self.next = now + self.every;
        let mut pack = PackBuilder::new()
            .base_name(format!("urn:dev:e2e:{}:", self.id))
            .record(Record::measurement("flow", "m3/s", self.seq as f64 * 0.5))
            .record(Record {
                n: Some("seq".into()),
                v: Some(self.seq as f64),
                ..Record::default()
            });
        if self.big_every > 0 && self.seq.is_multiple_of(self.big_every) {
            pack = pack.record(Record {
                n: Some("note".into()),
                vs: Some(big_note(self.seq)),
                ..Record::default()
            });
        }
        self.pending = Some(senml::to_cbor(&pack.build()).unwrap());
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        self.pending.take().map(|b| (cf::SENML_CBOR, b))
    }
}

/// The link format of `/.well-known/core`, long enough to be fragmented.
fn tree() -> Arc<ResourceTree<Node>> {
    let mut t = ResourceTree::new();
    t.add(
        Resource::new("valve")
            .content_formats(&[cf::TEXT_PLAIN])
            .accepts(&[cf::TEXT_PLAIN])
            .get(|n: &mut Node, _| {
                let open = n.valve.lock().unwrap()[n.index];
                Response::content(0, if open { b"1".to_vec() } else { b"0".to_vec() }).into()
            })
            .put(|n: &mut Node, r| {
                n.valve.lock().unwrap()[n.index] = r.payload == b"1";
                Response::code(Code::Changed).into()
            }),
    )
    .unwrap();
    for name in [
        "sensors/flow-rate-primary",
        "sensors/flow-rate-secondary",
        "sensors/inlet-temperature",
        "sensors/outlet-temperature",
        "sensors/line-pressure",
        "diagnostics/self-test-report",
    ] {
        t.add(
            Resource::new(name)
                .content_formats(&[cf::TEXT_PLAIN, cf::SENML_CBOR])
                .get(|n: &mut Node, _| Response::content(0, n.seq.to_string().into_bytes()).into()),
        )
        .unwrap();
    }
    Arc::new(t)
}

/// Device n's OSCORE kid and master secret.
pub(super) type Credentials = fn(usize) -> (Vec<u8>, Vec<u8>);

/// The device's side of the OSCORE context of kid `kid` with `secret`.
pub(super) fn device_context(kid: &[u8], secret: &[u8]) -> SecurityContext {
    let input = ContextInput {
        master_secret: secret.to_vec(),
        master_salt: Vec::new(),
        id_context: None,
        sender_id: kid.to_vec(),
        recipient_id: Vec::new(),
    };
    SecurityContext::new(&input, ContextConfig::default()).unwrap()
}

/// How a fleet runs.
pub(super) struct FleetConfig {
    pub devices: usize,
    pub reports: u64,
    pub every: Duration,
    /// Every n-th report is big (0: none).
    pub big_every: u64,
    /// Device n's OSCORE kid and master secret; `None`: plain CoAP.
    pub credentials: Option<Credentials>,
}

/// What the test sees of the running fleet.
#[derive(Default)]
pub(super) struct View {
    /// Each device's global address, once attached.
    pub addresses: Vec<Option<Ipv6Addr>>,
    /// Reports acknowledged per device.
    pub acked: Vec<u64>,
    /// Devices registered (or updating their registration).
    pub registered: usize,
    /// Frames the fleet sent and received.
    pub frames_out: u64,
    pub frames_in: u64,
}

/// A running fleet.
pub(super) struct Fleet {
    pub view: Arc<Mutex<View>>,
    pub valves: Arc<Mutex<Vec<bool>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fleet {
    /// A fleet's socket (bound now, so the edge can be configured with its address); the
    /// devices start with [`Fleet::start`].
    pub(super) fn bind() -> UdpSocket {
        UdpSocket::bind("[::1]:0").unwrap()
    }

    /// Starts the fleet on `socket`, sending to the router's ZEP socket `router`.
    pub(super) fn start(socket: UdpSocket, router: SocketAddr, config: FleetConfig) -> Fleet {
        let view = Arc::new(Mutex::new(View {
            addresses: vec![None; config.devices],
            acked: vec![0; config.devices],
            ..View::default()
        }));
        let valves = Arc::new(Mutex::new(vec![false; config.devices]));
        let stop = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        let devices: Vec<LowpanDevice<Node>> = (0..config.devices)
            .map(|n| {
                let (name, _) = id(n);
                // First reports spread over one period.
                let offset = config.every.mul_f64(n as f64 / config.devices as f64);
                let app = Node {
                    id: name.clone(),
                    next: now + Duration::from_millis(300) + offset,
                    every: config.every,
                    reports: config.reports,
                    big_every: config.big_every,
                    seq: 0,
                    pending: None,
                    valve: valves.clone(),
                    index: n,
                };
                let mut coap = Device::new(Config::default(), n as u64, tree(), app);
                if let Some(credentials) = config.credentials {
                    let (kid, secret) = credentials(n);
                    coap = coap.with_credentials(device_context(&kid, &secret));
                }
                let lowpan = LowpanConfig {
                    rs_interval: Duration::from_millis(500),
                    ..LowpanConfig::new(PanId(PAN), planned(n).eui64())
                };
                LowpanDevice::new(now, lowpan, coap).with_uplink(
                    UplinkConfig::new("[::]:0".parse().unwrap(), name),
                    UplinkTarget::Router { port: 5683 },
                )
            })
            .collect();
        let (v, s) = (view.clone(), stop.clone());
        let thread = std::thread::spawn(move || run(socket, router, devices, &v, &s));
        Fleet {
            view,
            valves,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) until `check` holds for the view.
    pub(super) fn await_view(&self, what: &str, limit: Duration, check: impl Fn(&View) -> bool) {
        crate::wait_for(what, limit, || check(&self.view.lock().unwrap()));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    socket: UdpSocket,
    router: SocketAddr,
    mut devices: Vec<LowpanDevice<Node>>,
    view: &Mutex<View>,
    stop: &AtomicBool,
) {
    let by_ll: HashMap<LinkAddr, usize> = (0..devices.len())
        .map(|n| (LinkAddr::Extended(planned(n).eui64().0), n))
        .collect();
    let mut sequence = 0_u32;
    let mut buf = [0_u8; zep::MAX_DATAGRAM + 1];
    let (mut frames_in, mut frames_out) = (0, 0);
    let mut last_view = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for d in &mut devices {
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now);
            }
            // What a driver with a store does: write the OSCORE state, then confirm it.
            while let Some(state) = d.coap().state_to_persist() {
                d.coap_mut().state_persisted(now, state);
                d.flush();
            }
            while let Some(f) = d.poll_transmit() {
                let header = ZepHeader {
                    channel: CHANNEL,
                    device_id: 2,
                    lqi: 255,
                    timestamp: NtpTime::default(),
                    sequence,
                };
                sequence = sequence.wrapping_add(1);
                let mut out = [0_u8; zep::MAX_DATAGRAM];
                let n = zep::encode(&header, f.frame(), &mut out).unwrap();
                socket.send_to(&out[..n], router).unwrap();
                frames_out += 1;
            }
        }
        let wait = devices
            .iter()
            .filter_map(LowpanDevice::poll_timeout)
            .min()
            .map_or(Duration::from_millis(5), |t| {
                t.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_micros(100), Duration::from_millis(5))
            });
        socket.set_read_timeout(Some(wait)).unwrap();
        let mut first = true;
        loop {
            if !first {
                socket.set_nonblocking(true).unwrap();
            }
            let got = socket.recv_from(&mut buf);
            if !first {
                socket.set_nonblocking(false).unwrap();
            }
            first = false;
            let Ok((n, _)) = got else { break };
            let Ok(d) = zep::decode(&buf[..n]) else {
                continue;
            };
            frames_in += 1;
            deliver(&mut devices, &by_ll, d.frame);
        }
        if last_view.elapsed() >= Duration::from_millis(20) {
            last_view = Instant::now();
            let mut v = view.lock().unwrap();
            v.registered = 0;
            for (i, d) in devices.iter().enumerate() {
                v.addresses[i] = d.address();
                v.acked[i] = d.coap().reporter().map_or(0, |r| r.stats().acked);
                let state = d.coap().registration().map(|r| r.state());
                if matches!(
                    state,
                    Some(RegistrationState::Registered { .. } | RegistrationState::Updating { .. })
                ) {
                    v.registered += 1;
                }
            }
            v.frames_in = frames_in;
            v.frames_out = frames_out;
        }
    }
}

fn deliver(
    devices: &mut [LowpanDevice<Node>],
    by_ll: &HashMap<LinkAddr, usize>,
    frame: MacFrame<'_>,
) {
    let now = Instant::now();
    let Ok((h, _)) = DataHeader::parse(frame) else {
        return;
    };
    if h.dst == LinkAddr::BROADCAST {
        for d in devices.iter_mut() {
            d.handle_frame(now, frame);
        }
    } else if let Some(d) = by_ll.get(&h.dst).and_then(|&i| devices.get_mut(i)) {
        d.handle_frame(now, frame);
    }
}
