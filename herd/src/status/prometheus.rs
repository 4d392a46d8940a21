//! The status document in the Prometheus text exposition format (0.0.4).
//!
//! Hand-written rather than with a crate: the numbers already live in each
//! server's [`Metrics`](crate::metrics::Metrics) (plain `Cell`s, which is
//! what keeps counting free on the hot path) and in its status document,
//! and a client library such as `prometheus-client` would want them moved
//! into its own registry of atomic metrics (a second copy to keep up on
//! every event) or re-wrapped in a custom collector per scrape; the text
//! format itself is a few lines (`# HELP`, `# TYPE`, samples with escaped
//! label values). The tests parse it with an exposition-format parser
//! (`prometheus-parse`) and check every name against the conventions:
//! `herd_` prefix, `_total` on counters, `_seconds` and `_bytes` base
//! units, histograms as `_bucket`/`_sum`/`_count`.

use std::fmt::Write;

use serde_json::Value;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: its samples, in order.
struct Family {
    name: String,
    kind: &'static str,
    help: String,
    samples: Vec<String>,
}

/// Families in the order first named.
#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &'static str, help: &str) -> &mut Family {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    kind,
                    help: help.to_string(),
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// Adds a sample of `family` (its own name, or with a suffix for
    /// histograms) with `labels`.
    fn sample(
        &mut self,
        family: &str,
        kind: &'static str,
        help: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let mut line = format!("{family}{suffix}");
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                let _ = write!(line, "{k}=\"{}\"", escape_label(v));
            }
            line.push('}');
        }
        let _ = write!(line, " {}", number(value));
        self.family(family, kind, help).samples.push(line);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for s in &f.samples {
                out.push_str(s);
                out.push('\n');
            }
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Renders the `/status.json` document (its `servers` and
/// `places_client`) as the exposition text.
pub fn render(status: &Value) -> String {
    let mut e = Exposition::default();
    let empty = Vec::new();
    for server in status["servers"].as_array().unwrap_or(&empty) {
        let name = server["name"].as_str().unwrap_or("");
        let sl = [("server", name)];
        let version = server["version"].as_str().unwrap_or("");
        e.sample(
            "herd_info",
            "gauge",
            "The server, with its version (always 1).",
            "",
            &[("server", name), ("version", version)],
            1.0,
        );
        e.sample(
            "herd_serving",
            "gauge",
            "1 while the server serves, 0 while it drains or after it stopped.",
            "",
            &sl,
            if server["state"] == "serving" {
                1.0
            } else {
                0.0
            },
        );
        if let Some(t) = num(&server["started_at_unix"]) {
            e.sample(
                "herd_start_time_seconds",
                "gauge",
                "When the server started, in seconds since the Unix epoch.",
                "",
                &sl,
                t,
            );
        }
        if let Some(n) = num(&server["connections_open"]) {
            e.sample(
                "herd_connections_open",
                "gauge",
                "Connections open now (clients and neighbours).",
                "",
                &sl,
                n,
            );
        }
        for c in server["counters"].as_array().unwrap_or(&empty) {
            let family = format!("herd_{}", c["family"].as_str().unwrap_or("unknown_total"));
            let mut labels: Vec<(&str, &str)> = vec![("server", name)];
            if let Some(map) = c["labels"].as_object() {
                for (k, v) in map {
                    labels.push((k.as_str(), v.as_str().unwrap_or("")));
                }
            }
            let help = counter_help(&family);
            e.sample(
                &family,
                "counter",
                help,
                "",
                &labels,
                num(&c["value"]).unwrap_or(0.0),
            );
        }
        for link in server["links"].as_array().unwrap_or(&empty) {
            let neighbour = link["neighbour"].as_str().unwrap_or("");
            let ll = [("server", name), ("neighbour", neighbour)];
            e.sample(
                "herd_link_up",
                "gauge",
                "1 while the link with the neighbour is up.",
                "",
                &ll,
                if link["state"] == "up" { 1.0 } else { 0.0 },
            );
            for (dir, lines, bytes) in [
                ("received", "lines_received", "bytes_received"),
                ("sent", "lines_sent", "bytes_sent"),
            ] {
                let l = [
                    ("server", name),
                    ("neighbour", neighbour),
                    ("direction", dir),
                ];
                e.sample(
                    "herd_link_connection_lines_total",
                    "counter",
                    "Lines carried by the link's current connection (reset when it reconnects).",
                    "",
                    &l,
                    num(&link[lines]).unwrap_or(0.0),
                );
                e.sample(
                    "herd_link_connection_bytes_total",
                    "counter",
                    "Bytes carried by the link's current connection (reset when it reconnects).",
                    "",
                    &l,
                    num(&link[bytes]).unwrap_or(0.0),
                );
            }
            e.sample(
                "herd_link_buffered_bytes",
                "gauge",
                "Bytes written to the link and not yet taken by the kernel.",
                "",
                &ll,
                num(&link["buffered_bytes"]).unwrap_or(0.0),
            );
        }
        let store = &server["store"];
        e.sample(
            "herd_store_entries",
            "gauge",
            "Clients with a stored location.",
            "",
            &sl,
            num(&store["entries"]).unwrap_or(0.0),
        );
        e.sample(
            "herd_store_bytes",
            "gauge",
            "The store's size in bytes, as its byte limit counts them.",
            "",
            &sl,
            num(&store["bytes"]).unwrap_or(0.0),
        );
        e.sample(
            "herd_store_evictions_total",
            "counter",
            "Locations evicted by the store's limits.",
            "",
            &sl,
            num(&store["evictions"]).unwrap_or(0.0),
        );
        for (key, metric, help) in [
            (
                "oldest_client_time_unix",
                "herd_store_oldest_client_time_seconds",
                "The oldest stored client time, in seconds since the Unix epoch.",
            ),
            (
                "newest_client_time_unix",
                "herd_store_newest_client_time_seconds",
                "The newest stored client time, in seconds since the Unix epoch.",
            ),
        ] {
            if let Some(t) = num(&store[key]) {
                e.sample(metric, "gauge", help, "", &sl, t);
            }
        }
        let places = &server["places"];
        if let Some(map) = places["answers_by_status"].as_object() {
            for (status, n) in map {
                e.sample(
                    "herd_places_answers_total",
                    "counter",
                    "Places answers for WHATSAT, by status.",
                    "",
                    &[("server", name), ("status", status.as_str())],
                    num(n).unwrap_or(0.0),
                );
            }
        }
        let latency = &places["latency_seconds"];
        let family = "herd_places_request_duration_seconds";
        let help = "How long Places lookups took, in seconds.";
        for b in latency["buckets"].as_array().unwrap_or(&empty) {
            let le = match &b[0] {
                Value::String(s) => s.clone(),
                v => number(num(v).unwrap_or(f64::INFINITY)),
            };
            e.sample(
                family,
                "histogram",
                help,
                "_bucket",
                &[("server", name), ("le", le.as_str())],
                num(&b[1]).unwrap_or(0.0),
            );
        }
        e.sample(
            family,
            "histogram",
            help,
            "_sum",
            &sl,
            num(&latency["sum"]).unwrap_or(0.0),
        );
        e.sample(
            family,
            "histogram",
            help,
            "_count",
            &sl,
            num(&latency["count"]).unwrap_or(0.0),
        );
    }
    let places = &status["places_client"];
    if places.is_object() {
        for (key, metric, help) in [
            (
                "requests",
                "herd_places_client_requests_total",
                "HTTP requests sent to the Places back-end.",
            ),
            (
                "cache_hits",
                "herd_places_client_cache_hits_total",
                "Places lookups answered from the cache.",
            ),
            (
                "shared",
                "herd_places_client_shared_total",
                "Places lookups that joined a request in flight.",
            ),
            (
                "refused",
                "herd_places_client_refused_total",
                "Places lookups refused because the queue was full.",
            ),
        ] {
            e.sample(
                metric,
                "counter",
                help,
                "",
                &[],
                num(&places[key]).unwrap_or(0.0),
            );
        }
        e.sample(
            "herd_places_client_in_flight",
            "gauge",
            "Places requests in flight now.",
            "",
            &[],
            num(&places["in_flight"]).unwrap_or(0.0),
        );
    }
    e.render()
}

fn counter_help(family: &str) -> &'static str {
    crate::metrics::Counter::ALL
        .iter()
        .find(|c| family.strip_prefix("herd_") == Some(c.family()))
        .map_or("A herd counter.", |c| c.help())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
