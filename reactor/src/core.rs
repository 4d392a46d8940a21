//! The [`Reactor`]: the event loop, its life cycle, and the slot table that
//! maps mio tokens to connections, listeners and connect attempts.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::clock::{Clock, DelayedCall};
use crate::conn::Conn;
use crate::connector::Attempt;
use crate::defer::{self, Deferred};
use crate::listener::Listener;
use crate::perturb::{Perturbation, Perturber};
use crate::signals::SignalHandlers;
use crate::threads::{ThreadPool, ThreadShared};

/// The token of the cross-thread waker.
const WAKER_TOKEN: usize = usize::MAX;
/// The token of the signal self-pipe.
pub(crate) const SIGNAL_TOKEN: usize = usize::MAX - 1;
/// Size of the read buffer shared by every connection of a reactor.
const READ_BUFFER_SIZE: usize = 64 * 1024;
/// The default of [`ReactorBuilder::linger_timeout`]: how long a closing
/// connection reads and discards input waiting for the peer's EOF.
pub const DEFAULT_LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// Events taken from the kernel per poll.
const EVENTS_CAPACITY: usize = 1024;

/// Errors of the reactor's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactorError {
    /// `stop` was called while the reactor was not running.
    NotRunning,
    /// `run` was called while the reactor was running.
    AlreadyRunning,
    /// `run` was called after the reactor had stopped (reactors do not restart).
    NotRestartable,
    /// `iterate` or `run` was called from inside a callback of the same reactor.
    Reentrant,
}

impl fmt::Display for ReactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReactorError::NotRunning => "the reactor is not running",
            ReactorError::AlreadyRunning => "the reactor is already running",
            ReactorError::NotRestartable => "the reactor has stopped and cannot be restarted",
            ReactorError::Reentrant => {
                "the reactor's loop cannot be entered from its own callbacks"
            }
        })
    }
}

impl std::error::Error for ReactorError {}

/// When a system event trigger runs, relative to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the event; a `Before` trigger may return a Deferred to wait for.
    Before,
    /// While the event happens.
    During,
    /// After it.
    After,
}

/// A reactor life-cycle event (Twisted's `startup` and `shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemEvent {
    /// `run` started.
    Startup,
    /// The reactor is stopping.
    Shutdown,
}

/// Identifies a trigger, for [`Reactor::remove_system_event_trigger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerId(u64);

type Trigger = Box<dyn FnOnce(&Reactor) -> Option<Deferred<()>>>;
type WhenRunning = Box<dyn FnOnce(&Reactor)>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RunState {
    NotStarted,
    Running,
    Stopping,
    Stopped,
}

/// Settings for a new reactor; see [`Reactor::builder`].
#[derive(Debug, Clone)]
pub struct ReactorBuilder {
    clock: Option<ClockChoice>,
    backlog: i32,
    thread_pool_size: usize,
    install_signal_handlers: bool,
    shutdown_timeout: Duration,
    linger_timeout: Duration,
    perturbation: Option<Perturbation>,
}

#[derive(Clone)]
struct ClockChoice(Clock);

impl fmt::Debug for ClockChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_manual() { "manual" } else { "real" })
    }
}

impl Default for ReactorBuilder {
    fn default() -> Self {
        ReactorBuilder {
            clock: None,
            backlog: 1024,
            thread_pool_size: 10,
            install_signal_handlers: true,
            shutdown_timeout: Duration::from_secs(30),
            linger_timeout: DEFAULT_LINGER_TIMEOUT,
            perturbation: None,
        }
    }
}

