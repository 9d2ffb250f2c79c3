#!/usr/bin/env bash
# Frames per second the border router forwards host → radio *with its socket I/O* (not in CI):
# the release `v6iot-edge` with one `[[radio]]` PAN on ZEP and its TUN up (`[lowpan] tun`, the
# PAN's prefix routed to it by the kernel); a sender on the host writes PACKETS UDP datagrams of
# PAYLOAD bytes to devices of the PAN (their addresses in the prefix, next hop derived from the
# IID) at RATE packets/s (0: as fast as one Python socket can); the kernel puts them on the TUN, the router reads each,
# compresses (and fragments) it and sends each frame as one ZEP datagram to the medium's socket,
# where a counter takes them. Figures: packets offered, frames at the medium, the rate between
# the first and the last frame, where the others were dropped (the TUN's queue, the medium's
# socket), and the router's CPU time per frame.
#
# With `--direction up`, radio → host instead: PACKETS one-frame datagrams from 1,000 devices of
# the PAN (uncompressed IPv6 in an 802.15.4 data frame, ZEP v2) to the router's ZEP socket, which
# it decompresses and writes to the TUN, for a socket on a host address (PAYLOAD at most 55).
#
#   bench/border_forward.sh [--direction down|up] [--packets 200000] [--payload 40] [--rate 0]
#                           [--rounds 1] [--out DIR] [--bin-dir DIR]
#
# Runs inside a network namespace of its own (root; `unshare -n`; the TUN lives there). Output:
# OUT/border_forward.N.json per round (OUT defaults to target/bench) and one summary line each.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

PACKETS=200000
PAYLOAD=40
DIRECTION=down
RATE=0
ROUNDS=1
PREFIX="2001:db8:1200:305::/64"
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --packets) PACKETS="$2" && shift 2 ;;
    --payload) PAYLOAD="$2" && shift 2 ;;
    --rate) RATE="$2" && shift 2 ;;
    --direction) DIRECTION="$2" && shift 2 ;;
    --rounds) ROUNDS="$2" && shift 2 ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$PACKETS" =~ ^[0-9]+$ && "$PACKETS" -ge 1000 && "$PACKETS" -le 10000000 ]] || die "--packets: 1000 to 10000000"
[[ "$PAYLOAD" =~ ^[0-9]+$ && "$PAYLOAD" -ge 1 && "$PAYLOAD" -le 1200 ]] || die "--payload: 1 to 1200"
[[ "$DIRECTION" == down || ( "$DIRECTION" == up && "$PAYLOAD" -le 55 ) ]] || die "--direction: down, or up with --payload at most 55"
[[ "$RATE" =~ ^[0-9]+$ && "$RATE" -le 10000000 ]] || die "--rate: 0 to 10000000"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 && "$ROUNDS" -le 10 ]] || die "--rounds: 1 to 10"
[[ "$(id -u)" -eq 0 ]] || die "needs root for a network namespace of its own"

need_pkg mosquitto mosquitto
need_pkg jq jq
need_pkg unshare util-linux
need_pkg ip iproute2
ensure_pkgs

release_bins v6iot-edge
own_netns "${ARGS[@]}"

bench_init border
mkdir -p "$OUT"
machine_info | tee "$OUT/border_forward.machine"

# The medium's side: counts ZEP datagrams until none came for 2 s (or 120 s in all); JSON out.
SINK='
import json, socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 25)
s.bind((sys.argv[3] if len(sys.argv) > 3 else "::1", int(sys.argv[1])))
open(sys.argv[2] + ".ready", "w").close()
buf = bytearray(2048)
n = size = 0
first = last = None
end = time.monotonic() + 120
s.settimeout(2.0)
while time.monotonic() < end:
    try:
        k = s.recv_into(buf)
    except socket.timeout:
        if first is not None:
            break
        continue
    last = time.monotonic()
    if first is None:
        first = last
    n += 1
    size += k
