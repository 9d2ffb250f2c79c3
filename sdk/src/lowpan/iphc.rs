//! Stateful IPv6 header compression (RFC 6282 §3) with UDP next-header compression (§4.3).
//!
//! smoltcp's IPHC compresses without contexts (a global address goes inline, 16 bytes) and
//! refuses SAC/DAC without a CID byte; this module is ours, on `smoltcp::wire` for the IPv6
//! header view and the checksums. It compresses with the contexts a router advertised (6CO), so
//! a planned device's global address — the PAN's prefix plus an interface ID derived from the
//! device's extended address — takes **0 bytes** on air, and a router address in the same
//! prefix whose IID comes from its link-layer address 0 (or 2 for `::ff:fe00:XXXX`).
//!
//! # Forms
//!
//! ```text
//!   0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//! | 0 | 1 | 1 |  TF   |NH | HLIM  |CID|SAC|  SAM  | M |DAC|  DAM  |   [CID byte: SCI | DCI]
//! +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
//! ```
//!
//! * Traffic class and flow label: elided when zero (TF = 11), else 1, 3 or 4 bytes.
//! * Hop limit 1, 64, 255 elided; anything else inline.
//! * Addresses: link-local `fe80::/64` stateless (SAC/DAC = 0), anything under a context stateful
//!   (SAC/DAC = 1), each with the IID elided when derived from the link-layer address (mode 11),
//!   16 bits for `0000:00ff:fe00:XXXX` (10), 64 bits otherwise (01); the unspecified source is
//!   SAC = 1, SAM = 00; multicast destinations in 1, 4, 6 or 16 bytes (M = 1).
//! * The CID byte goes out when a context other than 0 is used, or — [`CidByte::Always`] — with
//!   every stateful address (for decompressors such as smoltcp 0.14 that refuse context 0
//!   implied). Context 0 without a CID byte is what RFC 6282 says and what we default to.
//! * UDP (NHC `11110CPP`): ports `0xF0Bx` in 4 bits, `0xF0xx` in 8, others inline; the checksum
//!   always inline (we never elide it; an elided one received is recomputed,
//!   [`Decompressed::udp_checksum_elided`]).
//!
//! [`compress`] writes the compressed headers only and says how many bytes of the IPv6 packet
//! they stand for, so the caller appends the rest or fragments it (RFC 4944 offsets count
//! uncompressed bytes). [`decompress`] is the reverse; both are sans-IO and allocation-free,
//! and no input makes them panic.

use core::net::Ipv6Addr;

use smoltcp::wire::{IpProtocol, Ipv6Packet, checksum};

use super::context::{Context, ContextTable};
use crate::radio::mac::LinkAddr;

/// The IPv6 header length.
pub const IPV6_HEADER_LEN: usize = 40;
/// The UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
/// The longest compressed header: IPHC (2) + CID (1) + TF (4) + NH (1) + HLIM (1) + two
/// addresses (32) + NHC UDP (7).
pub const MAX_COMPRESSED_HEADER: usize = 48;

const PROTO_UDP: u8 = 17;
const LINK_LOCAL_64: [u8; 8] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0];

/// The link-layer addresses of the frame an IPv6 packet travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddrs {
    /// The MAC source.
    pub src: LinkAddr,
    /// The MAC destination.
    pub dst: LinkAddr,
}

/// When the compressor sends the CID byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CidByte {
    /// Only when a context other than 0 is used (RFC 6282: no CID byte means context 0).
    #[default]
    WhenNonZero,
    /// Whenever a context is used: one byte more, understood by smoltcp 0.14 too.
    Always,
}

/// How [`compress`] compresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressOptions {
    /// When to send the CID byte.
    pub cid_byte: CidByte,
}

/// The result of [`compress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    /// Bytes of compressed header written.
    pub header_len: usize,
    /// Bytes of the IPv6 packet those headers stand for (40, or 48 with UDP); the rest of the
    /// packet follows them unchanged.
    pub consumed: usize,
}

