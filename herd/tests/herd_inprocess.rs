//! Herd servers over real loopback sockets, all in one reactor, with a fake
//! Places service. Servers listen on free ports (port 0): each test binds
//! every server first, records the real ports in its configuration, and
//! only then lets the servers dial each other.
//!
//! Every wait is bounded ([`WAIT`]) and waits for the event that matters;
//! nothing sleeps and nothing asserts on timing.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_herd::places::PlacesAnswer;
use gyre_herd::server::whatsat_answer;
use gyre_herd::{HerdConfig, HerdServer, PlacesLookup, ServerLog, ServerOptions};
use gyre_reactor::defer::{succeed, Deferred, Failure, Resolver};
use gyre_reactor::{ConnectionLost, Protocol, Reactor, Transport};

const WAIT: Duration = Duration::from_secs(20);

/// Places JSON as a back-end might send it: blank lines inside, newlines
/// at the end.
const FAKE_JSON: &str = "{\n   \"html_attributions\" : [],\n\n\n   \"results\" : [\n      {\n         \"name\" : \"Royce Hall\"\n      }\n   ],\n\n   \"status\" : \"OK\"\n}\n\n";
/// What a client must get: every run of newlines collapsed, none at the end.
const FAKE_JSON_ON_THE_WIRE: &str = "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"name\" : \"Royce Hall\"\n      }\n   ],\n   \"status\" : \"OK\"\n}";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// Answers at once.
    Fast,
    /// Answers when the test calls `answer_pending`.
    Slow,
    /// The Deferred fails.
    Fail,
}

/// A Places service that records its calls.
struct FakePlaces {
    mode: Cell<Mode>,
    pending: RefCell<Vec<Resolver<PlacesAnswer>>>,
    calls: RefCell<Vec<(f64, f64, f64, u32)>>,
}

impl FakePlaces {
    fn new() -> Rc<FakePlaces> {
        Rc::new(FakePlaces {
            mode: Cell::new(Mode::Fast),
            pending: RefCell::new(Vec::new()),
            calls: RefCell::new(Vec::new()),
        })
    }

    fn answer() -> PlacesAnswer {
        PlacesAnswer {
            json: FAKE_JSON.to_string(),
            status: "OK".to_string(),
            elapsed: Duration::from_millis(1),
            summary: "fake Places: 1 result".to_string(),
        }
    }

    /// Fires every pending (slow) lookup.
    fn answer_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for d in pending {
            d.callback(FakePlaces::answer()).unwrap();
        }
    }
}

impl PlacesLookup for FakePlaces {
    fn nearby(&self, lat: f64, lon: f64, radius_m: f64, max: u32) -> Deferred<PlacesAnswer> {
        self.calls.borrow_mut().push((lat, lon, radius_m, max));
        match self.mode.get() {
            Mode::Fast => succeed(FakePlaces::answer()),
            Mode::Slow => {
                let (r, d) = Deferred::new();
                self.pending.borrow_mut().push(r);
                d
            }
            Mode::Fail => {
                gyre_reactor::defer::fail(Failure::msg("the fake Places service is down"))
            }
        }
    }
}

/// A client connection that records what it receives.
#[derive(Clone, Default)]
struct Received {
    data: Rc<RefCell<Vec<u8>>>,
    eof: Rc<Cell<bool>>,
    closed: Rc<Cell<bool>>,
}

struct Recorder(Received);

impl Protocol for Recorder {
    fn data_received(&mut self, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.0.eof.set(true);
        false
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.0.closed.set(true);
    }
}

struct Client {
    reactor: Reactor,
    received: Received,
    transport: Transport,
}

impl Client {
    fn connect(reactor: &Reactor, addr: SocketAddr) -> Client {
        let received = Received::default();
        let d = reactor.connect_protocol(addr, Recorder(received.clone()));
        assert!(
            reactor.run_until(|| d.called(), WAIT).unwrap(),
            "connect to {addr}"
        );
        let transport = d.take_result().unwrap().unwrap();
        Client {
            reactor: reactor.clone(),
            received,
            transport,
        }
    }

    fn send(&self, data: &[u8]) {
        self.transport.write(data);
    }

    fn half_close(&self) {
        self.transport.half_close();
    }

    fn received(&self) -> Vec<u8> {
        self.received.data.borrow().clone()
    }

    /// Waits until exactly `expected` has arrived (or more, which fails).
    fn expect(&self, expected: &[u8]) {
        let data = Rc::clone(&self.received.data);
        let closed = Rc::clone(&self.received.closed);
        self.reactor
            .run_until(
                || data.borrow().len() >= expected.len() || closed.get(),
                WAIT,
            )
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&self.received()),
            String::from_utf8_lossy(expected)
        );
    }

    /// Waits for the server's EOF.
    fn expect_eof(&self) {
        let eof = Rc::clone(&self.received.eof);
        let closed = Rc::clone(&self.received.closed);
        assert!(
            self.reactor
                .run_until(|| eof.get() || closed.get(), WAIT)
                .unwrap(),
            "no EOF from the server"
        );
        assert!(self.received.eof.get(), "closed without EOF (reset?)");
    }
}

