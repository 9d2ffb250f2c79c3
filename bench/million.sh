#!/usr/bin/env bash
# A fleet registering through one edge (not in CI; issue 14 §2): `v6iot-sim run` (release)
# powers on DEVICES devices, each at its own address in 2001:db8:100::/64 (one socket per
# simulator thread), OSCORE required at the edge (credentials from `v6iot-sim provision`,
# imported with `v6iot-edge devices import`), as a registration storm (`--ramp 0s`, the
# default) or spread over a ramp. Measured: how long until every device had registered (from
# the report's timeline), registrations per second, the simulator's and the edge's peak RSS, the
# edge's RSS per registered device (RSS once all registered minus RSS before the fleet started,
# over DEVICES; and the edge's RSS with the registry loaded minus an edge with none), each
# process's CPU.
#
#   bench/million.sh [--devices 1000000] [--ramp 0s] [--rate 1000] [--duration 150s]
#                    [--threads 1] [--socket-buffer BYTES] [--audit-lane ROWS] [--perf]
#                    [--out DIR] [--bin-dir DIR]
#
# --socket-buffer sets the edge's `[coap] socket_buffer_bytes` (default 4 MiB, the edge's own;
# 1 GiB with `--ramp 0s`: a storm of a million registrations arrives much faster than the edge
# takes them, and every datagram the socket cannot hold costs its device a 2-3 s CoAP
# retransmission timeout). The kernel caps it at `net.core.rmem_max`, which it does not
# namespace: when BYTES is above the current value the script raises rmem_max host-wide for the
# run and restores it on exit (any exit: the EXIT trap of the process outside the namespace).
#
# --audit-lane sets the edge's `[registry] audit_lane_rows`, the audit rows it holds while the
# registry thread writes them (default: the edge's own, 262,144; two per device with `--ramp
# 0s`: a storm's registrations are then answered as fast as the edge verifies them, their audit
# rows written behind; with the default a storm is paced by 5.03 retry hints instead, which the
# summary counts).
#
# The simulator's `--rate` is the fleet's reports per second once devices are registered (kept
# low: this measures registration). Runs inside a network namespace of its own (root;
# `unshare -n`) where the pool prefix is routed to loopback; loopback only. Rate limits are
# raised for the run in the edge's configuration (every device reaches the edge from one /64 on
# one host here, which the defaults rightly treat as one source network); defaults unchanged.
# Bounded: provisioning and import (about 4 min per million devices), the edge's start, then
# the run: DURATION + 20 s drain + 30 s + 1 s per 5,000 devices (the simulator's start) at most. Output: OUT/million.json (the simulator's report) and
# OUT/million.txt (the summary, also printed). `--perf` samples the edge and the simulator with
# perf (Debian linux-perf; DWARF call graphs, the release build has no frame pointers) during the
# run, adds each one's hottest symbols to the summary and leaves OUT/perf-edge.data and
# OUT/perf-sim.data for `perf report -i`. V6IOT_BENCH_FLEET_CACHE=DIR keeps the provisioned fleet
# between runs (lib.sh's import_fleet).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DEVICES=1000000
RAMP=0s
RATE=1000
DURATION=""
THREADS=1
SOCKET_BUFFER=""
AUDIT_LANE=""
PERF=0
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
    --devices) DEVICES="$2" && shift 2 ;;
    --ramp) RAMP="$2" && shift 2 ;;
    --rate) RATE="$2" && shift 2 ;;
    --duration) DURATION="$2" && shift 2 ;;
    --threads) THREADS="$2" && shift 2 ;;
    --socket-buffer) SOCKET_BUFFER="$2" && shift 2 ;;
    --audit-lane) AUDIT_LANE="$2" && shift 2 ;;
    --perf) PERF=1 && shift ;;
    *) bench_arg "$@" && shift "$BENCH_SHIFT" ;;
    esac
done
[[ "$DEVICES" =~ ^[0-9]+$ && "$DEVICES" -ge 1 && "$DEVICES" -le 1000000 ]] || die "--devices: 1 to 1000000"
[[ "$RATE" =~ ^[0-9]+$ && "$RATE" -ge 1 ]] || die "--rate: reports per second, at least 1"
RAMP_S="$(secs "$RAMP")"
[[ -n "$DURATION" ]] || DURATION="$((RAMP_S + 150))s"
DURATION_S="$(secs "$DURATION")"
[[ "$DURATION_S" -ge 5 && "$DURATION_S" -le 900 ]] || die "--duration: 5 s to 15 min"
if [[ -z "$SOCKET_BUFFER" ]]; then
    SOCKET_BUFFER=$((4 << 20))
    [[ "$RAMP_S" -gt 0 ]] || SOCKET_BUFFER=$((1 << 30))
