//! The modem emulator, sans-IO: an NB-IoT module as the SDK's driver (or a person at a serial
//! terminal) meets it — AT commands in, responses and URCs out — with the radio's state behind
//! it: attach after a delay, an IPv6 address from the carrier, PSM entered after the active time
//! and left for an uplink or the periodic TAU, and optionally a new address after a sleep.
//!
//! # The dialect
//!
//! 3GPP TS 27.007 and the HiSilicon socket set (Quectel BC95/BC28), as `v6iot_sdk::nbiot`
//! documents it: `AT`, `ATE0/1`, `AT+CMEE`, `AT+CFUN`, `AT+CGDCONT` (PDP type `IPV6` or
//! `IPV4V6`), `AT+CEREG` (modes 0–5, read form), `AT+CGATT`, `AT+CGPADDR` (dotted, or colons after
//! `AT+CGPIAF=1`), `AT+CPSMS`, `AT+CEDRXS`, `AT+NPSMR`, `AT+CSCON`, `AT+CGSN`, `AT+NSOCR`, `AT+NSOST`,
//! `AT+NSORF`, `AT+NSOCL`; URCs `+CEREG`, `+NPSMR`, `+CSCON`, `+NSONMI`. Anything else is
//! `ERROR` (or `+CME ERROR: 4` with `AT+CMEE=1`); bad parameters are `+CME ERROR: 50`, sending
//! while detached `+CME ERROR: 30`. Responses are framed `\r\n…\r\n` (V.250 verbose).
//!
//! # The radio
//!
//! | state | reachable | leaves for |
//! |---|---|---|
//! | detached | no | attaching (`AT+CGATT=1`) |
//! | attaching | no | registered, after [`EmulatorConfig::attach_delay`] and an address from the carrier |
//! | registered | yes | PSM, [`active time`](EmulatorConfig) after the last datagram (with PSM on) |
//! | PSM | no | registered: an uplink (`AT+NSOST`), or the periodic TAU (reachable for one active time) |
//!
//! Addresses come from whoever drives the emulator ([`EmulatorEvent::NeedAddress`] →
//! [`ModemEmulator::assign_address`]): the simulator's carrier hands out one per device from its
//! prefix, a fresh one after a sleep when [`EmulatorConfig::readdress_after_sleep`] says so.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use v6iot_sdk::nbiot::at::{fields, hex, unhex};
use v6iot_sdk::nbiot::{MAX_DATAGRAM, T3324, T3412};
use v6iot_sdk::time::Instant;

/// Longest command line taken; a longer one is answered with `ERROR`.
pub const MAX_COMMAND_LINE: usize = 4096;
/// Sockets a module offers (BC95: 7).
pub const MAX_SOCKETS: usize = 7;
/// Datagrams kept per socket until read; more are dropped.
pub const MAX_RX_DATAGRAMS: usize = 8;

/// How an emulated modem behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// From `AT+CGATT=1` to registered.
    pub attach_delay: Duration,
    /// A new address from the carrier after every sleep (a re-attach on wake-up).
    pub readdress_after_sleep: bool,
    /// What the network grants (periodic TAU, active time); `None`: what the device asked for.
    pub granted: Option<(T3412, T3324)>,
    /// Test hook: `+CSCON: 1` (the connection an uplink brings up) is written *between* the
    /// `AT+NSOST` answer's line and its `OK`, as modems do when a URC falls inside a response.
    pub urc_inside_responses: bool,
    /// The IMEI `AT+CGSN=1` reports.
    pub imei: String,
    /// Tracking area code and cell id in `+CEREG`.
    pub cell: (u16, u32),
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            attach_delay: Duration::from_secs(2),
            readdress_after_sleep: false,
            granted: None,
            urc_inside_responses: false,
            imei: "490154203237518".into(),
            cell: (0x1a2b, 0x0c0d_0e0f),
        }
    }
}

/// What the emulator asks of its driver, or tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmulatorEvent {
    /// It needs an address from the carrier: the one it had (`fresh` false: first attach) or
    /// a new one (`fresh`: re-attach after a sleep). Answer with [`ModemEmulator::assign_address`].
    NeedAddress {
        /// A new one.
        fresh: bool,
    },
    /// It entered (true) or left (false) PSM.
    PowerSaving(bool),
}