impl ReactorBuilder {
    /// Uses `clock` for every timer (a [`ManualClock`](crate::clock::ManualClock)'s
    /// clock in tests). Default: the real monotonic clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(ClockChoice(clock));
        self
    }

    /// The listen backlog of `listen_tcp` (default 1024).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// The most threads `defer_to_thread` uses (default 10, at least 1).
    pub fn thread_pool_size(mut self, size: usize) -> Self {
        self.thread_pool_size = size.max(1);
        self
    }

    /// Whether `run` makes SIGINT and SIGTERM stop the loop (default true).
    pub fn install_signal_handlers(mut self, install: bool) -> Self {
        self.install_signal_handlers = install;
        self
    }

    /// How long shutdown may take as a whole (default 30 s): waiting for
    /// before-shutdown Deferreds, for connections to flush and close, and
    /// for thread-pool jobs to finish all share this one deadline. Past it,
    /// connections are aborted and pool threads still running a job are
    /// detached (their results dropped), each logged.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a closing connection lingers (default
    /// [`DEFAULT_LINGER_TIMEOUT`], 5 s): after `lose_connection` has flushed
    /// and shut the write side, input is read and discarded until the
    /// peer's EOF or this time-out, and only then is the socket closed, so
    /// that unread input never makes the kernel reset the connection and
    /// purge answers not yet delivered. When the time-out is hit the socket
    /// is closed anyway (logged at debug level). `Duration::ZERO` closes at
    /// once after the flush (the old behaviour).
    pub fn linger_timeout(mut self, timeout: Duration) -> Self {
        self.linger_timeout = timeout;
        self
    }

    /// Runs the loop under a seeded, hostile schedule (short reads, a sleep
    /// before each poll, shuffled events, partial writes): for tests; see
    /// [`Perturbation`](crate::testing::Perturbation). Default: none.
    pub fn perturb(mut self, perturbation: Perturbation) -> Self {
        self.perturbation = Some(perturbation);
        self
    }

    /// Creates the reactor.
    ///
    /// Several reactors may live on one thread (a test's client and server
    /// taking turns, say); each has its own poller, connections, timers and
    /// life cycle. Deferreds and `async` tasks belong to the thread, not to a
    /// reactor: a task woken from another thread wakes every loop of its
    /// thread, and whichever iterates first polls it.
    ///
    /// ```
    /// use gyre_reactor::Reactor;
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    ///
    /// let first = Reactor::builder().install_signal_handlers(false).build()?;
    /// let second = Reactor::builder().install_signal_handlers(false).build()?;
    /// let ran = Rc::new(Cell::new(false));
    /// let flag = ran.clone();
    /// second.call_soon(move || flag.set(true));
    /// first.iterate(Some(Duration::ZERO)).unwrap(); // not the second's call
    /// assert!(!ran.get());
    /// assert!(second.run_until(|| ran.get(), Duration::from_secs(5)).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build(self) -> io::Result<Reactor> {
        Reactor::from_builder(self)
    }
}

pub(crate) enum SlotKind {
    Conn(Rc<Conn>),
    Listener(Rc<Listener>),
    Connecting(Rc<Attempt>),
    /// Anything else registered with the loop: a user's own descriptor, a
    /// datagram port, a child process's pipe.
    Source(Rc<dyn EventSource>),
}

/// A registered descriptor that is neither a TCP connection, a listener
/// nor a connect attempt: the one internal shape that every other kind of
/// source (a user's own descriptor, UDP, pipes) plugs into.
///
/// # Contract
///
/// - The source registers itself with [`Inner::registry`] under the token
///   [`Inner::insert_slot`] gave it, and deregisters and frees the slot
///   ([`Inner::remove_slot`]) when it closes.
/// - `handle_event` is called from the loop for every readiness event with
///   its token. Readiness is edge-triggered: the source reads (or writes)
///   until `WouldBlock`. User code it calls runs under [`guard`].
/// - `shutdown` is called once when the reactor shuts down (after the
///   listeners stop): the source closes and frees its slot.
pub(crate) trait EventSource {
    /// One readiness event for this source's token. `buf` is the loop's
    /// shared read buffer.
    fn handle_event(&self, reactor: &Reactor, event: &Readiness, buf: &mut [u8]);
    /// The reactor is shutting down: close and free the slot.
    fn shutdown(&self, reactor: &Reactor);
}

/// Everything in the slot table, by kind (for shutdown).
#[derive(Default)]
struct SlotSnapshot {
    listeners: Vec<Rc<Listener>>,
    conns: Vec<Rc<Conn>>,
    attempts: Vec<Rc<Attempt>>,
    sources: Vec<Rc<dyn EventSource>>,
}

