//! The SDK's NB-IoT driver (`v6iot_sdk::nbiot::driver`, the code a meter runs) against the
//! simulator's modem emulator over a real pty, as it would meet a module on a serial port: the
//! bring-up (PDP context IPV6, `+CEREG=4`, PSM timers asked for and granted), attach, the
//! carrier address, a registration with `b=UQ` and reports through `AT+NSOST`/`AT+NSORF` to a
//! stand-in edge router, a URC written in the middle of every `AT+NSOST` answer, sleep; and a
//! modem that hangs mid-command and comes back.
//!
//! Everything runs inside a network namespace the test creates (root), where the carrier
//! prefix 2001:db8:100::/64 is routed to loopback: the device's datagrams leave from its
//! carrier address, 2001:db8:100::7.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use v6iot_sdk::coap::{App, Changed, Config, Device, ResourceTree};
use v6iot_sdk::nbiot::{
    ModemConfig, ModemEvent, NbiotDevice, NbiotEvent, PsmRequest, T3324, T3412, nbiot_uplink,
};
use v6iot_sdk::time::Instant;
use v6iot_simulator::link::AddressPool;
use v6iot_simulator::nbiot::carrier::{CarrierLink, Cellular, Latency, SplitMix64};
use v6iot_simulator::nbiot::emulator::{EmulatorConfig, ModemEmulator};
use v6iot_simulator::nbiot::pty::{AsyncSerial, Pty, ServeControl, serve};

mod common;

const CARRIER: &str = "2001:db8:100::";

/// Reports every `every`, from `first` on.
#[derive(Debug)]
struct Meter {
    next: Instant,
    every: Duration,
    pending: bool,
}

impl App for Meter {
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        self.next = now + self.every;
        self.pending = true;
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        std::mem::take(&mut self.pending).then(|| (60, vec![0xa1, 0x00, 0x01]))
    }
}

/// What the stand-in edge saw.
#[derive(Debug, Default)]
struct EdgeSeen {
    registrations: Vec<(SocketAddr, Vec<String>)>,
    reports: Vec<SocketAddr>,
}

/// A plain stand-in edge router on `[::1]`: 2.01 with a location for `POST /rd`, 2.04 for
/// `POST /t`, until `stop`.
fn stand_in_edge(stop: Arc<AtomicBool>) -> (SocketAddr, Arc<Mutex<EdgeSeen>>) {
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let address = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(EdgeSeen::default()));
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let p = Packet::from_bytes(&buf[..len]).unwrap();
            let text = |o: CoapOption| -> Vec<String> {
                p.get_option(o)
                    .map(|l| {
                        l.iter()
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let path = text(CoapOption::UriPath);
            let mut r = Packet::new();
            r.header.set_type(MessageType::Acknowledgement);
            r.header.message_id = p.header.message_id;
            r.set_token(p.get_token().to_vec());
            let code = match (p.header.code, path.join("/").as_str()) {
                (MessageClass::Request(RequestType::Post), "rd") => {
                    s.lock()
                        .unwrap()
                        .registrations
                        .push((peer, text(CoapOption::UriQuery)));
                    r.add_option(CoapOption::LocationPath, b"rd".to_vec());
                    r.add_option(CoapOption::LocationPath, b"1".to_vec());
                    ResponseType::Created
                }
                (MessageClass::Request(RequestType::Post), "t") => {
                    s.lock().unwrap().reports.push(peer);
                    ResponseType::Changed
                }
                _ => ResponseType::NotFound,
            };
            r.header.code = MessageClass::Response(code);
            socket.send_to(&r.to_bytes().unwrap(), peer).unwrap();
        }
    });
    (address, seen)
}

