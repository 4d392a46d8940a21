//! Connecting by host name: [`Reactor::connect_tcp_host`] resolves on the
//! thread pool and tries each address in turn; [`Reactor::connect_tcp_addrs`]
//! tries a list of addresses (Twisted's `connectTCP(host, ...)` and
//! `HostnameEndpoint`, without the racing).
//!
//! # Semantics
//!
//! - The name is resolved with `getaddrinfo` on the reactor's thread pool
//!   ([`Reactor::resolve`]), never blocking the loop; an IP literal is
//!   resolved too (at no cost).
//! - The addresses are tried **one at a time, in the order the resolver
//!   gave them**, each with the connect time-out: a refused, unreachable or
//!   timed-out address moves on to the next (logged at debug level). This
//!   is not happy eyeballs (RFC 8305): no attempts race, so an address
//!   that black-holes costs the whole time-out before the next one.
//! - The Deferred fires with the [`Connector`] of the address that
//!   connected, after the protocol's `connection_made`; or fails with an
//!   `io::Error` naming every address tried and why it failed (or the
//!   resolver's error, or `NotFound` for a name with no address).
//! - The factory builds the protocol and hears `started_connecting` for
//!   each attempt and `client_connection_lost` for the connection. An
//!   attempt that failed is **not** reported to its
//!   `client_connection_failed`: failures are reported once, through the
//!   Deferred. To retry later, call [`Connector::connect`] on the connector
//!   it fired with, or call `connect_tcp_host` again.
//! - Cancelling the Deferred stops the lookup's use or the attempt in
//!   flight, and tries no further address.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::connector::{ClientFactory, Connector};
use crate::core::{Inner, Reactor};
use crate::defer::{Deferred, Resolver};
use crate::protocol::{ConnectionLost, Factory};

/// Where a run of attempts is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the resolver.
    Resolving,
    /// An attempt is in flight.
    Trying,
    /// Connected; the Deferred fired (or is about to).
    Connected,
    /// Failed or cancelled; nothing more happens.
    Finished,
}

/// One call of `connect_tcp_addrs`: the addresses left, what went wrong,
/// and the Deferred to fire.
struct Run<F: ClientFactory> {
    reactor: Weak<Inner>,
    factory: Rc<RefCell<F>>,
    timeout: Duration,
    addrs: RefCell<VecDeque<SocketAddr>>,
    errors: RefCell<Vec<String>>,
    phase: Cell<Phase>,
    current: RefCell<Option<Connector>>,
    result: RefCell<Option<Resolver<Connector>>>,
    me: Weak<Run<F>>,
}

impl<F: ClientFactory> Run<F> {
    fn reactor(&self) -> Option<Reactor> {
        self.reactor.upgrade().and_then(|i| i.reactor())
    }

    /// Starts the next attempt, or fails if none is left.
    fn try_next(&self) {
        if self.phase.get() == Phase::Finished {
            return;
        }
        let next = self.addrs.borrow_mut().pop_front();
        let (Some(addr), Some(reactor)) = (next, self.reactor()) else {
            let errors = self.errors.borrow().join("; ");
            self.fail(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("could not connect to any address: {errors}"),
            ));
            return;
        };
        self.phase.set(Phase::Trying);
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let connector = reactor.connect_tcp(addr, Trial { run: me }, self.timeout);
        if self.phase.get() == Phase::Trying {
            *self.current.borrow_mut() = Some(connector);
        }
    }

    fn fail(&self, error: io::Error) {
        self.phase.set(Phase::Finished);
        self.current.borrow_mut().take();
        let result = self.result.borrow_mut().take();
        if let Some(r) = result {
            if !r.called() {
                let _ = r.errback(error);
            }
        }
    }

    fn cancel(&self) {
        self.phase.set(Phase::Finished);
        self.result.borrow_mut().take();
        let current = self.current.borrow_mut().take();
        if let Some(connector) = current {
            connector.stop_connecting();
        }
    }
}

/// The factory of one attempt: forwards to the user's factory, and moves
/// on to the next address when the attempt fails.
struct Trial<F: ClientFactory> {
    run: Rc<Run<F>>,
}

impl<F: ClientFactory> Factory for Trial<F> {
    type Protocol = F::Protocol;

    fn build_protocol(&mut self, peer: SocketAddr) -> Option<F::Protocol> {
        if self.run.phase.get() != Phase::Trying {
            return None;
        }
        let protocol = Rc::clone(&self.run.factory).build_protocol(peer)?;
        self.run.phase.set(Phase::Connected);
        // Fire from the loop, once `connection_made` has run.
        if let Some(reactor) = self.run.reactor() {
            let run = Rc::clone(&self.run);
            reactor.call_soon(move || {
                let connector = run.current.borrow_mut().take();
                let result = run.result.borrow_mut().take();
                if let (Some(connector), Some(r)) = (connector, result) {
                    let _ = r.callback(connector);
                }
            });
        }
        Some(protocol)
    }

    fn ready_for_calls(&self) -> bool {
        self.run.factory.ready_for_calls()
    }
}

