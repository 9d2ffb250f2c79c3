#!/usr/bin/env bash
# Where v6iot-edge spends its time under CoAP ingest load: per-thread CPU and run-queue wait
# (schedstat), receive-buffer drops, fdatasync calls and their latency (perf trace), context
# switches, and a perf profile summarised by thread, syscall and component.
#
#   bench/edge_profile.sh [--setting 4x32] [--secs 5] [--no-perf] [--keep]
#
# Starts a mosquitto and the lab edge of coap_ingest.sh on free ports of ::1, loads the edge with
# v6iot-flood at K×W for SECS seconds and measures it meanwhile. perf (Debian linux-perf) is
# optional: without it only the /proc figures are printed. --keep leaves perf.data in the work
# directory and prints its path. Bounded: about 2 × SECS + 10 seconds after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

SETTING=4x32
SECS=5
PERF=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --setting) SETTING="$2" && shift 2 ;;
    --secs) SECS="$2" && shift 2 ;;
    --no-perf) PERF=0 && shift ;;
    --keep) export BENCH_KEEP=1 && shift ;;
    -h | --help)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
done
[[ "$SETTING" =~ ^[0-9]+x[0-9]+$ ]] || die "--setting: KxW, e.g. 4x32"
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -ge 1 && "$SECS" -le 30 ]] || die "--secs: 1 to 30"
K="${SETTING%x*}"
W="${SETTING#*x}"

need_pkg mosquitto mosquitto
need_pkg python3 python3
need_pkg ss iproute2
ensure_pkgs
if [[ "$PERF" == 1 ]] && ! perf --version >/dev/null 2>&1; then
    warn "perf not found (Debian: linux-perf): only the /proc figures"
    PERF=0
fi

log "building (release)"
cargo build --release --locked -q -p v6iot-edge-router --bin v6iot-edge -p v6iot-simulator --bin v6iot-flood
EDGE="$PWD/target/release/v6iot-edge"
FLOOD="$PWD/target/release/v6iot-flood"

bench_init profile
machine_info
start_mosquitto mosquitto
EDGE_PORT="$(free_port udp)"
lab_edge_toml "$EDGE_PORT" >"$BENCH_WORK/edge.toml"
RUST_LOG=warn start_bg edge "$EDGE" run --config "$BENCH_WORK/edge.toml"
wait_port udp "$EDGE_PORT"
sleep 1
PID="$(bg_pid edge)"

snap() {
    local t
    for t in /proc/"$PID"/task/*; do
        echo "${t##*/} $(tr ' ' _ <"$t/comm") $(cat "$t/schedstat")"
    done
}

# 1. without perf attached: throughput, per-thread CPU and run-queue wait, drops
snap >"$BENCH_WORK/s0"
d0="$(udp_drops "$EDGE_PORT")"
t0="$(date +%s.%N)"
line="$("$FLOOD" --target "[::1]:$EDGE_PORT" --sockets "$K" --window "$W" --secs "$SECS" --warmup 1)"
t1="$(date +%s.%N)"
d1="$(udp_drops "$EDGE_PORT")"
snap >"$BENCH_WORK/s1"
echo
echo "load ${SETTING}: $line"
echo "receive-buffer drops at the edge's socket: $((d1 - d0))"
echo "per thread, seconds per second of run (on CPU / runnable but waiting for a CPU):"
join <(sort "$BENCH_WORK/s0") <(sort "$BENCH_WORK/s1") |
    awk -v el="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" '{
        run = ($7 - $3) / 1e9 / el; wait = ($8 - $4) / 1e9 / el
        if (run > 0.005) printf "  %-8s %-16s on-cpu %.2f  waiting %.2f\n", $1, $2, run, wait
    }'

[[ "$PERF" == 1 ]] || exit 0

# 2. syscalls: fdatasync count and latency, context switches
perf trace -s -e fdatasync -p "$PID" -o "$BENCH_WORK/trace.txt" -- sleep "$SECS" 2>/dev/null &
tp=$!
perf stat -e context-switches,cpu-migrations,task-clock -p "$PID" -o "$BENCH_WORK/stat.txt" -- sleep "$SECS" 2>/dev/null &
sp=$!
line2="$("$FLOOD" --target "[::1]:$EDGE_PORT" --sockets "$K" --window "$W" --secs "$SECS" --warmup 0)"
wait "$tp" "$sp" || true
echo
echo "under perf trace/stat: $line2"
awk '/fdatasync/ { n += $2; t += $4; if ($7 > m) m = $7 }
    END { if (n) printf "fdatasync: %d calls, %.0f/s, mean %.3f ms, max %.3f ms\n", n, n / '"$SECS"', t / n, m }' "$BENCH_WORK/trace.txt"
grep -E 'context-switches|task-clock' "$BENCH_WORK/stat.txt" | sed 's/^ */  /'

# 3. profile: share of samples by thread, by syscall, by component
perf record -F 1999 -g --call-graph dwarf,32768 -p "$PID" -o "$BENCH_WORK/perf.data" -- sleep "$SECS" >/dev/null 2>&1 &
rp=$!
"$FLOOD" --target "[::1]:$EDGE_PORT" --sockets "$K" --window "$W" --secs "$SECS" --warmup 0 >/dev/null
wait "$rp" || true
echo
echo "perf: share of the edge's samples by thread and code"
perf report -i "$BENCH_WORK/perf.data" --no-children --sort comm,dso --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -8
echo "perf: inclusive share of selected syscalls and components (children)"
perf report -i "$BENCH_WORK/perf.data" --children --sort comm,sym --stdio -g none 2>/dev/null |
    grep -v '(inlined)' | grep -E '__x64_sys_(sendto|recvfrom|fdatasync|epoll_wait|futex|writev|write|read|sendmsg|recvmsg)$|Ingress::handle_datagram|Ingress::handle_appended|server::flush|senml::|Disk::write|mqtt::client::Client::start|handoff::splice::\{\{closure|disk::read_records|\[k\] schedule$' |
    head -30
if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
    echo "perf data: $BENCH_WORK/perf.data"
fi
