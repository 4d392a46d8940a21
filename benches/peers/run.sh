#!/usr/bin/env bash
# Side-by-side benchmarks, driven by examples/loadgen (examples/loadgen/):
#
# - the `echo` tables: gyre's line_echo against the same server on tokio
#   (current-thread), a raw mio loop (the floor), Twisted, Node.js and Python
#   asyncio;
# - the `herd` table: gyre's herd against the Twisted herd
#   (benches/peers/twisted_herd.py), five server processes each.
#
#   benches/peers/run.sh                  # both, 5 rounds (~10-12 minutes)
#   ROUNDS=1 SERVERS="gyre mio" TABLES=echo benches/peers/run.sh
#   ROUNDS=1 TABLES=herd HERD_SECS=2 FLOOD_SECS=2 benches/peers/run.sh
#
# Each server runs pinned to core $SERVER_CORE (default 0), loadgen to core
# $CLIENT_CORE (default 1). Everything is on loopback; every process this
# script starts is stopped when it exits.
#
# Echo: every round runs, for each server in turn (the order rotates from
# round to round): a fresh server for `idle` (10,000 idle connections, RSS
# growth per connection), then a fresh server for `pingpong`, `pipeline`
# and `accept`, then its RSS. The tables give medians over rounds and each
# value as a ratio to gyre's.
#
# Herd: every round starts, for each implementation in turn (the order
# alternates from round to round), a fresh herd of five servers (HERD.md's
# default names and links, on free ports, plus a member `Probe` linked to
# $FLOOD_VIA that loadgen plays), all five pinned to $SERVER_CORE, each
# logging every line to a temporary directory. gyre's herd is the release
# `herd` example with peer TLS (`herd pki init` in the temporary directory,
# `--peer-tls`; HERD_PEER_TLS=0 runs it with --insecure-peer-links
# instead); the Twisted herd's links are plain TCP (it has no TLS). Against
# each herd: `herd-iamat` (HERD_CONNECTIONS x HERD_DEPTH IAMATs in flight,
# spread over the five servers, every one new, so stored, logged and
# flooded), `herd-flood` (IAMATs to $FLOOD_TO timed until they reach Probe
# over its link to $FLOOD_VIA: 3 hops in the default herd) and, for gyre
# only (the Twisted herd has no Places service), `herd-whatsat` against
# its local Places service. The table gives medians over rounds and the
# ratio gyre / Twisted.
#
# The herd's per-address IAMAT rate limit (50/s, bursts of 200, by default)
# is passed by moving loadgen's connections to a fresh loopback source
# address every ROTATE IAMATs (loadgen --rotate; one reconnection per
# ROTATE IAMATs). For a herd whose limits are raised by flags, give them in
# HERD_ARGS (extra arguments of every gyre herd server) and set ROTATE=0.
#
# Needs: cargo, python3 (Twisted is installed into a venv under the cargo
# target dir), node (no npm packages), taskset. A peer whose runtime is
# missing is skipped with a warning.
#
# Knobs (environment): TABLES="echo herd" ROUNDS=5 CARGO_TARGET_DIR,
# OUT (results directory), KEEP=1 (keep the temporary directory of logs),
# SERVER_CORE=0 CLIENT_CORE=1;
# echo: PIPE_SECS=3 PING_COUNT=20000 ACCEPT_SECS=3 IDLE_CONNS=10000
# CONNECTIONS=8 DEPTH=16 SIZE=32 ACCEPT_THREADS=1
# SERVERS="gyre tokio mio twisted node asyncio";
# herd: HERD_IMPLS="gyre twisted" HERD_SECS=3 FLOOD_SECS=3 WHATSAT_SECS=2
# HERD_CONNECTIONS=4 HERD_DEPTH=16 ROTATE=150 HERD_PEER_TLS=1 HERD_ARGS=
# FLOOD_VIA=Alford FLOOD_TO=Holiday HERD_SETTLE=1 (seconds for the links to
# come up after the servers listen). HERD_PERF=DIR records a `perf` profile
# of the servers' core during each herd-iamat run into DIR/IMPL-rN.data
# (HERD_PERF_ARGS adds options, e.g. "--call-graph dwarf"). FLOOR_COUNT=20000
# round trips for the cross-core floor row. HERD_IMPLS may
# also name `base`: gyre's herd from another build, HERD_BASE_BIN=PATH (a
# `herd` example binary), for a before/after in the same run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/examples
TABLES=${TABLES:-"echo herd"}
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
HERD_IMPLS=${HERD_IMPLS:-"gyre twisted"}
HERD_SECS=${HERD_SECS:-3}
FLOOD_SECS=${FLOOD_SECS:-3}
WHATSAT_SECS=${WHATSAT_SECS:-2}
HERD_CONNECTIONS=${HERD_CONNECTIONS:-4}
HERD_DEPTH=${HERD_DEPTH:-16}
ROTATE=${ROTATE:-150}
HERD_PEER_TLS=${HERD_PEER_TLS:-1}
HERD_ARGS=${HERD_ARGS:-}
FLOOD_VIA=${FLOOD_VIA:-Alford}
FLOOD_TO=${FLOOD_TO:-Holiday}
HERD_SETTLE=${HERD_SETTLE:-1}
HERD_PERF=${HERD_PERF:-}
HERD_BASE_BIN=${HERD_BASE_BIN:-}
FLOOR_COUNT=${FLOOR_COUNT:-20000}
HERD_PERF_ARGS=${HERD_PERF_ARGS:-}
KEEP=${KEEP:-0}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
VENV=$TARGET/peers-venv
OUT=${OUT:-$TARGET/peers-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
HERD_RESULTS=$OUT/herd-results.txt
: >"$RESULTS"
: >"$HERD_RESULTS"

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
want() { [[ " $TABLES " == *" $1 "* ]]; }
for t in $TABLES; do
    case $t in
    echo | herd) ;;
    *) log "unknown table $t (TABLES takes echo and herd)"; exit 2 ;;
    esac