fi
[[ "$SOCKET_BUFFER" =~ ^[0-9]+$ && "$SOCKET_BUFFER" -ge 65536 && "$SOCKET_BUFFER" -le $((1 << 30)) ]] ||
    die "--socket-buffer: bytes, 64 KiB to 1 GiB (the kernel doubles it into an int)"
if [[ -z "${V6IOT_BENCH_NETNS:-}" && "$SOCKET_BUFFER" -gt "$(cat /proc/sys/net/core/rmem_max)" ]]; then
    export BENCH_RMEM_MAX="$SOCKET_BUFFER"
fi

if [[ -z "$AUDIT_LANE" && "$RAMP_S" -eq 0 ]]; then
    AUDIT_LANE=$((2 * DEVICES))
    [[ "$AUDIT_LANE" -ge 8192 ]] || AUDIT_LANE=8192
fi
if [[ -n "$AUDIT_LANE" ]]; then
    [[ "$AUDIT_LANE" =~ ^[0-9]+$ && "$AUDIT_LANE" -ge 8192 && "$AUDIT_LANE" -le 16777216 ]] ||
        die "--audit-lane: rows, 8192 to 16777216"
    EDGE_REGISTRY_LINES="audit_lane_rows = $AUDIT_LANE"
fi

SUMMARY="$OUT/million.txt"
need_pkg sqlite3 sqlite3 # the audit trail's rows, read after the run
fleet_netns million "$SUMMARY"
# CPU ticks per thread name (threads of one name added up), sorted for `join`.
by_thread() { thread_ticks "$1" | awk -F'\t' '{ t[$1] += $2 } END { for (n in t) print n "\t" t[n] }' | sort; }
say "edge socket buffer asked: $SOCKET_BUFFER bytes; net.core.rmem_max: $(cat /proc/sys/net/core/rmem_max); audit lane: ${AUDIT_LANE:-the edge default} rows"

start_mosquitto mosquitto
CREDS="$BENCH_WORK/creds.csv"
t0="$(date +%s.%N)"
import_fleet "$DEVICES" "$POOL_PREFIX" m "$BENCH_WORK"
say "$(awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$DEVICES" \
    'BEGIN { printf "provision %d devices and import them into the edge registry: %.1f s\n", n, b - a }')"
BUFFER_LINE="socket_buffer_bytes = $SOCKET_BUFFER"

# An edge with an empty registry: the baseline of its RSS.
EMPTY_PORT="$(free_port udp)"
mkdir -p "$BENCH_WORK/empty"
cp "$BENCH_WORK/seal.key" "$BENCH_WORK/empty/"
edge_toml "$BENCH_WORK/empty" "$EMPTY_PORT" m "$BUFFER_LINE" >"$BENCH_WORK/empty.toml"
RUST_LOG=warn start_bg empty "$EDGE" run --config "$BENCH_WORK/empty.toml"
wait_port udp "$EMPTY_PORT"
sleep 1
RSS_EMPTY="$(kib "$(bg_pid empty)" VmRSS)"
stop_bg empty

EDGE_PORT="$(free_port udp)"
edge_toml "$BENCH_WORK" "$EDGE_PORT" m "$BUFFER_LINE" >"$BENCH_WORK/edge.toml"
t3="$(date +%s.%N)"
RUST_LOG=warn start_bg edge "$EDGE" run --config "$BENCH_WORK/edge.toml"
# The edge binds its socket only once every device's context is made (10-17 s for a million).
answers "$EDGE_PORT" 600 || die "the edge did not answer within 10 min"
t4="$(date +%s.%N)"
PID="$(bg_pid edge)"
RSS_LOADED="$(kib "$PID" VmRSS)"
CPU_EDGE0="$(cpu_ticks "$PID")"
by_thread "$PID" >"$BENCH_WORK/threads0"
DROPS0="$(udp_drops "$EDGE_PORT")"
RUNQ0="$(runq_ns "$PID")"
say "$(awk -v a="$t3" -v b="$t4" 'BEGIN { printf "edge start until it answers (%d devices loaded): %.1f s\n", '"$DEVICES"', b - a }')"
# The edge's RSS once a second while the fleet runs (the sampler is one of start_bg's PIDs).
start_bg rss bash -c "while kill -0 $PID 2>/dev/null; do echo \"\$(date +%s.%N) \$(awk '/^VmRSS:/ { print \$2 }' /proc/$PID/status)\"; sleep 1; done"
# The audit trail's last row once a second (an indexed read of the WAL database beside the edge).
DB="$BENCH_WORK/edge-data/registry.db"
start_bg audit bash -c "while kill -0 $PID 2>/dev/null; do echo \"\$(date +%s.%N) \$(sqlite3 -readonly '$DB' 'SELECT coalesce(max(seq), 0) FROM audit' 2>/dev/null)\"; sleep 1; done"

