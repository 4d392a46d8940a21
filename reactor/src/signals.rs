//! Signals on the loop.
//!
//! - SIGINT and SIGTERM stop the loop gracefully (through
//!   [`Reactor::stop`], so before-shutdown triggers run and may make the
//!   shutdown wait); a second SIGINT exits at once (status 130).
//! - [`Reactor::on_signal`] runs a program's own callback for any other
//!   signal it asks for (SIGHUP to reload a configuration, SIGUSR1 to dump
//!   statistics), on the loop.
//!
//! Both work the same way: the signal handler (installed through
//! signal-hook) only writes a byte into a self-pipe whose read end the loop
//! polls, so whatever the signal means runs on the loop thread like any
//! other event, never inside the handler.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};
use std::os::raw::c_int;
use std::rc::{Rc, Weak};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

use crate::core::{guard, EventSource, Inner, Reactor, Readiness, SlotKind, SIGNAL_TOKEN};

/// The exit status of a process stopped by a second SIGINT (128 + 2).
const SECOND_SIGINT_EXIT: i32 = 130;

/// Installed handlers; dropping them uninstalls them.
pub(crate) struct SignalHandlers {
    ids: Vec<SigId>,
    pipe: mio::net::UnixStream,
    registry: mio::Registry,
}

impl SignalHandlers {
    pub(crate) fn install(reactor: &Reactor) -> io::Result<SignalHandlers> {
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        // A full pipe must not block the signal handler: the write is lost,
        // but one byte is already waiting, which is all the loop needs.
        write_end.set_nonblocking(true)?;
        let mut read_end = mio::net::UnixStream::from_std(read_end);
        let registry = reactor.inner.registry.try_clone()?;
        registry.register(
            &mut read_end,
            mio::Token(SIGNAL_TOKEN),
            mio::Interest::READABLE,
        )?;
        let write_for_term = write_end.try_clone()?;
        let mut ids = Vec::new();
        // Order matters: the conditional exit is checked before the flag is
        // set, so the first SIGINT only sets it, the second exits.
        let interrupted = Arc::new(AtomicBool::new(false));
        ids.push(signal_hook::flag::register_conditional_shutdown(
            SIGINT,
            SECOND_SIGINT_EXIT,
            Arc::clone(&interrupted),
        )?);
        ids.push(signal_hook::flag::register(SIGINT, interrupted)?);
        ids.push(signal_hook::low_level::pipe::register(SIGINT, write_end)?);
        ids.push(signal_hook::low_level::pipe::register(
            SIGTERM,
            write_for_term,
        )?);
        Ok(SignalHandlers {
            ids,
            pipe: read_end,
            registry,
        })
    }
}

impl Drop for SignalHandlers {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        let _ = self.registry.deregister(&mut self.pipe);
    }
}