/// Why a packet could not be compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// Not an IPv6 packet whose payload length matches its size.
    #[error("not a well-formed IPv6 packet")]
    NotIpv6,
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Why a compressed header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// Not an IPHC dispatch (`011xxxxx`).
    #[error("not an IPHC header")]
    NotIphc,
    /// The header is cut short.
    #[error("IPHC header truncated")]
    Truncated,
    /// A reserved address mode.
    #[error("reserved IPHC address mode")]
    ReservedMode,
    /// The header names a context this node does not have.
    #[error("unknown compression context {0}")]
    UnknownContext(u8),
    /// An IID to derive from a link-layer address that the frame does not carry.
    #[error("address elided but no link-layer address to derive it from")]
    NoLinkAddress,
    /// A next-header compression other than UDP (extension headers are not supported).
    #[error("unsupported next-header compression {0:#04x}")]
    UnsupportedNhc(u8),
    /// The datagram size is smaller than the headers, or larger than IPv6 allows.
    #[error("datagram size does not fit the headers")]
    BadLength,
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// The result of [`decompress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decompressed {
    /// Bytes of compressed header read; what follows in the input is uncompressed payload.
    pub consumed: usize,
    /// Bytes of IPv6 (and UDP) header written to the output.
    pub header_len: usize,
    /// The UDP checksum was elided: fill it in ([`fill_udp_checksum`]) once the whole datagram
    /// is there.
    pub udp_checksum_elided: bool,
}

/// The interface ID a link-layer address stands for (RFC 6282 §3.2.2): an extended address
/// with its U/L bit flipped, `0000:00ff:fe00:XXXX` for a short one.
#[must_use]
pub fn iid_from_link(ll: LinkAddr) -> Option<[u8; 8]> {
    match ll {
        LinkAddr::Extended(mut e) => {
            e[0] ^= 0x02;
            Some(e)
        }
        LinkAddr::Short([a, b]) => Some([0, 0, 0, 0xff, 0xfe, 0, a, b]),
        LinkAddr::Absent => None,
    }
}

fn low_half(iid: [u8; 8]) -> [u8; 16] {
    let mut a = [0_u8; 16];
    if let Some(dst) = a.get_mut(8..) {
        dst.copy_from_slice(&iid);
    }
    a
}

/// `low` under the link-local prefix or under a context.
fn derive(ctx: Option<&Context>, low: [u8; 16]) -> [u8; 16] {
    match ctx {
        Some(c) => c.overlay(low),
        None => {
            let mut a = low;
            if let Some(dst) = a.get_mut(..8) {
                dst.copy_from_slice(&LINK_LOCAL_64);
            }
            a
        }
    }
}

/// A compressed address: SAC/DAC, context ID, mode bits, inline bytes.
#[derive(Debug, Clone, Copy)]
struct AddrForm {
    stateful: bool,
    cid: u8,
    mode: u8,
    inline: [u8; 16],
    len: usize,
}

impl AddrForm {
    fn inline16(addr: [u8; 16]) -> AddrForm {
        AddrForm {
            stateful: false,
            cid: 0,
            mode: 0b00,
            inline: addr,
            len: 16,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.inline.get(..self.len).unwrap_or_default()
    }
}

/// The shortest form of `addr` under `ctx` (or link-local when `None`), if the prefix allows.
fn iid_form(addr: [u8; 16], ll: LinkAddr, ctx: Option<(u8, &Context)>) -> Option<AddrForm> {
    let c = ctx.map(|(_, c)| c);
    let form = |mode: u8, inline: &[u8]| {
        let mut bytes = [0_u8; 16];
        if let Some(dst) = bytes.get_mut(..inline.len()) {
            dst.copy_from_slice(inline);
        }
        AddrForm {
            stateful: ctx.is_some(),
            cid: ctx.map_or(0, |(id, _)| id),
            mode,
            inline: bytes,
            len: inline.len(),
        }
    };
    if let Some(iid) = iid_from_link(ll)
        && derive(c, low_half(iid)) == addr
    {
        return Some(form(0b11, &[]));
    }
    let [.., a14, a15] = addr;
    if derive(c, low_half([0, 0, 0, 0xff, 0xfe, 0, a14, a15])) == addr {
        return Some(form(0b10, &[a14, a15]));
    }
    let iid: [u8; 8] = addr.get(8..).and_then(|s| s.try_into().ok())?;
    if derive(c, low_half(iid)) == addr {
        return Some(form(0b01, &iid));
    }
    None
}

/// The shortest form of the unicast address `addr` given the frame's address `ll`.
fn unicast_form(addr: [u8; 16], ll: LinkAddr, contexts: &ContextTable) -> AddrForm {
    if addr.starts_with(&LINK_LOCAL_64) {
        return iid_form(addr, ll, None).unwrap_or(AddrForm::inline16(addr));
    }
    let mut best = AddrForm::inline16(addr);
    for (id, c) in contexts.for_compression() {
        if !c.matches(&addr) {
            continue;
        }
        if let Some(f) = iid_form(addr, ll, Some((id, c)))
            && f.len < best.len
        {
            best = f;
        }
    }
    best
}

/// The multicast destination forms (M = 1, DAC = 0).
fn multicast_form(addr: [u8; 16]) -> AddrForm {
    let mut f = AddrForm::inline16(addr);
    let zero = |r: core::ops::Range<usize>| addr.get(r).is_some_and(|s| s.iter().all(|&b| b == 0));
    let [_, scope, ..] = addr;
    let pick = |from: usize| -> ([u8; 16], usize) {
        let mut inline = [0_u8; 16];
        inline[0] = scope;
        let tail = addr.get(from..).unwrap_or_default();
        if let Some(dst) = inline.get_mut(1..1 + tail.len()) {
            dst.copy_from_slice(tail);
        }
        (inline, 1 + tail.len())
    };
    if scope == 0x02 && zero(2..15) {
        f.mode = 0b11;
        f.inline[0] = addr[15];
        f.len = 1;
    } else if zero(2..13) {
        (f.inline, f.len) = pick(13);
        f.mode = 0b10;
    } else if zero(2..11) {
        (f.inline, f.len) = pick(11);
        f.mode = 0b01;
    }
    f
}

/// A bounds-checked writer over the caller's buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CompressError> {
        let dst = self
            .buf
            .get_mut(self.at..self.at + bytes.len())
            .ok_or(CompressError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.at += bytes.len();
        Ok(())
    }
}

