//! [`Stream`]: the socket under a connection, TCP or Unix-domain, so that
//! one connection type ([`Conn`](crate::conn::Conn)), one accept loop and
//! one connector serve both.
//!
//! Both kinds are byte streams with the same nonblocking `read`, `write`,
//! `shutdown` and pending-error semantics, so everything above this enum
//! is shared. What differs is stated here, once:
//!
//! - `set_nodelay` applies to TCP only; a Unix socket has no Nagle
//!   algorithm, so it succeeds there and does nothing.
//! - An abort: TCP sets a zero linger so the close sends RST. A Unix
//!   socket has no RST: its peer reads EOF, or `ECONNRESET` when the
//!   aborting side had unread input (Linux marks the peer so when a socket
//!   closes with data in its receive queue).
//! - Peer credentials (`SO_PEERCRED`) exist for Unix sockets only.
//!
//! Writing to a peer that is gone is an `EPIPE` error for that connection,
//! never a `SIGPIPE`, for both kinds and whatever the process's `SIGPIPE`
//! disposition: std (under mio) sends with `MSG_NOSIGNAL`. Tested with
//! `SIGPIPE` at its default action in `reactor/tests/unix_sigpipe.rs`.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};

use crate::address::{Address, UnixAddr};
use crate::unix::PeerCredentials;

/// A connected stream socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }

    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// The socket's pending error (`SO_ERROR`), clearing it.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// The peer's address; `NotConnected` while a connect is in flight.
    pub(crate) fn peer_address(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Address::Inet),
            Stream::Unix(s) => s.peer_addr().map(|a| Address::Unix(UnixAddr::from_std(&a))),
        }
    }

    pub(crate) fn local_address(&self) -> io::Result<Address> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Address::Inet),
            Stream::Unix(s) => s
                .local_addr()
                .map(|a| Address::Unix(UnixAddr::from_std(&a))),
        }
    }

    /// `TCP_NODELAY`; nothing to do for a Unix socket.
    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    /// Makes the coming close an abortive one where the protocol has one:
    /// a zero linger, so TCP sends RST rather than FIN.
    pub(crate) fn prepare_abort(&self) {
        if let Stream::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
        }
    }

    /// The peer's credentials, for a Unix socket.
    pub(crate) fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        match self {
            Stream::Tcp(_) => Err(crate::unix::credentials_unsupported()),
            Stream::Unix(s) => crate::unix::peer_credentials(s),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}
