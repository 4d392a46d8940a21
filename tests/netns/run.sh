#!/usr/bin/env bash
# The herd across hosts: five network namespaces, one herd server in each,
# clients in a sixth, partitions made by taking a veth link down, a killed
# and restarted server, and the faultproxy relay on every link. Prints the
# convergence times of each scenario. See RELIABILITY.md for the topology.
#
#   sudo tests/netns/run.sh            (builds what it needs with cargo)
#
# Exits 0 when every scenario passed, non-zero on any failure, and prints
# `SKIPPED: <reason>` and exits 0 when it cannot make namespaces.
# Everything it creates lives in its own namespaces (the host's network is
# never touched); it removes them on exit, on failure too, and checks that
# nothing of this run is left.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/netns"
START=$(date +%s.%N)

skip() { echo "SKIPPED: $*"; exit 0; }
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $START" | bc)" "$*"; }

[ "$(id -u)" = 0 ] || skip "not root (network namespaces need root)"
command -v ip >/dev/null || skip "no ip (iproute2)"
command -v python3 >/dev/null || skip "no python3 (the client probe)"
command -v bc >/dev/null || skip "no bc"

SUF="$$$RANDOM"
PFX="gyh$SUF"                # every namespace of this run starts with this
BR="${PFX}br"                # the bridges' own namespace
CL="${PFX}cl"                # the clients' namespace
NAMES=(Alford Ball Hamilton Holiday Welsh)
LINKS=("Alford Hamilton" "Alford Welsh" "Ball Holiday" "Ball Welsh" "Hamilton Holiday")
# The partition: side A on bridge br0, side B on bridge br1; the two
# bridges are joined by one veth pair (xa-xb), the link scenario 2 cuts.
SIDE_A=(Alford Hamilton Holiday)
SIDE_B=(Ball Welsh)
NET=10.77.0                  # the herd's network (only inside our namespaces)
CNET=10.78                   # client-to-server point-to-point links
PORT=12000

declare -A IDX=([Alford]=1 [Ball]=2 [Hamilton]=3 [Holiday]=4 [Welsh]=5)
declare -A PIDS=()           # name -> pid of a process this run started
CREATED=()                   # namespaces this run created
TMP=""
CLEANED=0

ns_of() { echo "${PFX}s${IDX[$1]}"; }

cleanup() {
    [ "$CLEANED" = 1 ] && return 0
    CLEANED=1
    set +e
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    local ns
    for ns in "${CREATED[@]}"; do
        # Anything else still running in our namespaces is ours too.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    if [ -n "$TMP" ] && [ -z "${KEEP_LOGS:-}" ]; then rm -rf "$TMP"; fi
    set -e
}
on_signal() { echo "interrupted" >&2; exit 130; }
trap cleanup EXIT
trap on_signal INT TERM

HOST_LINKS=$(ip -o link | wc -l)
# The namespaces. If the first one cannot be made, this machine cannot.
if ! ip netns add "$BR" 2>/dev/null; then skip "ip netns add failed (no namespace support here)"; fi
CREATED+=("$BR")
TMP=$(mktemp -d "/tmp/gyre-netns.XXXXXX")

echo "== building"
(cd "$ROOT" && cargo build --release --quiet --example herd --example faultproxy)
HERD="$ROOT/target/release/examples/herd"
PROXY="$ROOT/target/release/examples/faultproxy"

log "namespaces ${PFX}*"
for ns in "$CL" $(for n in "${NAMES[@]}"; do ns_of "$n"; done); do
    ip netns add "$ns"
    CREATED+=("$ns")
