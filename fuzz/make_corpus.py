#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/ (run from anywhere).

Seeds are small, valid or nearly valid inputs in each target's own input format (see the
`//!` doc of each file in fuzz_targets/): RFC test vectors, the datagrams a real device and edge
exchange, and minimal examples that reach each branch of a target's framing. libFuzzer starts
from them instead of from nothing; what it learns on top goes into a work corpus outside the
repository (scripts/test, fuzz/README.md). Seeds are required: scripts/test fails for a target
whose fuzz/corpus/<target>/ is missing or empty, so a new target needs a function here, listed in
TARGETS.

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
        "oscore-command": gw(0, (0x04, 0x10, links), (0x0C, 0x10, b"open"), (0x20, 0x10, b"")),
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
    prefix = ipaddress.IPv6Address("2001:db8:1200:305::").packed[:8]
    eui = bytes.fromhex("0212345600000005")
    iid = bytes([eui[0] ^ 0x02]) + eui[1:]
    router_eui = bytes.fromhex("0200000000000001")
    device_ll = bytes.fromhex("fe80000000000000") + iid
    device_global = prefix + iid
    router_global = prefix + bytes.fromhex("0000000000000001")

    def mac(seq, payload, dst=None):
        # Data frame, PAN ID compression, source extended (sent little-endian).
        fc = 0x0001 | 0x0040 | (3 << 14) | ((3 if dst else 2) << 10)
        dst_bytes = dst[::-1] if dst else b"\xff\xff"
        return struct.pack("<HBH", fc, seq, 0xABCD) + dst_bytes + eui[::-1] + payload

    get_core = coap(CON, 0x01, 0x1234, b"\x01", [(11, b".well-known"), (11, b"core")])
    post_t = coap(CON, 0x02, 0x1235, b"\x02", [(11, b"t")], fleet_report_cbor())
    rs = icmpv6(device_ll, bytes.fromhex("ff020000000000000000000000000002"), 133, b"\0" * 4)
    to_router = udp6(device_global, router_global, 5683, 5683, get_core)
    from_host = udp6(
        ipaddress.IPv6Address("2001:db8::1").packed, device_global, 40000, 5683, get_core
    )
    big = udp6(device_global, router_global, 5683, 5683, post_t + b"x" * 40)
    # FRAG1 carries IPHC (inline next header, hop limit and addresses: 40 bytes in 36) and
    # the datagram up to byte 96; FRAGN the rest at offset 96 (12 units of 8).
    iphc_header = b"\x78\x00" + big[6:8] + big[8:40]
    frag1 = bytes([0xC0 | (len(big) >> 8), len(big) & 0xFF, 0x00, 0x07]) + iphc_header + big[40:96]
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
            ACK,
            content,
            0x1235,
            tok,
            [cf40, (BLOCK2, uint(0 << 4 | 8 | 2))],
            OURS_WELL_KNOWN_CORE[:64],
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
        + raw(coap(CON, content, 0x0BAD, b"zz", [cf40], b"late"))
        + raw(b"\x40")
        + wait(999)
        + reset
        + raw(LIBCOAP_WELL_KNOWN_CORE)
        + deadline * 3,
    }


# --- IEEE 802.15.4, ZEP v2, 6LoWPAN (RFC 4944, RFC 6282), IPv6 ----------------------------------

PAN = 0xABCD
PREFIX = ipaddress.IPv6Address("2001:db8:1200:305::").packed[:8]  # the PAN's /64, context 0
# the targets' device (and sdk/tests/lowpan_iphc.rs's)
DEVICE_EUI = bytes.fromhex("0212345678abcdef")
ROUTER_EUI = bytes.fromhex("0200000000000001")
BROADCAST = b"\xff\xff"


def ip6(text):
    return ipaddress.IPv6Address(text).packed


