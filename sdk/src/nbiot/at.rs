//! The modem's side of the AT dialogue (ITU-T V.250, 3GPP TS 27.007), sans-IO: bytes from the
//! serial line → lines ([`LineReader`]) → what each line is ([`classify`]): a final result code
//! (`OK`, `ERROR`, `+CME ERROR: n`), the echo of a command, an unsolicited result code ([`Urc`])
//! or an information line of the command in flight.
//!
//! # Bad input
//!
//! Nothing the modem sends can panic or grow memory without bound: a line longer than
//! [`MAX_LINE`] is dropped whole (counted `overlong`), a line with bytes outside printable ASCII
//! (binary noise, a baud-rate mismatch) is dropped (counted `garbage`), at most
//! [`MAX_PENDING_LINES`] lines wait to be taken (older ones are dropped, counted `overflow`),
//! and a URC with a known prefix whose fields do not parse is [`Line::BadUrc`], never a guess.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv6Addr};

use super::timers::{T3324, T3412};

/// Longest line kept, in bytes. The longest line of this dialect is an `AT+NSORF` answer
/// carrying [`super::MAX_DATAGRAM`] bytes as hex (2 × 1024 + about 70).
pub const MAX_LINE: usize = 2304;

/// Lines kept until taken with [`LineReader::poll_line`]; beyond this the oldest is dropped.
pub const MAX_PENDING_LINES: usize = 64;

/// Most comma-separated fields read from one line (more are ignored).
const MAX_FIELDS: usize = 16;

/// What the line reader dropped and why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineStats {
    /// Lines handed out.
    pub lines: u64,
    /// Lines longer than [`MAX_LINE`], dropped whole.
    pub overlong: u64,
    /// Lines with bytes outside printable ASCII, dropped.
    pub garbage: u64,
    /// Lines dropped because [`MAX_PENDING_LINES`] were waiting.
    pub overflow: u64,
}

/// Splits the modem's byte stream into lines (terminated by CR, LF or both; empty lines are
/// the framing of V.250's verbose responses and are skipped).
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    overlong: bool,
    lines: VecDeque<String>,
    stats: LineStats,
}

impl LineReader {
    /// An empty reader.
    pub fn new() -> LineReader {
        LineReader::default()
    }

    /// Takes bytes from the modem; complete lines become available to [`LineReader::poll_line`].
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\r' | b'\n' => self.end_line(),
                _ if self.buf.len() < MAX_LINE => self.buf.push(b),
                _ => self.overlong = true,
            }
        }
    }

    fn end_line(&mut self) {
        if core::mem::take(&mut self.overlong) {
            self.stats.overlong += 1;
            self.buf.clear();
            return;
        }
        if self.buf.is_empty() {
            return;
        }
        let bytes = core::mem::take(&mut self.buf);
        let printable = bytes
            .iter()
            .all(|b| (0x20..0x7f).contains(b) || *b == b'\t');
        let Some(line) = printable.then(|| String::from_utf8(bytes).ok()).flatten() else {
            self.stats.garbage += 1;
            return;
        };
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if self.lines.len() >= MAX_PENDING_LINES {
            self.lines.pop_front();
            self.stats.overflow += 1;
        }
        self.stats.lines += 1;
        self.lines.push_back(line.into());
    }

    /// The next complete line, without its terminator and surrounding blanks.
    pub fn poll_line(&mut self) -> Option<String> {
        self.lines.pop_front()
    }

    /// Bytes of a line begun but not yet ended.
    pub fn partial_len(&self) -> usize {
        self.buf.len()
    }

    /// Forgets a line begun but not ended (after a modem stopped mid-line).
    pub fn discard_partial(&mut self) {
        self.buf.clear();
        self.overlong = false;
    }

    /// Counters.
    pub fn stats(&self) -> &LineStats {
        &self.stats
    }
}

/// `+CME ERROR:` with a numeric code (`AT+CMEE=1`) or text (`AT+CMEE=2`), 3GPP TS 27.007 §9.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmeError {
    /// The numeric code.
    Code(u16),
    /// The verbose text.
    Text(String),
}

impl core::fmt::Display for CmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CmeError::Code(n) => write!(f, "+CME ERROR: {n} ({})", cme_meaning(*n)),
            CmeError::Text(t) => write!(f, "+CME ERROR: {t}"),
        }
    }
}

