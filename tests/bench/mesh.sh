#!/usr/bin/env bash
# tests/bench/mesh.sh - meshward load benchmark (loopback only).
#
# Measures, in one run and against the same upstream app (an nginx instance
# answering `200 ok`):
#
#   direct   load generator -> app                                  (plain HTTP)
#   inbound  mTLS client -> meshward inbound sidecar -> app
#   meshed   HTTP client -> meshward outbound -> mTLS -> meshward inbound -> app
#   nginx    mTLS client -> nginx TLS-terminating reverse proxy -> app
#   meshed_post    as meshed, POSTing a ~1 KiB OIP v2 JSON body (detector off)
#   meshed_detect  as meshed_post with the detector on and an AnomalyPolicy
#                  active (the inbound sidecar scores every body)
#
# For each setup: p50/p99 latency at a constant 1,000 req/s (oha with latency
# correction, i.e. no coordinated omission), max req/s of a closed-loop run with
# 64 connections, proxy CPU microseconds per request (utime+stime from
# /proc/PID/stat), peak RSS (VmHWM) and idle RSS (VmRSS before any load).
#
# Usage: bash tests/bench/mesh.sh [--json FILE] [--duration SECS] [--quick]
#                                 [--meshward PATH] [--only SETUPS] [--keep]
# See docs/benchmarks.md for methodology and how to read the output.
#
# The Markdown report goes to stdout; progress and diagnostics go to stderr.

set -euo pipefail

# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------
RATE=1000            # fixed request rate (req/s) for the latency/CPU run
FIXED_CONNS=16       # connections used by the fixed-rate run
MAX_CONNS=64         # connections used by the max-throughput run
DURATION=10          # seconds of the fixed-rate run
MAX_DURATION=10      # seconds of the max-throughput run
WARMUP=2             # seconds of unrecorded warm-up at RATE before measuring
SETTLE=0.5           # seconds at the start of the fixed-rate run left out of
                     # the percentiles (new connections' handshakes); see docs
QUICK=0
JSON_OUT=""
MESHWARD=""
KEEP=0
SETUPS="direct inbound meshed nginx meshed_post meshed_detect"
OHA_VERSION=${OHA_VERSION:-1.16.0}   # pinned so results are comparable run to run

TRUST_DOMAIN=cluster.local
SERVER_ID="spiffe://$TRUST_DOMAIN/ns/bench/sa/server"
CLIENT_ID="spiffe://$TRUST_DOMAIN/ns/bench/sa/client"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_TOOLS=${BENCH_TOOLS:-$HOME/.cache/meshward-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/meshward-target}
export PATH="$BENCH_TOOLS/bin:$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

PIDS=()              # every process this script started; killed on exit
WORK=""              # temp dir holding configs, certs, logs, raw results
NOTES=()             # warnings printed under the table
APP_PIDS=()          # the app nginx: master + worker
APP_CPU=()           # "setup us/req" of the app during each fixed-rate run
declare -A PID_CPU_US=()  # pid -> cpu us/req of the last fixed-rate run
WHOLE_P99=()         # "setup ms": p99 of the whole fixed-rate run, settle included

usage() {
    cat <<EOF
Usage: bash tests/bench/mesh.sh [options]

  --json FILE       also write results as JSON to FILE
  --duration SECS   seconds of each fixed-rate (and max-throughput) run (default $DURATION)
  --quick           short runs (2 s) for a CI smoke test
  --meshward PATH   meshward binary to use (default: cargo build --release,
                    then \$CARGO_TARGET_DIR/release/meshward)
  --only LIST       comma-separated subset of: direct,inbound,meshed,nginx,meshed_post,meshed_detect
  --keep            keep the temp dir (configs, logs, raw oha output)
  -h, --help        this help

Environment: BENCH_TOOLS (tool cache, default ~/.cache/meshward-bench),
CARGO_TARGET_DIR (default ~/.cache/meshward-target), OHA_VERSION.
EOF
}

log()  { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "error: $*"; exit 1; }
note() { log "note: $*"; NOTES+=("$*"); }

parse_args() {
    local duration_set=0
    while (($#)); do
        case $1 in
            --json)     JSON_OUT=${2:?--json needs a file}; shift 2 ;;
            --duration) DURATION=${2:?--duration needs seconds}; duration_set=1; shift 2 ;;
            --quick)    QUICK=1; shift ;;
            --meshward) MESHWARD=${2:?--meshward needs a path}; shift 2 ;;
            --only)     SETUPS=${2:?--only needs a list}; SETUPS=${SETUPS//,/ }; shift 2 ;;
            --keep)     KEEP=1; shift ;;
            -h|--help)  usage; exit 0 ;;
            *)          usage >&2; die "unknown option: $1" ;;
        esac
    done
    if ! [[ $DURATION =~ ^[1-9][0-9]*$ ]]; then die "--duration must be a positive integer"; fi
    if ((QUICK)); then
        ((duration_set)) || DURATION=2
        WARMUP=1
    fi
    MAX_DURATION=$DURATION
    local s
    for s in $SETUPS; do
        case $s in direct|inbound|meshed|nginx|meshed_post|meshed_detect) ;; *) die "unknown setup: $s" ;; esac
    done
    if [[ -n $JSON_OUT ]]; then
        # Resolve now: the script changes no directory, but be explicit.
        JSON_OUT=$(python3 -c 'import os,sys; print(os.path.abspath(sys.argv[1]))' "$JSON_OUT")
    fi
}

