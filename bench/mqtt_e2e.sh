#!/usr/bin/env bash
# End-to-end records per second at QoS 1 with zero loss: simulated devices → v6iot-edge (fsync'ed
# outbox) → mosquitto → subscriber, beside the broker's own QoS 1 ceiling measured in the same
# run by a plain rumqttc publisher and subscriber (v6iot-mqtt-ceiling, same payload size).
#
#   bench/mqtt_e2e.sh [--rates "5000 10000 12500 15000 17500 20000 25000"] [--per-device 10] [--secs 10]
#                     [--p99-ms 500] [--ceiling-count 200000] [--out DIR] [--bin-dir DIR]
#                     [--sources pool|sockets]
#
# The ceiling runs first and again last (windows 64, 256 = the edge bridge's in-flight limit,
# and 512); the best is the ceiling. Then `v6iot-sim run` drives RATE/PER_DEVICE registered devices
# at each rate in turn (each device sends PER_DEVICE records/s, one request at a time) and
# reports sent/acked/delivered/lost, end-to-end latency and the generator's own CPU per record
# (user + system time of `v6iot-sim run` over the records it made, setup and drain included). A rate is *sustained* when nothing
# acknowledged was lost, at least 99.5 % of the records made were acknowledged and delivered
# during the run, and p99 latency stayed under P99_MS; the ladder stops at the second rate that
# is not sustained. Result: the best sustained rate and its ratio to the ceiling (target >= 0.9).
#
# --sources pool (the default) runs everything, ceiling included, inside a network namespace of
# its own (root; `unshare -n`) where 2001:db8:100::/64 is routed to loopback (AnyIP): each
# simulated device sends from its own address on one socket per simulator thread (shared/DESIGN.md
# §4, `v6iot-sim run --source-prefix`). --sources sockets runs on the host's loopback with a
# socket (a port) per device, as before.
#
# Output on stdout; raw lines in OUT/mqtt_e2e.tsv (OUT defaults to target/bench). Loopback only;
# about (secs + 10) × rates + 2 × 20 seconds plus the build. --bin-dir takes v6iot-edge,
# v6iot-sim, v6iot-flood and v6iot-mqtt-ceiling from DIR instead of building them (to compare
# a saved build of another commit).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

RATES="5000 10000 12500 15000 17500 20000 25000"
PER_DEVICE=10
SECS=10
P99_MS=500
CEILING_COUNT=200000
SOURCES=pool
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --rates) RATES="$2" && shift 2 ;;
    --per-device) PER_DEVICE="$2" && shift 2 ;;
    --secs) SECS="$2" && shift 2 ;;
    --p99-ms) P99_MS="$2" && shift 2 ;;
    --ceiling-count) CEILING_COUNT="$2" && shift 2 ;;
    --sources) SOURCES="$2" && shift 2 ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 1 && "$SECS" -le 60 ]] || die "--secs: 1 to 60"
[[ "$PER_DEVICE" =~ ^[0-9]+$ && "$PER_DEVICE" -ge 1 ]] || die "--per-device: a positive integer"
[[ "$CEILING_COUNT" =~ ^[0-9]+$ && "$CEILING_COUNT" -le 5000000 ]] || die "--ceiling-count: at most 5 million"
[[ "$SOURCES" == pool || "$SOURCES" == sockets ]] || die "--sources: pool or sockets"
[[ "$SOURCES" == sockets || "$(id -u)" -eq 0 ]] ||
    die "--sources pool (the default) needs root for a network namespace (or use --sources sockets)"

need_pkg mosquitto mosquitto
need_pkg mosquitto_sub mosquitto-clients
need_pkg python3 python3
need_pkg ss iproute2
need_pkg jq jq
need_pkg /usr/bin/time time
need_pkg unshare util-linux
need_pkg ip iproute2
ensure_pkgs

