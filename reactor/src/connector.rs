//! Outgoing connections, TCP and Unix-domain: [`ClientFactory`],
//! [`Connector`] (Twisted's `connectTCP` and, through
//! [`Reactor::connect_unix`], `connectUNIX`), and the Deferred form
//! [`Reactor::connect_protocol`]. One connector serves both kinds of
//! socket; a Unix connect completes (or fails) at once, and goes through
//! the same attempt, events and factory queue as a TCP one.
//!
//! Two rules of the reactor's contract live here:
//!
//! - **Any readiness event may carry read data, EOF or an error, a connect
//!   completion included.** The event that completes a connect is handed to
//!   the new connection, which reads at once (until `WouldBlock`) in the
//!   same dispatch: a greeting sent on accept, or an immediate close, is
//!   never left unannounced.
//! - **Neither a factory nor a connector callback is ever lost.** Every
//!   call into a [`ClientFactory`] goes through the connector's queue: when
//!   the factory cannot take it now (a method of it is running up the
//!   stack, or user code holds its cell, see
//!   [`Factory::ready_for_calls`]), it is delivered later from the loop, in
//!   order, never re-entrantly. A completed connection whose factory is busy
//!   waits (registered, its data unread) until the factory can build its
//!   protocol.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::address::Address;
use crate::clock::DelayedCall;
use crate::conn::Conn;
use crate::core::{guard, Inner, Reactor, Readiness, SlotKind};
use crate::defer::{Deferred, Resolver};
use crate::factory::busy_cell;
use crate::protocol::{ConnectionLost, Factory, Protocol};
use crate::stream::Stream;
use crate::transport::Transport;

/// The default connect time-out of [`Reactor::connect_protocol`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A factory for outgoing connections (Twisted's `ClientFactory`): builds
/// the protocol once connected, and hears how connecting and the
/// connection ended. These methods run from the loop; they may call
/// [`Connector::connect`] to try again.
pub trait ClientFactory: Factory {
    /// A connection attempt started.
    fn started_connecting(&mut self, connector: &Connector) {
        let _ = connector;
    }

    /// The attempt failed (refused, timed out, unreachable, stopped).
    fn client_connection_failed(&mut self, connector: &Connector, reason: &io::Error) {
        let _ = (connector, reason);
    }

    /// An established connection closed (after the protocol's `connection_lost`).
    fn client_connection_lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        let _ = (connector, reason);
    }
}

/// A client factory in a shared cell. The reactor calls it only when the
/// cell is free ([`Factory::ready_for_calls`]); a call made while user code
/// holds it is delivered later, never dropped.
impl<F: ClientFactory> ClientFactory for Rc<RefCell<F>> {
    fn started_connecting(&mut self, connector: &Connector) {
        match self.try_borrow_mut() {
            Ok(mut f) => f.started_connecting(connector),
            Err(_) => busy_cell("started_connecting"),
        }
    }
    fn client_connection_failed(&mut self, connector: &Connector, reason: &io::Error) {
        match self.try_borrow_mut() {
            Ok(mut f) => f.client_connection_failed(connector, reason),
            Err(_) => busy_cell("client_connection_failed"),
        }
    }
    fn client_connection_lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        match self.try_borrow_mut() {
            Ok(mut f) => f.client_connection_lost(connector, reason),
            Err(_) => busy_cell("client_connection_lost"),
        }
    }
}

trait DynClientFactory {
    fn build(&mut self, peer: SocketAddr) -> Option<Box<dyn Protocol>>;
    fn started(&mut self, connector: &Connector);
    fn failed(&mut self, connector: &Connector, reason: &io::Error);
    fn lost(&mut self, connector: &Connector, reason: &ConnectionLost);
    fn ready(&self) -> bool;
}

/// A factory call waiting in a connector's queue.
type FactoryCall = Box<dyn FnOnce(&mut dyn DynClientFactory, &Connector)>;

impl<F: ClientFactory> DynClientFactory for F {
    fn build(&mut self, peer: SocketAddr) -> Option<Box<dyn Protocol>> {
        self.build_protocol(peer)
            .map(|p| Box::new(p) as Box<dyn Protocol>)
    }
    fn started(&mut self, connector: &Connector) {
        self.started_connecting(connector)
    }
    fn failed(&mut self, connector: &Connector, reason: &io::Error) {
        self.client_connection_failed(connector, reason)
    }
    fn lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        self.client_connection_lost(connector, reason)
    }
    fn ready(&self) -> bool {
        self.ready_for_calls()
    }
}

