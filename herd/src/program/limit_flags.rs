//! The herd program's limit options: one flag per limit of the herd
//! README's "Limits" table, in one table ([`FLAGS`]) that parses them,
//! writes their `--help` lines with their defaults, and is checked
//! against the README by a test. Values use the syntaxes of
//! [`values`](super::values): counts `N`, sizes `SIZE`, times `TIME`,
//! rates `RATE`.

use std::time::Duration;

use super::values::{count, format_rate, format_size, format_time, rate, size, time};
use super::UsageError;
use crate::limits::Rate;
use crate::places::{LocalPlacesOptions, PlacesConfig};
use crate::server::ServerOptions;

/// The limit options given on the command line; `None` keeps the default
/// (that of [`ServerOptions`], [`PlacesConfig`] or [`LocalPlacesOptions`]).
///
/// ```
/// use gyre_herd::program::Options;
/// use gyre_herd::ServerOptions;
///
/// let o = Options::parse(["--max-store-bytes", "64MiB", "--iamat-rate=1000/5000"]).unwrap();
/// let server = o.limits.server_options(ServerOptions::default());
/// assert_eq!(server.max_store_bytes, 64 << 20);
/// assert_eq!((server.iamat_rate.per_second, server.iamat_rate.burst), (1000, 5000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOptions {
    /// `--max-line-length SIZE`: [`ServerOptions::max_line_length`].
    pub max_line_length: Option<usize>,
    /// `--max-pending-answers N`: [`ServerOptions::max_pending_answers`].
    pub max_pending_answers: Option<usize>,
    /// `--max-client-id-length SIZE`: [`ServerOptions::max_client_id_length`].
    pub max_client_id_length: Option<usize>,
    /// `--max-time-ahead TIME`: [`ServerOptions::max_time_ahead`].
    pub max_time_ahead: Option<Duration>,
    /// `--client-idle-timeout TIME`: [`ServerOptions::client_idle_timeout`].
    pub client_idle_timeout: Option<Duration>,
    /// `--drain-timeout TIME`: [`ServerOptions::drain_timeout`].
    pub drain_timeout: Option<Duration>,
    /// `--max-clients N`: [`ServerOptions::max_clients`].
    pub max_clients: Option<usize>,
    /// `--max-store-bytes SIZE`: [`ServerOptions::max_store_bytes`].
    pub max_store_bytes: Option<usize>,
    /// `--peer-handshake-timeout TIME`: [`ServerOptions::peer_handshake_timeout`].
    pub peer_handshake_timeout: Option<Duration>,
    /// `--link-heartbeat-interval TIME`:
    /// [`ServerOptions::link_heartbeat_interval`].
    pub link_heartbeat_interval: Option<Duration>,
    /// `--link-dead-after TIME`: [`ServerOptions::link_dead_after`].
    pub link_dead_after: Option<Duration>,
    /// `--link-high-water SIZE`: [`ServerOptions::link_high_water`].
    pub link_high_water: Option<usize>,
    /// `--max-connections N`: [`ServerOptions::max_connections`].
    pub max_connections: Option<usize>,
    /// `--max-connections-per-address N`:
    /// [`ServerOptions::max_connections_per_address`].
    pub max_connections_per_address: Option<usize>,
    /// `--iamat-rate RATE`: [`ServerOptions::iamat_rate`].
    pub iamat_rate: Option<Rate>,
    /// `--new-client-rate RATE`: [`ServerOptions::new_client_rate`].
    pub new_client_rate: Option<Rate>,
    /// `--rate-table-size N`: [`ServerOptions::rate_table_size`].
    pub rate_table_size: Option<usize>,
    /// `--places-timeout TIME`: [`PlacesConfig::timeout`].
    pub places_timeout: Option<Duration>,
    /// `--places-max-in-flight N`: [`PlacesConfig::max_in_flight`] (also
    /// the HTTP client's connections to the Places host).
    pub places_max_in_flight: Option<usize>,
    /// `--places-max-queued N`: [`PlacesConfig::max_queued`] (also the HTTP
    /// client's requests waiting for a connection).
    pub places_max_queued: Option<usize>,
    /// `--places-cache-ttl TIME`: [`PlacesConfig::cache_ttl`].
    pub places_cache_ttl: Option<Duration>,
    /// `--places-cache-entries N`: [`PlacesConfig::cache_entries`].
    pub places_cache_entries: Option<usize>,
    /// `--local-places-handshake-timeout TIME`:
    /// [`LocalPlacesOptions::handshake_timeout`].
    pub local_places_handshake_timeout: Option<Duration>,
    /// `--local-places-idle-timeout TIME`: [`LocalPlacesOptions::idle_timeout`].
    pub local_places_idle_timeout: Option<Duration>,
    /// `--local-places-head-timeout TIME`: [`LocalPlacesOptions::head_timeout`].
    pub local_places_head_timeout: Option<Duration>,
    /// `--local-places-max-connections N`:
    /// [`LocalPlacesOptions::max_connections`].
    pub local_places_max_connections: Option<usize>,
}