if [[ -z "$BIN_DIR" ]]; then
    log "building (release)"
    cargo build --release --locked -q -p v6iot-edge-router --bin v6iot-edge \
        -p v6iot-simulator --bin v6iot-sim --bin v6iot-mqtt-ceiling --bin v6iot-flood
    BIN_DIR="$PWD/target/release"
fi
EDGE="$BIN_DIR/v6iot-edge"
SIM="$BIN_DIR/v6iot-sim"
CEILING="$BIN_DIR/v6iot-mqtt-ceiling"
FLOOD="$BIN_DIR/v6iot-flood"
for b in "$EDGE" "$SIM" "$CEILING" "$FLOOD"; do
    [[ -x "$b" ]] || die "missing binary: $b"
done

SOURCE_ARGS=()
if [[ "$SOURCES" == pool ]]; then
    if [[ -z "${V6IOT_BENCH_NETNS:-}" ]]; then
        # Built and installed above, on the host's network; the rest runs in a new namespace.
        exec unshare -n -- env V6IOT_BENCH_NETNS=1 bash "$0" "${ARGS[@]}" --bin-dir "$BIN_DIR"
    fi
    ip link set lo up
    ip -6 route add local "$POOL_PREFIX" dev lo
    SOURCE_ARGS=(--source-prefix "$POOL_PREFIX")
fi

bench_init e2e
mkdir -p "$OUT"
TSV="$OUT/mqtt_e2e.tsv"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "machine"
machine_info | tee "$OUT/mqtt_e2e.machine"
echo "device sources: $SOURCES${SOURCE_ARGS[*]:+ (${SOURCE_ARGS[*]}, in a network namespace of its own)}" | tee -a "$OUT/mqtt_e2e.machine"

start_mosquitto mosquitto
MQTT_URL="mqtt://[::1]:$MQTT_PORT"
EDGE_PORT="$(free_port udp)"
cat >"$BENCH_WORK/edge.toml" <<TOML
site = "bench"
edge_id = "bench-edge"
data_dir = "$BENCH_WORK/edge-data"
[coap]
listen = "[::1]:$EDGE_PORT"
[mqtt]
url = "$MQTT_URL"
[outbox]
max_bytes = 4294967296
# Lab mode: the simulated devices register and report in plain CoAP. Every device socket is on
# ::1, one /64, so the per-source rate limits (20,000/s by default) are raised out of the way.
[security]
require_oscore = false
$RAISED_LIMITS
TOML
RUST_LOG=warn start_bg edge "$EDGE" run --config "$BENCH_WORK/edge.toml"
wait_port udp "$EDGE_PORT"
sleep 1

# What the edge publishes for one simulated report: topic v6iot/bench/simNNNNNN/telemetry and a
# resolved SenML-JSON array of two records (temperature, seq) with the record id, 170-180 bytes.
PAYLOAD_BYTES=175
CEILING_TOPIC="v6iot/bench/ceil000001/telemetry"

printf 'kind\trate\tdevices\tsent\tacked\tdelivered\tlost\tunsent\tdelivered_per_s\tp50_ms\tp99_ms\tedge_cores\tbroker_cores\tsim_cores\tload1\tedge_runq\tbroker_in_per_s\tsim_us_per_record\n' >"$TSV"
# The broker's own count of PUBLISHes received, every second ($SYS, sys_interval 1): how fast
# the edge publishes while devices are sending, whatever the backlog.
# shellcheck disable=SC2016 # a literal $SYS topic
start_bg sys-sub stdbuf -oL mosquitto_sub -h ::1 -p "$MQTT_PORT" -t '$SYS/broker/publish/messages/received' -F '%U %p'

