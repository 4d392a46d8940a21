//! A graceful stop: [`HerdServer::drain`](super::HerdServer::drain).
//!
//! # The contract
//!
//! When a drain starts, the server, at once:
//!
//! - **stops accepting**: its port closes, so a new client is refused by
//!   the kernel (connection refused) rather than accepted and dropped;
//! - **stops dialling** its neighbours, and **closes its links cleanly**
//!   (what is buffered is flushed, then a TLS close_notify and a TCP FIN).
//!   No goodbye line is sent: the link protocol keeps no state beyond the
//!   connection, a neighbour treats the close as the link going down (it
//!   logs it and re-dials with its back-off, capped at 1 s, so it finds the
//!   server again as soon as it restarts), and a restarted server is sent
//!   every neighbour's store when its links come back;
//! - **stops reading** every client connection (as Twisted's and nginx's
//!   graceful stops do): a command is answered if its line reached the
//!   server before the drain started. Bytes still in the kernel's buffer,
//!   or in the line receiver's buffer of a connection that was paused
//!   (too many answers waiting, or a client not reading), are not read:
//!   the client can tell what was answered, since answers come in command
//!   order, and what was not (everything after the last answer before the
//!   EOF). Connections still being verified as links are closed.
//!
//! Then every client connection gets the answers to the commands it sent,
//! Places answers included, in order, and is closed once the last one is
//! written, as after a client's own EOF. The drain ends when every
//! connection is closed, or when [`ServerOptions::drain_timeout`] passes
//! (default [`DEFAULT_DRAIN_TIMEOUT`], on the reactor's clock): then the
//! connections still open are closed without their missing answers, and
//! the time-out is logged with how many connections and answers it cut.
//! Either way the server then [stops](super::HerdServer::stop), and the
//! Deferred fires (with `()`: a cut drain is logged, not an error).
//!
//! The herd program registers the drain as a before-shutdown trigger, so
//! SIGTERM (or a first SIGINT) makes the reactor's own shutdown wait for
//! it; the reactor's shutdown time-out is set above the drain time-out.
//!
//! [`ServerOptions::drain_timeout`]: super::ServerOptions::drain_timeout
//! [`DEFAULT_DRAIN_TIMEOUT`]: super::DEFAULT_DRAIN_TIMEOUT

use std::rc::Rc;
use std::time::Instant;

use gyre_reactor::clock::DelayedCall;
use gyre_reactor::defer::{succeed, Deferred, Resolver};

use super::conn::{Conn, Role};
use super::state::{Life, Server};

/// A drain under way: who waits for it and its time-out.
pub(crate) struct Drain {
    /// When it started (on the reactor's clock).
    started: Instant,
    /// Everyone who asked for it; fired when it ends.
    waiting: Vec<Resolver<()>>,
    /// The drain time-out.
    timer: Option<DelayedCall>,
}

impl Drain {
    /// The drain ended (the server stopped): cancels the time-out and fires
    /// every waiting Deferred.
    pub(super) fn ended(self) {
        if let Some(timer) = self.timer {
            let _ = timer.cancel();
        }
        for waiting in self.waiting {
            let _ = waiting.callback(());
        }
    }
}

impl Server {
    /// Starts a drain (see the module docs), or joins the one under way;
    /// fires at once if the server already stopped.
    pub(super) fn drain(&self) -> Deferred<()> {
        let (resolver, drained) = Deferred::new();
        {
            let mut life = self.life.borrow_mut();
            match &mut *life {
                Life::Stopped => return succeed(()),
                Life::Draining(drain) => {
                    drain.waiting.push(resolver);
                    return drained;
                }
                Life::Running => {
                    *life = Life::Draining(Drain {
                        started: self.reactor.clock().now(),
                        waiting: vec![resolver],
                        timer: None,
                    });
                }
            }
        }
        if let Some(port) = self.port.borrow_mut().take() {
            drop(port.stop_listening());
        }
        let links = self.links.up();
        // Stops dialling and forgets the links; they are closed below.
        self.links.stop();
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        let (mut clients, mut answers) = (0, 0);
        for conn in &conns {
            let role = conn.role.borrow().clone();
            match role {
                Role::Client => {
                    clients += 1;
                    answers += conn.answers.borrow().len();
                }
                Role::Claimed { .. } | Role::Verifying { .. } | Role::Link { .. } => {}
            }
        }
        let timeout = self.options.drain_timeout;
        self.log.entry(format_args!(
            "server {} draining: stopped accepting and reading; {clients} client connection(s) \
             with {answers} answer(s) to finish; closing the link(s) to {} (neighbours re-dial \
             with back-off); drain time-out {:.3} s",
            self.name,
            if links.is_empty() {
                "no neighbour".to_string()
            } else {
                links.join(", ")
            },
            timeout.as_secs_f64()
        ));
        for conn in &conns {
            let role = conn.role.borrow().clone();
            match role {
                Role::Client => {
                    // As after the client's EOF: no more commands; closed
                    // once every answer is written.
                    conn.input_done.set(true);
                    conn.update_flow();
                    conn.maybe_finish();
                }
                Role::Claimed { .. } | Role::Verifying { .. } | Role::Link { .. } => conn.close(),
            }
        }
        let server = self.me.clone();
        let timer = self.reactor.call_later(timeout, move || {
            if let Some(server) = server.upgrade() {
                server.drain_timed_out();
            }
        });
        match &mut *self.life.borrow_mut() {
            Life::Draining(drain) => drain.timer = Some(timer),
            // Stopped meanwhile (a callback of the closes above).
            _ => {
                let _ = timer.cancel();
            }
        }
        self.check_drained();
        drained
    }

    /// While draining: ends the drain once every connection is closed.
    pub(super) fn check_drained(&self) {
        let started = match &*self.life.borrow() {
            Life::Draining(drain) => drain.started,
            _ => return,
        };
        if !self.conns.borrow().is_empty() {
            return;
        }
        let took = self
            .reactor
            .clock()
            .now()
            .saturating_duration_since(started);
        self.log.entry(format_args!(
            "server {} drained in {:.3} s: every command received was answered and every connection closed",
            self.name,
            took.as_secs_f64()
        ));
        self.stop();
    }

    /// The drain time-out passed: closes what is left (logged) and stops.
    fn drain_timed_out(&self) {
        if !matches!(*self.life.borrow(), Life::Draining(_)) {
            return;
        }
        let (open, unanswered) = {
            let conns = self.conns.borrow();
            let unanswered: usize = conns.values().map(|c| c.answers.borrow().len()).sum();
            (conns.len(), unanswered)
        };
        self.log.entry(format_args!(
            "server {}: drain time-out of {:.3} s (drain_timeout) hit: closing {open} connection(s) \
             still open, {unanswered} answer(s) never written",
            self.name,
            self.options.drain_timeout.as_secs_f64()
        ));
        log::warn!(
            "{}: drain time-out hit: {open} connection(s) closed, {unanswered} answer(s) never written",
            self.name
        );
        self.stop();
    }
}
