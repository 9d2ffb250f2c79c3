//! The modem, sans-IO: brings an NB-IoT module up over AT commands, follows its registration,
//! learns its IPv6 address, and carries UDP datagrams with the HiSilicon socket commands
//! (Quectel BC95/BC28, u-blox SARA-N2), on top of an [`AtClient`].
//!
//! # Bring-up (3GPP TS 27.007 and the HiSilicon set)
//!
//! | command | why |
//! |---|---|
//! | `ATE0` | no echo |
//! | `AT+CMEE=1` | numeric `+CME ERROR: n` |
//! | `AT+CGDCONT=1,"IPV6","<apn>"` | a PDP context of type IPv6 |
//! | `AT+CEREG=4` | registration URCs with the PSM timers the network granted |
//! | `AT+NPSMR=1` | `+NPSMR: 1/0` when the modem enters / leaves power saving mode |
//! | `AT+CPSMS=1,,,"<T3412>","<T3324>"` (or `AT+CPSMS=0`) | the PSM timers asked for |
//! | `AT+CEDRXS=1,5,"<cycle>"` (when configured) | eDRX in NB-S1 mode |
//! | `AT+CFUN=1`, `AT+CGATT=1` | radio on, attach |
//! | `AT+CEREG?` | the registration as it is now |
//!
//! Once registered: `AT+CGPADDR=1` (the address, dotted or colon notation), then
//! `AT+NSOCR=DGRAM,17,<port>,1` (a UDP socket). A datagram goes out with
//! `AT+NSOST=<s>,<ip>,<port>,<len>,<hex>`; `+NSONMI: <s>,<len>` announces one and
//! `AT+NSORF=<s>,<len>` reads it (`<s>,<ip>,<port>,<len>,<hex>,<remaining>`, no prefix). A later
//! `+CEREG` saying "registered" (a wake-up, a new cell) makes the modem ask for its address
//! again: after a sleep the carrier may have given it another ([`ModemEvent::AddressChanged`]).
//!
//! A failed bring-up command is reported ([`ModemEvent::CommandFailed`]) and the bring-up starts
//! over after [`ModemConfig::retry_after`]; so does a modem that recovers from not answering
//! (it may have restarted and lost its settings).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use super::MAX_DATAGRAM;
use super::at::{
    LineStats, Registration, Urc, fields, hex, parse_cgpaddr, parse_registration_read, unhex,
};
use super::client::{AtClient, AtError, ClientStats, Command, Completion, Notice};
use super::timers::{EdrxCycle, T3324, T3412};
use crate::time::Instant;

/// Datagrams waiting for the modem (while it attaches, or behind the one being written).
pub const MAX_OUTGOING: usize = 8;

/// Announced datagrams waiting to be read with `AT+NSORF`.
const MAX_ANNOUNCED: usize = 8;

/// The power saving timers to ask the network for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsmRequest {
    /// Periodic TAU (T3412 extended).
    pub periodic_tau: T3412,
    /// Active time (T3324): how long the device stays reachable after each exchange.
    pub active_time: T3324,
}

/// How the modem is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemConfig {
    /// The access point name of the PDP context.
    pub apn: String,
    /// The local UDP port of the socket.
    pub local_port: u16,
    /// Power saving mode; `None` switches it off (`AT+CPSMS=0`).
    pub psm: Option<PsmRequest>,
    /// An eDRX cycle to ask for, if any.
    pub edrx: Option<EdrxCycle>,
    /// How long a command may take (`AT+CGATT=1` gets [`ModemConfig::attach_timeout`]).
    pub command_timeout: Duration,
    /// How long `AT+CGATT=1` may take (modems may answer only once attached).
    pub attach_timeout: Duration,
    /// The wait before a failed bring-up starts over.
    pub retry_after: Duration,
}

impl ModemConfig {
    /// Port 5683, PSM off, no eDRX; commands 5 s, attach 90 s, retry after 10 s.
    pub fn new(apn: impl Into<String>) -> ModemConfig {
        ModemConfig {
            apn: apn.into(),
            local_port: 5683,
            psm: None,
            edrx: None,
            command_timeout: Duration::from_secs(5),
            attach_timeout: Duration::from_secs(90),
            retry_after: Duration::from_secs(10),
        }
    }
}

/// A datagram that cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes is longer than the modem's {MAX_DATAGRAM}")]
    TooLarge(usize),
    /// The PDP context is IPv6; this destination is not.
    #[error("the PDP context is IPv6: cannot send to {0}")]
    NotIpv6(SocketAddr),
    /// [`MAX_OUTGOING`] datagrams wait already.
    #[error("{MAX_OUTGOING} datagrams wait for the modem already")]
    QueueFull,
}