/// Where a [`Connector`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorState {
    /// Not connected and not trying.
    Disconnected,
    /// A connection attempt is in flight.
    Connecting,
    /// Connected.
    Connected,
}

/// An outgoing connection and its factory (Twisted's `IConnector`), from
/// [`Reactor::connect_tcp`] or [`Reactor::connect_unix`]. A cheap `Clone` handle; call
/// [`connect`](Self::connect) again after a failure or a lost connection to
/// retry.
#[derive(Clone)]
pub struct Connector {
    inner: Rc<ConnectorInner>,
}

struct ConnectorInner {
    reactor: Weak<Inner>,
    addr: Address,
    timeout: Duration,
    factory: RefCell<Box<dyn DynClientFactory>>,
    /// Factory calls not delivered yet, in order.
    pending: RefCell<VecDeque<FactoryCall>>,
    /// A retry of `pending` is queued on the loop.
    retry_queued: Cell<bool>,
    state: Cell<ConnectorState>,
    attempt: RefCell<Option<Rc<Attempt>>>,
    conn: RefCell<Option<Weak<Conn>>>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.inner.addr)
            .field("state", &self.inner.state.get())
            .finish()
    }
}

impl Reactor {
    /// Connects to `addr`, building the protocol with `factory` once
    /// connected (Twisted's `connectTCP`). A refused or timed-out attempt
    /// reaches `client_connection_failed`. The attempt starts at once.
    ///
    /// ```no_run
    /// use gyre_reactor::{ClientFactory, Factory, Protocol, Reactor, Transport};
    /// use std::{net::SocketAddr, time::Duration};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: Transport) { t.write(b"hello\n"); t.lose_connection(); }
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    /// struct HelloFactory;
    /// impl Factory for HelloFactory {
    ///     type Protocol = Hello;
    ///     fn build_protocol(&mut self, _: SocketAddr) -> Option<Hello> { Some(Hello) }
    /// }
    /// impl ClientFactory for HelloFactory {}
    ///
    /// let reactor = Reactor::new()?;
    /// reactor.connect_tcp("127.0.0.1:7000".parse()?, HelloFactory, Duration::from_secs(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect_tcp(
        &self,
        addr: SocketAddr,
        factory: impl ClientFactory,
        timeout: Duration,
    ) -> Connector {
        self.connect_address(Address::Inet(addr), factory, timeout)
    }

    /// Connects to `addr`, TCP or Unix-domain; the attempt starts at once.
    pub(crate) fn connect_address(
        &self,
        addr: Address,
        factory: impl ClientFactory,
        timeout: Duration,
    ) -> Connector {
        let connector = Connector {
            inner: Rc::new(ConnectorInner {
                reactor: Rc::downgrade(&self.inner),
                addr,
                timeout,
                factory: RefCell::new(Box::new(factory)),
                pending: RefCell::new(VecDeque::new()),
                retry_queued: Cell::new(false),
                state: Cell::new(ConnectorState::Disconnected),
                attempt: RefCell::new(None),
                conn: RefCell::new(None),
            }),
        };
        connector.connect();
        connector
    }

    /// Connects `protocol` to `addr` and fires with its transport once
    /// connected (after `connection_made`), or fails with the connect error.
    /// Cancelling the Deferred stops the attempt. Uses
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    #[track_caller]
    pub fn connect_protocol(
        &self,
        addr: SocketAddr,
        protocol: impl Protocol,
    ) -> Deferred<Transport> {
        self.connect_protocol_with_timeout(addr, protocol, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`connect_protocol`](Self::connect_protocol) with a connect time-out.
    #[track_caller]
    pub fn connect_protocol_with_timeout(
        &self,
        addr: SocketAddr,
        protocol: impl Protocol,
        timeout: Duration,
    ) -> Deferred<Transport> {
        let connector_slot: Rc<RefCell<Option<Connector>>> = Rc::new(RefCell::new(None));
        let for_cancel = Rc::clone(&connector_slot);
        let (r, d) = Deferred::<Transport>::with_canceller(move |_r| {
            if let Some(connector) = for_cancel.borrow_mut().take() {
                connector.stop_connecting();
            }
        });
        let factory = OneShot {
            protocol: Some(Box::new(protocol)),
            result: Some(r),
        };
        let connector = self.connect_tcp(addr, factory, timeout);
        if !d.called() {
            *connector_slot.borrow_mut() = Some(connector);
        }
        d
    }
}