struct SlotEntry {
    generation: u32,
    kind: SlotKind,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReactorStats {
    /// Loop iterations.
    pub iterations: u64,
    /// Readiness events for a slot that was closed (and maybe reused) since:
    /// ignored.
    pub stale_events: u64,
    /// Connections accepted.
    pub accepted: u64,
}

pub(crate) struct Inner {
    pub(crate) registry: mio::Registry,
    poll: RefCell<mio::Poll>,
    events: RefCell<Option<mio::Events>>,
    pub(crate) clock: Clock,
    slots: RefCell<Slab<SlotEntry>>,
    next_generation: Cell<u32>,
    pub(crate) dirty: RefCell<Vec<Rc<Conn>>>,
    pub(crate) read_again: RefCell<Vec<Rc<Conn>>>,
    pub(crate) lost: RefCell<VecDeque<Rc<Conn>>>,
    soon: RefCell<VecDeque<Box<dyn FnOnce()>>>,
    read_buf: RefCell<Vec<u8>>,
    pub(crate) threads: Arc<ThreadShared>,
    pub(crate) pool: RefCell<Option<ThreadPool>>,
    pub(crate) thread_jobs: RefCell<crate::threads::PendingJobs>,
    pub(crate) thread_pool_size: usize,
    pub(crate) backlog: i32,
    install_signal_handlers: bool,
    shutdown_timeout: Duration,
    /// See [`ReactorBuilder::linger_timeout`].
    pub(crate) linger_timeout: Duration,
    state: Cell<RunState>,
    stop_requested: Cell<bool>,
    iterating: Cell<bool>,
    triggers: RefCell<Vec<(TriggerId, Phase, SystemEvent, Trigger)>>,
    next_trigger: Cell<u64>,
    /// See [`Reactor::before_writes`].
    pub(crate) write_hooks: crate::hooks::WriteHooks,
    when_running: RefCell<Vec<WhenRunning>>,
    stats: Cell<ReactorStats>,
    pub(crate) signals: RefCell<Option<SignalHandlers>>,
    /// The child reaper (SIGCHLD self-pipe and the children not yet
    /// reaped), made by the first `spawn_process`.
    pub(crate) processes: RefCell<Option<Rc<crate::process::Reaper>>>,
    /// The test schedule perturbation, if any.
    pub(crate) perturber: Option<Perturber>,
    /// Wakes this loop when another thread wakes one of its futures.
    remote_notifier: Arc<dyn Fn() + Send + Sync>,
    self_weak: Weak<Inner>,
}

/// A single-threaded event loop (Twisted's reactor), passed around as a
/// cheap `Clone`, `!Send` handle. There is no global reactor.
///
/// User code (protocols, timers, Deferred callbacks, calls from threads)
/// runs only from the loop, one piece at a time; any of it may call any
/// reactor method.
///
/// ```no_run
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
/// let port = reactor.listen_tcp("127.0.0.1:7000".parse()?, factory_fn(|_| Some(Echo::default())))?;
/// println!("echoing on {}", port.local_addr());
/// reactor.run()?; // until SIGINT or reactor.stop()
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Reactor {
    pub(crate) inner: Rc<Inner>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("state", &self.inner.state.get())
            .field("slots", &self.inner.slots.borrow().len())
            .finish()
    }
}

impl Reactor {
    /// A reactor with default settings (real clock, backlog 1024, signal
    /// handlers installed by `run`).
    pub fn new() -> io::Result<Reactor> {
        ReactorBuilder::default().build()
    }