/// Something the application may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModemEvent {
    /// Registered, addressed, socket open: datagrams flow.
    Ready {
        /// The device's IPv6 address.
        address: Ipv6Addr,
    },
    /// The carrier gave the device another address (after a sleep or a re-attach).
    AddressChanged {
        /// The address before.
        from: Ipv6Addr,
        /// The address now.
        to: Ipv6Addr,
    },
    /// The registration changed (from `+CEREG`).
    Registration(Registration),
    /// The network granted these timers (from `+CEREG` mode 4).
    NetworkTimers {
        /// Active time (T3324); `None` when deactivated.
        active_time: Option<Duration>,
        /// Periodic TAU (T3412); `None` when deactivated.
        periodic_tau: Option<Duration>,
    },
    /// The modem entered (true) or left (false) power saving mode (`+NPSMR`).
    PowerSaving(bool),
    /// A command failed.
    CommandFailed {
        /// The command (its first 32 characters).
        command: String,
        /// Why.
        error: AtError,
    },
    /// The modem stopped answering (see [`super::client`]).
    Unresponsive,
    /// It answers again; the bring-up starts over.
    Recovered,
}

/// What the modem layer counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ModemStats {
    /// Datagrams written with `AT+NSOST` and acknowledged.
    pub sent: u64,
    /// Datagrams read with `AT+NSORF`.
    pub received: u64,
    /// `AT+NSOST` answered with an error or not at all (the datagram is lost; CoAP retransmits).
    pub send_failures: u64,
    /// Datagrams refused: too large, not IPv6, or the queue full.
    pub refused: u64,
    /// `AT+NSORF` answers that did not parse (wrong fields, bad hex, wrong length).
    pub bad_reads: u64,
    /// Announcements dropped because [`MAX_ANNOUNCED`] waited.
    pub announcements_dropped: u64,
    /// Bring-ups started (the first and every retry).
    pub bring_ups: u64,
    /// Address changes seen.
    pub address_changes: u64,
}

/// Which command a completion belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Setup(usize),
    QueryRegistration,
    Address,
    CloseStale,
    OpenSocket,
    Send,
    Receive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Bring-up command `next` is out.
    Setup,
    /// Waiting for `+CEREG` to say registered.
    Attaching,
    /// `AT+CGPADDR` is out.
    Addressing,
    /// `AT+NSOCR` is out.
    Opening,
    /// Datagrams flow.
    Ready,
    /// A failed bring-up starts over at this time.
    Retry(Instant),
}

/// An NB-IoT modem driven over AT commands. See the [module docs](self).
#[derive(Debug)]
pub struct Modem {
    config: ModemConfig,
    client: AtClient<Tag>,
    setup: Vec<(String, Duration)>,
    phase: Phase,
    registered: bool,
    address: Option<Ipv6Addr>,
    socket: Option<u8>,
    /// The socket of a bring-up before this one (a modem that recovered may still have it
    /// open): closed before a new one is opened.
    stale_socket: Option<u8>,
    /// An `AT+CGPADDR` is out while ready (after a registration URC).
    readdressing: bool,
    sending: bool,
    reading: bool,
    outgoing: VecDeque<(SocketAddr, Vec<u8>)>,
    announced: VecDeque<(u8, u16)>,
    received: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ModemEvent>,
    timers: Option<(Option<T3324>, Option<T3412>)>,
    stats: ModemStats,
}

impl Modem {
    /// A modem that starts its bring-up at `now`.
    pub fn new(now: Instant, config: ModemConfig) -> Modem {
        let setup = setup_commands(&config);
        let mut modem = Modem {
            config,
            client: AtClient::new(),
            setup,
            phase: Phase::Setup,
            registered: false,
            address: None,
            socket: None,
            stale_socket: None,
            readdressing: false,
            sending: false,
            reading: false,
            outgoing: VecDeque::new(),
            announced: VecDeque::new(),
            received: VecDeque::new(),
            events: VecDeque::new(),
            timers: None,
            stats: ModemStats::default(),
        };
        modem.start_setup(now);
        modem
    }

    fn start_setup(&mut self, now: Instant) {
        self.stats.bring_ups += 1;
        self.phase = Phase::Setup;
        self.registered = false;
        self.stale_socket = self.socket.take().or(self.stale_socket);
        self.sending = false;
        self.reading = false;
        self.readdressing = false;
        self.announced.clear();
        self.issue_setup(now, 0);
    }