/// The self-pipe is readable: drain it and stop the loop.
pub(crate) fn on_signal(reactor: &Reactor) {
    let mut got_one = false;
    if let Some(handlers) = reactor.inner.signals.borrow_mut().as_mut() {
        let mut buf = [0u8; 64];
        loop {
            match handlers.pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got_one = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    if got_one && reactor.is_running() {
        log::info!("received a stop signal; shutting down (SIGINT again to exit at once)");
        let _ = reactor.stop();
    }
}

impl Reactor {
    /// Runs `callback` on the loop whenever the process receives `signal`
    /// (a number from [`signal`](crate::signal), e.g. `SIGHUP`), until the
    /// returned [`SignalHandler`] is cancelled or the reactor shuts down.
    ///
    /// # Contract
    ///
    /// - The callback runs on the loop thread, from the loop's dispatch,
    ///   like a protocol callback: it may call any reactor API. It never
    ///   runs inside the signal handler, which only writes a byte into this
    ///   handler's own self-pipe.
    /// - Deliveries that arrive before the loop reads the pipe are
    ///   coalesced: the callback runs at least once after every delivery,
    ///   but two quick deliveries may make one call (as with any Unix
    ///   signal, which the kernel also coalesces while it is pending).
    /// - The handler is installed at once (the loop need not run yet, and
    ///   [`ReactorBuilder::install_signal_handlers`](crate::ReactorBuilder::install_signal_handlers)
    ///   does not matter); deliveries before the loop runs are handled when
    ///   it does.
    /// - It lasts until [`SignalHandler::cancel`], or until the reactor
    ///   shuts down: its pipe is an event source that closes after the
    ///   before-shutdown triggers, so a signal during a graceful drain is
    ///   still handled. Dropping the `SignalHandler` does not cancel it.
    /// - Several handlers may watch one signal (each gets its own pipe and
    ///   runs); they also run alongside the loop's own SIGINT and SIGTERM
    ///   handling.
    /// - Once cancelled (or shut down), the signal's default action is
    ///   **not** restored (a signal-hook limitation): the process then
    ///   ignores that signal. Keep a handler for the life of the program.
    /// - A panic in the callback is caught and logged; the handler stays.
    /// - Signals that cannot be caught, or that signal-hook forbids
    ///   (SIGKILL, SIGSTOP, SIGILL, SIGFPE, SIGSEGV), are an error.
    ///
    /// ```no_run
    /// use gyre_reactor::{signal::SIGHUP, Reactor};
    ///
    /// let reactor = Reactor::new()?;
    /// let handler = reactor.on_signal(SIGHUP, |_reactor| {
    ///     println!("reloading the configuration");
    /// })?;
    /// reactor.run()?; // SIGHUP prints; SIGINT or SIGTERM stops
    /// # drop(handler);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_signal(
        &self,
        signal: c_int,
        callback: impl FnMut(&Reactor) + 'static,
    ) -> io::Result<SignalHandler> {
        // signal-hook panics on these; refuse them here instead.
        if signal_hook::consts::FORBIDDEN.contains(&signal) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {signal} cannot be handled (SIGKILL, SIGSTOP, SIGILL, SIGFPE and SIGSEGV cannot)"),
            ));
        }
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        // A full pipe must not block the signal handler: the byte is lost,
        // but one is already waiting, which is all the loop needs.
        write_end.set_nonblocking(true)?;
        let mut pipe = mio::net::UnixStream::from_std(read_end);
        let inner = &self.inner;
        let source: Rc<RefCell<Option<Rc<SignalSource>>>> = Rc::new(RefCell::new(None));
        let slot_source = Rc::clone(&source);
        let token = inner.insert_slot(move |token| {
            let created = Rc::new(SignalSource {
                signal,
                token,
                reactor: Rc::downgrade(&self.inner),
                state: RefCell::new(Watch::Starting),
                callback: RefCell::new(None),
            });
            *slot_source.borrow_mut() = Some(Rc::clone(&created));
            SlotKind::Source(created)
        });
        let Some(source) = source.borrow_mut().take() else {
            inner.remove_slot(token);
            return Err(io::Error::other("the signal source was not created"));
        };
        let undo = |e: io::Error| {
            inner.remove_slot(token);
            e
        };
        inner
            .registry
            .register(&mut pipe, mio::Token(token), mio::Interest::READABLE)
            .map_err(undo)?;
        let id = match signal_hook::low_level::pipe::register(signal, write_end) {
            Ok(id) => id,
            Err(e) => {
                let _ = inner.registry.deregister(&mut pipe);
                return Err(undo(e));
            }
        };
        *source.callback.borrow_mut() = Some(Box::new(callback));
        *source.state.borrow_mut() = Watch::Installed { id, pipe };
        Ok(SignalHandler { source })
    }
}

/// A callback installed by [`Reactor::on_signal`]. Cancel it with
/// [`cancel`](Self::cancel); dropping it leaves it installed.
pub struct SignalHandler {
    source: Rc<SignalSource>,
}

impl fmt::Debug for SignalHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandler")
            .field("signal", &self.source.signal)
            .field("active", &self.is_active())
            .finish()
    }
}

impl SignalHandler {
    /// The signal it watches.
    pub fn signal(&self) -> c_int {
        self.source.signal
    }

    /// Whether it is still installed (not cancelled, not shut down).
    pub fn is_active(&self) -> bool {
        matches!(*self.source.state.borrow(), Watch::Installed { .. })
    }

    /// Uninstalls it: its callback does not run again, even for a delivery
    /// already in its pipe. The signal is then ignored if no other handler
    /// watches it (see [`Reactor::on_signal`]). Cancelling twice is a no-op.
    pub fn cancel(&self) {
        self.source.close();
    }
}

/// The life of one [`Reactor::on_signal`] handler.
enum Watch {
    /// Its slot is taken; the pipe is being registered.
    Starting,
    /// The signal writes into `pipe`, which the loop polls.
    Installed {
        id: SigId,
        pipe: mio::net::UnixStream,
    },
    /// Cancelled or shut down.
    Closed,
}

