#!/usr/bin/env bash
# CoAP telemetry accepted per second: v6iot-edge (ACK after fsync) unauthenticated (lab mode)
# and authenticated (OSCORE, the default) vs libcoap's coap-server vs the udpecho yardstick, in
# one run, same machine, same load generator (v6iot-flood).
#
#   bench/coap_ingest.sh [--settings "4x32 8x64 16x128"] [--secs 5] [--warmup 1] [--rounds 2]
#                        [--no-coapload] [--out DIR] [--edge BIN] [--flood BIN]
#                        [--targets "edge …"]
#
# Every target gets the same requests: confirmable POST /t with a SenML-CBOR body
# (Content-Format 112). The edge stores each record in its outbox (fdatasync) and publishes it
# to a mosquitto started here; libcoap's coap-server runs with `-d` so POST /t creates a
# resource once (2.01) and updates it after (2.04); udpecho answers every datagram with 2.04.
# The authenticated edge (`edge-oscore`) gets the same request OSCORE-protected: each flood
# socket is one provisioned device (registry imported from `v6iot-sim provision`) that
# registers first; the requests are protected before the run (`v6iot-flood --credentials`), so
# the generator's cost is the same for both edges; the limits are raised out of the way.
# `edge-intake` is the lab-mode edge with its broker offline (its MQTT URL names a closed port):
# every record is still written and synced before its 2.04, and waits in the outbox. It
# measures the intake alone, without mosquitto taking its share of the same 2 cores (mosquitto
# spends about 7 µs of CPU per QoS 1 message, more than libcoap spends per request).
# SETTINGS are K×W (sockets × outstanding requests per socket; the edge, whose answers wait
# for a sync, needs more outstanding than libcoap to be busy); each round runs every target at
# every setting, targets interleaved so that noise from the machine falls on all of them.
# Afterwards the shared yardstick `coapload` runs against udpecho and libcoap for comparison
# with shared/tools/README.md (it cannot drive the edge: its body is not SenML).
#
# --targets picks among edge edge-intake edge-oscore libcoap udpecho (default: all).
# --edge BIN runs the edges from BIN (another build of v6iot-edge, e.g. a baseline) instead of
# the one built here. --flood BIN runs BIN as the load generator (another build of v6iot-flood,
# e.g. a baseline, to compare what the generator itself costs: the `gen` column).
# Output: a table per run and a summary (best run of each target, ratios) on stdout; the raw
# lines in OUT/coap_ingest.tsv (OUT defaults to target/bench). Loopback only; takes about
# rounds × settings × 5 × (secs + warmup + 1) seconds, plus each edge run's publishing drain
# (a few seconds) and the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

SETTINGS="4x32 8x64 16x128"
SECS=5
WARMUP=1
ROUNDS=2
COAPLOAD=1
EDGE_BIN=""
TARGETS="edge edge-intake edge-oscore libcoap udpecho"
FLOOD_BIN=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --settings) SETTINGS="$2" && shift 2 ;;
    --secs) SECS="$2" && shift 2 ;;
    --warmup) WARMUP="$2" && shift 2 ;;
    --rounds) ROUNDS="$2" && shift 2 ;;
    --no-coapload) COAPLOAD=0 && shift ;;
    --out) OUT="$2" && shift 2 ;;
    --edge) EDGE_BIN="$2" && shift 2 ;;
    --targets) TARGETS="$2" && shift 2 ;;
    --flood) FLOOD_BIN="$2" && shift 2 ;;
    -h | --help)
        sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
done
[[ "$ROUNDS" =~ ^[1-9]$ ]] || die "--rounds: 1 to 9"
awk -v s="$SECS" -v w="$WARMUP" 'BEGIN { exit !(s > 0 && s <= 60 && w >= 0 && w <= 10) }' ||
    die "--secs: (0, 60], --warmup: [0, 10]"

need_pkg coap-server-notls libcoap3-bin
need_pkg mosquitto mosquitto
need_pkg python3 python3
need_pkg ss iproute2
need_pkg /usr/bin/time time
ensure_pkgs

