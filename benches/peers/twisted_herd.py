"""The herd of HERD.md on Twisted, written the way the course reports
describe theirs: the peer gyre's herd is measured against.

    python twisted_herd.py --server NAME [--config FILE] [--log-dir DIR]

One process runs one server of the herd (`--config`: the herd's JSON, the
same file gyre's herd reads; default: HERD.md's built-in five servers).
Prints `twisted_herd: NAME listening on HOST:PORT` once listening, so that
benches/peers/run.sh can wait for it.

The design, as in the reports:
- `HerdProtocol` is a `LineReceiver`; `lineReceived` splits the line into
  words and calls the handler for the first word. A line that is not a
  valid command is answered `? ` and the line.
- `HerdFactory` is the `ServerFactory`: it holds the server's name, its
  neighbours, the clients' locations (a dict: client ID -> newest AT line)
  and the links that are up.
- Each neighbour has its own `ReconnectingClientFactory` (back-off from
  0.1 s, doubling, capped at 1 s) that dials it and keeps dialling while
  it is down. A dialled link starts with `PEER <own name>`; a connection
  whose first line is `PEER <a neighbour>` is that neighbour's link. Lines
  on a link are never answered.
- Flooding: an accepted location is stored and sent to every link but the
  one it came from; a location is accepted only if it is newer than the
  stored one (by the client's time, then by the AT line, so every server
  breaks ties alike). A link that comes up is sent the whole store.
- Logging: Python's `logging`, one file per server (`NAME.log` in
  `--log-dir`), every line received and sent with the peer's address,
  connections made and lost, links up and down.

What it leaves out, unlike gyre's herd: WHATSAT (Places) is answered `? `
(the herd benchmark measures IAMAT and flooding only); peer links are plain
TCP (no TLS, anyone may claim to be a neighbour, as in the course); no rate
or connection limits; no log rotation.
"""

import argparse
import json
import logging
import os
import re
import sys
import time

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402
from twisted.internet.interfaces import IHalfCloseableProtocol  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402
from zope.interface import implementer  # noqa: E402

DEFAULT_HERD = {
    "servers": [
        {"name": "Alford", "host": "127.0.0.1", "port": 12000},
        {"name": "Ball", "host": "127.0.0.1", "port": 12001},
        {"name": "Hamilton", "host": "127.0.0.1", "port": 12002},
        {"name": "Holiday", "host": "127.0.0.1", "port": 12003},
        {"name": "Welsh", "host": "127.0.0.1", "port": 12004},
    ],
    "links": [
        ["Alford", "Hamilton"],
        ["Alford", "Welsh"],
        ["Ball", "Holiday"],
        ["Ball", "Welsh"],
        ["Hamilton", "Holiday"],
    ],
}

MAX_CLIENT_ID = 256
MAX_AHEAD_NS = 10 * 60 * 10**9  # a client time at most 10 minutes ahead
LOCATION = re.compile(rb"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)$")
TIME = re.compile(rb"^(\d{1,20})(?:\.(\d{1,9}))?$")
DIFF = re.compile(rb"^[+-]\d+\.\d{9}$")

log = logging.getLogger("herd")


def parse_location(field):
    """`+34.068930-118.445127` -> True if it is a valid ISO 6709 pair."""
    m = LOCATION.match(field)
    if not m:
        return False
    return abs(float(m.group(1))) <= 90 and abs(float(m.group(2))) <= 180


def parse_time_ns(field):
    """The client's POSIX time in nanoseconds (exact), or None."""
    m = TIME.match(field)
    if not m:
        return None
    frac = (m.group(2) or b"").ljust(9, b"0")
    return int(m.group(1)) * 10**9 + int(frac)


def format_diff(ns):
    """Nanoseconds as signed seconds with exactly 9 fractional digits."""
    sign = b"-" if ns < 0 else b"+"
    secs, frac = divmod(abs(ns), 10**9)
    return sign + b"%d.%09d" % (secs, frac)


