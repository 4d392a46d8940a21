//! Issue 10, Done-when 7: bounded Places traffic. A [`PlacesClient`] against
//! a fake legacy Places server on loopback (plain HTTP) that counts its
//! connections and requests and holds every request until the test
//! releases it, so the cap and the queue fill deterministically.
//!
//! Nothing sleeps and nothing asserts on timing; the cache TTL runs on a
//! manual clock.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_herd::places::{PlacesAnswer, PlacesApi, PlacesClient, PlacesConfig};
use gyre_herd::{HerdConfig, HerdServer, ServerLog};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::defer::Deferred;
use gyre_reactor::{factory_fn, ConnectionLost, Protocol, Reactor, Transport};

const BOUND: Duration = Duration::from_secs(60);
const PATH: &str = "/maps/api/place/nearbysearch/json";
const BODY: &str =
    r#"{"html_attributions": [], "results": [{"name": "Royce Hall"}], "status": "OK"}"#;

/// What the fake saw.
#[derive(Default)]
struct Seen {
    accepts: usize,
    open: usize,
    max_open: usize,
    requests: usize,
    /// Requests not answered yet (when holding).
    held: Vec<Transport>,
}

type Shared = Rc<RefCell<Seen>>;

struct Fake {
    seen: Shared,
    hold: bool,
    transport: Option<Transport>,
    buf: Vec<u8>,
}

fn reply(t: &Transport) {
    t.write(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        )
        .as_bytes(),
    );
}

impl Protocol for Fake {
    fn connection_made(&mut self, transport: Transport) {
        let mut seen = self.seen.borrow_mut();
        seen.accepts += 1;
        seen.open += 1;
        seen.max_open = seen.max_open.max(seen.open);
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // GET requests only: no bodies.
        while let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            self.buf.drain(..end + 4);
            let Some(t) = self.transport.clone() else {
                return;
            };
            let mut seen = self.seen.borrow_mut();
            seen.requests += 1;
            if self.hold {
                seen.held.push(t);
            } else {
                reply(&t);
            }
        }
    }

    fn connection_lost(&mut self, _: ConnectionLost) {
        self.seen.borrow_mut().open -= 1;
    }
}

struct FakePlaces {
    addr: SocketAddr,
    seen: Shared,
}

impl FakePlaces {
    fn start(reactor: &Reactor, hold: bool) -> FakePlaces {
        let seen = Shared::default();
        let for_factory = seen.clone();
        let port = reactor
            .listen_tcp(
                "127.0.0.1:0".parse().unwrap(),
                factory_fn(move |_| {
                    Some(Fake {
                        seen: for_factory.clone(),
                        hold,
                        transport: None,
                        buf: Vec::new(),
                    })
                }),
            )
            .unwrap();
        FakePlaces {
            addr: port.local_addr(),
            seen,
        }
    }

    fn config(&self) -> PlacesConfig {
        PlacesConfig {
            api: PlacesApi::Local,
            url: Some(format!("http://{}{PATH}", self.addr)),
            ..PlacesConfig::default()
        }
    }

    /// Answers every request held so far; how many.
    fn release(&self) -> usize {
        let held = std::mem::take(&mut self.seen.borrow_mut().held);
        for t in &held {
            reply(t);
        }
        held.len()
    }
}

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap()
}

fn status(d: &Deferred<PlacesAnswer>) -> String {
    match d.take_result() {
        Some(Ok(answer)) => answer.status,
        other => panic!("no answer: {:?}", other.map(|o| o.map(|a| a.summary))),
    }
}

#[test]
fn a_thousand_identical_lookups_cost_one_request() {
    let reactor = reactor();
    let fake = FakePlaces::start(&reactor, true);
    let client = PlacesClient::new(&reactor, fake.config()).unwrap();
    let answers: Vec<_> = (0..1000)
        .map(|i| {
            // Within the cache grid (1e-4 degrees) of one another.
            let jitter = f64::from(i % 5) * 1e-6;
            client.nearby(34.0729 + jitter, -118.4422, 1000.0, 5)
        })
        .collect();
    let stats = client.stats();
    assert_eq!((stats.requests, stats.shared, stats.in_flight), (1, 999, 1));
    let seen = fake.seen.clone();
    assert!(reactor
        .run_until(|| seen.borrow().held.len() == 1, BOUND)
        .unwrap());
    assert!(answers.iter().all(|d| !d.called()));
    assert_eq!(fake.release(), 1);
    assert!(reactor
        .run_until(|| answers.iter().all(|d| d.called()), BOUND)
        .unwrap());
    assert!(answers.iter().all(|d| status(d) == "OK"));
    // And a thousand more are answered from the cache, at once.
    let again: Vec<_> = (0..1000)
        .map(|_| client.nearby(34.0729, -118.4422, 1000.0, 5))
        .collect();
    assert!(reactor
        .run_until(|| again.iter().all(|d| d.called()), BOUND)
        .unwrap());
    assert!(again.iter().all(|d| status(d) == "OK"));
    let seen = fake.seen.borrow();
    assert_eq!((seen.requests, seen.accepts), (1, 1));
    assert_eq!(client.stats().cache_hits, 1000);
}