log "building (release)"
cargo build --release --locked -q -p v6iot-edge-router --bin v6iot-edge -p v6iot-simulator --bin v6iot-flood --bin v6iot-sim
YARD="${V6IOT_YARDSTICKS_TARGET:-/tmp/v6iot-yardsticks}"
TOOLS="${V6IOT_SHARED_TOOLS:-$PWD/../shared/tools}"
[[ -d "$TOOLS/coapload" ]] || TOOLS=/work/shared/tools
cargo build --release -q --manifest-path "$TOOLS/coapload/Cargo.toml" --target-dir "$YARD"
cargo build --release -q --manifest-path "$TOOLS/udpecho/Cargo.toml" --target-dir "$YARD"
EDGE="${EDGE_BIN:-$PWD/target/release/v6iot-edge}"
[[ -x "$EDGE" ]] || die "--edge: $EDGE is not an executable"
FLOOD="${FLOOD_BIN:-$PWD/target/release/v6iot-flood}"
[[ -x "$FLOOD" ]] || die "--flood: $FLOOD is not an executable"
SIM="$PWD/target/release/v6iot-sim"
COAPLOAD_BIN="$YARD/release/coapload"
UDPECHO="$YARD/release/udpecho"

bench_init coap
mkdir -p "$OUT"
TSV="$OUT/coap_ingest.tsv"

log "machine"
machine_info | tee "$OUT/coap_ingest.machine"

# --- the three servers -------------------------------------------------------------------------
start_mosquitto mosquitto
EDGE_PORT="$(free_port udp)"
lab_edge_toml "$EDGE_PORT" >"$BENCH_WORK/edge.toml"
RUST_LOG=warn start_bg edge "$EDGE" run --config "$BENCH_WORK/edge.toml"
wait_port udp "$EDGE_PORT"

# the same edge with its broker offline: nothing listens on CLOSED_PORT
CLOSED_PORT="$(free_port tcp)"
INTAKE_PORT="$(free_port udp)"
sed -e "s|^data_dir = .*|data_dir = \"$BENCH_WORK/edge-intake-data\"|" \
    -e "s|^listen = .*|listen = \"[::1]:$INTAKE_PORT\"|" \
    -e "s|^url = .*|url = \"mqtt://[::1]:$CLOSED_PORT\"|" \
    -e "s|^edge_id = .*|edge_id = \"bench-edge-intake\"|" \
    "$BENCH_WORK/edge.toml" >"$BENCH_WORK/edge-intake.toml"
RUST_LOG=error start_bg edge-intake "$EDGE" run --config "$BENCH_WORK/edge-intake.toml"
wait_port udp "$INTAKE_PORT"

# the authenticated edge: 8 provisioned devices (one per flood socket) on ::1
MAX_K=8
for kw in $SETTINGS; do ((${kw%x*} > MAX_K)) && MAX_K="${kw%x*}"; done
CREDS="$BENCH_WORK/creds.csv"
"$SIM" provision --devices "$MAX_K" --prefix ::1/128 --id-prefix bench --out "$CREDS" >/dev/null
"$EDGE" devices keygen "$BENCH_WORK/seal.key" >/dev/null
V6IOT_SEAL_KEY="$(cat "$BENCH_WORK/seal.key")" "$EDGE" devices --data-dir "$BENCH_WORK/edge-oscore-data" \
    import "$CREDS" >/dev/null
OSCORE_PORT="$(free_port udp)"
cat >"$BENCH_WORK/edge-oscore.toml" <<TOML
site = "bench"
edge_id = "bench-edge-oscore"
data_dir = "$BENCH_WORK/edge-oscore-data"
[coap]
listen = "[::1]:$OSCORE_PORT"
[mqtt]
url = "mqtt://[::1]:$MQTT_PORT"
client_id = "v6iot-bench-edge-oscore"
[outbox]
max_bytes = 4294967296
[registry]
seal_key_file = "$BENCH_WORK/seal.key"
[security]
require_oscore = true
$RAISED_LIMITS
TOML
RUST_LOG=warn start_bg edge-oscore "$EDGE" run --config "$BENCH_WORK/edge-oscore.toml"
wait_port udp "$OSCORE_PORT"

LIBCOAP_PORT="$(free_port udp)"
start_bg libcoap coap-server-notls -A ::1 -p "$LIBCOAP_PORT" -d 1000 -v 0
wait_port udp "$LIBCOAP_PORT"

ECHO_PORT="$(free_port udp)"
start_bg udpecho "$UDPECHO" "[::1]:$ECHO_PORT" 1
wait_port udp "$ECHO_PORT"
sleep 1

port_of() {
    case "$1" in
    edge) echo "$EDGE_PORT" ;;
    edge-oscore) echo "$OSCORE_PORT" ;;
    edge-intake) echo "$INTAKE_PORT" ;;
    libcoap) echo "$LIBCOAP_PORT" ;;
    udpecho) echo "$ECHO_PORT" ;;
    esac
}

