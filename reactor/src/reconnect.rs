//! [`ReconnectingClientFactory`]: a client that keeps reconnecting with
//! capped exponential back-off and jitter (Twisted's
//! `ReconnectingClientFactory`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::clock::DelayedCall;
use crate::connector::{ClientFactory, Connector};
use crate::defer::{Backoff, BackoffState};
use crate::protocol::{ConnectionLost, Factory};

/// Wraps a [`ClientFactory`] so that a failed attempt or a lost connection
/// schedules [`Connector::connect`] again after a back-off delay that grows
/// (by [`Backoff`]) and is capped. A connection that comes up resets the
/// delay (the protocol was built). [`Reconnect::stop_trying`] ends it.
///
/// ```no_run
/// use gyre_reactor::defer::Backoff;
/// use gyre_reactor::{ClientFactory, Factory, Protocol, Reactor, ReconnectingClientFactory};
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
/// let reactor = Reactor::new()?;
/// let backoff = Backoff::default().initial(Duration::from_millis(50)).max_delay(Duration::from_secs(1));
/// let factory = ReconnectingClientFactory::new(QuietFactory, backoff);
/// let control = factory.control();
/// reactor.connect_tcp("127.0.0.1:7000".parse()?, factory, Duration::from_secs(5));
/// // later: control.stop_trying();
/// # drop(control);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReconnectingClientFactory<F: ClientFactory> {
    factory: F,
    control: Reconnect,
}

/// The shared control of a [`ReconnectingClientFactory`]: stop it, reset
/// its delay, and see what it has pending.
#[derive(Clone)]
pub struct Reconnect {
    state: Rc<State>,
}

struct State {
    backoff: RefCell<BackoffState>,
    continue_trying: Cell<bool>,
    pending: RefCell<Option<DelayedCall>>,
    last_delay: Cell<Option<std::time::Duration>>,
    connector: RefCell<Option<Connector>>,
}

impl<F: ClientFactory> ReconnectingClientFactory<F> {
    /// Wraps `factory`, reconnecting with `backoff`.
    pub fn new(factory: F, backoff: Backoff) -> Self {
        Self::with_state(factory, BackoffState::new(backoff))
    }

    /// Wraps `factory` with a given back-off state (e.g. a seeded one, for
    /// reproducible delays in tests).
    pub fn with_state(factory: F, backoff: BackoffState) -> Self {
        ReconnectingClientFactory {
            factory,
            control: Reconnect {
                state: Rc::new(State {
                    backoff: RefCell::new(backoff),
                    continue_trying: Cell::new(true),
                    pending: RefCell::new(None),
                    last_delay: Cell::new(None),
                    connector: RefCell::new(None),
                }),
            },
        }
    }

    /// The control handle (keep it to call `stop_trying`).
    pub fn control(&self) -> Reconnect {
        self.control.clone()
    }

    /// The wrapped factory.
    pub fn inner(&self) -> &F {
        &self.factory
    }

    fn retry(&self, connector: &Connector) {
        let state = &self.control.state;
        *state.connector.borrow_mut() = Some(connector.clone());
        if !state.continue_trying.get() {
            return;
        }
        let Some(delay) = state.backoff.borrow_mut().next_delay() else {
            log::info!(
                "giving up on {} after {} retries",
                connector.destination_address(),
                state.backoff.borrow().attempt()
            );
            state.continue_trying.set(false);
            return;
        };
        let Some(reactor) = connector.reactor() else {
            return;
        };
        state.last_delay.set(Some(delay));
        log::debug!(
            "reconnecting to {} in {delay:?}",
            connector.destination_address()
        );
        let weak = Rc::downgrade(state);
        let target = connector.clone();
        let call = reactor.call_later(delay, move || {
            if let Some(state) = weak.upgrade() {
                state.pending.borrow_mut().take();
                if state.continue_trying.get() {
                    target.connect();
                }
            }
        });
        if let Some(old) = state.pending.borrow_mut().replace(call) {
            let _ = old.cancel();
        }
    }
}

impl Reconnect {
    /// Stops reconnecting: cancels a pending retry; a live connection stays
    /// up, but when it is lost there is no reconnect. An attempt in flight
    /// is stopped.
    pub fn stop_trying(&self) {
        let state = &self.state;
        state.continue_trying.set(false);
        if let Some(call) = state.pending.borrow_mut().take() {
            let _ = call.cancel();
        }
        let connector = state.connector.borrow().clone();
        if let Some(connector) = connector {
            if connector.state() == crate::ConnectorState::Connecting {
                connector.stop_connecting();
            }
        }
    }

    /// Whether it will still reconnect.
    pub fn continue_trying(&self) -> bool {
        self.state.continue_trying.get()
    }

    /// Starts the back-off over (done automatically on each connection).
    pub fn reset_delay(&self) {
        self.state.backoff.borrow_mut().reset();
        self.state.last_delay.set(None);
    }

    /// The scheduled reconnect, if one is pending.
    pub fn pending_retry(&self) -> Option<DelayedCall> {
        self.state
            .pending
            .borrow()
            .clone()
            .filter(DelayedCall::active)
    }

    /// The delay chosen for the latest scheduled retry.
    pub fn last_delay(&self) -> Option<std::time::Duration> {
        self.state.last_delay.get()
    }

    /// Retries scheduled since the last successful connection.
    pub fn retries(&self) -> u32 {
        self.state.backoff.borrow().attempt()
    }
}

impl fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnect")
            .field("continue_trying", &self.continue_trying())
            .field("retries", &self.retries())
            .field("last_delay", &self.last_delay())
            .finish()
    }
}

impl<F: ClientFactory> Factory for ReconnectingClientFactory<F> {
    type Protocol = F::Protocol;

    fn build_protocol(&mut self, peer: SocketAddr) -> Option<F::Protocol> {
        let protocol = self.factory.build_protocol(peer);
        if protocol.is_some() {
            self.control.reset_delay();
        }
        protocol
    }

    fn start_factory(&mut self) {
        self.factory.start_factory()
    }

    fn stop_factory(&mut self) {
        self.factory.stop_factory()
    }

    fn ready_for_calls(&self) -> bool {
        self.factory.ready_for_calls()
    }
}

impl<F: ClientFactory> ClientFactory for ReconnectingClientFactory<F> {
    fn started_connecting(&mut self, connector: &Connector) {
        *self.control.state.connector.borrow_mut() = Some(connector.clone());
        self.factory.started_connecting(connector)
    }

    fn client_connection_failed(&mut self, connector: &Connector, reason: &io::Error) {
        self.factory.client_connection_failed(connector, reason);
        self.retry(connector);
    }

    fn client_connection_lost(&mut self, connector: &Connector, reason: &ConnectionLost) {
        self.factory.client_connection_lost(connector, reason);
        self.retry(connector);
    }
}
