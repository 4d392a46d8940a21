//! One link connection's session once its neighbour is verified: the
//! catch-up on the whole store, paced by the link's write buffer; the
//! floods; and the heartbeat that finds a link gone silent.
//!
//! [`LinkSession`] is the link transport's one [`Producer`]: the transport
//! pauses and resumes it as its write buffer crosses the marks set from
//! [`ServerOptions::link_high_water`]. The contract (the wire side is in
//! `links.rs`):
//!
//! - **What it sends, in which state** ([`Sync`]). A link starts
//!   `Streaming` from sequence number 0: each step writes the stored
//!   locations from its cursor on (see the [store's
//!   docs](crate::store#sequence-numbers-a-cursor-for-catch-up)) while the
//!   write buffer is at most the high-water mark, so the buffer never holds
//!   more than that plus one line (and a TLS record's framing); then it
//!   waits, for the next loop turn (`call_soon`) if the kernel took the
//!   bytes, or for the transport to resume it if it paused it. One batch
//!   per loop turn: clients keep being served in between, whatever the
//!   store's size. Nothing is copied: the cursor is a number. When the
//!   cursor reaches the end it is `Live`.
//! - **Floods during a catch-up** go out at once when the write buffer is
//!   at most the high-water mark (the neighbour hears fresh news without
//!   waiting for the catch-up), and are otherwise left to the catch-up:
//!   a location stored during it has a sequence number past the cursor, so
//!   the catch-up sends it anyway. Either way it may reach the neighbour
//!   twice; that is harmless, because a neighbour takes only a location
//!   newer than its own and refuses the same line again. The catch-up never
//!   sends an older copy after a flood: it reads the store as it goes, and
//!   the store never goes back.
//! - **A congested link.** A flood on a `Live` link whose write buffer is
//!   above the high-water mark is not written: the link goes back to
//!   `Streaming` from that location's sequence number, which waits for the
//!   buffer to drain and then sends every location stored since (the one
//!   skipped included), not the whole store. Logged once per episode.
//! - **Logging.** HERD.md asks for every line sent to be logged; a live
//!   flood is logged in one entry that names all the neighbours it was
//!   written to and shows the line once (`received from Hamilton (...),
//!   stored and sent to Ball (...), Welsh (...): AT ...`, or at the IAMAT's
//!   server `new location for C, sent to ...: AT ...`; see the server's
//!   `commands.rs`). A catch-up is logged as a summary, when it
//!   starts (why, from which sequence number, how large the store is) and
//!   when it ends (how many locations and bytes, how long): a 200,000-client
//!   store would otherwise write 200,000 log lines per link-up, itself a
//!   disk problem. Keep-alives are not logged either way (one per idle link
//!   per second); a neighbour's first one is, and so is a link closed for
//!   silence.
//! - **Heartbeat.** A check runs every
//!   [`ServerOptions::link_heartbeat_interval`] on the reactor's clock. If
//!   no line was sent since the last check and the write buffer is empty,
//!   it sends the keep-alive line `PING` (also sent once when the link
//!   starts, so the neighbour knows at once that this side beats). If the
//!   neighbour has sent a `PING` on this link (it beats) and no line at all
//!   arrived during the last ⌈`link_dead_after` / interval⌉ checks (at
//!   least 2), the link is closed as dead (aborted: a flush to a dead peer
//!   would never end), logged, and the normal re-dial with back-off takes
//!   over. Counting checks rather than comparing clock readings means a
//!   loop that was itself stalled reads its sockets before it judges.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use gyre_reactor::clock::DelayedCall;
use gyre_reactor::{Producer, Transport};

use super::conn::Conn;
#[cfg(doc)]
use super::options::ServerOptions;
use super::state::Server;
use crate::command;
use crate::metrics::Counter;

/// The keep-alive line (without its `\n`). Older servers log and drop it,
/// as any line on a link that is not `AT`.
pub(crate) const HEARTBEAT_LINE: &[u8] = b"PING";

/// Plaintext written to the transport in one call while catching up (a
/// TLS record's worth), so that the buffer is checked against the
/// high-water mark at least this often.
const CATCH_UP_CHUNK: usize = 16 * 1024;

/// The shortest heartbeat interval (a zero one would spin).
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

