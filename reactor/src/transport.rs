//! [`Transport`]: the handle a protocol writes to and closes.
//!
//! # Contract
//!
//! Every transport (TCP, Unix-domain sockets, TLS, the in-memory ones, and
//! any added later) keeps these rules; the transport conformance suite
//! checks them.
//!
//! - **Any readiness event may carry read data, EOF or an error, a connect
//!   completion included**: a server that writes (or closes) at once is
//!   heard by a client even when the connect completion and the data come
//!   in one edge-triggered event.
//! - **A read burst stops at the high-water mark**: a write buffer holds at
//!   most its high-water mark plus one read (64 KiB for TCP) when its
//!   producer pauses the reading side, as a proxy does.
//! - **A drained buffer gives back memory beyond a small floor**
//!   ([`WRITE_BUFFER_FLOOR`]); see [`Transport::buffer_capacity`].
//! - **Reading stops at `lose_connection`**: no data is delivered after it.
//! - **A close with unread input lingers; it never resets answers away**:
//!   `lose_connection` flushes, shuts the write side, discards input until
//!   the peer's EOF or the linger time-out
//!   ([`ReactorBuilder::linger_timeout`](crate::ReactorBuilder::linger_timeout)),
//!   then closes; `connection_lost` comes when the socket really closes.
//! - **A reset after EOF is noticed**: it closes the connection with the
//!   error.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::address::Address;
use crate::protocol::Producer;
use crate::unix::PeerCredentials;

/// Default write-buffer high-water mark: above it, a registered producer is
/// paused.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default write-buffer low-water mark: below it, a paused producer resumes.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;
/// The capacity a TCP write buffer keeps once drained (16 KiB): anything a
/// burst grew beyond it is given back, so an idle connection holds at most
/// this much however much it once carried, while messages up to this size
/// are written without allocating.
pub const WRITE_BUFFER_FLOOR: usize = 16 * 1024;

/// What a transport does; implemented by TCP connections, TLS, and the
/// in-memory transports in [`testing`](crate::testing). Protocols use it
/// through [`Transport`]. Implementations must never call into the protocol
/// from these methods.
pub trait TransportBackend {
    /// Queues bytes for sending. After a close, does nothing.
    fn write(&self, data: &[u8]);
    /// Queues several buffers, in order.
    fn write_sequence(&self, parts: &[&[u8]]) {
        for part in parts {
            self.write(part);
        }
    }
    /// Flushes what is buffered, then closes.
    fn lose_connection(&self);
    /// Flushes what is buffered, then shuts down the write side; reading goes on.
    fn half_close(&self);
    /// Drops what is buffered and closes now.
    fn abort_connection(&self);
    /// Whether a close (lose, abort) was asked for or has happened.
    fn is_closing(&self) -> bool;
    /// The peer's address, when known.
    fn peer_addr(&self) -> Option<SocketAddr>;
    /// Our address, when known.
    fn local_addr(&self) -> Option<SocketAddr>;
    /// The peer's address, TCP or Unix, when known. The default wraps
    /// [`peer_addr`](Self::peer_addr); a backend over a Unix socket (or
    /// over another transport, as TLS is) says more.
    fn peer_address(&self) -> Option<Address> {
        self.peer_addr().map(Address::Inet)
    }
    /// Our address, TCP or Unix, when known. The default wraps
    /// [`local_addr`](Self::local_addr).
    fn local_address(&self) -> Option<Address> {
        self.local_addr().map(Address::Inet)
    }
    /// The peer process's credentials (Unix-domain sockets). The default is
    /// an `Unsupported` error.
    fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        Err(crate::unix::credentials_unsupported())
    }
    /// Stops delivering data (and reading from the socket) until resumed.
    fn pause_reading(&self);
    /// Delivers data again.
    fn resume_reading(&self);
    /// Sets `TCP_NODELAY` (on by default for TCP).
    fn set_nodelay(&self, on: bool) -> io::Result<()>;
    /// Bytes buffered and not yet handed to the kernel.
    fn buffered_len(&self) -> usize;
    /// Bytes of memory the write buffer holds (its capacity), for
    /// diagnostics and tests. A drained TCP buffer keeps at most
    /// [`WRITE_BUFFER_FLOOR`]. The default, for backends that do not say,
    /// is 0.
    fn buffer_capacity(&self) -> usize {
        0
    }
    /// Sets the write-buffer high- and low-water marks.
    fn set_write_buffer_limits(&self, high: usize, low: usize);
    /// Registers the producer to pause and resume as the buffer crosses the marks.
    fn register_producer(&self, producer: Rc<dyn Producer>);
    /// Forgets the producer.
    fn unregister_producer(&self);
    /// The backend as `Any`, so layers written outside the reactor (TLS's
    /// `start_tls`) can find their own backend behind a [`Transport`].
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// Sets (or, with `None`, clears) the write source: see
    /// [`Transport::set_write_source`]. Returns whether this backend
    /// supports one; the default does not.
    fn set_write_source(&self, source: Option<WriteSource>) -> bool {
        let _ = source;
        false
    }
    /// Queues the transport for the loop's next flush, so that its write
    /// source runs then: see [`Transport::request_flush`]. The default does
    /// nothing.
    fn request_flush(&self) {}
}