fn tf_field(traffic_class: u8, flow_label: u32) -> (u8, [u8; 4], usize) {
    let ecn = traffic_class & 0x03;
    let dscp = traffic_class >> 2;
    let [_, f1, f2, f3] = flow_label.to_be_bytes();
    let f1 = f1 & 0x0f;
    match (dscp, flow_label) {
        (0, 0) if ecn == 0 => (0b11, [0; 4], 0),
        (_, 0) => (0b10, [ecn << 6 | dscp, 0, 0, 0], 1),
        (0, _) => (0b01, [ecn << 6 | f1, f2, f3, 0], 3),
        _ => (0b00, [ecn << 6 | dscp, f1, f2, f3], 4),
    }
}

fn udp_nhc(udp: &[u8], out: &mut Writer<'_>) -> Result<(), CompressError> {
    let field = |at: usize| {
        udp.get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u16::from_be_bytes)
    };
    let (src, dst, sum) = (field(0), field(2), field(6));
    let [s0, s1] = src.to_be_bytes();
    let [d0, d1] = dst.to_be_bytes();
    if src & 0xfff0 == 0xf0b0 && dst & 0xfff0 == 0xf0b0 {
        out.put(&[0xf3, (s1 & 0x0f) << 4 | (d1 & 0x0f)])?;
    } else if dst & 0xff00 == 0xf000 {
        out.put(&[0xf1, s0, s1, d1])?;
    } else if src & 0xff00 == 0xf000 {
        out.put(&[0xf2, s1, d0, d1])?;
    } else {
        out.put(&[0xf0, s0, s1, d0, d1])?;
    }
    out.put(&sum.to_be_bytes())
}

