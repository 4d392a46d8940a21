//! [`IdleTimeout`]: closes any protocol's connection after a period with
//! no data received (Twisted's `policies.TimeoutMixin`).
//!
//! # Semantics
//!
//! - The clock starts at `connection_made`. **Any** bytes received reset
//!   it, whatever the inner protocol makes of them (a partial line, half a
//!   TLS record, a single byte), because the wrapper sees the bytes before
//!   the protocol does. Writes do not reset it; call
//!   [`IdleHandle::reset`] for activity of your own.
//! - After `period` without data, the time-out action runs once: by
//!   default [`Transport::lose_connection`] (answers already written are
//!   flushed, then the connection closes), logged at debug level with the
//!   peer's address; or the function given to
//!   [`on_timeout`](IdleTimeout::on_timeout).
//! - Time is the reactor's [`Clock`] (pass [`Reactor::clock`]), so tests
//!   use a [`ManualClock`](crate::clock::ManualClock). The timer is not
//!   moved on every read: it fires at the first deadline, finds the last
//!   activity, and sleeps again for what is left, so a busy connection
//!   costs one timer per period, not one per read.
//! - [`IdleHandle::set_timeout`] changes the period (restarting the
//!   count) or turns the time-out off (`None`). The timer is cancelled at
//!   `connection_lost`.
//!
//! [`Reactor::clock`]: crate::Reactor::clock

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::clock::{Clock, DelayedCall};
use crate::protocol::{ConnectionLost, Protocol};
use crate::transport::Transport;

/// What runs when the time is up.
type OnIdle = Box<dyn FnMut(&Transport)>;

/// Where the watch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watch {
    /// Not connected yet.
    NotStarted,
    /// Counting.
    Watching,
    /// The time-out is off (`set_timeout(None)`).
    Off,
    /// The time ran out; the action ran.
    TimedOut,
    /// The connection is closed.
    Closed,
}

struct State {
    clock: Clock,
    period: Cell<Option<Duration>>,
    last_activity: Cell<Instant>,
    watch: Cell<Watch>,
    timer: RefCell<Option<DelayedCall>>,
    transport: RefCell<Option<Transport>>,
    on_idle: RefCell<Option<OnIdle>>,
    me: Weak<State>,
}

impl State {
    /// Arms the timer for `delay` from now (cancelling any other).
    fn arm(&self, delay: Duration) {
        let me = self.me.clone();
        let timer = self.clock.call_later(delay, move || {
            if let Some(state) = me.upgrade() {
                state.fire();
            }
        });
        if let Some(old) = self.timer.borrow_mut().replace(timer) {
            let _ = old.cancel();
        }
    }

    fn disarm(&self) {
        if let Some(timer) = self.timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
    }

    /// Starts counting `period` from now.
    fn restart(&self) {
        self.last_activity.set(self.clock.now());
        match self.period.get() {
            Some(period) => {
                self.watch.set(Watch::Watching);
                self.arm(period);
            }
            None => {
                self.watch.set(Watch::Off);
                self.disarm();
            }
        }
    }

    /// The timer fired: time out, or sleep again for what is left since
    /// the last activity.
    fn fire(&self) {
        self.timer.borrow_mut().take();
        if self.watch.get() != Watch::Watching {
            return;
        }
        let Some(period) = self.period.get() else {
            return;
        };
        let idle = self
            .clock
            .now()
            .saturating_duration_since(self.last_activity.get());
        if idle < period {
            self.arm(period - idle);
            return;
        }
        self.watch.set(Watch::TimedOut);
        let Some(transport) = self.transport.borrow().clone() else {
            return;
        };
        // Taken out while it runs, so it may use the handle freely.
        let action = self.on_idle.borrow_mut().take();
        match action {
            Some(mut action) => {
                action(&transport);
                let mut slot = self.on_idle.borrow_mut();
                if slot.is_none() {
                    *slot = Some(action);
                }
            }
            None => {
                log::debug!(
                    "idle time-out ({period:?}) for {}: closing",
                    transport
                        .peer_addr()
                        .map_or_else(|| "a connection".to_string(), |a| a.to_string())
                );
                transport.lose_connection();
            }
        }
    }
}

/// Wraps a protocol so that its connection is closed after `period`
/// without data received. See the [module docs](self) for the rules.
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::{IdleTimeout, Protocol};
/// use std::time::Duration;
///
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &[u8]) {}
/// }
///
/// let clock = ManualClock::new();
/// let st = StringTransport::new();
/// let mut proto = IdleTimeout::new(&clock.clock(), Duration::from_secs(30), Quiet);
/// proto.connection_made(st.transport());
/// clock.advance(Duration::from_secs(29));
/// proto.data_received(b"x"); // any byte counts
/// clock.advance(Duration::from_secs(29));
/// assert!(!st.disconnecting());
/// clock.advance(Duration::from_secs(1));
/// assert!(st.disconnecting(), "30 s without data");
/// ```
pub struct IdleTimeout<P: Protocol> {
    inner: P,
    state: Rc<State>,
}

