//! Links between neighbours: one TCP connection per link, used in both
//! directions whichever side opened it.
//!
//! # The link protocol
//!
//! - On start, a server dials every neighbour at once, and keeps dialling a
//!   neighbour whose link is down: after a failed attempt it waits
//!   [`ServerOptions::backoff`](crate::ServerOptions::backoff) (by default
//!   100 ms doubling to at most 1 s, with jitter, forever) and tries again.
//!   A link that is up (whichever side dialled it) cancels the waiting
//!   retry; when the link drops, dialling resumes after the back-off's
//!   first delay (a short pause, so that a neighbour that accepts and
//!   drops at once is not dialled in a tight loop).
//! - The dialling server's first line is `PEER <its name>`, and its TLS
//!   ClientHello follows at once (mutual TLS; see the herd README's
//!   Security section). The accepting server takes the connection as a
//!   link only if that is the first line, names one of its neighbours, is
//!   followed by a TLS handshake, and the client certificate (from the herd
//!   CA) names that neighbour exactly; a `PEER` line not followed by TLS is
//!   an invalid command (`? PEER ...`) and the connection stays a client's.
//!   The dialler takes it as a link only if the acceptor's certificate
//!   names the neighbour it dialled. (With
//!   [`PeerTls::Insecure`](crate::PeerTls::Insecure), the `PEER` line alone
//!   makes the link.)
//! - A link is up as soon as its peer is verified (on either side); until
//!   then it is not registered here, so it displaces nothing. Each side then
//!   sends the other a keep-alive line, `PING`, and every location it
//!   stores, as AT lines (the *catch-up*), so a restarted server catches up
//!   at once, without waiting for its neighbours' back-off timers; each
//!   newly stored location is flooded to every neighbour whose link is up,
//!   except the one it came from, during the catch-up as after it. The
//!   catch-up is paced by the link's write buffer
//!   ([`ServerOptions::link_high_water`](crate::ServerOptions::link_high_water)):
//!   a batch per loop turn, never more than the high-water mark plus one
//!   line buffered, whatever the store's size; a location may therefore
//!   reach a neighbour twice (a flood, then the catch-up), which is
//!   harmless, since a server takes only a location newer than its own.
//!   A link whose neighbour stops reading gets no floods until it drains,
//!   and then a catch-up on everything stored since. The catch-up is
//!   logged as a summary (start and end, with counts), not line by line;
//!   see the server's `link.rs` for the details and the states.
//! - **Heartbeat.** A side that sent no line on a link for
//!   [`ServerOptions::link_heartbeat_interval`](crate::ServerOptions::link_heartbeat_interval)
//!   (1 s by default) sends `PING` (a line of its own; whitespace around it
//!   is allowed, as on every line). A side that has received a `PING` on a
//!   link and then receives no line at all on it for
//!   [`ServerOptions::link_dead_after`](crate::ServerOptions::link_dead_after)
//!   (4 s by default) closes the link as dead and logs it; the re-dial with
//!   back-off takes over, so after a silent partition (packets dropped, no
//!   close) heals, a fresh link forms within about a second of the next
//!   dial and its catch-up brings both sides up to date, instead of the
//!   old connection waiting for TCP's retransmission back-off. `PING` is
//!   never answered (a server that heard it knows the link is alive, the
//!   other side learns it from the lines it receives). A server that does
//!   not know `PING` (older ones) logs it and drops it, as any line on a
//!   link that is not `AT`; and a neighbour that never sent one is never
//!   judged dead for being quiet, so a link to an older server does not
//!   flap. Keep-alives are not logged (one per idle link per second).
//! - When both sides dial at once there are two connections. Both sides
//!   keep the same one: for neighbours `A < B` (byte order of the names),
//!   the canonical connection is the one `A` dialled. A side that has both
//!   closes the other one; a side that has only the non-canonical one keeps
//!   using it until the canonical one appears. Every connection that
//!   becomes a side's link gets the full store sent on it, so AT lines lost
//!   with a closed duplicate are sent again.
//! - A second connection of the same kind (a neighbour that restarted and
//!   dialled again while its old connection is not yet known to be dead)
//!   replaces the first.
//!
//! Lines on a link are never answered; see the [server docs](crate::server)
//! and `herd/PROTOCOL.md` §5, which states this protocol for users.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

use std::time::Instant;

use gyre_reactor::clock::DelayedCall;
use gyre_reactor::defer::BackoffState;
use gyre_reactor::{ClientFactory, ConnectionLost, Connector, ConnectorState, Factory};

use crate::config::HerdConfig;
use crate::metrics::Counter;
use crate::server::{Conn, HerdProtocol, LinkCounts, PeerLinks, Role, Server};

/// Every neighbour's link state (one per server).
pub(crate) struct Links {
    name: String,
    neighbours: RefCell<BTreeMap<String, Neighbour>>,
}

