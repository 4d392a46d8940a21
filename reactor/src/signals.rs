//! SIGINT and SIGTERM stop the loop gracefully; a second SIGINT exits at once.
//!
//! The signal handler (installed through signal-hook) writes a byte into a
//! self-pipe whose read end the loop polls, so the stop itself runs on the
//! loop thread like any other event.

use std::io::{self, Read};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

use crate::core::{Reactor, SIGNAL_TOKEN};

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
