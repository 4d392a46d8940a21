#!/usr/bin/env python3
"""Client side of tests/netns/run.sh: runs inside the client namespace.

    probe.py send  SERVERS STATE SERVER:CLIENT:AGE... [--wait NAMES --timeout S]
        sends `IAMAT CLIENT +lat+lon (now - AGE)` to SERVER, checks the AT
        answer and records {client: {"at": line, "sent": wall time}} in the
        JSON file STATE (merged with what it holds). With --wait, then
        waits as `wait` does (in the same process, so that the measured
        times do not include starting another one).
    probe.py wait  SERVERS STATE NAMES --timeout S [--since T]
        polls `WHATSAT CLIENT 1 1` on every named server until each shows,
        for every client of STATE, exactly the AT line recorded there.
        The convergence time of a client is the moment the last server
        showed it, minus its send time (or T, with --since). Prints one
        line: `times <n> <seconds>...`. Exits 1 (naming what is missing) at
        the time-out.
    probe.py ready SERVERS NAMES --timeout S
        waits until every named server accepts a connection.

SERVERS is a JSON file {"Alford": "10.77.0.1:12000", ...}.
Only the standard library: the script must run on a bare machine.
"""

import json
import random
import socket
import sys
import time

POLL = 0.01


def load(path):
    with open(path) as f:
        return json.load(f)


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


class Conn:
    """One client connection; reconnects when it breaks."""

    def __init__(self, address):
        self.address = address
        self.sock = None
        self.buf = b""

    def open(self):
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=2)
            self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def whatsat(self, clients):
        """The stored AT line per client (None when unknown); pipelined."""
        self.open()
        self.sock.sendall(b"".join(b"WHATSAT %s 1 1\n" % c.encode() for c in clients))
        out = {}
        for c in clients:
            first = self.line()
            if first.startswith(b"? "):
                out[c] = None
                continue
            # The JSON has no empty line; the answer ends with one.
            while self.line() != b"":
                pass
            out[c] = first.decode()
        return out


def send(servers, state_path, entries):
    try:
        state = load(state_path)
    except FileNotFoundError:
        state = {}
    # Connect first, then send every IAMAT back to back, then read the
    # answers: each client's send time is close to when its line left.
    plan = []
    for entry in entries:
        server, client, age = entry.split(":")
        t = time.time_ns() - int(float(age) * 1e9)
        stamp = "%d.%09d" % (t // 10**9, t % 10**9)
        loc = "%+.6f%+.6f" % (random.uniform(-80, 80), random.uniform(-170, 170))
        c = Conn(addr(servers[server]))
        c.open()
        plan.append((server, client, loc, stamp, c))
    sent = {}
    for server, client, loc, stamp, c in plan:
        sent[client] = time.time()
        c.sock.sendall(("IAMAT %s %s %s\n" % (client, loc, stamp)).encode())
    for server, client, loc, stamp, c in plan:
        at = c.line().decode()
        c.close()
        fields = at.split()
        if fields[:2] != ["AT", server] or fields[3:] != [client, loc, stamp]:
            sys.exit("bad answer from %s: %r" % (server, at))
        state[client] = {"at": at, "sent": sent[client], "server": server}
    with open(state_path, "w") as f:
        json.dump(state, f, indent=1)


def wait(servers, state_path, names, timeout, since):
    state = load(state_path)
    clients = sorted(state)
    conns = {n: Conn(addr(servers[n])) for n in names}
    seen = {}  # (server, client) -> first time it matched
    deadline = time.time() + timeout
    last = {}
    while True:
        now = time.time()
        for n in names:
            try:
                got = conns[n].whatsat([c for c in clients if (n, c) not in seen])
            except (OSError, ConnectionError):
                conns[n].close()
                continue
            now = time.time()
            for c, line in got.items():
                last[(n, c)] = line
                if line == state[c]["at"]:
                    seen[(n, c)] = now
        if len(seen) == len(names) * len(clients):
            break
        if now > deadline:
            for n in names:
                for c in clients:
                    if (n, c) not in seen:
                        print(
                            "MISSING on %s: %s (want %r, has %r)"
                            % (n, c, state[c]["at"], last.get((n, c))),
                            file=sys.stderr,
                        )
            sys.exit(1)
        time.sleep(POLL)
    # Stable: a second look finds the same lines everywhere.
    for n in names:
        got = conns[n].whatsat(clients)
        for c in clients:
            if got[c] != state[c]["at"]:
                sys.exit("%s changed its line for %s to %r" % (n, c, got[c]))
        conns[n].close()
    times = []
    for c in clients:
        start = since if since is not None else state[c]["sent"]
        times.append(max(seen[(n, c)] for n in names) - start)
    print("times %d %s" % (len(times), " ".join("%.4f" % t for t in times)))


def ready(servers, names, timeout):
    deadline = time.time() + timeout
    for n in names:
        while True:
            try:
                socket.create_connection(addr(servers[n]), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("%s is not accepting connections" % n)
                time.sleep(POLL)


def main(argv):
    cmd, servers = argv[1], load(argv[2])
    rest = argv[3:]
    opts = {}
    args = []
    i = 0
    while i < len(rest):
        if rest[i].startswith("--"):
            opts[rest[i][2:]] = rest[i + 1]
            i += 2
        else:
            args.append(rest[i])
            i += 1
    if cmd == "send":
        send(servers, args[0], args[1:])
        if "wait" in opts:
            wait(servers, args[0], opts["wait"].split(","), float(opts["timeout"]), None)
    elif cmd == "wait":
        since = float(opts["since"]) if "since" in opts else None
        wait(servers, args[0], args[1].split(","), float(opts["timeout"]), since)
    elif cmd == "ready":
        ready(servers, args[0].split(","), float(opts["timeout"]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
