//! Hooks that run before the loop writes to sockets: the reactor's "end of
//! iteration" hook (libuv's check handles are the model).
//!
//! # Contract
//!
//! A hook registered with [`Reactor::before_writes`] runs on the loop
//! thread:
//!
//! - **before the loop writes connections' buffered output to their
//!   sockets**: at the start of every flush of the connections written to
//!   since the last flush (after each phase of an iteration that wrote, and
//!   between two reads of one burst), and
//! - **once at the end of every iteration**, whether or not anything was
//!   written.
//!
//! So whatever a hook makes durable (a log buffer written to its file) is
//! durable before any byte written in the same iteration reaches a peer: a
//! program that logs what it sends and flushes the log from this hook never
//! sends something its log does not show, while paying one log write per
//! iteration instead of one per entry.
//!
//! A hook must be quick and must not block. It may write to transports
//! (that output goes out in the same flush). A hook that is running is not
//! run again re-entrantly (a flush it causes does not call it). A panic in
//! a hook is caught and logged, and costs only that call.
//!
//! [`Reactor::before_writes`]: crate::Reactor::before_writes

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::core::guard;

/// Names a hook registered with
/// [`Reactor::before_writes`](crate::Reactor::before_writes), to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BeforeWritesId(u64);

/// One registered hook.
type Hook = Rc<dyn Fn()>;

/// The registered hooks of one reactor.
#[derive(Default)]
pub(crate) struct WriteHooks {
    hooks: RefCell<Vec<(BeforeWritesId, Hook)>>,
    next: Cell<u64>,
    running: Cell<bool>,
}

impl WriteHooks {
    pub(crate) fn add(&self, hook: Hook) -> BeforeWritesId {
        let id = BeforeWritesId(self.next.get());
        self.next.set(id.0 + 1);
        self.hooks.borrow_mut().push((id, hook));
        id
    }

    pub(crate) fn remove(&self, id: BeforeWritesId) -> bool {
        let mut hooks = self.hooks.borrow_mut();
        let before = hooks.len();
        hooks.retain(|(i, _)| *i != id);
        hooks.len() != before
    }

    /// Runs every hook once, unless they are running already. Runs on every
    /// flush of the loop, so it allocates nothing: each hook is taken by
    /// index under a short borrow. A hook added during a run runs in it; a
    /// hook removed during a run may let the one after it wait for the next
    /// run.
    pub(crate) fn run(&self) {
        if self.hooks.borrow().is_empty() || self.running.replace(true) {
            return;
        }
        let mut index = 0;
        loop {
            let hook = match self.hooks.borrow().get(index) {
                Some((_, hook)) => Rc::clone(hook),
                None => break,
            };
            let _ = guard(format_args!("before_writes hook"), || hook());
            index += 1;
        }
        self.running.set(false);
    }
}