/// What a layer above a transport gives
/// [`Transport::set_write_source`]: called just before the loop writes the
/// transport's buffer to its socket.
pub type WriteSource = Rc<dyn Fn()>;

/// A connection as its protocol sees it: a cheap `Clone` handle (Twisted's
/// `ITransport`). Every method is safe to call from inside any protocol or
/// timer callback, including on a closed connection (then it does nothing).
///
/// Writes are buffered and sent by the reactor when the current callback
/// returns; `write` never calls back into the protocol.
///
/// # Contract
///
/// - Any readiness event may carry read data, EOF or an error, a connect
///   completion included: data a server sends on accept reaches the
///   client's `data_received`, and a server that closes at once reaches its
///   `connection_lost`.
/// - A read burst stops at the high-water mark: with a producer registered
///   (for instance a proxy's other side, which calls `pause_reading` in
///   `pause_producing`), the buffer holds at most the high-water mark plus
///   one read.
/// - A drained buffer gives back memory beyond [`WRITE_BUFFER_FLOOR`].
/// - Reading stops at [`lose_connection`](Self::lose_connection): later
///   input is discarded, never delivered.
/// - A close with unread input lingers: after the flush the write side is
///   shut (the peer reads EOF), input is discarded until the peer's EOF or
///   the linger time-out, and only then is the socket closed, so answers
///   written before the close are never reset away. `connection_lost` is
///   delivered when the socket really closes.
/// - A reset after EOF is noticed: a connection kept open after
///   `eof_received` closes with the error.
#[derive(Clone)]
pub struct Transport {
    backend: Rc<dyn TransportBackend>,
}

impl Transport {
    /// Wraps a backend (for transports written outside the reactor, such as TLS).
    pub fn new(backend: Rc<dyn TransportBackend>) -> Transport {
        Transport { backend }
    }

    /// Queues `data` for sending.
    pub fn write(&self, data: &[u8]) {
        self.backend.write(data)
    }

    /// Queues several buffers, in order.
    pub fn write_sequence(&self, parts: &[&[u8]]) {
        self.backend.write_sequence(parts)
    }

    /// Sends what is buffered, then closes (Twisted's `loseConnection`).
    /// Reading stops at once: data arriving later is discarded. Over TCP the
    /// close lingers (see the [contract](Self#contract)): after the flush our
    /// write side is shut and input is discarded until the peer's EOF or the
    /// linger time-out; `connection_lost` comes when the socket closes.
    pub fn lose_connection(&self) {
        self.backend.lose_connection()
    }

    /// Sends what is buffered, then shuts our write side (the peer reads
    /// EOF); we keep reading (Twisted's `loseWriteConnection`).
    pub fn half_close(&self) {
        self.backend.half_close()
    }

    /// Drops what is buffered and closes now (Twisted's `abortConnection`).
    /// Over TCP the close sends RST, so the peer learns the close was not
    /// clean (its `connection_lost` gets a reset error, not an orderly end).
    pub fn abort_connection(&self) {
        self.backend.abort_connection()
    }

