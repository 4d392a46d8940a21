//! The [`Reaper`]: one per reactor, made by its first `spawn_process`. It
//! hears SIGCHLD through a self-pipe ([`SignalPipe`]) registered in its
//! own slot, and on every SIGCHLD tries `waitpid(WNOHANG)` (through
//! `Child::try_wait`) on every child not yet reaped: signals coalesce, so
//! one SIGCHLD may stand for several exits, and a SIGCHLD for another
//! reactor's child (or another library's) only costs a few cheap calls.
//!
//! It is installed before the first child is spawned, so no exit can slip
//! between the spawn and the handler.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use signal_hook::consts::SIGCHLD;

use crate::core::{EventSource, Reactor, Readiness, SlotKind};
use crate::signals::SignalPipe;

use super::child::Process;

/// The SIGCHLD pipe and the children not yet reaped.
pub(crate) struct Reaper {
    pipe: RefCell<SignalPipe>,
    token: usize,
    children: RefCell<Vec<Rc<Process>>>,
}

impl Reaper {
    /// The reactor's reaper, made (and its SIGCHLD handler installed) on
    /// first use.
    pub(crate) fn of(reactor: &Reactor) -> io::Result<Rc<Reaper>> {
        let inner = &*reactor.inner;
        if let Some(reaper) = inner.processes.borrow().as_ref() {
            return Ok(Rc::clone(reaper));
        }
        let pipe = SignalPipe::new(&[SIGCHLD])?;
        let mut made = None;
        let token = inner.insert_slot(|token| {
            let reaper = Rc::new(Reaper {
                pipe: RefCell::new(pipe),
                token,
                children: RefCell::new(Vec::new()),
            });
            made = Some(Rc::clone(&reaper));
            SlotKind::Source(reaper)
        });
        let Some(reaper) = made else {
            // insert_slot always calls its closure.
            drop(inner.remove_slot(token));
            return Err(io::Error::other("reaper slot not made"));
        };
        let registered = inner.registry.register(
            reaper.pipe.borrow_mut().source(),
            mio::Token(token),
            mio::Interest::READABLE,
        );
        if let Err(e) = registered {
            drop(inner.remove_slot(token));
            return Err(e);
        }
        *inner.processes.borrow_mut() = Some(Rc::clone(&reaper));
        Ok(reaper)
    }

    /// Watches `process` until it is reaped.
    pub(crate) fn watch(&self, process: Rc<Process>) {
        self.children.borrow_mut().push(process);
    }

    /// Tries to reap every child; delivers what that caused.
    pub(crate) fn reap_all(&self) {
        // The After pattern: take the list, release the borrow, then call
        // out (delivering runs user code, which may spawn more children).
        let children = std::mem::take(&mut *self.children.borrow_mut());
        let mut running = Vec::with_capacity(children.len());
        let mut done = Vec::new();
        for process in children {
            if process.try_reap() {
                running.push(process);
            } else {
                done.push(process);
            }
        }
        {
            let mut list = self.children.borrow_mut();
            // Children spawned meanwhile were pushed onto the empty list.
            running.append(&mut list);
            *list = running;
        }
        for process in done {
            process.deliver();
        }
    }
}

impl EventSource for Reaper {
    fn handle_event(&self, _reactor: &Reactor, _event: &Readiness, _buf: &mut [u8]) {
        if self.pipe.borrow().drain() {
            self.reap_all();
        }
    }

    /// Shuts every child down (see [`Process::shutdown`]), then removes
    /// the SIGCHLD handler; a later `spawn_process` makes a new reaper.
    fn shutdown(&self, reactor: &Reactor) {
        let children = std::mem::take(&mut *self.children.borrow_mut());
        for process in children {
            process.shutdown();
        }
        let inner = &*reactor.inner;
        let _ = inner.registry.deregister(self.pipe.borrow_mut().source());
        drop(inner.remove_slot(self.token));
        let mine = matches!(
            inner.processes.borrow().as_ref(),
            Some(r) if std::ptr::eq(Rc::as_ptr(r), self)
        );
        if mine {
            // Dropping the last Rc (with the slot gone) unregisters the
            // signal handler.
            let reaper = inner.processes.borrow_mut().take();
            drop(reaper);
        }
    }
}