json.dump({"frames": n, "zep_bytes": size, "secs": (last - first) if n > 1 else 0.0}, open(sys.argv[2], "w"))
'
# The host's side: PACKETS datagrams to 1,000 devices of the PAN, at RATE/s (0: flat out).
SOURCE='
import json, socket, sys, time
prefix, packets, payload = sys.argv[1], int(sys.argv[2]), b"x" * int(sys.argv[3])
rate = int(sys.argv[4])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
dsts = [(prefix + "%x" % (0x100 + i), 5683) for i in range(1000)]
t0 = time.monotonic()
errors = 0
for i in range(packets):
    if rate and i % 100 == 0:
        ahead = t0 + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    try:
        s.sendto(payload, dsts[i % 1000])
    except OSError:
        errors += 1
json.dump({"offered": packets - errors, "send_errors": errors, "secs": time.monotonic() - t0}, sys.stdout)
'

# The radio's side: PACKETS frames from 1,000 devices of the PAN (uncompressed IPv6, dispatch
# 0x41, in one 802.15.4 data frame each, ZEP v2 in LQI mode) to a host address, at RATE/s.
RADIO_SOURCE='
import json, socket, struct, sys, time, ipaddress
zep_port, prefix, dst, packets, plen, rate = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
router = bytes.fromhex("0200000000000001")[::-1]
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF or 0xFFFF
frames = []
dst_ip = ipaddress.IPv6Address(dst).packed
for i in range(1000):
    iid = 0x100 + i
    src_ip = ipaddress.IPv6Address(prefix + "%x" % iid).packed
    payload = b"x" * plen
    udp_len = 8 + plen
    pseudo = src_ip + dst_ip + struct.pack("!IxxxB", udp_len, 17)
    udp = struct.pack("!HHHH", 5683, 9999, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp)) + udp[8:]
    ip6 = struct.pack("!IHBB", 6 << 28, udp_len, 17, 64) + src_ip + dst_ip
    eui = (iid ^ (0x02 << 56)).to_bytes(8, "big")[::-1]
    mac = struct.pack("<HBH", 0xCC41, i & 0xFF, 0xABCD) + router + eui
    psdu = mac + b"\x41" + ip6 + udp + b"\xff\xff"
    frames.append(psdu)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
to = ("::1", zep_port)
t0 = time.monotonic()
errors = 0
for i in range(packets):
    if rate and i % 100 == 0:
        ahead = t0 + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    psdu = frames[i % 1000]
    zep = b"EX" + struct.pack("!BBBHBB8sI10xB", 2, 1, 26, 1, 0, 255, bytes(8), i & 0xFFFFFFFF, len(psdu))
    try:
        s.sendto(zep + psdu, to)
    except OSError:
        errors += 1
json.dump({"offered": packets - errors, "send_errors": errors, "secs": time.monotonic() - t0}, sys.stdout)
'

