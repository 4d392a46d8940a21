//! One nonblocking client connection of a herd mode's mio loop: its
//! output and input buffers, written and read until `WouldBlock`.

use std::io::{self, Read, Write};

use crate::Result;

/// A client connection's socket and buffers.
pub struct Wire {
    pub stream: mio::net::TcpStream,
    /// For error messages.
    pub name: String,
    pub out: Vec<u8>,
    out_pos: usize,
    pub inbuf: Vec<u8>,
    /// The server closed (or reset) the connection.
    pub eof: bool,
}

impl Wire {
    pub fn new(stream: std::net::TcpStream, name: String) -> Result<Wire> {
        stream.set_nonblocking(true)?;
        Ok(Wire {
            stream: mio::net::TcpStream::from_std(stream),
            name,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inbuf: Vec::with_capacity(64 * 1024),
            eof: false,
        })
    }

    /// Writes what is queued until done or `WouldBlock`.
    pub fn flush(&mut self) -> Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(format!("{}: write returned 0", self.name).into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{}: write: {e}", self.name).into()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Reads what is queued (to the end of the stream when `closing`).
    /// More than `max_buffered` bytes without the reader consuming them is
    /// an error: a server that sends an endless answer must not grow this
    /// buffer without bound.
    pub fn read_available(
        &mut self,
        scratch: &mut [u8],
        closing: bool,
        max_buffered: usize,
    ) -> Result<()> {
        loop {
            if self.inbuf.len() > max_buffered {
                return Err(format!(
                    "{}: over {max_buffered} bytes of input without a complete answer",
                    self.name
                )
                .into());
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    // A short read emptied the socket (see echo.rs).
                    if n < scratch.len() && !closing {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.eof = true;
                    return Ok(());
                }
                Err(e) => return Err(format!("{}: read: {e}", self.name).into()),
            }
        }
    }
}

/// The position of the first `\n` in `buf`.
pub fn find_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}