done

# --- cleanup: stop every process this script started, remove the logs --------
PIDS=()
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/gyre-peers.XXXXXX")
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
    if [[ $KEEP == 1 ]]; then
        log "kept the servers' logs in $TMPD"
    else
        rm -rf "$TMPD"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- install and build --------------------------------------------------------
PY=python3
needs_venv=0
if want echo && [[ " $SERVERS " == *" twisted "* || " $SERVERS " == *" asyncio "* ]]; then
    needs_venv=1
fi
if want herd && [[ " $HERD_IMPLS " == *" twisted "* ]]; then
    needs_venv=1
fi
if [[ $needs_venv == 1 ]]; then
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import twisted' 2>/dev/null; then
        log "installing Twisted into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check twisted ||
            log "warning: pip install twisted failed; Twisted will be skipped"
    fi
    PY=$VENV/bin/python
fi
available=()
if want echo; then
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
fi
herds=()
if want herd; then
    for h in $HERD_IMPLS; do
        case $h in
        twisted) "$PY" -c 'import twisted' 2>/dev/null && herds+=("$h") || log "warning: no Twisted; skipping the Twisted herd" ;;
        gyre) herds+=("$h") ;;
        base)
            if [[ -x $HERD_BASE_BIN ]]; then
                herds+=("$h")
            else
                log "HERD_IMPLS has base but HERD_BASE_BIN ($HERD_BASE_BIN) is no herd binary"
                exit 2
            fi
            ;;
        *) log "unknown herd $h (HERD_IMPLS takes gyre, base and twisted)"; exit 2 ;;
        esac
    done
fi

examples=(--example loadgen)
if want echo; then
    examples+=(--example line_echo --example tokio_line_echo --example mio_line_echo)
fi
if want herd; then
    examples+=(--example herd --example mio_line_echo)
fi
log "building ${examples[*]} (release, target dir $TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet "${examples[@]}")

