//! TLS over the reactor's TCP: [`connect_tls`], [`connect_tls_protocol`],
//! [`listen_tls`], and the factory wrappers behind them.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gyre_reactor::clock::Clock;
use gyre_reactor::defer::{Deferred, Resolver};
use gyre_reactor::{
    ClientFactory, ConnectionLost, Connector, Factory, ListeningPort, Protocol, Reactor, Transport,
};
use rustls::{ClientConfig, ServerConfig};

use super::config::{parse_server_name, TlsError};
use super::protocol::TlsProtocol;
use super::session::{TlsTransport, DEFAULT_HANDSHAKE_TIMEOUT};

/// Connects to `addr` over TLS, verifying the server's certificate for
/// `server_name` (also sent as SNI), and builds the protocol with `factory`
/// (Twisted's `connectSSL`). `timeout` bounds the TCP connect, and then,
/// separately, the handshake. An invalid `server_name` is an error at once;
/// everything else reaches the factory:
///
/// - the TCP connection fails: `client_connection_failed` with the connect
///   error, as with [`Reactor::connect_tcp`];
/// - the handshake fails (a certificate that is not valid for the name,
///   expired, or not signed by a trusted root; a fatal alert from the
///   server; the connection closed or timed out mid-handshake):
///   `client_connection_failed` with an `io::Error` whose message reads
///   "TLS handshake with NAME (ADDR) failed: REASON", REASON being rustls's
///   error (e.g. "invalid peer certificate: UnknownIssuer"). The kind is
///   `InvalidData` for TLS errors, `UnexpectedEof` when the server closed,
///   `TimedOut` for the time-out. The protocol the factory built is
///   dropped without `connection_made` or `connection_lost`, and
///   `client_connection_lost` is not called;
/// - after the handshake: the protocol's `connection_made`, and when it
///   ends its `connection_lost` and the factory's `client_connection_lost`
///   with the same reason (e.g. `UnexpectedEof` for a server that closed
///   without `close_notify`).
///
/// As with `connect_tcp`, the factory may call [`Connector::connect`] from
/// `client_connection_failed` to try again.
///
/// ```no_run
/// use std::time::Duration;
/// use gyre_protocols::tls::{client_config, connect_tls};
/// use gyre_reactor::{factory_fn, ClientFactory, Factory, Protocol, Reactor, Transport};
///
/// struct Get;
/// impl Protocol for Get {
///     fn connection_made(&mut self, t: Transport) {
///         t.write(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n");
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         print!("{}", String::from_utf8_lossy(data));
///     }
/// }
/// struct GetFactory;
/// impl Factory for GetFactory {
///     type Protocol = Get;
///     fn build_protocol(&mut self, _: std::net::SocketAddr) -> Option<Get> { Some(Get) }
/// }
/// impl ClientFactory for GetFactory {
///     fn client_connection_failed(&mut self, _: &gyre_reactor::Connector, e: &std::io::Error) {
///         eprintln!("failed: {e}");
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let config = client_config(&[], &[b"http/1.1"])?;
/// let addr = "93.184.215.14:443".parse()?;
/// connect_tls(&reactor, addr, "example.com", config, GetFactory, Duration::from_secs(10))?;
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect_tls(
    reactor: &Reactor,
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    factory: impl ClientFactory,
    timeout: Duration,
) -> Result<Connector, TlsError> {
    let factory = TlsClientFactory::new(factory, server_name, config)?
        .with_reactor(reactor)
        .with_handshake_timeout(timeout);
    Ok(reactor.connect_tcp(addr, factory, timeout))
}

/// Connects `protocol` to `addr` over TLS (as [`connect_tls`]) and fires
/// with its [`TlsTransport`]-backed transport once the handshake is done
/// (after the protocol's `connection_made`), or fails with the connect or
/// handshake error (see [`connect_tls`] for the messages). Cancelling the
/// Deferred stops the attempt, or drops the connection if the handshake is
/// under way.
///
/// ```no_run
/// use std::time::Duration;
/// use gyre_protocols::tls::{client_config, connect_tls_protocol, TlsTransport};
/// use gyre_reactor::{Protocol, Reactor};
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let reactor = Reactor::new()?;
/// let config = client_config(&[], &[b"http/1.1"])?;
/// let addr = "93.184.215.14:443".parse()?;
/// let d = connect_tls_protocol(&reactor, addr, "example.com", config, Quiet,
///                              Duration::from_secs(10))?;
/// let d = d.add_callback(|t| {
///     let alpn = t.backend::<TlsTransport>().and_then(|tls| tls.alpn_protocol());
///     println!("connected, ALPN {alpn:?}");
///     Ok(())
/// });
/// # drop(d);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn connect_tls_protocol(
    reactor: &Reactor,
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    protocol: impl Protocol,
    timeout: Duration,
) -> Result<Deferred<Transport>, TlsError> {
    let connector_slot: Rc<RefCell<Option<Connector>>> = Rc::default();
    let for_cancel = Rc::clone(&connector_slot);
    let (r, d) = Deferred::<Transport>::with_canceller(move |_r| {
        if let Some(connector) = for_cancel.borrow_mut().take() {
            connector.disconnect();
        }
    });
    let result = Rc::new(RefCell::new(Some(r)));
    let factory = OneShot {
        protocol: Some(protocol),
        result,
    };
    let connector = connect_tls(reactor, addr, server_name, config, factory, timeout)?;
    if !d.called() {
        *connector_slot.borrow_mut() = Some(connector);
    }
    Ok(d)
}