/// One limit option: its flag, its value's syntax, what it bounds, its
/// default (as the parser reads it), and how to set it.
pub(super) struct Flag {
    /// The flag, `--max-clients`.
    pub(super) name: &'static str,
    /// The value's syntax: `N`, `SIZE`, `TIME` or `RATE`.
    pub(super) value: &'static str,
    /// What it bounds, for `--help`.
    pub(super) help: &'static str,
    /// The default, written as the parser reads it.
    pub(super) default: fn() -> String,
    /// Parses `value` into the options (`name` is the flag, for errors).
    set: fn(&mut LimitOptions, name: &str, value: &str) -> Result<(), UsageError>,
}

/// A size flag's value as a `usize`.
fn size_usize(name: &str, value: &str, min: u64) -> Result<usize, UsageError> {
    let n = size(name, value, min)?;
    usize::try_from(n).map_err(|_| UsageError(format!("{name}: {value:?} is too large")))
}

fn server() -> ServerOptions {
    ServerOptions::default()
}

fn places() -> PlacesConfig {
    PlacesConfig::default()
}

fn local() -> LocalPlacesOptions {
    LocalPlacesOptions::default()
}

/// Every limit option, in `--help` order.
pub(super) const FLAGS: &[Flag] = &[
    Flag {
        name: "--max-line-length",
        value: "SIZE",
        help: "longest line a client may send",
        default: || format_size(server().max_line_length as u64),
        set: |o, n, v| {
            o.max_line_length = Some(size_usize(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-pending-answers",
        value: "N",
        help: "answers a connection may have waiting before reading stops",
        default: || server().max_pending_answers.to_string(),
        set: |o, n, v| {
            o.max_pending_answers = Some(count(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-client-id-length",
        value: "SIZE",
        help: "longest client ID accepted",
        default: || format_size(server().max_client_id_length as u64),
        set: |o, n, v| {
            o.max_client_id_length = Some(size_usize(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-time-ahead",
        value: "TIME",
        help: "how far ahead of the server's clock a client's time may be",
        default: || format_time(server().max_time_ahead),
        set: |o, n, v| {
            o.max_time_ahead = Some(time(n, v, true)?);
            Ok(())
        },
    },
    Flag {
        name: "--client-idle-timeout",
        value: "TIME",
        help: "a client connection without a complete line is closed",
        default: || format_time(server().client_idle_timeout),
        set: |o, n, v| {
            o.client_idle_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--drain-timeout",
        value: "TIME",
        help: "a graceful stop (SIGTERM) cuts what is still unanswered",
        default: || format_time(server().drain_timeout),
        set: |o, n, v| {
            o.drain_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-clients",
        value: "N",
        help: "locations kept; the oldest is forgotten",
        default: || server().max_clients.to_string(),
        set: |o, n, v| {
            o.max_clients = Some(count(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-store-bytes",
        value: "SIZE",
        help: "store size; the oldest locations are evicted",
        default: || format_size(server().max_store_bytes as u64),
        set: |o, n, v| {
            o.max_store_bytes = Some(size_usize(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--peer-handshake-timeout",
        value: "TIME",
        help: "a link's TLS handshake not finished in time is dropped",
        default: || format_time(server().peer_handshake_timeout),
        set: |o, n, v| {
            o.peer_handshake_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--link-heartbeat-interval",
        value: "TIME",
        help: "an idle link sends PING this often",
        default: || format_time(server().link_heartbeat_interval),
        set: |o, n, v| {
            o.link_heartbeat_interval = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--link-dead-after",
        value: "TIME",
        help: "a link silent this long is closed and re-dialled",
        default: || format_time(server().link_dead_after),
        set: |o, n, v| {
            o.link_dead_after = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--link-high-water",
        value: "SIZE",
        help: "a link's write buffer bound; catch-up and floods wait past it",
        default: || format_size(server().link_high_water as u64),
        set: |o, n, v| {
            o.link_high_water = Some(size_usize(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-connections",
        value: "N",
        help: "accepted connections open; accepting pauses at the limit",
        default: || server().max_connections.to_string(),
        set: |o, n, v| {
            o.max_connections = Some(count(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--max-connections-per-address",
        value: "N",
        help: "connections open from one source address; more are refused",
        default: || server().max_connections_per_address.to_string(),
        set: |o, n, v| {
            o.max_connections_per_address = Some(count(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--iamat-rate",
        value: "RATE",
        help: "IAMATs per second per source address, /burst",
        default: || format_rate(server().iamat_rate),
        set: |o, n, v| {
            o.iamat_rate = Some(rate(n, v)?);
            Ok(())
        },
    },
    Flag {
        name: "--new-client-rate",
        value: "RATE",
        help: "IAMATs naming a new client ID per second per address, /burst",
        default: || format_rate(server().new_client_rate),
        set: |o, n, v| {
            o.new_client_rate = Some(rate(n, v)?);
            Ok(())
        },
    },
    Flag {
        name: "--rate-table-size",
        value: "N",
        help: "source addresses the rate limits remember",
        default: || server().rate_table_size.to_string(),
        set: |o, n, v| {
            o.rate_table_size = Some(count(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--places-timeout",
        value: "TIME",
        help: "one Places request, connect to answer",
        default: || format_time(places().timeout),
        set: |o, n, v| {
            o.places_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--places-max-in-flight",
        value: "N",
        help: "Places requests in flight (and connections to the Places host)",
        default: || places().max_in_flight.to_string(),
        set: |o, n, v| {
            o.places_max_in_flight = Some(count(n, v, 1)?);
            Ok(())
        },
    },
    Flag {
        name: "--places-max-queued",
        value: "N",
        help: "Places requests queued; more get OVER_QUERY_LIMIT at once",
        default: || places().max_queued.to_string(),
        set: |o, n, v| {
            o.places_max_queued = Some(count(n, v, 0)?);
            Ok(())
        },
    },
    Flag {
        name: "--places-cache-ttl",
        value: "TIME",
        help: "how long a Places answer is reused (0: no cache)",
        default: || format_time(places().cache_ttl),
        set: |o, n, v| {
            o.places_cache_ttl = Some(time(n, v, true)?);
            Ok(())
        },
    },
    Flag {
        name: "--places-cache-entries",
        value: "N",
        help: "Places answers cached (0: no cache)",
        default: || places().cache_entries.to_string(),
        set: |o, n, v| {
            o.places_cache_entries = Some(count(n, v, 0)?);
            Ok(())
        },
    },
    Flag {
        name: "--local-places-handshake-timeout",
        value: "TIME",
        help: "local Places service: TLS handshake time-out",
        default: || format_time(local().handshake_timeout),
        set: |o, n, v| {
            o.local_places_handshake_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--local-places-idle-timeout",
        value: "TIME",
        help: "local Places service: idle connection time-out",
        default: || format_time(local().idle_timeout),
        set: |o, n, v| {
            o.local_places_idle_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--local-places-head-timeout",
        value: "TIME",
        help: "local Places service: a request head not complete in time gets 408",
        default: || format_time(local().head_timeout),
        set: |o, n, v| {
            o.local_places_head_timeout = Some(time(n, v, false)?);
            Ok(())
        },
    },
    Flag {
        name: "--local-places-max-connections",
        value: "N",
        help: "local Places service: connections open",
        default: || local().max_connections.to_string(),
        set: |o, n, v| {
            o.local_places_max_connections = Some(count(n, v, 1)?);
            Ok(())
        },
    },
];

/// The limit option called `name`, if it is one.
pub(super) fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.name == name)
}

impl Flag {
    /// Parses `value` for this flag into `options`.
    pub(super) fn apply(&self, options: &mut LimitOptions, value: &str) -> Result<(), UsageError> {
        (self.set)(options, self.name, value)
    }
}

/// The `--help` section of the limit options, one line each with its
/// default.
pub(super) fn usage() -> String {
    let mut text = String::from(
        "Limits (see the herd README's Limits table; default in brackets). N is a
whole number; SIZE is bytes, or with KiB, MiB or GiB (64KiB); TIME is ms, s,
m or h (500ms, 2m), bare numbers being seconds; RATE is PER_SEC[/BURST]
(50/200; the burst defaults to the rate):",
    );
    for flag in FLAGS {
        text.push_str(&format!(
            "\n  {} {} [{}]\n        {}",
            flag.name,
            flag.value,
            (flag.default)(),
            flag.help
        ));
    }
    text
}

impl LimitOptions {
    /// `base` with the limits given on the command line.
    pub fn server_options(&self, base: ServerOptions) -> ServerOptions {
        ServerOptions {
            max_line_length: self.max_line_length.unwrap_or(base.max_line_length),
            max_pending_answers: self.max_pending_answers.unwrap_or(base.max_pending_answers),
            max_client_id_length: self
                .max_client_id_length
                .unwrap_or(base.max_client_id_length),
            max_time_ahead: self.max_time_ahead.unwrap_or(base.max_time_ahead),
            client_idle_timeout: self.client_idle_timeout.unwrap_or(base.client_idle_timeout),
            drain_timeout: self.drain_timeout.unwrap_or(base.drain_timeout),
            max_clients: self.max_clients.unwrap_or(base.max_clients),
            max_store_bytes: self.max_store_bytes.unwrap_or(base.max_store_bytes),
            peer_handshake_timeout: self
                .peer_handshake_timeout
                .unwrap_or(base.peer_handshake_timeout),
            link_heartbeat_interval: self
                .link_heartbeat_interval
                .unwrap_or(base.link_heartbeat_interval),
            link_dead_after: self.link_dead_after.unwrap_or(base.link_dead_after),
            link_high_water: self.link_high_water.unwrap_or(base.link_high_water),
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_connections_per_address: self
                .max_connections_per_address
                .unwrap_or(base.max_connections_per_address),
            iamat_rate: self.iamat_rate.unwrap_or(base.iamat_rate),
            new_client_rate: self.new_client_rate.unwrap_or(base.new_client_rate),
            rate_table_size: self.rate_table_size.unwrap_or(base.rate_table_size),
            ..base
        }
    }

    /// `base` with the Places limits given on the command line.
    pub fn places_config(&self, base: PlacesConfig) -> PlacesConfig {
        PlacesConfig {
            timeout: self.places_timeout.unwrap_or(base.timeout),
            max_in_flight: self.places_max_in_flight.unwrap_or(base.max_in_flight),
            max_queued: self.places_max_queued.unwrap_or(base.max_queued),
            cache_ttl: self.places_cache_ttl.unwrap_or(base.cache_ttl),
            cache_entries: self.places_cache_entries.unwrap_or(base.cache_entries),
            ..base
        }
    }

    /// The local Places service's limits: the defaults with those given on
    /// the command line.
    pub fn local_places_options(&self) -> LocalPlacesOptions {
        let base = LocalPlacesOptions::default();
        LocalPlacesOptions {
            handshake_timeout: self
                .local_places_handshake_timeout
                .unwrap_or(base.handshake_timeout),
            idle_timeout: self.local_places_idle_timeout.unwrap_or(base.idle_timeout),
            head_timeout: self.local_places_head_timeout.unwrap_or(base.head_timeout),
            max_connections: self
                .local_places_max_connections
                .unwrap_or(base.max_connections),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag's value: a distinct non-default one for each.
    fn every_flag_set() -> LimitOptions {
        let mut o = LimitOptions::default();
        for (flag, value) in FLAGS.iter().zip([
            "1KiB",
            "7",
            "100",
            "1m",
            "30s",
            "12s",
            "5000",
            "8MiB",
            "3s",
            "2s",
            "9s",
            "128KiB",
            "99",
            "1000",
            "1000/5000",
            "10/20",
            "16",
            "4s",
            "3",
            "9",
            "5m",
            "11",
            "2s",
            "7s",
            "19s",
            "13",
        ]) {
            flag.apply(&mut o, value)
                .unwrap_or_else(|e| panic!("{}: {e}", flag.name));
        }
        o
    }

    #[test]
    fn every_flag_reaches_its_option() {
        let o = every_flag_set();
        let s = o.server_options(ServerOptions::default());
        assert_eq!(s.max_line_length, 1024);
        assert_eq!(s.max_pending_answers, 7);
        assert_eq!(s.max_client_id_length, 100);
        assert_eq!(s.max_time_ahead, Duration::from_secs(60));
        assert_eq!(s.client_idle_timeout, Duration::from_secs(30));
        assert_eq!(s.drain_timeout, Duration::from_secs(12));
        assert_eq!(s.max_clients, 5000);
        assert_eq!(s.max_store_bytes, 8 << 20);
        assert_eq!(s.peer_handshake_timeout, Duration::from_secs(3));
        assert_eq!(s.link_heartbeat_interval, Duration::from_secs(2));
        assert_eq!(s.link_dead_after, Duration::from_secs(9));
        assert_eq!(s.link_high_water, 128 << 10);
        assert_eq!(s.max_connections, 99);
        assert_eq!(s.max_connections_per_address, 1000);
        assert_eq!(
            s.iamat_rate,
            Rate {
                per_second: 1000,
                burst: 5000
            }
        );
        assert_eq!(
            s.new_client_rate,
            Rate {
                per_second: 10,
                burst: 20
            }
        );
        assert_eq!(s.rate_table_size, 16);
        let p = o.places_config(PlacesConfig::default());
        assert_eq!(p.timeout, Duration::from_secs(4));
        assert_eq!(p.max_in_flight, 3);
        assert_eq!(p.max_queued, 9);
        assert_eq!(p.cache_ttl, Duration::from_secs(300));
        assert_eq!(p.cache_entries, 11);
        let l = o.local_places_options();
        assert_eq!(l.handshake_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(7));
        assert_eq!(l.head_timeout, Duration::from_secs(19));
        assert_eq!(l.max_connections, 13);
    }

    #[test]
    fn no_flag_keeps_every_default() {
        let o = LimitOptions::default();
        let s = o.server_options(ServerOptions::default());
        assert_eq!(format!("{s:?}"), format!("{:?}", ServerOptions::default()));
        let p = o.places_config(PlacesConfig::default());
        assert_eq!(format!("{p:?}"), format!("{:?}", PlacesConfig::default()));
        assert_eq!(o.local_places_options(), LocalPlacesOptions::default());
    }

    #[test]
    fn each_default_parses_back_to_itself() {
        // Setting every flag to its printed default changes nothing.
        let mut o = LimitOptions::default();
        for flag in FLAGS {
            flag.apply(&mut o, &(flag.default)())
                .unwrap_or_else(|e| panic!("{}: {e}", flag.name));
        }
        let s = o.server_options(ServerOptions::default());
        assert_eq!(format!("{s:?}"), format!("{:?}", ServerOptions::default()));
        let p = o.places_config(PlacesConfig::default());
        assert_eq!(format!("{p:?}"), format!("{:?}", PlacesConfig::default()));
        assert_eq!(o.local_places_options(), LocalPlacesOptions::default());
    }

    #[test]
    fn flags_are_distinct_and_documented_in_help_and_readme() {
        let readme = include_str!("../../README.md");
        let help = usage();
        for (i, flag) in FLAGS.iter().enumerate() {
            assert!(
                FLAGS[..i].iter().all(|f| f.name != flag.name),
                "{} twice",
                flag.name
            );
            assert!(
                help.contains(&format!("{} {}", flag.name, flag.value)),
                "{} not in --help",
                flag.name
            );
            assert!(
                readme.contains(&format!("`{} {}`", flag.name, flag.value)),
                "{} {} not in the README's Limits table",
                flag.name,
                flag.value
            );
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        for flag in FLAGS {
            let err = flag
                .apply(&mut LimitOptions::default(), "lots")
                .unwrap_err();
            assert!(err.0.starts_with(flag.name), "{}", err.0);
        }
    }
}