field() { { grep -o "$1=[^ ]*" <<<"$2" || true; } | head -1 | cut -d= -f2; }

printf 'round\ttool\ttarget\tK\tW\treq_per_s\tp50_us\tp99_us\tp999_us\ttimeouts\tother\tserver_cores\tserver_runq\tbroker_cores\tgen_cores\trcvbuf_drops\tload1\n' >"$TSV"
printf '\n%-5s %-8s %-8s %-6s %10s %9s %9s %9s %8s %7s %7s %7s %7s %7s %6s\n' \
    round tool target KxW "req/s" "p50 ms" "p99 ms" "p99.9 ms" timeouts server runq broker gen drops load >&2

# run_one ROUND TOOL TARGET K W
run_one() {
    local round="$1" tool="$2" target="$3" k="$4" w="$5"
    local port pid d0 d1 c0 c1 r0 r1 m0 m1 t0 t1 line rate p50 p99 p999 to other gen load
    port="$(port_of "$target")"
    pid="$(bg_pid "$target")"
    d0="$(udp_drops "$port")"
    c0="$(cpu_ticks "$pid")"
    r0="$(runq_ns "$pid")"
    m0="$(cpu_ticks "$(bg_pid mosquitto)")"
    t0="$(date +%s.%N)"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    if [[ "$tool" == flood ]]; then
        local auth=()
        [[ "$target" == edge-oscore ]] && auth=(--credentials "$CREDS" --seq-file "$BENCH_WORK/flood-seq")
        line="$(/usr/bin/time -f 'gen_cpu=%U+%S' -o "$BENCH_WORK/time" \
            "$FLOOD" --target "[::1]:$port" --path t --method post --content-format 112 \
            --sockets "$k" --window "$w" --secs "$SECS" --warmup "$WARMUP" "${auth[@]}" 2>"$BENCH_WORK/flood.err")" ||
            { cat "$BENCH_WORK/flood.err" >&2; die "v6iot-flood failed against $target"; }
        grep -q 'warning' <<<"$line" && warn "$target ${k}x$w: $(grep warning <<<"$line")"
        line="$(head -1 <<<"$line")"
    else
        local path=example_data code=3
        [[ "$target" == udpecho ]] && path=t code=2
        line="$(/usr/bin/time -f 'gen_cpu=%U+%S' -o "$BENCH_WORK/time" \
            "$COAPLOAD_BIN" --target "[::1]:$port" --path "$path" --code "$code" \
            --sockets "$k" --window "$w" --secs "$SECS")"
    fi
    t1="$(date +%s.%N)"
    c1="$(cpu_ticks "$pid")"
    r1="$(runq_ns "$pid")"
    m1="$(cpu_ticks "$(bg_pid mosquitto)")"
    d1="$(udp_drops "$port")"
    rate="$(field responses_per_s "$line")"
    p50="$(field p50_us "$line")"
    p99="$(field p99_us "$line")"
    p999="$(field p999_us "$line")"
    to="$(field timeouts "$line")"
    [[ -n "$to" ]] || to="$(field stalls "$line")"
    other="$(field other "$line")"
    [[ -n "$other" ]] || other="$(field bad "$line")"
    gen="$(grep -o 'gen_cpu=.*' "$BENCH_WORK/time" | cut -d= -f2)"
    local el server broker gencores runq
    el="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
    server="$(awk -v a="$c0" -v b="$c1" -v e="$el" 'BEGIN { printf "%.2f", (b - a) / 100 / e }')"
    runq="$(awk -v a="$r0" -v b="$r1" -v e="$el" 'BEGIN { printf "%.2f", (b - a) / 1e9 / e }')"
    broker="$(awk -v a="$m0" -v b="$m1" -v e="$el" 'BEGIN { printf "%.2f", (b - a) / 100 / e }')"
    gencores="$(awk -v g="$gen" -v e="$el" 'BEGIN { split(g, p, "+"); printf "%.2f", (p[1] + p[2]) / e }')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$round" "$tool" "$target" "$k" "$w" "$rate" "$p50" "$p99" "$p999" "$to" "$other" \
        "$server" "$runq" "$broker" "$gencores" "$((d1 - d0))" "$load" >>"$TSV"
    printf '%-5s %-8s %-8s %-6s %10s %9.2f %9.2f %9.2f %8s %7s %7s %7s %7s %7s %6s\n' \
        "$round" "$tool" "$target" "${k}x$w" "$rate" "$(awk -v v="$p50" 'BEGIN{print v/1000}')" \
        "$(awk -v v="$p99" 'BEGIN{print v/1000}')" "$(awk -v v="$p999" 'BEGIN{print v/1000}')" \
        "$to" "$server" "$runq" "$broker" "$gencores" "$((d1 - d0))" "$load" >&2
}