@implementer(IHalfCloseableProtocol)
class HerdProtocol(LineReceiver):
    """One connection: a client's, or a neighbour's link. A client may
    half-close: its last line (even without a line end) is answered, then
    the connection is closed once the answers are written."""

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 + 1024

    def __init__(self, dialled=None):
        # The neighbour this side dialled (a link from the start), if any.
        self.dialled = dialled
        self.link_name = None
        self.first_line = True
        self.peer = "?"

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        addr = self.transport.getPeer()
        self.peer = "%s:%d" % (addr.host, addr.port)
        log.info("connection from %s", self.peer)
        if self.dialled is not None:
            self.send(b"PEER " + self.factory.name)
            self.link_name = self.dialled
            self.factory.link_up(self.dialled, self)

    def connectionLost(self, reason):
        log.info("connection %s lost: %s", self.peer, reason.getErrorMessage())
        if self.link_name is not None:
            self.factory.link_lost(self.link_name, self)

    def readConnectionLost(self):
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self.lineReceived(line)
        self.transport.loseConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()

    def lineLengthExceeded(self, line):
        log.warning("line over %d bytes from %s: closing", self.MAX_LENGTH, self.peer)
        self.transport.loseConnection()

    def send(self, line):
        log.info("sent to %s: %r", self.peer, line)
        self.sendLine(line)

    def lineReceived(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        log.info("received from %s: %r", self.peer, line)
        words = line.split()
        if self.link_name is not None:
            # A neighbour: never answered.
            if len(words) == 6 and words[0] == b"AT":
                self.factory.handle_at(words, self.link_name)
            else:
                log.warning("dropped a line from link %s: %r", self.link_name, line)
            return
        first, self.first_line = self.first_line, False
        if not words:
            self.invalid(line)
        elif words[0] == b"IAMAT" and len(words) == 4:
            self.handle_iamat(line, words)
        elif words[0] == b"PEER" and len(words) == 2 and first and words[1] in self.factory.neighbours:
            self.link_name = words[1]
            self.factory.link_up(self.link_name, self)
        else:
            # WHATSAT included: this herd has no Places service.
            self.invalid(line)

    def invalid(self, line):
        self.send(b"? " + line)

    def handle_iamat(self, line, words):
        _, client, location, client_time = words
        time_ns = parse_time_ns(client_time)
        now = time.time_ns()
        if (
            len(client) > MAX_CLIENT_ID
            or not parse_location(location)
            or time_ns is None
            or time_ns > now + MAX_AHEAD_NS
        ):
            self.invalid(line)
            return
        at = b" ".join(
            [b"AT", self.factory.name, format_diff(now - time_ns), client, location, client_time]
        )
        self.send(at)
        self.factory.offer(client, time_ns, at, None)


class HerdFactory(protocol.ServerFactory):
    """One server: its name, neighbours, store and links."""

    protocol = HerdProtocol

    def __init__(self, name, neighbours):
        self.name = name
        self.neighbours = neighbours
        self.store = {}  # client ID -> (time_ns, AT line)
        self.links = {}  # neighbour name -> HerdProtocol

    def handle_at(self, words, from_name):
        _, server, diff, client, location, client_time = words
        time_ns = parse_time_ns(client_time)
        if (
            time_ns is None
            or not DIFF.match(diff)
            or not parse_location(location)
            or len(client) > MAX_CLIENT_ID
        ):
            log.warning("dropped a malformed AT from %s", from_name)
            return
        self.offer(client, time_ns, b" ".join(words), from_name)

    def offer(self, client, time_ns, at, from_name):
        """Stores `at` if it is the newest for `client`, and floods it."""
        old = self.store.get(client)
        if old is not None and (time_ns, at) <= old:
            return
        self.store[client] = (time_ns, at)
        for name, link in list(self.links.items()):
            if name != from_name:
                link.send(at)

    def link_up(self, name, proto):
        log.info("link to %s up (%s)", name.decode(), proto.peer)
        self.links[name] = proto
        for _, at in list(self.store.values()):
            proto.send(at)

    def link_lost(self, name, proto):
        if self.links.get(name) is proto:
            del self.links[name]
            log.info("link to %s down", name.decode())


class LinkClientFactory(protocol.ReconnectingClientFactory):
    """Dials one neighbour, and again whenever the link drops."""

    initialDelay = 0.1
    maxDelay = 1.0
    factor = 2.0

    def __init__(self, herd, neighbour):
        self.herd = herd
        self.neighbour = neighbour

    def buildProtocol(self, addr):
        self.resetDelay()
        p = HerdProtocol(dialled=self.neighbour)
        p.factory = self.herd
        return p

    def clientConnectionFailed(self, connector, reason):
        log.info("dialling %s failed: %s", self.neighbour.decode(), reason.getErrorMessage())
        protocol.ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--config")
    parser.add_argument("--log-dir", default="logs")
    args = parser.parse_args()
    herd = DEFAULT_HERD
    if args.config:
        with open(args.config) as f:
            herd = json.load(f)
    servers = {s["name"]: s for s in herd["servers"]}
    if args.server not in servers:
        sys.exit("twisted_herd: the herd has no server named %r" % args.server)
    neighbours = set()
    for a, b in herd["links"]:
        if a == args.server:
            neighbours.add(b)
        if b == args.server:
            neighbours.add(a)

    os.makedirs(args.log_dir, exist_ok=True)
    logging.basicConfig(
        filename=os.path.join(args.log_dir, args.server + ".log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    me = servers[args.server]
    factory = HerdFactory(args.server.encode(), {n.encode() for n in neighbours})
    port = reactor.listenTCP(me["port"], factory, backlog=1024, interface=me["host"])
    log.info("%s listening on %s:%d", args.server, me["host"], port.getHost().port)
    for n in sorted(neighbours):
        peer = servers[n]
        reactor.connectTCP(peer["host"], peer["port"], LinkClientFactory(factory, n.encode()))
    print(
        "twisted_herd: %s listening on %s:%d" % (args.server, me["host"], port.getHost().port),
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main()
