//! The state a server shares with its connections, links and timers, and
//! a connection's life cycle in it: admission against the connection
//! limits, start, idle time-out, loss, and the server's stop. The server's
//! own life is a [`Life`]: running, draining (`drain.rs`), stopped.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use gyre_protocols::tls::{start_tls_client, StartTls};
use gyre_protocols::LineReceiver;
use gyre_reactor::{ConnectionLost, ListeningPort, Reactor};

use super::conn::{Conn, Role};
use super::drain::Drain;
use super::handler::ConnHandler;
use super::lookup::PlacesLookup;
use super::options::{ServerOptions, LINK_LINE_SLACK};
use super::peering::{HerdProtocol, PeerLinks};
use crate::limits::{Admission, ConnectionLimits, RateLimiter, REFUSAL_PER_ADDRESS};
use crate::links::Links;
use crate::log::ServerLog;
use crate::metrics::{Counter, Metrics};
use crate::store::Store;

/// The accept factory's strong reference to its server (emptied by `stop`,
/// which breaks the server → port → factory → server cycle).
pub(super) type AcceptSlot = Rc<RefCell<Option<Rc<Server>>>>;

/// The server's state, shared by its connections, links and timers.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) reactor: Reactor,
    pub(super) local_addr: SocketAddr,
    pub(crate) log: ServerLog,
    pub(crate) options: ServerOptions,
    pub(crate) store: RefCell<Store>,
    pub(super) places: Box<dyn PlacesLookup>,
    pub(crate) links: Links,
    /// How links are authenticated.
    pub(crate) peer_links: PeerLinks,
    pub(super) port: RefCell<Option<ListeningPort>>,
    /// What the accept factory holds: this server, until `stop`.
    pub(super) accept_slot: AcceptSlot,
    /// Every open connection, by id (to close them on `stop`).
    pub(super) conns: RefCell<HashMap<u64, Rc<Conn>>>,
    pub(super) next_conn: Cell<u64>,
    /// Running, draining or stopped.
    pub(super) life: RefCell<Life>,
    /// Accepted connections against the connection limits.
    pub(super) limits: RefCell<ConnectionLimits>,
    /// The per-address IAMAT rate limits.
    pub(super) rates: RefCell<RateLimiter>,
    /// What it did so far (for the status listener).
    pub(crate) metrics: Metrics,
    /// When it started (its reactor's clock).
    pub(crate) started: Instant,
    /// Reused for the neighbours a flood went to (one log entry per
    /// flood, no allocation per line).
    pub(super) flood_scratch: Cell<String>,
    pub(super) me: Weak<Server>,
}

/// Where a server is in its life. It only moves forward.
pub(super) enum Life {
    /// Accepting, dialling neighbours, reading commands.
    Running,
    /// A graceful stop (see `drain.rs`): no longer accepting, dialling or
    /// reading; answering the commands already received.
    Draining(Drain),
    /// Every connection closed (or closing); nothing more happens.
    Stopped,
}

impl Server {
    /// Whether the server stopped serving: stopped, or draining. Either
    /// way it accepts nothing, dials nothing and reads no new command.
    pub(crate) fn is_stopped(&self) -> bool {
        !self.is_running()
    }

    /// Whether it is running (not draining, not stopped).
    pub(crate) fn is_running(&self) -> bool {
        matches!(*self.life.borrow(), Life::Running)
    }

    pub(crate) fn weak(&self) -> Weak<Server> {
        self.me.clone()
    }

    pub(super) fn stop(&self) {
        let was = std::mem::replace(&mut *self.life.borrow_mut(), Life::Stopped);
        let drain = match was {
            Life::Stopped => return,
            Life::Running => None,
            Life::Draining(drain) => Some(drain),
        };
        if let Some(port) = self.port.borrow_mut().take() {
            drop(port.stop_listening());
        }
        self.links.stop();
        let conns: Vec<Rc<Conn>> = self.conns.borrow_mut().drain().map(|(_, c)| c).collect();
        for conn in conns {
            conn.close();
        }
        self.log.entry(format_args!("server {} stopped", self.name));
        // A stopped server's log is complete now, not at the loop's next
        // iteration (there may be none).
        self.log.flush();
        // Break the server → port → factory → server cycle. (The caller,
        // a `HerdServer`, still holds the server, so `self` stays valid.)
        let me = self.accept_slot.borrow_mut().take();
        // Whoever waits for a drain hears that it ended (last: its
        // callbacks may call anything).
        if let Some(drain) = drain {
            drain.ended();
        }
        drop(me);
    }

