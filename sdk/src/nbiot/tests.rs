//! The modem layer and the NB-IoT device on recorded AT transcripts, on virtual time: the test
//! plays the modem, checking every command the driver writes and answering as a HiSilicon
//! module does (echo on until `ATE0`, URCs between lines of a response, `+CME ERROR`s).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv6Addr, SocketAddr};
use core::time::Duration;

use super::at::RegState;
use super::client::AtError;
use super::modem::{Modem, ModemConfig, ModemEvent, PsmRequest};
use super::timers::{T3324, T3412};
use super::{NbiotDevice, NbiotEvent, nbiot_uplink};
use crate::coap::{App, Changed, Config, Device, ResourceTree};
use crate::time::Instant;
use crate::uplink::WakeReason;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn edge() -> SocketAddr {
    "[2001:db8::1]:5683".parse().unwrap()
}

fn config() -> ModemConfig {
    ModemConfig {
        psm: Some(PsmRequest {
            periodic_tau: T3412::encode(Duration::from_secs(24 * 3600)).unwrap(),
            active_time: T3324::encode(Duration::from_secs(60)).unwrap(),
        }),
        ..ModemConfig::new("iot.example")
    }
}

/// What the driver wrote since the last call, as text.
fn wrote(m: &mut Modem) -> String {
    String::from_utf8(m.poll_serial().unwrap_or_default()).unwrap()
}

fn events(m: &mut Modem) -> Vec<ModemEvent> {
    core::iter::from_fn(|| m.poll_event()).collect()
}

/// The bring-up as a BC95-like module answers it (echo on at first), up to the point where
/// it waits for registration.
const BRING_UP: [(&str, &str); 9] = [
    ("ATE0\r", "ATE0\r\r\nOK\r\n"),
    ("AT+CMEE=1\r", "\r\nOK\r\n"),
    ("AT+CGDCONT=1,\"IPV6\",\"iot.example\"\r", "\r\nOK\r\n"),
    ("AT+CEREG=4\r", "\r\nOK\r\n"),
    ("AT+NPSMR=1\r", "\r\nOK\r\n"),
    // 24 h = 1 h × 24, 60 s = 1 min × 1 (shared/DESIGN.md §10)
    ("AT+CPSMS=1,,,\"00111000\",\"00100001\"\r", "\r\nOK\r\n"),
    ("AT+CFUN=1\r", "\r\nOK\r\n"),
    ("AT+CGATT=1\r", "\r\nOK\r\n"),
    ("AT+CEREG?\r", "\r\n+CEREG: 4,2\r\n\r\nOK\r\n"),
];

/// Plays `script` (command expected, answer) at `now`.
fn play(m: &mut Modem, now: Instant, script: &[(&str, &str)]) {
    for (command, answer) in script {
        assert_eq!(wrote(m), *command);
        m.handle_serial(now, answer.as_bytes());
    }
}

/// A modem brought up, registered (the network grants 10 s of active time), addressed
/// `2001:db8:100::7`, socket 1 open.
fn ready_modem() -> Modem {
    let mut m = Modem::new(t(0), config());
    play(&mut m, t(10), &BRING_UP);
    assert!(!m.is_ready());
    m.handle_serial(
        t(2000),
        b"\r\n+CEREG: 1,\"1A2B\",\"0C0D0E0F\",9,,,\"00000101\",\"00111000\"\r\n",
    );
    play(
        &mut m,
        t(2010),
        &[
            (
                "AT+CGPADDR=1\r",
                "\r\n+CGPADDR: 1,\"32.1.13.184.1.0.0.0.0.0.0.0.0.0.0.7\"\r\n\r\nOK\r\n",
            ),
            ("AT+NSOCR=DGRAM,17,5683,1\r", "\r\n1\r\n\r\nOK\r\n"),
        ],
    );
    assert!(m.is_ready());
    m
}

