//! A server's settings beyond its configuration, and their defaults.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use gyre_reactor::defer::Backoff;

#[cfg(doc)]
use crate::limits::REFUSAL_PER_ADDRESS;
use crate::limits::{
    Rate, DEFAULT_IAMAT_RATE, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_NEW_CLIENT_RATE, DEFAULT_RATE_TABLE_SIZE,
};
use crate::pki::{PeerTls, PEER_HANDSHAKE_TIMEOUT};
#[cfg(doc)]
use crate::store::Store;

/// The default longest line a client may send, in bytes (without its `\n`).
pub const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;
/// How much longer than a client's longest line a link's lines may be: an
/// AT line is an IAMAT's fields plus `AT`, a server name (at most 64
/// bytes) and a time difference (at most 32).
pub const LINK_LINE_SLACK: usize = 1024;
/// The default most answers one client connection may have waiting.
pub const DEFAULT_MAX_PENDING_ANSWERS: usize = 64;
/// The default [`ServerOptions::max_clients`]: a million locations, a few
/// hundred MB at most.
pub const DEFAULT_MAX_CLIENTS: usize = 1_000_000;
/// The default [`ServerOptions::max_client_id_length`], in bytes.
pub const DEFAULT_MAX_CLIENT_ID_LENGTH: usize = 256;
/// The default [`ServerOptions::max_time_ahead`]: ten minutes.
pub const DEFAULT_MAX_TIME_AHEAD: Duration = Duration::from_secs(600);
/// The default [`ServerOptions::max_store_bytes`]: 256 MiB.
pub const DEFAULT_MAX_STORE_BYTES: usize = 256 * 1024 * 1024;
/// The default [`ServerOptions::client_idle_timeout`]: two minutes.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default time-out of one attempt to dial a neighbour.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default [`ServerOptions::drain_timeout`]: fifteen seconds, longer
/// than the Places client's time-out (10 s), so that every lookup in
/// flight when a drain starts ends, answered or timed out, before it.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// The default [`ServerOptions::link_heartbeat_interval`]: one second. A
/// keep-alive costs one short line (about 30 bytes with TLS) per idle link
/// per second, nothing beside the floods, and it is what bounds how long a
/// silent partition goes unnoticed: about [`DEFAULT_LINK_DEAD_AFTER`],
/// in the range of the re-dial back-off's 1 s cap, so a healed link is
/// dialled again within about a second of being found dead.
pub const DEFAULT_LINK_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The default [`ServerOptions::link_dead_after`]: four seconds, four
/// heartbeat intervals. A neighbour that sends at least a keep-alive every
/// interval must miss three in a row (a stall of its loop or three
/// seconds of lost packets, well past TCP's first retransmissions at
/// 0.2-1 s) before its link is closed.
pub const DEFAULT_LINK_DEAD_AFTER: Duration = Duration::from_secs(4);
/// The default [`ServerOptions::link_high_water`]: 64 KiB, the reactor's
/// default high-water mark.
pub const DEFAULT_LINK_HIGH_WATER: usize = gyre_reactor::DEFAULT_HIGH_WATER;