done
for ns in "${CREATED[@]}"; do ip -n "$ns" link set lo up; done
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link add br1 type bridge
ip -n "$BR" link add xa type veth peer name xb
ip -n "$BR" link set xa master br0
ip -n "$BR" link set xb master br1
for l in br0 br1 xa xb; do ip -n "$BR" link set "$l" up; done
for n in "${NAMES[@]}"; do
    i=${IDX[$n]}; ns=$(ns_of "$n")
    bridge=br0
    [[ " ${SIDE_B[*]} " == *" $n "* ]] && bridge=br1
    # Both ends are made inside our namespaces: nothing on the host.
    ip -n "$BR" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$BR" link set "p$i" master "$bridge" up
    ip -n "$ns" addr add "$NET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    # The clients reach each server on a link of its own, so that a
    # partition of the herd never cuts a client off.
    ip -n "$CL" link add "c$i" type veth peer name cl0 netns "$ns"
    ip -n "$CL" addr add "$CNET.$i.2/24" dev "c$i"
    ip -n "$ns" addr add "$CNET.$i.1/24" dev cl0
    ip -n "$CL" link set "c$i" up
    ip -n "$ns" link set cl0 up
    ip -n "$CL" route add "$NET.$i/32" dev "c$i"
done

# The herd configuration: every server on port 12000 of its own address.
write_config() { # FILE [proxied]: with proxied, for server $2's view
    local file=$1 view=${2:-} first=1 n host port
    {
        echo '{"servers": ['
        for n in "${NAMES[@]}"; do
            host="$NET.${IDX[$n]}"; port=$PORT
            if [ -n "$view" ] && [ "$n" != "$view" ]; then port=$((13000 + ${IDX[$view]})); fi
            [ $first = 1 ] || echo ','
            first=0
            printf '  {"name": "%s", "host": "%s", "port": %d}' "$n" "$host" "$port"
        done
        echo '], "links": ['
        first=1
        for l in "${LINKS[@]}"; do
            set -- $l
            [ $first = 1 ] || echo ','
            first=0
            printf '  ["%s", "%s"]' "$1" "$2"
        done
        echo ']}'
    } >"$file"
}
write_config "$TMP/herd.json"
echo "{$(for n in "${NAMES[@]}"; do printf '"%s": "%s:%d",' "$n" "$NET.${IDX[$n]}" $PORT; done | sed 's/,$//')}" >"$TMP/servers.json"

EXTRA=()
if "$HERD" --help 2>&1 | grep -q -- '--peer-tls'; then
    "$HERD" pki init "$TMP/pki" --config "$TMP/herd.json" >"$TMP/pki.out" 2>&1 ||
        { cat "$TMP/pki.out"; fail "herd pki init"; }
    EXTRA=(--peer-tls "$TMP/pki")
    TLS="peer TLS on"
else
    TLS="peer TLS not available in this herd (plain peer links)"
fi
log "$TLS"

start_server() { # NAME CONFIG LOGDIR
    local n=$1 ns
    ns=$(ns_of "$n")
    mkdir -p "$3"
    ip netns exec "$ns" "$HERD" --config "$2" --server "$n" --log-dir "$3" \
        --places-api local "${EXTRA[@]}" >>"$TMP/$n.out" 2>&1 &
    PIDS[$n]=$!
}
stop_server() { # NAME [signal]
    local n=$1 pid=${PIDS[$1]}
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$n]"
}
probe() { timeout 120 ip netns exec "$CL" python3 "$HERE/probe.py" "$1" "$TMP/servers.json" "${@:2}"; }
all() { local IFS=,; echo "${NAMES[*]}"; }
join() { local IFS=,; echo "$*"; }

# Waits (bounded) until every server's log says each of its links is up.
wait_links() { # LOGDIR
    local n nb deadline=$(($(date +%s) + 30))
    for n in "${NAMES[@]}"; do
        for l in "${LINKS[@]}"; do
            set -- $l
            if [ "$1" = "$n" ]; then nb=$2; elif [ "$2" = "$n" ]; then nb=$1; else continue; fi
            until grep -q "link to $nb up" "$LOGDIR/$n.log" 2>/dev/null; do
                [ "$(date +%s)" -lt "$deadline" ] || fail "$n: link to $nb never came up"
                sleep 0.05
            done
        done
    done
}