/// Compresses the headers of the IPv6 `packet` for a frame from `ll.src` to `ll.dst` into
/// `out`; see the module doc for the forms chosen.
pub fn compress(
    packet: &[u8],
    ll: &LinkAddrs,
    contexts: &ContextTable,
    options: CompressOptions,
    out: &mut [u8],
) -> Result<Compressed, CompressError> {
    let ip = Ipv6Packet::new_checked(packet).map_err(|_| CompressError::NotIpv6)?;
    if ip.version() != 6 || packet.len() != IPV6_HEADER_LEN + usize::from(ip.payload_len()) {
        return Err(CompressError::NotIpv6);
    }
    let payload = packet.get(IPV6_HEADER_LEN..).unwrap_or_default();
    let next_header = u8::from(ip.next_header());
    let udp_len = payload
        .get(4..6)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes);
    let nhc_udp = next_header == PROTO_UDP
        && payload.len() >= UDP_HEADER_LEN
        && udp_len.is_some_and(|l| usize::from(l) == payload.len());

    let (src, dst) = (ip.src_addr().octets(), ip.dst_addr().octets());
    let src_form = if src == [0; 16] {
        AddrForm {
            stateful: true,
            cid: 0,
            mode: 0b00,
            inline: [0; 16],
            len: 0,
        }
    } else {
        unicast_form(src, ll.src, contexts)
    };
    let multicast = dst.first() == Some(&0xff);
    let dst_form = if multicast {
        multicast_form(dst)
    } else {
        unicast_form(dst, ll.dst, contexts)
    };
    // SAC = 1 with SAM = 00 is the unspecified address: no context.
    let src_uses_ctx = src_form.stateful && src_form.mode != 0b00;
    let cid_byte = src_form.cid != 0
        || dst_form.cid != 0
        || (options.cid_byte == CidByte::Always && (src_uses_ctx || dst_form.stateful));

    let (tf, tf_bytes, tf_len) = tf_field(ip.traffic_class(), ip.flow_label());
    let hop = ip.hop_limit();
    let hlim = match hop {
        1 => 0b01,
        64 => 0b10,
        255 => 0b11,
        _ => 0b00,
    };
    let mut w = Writer { buf: out, at: 0 };
    w.put(&[
        0x60 | tf << 3 | u8::from(nhc_udp) << 2 | hlim,
        u8::from(cid_byte) << 7
            | u8::from(src_form.stateful) << 6
            | src_form.mode << 4
            | u8::from(multicast) << 3
            | u8::from(dst_form.stateful) << 2
            | dst_form.mode,
    ])?;
    if cid_byte {
        w.put(&[src_form.cid << 4 | dst_form.cid])?;
    }
    w.put(tf_bytes.get(..tf_len).unwrap_or_default())?;
    if !nhc_udp {
        w.put(&[next_header])?;
    }
    if hlim == 0 {
        w.put(&[hop])?;
    }
    w.put(src_form.bytes())?;
    w.put(dst_form.bytes())?;
    let mut consumed = IPV6_HEADER_LEN;
    if nhc_udp {
        udp_nhc(payload, &mut w)?;
        consumed += UDP_HEADER_LEN;
    }
    Ok(Compressed {
        header_len: w.at,
        consumed,
    })
}