    /// A protocol for a connection a client or neighbour opened.
    pub(super) fn accept(&self, peer: SocketAddr) -> Option<HerdProtocol> {
        if !self.is_running() {
            return None;
        }
        let protocol = self.new_protocol(peer, Role::Client);
        let id = self.next_conn.get() - 1;
        let admission = self.limits.borrow_mut().admit(id, peer);
        self.metrics.count(Counter::ConnectionsAccepted);
        match admission {
            Admission::Accept { pause: false } => {}
            Admission::Accept { pause: true } => {
                self.metrics.count(Counter::LimitConnections);
                if let Some(port) = self.port.borrow().as_ref() {
                    port.pause_accepting();
                }
                self.log.entry(format_args!(
                    "{} connections open, the limit (max_connections): accepting paused until one closes",
                    self.options.max_connections
                ));
            }
            Admission::RefuseAddress { first } => {
                self.metrics.count(Counter::LimitConnectionsPerAddress);
                if first {
                    self.log.entry(format_args!(
                        "{} connections open from {}, the limit (max_connections_per_address): \
                         refusing more from it until one closes (logged once)",
                        self.options.max_connections_per_address,
                        peer.ip()
                    ));
                }
            }
        }
        Some(protocol)
    }

    /// Refuses a connection accepted past its address's limit, if `conn` is
    /// one: writes the refusal line and closes it. Returns whether it was.
    pub(super) fn refuse_if_over(&self, conn: &Rc<Conn>) -> bool {
        if !self.limits.borrow_mut().take_refusal(conn.id) {
            return false;
        }
        let transport = conn.transport.borrow().clone();
        if let Some(t) = transport {
            t.write(REFUSAL_PER_ADDRESS.as_bytes());
            t.lose_connection();
        }
        true
    }

    /// An accepted connection closed: resumes accepting below the total
    /// limit, and ends its address's episode of refusals.
    pub(super) fn release_accepted(&self, conn: &Rc<Conn>) {
        let released = self.limits.borrow_mut().release(conn.id);
        if let Some(refused) = released.address_episode_ended {
            self.log.entry(format_args!(
                "accepting connections from {} again ({refused} refused)",
                conn.peer.ip()
            ));
        }
        if released.resume && self.is_running() {
            let total = self.limits.borrow().total();
            if let Some(port) = self.port.borrow().as_ref() {
                port.resume_accepting();
            }
            self.log.entry(format_args!(
                "{total} connections open, below the limit (max_connections): accepting again"
            ));
        }
    }

    /// A protocol for a connection with this role.
    pub(crate) fn new_protocol(&self, peer: SocketAddr, role: Role) -> HerdProtocol {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let max = match role {
            Role::Client | Role::Claimed { .. } => self.options.max_line_length,
            Role::Verifying { .. } | Role::Link { .. } => {
                self.options.max_line_length + LINK_LINE_SLACK
            }
        };
        let conn = Rc::new(Conn {
            id,
            server: self.me.clone(),
            peer,
            peer_text: peer.to_string().into_boxed_str(),
            transport: RefCell::new(None),
            control: RefCell::new(None),
            role: RefCell::new(role),
            lines: Cell::new(0),
            answers: RefCell::new(VecDeque::new()),
            next_answer: Cell::new(0),
            input_done: Cell::new(false),
            write_paused: Cell::new(false),
            read_paused: Cell::new(false),
            link: RefCell::new(None),
            max_pending: self.options.max_pending_answers.max(1),
            last_line_at: Cell::new(self.reactor.clock().now()),
            idle_timer: RefCell::new(None),
        });
        let lines = LineReceiver::new(ConnHandler { conn })
            .with_delimiter(b"\n")
            .with_max_length(max);
        StartTls::new(lines)
            .with_reactor(&self.reactor)
            .with_handshake_timeout(self.options.peer_handshake_timeout)
    }