/// What one link connection carried so far, for diagnostics and tests
/// ([`HerdServer::link_counts`](super::HerdServer::link_counts)). When
/// both sides' counts of one connection agree (each side received as many
/// lines as the other sent), nothing written on it is still on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkCounts {
    /// Lines received on it, keep-alives included.
    pub lines_received: u64,
    /// Lines written to it (keep-alives, floods and the catch-up's lines),
    /// whether the kernel took them yet or not.
    pub lines_sent: u64,
    /// Bytes of those lines received (line ends included).
    pub bytes_received: u64,
    /// Bytes of those lines written (line ends included).
    pub bytes_sent: u64,
}

/// What a link sends and why.
enum Sync {
    /// Sending the store from `cursor` on, a batch per loop turn.
    Streaming(Stream),
    /// Caught up: every new location is flooded as it is stored.
    Live,
    /// The connection closed (or is closing).
    Stopped,
}

/// A catch-up under way.
struct Stream {
    /// The sequence number to send from (see the store's docs).
    cursor: u64,
    why: Why,
    started: Instant,
    /// Locations and bytes sent so far.
    lines: u64,
    bytes: u64,
    /// A `call_soon` step is queued.
    step_queued: bool,
}

/// Why a catch-up runs.
#[derive(Clone, Copy)]
enum Why {
    /// The link came up: the whole store.
    LinkUp,
    /// A flood was skipped while the neighbour was not reading: everything
    /// stored since.
    Congested,
    /// Locations were loaded in bulk ([`HerdServer::load_locations`]).
    ///
    /// [`HerdServer::load_locations`]: super::HerdServer::load_locations
    Loaded,
}

impl Why {
    fn describe(self) -> &'static str {
        match self {
            Why::LinkUp => "link up",
            Why::Congested => "it drained after not reading",
            Why::Loaded => "locations loaded",
        }
    }
}

/// The transport's view of this producer, as its last call left it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Not paused: a step that finds the buffer above the mark runs again
    /// on the next loop turn (the loop's flush either drains the buffer or
    /// pauses us).
    Producing,
    /// Paused above the high-water mark: `resume_producing` continues.
    Paused,
}

/// Whether the neighbour has shown that it sends keep-alives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerBeat {
    /// No `PING` yet (an older server, or one that just connected): it is
    /// never judged dead for being quiet.
    NotYet,
    /// It sent a `PING`: silence means the link is dead.
    Beating,
}

/// The heartbeat's state.
struct Heartbeat {
    timer: Option<DelayedCall>,
    /// `lines_in` and `lines_out` at the last check.
    seen_in: u64,
    seen_out: u64,
    /// Checks in a row that found no new line received.
    silent_checks: u32,
    peer: PeerBeat,
}

/// One verified link connection's session (see the [module docs](self)).
pub(crate) struct LinkSession {
    me: Weak<LinkSession>,
    conn: Weak<Conn>,
    server: Weak<Server>,
    neighbour: String,
    sync: RefCell<Sync>,
    flow: Cell<Flow>,
    beat: RefCell<Heartbeat>,
    /// Lines received and sent on the link, ever.
    lines_in: Cell<u64>,
    lines_out: Cell<u64>,
    /// Bytes of those lines, line ends included.
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
}

impl LinkSession {
    /// Starts the session of `conn`, a link to `neighbour` that just came
    /// up: becomes its transport's producer, sends the first keep-alive,
    /// starts the catch-up on the whole store and the heartbeat.
    pub(crate) fn start(server: &Server, conn: &Rc<Conn>, neighbour: &str) -> Rc<LinkSession> {
        let session = Rc::new_cyclic(|me| LinkSession {
            me: me.clone(),
            conn: Rc::downgrade(conn),
            server: server.weak(),
            neighbour: neighbour.to_string(),
            sync: RefCell::new(Sync::Live),
            flow: Cell::new(Flow::Producing),
            beat: RefCell::new(Heartbeat {
                timer: None,
                seen_in: 0,
                seen_out: 0,
                silent_checks: 0,
                peer: PeerBeat::NotYet,
            }),
            lines_in: Cell::new(0),
            lines_out: Cell::new(0),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
        });
        if let Some(t) = conn.transport() {
            let high = server.options.link_high_water.max(1);
            t.set_write_buffer_limits(high, high / 4);
            t.register_producer(Rc::clone(&session) as Rc<dyn Producer>);
        }
        session.send_heartbeat(conn);
        // The first check counts from here: with nothing else sent by then,
        // it sends the next keep-alive.
        session.beat.borrow_mut().seen_out = session.lines_out.get();
        session.catch_up_from(server, 0, Why::LinkUp);
        session.schedule_check(server);
        session
    }