type ResultSlot = Rc<RefCell<Option<Resolver<Transport>>>>;

/// The factory behind [`connect_tls_protocol`]: one protocol, one Deferred.
struct OneShot<P> {
    protocol: Option<P>,
    result: ResultSlot,
}

impl<P: Protocol> Factory for OneShot<P> {
    type Protocol = Announce<P>;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Announce<P>> {
        Some(Announce {
            inner: self.protocol.take()?,
            result: Rc::clone(&self.result),
        })
    }
}

impl<P: Protocol> ClientFactory for OneShot<P> {
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &io::Error) {
        let d = self.result.borrow_mut().take();
        if let Some(d) = d {
            if !d.called() {
                let _ = d.errback(io::Error::new(reason.kind(), reason.to_string()));
            }
        }
    }
}

/// Fires the Deferred once the (TLS) connection is made.
struct Announce<P> {
    inner: P,
    result: ResultSlot,
}

impl<P: Protocol> Protocol for Announce<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.connection_made(transport.clone());
        let d = self.result.borrow_mut().take();
        if let Some(d) = d {
            let _ = d.callback(transport);
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        self.inner.data_received(data)
    }
    fn eof_received(&mut self) -> bool {
        self.inner.eof_received()
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.inner.connection_lost(reason)
    }
}

/// Listens on `addr` (port 0 picks a free port) and runs each connection's
/// protocol, built by `factory`, over TLS as the server (Twisted's
/// `listenSSL`). A client that has not finished its handshake within
/// [`DEFAULT_HANDSHAKE_TIMEOUT`] is dropped; a failed handshake is logged
/// and the protocol built for it is dropped unconnected.
///
/// `factory` is a [`Factory`] (not a `FactoryRef`, whose protocols cannot
/// be built from outside the reactor). To share one TLS factory between
/// several ports, wrap it yourself:
/// `FactoryRef::new(TlsServerFactory::new(factory, config).with_reactor(&reactor))`
/// and give that to [`Reactor::listen_tcp`].
///
/// ```no_run
/// use gyre_protocols::tls::{listen_tls, server_config};
/// use gyre_reactor::{factory_fn, Protocol, Reactor, Transport};
///
/// #[derive(Default)]
/// struct Echo(Option<Transport>);
/// impl Protocol for Echo {
///     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(t) = &self.0 { t.write(data) }
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let config = server_config(&std::fs::read("chain.pem")?, &std::fs::read("key.pem")?, &[])?;
/// let port = listen_tls(&reactor, "127.0.0.1:8443".parse()?, config,
///                       factory_fn(|_| Some(Echo::default())))?;
/// println!("TLS echo on {}", port.local_addr());
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn listen_tls(
    reactor: &Reactor,
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    factory: impl Factory,
) -> io::Result<ListeningPort> {
    let factory = TlsServerFactory::new(factory, config)
        .with_reactor(reactor)
        .with_handshake_timeout(DEFAULT_HANDSHAKE_TIMEOUT);
    reactor.listen_tcp(addr, factory)
}

/// A [`Factory`] that runs another factory's protocols over TLS as the
/// server (what [`listen_tls`] listens with).
pub struct TlsServerFactory<F> {
    inner: F,
    config: Arc<ServerConfig>,
    clock: Option<Clock>,
    handshake_timeout: Option<Duration>,
}

impl<F: Factory> TlsServerFactory<F> {
    /// Wraps `factory`; each protocol runs over TLS with `config`.
    pub fn new(factory: F, config: Arc<ServerConfig>) -> TlsServerFactory<F> {
        TlsServerFactory {
            inner: factory,
            config,
            clock: None,
            handshake_timeout: None,
        }
    }