/// A datagram the modem sends (from its address, the driver's socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Where to.
    pub to: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// Why a datagram for the device was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undeliverable {
    /// The device is in PSM, detached or attaching: the network cannot page it.
    #[error("the device is not reachable (PSM, detached or attaching)")]
    Unreachable,
    /// No socket is open to receive it.
    #[error("no socket is open")]
    NoSocket,
    /// The socket holds [`MAX_RX_DATAGRAMS`] unread datagrams already.
    #[error("the socket's receive queue is full")]
    QueueFull,
}

/// What the emulator counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmulatorStats {
    /// Command lines answered.
    pub commands: u64,
    /// Command lines answered with an error.
    pub errors: u64,
    /// Datagrams sent.
    pub uplinks: u64,
    /// Datagrams handed to a socket.
    pub downlinks: u64,
    /// Datagrams for the device dropped while it could not be reached.
    pub unreachable: u64,
    /// Datagrams dropped otherwise (no socket, queue full).
    pub dropped: u64,
    /// Times PSM was entered.
    pub sleeps: u64,
    /// Wake-ups for the periodic TAU.
    pub tau_wakes: u64,
    /// Addresses changed on wake-up.
    pub readdressed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Radio {
    Detached,
    Attaching {
        done_at: Instant,
    },
    /// Waiting for [`ModemEmulator::assign_address`]; `wake` when waking from PSM.
    Addressing {
        wake: bool,
    },
    /// Registered and reachable; PSM at `psm_at` (none with PSM off).
    Active {
        psm_at: Option<Instant>,
    },
    /// In PSM; the periodic TAU wakes it at `tau_at`.
    Psm {
        tau_at: Option<Instant>,
    },
}

#[derive(Debug)]
struct Socket {
    port: u16,
    rx: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// Failure of a command: `ERROR`, or `+CME ERROR: n` with `AT+CMEE=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused(u16);

const NOT_SUPPORTED: Refused = Refused(4);
const BAD_PARAMETERS: Refused = Refused(50);
const NO_SERVICE: Refused = Refused(30);

type Answer = Result<Vec<String>, Refused>;

/// One emulated modem. See the [module docs](self).
#[derive(Debug)]
pub struct ModemEmulator {
    config: EmulatorConfig,
    input: Vec<u8>,
    input_overlong: bool,
    out: Vec<u8>,
    echo: bool,
    cmee: u8,
    cereg: u8,
    npsmr: bool,
    cscon: bool,
    colon_addresses: bool,
    apn: Option<String>,
    psm: Option<(T3412, T3324)>,
    edrx: Option<String>,
    radio: Radio,
    address: Option<Ipv6Addr>,
    sockets: Vec<Option<Socket>>,
    /// Datagrams sent while waking up, before the address came.
    held: Vec<Uplink>,
    uplinks: VecDeque<Uplink>,
    events: VecDeque<EmulatorEvent>,
    frozen: bool,
    stats: EmulatorStats,
}

impl ModemEmulator {
    /// A modem just powered on: radio on, detached, echo on.
    pub fn new(config: EmulatorConfig) -> ModemEmulator {
        ModemEmulator {
            config,
            input: Vec::new(),
            input_overlong: false,
            out: Vec::new(),
            echo: true,
            cmee: 0,
            cereg: 0,
            npsmr: false,
            cscon: false,
            colon_addresses: false,
            apn: None,
            psm: None,
            edrx: None,
            radio: Radio::Detached,
            address: None,
            sockets: (0..MAX_SOCKETS).map(|_| None).collect(),
            held: Vec::new(),
            uplinks: VecDeque::new(),
            events: VecDeque::new(),
            frozen: false,
            stats: EmulatorStats::default(),
        }
    }

    /// Test hook: a frozen modem reads and answers nothing (a module that hung); what it had
    /// not written yet when it froze is lost.
    pub fn set_frozen(&mut self, frozen: bool) {
        if frozen && !self.frozen {
            self.out.clear();
            self.input.clear();
        }
        self.frozen = frozen;
    }

    /// What it counted.
    pub fn stats(&self) -> &EmulatorStats {
        &self.stats
    }

    /// Its address, once attached.
    pub fn address(&self) -> Option<Ipv6Addr> {
        self.address
    }

    /// Registered and not in PSM: the network can reach it.
    pub fn is_reachable(&self) -> bool {
        matches!(self.radio, Radio::Active { .. })
    }

    /// In PSM.
    pub fn is_sleeping(&self) -> bool {
        matches!(self.radio, Radio::Psm { .. })
    }