    fn issue_setup(&mut self, now: Instant, index: usize) {
        match self.setup.get(index).cloned() {
            Some((text, timeout)) => self.command(now, text, None, timeout, Tag::Setup(index)),
            None => {
                self.phase = Phase::Attaching;
                let timeout = self.config.command_timeout;
                self.command(
                    now,
                    "AT+CEREG?".into(),
                    Some("+CEREG:"),
                    timeout,
                    Tag::QueryRegistration,
                );
            }
        }
    }

    fn command(
        &mut self,
        now: Instant,
        text: String,
        expect: Option<&'static str>,
        timeout: Duration,
        tag: Tag,
    ) {
        let command = Command {
            text,
            expect,
            timeout,
            tag,
        };
        if self.client.send(now, command).is_err() {
            // The queue holds 16; this layer has at most 3 commands out at once.
            self.fail_tag(now, tag, "(queue full)".into(), AtError::Unresponsive);
        }
    }

    /// Takes bytes the modem wrote on the serial line.
    pub fn handle_serial(&mut self, now: Instant, bytes: &[u8]) {
        self.client.handle_bytes(now, bytes);
        self.pump(now);
    }

    /// Bytes to write to the modem's serial line.
    #[must_use]
    pub fn poll_serial(&mut self) -> Option<Vec<u8>> {
        self.client.poll_write()
    }

