//! Listening ports, TCP and Unix-domain: [`ListeningPort`],
//! [`ListenOptions`] and the accept loop. One accept loop serves both
//! kinds: the socket is an [`Acceptor`], and accepted connections are the
//! same [`Conn`] (see [`unix`](crate::unix) for what a Unix port adds: the
//! socket file, its mode, stale files).
//!
//! # Pausing and running out of descriptors
//!
//! A port can stop accepting for a while
//! ([`ListeningPort::pause_accepting`]): its socket is deregistered, so
//! connections wait in the kernel's backlog and the loop gets no event for
//! them (no busy loop). [`resume_accepting`](ListeningPort::resume_accepting)
//! registers it again and accepts, from the loop, until `WouldBlock`: the
//! listener is edge-triggered, and the connections that arrived meanwhile
//! bring no new edge.
//!
//! When `accept` fails for lack of descriptors (`EMFILE`, `ENFILE`) or of
//! kernel memory, the port pauses itself with back-off
//! ([`ListenOptions::exhaustion_backoff`]) and retries from a timer; the
//! episode is logged once when it starts and once when an accept succeeds
//! again, never per attempt. Out of descriptors, the port uses the spare
//! descriptor it reserved at listen time (`/dev/null`, opened by
//! [`Reactor::listen_tcp_with`] and [`Reactor::listen_unix_with`] unless
//! [`ListenOptions::spare_descriptor`] is off): it closes the spare, accepts
//! each waiting connection, writes it the
//! [`refusal_line`](ListenOptions::refusal_line) if any, closes it, and
//! reopens the spare, the trick libuv and nginx use, so that clients get a
//! clear answer instead of hanging in the backlog.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use mio::event::Source;
use socket2::{Domain, Socket, Type};

use crate::address::{Address, UnixAddr};
use crate::clock::DelayedCall;
use crate::conn::Conn;
use crate::core::{Inner, Reactor, SlotKind};
use crate::defer::{succeed, Deferred};
use crate::factory::{Built, FactoryRef};
use crate::stream::Stream;
use crate::unix::SocketFile;

/// Connections accepted per readiness event before yielding to other work.
const ACCEPTS_PER_EVENT: usize = 256;

/// The default first delay before retrying `accept` after it failed for
/// lack of descriptors or memory ([`ListenOptions::exhaustion_backoff`]).
pub const DEFAULT_EXHAUSTION_BACKOFF: Duration = Duration::from_millis(50);
/// The default longest delay between such retries (the delay doubles).
pub const DEFAULT_EXHAUSTION_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What happened to a port's accepting, for
/// [`ListenOptions::on_event`]: each episode of exhaustion is reported once
/// when it starts and once when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortEvent {
    /// `accept` failed for lack of descriptors or memory: the port pauses
    /// and retries with back-off. `error` is the first failure's text.
    Exhausted {
        /// The error `accept` returned.
        error: String,
    },
    /// An accept succeeded again after an episode of exhaustion.
    Recovered {
        /// Connections accepted and closed at once (with the refusal line,
        /// if any) with the spare descriptor during the episode.
        refused: u64,
        /// Failed accept attempts during the episode.
        attempts: u64,
        /// How long the episode lasted (on the reactor's clock).
        lasted: Duration,
    },
}

/// How a port listens: backlog, the spare descriptor and its refusal line,
/// the back-off when out of descriptors, and a hook for those episodes. For
/// [`Reactor::listen_tcp_with`] (and, inside
/// [`UnixListenOptions`](crate::UnixListenOptions),
/// [`Reactor::listen_unix_with`]); the default is what
/// [`Reactor::listen_tcp`] does.
#[derive(Clone)]
pub struct ListenOptions {
    pub(crate) backlog: Option<i32>,
    refusal_line: Option<Vec<u8>>,
    spare_descriptor: bool,
    backoff: (Duration, Duration),
    on_event: Option<PortHook>,
}

/// [`ListenOptions::on_event`]'s hook.
type PortHook = Rc<dyn Fn(&PortEvent)>;

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: None,
            refusal_line: None,
            spare_descriptor: true,
            backoff: (DEFAULT_EXHAUSTION_BACKOFF, DEFAULT_EXHAUSTION_BACKOFF_MAX),
            on_event: None,
        }
    }
}