/// The emulated modem of the device: attaches after 300 ms, a 20 ms radio path, its carrier
/// address 2001:db8:100::7; served on a pty on a thread of its own until `control.stop`.
fn modem_on_pty(
    config: EmulatorConfig,
    control: Arc<ServeControl>,
) -> (Pty, std::thread::JoinHandle<Cellular>) {
    let pty = Pty::open().unwrap();
    let master = pty.master.try_clone().unwrap();
    let handle = std::thread::spawn(move || {
        let mut pool = AddressPool::bind(CARRIER.parse().unwrap(), 0, 7, 1, 1).unwrap();
        let link = CarrierLink::new(
            Latency::fixed(Duration::from_millis(20)),
            0.0,
            SplitMix64(1),
        );
        let mut cellular = Cellular::new(ModemEmulator::new(config), link);
        serve(&mut cellular, &master, &mut pool, &control).unwrap();
        cellular
    });
    (pty, handle)
}

/// A meter reporting every `every` on the device end of `pty`, asking for PSM with 2 s of
/// active time and a 1 h TAU; commands time out after `command_timeout`.
fn meter(edge: SocketAddr, every: Duration, command_timeout: Duration) -> NbiotDevice<Meter> {
    let start = Instant::now();
    let app = Meter {
        next: start + Duration::from_millis(500),
        every,
        pending: false,
    };
    let core = Device::new(Config::default(), 7, Arc::new(ResourceTree::new()), app)
        .with_uplink(start, nbiot_uplink(edge, "meter-7"));
    let config = ModemConfig {
        psm: Some(PsmRequest {
            periodic_tau: T3412::encode(Duration::from_secs(3600)).unwrap(),
            active_time: T3324::encode(Duration::from_secs(2)).unwrap(),
        }),
        command_timeout,
        ..ModemConfig::new("iot.test")
    };
    NbiotDevice::new(start, core, config)
}

/// Runs `device` on the pty's device end with the SDK's driver until `done` says so (checked
/// every 20 ms, at most `limit`); returns the events.
fn drive(
    pty: &Pty,
    device: &mut NbiotDevice<Meter>,
    limit: Duration,
    mut done: impl FnMut(&[NbiotEvent], &NbiotDevice<Meter>) -> bool,
) -> Vec<NbiotEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    rt.block_on(async {
        let mut serial = AsyncSerial::open(&pty.device_path).unwrap();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Run the driver in slices so the condition can look at the device in between.
            let slice = tokio::time::sleep(Duration::from_millis(20));
            v6iot_sdk::nbiot::driver::run(
                &mut serial,
                device,
                |ev| e.lock().unwrap().push(ev),
                slice,
            )
            .await
            .unwrap();
            if done(&events.lock().unwrap(), device) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not done within {limit:?}: {:?}",
                events.lock().unwrap()
            );
        }
    });
    events.lock().unwrap().clone()
}

/// Runs `body` inside a fresh network namespace with the carrier's /64 routed to loopback.
fn in_private_network<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    common::in_private_network(
        &format!("{CARRIER}/64"),
        "with the carrier's /64 routed to loopback",
        body,
    )
}