/// The factory behind `connect_protocol`: one protocol, one Deferred.
struct OneShot {
    protocol: Option<Box<dyn Protocol>>,
    result: Option<Resolver<Transport>>,
}

struct Announce {
    inner: Box<dyn Protocol>,
    result: Option<Resolver<Transport>>,
}

impl Protocol for Announce {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.connection_made(transport.clone());
        if let Some(d) = self.result.take() {
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

impl Factory for OneShot {
    type Protocol = Announce;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Announce> {
        Some(Announce {
            inner: self.protocol.take()?,
            result: self.result.take(),
        })
    }
}

impl ClientFactory for OneShot {
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &io::Error) {
        if let Some(d) = self.result.take() {
            if !d.called() {
                let _ = d.errback(io::Error::new(reason.kind(), reason.to_string()));
            }
        }
    }
}

impl Connector {
    /// The internet address this connector connects to; for a Unix
    /// connector, which has none,
    /// [`NO_INET_ADDR`](crate::address::NO_INET_ADDR) (use
    /// [`destination_address`](Self::destination_address)).
    pub fn destination(&self) -> SocketAddr {
        self.inner.addr.inet_or_none()
    }

    /// The address this connector connects to, TCP or Unix-domain.
    ///
    /// ```
    /// use gyre_reactor::{Address, ClientFactory, Factory, Protocol, Reactor, UnixAddr};
    /// use std::{net::SocketAddr, time::Duration};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet { fn data_received(&mut self, _: &[u8]) {} }
    /// struct QuietFactory;
    /// impl Factory for QuietFactory {
    ///     type Protocol = Quiet;
    ///     fn build_protocol(&mut self, _: SocketAddr) -> Option<Quiet> { Some(Quiet) }
    /// }
    /// impl ClientFactory for QuietFactory {}
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let connector = reactor.connect_unix("/nonexistent/gyre.sock", QuietFactory, Duration::from_secs(1));
    /// assert_eq!(connector.destination_address(), Address::Unix(UnixAddr::new("/nonexistent/gyre.sock")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn destination_address(&self) -> Address {
        self.inner.addr.clone()
    }

    /// The reactor this connector belongs to, while it exists.
    pub fn reactor(&self) -> Option<Reactor> {
        self.inner.reactor.upgrade().and_then(|i| i.reactor())
    }

    /// Where it is.
    pub fn state(&self) -> ConnectorState {
        self.inner.state.get()
    }

