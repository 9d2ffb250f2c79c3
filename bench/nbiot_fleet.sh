#!/usr/bin/env bash
# An NB-IoT fleet at scale against one edge (not in CI): `v6iot-sim run --transport nbiot`
# drives DEVICES devices, each the SDK's NB-IoT device on an emulated modem and carrier, each at
# its own carrier address (one socket per simulator thread, shared/DESIGN.md §4), in PSM between
# its exchanges (b=UQ), a share of them re-addressed after every sleep; OSCORE required at the
# edge (credentials from `v6iot-sim provision`, imported with `v6iot-edge devices import`).
# Platform commands are published for one device in COMMANDS_EVERY while the fleet runs; the
# run passes when every command ended `ok` (delivered in its device's window) or `expired`,
# none is missing, the devices ran exactly the `ok` ones, and no report acknowledged was lost.
# The edge listens to a queue-mode device for LISTEN_WINDOW after each uplink it receives;
# by default the active time less the coverage's longest round trip (ce0 1 s, ce1 4 s, ce2 and
# mixed 12 s; at least 1 s), so that nothing it sends reaches a modem already in PSM (the
# device's active time started when it sent, one uplink latency before the edge heard it,
# and the edge's datagram takes one downlink latency).
#
#   bench/nbiot_fleet.sh [--devices 10000] [--secs 300] [--rate 100] [--coverage mixed]
#                        [--active-time 20s] [--listen-window SECONDS] [--tau 10m]
#                        [--commands-every 10] [--commands-at 60s] [--commands-ttl 10m]
#                        [--threads 2] [--out DIR]
#
# Runs inside a network namespace of its own (root; `unshare -n`) where 2001:db8:100::/64 is
# routed to loopback. Output: the fleet's JSON report on stdout and in OUT/nbiot_fleet.json
# (OUT defaults to target/bench); the edge's and mosquitto's CPU and peak RSS in
# OUT/nbiot_fleet.procs, the simulator's in OUT/nbiot_fleet.time. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DEVICES=10000
SECS=300
RATE=100
COVERAGE=mixed
ACTIVE=20s
TAU=10m
LISTEN_WINDOW=""
COMMANDS_EVERY=10
COMMANDS_AT=60s
COMMANDS_TTL=10m
THREADS=2
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --devices) DEVICES="$2" && shift 2 ;;
    --secs) SECS="$2" && shift 2 ;;
    --rate) RATE="$2" && shift 2 ;;
    --coverage) COVERAGE="$2" && shift 2 ;;
    --active-time) ACTIVE="$2" && shift 2 ;;
    --listen-window) LISTEN_WINDOW="$2" && shift 2 ;;
    --tau) TAU="$2" && shift 2 ;;
    --commands-every) COMMANDS_EVERY="$2" && shift 2 ;;
    --commands-at) COMMANDS_AT="$2" && shift 2 ;;
    --commands-ttl) COMMANDS_TTL="$2" && shift 2 ;;
    --threads) THREADS="$2" && shift 2 ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$DEVICES" =~ ^[0-9]+$ && "$DEVICES" -ge 1 && "$DEVICES" -le 100000 ]] || die "--devices: 1 to 100000"
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 10 && "$SECS" -le 3600 ]] || die "--secs: 10 to 3600"

fleet_netns nbiot "$OUT/nbiot_fleet.machine"

start_mosquitto mosquitto
CREDS="$BENCH_WORK/creds.csv"
import_fleet "$DEVICES" "$POOL_PREFIX" nb "$BENCH_WORK"
EDGE_PORT="$(free_port udp)"
if [[ -z "$LISTEN_WINDOW" ]]; then
    case "${COVERAGE,,}" in ce0) rtt=1 ;; ce1) rtt=4 ;; *) rtt=12 ;; esac
    LISTEN_WINDOW=$(($(secs "$ACTIVE") - rtt))
    [[ "$LISTEN_WINDOW" -ge 1 ]] || LISTEN_WINDOW=1
fi
[[ "$LISTEN_WINDOW" =~ ^[0-9]+$ && "$LISTEN_WINDOW" -ge 1 ]] || die "--listen-window: whole seconds, at least 1"
edge_toml "$BENCH_WORK" "$EDGE_PORT" nb "queue_listen_window_s = $LISTEN_WINDOW" >"$BENCH_WORK/edge.toml"
RUST_LOG=warn start_bg edge "$EDGE" run --config "$BENCH_WORK/edge.toml"
wait_port udp "$EDGE_PORT"

log "$DEVICES NB-IoT devices for ${SECS}s at $RATE reports/s, commands for 1 in $COMMANDS_EVERY, edge listening ${LISTEN_WINDOW}s"
REPORT="$OUT/nbiot_fleet.json"
/usr/bin/time -v "$SIM" run --edge "[::1]:$EDGE_PORT" --devices "$DEVICES" --rate "$RATE" \
    --duration "${SECS}s" --drain 30s --mqtt-url "mqtt://[::1]:$MQTT_PORT" --site nb --id-prefix nb \
    --credentials "$CREDS" --seq-file "$BENCH_WORK/fleet.seq" --threads "$THREADS" \
    --source-prefix "$POOL_PREFIX" --transport nbiot --coverage "$COVERAGE" \
    --active-time "$ACTIVE" --tau "$TAU" --commands-every "$COMMANDS_EVERY" \
    --commands-at "$COMMANDS_AT" --commands-ttl "$COMMANDS_TTL" --quiet --report "$REPORT" \
    >/dev/null 2>"$OUT/nbiot_fleet.time"
cat "$REPORT"
grep -E "Maximum resident|Elapsed|User time|System time" "$OUT/nbiot_fleet.time" || true
# The edge's and the broker's CPU (user + system, seconds) and peak RSS over the whole run.
TCK="$(getconf CLK_TCK)"
for p in edge mosquitto; do
    pid="$(bg_pid "$p")"
    echo "$p cpu_s $(awk -v t="$(cpu_ticks "$pid")" -v k="$TCK" 'BEGIN { printf "%.1f", t / k }')" \
        "peak_rss_kib $(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")"
done | tee "$OUT/nbiot_fleet.procs"

jq -e '
  .total.registered == '"$DEVICES"' and .total.lost == 0 and
  .total.nbiot.commands.missing == 0 and
  (.total.nbiot.commands.results.ok // 0) + (.total.nbiot.commands.results.expired // 0) == .total.nbiot.commands.sent and
  .total.nbiot.commands.served == (.total.nbiot.commands.results.ok // 0)
' "$REPORT" >/dev/null || die "not every command ended ok or expired, or something was lost (see $REPORT)"
log "every command delivered in a window or expired; nothing lost"