impl<F: ClientFactory> ClientFactory for Trial<F> {
    fn started_connecting(&mut self, connector: &Connector) {
        Rc::clone(&self.run.factory).started_connecting(connector);
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: &io::Error) {
        let addr = connector.destination();
        log::debug!("connect to {addr} failed: {reason}; trying the next address");
        self.run
            .errors
            .borrow_mut()
            .push(format!("{addr}: {reason}"));
        if self.run.phase.get() != Phase::Trying {
            return;
        }
        self.run.current.borrow_mut().take();
        let Some(reactor) = self.run.reactor() else {
            return;
        };
        // From the loop: never start an attempt inside a factory callback.
        let run = Rc::clone(&self.run);
        reactor.call_soon(move || run.try_next());
    }

    fn client_connection_lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        Rc::clone(&self.run.factory).client_connection_lost(connector, reason);
    }
}

impl Reactor {
    /// Resolves `host` on the thread pool and connects to its addresses
    /// one at a time until one connects (no happy eyeballs: see the
    /// [module docs](mod@crate::connect_host)). Fires with the [`Connector`]
    /// that connected, once its protocol's `connection_made` has run;
    /// fails with an error naming every address tried.
    ///
    /// ```no_run
    /// use gyre_reactor::{ClientFactory, Factory, Protocol, Reactor, Transport};
    /// use std::{net::SocketAddr, time::Duration};
    ///
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, t: Transport) { t.write(b"hello\r\n"); }
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
    /// let d = reactor.connect_tcp_host("localhost", 7000, HelloFactory, Duration::from_secs(5));
    /// let connector = reactor.block_on(d)?.map_err(|f| f.to_string())?;
    /// println!("connected to {}", connector.destination());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn connect_tcp_host<F: ClientFactory>(
        &self,
        host: &str,
        port: u16,
        factory: F,
        timeout: Duration,
    ) -> Deferred<Connector> {
        let run = self.new_run(factory, timeout, Phase::Resolving);
        let cancel_run = Rc::downgrade(&run);
        let (r, d) = Deferred::with_canceller(move |_| {
            if let Some(run) = cancel_run.upgrade() {
                run.cancel();
            }
        });
        *run.result.borrow_mut() = Some(r);
        let host_name = host.to_string();
        // The lookup's callback holds the run until the lookup is done;
        // then its connector does, while it tries.
        let lookup = self.resolve(host, port).add_both(move |outcome| {
            if run.phase.get() != Phase::Resolving {
                return Ok(());
            }
            match outcome {
                Ok(addrs) if addrs.is_empty() => run.fail(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host_name} has no address"),
                )),
                Ok(addrs) => {
                    *run.addrs.borrow_mut() = addrs.into();
                    run.try_next();
                }
                Err(failure) => {
                    let kind = failure
                        .downcast_ref::<io::Error>()
                        .map_or(io::ErrorKind::Other, io::Error::kind);
                    run.fail(io::Error::new(kind, failure.to_string()));
                }
            }
            Ok(())
        });
        drop(lookup);
        d
    }

    /// Connects to `addrs` one at a time, in order, until one connects;
    /// as [`connect_tcp_host`](Self::connect_tcp_host) without the lookup.
    /// An empty list fails at once (`InvalidInput`).
    ///
    /// ```
    /// use gyre_reactor::{factory_fn, ClientFactory, Factory, Protocol, Reactor};
    /// use std::{net::SocketAddr, time::Duration};
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    /// struct QuietClient;
    /// impl Factory for QuietClient {
    ///     type Protocol = Quiet;
    ///     fn build_protocol(&mut self, _: SocketAddr) -> Option<Quiet> { Some(Quiet) }
    /// }
    /// impl ClientFactory for QuietClient {}
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_tcp("127.0.0.1:0".parse()?, factory_fn(|_| Some(Quiet)))?;
    /// let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?; // dropped: refuses
    /// let d = reactor.connect_tcp_addrs(
    ///     vec![closed, port.local_addr()],
    ///     QuietClient,
    ///     Duration::from_secs(5),
    /// );
    /// let connector = reactor.block_on(d)?.map_err(|f| f.to_string())?;
    /// assert_eq!(connector.destination(), port.local_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn connect_tcp_addrs<F: ClientFactory>(
        &self,
        addrs: Vec<SocketAddr>,
        factory: F,
        timeout: Duration,
    ) -> Deferred<Connector> {
        if addrs.is_empty() {
            return crate::defer::fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to connect to",
            ));
        }
        let run = self.new_run(factory, timeout, Phase::Trying);
        let cancel_run = Rc::downgrade(&run);
        let (r, d) = Deferred::with_canceller(move |_| {
            if let Some(run) = cancel_run.upgrade() {
                run.cancel();
            }
        });
        *run.result.borrow_mut() = Some(r);
        *run.addrs.borrow_mut() = addrs.into();
        run.try_next();
        d
    }

    fn new_run<F: ClientFactory>(&self, factory: F, timeout: Duration, phase: Phase) -> Rc<Run<F>> {
        Rc::new_cyclic(|me| Run {
            reactor: Rc::downgrade(&self.inner),
            factory: Rc::new(RefCell::new(factory)),
            timeout,
            addrs: RefCell::new(VecDeque::new()),
            errors: RefCell::new(Vec::new()),
            phase: Cell::new(phase),
            current: RefCell::new(None),
            result: RefCell::new(None),
            me: me.clone(),
        })
    }
}
