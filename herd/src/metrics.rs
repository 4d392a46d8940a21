//! A server's counters: what it did, by command and outcome, every limit
//! hit by name, and its Places lookups (by status, and a latency
//! histogram). The status listener (`status` module) shows them as JSON
//! and in the Prometheus text format.
//!
//! # Contract
//!
//! - Counting costs next to nothing: each counter is a [`Cell<u64>`] in an
//!   array indexed by [`Counter`], bumped with no allocation, no lookup,
//!   no borrow. The server counts whether or not a status listener runs.
//! - Counters only go up (they are Prometheus counters), and wrap at
//!   `u64::MAX` rather than panic.
//! - Places statuses come from a back-end, so they are hostile text: a
//!   status other than a short run of `A-Z`, `0-9` and `_` is counted as
//!   `OTHER`, and at most [`MAX_PLACES_STATUSES`] distinct statuses are
//!   kept (later ones go to `OTHER` too). A status is allocated once, the
//!   first time it is seen.
//!
//! ```
//! use gyre_herd::metrics::{Counter, Metrics};
//! use std::time::Duration;
//!
//! let m = Metrics::new();
//! m.count(Counter::IamatStored);
//! m.count(Counter::IamatStored);
//! m.places_answer("OK", Duration::from_millis(30));
//! assert_eq!(m.get(Counter::IamatStored), 2);
//! assert_eq!(m.places_statuses(), [("OK".to_string(), 1)]);
//! assert_eq!(m.places_latency().count, 1);
//! ```

use std::cell::{Cell, RefCell};
use std::time::Duration;

/// The most distinct Places statuses counted by name (the rest: `OTHER`).
pub const MAX_PLACES_STATUSES: usize = 16;

/// The upper bounds, in seconds, of the Places latency histogram's
/// buckets (a last `+Inf` bucket holds the rest).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a server counts. Each counter belongs to a metric family and has
/// its labels there ([`Counter::family`], [`Counter::labels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// An IAMAT whose location was new: stored and flooded.
    IamatStored,
    /// An IAMAT answered but not newer than the stored location.
    IamatNotNewer,
    /// An IAMAT refused by a limit (client ID length, time ahead, rate).
    IamatRefused,
    /// A WHATSAT for a known client: a Places lookup.
    WhatsatAsked,
    /// A WHATSAT for a client nobody has reported (`?` answer).
    WhatsatUnknownClient,
    /// Any other invalid client line (`?` answer).
    InvalidCommand,
    /// An AT line from a neighbour that was new: stored and flooded on.
    AtReceivedStored,
    /// An AT line from a neighbour that was not newer: dropped.
    AtReceivedDuplicate,
    /// An AT line from a neighbour refused by a limit: dropped.
    AtReceivedRefused,
    /// A line from a neighbour that is not an AT line (nor `PING`).
    LinkLineIgnored,
    /// An AT line sent to a neighbour by a flood.
    AtSentFlood,
    /// An AT line sent to a neighbour by a catch-up.
    AtSentCatchUp,
    /// Limit `max_client_id_length` hit.
    LimitClientIdLength,
    /// Limit `max_time_ahead` hit.
    LimitTimeAhead,
    /// Limit `iamat_rate` hit.
    LimitIamatRate,
    /// Limit `new_client_rate` hit.
    LimitNewClientRate,
    /// Limit `max_connections` reached (accepting paused).
    LimitConnections,
    /// Limit `max_connections_per_address` hit (a connection refused).
    LimitConnectionsPerAddress,
    /// Limit `max_line_length` hit (the connection's input ended).
    LimitLineLength,
    /// Limit `client_idle_timeout` hit (a client connection closed).
    LimitClientIdle,
    /// Connections accepted (clients and neighbours).
    ConnectionsAccepted,
    /// Links that came up.
    LinkUp,
    /// Links that went down.
    LinkDown,
}

impl Counter {
    /// Every counter, in the order they are shown.
    pub const ALL: [Counter; 23] = [
        Counter::IamatStored,
        Counter::IamatNotNewer,
        Counter::IamatRefused,
        Counter::WhatsatAsked,
        Counter::WhatsatUnknownClient,
        Counter::InvalidCommand,
        Counter::AtReceivedStored,
        Counter::AtReceivedDuplicate,
        Counter::AtReceivedRefused,
        Counter::LinkLineIgnored,
        Counter::AtSentFlood,
        Counter::AtSentCatchUp,
        Counter::LimitClientIdLength,
        Counter::LimitTimeAhead,
        Counter::LimitIamatRate,
        Counter::LimitNewClientRate,
        Counter::LimitConnections,
        Counter::LimitConnectionsPerAddress,
        Counter::LimitLineLength,
        Counter::LimitClientIdle,
        Counter::ConnectionsAccepted,
        Counter::LinkUp,
        Counter::LinkDown,
    ];

