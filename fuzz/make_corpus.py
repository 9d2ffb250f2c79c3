#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (run from anywhere).

Seeds are small, valid or nearly valid inputs in each target's own input format (see the
`//!` doc of each file in fuzz_targets/): RFC test vectors, the datagrams a real device and edge
exchange, and minimal examples that reach each branch of a target's framing. libFuzzer starts
from them instead of from nothing; what it learns on top goes into a work corpus outside the
repository (scripts/test, fuzz/README.md). A target without a directory here still runs.

Re-run after changing a target's input format, then commit fuzz/corpus/. Files are named by
what they hold; the script overwrites its own files and leaves any others alone.
"""

import ipaddress
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent


# --- CoAP (RFC 7252 §3) ------------------------------------------------------------------------

CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE = 0x01, 0x02, 0x03, 0x04
OBSERVE, URI_PATH, CONTENT_FORMAT, URI_QUERY, ACCEPT, BLOCK2 = 6, 11, 12, 15, 17, 23


def _ext(n):
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes([n - 13])
    return 14, struct.pack(">H", n - 269)


def coap(mtype, code, mid, token=b"", options=(), payload=b""):
    """One CoAP message; `options` as (number, value bytes), in any order."""
    out = bytearray([0x40 | mtype << 4 | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, dext = _ext(number - last)
        length, lext = _ext(len(value))
        out += bytes([delta << 4 | length]) + dext + lext + value
        last = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def uint(n):
    """A CoAP uint option value (shortest form)."""
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def path(p):
    return [(URI_PATH, seg.encode()) for seg in p.strip("/").split("/") if seg]


def frames(*parts, ctl_width=1):
    """Frames of `[len][ctl…][bytes]`: each part is (ctl bytes, datagram)."""
    out = bytearray()
    for ctl, datagram in parts:
        assert len(datagram) < 256 and len(ctl) == ctl_width
        out += bytes([len(datagram)]) + ctl + datagram
    return bytes(out)


# --- CBOR (RFC 8949), the little SenML needs ---------------------------------------------------


def cbor(x):
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
            if n < 1 << (8 * struct.calcsize(fmt)):
                return bytes([major << 5 | ai]) + struct.pack(fmt, n)
        raise ValueError(n)

    if isinstance(x, bool):
        return b"\xf5" if x else b"\xf4"
    if isinstance(x, int):
        return head(0, x) if x >= 0 else head(1, -1 - x)
    if isinstance(x, float):
        return b"\xfb" + struct.pack(">d", x)
    if isinstance(x, str):
        b = x.encode()
        return head(3, len(b)) + b
    if isinstance(x, bytes):
        return head(2, len(x)) + x
    if isinstance(x, list):
        return head(4, len(x)) + b"".join(cbor(i) for i in x)
    if isinstance(x, dict):
        return head(5, len(x)) + b"".join(cbor(k) + cbor(v) for k, v in x.items())
    raise TypeError(x)


# SenML CBOR labels (RFC 8428 §6)
BN, BT, BU, BV, N, U, V, VS, VB, T, VD = -2, -3, -4, -5, 0, 1, 2, 3, 4, 6, 8


# --- the inputs --------------------------------------------------------------------------------


def rfc8428_json_examples():
    """The RFC 8428 §5 JSON examples, as sdk/tests/senml_rfc8428.rs copied them from the RFC."""
    text = (REPO / "sdk/tests/senml_rfc8428.rs").read_text()
    found = re.findall(r'const (RFC_5_[0-9_A-Z]+): &str = r#"\n(.*?)"#;', text, re.S)
    assert len(found) >= 8, "the RFC 8428 examples moved in sdk/tests/senml_rfc8428.rs"
    return {name.lower(): body.strip().encode() for name, body in found}


def rfc8428_cbor_dump():
    """The RFC 8428 §6 CBOR example (the hex dump in sdk/tests/senml_rfc8428.rs)."""
    text = (REPO / "sdk/tests/senml_rfc8428.rs").read_text()
    dump = re.search(r'const RFC_6_CBOR_DUMP: &str = r##"\n(.*?)"##;', text, re.S).group(1)
    out = bytearray()
    for line in dump.strip().splitlines():
        tokens = line.split("|")[0].split()
        out += bytes(int(t, 16) for t in tokens[1:])
    assert len(out) == 195, len(out)
    return bytes(out)


def fleet_report_json(seq=7):
    return (
        '[{"bn":"urn:dev:v6iot:sim000001:","n":"seq","v":%d},'
        '{"n":"temperature","u":"Cel","v":21.5},{"n":"pressure","u":"Pa","v":101325}]' % seq
    ).encode()


def fleet_report_cbor(seq=7):
    return cbor(
        [
            {BN: "urn:dev:v6iot:sim000001:", N: "seq", V: seq},
            {N: "temperature", U: "Cel", V: 21.5},
            {N: "valve", VB: True},
            {N: "log", VS: "ok"},
            {N: "blob", VD: b"\x01\x02"},
        ]
    )


def addr_parse():
    seeds = {
        "site-prefix.txt": b"2001:db8:1200::/48",
        "site-prefix-too-short.txt": b"2001:db8::/32",
        "device-address.txt": b"2001:db8:1200:305:12:3456:78ab:cdef",
        "device-address-class1.txt": b"2001:db8:1200:100:1::1",
        "device-address-max.txt": b"2001:db8:1200:fefe:ff:ffff:ffff:ffff",
        "short-address-iid.txt": b"2001:db8:1200:305:0:ff:fe00:1234",
        "eui64.txt": b"02:12:34:56:78:ab:cd:ef",
        "eui64-upper.txt": b"02:12:34:56:78:AB:CD:EF",
    }
    for name, text in [
        ("device-address.bin", "2001:db8:1200:305:12:3456:78ab:cdef"),
        ("not-in-plan.bin", "2001:db8:1200::1"),
    ]:
        seeds[name] = ipaddress.IPv6Address(text).packed
    return seeds


def senml_decode():
    seeds = {f"{name}.json": body for name, body in rfc8428_json_examples().items()}
    seeds["rfc_6_cbor.cbor"] = rfc8428_cbor_dump()
    seeds["fleet-report.json"] = fleet_report_json()
    seeds["fleet-report.cbor"] = fleet_report_cbor()
    seeds["empty-pack.json"] = b"[]"
    seeds["empty-pack.cbor"] = cbor([])
    seeds["indefinite-pack.cbor"] = b"\x9f" + cbor({N: "a", V: 1}) + b"\xff"
    return seeds


def coap_device_input():
    """Frames `[len][ctl][datagram]`; the first byte (the first frame's length) odd gives the
    device credentials, and ctl 0x80 then protects requests with the edge's context."""
    tok = b"\x01\x02"
    wk = coap(CON, GET, 1, tok, path(".well-known/core"))
    get_v = coap(CON, GET, 2, tok, path("v"))
    put_v = coap(CON, PUT, 3, tok, path("v") + [(CONTENT_FORMAT, b"")], b"21.5")
    observe = coap(CON, GET, 4, b"\x0b", [(OBSERVE, b"")] + path("v"))
    big = coap(CON, GET, 5, tok, path("big"))
    big_block1 = coap(CON, GET, 6, tok, path("big") + [(BLOCK2, uint(0x12))])
    slow = coap(CON, POST, 7, tok, path("slow"), b"x")
    non = coap(NON, GET, 8, tok, path("v"))
    rst = coap(RST, 0, 0x100, b"")
    ping = coap(CON, 0, 9, b"")

    plain = {
        "plain-well-known-core": [(b"\x00", wk)],
        "plain-get-put-get": [(b"\x00", get_v), (b"\x02", put_v), (b"\x01", get_v)],
        "plain-observe-notify-reset": [(b"\x00", observe), (b"\x40", put_v), (b"\x42", rst)],
        "plain-block2": [(b"\x00", big), (b"\x02", big_block1)],
        "plain-separate-response": [(b"\x00", slow), (b"\x10", ping)],
        "plain-non-and-duplicate": [(b"\x00", non), (b"\x00", non), (b"\xff", get_v)],
    }
    # ctl 0x80 protects a request with the edge's context, 0x20 confirms the device's state
    # write, 0x40 notifies observers of `v`.
    secure = {
        "oscore-get-persist-put": [(b"\x80", get_v), (b"\xa0", put_v), (b"\xa2", get_v)],
        "oscore-plain-get-refused": [(b"\x00", get_v), (b"\x20", wk)],
        "oscore-observe-notify": [(b"\x80", observe), (b"\xa0", b""), (b"\xe0", put_v)],
        "oscore-block2": [(b"\xa0", big), (b"\xa2", big_block1)],
    }
    # The first byte (the first frame's length) chooses: even, a plain device; odd, one with
    # credentials. A leading frame of the right length sets it: empty, or one junk byte.
    seeds = {name: frames((b"\x00", b""), *parts) for name, parts in plain.items()}
    seeds.update({name: frames((b"\x00", b"\x40"), *parts) for name, parts in secure.items()})
    for name, data in seeds.items():
        assert (data[0] % 2 == 1) == name.startswith("oscore"), name
    return seeds


REGISTER_D0 = b"\x42\x02\x00\x01\x01\x02\xb2rd\x41\x28\x45ep=d0"  # the targets' own


def edge_ingress_input():
    """Frames `[len][ctl][datagram]`; ctl: bits 0-1 peer, bit 2 a command, bits 3-7 time."""
    json = fleet_report_json()
    tele_json = coap(CON, POST, 2, b"\x07", path("t") + [(CONTENT_FORMAT, uint(110))], json)
    tele_cbor = coap(
        CON, POST, 3, b"\x08", path("t") + [(CONTENT_FORMAT, uint(112))], fleet_report_cbor()
    )
    tele_non = coap(NON, POST, 4, b"\x09", path("t") + [(CONTENT_FORMAT, uint(110))], json)
    register_d1 = coap(
        CON,
        POST,
        5,
        b"\x0a",
        path("rd") + [(CONTENT_FORMAT, uint(40)), (URI_QUERY, b"ep=d1"), (URI_QUERY, b"lt=60")],
        b"</valve>;ct=0;obs,</t>;rt=senml",
    )
    update = coap(CON, POST, 6, b"\x0b", path("rd/1"))
    deregister = coap(CON, DELETE, 7, b"\x0c", path("rd/1"))
    command_ack = coap(ACK, 0x44, 1, b"\x00\x00\x00\x01")
    return {
        "register-then-telemetry-json": frames((b"\x00", tele_json)),
        "telemetry-cbor-and-non": frames((b"\x00", tele_cbor), (b"\x08", tele_non)),
        "duplicate-telemetry": frames((b"\x00", tele_json), (b"\x00", tele_json)),
        "second-device-registers": frames((b"\x01", register_d1), (b"\x01", tele_json)),
        "update-and-deregister": frames((b"\x08", update), (b"\xf8", deregister)),
        "command-and-ack": frames((b"\x04", b""), (b"\x00", command_ack)),
        "ipv4-peer-garbage": frames((b"\x02", b"\x40"), (b"\x02", b"\xff" * 8)),
        "expiry": frames((b"\x00", tele_json), (b"\xf8", b""), (b"\xf8", tele_json)),
    }


def edge_gateway_input():
    """First byte even: OSCORE required. Frames `[len][ctl][flip][body]`: ctl bit 2 makes the
    body a request the device protects (flip % 3: 0 registration, 1 telemetry, 2 other path),
    flip bit 7 then flips a bit of it; ctl & 0x18 == 0x08 queues a command; flip bit 4 completes
    a persistence batch (bit 3: as failed); ctl bits 5-7 move time."""

    def gw(first, *parts):
        out = bytearray([first])
        for ctl, flip, body in parts:
            out += bytes([len(body), ctl, flip]) + body
        return bytes(out)

    links = b"</valve>;ct=0;obs"
    json = fleet_report_json()
    plain_reg = REGISTER_D0
    return {
        "oscore-register-and-report": gw(0, (0x04, 0x10, links), (0x24, 0x11, json)),
        "oscore-report-held-until-persisted": gw(
            0, (0x04, 0x00, links), (0x24, 0x01, json), (0x20, 0x10, b"")
        ),
        "oscore-persist-fails": gw(0, (0x04, 0x18, links), (0x24, 0x11, json)),
        "oscore-tampered": gw(0, (0x04, 0x10, links), (0x04, 0x81, json), (0x04, 0x97, json)),
        "oscore-command": gw(0, (0x04, 0x10, links), (0x0c, 0x10, b"open"), (0x20, 0x10, b"")),
        "oscore-revoked-then-active": gw(
            0, (0x04, 0x10, links), (0x10, 0x70, b""), (0x24, 0x11, json), (0x10, 0x50, b"")
        ),
        "oscore-plain-refused": gw(0, (0x00, 0x00, plain_reg), (0x01, 0x00, plain_reg)),
        "oscore-moves-address": gw(0, (0x04, 0x10, links), (0x05, 0x11, json)),
        "lab-mode-plain": gw(1, (0x00, 0x00, plain_reg), (0x20, 0x00, b"\x40\x00\x00\x01")),
    }


def oscore_unprotect():
    """First byte: the mode (even: verify as received; odd: protect, check, then tamper with
    the byte it points at). RFC 8613 Appendix C, with the contexts of C.1."""
    h = bytes.fromhex
    c4_protected = h("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e")
    c4_plain = h("44015d1f00003974396c6f63616c686f737483747631")
    c7_plain = h("64455d1f00003974ff48656c6c6f20576f726c6421")
    c7_protected = h("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106")
    c8_protected = h("64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e")
    return {
        "rfc8613-c4-request.bin": b"\x00" + c4_protected,
        "rfc8613-c7-response.bin": b"\x00" + c7_protected,
        "rfc8613-c8-response-with-piv.bin": b"\x00" + c8_protected,
        "protect-c4-plain-request.bin": b"\x01" + c4_plain,
        "protect-c7-plain-response.bin": b"\x21" + c7_plain,
        "protect-response-own-piv.bin": b"\x03" + c7_plain,
        "protect-observe-response.bin": b"\x05"
        + coap(ACK, 0x45, 0x5D1F, b"\x39\x74", [(OBSERVE, uint(7))], b"x"),
        "option-value-piv-kid.bin": h("0914"),
        "option-value-kid-context.bin": h("19140837cbf3210017a2d3"),
    }


def border_radio_input():
    """First byte: bit 7 the PAN (0: 0xabcd, 2001:db8:1200:305::/64), bits 0-2 what the rest
    is: 0 a ZEP datagram, 1-3 a MAC frame without FCS, 4 an IPv6 packet from the host, 5 the
    last bytes of a device's address in the prefix then CoAP from the gateway, 6-7 time passing
    (the next byte: seconds). Frames here carry uncompressed IPv6 (dispatch 0x41) with good
    checksums; the fuzzer finds IPHC and fragment headers from there."""
    import ipaddress
    import struct

    prefix = ipaddress.IPv6Address("2001:db8:1200:305::").packed[:8]
    eui = bytes.fromhex("0212345600000005")
    iid = bytes([eui[0] ^ 0x02]) + eui[1:]
    router_eui = bytes.fromhex("0200000000000001")
    device_ll = bytes.fromhex("fe80000000000000") + iid
    device_global = prefix + iid
    router_global = prefix + bytes.fromhex("0000000000000001")

    def checksum(src, dst, nh, body):
        data = src + dst + struct.pack(">IxxxB", len(body), nh) + body
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f">{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return (~total) & 0xFFFF

    def ipv6(src, dst, nh, body, hops=64):
        return struct.pack(">IHBB", 0x6 << 28, len(body), nh, hops) + src + dst + body

    def icmp(src, dst, typ, rest):
        body = bytes([typ, 0, 0, 0]) + rest
        c = checksum(src, dst, 58, body)
        return ipv6(src, dst, 58, body[:2] + struct.pack(">H", c) + body[4:], hops=255)

    def udp(src, dst, sport, dport, payload):
        body = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        c = checksum(src, dst, 17, body) or 0xFFFF
        return ipv6(src, dst, 17, body[:6] + struct.pack(">H", c) + body[8:])

    def mac(seq, payload, dst=None):
        # Data frame, PAN ID compression, source extended (sent little-endian).
        fc = 0x0001 | 0x0040 | (3 << 14) | ((3 if dst else 2) << 10)
        dst_bytes = dst[::-1] if dst else b"\xff\xff"
        return struct.pack("<HBH", fc, seq, 0xABCD) + dst_bytes + eui[::-1] + payload

    get_core = coap(CON, 0x01, 0x1234, b"\x01", [(11, b".well-known"), (11, b"core")])
    post_t = coap(CON, 0x02, 0x1235, b"\x02", [(11, b"t")], fleet_report_cbor())
    rs = icmp(device_ll, bytes.fromhex("ff020000000000000000000000000002"), 133, b"\0" * 4)
    to_router = udp(device_global, router_global, 5683, 5683, get_core)
    from_host = udp(ipaddress.IPv6Address("2001:db8::1").packed, device_global, 40000, 5683, get_core)
    big = udp(device_global, router_global, 5683, 5683, post_t + b"x" * 40)
    # FRAG1 carries IPHC (inline next header, hop limit and addresses: 40 bytes in 36) and
    # the datagram up to byte 96; FRAGN the rest at offset 96 (12 units of 8).
    iphc = b"\x78\x00" + big[6:8] + big[8:40]
    frag1 = bytes([0xC0 | (len(big) >> 8), len(big) & 0xFF, 0x00, 0x07]) + iphc + big[40:96]
    fragn = bytes([0xE0 | (len(big) >> 8), len(big) & 0xFF, 0x00, 0x07, 12]) + big[96:]
    seeds = {
        "rs-broadcast.bin": b"\x01" + mac(1, b"\x41" + rs),
        "coap-to-the-router.bin": b"\x01" + mac(2, b"\x41" + to_router, router_eui),
        "fragments-to-the-router.bin": b"\x02" + mac(3, frag1, router_eui),
        "fragment-n.bin": b"\x03" + mac(4, fragn, router_eui),
        "host-to-device.bin": b"\x04" + from_host,
        "gateway-to-device.bin": b"\x05" + device_global + get_core,
        "time-passes.bin": b"\x06\x3c",
        "other-pan.bin": b"\x81" + mac(5, b"\x41" + rs),
    }
    assert all(len(v) <= 1 + 125 for k, v in seeds.items() if v[0] & 7 in (1, 2, 3)), "MAC frame"
    return seeds


def edge_ops_input():
    """First byte mod 3: 0 an HTTP request head, 1 a dashboard feed message (JSON), 2 a stored
    record's SenML-JSON payload."""
    heads = {
        "get-metrics": b"GET /metrics HTTP/1.1\r\nHost: [::1]:9464\r\n"
        b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        "get-page": b"GET / HTTP/1.1\r\nHost: [::1]:9464\r\n\r\n",
        "ws-upgrade": b"GET /feed HTTP/1.1\r\nHost: [::1]:9464\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        "post-body": b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        "partial": b"GET /metr",
    }
    feed = {
        "auth": b'{"type":"auth","token":"0123456789abcdef"}',
        "query": b'{"type":"query","filter":"dev","sort":"last_seen","desc":true,"offset":2,"limit":50}',
        "query-defaults": b'{"type":"query"}',
        "select": b'{"type":"select","device":"dev-1"}',
        "unknown-field": b'{"type":"query","x":1}',
    }
    values = {
        "temperature": fleet_report_json(),
        "string-value": b'[{"n":"label","vs":"<script>alert(1)</script>"}]',
        "bool-value": b'[{"n":"open","vb":true}]',
    }
    seeds = {}
    for sel, group in enumerate([heads, feed, values]):
        for name, body in group.items():
            seeds[f"{name}.bin"] = bytes([sel]) + body
    return seeds


# --- Link format (RFC 6690) and the probe --------------------------------------------------------

# libcoap 4.3's coap-server-notls answering a CON GET /.well-known/core (token abcd, MID 0x1234),
# the datagram as received on ::1 (Debian's libcoap3-bin).
LIBCOAP_WELL_KNOWN_CORE = bytes.fromhex(
    "62451234abcdc128ff3c2f3e3b7469746c653d2247656e6572616c20496e666f223b63743d302c3c2f74696d"
    "653e3b69663d22636c6f636b223b72743d227469636b73223b7469746c653d22496e7465726e616c20436c6f"
    "636b223b63743d303b6f62732c3c2f6173796e633e3b63743d302c3c2f6578616d706c655f646174613e3b74"
    "69746c653d224578616d706c652044617461223b63743d303b6f6273"
)

# What an SDK device answers (sdk/src/coap/resource.rs, link_format_follows_rfc6690).
OURS_WELL_KNOWN_CORE = (
    b'</sensors/temp>;rt="temperature-c";if="sensor";ct="112 110";obs,'
    b'</valve>;rt="valve";ct=0;title="Main valve"'
)

LINK_DOCS = {
    "libcoap.txt": LIBCOAP_WELL_KNOWN_CORE.split(b"\xff", 1)[1],
    "ours.txt": OURS_WELL_KNOWN_CORE,
    "rfc6690_s5.txt": b'</sensors/temp>;rt="temperature-c";if="sensor",\n'
    b'</sensors/light>;rt="light-lux";if="sensor"',
    "escapes.txt": b'</v>;ct=0;rt="a\\"b\\\\c,d;e";t="";obs,</w>',
    "target_with_comma.txt": b"<a,b;c>;x,<>",
    "empty_pieces.txt": b" , </a>,,</b> ; obs ",
    "bad_unterminated_quote.txt": b'</a>;rt="open',
    "bad_no_target.txt": b"hello world",
    "bad_attr_name.txt": b"</a>;=1",
    "bad_after_quote.txt": b'</a>;rt="x"y',
}


def link_format():
    """Text (read as UTF-8 with replacement characters)."""
    return dict(LINK_DOCS)


def probe_input():
    """One datagram from the probed endpoint."""
    tok = b"\xab\xcd"
    cf40 = (CONTENT_FORMAT, uint(40))
    content = 0x45
    ours = coap(ACK, content, 0x1234, tok, [cf40], OURS_WELL_KNOWN_CORE)
    seeds = {
        "libcoap_well_known_core.bin": LIBCOAP_WELL_KNOWN_CORE,
        "ours_well_known_core.bin": ours,
        "ping_reset.bin": coap(RST, 0, 0x1234),
        "empty_ack.bin": coap(ACK, 0, 0x1234),
        "separate_con_response.bin": coap(CON, content, 0x7777, tok, [cf40], b"</a>;obs"),
        "block2_more.bin": coap(
            ACK, content, 0x1235, tok, [cf40, (BLOCK2, uint(0 << 4 | 8 | 2))], OURS_WELL_KNOWN_CORE[:64]
        ),
        "block2_last_max_num.bin": coap(
            ACK, content, 0x1236, tok, [(BLOCK2, uint(((1 << 20) - 1) << 4 | 6))], b"x" * 16
        ),
        "block2_reserved_szx.bin": coap(ACK, content, 0x1237, tok, [(BLOCK2, uint(7))]),
        "notification.bin": coap(NON, content, 0x2000, tok, [(OBSERVE, uint(5))], b"21.5"),
        "bad_option_4_02.bin": coap(ACK, 0x82, 0x1238, tok),
        "unknown_critical_option.bin": coap(ACK, content, 0x1239, tok, [(65001, b"")]),
        "bad_version.bin": bytes([0x80, 0x45, 0x12, 0x34]),
        "truncated_header.bin": bytes([0x60, 0x45, 0x12]),
    }
    for name, doc in LINK_DOCS.items():
        if name.startswith("bad_"):
            seeds[f"link_{name[:-4]}.bin"] = coap(ACK, content, 0x1240, tok, [cf40], doc)
    return seeds


def probe_machine():
    """A 4-byte header (flags, timeout and Observe wait in 10 ms, max_blocks), then operations:
    a datagram (0), an answer to the probe's last datagram (1), the same protected (2), time
    passing (3), time jumping to the next deadline (anything else). See probe_machine.rs."""

    def header(oscore=False, ipv6=True, timeout=100, observe=100, max_blocks=16):
        return bytes([oscore | ipv6 << 1, timeout, observe, max_blocks])

    def op(kind, data):
        return bytes([kind]) + struct.pack(">H", len(data)) + data

    def raw(data):
        return op(0, data)

    def ans(data):
        return op(1, data)

    def prot(data):
        return op(2, data)

    def wait(ms):
        return b"\x03" + struct.pack(">H", ms)

    deadline = b"\xff"
    t = b"t"  # a token: the probe's own goes in its place
    cf40 = (CONTENT_FORMAT, uint(40))
    content = 0x45
    links = b"</big>;ct=0,</obs>;obs;ct=0"

    def block2(num, more, szx=2):
        return (BLOCK2, uint(num << 4 | more << 3 | szx) or b"")

    reset = ans(coap(RST, 0, 0))
    observe = ans(coap(ACK, content, 0, t, [(OBSERVE, uint(1))], b"21.5")) + ans(
        coap(NON, content, 0, t, [(OBSERVE, uint(2))], b"21.6")
    )
    malformed = (
        deadline + deadline + reset + ans(coap(ACK, 0x82, 0, t)) + deadline  # 4.02 Bad Option
    )

    def conversation(oscore_answer=b""):
        return (
            reset  # ping
            + ans(coap(ACK, content, 0, t, [cf40], links))  # CON
            + ans(coap(NON, content, 0, t, [cf40], links))  # NON
            + ans(coap(ACK, content, 0, t, [cf40, block2(0, 1, 0)], links[:16]))  # discovery
            + ans(coap(ACK, content, 0, t, [cf40, block2(1, 0, 0)], links[16:]))
            + ans(coap(ACK, content, 0, t, [block2(0, 1)], b"x" * 64))  # Block2 on /big
            + ans(coap(ACK, content, 0, t, [block2(1, 0)], b"y" * 10))
            + observe
            + oscore_answer
            + malformed
            + reset  # still alive
        )

    return {
        "silent.bin": header(),
        "silent_ipv4_long_timeouts.bin": header(ipv6=False, timeout=255, observe=255),
        "good_server.bin": header() + conversation(),
        "oscore_good_server.bin": header(oscore=True)
        + conversation(prot(coap(ACK, content, 0, t, [], b"21.5"))),
        "oscore_refused_4_01.bin": header(oscore=True) + conversation(ans(coap(ACK, 0x81, 0, t))),
        "separate_response.bin": header()
        + reset
        + ans(coap(ACK, 0, 0))
        + wait(1500)
        + ans(coap(CON, content, 0x4321, t, [cf40], links)),
        "endless_discovery.bin": header(max_blocks=4)
        + reset
        + ans(coap(ACK, content, 0, t, [cf40], links))
        + ans(coap(NON, content, 0, t, [cf40], links))
        + ans(coap(ACK, content, 0, t, [cf40, block2(0, 1, 0)], links[:16])) * 6,
        "strays_and_garbage.bin": header()
        + raw(coap(CON, content, 0x0bad, b"zz", [cf40], b"late"))
        + raw(b"\x40")
        + wait(999)
        + reset
        + raw(LIBCOAP_WELL_KNOWN_CORE)
        + deadline * 3,
    }


TARGETS = {
    "addr_parse": addr_parse,
    "senml_decode": senml_decode,
    "coap_device_input": coap_device_input,
    "edge_ingress_input": edge_ingress_input,
    "edge_gateway_input": edge_gateway_input,
    "oscore_unprotect": oscore_unprotect,
    "border_radio_input": border_radio_input,
    "edge_ops_input": edge_ops_input,
    "link_format": link_format,
    "probe_input": probe_input,
    "probe_machine": probe_machine,
}


def main():
    for target, make in TARGETS.items():
        assert (ROOT / "fuzz_targets" / f"{target}.rs").is_file(), target
        seeds = make()
        assert 0 < len(seeds) <= 40, (target, len(seeds))
        out = ROOT / "corpus" / target
        out.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            assert len(data) <= 2048, (target, name)  # scripts/test's -max_len
            (out / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds in {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