    /// Bytes from the device (its MCU, or a terminal): command lines ending in CR or LF.
    pub fn handle_serial(&mut self, now: Instant, bytes: &[u8]) {
        if self.frozen {
            return;
        }
        for &b in bytes {
            match b {
                b'\r' | b'\n' => self.end_line(now),
                _ if self.input.len() < MAX_COMMAND_LINE => self.input.push(b),
                _ => self.input_overlong = true,
            }
        }
    }

    fn end_line(&mut self, now: Instant) {
        let line = std::mem::take(&mut self.input);
        if std::mem::take(&mut self.input_overlong) {
            self.stats.commands += 1;
            self.finish(Err(NOT_SUPPORTED), Vec::new());
            return;
        }
        let Ok(text) = String::from_utf8(line) else {
            self.stats.commands += 1;
            self.finish(Err(NOT_SUPPORTED), Vec::new());
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if self.echo {
            self.out.extend_from_slice(text.as_bytes());
            self.out.push(b'\r');
        }
        self.stats.commands += 1;
        let mut inside = Vec::new();
        let answer = self.execute(now, text, &mut inside);
        self.finish(answer, inside);
    }

    /// Writes an answer: its information lines, URCs that fell inside it, the final code.
    fn finish(&mut self, answer: Answer, inside: Vec<String>) {
        let final_code = match &answer {
            Ok(info) => {
                for line in info {
                    self.line(line);
                }
                "OK".to_owned()
            }
            Err(Refused(code)) => {
                self.stats.errors += 1;
                if self.cmee == 0 {
                    "ERROR".to_owned()
                } else {
                    format!("+CME ERROR: {code}")
                }
            }
        };
        for urc in inside {
            self.line(&urc);
        }
        self.line(&final_code);
    }

    fn line(&mut self, text: &str) {
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// An unsolicited result code, written at once.
    fn urc(&mut self, text: &str) {
        self.line(text);
    }

    fn execute(&mut self, now: Instant, text: &str, inside: &mut Vec<String>) -> Answer {
        let Some(rest) = text.get(..2).filter(|p| p.eq_ignore_ascii_case("AT")) else {
            return Err(NOT_SUPPORTED);
        };
        let body = text.get(rest.len()..).unwrap_or_default();
        let (name, args) = match body.find(['=', '?']) {
            Some(i) => (
                body.get(..i).unwrap_or_default(),
                body.get(i..).unwrap_or_default(),
            ),
            None => (body, ""),
        };
        let name = name.to_ascii_uppercase();
        match name.as_str() {
            "" => Ok(Vec::new()),
            "E0" | "E1" => {
                self.echo = name == "E1";
                Ok(Vec::new())
            }
            "+CMEE" => self.small_setting(args, 2, |m, v| m.cmee = v, |m| m.cmee, "+CMEE"),
            "+CEREG" => self.cereg_command(args),
            "+NPSMR" => self.small_setting(
                args,
                1,
                |m, v| m.npsmr = v == 1,
                |m| u8::from(m.npsmr),
                "+NPSMR",
            ),
            "+CSCON" => self.small_setting(
                args,
                1,
                |m, v| m.cscon = v == 1,
                |m| u8::from(m.cscon),
                "+CSCON",
            ),
            "+CFUN" => match args {
                "?" => Ok(vec!["+CFUN: 1".into()]),
                "=0" | "=1" => Ok(Vec::new()),
                _ => Err(BAD_PARAMETERS),
            },
            "+CGSN" => Ok(vec![format!("+CGSN: {}", self.config.imei)]),
            "+CGDCONT" => self.cgdcont(args),
            "+CGATT" => self.cgatt(now, args),
            "+CGPIAF" => {
                self.colon_addresses = args.starts_with("=1");
                Ok(Vec::new())
            }
            "+CGPADDR" => self.cgpaddr(),
            "+CPSMS" => self.cpsms(args),
            "+CEDRXS" => self.cedrxs(args),
            "+NSOCR" => self.nsocr(args),
            "+NSOST" => self.nsost(now, args, inside),
            "+NSORF" => self.nsorf(args),
            "+NSOCL" => self.nsocl(args),
            _ => Err(NOT_SUPPORTED),
        }
    }

    /// `=n` (0..=max) sets, `?` reads as `NAME: n`.
    fn small_setting(
        &mut self,
        args: &str,
        max: u8,
        set: impl FnOnce(&mut Self, u8),
        get: impl FnOnce(&Self) -> u8,
        name: &str,
    ) -> Answer {
        if args == "?" {
            return Ok(vec![format!("{name}: {}", get(self))]);
        }
        let v = args
            .strip_prefix('=')
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|v| *v <= max)
            .ok_or(BAD_PARAMETERS)?;
        set(self, v);
        Ok(Vec::new())
    }

    fn cereg_command(&mut self, args: &str) -> Answer {
        if args == "?" {
            let report = self.registration_fields();
            return Ok(vec![format!("+CEREG: {},{report}", self.cereg)]);
        }
        let v = args
            .strip_prefix('=')
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|v| *v <= 5)
            .ok_or(BAD_PARAMETERS)?;
        self.cereg = v;
        Ok(Vec::new())
    }