#[test]
fn brings_the_modem_up_and_learns_address_and_granted_timers() {
    let mut m = ready_modem();
    let ev = events(&mut m);
    let address: Ipv6Addr = "2001:db8:100::7".parse().unwrap();
    assert!(ev.contains(&ModemEvent::NetworkTimers {
        active_time: Some(Duration::from_secs(10)),
        periodic_tau: Some(Duration::from_secs(24 * 3600)),
    }));
    assert_eq!(ev.last(), Some(&ModemEvent::Ready { address }));
    assert!(
        ev.iter()
            .any(|e| matches!(e, ModemEvent::Registration(r) if r.stat == RegState::Searching))
    );
    assert_eq!(m.address(), Some(address));
    assert_eq!(m.client_stats().echoes, 1);
    assert!(m.is_idle());
}

#[test]
fn datagrams_go_out_with_nsost_and_come_in_with_nsonmi_and_nsorf() {
    let mut m = ready_modem();
    m.send(t(3000), edge(), &[0x40, 0x01, 0xab]).unwrap();
    play(
        &mut m,
        t(3010),
        &[(
            "AT+NSOST=1,2001:db8::1,5683,3,4001AB\r",
            "\r\n1,3\r\n\r\nOK\r\n",
        )],
    );
    // A datagram is announced; while it is read a registration URC arrives between the
    // answer's line and its OK.
    m.handle_serial(t(3500), b"\r\n+NSONMI: 1,4\r\n");
    play(
        &mut m,
        t(3510),
        &[(
            "AT+NSORF=1,4\r",
            "\r\n1,2001:DB8::1,5683,4,DEADBEEF,0\r\n\r\n+CEREG: 1,\"1A2B\",\"0C0D0E10\",9\r\n\r\nOK\r\n",
        )],
    );
    assert_eq!(
        m.poll_datagram(),
        Some((edge(), vec![0xde, 0xad, 0xbe, 0xef]))
    );
    // The URC made it ask for its address again: the same one, no change reported.
    play(
        &mut m,
        t(3520),
        &[(
            "AT+CGPADDR=1\r",
            "+CGPADDR: 1,\"2001:DB8:100::7\"\r\nOK\r\n",
        )],
    );
    let ev = events(&mut m);
    assert!(
        !ev.iter()
            .any(|e| matches!(e, ModemEvent::AddressChanged { .. }))
    );
    assert_eq!((m.stats().sent, m.stats().received), (1, 1));
}

#[test]
fn a_new_address_after_a_wake_up_is_reported() {
    let mut m = ready_modem();
    let _ = events(&mut m);
    m.handle_serial(
        t(9000),
        b"+NPSMR: 0\r\n+CEREG: 1,\"1A2B\",\"0C0D0E0F\",9,,,\"00000101\",\"00111000\"\r\n",
    );
    play(
        &mut m,
        t(9010),
        &[(
            "AT+CGPADDR=1\r",
            "+CGPADDR: 1,\"32.1.13.184.1.0.0.0.0.0.0.0.0.1.0.7\"\r\nOK\r\n",
        )],
    );
    let ev = events(&mut m);
    assert!(ev.contains(&ModemEvent::PowerSaving(false)));
    assert!(ev.contains(&ModemEvent::AddressChanged {
        from: "2001:db8:100::7".parse().unwrap(),
        to: "2001:db8:100::1:7".parse().unwrap(),
    }));
    // Datagrams still flow (the socket survives).
    m.send(t(9100), edge(), b"x").unwrap();
    assert!(wrote(&mut m).starts_with("AT+NSOST=1,"));
}