    /// Settings for a reactor.
    ///
    /// ```
    /// use gyre_reactor::{clock::ManualClock, Reactor};
    ///
    /// let clock = ManualClock::new();
    /// let reactor = Reactor::builder()
    ///     .clock(clock.clock())
    ///     .install_signal_handlers(false)
    ///     .build()?;
    /// # drop(reactor);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> ReactorBuilder {
        ReactorBuilder::default()
    }

    fn from_builder(builder: ReactorBuilder) -> io::Result<Reactor> {
        Reactor::build_loop(builder)
    }

    /// Builds the loop: its poller, waker, slots and clock.
    fn build_loop(builder: ReactorBuilder) -> io::Result<Reactor> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(WAKER_TOKEN))?);
        let threads = Arc::new(ThreadShared::new(Arc::clone(&waker)));
        let notify = Arc::clone(&waker);
        let remote_notifier: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = notify.wake();
        });
        let inner = Rc::new_cyclic(|weak| Inner {
            remote_notifier,
            registry,
            poll: RefCell::new(poll),
            events: RefCell::new(Some(mio::Events::with_capacity(EVENTS_CAPACITY))),
            clock: builder.clock.map(|c| c.0).unwrap_or_else(Clock::real),
            slots: RefCell::new(Slab::new()),
            next_generation: Cell::new(1),
            dirty: RefCell::new(Vec::new()),
            read_again: RefCell::new(Vec::new()),
            lost: RefCell::new(VecDeque::new()),
            soon: RefCell::new(VecDeque::new()),
            read_buf: RefCell::new(vec![0; READ_BUFFER_SIZE]),
            threads,
            pool: RefCell::new(None),
            thread_jobs: RefCell::new(Default::default()),
            thread_pool_size: builder.thread_pool_size,
            backlog: builder.backlog,
            install_signal_handlers: builder.install_signal_handlers,
            shutdown_timeout: builder.shutdown_timeout,
            linger_timeout: builder.linger_timeout,
            state: Cell::new(RunState::NotStarted),
            stop_requested: Cell::new(false),
            iterating: Cell::new(false),
            triggers: RefCell::new(Vec::new()),
            next_trigger: Cell::new(1),
            write_hooks: Default::default(),
            when_running: RefCell::new(Vec::new()),
            stats: Cell::new(ReactorStats::default()),
            signals: RefCell::new(None),
            processes: RefCell::new(None),
            perturber: builder.perturbation.map(Perturber::new),
            self_weak: weak.clone(),
        });
        // Futures spawned on this thread and woken elsewhere come back
        // through the loop's waker.
        defer::runner::add_remote_notifier(Arc::clone(&inner.remote_notifier));
        Ok(Reactor { inner })
    }

    pub(crate) fn from_inner(inner: Rc<Inner>) -> Reactor {
        Reactor { inner }
    }

    /// The clock every timer of this reactor runs on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Counters for diagnostics.
    pub fn stats(&self) -> ReactorStats {
        self.inner.stats.get()
    }

    /// How many TCP connections (accepted or connected) the reactor holds
    /// open now; listening ports and connection attempts in flight are not
    /// counted. A connection leaves the count as soon as it closes, before
    /// its `connection_lost` is delivered. For diagnostics and tests; O(slots).
    pub fn connection_count(&self) -> usize {
        self.inner
            .slots
            .borrow()
            .iter()
            .filter(|(_, entry)| matches!(entry.kind, SlotKind::Conn(_)))
            .count()
    }

    /// Whether `run` is running (and not yet shutting down).
    pub fn is_running(&self) -> bool {
        self.inner.state.get() == RunState::Running
    }

    /// Calls `f` after `delay` (Twisted's `callLater`). See [`DelayedCall`]
    /// for cancelling and moving it.
    ///
    /// ```
    /// # use gyre_reactor::Reactor;
    /// # use std::time::Duration;
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let r = reactor.clone();
    /// reactor.call_later(Duration::from_millis(1), move || r.stop().unwrap());
    /// reactor.run().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> DelayedCall {
        self.inner.clock.call_later(delay, f)
    }

    /// Calls `f` on the next iteration of the loop, after pending I/O is
    /// handled. Calls queued from inside a `call_soon` callback run on the
    /// iteration after, so a callback that reschedules itself cannot starve
    /// I/O.
    pub fn call_soon(&self, f: impl FnOnce() + 'static) {
        self.inner.soon.borrow_mut().push_back(Box::new(f));
    }

    /// Registers `hook` to run before the loop writes buffered connection
    /// output to sockets, and once at the end of every iteration: the
    /// reactor's end-of-iteration hook. See the `hooks` module's contract:
    /// whatever the hook makes durable is durable before any byte written
    /// in the same iteration reaches a peer. Returns an id for
    /// [`remove_before_writes`](Self::remove_before_writes).
    ///
    /// ```
    /// # use gyre_reactor::Reactor;
    /// # use std::{cell::Cell, rc::Rc, time::Duration};
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let runs = Rc::new(Cell::new(0));
    /// let counted = Rc::clone(&runs);
    /// let id = reactor.before_writes(move || counted.set(counted.get() + 1));
    /// reactor.iterate(Some(Duration::ZERO))?;
    /// assert!(runs.get() >= 1);
    /// assert!(reactor.remove_before_writes(id));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn before_writes(&self, hook: impl Fn() + 'static) -> crate::hooks::BeforeWritesId {
        self.inner.write_hooks.add(Rc::new(hook))
    }

    /// Removes a hook added by [`before_writes`](Self::before_writes);
    /// whether it was there.
    pub fn remove_before_writes(&self, id: crate::hooks::BeforeWritesId) -> bool {
        self.inner.write_hooks.remove(id)
    }

    /// Calls `f` once the loop runs (at once if it already does).
    pub fn call_when_running(&self, f: impl FnOnce(&Reactor) + 'static) {
        if self.inner.state.get() == RunState::Running {
            f(self);
        } else {
            self.inner.when_running.borrow_mut().push(Box::new(f));
        }
    }

    /// Adds a trigger for a life-cycle event. A `Before` trigger of
    /// `Shutdown` may return a Deferred; shutdown waits for it (up to the
    /// shutdown time-out) before closing connections.
    ///
    /// ```
    /// use gyre_reactor::{Phase, Reactor, SystemEvent};
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// reactor.add_system_event_trigger(Phase::After, SystemEvent::Shutdown, |_| {
    ///     println!("bye");
    ///     None
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_system_event_trigger(
        &self,
        phase: Phase,
        event: SystemEvent,
        f: impl FnOnce(&Reactor) -> Option<Deferred<()>> + 'static,
    ) -> TriggerId {
        let id = TriggerId(self.inner.next_trigger.get());
        self.inner.next_trigger.set(id.0 + 1);
        self.inner
            .triggers
            .borrow_mut()
            .push((id, phase, event, Box::new(f)));
        id
    }

    /// Removes a trigger that has not run; returns whether it was there.
    pub fn remove_system_event_trigger(&self, id: TriggerId) -> bool {
        let mut triggers = self.inner.triggers.borrow_mut();
        let before = triggers.len();
        triggers.retain(|t| t.0 != id);
        triggers.len() != before
    }

    /// Runs the triggers of one phase of one event, in the order they were
    /// added, and returns the Deferreds they gave.
    fn fire_triggers(&self, phase: Phase, event: SystemEvent) -> Vec<Deferred<()>> {
        let mut chosen = Vec::new();
        {
            let mut triggers = self.inner.triggers.borrow_mut();
            let mut i = 0;
            while i < triggers.len() {
                if triggers[i].1 == phase && triggers[i].2 == event {
                    chosen.push(triggers.remove(i).3);
                } else {
                    i += 1;
                }
            }
        }
        let mut waits = Vec::new();
        for trigger in chosen {
            if let Ok(Some(d)) = guard(format_args!("{phase:?}-{event:?} trigger"), || {
                trigger(self)
            }) {
                waits.push(d);
            }
        }
        waits
    }

    /// Asks a running loop to stop: shutdown triggers run, ports close,
    /// connections flush and close, then `run` returns. An error if the
    /// reactor is not running.
    pub fn stop(&self) -> Result<(), ReactorError> {
        match self.inner.state.get() {
            RunState::Running if !self.inner.stop_requested.get() => {
                self.inner.stop_requested.set(true);
                // Wake a poll that may be waiting.
                let _ = self.inner.threads.wake();
                Ok(())
            }
            _ => Err(ReactorError::NotRunning),
        }
    }

    /// Runs the loop until [`stop`](Self::stop) (or SIGINT/SIGTERM, if
    /// signal handlers are installed), then shuts down in order: before-,
    /// during- and after-shutdown triggers, ports closed, connections
    /// flushed and closed, threads joined.
    pub fn run(&self) -> Result<(), ReactorError> {
        match self.inner.state.get() {
            RunState::NotStarted => {}
            RunState::Running | RunState::Stopping => return Err(ReactorError::AlreadyRunning),
            RunState::Stopped => return Err(ReactorError::NotRestartable),
        }
        if self.inner.iterating.get() {
            return Err(ReactorError::Reentrant);
        }
        self.inner.state.set(RunState::Running);
        if self.inner.install_signal_handlers {
            match SignalHandlers::install(self) {
                Ok(handlers) => *self.inner.signals.borrow_mut() = Some(handlers),
                Err(e) => log::warn!("could not install signal handlers: {e}"),
            }
        }
        for phase in [Phase::Before, Phase::During, Phase::After] {
            self.fire_triggers(phase, SystemEvent::Startup);
        }
        let when_running = std::mem::take(&mut *self.inner.when_running.borrow_mut());
        for f in when_running {
            let _ = guard(format_args!("call_when_running callback"), || f(self));
        }
        while !self.inner.stop_requested.get() {
            self.iterate_once(None);
        }
        self.shutdown();
        Ok(())
    }

    /// Shuts down in order, all of it within one `shutdown_timeout`: each
    /// stage waits at most until the common deadline, then moves on.
    fn shutdown(&self) {
        self.inner.state.set(RunState::Stopping);
        let deadline = Instant::now() + self.inner.shutdown_timeout;
        let timeout = self.inner.shutdown_timeout;
        let waits = self.fire_triggers(Phase::Before, SystemEvent::Shutdown);
        if !waits.is_empty() {
            let remaining = Rc::new(Cell::new(waits.len()));
            for d in waits {
                let remaining = Rc::clone(&remaining);
                drop(d.add_both(move |outcome| {
                    remaining.set(remaining.get() - 1);
                    if let Err(f) = outcome {
                        log::error!("before-shutdown trigger failed: {}", f.describe());
                    }
                    Ok(())
                }));
            }
            if !self.run_until_inner(|| remaining.get() == 0, remaining_until(deadline)) {
                log::warn!(
                    "shutdown: {} before-shutdown trigger(s) did not finish within {timeout:?}",
                    remaining.get()
                );
            }
        }
        self.fire_triggers(Phase::During, SystemEvent::Shutdown);
        // Close ports, then ask every connection to flush and close.
        let SlotSnapshot {
            listeners,
            conns,
            attempts,
            sources,
        } = self.snapshot_slots();
        for listener in listeners {
            listener.stop();
        }
        for source in sources {
            let _ = guard(format_args!("shutting down an event source"), || {
                source.shutdown(self)
            });
        }
        for attempt in attempts {
            attempt.abandon();
        }
        for conn in &conns {
            crate::TransportBackend::lose_connection(&**conn);
        }
        let open = || conns.iter().filter(|c| !c.is_closed()).count();
        if !self.run_until_inner(|| open() == 0, remaining_until(deadline)) {
            log::warn!(
                "shutdown: aborting {} connection(s) that did not close in time",
                open()
            );
            for conn in &conns {
                conn.close_now(crate::ConnectionLost::Shutdown);
            }
            self.reap();
        }
        self.fire_triggers(Phase::After, SystemEvent::Shutdown);
        let pool = self.inner.pool.borrow_mut().take();
        if let Some(pool) = pool {
            pool.join_within(deadline);
        }
        self.inner.signals.borrow_mut().take();
        self.inner.state.set(RunState::Stopped);
    }

    fn snapshot_slots(&self) -> SlotSnapshot {
        let slots = self.inner.slots.borrow();
        let mut snapshot = SlotSnapshot::default();
        for (_, entry) in slots.iter() {
            match &entry.kind {
                SlotKind::Conn(c) => snapshot.conns.push(Rc::clone(c)),
                SlotKind::Listener(l) => snapshot.listeners.push(Rc::clone(l)),
                SlotKind::Connecting(a) => snapshot.attempts.push(Rc::clone(a)),
                SlotKind::Source(s) => snapshot.sources.push(Rc::clone(s)),
            }
        }
        snapshot
    }

    /// Runs loop iterations until `done()` or `timeout` (real time) passes.
    /// Returns whether `done()` became true. For tests and programs that
    /// drive the loop themselves; an error if called from inside the loop.
    ///
    /// ```
    /// # use gyre_reactor::Reactor;
    /// # use std::{cell::Cell, rc::Rc, time::Duration};
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let fired = Rc::new(Cell::new(false));
    /// let f = fired.clone();
    /// reactor.call_soon(move || f.set(true));
    /// assert!(reactor.run_until(|| fired.get(), Duration::from_secs(5)).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run_until(
        &self,
        done: impl Fn() -> bool,
        timeout: Duration,
    ) -> Result<bool, ReactorError> {
        if self.inner.iterating.get() {
            return Err(ReactorError::Reentrant);
        }
        Ok(self.run_until_inner(done, timeout))
    }

    fn run_until_inner(&self, done: impl Fn() -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.iterate_once(Some(deadline - now));
        }
    }

    /// Runs one iteration of the loop, waiting at most `max_wait` for I/O
    /// (`None`: until something happens). An error if called from inside
    /// the loop.
    pub fn iterate(&self, max_wait: Option<Duration>) -> Result<(), ReactorError> {
        if self.inner.iterating.get() {
            return Err(ReactorError::Reentrant);
        }
        self.iterate_once(max_wait);
        Ok(())
    }

    fn iterate_once(&self, max_wait: Option<Duration>) {
        let inner = &*self.inner;
        inner.iterating.set(true);
        struct Reset<'a>(&'a Cell<bool>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _reset = Reset(&inner.iterating);

        let mut stats = inner.stats.get();
        stats.iterations += 1;
        inner.stats.set(stats);

        let timeout = self.poll_timeout(max_wait);
        let mut events = inner
            .events
            .borrow_mut()
            .take()
            .unwrap_or_else(|| mio::Events::with_capacity(EVENTS_CAPACITY));
        if let Some(perturber) = &inner.perturber {
            perturber.before_poll();
        }
        let polled = inner.poll.borrow_mut().poll(&mut events, timeout);
        match polled {
            Ok(()) => {}
            // A signal interrupted the wait: treat as no events and go on.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => {
                log::error!("poll failed: {e}");
                events.clear();
            }
        }
        let mut buf = std::mem::take(&mut *inner.read_buf.borrow_mut());
        match &inner.perturber {
            None => {
                for event in events.iter() {
                    self.dispatch(Readiness::from(event), &mut buf);
                }
            }
            Some(perturber) => {
                let mut ready: Vec<Readiness> = events.iter().map(Readiness::from).collect();
                perturber.order(&mut ready);
                for event in ready {
                    self.dispatch(event, &mut buf);
                }
            }
        }
        *inner.events.borrow_mut() = Some(events);
        self.reap();

        // Connections with data left over from a read budget, or resumed.
        let again = std::mem::take(&mut *inner.read_again.borrow_mut());
        for conn in &again {
            conn.clear_queued_read();
            conn.handle_readable(&mut buf, true);
        }
        *inner.read_buf.borrow_mut() = buf;
        self.reap();
        {
            let mut slot = inner.read_again.borrow_mut();
            if slot.is_empty() {
                let mut again = again;
                again.clear();
                *slot = again;
            }
        }

        if inner.clock.run_due() > 0 {
            self.reap();
        }
        self.run_soon_batch();
        // Deferred chains left over, then the tasks woken so far: the loop,
        // and only the loop, polls tasks.
        defer::runner::run_tasks();
        self.reap();
        inner.write_hooks.run();
        self.reap();
    }

    fn poll_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        let inner = &*self.inner;
        let busy = !inner.soon.borrow().is_empty()
            || !inner.read_again.borrow().is_empty()
            || !inner.lost.borrow().is_empty()
            || !inner.dirty.borrow().is_empty()
            || defer::runner::has_pending()
            || inner.stop_requested.get() && inner.state.get() == RunState::Running;
        if busy {
            return Some(Duration::ZERO);
        }
        let timer_wait = if inner.clock.is_manual() {
            None
        } else {
            inner
                .clock
                .next_deadline()
                .map(|t| t.saturating_duration_since(inner.clock.now()))
        };
        match (timer_wait, max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn run_soon_batch(&self) {
        let n = self.inner.soon.borrow().len();
        for _ in 0..n {
            let f = self.inner.soon.borrow_mut().pop_front();
            match f {
                Some(f) => {
                    let _ = guard(format_args!("call_soon callback"), f);
                }
                None => break,
            }
        }
        if n > 0 {
            self.reap();
        }
    }

    /// Flushes connections that were written to, and delivers
    /// `connection_lost` for connections that closed, until both are done.
    pub(crate) fn reap(&self) {
        let inner = &*self.inner;
        loop {
            let had_dirty = inner.flush_dirty();
            let lost = inner.lost.borrow_mut().pop_front();
            match lost {
                Some(conn) => conn.deliver_lost(),
                None if had_dirty => {}
                None => break,
            }
        }
    }

    fn dispatch(&self, event: Readiness, buf: &mut [u8]) {
        let token = event.token;
        if token == WAKER_TOKEN {
            self.inner.threads.run_calls(self);
            defer::runner::run_remote_wakes();
            return;
        }
        if token == SIGNAL_TOKEN {
            crate::signals::on_signal(self);
            return;
        }
        let Some(kind) = self.inner.lookup(token) else {
            let mut stats = self.inner.stats.get();
            stats.stale_events += 1;
            self.inner.stats.set(stats);
            return;
        };
        match kind {
            SlotKind::Conn(conn) => conn.handle_event(&event, buf),
            SlotKind::Listener(listener) => listener.handle_readable(self),
            // A connect completion may come with data, EOF or an error in
            // the same edge: the attempt hands the event on to its new
            // connection, which reads at once.
            SlotKind::Connecting(attempt) => attempt.handle_ready(self, &event, buf),
            SlotKind::Source(source) => source.handle_event(self, &event, buf),
        }
    }
}