    fn stat(&self) -> u8 {
        match self.radio {
            Radio::Detached => 0,
            Radio::Attaching { .. } | Radio::Addressing { wake: false } => 2,
            Radio::Addressing { wake: true } | Radio::Active { .. } | Radio::Psm { .. } => 1,
        }
    }

    /// `<stat>[,"tac","ci",9[,,[,"active","tau"]]]` as the mode in force asks.
    fn registration_fields(&self) -> String {
        let stat = self.stat();
        if self.cereg < 2 || stat != 1 {
            return stat.to_string();
        }
        let (tac, ci) = self.config.cell;
        let mut s = format!("{stat},\"{tac:04X}\",\"{ci:08X}\",9");
        if self.cereg >= 4
            && let Some((tau, active)) = self.granted()
        {
            s.push_str(&format!(",,,\"{}\",\"{}\"", active.bits(), tau.bits()));
        }
        s
    }

    fn granted(&self) -> Option<(T3412, T3324)> {
        self.psm.map(|asked| self.config.granted.unwrap_or(asked))
    }

    fn registration_urc(&mut self) {
        if self.cereg > 0 {
            let text = format!("+CEREG: {}", self.registration_fields());
            self.urc(&text);
        }
    }

    fn cgdcont(&mut self, args: &str) -> Answer {
        if args == "?" {
            return Ok(self
                .apn
                .iter()
                .map(|apn| format!("+CGDCONT: 1,\"IPV6\",\"{apn}\""))
                .collect());
        }
        let f = fields(args.strip_prefix('=').ok_or(BAD_PARAMETERS)?);
        match (f.first().copied(), f.get(1).copied()) {
            (Some("1"), Some("IPV6" | "IPV4V6")) => {
                self.apn = Some(f.get(2).copied().unwrap_or_default().to_owned());
                Ok(Vec::new())
            }
            _ => Err(BAD_PARAMETERS),
        }
    }

    fn cgatt(&mut self, now: Instant, args: &str) -> Answer {
        match args {
            "?" => Ok(vec![format!("+CGATT: {}", u8::from(self.stat() == 1))]),
            "=1" => {
                if self.apn.is_none() {
                    return Err(Refused(3)); // operation not allowed: no PDP context
                }
                if self.radio == Radio::Detached {
                    self.radio = Radio::Attaching {
                        done_at: now + self.config.attach_delay,
                    };
                }
                Ok(Vec::new())
            }
            "=0" => {
                self.radio = Radio::Detached;
                self.registration_urc();
                Ok(Vec::new())
            }
            _ => Err(BAD_PARAMETERS),
        }
    }

    fn cgpaddr(&self) -> Answer {
        let Some(address) = self.address.filter(|_| self.stat() == 1) else {
            return Ok(vec!["+CGPADDR: 1".into()]);
        };
        let text = if self.colon_addresses {
            address.to_string().to_ascii_uppercase()
        } else {
            address
                .octets()
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(".")
        };
        Ok(vec![format!("+CGPADDR: 1,\"{text}\"")])
    }

    fn cpsms(&mut self, args: &str) -> Answer {
        if args == "?" {
            return Ok(vec![match self.psm {
                Some((tau, active)) => {
                    format!("+CPSMS: 1,,,\"{}\",\"{}\"", tau.bits(), active.bits())
                }
                None => "+CPSMS: 0".into(),
            }]);
        }
        let f = fields(args.strip_prefix('=').ok_or(BAD_PARAMETERS)?);
        match f.first().copied() {
            Some("0") => self.psm = None,
            Some("1") => {
                let tau = f.get(3).and_then(|s| T3412::parse_bits(s));
                let active = f.get(4).and_then(|s| T3324::parse_bits(s));
                let (Some(tau), Some(active)) = (tau, active) else {
                    return Err(BAD_PARAMETERS);
                };
                self.psm = Some((tau, active));
            }
            _ => return Err(BAD_PARAMETERS),
        }
        Ok(Vec::new())
    }