ceiling() {
    local w="$1" m0 m1 t0 t1 line rate p50 p99 lost
    m0="$(cpu_ticks "$(bg_pid mosquitto)")"
    t0="$(date +%s.%N)"
    line="$("$CEILING" --mqtt-url "$MQTT_URL" --count "$CEILING_COUNT" --window "$w" \
        --payload-bytes "$PAYLOAD_BYTES" --topic "$CEILING_TOPIC" --max-secs 90)" || true
    t1="$(date +%s.%N)"
    m1="$(cpu_ticks "$(bg_pid mosquitto)")"
    echo "ceiling (window $w): $line" >&2
    rate="$(grep -o 'delivered_per_s=[^ ]*' <<<"$line" | cut -d= -f2)"
    p50="$(grep -o 'p50_ms=[^ ]*' <<<"$line" | cut -d= -f2)"
    p99="$(grep -o 'p99_ms=[^ ]*' <<<"$line" | cut -d= -f2)"
    lost="$(grep -o ' lost=[^ ]*' <<<"$line" | cut -d= -f2)"
    printf 'ceiling-w%s\t-\t-\t%s\t%s\t%s\t%s\t0\t%s\t%s\t%s\t-\t%s\t-\t%s\t-\t-\t-\n' "$w" "$CEILING_COUNT" \
        "$(grep -o 'acked=[^ ]*' <<<"$line" | cut -d= -f2)" \
        "$(grep -o 'delivered=[^ ]*' <<<"$line" | cut -d= -f2)" "$lost" "$rate" "$p50" "$p99" \
        "$(awk -v a="$m0" -v b="$m1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", (b - a) / 100 / (e - s) }')" \
        "$(cut -d' ' -f1 /proc/loadavg)" >>"$TSV"
}

e2e() {
    local rate="$1" devices e0 e1 m0 m1 t0 t1 report simcpu r0 r1 runq bin
    devices=$(((rate + PER_DEVICE - 1) / PER_DEVICE))
    report="$BENCH_WORK/sim-$rate.json"
    e0="$(cpu_ticks "$(bg_pid edge)")"
    r0="$(runq_ns "$(bg_pid edge)")"
    m0="$(cpu_ticks "$(bg_pid mosquitto)")"
    t0="$(date +%s.%N)"
    /usr/bin/time -f '%U+%S' -o "$BENCH_WORK/time" \
        "$SIM" run --edge "[::1]:$EDGE_PORT" --devices "$devices" --rate "$rate/s" \
        --duration "${SECS}s" --drain 5s --mqtt-url "$MQTT_URL" --site bench \
        --id-prefix "r${rate}x" "${SOURCE_ARGS[@]}" --report "$report" --quiet >/dev/null
    t1="$(date +%s.%N)"
    e1="$(cpu_ticks "$(bg_pid edge)")"
    r1="$(runq_ns "$(bg_pid edge)")"
    m1="$(cpu_ticks "$(bg_pid mosquitto)")"
    runq="$(awk -v a="$r0" -v b="$r1" -v s="$t0" -v t="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 / (t - s) }')"
    # PUBLISHes the broker received per second from 2 s into the run to its end (devices
    # register in the first second or so)
    bin="$(awk -v a="$t0" -v secs="$SECS" '$1 >= a + 2 && $1 <= a + 1 + secs { if (!n++) { t = $1; c = $2 } tl = $1; cl = $2 }
        END { if (tl > t) printf "%.0f", (cl - c) / (tl - t); else print "-" }' "$BENCH_WORK/sys-sub.log")"
    simcpu="$(tail -1 "$BENCH_WORK/time")"
    jq -r --arg rate "$rate" --arg e "$(awk -v a="$e0" -v b="$e1" -v s="$t0" -v t="$t1" 'BEGIN { printf "%.2f", (b - a) / 100 / (t - s) }')" \
        --arg m "$(awk -v a="$m0" -v b="$m1" -v s="$t0" -v t="$t1" 'BEGIN { printf "%.2f", (b - a) / 100 / (t - s) }')" \
        --arg s "$(awk -v c="$simcpu" -v s="$t0" -v t="$t1" 'BEGIN { split(c, p, "+"); printf "%.2f", (p[1] + p[2]) / (t - s) }')" \
        --arg load "$(cut -d' ' -f1 /proc/loadavg)" --arg runq "$runq" --arg bin "$bin" \
        --arg simcpu "$(awk -v c="$simcpu" 'BEGIN { split(c, p, "+"); printf "%.3f", p[1] + p[2] }')" \
        '.total | ["e2e", $rate, .devices, .sent, .acknowledged, .delivered, .lost, .unsent_at_end, .throughput_per_s, .latency.p50_ms, .latency.p99_ms, $e, $m, $s, $load, $runq, $bin,
          (if .sent > 0 then (($simcpu | tonumber) / .sent * 1e6 * 10 | round / 10) else "-" end)] | @tsv' \
        "$report" >>"$TSV"
    tail -1 "$TSV" >&2
    # sustained: no loss, ≥ 99.5 % of the records made acknowledged and delivered, p99 in bounds
    jq -e --argjson p99 "$P99_MS" \
        '.total | .lost == 0 and .acknowledged >= 0.995 * .sent and .delivered >= 0.995 * .sent and .latency.p99_ms <= $p99' \
        "$report" >/dev/null
}