impl fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenOptions")
            .field("backlog", &self.backlog)
            .field(
                "refusal_line",
                &self.refusal_line.as_deref().map(String::from_utf8_lossy),
            )
            .field("spare_descriptor", &self.spare_descriptor)
            .field("backoff", &self.backoff)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl ListenOptions {
    /// The defaults: the reactor's backlog, a spare descriptor, no refusal
    /// line, back-off from [`DEFAULT_EXHAUSTION_BACKOFF`] doubling to
    /// [`DEFAULT_EXHAUSTION_BACKOFF_MAX`], no hook.
    pub fn new() -> ListenOptions {
        ListenOptions::default()
    }

    /// The listen backlog (default: the reactor's,
    /// [`ReactorBuilder::backlog`](crate::ReactorBuilder::backlog)).
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// What a connection refused for lack of descriptors is sent before it
    /// is closed (default: nothing). Include the line end.
    pub fn refusal_line(mut self, line: impl Into<Vec<u8>>) -> Self {
        self.refusal_line = Some(line.into());
        self
    }

    /// Whether to reserve a spare descriptor for refusing connections when
    /// out of descriptors (default: yes; it costs one descriptor per port).
    pub fn spare_descriptor(mut self, reserve: bool) -> Self {
        self.spare_descriptor = reserve;
        self
    }

    /// The first and the longest delay between `accept` retries when out of
    /// descriptors or memory (defaults [`DEFAULT_EXHAUSTION_BACKOFF`] and
    /// [`DEFAULT_EXHAUSTION_BACKOFF_MAX`]); the delay doubles each time.
    pub fn exhaustion_backoff(mut self, initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        self.backoff = (initial, max.max(initial));
        self
    }

    /// Called from the loop when an episode of exhaustion starts and ends
    /// (besides the reactor's own log lines), for an application's log.
    pub fn on_event(mut self, hook: impl Fn(&PortEvent) + 'static) -> Self {
        self.on_event = Some(Rc::new(hook));
        self
    }
}

/// An episode of `accept` failing for lack of resources.
struct Exhaustion {
    started: Instant,
    delay: Duration,
    attempts: u64,
    refused: u64,
    /// The retry timer, while it is pending (accepting waits for it).
    timer: Option<DelayedCall>,
}

/// A listening socket, TCP or Unix-domain.
pub(crate) enum Acceptor {
    Tcp(mio::net::TcpListener),
    /// The socket, and its file (removed when this is dropped, after the
    /// socket is closed); `None` for an abstract name.
    Unix(mio::net::UnixListener, Option<SocketFile>),
}

impl Acceptor {
    /// One connection and its peer's address.
    fn accept(&self) -> io::Result<(Stream, Address)> {
        match self {
            Acceptor::Tcp(l) => l
                .accept()
                .map(|(s, peer)| (Stream::Tcp(s), Address::Inet(peer))),
            Acceptor::Unix(l, _) => l
                .accept()
                .map(|(s, peer)| (Stream::Unix(s), Address::Unix(UnixAddr::from_std(&peer)))),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Acceptor::Tcp(l) => l,
            Acceptor::Unix(l, _) => l,
        }
    }
}

pub(crate) struct Listener {
    reactor: Weak<Inner>,
    socket: RefCell<Option<Acceptor>>,
    factory: FactoryRef,
    local: Address,
    token: Cell<usize>,
    /// An accepted connection whose factory could not be called yet (its
    /// cell was busy): accepting waits until it is built, so at most one
    /// waits, and it is retried from the loop.
    waiting: RefCell<Option<(Stream, Address)>>,
    options: ListenOptions,
    /// The reserved descriptor (see the module docs).
    spare: RefCell<Option<File>>,
    /// Paused by [`ListeningPort::pause_accepting`].
    paused: Cell<bool>,
    /// Whether the socket is registered with the poller now.
    registered: Cell<bool>,
    exhaustion: RefCell<Option<Exhaustion>>,
    /// A drain from the loop is scheduled.
    drain_scheduled: Cell<bool>,
}