struct Neighbour {
    /// Where to dial it (known after `connect_all`).
    addr: Option<SocketAddr>,
    /// The link connection we opened, once connected.
    dialled: Option<Rc<Conn>>,
    /// The link connection it opened, once its PEER line came.
    accepted: Option<Rc<Conn>>,
    /// Our dialler (created on the first dial, reused for every retry).
    connector: Option<Connector>,
    backoff: Option<BackoffState>,
    /// The pending retry.
    retry: Option<DelayedCall>,
    /// When the link last came up or went down (`None`: never up).
    since: Option<Instant>,
}

/// The state of a link, as the status listener shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// A verified connection carries it.
    Up,
    /// Down, with a dial in flight.
    Connecting,
    /// Down, waiting for the back-off (or not dialled yet).
    Down,
}

impl LinkState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Connecting => "connecting",
            LinkState::Down => "down",
        }
    }
}

/// One link as the status listener shows it.
pub(crate) struct LinkView {
    pub(crate) neighbour: String,
    pub(crate) state: LinkState,
    pub(crate) since: Option<Instant>,
    /// The connection carrying it: its peer address, and who dialled it.
    pub(crate) conn: Option<(SocketAddr, bool)>,
    pub(crate) counts: Option<LinkCounts>,
    pub(crate) buffered: Option<usize>,
}

impl Neighbour {
    fn is_up(&self) -> bool {
        self.dialled.is_some() || self.accepted.is_some()
    }
}

/// What to do once the table's borrow is released.
enum After {
    Close(Rc<Conn>),
    /// Start the link's session: catch-up, floods, heartbeat.
    Start(Rc<Conn>),
    Log(String),
}