    fn transport(&self) -> Option<(Rc<Conn>, Transport)> {
        let conn = self.conn.upgrade()?;
        if conn.is_closing() {
            return None;
        }
        let t = conn.transport()?;
        Some((conn, t))
    }

    /// Stops for good (the connection closed): no more steps or checks.
    pub(crate) fn stop(&self) {
        *self.sync.borrow_mut() = Sync::Stopped;
        let timer = self.beat.borrow_mut().timer.take();
        if let Some(timer) = timer {
            let _ = timer.cancel();
        }
    }

    /// What the link carried so far.
    pub(crate) fn counts(&self) -> LinkCounts {
        LinkCounts {
            lines_received: self.lines_in.get(),
            lines_sent: self.lines_out.get(),
            bytes_received: self.bytes_in.get(),
            bytes_sent: self.bytes_out.get(),
        }
    }

    // -- Catch-up -------------------------------------------------------

    /// Sends every location stored with a sequence number of at least
    /// `from`: starts a catch-up, or moves a running one back to `from`.
    pub(crate) fn catch_up_from_loaded(&self, server: &Server, from: u64) {
        self.catch_up_from(server, from, Why::Loaded);
    }

    fn catch_up_from(&self, server: &Server, from: u64, why: Why) {
        let started = {
            let mut sync = self.sync.borrow_mut();
            match &mut *sync {
                Sync::Stopped => return,
                Sync::Streaming(stream) => {
                    stream.cursor = stream.cursor.min(from);
                    false
                }
                Sync::Live => {
                    *sync = Sync::Streaming(Stream {
                        cursor: from,
                        why,
                        started: server.reactor.clock().now(),
                        lines: 0,
                        bytes: 0,
                        step_queued: false,
                    });
                    true
                }
            }
        };
        if started {
            let (stored, total) = {
                let store = server.store.borrow();
                (store.count_since(from), store.len())
            };
            let peer = self
                .conn
                .upgrade()
                .map_or_else(|| self.neighbour.clone(), |c| c.describe_peer());
            server.log.entry(format_args!(
                "catch-up with {peer} started ({}): {stored} stored location(s) to send \
                 from sequence number {from} (store: {total}), paced by the link's \
                 write buffer; logged as a summary, not line by line",
                why.describe()
            ));
        }
        self.queue_step(server);
    }

    /// Queues a catch-up step for the next loop turn (once).
    fn queue_step(&self, server: &Server) {
        {
            let mut sync = self.sync.borrow_mut();
            let Sync::Streaming(stream) = &mut *sync else {
                return;
            };
            if stream.step_queued {
                return;
            }
            stream.step_queued = true;
        }
        let me = self.me.clone();
        server.reactor.call_soon(move || {
            if let Some(session) = me.upgrade() {
                if let Sync::Streaming(stream) = &mut *session.sync.borrow_mut() {
                    stream.step_queued = false;
                }
                session.step();
            }
        });
    }

