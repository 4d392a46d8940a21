//! Delivery state shared by the receivers: pausing, stopping, re-entrancy.
//!
//! Every receiver keeps its decoder, its handler and a [`Flow`] behind one
//! `Rc`. The flow holds only `Cell`s (and the transport, cloned out before
//! use), so a control handle may pause or resume from inside a handler call
//! without touching a borrowed `RefCell`: while a call is running (`busy`),
//! resuming only clears the flag and the running delivery loop picks the
//! buffered frames up; outside a call, resuming delivers at once.

use std::cell::{Cell, RefCell};

use gyre_reactor::Transport;

#[derive(Default)]
pub(crate) struct Flow {
    transport: RefCell<Option<Transport>>,
    paused: Cell<bool>,
    stopped: Cell<bool>,
    busy: Cell<bool>,
    lost: Cell<bool>,
}

/// Clears `busy` when a handler call ends, even by unwinding.
pub(crate) struct BusyGuard<'a>(&'a Cell<bool>);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Flow {
    pub(crate) fn set_transport(&self, transport: Transport) {
        *self.transport.borrow_mut() = Some(transport);
    }

    pub(crate) fn transport(&self) -> Option<Transport> {
        self.transport.borrow().clone()
    }

    /// Marks a handler call as running; `None` if one already is.
    pub(crate) fn enter(&self) -> Option<BusyGuard<'_>> {
        if self.busy.get() {
            None
        } else {
            self.busy.set(true);
            Some(BusyGuard(&self.busy))
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.get()
    }

    pub(crate) fn set_lost(&self) {
        self.lost.set(true);
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.get()
    }

    /// Whether another frame may be handed to the handler.
    pub(crate) fn may_deliver(&self, transport: &Transport) -> bool {
        !(self.paused.get() || self.stopped.get() || self.lost.get() || transport.is_closing())
    }

    /// Stops delivery and reading until [`resume`](Self::resume).
    pub(crate) fn pause(&self) {
        if self.stopped.get() || self.lost.get() {
            return;
        }
        self.paused.set(true);
        if let Some(t) = self.transport() {
            t.pause_reading();
        }
    }

    /// Allows delivery and reading again. Returns whether the caller should
    /// deliver buffered frames now (it should not from inside a handler call).
    pub(crate) fn resume(&self) -> bool {
        if self.stopped.get() || self.lost.get() {
            return false;
        }
        if self.paused.replace(false) {
            if let Some(t) = self.transport() {
                t.resume_reading();
            }
        }
        !self.busy.get()
    }

    /// Stops for good and loses the connection (Twisted's `stopProducing`).
    pub(crate) fn stop(&self) {
        if self.stopped.replace(true) {
            return;
        }
        self.paused.set(true);
        if let Some(t) = self.transport() {
            t.lose_connection();
        }
    }

    /// Stops for good without touching the transport (it is closing).
    pub(crate) fn stop_quietly(&self) {
        self.stopped.set(true);
        self.paused.set(true);
    }
}