# Servers and loadgen need a descriptor each per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "RLIMIT_NOFILE $(ulimit -n); results in $OUT; logs in $TMPD"

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

# --- herds --------------------------------------------------------------------
HERD_NAMES="Alford Ball Hamilton Holiday Welsh"
HERD_CONFIG=$TMPD/herd.json
HERD_PKI=$TMPD/pki
HERD_PIDS=()

# write_herd_config: HERD.md's default herd on free ports, plus the member
# Probe (loadgen's herd-flood) linked to $FLOOD_VIA; nothing listens on
# Probe's port (its link is the one loadgen dials).
write_herd_config() {
    python3 - "$HERD_CONFIG" "$FLOOD_VIA" <<'PYEOF'
import json, socket, sys
path, via = sys.argv[1], sys.argv[2]
names = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh", "Probe"]
socks = []
for _ in names:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
ports = [s.getsockname()[1] for s in socks]
for s in socks:
    s.close()
links = [["Alford", "Hamilton"], ["Alford", "Welsh"], ["Ball", "Holiday"],
         ["Ball", "Welsh"], ["Hamilton", "Holiday"], ["Probe", via]]
with open(path, "w") as f:
    json.dump({"servers": [{"name": n, "host": "127.0.0.1", "port": p}
                           for n, p in zip(names, ports)], "links": links}, f, indent=1)
PYEOF
}

# start_herd IMPL TAG: five servers of IMPL pinned to $SERVER_CORE, logging
# to $TMPD/logs/IMPL.TAG; waits until each prints its "listening on" line,
# then $HERD_SETTLE seconds for the links.
start_herd() {
    local impl=$1 tag=$2 name out i logs=$TMPD/logs/$1.$2
    mkdir -p "$logs"
    write_herd_config
    HERD_PIDS=()
    for name in $HERD_NAMES; do
        out=$logs/$name.stdout
        case $impl in
        gyre | base)
            local bin=$BIN/herd
            [[ $impl == base ]] && bin=$HERD_BASE_BIN
            local peer=(--insecure-peer-links)
            [[ $HERD_PEER_TLS == 1 ]] && peer=(--peer-tls "$HERD_PKI")
            # shellcheck disable=SC2086 # HERD_ARGS is split into words on purpose
            RUST_LOG=warn taskset -c "$SERVER_CORE" "$bin" --config "$HERD_CONFIG" \
                --server "$name" --log-dir "$logs" "${peer[@]}" $HERD_ARGS >"$out" 2>&1 &
            ;;
        twisted)
            taskset -c "$SERVER_CORE" "$PY" "$HERE/twisted_herd.py" --config "$HERD_CONFIG" \
                --server "$name" --log-dir "$logs" >"$out" 2>&1 &
            ;;
        esac
        HERD_PIDS+=("$!")
        PIDS+=("$!")
    done
    for name in $HERD_NAMES; do
        out=$logs/$name.stdout
        for i in $(seq 400); do
            grep -q "$name listening on" "$out" 2>/dev/null && break
            if [[ $i == 400 ]]; then
                log "$impl herd: $name printed no 'listening on' within 20 s:"
                cat "$out" >&2
                stop_herd
                return 1
            fi
            sleep 0.05
        done
    done
    for i in "${!HERD_PIDS[@]}"; do
        if ! kill -0 "${HERD_PIDS[$i]}" 2>/dev/null; then
            log "$impl herd: a server exited at start; see $logs"
            stop_herd
            return 1
        fi
    done
    sleep "$HERD_SETTLE"
}

stop_herd() {
    local pid i
    for pid in "${HERD_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${HERD_PIDS[@]}"; do
        for i in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    HERD_PIDS=()
}