/// What is left of the time until `deadline` (zero once it has passed).
fn remaining_until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// One readiness event, copied out of mio's so a perturbed schedule can
/// reorder them. Any of these may be set together: a readiness is a hint,
/// and one event may carry a connect completion, data, EOF and an error.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Readiness {
    pub(crate) token: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
    pub(crate) error: bool,
}

impl From<&mio::event::Event> for Readiness {
    fn from(event: &mio::event::Event) -> Readiness {
        Readiness {
            token: event.token().0,
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
            error: event.is_error(),
        }
    }
}

/// The reactor's one panic guard: runs user code from the loop, and
/// catches a panic so that it costs only what was being handled.
///
/// A panic is logged at error level with `what` (what the loop was
/// handling: "data_received for 127.0.0.1:4000", "call_soon callback") and
/// returned as `Err(message)`; the payload is dropped under the guard too,
/// so a payload whose destructor panics cannot escape. `what` is only
/// formatted when a panic happened, so the guard costs nothing on the hot
/// path beyond `catch_unwind` itself.
pub(crate) fn guard<T>(what: fmt::Arguments<'_>, f: impl FnOnce() -> T) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(value) => Ok(value),
        Err(payload) => {
            let message = defer::panic_message(&*payload);
            log::error!("{what} panicked: {message}");
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)));
            Err(message)
        }
    }
}

