//! The outer protocols of the TLS layer, what the reactor calls:
//! [`TlsProtocol`] (TLS from the first byte) and [`StartTls`] (plaintext
//! first, TLS after a switch), and the [`start_tls_client`] /
//! [`start_tls_server`] switches. Each owns a [`TlsTransport`] and forwards
//! the reactor's calls to it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gyre_reactor::clock::Clock;
use gyre_reactor::{ConnectionLost, Protocol, Reactor, Transport};
use rustls::{ClientConfig, ServerConfig};

use super::config::{TlsError, TlsErrorKind};
use super::session::{client_machine, server_machine, TlsTransport};

/// A [`Protocol`] that runs `inner` over TLS on the transport it is given
/// (TLS from the first byte; see [`StartTls`] for a switch mid-connection).
///
/// The inner protocol's `connection_made` runs when the handshake has
/// finished, with a [`TlsTransport`]; if the handshake fails it never runs
/// (nor `connection_lost`): the failure is logged, the TCP connection is
/// closed after the TLS alert, and [`TlsTransport::handshake_error`] says
/// why (a [`connect_tls`](super::connect_tls) factory is told through
/// `client_connection_failed`).
///
/// ```
/// use gyre_protocols::tls::{client_config, TlsProtocol};
/// use gyre_reactor::{Protocol, Transport};
///
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: Transport) {
///         t.write(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n");
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         print!("{}", String::from_utf8_lossy(data));
///     }
/// }
///
/// let tls = TlsProtocol::client(Hello, "example.com", client_config(&[], &[])?)?;
/// // reactor.connect_protocol(addr, tls), or connect_tls(...) with a factory.
/// # drop(tls);
/// # Ok::<(), gyre_protocols::tls::TlsError>(())
/// ```
pub struct TlsProtocol {
    shared: Rc<TlsTransport>,
}

impl TlsProtocol {
    /// `inner` over TLS as the client of `server_name` (a DNS name or an IP
    /// address: sent as SNI, and the certificate must be valid for it).
    pub fn client(
        inner: impl Protocol,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<TlsProtocol, TlsError> {
        Ok(TlsProtocol {
            shared: TlsTransport::new_rc(
                Some(client_machine(server_name, config)?),
                Box::new(inner),
            ),
        })
    }

    /// `inner` over TLS as the server.
    pub fn server(
        inner: impl Protocol,
        config: Arc<ServerConfig>,
    ) -> Result<TlsProtocol, TlsError> {
        Ok(TlsProtocol {
            shared: TlsTransport::new_rc(Some(server_machine(config)?), Box::new(inner)),
        })
    }

    /// Runs on `reactor`: plaintext held while the inner protocol paused
    /// reading is delivered from its loop as soon as reading resumes, and a
    /// handshake time-out can be set.
    pub fn with_reactor(self, reactor: &Reactor) -> TlsProtocol {
        self.shared.set_clock(reactor.clock().clone());
        self
    }

    pub(crate) fn with_clock(self, clock: Clock) -> TlsProtocol {
        self.shared.set_clock(clock);
        self
    }

    /// Drops the connection if the handshake has not finished within
    /// `timeout` of connecting (needs [`with_reactor`](Self::with_reactor)).
    pub fn with_handshake_timeout(self, timeout: Duration) -> TlsProtocol {
        self.shared.set_handshake_timeout(timeout);
        self
    }

    /// The TLS layer's state (handshake result, ALPN, certificates, the
    /// reason given to the inner protocol).
    pub fn tls_transport(&self) -> Rc<TlsTransport> {
        Rc::clone(&self.shared)
    }
}

impl Protocol for TlsProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.shared.on_connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.shared.on_data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.shared.on_eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.shared.on_connection_lost(reason);
    }
}

impl Drop for TlsProtocol {
    fn drop(&mut self) {
        self.shared.release_inner();
    }
}

