//! What a server reports about itself ([`HerdServer::status`]): the
//! document behind `/status.json` and `/metrics` (see the crate's `status`
//! module for the listener).
//!
//! It never holds the Places API key (the server never sees it) nor a peer
//! credential. A client's ID or location appears only when asked for
//! (`show_clients`), and then at most [`MAX_CLIENTS_SHOWN`] of them.
//! Making it costs a scan of the store (for the oldest and newest client
//! times): O(entries), paid per request to the status listener only.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::handle::HerdServer;
use super::peering::PeerLinks;
use super::state::Life;
use crate::command;
use crate::metrics::{Counter, Metrics, LATENCY_BUCKETS};

/// The most clients listed by a status with `show_clients`.
pub const MAX_CLIENTS_SHOWN: usize = 100;

impl HerdServer {
    /// Its counters (see [`Metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Its status as JSON: name, version, state, uptime, configuration,
    /// each link (state, since when, verified peer identity, lines and
    /// bytes each way, buffered bytes), the store (entries, bytes, oldest
    /// and newest client time), the counters, the Places answers (by
    /// status, with a latency histogram and percentiles) and the last
    /// location stored (for the flood trace). Client IDs and locations
    /// only with `show_clients`.
    pub fn status(&self, show_clients: bool) -> Value {
        let s = &self.inner;
        let now = s.reactor.clock().now();
        let wall_ns = command::unix_nanos((s.options.wall_clock)());
        let to_unix = |at: Instant| -> f64 {
            let ago = now.saturating_duration_since(at);
            (wall_ns - ago.as_nanos() as i128) as f64 / 1e9
        };
        let state = match &*s.life.borrow() {
            Life::Running => "serving",
            Life::Draining(_) => "draining",
            Life::Stopped => "stopped",
        };
        let verified = matches!(s.peer_links, PeerLinks::Verified(_));
        let links: Vec<Value> = s
            .links
            .views()
            .into_iter()
            .map(|l| {
                let counts = l.counts.unwrap_or_default();
                json!({
                    "neighbour": l.neighbour,
                    "state": l.state.name(),
                    "since_unix": l.since.map(to_unix),
                    "for_seconds": l.since.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    // A link is registered only once the neighbour's
                    // certificate (herd CA) names it: that is its identity.
                    "peer_identity": (l.conn.is_some() && verified).then(|| l.neighbour.clone()),
                    "authentication": if verified { "mutual TLS (herd CA)" } else { "none (--insecure-peer-links)" },
                    "peer_addr": l.conn.map(|(a, _)| a.to_string()),
                    "dialled_by_us": l.conn.map(|(_, d)| d),
                    "lines_received": counts.lines_received,
                    "lines_sent": counts.lines_sent,
                    "bytes_received": counts.bytes_received,
                    "bytes_sent": counts.bytes_sent,
                    "buffered_bytes": l.buffered,
                })
            })
            .collect();
        let store = {
            let store = s.store.borrow();
            let (mut oldest, mut newest) = (None::<i128>, None::<i128>);
            for (_, location) in store.iter() {
                let t = location.time_ns();
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            let mut v = json!({
                "entries": store.len(),
                "bytes": store.bytes(),
                "evictions": store.evictions(),
                "max_clients": s.options.max_clients,
                "max_bytes": s.options.max_store_bytes,
                "oldest_client_time_unix": oldest.map(|t| t as f64 / 1e9),
                "newest_client_time_unix": newest.map(|t| t as f64 / 1e9),
            });
            if show_clients {
                let clients: Vec<Value> = store
                    .iter()
                    .take(MAX_CLIENTS_SHOWN)
                    .map(|(_, l)| Value::String(String::from_utf8_lossy(l.at_line()).into_owned()))
                    .collect();
                v["clients"] = Value::Array(clients);
            }
            v
        };
        let counters: Vec<Value> = Counter::ALL
            .iter()
            .map(|&c| {
                let labels: Map<String, Value> = c
                    .labels()
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(*v)))
                    .collect();
                json!({"family": c.family(), "labels": labels, "value": s.metrics.get(c)})
            })
            .collect();
        let latency = s.metrics.places_latency();
        let buckets: Vec<Value> = LATENCY_BUCKETS
            .iter()
            .map(|b| Value::from(*b))
            .chain([Value::from("+Inf")])
            .zip(&latency.cumulative)
            .map(|(le, n)| json!([le, n]))
            .collect();
        let by_status: Map<String, Value> = s
            .metrics
            .places_statuses()
            .into_iter()
            .map(|(k, n)| (k, Value::from(n)))
            .collect();
        let quantile = |q| latency.quantile(q).filter(|v: &f64| v.is_finite());
        let last_stored = s.metrics.last_stored().map(|m| {
            json!({
                "client_time_ns": m.client_time_ns.to_string(),
                "stored_at_unix": m.stored_at_ns as f64 / 1e9,
                "from_client": m.from_client,
            })
        });
        let o = &s.options;
        json!({
            "name": s.name,
            "version": env!("CARGO_PKG_VERSION"),
            "state": state,
            "listen": s.local_addr.to_string(),
            "uptime_seconds": now.saturating_duration_since(s.started).as_secs_f64(),
            "started_at_unix": to_unix(s.started),
            "connections_open": s.conns.borrow().len(),
            "config": {
                "neighbours": s.links.views().into_iter().map(|l| l.neighbour).collect::<Vec<_>>(),
                "peer_links": if verified { "mutual TLS" } else { "insecure" },
                "limits": {
                    "max_line_length": o.max_line_length,
                    "max_pending_answers": o.max_pending_answers,
                    "max_clients": o.max_clients,
                    "max_store_bytes": o.max_store_bytes,
                    "max_client_id_length": o.max_client_id_length,
                    "max_time_ahead_seconds": secs(o.max_time_ahead),
                    "client_idle_timeout_seconds": secs(o.client_idle_timeout),
                    "link_heartbeat_interval_seconds": secs(o.link_heartbeat_interval),
                    "link_dead_after_seconds": secs(o.link_dead_after),
                    "link_high_water": o.link_high_water,
                    "max_connections": o.max_connections,
                    "max_connections_per_address": o.max_connections_per_address,
                    "iamat_rate": format!("{}/{}", o.iamat_rate.per_second, o.iamat_rate.burst),
                    "new_client_rate": format!("{}/{}", o.new_client_rate.per_second, o.new_client_rate.burst),
                    "drain_timeout_seconds": secs(o.drain_timeout),
                },
            },
            "links": links,
            "store": store,
            "counters": counters,
            "places": {
                "answers": latency.count,
                "answers_by_status": by_status,
                "latency_seconds": {
                    "count": latency.count,
                    "sum": latency.sum_seconds,
                    "buckets": buckets,
                    "p50": quantile(0.5),
                    "p90": quantile(0.9),
                    "p99": quantile(0.99),
                },
            },
            "last_stored": last_stored,
        })
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