    fn cedrxs(&mut self, args: &str) -> Answer {
        if args == "?" {
            return Ok(self
                .edrx
                .iter()
                .map(|v| format!("+CEDRXS: 5,\"{v}\""))
                .collect());
        }
        let f = fields(args.strip_prefix('=').ok_or(BAD_PARAMETERS)?);
        match (f.first().copied(), f.get(1).copied(), f.get(2).copied()) {
            (Some("0" | "3"), _, _) => self.edrx = None,
            (Some("1" | "2"), Some("5"), Some(v))
                if v.len() == 4 && v.bytes().all(|b| b == b'0' || b == b'1') =>
            {
                self.edrx = Some(v.to_owned());
            }
            _ => return Err(BAD_PARAMETERS),
        }
        Ok(Vec::new())
    }

    fn nsocr(&mut self, args: &str) -> Answer {
        let f = fields(args.strip_prefix('=').ok_or(BAD_PARAMETERS)?);
        let (Some("DGRAM"), Some("17"), Some(port)) =
            (f.first().copied(), f.get(1).copied(), f.get(2))
        else {
            return Err(BAD_PARAMETERS);
        };
        let port: u16 = port.parse().map_err(|_| BAD_PARAMETERS)?;
        if self.sockets.iter().flatten().any(|s| s.port == port) {
            return Err(Refused(3));
        }
        let slot = self
            .sockets
            .iter()
            .position(Option::is_none)
            .ok_or(Refused(3))?;
        if let Some(s) = self.sockets.get_mut(slot) {
            *s = Some(Socket {
                port,
                rx: VecDeque::new(),
            });
        }
        Ok(vec![slot.to_string()])
    }

    fn socket_mut(&mut self, id: &str) -> Result<(usize, &mut Socket), Refused> {
        let i: usize = id.parse().map_err(|_| BAD_PARAMETERS)?;
        match self.sockets.get_mut(i) {
            Some(Some(s)) => Ok((i, s)),
            _ => Err(BAD_PARAMETERS),
        }
    }

    fn nsost(&mut self, now: Instant, args: &str, inside: &mut Vec<String>) -> Answer {
        let f = fields(args.strip_prefix('=').ok_or(BAD_PARAMETERS)?);
        let [id, ip, port, len, data, ..] = f.as_slice() else {
            return Err(BAD_PARAMETERS);
        };
        let (socket, _) = self.socket_mut(id)?;
        let ip: IpAddr = ip.parse().map_err(|_| BAD_PARAMETERS)?;
        let port: u16 = port.parse().map_err(|_| BAD_PARAMETERS)?;
        let len: usize = len.parse().map_err(|_| BAD_PARAMETERS)?;
        let bytes = unhex(data).filter(|b| b.len() == len && len <= MAX_DATAGRAM);
        let Some(bytes) = bytes else {
            return Err(BAD_PARAMETERS);
        };
        let uplink = Uplink {
            to: SocketAddr::new(ip, port),
            bytes,
        };
        match self.radio {
            Radio::Active { .. } => {
                self.activity(now);
                self.send(uplink);
            }
            Radio::Psm { .. } => {
                self.wake(now, false);
                match self.radio {
                    Radio::Addressing { .. } => self.held.push(uplink),
                    _ => self.send(uplink),
                }
            }
            Radio::Addressing { wake: true } => self.held.push(uplink),
            _ => return Err(NO_SERVICE),
        }
        if self.config.urc_inside_responses {
            inside.push("+CSCON: 1".into());
        }
        Ok(vec![format!("{socket},{len}")])
    }

    fn send(&mut self, uplink: Uplink) {
        self.stats.uplinks += 1;
        self.uplinks.push_back(uplink);
    }

    fn nsorf(&mut self, args: &str) -> Answer {
        let f = fields(args.strip_prefix('=').ok_or(BAD_PARAMETERS)?);
        let [id, want, ..] = f.as_slice() else {
            return Err(BAD_PARAMETERS);
        };
        let want: usize = want.parse().map_err(|_| BAD_PARAMETERS)?;
        let (socket, s) = self.socket_mut(id)?;
        let Some((from, mut bytes)) = s.rx.pop_front() else {
            return Ok(Vec::new());
        };
        let rest = bytes.split_off(want.min(bytes.len()));
        let remaining = rest.len();
        if !rest.is_empty() {
            s.rx.push_front((from, rest));
        }
        Ok(vec![format!(
            "{socket},{},{},{},{},{remaining}",
            from.ip().to_string().to_ascii_uppercase(),
            from.port(),
            bytes.len(),
            hex(&bytes)
        )])
    }

