//! What a server does with each line: client commands (IAMAT, WHATSAT,
//! the first `PEER`), AT lines from links, and the store and flood.

use std::rc::Rc;

use gyre_protocols::LineContext;

use super::answer::whatsat_answer;
use super::conn::{Conn, Role};
use super::lookup::failed_answer;
use super::options::LINK_LINE_SLACK;
use super::peering::PeerLinks;
use super::state::Server;
use crate::command::{self, Command, IAmAt, WhatsAt};
use crate::limits::RateVerdict;
use crate::log::{escape, Escaped};
use crate::metrics::{Counter, StoredMark};
use crate::store::Location;

impl Server {
    /// One line (without `\n`; a `\r` before it is dropped here).
    pub(super) fn line_received(
        &self,
        conn: &Rc<Conn>,
        ctx: Option<&LineContext<'_>>,
        line: &[u8],
    ) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let first = conn.lines.get() == 0;
        conn.lines.set(conn.lines.get() + 1);
        let role = conn.role.borrow().clone();
        match role {
            Role::Link { neighbour, .. } => {
                if conn.link_heard(line) {
                    // A keep-alive: counted by the heartbeat, not logged.
                    return;
                }
                // Logged by `link_line`, with what became of it.
                self.link_line(conn, &neighbour, line);
            }
            Role::Claimed { .. } | Role::Verifying { .. } => {
                self.log.entry(format_args!(
                    "ignored a line from {} before its link was verified: {}",
                    conn.describe_peer(),
                    Escaped(line)
                ));
            }
            Role::Client => {
                conn.last_line_at.set(self.reactor.clock().now());
                self.log.entry(format_args!(
                    "received from {}: {}",
                    conn.peer_text,
                    Escaped(line)
                ));
                self.client_line(conn, ctx, line, first);
            }
        }
    }

    pub(super) fn client_line(
        &self,
        conn: &Rc<Conn>,
        ctx: Option<&LineContext<'_>>,
        line: &[u8],
        first: bool,
    ) {
        match command::parse(line) {
            Ok(Command::IAmAt(iamat)) => self.iamat(conn, line, &iamat),
            Ok(Command::WhatsAt(whatsat)) => self.whatsat(conn, line, &whatsat),
            Ok(Command::Peer(name)) if first => match self.links.neighbour_named(name) {
                Some(neighbour) if matches!(self.peer_links, PeerLinks::Verified(_)) => {
                    // Wait for the next bytes: the neighbour's TLS handshake
                    // (see `after_peer_line`).
                    *conn.role.borrow_mut() = Role::Claimed {
                        neighbour,
                        line: line.to_vec(),
                    };
                    match ctx {
                        Some(ctx) => ctx.set_raw_mode(),
                        None => self.claim_ended(conn),
                    }
                }
                Some(neighbour) => {
                    *conn.role.borrow_mut() = Role::Link {
                        neighbour: neighbour.as_str().into(),
                        dialled: false,
                    };
                    if let Some(ctx) = ctx {
                        ctx.set_max_length(self.options.max_line_length + LINK_LINE_SLACK);
                    }
                    self.links.register(self, conn, &neighbour, false);
                }
                None => {
                    self.metrics.count(Counter::InvalidCommand);
                    self.invalid(conn, line, "PEER names no neighbour")
                }
            },
            Ok(Command::Peer(_)) => {
                self.metrics.count(Counter::InvalidCommand);
                self.invalid(conn, line, "PEER after the first line")
            }
            Ok(Command::At(_)) => {
                self.metrics.count(Counter::InvalidCommand);
                self.invalid(conn, line, "AT from a client")
            }
            Err(e) => {
                self.metrics.count(Counter::InvalidCommand);
                self.invalid(conn, line, &e.to_string())
            }
        }
    }

    pub(super) fn invalid(&self, conn: &Rc<Conn>, line: &[u8], why: &str) {
        self.log
            .entry(format_args!("invalid command from {} ({why})", conn.peer));
        let mut answer = Vec::new();
        command::invalid_answer(line, &mut answer);
        conn.push_ready(answer);
    }

    /// Why a location report (IAMAT, or AT from a neighbour) is refused,
    /// if it is: a client ID over the limit, or a time too far ahead of
    /// `now_ns`.
    pub(super) fn refuse_location(
        &self,
        client: &[u8],
        time_ns: i128,
        now_ns: i128,
    ) -> Option<String> {
        if client.len() > self.options.max_client_id_length {
            self.metrics.count(Counter::LimitClientIdLength);
            return Some(format!(
                "client ID of {} bytes, over the limit of {}",
                client.len(),
                self.options.max_client_id_length
            ));
        }
        let ahead = self.options.max_time_ahead;
        let ahead_ns = i128::try_from(ahead.as_nanos()).unwrap_or(i128::MAX);
        if time_ns > now_ns.saturating_add(ahead_ns) {
            self.metrics.count(Counter::LimitTimeAhead);
            return Some(format!(
                "time more than {}s ahead of this server's clock",
                ahead.as_secs()
            ));
        }
        None
    }

    pub(super) fn iamat(&self, conn: &Rc<Conn>, line: &[u8], iamat: &IAmAt<'_>) {
        let received_ns = command::unix_nanos((self.options.wall_clock)());
        if let Some(why) = self.refuse_location(iamat.client, iamat.time_ns, received_ns) {
            self.metrics.count(Counter::IamatRefused);
            self.invalid(conn, line, &why);
            return;
        }
        if !self.rate_allows(conn, line, iamat.client) {
            return;
        }
        let mut at_line = Vec::new();
        iamat.write_at_line(
            self.name.as_bytes(),
            received_ns - iamat.time_ns,
            &mut at_line,
        );
        let location = Location::new(&at_line[..], iamat.time_ns, iamat.coordinates);
        self.offer_then(iamat.client, location, None, |stored, sent_to| {
            if stored {
                // The flood's line is shown here: it was never received.
                self.log.entry(format_args!(
                    "new location for {}, sent to {sent_to}: {}",
                    Escaped(iamat.client),
                    Escaped(&at_line)
                ));
            } else {
                self.log.entry(format_args!(
                    "not newer than the stored location for {}: not stored nor forwarded",
                    Escaped(iamat.client)
                ));
            }
        });
        at_line.push(b'\n');
        conn.push_ready(at_line);
    }

    /// Applies the per-address IAMAT rate limits; a refused IAMAT is
    /// answered `? ` + the line here (logged once per episode).
    pub(super) fn rate_allows(&self, conn: &Rc<Conn>, line: &[u8], client: &[u8]) -> bool {
        let new_client = self.store.borrow().get(client).is_none();
        let now = self.reactor.clock().now();
        let ip = conn.peer.ip();
        let verdict = self.rates.borrow_mut().check(ip, new_client, now);
        match verdict {
            RateVerdict::Allowed { episode_ended } => {
                if let Some(refused) = episode_ended {
                    self.log.entry(format_args!(
                        "IAMATs from {ip} allowed again ({refused} refused by the rate limit)"
                    ));
                }
                true
            }
            RateVerdict::Refused { first, which } => {
                self.metrics.count(Counter::IamatRefused);
                self.metrics.count(if which == "IAMAT" {
                    Counter::LimitIamatRate
                } else {
                    Counter::LimitNewClientRate
                });
                if first {
                    let rate = if which == "IAMAT" {
                        self.options.iamat_rate
                    } else {
                        self.options.new_client_rate
                    };
                    self.log.entry(format_args!(
                        "rate limit for {which}s from {ip} hit ({}/s, bursts of {}): \
                         answering `?` (logged once until one is allowed again)",
                        rate.per_second, rate.burst
                    ));
                }
                let mut answer = Vec::new();
                command::invalid_answer(line, &mut answer);
                conn.push_ready(answer);
                false
            }
        }
    }

    pub(super) fn whatsat(&self, conn: &Rc<Conn>, line: &[u8], whatsat: &WhatsAt<'_>) {
        let stored = self.store.borrow().get(whatsat.client).cloned();
        let Some(location) = stored else {
            self.metrics.count(Counter::WhatsatUnknownClient);
            self.invalid(conn, line, "WHATSAT for an unknown client");
            return;
        };
        self.metrics.count(Counter::WhatsatAsked);
        let id = conn.push_pending();
        let c = location.coordinates();
        let radius_m = whatsat.radius_km * 1000.0;
        let client = escape(whatsat.client);
        self.log.entry(format_args!(
            "Places request for {client} from {}: lat {} lon {} radius {radius_m} m, at most {}",
            conn.peer, c.lat, c.lon, whatsat.max_results
        ));
        let answer = self
            .places
            .nearby(c.lat, c.lon, radius_m, whatsat.max_results);
        let conn = Rc::clone(conn);
        let server = self.me.clone();
        drop(answer.add_both(move |outcome| {
            let answer = outcome.unwrap_or_else(|failure| failed_answer(&failure.to_string()));
            if let Some(server) = server.upgrade() {
                server.metrics.places_answer(&answer.status, answer.elapsed);
                server.log.entry(format_args!(
                    "Places answer for {client}: {} in {:.3} s: {}",
                    answer.status,
                    answer.elapsed.as_secs_f64(),
                    answer.summary
                ));
            }
            conn.fill(id, whatsat_answer(location.at_line(), &answer.json));
            Ok(())
        }));
    }

    /// A line from a neighbour: processed, then logged as one entry that
    /// says what became of it, the line last (HERD.md's "every line
    /// received", and the flood it caused, in one entry):
    ///
    /// `received from Ball (127.0.0.1:5001), stored and sent to Welsh
    /// (127.0.0.1:5004): AT ...`, `..., not newer than the stored location
    /// (dropped): AT ...`, `..., ignored (why): LINE`.
    pub(super) fn link_line(&self, conn: &Rc<Conn>, neighbour: &str, line: &[u8]) {
        let peer = &conn.peer_text;
        match command::parse(line) {
            Ok(Command::At(at)) => {
                let now_ns = command::unix_nanos((self.options.wall_clock)());
                match self.refuse_location(at.client, at.time_ns, now_ns) {
                    None => self.offer_then(
                        at.client,
                        Location::from_at(&at),
                        Some(neighbour),
                        |stored, sent_to| {
                            if stored {
                                self.log.entry(format_args!(
                                    "received from {neighbour} ({peer}), stored and sent to \
                                     {sent_to}: {}",
                                    Escaped(line)
                                ));
                            } else {
                                self.log.entry(format_args!(
                                    "received from {neighbour} ({peer}), not newer than the \
                                     stored location (dropped): {}",
                                    Escaped(line)
                                ));
                            }
                        },
                    ),
                    Some(why) => {
                        self.metrics.count(Counter::AtReceivedRefused);
                        self.log.entry(format_args!(
                            "received from {neighbour} ({peer}), ignored an AT ({why}): {}",
                            Escaped(line)
                        ))
                    }
                }
            }
            Ok(_) => {
                self.metrics.count(Counter::LinkLineIgnored);
                self.log.entry(format_args!(
                    "received from {neighbour} ({peer}), ignored (not an AT line): {}",
                    Escaped(line)
                ))
            }
            Err(e) => {
                self.metrics.count(Counter::LinkLineIgnored);
                self.log.entry(format_args!(
                    "received from {neighbour} ({peer}), ignored ({e}): {}",
                    Escaped(line)
                ))
            }
        }
    }

    /// [`offer`](Self::offer), then `log(stored, sent_to)`, where `sent_to`
    /// shows the neighbours the flood was written to (the list is built in
    /// a string kept between calls: no allocation per line).
    fn offer_then(
        &self,
        client: &[u8],
        location: Location,
        from: Option<&str>,
        log: impl FnOnce(bool, Flooded<'_>),
    ) {
        let mut sent_to = self.flood_scratch.take();
        sent_to.clear();
        let stored = self.offer(client, location, from, &mut sent_to);
        log(stored, Flooded(&sent_to));
        self.flood_scratch.replace(sent_to);
    }

    /// Stores `location` if it is newer, and floods it to every neighbour
    /// but `from`, appending the neighbours it was sent to now to
    /// `sent_to`. Returns whether it was stored. The caller logs the
    /// outcome (`link_line`, `iamat`).
    fn offer(
        &self,
        client: &[u8],
        location: Location,
        from: Option<&str>,
        sent_to: &mut String,
    ) -> bool {
        // The line the store keeps, shared with the flood (not copied).
        let line = location.shared_line();
        let client_time_ns = location.time_ns();
        let (stored, seq, evictions, len, bytes) = {
            let mut store = self.store.borrow_mut();
            let seq = store.next_seq();
            let before = store.evictions();
            let stored = store.offer(client, location);
            let after = store.evictions();
            // Log the 1st, 10th, 100th, ... eviction: the limit being hit is
            // visible without one log line per evicted client.
            let logged = (before + 1..=after).rfind(|n| is_power_of_ten(*n));
            (stored, seq, logged, store.len(), store.bytes())
        };
        if let Some(n) = evictions {
            self.log.entry(format_args!(
                "store full ({len} clients, {bytes} bytes; limits {} clients, {} bytes): \
                 {n} oldest location(s) evicted so far",
                self.options.max_clients, self.options.max_store_bytes
            ));
        }
        let counter = match (stored, from) {
            (true, None) => Counter::IamatStored,
            (false, None) => Counter::IamatNotNewer,
            (true, Some(_)) => Counter::AtReceivedStored,
            (false, Some(_)) => Counter::AtReceivedDuplicate,
        };
        self.metrics.count(counter);
        if stored {
            self.metrics.stored(StoredMark {
                client_time_ns,
                stored_at_ns: command::unix_nanos((self.options.wall_clock)()),
                from_client: from.is_none(),
            });
            self.links.flood(&line, seq, from, sent_to);
        }
        stored
    }
}

/// The neighbours a flood was written to, as `offer` listed them, or
/// `no neighbour now`.
struct Flooded<'a>(&'a str);

impl std::fmt::Display for Flooded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("no neighbour now")
        } else {
            f.write_str(self.0)
        }
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten() {
        let hits: Vec<u64> = (0..=10_000).filter(|n| is_power_of_ten(*n)).collect();
        assert_eq!(hits, [1, 10, 100, 1000, 10_000]);
    }
}