/// The event source behind a [`SignalHandler`]: its self-pipe's read end.
struct SignalSource {
    signal: c_int,
    token: usize,
    reactor: Weak<Inner>,
    state: RefCell<Watch>,
    /// Taken out while it runs, so it may cancel its own handler.
    callback: RefCell<Option<SignalCallback>>,
}

/// What [`Reactor::on_signal`] runs.
type SignalCallback = Box<dyn FnMut(&Reactor)>;

impl SignalSource {
    /// Drains the pipe; returns whether it held a delivery.
    fn drain(&self) -> bool {
        let state = self.state.borrow();
        let Watch::Installed { pipe, .. } = &*state else {
            return false;
        };
        let mut got_one = false;
        let mut buf = [0u8; 64];
        let mut reader = pipe;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got_one = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: drained (edge-triggered: read until then).
                Err(_) => break,
            }
        }
        got_one
    }

    /// Unregisters the signal action and the pipe, and frees the slot.
    fn close(&self) {
        let old = std::mem::replace(&mut *self.state.borrow_mut(), Watch::Closed);
        self.callback.borrow_mut().take();
        if let Watch::Installed { id, mut pipe } = old {
            signal_hook::low_level::unregister(id);
            if let Some(inner) = self.reactor.upgrade() {
                let _ = inner.registry.deregister(&mut pipe);
                inner.remove_slot(self.token);
            }
        }
    }
}

impl EventSource for SignalSource {
    fn handle_event(&self, reactor: &Reactor, _event: &Readiness, _buf: &mut [u8]) {
        if !self.drain() {
            return;
        }
        let Some(mut callback) = self.callback.borrow_mut().take() else {
            return;
        };
        let signal = self.signal;
        let _ = guard(format_args!("the handler of signal {signal}"), || {
            callback(reactor)
        });
        // Put it back unless the callback cancelled its own handler.
        if matches!(*self.state.borrow(), Watch::Installed { .. }) {
            let mut slot = self.callback.borrow_mut();
            if slot.is_none() {
                *slot = Some(callback);
            }
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        self.close();
    }
}

impl Drop for SignalSource {
    fn drop(&mut self) {
        // A reactor dropped without shutting down: the signal action must
        // not outlive it (the pipe closes with `state`).
        if let Watch::Installed { id, .. } = &*self.state.borrow() {
            signal_hook::low_level::unregister(*id);
        }
    }
}

/// A self-pipe for a set of signals, for any part of the reactor that
/// wants to hear about a signal on its loop (the child reaper listens for
/// SIGCHLD through one).
///
/// Each signal in the set makes signal-hook's handler write a byte into a
/// non-blocking socket pair; the owner registers [`SignalPipe::source`]
/// with the loop's poller under its own token and calls
/// [`SignalPipe::drain`] when it is readable. Several signals may arrive as
/// one byte, or one readiness: the byte says "at least one came", never
/// how many. Dropping the pipe unregisters its handlers (signal-hook keeps
/// other handlers of the same signals, so pipes of several reactors
/// coexist).
pub(crate) struct SignalPipe {
    ids: Vec<SigId>,
    read_end: mio::net::UnixStream,
}

impl SignalPipe {
    /// Installs a handler writing to a new pipe for each of `signals`.
    pub(crate) fn new(signals: &[std::os::raw::c_int]) -> io::Result<SignalPipe> {
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        // A full pipe must not block the handler: the byte already there is
        // all the owner needs.
        write_end.set_nonblocking(true)?;
        let mut pipe = SignalPipe {
            ids: Vec::new(),
            read_end: mio::net::UnixStream::from_std(read_end),
        };
        for &signal in signals {
            let end = write_end.try_clone()?;
            // On error, `pipe` drops and unregisters what was installed.
            pipe.ids
                .push(signal_hook::low_level::pipe::register(signal, end)?);
        }
        Ok(pipe)
    }

    /// The read end, to register with (and deregister from) the poller.
    pub(crate) fn source(&mut self) -> &mut mio::net::UnixStream {
        &mut self.read_end
    }

    /// Reads every byte waiting; returns whether there was any.
    pub(crate) fn drain(&self) -> bool {
        let mut got_one = false;
        let mut buf = [0u8; 64];
        loop {
            match (&self.read_end).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => got_one = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        got_one
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