    /// The metric family (a Prometheus counter name, without the
    /// `herd_` prefix, ending in `_total`).
    pub fn family(self) -> &'static str {
        use Counter::*;
        match self {
            IamatStored | IamatNotNewer | IamatRefused | WhatsatAsked | WhatsatUnknownClient
            | InvalidCommand => "commands_total",
            AtReceivedStored | AtReceivedDuplicate | AtReceivedRefused | LinkLineIgnored => {
                "link_lines_received_total"
            }
            AtSentFlood | AtSentCatchUp => "at_lines_sent_total",
            LimitClientIdLength
            | LimitTimeAhead
            | LimitIamatRate
            | LimitNewClientRate
            | LimitConnections
            | LimitConnectionsPerAddress
            | LimitLineLength
            | LimitClientIdle => "limit_hits_total",
            ConnectionsAccepted => "connections_accepted_total",
            LinkUp | LinkDown => "link_changes_total",
        }
    }

    /// The labels within its family, as `(name, value)` pairs.
    pub fn labels(self) -> &'static [(&'static str, &'static str)] {
        use Counter::*;
        match self {
            IamatStored => &[("command", "IAMAT"), ("outcome", "stored")],
            IamatNotNewer => &[("command", "IAMAT"), ("outcome", "not_newer")],
            IamatRefused => &[("command", "IAMAT"), ("outcome", "refused")],
            WhatsatAsked => &[("command", "WHATSAT"), ("outcome", "asked")],
            WhatsatUnknownClient => &[("command", "WHATSAT"), ("outcome", "unknown_client")],
            InvalidCommand => &[("command", "invalid"), ("outcome", "refused")],
            AtReceivedStored => &[("kind", "AT"), ("outcome", "stored")],
            AtReceivedDuplicate => &[("kind", "AT"), ("outcome", "duplicate")],
            AtReceivedRefused => &[("kind", "AT"), ("outcome", "refused")],
            LinkLineIgnored => &[("kind", "other"), ("outcome", "ignored")],
            AtSentFlood => &[("via", "flood")],
            AtSentCatchUp => &[("via", "catch_up")],
            LimitClientIdLength => &[("limit", "max_client_id_length")],
            LimitTimeAhead => &[("limit", "max_time_ahead")],
            LimitIamatRate => &[("limit", "iamat_rate")],
            LimitNewClientRate => &[("limit", "new_client_rate")],
            LimitConnections => &[("limit", "max_connections")],
            LimitConnectionsPerAddress => &[("limit", "max_connections_per_address")],
            LimitLineLength => &[("limit", "max_line_length")],
            LimitClientIdle => &[("limit", "client_idle_timeout")],
            ConnectionsAccepted => &[],
            LinkUp => &[("state", "up")],
            LinkDown => &[("state", "down")],
        }
    }

    /// What the family counts (the Prometheus `# HELP` text).
    pub fn help(self) -> &'static str {
        match self.family() {
            "commands_total" => "Client commands by command and outcome.",
            "link_lines_received_total" => {
                "Lines received from neighbours (keep-alives excluded) by kind and outcome."
            }
            "at_lines_sent_total" => "AT lines sent to neighbours, by flood or catch-up.",
            "limit_hits_total" => "Times each limit was hit.",
            "connections_accepted_total" => "Connections accepted (clients and neighbours).",
            _ => "Links that came up or went down.",
        }
    }
}

/// The Places latency histogram ([`Metrics::places_latency`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    pub cumulative: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

impl Histogram {
    /// The `q` quantile (0 to 1), estimated as the upper bound of the
    /// bucket it falls in (`None` with no observation; `+Inf` beyond the
    /// last bound).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let i = self.cumulative.iter().position(|&c| c >= rank)?;
        Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

/// When a server last stored a new location (for the flood trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredMark {
    /// The client's time of the location, in nanoseconds since the epoch:
    /// with the origin it identifies one flood across the herd.
    pub client_time_ns: i128,
    /// When this server stored it (its wall clock), in nanoseconds since
    /// the epoch.
    pub stored_at_ns: i128,
    /// Whether it came from a client (the origin) or a neighbour.
    pub from_client: bool,
}