    /// Writes the next batch of the catch-up: chunks of stored locations
    /// from the cursor on, while the write buffer is at most the
    /// high-water mark. Then, unless done, waits for the next loop turn or
    /// for the transport to resume it.
    fn step(&self) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let Some((conn, transport)) = self.transport() else {
            return;
        };
        let high = server.options.link_high_water.max(1);
        let mut wrote = false;
        let finished = loop {
            let buffered = transport.buffered_len();
            if buffered > high {
                // Paused (its `resume_producing` continues), or about to
                // be by the loop's next flush, unless that flush drains the
                // buffer: then the next turn's step continues.
                if self.flow.get() == Flow::Producing {
                    self.queue_step(&server);
                }
                break false;
            }
            let Some(cursor) = self.cursor() else {
                return;
            };
            let room = (high + 1 - buffered).min(CATCH_UP_CHUNK);
            let (chunk, next, lines, done) = {
                let store = server.store.borrow();
                let mut chunk = Vec::with_capacity(room + 256);
                let mut next = cursor;
                let mut lines = 0u64;
                let mut done = true;
                for (seq, _, location) in store.since(cursor) {
                    if chunk.len() >= room {
                        done = false;
                        break;
                    }
                    chunk.extend_from_slice(location.at_line());
                    chunk.push(b'\n');
                    next = seq + 1;
                    lines += 1;
                }
                (chunk, next, lines, done)
            };
            if !chunk.is_empty() {
                transport.write(&chunk);
                wrote = true;
                self.lines_out.set(self.lines_out.get() + lines);
                self.bytes_out
                    .set(self.bytes_out.get() + chunk.len() as u64);
                server.metrics.add(Counter::AtSentCatchUp, lines);
            }
            if let Sync::Streaming(stream) = &mut *self.sync.borrow_mut() {
                stream.cursor = next;
                stream.lines += lines;
                stream.bytes += chunk.len() as u64;
            }
            if done {
                break true;
            }
        };
        if finished {
            self.finish(&server, &conn);
        } else if wrote {
            self.queue_step(&server);
        }
    }

    fn cursor(&self) -> Option<u64> {
        match &*self.sync.borrow() {
            Sync::Streaming(stream) => Some(stream.cursor),
            Sync::Live | Sync::Stopped => None,
        }
    }

    /// The catch-up reached the end of the store: the link is live.
    fn finish(&self, server: &Server, conn: &Conn) {
        let stream = match std::mem::replace(&mut *self.sync.borrow_mut(), Sync::Live) {
            Sync::Streaming(stream) => stream,
            other => {
                *self.sync.borrow_mut() = other;
                return;
            }
        };
        let took = server
            .reactor
            .clock()
            .now()
            .saturating_duration_since(stream.started);
        server.log.entry(format_args!(
            "catch-up with {} done ({}): {} location(s), {} bytes sent in {:.3} s; \
             the link is live",
            conn.describe_peer(),
            stream.why.describe(),
            stream.lines,
            stream.bytes,
            took.as_secs_f64()
        ));
    }

    /// Floods `line`, the location stored with sequence number `seq`, on
    /// this link (see the [module docs](self) for each state).
    ///
    /// Returns whether it was written now: the caller logs the flood as one
    /// entry naming the neighbours it went to (a location left to the
    /// catch-up is logged by the catch-up's summary).
    pub(crate) fn flood(&self, line: &[u8], seq: u64) -> bool {
        let Some(server) = self.server.upgrade() else {
            return false;
        };
        let Some((conn, transport)) = self.transport() else {
            return false;
        };
        let high = server.options.link_high_water.max(1);
        let room = transport.buffered_len() <= high;
        let live = match &*self.sync.borrow() {
            Sync::Stopped => return false,
            Sync::Live => true,
            Sync::Streaming(_) => false,
        };
        if room {
            conn.write_line(line);
            self.lines_out.set(self.lines_out.get() + 1);
            self.bytes_out
                .set(self.bytes_out.get() + line.len() as u64 + 1);
            server.metrics.count(Counter::AtSentFlood);
            return true;
        }
        if live {
            server.log.entry(format_args!(
                "{} is not reading ({} bytes unsent, over the link_high_water of {high}): \
                 new locations wait until it drains, then it is sent every location \
                 stored since",
                conn.describe_peer(),
                transport.buffered_len()
            ));
            self.catch_up_from(&server, seq, Why::Congested);
        }
        // Streaming: the location's number is past the cursor, so the
        // catch-up sends it.
        false
    }

    // -- Heartbeat ------------------------------------------------------

    /// A line arrived on the link. Returns whether it was a keep-alive
    /// (then there is nothing more to do with it).
    pub(crate) fn heard(&self, line: &[u8]) -> bool {
        self.lines_in.set(self.lines_in.get() + 1);
        self.bytes_in
            .set(self.bytes_in.get() + line.len() as u64 + 1);
        let mut fields = command::fields(line);
        let is_heartbeat = fields.next() == Some(HEARTBEAT_LINE) && fields.next().is_none();
        if is_heartbeat {
            let first = {
                let mut beat = self.beat.borrow_mut();
                std::mem::replace(&mut beat.peer, PeerBeat::Beating) == PeerBeat::NotYet
            };
            if first {
                if let (Some(server), Some(conn)) = (self.server.upgrade(), self.conn.upgrade()) {
                    let checks = checks_before_dead(&server);
                    server.log.entry(format_args!(
                        "{} sends keep-alives: the link is closed as dead if nothing comes \
                         for {checks} heartbeat checks ({:.3} s, link_dead_after)",
                        conn.describe_peer(),
                        server.options.link_dead_after.as_secs_f64()
                    ));
                }
            }
        }
        is_heartbeat
    }

    fn send_heartbeat(&self, conn: &Conn) {
        conn.write_line(HEARTBEAT_LINE);
        self.lines_out.set(self.lines_out.get() + 1);
        self.bytes_out
            .set(self.bytes_out.get() + HEARTBEAT_LINE.len() as u64 + 1);
    }

    fn schedule_check(&self, server: &Server) {
        let me = self.me.clone();
        let interval = heartbeat_interval(server);
        let timer = server.reactor.call_later(interval, move || {
            if let Some(session) = me.upgrade() {
                session.check();
            }
        });
        let old = self.beat.borrow_mut().timer.replace(timer);
        if let Some(old) = old {
            let _ = old.cancel();
        }
    }

    /// The heartbeat check (see the [module docs](self)).
    fn check(&self) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        if matches!(*self.sync.borrow(), Sync::Stopped) {
            return;
        }
        let Some((conn, transport)) = self.transport() else {
            return;
        };
        let needed = checks_before_dead(&server);
        let (dead, idle) = {
            let mut beat = self.beat.borrow_mut();
            beat.timer = None;
            let lines_in = self.lines_in.get();
            if lines_in == beat.seen_in {
                beat.silent_checks = beat.silent_checks.saturating_add(1);
            } else {
                beat.seen_in = lines_in;
                beat.silent_checks = 0;
            }
            let dead = beat.peer == PeerBeat::Beating && beat.silent_checks >= needed;
            let idle = self.lines_out.get() == beat.seen_out && transport.buffered_len() == 0;
            (dead, idle)
        };
        if dead {
            let silent = heartbeat_interval(&server).saturating_mul(needed);
            server.log.entry(format_args!(
                "no line from {} for {needed} heartbeat checks ({:.3} s; link_dead_after is \
                 {:.3} s): closing the link as dead; re-dialling with back-off",
                conn.describe_peer(),
                silent.as_secs_f64(),
                server.options.link_dead_after.as_secs_f64()
            ));
            self.stop();
            conn.abort();
            return;
        }
        if idle {
            self.send_heartbeat(&conn);
        }
        self.beat.borrow_mut().seen_out = self.lines_out.get();
        self.schedule_check(&server);
    }
}