log "broker ceiling (plain rumqttc, QoS 1, $PAYLOAD_BYTES-byte payloads)"
ceiling 64
ceiling 256
ceiling 512

log "end to end through the edge (v6iot-sim run, $PER_DEVICE records/s per device, ${SECS}s each)"
misses=0
for rate in $RATES; do
    if e2e "$rate"; then
        echo "$rate" >>"$BENCH_WORK/sustained"
    else
        misses=$((misses + 1))
        [[ "$misses" -ge 2 ]] && break
    fi
done

# --- the edge's publish path alone: a backlog in the outbox drained to an idle broker ---------------
# A second edge (lab mode, site "drain") and broker: the broker is paused (SIGSTOP) while
# v6iot-flood stores records in the edge's outbox, then resumed; the rate at which the backlog
# reaches a mosquitto_sub subscriber is what the bridge (outbox reader → rumqttc → broker) can
# publish when nothing else is running.
drain() {
    local port flood_line acked t_cont n first last e0 e1 m0 m1 t1
    start_mosquitto mosquitto-drain
    local url="mqtt://[::1]:$MQTT_PORT"
    port="$(free_port udp)"
    cat >"$BENCH_WORK/edge-drain.toml" <<TOML
site = "drain"
edge_id = "drain-edge"
data_dir = "$BENCH_WORK/edge-drain-data"
[coap]
listen = "[::1]:$port"
lab_accept_unregistered = true
[mqtt]
url = "$url"
[outbox]
max_bytes = 4294967296
[security]
$RAISED_LIMITS
TOML
    RUST_LOG=warn start_bg edge-drain "$EDGE" run --config "$BENCH_WORK/edge-drain.toml"
    wait_port udp "$port"
    start_bg drain-sub stdbuf -oL mosquitto_sub -h ::1 -p "$MQTT_PORT" -q 1 -t 'v6iot/drain/+/telemetry' -F '%U'
    sleep 1.5
    kill -STOP "$(bg_pid mosquitto-drain)"
    flood_line="$("$FLOOD" --target "[::1]:$port" --sockets 4 --window 32 --secs 4 --warmup 0)" || true
    acked="$(grep -o ' ok=[^ ]*' <<<"$flood_line" | cut -d= -f2)"
    sleep 0.5
    e0="$(cpu_ticks "$(bg_pid edge-drain)")"
    m0="$(cpu_ticks "$(bg_pid mosquitto-drain)")"
    t_cont="$(date +%s.%N)"
    kill -CONT "$(bg_pid mosquitto-drain)"
    for _ in $(seq 600); do
        n="$(wc -l <"$BENCH_WORK/drain-sub.log")"
        [[ "$n" -ge "${acked:-0}" ]] && break
        sleep 0.1
    done
    t1="$(date +%s.%N)"
    e1="$(cpu_ticks "$(bg_pid edge-drain)")"
    m1="$(cpu_ticks "$(bg_pid mosquitto-drain)")"
    n="$(wc -l <"$BENCH_WORK/drain-sub.log")"
    first="$(awk -v c="$t_cont" '$1 >= c { print; exit }' "$BENCH_WORK/drain-sub.log")"
    last="$(tail -1 "$BENCH_WORK/drain-sub.log")"
    awk -v n="$n" -v a="$acked" -v c="$t_cont" -v f="$first" -v l="$last" -v e0="$e0" -v e1="$e1" \
        -v m0="$m0" -v m1="$m1" -v t1="$t1" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
            span = l - c
            lost = (a > n) ? a - n : 0
            rate = (span > 0) ? n / span : 0
            printf("drain\t-\t-\t%s\t%s\t%s\t%d\t0\t%.0f\t-\t-\t%.2f\t%.2f\t-\t%s\t-\t-\t-\n", a, a, n, lost,
                rate, (e1 - e0) / 100 / (t1 - c), (m1 - m0) / 100 / (t1 - c), load)
        }' >>"$TSV"
    tail -1 "$TSV" >&2
    FLOOD_LINE_DRAIN="$flood_line"
    stop_bg drain-sub
    stop_bg edge-drain
    stop_bg mosquitto-drain
}
log "the edge's publish path alone (outbox backlog drained to a resumed broker)"
drain