#[test]
fn past_the_cap_lookups_queue_and_past_the_queue_get_over_query_limit_at_once() {
    let reactor = reactor();
    let fake = FakePlaces::start(&reactor, true);
    let config = PlacesConfig {
        max_in_flight: 4,
        max_queued: 8,
        ..fake.config()
    };
    let client = PlacesClient::new(&reactor, config).unwrap();
    // Twenty distinct lookups (radii 1 m apart: distinct cache keys).
    let answers: Vec<_> = (0..20)
        .map(|i| client.nearby(34.0729, -118.4422, 100.0 + f64::from(i), 5))
        .collect();
    // The last eight are refused before the loop even runs.
    for d in &answers[..12] {
        assert!(!d.called());
    }
    for d in &answers[12..] {
        assert!(d.called());
        let answer = d.take_result().unwrap().unwrap();
        assert_eq!(answer.status, "OVER_QUERY_LIMIT");
        assert!(
            answer.json.contains("\"status\" : \"OVER_QUERY_LIMIT\""),
            "{}",
            answer.json
        );
        assert!(answer.summary.contains("(not sent)"), "{}", answer.summary);
    }
    let stats = client.stats();
    assert_eq!((stats.in_flight, stats.queued, stats.refused), (4, 8, 8));
    let seen = fake.seen.clone();
    assert!(reactor
        .run_until(|| seen.borrow().held.len() == 4, BOUND)
        .unwrap());
    // Release what arrives until all twelve are answered.
    let mut released = 0;
    while released < 12 {
        let seen = fake.seen.clone();
        assert!(reactor
            .run_until(|| !seen.borrow().held.is_empty(), BOUND)
            .unwrap());
        released += fake.release();
    }
    assert!(reactor
        .run_until(|| answers[..12].iter().all(|d| d.called()), BOUND)
        .unwrap());
    assert!(answers[..12].iter().all(|d| status(d) == "OK"));
    let seen = fake.seen.borrow();
    assert_eq!(seen.requests, 12);
    assert!(seen.max_open <= 4, "{} connections at once", seen.max_open);
    assert!(client.http().open_connections() <= 4);
    // Once the queue has room, lookups are accepted again.
    drop(seen);
    let later = client.nearby(34.0729, -118.4422, 500.0, 5);
    assert!(!later.called());
}

#[test]
fn cached_answers_expire_after_the_ttl_on_the_reactor_clock() {
    let manual = ManualClock::new();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .clock(manual.clock())
        .build()
        .unwrap();
    let fake = FakePlaces::start(&reactor, false);
    let config = PlacesConfig {
        cache_ttl: Duration::from_secs(60),
        cache_entries: 2,
        ..fake.config()
    };
    let client = PlacesClient::new(&reactor, config).unwrap();
    let ask = |lat: f64, max: u32| {
        let d = client.nearby(lat, -118.4422, 1000.0, max);
        assert!(reactor.run_until(|| d.called(), BOUND).unwrap());
        assert_eq!(status(&d), "OK");
    };
    let requests = || fake.seen.borrow().requests;
    ask(34.0729, 5);
    assert_eq!(requests(), 1);
    ask(34.07291, 5); // about 1 m away: the same key
    assert_eq!(requests(), 1);
    ask(34.0729, 6); // another result bound: another key
    assert_eq!(requests(), 2);
    manual.advance(Duration::from_secs(59));
    ask(34.0729, 5);
    assert_eq!(requests(), 2);
    manual.advance(Duration::from_secs(1));
    ask(34.0729, 5); // expired: asked again
    assert_eq!(requests(), 3);
    // Bounded: a third key evicts the oldest (the bound-6 answer).
    ask(35.0, 5);
    assert_eq!(requests(), 4);
    assert_eq!(client.stats().cached, 2);
    ask(34.0729, 6);
    assert_eq!(requests(), 5);
}

/// Done-when 7 end to end: 1,000 WHATSATs for one client, on 20
/// connections, against a Places back-end that holds its requests, make one
/// Places connection and one request, and all get the answer.
#[test]
fn a_thousand_whatsats_for_one_client_make_one_places_request() {
    let reactor = reactor();
    let fake = FakePlaces::start(&reactor, true);
    let places = PlacesClient::new(&reactor, fake.config()).unwrap();
    let config = HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0}]}"#,
    )
    .unwrap();
    let server = HerdServer::start(
        &reactor,
        "Alford",
        &config,
        places.clone(),
        ServerLog::discard(),
    )
    .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut clients = Vec::new();
    for i in 0..20 {
        let received = Rc::new(RefCell::new(Vec::new()));
        let d = reactor.connect_protocol(server.local_addr(), Collect(received.clone()));
        assert!(reactor.run_until(|| d.called(), BOUND).unwrap());
        let t = d.take_result().unwrap().unwrap();
        if i == 0 {
            t.write(format!("IAMAT kiwi +34.0729-118.4422 {now}\n").as_bytes());
            let r = received.clone();
            assert!(reactor
                .run_until(|| r.borrow().ends_with(b"\n"), BOUND)
                .unwrap());
            r.borrow_mut().clear();
        }
        clients.push((t, received));
    }
    for (t, _) in &clients {
        t.write("WHATSAT kiwi 1 5\n".repeat(50).as_bytes());
    }
    let seen = fake.seen.clone();
    let p = places.clone();
    assert!(reactor
        .run_until(
            || seen.borrow().held.len() == 1 && p.stats().shared == 999,
            BOUND
        )
        .unwrap());
    assert_eq!(fake.release(), 1);
    let answers = |r: &Rc<RefCell<Vec<u8>>>| {
        String::from_utf8_lossy(&r.borrow())
            .matches("Royce Hall")
            .count()
    };
    assert!(reactor
        .run_until(|| clients.iter().all(|(_, r)| answers(r) == 50), BOUND)
        .unwrap());
    let seen = fake.seen.borrow();
    assert_eq!((seen.accepts, seen.requests), (1, 1));
    server.stop();
}

struct Collect(Rc<RefCell<Vec<u8>>>);

impl Protocol for Collect {
    fn connection_made(&mut self, _: Transport) {}

    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().extend_from_slice(data);
    }

    fn connection_lost(&mut self, _: ConnectionLost) {}
}
