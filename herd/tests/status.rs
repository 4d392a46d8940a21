//! The status listener against what really happened: two servers with
//! verified links on a manual clock, a client that reports a location and
//! sends a bad line, a WHATSAT whose Places back-end (with an API key) is
//! unreachable, a neighbour that stops. `/status.json` must tell it,
//! `/metrics` must parse as the Prometheus text format and follow its
//! naming conventions, and neither may show a client or the key unless
//! asked.
//!
//! Every wait is `run_until` an event, bounded by [`WAIT`]; time moves
//! only when the test advances the manual clock.

use std::cell::RefCell;
use std::io::Write;
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_herd::pki::HerdCa;
use gyre_herd::places::{PlacesApi, PlacesClient, PlacesConfig};
use gyre_herd::status::{StatusOptions, StatusServer};
use gyre_herd::{HerdConfig, HerdServer, PeerTls, ServerLog, ServerOptions};
use gyre_protocols::http::{HttpClient, Request, Response};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::Reactor;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "SECRET-KEY-5d41402abc4b2a76";
const CLIENT: &str = "kiwi.status.test";
const COORDS: &str = "+34.068930-118.445127";

struct Herd {
    reactor: Reactor,
    clock: ManualClock,
    a: HerdServer,
    b: HerdServer,
    status: StatusServer,
    http: HttpClient,
}

fn herd() -> Herd {
    let clock = ManualClock::new();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .clock(clock.clock())
        .build()
        .unwrap();
    let mut config = HerdConfig::from_json(
        r#"{"servers": [{"name": "A", "host": "127.0.0.1", "port": 0},
                        {"name": "B", "host": "127.0.0.1", "port": 0}],
            "links": [["A", "B"]]}"#,
    )
    .unwrap();
    // A Places back-end that is not there, with a key that must never show.
    let places = PlacesClient::new(
        &reactor,
        PlacesConfig {
            api: PlacesApi::GoogleLegacy,
            url: Some("https://127.0.0.1:1/maps/api/place/nearbysearch/json".to_string()),
            api_key: Some(KEY.to_string()),
            ..PlacesConfig::default()
        },
    )
    .unwrap();
    let ca = HerdCa::generate().unwrap();
    let mut servers = Vec::new();
    for name in ["A", "B"] {
        let options = ServerOptions {
            peer_tls: PeerTls::Verified(ca.credentials(name).unwrap()),
            ..ServerOptions::default()
        };
        let server = HerdServer::bind(
            &reactor,
            name,
            &config,
            places.clone(),
            ServerLog::memory(),
            options,
        )
        .unwrap();
        config.set_port(name, server.local_addr().port()).unwrap();
        servers.push(server);
    }
    for s in &servers {
        s.connect_neighbours(&config).unwrap();
    }
    let status = StatusServer::start(
        &reactor,
        servers.clone(),
        Some(places),
        StatusOptions::new("127.0.0.1:0".parse().unwrap(), config),
    )
    .unwrap();
    let http = HttpClient::new(&reactor);
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let herd = Herd {
        reactor,
        clock,
        a,
        b,
        status,
        http,
    };
    let (a, b) = (&herd.a, &herd.b);
    assert!(herd
        .reactor
        .run_until(|| a.links_up() == ["B"] && b.links_up() == ["A"], WAIT)
        .unwrap());
    herd
}

impl Herd {
    fn get(&self, path: &str, origin: Option<&str>) -> Response {
        let url = format!("http://{}{path}", self.status.local_addr());
        let mut request = Request::get(url);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let slot: Rc<RefCell<Option<Result<Response, String>>>> = Rc::default();
        let fill = Rc::clone(&slot);
        drop(self.http.request(request).add_both(move |r| {
            *fill.borrow_mut() = Some(r.map_err(|f| f.to_string()));
            Ok(())
        }));
        assert!(self
            .reactor
            .run_until(|| slot.borrow().is_some(), WAIT)
            .unwrap());
        let answer = slot.borrow_mut().take().unwrap();
        answer.unwrap()
    }

    fn status(&self) -> (Value, String) {
        let response = self.get("/status.json", None);
        assert_eq!(response.status, 200);
        let text = response.text().into_owned();
        (serde_json::from_str(&text).unwrap(), text)
    }