    pub(super) fn connection_made(&self, conn: &Rc<Conn>) {
        if !self.is_running() {
            conn.close();
            return;
        }
        if self.refuse_if_over(conn) {
            return;
        }
        self.conns.borrow_mut().insert(conn.id, Rc::clone(conn));
        let role = conn.role.borrow().clone();
        match role {
            Role::Client => {
                self.log
                    .entry(format_args!("new connection from {}", conn.peer));
                conn.last_line_at.set(self.reactor.clock().now());
                self.watch_idle(conn, self.options.client_idle_timeout);
            }
            Role::Link { neighbour, dialled } => {
                self.log.entry(format_args!(
                    "new connection to neighbour {neighbour} at {}",
                    conn.peer
                ));
                let hello = format!("PEER {}", self.name);
                conn.write_logged(hello.as_bytes());
                self.links.register(self, conn, &neighbour, dialled);
            }
            Role::Verifying { neighbour, .. } => {
                self.log.entry(format_args!(
                    "new connection to neighbour {neighbour} at {}: verifying it over TLS",
                    conn.peer
                ));
                let hello = format!("PEER {}", self.name);
                conn.write_logged(hello.as_bytes());
                // The ClientHello follows the PEER line at once; the
                // neighbour's certificate must name `neighbour`.
                let started = match (&self.peer_links, conn.transport()) {
                    (PeerLinks::Verified(creds), Some(t)) => {
                        start_tls_client(&t, &neighbour, creds.client_config())
                            .map_err(|e| e.to_string())
                    }
                    _ => Err("no TLS credentials".to_string()),
                };
                match started {
                    Ok(()) => self.await_verification(conn),
                    Err(e) => {
                        self.log.entry(format_args!(
                            "cannot start TLS with neighbour {neighbour} at {}: {e}",
                            conn.peer
                        ));
                        conn.close();
                    }
                }
            }
            Role::Claimed { .. } => {}
        }
    }

    /// Checks `conn` for idleness after `delay`: a client with no answer
    /// pending that sent no complete line for the idle time-out is closed;
    /// otherwise the check is scheduled again for when it could be.
    pub(super) fn watch_idle(&self, conn: &Rc<Conn>, delay: Duration) {
        let server = self.me.clone();
        let watched = Rc::downgrade(conn);
        let timer = self.reactor.call_later(delay, move || {
            let (Some(server), Some(conn)) = (server.upgrade(), watched.upgrade()) else {
                return;
            };
            server.idle_check(&conn);
        });
        *conn.idle_timer.borrow_mut() = Some(timer);
    }

    pub(super) fn idle_check(&self, conn: &Rc<Conn>) {
        conn.idle_timer.borrow_mut().take();
        if conn.is_link() || conn.is_closing() {
            return;
        }
        let timeout = self.options.client_idle_timeout;
        if !conn.answers.borrow().is_empty() {
            // Waiting for us (a Places answer), not idle.
            self.watch_idle(conn, timeout);
            return;
        }
        let idle = self
            .reactor
            .clock()
            .now()
            .saturating_duration_since(conn.last_line_at.get());
        if idle >= timeout {
            self.metrics.count(Counter::LimitClientIdle);
            self.log.entry(format_args!(
                "closing connection from {}: no command for {}s (the idle time-out)",
                conn.peer,
                timeout.as_secs_f64()
            ));
            conn.close();
        } else {
            self.watch_idle(conn, timeout - idle);
        }
    }

    pub(super) fn connection_lost(&self, conn: &Rc<Conn>, reason: &ConnectionLost) {
        if let Some(timer) = conn.idle_timer.borrow_mut().take() {
            let _ = timer.cancel();
        }
        let known = self.conns.borrow_mut().remove(&conn.id).is_some();
        self.release_accepted(conn);
        if !known {
            // Refused at once (or made after `stop`): nothing to report.
            return;
        }
        conn.answers.borrow_mut().clear();
        let role = conn.role.borrow().clone();
        match role {
            Role::Client | Role::Claimed { .. } => self.log.entry(format_args!(
                "dropped connection from {}: {reason}",
                conn.peer
            )),
            Role::Verifying {
                neighbour, dialled, ..
            } => {
                self.log.entry(format_args!(
                    "dropped connection with {} before its link was verified: {reason}",
                    conn.describe_peer()
                ));
                if dialled {
                    self.links.verification_failed(self, &neighbour);
                }
            }
            Role::Link { neighbour, .. } => {
                self.log.entry(format_args!(
                    "dropped connection with neighbour {neighbour} at {}: {reason}",
                    conn.peer
                ));
                self.links.unregister(self, conn, &neighbour);
            }
        }
        self.check_drained();
    }
}