/// A [`Protocol`] that runs `inner` in plaintext until it switches the
/// connection to TLS (STARTTLS, as in SMTP, IMAP, XMPP, LDAP...).
///
/// Install it from the start: `StartTls::new(inner)`. The inner protocol's
/// `connection_made` runs at once with a [`TlsTransport`] in plaintext mode;
/// bytes pass through unchanged. The usual flow, in plaintext:
///
/// 1. the client writes its STARTTLS command (`STARTTLS\r\n`);
/// 2. the server reads it, writes its go-ahead (`OK\r\n`), and then calls
///    [`start_tls_server`]`(&transport, config)`: the go-ahead was written
///    before the switch, so it goes out in plaintext;
/// 3. the client reads the go-ahead and calls
///    [`start_tls_client`]`(&transport, "server.name", config)`, which sends
///    the ClientHello.
///
/// From the switch on, every write is encrypted (writes made before the
/// handshake finishes are held, then sent encrypted) and every byte read
/// goes to TLS; a handshake failure reaches the inner protocol's
/// `connection_lost` as an `InvalidData` error naming it. Bytes the inner
/// protocol had already received past the switch point (a client that sent
/// its ClientHello straight after the command) belong to TLS: hand them
/// back with [`TlsTransport::push_back_received`]. The inner protocol's
/// `connection_made` is not called again;
/// [`TlsTransport::is_handshake_complete`] tells whether the handshake is
/// done.
///
/// ```
/// use std::sync::Arc;
/// use gyre_protocols::tls::{start_tls_server, StartTls};
/// use gyre_reactor::{Protocol, Transport};
///
/// struct Server {
///     transport: Option<Transport>,
///     config: Arc<gyre_protocols::tls::ServerConfig>,
/// }
/// impl Protocol for Server {
///     fn connection_made(&mut self, t: Transport) { self.transport = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         let Some(t) = &self.transport else { return };
///         if data == b"STARTTLS\r\n" {
///             t.write(b"OK\r\n"); // plaintext
///             if start_tls_server(t, self.config.clone()).is_err() {
///                 t.lose_connection();
///             }
///         } else {
///             t.write(data); // encrypted once TLS is on
///         }
///     }
/// }
/// # fn wrap(server: Server) -> StartTls { StartTls::new(server) }
/// ```
pub struct StartTls {
    shared: Rc<TlsTransport>,
}

impl StartTls {
    /// `inner` in plaintext until `start_tls_client`/`start_tls_server`.
    pub fn new(inner: impl Protocol) -> StartTls {
        StartTls {
            shared: TlsTransport::new_rc(None, Box::new(inner)),
        }
    }

    /// As [`TlsProtocol::with_reactor`].
    pub fn with_reactor(self, reactor: &Reactor) -> StartTls {
        self.shared.set_clock(reactor.clock().clone());
        self
    }

    /// Drops the connection if a handshake has not finished within
    /// `timeout` of the switch (needs [`with_reactor`](Self::with_reactor)).
    pub fn with_handshake_timeout(self, timeout: Duration) -> StartTls {
        self.shared.set_handshake_timeout(timeout);
        self
    }

    /// The layer's state, as [`TlsProtocol::tls_transport`].
    pub fn tls_transport(&self) -> Rc<TlsTransport> {
        Rc::clone(&self.shared)
    }
}

impl Protocol for StartTls {
    fn connection_made(&mut self, transport: Transport) {
        self.shared.on_connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.shared.on_data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.shared.on_eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.shared.on_connection_lost(reason);
    }
}

impl Drop for StartTls {
    fn drop(&mut self) {
        self.shared.release_inner();
    }
}

fn not_start_tls() -> TlsError {
    TlsError::new(
        TlsErrorKind::StartTls,
        "start_tls needs the transport of a protocol run by StartTls",
    )
}

/// Switches the [`StartTls`] connection behind `transport` (the inner
/// protocol's transport) to TLS as the client of `server_name`.
pub fn start_tls_client(
    transport: &Transport,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<(), TlsError> {
    transport
        .backend::<TlsTransport>()
        .ok_or_else(not_start_tls)?
        .start_tls_client(server_name, config)
}

/// Switches the [`StartTls`] connection behind `transport` (the inner
/// protocol's transport) to TLS as the server.
pub fn start_tls_server(transport: &Transport, config: Arc<ServerConfig>) -> Result<(), TlsError> {
    transport
        .backend::<TlsTransport>()
        .ok_or_else(not_start_tls)?
        .start_tls_server(config)
}