#[test]
fn a_cme_error_in_the_bring_up_is_reported_and_the_bring_up_starts_over() {
    let mut m = Modem::new(t(0), config());
    play(&mut m, t(10), &BRING_UP[..2]);
    assert_eq!(wrote(&mut m), "AT+CGDCONT=1,\"IPV6\",\"iot.example\"\r");
    m.handle_serial(t(20), b"\r\n+CME ERROR: 13\r\n"); // SIM failure
    let ev = events(&mut m);
    assert_eq!(
        ev.last(),
        Some(&ModemEvent::CommandFailed {
            command: "AT+CGDCONT=1,\"IPV6\",\"iot.example".into(),
            error: AtError::Cme(super::at::CmeError::Code(13)),
        })
    );
    assert!(m.poll_serial().is_none(), "nothing until the retry");
    assert_eq!(m.poll_timeout(), Some(t(10_020)));
    m.handle_timeout(t(10_020));
    play(&mut m, t(10_030), &BRING_UP);
    assert_eq!(m.stats().bring_ups, 2);
}

/// A modem that stops answering in the middle of `AT+NSOST`: the send fails (CoAP
/// retransmits), the modem is probed, and once it answers the next datagram goes out; the
/// late end of the old answer is not taken for the new command's.
#[test]
fn a_modem_that_stops_mid_command_recovers_and_nothing_is_mismatched() {
    let mut m = ready_modem();
    m.send(t(3000), edge(), b"a").unwrap();
    m.send(t(3000), edge(), b"b").unwrap();
    assert!(wrote(&mut m).ends_with(",1,61\r"));
    m.handle_serial(t(3010), b"\r\n1,"); // and then nothing
    m.handle_timeout(t(8000));
    assert_eq!(wrote(&mut m), "AT+CFUN?\r");
    m.handle_serial(t(8100), b"1\r\n\r\nOK\r\n"); // the late rest of the NSOST answer
    assert!(m.poll_serial().is_none());
    m.handle_serial(t(8200), b"\r\n+CFUN: 1\r\n\r\nOK\r\n");
    assert!(wrote(&mut m).ends_with(",1,62\r"), "the next datagram");
    m.handle_serial(t(8300), b"\r\n1,1\r\n\r\nOK\r\n");
    assert_eq!((m.stats().sent, m.stats().send_failures), (1, 1));
    assert_eq!(m.client_stats().stale, 1);
    assert!(events(&mut m).iter().any(|e| matches!(
        e,
        ModemEvent::CommandFailed {
            error: AtError::Timeout,
            ..
        }
    )));
}

/// A modem that stops answering altogether is reported unresponsive; when it answers again the
/// bring-up runs once more (it may have restarted) and the socket it may still hold is closed
/// before a new one is opened.
#[test]
fn a_modem_back_from_the_dead_is_set_up_again_and_its_old_socket_closed() {
    let mut m = ready_modem();
    let _ = events(&mut m);
    m.send(t(3000), edge(), b"a").unwrap();
    let _ = wrote(&mut m);
    let mut now = t(3000);
    let mut seen = Vec::new();
    while !seen.contains(&ModemEvent::Unresponsive) {
        now = m.poll_timeout().unwrap();
        m.handle_timeout(now);
        let _ = wrote(&mut m);
        seen.extend(events(&mut m));
        assert!(now < t(60_000));
    }
    assert!(!m.is_responsive());
    m.handle_serial(now, b"\r\n+CFUN: 1\r\n\r\nOK\r\n");
    assert!(events(&mut m).contains(&ModemEvent::Recovered));
    play(&mut m, now, &BRING_UP[..8]);
    play(
        &mut m,
        now,
        &[
            ("AT+CEREG?\r", "+CEREG: 4,1\r\nOK\r\n"),
            (
                "AT+CGPADDR=1\r",
                "+CGPADDR: 1,\"2001:DB8:100::7\"\r\nOK\r\n",
            ),
            ("AT+NSOCL=1\r", "OK\r\n"),
            ("AT+NSOCR=DGRAM,17,5683,1\r", "1\r\nOK\r\n"),
        ],
    );
    assert!(m.is_ready());
    assert_eq!(m.stats().bring_ups, 2);
}