    fn metrics(&self) -> String {
        let response = self.get("/metrics", None);
        assert_eq!(response.status, 200);
        assert!(response
            .header_str("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        response.text().into_owned()
    }
}

fn server<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn counter(server: &Value, family: &str, labels: &[(&str, &str)]) -> u64 {
    server["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["family"] == family)
        .filter(|c| labels.iter().all(|(k, v)| c["labels"][*k] == *v))
        .map(|c| c["value"].as_u64().unwrap())
        .sum()
}

fn link<'a>(server: &'a Value, neighbour: &str) -> &'a Value {
    server["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["neighbour"] == neighbour)
        .unwrap()
}

/// A client reports a location and sends one bad line to A.
fn client_reports(herd: &Herd) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let time = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let mut client = TcpStream::connect(herd.a.local_addr()).unwrap();
    write!(
        client,
        "IAMAT {CLIENT} {COORDS} {time}\nBOGUS line\nWHATSAT {CLIENT} 10 5\n"
    )
    .unwrap();
    let (a, b) = (&herd.a, &herd.b);
    assert!(herd
        .reactor
        .run_until(
            || a.location(CLIENT.as_bytes()).is_some()
                && b.location(CLIENT.as_bytes()).is_some()
                && !a.metrics().places_statuses().is_empty(),
            WAIT
        )
        .unwrap());
    // Keep the client connection open until the test ends.
    std::mem::forget(client);
    time.parse().unwrap()
}

#[test]
fn status_json_tells_what_happened() {
    let herd = herd();
    let time = client_reports(&herd);
    // Both sides of the link agree on what crossed it.
    let (a, b) = (&herd.a, &herd.b);
    assert!(herd
        .reactor
        .run_until(
            || {
                let (x, y) = (a.link_counts("B"), b.link_counts("A"));
                matches!((x, y), (Some(x), Some(y))
                    if x.lines_sent == y.lines_received && y.lines_sent == x.lines_received)
            },
            WAIT
        )
        .unwrap());
    herd.clock.advance(Duration::from_secs(3));
    let (doc, text) = herd.status();
    let sa = server(&doc, "A");
    let sb = server(&doc, "B");
    assert_eq!(sa["state"], "serving");
    assert_eq!(sa["version"], env!("CARGO_PKG_VERSION"));
    assert!(sa["uptime_seconds"].as_f64().unwrap() >= 3.0);
    // Commands by outcome.
    assert_eq!(
        counter(
            sa,
            "commands_total",
            &[("command", "IAMAT"), ("outcome", "stored")]
        ),
        1
    );
    assert_eq!(counter(sa, "commands_total", &[("command", "invalid")]), 1);
    assert_eq!(
        counter(
            sa,
            "commands_total",
            &[("command", "WHATSAT"), ("outcome", "asked")]
        ),
        1
    );
    assert_eq!(counter(sb, "commands_total", &[]), 0);
    // The flood: A sent it, B stored it from the link.
    assert_eq!(counter(sa, "at_lines_sent_total", &[]), 1);
    assert_eq!(
        counter(
            sb,
            "link_lines_received_total",
            &[("kind", "AT"), ("outcome", "stored")]
        ),
        1
    );
    assert_eq!(sb["last_stored"]["from_client"], false);
    assert_eq!(sa["last_stored"]["from_client"], true);
    assert_eq!(
        sa["last_stored"]["client_time_ns"],
        sb["last_stored"]["client_time_ns"]
    );
    // The links: up, verified, since the clock moved, lines as counted.
    let ab = link(sa, "B");
    let ba = link(sb, "A");
    assert_eq!(ab["state"], "up");
    assert_eq!(ab["peer_identity"], "B");
    assert_eq!(ba["peer_identity"], "A");
    assert!(ab["for_seconds"].as_f64().unwrap() >= 3.0);
    let counts = herd.a.link_counts("B").unwrap();
    assert_eq!(ab["lines_sent"], counts.lines_sent);
    assert_eq!(ab["lines_sent"], ba["lines_received"]);
    assert_eq!(ab["bytes_sent"], ba["bytes_received"]);
    assert!(ab["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(counter(sa, "link_changes_total", &[("state", "up")]), 1);
    // The store.
    for s in [sa, sb] {
        assert_eq!(s["store"]["entries"], 1);
        assert!(s["store"]["bytes"].as_u64().unwrap() > 0);
        let newest = s["store"]["newest_client_time_unix"].as_f64().unwrap();
        assert!((newest - time).abs() < 1e-3, "{newest} vs {time}");
    }
    // Places: one answer, a failure, timed.
    assert_eq!(sa["places"]["answers"], 1);
    assert_eq!(sa["places"]["latency_seconds"]["count"], 1);
    assert!(doc["places_client"]["requests"].as_u64().unwrap() >= 1);
    // No client, no key.
    assert!(!text.contains(CLIENT), "{text}");
    assert!(!text.contains(COORDS));
    assert!(!text.contains(KEY));
    assert!(sa["store"].get("clients").is_none());
    let metrics = herd.metrics();
    assert!(!metrics.contains(CLIENT) && !metrics.contains(COORDS) && !metrics.contains(KEY));
    let page = herd.get("/", None).text().into_owned();
    assert!(!page.contains(KEY));
    // Asked for, the clients show (still no key).
    let shown = herd.a.status(true).to_string();
    assert!(shown.contains(CLIENT) && shown.contains(COORDS));
    assert!(!shown.contains(KEY));

    // B stops: A's link goes down, and says so.
    herd.b.stop();
    assert!(herd
        .reactor
        .run_until(|| herd.a.links_up().is_empty(), WAIT)
        .unwrap());
    let (doc, _) = herd.status();
    let sa = server(&doc, "A");
    assert_ne!(link(sa, "B")["state"], "up");
    assert_eq!(link(sa, "B")["peer_identity"], Value::Null);
    assert_eq!(counter(sa, "link_changes_total", &[("state", "down")]), 1);
    // B is stopped: not healthy.
    assert_eq!(server(&doc, "B")["state"], "stopped");
    assert_eq!(herd.get("/healthz", None).status, 503);
}

#[test]
fn healthz_and_cors() {
    let herd = herd();
    let ok = herd.get("/healthz", None);
    assert_eq!(ok.status, 200);
    assert_eq!(herd.get("/nothing", None).status, 404);
    let own = format!("http://{}", herd.status.local_addr());
    let allowed = herd.get("/status.json", Some(&own));
    assert_eq!(
        allowed.header_str("Access-Control-Allow-Origin"),
        Some(own.as_str())
    );
    let evil = herd.get("/status.json", Some("http://evil.example"));
    assert_eq!(evil.header_str("Access-Control-Allow-Origin"), None);
    let page = herd.get("/", None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<svg id=\"graph\""));
    // Self-contained: nothing loaded from elsewhere.
    assert!(!page.text().contains("src=\"http"));
    assert!(!page.text().contains("href=\"http"));
}

/// Every metric name follows the Prometheus conventions, and the text
/// parses with an exposition-format parser.
#[test]
fn metrics_parse_and_follow_conventions() {
    let herd = herd();
    client_reports(&herd);
    let text = herd.metrics();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses");
    assert!(!scrape.samples.is_empty());
    // Every family is typed once, before its samples, and named by the
    // conventions.
    let mut types: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(!types.iter().any(|(n, _)| n == name), "{name} typed twice");
            types.push((name.to_string(), kind.to_string()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let typed = types.iter().any(|(n, k)| {
                n == name
                    || (k == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(n)))
            });
            assert!(typed, "{name} has no TYPE before it");
        }
    }
    for (name, kind) in &types {
        assert!(name.starts_with("herd_"), "{name}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "histogram {name}"),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name}"),
            other => panic!("{name}: unexpected type {other}"),
        }
        // Base units only.
        for bad in ["_ms", "milli", "_kb", "_mb", "minutes", "_percent"] {
            assert!(!name.contains(bad), "{name} is not in base units");
        }
    }
    // The numbers are the status's numbers.
    let stored = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "herd_commands_total"
                && s.labels.get("server") == Some("A")
                && s.labels.get("command") == Some("IAMAT")
                && s.labels.get("outcome") == Some("stored")
        })
        .expect("the IAMAT counter");
    assert!(matches!(stored.value, prometheus_parse::Value::Counter(v) if v == 1.0));
    let up = scrape
        .samples
        .iter()
        .find(|s| s.metric == "herd_link_up" && s.labels.get("server") == Some("B"))
        .unwrap();
    assert!(matches!(up.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
    assert!(
        text.contains("herd_places_request_duration_seconds_bucket{server=\"A\",le=\"+Inf\"} 1")
    );
    assert!(text.contains("herd_places_request_duration_seconds_count{server=\"A\"} 1"));
}

#[test]
fn non_loopback_status_needs_the_flag() {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let mut options = StatusOptions::new("0.0.0.0:0".parse().unwrap(), HerdConfig::default());
    let err = StatusServer::start(&reactor, Vec::new(), None, options.clone())
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("--status-allow-remote"));
    options.addr = "[::]:0".parse().unwrap();
    assert!(StatusServer::start(&reactor, Vec::new(), None, options).is_err());
}
