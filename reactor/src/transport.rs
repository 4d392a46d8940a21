//! [`Transport`]: the handle a protocol writes to and closes.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::protocol::Producer;

/// Default write-buffer high-water mark: above it, a registered producer is
/// paused.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default write-buffer low-water mark: below it, a paused producer resumes.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;

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
    /// Stops delivering data (and reading from the socket) until resumed.
    fn pause_reading(&self);
    /// Delivers data again.
    fn resume_reading(&self);
    /// Sets `TCP_NODELAY` (on by default for TCP).
    fn set_nodelay(&self, on: bool) -> io::Result<()>;
    /// Bytes buffered and not yet handed to the kernel.
    fn buffered_len(&self) -> usize;
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
}

/// A connection as its protocol sees it: a cheap `Clone` handle (Twisted's
/// `ITransport`). Every method is safe to call from inside any protocol or
/// timer callback, including on a closed connection (then it does nothing).
///
/// Writes are buffered and sent by the reactor when the current callback
/// returns; `write` never calls back into the protocol.
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
    pub fn lose_connection(&self) {
        self.backend.lose_connection()
    }

    /// Sends what is buffered, then shuts our write side (the peer reads
    /// EOF); we keep reading (Twisted's `loseWriteConnection`).
    pub fn half_close(&self) {
        self.backend.half_close()
    }

    /// Drops what is buffered and closes now (Twisted's `abortConnection`).
    pub fn abort_connection(&self) {
        self.backend.abort_connection()
    }

    /// Whether the connection is closing or closed.
    pub fn is_closing(&self) -> bool {
        self.backend.is_closing()
    }

    /// The peer's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.backend.peer_addr()
    }

    /// Our address, when known.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.backend.local_addr()
    }

    /// Stops delivering data until [`resume_reading`](Self::resume_reading).
    pub fn pause_reading(&self) {
        self.backend.pause_reading()
    }

    /// Delivers data again after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        self.backend.resume_reading()
    }

    /// Sets `TCP_NODELAY` (on by default).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.backend.set_nodelay(on)
    }

    /// Bytes written but not yet handed to the kernel.
    pub fn buffered_len(&self) -> usize {
        self.backend.buffered_len()
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

    /// The backend, if it is a `B` (for layers such as TLS that need to
    /// reach their own backend through a protocol's transport).
    pub fn backend<B: 'static>(&self) -> Option<&B> {
        self.backend.as_any()?.downcast_ref::<B>()
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("peer", &self.peer_addr())
            .field("local", &self.local_addr())
            .finish()
    }
}