# --------------------------------------------------------------------------
# Process management: every process started is recorded in PIDS and killed
# by PID on exit. nginx workers are children of the recorded master.
# --------------------------------------------------------------------------
children_of() { # PID -> direct child PIDs (nginx workers)
    pgrep -P "$1" 2>/dev/null || true
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_pids() { # PID... : TERM, wait up to 5 s, then KILL (children included)
    local pid all=() deadline
    for pid in "$@"; do
        all+=("$pid")
        mapfile -t -O "${#all[@]}" all < <(children_of "$pid")
    done
    ((${#all[@]})) || return 0
    kill -TERM "${all[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    for pid in "${all[@]}"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
    # Forget them, so that cleanup never signals a PID the kernel has reused.
    local keep=() p stopped=" $* "
    for p in "${PIDS[@]}"; do
        [[ $stopped == *" $p "* ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then stop_pids "${PIDS[@]}"; fi
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP)) || ((rc != 0)); then
            log "work dir kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# start NAME CMD... : run CMD in the background with output to $WORK/NAME.log;
# sets LAST_PID.
start() {
    local name=$1; shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# --------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------
as_root() {
    if ((EUID == 0)); then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root to run: $*"
    fi
}

oha_ok() { # the installed oha has every flag this script uses
    command -v oha >/dev/null || return 1
    local help
    help=$(oha --help 2>&1) || return 1
    local flag
    for flag in --latency-correction --no-tui --output-format --cacert --cert --key \
                --stats-success-breakdown --db-url; do
        grep -q -- "$flag" <<<"$help" || return 1
    done
}

ensure_tools() {
    local pkgs=()
    command -v nginx   >/dev/null || pkgs+=(nginx)
    command -v curl    >/dev/null || pkgs+=(curl)
    command -v python3 >/dev/null || pkgs+=(python3)
    command -v pgrep   >/dev/null || pkgs+=(procps)
    if ((${#pkgs[@]})); then
        log "installing with apt-get: ${pkgs[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
    fi
    if ! oha_ok; then
        command -v cargo >/dev/null || die "cargo is needed to install oha"
        log "installing oha $OHA_VERSION into $BENCH_TOOLS (cargo install, takes a few minutes)"
        mkdir -p "$BENCH_TOOLS"
        CARGO_TARGET_DIR="$BENCH_TOOLS/target" \
            cargo install --locked "oha@$OHA_VERSION" --root "$BENCH_TOOLS" >&2
        oha_ok || die "oha at $(command -v oha) lacks a needed flag"
    fi
    log "oha: $(oha --version 2>&1 | head -n1); nginx: $(nginx -v 2>&1)"
}

ensure_meshward() {
    if [[ -z $MESHWARD ]]; then
        command -v cargo >/dev/null || die "cargo not found; pass --meshward PATH"
        log "building meshward (cargo build --release) into $CARGO_TARGET_DIR"
        (cd "$REPO_ROOT" && cargo build --release --bin meshward >&2)
        MESHWARD="$CARGO_TARGET_DIR/release/meshward"
    fi
    [[ -x $MESHWARD ]] || die "meshward binary not executable: $MESHWARD"
    MESHWARD=$(cd "$(dirname "$MESHWARD")" && pwd)/$(basename "$MESHWARD")
    log "meshward: $MESHWARD"
}

# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
free_ports() { # N -> N distinct free loopback TCP ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# wait_until TIMEOUT_S PID DESC CMD... : retry CMD every 0.1 s until it
# succeeds, PID dies, or TIMEOUT_S passes.
wait_until() {
    local timeout=$1 pid=$2 desc=$3; shift 3
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        alive "$pid" || die "$desc exited during startup (log: $WORK/$desc.log)"
        sleep 0.1
    done
    die "$desc not ready after ${timeout}s (log: $WORK/$desc.log)"
}

# Client-side TLS options for curl and oha: trust the bench CA, present the
# client certificate, and resolve "localhost" to 127.0.0.1.
curl_mtls() { # URL -> body (port taken from URL)
    local url=$1 port=${1##*:}; port=${port%%/*}
    # HTTP/1.1 like oha: with h2 in ALPN the inbound sidecar would speak h2c to the app.
    curl -sS --http1.1 --max-time 3 --resolve "localhost:$port:127.0.0.1" \
        --cacert "$WORK/certs/ca.crt" \
        --cert "$WORK/certs/client.crt" --key "$WORK/certs/client.key" "$url"
}

expect_ok() { # DESC BODY : the app answers "ok"
    [[ $2 == ok ]] || die "$1: expected body 'ok', got '$2'"
}

# Process accounting from /proc. Fields after "(comm) ": index 11 = utime,
# 12 = stime (fields 14 and 15 of proc(5)), in clock ticks.
cpu_ticks() { # PID... -> summed utime+stime
    local total=0 pid stat
    local -a f
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

mem_kb() { # FIELD PID... -> sum of FIELD (VmRSS/VmHWM) in kB
    local field=$1 total=0 pid v; shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status")
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

proc_set() { # PID... -> the PIDs plus their children (nginx master + workers)
    local pid
    for pid in "$@"; do
        echo "$pid"
        children_of "$pid"
    done
}

# busy_pct -> percent of all CPUs busy over one second (from /proc/stat).
busy_pct() {
    python3 - <<'EOF'
import time
def snap():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3] + f[4]          # total, idle + iowait
t0, i0 = snap(); time.sleep(1); t1, i1 = snap()
print(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0))))
EOF
}

# The machine must be quiet: the load generator, the proxies and the app share
# its cores, and anything else running skews every number.
check_quiet() { # WHEN
    local busy
    busy=$(busy_pct)
    if ((busy > 15)); then
        note "machine busy $1: ${busy}% of CPU in use by other processes; results are unreliable"
    fi
}

# --------------------------------------------------------------------------
# Certificates (issued by meshward's own CA tooling)
# --------------------------------------------------------------------------
make_certs() {
    local d="$WORK/certs"
    mkdir -p "$d"
    {
        "$MESHWARD" certs ca --out "$d" --trust-domain "$TRUST_DOMAIN"
        "$MESHWARD" certs issue --ca "$d" --spiffe-id "$SERVER_ID" --out "$d" \
            --name server --dns localhost
        "$MESHWARD" certs issue --ca "$d" --spiffe-id "$CLIENT_ID" --out "$d" \
            --name client
    } >"$WORK/certs.log" 2>&1 || { cat "$WORK/certs.log" >&2; die "meshward certs failed"; }
    local f
    for f in ca.crt server.crt server.key client.crt client.key; do
        [[ -s $d/$f ]] || die "meshward certs did not write $d/$f"
    done
}

# --------------------------------------------------------------------------
# nginx: the app, and the TLS-terminating reverse proxy
# --------------------------------------------------------------------------
nginx_common() { # DIR WORKERS -> main-context + start of http block
    local dir=$1 workers=$2
    mkdir -p "$dir/tmp"
    if ((EUID == 0)); then echo "user root;"; fi
    cat <<EOF
worker_processes $workers;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
EOF
}

start_nginx() { # NAME CONF -> LAST_PID (master)
    local name=$1 conf=$2 dir
    dir=$(dirname "$conf")
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$conf" >&2 \
        || die "nginx config $conf invalid (see $dir/error.log)"
    start "$name" nginx -p "$dir" -e "$dir/error.log" -c "$conf" -g 'daemon off;'
}

# The app: one nginx worker returning a fixed 3-byte body with keep-alive.
start_app() {
    local dir="$WORK/app"
    mkdir -p "$dir"
    {
        nginx_common "$dir" 1
        cat <<EOF
    server {
        listen 127.0.0.1:$APP_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
    } >"$dir/nginx.conf"
    start_nginx app "$dir/nginx.conf"
    APP_PID=$LAST_PID
    wait_until 10 "$APP_PID" app curl -fsS --max-time 1 "http://127.0.0.1:$APP_PORT/"
    mapfile -t APP_PIDS < <(proc_set "$APP_PID")
    expect_ok app "$(curl -sS --max-time 3 "http://127.0.0.1:$APP_PORT/")"
    log "app (nginx) ready on 127.0.0.1:$APP_PORT"
}

# The comparison proxy: nginx terminating mTLS (client cert verified against
# the same CA) and proxying to the app over a keep-alive upstream pool.
start_nginx_proxy() {
    local port=$1 dir="$WORK/nginx-proxy" c="$WORK/certs"
    mkdir -p "$dir"
    {
        nginx_common "$dir" 2
        cat <<EOF
    upstream app {
        server 127.0.0.1:$APP_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$port ssl backlog=4096;
        ssl_protocols TLSv1.3;
        ssl_certificate $c/server.crt;
        ssl_certificate_key $c/server.key;
        ssl_client_certificate $c/ca.crt;
        ssl_verify_client on;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    start_nginx nginx-proxy "$dir/nginx.conf"
    local pid=$LAST_PID
    wait_until 10 "$pid" nginx-proxy curl_mtls "https://localhost:$port/"
    LAST_PID=$pid
}

# --------------------------------------------------------------------------
# meshward sidecars
# --------------------------------------------------------------------------
identity_yaml() { # NAME (server|client)
    cat <<EOF
identity:
  cert: $WORK/certs/$1.crt
  key: $WORK/certs/$1.key
  trust_bundle: $WORK/certs/ca.crt
EOF
}

start_meshward() { # NAME ADMIN_PORT CONFIG_BODY -> LAST_PID
    local name=$1 admin=$2 body=$3 conf="$WORK/$1.yaml"
    {
        echo "$body"
        cat <<EOF
admin:
  listen: 127.0.0.1:$admin
log:
  level: warn
EOF
    } >"$conf"
    start "$name" "$MESHWARD" run --config "$conf"
    local pid=$LAST_PID
    wait_until 15 "$pid" "$name" curl -fsS --max-time 1 "http://127.0.0.1:$admin/ready"
    LAST_PID=$pid
}

start_inbound_sidecar() { # NAME LISTEN_PORT ADMIN_PORT [EXTRA_YAML] -> LAST_PID
    # The detector is off unless EXTRA_YAML turns it on, so that the plain
    # setups measure forwarding alone (meshed_detect measures the detector).
    start_meshward "$1" "$3" "$(identity_yaml server)
inbound:
  listen: 127.0.0.1:$2
  app: 127.0.0.1:$APP_PORT
  mode: strict
${4:-detector:
  enabled: false}"
}

# A ~1 KiB Open Inference Protocol v2 JSON request (16 FP32 features x 8 rows)
# and the anomaly policy of meshed_detect (dry-run, see below).
write_inference_inputs() {
    python3 - "$WORK/infer.json" <<'EOF'
import json, random, sys
random.seed(7)
rows = [[round(random.gauss(0.0, 1.0), 4) for _ in range(16)] for _ in range(8)]
body = {"id": "bench", "inputs": [{"name": "features", "shape": [8, 16], "datatype": "FP32",
        "data": [v for r in rows for v in r]}]}
open(sys.argv[1], "w").write(json.dumps(body))
EOF
    mkdir -p "$WORK/policies"
    cat >"$WORK/policies/anomaly.yaml" <<EOF
apiVersion: meshward.dev/v1
kind: AnomalyPolicy
metadata: {name: bench-guard}
spec:
  # Dry-run: every request is scored and decided (counted, recorded, alerted
  # if flagged) but none is refused, so the run measures the detector's cost
  # with the same responses as meshed_post. One client repeating one request
  # at 1000 req/s is itself unusual, and refusing it would change what is measured.
  dryRun: true
  rules:
  - suspicious: audit
    anomalous: block
    clientSignal: audit
EOF
}
POST_ARGS=""

start_outbound_sidecar() { # NAME LISTEN_PORT TARGET_PORT ADMIN_PORT -> LAST_PID
    start_meshward "$1" "$4" "$(identity_yaml client)
outbound:
  listeners:
    - name: app
      listen: 127.0.0.1:$2
      target: 127.0.0.1:$3
      server_identity: $SERVER_ID
      protocol: http"
}

# --------------------------------------------------------------------------
# Load generation and measurement
# --------------------------------------------------------------------------
# run_oha OUT_JSON SECONDS OHA_ARGS... : bounded oha run writing JSON output.
# Runs in the background and waits, so that a signal to the script is handled
# at once (cleanup kills `timeout`, which passes the signal on to oha).
run_oha() {
    local out=$1 secs=$2 pid rc=0; shift 2
    timeout --kill-after=5 $((secs + 30)) \
        oha --no-tui --output-format json --stats-success-breakdown \
            -z "${secs}s" -o "$out" "$@" >"$out.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    stop_pids "$pid"
    if ((rc != 0)); then
        cat "$out.log" >&2 || true
        die "oha failed (exit $rc): oha $*"
    fi
}

# oha_stats FILE -> "ok_count p50_ms p99_ms rps_ok errors non200" where rps_ok
# counts only 200 responses over the run's wall time and errors excludes the
# requests oha aborts at the deadline.
oha_stats() {
    python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution") or {}
ok = int(codes.get("200", 0))
non200 = sum(int(v) for k, v in codes.items() if k != "200")
# oha cancels the requests still in flight at the deadline: not a failure.
errors = sum(int(v) for k, v in (r.get("errorDistribution") or {}).items()
             if "aborted due to deadline" not in k)
pct = r.get("latencyPercentilesSuccessful") or r.get("latencyPercentiles") or {}
def ms(key):
    v = pct.get(key)
    return float("nan") if v is None else v * 1000.0
total = r["summary"]["total"] or float("nan")
print(ok, f"{ms('p50'):.4f}", f"{ms('p99'):.4f}", f"{ok / total:.1f}", errors, non200)
EOF
}

# measure SETUP URL "OHA_TLS_ARGS" IDLE_RSS_KB PID... : run the load and write
# $WORK/results/SETUP.json. PIDs are the setup's proxy processes (none for
# direct); idle RSS was read by the caller right after startup.
measure() {
    local setup=$1 url=$2 idle_kb=$4
    local -a tls pids
    read -r -a tls <<<"$3"
    shift 4
    pids=("$@")
    local raw="$WORK/raw/$setup"
    mkdir -p "$raw"

    log "$setup: warm-up ${WARMUP}s at $RATE req/s"
    run_oha "$raw/warmup.json" "$WARMUP" -q "$RATE" -c "$FIXED_CONNS" "${tls[@]}" "$url"

    log "$setup: fixed rate $RATE req/s for ${DURATION}s (latency-corrected)"
    local t0=0 t1=0 a0 a1 pid
    local -A p0=() p1=()
    for pid in "${pids[@]}"; do p0[$pid]=$(cpu_ticks "$pid"); done
    a0=$(cpu_ticks "${APP_PIDS[@]}")
    run_oha "$raw/fixed.json" "$DURATION" -q "$RATE" --latency-correction \
        -c "$FIXED_CONNS" --db-url "$raw/fixed.db" "${tls[@]}" "$url"
    for pid in "${pids[@]}"; do p1[$pid]=$(cpu_ticks "$pid"); done
    a1=$(cpu_ticks "${APP_PIDS[@]}")
    for pid in "${pids[@]}"; do
        t0=$((t0 + p0[$pid])); t1=$((t1 + p1[$pid]))
    done

    local ok all50 all99 _rps errors non200 p50 p99 n
    read -r ok all50 all99 _rps errors non200 < <(oha_stats "$raw/fixed.json")
    ((ok > 0)) || die "$setup: no successful request in the fixed-rate run (see $raw/fixed.json)"
    read -r n p50 p99 < <(steady_percentiles "$raw/fixed.db")
    ((n > 0)) || die "$setup: no request recorded after the first ${SETTLE}s (see $raw/fixed.db)"
    log "$setup: whole run incl. the first ${SETTLE}s: p50 $all50 ms, p99 $all99 ms"
    WHOLE_P99+=("$setup $all99")
    local expected=$((RATE * DURATION))
    if ((ok * 100 < expected * 95)); then
        note "$setup: only $ok of $expected requests completed with 200 at the fixed rate"
    fi
    if ((non200 > 0)); then note "$setup: $non200 non-200 responses in the fixed-rate run"; fi
    if ((errors > 0)); then
        note "$setup: $errors request errors in the fixed-rate run ($(error_summary "$raw/fixed.json"))"
    fi

    log "$setup: max throughput, $MAX_CONNS connections for ${MAX_DURATION}s"
    run_oha "$raw/max.json" "$MAX_DURATION" -c "$MAX_CONNS" "${tls[@]}" "$url"
    local _ok _p50 _p99 max_rps merrors mnon200
    read -r _ok _p50 _p99 max_rps merrors mnon200 < <(oha_stats "$raw/max.json")
    if ((mnon200 > 0)); then note "$setup: $mnon200 non-200 responses in the max-throughput run"; fi
    if ((merrors > 0)); then
        note "$setup: $merrors request errors in the max-throughput run ($(error_summary "$raw/max.json"))"
    fi

    local peak_kb=0
    if ((${#pids[@]})); then
        local pid
        for pid in "${pids[@]}"; do
            alive "$pid" || die "$setup: proxy process $pid died during the run"
        done
        peak_kb=$(mem_kb VmHWM "${pids[@]}")
    fi

    local cpu_us app_us
    cpu_us=$(per_req_us $((t1 - t0)) "$ok")
    # The app's own cost is the same in every setup; reported as a reference.
    app_us=$(per_req_us $((a1 - a0)) "$ok")
    APP_CPU+=("$setup $app_us")
    PID_CPU_US=()   # per-process share, for callers with several processes
    for pid in "${pids[@]}"; do
        PID_CPU_US[$pid]=$(per_req_us $((p1[$pid] - p0[$pid])) "$ok")
    done
    python3 - "$WORK/results/$setup.json" "$p50" "$p99" "$max_rps" "$cpu_us" \
        "$peak_kb" "$idle_kb" <<'EOF'
import json, sys
out, p50, p99, max_rps, cpu, peak, idle = sys.argv[1:]
json.dump({"p50_ms": float(p50), "p99_ms": float(p99), "max_rps": float(max_rps),
           "cpu_us_per_req": float(cpu), "peak_rss_kb": int(peak),
           "idle_rss_kb": int(idle)}, open(out, "w"))
EOF
    log "$setup: p50 ${p50} ms, p99 ${p99} ms, max ${max_rps} req/s, ${cpu_us} us/req, peak ${peak_kb} kB, idle ${idle_kb} kB"
}

per_req_us() { # TICKS REQUESTS -> microseconds of CPU per request
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }'
}

# steady_percentiles DB -> "count p50_ms p99_ms" of the 200 responses whose
# scheduled start is at least SETTLE seconds into the run. oha stores every
# successful request after the run (--db-url); `duration` is measured from the
# scheduled start (latency correction). Nearest-rank percentiles.
steady_percentiles() {
    python3 - "$1" "$SETTLE" <<'EOF'
import math, sqlite3, sys
db, settle = sys.argv[1], float(sys.argv[2])
rows = sqlite3.connect(db).execute(
    "SELECT duration FROM oha WHERE status = 200"
    " AND COALESCE(start_latency_correction, start) >= ? ORDER BY duration",
    (settle,)).fetchall()
lat = [r[0] * 1000.0 for r in rows]
def pct(p):
    return lat[max(0, math.ceil(p / 100.0 * len(lat)) - 1)] if lat else float("nan")
print(len(lat), f"{pct(50):.4f}", f"{pct(99):.4f}")
EOF
}

error_summary() { # oha JSON -> "msg: n; ..." (first 3)
    python3 - "$1" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1])).get("errorDistribution") or {}
print("; ".join(f"{k}: {v}" for k, v in sorted(e.items(), key=lambda kv: -kv[1])[:3]))
EOF
}

# TLS arguments for oha against a server with the bench server cert
# (SAN DNS:localhost): trust the CA, present the client cert, pin IPv4.
OHA_MTLS=""
set_oha_mtls() {
    local c="$WORK/certs"
    OHA_MTLS="--ipv4 --cacert $c/ca.crt --cert $c/client.crt --key $c/client.key"
}

# --------------------------------------------------------------------------
# The four setups
# --------------------------------------------------------------------------
bench_direct() {
    measure direct "http://127.0.0.1:$APP_PORT/" "" 0
}

bench_inbound() {
    local port admin pid idle
    read -r port admin < <(free_ports 2)
    start_inbound_sidecar inbound "$port" "$admin"
    pid=$LAST_PID
    sleep 1
    idle=$(mem_kb VmRSS "$pid")
    expect_ok inbound "$(curl_mtls "https://localhost:$port/")"
    # Strict mTLS must refuse a client without a certificate.
    if curl -sS --http1.1 --max-time 3 --resolve "localhost:$port:127.0.0.1" \
        --cacert "$WORK/certs/ca.crt" "https://localhost:$port/" >/dev/null 2>&1; then
        note "inbound: strict mode accepted a client without a certificate"
    fi
    measure inbound "https://localhost:$port/" "$OHA_MTLS" "$idle" "$pid"
    stop_pids "$pid"
}

bench_meshed() {
    local in_port in_admin out_port out_admin in_pid out_pid idle in_idle out_idle
    read -r in_port in_admin out_port out_admin < <(free_ports 4)
    start_inbound_sidecar meshed-inbound "$in_port" "$in_admin"
    in_pid=$LAST_PID
    start_outbound_sidecar meshed-outbound "$out_port" "$in_port" "$out_admin"
    out_pid=$LAST_PID
    sleep 1
    in_idle=$(mem_kb VmRSS "$in_pid")
    out_idle=$(mem_kb VmRSS "$out_pid")
    idle=$((in_idle + out_idle))
    note "meshed: idle RSS per sidecar: outbound ${out_idle} kB, inbound ${in_idle} kB"
    expect_ok meshed "$(curl -sS --max-time 3 "http://127.0.0.1:$out_port/")"
    measure meshed "http://127.0.0.1:$out_port/" "" "$idle" "$out_pid" "$in_pid"
    note "meshed: peak RSS per sidecar: outbound $(mem_kb VmHWM "$out_pid") kB, inbound $(mem_kb VmHWM "$in_pid") kB"
    note "meshed: cpu us/req per sidecar: outbound ${PID_CPU_US[$out_pid]}, inbound ${PID_CPU_US[$in_pid]}"
    stop_pids "$out_pid" "$in_pid"
}

# meshed, POSTing the inference body; DETECT=1 turns the detector and the
# anomaly policy on in the inbound sidecar.
bench_meshed_body() { # SETUP DETECT
    local setup=$1 detect=$2 in_port in_admin out_port out_admin in_pid out_pid idle extra=""
    read -r in_port in_admin out_port out_admin < <(free_ports 4)
    if ((detect)); then
        extra="detector:
  enabled: true
policy:
  paths: [$WORK/policies]"
    fi
    start_inbound_sidecar "$setup-inbound" "$in_port" "$in_admin" "$extra"
    in_pid=$LAST_PID
    start_outbound_sidecar "$setup-outbound" "$out_port" "$in_port" "$out_admin"
    out_pid=$LAST_PID
    sleep 1
    idle=$(($(mem_kb VmRSS "$in_pid") + $(mem_kb VmRSS "$out_pid")))
    expect_ok "$setup" "$(curl -sS --max-time 3 -H 'content-type: application/json' \
        --data-binary "@$WORK/infer.json" "http://127.0.0.1:$out_port/v2/models/bench/infer")"
    measure "$setup" "http://127.0.0.1:$out_port/v2/models/bench/infer" "$POST_ARGS" "$idle" "$out_pid" "$in_pid"
    note "$setup: cpu us/req per sidecar: outbound ${PID_CPU_US[$out_pid]}, inbound ${PID_CPU_US[$in_pid]}"
    python3 - "$WORK/results/$setup.json" "${PID_CPU_US[$in_pid]}" <<'EOF'
import json, sys
p = sys.argv[1]
r = json.load(open(p))
r["inbound_cpu_us_per_req"] = float(sys.argv[2])
json.dump(r, open(p, "w"))
EOF
    if ((detect)); then
        local state
        state=$(curl -sS --max-time 3 "http://127.0.0.1:$in_admin/detector" || true)
        note "$setup: detector state after the run: $state"
        curl -sS --max-time 3 "http://127.0.0.1:$in_admin/metrics" | grep -q '^meshward_detector_score_count [1-9]' \
            || note "$setup: the detector scored no request after warm-up (see /detector above)"
    fi
    stop_pids "$out_pid" "$in_pid"
}

bench_meshed_post() {
    bench_meshed_body meshed_post 0
}

bench_meshed_detect() {
    bench_meshed_body meshed_detect 1
}

bench_nginx() {
    local port master idle
    local -a pids
    read -r port < <(free_ports 1)
    start_nginx_proxy "$port"
    master=$LAST_PID
    sleep 1
    mapfile -t pids < <(proc_set "$master")
    ((${#pids[@]} >= 2)) || die "nginx proxy: no worker processes found"
    idle=$(mem_kb VmRSS "${pids[@]}")
    expect_ok nginx "$(curl_mtls "https://localhost:$port/")"
    measure nginx "https://localhost:$port/" "$OHA_MTLS" "$idle" "${pids[@]}"
    local now
    now=$(proc_set "$master" | sort | tr '\n' ' ')
    [[ $now == "$(printf '%s\n' "${pids[@]}" | sort | tr '\n' ' ')" ]] \
        || note "nginx: worker set changed during the run (CPU may be undercounted)"
    stop_pids "$master"
}

# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
# One line describing when, where and what was measured, for pasting results.
run_context() {
    local cpu commit
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_ROOT" status --porcelain 2>/dev/null) ]]; then
        commit+="+dirty"
    fi
    printf '%s; %s, %s CPUs, Linux %s; source tree %s; oha %s; %s' \
        "$(date -u '+%Y-%m-%d %H:%M UTC')" "${cpu:-unknown CPU}" "$(nproc)" \
        "$(uname -r)" "$commit" "$(oha --version 2>&1 | awk '{ print $2; exit }')" \
        "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
}

report() {
    python3 - "$WORK/results" "$JSON_OUT" "$RATE" "$DURATION" "$MAX_CONNS" \
        "$MAX_DURATION" "$FIXED_CONNS" "$SETTLE" "$(run_context)" <<'EOF'
import json, math, os, sys
(rdir, json_out, rate, dur, max_conns, max_dur, fixed_conns, settle,
 context) = sys.argv[1:]
order = ["direct", "inbound", "meshed", "nginx", "meshed_post", "meshed_detect"]
res = {}
for s in order:
    p = os.path.join(rdir, s + ".json")
    if os.path.exists(p):
        res[s] = json.load(open(p))

print(f"### meshward benchmark: {rate} req/s fixed rate for {dur} s on {fixed_conns} "
      f"connections (percentiles after the first {settle} s); max throughput with "
      f"{max_conns} connections for {max_dur} s")
print()
print(f"Run: {context}")
print()
print("| setup | p50 ms | p99 ms | max rps | cpu us/req | peak rss KB | idle rss KB |")
print("|---|---:|---:|---:|---:|---:|---:|")
for s, r in res.items():
    print(f"| {s} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_rps']:.0f} | "
          f"{r['cpu_us_per_req']:.1f} | {r['peak_rss_kb']} | {r['idle_rss_kb']} |")
print()

lines = []
def get(s, k):
    return res[s][k] if s in res else None
def ratio(a, b):
    return a / b if b else math.nan
def verdict(ok):
    return "PASS" if ok else "FAIL"

d50 = get("direct", "p50_ms")
for s in ("inbound", "meshed", "nginx"):
    if d50 is not None and s in res:
        over = res[s]["p50_ms"] - d50
        over99 = res[s]["p99_ms"] - get("direct", "p99_ms")
        extra = ""
        if s == "meshed":
            extra = f" (target <= 0.3 ms: {verdict(over <= 0.3)})"
        lines.append(f"- {s} p50 overhead over direct: {over:+.3f} ms, "
                     f"p99 overhead: {over99:+.3f} ms{extra}")
n_cpu = get("nginx", "cpu_us_per_req")
if n_cpu is not None:
    if "inbound" in res:
        c = res["inbound"]["cpu_us_per_req"]
        lines.append(f"- inbound sidecar cpu/req vs nginx cpu/req: {c:.1f} / {n_cpu:.1f} = "
                     f"{ratio(c, n_cpu):.2f}x (target <= 1.0: {verdict(c <= n_cpu)})")
    if "meshed" in res:
        c = res["meshed"]["cpu_us_per_req"]
        lines.append(f"- meshed (both sidecars) cpu/req vs nginx cpu/req: {c:.1f} / {n_cpu:.1f} = "
                     f"{ratio(c, n_cpu):.2f}x; per sidecar {c / 2:.1f} us/req = "
                     f"{ratio(c / 2, n_cpu):.2f}x")
for s in ("inbound", "meshed", "nginx"):
    if s in res and "direct" in res:
        lines.append(f"- {s} max rps vs direct: {ratio(res[s]['max_rps'], res['direct']['max_rps']):.2f}x"
                     + (f", vs nginx: {ratio(res[s]['max_rps'], res['nginx']['max_rps']):.2f}x"
                        if s != "nginx" and "nginx" in res else ""))
if "meshed_detect" in res:
    dd = res["meshed_detect"]
    if "meshed" in res:
        over = dd["p50_ms"] - res["meshed"]["p50_ms"]
        lines.append(f"- meshed_detect p50 added over meshed: {over:+.3f} ms "
                     f"(target <= 0.05 ms: {verdict(over <= 0.05)}; includes sending the 1 KiB body)")
    if "meshed_post" in res:
        over = dd["p50_ms"] - res["meshed_post"]["p50_ms"]
        cpu = dd["cpu_us_per_req"] - res["meshed_post"]["cpu_us_per_req"]
        lines.append(f"- meshed_detect vs meshed_post (same bodies, detector off): p50 {over:+.3f} ms, "
                     f"cpu {cpu:+.1f} us/req")
    c = dd.get("inbound_cpu_us_per_req")
    if n_cpu is not None and c is not None:
        lines.append(f"- meshed_detect inbound sidecar cpu/req vs nginx cpu/req: {c:.1f} / {n_cpu:.1f} = "
                     f"{ratio(c, n_cpu):.2f}x (target <= 1.0: {verdict(c <= n_cpu)})")
if "inbound" in res:
    i = res["inbound"]["idle_rss_kb"]
    lines.append(f"- idle RSS of one sidecar (inbound): {i} KB = {i / 1024:.1f} MB "
                 f"(target <= 15 MB: {verdict(i <= 15 * 1024)})")
if "meshed" in res:
    lines.append(f"- idle RSS of both meshed sidecars together: {res['meshed']['idle_rss_kb']} KB")
if lines:
    print("Ratios:")
    print()
    print("\n".join(lines))

if json_out:
    with open(json_out, "w") as f:
        json.dump({"setups": res}, f, indent=2)
        f.write("\n")
EOF
    if ((${#APP_CPU[@]})); then
        NOTES+=("app (nginx, 1 worker) cpu us/req during each fixed-rate run, for reference: $(
            printf '%s, ' "${APP_CPU[@]}" | sed 's/, $//')")
    fi
    if ((${#WHOLE_P99[@]})); then
        NOTES+=("p99 ms of the whole fixed-rate run, including the first ${SETTLE} s (connection set-up): $(
            printf '%s, ' "${WHOLE_P99[@]}" | sed 's/, $//')")
    fi
    if ((${#NOTES[@]})); then
        printf '\nNotes:\n\n'
        printf -- '- %s\n' "${NOTES[@]}"
    fi
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
main() {
    parse_args "$@"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ensure_tools
    CLK_TCK=$(getconf CLK_TCK)
    if [[ $SETUPS != direct ]]; then
        ensure_meshward
    fi

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshward-bench.XXXXXX")
    chmod 755 "$WORK"
    mkdir -p "$WORK/results" "$WORK/raw"
    log "work dir: $WORK; setups: $SETUPS; nproc: $(nproc)"

    if [[ -n $MESHWARD ]]; then
        make_certs
        set_oha_mtls
    fi
    check_quiet "before the run"
    read -r APP_PORT < <(free_ports 1)
    start_app
    write_inference_inputs
    POST_ARGS="-m POST -T application/json -D $WORK/infer.json"

    local s
    for s in $SETUPS; do
        log "=== $s ==="
        "bench_$s"
    done
    stop_pids "$APP_PID"
    check_quiet "after the run"
    report
}

main "$@"