def fcs(data):
    """The 802.15.4 FCS: CRC-16/KERMIT (sdk/src/radio/fcs.rs), sent least significant byte first."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


assert fcs(b"123456789") == struct.pack("<H", 0x2189)  # the check value fcs.rs documents


def iid_of(ll):
    """The interface ID an extended (EUI-64, U/L flipped) or short link-layer address gives."""
    if len(ll) == 8:
        return bytes([ll[0] ^ 0x02]) + ll[1:]
    return b"\x00\x00\x00\xff\xfe\x00" + ll


def ll_addr(ll):
    return ip6("fe80::")[:8] + iid_of(ll)


DEVICE_LL = ll_addr(DEVICE_EUI)
ROUTER_LL = ll_addr(ROUTER_EUI)
DEVICE_GLOBAL = PREFIX + iid_of(DEVICE_EUI)  # 2001:db8:1200:305:12:3456:78ab:cdef
ROUTER_GLOBAL = PREFIX + bytes(7) + b"\x01"
EDGE = ip6("2001:db8::1")
ALL_NODES = ip6("ff02::1")
ALL_ROUTERS = ip6("ff02::2")


def inet_checksum(src, dst, nh, body):
    data = src + dst + struct.pack(">IxxxB", len(body), nh) + body
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ipv6_packet(src, dst, nh, body, hops=64, tc=0, flow=0):
    return struct.pack(">IHBB", 6 << 28 | tc << 20 | flow, len(body), nh, hops) + src + dst + body


def icmpv6(src, dst, typ, rest, hops=255):
    body = bytes([typ, 0, 0, 0]) + rest
    c = inet_checksum(src, dst, 58, body)
    return ipv6_packet(src, dst, 58, body[:2] + struct.pack(">H", c) + body[4:], hops=hops)


def udp6(src, dst, sport, dport, payload, hops=64):
    body = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = inet_checksum(src, dst, 17, body) or 0xFFFF
    return ipv6_packet(src, dst, 17, body[:6] + struct.pack(">H", c) + body[8:], hops=hops)


def sllao(ll, kind=1):
    """A source (1) or target (2) link-layer address option (RFC 4861 §4.6.1, 8-byte units)."""
    return bytes([kind, 2]) + ll + bytes(6) if len(ll) == 8 else bytes([kind, 1]) + ll + bytes(4)


def router_advert(
    lifetime=1800, prefixes=((PREFIX, 64, 0x40, 3600),), contexts=((0, PREFIX, 64, 60),), mtu=None
):
    """RA body after type/code/checksum: hop limit 64, SLLAO, PIO(s), 6CO(s) (RFC 6775 §4.2)."""
    rest = bytes([64, 0]) + struct.pack(">HII", lifetime, 0, 0) + sllao(ROUTER_EUI)
    if mtu:
        rest += bytes([5, 1, 0, 0]) + struct.pack(">I", mtu)
    for prefix, plen, flags, valid in prefixes:
        rest += bytes([3, 4, plen, flags]) + struct.pack(">II", valid, valid) + bytes(4)
        rest += (prefix + bytes(16))[:16]
    for cid, prefix, plen, minutes in contexts:
        units, n = (2, 8) if plen <= 64 else (3, 16)
        rest += bytes([34, units, plen, 0x10 | cid, 0, 0]) + struct.pack(">H", minutes)
        rest += (prefix + bytes(16))[:n]
    return rest


def iphc(packet, src_ll, dst_ll, cid_byte=False):
    """RFC 6282 compression of `packet` as the SDK's device does it with context 0 = the PAN's
    /64 (sdk/src/lowpan/iphc.rs): returns the compressed datagram (header, UDP NHC, payload)
    and how many bytes of the uncompressed packet the header replaced."""
    vtf = int.from_bytes(packet[:4], "big")
    tc, flow = vtf >> 20 & 0xFF, vtf & 0xFFFFF
    nh, hop, src, dst = packet[6], packet[7], packet[8:24], packet[24:40]
    inline = b""
    if tc == 0 and flow == 0:
        tf = 3
    else:
        tf = 0
        inline += bytes([(tc & 3) << 6 | tc >> 2]) + flow.to_bytes(3, "big")
    nhc = nh == 17
    if not nhc:
        inline += bytes([nh])
    hlim = {1: 1, 64: 2, 255: 3}.get(hop, 0)
    if not hlim:
        inline += bytes([hop])

    def unicast(addr, ll):
        if addr == bytes(16):
            return 1, 0, b""
        if addr[:8] == ip6("fe80::")[:8]:
            ac = 0
        elif addr[:8] == PREFIX:
            ac = 1
        else:
            return 0, 0, addr
        iid = addr[8:]
        if ll is not None and iid == iid_of(ll):
            return ac, 3, b""
        if iid[:6] == b"\x00\x00\x00\xff\xfe\x00":
            return ac, 2, iid[6:]
        return ac, 1, iid

    sac, sam, s_in = unicast(src, src_ll)
    if dst[0] == 0xFF:
        m, dac = 1, 0
        if dst[1] == 0x02 and dst[2:15] == bytes(13):
            dam, d_in = 3, dst[15:]
        elif dst[2:13] == bytes(11):
            dam, d_in = 2, dst[1:2] + dst[13:]
        elif dst[2:11] == bytes(9):
            dam, d_in = 1, dst[1:2] + dst[11:]
        else:
            dam, d_in = 0, dst
    else:
        m = 0
        dac, dam, d_in = unicast(dst, dst_ll)
    head = bytes(
        [
            0x60 | tf << 3 | nhc << 2 | hlim,
            cid_byte << 7 | sac << 6 | sam << 4 | m << 3 | dac << 2 | dam,
        ]
    )
    if cid_byte:
        head += b"\x00"
    head += inline + s_in + d_in
    if not nhc:
        return head + packet[40:], 40
    sport, dport = struct.unpack(">HH", packet[40:44])
    if sport >> 4 == 0xF0B and dport >> 4 == 0xF0B:
        udp = bytes([0xF3, (sport & 15) << 4 | dport & 15])
    elif dport >> 8 == 0xF0:
        udp = bytes([0xF1]) + struct.pack(">H", sport) + bytes([dport & 0xFF])
    elif sport >> 8 == 0xF0:
        udp = bytes([0xF2, sport & 0xFF]) + struct.pack(">H", dport)
    else:
        udp = bytes([0xF0]) + struct.pack(">HH", sport, dport)
    return head + udp + packet[46:48] + packet[48:], 48


def mac(seq, payload, src=DEVICE_EUI, dst=ROUTER_EUI, pan=PAN, ack_request=False):
    """An 802.15.4-2006 data frame without FCS (what `MacFrame` holds): PAN ID compression,
    addresses (8 bytes extended, 2 short) sent least significant byte first."""
    mode = lambda a: 3 if len(a) == 8 else 2  # noqa: E731
    fc = 0x0001 | ack_request << 5 | 0x0040 | mode(dst) << 10 | mode(src) << 14
    return struct.pack("<HBH", fc, seq, pan) + dst[::-1] + src[::-1] + payload


def fragments(packet, src_ll, dst_ll, tag, room=104):
    """RFC 4944 §5.3: FRAG1 with the compressed header, then FRAGNs; offsets in 8-byte units of
    the uncompressed datagram. `room` is the frame payload available (as the SDK's `send`)."""
    compressed, consumed = iphc(packet, src_ll, dst_ll)
    head = compressed[: len(compressed) - (len(packet) - consumed)]
    size = len(packet)
    first = (room - 4 - len(head) + consumed) // 8 * 8 - consumed
    out = [struct.pack(">HH", 0xC000 | size, tag) + head + packet[consumed : consumed + first]]
    at = consumed + first
    while at < size:
        n = min((room - 5) // 8 * 8, size - at)
        out.append(struct.pack(">HHB", 0xE000 | size, tag, at // 8) + packet[at : at + n])
        at += n
    return out


def zep(frame, channel=26, device_id=1, seq=0, lqi=255, crc=True, version=2, kind=1):
    """A ZEP v2 data datagram (sdk/src/radio/zep.rs) carrying `frame` and its FCS (CRC mode) or
    two LQI/RSSI bytes (LQI mode)."""
    psdu = frame + (fcs(frame) if crc else b"\x20\xff")
    head = b"EX" + bytes([version, kind, channel]) + struct.pack(">HBB", device_id, crc, lqi)
    head += struct.pack(">QI", 0xE7F1_0000_0000_0000 + seq, seq) + bytes(10) + bytes([len(psdu)])
    return head + psdu


# What the planned device sends: CON POST /t, a SenML-CBOR report of one temperature
# (sdk/tests/lowpan_iphc.rs, telemetry_coap: 55 bytes; the frame carrying it is 85).
TELEMETRY_COAP = (
    bytes([0x42, 0x02, 0x12, 0x34, 0xAB, 0xCD, 0xB1])
    + b"t"
    + bytes([0x11, 0x70, 0xFF])
    + bytes([0x81, 0xA4, 0x21, 0x78, 0x18])
    + b"urn:dev:sn:345678abcdef:"
    + bytes([0x00, 0x64])
    + b"temp"
    + bytes([0x01, 0x63])
    + b"Cel"
    + bytes([0x02, 0xF9, 0x4D, 0x60])
)
assert len(TELEMETRY_COAP) == 55


def smoltcp_fragments():
    """Three link fragments of a UDP datagram from smoltcp's test suite, as
    sdk/tests/lowpan_iphc.rs (SMOLTCP_FRAGMENTS) copied them: MAC frames without FCS."""
    text = (REPO / "sdk/tests/lowpan_iphc.rs").read_text()
    block = re.search(r"const SMOLTCP_FRAGMENTS: \[&\[u8\]; 3\] = \[(.*?)\n\];", text, re.S).group(
        1
    )
    out = [
        bytes(int(t, 16) for t in re.findall(r"0x([0-9a-f]{2})", part))
        for part in block.split("&[")[1:]
    ]
    assert [len(f) for f in out] == [125, 122, 101], "SMOLTCP_FRAGMENTS moved or changed"
    return out


def lowpan_decompress():
    """First byte: the link-layer addresses (bits 0-1 source, 2-3 destination: 0 the device's
    extended address, 1 short 0x0001, 2 none, 3 the router's; bit 4 the CID byte always); second
    byte: the FRAG1 datagram size / 9; then the frame payload. The forms are the vectors of
    sdk/tests/lowpan_iphc.rs (its contexts: 0 = the PAN's /64, as here)."""
    up = 0 | 3 << 2  # device -> router, both extended: the tests' `up()`
    short = 1 | 1 << 2
    absent = 2 | 2 << 2

    def seed(payload, sel=up, size=0):
        return bytes([sel, size]) + payload

    def ll_packet(nh, body, hops=64, src=DEVICE_LL, dst=ROUTER_LL, tc=0, flow=0):
        return ipv6_packet(src, dst, nh, body, hops=hops, tc=tc, flow=flow)

    def vector(packet, expected, sel=up, src_ll=DEVICE_EUI, dst_ll=ROUTER_EUI):
        compressed, _ = iphc(packet, src_ll, dst_ll)
        assert compressed == expected, (compressed.hex(), expected.hex())
        return seed(expected, sel)

    planned = udp6(DEVICE_GLOBAL, ROUTER_GLOBAL, 5683, 5683, b"hello")
    hello = iphc(planned, DEVICE_EUI, ROUTER_EUI)[0]
    assert hello[:7] == bytes([0x7E, 0x77, 0xF0, 0x16, 0x33, 0x16, 0x33])
    telemetry = iphc(
        udp6(DEVICE_GLOBAL, ROUTER_GLOBAL, 5683, 5683, TELEMETRY_COAP), DEVICE_EUI, ROUTER_EUI
    )[0]
    assert len(telemetry) == 9 + 55
    ll_udp = lambda s, d, data: udp6(
        ip6("fe80::12:3456:78ab:cdef"), ip6("fe80::1"), s, d, data
    )  # noqa: E731
    seeds = {
        # link_local_addresses_from_the_link_layer_take_no_bytes
        "ll-addresses-from-link-layer.bin": vector(
            ll_packet(58, b"\x80\0\0\0"), bytes([0x7A, 0x33, 0x3A, 0x80, 0, 0, 0])
        ),
        # link_local_inline_forms
        "ll-inline-64-and-16-bits.bin": vector(
            ll_packet(58, b"", src=ip6("fe80::1:2:3:4"), dst=ip6("fe80::ff:fe00:beef")),
            bytes([0x7A, 0x12, 0x3A, 0, 1, 0, 2, 0, 3, 0, 4, 0xBE, 0xEF]),
        ),
        "ll-short-addresses-elided.bin": seed(bytes([0x7A, 0x33, 0x3A]), short),
        # planned_device_to_router_with_context_0_takes_no_address_bytes
        "context0-udp-hello.bin": seed(hello),
        "context0-udp-hello-cid-byte.bin": seed(hello[:1] + b"\xf7\x00" + hello[2:], up | 0x10),
        # a_planned_devices_telemetry_frame_is_32_bytes_shorter_than_smoltcps: its 64 bytes after
        # the MAC header (85-byte frame), whole and as a FRAG1 of 108 bytes (size 12 * 9)
        "telemetry-85-byte-frame-payload.bin": seed(telemetry),
        "telemetry-as-frag1.bin": seed(telemetry, up, 12),
        # context_forms_16_and_64_bits_and_a_nonzero_context_id (its context 3 is unknown here;
        # the same with the CID byte naming contexts 0, 1 (/48), 2 (/80) and 15 (compress off))
        "context3-unknown.bin": seed(
            bytes([0x7A, 0xD6, 0x33, 0x3A, 0, 1, 0, 2, 0, 3, 0, 4, 0x00, 0x01])
        ),
        "context0-64-and-16-bits.bin": seed(
            bytes([0x7A, 0xD6, 0x00, 0x3A, 0, 1, 0, 2, 0, 3, 0, 4, 0x00, 0x01])
        ),
        "context1-48-bits.bin": seed(bytes([0x7A, 0xF7, 0x11, 0x3A])),
        "context2-80-bits.bin": seed(
            bytes([0x7A, 0xD6, 0x22, 0x3A, 0, 1, 0, 2, 0, 3, 0, 4, 0x00, 0x01])
        ),
        "context2-80-bits-from-link-layer.bin": seed(bytes([0x7A, 0xF7, 0x22, 0x3A])),
        "context15-compress-off.bin": seed(bytes([0x7A, 0xF7, 0xFF, 0x3A])),
        "context-inline-destination.bin": seed(
            bytes([0x7A, 0xF0, 0x30, 0x3A]) + ip6("2001:db8:99::1")
        ),
        # multicast_unspecified_traffic_class_and_hop_limit_forms
        "multicast-8-bits-hop-255.bin": seed(bytes([0x7B, 0x3B, 0x3A, 0x01]), 0 | 2 << 2),
        "unspecified-to-solicited-node-48-bits.bin": seed(
            bytes([0x7A, 0x49, 0x3A, 0x02, 0x01, 0xFF, 0x00, 0x00, 0x01])
        ),
        "multicast-32-bits.bin": seed(bytes([0x7A, 0x3A, 0x3A, 0x05, 0x01, 0x00, 0x03])),
        "multicast-inline.bin": seed(bytes([0x7A, 0x38, 0x3A]) + ip6("ff0e::1:2:3:4:5")),
        "multicast-context-based.bin": seed(
            bytes([0x7A, 0x3C, 0x3A, 0x00, 0x40]) + PREFIX + b"\0\0\0\1"
        ),
        "tf-dscp-only.bin": seed(bytes([0x70, 0x33, 0x2E, 59, 7])),
        "tf-flow-label-only.bin": seed(bytes([0x68, 0x33, 0x01, 0x23, 0x45, 59, 7])),
        "tf-both.bin": seed(bytes([0x60, 0x33, 0x6E, 0x01, 0x23, 0x45, 59, 7])),
        # an_elided_udp_checksum_is_recomputed
        "udp-checksum-elided.bin": seed(bytes([0x7E, 0x33, 0xF4, 0x16, 0x33, 0x16, 0x33]) + b"abc"),
        # what the router forwards to the device from the edge: source inline, destination
        # from context 0 and the link layer (dst = the device), hop limit 63 inline
        "edge-to-device-source-inline.bin": seed(
            iphc(
                udp6(
                    EDGE, DEVICE_GLOBAL, 5683, 5683, coap(CON, GET, 1, b"\x01", path("v")), hops=63
                ),
                ROUTER_EUI,
                DEVICE_EUI,
            )[0],
            3 | 0 << 2,
        ),
        "hop-limit-1.bin": seed(bytes([0x79, 0x33, 0x3A])),
        "udp-4-bit-ports-checksum-elided.bin": seed(bytes([0x7E, 0x33, 0xF7, 0x12]) + b"abc"),
        "ipv6-in-ipv6-nhc.bin": seed(bytes([0x7E, 0x33, 0xEE, 0x7A, 0x33, 0x3A])),
        # refusals
        "refused-not-iphc.bin": seed(bytes([0x41, 0x60])),
        "refused-truncated.bin": seed(bytes([0x7A, 0x00, 0x3A, 1, 2])),
        "refused-context5.bin": seed(bytes([0x7A, 0xF7, 0x55, 0x3A])),
        "refused-reserved-dac-dam.bin": seed(bytes([0x7A, 0x34, 0x3A])),
        "refused-reserved-multicast-dac.bin": seed(bytes([0x7A, 0x3D, 0x3A])),
        "refused-extension-nhc.bin": seed(bytes([0x7E, 0x33, 0xE0, 0, 0])),
        "refused-no-link-address.bin": seed(bytes([0x7A, 0x33, 0x3A]), absent),
        "refused-frag1-size-below-headers.bin": seed(bytes([0x7A, 0x33, 0x3A]), up, 2),
        # FRAG1 of smoltcp's three-fragment datagram (307 bytes; size 34 * 9 = 306), after its
        # MAC (21 bytes) and fragment (4) headers
        "smoltcp-frag1-iphc.bin": seed(smoltcp_fragments()[0][25:], up, 34),
    }
    # udp_port_forms
    for s, d, nhc in [
        (0xF0B1, 0xF0B2, b"\xf3\x12"),
        (5683, 0xF0AA, b"\xf1\x16\x33\xaa"),
        (0xF0AA, 5683, b"\xf2\xaa\x16\x33"),
        (5683, 5684, b"\xf0\x16\x33\x16\x34"),
    ]:
        c = iphc(ll_udp(s, d, b"x"), DEVICE_EUI, ROUTER_EUI)[0]
        assert c[:2] == b"\x7e\x33" and c[2 : 2 + len(nhc)] == nhc, c.hex()
        seeds[f"udp-ports-{nhc[0]:02x}.bin"] = seed(c)
    return seeds


def lowpan_reassembly():
    """Operations of 6 bytes `[sel, tag, size hi, size lo, offset / 8, length]`: sel bit 7 moves
    time by sel & 0x7f seconds; else source sel & 3, tag & 3, 12-bit size; the fragment's bytes
    are `length` copies of sel. RFC 4944 sequences: FRAG1 at offset 0, FRAGNs after."""

    def frag(src, tag, size, off, length):
        return bytes([src, tag, size >> 8, size & 0xFF, off, length])

    def wait(s):
        return bytes([0x80 | s, 0, 0, 0, 0, 0])

    def datagram(size, piece=96, src=0, tag=1):
        """The fragments of one datagram: 96 bytes each (12 units), the last shorter."""
        return [
            frag(src, tag, size, off // 8, min(piece, size - off)) for off in range(0, size, piece)
        ]

    d = datagram(307)
    big = datagram(1280, 248)
    seeds = {
        "in-order.bin": b"".join(d),
        "out-of-order-last-first.bin": b"".join([d[3], d[0], d[1], d[2]]),
        "duplicate-fragment.bin": b"".join([d[0], d[0], d[1], d[1], d[2], d[3]]),
        "overlapping.bin": b"".join([d[0], frag(0, 1, 307, 6, 96), d[1], d[2], d[3]]),
        "duplicate-after-done.bin": b"".join(d + [d[1]]),
        "ipv6-minimum-mtu-1280.bin": b"".join(big),
        "largest-2047.bin": b"".join(datagram(2047, 248)),
        "too-large-2048.bin": b"".join(datagram(2048, 248)[:2]),
        "size-4095.bin": frag(0, 0, 4095, 0, 255),
        "size-zero.bin": frag(0, 0, 0, 0, 0) + frag(0, 0, 0, 0, 8),
        "past-the-end.bin": frag(0, 1, 100, 12, 8) + frag(0, 1, 100, 0, 200),
        "empty-piece.bin": frag(1, 2, 64, 1, 0),
        "timeout-then-restart.bin": b"".join([d[0], d[1], wait(61), d[2], d[3], d[0], d[1]]),
        "before-the-timeout.bin": b"".join([d[0], wait(59), d[1], d[2], d[3]]),
        "size-changes-same-tag.bin": b"".join([d[0], frag(0, 1, 308, 12, 96)]),
        # Two datagrams per source is the bound, six in all.
        "per-source-bound.bin": b"".join(frag(0, t, 200, 0, 96) for t in range(3)),
        "table-full.bin": b"".join(frag(s, t, 200, 0, 96) for s in range(4) for t in range(2)),
        "interleaved-sources.bin": b"".join(
            x
            for pair in zip(datagram(307, src=1, tag=0), datagram(307, src=2, tag=3))
            for x in pair
        ),
        "truncated-op.bin": b"".join(d[:1]) + b"\x00\x01\x01",
    }
    return seeds


def radio_seed(frames, zep_wrap=False):
    """lowpan_radio_input's input: odd first byte, MAC frames (no FCS) joined by 0xfe; even,
    one ZEP datagram."""
    if zep_wrap:
        assert len(frames) == 1
        return b"\x00" + zep(frames[0])
    for f in frames:
        assert 0xFE not in f and len(f) <= 125, ("0xfe splits frames; at most 125 bytes", f.hex())
    return b"\x01" + b"\xfe".join(frames)


def lowpan_radio_input():
    """First byte even: a ZEP datagram; odd: MAC frames without FCS, split at 0xfe bytes. Into a
    device attached to PAN 0xabcd (prefix 2001:db8:1200:305::/64, context 0, router
    02:00:00:00:00:00:00:01) and the router side's adaptation layer. The frames a device and its
    router exchange: RA, NS/NA, echo, CoAP requests to the device (its answer is fragmented),
    the device's registration and telemetry to the router, smoltcp's fragments."""

    def ra(seq, **kw):
        body = router_advert(**kw)
        packet = icmpv6(ROUTER_LL, ALL_NODES, 134, body)
        return mac(seq, iphc(packet, ROUTER_EUI, None)[0], src=ROUTER_EUI, dst=BROADCAST)

    def to_device(seq, packet, src_ll=ROUTER_EUI):
        return mac(seq, iphc(packet, src_ll, DEVICE_EUI)[0], src=src_ll, dst=DEVICE_EUI)

    def from_device(seq, packet, ack=True):
        return mac(seq, iphc(packet, DEVICE_EUI, ROUTER_EUI)[0], ack_request=ack)

    tok = b"\x5a\x01"
    get_v = coap(CON, GET, 0x2001, tok, path("v"))
    get_v_block = coap(CON, GET, 0x2002, tok, path("v") + [(BLOCK2, uint(0x11))])
    get_core = coap(CON, GET, 0x2003, tok, path(".well-known/core"))
    reg_ack = coap(ACK, 0x41, 0x0001, b"\x01", [(8, b"rd"), (8, b"1")])
    register = coap(
        CON,
        POST,
        0x0001,
        b"\x01",
        path("rd")
        + [
            (CONTENT_FORMAT, uint(40)),
            (URI_QUERY, b"ep=sensor-345678abcdef"),
            (URI_QUERY, b"lt=3600"),
            (URI_QUERY, b"b=UQ"),
        ],
        b'</t>;rt="senml";ct=112;obs,</v>;ct=0;obs,</valve>;rt="valve";ct=0',
    )
    ns_global = icmpv6(
        ROUTER_LL, ip6("ff02::1:ffab:cdef"), 135, bytes(4) + DEVICE_GLOBAL + sllao(ROUTER_EUI)
    )
    # (A link-local address inline holds 0xfe, which splits frames here: no NS for fe80::.)
    na = icmpv6(ROUTER_LL, DEVICE_LL, 136, b"\xe0\0\0\0" + ROUTER_GLOBAL + sllao(ROUTER_EUI, 2))
    echo = icmpv6(EDGE, DEVICE_GLOBAL, 128, struct.pack(">HH", 7, 1) + b"ping", hops=63)
    reg_frags = fragments(
        udp6(DEVICE_GLOBAL, EDGE, 5683, 5683, register), DEVICE_EUI, ROUTER_EUI, 0x0101
    )
    reg_frames = [mac(10 + i, f) for i, f in enumerate(reg_frags)]
    rs = icmpv6(DEVICE_LL, ALL_ROUTERS, 133, bytes(4) + sllao(DEVICE_EUI))
    telemetry = from_device(5, udp6(DEVICE_GLOBAL, ROUTER_GLOBAL, 5683, 5683, TELEMETRY_COAP))
    assert len(telemetry) == 85
    smol = smoltcp_fragments()
    contexts = (
        (1, ip6("2001:db8:1200::")[:6], 48, 60),
        (2, PREFIX + b"\0\xab", 80, 60),
        (0, PREFIX, 64, 0),
    )
    big_ra = icmpv6(ROUTER_LL, ALL_NODES, 134, router_advert(mtu=1280, contexts=contexts))
    big_ra = [
        mac(40 + i, f, src=ROUTER_EUI, dst=BROADCAST)
        for i, f in enumerate(fragments(big_ra, ROUTER_EUI, None, 0x0202))
    ]
    seeds = {
        "ra-again.bin": radio_seed([ra(1)]),
        "ra-in-zep.bin": radio_seed([ra(1)], zep_wrap=True),
        "ra-router-leaves.bin": radio_seed([ra(2, lifetime=0)]),
        "ra-contexts-1-and-2.bin": radio_seed([ra(3, contexts=contexts[:2])]),
        "ra-fragmented-context0-expires.bin": radio_seed(big_ra),
        "ra-second-prefix-on-link.bin": radio_seed(
            [
                ra(
                    4,
                    prefixes=(
                        (PREFIX, 64, 0xC0, 3600),
                        (ip6("2001:db8:1200:306::")[:8], 64, 0x40, 0),
                    ),
                    contexts=(),
                )
            ]
        ),
        "ns-for-global-address.bin": radio_seed([to_device(6, ns_global)]),
        "na-from-router.bin": radio_seed([to_device(8, na)]),
        "echo-request-from-edge.bin": radio_seed([to_device(9, echo)]),
        "coap-get-v-answer-fragmented.bin": radio_seed(
            [to_device(10, udp6(EDGE, DEVICE_GLOBAL, 5683, 5683, get_v, hops=63))]
        ),
        "coap-get-v-block2.bin": radio_seed(
            [to_device(11, udp6(EDGE, DEVICE_GLOBAL, 5683, 5683, get_v_block, hops=63))]
        ),
        "coap-get-core-in-zep.bin": radio_seed(
            [to_device(12, udp6(EDGE, DEVICE_GLOBAL, 5683, 5683, get_core, hops=63))], zep_wrap=True
        ),
        "coap-registration-ack.bin": radio_seed(
            [to_device(13, udp6(EDGE, DEVICE_GLOBAL, 5683, 5683, reg_ack, hops=63))]
        ),
        "coap-to-closed-port.bin": radio_seed(
            [to_device(14, udp6(EDGE, DEVICE_GLOBAL, 5683, 9999, get_v, hops=63))]
        ),
        "uncompressed-ipv6-dispatch.bin": radio_seed(
            [
                mac(
                    15,
                    b"\x41" + udp6(ROUTER_GLOBAL, DEVICE_GLOBAL, 5683, 5683, get_core),
                    src=ROUTER_EUI,
                    dst=DEVICE_EUI,
                )
            ]
        ),
        "device-rs.bin": radio_seed([mac(16, iphc(rs, DEVICE_EUI, None)[0], dst=BROADCAST)]),
        "device-telemetry-85-bytes.bin": radio_seed([telemetry]),
        # The router side here has no contexts: the same report uncompressed (125 bytes).
        "device-telemetry-uncompressed.bin": radio_seed(
            [mac(5, b"\x41" + udp6(DEVICE_GLOBAL, ROUTER_GLOBAL, 5683, 5683, TELEMETRY_COAP))]
        ),
        "device-registration-fragmented.bin": radio_seed(reg_frames),
        "device-registration-out-of-order.bin": radio_seed(reg_frames[::-1]),
        "smoltcp-three-fragments.bin": radio_seed(smol),
        "smoltcp-fragments-out-of-order.bin": radio_seed([smol[2], smol[0], smol[1]]),
        "smoltcp-fragment-duplicate.bin": radio_seed([smol[0], smol[0], smol[1], smol[2]]),
        "other-pan.bin": radio_seed(
            [
                mac(
                    17,
                    iphc(ns_global, ROUTER_EUI, DEVICE_EUI)[0],
                    src=ROUTER_EUI,
                    dst=DEVICE_EUI,
                    pan=0x1234,
                )
            ]
        ),
        "not-for-this-device.bin": radio_seed(
            [mac(18, iphc(ns_global, ROUTER_EUI, DEVICE_EUI)[0], src=ROUTER_EUI, dst=b"\x00\x07")]
        ),
        "mac-ack-frame.bin": radio_seed([bytes([0x02, 0x00, 0x05])]),
        "mesh-header-refused.bin": radio_seed(
            [mac(19, b"\x80\x01\x02", src=ROUTER_EUI, dst=DEVICE_EUI)]
        ),
        "zep-lqi-mode.bin": b"\x00" + zep(ra(20), crc=False),
        "zep-bad-fcs.bin": b"\x00" + zep(ra(21))[:-1] + b"\x00",
    }
    return seeds


def medium_hub_input():
    """First byte: the medium (odd: the airtime model); then records `[source, time step in ms,
    length, datagram]`, sources 17000 + (source & 15) on ::1 into a hub of 4 remote places (50 ms
    idle timeout). The datagrams are ZEP v2 carrying what a PAN's router and devices send."""

    def rec(src, step, datagram):
        assert len(datagram) < 256
        return bytes([src, step, len(datagram)]) + datagram

    dev = lambda n: bytes.fromhex("02123456000000") + bytes([n])  # noqa: E731
    tok = b"\x01"
    ra = mac(
        1,
        iphc(icmpv6(ROUTER_LL, ALL_NODES, 134, router_advert()), ROUTER_EUI, None)[0],
        src=ROUTER_EUI,
        dst=BROADCAST,
    )

    def telemetry(n, seq):
        src = PREFIX + iid_of(dev(n))
        return mac(
            seq,
            iphc(udp6(src, ROUTER_GLOBAL, 5683, 5683, TELEMETRY_COAP), dev(n), ROUTER_EUI)[0],
            src=dev(n),
            dst=ROUTER_EUI,
            ack_request=True,
        )

    def rs(n, seq):
        p = icmpv6(ll_addr(dev(n)), ALL_ROUTERS, 133, bytes(4) + sllao(dev(n)))
        return mac(seq, iphc(p, dev(n), None)[0], src=dev(n), dst=BROADCAST)

    ack = lambda seq: bytes([0x02, 0x00, seq])  # noqa: E731  the 802.15.4 ACK (no addresses)
    get = coap(CON, GET, 0x3001, tok, path("v"))
    to_dev = mac(
        30,
        iphc(udp6(EDGE, PREFIX + iid_of(dev(1)), 5683, 5683, get, hops=63), ROUTER_EUI, dev(1))[0],
        src=ROUTER_EUI,
        dst=dev(1),
        ack_request=True,
    )

    # The router's NS for device 1's address, its NA; device 1's registration in two fragments.
    d1 = PREFIX + iid_of(dev(1))
    ns = icmpv6(ROUTER_LL, ip6("ff02::1:ff00:1"), 135, bytes(4) + d1 + sllao(ROUTER_EUI))
    ns = mac(5, iphc(ns, ROUTER_EUI, None)[0], src=ROUTER_EUI, dst=BROADCAST)
    na = icmpv6(ll_addr(dev(1)), ROUTER_LL, 136, b"\x60\0\0\0" + d1 + sllao(dev(1), 2))
    na = mac(2, iphc(na, dev(1), ROUTER_EUI)[0], src=dev(1), dst=ROUTER_EUI, ack_request=True)
    register = coap(
        CON,
        POST,
        0x0001,
        tok,
        path("rd") + [(CONTENT_FORMAT, uint(40)), (URI_QUERY, b"ep=sensor-000001")],
        b'</t>;rt="senml";ct=112;obs,</v>;ct=0;obs,</valve>;rt="valve";ct=0',
    )
    reg = fragments(udp6(d1, EDGE, 5683, 5683, register), dev(1), ROUTER_EUI, 0x0101)
    reg = [mac(3 + i, f, src=dev(1), dst=ROUTER_EUI, ack_request=True) for i, f in enumerate(reg)]
    pan = [
        rec(0, 0, zep(ra, device_id=1, seq=1)),
        rec(1, 5, zep(rs(1, 1), device_id=2, seq=1)),
        rec(0, 1, zep(ra, device_id=1, seq=2)),
        rec(0, 1, zep(ns, device_id=1, seq=5)),
        rec(1, 1, zep(na, device_id=2, seq=4)),
        rec(1, 2, zep(reg[0], device_id=2, seq=5)),
        rec(0, 1, zep(ack(3), device_id=1, seq=6)),
        rec(1, 2, zep(reg[1], device_id=2, seq=6)),
        rec(0, 1, zep(ack(4), device_id=1, seq=7)),
        rec(1, 3, zep(telemetry(1, 2), device_id=2, seq=2)),
        rec(0, 1, zep(ack(2), device_id=1, seq=3)),
        rec(0, 2, zep(to_dev, device_id=1, seq=4)),
        rec(1, 0, zep(telemetry(1, 3), device_id=2, seq=3)),  # at once: a collision on air
        rec(2, 0, zep(telemetry(2, 1), device_id=3, seq=1)),
    ]
    crowd = [rec(s, 1, zep(telemetry(s, 1), device_id=s + 1)) for s in range(6)]  # 4 places
    later = [rec(7, 60, zep(rs(7, 1), device_id=8))]  # 60 ms: an idle one gives its place
    bad = [
        rec(3, 1, b"XX" + zep(ra)[2:]),
        rec(3, 1, zep(ra, version=1)),
        rec(3, 1, b"EX\x02\x02" + bytes(4)),  # a ZEP v2 ACK (8 bytes)
        rec(3, 1, zep(ra, kind=3)),
        rec(3, 1, zep(ra)[:-5]),  # length field says more
        rec(3, 1, zep(ra)[:-1] + b"\x00"),  # bad FCS
        rec(3, 1, zep(ra, crc=False)),  # LQI mode: no FCS checked
        rec(3, 1, zep(b"\x41")),  # a frame shorter than a MAC header
        rec(3, 1, b""),
    ]
    seeds = {}
    for mode, name in ((0, "ideal"), (1, "airtime")):
        first = bytes([mode])
        seeds[f"{name}-pan-exchange.bin"] = first + b"".join(pan)
        seeds[f"{name}-table-full-then-idle.bin"] = first + b"".join(crowd + later)
        seeds[f"{name}-bad-datagrams.bin"] = first + b"".join(bad)
        seeds[f"{name}-channel-change.bin"] = first + b"".join(
            [
                rec(0, 0, zep(ra, channel=26)),
                rec(1, 1, zep(rs(1, 1), channel=11)),
                rec(1, 1, zep(rs(1, 2), channel=26)),
            ]
        )
    seeds["long-time-steps.bin"] = b"\x02" + b"".join(rec(0, 255, zep(ra, seq=i)) for i in range(4))
    seeds["truncated-record.bin"] = b"\x01" + rec(0, 0, zep(ra))[:-20]
    return seeds


def audit_checkpoint():
    """The text of `audit.checkpoint` (edge-router/src/audit/checkpoint.rs): one JSON line
    `{"v":1,"rows":…,"head":"<64 hex>","at_ms":…,"mac":"<64 hex>"}`. The target's key is 32
    bytes of 0x01: `genuine-*` are signed as the edge signs (HMAC-SHA-256 under
    HKDF-SHA-256(salt "v6iot-seal-key", key, info "v6iot audit checkpoint v1"))."""
    import hashlib
    import hmac

    def derive(root, info):
        prk = hmac.new(b"v6iot-seal-key", root, hashlib.sha256).digest()
        return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()

    key = derive(bytes([1] * 32), b"v6iot audit checkpoint v1")
    other = derive(bytes([2] * 32), b"v6iot audit checkpoint v1")

    def mac_hex(rows, head, at_ms, k=key):
        data = (
            b"v6iot-audit-checkpoint-v1" + struct.pack(">Q", rows) + head + struct.pack(">Q", at_ms)
        )
        return hmac.new(k, data, hashlib.sha256).hexdigest()

    def line(rows, head, at_ms, mac=None, v=1):
        mac = mac_hex(rows, head, at_ms) if mac is None else mac
        return (
            '{"v":%d,"rows":%d,"head":"%s","at_ms":%d,"mac":"%s"}\n'
            % (v, rows, head.hex(), at_ms, mac)
        ).encode()

    head = bytes.fromhex("32a00974ffa2f00241713c8842fd0a21f13eefcdd2c374d91138a93962872d0e")
    at = 1_780_000_020_000
    good = line(6, head, at)
    fields = good.decode().strip()
    return {
        "genuine.json": good,
        "genuine-empty-trail.json": line(0, bytes(32), at),
        "genuine-largest-numbers.json": line(2**64 - 1, b"\xff" * 32, 2**64 - 1),
        "genuine-upper-case-hex.json": good.decode()
        .replace(head.hex(), head.hex().upper())
        .encode(),
        "genuine-pretty-printed.json": fields.replace(",", ",\n  ")
        .replace("{", "{\n  ")
        .replace("}", "\n}")
        .encode(),
        "genuine-fields-reordered.json": (
            '{"mac":"%s","at_ms":%d,"head":"%s","rows":6,"v":1}'
            % (mac_hex(6, head, at), at, head.hex())
        ).encode(),
        "other-key.json": line(6, head, at, mac_hex(6, head, at, other)),
        "rows-cut.json": line(5, head, at, mac_hex(6, head, at)),
        "mac-zero.json": line(6, head, at, "00" * 32),
        "version-2.json": line(6, head, at, v=2),
        "head-31-bytes.json": line(6, head, at).replace(
            head.hex().encode(), head.hex()[:62].encode()
        ),
        "head-odd-hex.json": line(6, head, at).replace(
            head.hex().encode(), head.hex()[:63].encode()
        ),
        "mac-not-hex.json": line(6, head, at, "zz" * 32),
        "unknown-field.json": good.replace(b'"v":1,', b'"v":1,"kind":"audit_checkpoint",'),
        "missing-mac.json": ('{"v":1,"rows":6,"head":"%s","at_ms":%d}' % (head.hex(), at)).encode(),
        "duplicate-field.json": good.replace(b'"rows":6,', b'"rows":6,"rows":7,'),
        "rows-negative.json": good.replace(b'"rows":6', b'"rows":-6'),
        "rows-too-large.json": good.replace(b'"rows":6', b'"rows":18446744073709551616'),
        "rows-float.json": good.replace(b'"rows":6', b'"rows":6.0'),
        "published-message.json": (
            '{"kind":"audit_checkpoint","edge":"edge-1","at_ms":%d,"rows":6,"head":"%s"}'
            % (at, head.hex())
        ).encode(),
        "trailing-garbage.json": good + b"x",
        "truncated.json": good[:80],
        "empty.json": b"",
        "not-json.json": b"v=1 rows=6\n",
    }


def credentials_csv():
    """The provisioning CSV (credentials/src/csv.rs); the device looked up is the first field of
    the last line."""
    demo = (REPO / "examples/credentials/demo.csv").read_bytes()
    assert b"sensor-1,51," in demo, "examples/credentials/demo.csv changed"
    doc = re.search(
        r"//! ```text\n(.*?)//! ```", (REPO / "credentials/src/csv.rs").read_text(), re.S
    )
    doc = "".join(l[4:] + "\n" for l in doc.group(1).splitlines()).encode()
    assert doc.startswith(b"id,kid_hex,")
    header = b"id,kid_hex,secret_hex,salt_hex,class,prefixes\n"
    ok = b"d1,0a,000102030405060708090a0b0c0d0e0f,,1,2001:db8::/64"
    # credentials/src/csv.rs, bad_lines_name_the_field: each after a good line, last
    bad = {
        "fields": b"d1,0a,00",
        "kid-not-hex": b"d1,0g,000102030405060708090a0b0c0d0e0f,,1,",
        "kid-empty": b"d1,,000102030405060708090a0b0c0d0e0f,,1,",
        "kid-8-bytes": b"d1,0a0b0c0d0e0f1011,000102030405060708090a0b0c0d0e0f,,1,",
        "secret-short": b"d1,0a,0001,,1,",
        "salt-odd-hex": b"d1,0a,000102030405060708090a0b0c0d0e0f,0,1,",
        "class-0": b"d1,0a,000102030405060708090a0b0c0d0e0f,,0,",
        "class-256": b"d1,0a,000102030405060708090a0b0c0d0e0f,,256,",
        "prefix-host-bits": b"d1,0a,000102030405060708090a0b0c0d0e0f,,1,2001:db8::1/64",
        "id-underscore": b"_d,0a,000102030405060708090a0b0c0d0e0f,,1,",
        "id-empty": b",0a,000102030405060708090a0b0c0d0e0f,,1,",
        "id-slash": b"d/1,0a,000102030405060708090a0b0c0d0e0f,,1,",
        "secret-33-bytes": b"d1,0a," + b"11" * 33 + b",,1,",
        "salt-33-bytes": b"d1,0a,000102030405060708090a0b0c0d0e0f," + b"22" * 33 + b",1,",
        "prefix-not-ipv6": b"d1,0a,000102030405060708090a0b0c0d0e0f,,1,10.0.0.0/8",
    }
    seeds = {
        "demo.csv": demo,
        "csv-doc-example.csv": doc,
        # examples/src/credentials.rs, the_device_line_is_found_and_makes_a_context
        "examples-test.csv": b"# demo\n" + header + b"a,01,000102030405060708090a0b0c0d0e0f,,1,\n"
        b"sensor-1,2a,0f0e0d0c0b0a09080706050403020100,a1b2,1,::1/128\n",
        # 64-byte id, 7-byte kid, 32-byte secret and salt, class 255, four prefixes
        "largest-fields.csv": header
        + b",".join([b"d" * 64, b"01020304050607", b"ab" * 32, b"cd" * 32, b"255"])
        + b",2001:db8:1200:305::/64 2001:db8:1200:306::/64 ::1/128 ::/0\n"
        + b"d" * 64
        + b",01,"
        + b"ab" * 16
        + b",,1,",
        "id-65-bytes.csv": header + b"d" * 65 + b",01," + b"ab" * 16 + b",,1,",
        "crlf-bom-spaces.csv": "\ufeff id, kid_hex ,secret_hex,salt_hex,class,prefixes\r\n".encode()
        + b" d1 , 0A , 000102030405060708090A0B0C0D0E0F , , 1 , 2001:db8::/64 \r\n",
        "duplicate-id.csv": header + ok + b"\n" + ok.replace(b",0a,", b",0b,") + b"\n" + ok,
        "wrong-header.csv": b"id,kid,secret\n" + ok,
        "header-only.csv": header,
        "comments-only.csv": b"# nothing\n   \n#\n",
        "no-such-device.csv": header + ok + b"\nsensor-9",
        "empty.csv": b"",
        "not-utf8.csv": header + b"d1,0a,\xff\xfe,,1,",
    }
    for name, line in bad.items():
        seeds[f"bad-{name}.csv"] = header + ok + b"\n" + line + b"\n"
    return seeds


def edge_peek():
    """One datagram as the gateway receives it: plain CoAP, OSCORE-protected (RFC 8613 Appendix C,
    as sdk/tests/oscore_rfc8613.rs holds them), and malformed headers and options."""
    h = bytes.fromhex
    json = fleet_report_json()
    telemetry = coap(CON, POST, 2, b"\x07", path("t") + [(CONTENT_FORMAT, uint(110))], json)

    def protected(option, payload=b"\x01\x02\x03\x04\x05\x06\x07\x08", before=()):
        return coap(CON, POST, 0x1234, b"\x01\x02\x03", list(before) + [(9, option)], payload)

    return {
        "register-d0.bin": REGISTER_D0,
        "telemetry-json.bin": telemetry,
        "telemetry-cbor-non.bin": coap(
            NON, POST, 3, b"\x08", path("t") + [(CONTENT_FORMAT, uint(112))], fleet_report_cbor()
        ),
        "empty-ack.bin": coap(ACK, 0, 0x0001),
        "reset.bin": coap(RST, 0, 0x0002),
        "ping.bin": coap(CON, 0, 0x0003),
        "command-ack-2-04.bin": coap(ACK, 0x44, 1, b"\x00\x00\x00\x01"),
        "rfc8613-c4-request.bin": h(
            "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"
        ),
        "rfc8613-c5-request-kid-00.bin": h(
            "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0"
        ),
        "rfc8613-c6-request-kid-context.bin": h(
            "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3"
        ),
        "rfc8613-c7-response-empty-option.bin": h(
            "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"
        ),
        "rfc8613-c8-response-piv.bin": h(
            "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"
        ),
        # gateway/peek.rs's tests: Uri-Host and Observe before the option; kid abcd
        "oscore-after-uri-host-observe.bin": protected(
            b"\x09\x05\xab\xcd", before=[(3, b"edge"), (OBSERVE, b"")]
        ),
        "oscore-kid-7-bytes.bin": protected(b"\x09\x07" + bytes(range(1, 8))),
        "oscore-kid-empty-piv-5-bytes.bin": protected(b"\x0d\x01\x02\x03\x04\x05"),
        "oscore-reserved-flags.bin": protected(b"\xe9\x05\xab"),
        "two-oscore-options.bin": protected(b"\x09\x05\xab", before=[(9, b"\x09\x06\xcd")]),
        "option-past-9-no-oscore.bin": coap(CON, GET, 5, b"\x01", path("t") + [(URI_QUERY, b"x")]),
        "option-delta-13.bin": bytes([0x41, 0x01, 0, 6, 0xAA, 0xD1, 0x00, 0x41]),
        "option-delta-14.bin": bytes([0x41, 0x01, 0, 7, 0xAA, 0xE1, 0x00, 0x00, 0x41]),
        "option-delta-15-reserved.bin": bytes([0x40, 0x01, 0, 0, 0xF1, 0]),
        "oscore-length-past-end.bin": bytes([0x40, 0x01, 0, 0, 0x94, 0x19]),
        "payload-marker-only.bin": bytes([0x40, 0x02, 0, 8, 0xFF]),
        "token-length-9.bin": bytes([0x49, 0x01, 0, 0, 1]),
        "token-cut-short.bin": bytes([0x42, 0x01, 0, 0, 1]),
        "version-2.bin": bytes([0x80, 0x01, 0, 0]),
        "short.bin": bytes([0x40, 0x01]),
    }


def nbiot_at():
    """Ops: a byte whose bits 3-7 + 1 say how many bytes follow it and bits 0-2 what they are:
    0-3 bytes from the modem, 4 time to the next deadline, 5 a datagram to send, 6 time passing
    by the op byte's value in seconds, 7 a timeout check. Every line of the whole input also goes
    through the AT line parsers. Transcripts as a HiSilicon (BC95-like) module answers the driver
    (sdk/src/nbiot/tests.rs: echo on until ATE0, URCs between lines, +CME ERROR)."""

    def serial(text, lane=0):
        data = text.encode() if isinstance(text, str) else text
        out = b""
        for i in range(0, len(data), 32):
            chunk = data[i : i + 32]
            out += bytes([(len(chunk) - 1) << 3 | lane]) + chunk
        return out

    deadline = b"\x04\x00"  # time to the next deadline
    check = b"\x07\x00"

    def send(data):
        return bytes([(len(data) - 1) << 3 | 5]) + data

    def wait(units):  # op 6: now += op seconds; consumes (op >> 3) + 1 bytes
        op = units << 3 | 6
        return bytes([op]) + bytes(units + 1)

    bring_up = [
        "ATE0\r\r\nOK\r\n",
        "\r\nOK\r\n",  # AT+CMEE=1
        "\r\nOK\r\n",  # AT+CGDCONT
        "\r\nOK\r\n",  # AT+CEREG=4
        "\r\nOK\r\n",  # AT+NPSMR=1
        "\r\nOK\r\n",  # AT+CPSMS
        "\r\nOK\r\n",  # AT+CFUN=1
        "\r\nOK\r\n",  # AT+CGATT=1
        "\r\n+CEREG: 4,2\r\n\r\nOK\r\n",  # AT+CEREG?
    ]
    up = b"".join(serial(s, i % 4) for i, s in enumerate(bring_up))
    registered = serial('\r\n+CEREG: 1,"1A2B","0C0D0E0F",9,,,"00000101","00111000"\r\n')
    dotted = serial('\r\n+CGPADDR: 1,"32.1.13.184.1.0.0.0.0.0.0.0.0.0.0.7"\r\n\r\nOK\r\n')
    colon = serial('+CGPADDR: 1,"2001:DB8:100::7"\r\nOK\r\n')
    socket = serial("\r\n1\r\n\r\nOK\r\n")
    ready = up + registered + dotted + socket
    sent = send(b"\x40\x01\xab") + serial("\r\n1,3\r\n\r\nOK\r\n")
    received = serial("\r\n+NSONMI: 1,4\r\n") + serial(
        '\r\n1,2001:DB8::1,5683,4,DEADBEEF,0\r\n\r\n+CEREG: 1,"1A2B","0C0D0E10",9\r\n\r\nOK\r\n'
    )
    return {
        "bring-up-registered-dotted-address.bin": ready + check,
        "bring-up-colon-address.bin": up + registered + colon + socket,
        "send-and-receive-urc-before-ok.bin": ready + sent + received,
        "psm-and-wake.bin": ready
        + serial("+NPSMR: 1\r\n")
        + wait(30)
        + serial("+NPSMR: 0\r\n")
        + serial('+CEREG: 1,"1A2B","0C0D0E0F",9,,,"00000101","00111000"\r\n')
        + serial('+CGPADDR: 1,"32.1.13.184.1.0.0.0.0.0.0.0.0.1.0.7"\r\nOK\r\n')
        + send(b"x"),
        "cme-error-then-retry.bin": serial("ATE0\r\r\nOK\r\n")
        + serial("\r\nOK\r\n")
        + serial("\r\n+CME ERROR: 13\r\n")
        + deadline
        + deadline
        + serial("\r\nOK\r\n"),
        "plain-error.bin": serial("ATE0\r\r\nOK\r\n") + serial("\r\nERROR\r\n") + deadline,
        "no-answer-probe-and-late-rest.bin": ready
        + send(b"a")
        + send(b"b")
        + serial("\r\n1,")
        + deadline
        + deadline
        + serial("1\r\n\r\nOK\r\n")
        + serial("\r\n+CFUN: 1\r\n\r\nOK\r\n")
        + serial("\r\n1,1\r\n\r\nOK\r\n"),
        "registration-states.bin": up
        + serial('+CEREG: 0\r\n+CEREG: 2\r\n+CEREG: 3\r\n+CEREG: 5,"1A2B","0C0D0E0F",9\r\n')
        + serial("+CEREG: 4,1\r\n")
        + serial('+CEREG: 1,"1A2B"\r\n'),
        "noise-and-unknown-urcs.bin": ready
        + serial(b"\x00\xff\xfe\r\n")
        + serial("\r\n+NSONMI: garbage\r\n+XYZ: 1\r\n")
        + serial("+NSONMI: 1,2\r\n")
        + serial(b"\x07\x07\r\n1,2001:DB8::1,5683,2,4142,0\r\nOK\r\n"),
        "nsorf-bad-hex-and-length.bin": ready
        + serial("+NSONMI: 1,3\r\n")
        + serial("1,2001:DB8::1,5683,3,4G,0\r\nOK\r\n")
        + serial("+NSONMI: 1,1\r\n")
        + serial("1,2001:DB8::1,5683,2,4142,1\r\nOK\r\n"),
        "hex-lines.bin": serial("DEADBEEF\r\n00ff\r\nABC\r\n"),
        "time-passes-unanswered.bin": deadline * 12 + wait(31) + check,
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
    "edge_peek": edge_peek,
    "audit_checkpoint": audit_checkpoint,
    "credentials_csv": credentials_csv,
    "lowpan_decompress": lowpan_decompress,
    "lowpan_reassembly": lowpan_reassembly,
    "lowpan_radio_input": lowpan_radio_input,
    "medium_hub_input": medium_hub_input,
    "nbiot_at": nbiot_at,
}


def main():
    missing = sorted(f.stem for f in (ROOT / "fuzz_targets").glob("*.rs") if f.stem not in TARGETS)
    assert (
        not missing
    ), f"fuzz targets without a function in TARGETS (seeds are required): {missing}"
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