    /// Starts a connection attempt (again). Does nothing unless
    /// [`Disconnected`](ConnectorState::Disconnected).
    pub fn connect(&self) {
        if self.inner.state.get() != ConnectorState::Disconnected {
            return;
        }
        let Some(inner) = self.inner.reactor.upgrade() else {
            return;
        };
        let Some(reactor) = inner.reactor() else {
            return;
        };
        self.inner.state.set(ConnectorState::Connecting);
        self.with_factory(&reactor, |f, c| f.started(c));
        match open_stream(&self.inner.addr) {
            Ok(stream) => {
                let attempt = Rc::new(Attempt {
                    connector: self.clone(),
                    stream: RefCell::new(Some(stream)),
                    token: Cell::new(usize::MAX),
                    timer: RefCell::new(None),
                });
                let token = inner.insert_slot(|_| SlotKind::Connecting(Rc::clone(&attempt)));
                attempt.token.set(token);
                let registered = match attempt.stream.borrow_mut().as_mut() {
                    Some(stream) => inner.registry.register(
                        stream,
                        mio::Token(token),
                        mio::Interest::READABLE | mio::Interest::WRITABLE,
                    ),
                    None => Ok(()),
                };
                *self.inner.attempt.borrow_mut() = Some(Rc::clone(&attempt));
                if let Err(e) = registered {
                    attempt.fail_soon(&reactor, e);
                    return;
                }
                let weak = Rc::downgrade(&attempt);
                let r = reactor.clone();
                let timeout = self.inner.timeout;
                let timer = reactor.call_later(timeout, move || {
                    if let Some(attempt) = weak.upgrade() {
                        attempt.fail(
                            &r,
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "connect to {} timed out after {timeout:?}",
                                    attempt.connector.inner.addr
                                ),
                            ),
                        );
                    }
                });
                *attempt.timer.borrow_mut() = Some(timer);
            }
            Err(e) => {
                // Report from the loop, never on the caller's stack.
                let me = self.clone();
                reactor.call_soon(move || {
                    if let Some(reactor) = me.inner.reactor.upgrade().and_then(|i| i.reactor()) {
                        me.inner.state.set(ConnectorState::Disconnected);
                        me.with_factory(&reactor, move |f, c| f.failed(c, &e));
                    }
                });
            }
        }
    }

    /// Abandons an attempt in flight; the factory hears
    /// `client_connection_failed` (from the loop).
    pub fn stop_connecting(&self) {
        let attempt = self.inner.attempt.borrow().clone();
        if let (Some(attempt), Some(reactor)) = (
            attempt,
            self.inner.reactor.upgrade().and_then(|i| i.reactor()),
        ) {
            attempt.fail_soon(
                &reactor,
                io::Error::new(io::ErrorKind::Interrupted, "connection attempt stopped"),
            );
        }
    }

    /// Closes the connection (flushing first), or stops the attempt.
    pub fn disconnect(&self) {
        match self.inner.state.get() {
            ConnectorState::Connecting => self.stop_connecting(),
            ConnectorState::Connected => {
                let conn = self.inner.conn.borrow().as_ref().and_then(Weak::upgrade);
                if let Some(conn) = conn {
                    crate::TransportBackend::lose_connection(&*conn);
                }
            }
            ConnectorState::Disconnected => {}
        }
    }

    /// Calls the factory now if it can take the call, else queues the call
    /// and delivers it from the loop once it can (after the calls queued
    /// before it). A call is never dropped and never made re-entrantly.
    fn with_factory(
        &self,
        reactor: &Reactor,
        f: impl FnOnce(&mut dyn DynClientFactory, &Connector) + 'static,
    ) {
        self.inner.pending.borrow_mut().push_back(Box::new(f));
        self.deliver_pending(reactor);
    }

    /// Whether the factory can be called now with nothing queued before.
    fn factory_free(&self) -> bool {
        self.inner.pending.borrow().is_empty()
            && self
                .inner
                .factory
                .try_borrow()
                .map(|f| f.ready())
                .unwrap_or(false)
    }

    /// Delivers queued factory calls while the factory can take them.
    fn deliver_pending(&self, reactor: &Reactor) {
        loop {
            let mut factory = match self.inner.factory.try_borrow_mut() {
                Ok(f) if f.ready() => f,
                _ => {
                    // A method of the factory is running up the stack, or
                    // user code holds its cell: deliver from the loop.
                    self.retry_soon(reactor);
                    return;
                }
            };
            let Some(call) = self.inner.pending.borrow_mut().pop_front() else {
                return;
            };
            let _ = guard(
                format_args!("client factory for {}", self.inner.addr),
                || call(&mut **factory, self),
            );
        }
    }

    fn retry_soon(&self, reactor: &Reactor) {
        if self.inner.retry_queued.replace(true) {
            return;
        }
        let me = self.clone();
        reactor.call_soon(move || {
            me.inner.retry_queued.set(false);
            if let Some(reactor) = me.reactor() {
                me.deliver_pending(&reactor);
            }
        });
    }
}

/// One connection attempt, in the slot table while in flight.
pub(crate) struct Attempt {
    connector: Connector,
    stream: RefCell<Option<Stream>>,
    token: Cell<usize>,
    timer: RefCell<Option<DelayedCall>>,
}

impl Attempt {
    /// A readiness event for the attempt: connected, or failed. The same
    /// event may carry data, EOF or an error for the new connection, which
    /// therefore reads at once, with the loop's read buffer `buf`.
    pub(crate) fn handle_ready(
        self: &Rc<Self>,
        reactor: &Reactor,
        _event: &Readiness,
        buf: &mut [u8],
    ) {
        self.complete(reactor, Some(buf));
    }

