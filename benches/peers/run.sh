#!/usr/bin/env bash
# Side-by-side line echo benchmark: gyre's line_echo against the same server
# on tokio (current-thread), a raw mio loop (the floor), Twisted, Node.js and
# Python asyncio, driven by examples/loadgen.rs.
#
#   benches/peers/run.sh                  # everything, 5 rounds (~6-8 minutes)
#   ROUNDS=1 SERVERS="gyre mio" benches/peers/run.sh
#
# Each server runs pinned to core $SERVER_CORE (default 0), loadgen to core
# $CLIENT_CORE (default 1). Every round runs, for each server in turn (the
# order rotates from round to round): a fresh server for `idle` (10,000 idle
# connections, RSS growth per connection), then a fresh server for
# `pingpong`, `pipeline` and `accept`, then its RSS. The tables give medians
# over rounds and each value as a ratio to gyre's. Everything is on
# loopback; every server this script starts is stopped when it exits.
#
# Needs: cargo, python3 (Twisted is installed into a venv under the cargo
# target dir), node (no npm packages), taskset. A peer whose runtime is
# missing is skipped with a warning.
#
# Knobs (environment): ROUNDS=5 PIPE_SECS=3 PING_COUNT=20000 ACCEPT_SECS=3
# IDLE_CONNS=10000 CONNECTIONS=8 DEPTH=16 SIZE=32 ACCEPT_THREADS=1
# SERVERS="gyre tokio mio twisted node asyncio" SERVER_CORE=0 CLIENT_CORE=1
# CARGO_TARGET_DIR, OUT (results directory).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/examples
ROUNDS=${ROUNDS:-5}
PIPE_SECS=${PIPE_SECS:-3}
PING_COUNT=${PING_COUNT:-20000}
ACCEPT_SECS=${ACCEPT_SECS:-3}
ACCEPT_THREADS=${ACCEPT_THREADS:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
CONNECTIONS=${CONNECTIONS:-8}
DEPTH=${DEPTH:-16}
SIZE=${SIZE:-32}
SERVERS=${SERVERS:-"gyre tokio mio twisted node asyncio"}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
VENV=$TARGET/peers-venv
OUT=${OUT:-$TARGET/peers-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: >"$RESULTS"

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: stop every server this script started -------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- install and build --------------------------------------------------------
PY=python3
if [[ " $SERVERS " == *" twisted "* || " $SERVERS " == *" asyncio "* ]]; then
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import twisted' 2>/dev/null; then
        log "installing Twisted into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check twisted ||
            log "warning: pip install twisted failed; Twisted will be skipped"
    fi
    PY=$VENV/bin/python
fi
available=()
for s in $SERVERS; do
    case $s in
    twisted) "$PY" -c 'import twisted' 2>/dev/null && available+=("$s") || log "warning: no Twisted; skipping it" ;;
    node) command -v node >/dev/null && available+=("$s") || log "warning: no node; skipping it" ;;
    gyre | tokio | mio | asyncio) available+=("$s") ;;
    *) log "unknown server $s"; exit 2 ;;
    esac
done
if [[ " ${available[*]} " != *" gyre "* ]]; then
    log "gyre must be among SERVERS (ratios are to gyre)"
    exit 2
fi

log "building the servers and loadgen (release, target dir $TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet \
    --example line_echo --example tokio_line_echo --example mio_line_echo --example loadgen)

# Servers and loadgen need a descriptor each per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "RLIMIT_NOFILE $(ulimit -n); results in $OUT"

# --- servers ------------------------------------------------------------------
SERVER_PID=
SERVER_PORT=

server_cmd() {
    case $1 in
    gyre) echo "$BIN/line_echo 127.0.0.1:0" ;;
    tokio) echo "$BIN/tokio_line_echo 127.0.0.1:0" ;;
    mio) echo "$BIN/mio_line_echo 127.0.0.1:0" ;;
    twisted) echo "$PY $HERE/twisted_line_echo.py 0" ;;
    node) echo "node $HERE/node_line_echo.js 0" ;;
    asyncio) echo "$PY $HERE/asyncio_line_echo.py 0" ;;
    esac
}

# start_server NAME TAG: starts it on $SERVER_CORE, reads its port from the
# "listening on ADDRESS" line it prints.
start_server() {
    local name=$1 tag=$2 out=$OUT/$1.$2.log i
    # shellcheck disable=SC2046 # the command is split into words on purpose
    RUST_LOG=warn taskset -c "$SERVER_CORE" $(server_cmd "$name") >"$out" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_PORT=
    for i in $(seq 200); do
        SERVER_PORT=$(grep -m1 -o 'listening on [0-9.]*:[0-9]*' "$out" 2>/dev/null | sed 's/.*://' || true)
        [[ -n $SERVER_PORT ]] && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "$name exited at start:"
            cat "$out" >&2
            return 1
        fi
        sleep 0.05
    done
    log "$name printed no port within 10 s"
    return 1
}