    fn nsocl(&mut self, args: &str) -> Answer {
        let id = args.strip_prefix('=').ok_or(BAD_PARAMETERS)?;
        let (i, _) = self.socket_mut(id.trim())?;
        if let Some(slot) = self.sockets.get_mut(i) {
            *slot = None;
        }
        Ok(Vec::new())
    }

    /// A datagram arrived: active time runs again from now.
    fn activity(&mut self, now: Instant) {
        let active = self.granted().and_then(|(_, a)| a.duration());
        self.radio = Radio::Active {
            psm_at: active.map(|a| now + a),
        };
    }

    /// Leaves PSM (for an uplink, or the TAU), asking for a new address when configured.
    fn wake(&mut self, now: Instant, tau: bool) {
        if self.npsmr {
            self.urc("+NPSMR: 0");
        }
        self.events.push_back(EmulatorEvent::PowerSaving(false));
        if self.config.readdress_after_sleep && !tau {
            self.radio = Radio::Addressing { wake: true };
            self.events
                .push_back(EmulatorEvent::NeedAddress { fresh: true });
        } else {
            self.activity(now);
        }
    }

    /// The driver's answer to [`EmulatorEvent::NeedAddress`].
    pub fn assign_address(&mut self, now: Instant, address: Ipv6Addr) {
        let before = self.address.replace(address);
        if let Radio::Addressing { wake } = self.radio {
            if wake && before != Some(address) {
                self.stats.readdressed += 1;
            }
            self.activity(now);
            self.registration_urc();
            for uplink in std::mem::take(&mut self.held) {
                self.send(uplink);
            }
        }
    }

    /// A datagram for the device, from `from`, as the network delivers it (after the carrier's
    /// latency). Refused while the device cannot be reached.
    pub fn handle_downlink(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Undeliverable> {
        if !self.is_reachable() {
            self.stats.unreachable += 1;
            return Err(Undeliverable::Unreachable);
        }
        let Some((id, socket)) = self
            .sockets
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| s.as_mut().map(|s| (i, s)))
        else {
            self.stats.dropped += 1;
            return Err(Undeliverable::NoSocket);
        };
        if socket.rx.len() >= MAX_RX_DATAGRAMS {
            self.stats.dropped += 1;
            return Err(Undeliverable::QueueFull);
        }
        socket.rx.push_back((from, bytes.to_vec()));
        self.stats.downlinks += 1;
        self.activity(now);
        if !self.frozen {
            self.urc(&format!("+NSONMI: {id},{}", bytes.len()));
        }
        Ok(())
    }