# An edge may accept faster than mosquitto takes its records on these 2 cores: the rest waits
# in its outbox and is published after the run. Before the next run the broker must be idle
# again (its CPU time still for a second; at most 120 s), or that backlog would load the next
# target. The wait is printed: it is how long the edge took to publish what it had accepted.
wait_broker_idle() {
    local m prev t0 still=0
    t0="$(date +%s.%N)"
    prev="$(cpu_ticks "$(bg_pid mosquitto)")"
    for _ in $(seq 480); do
        sleep 0.25
        m="$(cpu_ticks "$(bg_pid mosquitto)")"
        if ((m - prev <= 1)); then
            still=$((still + 1))
            ((still >= 4)) && break
        else
            still=0
        fi
        prev="$m"
    done
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "      (broker idle again after %.1f s)\n", b - a - 1 }' >&2
}

for round in $(seq "$ROUNDS"); do
    for kw in $SETTINGS; do
        k="${kw%x*}"
        w="${kw#*x}"
        for target in $TARGETS; do
            run_one "$round" flood "$target" "$k" "$w"
            [[ "$target" == edge || "$target" == edge-oscore ]] && wait_broker_idle
        done
    done
done
if [[ "$COAPLOAD" == 1 ]]; then
    for kw in 2x16 4x32; do
        for target in libcoap udpecho; do
            run_one 1 coapload "$target" "${kw%x*}" "${kw#*x}"
        done
    done
fi

# the edge must have stored and published what it acknowledged: check its log for trouble
for e in edge edge-intake edge-oscore; do
    if grep -E 'WARN|ERROR' "$BENCH_WORK/$e.log" | grep -v -e 'LAB MODE' -e 'no registry seal key' | head -5 | grep -q .; then
        warn "$e logged warnings:"
        grep -E 'WARN|ERROR' "$BENCH_WORK/$e.log" | grep -v -e 'LAB MODE' -e 'no registry seal key' | head -5 >&2
    fi
done

# --- summary: the best run of each target with the flood generator ------------------------------
echo
echo "best run of each target (v6iot-flood, POST /t SenML-CBOR, ${SECS}s measured after ${WARMUP}s warm-up):"
awk -F'\t' 'NR > 1 && $2 == "flood" {
        key = $1 " " $4 "x" $5
        rate[$3, key] = $6; keys[key] = 1
        if (!($3 in best) || $6 + 0 > best[$3] + 0) {
            best[$3] = $6
            line[$3] = sprintf("%sx%s\t%.0f\t%.2f\t%.2f\t%s\t%s\t%.1f\t%s", $4, $5, $6, $7 / 1000, $8 / 1000, $12, $13, $6 > 0 ? $12 * 1e6 / $6 : 0, $16)
        }
    }
    END {
        printf "| target | K×W | req/s | p50 ms | p99 ms | server cores | server run-queue wait (s/s) | server CPU µs/req | rcvbuf drops |\n|---|---|---|---|---|---|---|---|---|\n"
        n = split("edge edge-intake edge-oscore libcoap udpecho", order, " ")
        for (i = 1; i <= n; i++) {
            t = order[i]
            if (t in line) { split(line[t], f, "\t"); printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8] }
        }
        if (best["libcoap"] > 0) printf "\nedge / libcoap (best vs best) = %.2f (target >= 1.5); edge-oscore / libcoap = %.2f; edge-intake (broker offline) / libcoap = %.2f\n", best["edge"] / best["libcoap"], best["edge-oscore"] / best["libcoap"], best["edge-intake"] / best["libcoap"]
        if (best["edge"] > 0) printf "authenticated / unauthenticated edge (best vs best) = %.2f\n", best["edge-oscore"] / best["edge"]
        if (best["udpecho"] > 0) printf "edge / udpecho = %.2f, libcoap / udpecho = %.2f\n", best["edge"] / best["udpecho"], best["libcoap"] / best["udpecho"]
        printf "edge / libcoap at the same round and setting:"
        for (k in keys) if (rate["libcoap", k] > 0) printf " %s: %.2f (oscore %.2f);", k, rate["edge", k] / rate["libcoap", k], rate["edge-oscore", k] / rate["libcoap", k]
        printf "\n"
    }' "$TSV"
echo
echo "raw results: $TSV"
