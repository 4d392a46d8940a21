//! The connection cap: [`Budget`] counts a server's open connections and
//! hands each a [`Slot`], taken when the connection is accepted (before a
//! TLS handshake) and given back when its protocol is dropped.
//!
//! Under the cap a connection is served. At the cap,
//! [`AtCapacity::PauseAccepting`] pauses the port, and
//! [`AtCapacity::Answer503`] serves the connection a 503 instead, up to
//! `at_most` such connections at once, then pauses the port. The port
//! resumes when a slot is given back below the mark that paused it. Each
//! pause and resume is logged once.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use gyre_reactor::ListeningPort;

use super::config::AtCapacity;

/// What a new connection gets.
pub(crate) enum Admission {
    /// Served, holding this slot.
    Serve(Slot),
    /// Answered 503 and closed, holding this slot.
    Refuse(Slot),
}

/// Which count a slot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Serving,
    Refusing,
}

/// A server's open connections against its cap.
pub(crate) struct Budget {
    name: String,
    max: usize,
    policy: AtCapacity,
    serving: Cell<usize>,
    refusing: Cell<usize>,
    port: RefCell<Option<ListeningPort>>,
    /// Whether this budget paused the port (it resumes only what it paused).
    paused: Cell<bool>,
}

impl Budget {
    pub fn new(name: &str, max: usize, policy: AtCapacity) -> Rc<Budget> {
        Rc::new(Budget {
            name: name.to_string(),
            max: max.max(1),
            policy,
            serving: Cell::new(0),
            refusing: Cell::new(0),
            port: RefCell::new(None),
            paused: Cell::new(false),
        })
    }

    /// The port to pause and resume (none after the server stops).
    pub fn set_port(&self, port: Option<ListeningPort>) {
        *self.port.borrow_mut() = port;
    }

    /// Connections open: served and being refused.
    pub fn open(&self) -> usize {
        self.serving.get() + self.refusing.get()
    }

    /// A slot for a new connection.
    pub fn admit(self: &Rc<Self>) -> Admission {
        let serving = self.serving.get();
        // PauseAccepting serves whatever the port still accepted (it
        // paused at the cap; a connection accepted in the same burst is
        // served over it).
        if serving < self.max || self.policy == AtCapacity::PauseAccepting {
            self.serving.set(serving + 1);
            if serving + 1 >= self.max && self.policy == AtCapacity::PauseAccepting {
                self.pause(format_args!(
                    "{} connections open, its limit: accepting paused until one closes",
                    serving + 1
                ));
            }
            return Admission::Serve(Slot {
                budget: Rc::clone(self),
                kind: Kind::Serving,
            });
        }
        // Over the cap with Answer503.
        let refusing = self.refusing.get() + 1;
        self.refusing.set(refusing);
        if let AtCapacity::Answer503 { at_most } = self.policy {
            if refusing >= at_most.max(1) {
                self.pause(format_args!(
                    "{serving} connections open and {refusing} being answered 503: accepting paused until one closes"
                ));
            }
        }
        Admission::Refuse(Slot {
            budget: Rc::clone(self),
            kind: Kind::Refusing,
        })
    }

    fn pause(&self, why: std::fmt::Arguments<'_>) {
        if self.paused.replace(true) {
            return;
        }
        if let Some(port) = self.port.borrow().as_ref() {
            port.pause_accepting();
        }
        log::warn!("{}: {why}", self.name);
    }

    fn give_back(&self, kind: Kind) {
        let count = match kind {
            Kind::Serving => &self.serving,
            Kind::Refusing => &self.refusing,
        };
        count.set(count.get().saturating_sub(1));
        let room = match self.policy {
            AtCapacity::PauseAccepting => self.serving.get() < self.max,
            AtCapacity::Answer503 { at_most } => self.refusing.get() < at_most.max(1),
        };
        if room && self.paused.replace(false) {
            if let Some(port) = self.port.borrow().as_ref() {
                port.resume_accepting();
            }
            log::warn!(
                "{}: {} connections open: accepting again",
                self.name,
                self.open()
            );
        }
    }
}

/// One connection's share of the [`Budget`], given back when dropped.
pub(crate) struct Slot {
    budget: Rc<Budget>,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.give_back(self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_503_past_the_cap() {
        let budget = Budget::new("test", 2, AtCapacity::Answer503 { at_most: 2 });
        let a = budget.admit();
        let b = budget.admit();
        assert!(matches!(
            (&a, &b),
            (Admission::Serve(_), Admission::Serve(_))
        ));
        let c = budget.admit();
        assert!(matches!(c, Admission::Refuse(_)));
        assert_eq!(budget.open(), 3);
        let d = budget.admit();
        assert!(budget.paused.get(), "two refusing: paused");
        drop(d);
        assert!(!budget.paused.get());
        drop((a, c));
        assert_eq!(budget.open(), 1);
        assert!(matches!(budget.admit(), Admission::Serve(_)));
    }

    #[test]
    fn pause_at_the_cap() {
        let budget = Budget::new("test", 2, AtCapacity::PauseAccepting);
        let a = budget.admit();
        assert!(!budget.paused.get());
        let b = budget.admit();
        assert!(budget.paused.get());
        drop(a);
        assert!(!budget.paused.get());
        drop(b);
        assert_eq!(budget.open(), 0);
    }
}