stop_server() {
    local i
    kill "$SERVER_PID" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

# loadgen ROUND NAME MODE ARGS...: runs loadgen on $CLIENT_CORE against the
# current server and appends its RESULT line to $RESULTS.
loadgen() {
    local round=$1 name=$2 mode=$3 line
    shift 3
    line=$(taskset -c "$CLIENT_CORE" "$BIN/loadgen" "$mode" --addr "127.0.0.1:$SERVER_PORT" \
        --server-pid "$SERVER_PID" --label "$name" "$@" 2>>"$OUT/loadgen.err" |
        tee -a "$OUT/loadgen.log" | grep '^RESULT' | tail -1 || true)
    [[ -n $line ]] || line="RESULT mode=$mode errors=1"
    echo "round=$round server=$name $line" >>"$RESULTS"
    log "round $round $name $mode: ${line#RESULT }"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo na; }

# --- rounds -------------------------------------------------------------------
n=${#available[@]}
for round in $(seq "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
        name=${available[$(((k + round - 1) % n))]}
        if start_server "$name" "r$round-idle"; then
            loadgen "$round" "$name" idle --connections "$IDLE_CONNS" --wait 1
            stop_server
        fi
        if start_server "$name" "r$round"; then
            loadgen "$round" "$name" pingpong --count "$PING_COUNT" --size "$SIZE"
            loadgen "$round" "$name" pipeline --connections "$CONNECTIONS" --depth "$DEPTH" \
                --seconds "$PIPE_SECS" --size "$SIZE"
            loadgen "$round" "$name" accept --seconds "$ACCEPT_SECS" \
                --connections "$ACCEPT_THREADS" --size "$SIZE"
            echo "round=$round server=$name RESULT mode=rss server_rss_kib=$(rss_kib "$SERVER_PID")" >>"$RESULTS"
            stop_server
        fi
    done
done

# --- tables -------------------------------------------------------------------
"$PY" - "$RESULTS" "${available[@]}" <<'EOF'
import statistics
import sys

path, servers = sys.argv[1], sys.argv[2:]
rows = {}  # (server, mode) -> list of dicts, one per round
for raw in open(path):
    fields = dict(w.split("=", 1) for w in raw.split() if "=" in w)
    rows.setdefault((fields.get("server"), fields.get("mode")), []).append(fields)


def med(server, mode, key):
    vals = []
    for f in rows.get((server, mode), []):
        try:
            if f.get("errors", "0") == "0":
                vals.append(float(f[key]))
        except (KeyError, ValueError):
            pass
    return statistics.median(vals) if vals else None


def fmt(v):
    if v is None:
        return "n/a"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(title, cols):
    print(f"\n### {title}\n")
    print("| server | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for s in servers:
        cells = []
        for _, mode, key in cols:
            v, g = med(s, mode, key), med("gyre", mode, key)
            ratio = f" ({v / g:.2f}x)" if v is not None and g and s != "gyre" else ""
            cells.append(fmt(v) + ratio)
        print(f"| {s} | " + " | ".join(cells) + " |")


n = max((len(v) for v in rows.values()), default=0)
print(f"\nMedians over {n} round(s); (N.NNx) = that server's value / gyre's.")
table("pipeline: 8 connections x 16 lines in flight, 32-byte lines", [
    ("lines/s", "pipeline", "lines_per_s"),
    ("p50 us", "pipeline", "p50_us"),
    ("p99 us", "pipeline", "p99_us"),
    ("server CPU us/line", "pipeline", "cpu_us_per_req"),
    ("server busy %", "pipeline", "server_cpu_pct"),
    ("loadgen busy %", "pipeline", "client_cpu_pct"),
])
table("pingpong: one connection, one 32-byte line at a time", [
    ("round trips/s", "pingpong", "round_trips_per_s"),
    ("p50 us", "pingpong", "p50_us"),
    ("p99 us", "pingpong", "p99_us"),
    ("server CPU us/req", "pingpong", "cpu_us_per_req"),
])
table("accept: connect, one line, close", [
    ("conn/s", "accept", "connections_per_s"),
    ("p99 us", "accept", "p99_us"),
    ("server CPU us/conn", "accept", "cpu_us_per_req"),
])
table("memory", [
    ("RSS after run KiB", "rss", "server_rss_kib"),
    ("idle: KiB per connection", "idle", "kib_per_conn"),
    ("kernel slab KiB per connection pair (host-wide)", "idle", "kernel_slab_kib_per_conn_pair"),
])


def ratio(a, b, mode, key):
    x, y = med(a, mode, key), med(b, mode, key)
    return None if x is None or not y else x / y


print("\n### targets\n")
checks = [
    ("pipeline lines/s, gyre / tokio >= 1.0", ratio("gyre", "tokio", "pipeline", "lines_per_s"), 1.0, True),
    ("pipeline lines/s, gyre / mio >= 0.9", ratio("gyre", "mio", "pipeline", "lines_per_s"), 0.9, True),
    ("pipeline lines/s, gyre / twisted >= 5", ratio("gyre", "twisted", "pipeline", "lines_per_s"), 5.0, True),
    ("pipeline lines/s, gyre / node >= 2", ratio("gyre", "node", "pipeline", "lines_per_s"), 2.0, True),
    ("pingpong server CPU/req, gyre / mio <= 1.1", ratio("gyre", "mio", "pingpong", "cpu_us_per_req"), 1.1, False),
    ("idle KiB per connection, gyre < 4", med("gyre", "idle", "kib_per_conn"), 4.0, False),
]
for what, v, bound, higher in checks:
    if v is None:
        verdict, shown = "not measured", "n/a"
    else:
        ok = v >= bound if higher else v <= bound
        verdict, shown = ("met" if ok else "MISSED"), f"{v:.2f}"
    print(f"- {what}: {shown} -> {verdict}")
errors = sum(1 for v in rows.values() for f in v if f.get("errors", "0") != "0")
print(f"\nloadgen runs with errors: {errors}")
EOF
log "done; raw results in $RESULTS"