/// What a numeric `+CME ERROR` code means (3GPP TS 27.007 §9.2.1 and the HiSilicon set), for
/// messages; "unknown" for codes not listed.
pub fn cme_meaning(code: u16) -> &'static str {
    match code {
        0 => "phone failure",
        3 => "operation not allowed",
        4 => "operation not supported",
        10 => "SIM not inserted",
        13 => "SIM failure",
        23 => "memory failure",
        30 => "no network service",
        50 => "incorrect parameters",
        100 => "unknown",
        148 => "unspecified GPRS error",
        159 => "uplink busy/flow control",
        513 => "SIM not present (HiSilicon)",
        _ => "unknown",
    }
}

/// A final result code: the end of a command's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// `OK`.
    Ok,
    /// `ERROR`.
    Error,
    /// `+CME ERROR: …`.
    Cme(CmeError),
}

/// The EPS registration state of `+CEREG` (3GPP TS 27.007 §10.1.22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    /// 0: not registered, not searching.
    NotRegistered,
    /// 1: registered, home network.
    Home,
    /// 2: not registered, searching.
    Searching,
    /// 3: registration denied.
    Denied,
    /// 4: unknown (e.g. out of coverage).
    Unknown,
    /// 5: registered, roaming.
    Roaming,
    /// Any other value (emergency-only and SMS-only states, 6 to 10).
    Other(u8),
}

impl RegState {
    /// The state of a `<stat>` value.
    pub fn from_code(code: u8) -> RegState {
        match code {
            0 => RegState::NotRegistered,
            1 => RegState::Home,
            2 => RegState::Searching,
            3 => RegState::Denied,
            4 => RegState::Unknown,
            5 => RegState::Roaming,
            other => RegState::Other(other),
        }
    }

    /// Registered, at home or roaming: datagrams can flow.
    pub fn is_registered(self) -> bool {
        matches!(self, RegState::Home | RegState::Roaming)
    }
}

/// A `+CEREG` report: the URC of `AT+CEREG=4` or the answer to `AT+CEREG?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// Registration state.
    pub stat: RegState,
    /// Tracking area code.
    pub tac: Option<u16>,
    /// E-UTRAN cell id.
    pub cell: Option<u32>,
    /// Access technology (9 = E-UTRAN NB-S1, i.e. NB-IoT).
    pub act: Option<u8>,
    /// The active time (T3324) the network granted.
    pub active_time: Option<T3324>,
    /// The periodic TAU (T3412 extended) the network granted.
    pub periodic_tau: Option<T3412>,
}

/// An unsolicited result code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urc {
    /// `+CEREG: <stat>[,…]`: registration changed (mode 4 gives the PSM timers too).
    Registration(Registration),
    /// `+NSONMI: <socket>,<length>`: a datagram is waiting on a socket.
    DatagramWaiting {
        /// The socket.
        socket: u8,
        /// Its length in bytes.
        length: u16,
    },
    /// `+NPSMR: <mode>`: the modem entered (true) or left (false) power saving mode.
    PowerSaving(bool),
    /// `+CSCON: <mode>`: signalling connection to the network up (true) or released.
    Connection(bool),
    /// `+NSOCLI: <socket>`: the modem closed a socket.
    SocketClosed(u8),
    /// `+CEDRXP: <AcT>,…`: the eDRX parameters the network provided (4-bit strings).
    Edrx {
        /// Access technology type (5 = NB-S1).
        act: u8,
        /// The eDRX value the network provided, if any.
        network_value: Option<u8>,
        /// The paging time window, if any.
        paging_window: Option<u8>,
    },
    /// `+CGEV: …`: a packet domain event, kept as text (informational).
    PacketDomain(String),
}

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A final result code.
    Final(Final),
    /// The echo of a command (`ATE1`): ignored.
    Echo,
    /// An unsolicited result code.
    Urc(Urc),
    /// A line with a URC prefix whose fields do not parse: dropped, counted.
    BadUrc,
    /// An information line (part of the response to the command in flight).
    Info(&'a str),
}

/// URC prefixes (3GPP TS 27.007 and the HiSilicon socket set).
const URC_PREFIXES: [&str; 7] = [
    "+CEREG:", "+NSONMI:", "+NPSMR:", "+CSCON:", "+NSOCLI:", "+CEDRXP:", "+CGEV:",
];

