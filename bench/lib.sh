# shellcheck shell=bash
# Helpers for the benchmark scripts in bench/. Source it after `set -euo pipefail`.
#
#   bench_arg ARGS...        the options every script takes: --out DIR, --bin-dir DIR (sets OUT,
#                            BIN_DIR and BENCH_SHIFT, the words taken), --help (the script's
#                            header comment); anything else: dies naming it
#   bench_init NAME          work dir in $BENCH_WORK, EXIT trap that stops every process started
#   free_port udp|tcp        a port on ::1 that is free right now
#   start_bg NAME CMD...     run CMD in the background (output in $BENCH_WORK/NAME.log), remember its PID
#   stop_bg NAME             stop that process (TERM, then KILL after 5 s)
#   wait_port udp|tcp PORT   until something listens on [::1]:PORT (10 s at most)
#   start_mosquitto NAME     a mosquitto on a free port of ::1; sets MQTT_PORT_<NAME>
#   cpu_ticks PID            utime+stime of a process (all its threads, ended ones too), in clock ticks
#   thread_ticks PID         "comm ticks" for each thread of a process
#   runq_ns PID              time the process's threads spent runnable but waiting for a CPU (ns)
#   udp_drops PORT           receive-buffer drops of the UDP socket bound to PORT (ss skmem d)
#   machine_info             nproc, CPU model, kernel, load, file system of the work dir
#   release_bins BIN...      the release binaries (`v6iot-edge`, `v6iot-sim`) from $BIN_DIR, or built
#                            now (then BIN_DIR=target/release); sets EDGE and SIM
#   own_netns ARGS...        run this script again, once, in a network namespace of its own
#                            (`unshare -n`, root) with ARGS and --bin-dir $BIN_DIR; there: lo up.
#                            With BENCH_RMEM_MAX set, net.core.rmem_max (host-wide: the kernel does
#                            not namespace it) is raised to it for the run and restored after
#   fleet_netns NAME FILE    what the fleet benches do first: check their packages, release_bins
#                            v6iot-edge v6iot-sim, own_netns "${ARGS[@]}" with POOL_PREFIX routed
#                            to loopback, bench_init NAME, mkdir OUT, open files raised,
#                            machine_info into FILE (and stdout)
#   say TEXT                 print TEXT and add it to $SUMMARY
#   import_fleet N PREFIX ID DIR   `v6iot-sim provision` N OSCORE devices (ids ID000000…) into
#                            DIR/creds.csv, a seal key DIR/seal.key, imported into DIR/edge-data
#   edge_toml DIR PORT SITE [LINE...]  an OSCORE edge's configuration for import_fleet's DIR on
#                            [::1]:PORT (LINEs added to [coap]), to start_mosquitto's broker
#   lab_edge_toml PORT       the lab edge coap_ingest.sh measures (and edge_profile.sh profiles):
#                            plain CoAP from unregistered devices accepted, on [::1]:PORT, to
#                            start_mosquitto's broker, rate limits raised, data in $BENCH_WORK
#   answers PORT SECS        until the edge on [::1]:PORT answers CoAP, bound or not yet (false
#                            after SECS)
#   kib PID FIELD            a /proc/PID/status field in KiB (VmRSS, VmHWM)
#   all_registered_at REPORT N   seconds into the run when N devices had registered (timeline)
#   secs DURATION            `90s`, `2m`, `500ms` in whole seconds
#
# Every process a script starts goes through start_bg, so the EXIT trap stops exactly those
# PIDs and nothing else on the machine.

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
source "$BENCH_ROOT/scripts/lib.sh"

# Defaults every script shares (bench_arg sets the first two from --out and --bin-dir).
OUT="$BENCH_ROOT/target/bench"
BIN_DIR=""
# The fleet benches' devices: each at its own address of this prefix, routed to loopback in the
# script's own network namespace.
POOL_PREFIX="2001:db8:100::/64"
# The edge's rate limits raised out of the way: every simulated device reaches the edge from one
# /64 on one host here, which the defaults (unchanged) rightly treat as one source network.
# shellcheck disable=SC2034 # used in the scripts' edge configurations
RAISED_LIMITS="rate_per_source = 100000000
burst_per_source = 100000000
rate_per_device = 100000000
burst_per_device = 100000000"

declare -A BENCH_PIDS=()
BENCH_WORK=""

# reap PID: wait up to 5 s for a process told to stop, then KILL it.
reap() {
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

bench_cleanup() {
    local name pid
    for name in "${!BENCH_PIDS[@]}"; do
        pid="${BENCH_PIDS[$name]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for name in "${!BENCH_PIDS[@]}"; do
        reap "${BENCH_PIDS[$name]}"
    done
    BENCH_PIDS=()
    if [[ -n "$BENCH_WORK" && -d "$BENCH_WORK" && "${BENCH_KEEP:-0}" != 1 ]]; then
        rm -rf "$BENCH_WORK"
    fi
}

# shellcheck disable=SC2034 # OUT, BIN_DIR and BENCH_SHIFT are the calling script's
bench_arg() {
    case "$1" in
    --out) OUT="$2" && BENCH_SHIFT=2 ;;
    --bin-dir) BIN_DIR="$2" && BENCH_SHIFT=2 ;;
    -h | --help)
        sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
}