/// Garbage, binary noise, overlong and partial lines, unknown and malformed URCs between the
/// lines of a real transcript: dropped and counted, the transcript's meaning intact.
#[test]
fn noise_between_the_lines_changes_nothing() {
    let mut m = ready_modem();
    let mut noise = Vec::new();
    noise.extend_from_slice(b"\x00\xff\xfe\r\n");
    noise.extend_from_slice(&[b'Z'; 5000]);
    noise.extend_from_slice(b"\r\n+NSONMI: garbage\r\n+XYZ: 1\r\n");
    m.handle_serial(t(3000), &noise);
    m.handle_serial(t(3001), b"+NSONMI: 1,2\r\n");
    assert_eq!(wrote(&mut m), "AT+NSORF=1,2\r");
    m.handle_serial(
        t(3002),
        b"\x07\x07\r\n1,2001:DB8::1,5683,2,4142,0\r\nOK\r\n",
    );
    assert_eq!(m.poll_datagram(), Some((edge(), b"AB".to_vec())));
    assert_eq!(m.line_stats().garbage, 2);
    assert_eq!(m.line_stats().overlong, 1);
    assert_eq!(m.client_stats().bad_urcs, 1);
    // "+XYZ: 1" arrived while nothing was in flight.
    assert_eq!(m.client_stats().unexpected, 1);
    // A read answer that does not add up is dropped and counted.
    m.handle_serial(t(4000), b"+NSONMI: 1,3\r\n");
    let _ = wrote(&mut m);
    m.handle_serial(t(4001), b"1,2001:DB8::1,5683,3,41,0\r\nOK\r\n");
    assert_eq!(m.poll_datagram(), None);
    assert_eq!(m.stats().bad_reads, 1);
}

#[test]
fn datagrams_are_refused_when_too_large_not_ipv6_or_too_many() {
    let mut m = Modem::new(t(0), config());
    let big = vec![0u8; super::MAX_DATAGRAM + 1];
    assert!(m.send(t(1), edge(), &big).is_err());
    assert!(
        m.send(t(1), "127.0.0.1:5683".parse().unwrap(), b"x")
            .is_err()
    );
    for _ in 0..super::modem::MAX_OUTGOING {
        m.send(t(1), edge(), b"x").unwrap();
    }
    assert!(m.send(t(1), edge(), b"x").is_err());
    assert_eq!(m.stats().refused, 3);
    assert_eq!(m.outgoing(), super::modem::MAX_OUTGOING);
}

// ----- the NB-IoT device: the CoAP core on the modem, with power saving -----

/// Reports every 10 minutes.
#[derive(Debug, Default)]
struct Meter {
    next: Option<Instant>,
    pending: bool,
}

impl App for Meter {
    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    fn handle_timeout(&mut self, now: Instant) -> Changed {
        self.next = Some(now + Duration::from_secs(600));
        self.pending = true;
        Changed::NONE
    }

    fn poll_report(&mut self) -> Option<(u16, Vec<u8>)> {
        core::mem::take(&mut self.pending).then(|| (60, b"\xa0".to_vec()))
    }
}

/// Plays `script` (command expected, answer) at `now` for an NB-IoT device's modem.
fn play_device(d: &mut NbiotDevice<Meter>, now: Instant, script: &[(&str, &str)]) {
    for (command, answer) in script {
        assert_eq!(
            String::from_utf8(d.poll_serial().unwrap()).unwrap(),
            *command
        );
        d.handle_serial(now, answer.as_bytes());
    }
}

/// The network registers the device's modem at `at_ms` (10 s of active time); 10 ms later the
/// modem answers with its address, `2001:db8:100::7`, and opens socket 1.
fn attach_device(d: &mut NbiotDevice<Meter>, at_ms: u64) {
    d.handle_serial(
        t(at_ms),
        b"+CEREG: 1,\"1A2B\",\"0C0D0E0F\",9,,,\"00000101\",\"00111000\"\r\n",
    );
    play_device(
        d,
        t(at_ms + 10),
        &[
            (
                "AT+CGPADDR=1\r",
                "+CGPADDR: 1,\"2001:DB8:100::7\"\r\nOK\r\n",
            ),
            ("AT+NSOCR=DGRAM,17,5683,1\r", "1\r\nOK\r\n"),
        ],
    );
}