impl Links {
    pub(crate) fn new(name: &str, neighbours: &[String]) -> Links {
        Links {
            name: name.to_string(),
            neighbours: RefCell::new(
                neighbours
                    .iter()
                    .map(|n| {
                        (
                            n.clone(),
                            Neighbour {
                                addr: None,
                                dialled: None,
                                accepted: None,
                                connector: None,
                                backoff: None,
                                retry: None,
                                since: None,
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// The neighbour called `name`, if there is one.
    pub(crate) fn neighbour_named(&self, name: &[u8]) -> Option<String> {
        let name = std::str::from_utf8(name).ok()?;
        self.neighbours
            .borrow()
            .contains_key(name)
            .then(|| name.to_string())
    }

    /// The neighbours whose link is up, sorted.
    pub(crate) fn up(&self) -> Vec<String> {
        self.neighbours
            .borrow()
            .iter()
            .filter(|(_, n)| n.is_up())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Records every neighbour's address and dials them all.
    pub(crate) fn connect_all(&self, server: &Server, config: &HerdConfig) -> io::Result<()> {
        let names: Vec<String> = {
            let mut table = self.neighbours.borrow_mut();
            for (name, n) in table.iter_mut() {
                let addr = config.addr(name).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("the configuration has no address for neighbour {name}"),
                    )
                })?;
                n.addr = Some(addr);
                n.backoff = Some(BackoffState::new(server.options.backoff.clone()));
            }
            table.keys().cloned().collect()
        };
        for name in names {
            self.dial(server, &name);
        }
        Ok(())
    }

    /// Dials `name` now, unless its link is up, an attempt is in flight,
    /// or the server stopped.
    fn dial(&self, server: &Server, name: &str) {
        if server.is_stopped() {
            return;
        }
        let busy = {
            let mut table = self.neighbours.borrow_mut();
            let Some(n) = table.get_mut(name) else {
                return;
            };
            if let Some(retry) = n.retry.take() {
                let _ = retry.cancel();
            }
            let Some(addr) = n.addr else {
                return;
            };
            if n.is_up() {
                return;
            }
            match &n.connector {
                Some(c) => match c.state() {
                    ConnectorState::Disconnected => {
                        c.connect();
                        false
                    }
                    // The attempt in flight reports success or failure.
                    ConnectorState::Connecting => false,
                    // A dialled connection we are closing (a duplicate):
                    // try again once it is gone.
                    ConnectorState::Connected => true,
                },
                None => {
                    let factory = DialFactory {
                        server: server.weak(),
                        neighbour: name.to_string(),
                    };
                    let timeout = server.options.connect_timeout;
                    n.connector = Some(server.reactor.connect_tcp(addr, factory, timeout));
                    false
                }
            }
        };
        if busy {
            self.schedule_retry(server, name);
        }
    }

    /// An attempt to dial `name` failed: try again after the back-off.
    fn dial_failed(&self, server: &Server, name: &str, error: &io::Error) {
        let delay = self.schedule_retry(server, name);
        if let Some(delay) = delay {
            server.log.entry(format_args!(
                "cannot reach neighbour {name}: {error}; retrying in {:.3} s",
                delay.as_secs_f64()
            ));
        }
    }

    /// A connection we dialled to `name` closed before its link was
    /// verified (the TLS handshake failed, or the certificate named someone
    /// else): try again after the back-off.
    pub(crate) fn verification_failed(&self, server: &Server, name: &str) {
        if let Some(delay) = self.schedule_retry(server, name) {
            server.log.entry(format_args!(
                "no verified link with neighbour {name}; retrying in {:.3} s",
                delay.as_secs_f64()
            ));
        }
    }

    /// Schedules the next dial of `name` after the back-off's next delay,
    /// unless the link is up or the server stopped. Returns the delay.
    fn schedule_retry(&self, server: &Server, name: &str) -> Option<std::time::Duration> {
        if server.is_stopped() {
            return None;
        }
        let mut table = self.neighbours.borrow_mut();
        let n = table.get_mut(name)?;
        if n.is_up() {
            return None;
        }
        let backoff = n.backoff.as_mut()?;
        let delay = backoff
            .next_delay()
            .unwrap_or(server.options.backoff.max_delay);
        let weak = server.weak();
        let target = name.to_string();
        let call = server.reactor.call_later(delay, move || {
            if let Some(server) = weak.upgrade() {
                server.links.dial(&server, &target);
            }
        });
        if let Some(old) = n.retry.replace(call) {
            let _ = old.cancel();
        }
        Some(delay)
    }

    /// `conn` became a link connection to `name` (`dialled` by us, or not).
    pub(crate) fn register(&self, server: &Server, conn: &Rc<Conn>, name: &str, dialled: bool) {
        let mut after = Vec::new();
        {
            let mut table = self.neighbours.borrow_mut();
            let Some(n) = table.get_mut(name) else {
                return;
            };
            let was_up = n.is_up();
            let slot = if dialled {
                &mut n.dialled
            } else {
                &mut n.accepted
            };
            if let Some(old) = slot.replace(Rc::clone(conn)) {
                after.push(After::Log(format!(
                    "a newer connection with {name} replaces the one at {}",
                    old.peer()
                )));
                after.push(After::Close(old));
            }
            // We dialled the canonical connection iff our name is smaller.
            let we_are_smaller = self.name.as_bytes() < name.as_bytes();
            let canonical_is_dialled = we_are_smaller;
            if n.dialled.is_some() && n.accepted.is_some() {
                let duplicate = if canonical_is_dialled {
                    n.accepted.take()
                } else {
                    n.dialled.take()
                };
                if let Some(dup) = duplicate {
                    after.push(After::Log(format!(
                        "two connections with {name}: keeping the one {} dialled, closing the one at {}",
                        if we_are_smaller { self.name.as_str() } else { name },
                        dup.peer()
                    )));
                    after.push(After::Close(dup));
                }
            }
            let still_registered = [&n.dialled, &n.accepted]
                .into_iter()
                .flatten()
                .any(|c| Rc::ptr_eq(c, conn));
            if !was_up {
                n.since = Some(server.reactor.clock().now());
                server.metrics.count(Counter::LinkUp);
                if let Some(retry) = n.retry.take() {
                    let _ = retry.cancel();
                }
                if let Some(b) = n.backoff.as_mut() {
                    b.reset();
                }
                after.push(After::Log(format!(
                    "link to {name} up ({} connection with {})",
                    if dialled { "dialled" } else { "accepted" },
                    conn.peer()
                )));
            }
            if still_registered {
                after.push(After::Start(Rc::clone(conn)));
            }
        }
        for action in after {
            match action {
                After::Close(c) => c.close(),
                After::Log(line) => server.log.entry(format_args!("{line}")),
                After::Start(c) => c.start_link(server, name),
            }
        }
    }

    /// `conn`, a link connection to `name`, closed.
    pub(crate) fn unregister(&self, server: &Server, conn: &Rc<Conn>, name: &str) {
        conn.stop_link();
        let went_down = {
            let mut table = self.neighbours.borrow_mut();
            let Some(n) = table.get_mut(name) else {
                return;
            };
            let was_up = n.is_up();
            for slot in [&mut n.dialled, &mut n.accepted] {
                if slot.as_ref().is_some_and(|c| Rc::ptr_eq(c, conn)) {
                    *slot = None;
                }
            }
            let went_down = was_up && !n.is_up();
            if went_down {
                n.since = Some(server.reactor.clock().now());
                server.metrics.count(Counter::LinkDown);
            }
            went_down
        };
        if went_down {
            server.log.entry(format_args!("link to {name} down"));
            self.schedule_retry(server, name);
        }
    }

    /// The connection of every link that is up, except `from`'s.
    fn up_conns(&self, from: Option<&str>) -> Vec<Rc<Conn>> {
        self.neighbours
            .borrow()
            .iter()
            .filter(|(name, _)| Some(name.as_str()) != from)
            .filter_map(|(_, n)| n.dialled.clone().or_else(|| n.accepted.clone()))
            .collect()
    }

    /// Sends `at_line`, stored with sequence number `seq`, to every
    /// neighbour whose link is up, except `from` (each link's session
    /// decides how: see the server's `link.rs`).
    ///
    /// Appends `Name (address)` of each neighbour it was written to now to
    /// `sent_to` (comma-separated), for the caller's one log entry; a link
    /// that is catching up sends it later, logged by its catch-up.
    pub(crate) fn flood(&self, at_line: &[u8], seq: u64, from: Option<&str>, sent_to: &mut String) {
        for conn in self.up_conns(from) {
            if conn.link_flood(at_line, seq) {
                if !sent_to.is_empty() {
                    sent_to.push_str(", ");
                }
                conn.describe_link_into(sent_to);
            }
        }
    }

    /// Sends every neighbour whose link is up the locations stored from
    /// sequence number `from` on, by a catch-up (after a bulk load).
    pub(crate) fn catch_up_from(&self, server: &Server, from: u64) {
        for conn in self.up_conns(None) {
            conn.link_catch_up_from(server, from);
        }
    }

    /// The write-buffer length of the link with `name`, if it is up.
    pub(crate) fn buffered_len(&self, name: &str) -> Option<usize> {
        let conn = {
            let table = self.neighbours.borrow();
            let n = table.get(name)?;
            n.dialled.clone().or_else(|| n.accepted.clone())?
        };
        Some(conn.buffered_len())
    }

    /// What the link with `name` carried so far, if it is up.
    pub(crate) fn counts(&self, name: &str) -> Option<LinkCounts> {
        let conn = {
            let table = self.neighbours.borrow();
            let n = table.get(name)?;
            n.dialled.clone().or_else(|| n.accepted.clone())?
        };
        conn.link_counts()
    }

    /// Every link's state, by neighbour name.
    pub(crate) fn views(&self) -> Vec<LinkView> {
        let table = self.neighbours.borrow();
        table
            .iter()
            .map(|(name, n)| {
                let conn = n
                    .dialled
                    .as_ref()
                    .map(|c| (c, true))
                    .or_else(|| n.accepted.as_ref().map(|c| (c, false)));
                let state = match (&conn, &n.connector) {
                    (Some(_), _) => LinkState::Up,
                    (None, Some(c)) if c.state() == ConnectorState::Connecting => {
                        LinkState::Connecting
                    }
                    _ => LinkState::Down,
                };
                LinkView {
                    neighbour: name.clone(),
                    state,
                    since: n.since,
                    conn: conn.map(|(c, dialled)| (c.peer(), dialled)),
                    counts: conn.and_then(|(c, _)| c.link_counts()),
                    buffered: conn.map(|(c, _)| c.buffered_len()),
                }
            })
            .collect()
    }

    /// Stops dialling and forgets every link (the server closes the
    /// connections).
    pub(crate) fn stop(&self) {
        let connectors: Vec<Connector> = {
            let mut table = self.neighbours.borrow_mut();
            table
                .values_mut()
                .filter_map(|n| {
                    if let Some(retry) = n.retry.take() {
                        let _ = retry.cancel();
                    }
                    n.dialled = None;
                    n.accepted = None;
                    n.connector.take()
                })
                .collect()
        };
        for c in connectors {
            if c.state() == ConnectorState::Connecting {
                c.stop_connecting();
            }
        }
    }
}

/// Builds the protocol of a connection we dial to a neighbour, and hears
/// about failed attempts.
struct DialFactory {
    server: Weak<Server>,
    neighbour: String,
}

impl Factory for DialFactory {
    type Protocol = HerdProtocol;

    fn build_protocol(&mut self, peer: SocketAddr) -> Option<Self::Protocol> {
        let server = self.server.upgrade()?;
        if server.is_stopped() {
            return None;
        }
        let role = match server.peer_links {
            PeerLinks::Verified(_) => Role::Verifying {
                neighbour: self.neighbour.clone(),
                dialled: true,
                line: None,
            },
            PeerLinks::Insecure => Role::Link {
                neighbour: self.neighbour.as_str().into(),
                dialled: true,
            },
        };
        Some(server.new_protocol(peer, role))
    }
}

impl ClientFactory for DialFactory {
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &io::Error) {
        if let Some(server) = self.server.upgrade() {
            server.links.dial_failed(&server, &self.neighbour, reason);
        }
    }

    fn client_connection_lost(&mut self, _connector: &Connector, _reason: &ConnectionLost) {
        // The connection's own `connection_lost` unregistered it, and
        // scheduled a retry if that took the link down.
    }
}