    /// As [`TlsProtocol::with_reactor`], for every connection.
    pub fn with_reactor(mut self, reactor: &Reactor) -> Self {
        self.clock = Some(reactor.clock().clone());
        self
    }

    /// As [`TlsProtocol::with_handshake_timeout`], for every connection.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// The wrapped factory.
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.inner
    }
}

impl<F: Factory> Factory for TlsServerFactory<F> {
    type Protocol = TlsProtocol;

    fn build_protocol(&mut self, peer: SocketAddr) -> Option<TlsProtocol> {
        let inner = self.inner.build_protocol(peer)?;
        let protocol = match TlsProtocol::server(inner, Arc::clone(&self.config)) {
            Ok(p) => p,
            Err(e) => {
                log::error!("cannot start TLS for {peer}: {e}");
                return None;
            }
        };
        Some(configure(
            protocol,
            self.clock.as_ref(),
            self.handshake_timeout,
        ))
    }

    fn start_factory(&mut self) {
        self.inner.start_factory()
    }

    fn stop_factory(&mut self) {
        self.inner.stop_factory()
    }

    fn ready_for_calls(&self) -> bool {
        self.inner.ready_for_calls()
    }
}

/// A [`ClientFactory`] that runs another client factory's protocols over
/// TLS and reports a failed handshake as a failed connection (what
/// [`connect_tls`] connects with; see there for what the wrapped factory is
/// told).
pub struct TlsClientFactory<F> {
    inner: F,
    server_name: String,
    config: Arc<ClientConfig>,
    clock: Option<Clock>,
    handshake_timeout: Option<Duration>,
    /// The TLS layer of the connection in progress.
    current: Option<Rc<TlsTransport>>,
}

impl<F: ClientFactory> TlsClientFactory<F> {
    /// Wraps `factory`; each protocol runs over TLS to `server_name` with
    /// `config`. An invalid server name is an error.
    pub fn new(
        factory: F,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> Result<TlsClientFactory<F>, TlsError> {
        parse_server_name(server_name)?;
        Ok(TlsClientFactory {
            inner: factory,
            server_name: server_name.to_string(),
            config,
            clock: None,
            handshake_timeout: None,
            current: None,
        })
    }

    /// As [`TlsProtocol::with_reactor`], for every connection.
    pub fn with_reactor(mut self, reactor: &Reactor) -> Self {
        self.clock = Some(reactor.clock().clone());
        self
    }

    /// As [`TlsProtocol::with_handshake_timeout`], for every connection.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// The wrapped factory.
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.inner
    }
}

impl<F: ClientFactory> Factory for TlsClientFactory<F> {
    type Protocol = TlsProtocol;

    fn build_protocol(&mut self, peer: SocketAddr) -> Option<TlsProtocol> {
        let inner = self.inner.build_protocol(peer)?;
        let protocol = match TlsProtocol::client(inner, &self.server_name, Arc::clone(&self.config))
        {
            Ok(p) => p,
            Err(e) => {
                log::error!("cannot start TLS to {} ({peer}): {e}", self.server_name);
                return None;
            }
        };
        let protocol = configure(protocol, self.clock.as_ref(), self.handshake_timeout);
        self.current = Some(protocol.tls_transport());
        Some(protocol)
    }

    fn start_factory(&mut self) {
        self.inner.start_factory()
    }

    fn stop_factory(&mut self) {
        self.inner.stop_factory()
    }

    fn ready_for_calls(&self) -> bool {
        self.inner.ready_for_calls()
    }
}

impl<F: ClientFactory> ClientFactory for TlsClientFactory<F> {
    fn started_connecting(&mut self, connector: &Connector) {
        self.inner.started_connecting(connector)
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: &io::Error) {
        self.current = None;
        self.inner.client_connection_failed(connector, reason)
    }

    fn client_connection_lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        let current = self.current.take();
        if let Some(error) = current.as_ref().and_then(|t| t.handshake_error()) {
            self.inner.client_connection_failed(connector, &error);
            return;
        }
        match current.and_then(|t| t.lost_reason()) {
            Some(reason) => self.inner.client_connection_lost(connector, &reason),
            None => self.inner.client_connection_lost(connector, reason),
        }
    }
}

fn configure(
    mut protocol: TlsProtocol,
    clock: Option<&Clock>,
    handshake_timeout: Option<Duration>,
) -> TlsProtocol {
    if let Some(clock) = clock {
        protocol = protocol.with_clock(clock.clone());
    }
    if let Some(timeout) = handshake_timeout {
        protocol = protocol.with_handshake_timeout(timeout);
    }
    protocol
}