impl Producer for LinkSession {
    fn pause_producing(&self) {
        // What is sent follows the buffer's length, read where it matters
        // (`step`, `flood`); a paused catch-up waits for the resume.
        self.flow.set(Flow::Paused);
    }

    fn resume_producing(&self) {
        self.flow.set(Flow::Producing);
        if matches!(*self.sync.borrow(), Sync::Streaming(_)) {
            self.step();
        }
    }

    fn stop_producing(&self) {
        self.stop();
    }
}

fn heartbeat_interval(server: &Server) -> Duration {
    server
        .options
        .link_heartbeat_interval
        .max(MIN_HEARTBEAT_INTERVAL)
}

/// How many silent checks in a row make `server`'s links dead.
fn checks_before_dead(server: &Server) -> u32 {
    silent_checks_for(heartbeat_interval(server), server.options.link_dead_after)
}

/// ⌈`dead_after` / `interval`⌉, at least 2 (one check could fall just
/// before a keep-alive arrives); `interval` is at least
/// [`MIN_HEARTBEAT_INTERVAL`].
fn silent_checks_for(interval: Duration, dead_after: Duration) -> u32 {
    let interval = interval.max(MIN_HEARTBEAT_INTERVAL).as_nanos();
    let checks = dead_after.as_nanos().div_ceil(interval).max(2);
    u32::try_from(checks).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_after_is_counted_in_whole_checks_at_least_two() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(silent_checks_for(s(1), s(4)), 4);
        assert_eq!(silent_checks_for(s(1), ms(4500)), 5);
        assert_eq!(silent_checks_for(s(1), ms(1)), 2);
        assert_eq!(silent_checks_for(s(10), s(1)), 2);
        assert_eq!(silent_checks_for(Duration::ZERO, ms(3)), 3);
        assert_eq!(silent_checks_for(ms(1), Duration::MAX), u32::MAX);
    }
}