    /// When [`ModemEmulator::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.radio {
            Radio::Attaching { done_at } => Some(done_at),
            Radio::Active { psm_at } => psm_at,
            Radio::Psm { tau_at } => tau_at,
            Radio::Detached | Radio::Addressing { .. } => None,
        }
    }

    /// Lets time pass: attach completes, PSM is entered, the TAU wakes it.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.radio {
            Radio::Attaching { done_at } if done_at <= now => {
                self.radio = Radio::Addressing { wake: false };
                self.events
                    .push_back(EmulatorEvent::NeedAddress { fresh: false });
            }
            Radio::Active {
                psm_at: Some(psm_at),
            } if psm_at <= now => {
                let tau = self.granted().and_then(|(t, _)| t.duration());
                self.radio = Radio::Psm {
                    tau_at: tau.map(|t| now + t),
                };
                self.stats.sleeps += 1;
                if self.npsmr {
                    self.urc("+NPSMR: 1");
                }
                self.events.push_back(EmulatorEvent::PowerSaving(true));
            }
            Radio::Psm {
                tau_at: Some(tau_at),
            } if tau_at <= now => {
                self.stats.tau_wakes += 1;
                self.wake(now, true);
            }
            _ => {}
        }
    }

    /// Bytes for the device's serial line.
    pub fn poll_serial(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty() && !self.frozen).then(|| std::mem::take(&mut self.out))
    }

    /// The next datagram to send from the device's address.
    pub fn poll_uplink(&mut self) -> Option<Uplink> {
        self.uplinks.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<EmulatorEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Sends a command line, returns what the modem wrote.
    fn at(m: &mut ModemEmulator, now: Instant, line: &str) -> String {
        m.handle_serial(now, format!("{line}\r").as_bytes());
        String::from_utf8(m.poll_serial().unwrap_or_default()).unwrap()
    }

    fn attached(config: EmulatorConfig) -> ModemEmulator {
        let mut m = ModemEmulator::new(config);
        for c in [
            "ATE0",
            "AT+CMEE=1",
            "AT+CGDCONT=1,\"IPV6\",\"iot\"",
            "AT+CEREG=4",
            "AT+NPSMR=1",
            "AT+CPSMS=1,,,\"00111000\",\"00000101\"",
            "AT+CGATT=1",
        ] {
            assert!(at(&mut m, t(0), c).ends_with("OK\r\n"), "{c}");
        }
        m.handle_timeout(t(2000));
        assert_eq!(
            m.poll_event(),
            Some(EmulatorEvent::NeedAddress { fresh: false })
        );
        m.assign_address(t(2000), "2001:db8:100::1".parse().unwrap());
        m
    }

    #[test]
    fn answers_the_bring_up_and_reports_registration_with_the_granted_timers() {
        let mut m = ModemEmulator::new(EmulatorConfig::default());
        assert_eq!(
            at(&mut m, t(0), "ATE0"),
            "ATE0\r\r\nOK\r\n",
            "echo until ATE0"
        );
        assert_eq!(at(&mut m, t(0), "AT+FOO"), "\r\nERROR\r\n");
        at(&mut m, t(0), "AT+CMEE=1");
        assert_eq!(at(&mut m, t(0), "AT+FOO"), "\r\n+CME ERROR: 4\r\n");
        assert_eq!(
            at(&mut m, t(0), "AT+CGATT=1"),
            "\r\n+CME ERROR: 3\r\n",
            "no PDP context"
        );
        assert_eq!(
            at(&mut m, t(0), "AT+CGDCONT=1,\"IP\",\"x\""),
            "\r\n+CME ERROR: 50\r\n"
        );
        let mut m = attached(EmulatorConfig::default());
        assert_eq!(
            String::from_utf8(m.poll_serial().unwrap()).unwrap(),
            "\r\n+CEREG: 1,\"1A2B\",\"0C0D0E0F\",9,,,\"00000101\",\"00111000\"\r\n"
        );
        assert_eq!(
            at(&mut m, t(2100), "AT+CGPADDR=1"),
            "\r\n+CGPADDR: 1,\"32.1.13.184.1.0.0.0.0.0.0.0.0.0.0.1\"\r\n\r\nOK\r\n"
        );
        at(&mut m, t(2100), "AT+CGPIAF=1,1,1,1");
        assert_eq!(
            at(&mut m, t(2100), "AT+CGPADDR=1"),
            "\r\n+CGPADDR: 1,\"2001:DB8:100::1\"\r\n\r\nOK\r\n"
        );
        assert_eq!(
            at(&mut m, t(2100), "AT+CFUN?"),
            "\r\n+CFUN: 1\r\n\r\nOK\r\n"
        );
    }

    #[test]
    fn datagrams_sleep_and_wake_with_a_new_address() {
        let mut m = attached(EmulatorConfig {
            readdress_after_sleep: true,
            ..EmulatorConfig::default()
        });
        let _ = m.poll_serial();
        assert_eq!(
            at(&mut m, t(2100), "AT+NSOCR=DGRAM,17,5683,1"),
            "\r\n0\r\n\r\nOK\r\n"
        );
        assert_eq!(
            at(&mut m, t(2200), "AT+NSOST=0,2001:db8::1,5683,2,4142"),
            "\r\n0,2\r\n\r\nOK\r\n"
        );
        assert_eq!(
            m.poll_uplink(),
            Some(Uplink {
                to: "[2001:db8::1]:5683".parse().unwrap(),
                bytes: b"AB".to_vec()
            })
        );
        let edge: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        m.handle_downlink(t(2300), edge, b"xyz").unwrap();
        assert_eq!(
            String::from_utf8(m.poll_serial().unwrap()).unwrap(),
            "\r\n+NSONMI: 0,3\r\n"
        );
        assert_eq!(
            at(&mut m, t(2400), "AT+NSORF=0,2"),
            "\r\n0,2001:DB8::1,5683,2,7879,1\r\n\r\nOK\r\n"
        );
        assert_eq!(
            at(&mut m, t(2400), "AT+NSORF=0,9"),
            "\r\n0,2001:DB8::1,5683,1,7A,0\r\n\r\nOK\r\n"
        );
        assert_eq!(at(&mut m, t(2400), "AT+NSORF=0,9"), "\r\nOK\r\n");
        // 10 s of active time after the last datagram: PSM, unreachable.
        assert_eq!(m.poll_timeout(), Some(t(12_300)));
        m.handle_timeout(t(12_300));
        assert!(m.is_sleeping());
        assert_eq!(
            String::from_utf8(m.poll_serial().unwrap()).unwrap(),
            "\r\n+NPSMR: 1\r\n"
        );
        assert_eq!(
            m.handle_downlink(t(13_000), edge, b"late"),
            Err(Undeliverable::Unreachable)
        );
        // An uplink wakes it; it needs a new address before the datagram leaves.
        let answer = at(&mut m, t(20_000), "AT+NSOST=0,2001:db8::1,5683,1,43");
        assert_eq!(answer, "\r\n+NPSMR: 0\r\n\r\n0,1\r\n\r\nOK\r\n");
        assert!(m.poll_uplink().is_none());
        assert!(m.poll_event() == Some(EmulatorEvent::PowerSaving(true)));
        assert!(m.poll_event() == Some(EmulatorEvent::PowerSaving(false)));
        assert_eq!(
            m.poll_event(),
            Some(EmulatorEvent::NeedAddress { fresh: true })
        );
        m.assign_address(t(20_000), "2001:db8:100::1:1".parse().unwrap());
        assert_eq!(m.poll_uplink().map(|u| u.bytes), Some(b"C".to_vec()));
        assert!(m.is_reachable());
        assert_eq!(m.stats().readdressed, 1);
        assert_eq!(m.stats().unreachable, 1);
    }

    #[test]
    fn the_periodic_tau_opens_a_window_without_an_uplink() {
        let mut m = attached(EmulatorConfig {
            granted: Some((
                T3412::parse_bits("01100101").unwrap(),
                T3324::parse_bits("00000010").unwrap(),
            )),
            ..EmulatorConfig::default()
        });
        at(&mut m, t(2000), "AT+NSOCR=DGRAM,17,5683,1");
        m.handle_timeout(t(6000)); // active 4 s
        assert!(m.is_sleeping());
        assert_eq!(m.poll_timeout(), Some(t(16_000))); // TAU 10 s
        m.handle_timeout(t(16_000));
        assert!(m.is_reachable());
        assert_eq!(m.stats().tau_wakes, 1);
        assert!(
            m.handle_downlink(t(17_000), "[::1]:1".parse().unwrap(), b"c")
                .is_ok()
        );
    }

    #[test]
    fn a_urc_can_fall_inside_a_response() {
        let mut m = attached(EmulatorConfig {
            urc_inside_responses: true,
            ..EmulatorConfig::default()
        });
        let _ = m.poll_serial();
        at(&mut m, t(2100), "AT+NSOCR=DGRAM,17,5683,1");
        assert_eq!(
            at(&mut m, t(2200), "AT+NSOST=0,2001:db8::1,5683,1,00"),
            "\r\n0,1\r\n\r\n+CSCON: 1\r\n\r\nOK\r\n"
        );
    }

    #[test]
    fn bad_commands_get_errors_and_never_panic() {
        let mut m = attached(EmulatorConfig::default());
        for bad in [
            "AT+NSOST=0,2001:db8::1,5683,2,41",
            "AT+NSOST=9,::1,1,1,00",
            "AT+NSOST=",
            "AT+NSORF=x,1",
            "AT+NSOCR=STREAM,6,1",
            "AT+CPSMS=1,,,\"0\",\"1\"",
            "AT+CEREG=9",
            "AT+CEDRXS=1,5,\"01x1\"",
            "\u{7f}\u{1}",
            "X",
        ] {
            let answer = at(&mut m, t(3000), bad);
            assert!(answer.contains("ERROR"), "{bad}: {answer}");
        }
        let long = "A".repeat(MAX_COMMAND_LINE + 5);
        assert!(at(&mut m, t(3000), &long).contains("ERROR"));
        m.handle_serial(t(3000), &[0xff, 0xfe, b'\r']);
        assert!(String::from_utf8_lossy(&m.poll_serial().unwrap()).contains("ERROR"));
    }
}