# herd_loadgen ROUND IMPL MODE ARGS...: loadgen on $CLIENT_CORE against the
# current herd; appends its RESULT line to $HERD_RESULTS.
herd_loadgen() {
    local round=$1 impl=$2 mode=$3 line
    shift 3
    line=$(taskset -c "$CLIENT_CORE" "$BIN/loadgen" "$mode" --config "$HERD_CONFIG" \
        --label "$impl" "$@" 2>>"$OUT/loadgen.err" |
        tee -a "$OUT/loadgen.log" | grep '^RESULT' | tail -1 || true)
    [[ -n $line ]] || line="RESULT mode=$mode errors=1"
    echo "round=$round server=$impl $line" >>"$HERD_RESULTS"
    log "round $round $impl herd $mode: ${line#RESULT }"
}

herd_round() {
    local round=$1 impl=$2 pids flood_tls=()
    start_herd "$impl" "r$round" || return 0
    pids=$(IFS=,; echo "${HERD_PIDS[*]}")
    local perf_pid=
    if [[ -n $HERD_PERF ]]; then
        # Samples everything on the servers' core while herd-iamat runs.
        mkdir -p "$HERD_PERF"
        perf record -q -C "$SERVER_CORE" $HERD_PERF_ARGS -o "$HERD_PERF/$impl-r$round.data" \
            -- sleep "$HERD_SECS" 2>>"$OUT/perf.err" &
        perf_pid=$!
    fi
    herd_loadgen "$round" "$impl" herd-iamat --server-pid "$pids" --seconds "$HERD_SECS" \
        --connections "$HERD_CONNECTIONS" --depth "$HERD_DEPTH" --rotate "$ROTATE" --to "${HERD_NAMES// /,}"
    [[ -z $perf_pid ]] || wait "$perf_pid" || true
    [[ $impl != twisted && $HERD_PEER_TLS == 1 ]] && flood_tls=(--peer-tls "$HERD_PKI")
    herd_loadgen "$round" "$impl" herd-flood --via "$FLOOD_VIA" --to "$FLOOD_TO" \
        --seconds "$FLOOD_SECS" --rotate "$ROTATE" "${flood_tls[@]}"
    if [[ $impl != twisted ]]; then
        herd_loadgen "$round" "$impl" herd-whatsat --server-pid "$pids" --seconds "$WHATSAT_SECS" \
            --connections "$HERD_CONNECTIONS" --depth "$HERD_DEPTH" --to "${HERD_NAMES// /,}"
    fi
    stop_herd
}

# floor_round ROUND: the cross-core floor under herd-flood's numbers: a raw
# mio line echo on $SERVER_CORE pinged one line at a time from
# $CLIENT_CORE, so each round trip has the two cross-core wake-ups that
# every timed flood has (the IAMAT to the herd, the AT back to Probe).
floor_round() {
    local round=$1
    start_server mio "r$round-floor" || return 0
    # loadgen appends to $RESULTS: here, the herd's results.
    RESULTS=$HERD_RESULTS loadgen "$round" floor pingpong --count "$FLOOR_COUNT" --size "$SIZE"
    stop_server
}

if want herd && [[ " ${herds[*]} " == *" gyre "* ]]; then
    write_herd_config
    "$BIN/herd" pki init "$HERD_PKI" --config "$HERD_CONFIG" >/dev/null
    if "$BIN/herd" --help 2>/dev/null | grep -q -- '--iamat-rate'; then
        log "note: this herd has --iamat-rate; HERD_ARGS='--iamat-rate ...' ROTATE=0 measures it without source-address rotation"
    fi
fi