bench_init() {
    BENCH_WORK="$(mktemp -d "/tmp/v6iot-bench-$1.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

free_port() {
    python3 - "$1" <<'PY'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET6, kind)
s.bind(("::1", 0))
print(s.getsockname()[1])
PY
}

start_bg() {
    local name="$1"
    shift
    "$@" >"$BENCH_WORK/$name.log" 2>&1 &
    BENCH_PIDS[$name]=$!
}

stop_bg() {
    local pid="${BENCH_PIDS[$1]:-}"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    reap "$pid"
    unset "BENCH_PIDS[$1]"
}

bg_pid() { echo "${BENCH_PIDS[$1]}"; }

wait_port() {
    local flag=-lun
    [[ "$1" == tcp ]] && flag=-ltn
    for _ in $(seq 100); do
        if ss -H "$flag" "sport = :$2" | grep -q .; then
            return 0
        fi
        sleep 0.1
    done
    die "nothing listens on port $2 ($1) after 10 s"
}

# start_mosquitto NAME: a broker on a free port of ::1, no persistence; sets MQTT_PORT.
start_mosquitto() {
    MQTT_PORT="$(free_port tcp)"
    cat >"$BENCH_WORK/$1.conf" <<CONF
listener $MQTT_PORT ::1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_inflight_messages 0
sys_interval 1
log_dest stderr
log_type error
log_type warning
CONF
    start_bg "$1" mosquitto -c "$BENCH_WORK/$1.conf"
    wait_port tcp "$MQTT_PORT"
}