/// A listening port (Twisted's `IListeningPort`), TCP from
/// [`Reactor::listen_tcp`] or Unix-domain from [`Reactor::listen_unix`].
/// Dropping the handle does not close the port;
/// [`stop_listening`](Self::stop_listening) does.
#[derive(Clone)]
pub struct ListeningPort {
    listener: Rc<Listener>,
}

impl fmt::Debug for ListeningPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListeningPort")
            .field("local_addr", &self.listener.local)
            .finish()
    }
}

impl ListeningPort {
    /// The address the port is bound to (with the real port when 0 was
    /// asked). For a Unix port, which has none, it is
    /// [`NO_INET_ADDR`](crate::address::NO_INET_ADDR); use
    /// [`local_address`](Self::local_address).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local.inet_or_none()
    }

    /// The address the port is bound to, TCP or Unix-domain (the path, or
    /// the abstract name).
    ///
    /// ```
    /// use gyre_reactor::{factory_fn, Address, Protocol, Reactor};
    ///
    /// struct Discard;
    /// impl Protocol for Discard { fn data_received(&mut self, _: &[u8]) {} }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let port = reactor.listen_tcp("127.0.0.1:0".parse()?, factory_fn(|_| Some(Discard)))?;
    /// assert_eq!(port.local_address(), Address::Inet(port.local_addr()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_address(&self) -> Address {
        self.listener.local.clone()
    }

    /// Stops accepting and closes the port; connections already accepted
    /// stay up. A Unix port's socket file is removed (if it is still the
    /// one the port bound). The Deferred fires once the port is closed.
    /// Calling it again does nothing more.
    #[track_caller]
    pub fn stop_listening(&self) -> Deferred<()> {
        self.listener.stop();
        succeed(())
    }

    /// Whether the port is still listening.
    pub fn is_listening(&self) -> bool {
        self.listener.socket.borrow().is_some()
    }

    /// Stops accepting until [`resume_accepting`](Self::resume_accepting):
    /// the socket stays open (new connections wait in the kernel's backlog,
    /// and past it are not answered) but is deregistered, so the loop gets
    /// no event for it. May be called from anywhere in the loop, the
    /// factory included (the connection being built is still started).
    pub fn pause_accepting(&self) {
        if !self.listener.paused.replace(true) {
            log::debug!("accepting paused on {}", self.listener.local);
            self.listener.sync_registration();
        }
    }

    /// Accepts again after [`pause_accepting`](Self::pause_accepting): the
    /// connections that waited are accepted from the loop (not from this
    /// call), until `WouldBlock`.
    pub fn resume_accepting(&self) {
        if self.listener.paused.replace(false) {
            log::debug!("accepting resumed on {}", self.listener.local);
            self.listener.sync_registration();
            self.listener.schedule_drain();
        }
    }

    /// Whether the port is paused by [`pause_accepting`](Self::pause_accepting).
    pub fn is_paused(&self) -> bool {
        self.listener.paused.get()
    }

    /// Whether the port is in an episode of exhaustion (`accept` failed for
    /// lack of descriptors or memory, and has not succeeded since).
    pub fn is_exhausted(&self) -> bool {
        self.listener.exhaustion.borrow().is_some()
    }
}