    /// Checks the socket: connected (then succeed), still connecting, or
    /// failed. `buf` is the loop's read buffer when called from dispatch.
    fn complete(self: &Rc<Self>, reactor: &Reactor, buf: Option<&mut [u8]>) {
        let status = match self.stream.borrow().as_ref() {
            None => return,
            Some(stream) => match stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match stream.peer_address() {
                    Ok(peer) => Ok(Some(peer)),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(None),
                    Err(e) => Err(e),
                },
            },
        };
        match status {
            Ok(Some(peer)) => self.succeed(reactor, peer, buf),
            // Spurious wake-up: still connecting.
            Ok(None) => {}
            Err(e) => self.fail(reactor, e),
        }
    }

    fn finish(&self) -> Option<Stream> {
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        self.connector.inner.attempt.borrow_mut().take();
        self.stream.borrow_mut().take()
    }

    fn succeed(self: &Rc<Self>, reactor: &Reactor, peer: Address, buf: Option<&mut [u8]>) {
        let connector = &self.connector;
        if !connector.factory_free() {
            // The factory cannot build now: the connection waits,
            // registered and unread, and is completed from the loop.
            let me = Rc::downgrade(self);
            let r = Rc::downgrade(&reactor.inner);
            reactor.call_soon(move || {
                let reactor = r.upgrade().and_then(|i| i.reactor());
                if let (Some(me), Some(reactor)) = (me.upgrade(), reactor) {
                    me.complete(&reactor, None);
                }
            });
            return;
        }
        let Some(stream) = self.finish() else {
            return;
        };
        let built = match connector.inner.factory.try_borrow_mut() {
            Ok(mut f) => guard(format_args!("build_protocol for {peer}"), || {
                f.build(peer.inet_or_none())
            })
            .ok()
            .flatten(),
            Err(_) => None,
        };
        let token = self.token.get();
        let Some(protocol) = built else {
            let mut stream = stream;
            let _ = reactor.inner.registry.deregister(&mut stream);
            reactor.inner.remove_slot(token);
            connector.inner.state.set(ConnectorState::Disconnected);
            let e = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the factory built no protocol",
            );
            connector.with_factory(reactor, move |f, c| f.failed(c, &e));
            return;
        };
        let conn = Rc::new(Conn::new(Rc::downgrade(&reactor.inner), stream, peer));
        conn.token.set(token);
        reactor
            .inner
            .replace_slot(token, SlotKind::Conn(Rc::clone(&conn)));
        connector.inner.state.set(ConnectorState::Connected);
        *connector.inner.conn.borrow_mut() = Some(Rc::downgrade(&conn));
        let me = connector.clone();
        let r = reactor.clone();
        conn.set_lost_hook(Box::new(move |reason| {
            me.inner.state.set(ConnectorState::Disconnected);
            me.inner.conn.borrow_mut().take();
            let reason = reason.clone();
            me.with_factory(&r, move |f, c| f.lost(c, &reason));
        }));
        conn.start(protocol);
        // The connect completion may have come with data or EOF in the same
        // edge: read now, until WouldBlock.
        match buf {
            Some(buf) => conn.handle_readable(buf, true),
            None => conn.queue_read(),
        }
    }

    /// Fails the attempt now (from the loop: events and timers).
    pub(crate) fn fail(&self, reactor: &Reactor, error: io::Error) {
        let Some(mut stream) = self.finish() else {
            return;
        };
        let _ = reactor.inner.registry.deregister(&mut stream);
        drop(stream);
        reactor.inner.remove_slot(self.token.get());
        let connector = &self.connector;
        connector.inner.state.set(ConnectorState::Disconnected);
        log::debug!("connect to {} failed: {error}", connector.inner.addr);
        connector.with_factory(reactor, move |f, c| f.failed(c, &error));
    }

    /// Fails the attempt from the loop (for calls made by user code).
    fn fail_soon(self: &Rc<Self>, reactor: &Reactor, error: io::Error) {
        let me = Rc::clone(self);
        let r = reactor.clone();
        // Stop the socket now; report from the loop.
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        reactor.call_soon(move || me.fail(&r, error));
    }

    /// Reactor shutdown: drop the attempt with an error.
    pub(crate) fn abandon(self: &Rc<Self>) {
        if let Some(reactor) = self
            .connector
            .inner
            .reactor
            .upgrade()
            .and_then(|i| i.reactor())
        {
            self.fail(
                &reactor,
                io::Error::new(io::ErrorKind::Interrupted, "the reactor shut down"),
            );
        }
    }
}

/// A nonblocking socket connecting (TCP: in flight; Unix: done or failed
/// at once) to `addr`. A Unix connect refused for a full backlog says so.
fn open_stream(addr: &Address) -> io::Result<Stream> {
    match addr {
        Address::Inet(addr) => mio::net::TcpStream::connect(*addr).map(Stream::Tcp),
        Address::Unix(unix) => {
            let std_addr = unix.to_std()?;
            match mio::net::UnixStream::connect_addr(&std_addr) {
                Ok(stream) => Ok(Stream::Unix(stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                    e.kind(),
                    format!("connect to unix:{unix}: the listener's backlog is full"),
                )),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("connect to unix:{unix}: {e}"),
                )),
            }
        }
    }
}