impl<P: Protocol> IdleTimeout<P> {
    /// `inner`, closed after `period` without data on `clock` (the
    /// reactor's).
    pub fn new(clock: &Clock, period: Duration, inner: P) -> IdleTimeout<P> {
        let state = Rc::new_cyclic(|me| State {
            clock: clock.clone(),
            period: Cell::new(Some(period)),
            last_activity: Cell::new(clock.now()),
            watch: Cell::new(Watch::NotStarted),
            timer: RefCell::new(None),
            transport: RefCell::new(None),
            on_idle: RefCell::new(None),
            me: me.clone(),
        });
        IdleTimeout { inner, state }
    }

    /// Runs `action` instead of `lose_connection` when the time is up
    /// (Twisted's `timeoutConnection`): say, write a last line, then close.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::testing::StringTransport;
    /// use gyre_reactor::{IdleTimeout, Protocol};
    /// use std::time::Duration;
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let st = StringTransport::new();
    /// let mut proto = IdleTimeout::new(&clock.clock(), Duration::from_secs(5), Quiet)
    ///     .on_timeout(|t| {
    ///         t.write(b"timed out\r\n");
    ///         t.lose_connection();
    ///     });
    /// proto.connection_made(st.transport());
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(st.value(), b"timed out\r\n");
    /// ```
    pub fn on_timeout(self, action: impl FnMut(&Transport) + 'static) -> IdleTimeout<P> {
        *self.state.on_idle.borrow_mut() = Some(Box::new(action));
        self
    }

    /// A handle to reset the count or change the period from elsewhere
    /// (the inner protocol, a timer).
    pub fn handle(&self) -> IdleHandle {
        IdleHandle {
            state: Rc::downgrade(&self.state),
        }
    }

    /// The wrapped protocol.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped protocol, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }
}

impl<P: Protocol> Protocol for IdleTimeout<P> {
    fn connection_made(&mut self, transport: Transport) {
        *self.state.transport.borrow_mut() = Some(transport.clone());
        self.state.restart();
        self.inner.connection_made(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        // The lazy reset: the timer finds this when it fires.
        self.state.last_activity.set(self.state.clock.now());
        self.inner.data_received(data);
    }

    fn eof_received(&mut self) -> bool {
        self.inner.eof_received()
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.state.watch.set(Watch::Closed);
        self.state.disarm();
        self.state.transport.borrow_mut().take();
        self.state.on_idle.borrow_mut().take();
        self.inner.connection_lost(reason);
    }
}

impl<P: Protocol> fmt::Debug for IdleTimeout<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("period", &self.state.period.get())
            .field("watch", &self.state.watch.get())
            .finish()
    }
}

/// A cheap `Clone` handle on an [`IdleTimeout`]; does nothing once the
/// connection (and the wrapper) is gone.
#[derive(Clone)]
pub struct IdleHandle {
    state: Weak<State>,
}

impl IdleHandle {
    /// Counts activity now (Twisted's `resetTimeout`), as data received
    /// does.
    pub fn reset(&self) {
        if let Some(state) = self.state.upgrade() {
            state.last_activity.set(state.clock.now());
        }
    }

    /// Changes the period, counting from now, or turns the time-out off
    /// with `None` (Twisted's `setTimeout`). Has no effect before the
    /// connection is made (the new period is used from then) or after it
    /// timed out or closed.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::testing::StringTransport;
    /// use gyre_reactor::{IdleTimeout, Protocol};
    /// use std::time::Duration;
    ///
    /// struct Quiet;
    /// impl Protocol for Quiet {
    ///     fn data_received(&mut self, _: &[u8]) {}
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let st = StringTransport::new();
    /// let mut proto = IdleTimeout::new(&clock.clock(), Duration::from_secs(5), Quiet);
    /// let idle = proto.handle();
    /// proto.connection_made(st.transport());
    /// idle.set_timeout(None); // e.g. while a long job runs for this client
    /// clock.advance(Duration::from_secs(60));
    /// assert!(!st.disconnecting());
    /// ```
    pub fn set_timeout(&self, period: Option<Duration>) {
        if let Some(state) = self.state.upgrade() {
            state.period.set(period);
            if matches!(state.watch.get(), Watch::Watching | Watch::Off) {
                state.restart();
            }
        }
    }

    /// Whether the time ran out (and the action ran).
    pub fn timed_out(&self) -> bool {
        self.state
            .upgrade()
            .is_some_and(|s| s.watch.get() == Watch::TimedOut)
    }
}

impl fmt::Debug for IdleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleHandle")
            .field("alive", &(self.state.strong_count() > 0))
            .field("timed_out", &self.timed_out())
            .finish()
    }
}