/// Answers the registration `register` at `now` (2.01 with a location): the device is
/// registered.
fn accept_registration(d: &mut NbiotDevice<Meter>, now: Instant, register: &coap_lite::Packet) {
    answer(d, now, register, coap_lite::ResponseType::Created, true);
    assert!(d.device().registration().unwrap().is_registered());
}

/// The first Uri-Path segment of `p`.
fn first_path(p: &coap_lite::Packet) -> &[u8] {
    p.get_option(coap_lite::CoapOption::UriPath)
        .unwrap()
        .front()
        .unwrap()
}

/// The test modem's side for the NB-IoT device: answers `AT+NSOST` and returns the CoAP
/// request it carried.
fn take_request(d: &mut NbiotDevice<Meter>, now: Instant) -> coap_lite::Packet {
    let text = String::from_utf8(d.poll_serial().unwrap()).unwrap();
    let hex = text
        .trim_end()
        .strip_prefix("AT+NSOST=1,2001:db8::1,5683,")
        .and_then(|r| r.split_once(','))
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("{text}"));
    let bytes = super::at::unhex(hex).unwrap();
    d.handle_serial(
        now,
        format!("\r\n1,{}\r\n\r\nOK\r\n", bytes.len()).as_bytes(),
    );
    coap_lite::Packet::from_bytes(&bytes).unwrap()
}

/// Answers `request` from the edge: announced with `+NSONMI`, read with `AT+NSORF`.
fn answer(
    d: &mut NbiotDevice<Meter>,
    now: Instant,
    request: &coap_lite::Packet,
    code: coap_lite::ResponseType,
    location: bool,
) {
    let mut r = coap_lite::Packet::new();
    r.header.set_type(coap_lite::MessageType::Acknowledgement);
    r.header.message_id = request.header.message_id;
    r.header.code = coap_lite::MessageClass::Response(code);
    r.set_token(request.get_token().to_vec());
    if location {
        r.add_option(coap_lite::CoapOption::LocationPath, b"rd".to_vec());
        r.add_option(coap_lite::CoapOption::LocationPath, b"1".to_vec());
    }
    let bytes = r.to_bytes().unwrap();
    d.handle_serial(now, format!("+NSONMI: 1,{}\r\n", bytes.len()).as_bytes());
    let asked = String::from_utf8(d.poll_serial().unwrap()).unwrap();
    assert_eq!(asked, format!("AT+NSORF=1,{}\r", bytes.len()));
    let line = format!(
        "1,2001:DB8::1,5683,{},{},0\r\nOK\r\n",
        bytes.len(),
        super::at::hex(&bytes)
    );
    d.handle_serial(now, line.as_bytes());
}

fn device_events(d: &mut NbiotDevice<Meter>) -> Vec<NbiotEvent> {
    core::iter::from_fn(|| d.poll_event()).collect()
}

