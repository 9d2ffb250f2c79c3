#!/usr/bin/env bash
# The fault drill at scale (not in CI; CI runs it small): simulator/scenarios/fault-drill.toml —
# the simulator runs the release `v6iot-edge` (lab mode, plain CoAP, as the drill's
# fault-drill-edge.toml has it) and mosquitto (persistence on) itself, `kill -9`s the edge at 15 s
# (down 3 s) and restarts the broker at 35 s — with its fleet scaled to DEVICES devices making
# RATE reports per second, each device at its own address of 2001:db8:100::/64 (one socket per
# simulator thread).
#
#   bench/fault_drill.sh [--devices 20000] [--rate 4000] [--threads 1] [--out DIR] [--bin-dir DIR]
#
# The script copies the scenario and its two configuration files into its work directory and
# changes only: the fleet's `devices` and `rate`, `source_prefix` added, the edge's and the
# broker's ports (free ones of ::1), their data directories, the edge binary's path, and the
# edge's rate limits raised (every device comes from one /64 here). Faults, duration (60 s) and
# drain (60 s; the run ends sooner once every report is accounted for) are the scenario's.
# Prints made, sent, acknowledged, refused (by code), delivered, duplicates, unsent at end and
# lost (by cause), latency, and for each fault when it was done and how long until the edge
# acknowledged again (the first timeline second after the fault with acknowledgements at 90 % of
# the rate of the 5 s before it) and until the subscriber received again (the same for
# deliveries). Exits non-zero (after the summary) when anything was lost or left unsent.
#
# Runs inside a network namespace of its own (root; `unshare -n`); loopback only. Bounded:
# 3 min 20 s of run at most. Output: OUT/fault_drill.json (the report), OUT/fault_drill.html,
# OUT/fault_drill.txt (the summary, also printed); OUT defaults to target/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DEVICES=20000
RATE=4000
THREADS=1
SCENARIOS="$PWD/simulator/scenarios"
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --devices) DEVICES="$2" && shift 2 ;;
    --rate) RATE="$2" && shift 2 ;;
    --threads) THREADS="$2" && shift 2 ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$DEVICES" =~ ^[0-9]+$ && "$DEVICES" -ge 1 && "$DEVICES" -le 1000000 ]] || die "--devices: 1 to 1000000"
[[ "$RATE" =~ ^[0-9]+$ && "$RATE" -ge 1 && "$RATE" -le 200000 ]] || die "--rate: reports per second, 1 to 200000"

SUMMARY="$OUT/fault_drill.txt"
fleet_netns drill "$SUMMARY"

# The scenario's three files, scaled and moved onto this run's ports and directories. Each
# substitution must match once: a changed scenario stops the script instead of running something
# else.
python3 - "$SCENARIOS" "$BENCH_WORK" "$EDGE" "$DEVICES" "$RATE" "$POOL_PREFIX" \
    "$(free_port udp)" "$(free_port tcp)" "$RAISED_LIMITS" <<'PY'
import re, sys
src, work, edge, devices, rate, prefix, coap, mqtt, limits = sys.argv[1:]
def rewrite(name, subs, append=""):
    text = open(f"{src}/{name}").read()
    for old, new in subs:
        text, n = re.subn(old, lambda _: new, text, flags=re.M)
        if n != 1:
            sys.exit(f"{name}: expected one match of {old!r}, found {n}")
    open(f"{work}/{name}", "w").write(text + append)