/// Servers of one herd on one reactor.
struct Herd {
    reactor: Reactor,
    config: HerdConfig,
    places: Rc<FakePlaces>,
    servers: BTreeMap<String, HerdServer>,
}

fn with_free_ports(mut config: HerdConfig) -> HerdConfig {
    let names: Vec<String> = config.servers().iter().map(|s| s.name.clone()).collect();
    for name in names {
        config.set_port(&name, 0).unwrap();
    }
    config
}

/// The built-in herd, on free ports.
fn default_herd() -> HerdConfig {
    with_free_ports(HerdConfig::default())
}

/// One server, no neighbours.
fn lone_server() -> HerdConfig {
    HerdConfig::from_json(r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0}]}"#)
        .unwrap()
}

/// 1621464828.223371889: an IAMAT at 1621464827.959498503 is 0.263873386 s old.
fn fixed_clock() -> Rc<dyn Fn() -> SystemTime> {
    Rc::new(|| UNIX_EPOCH + Duration::new(1_621_464_828, 223_371_889))
}

impl Herd {
    fn start(config: HerdConfig, options: impl Fn(&str) -> ServerOptions) -> Herd {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let places = FakePlaces::new();
        let mut herd = Herd {
            reactor,
            config,
            places,
            servers: BTreeMap::new(),
        };
        let names: Vec<String> = herd
            .config
            .servers()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        for name in &names {
            herd.bind(name, options(name));
        }
        for name in &names {
            herd.servers[name].connect_neighbours(&herd.config).unwrap();
        }
        herd.wait_links();
        herd
    }

    fn bind(&mut self, name: &str, options: ServerOptions) {
        let server = HerdServer::bind(
            &self.reactor,
            name,
            &self.config,
            Rc::clone(&self.places),
            ServerLog::memory(),
            options,
        )
        .unwrap();
        self.config
            .set_port(name, server.local_addr().port())
            .unwrap();
        self.servers.insert(name.to_string(), server);
    }

    fn server(&self, name: &str) -> &HerdServer {
        &self.servers[name]
    }

    fn client(&self, name: &str) -> Client {
        Client::connect(&self.reactor, self.server(name).local_addr())
    }

    fn wait(&self, what: &str, done: impl Fn() -> bool) {
        assert!(
            self.reactor.run_until(done, WAIT).unwrap(),
            "timed out waiting for {what}"
        );
    }

    /// Waits until every link is up on both sides, over exactly one TCP
    /// connection per link (two endpoints in this one reactor).
    fn wait_links(&self) {
        let links = self.config.links().len();
        self.wait("every link up over one connection", || {
            self.reactor.connection_count() == 2 * links
                && self
                    .servers
                    .iter()
                    .all(|(name, s)| s.is_stopped() || s.links_up() == self.config.neighbours(name))
        });
    }

    /// Waits until every running server stores `at_line` for `client`.
    fn wait_everywhere(&self, client: &[u8], at_line: &[u8]) {
        self.wait("the location to reach every server", || {
            self.servers
                .values()
                .filter(|s| !s.is_stopped())
                .all(|s| s.location(client).as_deref() == Some(at_line))
        });
    }

    /// Sends an IAMAT and returns its answer (without `\n`).
    fn iamat(&self, server: &str, fields: &str) -> Vec<u8> {
        let client = self.client(server);
        client.send(format!("IAMAT {fields}\n").as_bytes());
        let received = Rc::clone(&client.received.data);
        self.wait("the AT answer", || received.borrow().ends_with(b"\n"));
        let mut answer = client.received();
        answer.pop();
        // Close, so that `wait_links` counts only link connections.
        client.transport.lose_connection();
        let closed = Rc::clone(&client.received.closed);
        self.wait("the client to close", || closed.get());
        answer
    }
}

/// The defaults without IAMAT rate limits (floods from one address).
fn unlimited_rates() -> ServerOptions {
    let unlimited = gyre_herd::limits::Rate {
        per_second: u32::MAX,
        burst: u32::MAX,
    };
    ServerOptions {
        iamat_rate: unlimited,
        new_client_rate: unlimited,
        ..ServerOptions::default()
    }
}

fn options_with_clock(_: &str) -> ServerOptions {
    ServerOptions {
        wall_clock: fixed_clock(),
        ..ServerOptions::default()
    }
}

