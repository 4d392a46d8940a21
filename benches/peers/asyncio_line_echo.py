"""The `\n` line echo on Python asyncio's Protocol API (default event loop).

    python asyncio_line_echo.py [PORT]    (0, the default, picks a free port)

Prints `asyncio_line_echo listening on 127.0.0.1:PORT` once listening.
asyncio sets TCP_NODELAY on its TCP transports; it is set again here to be
explicit. The complete lines of each read are answered with one write. A
partial line over 4,096 bytes closes the connection, as in gyre's line_echo.
"""

import asyncio
import socket
import sys

MAX_LINE = 4096


class EchoLines(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.partial = b""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.partial:
            data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if lines:
            out = []
            for line in lines:
                out.append(line)
                out.append(b"\n")
            self.transport.write(b"".join(out))
        if len(self.partial) > MAX_LINE:
            self.transport.close()


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoLines, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"asyncio_line_echo listening on 127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
