//! The Protocol/Factory model: what a connection's user code implements.

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::transport::Transport;

/// The user side of one connection (Twisted's `IProtocol`).
///
/// The reactor calls these methods from its loop, never re-entrantly: a
/// [`Transport`] method called from inside them (even `abort_connection`)
/// never calls back into the protocol on the same stack, and
/// `connection_lost` is called exactly once, after the method that closed
/// the connection has returned.
///
/// A panic in any of them is caught by the reactor, logged with the peer's
/// address, and aborts only this connection.
///
/// ```
/// use gyre_reactor::{Protocol, Transport};
///
/// /// Echoes every byte back.
/// #[derive(Default)]
/// struct Echo {
///     transport: Option<Transport>,
/// }
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: Transport) {
///         self.transport = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.transport {
///             t.write(data);
///         }
///     }
/// }
/// ```
pub trait Protocol: 'static {
    /// The connection is up; keep `transport` to write and close.
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Bytes arrived. `data` is borrowed from the reactor's read buffer and
    /// is only valid during the call; copy what you keep.
    fn data_received(&mut self, data: &[u8]);

    /// The peer closed its write side (a half-close, or the first half of a
    /// full close). Return `true` to keep our write side open, so answers
    /// can still be written before the protocol calls
    /// [`Transport::lose_connection`]; the default `false` loses the
    /// connection (after flushing what is buffered).
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is closed, for `reason`. Called once.
    fn connection_lost(&mut self, reason: ConnectionLost) {
        let _ = reason;
    }
}

/// A boxed protocol is a protocol (factories that choose among several
/// protocol types return `Box<dyn Protocol>`).
impl Protocol for Box<dyn Protocol> {
    fn connection_made(&mut self, transport: Transport) {
        (**self).connection_made(transport)
    }
    fn data_received(&mut self, data: &[u8]) {
        (**self).data_received(data)
    }
    fn eof_received(&mut self) -> bool {
        (**self).eof_received()
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        (**self).connection_lost(reason)
    }
}

/// Why a connection closed, as given to [`Protocol::connection_lost`].
#[derive(Debug)]
pub enum ConnectionLost {
    /// Closed in order: [`Transport::lose_connection`] finished, or the peer
    /// closed and we did too (Twisted's `ConnectionDone`).
    Done,
    /// Closed by [`Transport::abort_connection`]; buffered data was dropped.
    Aborted,
    /// A protocol method panicked; the connection was aborted.
    Panicked(String),
    /// The reactor shut down.
    Shutdown,
    /// An I/O error (reset by the peer, broken pipe, ...).
    Error(io::Error),
}

impl Clone for ConnectionLost {
    /// Clones; an I/O error is copied as its kind and message.
    fn clone(&self) -> Self {
        match self {
            ConnectionLost::Done => ConnectionLost::Done,
            ConnectionLost::Aborted => ConnectionLost::Aborted,
            ConnectionLost::Panicked(m) => ConnectionLost::Panicked(m.clone()),
            ConnectionLost::Shutdown => ConnectionLost::Shutdown,
            ConnectionLost::Error(e) => {
                ConnectionLost::Error(io::Error::new(e.kind(), e.to_string()))
            }
        }
    }
}

impl ConnectionLost {
    /// Whether the close was orderly ([`ConnectionLost::Done`] or
    /// [`ConnectionLost::Shutdown`]).
    pub fn is_clean(&self) -> bool {
        matches!(self, ConnectionLost::Done | ConnectionLost::Shutdown)
    }
}

impl fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionLost::Done => f.write_str("connection closed cleanly"),
            ConnectionLost::Aborted => f.write_str("connection aborted"),
            ConnectionLost::Panicked(msg) => write!(f, "protocol panicked: {msg}"),
            ConnectionLost::Shutdown => f.write_str("reactor shut down"),
            ConnectionLost::Error(e) => write!(f, "connection lost: {e}"),
        }
    }
}

impl Error for ConnectionLost {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ConnectionLost::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// Something that writes into a transport and can be told to pause when its
/// write buffer is full (Twisted's `IPushProducer`).
///
/// The transport calls `pause_producing` after its buffer rose above the
/// high-water mark and `resume_producing` after it drained below the
/// low-water mark. These calls are made from the reactor loop, not from
/// inside [`Transport::write`], so a protocol may be its own producer.
pub trait Producer {
    /// Stop writing until `resume_producing`.
    fn pause_producing(&self);
    /// Writing may go on.
    fn resume_producing(&self);
    /// The transport closed; stop for good.
    fn stop_producing(&self) {}
}

/// Builds a protocol for each accepted connection (Twisted's `Factory`).
///
/// One factory may serve several ports (share it through
/// [`FactoryRef`](crate::FactoryRef)); `start_factory` runs when the first
/// port starts using it and `stop_factory` when the last one stops.
pub trait Factory: 'static {
    /// The protocol this factory builds.
    type Protocol: Protocol;

    /// A protocol for a new connection from `peer`, or `None` to refuse it
    /// (the connection is closed at once).
    ///
    /// For a Unix-domain connection, which has no internet address, `peer`
    /// is [`NO_INET_ADDR`](crate::address::NO_INET_ADDR) (`0.0.0.0:0`);
    /// the protocol's transport tells who connected
    /// ([`Transport::peer_address`], [`Transport::peer_credentials`]). See
    /// [`address`](crate::address).
    fn build_protocol(&mut self, peer: SocketAddr) -> Option<Self::Protocol>;

    /// The first port started using this factory.
    fn start_factory(&mut self) {}

    /// The last port stopped using this factory.
    fn stop_factory(&mut self) {}

    /// Whether the reactor may call into this factory now (default `true`).
    ///
    /// **Neither a factory nor a connector callback is ever lost.** A
    /// factory kept in a cell that user code may hold (`Rc<RefCell<F>>`)
    /// answers `false` while the cell is borrowed; the reactor then does not
    /// call it, and delivers the call (a `build_protocol` for an accepted
    /// or completed connection, `start_factory`, `stop_factory`, and a
    /// [`ClientFactory`](crate::ClientFactory)'s callbacks) later, from its
    /// loop, in order, once it answers `true`. A wrapper factory forwards
    /// the question to what it wraps.
    fn ready_for_calls(&self) -> bool {
        true
    }
}
