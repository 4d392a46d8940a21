//! Limits on clients: connection counts (total and per source address) and
//! per-address IAMAT rate limits. Plain state, no I/O: the server asks and
//! acts (pauses its port, writes a refusal, logs), so every decision here
//! is tested without sockets. The limits and their defaults are listed in
//! the herd README's "Limits" table.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The default [`ServerOptions::max_connections`](crate::ServerOptions::max_connections).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default [`ServerOptions::max_connections_per_address`](crate::ServerOptions::max_connections_per_address).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// The default [`ServerOptions::iamat_rate`](crate::ServerOptions::iamat_rate):
/// 50 a second per source address, in bursts of up to 200.
pub const DEFAULT_IAMAT_RATE: Rate = Rate {
    per_second: 50,
    burst: 200,
};
/// The default [`ServerOptions::new_client_rate`](crate::ServerOptions::new_client_rate):
/// 5 IAMATs a second per source address that make the server learn a new
/// client ID, in bursts of up to 100.
pub const DEFAULT_NEW_CLIENT_RATE: Rate = Rate {
    per_second: 5,
    burst: 100,
};
/// The default [`ServerOptions::rate_table_size`](crate::ServerOptions::rate_table_size).
pub const DEFAULT_RATE_TABLE_SIZE: usize = 4096;

/// What a connection past [`ServerOptions::max_connections_per_address`](crate::ServerOptions::max_connections_per_address)
/// is sent before it is closed.
pub const REFUSAL_PER_ADDRESS: &str = "? too many connections from your address\n";
/// What a connection accepted with the spare descriptor, when the server
/// is out of file descriptors, is sent before it is closed.
pub const REFUSAL_NO_DESCRIPTORS: &str =
    "? server busy (out of file descriptors), try again later\n";

/// A token-bucket rate: `per_second` on average, `burst` at once. A
/// `per_second` of 0 with a `burst` of 0 refuses everything; use a large
/// rate to turn a limit off in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// The most tokens the bucket holds (and a new bucket starts with).
    pub burst: u32,
}

/// A token bucket on the reactor's clock.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.at = now;
    }

    fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.burst)
    }
}

/// One source address's buckets and its episode of refusals.
#[derive(Debug)]
struct AddressRate {
    iamat: Bucket,
    new_client: Bucket,
    last_used: Instant,
    /// IAMATs refused since the episode started (0: no episode).
    refused: u64,
}

/// Whether an IAMAT may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateVerdict {
    Allowed {
        /// An episode of refusals for this address ended with this IAMAT:
        /// how many were refused (log it).
        episode_ended: Option<u64>,
    },
    Refused {
        /// The first refusal of an episode (log it; later ones are not).
        first: bool,
        /// Which limit: "IAMAT" or "new client ID".
        which: &'static str,
    },
}

/// Per-source-address IAMAT rate limits: a bounded table of token buckets.
/// When the table is full, an address whose buckets are full (it would
/// start with full buckets anyway) is forgotten, else the least recently
/// used one.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    iamat: Rate,
    new_client: Rate,
    max_addresses: usize,
    table: HashMap<IpAddr, AddressRate>,
}

impl RateLimiter {
    pub(crate) fn new(iamat: Rate, new_client: Rate, max_addresses: usize) -> RateLimiter {
        RateLimiter {
            iamat,
            new_client,
            max_addresses: max_addresses.max(1),
            table: HashMap::new(),
        }
    }

    /// Checks (and, if allowed, spends) the tokens an IAMAT from `ip` costs
    /// at `now`: one IAMAT token, and one new-client token when it names a
    /// client this server does not know (`new_client`).
    pub(crate) fn check(&mut self, ip: IpAddr, new_client: bool, now: Instant) -> RateVerdict {
        if !self.table.contains_key(&ip) && self.table.len() >= self.max_addresses {
            self.evict(now);
        }
        let (iamat, new_rate) = (self.iamat, self.new_client);
        let entry = self.table.entry(ip).or_insert_with(|| AddressRate {
            iamat: Bucket::full(iamat, now),
            new_client: Bucket::full(new_rate, now),
            last_used: now,
            refused: 0,
        });
        entry.last_used = now;
        entry.iamat.refill(iamat, now);
        entry.new_client.refill(new_rate, now);
        let which = if !entry.iamat.has_token() {
            Some("IAMAT")
        } else if new_client && !entry.new_client.has_token() {
            Some("new client ID")
        } else {
            None
        };
        match which {
            Some(which) => {
                entry.refused += 1;
                RateVerdict::Refused {
                    first: entry.refused == 1,
                    which,
                }
            }
            None => {
                entry.iamat.tokens -= 1.0;
                if new_client {
                    entry.new_client.tokens -= 1.0;
                }
                let refused = std::mem::take(&mut entry.refused);
                RateVerdict::Allowed {
                    episode_ended: (refused > 0).then_some(refused),
                }
            }
        }
    }

    fn evict(&mut self, now: Instant) {
        let (iamat, new_client) = (self.iamat, self.new_client);
        self.table.retain(|_, a| {
            let mut a2 = (a.iamat, a.new_client);
            a2.0.refill(iamat, now);
            a2.1.refill(new_client, now);
            !(a2.0.is_full(iamat) && a2.1.is_full(new_client) && a.refused == 0)
        });
        if self.table.len() >= self.max_addresses {
            let oldest = self
                .table
                .iter()
                .min_by_key(|(_, a)| a.last_used)
                .map(|(ip, _)| *ip);
            if let Some(ip) = oldest {
                self.table.remove(&ip);
            }
        }
    }

