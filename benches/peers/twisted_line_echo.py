"""The `\n` line echo on Twisted: LineReceiver, epoll reactor, TCP_NODELAY.

    python twisted_line_echo.py [PORT]    (0, the default, picks a free port)

Prints `twisted_line_echo listening on 127.0.0.1:PORT` once listening, so
that benches/peers/run.sh can read the port. A line over 4,096 bytes closes
the connection (LineReceiver's MAX_LENGTH), as in gyre's line_echo.
"""

import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402


class EchoLines(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 4096

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def lineReceived(self, line):
        self.sendLine(line)


class EchoFactory(protocol.Factory):
    protocol = EchoLines


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    listening = reactor.listenTCP(port, EchoFactory(), backlog=1024, interface="127.0.0.1")
    print(f"twisted_line_echo listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
