#!/usr/bin/env bash
# A large fleet end to end (not in CI; issue 14's benchmark): `v6iot-sim run` powers on DEVICES
# devices with OSCORE (the edge's default, `require_oscore = true`; credentials from
# `v6iot-sim provision`, imported with `v6iot-edge devices import`), each at its own address of
# 2001:db8:100::/64 (one socket per simulator thread), spread over RAMP, that together make RATE
# reports per second for SECS seconds after the ramp, through one release `v6iot-edge` (fsync'ed
# outbox) into mosquitto, where the simulator's collector counts them (QoS 1).
#
#   bench/fleet_e2e.sh [--devices 100000] [--rate 20000] [--secs 60] [--ramp 10s] [--drain 30s]
#                      [--threads 1] [--out DIR] [--bin-dir DIR]
#
# Prints made / sent / acknowledged / delivered / unsent at end / lost (by cause) / refused /
# duplicates, end-to-end latency p50 / p99 / p99.9 / max (the report's HDR histogram),
# registration time (p50 / p99 / max, and when the last device had registered), and for each
# process (edge, mosquitto, simulator) its CPU in seconds and in % of the run (100 % = one
# core) and its peak RSS; then where reports acknowledged but not yet delivered were when the
# simulator ended: mosquitto's PUBLISH counts ($SYS) and the edge's outbox (`/metrics`, and how
# long it took to empty). Exits non-zero (after the summary) when anything was lost, refused or
# left unsent, or a device never registered; the report then says which cause
# (`lost_by_cause`), and the edge's log is kept in OUT.
#
# Runs inside a network namespace of its own (root; `unshare -n`) where the pool prefix is
# routed to loopback; loopback only. Rate limits are raised in the edge's configuration (every
# device reaches the edge from one /64 here); everything else is the edge's default. Bounded:
# provisioning and import (about 25 s per 100,000 devices), then RAMP + SECS + DRAIN + 60 s at
# most. Output: OUT/fleet_e2e.json (the simulator's report) and OUT/fleet_e2e.txt (the summary,
# also printed); OUT defaults to target/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DEVICES=100000
RATE=20000
SECS=60
RAMP=10s
DRAIN=30s
THREADS=1
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --devices) DEVICES="$2" && shift 2 ;;
    --rate) RATE="$2" && shift 2 ;;
    --secs) SECS="$2" && shift 2 ;;
    --ramp) RAMP="$2" && shift 2 ;;
    --drain) DRAIN="$2" && shift 2 ;;
    --threads) THREADS="$2" && shift 2 ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$DEVICES" =~ ^[0-9]+$ && "$DEVICES" -ge 1 && "$DEVICES" -le 1000000 ]] || die "--devices: 1 to 1000000"
[[ "$RATE" =~ ^[0-9]+$ && "$RATE" -ge 1 && "$RATE" -le 200000 ]] || die "--rate: reports per second, 1 to 200000"
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 5 && "$SECS" -le 600 ]] || die "--secs: 5 to 600"
RAMP_S="$(secs "$RAMP")"
DRAIN_S="$(secs "$DRAIN")"

need_pkg curl curl
need_pkg mosquitto_sub mosquitto-clients
SUMMARY="$OUT/fleet_e2e.txt"
fleet_netns fleet "$SUMMARY"

start_mosquitto mosquitto
t0="$(date +%s.%N)"
import_fleet "$DEVICES" "$POOL_PREFIX" f "$BENCH_WORK"
say "$(awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$DEVICES" 'BEGIN { printf "provision and import %d devices: %.1f s\n", n, b - a }')"
EDGE_PORT="$(free_port udp)"
OPS_PORT="$(free_port tcp)"
{
    edge_toml "$BENCH_WORK" "$EDGE_PORT" f
    printf '[ops]\nlisten = "[::1]:%s"\n' "$OPS_PORT"
} >"$BENCH_WORK/edge.toml"
RUST_LOG=warn start_bg edge "$EDGE" run --config "$BENCH_WORK/edge.toml"
answers "$EDGE_PORT" 120 || die "the edge did not answer within 2 min"

# PUBLISHes mosquitto received (from the edge) and sent (to the collector; and these $SYS
# messages, a few a second), once a second.
# shellcheck disable=SC2016 # a literal $SYS topic
start_bg sys-sub stdbuf -oL mosquitto_sub -h ::1 -p "$MQTT_PORT" -t '$SYS/broker/publish/messages/+' -F '%U %t %p'
declare -A CPU0
for p in edge mosquitto; do CPU0[$p]="$(cpu_ticks "$(bg_pid "$p")")"; done
DROPS0="$(udp_drops "$EDGE_PORT")"
RUNQ0="$(runq_ns "$(bg_pid edge)")"
REPORT="$OUT/fleet_e2e.json"
log "$DEVICES devices (OSCORE), ramp $RAMP, then $RATE reports/s for ${SECS}s, drain $DRAIN"
T0="$(date +%s.%N)"
timeout "$((RAMP_S + SECS + DRAIN_S + 60))" /usr/bin/time -v "$SIM" run --edge "[::1]:$EDGE_PORT" \
    --devices "$DEVICES" --rate "$RATE" --ramp "$RAMP" --duration "$((RAMP_S + SECS))s" \
    --drain "$DRAIN" --mqtt-url "mqtt://[::1]:$MQTT_PORT" --site f --id-prefix f \
    --credentials "$BENCH_WORK/creds.csv" --seq-file "$BENCH_WORK/fleet.seq" --threads "$THREADS" \
    --source-prefix "$POOL_PREFIX" --quiet --report "$REPORT" >/dev/null 2>"$BENCH_WORK/sim.time" ||
    warn "v6iot-sim ended with $?"