log "$DEVICES devices, ramp $RAMP, then $RATE reports/s until ${DURATION}"
REPORT="$OUT/million.json"
if [[ "$PERF" == 1 ]]; then
    need_pkg perf linux-perf
    start_bg perf perf record -F 49 --call-graph dwarf,16384 -p "$PID" -o "$OUT/perf-edge.data" -- sleep "$DURATION_S"
    # The simulator's own process (not the `time` wrapping it), once it runs.
    start_bg perfsim bash -c "for _ in \$(seq 100); do p=\$(pgrep -nx v6iot-sim) && break; sleep 0.1; done
        exec perf record -F 49 --call-graph dwarf,16384 -p \$p -o '$OUT/perf-sim.data' -- sleep $DURATION_S"
fi
T_SIM="$(date +%s.%N)"
timeout "$((DURATION_S + 20 + 30 + DEVICES / 5000))" /usr/bin/time -v "$SIM" run --edge "[::1]:$EDGE_PORT" \
    --devices "$DEVICES" --rate "$RATE" --ramp "$RAMP" --duration "$DURATION" --drain 20s \
    --mqtt-url "mqtt://[::1]:$MQTT_PORT" --site m --id-prefix m --credentials "$CREDS" \
    --seq-file "$BENCH_WORK/fleet.seq" --threads "$THREADS" --source-prefix "$POOL_PREFIX" \
    --quiet --report "$REPORT" >/dev/null 2>"$BENCH_WORK/sim.time" || warn "v6iot-sim ended with $?"
CPU_EDGE1="$(cpu_ticks "$PID")"
# The audit trail: every registration's row written (the registry thread writes them behind the
# answers). Waits up to 120 s for the trail to hold a row per registered device; the trail was
# complete when its last row was written (the first sample of the sampler above that shows it:
# nothing the fleet does after registering writes audit rows).
AUDIT_REG=0
for _ in $(seq 240); do
    AUDIT_REG="$(sqlite3 -readonly "$DB" "SELECT count(*) FROM audit WHERE kind = 'registration'" 2>/dev/null || echo 0)"
    [[ "$AUDIT_REG" -ge "$(jq '.total.registered' "$REPORT" 2>/dev/null || echo 0)" ]] && break
    sleep 0.5
done
AUDIT_LAST="$(sqlite3 -readonly "$DB" 'SELECT coalesce(max(seq), 0) FROM audit' 2>/dev/null || echo 0)"
stop_bg audit
T_AUDIT="$(awk -v last="$AUDIT_LAST" '$2 >= last { print $1; exit }' "$BENCH_WORK/audit.log")"
[[ -n "$T_AUDIT" ]] || T_AUDIT="$(date +%s.%N)"
say "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
by_thread "$PID" >"$BENCH_WORK/threads1"
DROPS1="$(udp_drops "$EDGE_PORT")"
RUNQ1="$(runq_ns "$PID")"
HWM_EDGE="$(kib "$PID" VmHWM)"
RSS_END="$(kib "$PID" VmRSS)"
stop_bg rss
cp "$BENCH_WORK/sim.time" "$OUT/million.sim.log"
cp "$BENCH_WORK/edge.log" "$OUT/million.edge.log"
[[ -s "$REPORT" ]] || die "no report (the simulator's output: $OUT/million.sim.log, the edge's: $OUT/million.edge.log)"

REGISTERED="$(jq '.total.registered' "$REPORT")"
# When the last device registered: the first timeline bucket where the count reaches DEVICES.
ALL_AT="$(all_registered_at "$REPORT" "$DEVICES")"
say "registered: $REGISTERED of $DEVICES; all registered after: ${ALL_AT}$([[ "$ALL_AT" == never ]] || echo ' s') (timeline bucket $(jq '.timeline.bucket_s' "$REPORT") s)"
say "registration time per device (power-on → acknowledged): $(jq -r '.total.registration |
    "p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, max \(.max_ms) ms"' "$REPORT")"