#[test]
fn iamat_is_answered_flooded_everywhere_and_whatsat_works_at_every_server() {
    let herd = Herd::start(default_herd(), options_with_clock);
    let at = herd.iamat(
        "Alford",
        "kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    );
    assert_eq!(
        String::from_utf8(at.clone()).unwrap(),
        "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
    );
    herd.wait_everywhere(b"kiwi.cs.ucla.edu", &at);
    for name in herd.servers.keys() {
        let client = herd.client(name);
        client.send(b"WHATSAT kiwi.cs.ucla.edu 10 5\n");
        let mut expected = at.clone();
        expected.push(b'\n');
        expected.extend_from_slice(FAKE_JSON_ON_THE_WIRE.as_bytes());
        expected.extend_from_slice(b"\n\n");
        client.expect(&expected);
        assert_eq!(whatsat_answer(&at, FAKE_JSON), expected);
    }
    let calls = herd.places.calls.borrow().clone();
    assert_eq!(calls.len(), 5);
    assert!(calls
        .iter()
        .all(|&c| c == (34.068930, -118.445127, 10_000.0, 5)));
    // Logged: the lines, the links, the Places requests.
    let alford = herd.server("Alford").log();
    assert!(alford.contains("link to Hamilton up"));
    assert!(alford.contains("link to Welsh up"));
    assert!(alford.contains("received from 127.0.0.1:"));
    assert!(alford.contains("sent to 127.0.0.1:"));
    assert!(alford.contains("Places answer for kiwi.cs.ucla.edu: OK"));
    // The flood: one entry naming both neighbours, with the AT line.
    let flood = alford
        .lines()
        .into_iter()
        .find(|l| l.contains("new location for kiwi.cs.ucla.edu, sent to "))
        .expect("Alford logs its flood");
    assert!(flood.contains("Hamilton (127.0.0.1:"), "{flood}");
    assert!(flood.contains("Welsh (127.0.0.1:"), "{flood}");
    assert!(
        flood.ends_with(
            ": AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        ),
        "{flood}"
    );
    // Two hops on: one entry for the AT line received from a neighbour,
    // stored and sent on (Holiday's other neighbour), the line last.
    let holiday = herd.server("Holiday").log().lines();
    let received: Vec<&String> = holiday
        .iter()
        .filter(|l| l.ends_with(": AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"))
        .collect();
    assert!(
        received
            .iter()
            .any(|l| l.contains(" received from ") && l.contains("), stored and sent to ")),
        "{holiday:?}"
    );
    // It arrives over both of Holiday's links; the second copy is dropped.
    herd.wait("Holiday to drop the second copy", || {
        herd.server("Holiday")
            .log()
            .contains("not newer than the stored location (dropped): AT Alford +0.263873386")
    });
}

#[test]
fn both_sides_dial_and_keep_one_connection_per_link() {
    // `Herd::start` already waits for one connection per link; check that
    // the links carry locations both ways.
    let herd = Herd::start(default_herd(), |_| ServerOptions::default());
    let a = herd.iamat("Alford", "a +1+1 1");
    herd.wait_everywhere(b"a", &a);
    let b = herd.iamat("Holiday", "b -1-1 1");
    herd.wait_everywhere(b"b", &b);
    // Still one connection per link (the clients' connections closed).
    herd.wait_links();
}

#[test]
fn an_older_iamat_is_answered_but_neither_stored_nor_flooded() {
    let herd = Herd::start(default_herd(), options_with_clock);
    let newer = herd.iamat("Alford", "kiwi +1+1 1621464827.5");
    herd.wait_everywhere(b"kiwi", &newer);
    let older = herd.iamat("Alford", "kiwi +2+2 1621464826.5");
    assert_eq!(
        String::from_utf8(older).unwrap(),
        "AT Alford +1.723371889 kiwi +2+2 1621464826.5"
    );
    // A later location of another client, flooded from the same server,
    // comes after anything the old one could have caused on every link.
    let marker = herd.iamat("Alford", "marker +1+1 1");
    herd.wait_everywhere(b"marker", &marker);
    for (name, server) in &herd.servers {
        assert_eq!(server.location(b"kiwi").unwrap(), newer, "{name}");
        if name != "Alford" {
            assert!(!server.log().contains("kiwi +2+2"), "{name} heard of it");
        }
    }
    assert!(herd
        .server("Alford")
        .log()
        .contains("not newer than the stored location for kiwi"));
}

#[test]
fn equal_timestamps_converge_on_one_line() {
    let herd = Herd::start(default_herd(), |_| ServerOptions::default());
    // Two servers at opposite ends of the herd get the same client time at
    // once: their floods cross.
    let at_alford = herd.client("Alford");
    let at_ball = herd.client("Ball");
    at_alford.send(b"IAMAT twin +1+1 1621464827.000000001\n");
    at_ball.send(b"IAMAT twin +2+2 1621464827.000000001\n");
    let (a, b) = (
        Rc::clone(&at_alford.received.data),
        Rc::clone(&at_ball.received.data),
    );
    herd.wait("both answers", || {
        a.borrow().ends_with(b"\n") && b.borrow().ends_with(b"\n")
    });
    let trim = |mut v: Vec<u8>| {
        v.pop();
        v
    };
    let winner = trim(at_alford.received()).max(trim(at_ball.received()));
    assert!(winner.starts_with(b"AT Ball "));
    herd.wait_everywhere(b"twin", &winner);
}

#[test]
fn invalid_lines_are_answered_with_the_line_as_received() {
    let herd = Herd::start(lone_server(), |_| ServerOptions::default());
    let client = herd.client("Alford");
    client.send(
        b"LLL\n\
          IAMAT Clark +12-118\n\
          WHATSAT kiwi.cs.ucla.edu 51 5\r\n\
          \t WHATSAT\x0bnobody 10 5  \r\n\
          AT Alford +0.1 k +1+1 1\n\
          PEER Alford\n\
          \n\
          IAMAT ok +91+0 1\n\
          IAMAT ok +12-118 1.5\n",
    );
    let received = Rc::clone(&client.received.data);
    herd.wait("the valid IAMAT's answer", || {
        received.borrow().ends_with(b" ok +12-118 1.5\n")
    });
    let expected: &[u8] = b"? LLL\n\
          ? IAMAT Clark +12-118\n\
          ? WHATSAT kiwi.cs.ucla.edu 51 5\n\
          ? \t WHATSAT\x0bnobody 10 5  \n\
          ? AT Alford +0.1 k +1+1 1\n\
          ? PEER Alford\n\
          ? \n\
          ? IAMAT ok +91+0 1\n\
          AT Alford ";
    // The connection stayed open and the last command was answered.
    assert_eq!(
        String::from_utf8_lossy(&client.received()[..expected.len()]),
        String::from_utf8_lossy(expected)
    );
    // A first line naming no neighbour is a client's invalid command.
    let stranger = herd.client("Alford");
    stranger.send(b"PEER Nobody\n");
    stranger.expect(b"? PEER Nobody\n");
}

#[test]
fn client_ids_are_echoed_byte_for_byte() {
    let herd = Herd::start(lone_server(), options_with_clock);
    let client = herd.client("Alford");
    client.send(b"IAMAT \xff\xfe\xc3( +1+1 1621464827.959498503\nWHATSAT \xff\xfe\xc3( 1 1\n");
    let at = b"AT Alford +0.263873386 \xff\xfe\xc3( +1+1 1621464827.959498503";
    client.expect(&[&at[..], b"\n", &whatsat_answer(at, FAKE_JSON)].concat());
    assert!(herd.server("Alford").log().contains("\\xff\\xfe\\xc3("));
}

#[test]
fn answers_come_in_command_order() {
    let herd = Herd::start(lone_server(), options_with_clock);
    herd.places.mode.set(Mode::Slow);
    let client = herd.client("Alford");
    client.send(b"IAMAT k +1+1 1\nWHATSAT k 10 5\nIAMAT k +1+1 2\n");
    let server = herd.server("Alford");
    herd.wait("the second IAMAT to be handled", || {
        server.location(b"k").is_some_and(|l| l.ends_with(b" 2"))
    });
    // The WHATSAT waits for Places, and the IAMAT behind it waits too.
    let first = b"AT Alford +1621464827.223371889 k +1+1 1\n".to_vec();
    client.expect(&first);
    assert_eq!(herd.places.pending.borrow().len(), 1);
    herd.places.answer_pending();
    let mut expected = first.clone();
    expected.extend(whatsat_answer(&first[..first.len() - 1], FAKE_JSON));
    expected.extend_from_slice(b"AT Alford +1621464826.223371889 k +1+1 2\n");
    client.expect(&expected);
}

#[test]
fn a_client_with_too_many_pending_answers_is_read_no_further() {
    let herd = Herd::start(lone_server(), |_| ServerOptions {
        max_pending_answers: 2,
        ..ServerOptions::default()
    });
    herd.places.mode.set(Mode::Slow);
    let client = herd.client("Alford");
    client.send(b"IAMAT k +1+1 1\n");
    let received = Rc::clone(&client.received.data);
    herd.wait("the IAMAT answer", || received.borrow().ends_with(b"\n"));
    // Five lookups in one write: only two are started until answers drain.
    client.send(&b"WHATSAT k 1 1\n".repeat(5));
    let places = Rc::clone(&herd.places);
    herd.wait("two lookups", || places.calls.borrow().len() >= 2);
    for _ in 0..10 {
        herd.reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(herd.places.calls.borrow().len(), 2);
    let mut answered = 0;
    while answered < 5 {
        let pending = herd.places.pending.borrow().len();
        answered += pending;
        herd.places.answer_pending();
        let places = Rc::clone(&herd.places);
        herd.wait("the next lookups", || {
            answered == 5 || !places.pending.borrow().is_empty()
        });
    }
    herd.wait("five WHATSAT answers", || {
        String::from_utf8_lossy(&received.borrow())
            .matches("\n\n")
            .count()
            == 5
    });
    assert_eq!(herd.places.calls.borrow().len(), 5);
}

#[test]
fn half_close_gets_every_answer_then_eof() {
    let herd = Herd::start(lone_server(), options_with_clock);
    herd.places.mode.set(Mode::Slow);
    let client = herd.client("Alford");
    client.send(b"IAMAT k +1+1 1\nWHATSAT k 10 5\n");
    client.half_close();
    let places = Rc::clone(&herd.places);
    herd.wait("the Places lookup", || places.pending.borrow().len() == 1);
    let at = b"AT Alford +1621464827.223371889 k +1+1 1";
    client.expect(&[&at[..], b"\n"].concat());
    assert!(
        !client.received.eof.get(),
        "closed before the WHATSAT was answered"
    );
    herd.places.answer_pending();
    client.expect_eof();
    assert_eq!(
        client.received(),
        [&at[..], b"\n", &whatsat_answer(at, FAKE_JSON)].concat()
    );
}

#[test]
fn a_final_line_without_newline_is_a_command() {
    let herd = Herd::start(lone_server(), options_with_clock);
    let client = herd.client("Alford");
    client.send(b"IAMAT k +1+1 1\nIAMAT k +1+1 2");
    client.half_close();
    client.expect_eof();
    assert_eq!(
        client.received(),
        b"AT Alford +1621464827.223371889 k +1+1 1\nAT Alford +1621464826.223371889 k +1+1 2\n"
    );
    let client = herd.client("Alford");
    client.send(b"LLL \r");
    client.half_close();
    client.expect_eof();
    assert_eq!(client.received(), b"? LLL \n");
    // EOF with nothing pending closes at once.
    let client = herd.client("Alford");
    client.half_close();
    client.expect_eof();
    assert!(client.received().is_empty());
}

#[test]
fn a_failed_places_lookup_is_still_answered() {
    let herd = Herd::start(lone_server(), options_with_clock);
    herd.places.mode.set(Mode::Fail);
    let client = herd.client("Alford");
    client.send(b"IAMAT k +1+1 1\nWHATSAT k 1 1\n");
    let received = Rc::clone(&client.received.data);
    herd.wait("the WHATSAT answer", || {
        received.borrow().ends_with(b"\n\n")
    });
    let text = String::from_utf8(client.received()).unwrap();
    assert!(text.contains("\"status\": \"UNKNOWN_ERROR\""), "{text}");
    assert!(text.contains("the fake Places service is down"), "{text}");
    assert!(!text[..text.len() - 2].contains("\n\n"), "{text}");
}

#[test]
fn an_over_long_line_closes_the_connection_after_earlier_answers() {
    let herd = Herd::start(lone_server(), |_| ServerOptions {
        max_line_length: 100,
        wall_clock: fixed_clock(),
        ..ServerOptions::default()
    });
    let client = herd.client("Alford");
    let mut input = b"IAMAT k +1+1 1\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 300));
    input.extend_from_slice(b"\nIAMAT k2 +1+1 1\n");
    client.send(&input);
    client.expect_eof();
    assert_eq!(
        client.received(),
        b"AT Alford +1621464827.223371889 k +1+1 1\n"
    );
    assert!(herd.server("Alford").location(b"k2").is_none());
    assert!(herd
        .server("Alford")
        .log()
        .contains("longer than 100 bytes"));
}

#[test]
fn a_neighbour_that_starts_later_is_reached() {
    let config = with_free_ports(
        HerdConfig::from_json(
            r#"{"servers": [{"name": "A", "port": 0}, {"name": "B", "port": 0}],
                "links": [["A", "B"]]}"#,
        )
        .unwrap(),
    );
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let places = FakePlaces::new();
    let mut herd = Herd {
        reactor,
        config,
        places,
        servers: BTreeMap::new(),
    };
    // B's port: free now, nobody listening until B starts.
    let b_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    herd.config.set_port("B", b_port).unwrap();
    herd.bind("A", ServerOptions::default());
    herd.servers["A"].connect_neighbours(&herd.config).unwrap();
    let a_log = herd.server("A").log().clone();
    herd.wait("a failed dial", || {
        a_log.contains("cannot reach neighbour B")
    });
    let at = herd.iamat("A", "early +1+1 1");
    herd.bind("B", ServerOptions::default());
    herd.servers["B"].connect_neighbours(&herd.config).unwrap();
    herd.wait_links();
    herd.wait_everywhere(b"early", &at);
}

#[test]
fn a_dropped_link_is_dialled_again() {
    let config = with_free_ports(
        HerdConfig::from_json(
            r#"{"servers": [{"name": "A", "port": 0}, {"name": "B", "port": 0}],
                "links": [["A", "B"]]}"#,
        )
        .unwrap(),
    );
    let mut herd = Herd::start(config, |_| ServerOptions::default());
    let at = herd.iamat("B", "kept +1+1 1");
    herd.wait_everywhere(b"kept", &at);
    herd.server("A").stop();
    let b_log = herd.server("B").log().clone();
    herd.wait("B to see the link drop", || {
        b_log.contains("link to A down")
    });
    // A comes back but does not dial: B's own retries (at most 1 s apart)
    // must find it, and B then sends what it stores.
    herd.bind("A", ServerOptions::default());
    herd.wait_links();
    herd.wait_everywhere(b"kept", &at);
    assert!(b_log.contains("cannot reach neighbour A") || b_log.contains("link to A up"));
}

#[test]
fn a_restarted_server_catches_up_as_soon_as_its_links_are_up() {
    // Neighbours that lost a link wait an hour before dialling again: only
    // the restarted server's own dialling can bring its links up.
    let slow_retries = |_: &str| {
        let mut options = ServerOptions::default();
        options.backoff = options
            .backoff
            .initial(Duration::from_secs(3600))
            .max_delay(Duration::from_secs(3600));
        options
    };
    let mut herd = Herd::start(default_herd(), slow_retries);
    let first = herd.iamat("Alford", "kiwi +1+1 1");
    herd.wait_everywhere(b"kiwi", &first);

    herd.server("Hamilton").stop();
    herd.wait("Hamilton's links to drop", || {
        herd.servers
            .values()
            .all(|s| !s.links_up().contains(&"Hamilton".to_string()))
    });
    // Flooded while Hamilton is down.
    let second = herd.iamat("Ball", "kiwi +2+2 2");
    let other = herd.iamat("Welsh", "other -3-3 3");
    herd.wait_everywhere(b"kiwi", &second);
    herd.wait_everywhere(b"other", &other);

    herd.bind("Hamilton", slow_retries("Hamilton"));
    assert_eq!(herd.server("Hamilton").known_clients(), 0);
    herd.servers["Hamilton"]
        .connect_neighbours(&herd.config)
        .unwrap();
    herd.wait_links();
    herd.wait_everywhere(b"kiwi", &second);
    herd.wait_everywhere(b"other", &other);
    let hamilton = herd.server("Hamilton");
    assert_eq!(hamilton.known_clients(), 2);
    // The catch-up is logged as a summary, at its start and its end.
    let alford_log = herd.server("Alford").log().lines();
    assert!(alford_log
        .iter()
        .any(|l| l.contains("catch-up with Hamilton")
            && l.contains("started (link up): 2 stored location(s)")));
    herd.wait("Alford's catch-up with Hamilton to end", || {
        herd.server("Alford").log().lines().iter().any(|l| {
            l.contains("catch-up with Hamilton") && l.contains("done (link up): 2 location(s)")
        })
    });
    // And the new links carry Hamilton's news out.
    let third = herd.iamat("Hamilton", "kiwi +4+4 4");
    herd.wait_everywhere(b"kiwi", &third);
}

#[test]
fn a_file_log_has_every_line() {
    let dir = std::env::temp_dir().join(format!("gyre-herd-inprocess-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let config = lone_server();
    let log = ServerLog::open(&dir, "Alford").unwrap();
    let server = HerdServer::start(&reactor, "Alford", &config, FakePlaces::new(), log).unwrap();
    let client = Client::connect(&reactor, server.local_addr());
    client.send(b"IAMAT k +1+1 1\nWHATSAT k 1 1\nLLL\n");
    let received = Rc::clone(&client.received.data);
    reactor
        .run_until(|| received.borrow().ends_with(b"? LLL\n"), WAIT)
        .unwrap();
    server.stop();
    let text = std::fs::read_to_string(dir.join("Alford.log")).unwrap();
    for needle in [
        "listening on 127.0.0.1:",
        "new connection from 127.0.0.1:",
        "received from 127.0.0.1:",
        ": IAMAT k +1+1 1",
        "sent to 127.0.0.1:",
        "Places request for k",
        "Places answer for k: OK in 0.001 s: fake Places: 1 result",
        "+ Places JSON (",
        "? LLL",
        "server Alford stopped",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(text.lines().all(|l| l.starts_with("20")), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A neighbour that stops reading does not make its link's write buffer
/// grow without bound: floods skip the link while it is congested, and when
/// it drains it gets the whole store, so it still ends with the latest
/// location of every client.
#[test]
fn a_neighbour_that_does_not_read_gets_the_latest_locations_with_bounded_buffers() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const CLIENTS: usize = 10;
    const UPDATES: usize = 20_000; // per client: about 16 MB of AT lines in all
    const FIRST_TIME: u64 = 1_600_000_000;

    // Ball is played by the test: a plain socket that accepts Alford's dial
    // and then does not read.
    let ball = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = HerdConfig::from_json(&format!(
        r#"{{"servers": [{{"name": "Alford", "host": "127.0.0.1", "port": 0}},
                         {{"name": "Ball", "host": "127.0.0.1", "port": {}}}],
            "links": [["Alford", "Ball"]]}}"#,
        ball.local_addr().unwrap().port()
    ))
    .unwrap();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let alford = HerdServer::bind(
        &reactor,
        "Alford",
        &config,
        FakePlaces::new(),
        ServerLog::discard(),
        // The fake Ball is a plain socket that never reads, so it cannot
        // do the TLS handshake of a verified link: this test is about the
        // link's buffers, not its authentication.
        ServerOptions {
            peer_tls: gyre_herd::PeerTls::Insecure,
            ..unlimited_rates()
        },
    )
    .unwrap();
    alford.connect_neighbours(&config).unwrap();
    assert!(reactor
        .run_until(|| alford.links_up() == ["Ball"], WAIT)
        .unwrap());
    let (ball_side, _) = ball.accept().unwrap();

    let client = Client::connect(&reactor, alford.local_addr());
    let mut commands = Vec::new();
    for update in 0..UPDATES {
        for c in 0..CLIENTS {
            commands.extend_from_slice(
                format!(
                    "IAMAT client-{c} +34.068930-118.445127 {}.000000001\n",
                    FIRST_TIME + update as u64
                )
                .as_bytes(),
            );
        }
    }
    client.send(&commands);
    let answers = Rc::clone(&client.received.data);
    let most_buffered = Cell::new(0);
    let all_answered = reactor
        .run_until(
            || {
                let now = alford.link_buffered_len("Ball").unwrap_or(0);
                most_buffered.set(most_buffered.get().max(now));
                answers.borrow().iter().filter(|&&b| b == b'\n').count() == CLIENTS * UPDATES
            },
            Duration::from_secs(120),
        )
        .unwrap();
    assert!(all_answered, "Alford answered every IAMAT");
    assert!(
        most_buffered.get() <= 1024 * 1024,
        "the link's write buffer stayed bounded (at most {} bytes seen)",
        most_buffered.get()
    );

    // Ball reads at last: it must end up with every client's last location.
    let done = Arc::new(AtomicBool::new(false));
    let reader_done = Arc::clone(&done);
    let reader = std::thread::spawn(move || {
        ball_side
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let last = format!("{}.000000001", FIRST_TIME + UPDATES as u64 - 1);
        let mut latest = std::collections::HashSet::new();
        for line in BufReader::new(ball_side).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.starts_with("AT ") && line.ends_with(&last) {
                latest.insert(line.split_whitespace().nth(3).unwrap_or("").to_string());
                if latest.len() == CLIENTS {
                    break;
                }
            }
        }
        reader_done.store(true, Ordering::SeqCst);
        latest
    });
    reactor
        .run_until(|| done.load(Ordering::SeqCst), Duration::from_secs(60))
        .unwrap();
    let latest = reader.join().unwrap();
    assert_eq!(
        latest.len(),
        CLIENTS,
        "Ball got the last location of every client: {latest:?}"
    );
    alford.stop();
}

/// Part of issue 10's Done-when 4: a client ID over the limit and a time
/// an hour ahead of the server's clock are answered `? ` with the line as
/// received, and neither is stored; a valid report on the same connection
/// still is.
#[test]
fn over_long_client_ids_and_future_times_are_refused() {
    let herd = Herd::start(lone_server(), options_with_clock);
    let client = herd.client("Alford");
    let long_id = "x".repeat(300);
    // fixed_clock() is 1621464828.22: an hour ahead is 1621468428.
    let lines = format!(
        "IAMAT {long_id} +1+1 1621464827.9\n\
         IAMAT future +1+1 1621468428.5\n\
         IAMAT fine +1+1 1621464827.9\n"
    );
    client.send(lines.as_bytes());
    let received = Rc::clone(&client.received.data);
    herd.wait("the valid IAMAT's answer", || {
        received.borrow().ends_with(b" fine +1+1 1621464827.9\n")
    });
    let text = String::from_utf8_lossy(&client.received()).into_owned();
    let mut answers = text.lines();
    assert_eq!(
        answers.next(),
        Some(format!("? IAMAT {long_id} +1+1 1621464827.9").as_str())
    );
    assert_eq!(answers.next(), Some("? IAMAT future +1+1 1621468428.5"));
    assert!(answers.next().is_some_and(|a| a.starts_with("AT Alford ")));
    let server = herd.server("Alford");
    assert!(server.location(long_id.as_bytes()).is_none());
    assert!(server.location(b"future").is_none());
    assert!(server.location(b"fine").is_some());
    assert!(server
        .log()
        .contains("client ID of 300 bytes, over the limit of 256"));
    assert!(server.log().contains("ahead of this server's clock"));
}

/// A neighbour's AT is held to the same limits: A (with generous limits)
/// stores and floods a 300-byte client ID; B (with the defaults) ignores
/// it and logs why.
#[test]
fn a_neighbours_at_over_the_limits_is_ignored() {
    let config = with_free_ports(
        HerdConfig::from_json(
            r#"{"servers": [{"name": "A", "port": 0}, {"name": "B", "port": 0}],
                "links": [["A", "B"]]}"#,
        )
        .unwrap(),
    );
    let herd = Herd::start(config, |name| ServerOptions {
        wall_clock: fixed_clock(),
        max_client_id_length: if name == "A" { 1024 } else { 256 },
        ..ServerOptions::default()
    });
    let long_id = "y".repeat(300);
    herd.iamat("A", &format!("{long_id} +1+1 1621464827.9"));
    assert!(herd.server("A").location(long_id.as_bytes()).is_some());
    let b_log = herd.server("B").log().clone();
    herd.wait("B to ignore the AT", || {
        b_log.contains("), ignored an AT (client ID of 300 bytes")
    });
    assert!(herd.server("B").location(long_id.as_bytes()).is_none());
    // A valid report still crosses the link.
    let at = herd.iamat("A", "short +1+1 1621464827.9");
    herd.wait_everywhere(b"short", &at);
}