rewrite("fault-drill.toml", [
    (r'^address = "\[::1\]:5683"$', f'address = "[::1]:{coap}"'),
    (r'^command = \["target/release/v6iot-edge", "run", "--config", "simulator/scenarios/fault-drill-edge.toml"\]$',
     f'command = ["{edge}", "run", "--config", "{work}/fault-drill-edge.toml"]'),
    (r'^url = "mqtt://\[::1\]:18830"$', f'url = "mqtt://[::1]:{mqtt}"'),
    (r'^command = \["mosquitto", "-c", "simulator/scenarios/fault-drill-mosquitto.conf"\]$',
     f'command = ["mosquitto", "-c", "{work}/fault-drill-mosquitto.conf"]'),
    (r'^devices = \d+$', f'devices = {devices}\nsource_prefix = "{prefix}"'),
    (r'^rate = "[^"]*"$', f'rate = "{rate}/s"'),
])
rewrite("fault-drill-edge.toml", [
    (r'^data_dir = "/tmp/v6iot-fault-drill"$', f'data_dir = "{work}/edge-data"'),
    (r'^listen = "\[::1\]:5683"$', f'listen = "[::1]:{coap}"'),
    (r'^url = "mqtt://\[::1\]:18830"$', f'url = "mqtt://[::1]:{mqtt}"'),
], append=limits + "\n")
rewrite("fault-drill-mosquitto.conf", [
    (r'^listener 18830 ::1$', f'listener {mqtt} ::1'),
    (r'^persistence_location /tmp/v6iot-fault-drill/$', f'persistence_location {work}/mosquitto/'),
])
PY
mkdir -p "$BENCH_WORK/mosquitto" "$BENCH_WORK/edge-data"
[[ "$(grep '^\[' "$BENCH_WORK/fault-drill-edge.toml" | tail -1)" == "[security]" ]] ||
    die "fault-drill-edge.toml no longer ends with [security], where the raised rate limits go"

REPORT="$OUT/fault_drill.json"
log "fault drill: $DEVICES devices, $RATE reports/s, edge kill -9 at 15 s, broker restart at 35 s"
T0="$(date +%s.%N)"
timeout 200 "$SIM" run --scenario "$BENCH_WORK/fault-drill.toml" --threads "$THREADS" \
    --workdir "$BENCH_WORK/procs" --quiet --report "$REPORT" --html "$OUT/fault_drill.html" \
    >/dev/null 2>"$BENCH_WORK/sim.log" || warn "v6iot-sim ended with $?"
say "run: $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'); load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
cp "$BENCH_WORK/sim.log" "$OUT/fault_drill.sim.log"
[[ -s "$REPORT" ]] || die "no report (the simulator's output: $OUT/fault_drill.sim.log)"

say "$(jq -r '.total | "devices \(.devices), registered \(.registered) (again after the edge forgot them: \(.reregistered))"' "$REPORT")"
say "$(jq -r '.total | "made \(.made), sent \(.sent), acknowledged \(.acknowledged), refused \(.refused) \(.refused_by_code | tostring), delivered \(.delivered) (of them unacknowledged \(.delivered_unacknowledged)), duplicates \(.duplicates), unsent at end \(.unsent_at_end), lost \(.lost) \(.lost_by_cause | tostring)"' "$REPORT")"
say "$(jq -r '.total | "timeouts \(.timeouts), retransmissions \(.retransmissions), 5.03 \(.busy_503), 4.03 \(.forbidden); latency p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, p99.9 \(.latency.p999_ms) ms, max \(.latency.max_ms) ms"' "$REPORT")"
say "run ended at $(jq '.ended_s' "$REPORT") s (reporting period $(jq '.scenario.duration_s' "$REPORT") s)"
# Recovery after each fault: the first timeline bucket that ends after the process was back
# whose count reaches 90 % of the mean of the whole buckets in the 5 s before the fault
# (acknowledgements at the edge; deliveries at the subscriber). Seconds from the fault to that
# bucket's end.
recovery() {
    jq -r '
      .timeline.bucket_s as $w | .timeline.buckets as $b | .faults[] as $f
      | def back(k): ([$b[] | select(.t_s + $w <= $f.at_s and .t_s + $w > $f.at_s - 5) | .[k]] | add / length) as $before
          | [$b[] | select(.t_s + $w > $f.at_s + $f.length_s and .[k] >= 0.9 * $before)][0]
          | if . == null then "never" else "\((.t_s + $w - $f.at_s) | . * 10 | round / 10) s" end;
      "\($f.kind) at \($f.at_s | . * 10 | round / 10) s (\($f.detail); ok \($f.ok)): acknowledgements back after \(back("acknowledged")), deliveries back after \(back("delivered"))"
    ' "$1"
}
recovery "$REPORT" | tee -a "$SUMMARY"
say "warnings: $(jq -c '.warnings' "$REPORT"); checks: $(jq -c '.checks' "$REPORT"); simulator bottleneck: $(jq -c '[.simulators[].bottleneck]' "$REPORT")"
jq -e '.total | .lost == 0 and .unsent_at_end == 0 and .made == .delivered + .refused' "$REPORT" >/dev/null ||
    die "something was lost or left unsent (see $REPORT)"
log "every report made was delivered or refused by name; nothing lost"