/// A bounds-checked reader over the compressed input.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecompressError> {
        let s = self
            .data
            .get(self.at..self.at + n)
            .ok_or(DecompressError::Truncated)?;
        self.at += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecompressError> {
        self.take(1).map(|s| s.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, DecompressError> {
        let s = self.take(2)?;
        Ok(s.try_into().map_or(0, u16::from_be_bytes))
    }
}

fn context(contexts: &ContextTable, id: u8) -> Result<&Context, DecompressError> {
    contexts.get(id).ok_or(DecompressError::UnknownContext(id))
}

/// An IID-based address (modes 01, 10, 11) under the link-local prefix or a context.
fn read_iid_addr(
    r: &mut Reader<'_>,
    mode: u8,
    ll: LinkAddr,
    ctx: Option<&Context>,
) -> Result<[u8; 16], DecompressError> {
    let iid: [u8; 8] = match mode {
        0b01 => r
            .take(8)?
            .try_into()
            .map_err(|_| DecompressError::Truncated)?,
        0b10 => {
            let s = r.take(2)?;
            let (a, b) = (s.first().copied(), s.get(1).copied());
            [0, 0, 0, 0xff, 0xfe, 0, a.unwrap_or(0), b.unwrap_or(0)]
        }
        _ => iid_from_link(ll).ok_or(DecompressError::NoLinkAddress)?,
    };
    Ok(derive(ctx, low_half(iid)))
}

fn read_inline16(r: &mut Reader<'_>) -> Result<[u8; 16], DecompressError> {
    r.take(16)?
        .try_into()
        .map_err(|_| DecompressError::Truncated)
}

fn read_src(
    r: &mut Reader<'_>,
    (sac, sam, sci): (bool, u8, u8),
    ll: LinkAddr,
    contexts: &ContextTable,
) -> Result<[u8; 16], DecompressError> {
    match (sac, sam) {
        (false, 0b00) => read_inline16(r),
        (false, _) => read_iid_addr(r, sam, ll, None),
        (true, 0b00) => Ok([0; 16]),
        (true, _) => read_iid_addr(r, sam, ll, Some(context(contexts, sci)?)),
    }
}

fn read_dst(
    r: &mut Reader<'_>,
    (m, dac, dam, dci): (bool, bool, u8, u8),
    ll: LinkAddr,
    contexts: &ContextTable,
) -> Result<[u8; 16], DecompressError> {
    let mut a = [0_u8; 16];
    match (m, dac, dam) {
        (false, false, 0b00) | (true, false, 0b00) => read_inline16(r),
        (false, false, _) => read_iid_addr(r, dam, ll, None),
        (false, true, 0b00) => Err(DecompressError::ReservedMode),
        (false, true, _) => read_iid_addr(r, dam, ll, Some(context(contexts, dci)?)),
        (true, false, mode) => {
            // ffXX::00XX:XXXX:XXXX (6), ffXX::00XX:XXXX (4), ff02::00XX (1).
            let (scope, tail_at, n) = match mode {
                0b01 => (r.byte()?, 11, 5),
                0b10 => (r.byte()?, 13, 3),
                _ => (0x02, 15, 1),
            };
            a[0] = 0xff;
            a[1] = scope;
            if let Some(dst) = a.get_mut(tail_at..tail_at + n) {
                dst.copy_from_slice(r.take(n)?);
            }
            Ok(a)
        }
        (true, true, 0b00) => {
            // ffXX:XXLL:PPPP:PPPP:PPPP:PPPP:XXXX:XXXX (RFC 3306), the prefix from the context.
            let c = context(contexts, dci)?;
            let s = r.take(6)?;
            let p = c.prefix().octets();
            a[0] = 0xff;
            a[1] = s.first().copied().unwrap_or(0);
            a[2] = s.get(1).copied().unwrap_or(0);
            a[3] = c.len().min(64);
            if let (Some(dst), Some(src)) = (a.get_mut(4..12), p.get(..8)) {
                dst.copy_from_slice(src);
            }
            if let (Some(dst), Some(src)) = (a.get_mut(12..16), s.get(2..6)) {
                dst.copy_from_slice(src);
            }
            Ok(a)
        }
        (true, true, _) => Err(DecompressError::ReservedMode),
    }
}

fn read_tf(r: &mut Reader<'_>, tf: u8) -> Result<(u8, u32), DecompressError> {
    let flow = |hi: u8, mid: u8, lo: u8| u32::from_be_bytes([0, hi & 0x0f, mid, lo]);
    Ok(match tf {
        0b00 => {
            let s = r.take(4)?;
            let b = |i: usize| s.get(i).copied().unwrap_or(0);
            ((b(0) & 0x3f) << 2 | b(0) >> 6, flow(b(1), b(2), b(3)))
        }
        0b01 => {
            let s = r.take(3)?;
            let b = |i: usize| s.get(i).copied().unwrap_or(0);
            (b(0) >> 6, flow(b(0), b(1), b(2)))
        }
        0b10 => {
            let b = r.byte()?;
            ((b & 0x3f) << 2 | b >> 6, 0)
        }
        _ => (0, 0),
    })
}

/// The UDP header from its NHC form: ports and checksum (the length is filled in later).
fn read_udp_nhc(r: &mut Reader<'_>) -> Result<([u8; 8], bool), DecompressError> {
    let nhc = r.byte()?;
    if nhc & 0xf8 != 0xf0 {
        return Err(DecompressError::UnsupportedNhc(nhc));
    }
    let (src, dst) = match nhc & 0x03 {
        0b00 => (r.u16()?, r.u16()?),
        0b01 => (r.u16()?, 0xf000 | u16::from(r.byte()?)),
        0b10 => (0xf000 | u16::from(r.byte()?), r.u16()?),
        _ => {
            let b = r.byte()?;
            (0xf0b0 | u16::from(b >> 4), 0xf0b0 | u16::from(b & 0x0f))
        }
    };
    let elided = nhc & 0x04 != 0;
    let sum = if elided { 0 } else { r.u16()? };
    let mut h = [0_u8; 8];
    h[..2].copy_from_slice(&src.to_be_bytes());
    h[2..4].copy_from_slice(&dst.to_be_bytes());
    h[6..].copy_from_slice(&sum.to_be_bytes());
    Ok((h, elided))
}

/// Decompresses the IPHC header at the start of `data` (a frame's payload after any fragment
/// header) into an IPv6 header (plus the UDP header when NHC-compressed) in `out`.
///
/// `datagram_size` is the uncompressed datagram's size from a FRAG1 header; `None` for an
/// unfragmented packet, whose size follows from `data`'s length.
pub fn decompress(
    data: &[u8],
    ll: &LinkAddrs,
    contexts: &ContextTable,
    datagram_size: Option<usize>,
    out: &mut [u8],
) -> Result<Decompressed, DecompressError> {
    let mut r = Reader { data, at: 0 };
    let (b0, b1) = (r.byte()?, r.byte()?);
    if b0 >> 5 != 0b011 {
        return Err(DecompressError::NotIphc);
    }
    let (tf, nh, hlim) = ((b0 >> 3) & 0x03, b0 & 0x04 != 0, b0 & 0x03);
    let cid = if b1 & 0x80 != 0 { r.byte()? } else { 0 };
    let (traffic_class, flow_label) = read_tf(&mut r, tf)?;
    let next_header = if nh { PROTO_UDP } else { r.byte()? };
    let hop = match hlim {
        0b01 => 1,
        0b10 => 64,
        0b11 => 255,
        _ => r.byte()?,
    };
    let src = read_src(
        &mut r,
        (b1 & 0x40 != 0, (b1 >> 4) & 0x03, cid >> 4),
        ll.src,
        contexts,
    )?;
    let dst = read_dst(
        &mut r,
        (b1 & 0x08 != 0, b1 & 0x04 != 0, b1 & 0x03, cid & 0x0f),
        ll.dst,
        contexts,
    )?;
    let udp = if nh {
        Some(read_udp_nhc(&mut r)?)
    } else {
        None
    };
    let consumed = r.at;
    let header_len = IPV6_HEADER_LEN + if udp.is_some() { UDP_HEADER_LEN } else { 0 };
    let rest = data.len() - consumed;
    let total = datagram_size.unwrap_or(header_len + rest);
    let payload_len = total
        .checked_sub(IPV6_HEADER_LEN)
        .filter(|&p| total >= header_len && p <= usize::from(u16::MAX))
        .ok_or(DecompressError::BadLength)?;
    let mut h = [0_u8; IPV6_HEADER_LEN + UDP_HEADER_LEN];
    let vtf = 6_u32 << 28 | u32::from(traffic_class) << 20 | flow_label;
    h[..4].copy_from_slice(&vtf.to_be_bytes());
    // payload_len was checked to fit 16 bits.
    let payload_len = (payload_len as u16).to_be_bytes();
    h[4..6].copy_from_slice(&payload_len);
    h[6] = next_header;
    h[7] = hop;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
    let mut udp_checksum_elided = false;
    if let Some((udp, elided)) = udp {
        h[40..].copy_from_slice(&udp);
        h[44..46].copy_from_slice(&payload_len);
        udp_checksum_elided = elided;
    }
    out.get_mut(..header_len)
        .ok_or(DecompressError::BufferTooSmall)?
        .copy_from_slice(h.get(..header_len).unwrap_or_default());
    Ok(Decompressed {
        consumed,
        header_len,
        udp_checksum_elided,
    })
}

/// Decompresses a whole unfragmented packet (IPHC header and payload) into `out`; returns the
/// IPv6 packet's length. An elided UDP checksum is computed.
pub fn decompress_packet(
    data: &[u8],
    ll: &LinkAddrs,
    contexts: &ContextTable,
    out: &mut [u8],
) -> Result<usize, DecompressError> {
    let d = decompress(data, ll, contexts, None, out)?;
    let rest = data.get(d.consumed..).unwrap_or_default();
    let total = d.header_len + rest.len();
    out.get_mut(d.header_len..total)
        .ok_or(DecompressError::BufferTooSmall)?
        .copy_from_slice(rest);
    if d.udp_checksum_elided {
        fill_udp_checksum(out.get_mut(..total).unwrap_or_default());
    }
    Ok(total)
}

/// The upper-layer checksum (RFC 8200 §8.1) of `data` from `src` to `dst` with `next_header`.
#[must_use]
pub fn upper_layer_checksum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> u16 {
    // Datagrams here are far below 4 GiB.
    let len = data.len() as u32;
    !checksum::combine(&[
        checksum::pseudo_header_v6(&src, &dst, IpProtocol::from(next_header), len),
        checksum::data(data),
    ])
}

/// Computes and writes the UDP checksum of the IPv6/UDP `packet` (no-op for anything else).
pub fn fill_udp_checksum(packet: &mut [u8]) {
    let Ok(ip) = Ipv6Packet::new_checked(&*packet) else {
        return;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if u8::from(ip.next_header()) != PROTO_UDP {
        return;
    }
    let Some(udp) = packet.get_mut(IPV6_HEADER_LEN..) else {
        return;
    };
    if let Some(sum) = udp.get_mut(6..8) {
        sum.copy_from_slice(&[0, 0]);
    } else {
        return;
    }
    let sum = match upper_layer_checksum(src, dst, PROTO_UDP, udp) {
        0 => 0xffff,
        s => s,
    };
    if let Some(dst) = udp.get_mut(6..8) {
        dst.copy_from_slice(&sum.to_be_bytes());
    }
}
