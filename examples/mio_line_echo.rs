//! The floor for gyre's line echo: the same `\n` echo written directly on
//! mio, with no reactor, no protocol objects and no dynamic dispatch.
//!
//! `cargo run --release --example mio_line_echo -- 127.0.0.1:0` prints
//! `mio_line_echo listening on ADDRESS` (scripts read the port from it) and
//! echoes every `\n`-terminated line; a line over 4,096 bytes closes the
//! connection. One thread, edge-triggered, read and write until
//! `WouldBlock`, one write per readiness event: what a careful hand-written
//! loop does, and so the lowest cost a reactor can aim for. The benchmarks
//! (`benches/dispatch.rs`, `benches/peers/run.sh`) measure gyre against it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// Longest line echoed; a longer one closes the connection (as line_echo).
const MAX_LINE: usize = 4096;
const LISTENER: Token = Token(usize::MAX);

/// One connection: the partial line read so far and what is left to send.
struct Conn {
    stream: TcpStream,
    partial: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl Conn {
    /// Appends the complete lines of `data` to the output; keeps the rest.
    /// Returns false if a line is too long.
    fn take_lines(&mut self, data: &[u8]) -> bool {
        let mut rest = data;
        if !self.partial.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial.extend_from_slice(&rest[..=i]);
                    self.out.extend_from_slice(&self.partial);
                    self.partial.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    return self.partial.len() <= MAX_LINE;
                }
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if i > MAX_LINE {
                return false;
            }
            self.out.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        self.partial.len() <= MAX_LINE
    }

    /// Reads until `WouldBlock`. Returns false when the connection is done.
    fn on_readable(&mut self, scratch: &mut [u8]) -> bool {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return false,
                Ok(n) => {
                    if !self.take_lines(&scratch[..n]) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Writes until done or `WouldBlock`. Returns false on an error.
    fn flush(&mut self) -> bool {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return false,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        true
    }
}

/// Serves line echo on `listener` forever (or until a poll error).
pub fn serve(listener: std::net::TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    Token(slot),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_err()
                            {
                                free.push(slot);
                                continue;
                            }
                            conns[slot] = Some(Conn {
                                stream,
                                partial: Vec::new(),
                                out: Vec::new(),
                                out_pos: 0,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // Out of descriptors and the like: try again on the next event.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let mut alive = true;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                alive = conn.on_readable(&mut scratch);
            }
            // Whatever was read is answered even if the peer is closing.
            if !conn.flush() {
                alive = false;
            }
            if !alive || (event.is_write_closed() && conn.out_pos < conn.out.len()) {
                if let Some(mut conn) = conns[slot].take() {
                    let _ = poll.registry().deregister(&mut conn.stream);
                }
                free.push(slot);
            }
        }
    }
}

#[allow(dead_code)] // Unused where the bench includes this file as a module.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string())
        .parse()
        .map_err(|e| format!("usage: mio_line_echo [ADDRESS:PORT] ({e})"))?;
    let listener = std::net::TcpListener::bind(addr)?;
    // Scripts read this line to learn the port when 0 was asked.
    println!("mio_line_echo listening on {}", listener.local_addr()?);
    serve(listener)?;
    Ok(())
}