round() {
    local r="$1"
    local work="$BENCH_WORK/round$r"
    mkdir -p "$work"
    start_mosquitto "mq$r"
    "$EDGE" devices keygen "$work/seal.key" >/dev/null
    local coap zep sink
    coap="$(free_port udp)"
    zep="$(free_port udp)"
    sink="$(free_port udp)"
    cat >"$work/edge.toml" <<TOML
site = "bf"
edge_id = "bench-edge-border"
data_dir = "$work/edge-data"
[coap]
listen = "[::1]:$coap"
[mqtt]
url = "mqtt://[::1]:$MQTT_PORT"
[registry]
seal_key_file = "$work/seal.key"
[lowpan]
tun = "v6pan$r"
max_neighbours = 65536
[[radio]]
pan_id = 43981
channel = 26
prefix = "$PREFIX"
router_eui64 = "02:00:00:00:00:00:00:01"
zep_medium = "[::1]:$sink"
zep_listen = "[::1]:$zep"
TOML
    local host_ip=2001:db8:ffff::1
    if [[ "$DIRECTION" == up ]]; then
        ip -6 addr replace "$host_ip/128" dev lo nodad
        start_bg "sink$r" python3 -c "$SINK" 9999 "$work/sink.json" "$host_ip"
    else
        start_bg "sink$r" python3 -c "$SINK" "$sink" "$work/sink.json"
    fi
    for _ in $(seq 100); do [[ -e "$work/sink.json.ready" ]] && break; sleep 0.1; done
    RUST_LOG=warn start_bg "edge$r" "$EDGE" run --config "$work/edge.toml"
    wait_port udp "$coap"
    # (The route table read whole: `grep -q` on a pipe would fail the pipeline with SIGPIPE.)
    local routes=""
    for _ in $(seq 100); do
        routes="$(ip -6 route show)"
        [[ "$routes" == *"v6pan$r"* ]] && break
        sleep 0.1
    done
    [[ "$routes" == *"v6pan$r"* ]] || die "no route to the PAN on v6pan$r"
    local edge_pid ticks0 ticks1 hz
    edge_pid="$(bg_pid "edge$r")"
    hz="$(getconf CLK_TCK)"
    ticks0="$(cpu_ticks "$edge_pid")"
    local drops sink_pid
    if [[ "$DIRECTION" == up ]]; then
        log "round $r: $PACKETS frames of $PAYLOAD-byte datagrams PAN → host through the router's ZEP socket and TUN (rate $RATE/s, 0: flat out)"
        python3 -c "$RADIO_SOURCE" "$zep" "${PREFIX%%/*}" "$host_ip" "$PACKETS" "$PAYLOAD" "$RATE" \
            >"$work/source.json"
        # Where frames were lost: the router's ZEP socket buffer, the host socket's (read while
        # the sink still runs: it stops 2 s after the last datagram).
        sleep 1
        drops="$(jq -n --argjson zep "$(udp_drops "$zep")" --argjson host "$(udp_drops 9999)" \
            '{router_zep_socket: $zep, host_socket: $host}')"
    else
        log "round $r: $PACKETS packets of $PAYLOAD bytes host → PAN through the router's TUN (rate $RATE/s, 0: flat out)"
        python3 -c "$SOURCE" "${PREFIX%%/*}" "$PACKETS" "$PAYLOAD" "$RATE" >"$work/source.json"
        # Where frames were lost: the TUN's queue to the router (the kernel's TX drops on it),
        # the medium's socket buffer.
        sleep 1
        drops="$(jq -n --argjson tun "$(ip -s -j link show dev "v6pan$r" | jq '.[0].stats64.tx.dropped')" \
            --argjson medium "$(udp_drops "$sink")" '{tun_queue: $tun, medium_socket: $medium}')"
    fi
    sink_pid="$(bg_pid "sink$r")"
    for _ in $(seq 1300); do kill -0 "$sink_pid" 2>/dev/null || break; sleep 0.1; done
    ticks1="$(cpu_ticks "$edge_pid")"
    stop_bg "sink$r"
    stop_bg "edge$r"
    stop_bg "mq$r"
    local report="$OUT/border_forward.$r.json"
    jq -n --slurpfile src "$work/source.json" --slurpfile snk "$work/sink.json" \
        --argjson payload "$PAYLOAD" --arg direction "$DIRECTION" --argjson drops "$drops" \
        --argjson cpu "$(jq -n "($ticks1 - $ticks0) / $hz")" \
        '{direction: $direction, payload: $payload, offered: $src[0].offered,
          send_errors: $src[0].send_errors, offered_per_s: ($src[0].offered / $src[0].secs),
          drops: $drops, frames: $snk[0].frames,
          frames_per_packet: ($snk[0].frames / $src[0].offered),
          frames_per_s: (if $snk[0].secs > 0 then $snk[0].frames / $snk[0].secs else 0 end),
          edge_cpu_s: $cpu, edge_cpu_us_per_frame: (if $snk[0].frames > 0 then $cpu * 1e6 / $snk[0].frames else null end)}' \
        >"$report"
    jq -r '"round '"$r"': offered \(.offered) packets (\(.offered_per_s | floor)/s), \(.frames) datagrams at the far end (\(.frames_per_packet * 100 | floor / 100) per packet), \(.frames_per_s | floor)/s (dropped: \(.drops | tojson)), router CPU \(.edge_cpu_us_per_frame * 100 | floor / 100) µs/frame"' "$report"
}

for r in $(seq "$ROUNDS"); do
    round "$r"
done
