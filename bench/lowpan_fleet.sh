#!/usr/bin/env bash
# Devices one border router serves on the ideal medium, through the simulator's medium process
# (not in CI): `v6iot-sim run --transport lowpan` drives DEVICES of the SDK's 6LoWPAN devices
# (OSCORE, planned addresses, one thread, one ZEP socket) through `v6iot-sim medium` (ideal, the
# router its pinned peer) to the release `v6iot-edge` (one `[[radio]]` PAN on ZEP, OSCORE
# required) and mosquitto. Each device attaches from the RA, registers, then reports once every
# PERIOD seconds. The run passes when every device registered and every report made was
# delivered to mosquitto (nothing lost, unsent or refused).
#
#   bench/lowpan_fleet.sh [--devices 10000] [--period 60] [--secs 150] [--ramp 30s]
#                         [--rounds 1] [--out DIR] [--bin-dir DIR]
#
# Runs inside a network namespace of its own (root; `unshare -n`). Output: each round's JSON
# report in OUT/lowpan_fleet.N.json (OUT defaults to target/bench) and one summary line per
# round. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DEVICES=10000
PERIOD=60
SECS=150
RAMP=30s
ROUNDS=1
PREFIX="2001:db8:1200:305::/64"
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --devices) DEVICES="$2" && shift 2 ;;
    --period) PERIOD="$2" && shift 2 ;;
    --secs) SECS="$2" && shift 2 ;;
    --ramp) RAMP="$2" && shift 2 ;;
    --rounds) ROUNDS="$2" && shift 2 ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$DEVICES" =~ ^[0-9]+$ && "$DEVICES" -ge 1 && "$DEVICES" -le 60000 ]] || die "--devices: 1 to 60000"
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 10 && "$SECS" -le 3600 ]] || die "--secs: 10 to 3600"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 && "$ROUNDS" -le 10 ]] || die "--rounds: 1 to 10"
[[ "$(id -u)" -eq 0 ]] || die "needs root for a network namespace of its own"

need_pkg mosquitto mosquitto
need_pkg jq jq
need_pkg unshare util-linux
need_pkg ip iproute2
ensure_pkgs

release_bins v6iot-edge v6iot-sim
own_netns "${ARGS[@]}"

bench_init lowpan
mkdir -p "$OUT"
machine_info | tee "$OUT/lowpan_fleet.machine"

round() {
    local r="$1"
    local work="$BENCH_WORK/round$r"
    mkdir -p "$work"
    start_mosquitto "mq$r"
    local creds="$work/creds.csv"
    import_fleet "$DEVICES" "$PREFIX" lp "$work"
    local coap zep medium fleet
    coap="$(free_port udp)"
    zep="$(free_port udp)"
    medium="$(free_port udp)"
    fleet="$(free_port udp)"
    cat >"$work/edge.toml" <<TOML
site = "lp"
edge_id = "bench-edge-lowpan"
data_dir = "$work/edge-data"
[coap]
listen = "[::1]:$coap"
max_lifetime = 90000
[mqtt]
url = "mqtt://[::1]:$MQTT_PORT"
[outbox]
max_bytes = 4294967296
[registry]
seal_key_file = "$work/seal.key"
[security]
require_oscore = true
[lowpan]
max_neighbours = 65536
[[radio]]
pan_id = 43981
channel = 26
prefix = "$PREFIX"
router_eui64 = "02:00:00:00:00:00:00:01"
zep_medium = "[::1]:$medium"
zep_listen = "[::1]:$zep"
TOML
    RUST_LOG=warn start_bg "edge$r" "$EDGE" run --config "$work/edge.toml"
    wait_port udp "$coap"
    start_bg "medium$r" "$SIM" medium --listen "[::1]:$medium" --peer "[::1]:$zep" \
        --max-participants 16
    wait_port udp "$medium"
    local report="$OUT/lowpan_fleet.$r.json"
    log "round $r: $DEVICES 6LoWPAN devices through v6iot-sim medium, a report every ${PERIOD}s for ${SECS}s"
    /usr/bin/time -v "$SIM" run --edge "[::1]:$coap" --devices "$DEVICES" \
        --rate "$(jq -n "$DEVICES / $PERIOD")" --ramp "$RAMP" --duration "${SECS}s" --drain 60s \
        --mqtt-url "mqtt://[::1]:$MQTT_PORT" --site lp --id-prefix lp \
        --credentials "$creds" --seq-file "$work/fleet.seq" --source-prefix "$PREFIX" \
        --transport lowpan --medium "[::1]:$medium" --zep-listen "[::1]:$fleet" \
        --quiet --report "$report" >/dev/null 2>"$OUT/lowpan_fleet.$r.time"
    stop_bg "medium$r"
    stop_bg "edge$r"
    stop_bg "mq$r"
    jq -r '"round '"$r"': registered \(.total.registered)/\(.total.devices), registration p50 \(.total.registration.p50_ms) ms p99 \(.total.registration.p99_ms) ms, made \(.total.made), delivered \(.total.delivered) (\(.total.throughput_per_s) /s), lost \(.total.lost), unsent \(.total.unsent_at_end), frames up \(.total.lowpan.air.frames_up) (fragments \(.total.lowpan.air.fragments_up)), down \(.total.lowpan.air.frames_down)"' "$report"
    grep -E "Maximum resident|Elapsed|User time|System time" "$OUT/lowpan_fleet.$r.time" || true
    jq -e '.total.registered == .total.devices and .total.delivered == .total.made and
        .total.lost == 0 and .total.unsent_at_end == 0 and .total.refused == 0' "$report" >/dev/null || {
        log "round $r: not every device registered or not every report delivered (see $report)"
        FAILED=$((FAILED + 1))
    }
}

FAILED=0
for r in $(seq "$ROUNDS"); do
    round "$r"
done
[[ "$FAILED" -eq 0 ]] || die "$FAILED of $ROUNDS rounds lost something"
log "every device registered and every report delivered in each of $ROUNDS rounds"