/// Classifies a line. `expect` is the information prefix of the command in flight (e.g.
/// `+CEREG:` while `AT+CEREG?` waits): a line with it is that command's answer, not a URC.
/// (`AT+CEREG?` and the `+CEREG` URC share a prefix; a URC arriving inside that one response
/// is read as the answer, which carries the same state.)
pub fn classify<'a>(line: &'a str, expect: Option<&str>) -> Line<'a> {
    match line {
        "OK" => return Line::Final(Final::Ok),
        "ERROR" => return Line::Final(Final::Error),
        _ => {}
    }
    if let Some(rest) = line.strip_prefix("+CME ERROR:") {
        let rest = rest.trim();
        let error = match rest.parse::<u16>() {
            Ok(code) => CmeError::Code(code),
            Err(_) => CmeError::Text(rest.into()),
        };
        return Line::Final(Final::Cme(error));
    }
    if line.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
        return Line::Echo;
    }
    if expect.is_some_and(|p| line.starts_with(p)) {
        return Line::Info(line);
    }
    match URC_PREFIXES.iter().find(|p| line.starts_with(**p)) {
        Some(prefix) => parse_urc(prefix, line.get(prefix.len()..).unwrap_or_default())
            .map_or(Line::BadUrc, Line::Urc),
        None => Line::Info(line),
    }
}

fn parse_urc(prefix: &str, rest: &str) -> Option<Urc> {
    let f = fields(rest);
    let f = f.as_slice();
    Some(match prefix {
        "+CEREG:" => Urc::Registration(parse_registration(f)?),
        "+NSONMI:" => Urc::DatagramWaiting {
            socket: f.first()?.parse().ok()?,
            length: f.get(1)?.parse().ok()?,
        },
        "+NPSMR:" => Urc::PowerSaving(flag(f.first()?)?),
        "+CSCON:" => Urc::Connection(flag(f.first()?)?),
        "+NSOCLI:" => Urc::SocketClosed(f.first()?.parse().ok()?),
        "+CEDRXP:" => Urc::Edrx {
            act: f.first()?.parse().ok()?,
            network_value: optional(f.get(2).copied(), nibble)?,
            paging_window: optional(f.get(3).copied(), nibble)?,
        },
        _ => Urc::PacketDomain(rest.trim().into()),
    })
}

fn flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// `None` for an absent or empty field, `Some(None)` for one that does not parse.
fn optional<T>(field: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    match field {
        None | Some("") => Some(None),
        Some(s) => parse(s).map(Some),
    }
}

/// A 4-bit string such as `"0101"`.
fn nibble(s: &str) -> Option<u8> {
    (s.len() == 4)
        .then(|| u8::from_str_radix(s, 2).ok())
        .flatten()
}

/// The fields of a `+CEREG` URC (`<stat>[,[<tac>],[<ci>],[<AcT>][,[<cause_type>],
/// [<reject_cause>][,[<Active-Time>],[<Periodic-TAU>]]]]`).
pub fn parse_registration(f: &[&str]) -> Option<Registration> {
    let stat: u8 = f.first()?.parse().ok()?;
    Some(Registration {
        stat: RegState::from_code(stat),
        tac: optional(f.get(1).copied(), |s| u16::from_str_radix(s, 16).ok())?,
        cell: optional(f.get(2).copied(), |s| u32::from_str_radix(s, 16).ok())?,
        act: optional(f.get(3).copied(), |s| s.parse().ok())?,
        active_time: optional(f.get(6).copied(), T3324::parse_bits)?,
        periodic_tau: optional(f.get(7).copied(), T3412::parse_bits)?,
    })
}

/// The answer to `AT+CEREG?`: `+CEREG: <n>,<stat>[,…]` (the URC's fields after `<n>`).
pub fn parse_registration_read(line: &str) -> Option<Registration> {
    let f = fields(line.strip_prefix("+CEREG:")?);
    parse_registration(f.get(1..)?)
}

/// The comma-separated fields of a response, blanks trimmed and the quotes of string fields
/// removed (commas inside quotes do not split). At most 16 fields.
pub fn fields(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(unquote(s.get(start..i).unwrap_or_default()));
                start = i + 1;
                if out.len() == MAX_FIELDS {
                    return out;
                }
            }
            _ => {}
        }
    }
    out.push(unquote(s.get(start..).unwrap_or_default()));
    out
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// An address as `AT+CGPADDR` writes it: IPv6 as 16 dot-separated decimals (the default) or in
/// colon notation (`AT+CGPIAF=1,…`), IPv4 as 4 decimals.
pub fn parse_address(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        return s.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let mut octets = [0u8; 16];
    let mut n = 0;
    for part in s.split('.') {
        *octets.get_mut(n)? = part.parse().ok()?;
        n += 1;
    }
    match n {
        16 => Some(IpAddr::V6(Ipv6Addr::from(octets))),
        4 => {
            let [a, b, c, d, ..] = octets;
            Some(IpAddr::from([a, b, c, d]))
        }
        _ => None,
    }
}

