#!/usr/bin/env bash
# The herd's status page in a real browser (headless Chromium):
#  1. the one-process herd with status on: the page shows five servers and
#     five links up; a screenshot goes to target/browser/herd.png;
#  2. the herd as five --server processes, each with its own --status
#     (named in the config, so the page polls them all across origins):
#     five up, then Hamilton is killed and its two links must show down on
#     the page within DOWN_BOUND seconds.
# Installs Debian's chromium with apt-get when it is missing and this runs
# as root; otherwise prints SKIPPED and exits 0. Leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
DOWN_BOUND=${DOWN_BOUND:-15}

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "browser: installing chromium (apt-get)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; then
            echo "SKIPPED: apt-get install chromium failed"
            exit 0
        fi
    else
        echo "SKIPPED: $CHROMIUM is missing and this is not root (apt-get install chromium)"
        exit 0
    fi
fi

cargo build -q -p gyre-herd --bin herd
HERD=$ROOT/target/debug/herd
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p target/browser

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

chromium() {
    timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d "$WORK/profile.XXXX")" --virtual-time-budget=4000 "$@" \
        2>>"$WORK/chromium.log"
}

# check_dom FILE NODES_SERVING LINKS_UP [LINK=STATE ...]: what the page shows.
check_dom() {
    python3 - "$@" <<'PY'
import re, sys
dom = open(sys.argv[1]).read()
want_nodes, want_up = int(sys.argv[2]), int(sys.argv[3])
nodes = re.findall(r'<g class="node" data-server="([^"]+)" data-state="([^"]+)"', dom)
links = dict(re.findall(r'<line class="link" data-link="([^"]+)" data-state="([^"]+)"', dom))
serving = sum(1 for _, s in nodes if s == "serving")
up = sum(1 for s in links.values() if s == "up")
ok = serving == want_nodes and up == want_up
for spec in sys.argv[4:]:
    link, state = spec.split("=")
    ok = ok and links.get(link) == state
print(f"page: {len(nodes)} nodes ({serving} serving), links {links}")
sys.exit(0 if ok else 1)
PY
}

# wait_status URL: until every server the document names has all links up.
wait_links_up() {
    python3 - "$@" <<'PY'
import json, sys, time, urllib.request
deadline = time.time() + 30
while time.time() < deadline:
    try:
        ok = True
        for url in sys.argv[1:]:
            doc = json.load(urllib.request.urlopen(url + "status.json", timeout=2))
            ok = ok and all(l["state"] == "up" for s in doc["servers"] for l in s["links"])
        if ok:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
print("links did not come up", file=sys.stderr)
sys.exit(1)
PY
}

NAMES=(Alford Ball Hamilton Holiday Welsh)
LINKS='[["Alford","Hamilton"],["Alford","Welsh"],["Ball","Holiday"],["Ball","Welsh"],["Hamilton","Holiday"]]'

# --- 1. The one-process herd ------------------------------------------------
servers=""
for n in "${NAMES[@]}"; do
    servers+="${servers:+,}{\"name\":\"$n\",\"host\":\"127.0.0.1\",\"port\":$(free_port)}"
done
echo "{\"servers\":[$servers],\"links\":$LINKS}" >"$WORK/one.json"
"$HERD" --config "$WORK/one.json" --log-dir "$WORK/logs1" >"$WORK/one.out" 2>"$WORK/one.err" &
PIDS+=($!)
URL=""
for _ in $(seq 100); do
    URL=$(grep -o 'http://[0-9.:]*/' "$WORK/one.out" || true)
    [ -n "$URL" ] && break
    sleep 0.1
done
[ -n "$URL" ] || { echo "FAIL: no status URL"; cat "$WORK/one.err"; exit 1; }
echo "browser: one-process herd, status at $URL"
wait_links_up "$URL"
# One location, so the page has a flood to trace.
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["servers"][0]["port"])' "$WORK/one.json")
python3 -c 'import socket,sys,time; s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); s.sendall(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 %.9f\n" % time.time()); s.shutdown(socket.SHUT_WR); s.recv(4096)' "$port"
chromium --dump-dom "$URL" >"$WORK/one.html"
check_dom "$WORK/one.html" 5 5 || { echo "FAIL: the page does not show five servers and five links up"; exit 1; }
chromium --screenshot="$ROOT/target/browser/herd.png" --window-size=1200,800 "$URL" >/dev/null
echo "browser: screenshot in target/browser/herd.png"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()

# --- 2. Five processes; one is killed ----------------------------------------
servers=""
declare -A STATUS
for n in "${NAMES[@]}"; do
    STATUS[$n]=127.0.0.1:$(free_port)
    servers+="${servers:+,}{\"name\":\"$n\",\"host\":\"127.0.0.1\",\"port\":$(free_port),\"status\":\"${STATUS[$n]}\"}"
done
echo "{\"servers\":[$servers],\"links\":$LINKS}" >"$WORK/five.json"
"$HERD" pki init "$WORK/pki" --config "$WORK/five.json" >/dev/null
declare -A PID
for n in "${NAMES[@]}"; do
    "$HERD" --config "$WORK/five.json" --server "$n" --peer-tls "$WORK/pki" \
        --status "${STATUS[$n]}" --log-dir "$WORK/logs2" >"$WORK/$n.out" 2>"$WORK/$n.err" &
    PID[$n]=$!
    PIDS+=($!)
done
urls=()
for n in "${NAMES[@]}"; do urls+=("http://${STATUS[$n]}/"); done
wait_links_up "${urls[@]}"
PAGE="http://${STATUS[Alford]}/"
chromium --dump-dom "$PAGE" >"$WORK/five.html"
check_dom "$WORK/five.html" 5 5 || { echo "FAIL: five processes: not five up on the page"; exit 1; }
kill -9 "${PID[Hamilton]}"
echo "browser: killed Hamilton"
start=$(date +%s)
while :; do
    chromium --dump-dom "$PAGE" >"$WORK/after.html"
    if check_dom "$WORK/after.html" 4 3 Alford-Hamilton=down Hamilton-Holiday=down; then
        break
    fi
    if [ $(( $(date +%s) - start )) -ge "$DOWN_BOUND" ]; then
        echo "FAIL: Hamilton's links not shown down within ${DOWN_BOUND}s"
        exit 1
    fi
done
grep -q 'data-server="Hamilton" data-state="unreachable"' "$WORK/after.html" \
    || { echo "FAIL: Hamilton not shown unreachable"; exit 1; }
echo "browser: PASS (Hamilton's links shown down within $(( $(date +%s) - start ))s)"