    /// Whether the connection is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.backend.is_closing()
    }

    /// The peer's internet address, when known: `None` for a Unix-domain
    /// connection (use [`peer_address`](Self::peer_address)).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.backend.peer_addr()
    }

    /// Our internet address, when known: `None` for a Unix-domain
    /// connection (use [`local_address`](Self::local_address)).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.backend.local_addr()
    }

    /// The peer's address, TCP or Unix-domain, when known. For a
    /// connection accepted on a Unix port it is usually
    /// [`UnixAddr::Unnamed`](crate::UnixAddr::Unnamed) (clients seldom
    /// bind); for a client, the path (or abstract name) it connected to.
    /// See [`address`](crate::address) for how the `SocketAddr` APIs
    /// answer for Unix connections.
    ///
    /// ```
    /// use gyre_reactor::testing::StringTransport;
    /// use gyre_reactor::Address;
    ///
    /// let t = StringTransport::new();
    /// assert_eq!(t.transport().peer_address(), t.transport().peer_addr().map(Address::Inet));
    /// ```
    pub fn peer_address(&self) -> Option<Address> {
        self.backend.peer_address()
    }

    /// Our address, TCP or Unix-domain, when known: for a connection
    /// accepted on a Unix port, the port's path or abstract name.
    pub fn local_address(&self) -> Option<Address> {
        self.backend.local_address()
    }

    /// Who is on the other end of a Unix-domain connection: the peer
    /// process's pid, uid and gid as the kernel recorded them when the
    /// connection was made (`SO_PEERCRED`; for a client, the listener's
    /// at the time it called `listen`). They cannot be forged by the peer,
    /// so a server may authorize by uid. An `Unsupported` error for TCP
    /// and other transports; `NotConnected` once closed.
    ///
    /// ```no_run
    /// use gyre_reactor::{Protocol, Transport};
    ///
    /// /// Serves only the user the server runs as.
    /// struct SameUserOnly;
    /// impl Protocol for SameUserOnly {
    ///     fn connection_made(&mut self, t: Transport) {
    ///         match t.peer_credentials() {
    ///             Ok(peer) if peer.uid == rustix::process::getuid().as_raw() => t.write(b"welcome\n"),
    ///             _ => t.abort_connection(),
    ///         }
    ///     }
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    /// ```
    pub fn peer_credentials(&self) -> io::Result<PeerCredentials> {
        self.backend.peer_credentials()
    }

    /// Stops delivering data until [`resume_reading`](Self::resume_reading).
    pub fn pause_reading(&self) {
        self.backend.pause_reading()
    }

    /// Delivers data again after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        self.backend.resume_reading()
    }

    /// Sets `TCP_NODELAY` (on by default). Over a Unix-domain socket, which
    /// has no Nagle algorithm, it does nothing and succeeds.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.backend.set_nodelay(on)
    }

    /// Bytes written but not yet handed to the kernel.
    pub fn buffered_len(&self) -> usize {
        self.backend.buffered_len()
    }

    /// Bytes of memory the write buffer holds (its capacity); once drained,
    /// at most [`WRITE_BUFFER_FLOOR`] for TCP (0 for backends that do not
    /// say). For diagnostics and tests.
    pub fn buffer_capacity(&self) -> usize {
        self.backend.buffer_capacity()
    }

    /// Sets the write-buffer high- and low-water marks (defaults
    /// [`DEFAULT_HIGH_WATER`] and [`DEFAULT_LOW_WATER`]).
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.backend.set_write_buffer_limits(high, low.min(high))
    }

    /// Registers a producer, paused and resumed as the write buffer crosses
    /// its marks (Twisted's `registerProducer(producer, True)`).
    pub fn register_producer(&self, producer: Rc<dyn Producer>) {
        self.backend.register_producer(producer)
    }

    /// Forgets the registered producer.
    pub fn unregister_producer(&self) {
        self.backend.unregister_producer()
    }

    /// Registers a write source: a function the loop calls just before it
    /// writes this transport's buffered bytes to the socket, at every flush
    /// (see [`request_flush`](Self::request_flush)). A layer that turns
    /// many small writes into fewer, larger units (TLS: one record per
    /// flush instead of one per write) gathers what it is given during a
    /// callback and writes it to this transport from its source. `None`
    /// removes it. Returns whether the backend supports write sources (a
    /// TCP or Unix connection does); without one, a layer writes through
    /// at once.
    ///
    /// # Contract
    ///
    /// - The source runs on the loop thread, before the socket write of
    ///   the same flush: what it writes goes out in that flush.
    /// - It runs after the reactor's
    ///   [`before_writes`](crate::Reactor::before_writes) hooks, so a log
    ///   flushed there still precedes every byte sent.
    /// - It may run when there is nothing to add (it then writes nothing),
    ///   and it is not run for a connection that is already closed.
    /// - [`lose_connection`](Self::lose_connection) and
    ///   [`half_close`](Self::half_close) run it first, so what the layer
    ///   gathered before the close is sent before the FIN;
    ///   [`abort_connection`](Self::abort_connection) does not.
    /// - A panic in it is caught and logged; the flush goes on.
    ///
    /// ```
    /// use gyre_reactor::Transport;
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// /// Gathers lines and writes them as one chunk per flush.
    /// fn coalesce(transport: &Transport, gathered: Rc<RefCell<Vec<u8>>>) -> bool {
    ///     let t = transport.clone();
    ///     transport.set_write_source(Some(Rc::new(move || {
    ///         let chunk = std::mem::take(&mut *gathered.borrow_mut());
    ///         t.write(&chunk);
    ///     })))
    /// }
    /// ```
    ///
    /// (A source that holds its own transport, as here, makes a cycle
    /// until `set_write_source(None)`; hold a weak reference to the layer
    /// instead where the layer outlives the call.)
    pub fn set_write_source(&self, source: Option<WriteSource>) -> bool {
        self.backend.set_write_source(source)
    }

    /// Queues this transport for the loop's next flush even when nothing is
    /// buffered yet, so that its write source runs then. Cheap to call on
    /// every write: a transport already queued is not queued twice.
    pub fn request_flush(&self) {
        self.backend.request_flush()
    }

    /// The backend, if it is a `B` (for layers such as TLS that need to
    /// reach their own backend through a protocol's transport).
    pub fn backend<B: 'static>(&self) -> Option<&B> {
        self.backend.as_any()?.downcast_ref::<B>()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer_address())
            .field("local", &self.local_address())
            .finish()
    }
}
