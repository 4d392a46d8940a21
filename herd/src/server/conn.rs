//! One connection's state: its role, its queue of answers in command
//! order, and the flow control that pauses reading while a client's write
//! buffer is full. A link's session (catch-up, floods, heartbeat) is in
//! `link.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Instant;

use gyre_protocols::LineControl;
use gyre_reactor::clock::DelayedCall;
use gyre_reactor::{Producer, Transport};

use super::link::{LinkCounts, LinkSession};
use super::state::Server;
use crate::log::Escaped;

/// What a connection is for. A connection is a link only once its peer is
/// verified (or, with insecure peer links, once it said `PEER`).
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// A client (or a connection that has not named itself a neighbour).
    Client,
    /// Its first line was `line`, `PEER <neighbour>`; the bytes that follow
    /// tell whether a TLS handshake starts (the receiver is in raw mode).
    Claimed { neighbour: String, line: Vec<u8> },
    /// A TLS handshake is under way, on a connection we dialled to
    /// `neighbour`, or on one that claimed to be it with `line`; nothing is
    /// sent on it and it displaces no link until its certificate is checked.
    Verifying {
        neighbour: String,
        dialled: bool,
        line: Option<Vec<u8>>,
    },
    /// A link to `neighbour`, opened by us (`dialled`) or by it (the name
    /// is shared: every line on a link reads the role).
    Link { neighbour: Rc<str>, dialled: bool },
}

/// One connection's state, shared by its line handler, its Places
/// callbacks and the links table. Borrows of its cells are never held
/// across a call out.
pub(crate) struct Conn {
    pub(super) id: u64,
    pub(super) server: Weak<Server>,
    pub(super) peer: SocketAddr,
    /// `peer` formatted once, for log entries (formatting a `SocketAddr`
    /// on every line showed in the herd's profile).
    pub(super) peer_text: Box<str>,
    pub(super) transport: RefCell<Option<Transport>>,
    pub(super) control: RefCell<Option<LineControl>>,
    pub(super) role: RefCell<Role>,
    /// Lines received so far.
    pub(super) lines: Cell<u64>,
    /// Answers in command order; `None` while not ready.
    pub(super) answers: RefCell<VecDeque<(u64, Option<Vec<u8>>)>>,
    pub(super) next_answer: Cell<u64>,
    /// EOF, or an over-long line: no more commands; close once answered.
    pub(super) input_done: Cell<bool>,
    /// The transport's write buffer is above its high-water mark.
    pub(super) write_paused: Cell<bool>,
    /// We paused the line receiver.
    pub(super) read_paused: Cell<bool>,
    /// A link's session, once it is verified and registered.
    pub(super) link: RefCell<Option<Rc<LinkSession>>>,
    pub(super) max_pending: usize,
    /// When the last complete line arrived (or the connection opened), for
    /// the idle time-out.
    pub(super) last_line_at: Cell<Instant>,
    /// The pending idle check of a client connection.
    pub(super) idle_timer: RefCell<Option<DelayedCall>>,
}

impl Conn {
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's transport, while it is open.
    pub(super) fn transport(&self) -> Option<Transport> {
        self.transport.borrow().clone()
    }

    /// Whether a close was asked for (or happened).
    pub(super) fn is_closing(&self) -> bool {
        self.transport
            .borrow()
            .as_ref()
            .is_none_or(|t| t.is_closing())
    }