impl Inner {
    /// How many bytes the next socket read asks for, out of `len` (less
    /// only under a perturbed schedule).
    pub(crate) fn read_len(&self, len: usize) -> usize {
        match &self.perturber {
            Some(p) => p.read_len(len),
            None => len,
        }
    }

    /// How many bytes the next socket write offers, out of `len` (less
    /// only under a perturbed schedule).
    pub(crate) fn write_len(&self, len: usize) -> usize {
        match &self.perturber {
            Some(p) => p.write_len(len),
            None => len,
        }
    }

    /// Flushes the connections written to since the last flush (the dirty
    /// list), which also pauses or resumes their producers. Returns whether
    /// there were any. Called after each phase of the loop, and by a
    /// connection between two reads of one burst, so that a producer paused
    /// by the flush stops the burst at the high-water mark.
    pub(crate) fn flush_dirty(&self) -> bool {
        if self.dirty.borrow().is_empty() {
            return false;
        }
        self.write_hooks.run();
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for conn in &dirty {
            conn.flush();
        }
        // Give the (now empty) vector back to keep its capacity.
        let mut slot = self.dirty.borrow_mut();
        if slot.is_empty() {
            let mut dirty = dirty;
            dirty.clear();
            *slot = dirty;
        }
        true
    }

    pub(crate) fn count_accept(&self) {
        let mut stats = self.stats.get();
        stats.accepted += 1;
        self.stats.set(stats);
    }