    /// How many addresses the table holds (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// Accepted connections, in total and per source address.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    /// Open accepted connections per address, and the connections refused
    /// since the address reached its limit.
    per_address: HashMap<IpAddr, (usize, u64)>,
    /// Accepted connections by connection id, with their address.
    accepted: HashMap<u64, IpAddr>,
    /// Connections refused for their address: they get the refusal line.
    refusing: HashMap<u64, SocketAddr>,
    /// Accepting is paused at the total limit.
    pub(crate) paused: bool,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Serve it. `pause`: it reached the total limit; pause accepting.
    Accept { pause: bool },
    /// Refuse it (its address is at its limit). `first`: the first refusal
    /// of this address's episode (log it).
    RefuseAddress { first: bool },
}

/// What closing an accepted connection changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Released {
    /// Below the total limit again while paused: resume accepting.
    pub(crate) resume: bool,
    /// The address is below its limit again after refusals: how many.
    pub(crate) address_episode_ended: Option<u64>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            total: 0,
            per_address: HashMap::new(),
            accepted: HashMap::new(),
            refusing: HashMap::new(),
            paused: false,
        }
    }

    /// A connection `id` from `peer` was accepted.
    pub(crate) fn admit(&mut self, id: u64, peer: SocketAddr) -> Admission {
        let ip = peer.ip();
        let entry = self.per_address.entry(ip).or_insert((0, 0));
        if entry.0 >= self.max_per_address {
            entry.1 += 1;
            self.refusing.insert(id, peer);
            return Admission::RefuseAddress {
                first: entry.1 == 1,
            };
        }
        entry.0 += 1;
        self.total += 1;
        self.accepted.insert(id, ip);
        let pause = !self.paused && self.total >= self.max_total;
        if pause {
            self.paused = true;
        }
        Admission::Accept { pause }
    }

    /// Whether connection `id` is one to refuse (once: forgets it).
    pub(crate) fn take_refusal(&mut self, id: u64) -> bool {
        self.refusing.remove(&id).is_some()
    }

    /// Connection `id` closed (any connection; those not accepted here are
    /// ignored).
    pub(crate) fn release(&mut self, id: u64) -> Released {
        self.refusing.remove(&id);
        let Some(ip) = self.accepted.remove(&id) else {
            return Released::default();
        };
        self.total -= 1;
        let mut released = Released::default();
        if let Some(entry) = self.per_address.get_mut(&ip) {
            entry.0 -= 1;
            if entry.1 > 0 && entry.0 < self.max_per_address {
                released.address_episode_ended = Some(std::mem::take(&mut entry.1));
            }
            if entry.0 == 0 {
                self.per_address.remove(&ip);
            }
        }
        if self.paused && self.total < self.max_total {
            self.paused = false;
            released.resume = true;
        }
        released
    }

    /// Open accepted connections.
    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(
            Rate {
                per_second: 10,
                burst: 3,
            },
            Rate {
                per_second: 1,
                burst: 2,
            },
            16,
        );
        for _ in 0..3 {
            assert!(matches!(
                r.check(ip(1), false, t0),
                RateVerdict::Allowed { .. }
            ));
        }
        assert_eq!(
            r.check(ip(1), false, t0),
            RateVerdict::Refused {
                first: true,
                which: "IAMAT"
            }
        );
        assert_eq!(
            r.check(ip(1), false, t0),
            RateVerdict::Refused {
                first: false,
                which: "IAMAT"
            }
        );
        // Another address is not affected.
        assert!(matches!(
            r.check(ip(2), true, t0),
            RateVerdict::Allowed { .. }
        ));
        // 100 ms later: one token; the episode ends, with 2 refused.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            r.check(ip(1), false, t1),
            RateVerdict::Allowed {
                episode_ended: Some(2)
            }
        );
    }

    #[test]
    fn new_client_ids_have_their_own_stricter_bucket() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(
            Rate {
                per_second: 100,
                burst: 100,
            },
            Rate {
                per_second: 1,
                burst: 2,
            },
            16,
        );
        assert!(matches!(
            r.check(ip(1), true, t0),
            RateVerdict::Allowed { .. }
        ));
        assert!(matches!(
            r.check(ip(1), true, t0),
            RateVerdict::Allowed { .. }
        ));
        assert_eq!(
            r.check(ip(1), true, t0),
            RateVerdict::Refused {
                first: true,
                which: "new client ID"
            }
        );
        // Updates of known clients still go through.
        assert!(matches!(
            r.check(ip(1), false, t0),
            RateVerdict::Allowed { .. }
        ));
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let rate = Rate {
            per_second: 1,
            burst: 1,
        };
        let mut r = RateLimiter::new(rate, rate, 4);
        for i in 0..100 {
            r.check(ip(i), false, t0 + Duration::from_millis(u64::from(i)));
            assert!(r.len() <= 4);
        }
    }

    #[test]
    fn connection_limits_total_and_per_address() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let mut l = ConnectionLimits::new(3, 2);
        assert_eq!(l.admit(1, a), Admission::Accept { pause: false });
        assert_eq!(l.admit(2, a), Admission::Accept { pause: false });
        assert_eq!(l.admit(3, a), Admission::RefuseAddress { first: true });
        assert_eq!(l.admit(4, a), Admission::RefuseAddress { first: false });
        assert!(l.take_refusal(3));
        assert!(!l.take_refusal(3));
        assert_eq!(l.admit(5, b), Admission::Accept { pause: true });
        assert_eq!(l.total(), 3);
        assert_eq!(l.release(3), Released::default());
        assert_eq!(
            l.release(1),
            Released {
                resume: true,
                address_episode_ended: Some(2)
            }
        );
        assert_eq!(l.admit(6, a), Admission::Accept { pause: true });
    }
}