# The process's own count (/proc/PID/stat) includes threads that have ended meanwhile; a sum
# over /proc/PID/task/* would lose them (and can go backwards).
cpu_ticks() {
    # after the comm: the state is field 1 of the rest, utime and stime fields 12 and 13
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

thread_ticks() {
    local t
    for t in /proc/"$1"/task/*/stat; do
        sed -E 's/^[0-9]+ \((.*)\) /\1\t/' "$t" | awk -F'\t' '{split($2, f, " "); print $1 "\t" f[12] + f[13]}'
    done 2>/dev/null
}

runq_ns() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $2 } END { printf "%.0f", s }'
}

udp_drops() {
    ss -H -uamn "sport = :$1" | grep -o 'skmem:([^)]*)' | grep -o ',d[0-9]*' | tr -d ',d' | head -1
}

machine_info() {
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
    echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "work dir file system: $(df -T "$BENCH_WORK" | awk 'NR == 2 {print $2 " on " $1}')"
}

release_bins() {
    local b
    if [[ -z "$BIN_DIR" ]]; then
        local build=()
        for b in "$@"; do
            case "$b" in
                v6iot-edge) build+=(-p v6iot-edge-router --bin v6iot-edge) ;;
                v6iot-sim) build+=(-p v6iot-simulator --bin v6iot-sim) ;;
                *) die "release_bins: unknown binary $b" ;;
            esac
        done
        log "building (release): $*"
        cargo build --release --locked -q "${build[@]}"
        BIN_DIR="$PWD/target/release"
    fi
    EDGE="$BIN_DIR/v6iot-edge"
    SIM="$BIN_DIR/v6iot-sim"
    for b in "$@"; do
        [[ -x "$BIN_DIR/$b" ]] || die "missing binary: $BIN_DIR/$b"
    done
}

own_netns() {
    if [[ -z "${V6IOT_BENCH_NETNS:-}" ]]; then
        if [[ -z "${BENCH_RMEM_MAX:-}" ]]; then
            exec unshare -n -- env V6IOT_BENCH_NETNS=1 bash "$0" "$@" --bin-dir "$BIN_DIR"
        fi
        # net.core.rmem_max is the host's (read-only inside a network namespace): raise it for
        # the run, put it back when the run ends, however it ends.
        local old
        old="$(cat /proc/sys/net/core/rmem_max)"
        # shellcheck disable=SC2064 # the value now, not at exit
        trap "echo $old >/proc/sys/net/core/rmem_max" EXIT
        trap 'exit 130' INT TERM
        echo "$BENCH_RMEM_MAX" >/proc/sys/net/core/rmem_max
        log "net.core.rmem_max $old -> $BENCH_RMEM_MAX (host-wide) for this run"
        local rc=0
        unshare -n -- env V6IOT_BENCH_NETNS=1 bash "$0" "$@" --bin-dir "$BIN_DIR" || rc=$?
        exit "$rc"
    fi
    ip link set lo up
}

fleet_netns() {
    [[ "$(id -u)" -eq 0 ]] || die "needs root for a network namespace of its own"
    need_pkg mosquitto mosquitto
    need_pkg jq jq
    need_pkg unshare util-linux
    need_pkg ip iproute2
    need_pkg python3 python3
    need_pkg /usr/bin/time time
    ensure_pkgs
    release_bins v6iot-edge v6iot-sim
    own_netns "${ARGS[@]}"
    ip -6 route add local "$POOL_PREFIX" dev lo
    bench_init "$1"
    mkdir -p "$OUT"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    machine_info | tee "$2"
}

say() { echo "$*" | tee -a "$SUMMARY"; }

# import_fleet N PREFIX ID DIR: provisions N devices (DIR/creds.csv), makes a seal key and imports
# them into a fresh edge registry (DIR/edge-data): about 4 min per million. With
# V6IOT_BENCH_FLEET_CACHE=CACHE set, a fleet provisioned before with the same N, PREFIX, ID and
# binaries is copied from CACHE (made there the first time) instead: the copy is a registry as
# it was right after the import, never one a run has written to.
import_fleet() {
    local n="$1" prefix="$2" id="$3" dir="$4"
    mkdir -p "$dir"
    local cache="" key
    if [[ -n "${V6IOT_BENCH_FLEET_CACHE:-}" ]]; then
        key="$(printf '%s %s %s %s %s' "$n" "$prefix" "$id" "$(sha256sum "$SIM" "$EDGE" | cut -c1-16 | tr '\n' ' ')" | sha256sum | cut -c1-16)"
        cache="$V6IOT_BENCH_FLEET_CACHE/fleet-$key"
        if [[ -f "$cache/done" ]]; then
            log "fleet of $n from the cache $cache"
            cp -a "$cache/creds.csv" "$cache/seal.key" "$cache/edge-data" "$dir/"
            return
        fi
    fi
    "$SIM" provision --devices "$n" --prefix "$prefix" --id-prefix "$id" --out "$dir/creds.csv" >/dev/null
    "$EDGE" devices keygen "$dir/seal.key" >/dev/null
    V6IOT_SEAL_KEY="$(cat "$dir/seal.key")" "$EDGE" devices --data-dir "$dir/edge-data" \
        import "$dir/creds.csv" >/dev/null
    if [[ -n "$cache" ]]; then
        rm -rf "$cache" && mkdir -p "$cache"
        cp -a "$dir/creds.csv" "$dir/seal.key" "$dir/edge-data" "$cache/" && touch "$cache/done"
    fi
}

edge_toml() {
    local dir="$1" port="$2" site="$3"
    shift 3
    cat <<TOML
site = "$site"
edge_id = "bench-edge-$site"
data_dir = "$dir/edge-data"
[coap]
listen = "[::1]:$port"
$(printf '%s\n' "$@")
[mqtt]
url = "mqtt://[::1]:$MQTT_PORT"
[outbox]
max_bytes = 4294967296
[registry]
seal_key_file = "$dir/seal.key"
${EDGE_REGISTRY_LINES:-}
[security]
require_oscore = true
$RAISED_LIMITS
TOML
}

lab_edge_toml() {
    cat <<TOML
site = "bench"
edge_id = "bench-edge"
data_dir = "$BENCH_WORK/edge-data"
[coap]
listen = "[::1]:$1"
lab_accept_unregistered = true
[mqtt]
url = "mqtt://[::1]:$MQTT_PORT"
[outbox]
max_bytes = 4294967296
[security]
$RAISED_LIMITS
TOML
}

answers() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(0.5)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    s.sendto(bytes([0x40, 0, 0x12, 0x34]), ("::1", int(sys.argv[1])))  # ping
    s.sendto(bytes([0x41, 1, 0x12, 0x35, 0x7A, 0xB4]) + b"core", ("::1", int(sys.argv[1])))  # GET
    try:
        s.recv(64)
        sys.exit(0)
    except socket.timeout:
        pass
    except OSError:  # nothing bound yet (an ICMP error came back)
        time.sleep(0.5)
sys.exit(1)
PY
}

kib() { awk '/^'"$2"':/ { print $2 }' "/proc/$1/status"; }

# The first timeline bucket where the registrations added up reach N: its end, in seconds.
all_registered_at() {
    jq -r --argjson n "$2" '
        .timeline.bucket_s as $w | [foreach .timeline.buckets[] as $b (0; . + $b.registered; [., $b.t_s + $w])]
        | map(select(.[0] >= $n)) | if length > 0 then .[0][1] else "never" end' "$1"
}

secs() {
    python3 -c "import re,sys; v=sys.argv[1]; m=re.fullmatch(r'([0-9.]+)(ms|s|m|min|h)?',v); \
f={'ms':0.001,'s':1,None:1,'m':60,'min':60,'h':3600}[m.group(2)]; print(round(float(m.group(1))*f))" "$1"
}