    pub(crate) fn reactor(&self) -> Option<Reactor> {
        self.self_weak.upgrade().map(Reactor::from_inner)
    }

    /// Reserves a slot; returns its token.
    pub(crate) fn insert_slot(&self, kind: impl FnOnce(usize) -> SlotKind) -> usize {
        let generation = self.next_generation.get();
        self.next_generation.set(generation.wrapping_add(1).max(1));
        let mut slots = self.slots.borrow_mut();
        let entry = slots.vacant_entry();
        let token = encode_token(entry.key(), generation);
        entry.insert(SlotEntry {
            generation,
            kind: kind(token),
        });
        token
    }

    /// Replaces what a live slot holds (a connect attempt becoming a connection).
    pub(crate) fn replace_slot(&self, token: usize, kind: SlotKind) -> bool {
        let (index, generation) = decode_token(token);
        let mut slots = self.slots.borrow_mut();
        match slots.get_mut(index) {
            Some(entry) if entry.generation == generation => {
                entry.kind = kind;
                true
            }
            _ => false,
        }
    }

    /// Frees a slot if `token` still names it; returns what it held.
    pub(crate) fn remove_slot(&self, token: usize) -> Option<SlotKind> {
        let (index, generation) = decode_token(token);
        let mut slots = self.slots.borrow_mut();
        match slots.get(index) {
            Some(entry) if entry.generation == generation => Some(slots.remove(index).kind),
            _ => None,
        }
    }