# --- rounds -------------------------------------------------------------------
n=${#available[@]}
nh=${#herds[@]}
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
    for k in $(seq 0 $((nh - 1))); do
        herd_round "$round" "${herds[$(((k + round - 1) % nh))]}"
    done
    if want herd; then
        floor_round "$round"
    fi
done

# --- tables -------------------------------------------------------------------
if want echo; then
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
fi

if want herd; then
"$PY" - "$HERD_RESULTS" "$HERD_CONNECTIONS" "$HERD_DEPTH" "$FLOOD_VIA" "$FLOOD_TO" "${herds[@]}" <<'EOF'
import statistics
import sys

path, conns, depth, via, to, impls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
rows = {}  # (impl, mode) -> list of dicts, one per round
for raw in open(path):
    fields = dict(w.split("=", 1) for w in raw.split() if "=" in w)
    rows.setdefault((fields.get("server"), fields.get("mode")), []).append(fields)


def med(impl, mode, key):
    vals = []
    for f in rows.get((impl, mode), []):
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


hops = next((f.get("hops") for v in rows.values() for f in v if f.get("hops")), "?")
cols = [
    ("IAMAT/s", "herd-iamat", "iamats_per_s"),
    ("IAMAT p50 us", "herd-iamat", "p50_us"),
    ("IAMAT p99 us", "herd-iamat", "p99_us"),
    ("herd CPU us/IAMAT", "herd-iamat", "cpu_us_per_req"),
    (f"flood p50 us", "herd-flood", "p50_us"),
    (f"flood p99 us", "herd-flood", "p99_us"),
    (f"flood p99.9 us", "herd-flood", "p999_us"),
    ("WHATSAT/s", "herd-whatsat", "whatsats_per_s"),
]
n = max((len(v) for v in rows.values()), default=0)
print(f"\nMedians over {n} round(s) (rounds with errors left out).")
print(f"\n### herd: five servers on one core; {conns} connections x {depth} IAMATs in flight;"
      f" flood: {to} -> Probe via {via}, {hops} hops\n")
print("| herd | " + " | ".join(c[0] for c in cols) + " |")
print("|---|" + "---|" * len(cols))
for impl in impls:
    print(f"| {impl} | " + " | ".join(fmt(med(impl, m, k)) for _, m, k in cols) + " |")


def ratio(mode, key):
    g, t = med("gyre", mode, key), med("twisted", mode, key)
    return None if g is None or not t else g / t


for peer in ("twisted", "base"):
    if "gyre" in impls and peer in impls:
        cells = []
        for _, mode, key in cols:
            g, p = med("gyre", mode, key), med(peer, mode, key)
            cells.append("n/a" if g is None or not p else f"{g / p:.3g}x")
        print(f"| gyre / {peer} | " + " | ".join(cells) + " |")
        print(f"\n(gyre / {peer}: above 1 is better for IAMAT/s, below 1 for latencies and CPU.)")

floor = [med("floor", "pingpong", k) for k in ("p50_us", "p99_us", "p999_us")]
if floor[0] is not None:
    print(f"\nCross-core floor (a raw mio line echo on the servers' core, one line at a time"
          f" from the load client's core: the two cross-core wake-ups every timed flood has):"
          f" round trip p50 {fmt(floor[0])} us, p99 {fmt(floor[1])} us, p99.9 {fmt(floor[2])} us.")

print("\n### herd targets (issue 11)\n")
tw = lambda m, k: med("twisted", m, k)
g = lambda m, k: med("gyre", m, k)
inv = lambda a, b: None if a is None or not b else a / b
checks = [
    ("gyre IAMAT/s >= 110,000", g("herd-iamat", "iamats_per_s"), 110000, True),
    ("IAMAT/s, gyre / twisted >= 15", ratio("herd-iamat", "iamats_per_s"), 15, True),
    ("gyre flood p99 <= 100 us", g("herd-flood", "p99_us"), 100, False),
    ("flood p99, twisted / gyre >= 10", inv(tw("herd-flood", "p99_us"), g("herd-flood", "p99_us")), 10, True),
]
for what, v, bound, higher in checks:
    if v is None:
        verdict, shown = "not measured", "n/a"
    else:
        ok = v >= bound if higher else v <= bound
        verdict, shown = ("met" if ok else "MISSED"), fmt(v)
    print(f"- {what}: {shown} -> {verdict}")
errors = sum(1 for v in rows.values() for f in v if f.get("errors", "0") != "0")
print(f"\nherd loadgen runs with errors: {errors}")
EOF
fi
log "done; raw results in $OUT"