    /// When [`Modem::handle_timeout`] is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.phase {
            Phase::Retry(at) => Some(at),
            _ => None,
        };
        [self.client.poll_timeout(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Lets time pass: command deadlines, probes, bring-up retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        if let Phase::Retry(at) = self.phase
            && at <= now
        {
            self.start_setup(now);
        }
        self.pump(now);
    }

    /// Queues a datagram for `destination` (sent once the modem is ready).
    pub fn send(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        let error = if bytes.len() > MAX_DATAGRAM {
            Some(SendError::TooLarge(bytes.len()))
        } else if !destination.is_ipv6() {
            Some(SendError::NotIpv6(destination))
        } else if self.outgoing.len() >= MAX_OUTGOING {
            Some(SendError::QueueFull)
        } else {
            None
        };
        if let Some(e) = error {
            self.stats.refused += 1;
            return Err(e);
        }
        self.outgoing.push_back((destination, bytes.to_vec()));
        self.pump(now);
        Ok(())
    }

    /// The next datagram the modem received: (sender, bytes).
    #[must_use]
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.received.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ModemEvent> {
        self.events.pop_front()
    }

    /// Registered, addressed, socket open.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The device's address, once known.
    pub fn address(&self) -> Option<Ipv6Addr> {
        self.address
    }

    /// Nothing to write, nothing waiting for an answer, no datagram waiting.
    pub fn is_idle(&self) -> bool {
        self.client.is_idle()
            && self.outgoing.is_empty()
            && self.announced.is_empty()
            && self.received.is_empty()
    }

    /// Datagrams waiting to be written to the modem.
    pub fn outgoing(&self) -> usize {
        self.outgoing.len()
    }

    /// What the AT client counted (timeouts, probes, stale answers, URCs).
    pub fn client_stats(&self) -> &ClientStats {
        self.client.stats()
    }

    /// What the line reader counted (overlong and garbage lines).
    pub fn line_stats(&self) -> &LineStats {
        self.client.line_stats()
    }

    /// False while the modem does not answer.
    pub fn is_responsive(&self) -> bool {
        self.client.is_responsive()
    }

    /// What this layer counted.
    pub fn stats(&self) -> &ModemStats {
        &self.stats
    }

    fn pump(&mut self, now: Instant) {
        while let Some(notice) = self.client.poll_notice() {
            match notice {
                Notice::Unresponsive => self.events.push_back(ModemEvent::Unresponsive),
                Notice::Recovered => {
                    self.events.push_back(ModemEvent::Recovered);
                    self.start_setup(now);
                }
            }
        }
        while let Some(Completion { tag, result }) = self.client.poll_completion() {
            self.completed(now, tag, result);
        }
        while let Some(urc) = self.client.poll_urc() {
            self.urc(now, urc);
        }
        if self.phase == Phase::Ready {
            self.next_read(now);
            self.next_send(now);
        }
    }

    fn completed(&mut self, now: Instant, tag: Tag, result: Result<Vec<String>, AtError>) {
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                let text = self.command_text(tag);
                self.fail_tag(now, tag, text, error);
                return;
            }
        };
        match tag {
            Tag::Setup(i) => self.issue_setup(now, i + 1),
            Tag::QueryRegistration => {
                let reg = info.iter().find_map(|l| parse_registration_read(l));
                if let Some(reg) = reg {
                    self.registration(now, reg);
                }
            }
            Tag::Address => self.addressed(now, &info),
            Tag::OpenSocket => {
                let socket = info.iter().find_map(|l| l.trim().parse::<u8>().ok());
                match socket {
                    Some(s) => {
                        self.socket = Some(s);
                        self.become_ready();
                    }
                    None => {
                        self.fail_tag(now, tag, "AT+NSOCR (no socket id)".into(), AtError::Error)
                    }
                }
            }
            Tag::CloseStale => {}
            Tag::Send => {
                self.sending = false;
                self.stats.sent += 1;
            }
            Tag::Receive => {
                self.reading = false;
                self.read_answer(now, &info);
            }
        }
    }

    fn fail_tag(&mut self, now: Instant, tag: Tag, command: String, error: AtError) {
        let mut command = command;
        command.truncate(32);
        match tag {
            // The old socket was gone already: nothing to report.
            Tag::CloseStale => return,
            Tag::Send => {
                self.sending = false;
                self.stats.send_failures += 1;
            }
            Tag::Receive => self.reading = false,
            Tag::Address if self.phase == Phase::Ready => self.readdressing = false,
            Tag::Setup(_) | Tag::QueryRegistration | Tag::Address | Tag::OpenSocket => {
                self.phase = Phase::Retry(now + self.config.retry_after);
            }
        }
        self.events
            .push_back(ModemEvent::CommandFailed { command, error });
    }

    fn command_text(&self, tag: Tag) -> String {
        match tag {
            Tag::Setup(i) => self
                .setup
                .get(i)
                .map(|(t, _)| t.clone())
                .unwrap_or_default(),
            Tag::QueryRegistration => "AT+CEREG?".into(),
            Tag::Address => "AT+CGPADDR=1".into(),
            Tag::CloseStale => "AT+NSOCL".into(),
            Tag::OpenSocket => "AT+NSOCR".into(),
            Tag::Send => "AT+NSOST".into(),
            Tag::Receive => "AT+NSORF".into(),
        }
    }

    fn urc(&mut self, now: Instant, urc: Urc) {
        match urc {
            Urc::Registration(reg) => self.registration(now, reg),
            Urc::DatagramWaiting { socket, length } => {
                if self.announced.len() >= MAX_ANNOUNCED {
                    self.stats.announcements_dropped += 1;
                } else {
                    self.announced.push_back((socket, length));
                }
            }
            Urc::PowerSaving(on) => self.events.push_back(ModemEvent::PowerSaving(on)),
            Urc::SocketClosed(s) if self.socket == Some(s) => {
                self.socket = None;
                if self.phase == Phase::Ready {
                    self.open_socket(now);
                }
            }
            _ => {}
        }
    }

    fn registration(&mut self, now: Instant, reg: Registration) {
        self.events.push_back(ModemEvent::Registration(reg));
        let timers = (reg.active_time, reg.periodic_tau);
        if (timers.0.is_some() || timers.1.is_some()) && self.timers != Some(timers) {
            self.timers = Some(timers);
            self.events.push_back(ModemEvent::NetworkTimers {
                active_time: reg.active_time.and_then(T3324::duration),
                periodic_tau: reg.periodic_tau.and_then(T3412::duration),
            });
        }
        self.registered = reg.stat.is_registered();
        match (self.phase, self.registered) {
            (Phase::Attaching, true) => {
                self.phase = Phase::Addressing;
                self.ask_address(now);
            }
            (Phase::Ready, true) if !self.readdressing => {
                self.readdressing = true;
                self.ask_address(now);
            }
            (Phase::Ready | Phase::Addressing | Phase::Opening, false) => {
                self.phase = Phase::Attaching;
            }
            _ => {}
        }
    }

    fn ask_address(&mut self, now: Instant) {
        let timeout = self.config.command_timeout;
        self.command(now, "AT+CGPADDR=1".into(), None, timeout, Tag::Address);
    }

    fn addressed(&mut self, now: Instant, info: &[String]) {
        let Some(address) = info.iter().find_map(|l| parse_cgpaddr(l)) else {
            self.fail_tag(
                now,
                Tag::Address,
                "AT+CGPADDR=1 (no IPv6 address)".into(),
                AtError::Error,
            );
            return;
        };
        let before = self.address.replace(address);
        if let Some(from) = before.filter(|b| *b != address) {
            self.stats.address_changes += 1;
            self.events
                .push_back(ModemEvent::AddressChanged { from, to: address });
        }
        match self.phase {
            Phase::Ready => self.readdressing = false,
            Phase::Addressing if self.socket.is_some() => self.become_ready(),
            Phase::Addressing => {
                self.phase = Phase::Opening;
                self.open_socket(now);
            }
            _ => {}
        }
    }

    fn open_socket(&mut self, now: Instant) {
        let timeout = self.config.command_timeout;
        if let Some(old) = self.stale_socket.take() {
            self.command(
                now,
                format!("AT+NSOCL={old}"),
                None,
                timeout,
                Tag::CloseStale,
            );
        }
        let text = format!("AT+NSOCR=DGRAM,17,{},1", self.config.local_port);
        self.command(now, text, None, timeout, Tag::OpenSocket);
    }

    fn become_ready(&mut self) {
        if self.phase == Phase::Ready {
            return;
        }
        self.phase = Phase::Ready;
        if let Some(address) = self.address {
            self.events.push_back(ModemEvent::Ready { address });
        }
    }

    fn next_send(&mut self, now: Instant) {
        if self.sending {
            return;
        }
        let (Some(socket), Some((to, bytes))) = (self.socket, self.outgoing.pop_front()) else {
            return;
        };
        let text = format!(
            "AT+NSOST={socket},{},{},{},{}",
            to.ip(),
            to.port(),
            bytes.len(),
            hex(&bytes)
        );
        self.sending = true;
        let timeout = self.config.command_timeout;
        self.command(now, text, None, timeout, Tag::Send);
    }

    fn next_read(&mut self, now: Instant) {
        if self.reading {
            return;
        }
        let Some((socket, length)) = self.announced.pop_front() else {
            return;
        };
        let length = usize::from(length).min(MAX_DATAGRAM);
        self.reading = true;
        let timeout = self.config.command_timeout;
        self.command(
            now,
            format!("AT+NSORF={socket},{length}"),
            None,
            timeout,
            Tag::Receive,
        );
    }

    /// `<socket>,<ip>,<port>,<length>,<data>,<remaining>`.
    fn read_answer(&mut self, now: Instant, info: &[String]) {
        let parsed = info.first().and_then(|line| {
            let f = fields(line);
            let socket: u8 = f.first()?.parse().ok()?;
            let ip: IpAddr = f.get(1)?.parse().ok()?;
            let port: u16 = f.get(2)?.parse().ok()?;
            let length: usize = f.get(3)?.parse().ok()?;
            let data = unhex(f.get(4)?)?;
            let remaining: u16 = f.get(5)?.parse().ok()?;
            (data.len() == length).then_some((socket, SocketAddr::new(ip, port), data, remaining))
        });
        match parsed {
            Some((socket, from, data, remaining)) => {
                self.stats.received += 1;
                self.received.push_back((from, data));
                if remaining > 0 && self.announced.len() < MAX_ANNOUNCED {
                    self.announced.push_front((socket, remaining));
                }
            }
            // Empty: the announced datagram was gone (the modem answers with no line).
            None if info.is_empty() => {}
            None => self.stats.bad_reads += 1,
        }
        self.next_read(now);
    }
}

fn setup_commands(config: &ModemConfig) -> Vec<(String, Duration)> {
    let t = config.command_timeout;
    let mut list: Vec<(String, Duration)> = Vec::new();
    let mut push = |text: String, timeout: Duration| list.push((text, timeout));
    push("ATE0".into(), t);
    push("AT+CMEE=1".into(), t);
    push(format!("AT+CGDCONT=1,\"IPV6\",\"{}\"", config.apn), t);
    push("AT+CEREG=4".into(), t);
    push("AT+NPSMR=1".into(), t);
    push(
        match config.psm {
            Some(p) => format!(
                "AT+CPSMS=1,,,\"{}\",\"{}\"",
                p.periodic_tau.bits(),
                p.active_time.bits()
            ),
            None => "AT+CPSMS=0".to_string(),
        },
        t,
    );
    if let Some(cycle) = config.edrx {
        push(format!("AT+CEDRXS=1,5,\"{}\"", cycle.bits()), t);
    }
    push("AT+CFUN=1".into(), t);
    push("AT+CGATT=1".into(), config.attach_timeout);
    list
}