RESULTS=()
record() { # SCENARIO "times N t..." 
    local name=$1 line=$2
    [[ $line == times* ]] || fail "$name: no times"
    RESULTS+=("$name|$(echo "$line" | cut -d' ' -f3- | tr ' ' '\n' | sort -g | python3 -c '
import sys
t = [float(x) for x in sys.stdin.read().split()]
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print("%d|%.3f|%.3f|%.3f" % (len(t), q(0.5), q(0.99), t[-1]))
')")
    log "$name: converged (${RESULTS[-1]#*|})"
}
now() { date +%s.%N; }

LOGDIR="$TMP/logs"
for n in "${NAMES[@]}"; do start_server "$n" "$TMP/herd.json" "$LOGDIR"; done
probe ready "$(all)" --timeout 30 || fail "the herd did not start"
wait_links
log "herd up: 5 servers, 5 links"

# (1) IAMATs at every server reach every other.
CLIENTS=20
entries=()
for k in $(seq 0 $((CLIENTS - 1))); do entries+=("${NAMES[$((k % 5))]}:s1-c$k:0"); done
record "1 flood" "$(probe send "$TMP/s1.json" "${entries[@]}" --wait "$(all)" --timeout 30)"

# (2) A partition: side A and side B each converge within themselves, then
# after healing both converge to the newest location per client.
CUT=$(now)
ip -n "$BR" link set xa down
log "partitioned: {${SIDE_A[*]}} | {${SIDE_B[*]}}"
ea=(); eb=()
for k in $(seq 0 $((CLIENTS - 1))); do
    # Even clients are newer on side A, odd ones on side B.
    if [ $((k % 2)) = 0 ]; then aa=1; ab=3; else aa=3; ab=1; fi
    ea+=("${SIDE_A[$((k % 3))]}:s2-c$k:$aa")
    eb+=("${SIDE_B[$((k % 2))]}:s2-c$k:$ab")
done
record "2 side A" "$(probe send "$TMP/s2a.json" "${ea[@]}" --wait "$(join "${SIDE_A[@]}")" --timeout 30)"
record "2 side B" "$(probe send "$TMP/s2b.json" "${eb[@]}" --wait "$(join "${SIDE_B[@]}")" --timeout 30)"
# Still diverged: each side holds only its own lines (the waits above
# re-checked stability; check side A once more after side B settled).
probe wait "$TMP/s2a.json" "$(join "${SIDE_A[@]}")" --timeout 5 >/dev/null ||
    fail "side A changed during the partition"
python3 - "$TMP/s2a.json" "$TMP/s2b.json" "$TMP/s2new.json" <<'EOF'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
def t(line): return tuple(int(x) for x in line.split()[5].split("."))
new = {c: (a[c] if t(a[c]["at"]) > t(b[c]["at"]) else b[c]) for c in a}
json.dump(new, open(sys.argv[3], "w"))
EOF
# The partition lasts PARTITION_SECS in all (default 5), long enough for
# TCP's retransmission back-off on the cut links to matter after healing.
hold=$(echo "${PARTITION_SECS:-5} - ($(now) - $CUT)" | bc)
if [ "$(echo "$hold > 0" | bc)" = 1 ]; then sleep "$hold"; fi
HEAL=$(now)
ip -n "$BR" link set xa up
log "healed"
record "2 after heal" "$(probe wait "$TMP/s2new.json" "$(all)" --timeout 60 --since "$HEAL")"

# (3) A killed server misses updates, is restarted, and catches up.
stop_server Hamilton KILL
log "Hamilton killed"
entries=()
others=(Alford Ball Holiday Welsh)
for k in $(seq 0 $((CLIENTS - 1))); do entries+=("${others[$((k % 4))]}:s3-c$k:0"); done
probe send "$TMP/s3.json" "${entries[@]}"
probe wait "$TMP/s3.json" "$(join "${others[@]}")" --timeout 30 >/dev/null || fail "the others did not converge"
RESTART=$(now)
start_server Hamilton "$TMP/herd.json" "$LOGDIR"
record "3 restart" "$(probe wait "$TMP/s3.json" Hamilton --timeout 30 --since "$RESTART")"
# Everything sent before the kill is back too (from its neighbours).
probe wait "$TMP/s1.json" Hamilton --timeout 30 >/dev/null || fail "Hamilton lacks scenario 1's locations"
probe wait "$TMP/s2new.json" Hamilton --timeout 30 >/dev/null || fail "Hamilton lacks scenario 2's locations"

# (4) The faultproxy relay on every link: each server dials each neighbour
# through a relay in that neighbour's namespace (50 ms +- 10 ms each way,
# 1% of connections reset).
for n in "${NAMES[@]}"; do stop_server "$n"; done
log "herd stopped; starting relays"
for l in "${LINKS[@]}"; do
    set -- $l
    for pair in "$1 $2" "$2 $1"; do
        set -- $pair   # $1 dials $2 through a relay in $2's namespace
        lp=$((13000 + ${IDX[$1]}))
        ip netns exec "$(ns_of "$2")" "$PROXY" --listen "$NET.${IDX[$2]}:$lp" \
            --upstream "$NET.${IDX[$2]}:$PORT" --seed "${IDX[$1]}${IDX[$2]}" \
            --toxic 'lagup upstream latency ms=50 jitter=10' \
            --toxic 'lagdown downstream latency ms=50 jitter=10' \
            --toxic 'reset upstream reset_chance p=0.01' \
            >"$TMP/proxy-$1-$2.out" 2>&1 &
        PIDS["proxy-$1-$2"]=$!
    done
done
for n in "${NAMES[@]}"; do
    write_config "$TMP/herd-$n.json" "$n"
    start_server "$n" "$TMP/herd-$n.json" "$TMP/logs4"
done
probe ready "$(all)" --timeout 30 || fail "the proxied herd did not start"
LOGDIR="$TMP/logs4" wait_links
for f in "$TMP"/proxy-*.out; do grep -q "listening" "$f" || fail "a relay did not start: $f"; done
log "proxied herd up: 10 relays"
entries=()
C4=20
for k in $(seq 0 $((C4 - 1))); do entries+=("${NAMES[$((k % 5))]}:s4-c$k:0"); done
record "4 via relays" "$(probe send "$TMP/s4.json" "${entries[@]}" --wait "$(all)" --timeout 60)"
# The links really ran through the relays: a server dialled only relay
# ports, and accepted links only from a relay in its own namespace.
for n in "${NAMES[@]}"; do
    while read -r line; do
        case "$line" in
            *"dialled connection with $NET."*":130"[0-9][0-9]")") ;;
            *"accepted connection with $NET.${IDX[$n]}:"*) ;;
            *) fail "$n: a link that bypassed the relays: $line" ;;
        esac
    done < <(grep "link to .* up" "$TMP/logs4/$n.log")
done

echo
echo "scenario       | clients | p50 (s) | p99 (s) | max (s)"
echo "---------------|---------|---------|---------|--------"
for r in "${RESULTS[@]}"; do
    IFS='|' read -r name n p50 p99 max <<<"$r"
    printf '%-14s | %7s | %7s | %7s | %7s\n' "$name" "$n" "$p50" "$p99" "$max"
done
echo

# Tear down, then check that nothing of this run is left.
ALLPIDS="${PIDS[*]}"
cleanup
for pid in $ALLPIDS; do
    if kill -0 "$pid" 2>/dev/null; then fail "process $pid is still running"; fi
done
if ip netns list | grep -q "^$PFX"; then fail "namespaces left: $(ip netns list | grep "^$PFX")"; fi
if [ "$(ip -o link | wc -l)" != "$HOST_LINKS" ] || ip -o link | grep -q "$PFX"; then fail "links left on the host"; fi
if pgrep -f "gyre-netns|$TMP" >/dev/null; then fail "processes of this run left"; fi
log "clean: no namespace, link or process of this run is left"
echo "PASS (${TLS})"