/// Creates a nonblocking listening socket with `SO_REUSEADDR` and `backlog`.
fn bind(addr: SocketAddr, backlog: i32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Whether `accept` failed for lack of descriptors (`EMFILE`, `ENFILE`):
/// the spare descriptor helps.
fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE is 24 and ENFILE 23 on Linux, the BSDs and macOS.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Whether an `accept` error concerns only the connection it was for (the
/// next accept may well succeed): try the next one.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl Reactor {
    /// Listens on `addr` (port 0 picks a free port), building a protocol
    /// with `factory` for each connection (Twisted's `listenTCP`). Uses the
    /// reactor's backlog (default 1024) and the default [`ListenOptions`]
    /// (a spare descriptor, no refusal line). An address in use is an error
    /// that names the address.
    pub fn listen_tcp(
        &self,
        addr: SocketAddr,
        factory: impl Into<FactoryRef>,
    ) -> io::Result<ListeningPort> {
        self.listen_tcp_with(addr, factory, ListenOptions::default())
    }

    /// [`listen_tcp`](Self::listen_tcp) with an explicit listen backlog.
    pub fn listen_tcp_with_backlog(
        &self,
        addr: SocketAddr,
        factory: impl Into<FactoryRef>,
        backlog: i32,
    ) -> io::Result<ListeningPort> {
        self.listen_tcp_with(addr, factory, ListenOptions::new().backlog(backlog))
    }

    /// [`listen_tcp`](Self::listen_tcp) with [`ListenOptions`]. If the spare
    /// descriptor cannot be opened, the port listens without one (logged).
    pub fn listen_tcp_with(
        &self,
        addr: SocketAddr,
        factory: impl Into<FactoryRef>,
        options: ListenOptions,
    ) -> io::Result<ListeningPort> {
        let backlog = options.backlog.unwrap_or(self.inner.backlog);
        let socket = bind(addr, backlog)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let local = Address::Inet(socket.local_addr()?);
        self.start_listener(Acceptor::Tcp(socket), local, factory, options)
    }

    /// Puts a bound, listening socket in the loop: reserves the spare
    /// descriptor, registers, starts the factory.
    pub(crate) fn start_listener(
        &self,
        mut socket: Acceptor,
        local: Address,
        factory: impl Into<FactoryRef>,
        options: ListenOptions,
    ) -> io::Result<ListeningPort> {
        let spare = if options.spare_descriptor {
            match open_spare() {
                Ok(file) => Some(file),
                Err(e) => {
                    log::warn!("port {local} has no spare descriptor: cannot open /dev/null: {e}");
                    None
                }
            }
        } else {
            None
        };
        let factory = factory.into();
        let mut listener = None;
        let token = self.inner.insert_slot(|token| {
            let l = Rc::new(Listener {
                reactor: Rc::downgrade(&self.inner),
                socket: RefCell::new(None),
                factory: factory.clone(),
                local: local.clone(),
                token: Cell::new(token),
                waiting: RefCell::new(None),
                options,
                spare: RefCell::new(spare),
                paused: Cell::new(false),
                registered: Cell::new(false),
                exhaustion: RefCell::new(None),
                drain_scheduled: Cell::new(false),
            });
            listener = Some(Rc::clone(&l));
            SlotKind::Listener(l)
        });
        let listener = listener.ok_or_else(|| io::Error::other("slot not created"))?;
        if let Err(e) = self.inner.registry.register(
            socket.source(),
            mio::Token(token),
            mio::Interest::READABLE,
        ) {
            self.inner.remove_slot(token);
            return Err(e);
        }
        listener.registered.set(true);
        *listener.socket.borrow_mut() = Some(socket);
        factory.port_started(&Rc::downgrade(&self.inner));
        log::info!("listening on {local}");
        Ok(ListeningPort { listener })
    }
}

fn open_spare() -> io::Result<File> {
    File::open("/dev/null")
}

impl Listener {
    /// Whether accepting is allowed now: not paused, and no exhaustion
    /// retry pending.
    fn accepting(&self) -> bool {
        !self.paused.get()
            && self
                .exhaustion
                .borrow()
                .as_ref()
                .is_none_or(|x| x.timer.is_none())
    }

    /// Registers the socket with the poller when accepting, deregisters it
    /// when not (so a paused port costs the loop nothing).
    fn sync_registration(&self) {
        let want = self.accepting();
        if want == self.registered.get() {
            return;
        }
        let Some(reactor) = self.reactor.upgrade() else {
            return;
        };
        let mut socket = self.socket.borrow_mut();
        let Some(socket) = socket.as_mut() else {
            return;
        };
        let result = if want {
            reactor.registry.register(
                socket.source(),
                mio::Token(self.token.get()),
                mio::Interest::READABLE,
            )
        } else {
            reactor.registry.deregister(socket.source())
        };
        match result {
            Ok(()) => self.registered.set(want),
            Err(e) => log::error!(
                "cannot {} the port {}: {e}",
                if want { "register" } else { "deregister" },
                self.local
            ),
        }
    }

    /// Accepts from the loop (once, however many ask).
    fn schedule_drain(self: &Rc<Self>) {
        if self.drain_scheduled.replace(true) {
            return;
        }
        let Some(reactor) = self.reactor.upgrade().and_then(|i| i.reactor()) else {
            return;
        };
        let me = Rc::downgrade(self);
        let r = Rc::downgrade(&reactor.inner);
        reactor.call_soon(move || {
            let reactor = r.upgrade().and_then(|i| i.reactor());
            if let (Some(me), Some(reactor)) = (me.upgrade(), reactor) {
                me.drain_scheduled.set(false);
                me.handle_readable(&reactor);
            }
        });
    }

    /// Accepts until WouldBlock (or the per-event budget, then yields and
    /// comes back next iteration through a zero-delay call).
    pub(crate) fn handle_readable(self: &Rc<Self>, reactor: &Reactor) {
        if !self.accepting() {
            return;
        }
        let waiting = self.waiting.borrow_mut().take();
        if let Some((stream, peer)) = waiting {
            if !self.start_connection(reactor, stream, peer) {
                return;
            }
        }
        for _ in 0..ACCEPTS_PER_EVENT {
            if !self.accepting() {
                return;
            }
            let accepted = match self.socket.borrow().as_ref() {
                Some(socket) => socket.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    reactor.inner.count_accept();
                    self.recovered(reactor);
                    if !self.start_connection(reactor, stream, peer) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if transient(&e) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: refuse what waits
                    // (with the spare descriptor), pause, retry with
                    // back-off; never spin, never log per attempt.
                    self.exhausted(reactor, &e);
                    return;
                }
            }
        }
        self.schedule_drain();
    }

    /// `accept` failed with `e` for lack of resources.
    fn exhausted(self: &Rc<Self>, reactor: &Reactor, e: &io::Error) {
        let refused = if out_of_descriptors(e) {
            self.refuse_waiting()
        } else {
            0
        };
        let (initial, max) = self.options.backoff;
        let now = reactor.clock().now();
        let starts = self.exhaustion.borrow().is_none();
        let delay = {
            let mut slot = self.exhaustion.borrow_mut();
            let x = slot.get_or_insert_with(|| Exhaustion {
                started: now,
                delay: initial,
                attempts: 0,
                refused: 0,
                timer: None,
            });
            if !starts {
                x.delay = (x.delay * 2).min(max);
            }
            x.attempts += 1;
            x.refused += refused;
            x.delay
        };
        if starts {
            log::warn!(
                "accept on {} failed: {e}; pausing with back-off ({} ms doubling to {} ms){}; \
                 logged once until accepting works again",
                self.local,
                initial.as_millis(),
                max.as_millis(),
                if self.spare.borrow().is_some() || refused > 0 {
                    ", refusing waiting connections with the spare descriptor"
                } else {
                    ""
                }
            );
            if let Some(hook) = &self.options.on_event {
                let event = PortEvent::Exhausted {
                    error: e.to_string(),
                };
                let _ = crate::core::guard(format_args!("port event hook"), || hook(&event));
            }
        }
        let me = Rc::downgrade(self);
        let r = Rc::downgrade(&reactor.inner);
        let timer = reactor.call_later(delay, move || {
            let reactor = r.upgrade().and_then(|i| i.reactor());
            if let (Some(me), Some(reactor)) = (me.upgrade(), reactor) {
                if let Some(x) = me.exhaustion.borrow_mut().as_mut() {
                    x.timer = None;
                }
                me.sync_registration();
                me.handle_readable(&reactor);
            }
        });
        if let Some(x) = self.exhaustion.borrow_mut().as_mut() {
            x.timer = Some(timer);
        }
        self.sync_registration();
    }

    /// An accept succeeded: ends an episode of exhaustion, if any.
    fn recovered(&self, reactor: &Reactor) {
        let Some(x) = self.exhaustion.borrow_mut().take() else {
            return;
        };
        if let Some(timer) = x.timer {
            let _ = timer.cancel();
        }
        if self.spare.borrow().is_none() && self.options.spare_descriptor {
            *self.spare.borrow_mut() = open_spare().ok();
        }
        let lasted = reactor.clock().now().saturating_duration_since(x.started);
        log::warn!(
            "accepting on {} again after {} ms out of resources ({} failed attempts, {} connections refused)",
            self.local,
            lasted.as_millis(),
            x.attempts,
            x.refused
        );
        if let Some(hook) = &self.options.on_event {
            let event = PortEvent::Recovered {
                refused: x.refused,
                attempts: x.attempts,
                lasted,
            };
            let _ = crate::core::guard(format_args!("port event hook"), || hook(&event));
        }
    }

    /// Out of descriptors: frees the spare, accepts each waiting connection
    /// (up to the per-event budget), writes it the refusal line and closes
    /// it, then takes the spare again. Returns how many were refused.
    fn refuse_waiting(&self) -> u64 {
        let Some(spare) = self.spare.borrow_mut().take() else {
            return 0;
        };
        drop(spare);
        let mut refused = 0;
        for _ in 0..ACCEPTS_PER_EVENT {
            let accepted = match self.socket.borrow().as_ref() {
                Some(socket) => socket.accept(),
                None => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    refused += 1;
                    self.refuse(stream, peer);
                }
                Err(e) if transient(&e) => {}
                Err(_) => break,
            }
        }
        match open_spare() {
            Ok(file) => *self.spare.borrow_mut() = Some(file),
            // Taken by someone else meanwhile: try again on recovery.
            Err(e) => log::debug!("cannot reopen the spare descriptor of {}: {e}", self.local),
        }
        refused
    }

    /// Writes the refusal line (if any) and closes, without a reset: the
    /// write side is shut and what the client already sent is read away
    /// (nonblocking, a little), so the close does not discard the line.
    fn refuse(&self, stream: Stream, peer: Address) {
        log::debug!(
            "refusing a connection from {peer} on {}: out of descriptors",
            self.local
        );
        if let Some(line) = &self.options.refusal_line {
            let _ = stream.write(line);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 1024];
        for _ in 0..4 {
            match stream.read(&mut sink) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    /// Builds the protocol and starts the connection. Returns `false` if
    /// the factory could not be called now: the connection then waits (and
    /// accepting with it) for a retry from the loop.
    fn start_connection(self: &Rc<Self>, reactor: &Reactor, stream: Stream, peer: Address) -> bool {
        let protocol = match self.factory.build(&peer) {
            Built::Protocol(p) => p,
            Built::Refused => {
                log::debug!("factory on {} refused a connection from {peer}", self.local);
                return true;
            }
            Built::Busy => {
                log::debug!(
                    "factory on {} is busy; the connection from {peer} waits for it",
                    self.local
                );
                *self.waiting.borrow_mut() = Some((stream, peer));
                let me = Rc::downgrade(self);
                let r = Rc::downgrade(&reactor.inner);
                reactor.call_soon(move || {
                    let reactor = r.upgrade().and_then(|i| i.reactor());
                    if let (Some(me), Some(reactor)) = (me.upgrade(), reactor) {
                        me.handle_readable(&reactor);
                    }
                });
                return false;
            }
        };
        let conn = Rc::new(Conn::new(
            Rc::downgrade(&reactor.inner),
            stream,
            peer.clone(),
        ));
        let token = reactor
            .inner
            .insert_slot(|_| SlotKind::Conn(Rc::clone(&conn)));
        if let Err(e) = conn.register(&reactor.inner.registry, token) {
            log::error!("cannot register connection from {peer}: {e}");
            reactor.inner.remove_slot(token);
            return true;
        }
        conn.start(protocol);
        true
    }

    /// Closes the socket and releases the factory (once).
    pub(crate) fn stop(&self) {
        let socket = self.socket.borrow_mut().take();
        // A connection still waiting for the factory is dropped (closed).
        self.waiting.borrow_mut().take();
        self.spare.borrow_mut().take();
        if let Some(x) = self.exhaustion.borrow_mut().take() {
            if let Some(timer) = x.timer {
                let _ = timer.cancel();
            }
        }
        if let Some(mut socket) = socket {
            if let Some(reactor) = self.reactor.upgrade() {
                if self.registered.replace(false) {
                    let _ = reactor.registry.deregister(socket.source());
                }
                reactor.remove_slot(self.token.get());
            }
            // Close the socket, then remove a Unix port's file (if it is
            // still ours).
            match socket {
                Acceptor::Tcp(socket) => drop(socket),
                Acceptor::Unix(socket, file) => {
                    drop(socket);
                    drop(file);
                }
            }
            log::info!("stopped listening on {}", self.local);
            self.factory.port_stopped(&self.reactor);
        }
    }
}