#[test]
fn the_sdk_driver_attaches_registers_reports_and_sleeps_over_a_pty() {
    in_private_network(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let (edge, seen) = stand_in_edge(stop.clone());
        let control = Arc::new(ServeControl::default());
        let config = EmulatorConfig {
            attach_delay: Duration::from_millis(300),
            urc_inside_responses: true,
            ..EmulatorConfig::default()
        };
        let (pty, modem) = modem_on_pty(config, control.clone());
        let mut device = meter(edge, Duration::from_secs(4), Duration::from_secs(5));
        let events = drive(&pty, &mut device, Duration::from_secs(30), |events, d| {
            d.device().reporter().unwrap().stats().acked >= 2
                && events
                    .iter()
                    .filter(|e| matches!(e, NbiotEvent::Sleeping { .. }))
                    .count()
                    >= 2
        });
        control.stop.store(true, Ordering::Relaxed);
        let cellular = modem.join().unwrap();
        stop.store(true, Ordering::Relaxed);

        // Attached with the carrier's address, the PSM timers granted as asked.
        let address: Ipv6Addr = "2001:db8:100::7".parse().unwrap();
        assert!(events.contains(&NbiotEvent::Modem(ModemEvent::Ready { address })));
        assert!(
            events.contains(&NbiotEvent::Modem(ModemEvent::NetworkTimers {
                active_time: Some(Duration::from_secs(2)),
                periodic_tau: Some(Duration::from_secs(3600)),
            }))
        );
        assert_eq!(device.modem().address(), Some(address));
        // A registration in queue mode and the reports, all from the carrier address.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.registrations.len(), 1, "{:?}", seen.registrations);
        let (from, query) = &seen.registrations[0];
        assert_eq!(from.ip(), address);
        assert!(query.contains(&"b=UQ".to_owned()), "{query:?}");
        assert!(seen.reports.len() >= 2);
        assert!(seen.reports.iter().all(|r| r.ip() == address));
        // Every AT+NSOST answer carried a URC between its line and its OK: each was taken out
        // and every send still completed.
        let modem_stats = device.modem().stats();
        let sends = modem_stats.sent;
        assert!(sends >= 3, "{modem_stats:?}");
        assert_eq!(modem_stats.send_failures, 0);
        // The URCs taken out: those the events show (registration reports but the first, the
        // answer to AT+CEREG?; power saving reports), a +NSONMI per datagram received, and the
        // +CSCON inside each AT+NSOST answer.
        let shown = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    NbiotEvent::Modem(ModemEvent::Registration(_) | ModemEvent::PowerSaving(_))
                )
            })
            .count() as u64
            - 1;
        let received = modem_stats.received;
        assert_eq!(received, sends, "an answer to every request");
        assert_eq!(device.modem().client_stats().urcs, shown + received + sends);
        assert_eq!(device.modem().client_stats().unexpected, 0);
        assert_eq!(device.modem().client_stats().timeouts, 0);
        // Both sides slept: the device between reports, the modem in PSM.
        assert!(device.power().unwrap().stats().sleeps >= 2);
        assert!(
            cellular.modem.stats().sleeps >= 1,
            "{:?}",
            cellular.modem.stats()
        );
        assert_eq!(cellular.modem.stats().uplinks, sends);
    });
}

#[test]
fn a_modem_that_hangs_mid_command_is_probed_and_the_reports_still_arrive() {
    in_private_network(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let (edge, seen) = stand_in_edge(stop.clone());
        let control = Arc::new(ServeControl::default());
        let config = EmulatorConfig {
            attach_delay: Duration::from_millis(100),
            ..EmulatorConfig::default()
        };
        let (pty, modem) = modem_on_pty(config, control.clone());
        let mut device = meter(edge, Duration::from_secs(2), Duration::from_millis(500));
        // Registered and one report in; then the modem hangs.
        drive(&pty, &mut device, Duration::from_secs(20), |_, d| {
            d.device().reporter().unwrap().stats().acked >= 1
        });
        control.frozen.store(true, Ordering::Relaxed);
        let hung_at = Instant::now();
        let timeouts = AtomicU64::new(0);
        drive(&pty, &mut device, Duration::from_secs(20), |_, d| {
            timeouts.store(d.modem().client_stats().timeouts, Ordering::Relaxed);
            d.modem().client_stats().timeouts >= 1 && hung_at.elapsed() > Duration::from_secs(3)
        });
        // It comes back: the probe is answered and the next reports arrive.
        control.frozen.store(false, Ordering::Relaxed);
        let acked_before = device.device().reporter().unwrap().stats().acked;
        drive(&pty, &mut device, Duration::from_secs(30), |_, d| {
            d.device().reporter().unwrap().stats().acked >= acked_before + 2
        });
        control.stop.store(true, Ordering::Relaxed);
        modem.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let c = device.modem().client_stats();
        assert!(
            c.timeouts >= 1 && c.probes >= 1 && c.recoveries >= 1,
            "{c:?}"
        );
        assert!(seen.lock().unwrap().reports.len() as u64 >= acked_before + 2);
        assert!(timeouts.load(Ordering::Relaxed) >= 1);
    });
}