    fn lookup(&self, token: usize) -> Option<SlotKind> {
        let (index, generation) = decode_token(token);
        let slots = self.slots.borrow();
        let entry = slots.get(index).filter(|e| e.generation == generation)?;
        Some(match &entry.kind {
            SlotKind::Conn(c) => SlotKind::Conn(Rc::clone(c)),
            SlotKind::Listener(l) => SlotKind::Listener(Rc::clone(l)),
            SlotKind::Connecting(a) => SlotKind::Connecting(Rc::clone(a)),
            SlotKind::Source(s) => SlotKind::Source(Rc::clone(s)),
        })
    }

    pub(crate) fn conn_by_token(&self, token: usize) -> Option<Rc<Conn>> {
        match self.lookup(token)? {
            SlotKind::Conn(c) => Some(c),
            _ => None,
        }
    }

    /// Frees a connection's slot and returns the connection.
    pub(crate) fn release_conn(&self, token: usize) -> Option<Rc<Conn>> {
        match self.remove_slot(token)? {
            SlotKind::Conn(c) => Some(c),
            other => {
                // Not a connection: put nothing back; the caller only closes
                // connections, so this cannot happen, but never panic.
                drop(other);
                None
            }
        }
    }
}

fn encode_token(index: usize, generation: u32) -> usize {
    ((generation as usize) << 32) | (index & 0xFFFF_FFFF)
}

fn decode_token(token: usize) -> (usize, u32) {
    (token & 0xFFFF_FFFF, (token >> 32) as u32)
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.threads.close();
        if let Some(pool) = self.pool.get_mut().take() {
            pool.join_within(Instant::now() + self.shutdown_timeout);
        }
        defer::runner::remove_remote_notifier(&self.remote_notifier);
    }
}