/// The IPv6 address in a `+CGPADDR: <cid>,<addr_1>[,<addr_2>]` line (a dual-stack context
/// lists IPv4 first).
pub fn parse_cgpaddr(line: &str) -> Option<Ipv6Addr> {
    let f = fields(line.strip_prefix("+CGPADDR:")?);
    f.iter().skip(1).find_map(|a| match parse_address(a)? {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    })
}

/// Upper-case hex of `bytes` (the data field of `AT+NSOST` and `AT+NSORF`).
pub fn hex(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// The bytes of a hex field (either case); `None` for an odd length or a non-hex digit (a sign
/// is not a digit: `+b` is refused).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn lines(reader: &mut LineReader) -> Vec<String> {
        core::iter::from_fn(|| reader.poll_line()).collect()
    }

    #[test]
    fn lines_end_at_cr_lf_or_both_and_blank_framing_is_skipped() {
        let mut r = LineReader::new();
        r.handle_bytes(b"\r\n+CEREG: 1\r\n\r\nOK\r\nA\rB\nC");
        assert_eq!(lines(&mut r), ["+CEREG: 1", "OK", "A", "B"]);
        assert_eq!(r.partial_len(), 1);
        r.handle_bytes(b"D\r\n");
        assert_eq!(lines(&mut r), ["CD"]);
        assert_eq!(r.stats().lines, 5);
    }

    #[test]
    fn a_line_split_anywhere_reads_the_same() {
        let text = b"\r\n1,2001:DB8::1,5683,2,4142,0\r\n\r\nOK\r\n";
        for cut in 0..text.len() {
            let mut r = LineReader::new();
            r.handle_bytes(&text[..cut]);
            r.handle_bytes(&text[cut..]);
            assert_eq!(
                lines(&mut r),
                ["1,2001:DB8::1,5683,2,4142,0", "OK"],
                "{cut}"
            );
        }
    }

    #[test]
    fn overlong_and_binary_lines_are_dropped_and_counted_and_the_next_line_is_read() {
        let mut r = LineReader::new();
        let mut long = vec![b'A'; MAX_LINE + 10];
        long.extend_from_slice(b"\r\nOK\r\n");
        r.handle_bytes(&long);
        r.handle_bytes(b"\x00\xff\x13garbage\r\n+NPSMR: 1\r\n");
        assert_eq!(lines(&mut r), ["OK", "+NPSMR: 1"]);
        assert_eq!((r.stats().overlong, r.stats().garbage), (1, 1));
        // A line of exactly MAX_LINE bytes is kept.
        let mut exact = vec![b'7'; MAX_LINE];
        exact.push(b'\n');
        r.handle_bytes(&exact);
        assert_eq!(lines(&mut r).first().map(String::len), Some(MAX_LINE));
    }

    #[test]
    fn pending_lines_are_bounded() {
        let mut r = LineReader::new();
        for _ in 0..MAX_PENDING_LINES + 5 {
            r.handle_bytes(b"+CSCON: 1\r\n");
        }
        assert_eq!(lines(&mut r).len(), MAX_PENDING_LINES);
        assert_eq!(r.stats().overflow, 5);
    }

    #[test]
    fn final_result_codes() {
        assert_eq!(classify("OK", None), Line::Final(Final::Ok));
        assert_eq!(classify("ERROR", None), Line::Final(Final::Error));
        assert_eq!(
            classify("+CME ERROR: 50", None),
            Line::Final(Final::Cme(CmeError::Code(50)))
        );
        assert_eq!(
            classify("+CME ERROR: SIM not inserted", None),
            Line::Final(Final::Cme(CmeError::Text("SIM not inserted".into())))
        );
        assert_eq!(
            CmeError::Code(30).to_string(),
            "+CME ERROR: 30 (no network service)"
        );
        assert_eq!(classify("AT+CGATT=1", None), Line::Echo);
        assert_eq!(classify("at", None), Line::Echo);
    }

    #[test]
    fn urcs_and_information_lines() {
        assert_eq!(
            classify("+NSONMI:1,42", None),
            Line::Urc(Urc::DatagramWaiting {
                socket: 1,
                length: 42
            })
        );
        assert_eq!(
            classify("+NPSMR: 0", None),
            Line::Urc(Urc::PowerSaving(false))
        );
        assert_eq!(
            classify("+CSCON: 1", None),
            Line::Urc(Urc::Connection(true))
        );
        assert_eq!(
            classify("+NSOCLI: 0", None),
            Line::Urc(Urc::SocketClosed(0))
        );
        assert_eq!(
            classify("+CEDRXP: 5,\"0101\",\"0101\",\"0011\"", None),
            Line::Urc(Urc::Edrx {
                act: 5,
                network_value: Some(5),
                paging_window: Some(3)
            })
        );
        assert_eq!(
            classify("+CGEV: ME PDN ACT 1", None),
            Line::Urc(Urc::PacketDomain("ME PDN ACT 1".into()))
        );
        assert_eq!(classify("+NSONMI: x,1", None), Line::BadUrc);
        assert_eq!(classify("+NPSMR: 7", None), Line::BadUrc);
        // The answer of the command in flight, even with a URC's prefix.
        assert_eq!(
            classify("+CEREG: 4,1", Some("+CEREG:")),
            Line::Info("+CEREG: 4,1")
        );
        assert_eq!(classify("0,12", None), Line::Info("0,12"));
    }

    #[test]
    fn cereg_mode_4_with_psm_timers() {
        let line = "+CEREG: 1,\"1A2B\",\"0C0D0E0F\",9,,,\"00100001\",\"00111000\"";
        let Line::Urc(Urc::Registration(r)) = classify(line, None) else {
            panic!("{line}");
        };
        assert_eq!(r.stat, RegState::Home);
        assert_eq!(
            (r.tac, r.cell, r.act),
            (Some(0x1a2b), Some(0x0c0d_0e0f), Some(9))
        );
        assert_eq!(r.active_time, Some(T3324::from_byte(0b0010_0001)));
        assert_eq!(r.periodic_tau, Some(T3412::from_byte(0b0011_1000)));
        let short = classify("+CEREG: 2", None);
        assert!(
            matches!(short, Line::Urc(Urc::Registration(r)) if r.stat == RegState::Searching && r.tac.is_none())
        );
        assert_eq!(classify("+CEREG: 1,\"XYZ\"", None), Line::BadUrc);
        // The read form has <n> first.
        let read = parse_registration_read("+CEREG: 4,5,\"0001\",\"00000002\",9").unwrap();
        assert_eq!((read.stat, read.tac), (RegState::Roaming, Some(1)));
        assert!(parse_registration_read("+CEREG: 4").is_none());
    }

    #[test]
    fn fields_respect_quotes() {
        assert_eq!(
            fields(" 1, \"a,b\" ,,\"\" "),
            ["1", "a,b", "", ""].map(str::to_owned)
        );
        assert_eq!(fields(&",".repeat(40)).len(), MAX_FIELDS);
    }

    #[test]
    fn cgpaddr_in_both_notations() {
        let dotted = "+CGPADDR: 1,\"32.1.13.184.1.0.0.0.0.0.0.0.0.0.0.1\"";
        assert_eq!(parse_cgpaddr(dotted), "2001:db8:100::1".parse().ok());
        let colons = "+CGPADDR: 1,\"2001:DB8:100::A\"";
        assert_eq!(parse_cgpaddr(colons), "2001:db8:100::a".parse().ok());
        let dual = "+CGPADDR: 1,\"10.0.0.7\",\"32.1.13.184.1.0.0.0.0.0.0.0.0.0.0.2\"";
        assert_eq!(parse_cgpaddr(dual), "2001:db8:100::2".parse().ok());
        assert_eq!(parse_cgpaddr("+CGPADDR: 1,\"10.0.0.7\""), None);
        assert_eq!(parse_cgpaddr("+CGPADDR: 1"), None);
        assert_eq!(parse_cgpaddr("+CGPADDR: 1,\"1.2.3.4.5\""), None);
        assert_eq!(parse_cgpaddr("+CGPADDR: 1,\"300.1.2.3\""), None);
        assert_eq!(
            parse_address("1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17"),
            None
        );
    }

    #[test]
    fn hex_both_ways() {
        assert_eq!(hex(&[0x00, 0xab, 0x4f]), "00AB4F");
        assert_eq!(unhex("00ab4F"), Some(vec![0x00, 0xab, 0x4f]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        // A sign is not a digit (found by the nbiot_at fuzz target).
        assert_eq!(unhex("+b"), None);
        assert_eq!(unhex("-1"), None);
        assert_eq!(unhex("é1"), None);
        assert_eq!(unhex(""), Some(vec![]));
    }
}