    /// Closes the connection after what is buffered is sent.
    pub(crate) fn close(&self) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.lose_connection();
        }
    }

    /// Writes raw bytes (no logging).
    pub(crate) fn write(&self, data: &[u8]) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.write(data);
        }
    }

    /// Drops what is buffered and closes now (a dead link: a flush to it
    /// would never end).
    pub(crate) fn abort(&self) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.abort_connection();
        }
    }

    /// Writes `line` and `\n` (no logging).
    pub(crate) fn write_line(&self, line: &[u8]) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.write_sequence(&[line, b"\n"]);
        }
    }

    /// Writes `line` and `\n`, and logs it.
    pub(crate) fn write_logged(&self, line: &[u8]) {
        let transport = self.transport.borrow().clone();
        if let Some(t) = transport {
            t.write_sequence(&[line, b"\n"]);
        }
        if let Some(server) = self.server.upgrade() {
            server.log.entry(format_args!(
                "sent to {}: {}",
                self.describe_peer(),
                Escaped(line)
            ));
        }
    }

    /// `Ball (127.0.0.1:5000)` for a link, the address for a client.
    pub(crate) fn describe_peer(&self) -> String {
        match &*self.role.borrow() {
            Role::Link { neighbour, .. } => format!("{neighbour} ({})", self.peer_text),
            Role::Verifying {
                neighbour,
                dialled: true,
                ..
            } => format!("{neighbour}? ({}, not verified yet)", self.peer),
            Role::Claimed { neighbour, .. }
            | Role::Verifying {
                neighbour,
                dialled: false,
                ..
            } => format!("{} (claims to be {neighbour})", self.peer),
            Role::Client => self.peer_text.to_string(),
        }
    }

    /// Appends `Name (address)` for a link (what [`describe_peer`] says of
    /// any connection), without allocating.
    ///
    /// [`describe_peer`]: Conn::describe_peer
    pub(crate) fn describe_link_into(&self, out: &mut String) {
        match &*self.role.borrow() {
            Role::Link { neighbour, .. } => {
                out.push_str(neighbour);
                out.push_str(" (");
                out.push_str(&self.peer_text);
                out.push(')');
            }
            _ => out.push_str(&self.describe_peer()),
        }
    }

    /// Queues an answer that is ready now.
    pub(super) fn push_ready(&self, answer: Vec<u8>) {
        let id = self.next_answer.get();
        self.next_answer.set(id + 1);
        self.answers.borrow_mut().push_back((id, Some(answer)));
        self.flush_answers();
    }

    /// Queues a place for an answer to come; returns its id for `fill`.
    pub(super) fn push_pending(&self) -> u64 {
        let id = self.next_answer.get();
        self.next_answer.set(id + 1);
        self.answers.borrow_mut().push_back((id, None));
        self.update_flow();
        id
    }

    /// The answer `id` is ready.
    pub(super) fn fill(&self, id: u64, answer: Vec<u8>) {
        {
            let mut answers = self.answers.borrow_mut();
            match answers.iter_mut().find(|(i, _)| *i == id) {
                Some(slot) => slot.1 = Some(answer),
                // The connection closed meanwhile.
                None => return,
            }
        }
        self.flush_answers();
    }

    /// Writes the ready answers at the front of the queue; closes if the
    /// input is done and nothing is left to answer.
    pub(super) fn flush_answers(&self) {
        loop {
            let next = {
                let mut answers = self.answers.borrow_mut();
                match answers.front() {
                    Some((_, Some(_))) => answers.pop_front().and_then(|(_, a)| a),
                    _ => None,
                }
            };
            let Some(answer) = next else {
                break;
            };
            self.write(&answer);
            if let Some(server) = self.server.upgrade() {
                let peer = &self.peer_text;
                match answer.iter().position(|&b| b == b'\n') {
                    Some(end) if end + 1 < answer.len() => server.log.entry(format_args!(
                        "sent to {peer}: {} + Places JSON ({} bytes)",
                        Escaped(&answer[..end]),
                        answer.len() - end - 1
                    )),
                    Some(end) => server
                        .log
                        .entry(format_args!("sent to {peer}: {}", Escaped(&answer[..end]))),
                    None => server
                        .log
                        .entry(format_args!("sent to {peer}: {}", Escaped(&answer))),
                }
            }
        }
        self.maybe_finish();
        self.update_flow();
    }

    /// After the input ended, closes once every answer is written.
    pub(super) fn maybe_finish(&self) {
        if self.input_done.get() && self.answers.borrow().is_empty() {
            self.close();
        }
    }

    /// Pauses reading while too many answers wait, the write buffer is
    /// full, or the input is done; resumes otherwise.
    pub(super) fn update_flow(&self) {
        let want_pause = self.input_done.get()
            || self.write_paused.get()
            || self.answers.borrow().len() >= self.max_pending;
        if want_pause == self.read_paused.get() {
            return;
        }
        self.read_paused.set(want_pause);
        let control = self.control.borrow().clone();
        if let Some(control) = control {
            if want_pause {
                control.pause_producing();
            } else {
                control.resume_producing();
            }
        }
    }

    pub(super) fn is_link(&self) -> bool {
        matches!(*self.role.borrow(), Role::Link { .. })
    }

    /// Bytes written and not yet taken by the kernel.
    pub(crate) fn buffered_len(&self) -> usize {
        let transport = self.transport.borrow().clone();
        transport.map_or(0, |t| t.buffered_len())
    }

    /// Starts this link connection's session (see `link.rs`): it becomes
    /// the transport's producer in place of a client's `WriteFlow` (a link
    /// never pauses its reading: two servers that both stopped reading
    /// because both write buffers are full would wait forever), and the
    /// catch-up and heartbeat begin.
    pub(crate) fn start_link(self: &Rc<Self>, server: &Server, neighbour: &str) {
        if self.link.borrow().is_some() || self.is_closing() {
            return;
        }
        self.write_paused.set(false);
        self.update_flow();
        let session = LinkSession::start(server, self, neighbour);
        *self.link.borrow_mut() = Some(session);
    }

    /// This link's session, if it started.
    fn session(&self) -> Option<Rc<LinkSession>> {
        self.link.borrow().clone()
    }

    /// Floods `line`, stored with sequence number `seq`, on this link.
    ///
    /// Returns whether it was written now (see [`LinkSession::flood`]).
    pub(crate) fn link_flood(&self, line: &[u8], seq: u64) -> bool {
        self.session()
            .is_some_and(|session| session.flood(line, seq))
    }

    /// Sends the neighbour every location stored from sequence number
    /// `from` on (a catch-up; see `link.rs`).
    pub(crate) fn link_catch_up_from(&self, server: &Server, from: u64) {
        if let Some(session) = self.session() {
            session.catch_up_from_loaded(server, from);
        }
    }

    /// A line arrived on this link; returns whether it was a keep-alive,
    /// with nothing more to do.
    pub(super) fn link_heard(&self, line: &[u8]) -> bool {
        self.session().is_some_and(|s| s.heard(line))
    }

    /// What this link carried so far (`None` before its session starts).
    pub(crate) fn link_counts(&self) -> Option<LinkCounts> {
        self.session().map(|s| s.counts())
    }

    /// The link connection closed: its session stops.
    pub(crate) fn stop_link(&self) {
        let session = self.link.borrow_mut().take();
        if let Some(session) = session {
            session.stop();
        }
    }
}

/// Pauses the line receiver while the transport's write buffer is full (a
/// client that does not read its answers).
pub(super) struct WriteFlow {
    pub(super) conn: Weak<Conn>,
}

impl Producer for WriteFlow {
    fn pause_producing(&self) {
        if let Some(conn) = self.conn.upgrade() {
            conn.write_paused.set(true);
            conn.update_flow();
        }
    }

    fn resume_producing(&self) {
        if let Some(conn) = self.conn.upgrade() {
            conn.write_paused.set(false);
            conn.update_flow();
        }
    }
}