T1="$(date +%s.%N)"
WALL="$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')"
cp "$BENCH_WORK/sim.time" "$OUT/fleet_e2e.sim.log"
cp "$BENCH_WORK/edge.log" "$OUT/fleet_e2e.edge.log"
[[ -s "$REPORT" ]] || die "no report (the simulator's output: $OUT/fleet_e2e.sim.log, the edge's: $OUT/fleet_e2e.edge.log)"

say "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
say "$(jq -r '.total | "made \(.made), sent \(.sent), acknowledged \(.acknowledged), delivered \(.delivered), unsent at end \(.unsent_at_end), lost \(.lost) \(.lost_by_cause | tostring), refused \(.refused) \(.refused_by_code | tostring), duplicates \(.duplicates); \(.throughput_per_s | floor) delivered/s over the reporting period"' "$REPORT")"
say "$(jq -r '.total | "timeouts \(.timeouts), retransmissions \(.retransmissions), 5.03 \(.busy_503), 4.03 \(.forbidden)"' "$REPORT")"
say "latency (scheduled at the device -> delivered to the subscriber): $(jq -r '.total.latency |
    "p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, p99.9 \(.p999_ms) ms, max \(.max_ms) ms"' "$REPORT")"
ALL_AT="$(all_registered_at "$REPORT" "$DEVICES")"
say "registered $(jq '.total.registered' "$REPORT") of $DEVICES, all after ${ALL_AT}$([[ "$ALL_AT" == never ]] || echo ' s') (timeline bucket $(jq '.timeline.bucket_s' "$REPORT") s); registration $(jq -r '.total.registration |
    "p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, max \(.max_ms) ms"' "$REPORT")"
TCK="$(getconf CLK_TCK)"
for p in edge mosquitto; do
    pid="$(bg_pid "$p")"
    say "$(awk -v n="$p" -v a="${CPU0[$p]}" -v b="$(cpu_ticks "$pid")" -v k="$TCK" -v w="$WALL" -v r="$(kib "$pid" VmHWM)" \
        'BEGIN { printf "%s: CPU %.1f s = %.0f %% of the %.1f s run; peak RSS %.0f MiB\n", n, (b - a) / k, (b - a) / k / w * 100, w, r / 1024 }')"
done
say "$(awk -v w="$WALL" '/User time/ { u = $NF } /System time/ { s = $NF } /Maximum resident/ { r = $NF }
    END { printf "simulator: CPU %.1f s = %.0f %% of the run; peak RSS %.0f MiB\n", u + s, (u + s) / w * 100, r / 1024 }' "$BENCH_WORK/sim.time")"
say "edge threads runnable but waiting for a CPU: $(awk -v a="$RUNQ0" -v b="$(runq_ns "$(bg_pid edge)")" 'BEGIN { printf "%.1f s", (b - a) / 1e9 }'); datagrams dropped at its socket: $(($(udp_drops "$EDGE_PORT") - DROPS0))"
say "simulator bottleneck: $(jq -c '[.simulators[].bottleneck]' "$REPORT"); warnings: $(jq -c '.warnings' "$REPORT"); checks: $(jq -c '.checks' "$REPORT")"
say "edge log: $(grep -c WARN "$OUT/fleet_e2e.edge.log" || true) warnings, $(grep -c ERROR "$OUT/fleet_e2e.edge.log" || true) errors"
# Reports the report calls lost because they were acknowledged but not delivered may only be
# late: what the edge's outbox still held when the drain ended, and how long it took to empty
# (the collector has gone by then: what the edge publishes now reaches no subscriber).
outbox() { curl -sf "http://[::1]:$OPS_PORT/metrics" | awk '$1 == "v6iot_outbox_records" { print $2 + 0; f = 1 } END { exit !f }'; }
say "mosquitto when the simulator ended: PUBLISHes received $(awk -v t="$T1" '$1 <= t && $2 ~ /received$/ { v = $3 } END { print v + 0 }' "$BENCH_WORK/sys-sub.log"), sent $(awk -v t="$T1" '$1 <= t && $2 ~ /sent$/ { v = $3 } END { print v + 0 }' "$BENCH_WORK/sys-sub.log") (\$SYS, once a second)"
left="$(outbox)" || die "no v6iot_outbox_records in the edge's /metrics (http://[::1]:$OPS_PORT/metrics)"
if [[ "${left:-0}" != 0 ]]; then
    t="$(date +%s.%N)"
    for _ in $(seq 600); do
        [[ "$(outbox)" == 0 ]] && break
        sleep 0.5
    done
    say "the edge's outbox held ${left} records when the simulator ended; $(outbox) after $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s more"
else
    say "the edge's outbox was empty when the simulator ended"
fi
jq -e --argjson n "$DEVICES" '.total | .registered == $n and .lost == 0 and .refused == 0 and .unsent_at_end == 0' \
    "$REPORT" >/dev/null || die "not every device registered, or a report was lost, refused or left unsent (see $REPORT)"
log "every device registered; every report made was delivered"