log "broker ceiling again"
ceiling 64
ceiling 256
ceiling 512

echo
echo "| kind | offered /s | devices | sent | acked | delivered | lost | unsent | delivered /s | p50 ms | p99 ms | edge cores | broker cores | sim cores | load | edge run-queue wait s/s | broker PUBLISH in /s | sim CPU µs/record |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
awk -F'\t' 'NR > 1 { printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n" }' "$TSV"
echo
best_ceiling="$(awk -F'\t' 'NR > 1 && $1 ~ /^ceiling/ && $7 == 0 && $9 > m { m = $9 } END { printf "%.0f", m }' "$TSV")"
best_e2e="$(awk -F'\t' 'NR > 1 && $1 == "e2e" && $7 == 0 { print $2, $9 }' "$TSV" |
    grep -Fwf <(cat "$BENCH_WORK/sustained" 2>/dev/null || true) | awk '{ if ($2 > m) m = $2 } END { printf "%.0f", m }')" || best_e2e=0
echo "broker ceiling (best QoS 1 run, no loss): ${best_ceiling}/s"
echo "best sustained end-to-end rate (no loss, p99 <= ${P99_MS} ms): ${best_e2e:-0}/s"
awk -v e="${best_e2e:-0}" -v c="$best_ceiling" 'BEGIN { if (c > 0) printf "end-to-end / ceiling = %.2f (target >= 0.9)\n", e / c }'
drain_rate="$(awk -F'\t' '$1 == "drain" { print $9 }' "$TSV")"
drain_cores="$(awk -F'\t' '$1 == "drain" { print $12 }' "$TSV")"
awk -v d="${drain_rate:-0}" -v c="$best_ceiling" -v e="${drain_cores:-0}" 'BEGIN { if (c > 0) printf "edge publish path alone (outbox backlog drain): %.0f/s = %.2f of the ceiling, %.1f µs of edge CPU per record\n", d, d / c, (d > 0) ? e / d * 1e6 : 0 }'
echo "(the drain backlog was filled by: ${FLOOD_LINE_DRAIN:-})"
if grep -E 'WARN|ERROR' "$BENCH_WORK/edge.log" | head -5 | grep -q .; then
    warn "the edge logged warnings:"
    grep -E 'WARN|ERROR' "$BENCH_WORK/edge.log" | head -5 >&2
fi
echo "raw results: $TSV"