/// Part of issue 10's Done-when 5, on a manual clock: a client that sends
/// nothing (or only a partial line) is closed once the idle time-out has
/// passed since its last complete line; a client that keeps sending lines
/// is not.
#[test]
fn an_idle_client_is_closed_after_its_time_out() {
    let clock = gyre_reactor::clock::ManualClock::new();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .clock(clock.clock())
        .build()
        .unwrap();
    let mut herd = Herd {
        reactor,
        config: lone_server(),
        places: FakePlaces::new(),
        servers: BTreeMap::new(),
    };
    let timeout = Duration::from_secs(60);
    herd.bind(
        "Alford",
        ServerOptions {
            wall_clock: fixed_clock(),
            client_idle_timeout: timeout,
            ..ServerOptions::default()
        },
    );
    let idle = herd.client("Alford");
    let trickler = herd.client("Alford");
    let busy = herd.client("Alford");
    trickler.send(b"IAMAT half a line with no newline");
    herd.wait("both connections accepted", || {
        herd.reactor.connection_count() == 6
    });
    for step in 1..=3 {
        // 40 s pass; the busy client sends a line each time.
        busy.send(format!("IAMAT busy{step} +1+1 1621464827.9\n").as_bytes());
        let received = Rc::clone(&busy.received.data);
        herd.wait("the busy client's answer", || {
            received.borrow().ends_with(b" 1621464827.9\n")
                && received
                    .borrow()
                    .windows(5)
                    .filter(|w| *w == b"AT Al")
                    .count()
                    == step
        });
        clock.advance(Duration::from_secs(40));
    }
    // 120 s in: the idle and trickling clients are closed, the busy one is not.
    let (idle_closed, trickler_closed) = (
        Rc::clone(&idle.received.closed),
        Rc::clone(&trickler.received.closed),
    );
    herd.wait("the idle clients to be closed", || {
        idle_closed.get() && trickler_closed.get()
    });
    assert!(!busy.received.closed.get());
    let log = herd.server("Alford").log();
    assert!(log.contains("(the idle time-out)"));
    // The busy client goes quiet too: its last line came at 80 s, so it is
    // closed at 140 s and not before. (The time-out runs on the manual
    // clock: until it is advanced, no loop iteration can close it.)
    clock.advance(Duration::from_secs(19));
    for _ in 0..10 {
        herd.reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    let busy_closed = Rc::clone(&busy.received.closed);
    assert!(!busy_closed.get(), "not before the time-out");
    clock.advance(Duration::from_secs(1));
    herd.wait("the quiet busy client to be closed", || busy_closed.get());
}

/// Part of issue 10's Done-when 4 (the byte bound; the per-address rate
/// limit is not built yet): many distinct clients against a small byte
/// bound keep the store within it, evicting the oldest, and the limit
/// being hit is logged.
#[test]
fn the_store_stays_within_its_byte_bound() {
    let max_store_bytes = 64 * 1024;
    let herd = Herd::start(lone_server(), |_| ServerOptions {
        wall_clock: fixed_clock(),
        max_store_bytes,
        ..unlimited_rates()
    });
    let client = herd.client("Alford");
    let total = 2_000;
    let mut lines = Vec::new();
    for i in 0..total {
        // Later clients have later times: the newest are kept.
        lines.extend_from_slice(format!("IAMAT client-{i:05} +1+1 1621460000.{i:05}\n").as_bytes());
    }
    client.send(&lines);
    let received = Rc::clone(&client.received.data);
    herd.wait("every answer", || {
        received.borrow().iter().filter(|&&b| b == b'\n').count() == total
    });
    let server = herd.server("Alford");
    assert!(server.store_bytes() <= max_store_bytes);
    assert!(server.known_clients() > 100 && server.known_clients() < total);
    assert!(server
        .location(format!("client-{:05}", total - 1).as_bytes())
        .is_some());
    assert!(server.location(b"client-00000").is_none());
    assert!(server.log().contains("store full"));
}
