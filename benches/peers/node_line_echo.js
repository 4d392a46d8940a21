// The `\n` line echo on Node.js `net` (no npm packages).
//
//     node node_line_echo.js [PORT]    (0, the default, picks a free port)
//
// Prints `node_line_echo listening on 127.0.0.1:PORT` once listening.
// setNoDelay on every socket; each line is written back as its own
// `write`, corked for the duration of one 'data' event so that a pipelined
// burst goes out in one syscall. A partial line over 4,096 bytes closes the
// connection, as in gyre's line_echo.
'use strict';

const net = require('net');

const MAX_LINE = 4096;
const NEWLINE = 10;

const server = net.createServer({ noDelay: true }, (sock) => {
  sock.setNoDelay(true);
  let partial = null;
  sock.on('data', (chunk) => {
    const buf = partial ? Buffer.concat([partial, chunk]) : chunk;
    let start = 0;
    let nl;
    sock.cork();
    while ((nl = buf.indexOf(NEWLINE, start)) !== -1) {
      sock.write(buf.subarray(start, nl + 1));
      start = nl + 1;
    }
    sock.uncork();
    partial = start < buf.length ? Buffer.from(buf.subarray(start)) : null;
    if (partial && partial.length > MAX_LINE) {
      sock.destroy();
    }
  });
  sock.on('error', () => {});
});

const port = Number(process.argv[2] || 0);
server.listen({ port, host: '127.0.0.1', backlog: 1024 }, () => {
  console.log(`node_line_echo listening on 127.0.0.1:${server.address().port}`);
});