/// A server's counters: see the [module docs](self).
#[derive(Debug)]
pub struct Metrics {
    counters: [Cell<u64>; Counter::ALL.len()],
    latency: [Cell<u64>; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: Cell<u64>,
    statuses: RefCell<Vec<(String, u64)>>,
    last_stored: Cell<Option<StoredMark>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Metrics {
        Metrics {
            counters: std::array::from_fn(|_| Cell::new(0)),
            latency: std::array::from_fn(|_| Cell::new(0)),
            latency_sum_ns: Cell::new(0),
            statuses: RefCell::new(Vec::new()),
            last_stored: Cell::new(None),
        }
    }

    fn index(counter: Counter) -> usize {
        counter as usize
    }

    /// Counts one `counter` event.
    #[inline]
    pub fn count(&self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Counts `n` `counter` events.
    #[inline]
    pub fn add(&self, counter: Counter, n: u64) {
        let c = &self.counters[Self::index(counter)];
        c.set(c.get().wrapping_add(n));
    }

    /// A counter's value.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[Self::index(counter)].get()
    }

    /// Counts a Places answer: its status and how long it took.
    pub fn places_answer(&self, status: &str, elapsed: Duration) {
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| elapsed.as_secs_f64() <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        let c = &self.latency[bucket];
        c.set(c.get().wrapping_add(1));
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns
            .set(self.latency_sum_ns.get().saturating_add(ns));
        let known = status.len() <= 32
            && !status.is_empty()
            && status
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let mut statuses = self.statuses.borrow_mut();
        let key = if known { status } else { "OTHER" };
        if let Some(entry) = statuses.iter_mut().find(|(s, _)| s == key) {
            entry.1 = entry.1.wrapping_add(1);
        } else if statuses.len() < MAX_PLACES_STATUSES {
            statuses.push((key.to_string(), 1));
        } else if let Some(other) = statuses.iter_mut().find(|(s, _)| s == "OTHER") {
            other.1 = other.1.wrapping_add(1);
        } else if let Some(last) = statuses.last_mut() {
            // The table is full and has no OTHER: the last slot becomes it
            // (its count folded in), so the total stays right.
            last.0 = "OTHER".to_string();
            last.1 = last.1.wrapping_add(1);
        }
    }

    /// The Places answers so far by status, in the order first seen.
    pub fn places_statuses(&self) -> Vec<(String, u64)> {
        self.statuses.borrow().clone()
    }

    /// The Places latency histogram.
    pub fn places_latency(&self) -> Histogram {
        let mut total = 0;
        let cumulative = self
            .latency
            .iter()
            .map(|c| {
                total += c.get();
                total
            })
            .collect();
        Histogram {
            cumulative,
            count: total,
            sum_seconds: self.latency_sum_ns.get() as f64 / 1e9,
        }
    }

    /// Records that a new location was stored now.
    #[inline]
    pub fn stored(&self, mark: StoredMark) {
        self.last_stored.set(Some(mark));
    }

    /// The last new location stored, if any.
    pub fn last_stored(&self) -> Option<StoredMark> {
        self.last_stored.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
            assert!(c.family().ends_with("_total"), "{c:?}");
        }
    }

    #[test]
    fn hostile_statuses_are_bounded() {
        let m = Metrics::new();
        m.places_answer("bad \"status\"\n", Duration::ZERO);
        for i in 0..100 {
            m.places_answer(&format!("S{i}"), Duration::from_secs(20));
        }
        let statuses = m.places_statuses();
        assert!(statuses.len() <= MAX_PLACES_STATUSES);
        assert_eq!(statuses.iter().map(|(_, n)| n).sum::<u64>(), 101);
        assert!(statuses.iter().all(|(s, _)| s.len() <= 32));
        let h = m.places_latency();
        assert_eq!(h.count, 101);
        assert_eq!(h.quantile(0.0), Some(0.005));
        assert_eq!(h.quantile(0.99), Some(f64::INFINITY));
    }

    #[test]
    fn quantiles_from_buckets() {
        let m = Metrics::new();
        assert_eq!(m.places_latency().quantile(0.5), None);
        for ms in [1, 2, 3, 40, 40, 40, 40, 40, 40, 900] {
            m.places_answer("OK", Duration::from_millis(ms));
        }
        let h = m.places_latency();
        assert_eq!(h.quantile(0.5), Some(0.05));
        assert_eq!(h.quantile(0.99), Some(1.0));
        assert!((h.sum_seconds - 1.146).abs() < 1e-9);
    }
}