/// A server's settings beyond its configuration. The defaults are what
/// HERD.md asks for; tests change them (a slow back-off, a fixed clock).
#[derive(Clone)]
pub struct ServerOptions {
    /// The back-off between attempts to dial a neighbour that is down
    /// (default: 100 ms doubling to at most 1 s, ± 20 % jitter, forever).
    pub backoff: Backoff,
    /// The time-out of one attempt to dial a neighbour (default 5 s).
    pub connect_timeout: Duration,
    /// The longest line a client may send (default 64 KiB).
    pub max_line_length: usize,
    /// The most answers a client connection may have waiting before the
    /// server stops reading it (default 64).
    pub max_pending_answers: usize,
    /// Where the server's receive times come from (default
    /// [`SystemTime::now`]).
    pub wall_clock: Rc<dyn Fn() -> SystemTime>,
    /// The most clients whose location the server keeps (default
    /// 1,000,000); past it, the client with the oldest location is
    /// forgotten (see [`Store::with_limit`](crate::store::Store::with_limit)).
    pub max_clients: usize,
    /// The most bytes the store may hold, as
    /// [`Store::bytes`](crate::store::Store::bytes) counts them (default
    /// [`DEFAULT_MAX_STORE_BYTES`]); past it, the oldest locations are
    /// evicted. Evictions are logged at the 1st, 10th, 100th, ... one.
    pub max_store_bytes: usize,
    /// The longest client ID accepted, in bytes (default
    /// [`DEFAULT_MAX_CLIENT_ID_LENGTH`]). A longer one in an IAMAT gets
    /// `? ` and is logged; in an AT from a neighbour it is ignored and
    /// logged. It bounds what one store entry costs.
    pub max_client_id_length: usize,
    /// How far ahead of this server's clock a client's time may be (default
    /// [`DEFAULT_MAX_TIME_AHEAD`]). A time further ahead would pin the
    /// client's location for good (nothing later could replace it), so an
    /// IAMAT with one gets `? ` and an AT with one is ignored, both logged.
    pub max_time_ahead: Duration,
    /// How long a client connection may go without sending a complete line
    /// while it has no answer pending (default
    /// [`DEFAULT_CLIENT_IDLE_TIMEOUT`]); then it is closed (after what was
    /// already written) and logged. Partial lines do not count as activity,
    /// so a client trickling bytes without a newline (slow-loris) is closed
    /// too. Links to neighbours have no idle time-out (their heartbeat,
    /// [`link_dead_after`](Self::link_dead_after), closes a dead one).
    pub client_idle_timeout: Duration,
    /// How often a link that carried no line checks in (default
    /// [`DEFAULT_LINK_HEARTBEAT_INTERVAL`], 1 s). Every interval each link
    /// is checked: if no line was sent on it since the last check and its
    /// write buffer is empty, the keep-alive line `PING` is sent (see
    /// `links.rs`). At least 1 ms. Every server of a herd should use the
    /// same heartbeat settings: a neighbour whose interval is longer than
    /// this server's [`link_dead_after`](Self::link_dead_after) looks dead
    /// to it.
    pub link_heartbeat_interval: Duration,
    /// How long a link may receive nothing (no line at all, keep-alives
    /// included) before it is closed as dead (default
    /// [`DEFAULT_LINK_DEAD_AFTER`], 4 s); then the normal re-dial with
    /// back-off takes over, and the fresh link's catch-up brings both sides
    /// up to date. Counted in heartbeat checks: the link is dead after
    /// ⌈`link_dead_after` / `link_heartbeat_interval`⌉ (at least 2) checks
    /// in a row found no new line, so a loop that was itself stalled (or a
    /// manual clock advanced in one jump) reads what waits in its sockets
    /// before it judges a neighbour. Only a neighbour that has sent a
    /// keep-alive on the link is judged, so a link to an older server
    /// without heartbeats is never closed for being quiet. Logged when hit.
    pub link_dead_after: Duration,
    /// The high-water mark of a link's write buffer, in bytes (default
    /// [`DEFAULT_LINK_HIGH_WATER`], 64 KiB; the low-water mark is a quarter
    /// of it). The catch-up on the store is written in batches that stop as
    /// soon as the buffer is above it, and floods that find it above it are
    /// not written (they go out with the catch-up that follows once it
    /// drains), so a link holds at most this plus one line (and a TLS
    /// record's framing) however large the store. Logged when a neighbour
    /// stops reading.
    pub link_high_water: usize,
    /// How links to neighbours are authenticated (default
    /// [`PeerTls::InProcess`]: mutual TLS with a CA made in memory for this
    /// process). See [`PeerTls`] and the herd README's Security section.
    pub peer_tls: PeerTls,
    /// How long a neighbour that dialled in has to finish a link's TLS
    /// handshake once it started it (after its `PEER` line), default
    /// [`PEER_HANDSHAKE_TIMEOUT`] (10 s); then the connection is dropped
    /// and logged.
    pub peer_handshake_timeout: Duration,
    /// The most connections accepted and open at once, clients and
    /// neighbours that dialled in (default
    /// [`DEFAULT_MAX_CONNECTIONS`],
    /// 10,000). At the limit the server stops accepting (new connections
    /// wait in the kernel's backlog; the loop does no work for them) until
    /// one closes. Logged once when accepting pauses and once when it
    /// resumes.
    pub max_connections: usize,
    /// The most connections open at once from one source address (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`],
    /// 64). One more is sent
    /// [`REFUSAL_PER_ADDRESS`] and
    /// closed at once; logged once per episode (until one of that
    /// address's connections closes).
    pub max_connections_per_address: usize,
    /// IAMATs per source address (default
    /// [`DEFAULT_IAMAT_RATE`]: 50/s,
    /// bursts of 200). One over it is answered `? ` + the line and changes
    /// nothing; logged once per episode (until one is allowed again).
    pub iamat_rate: Rate,
    /// IAMATs per source address that name a client this server does not
    /// know yet (default
    /// [`DEFAULT_NEW_CLIENT_RATE`]:
    /// 5/s, bursts of 100), so that one address cannot churn the store and
    /// evict everyone else's locations. Refused and logged as
    /// [`iamat_rate`](Self::iamat_rate).
    pub new_client_rate: Rate,
    /// How many source addresses the rate limits remember (default
    /// [`DEFAULT_RATE_TABLE_SIZE`],
    /// 4096); past it, an idle address (full buckets) is forgotten, else the
    /// least recently seen.
    pub rate_table_size: usize,
    /// How long a graceful stop ([`HerdServer::drain`](crate::HerdServer::drain))
    /// may wait for the answers to commands already received (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]). When it passes, the connections still
    /// open are closed without their missing answers, and that is logged.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            backoff: Backoff::default()
                .initial(Duration::from_millis(100))
                .factor(2.0)
                .max_delay(Duration::from_secs(1))
                .max_retries(None)
                .jitter(0.2),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            max_pending_answers: DEFAULT_MAX_PENDING_ANSWERS,
            wall_clock: Rc::new(SystemTime::now),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
            max_client_id_length: DEFAULT_MAX_CLIENT_ID_LENGTH,
            max_time_ahead: DEFAULT_MAX_TIME_AHEAD,
            client_idle_timeout: DEFAULT_CLIENT_IDLE_TIMEOUT,
            link_heartbeat_interval: DEFAULT_LINK_HEARTBEAT_INTERVAL,
            link_dead_after: DEFAULT_LINK_DEAD_AFTER,
            link_high_water: DEFAULT_LINK_HIGH_WATER,
            peer_tls: PeerTls::default(),
            peer_handshake_timeout: PEER_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            iamat_rate: DEFAULT_IAMAT_RATE,
            new_client_rate: DEFAULT_NEW_CLIENT_RATE,
            rate_table_size: DEFAULT_RATE_TABLE_SIZE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_line_length", &self.max_line_length)
            .field("max_pending_answers", &self.max_pending_answers)
            .field("max_clients", &self.max_clients)
            .field("max_store_bytes", &self.max_store_bytes)
            .field("max_client_id_length", &self.max_client_id_length)
            .field("max_time_ahead", &self.max_time_ahead)
            .field("client_idle_timeout", &self.client_idle_timeout)
            .field("link_heartbeat_interval", &self.link_heartbeat_interval)
            .field("link_dead_after", &self.link_dead_after)
            .field("link_high_water", &self.link_high_water)
            .field("peer_tls", &self.peer_tls)
            .field("peer_handshake_timeout", &self.peer_handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("iamat_rate", &self.iamat_rate)
            .field("new_client_rate", &self.new_client_rate)
            .field("rate_table_size", &self.rate_table_size)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_follow_herd_md() {
        let o = ServerOptions::default();
        assert_eq!(o.backoff.max_delay, Duration::from_secs(1));
        assert_eq!(o.backoff.max_retries, None);
        assert!(o.backoff.jitter > 0.0);
        assert_eq!(o.max_line_length, DEFAULT_MAX_LINE_LENGTH);
        assert!(format!("{o:?}").contains("max_pending_answers"));
        assert_eq!(o.link_heartbeat_interval, DEFAULT_LINK_HEARTBEAT_INTERVAL);
        assert!(o.link_dead_after >= 3 * o.link_heartbeat_interval);
        assert_eq!(o.link_high_water, DEFAULT_LINK_HIGH_WATER);
    }
}