say "registrations per second, peak bucket: $(jq '.timeline.bucket_s as $w |
    [.timeline.buckets[].registered] | max / $w | floor' "$REPORT")"
say "registration requests $(jq '.total.registration_attempts // "n/a"' "$REPORT"): answered 5.03 $(jq '.total.registration_busy_503 // "n/a"' "$REPORT"), refused $(jq '.total.registration_refused // "n/a"' "$REPORT"), unanswered $(jq '.total.registration_unanswered // "n/a"' "$REPORT")"
say "reports made $(jq '.total.made' "$REPORT"), delivered $(jq '.total.delivered' "$REPORT"), lost $(jq '.total.lost' "$REPORT"), timeouts $(jq '.total.timeouts' "$REPORT"), retransmissions $(jq '.total.retransmissions' "$REPORT"), 5.03 $(jq '.total.busy_503' "$REPORT")"
# The edge's RSS when the last device had registered (the sample nearest that moment).
RSS_REG="$(awk -v t="$T_SIM" -v at="$ALL_AT" 'at != "never" && $1 - t <= at + 1 { r = $2 } END { print r + 0 }' \
    "$BENCH_WORK/rss.log")"
say "edge RSS: empty registry $RSS_EMPTY KiB; $DEVICES loaded $RSS_LOADED KiB; all registered $RSS_REG KiB; end $RSS_END KiB; peak $HWM_EDGE KiB"
say "$(awk -v e="$RSS_EMPTY" -v l="$RSS_LOADED" -v r="$RSS_REG" -v n="$DEVICES" 'BEGIN {
    printf "edge memory per device: loaded (keyring, registry) %.0f B; ", (l - e) * 1024 / n
    if (r > 0) printf "registered (directory, bindings, state) %.0f B; total %.0f B\n", (r - l) * 1024 / n, (r - e) * 1024 / n
    else print "registered: n/a (not every device registered)" }')"
say "edge CPU during the run: $(awk -v a="$CPU_EDGE0" -v b="$CPU_EDGE1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f s", (b - a) / hz }')"
say "edge CPU by thread: $(join -t $'\t' "$BENCH_WORK/threads0" "$BENCH_WORK/threads1" |
    awk -F'\t' -v hz="$(getconf CLK_TCK)" '{ d = ($3 - $2) / hz; if (d >= 0.05) printf "%s %.1f s; ", $1, d }')"
say "edge threads runnable but waiting for a CPU (the machine is shared): $(awk -v a="$RUNQ0" -v b="$RUNQ1" 'BEGIN { printf "%.1f s", (b - a) / 1e9 }')"
say "datagrams dropped at the edge's socket (receive buffer full): $((DROPS1 - DROPS0))"
say "simulator: peak RSS $(jq '[.simulators[].peak_rss_bytes] | add / 1024 | floor' "$REPORT") KiB, $(jq '[.simulators[].rss_per_device_bytes] | add' "$REPORT") B per device, CPU $(jq '[.simulators[].cpu_s] | add' "$REPORT") s, bottleneck: $(jq -c '[.simulators[].bottleneck]' "$REPORT")"
grep -E "Elapsed|Maximum resident" "$BENCH_WORK/sim.time" | sed 's/^\t*/simulator (time -v): /' | tee -a "$SUMMARY"
if [[ "$PERF" == 1 ]]; then
    stop_bg perf
    stop_bg perfsim
    for who in edge sim; do
        say "perf, $who, hottest symbols by self time (call graphs: perf report -i $OUT/perf-$who.data):"
        perf report -i "$OUT/perf-$who.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null |
            grep -E "^ +[0-9]" | sed -n 1,30p | tee -a "$SUMMARY"
    done
fi
say "$(awk -v n="$AUDIT_REG" -v a="$T_SIM" -v b="$T_AUDIT" 'BEGIN { printf "registration rows in the audit trail: %d; its last row written %.0f s after the simulator started", n, b - a }')"
say "edge log: $(grep -c WARN "$OUT/million.edge.log" || true) warnings, $(grep -c ERROR "$OUT/million.edge.log" || true) errors; audit rows dropped: $(grep -o 'dropped=[0-9]*' "$OUT/million.edge.log" | awk -F= '{ s += $2 } END { print s + 0 }')"
say "warnings: $(jq -c '.warnings' "$REPORT")"