/// Registration with `b=UQ` and a report over the modem; then the device listens for the
/// active time the network granted (10 s), sleeps until its next report, wakes for it with its
/// state intact (the next report is acknowledged on the same registration).
#[test]
fn the_device_registers_in_queue_mode_reports_listens_then_sleeps_until_its_next_report() {
    let tree = Arc::new(ResourceTree::<Meter>::new());
    let meter = Meter {
        next: Some(t(30_000)),
        pending: false,
    };
    let core = Device::new(Config::default(), 7, tree, meter)
        .with_uplink(t(0), nbiot_uplink(edge(), "meter-7"));
    let mut d = NbiotDevice::new(t(0), core, config());
    // Bring the modem up (the device's registration waits in the modem's queue meanwhile).
    play_device(&mut d, t(10), &BRING_UP);
    attach_device(&mut d, 2000);
    let register = take_request(&mut d, t(2020));
    let query: Vec<String> = register
        .get_option(coap_lite::CoapOption::UriQuery)
        .unwrap()
        .iter()
        .map(|q| String::from_utf8(q.clone()).unwrap())
        .collect();
    assert!(query.contains(&"b=UQ".into()), "{query:?}");
    accept_registration(&mut d, t(2500), &register);
    assert!(!d.is_asleep(), "listening for the active time");
    // 10 s granted: asleep at 12.5 s, until the report at 30 s.
    assert_eq!(d.poll_timeout(), Some(t(12_500)));
    d.handle_timeout(t(12_500));
    assert!(d.is_asleep());
    assert!(device_events(&mut d).contains(&NbiotEvent::Sleeping {
        until: Some(t(30_000))
    }));
    assert_eq!(
        d.poll_timeout(),
        Some(t(30_000)),
        "nothing wakes it before its report"
    );
    d.handle_timeout(t(30_000));
    assert!(device_events(&mut d).contains(&NbiotEvent::Awake {
        reason: WakeReason::Work
    }));
    let report = take_request(&mut d, t(30_010));
    assert_eq!(first_path(&report), b"t");
    answer(
        &mut d,
        t(31_000),
        &report,
        coap_lite::ResponseType::Changed,
        false,
    );
    assert_eq!(d.device().reporter().unwrap().stats().acked, 1);
    assert_eq!(d.poll_timeout(), Some(t(41_000)));
    d.handle_timeout(t(41_000));
    assert!(d.is_asleep());
    let power = d.power().unwrap().stats();
    assert_eq!((power.sleeps, power.wakes_for_work), (2, 1));
    assert_eq!(d.device().registration().unwrap().registrations(), 1);
}

/// The uplink given to the NB-IoT device starts when the modem is ready: a modem that takes 20 s
/// to register (longer than CoAP's first retransmission timeouts) gets one registration request,
/// sent once, with nothing retransmitted or queued twice meanwhile; the report due at 5 s waits
/// and follows the registration. (The uplink started in the core at power-on, as before, had its
/// request time out and queue copies in the modem while it attached: they went out one after
/// another once it was ready.)
#[test]
fn the_uplink_starts_when_the_modem_is_ready_and_nothing_waits_twice_while_it_attaches() {
    let tree = Arc::new(ResourceTree::<Meter>::new());
    let meter = Meter {
        next: Some(t(5_000)),
        pending: false,
    };
    let core = Device::new(Config::default(), 7, tree, meter);
    let mut d = NbiotDevice::new(t(0), core, config()).with_uplink(nbiot_uplink(edge(), "meter-7"));
    play_device(&mut d, t(10), &BRING_UP);
    // Searching for 20 s: time passes, nothing is written.
    while let Some(next) = d.poll_timeout().filter(|n| *n < t(20_000)) {
        d.handle_timeout(next);
        assert_eq!(d.poll_serial(), None, "at {next:?}");
    }
    attach_device(&mut d, 20_000);
    let register = take_request(&mut d, t(20_020));
    assert_eq!(first_path(&register), b"rd");
    accept_registration(&mut d, t(20_500), &register);
    // The application's timer, due since 5 s, runs now that the uplink is up.
    assert!(d.poll_timeout().is_some_and(|at| at <= t(20_510)));
    d.handle_timeout(t(20_510));
    let report = take_request(&mut d, t(20_510));
    assert_eq!(
        first_path(&report),
        b"t",
        "the report made while the modem attached, not a second registration"
    );
    answer(
        &mut d,
        t(21_000),
        &report,
        coap_lite::ResponseType::Changed,
        false,
    );
    assert_eq!(d.device().reporter().unwrap().stats().acked, 1);
    assert_eq!(d.poll_serial(), None, "nothing else");
    assert_eq!(d.device().endpoint().stats().retransmissions, 0);
    assert_eq!(d.modem().stats().sent, 2);
}
