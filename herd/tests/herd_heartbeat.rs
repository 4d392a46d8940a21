//! The links' heartbeat against a scripted neighbour, on a manual clock:
//! a real server (Alford, with insecure peer links so that a plain socket
//! can be its neighbour) and a fake "Ball" written here that records what
//! it receives and sends what the test tells it.
//!
//! Every wait is for an event, bounded ([`WAIT`]); time moves only when
//! the test advances the manual clock, one heartbeat interval at a time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use gyre_herd::places::PlacesAnswer;
use gyre_herd::{HerdConfig, HerdServer, PeerTls, PlacesLookup, ServerLog, ServerOptions};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::defer::{fail, Deferred, Failure};
use gyre_reactor::{factory_fn, ConnectionLost, Protocol, Reactor, Transport};

const WAIT: Duration = Duration::from_secs(20);
const INTERVAL: Duration = Duration::from_secs(1);

struct NoPlaces;

impl PlacesLookup for NoPlaces {
    fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
        fail(Failure::msg("no Places in this test"))
    }
}

/// What the fake neighbour saw, and its connection.
#[derive(Default)]
struct Seen {
    data: Vec<u8>,
    transport: Option<Transport>,
    closed: bool,
}

struct FakeNeighbour(Rc<RefCell<Seen>>);

impl Protocol for FakeNeighbour {
    fn connection_made(&mut self, transport: Transport) {
        self.0.borrow_mut().transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.0.borrow_mut().closed = true;
    }
}

struct Setup {
    /// Keep-alives Alford sent so far, as the test counts them.
    pings_sent: Cell<usize>,
    reactor: Reactor,
    clock: ManualClock,
    alford: HerdServer,
    log: ServerLog,
    ball: Rc<RefCell<Seen>>,
}

impl Setup {
    /// Alford dials the fake Ball and the link is up.
    fn start() -> Setup {
        let clock = ManualClock::new();
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .clock(clock.clock())
            .build()
            .unwrap();
        let ball = Rc::new(RefCell::new(Seen::default()));
        let for_factory = Rc::clone(&ball);
        let port = reactor
            .listen_tcp(
                "127.0.0.1:0".parse().unwrap(),
                factory_fn(move |_| Some(FakeNeighbour(Rc::clone(&for_factory)))),
            )
            .unwrap();
        let config = HerdConfig::from_json(&format!(
            r#"{{"servers": [{{"name": "Alford", "host": "127.0.0.1", "port": 0}},
                             {{"name": "Ball", "host": "127.0.0.1", "port": {}}}],
                "links": [["Alford", "Ball"]]}}"#,
            port.local_addr().port()
        ))
        .unwrap();
        std::mem::forget(port);
        let log = ServerLog::memory();
        let alford = HerdServer::bind(
            &reactor,
            "Alford",
            &config,
            NoPlaces,
            log.clone(),
            ServerOptions {
                peer_tls: PeerTls::Insecure,
                link_heartbeat_interval: INTERVAL,
                link_dead_after: 4 * INTERVAL,
                ..ServerOptions::default()
            },
        )
        .unwrap();
        alford.connect_neighbours(&config).unwrap();
        let setup = Setup {
            pings_sent: Cell::new(1),
            reactor,
            clock,
            alford,
            log,
            ball,
        };
        setup.wait("the link up, and Ball to hear its first keep-alive", || {
            setup.alford.links_up() == ["Ball"] && setup.pings() == 1
        });
        assert!(setup.ball.borrow().data.starts_with(b"PEER Alford\nPING\n"));
        setup
    }

    fn wait(&self, what: &str, done: impl Fn() -> bool) {
        assert!(
            self.reactor.run_until(done, WAIT).unwrap(),
            "timed out waiting for {what}"
        );
    }

    /// The keep-alives Ball received.
    fn pings(&self) -> usize {
        self.ball
            .borrow()
            .data
            .split(|&b| b == b'\n')
            .filter(|l| *l == b"PING")
            .count()
    }

    /// Lines Alford wrote on the link so far.
    fn sent(&self) -> u64 {
        self.alford.link_counts("Ball").unwrap().lines_sent
    }

    /// Advances one heartbeat interval (the check runs then, inside the
    /// advance) and returns how many lines the check wrote; then waits
    /// until Ball has received everything written.
    fn tick(&self) -> u64 {
        let before = self.sent();
        self.clock.advance(INTERVAL);
        let wrote = self.sent() - before;
        self.settle();
        wrote
    }

    /// Waits until Ball has received every keep-alive Alford wrote.
    fn settle(&self) {
        let pings = self.pings_sent();
        self.wait(&format!("keep-alive number {pings}"), || {
            self.pings() == pings
        });
    }

    /// A tick that must send a keep-alive.
    fn tick_expecting_ping(&self) {
        assert_eq!(self.tick(), 1, "no keep-alive on an idle link");
        self.pings_sent.set(self.pings_sent.get() + 1);
        self.settle();
    }

    fn pings_sent(&self) -> usize {
        self.pings_sent.get()
    }

    fn ball_says(&self, line: &[u8]) {
        let t = self.ball.borrow().transport.clone().unwrap();
        t.write(line);
    }

    fn logged_dead(&self) -> bool {
        self.log.contains("no line from Ball") && self.log.contains("closing the link as dead")
    }
}

/// An idle link gets a keep-alive every interval, and one that carried a
/// line since the last check does not; a neighbour that never sent a
/// keep-alive (an older server) is never judged dead for its silence.
#[test]
fn idle_links_get_keep_alives_and_a_silent_old_neighbour_is_kept() {
    let s = Setup::start();
    for _ in 0..3 {
        s.tick_expecting_ping();
    }
    // A flood right before a check: that check sends no keep-alive; the
    // next one, finding the link idle again, does.
    let client = Rc::new(RefCell::new(Seen::default()));
    let d = s
        .reactor
        .connect_protocol(s.alford.local_addr(), FakeNeighbour(Rc::clone(&client)));
    s.wait("the client to connect", || d.called());
    let t = d.take_result().unwrap().unwrap();
    t.write(b"IAMAT kiwi +1+1 1621464827\n");
    s.wait("the flood to reach Ball", || {
        s.ball.borrow().data.ends_with(b" kiwi +1+1 1621464827\n")
    });
    assert_eq!(s.tick(), 0, "a keep-alive right after a flood");
    s.tick_expecting_ping();
    // Ten more seconds of silence from Ball, which never sent a keep-alive:
    // the link stays up.
    for _ in 0..10 {
        s.tick_expecting_ping();
    }
    assert_eq!(s.alford.links_up(), ["Ball"]);
    assert!(!s.logged_dead());
    assert!(!s.ball.borrow().closed);
    assert_eq!(s.pings(), 15);
    // Keep-alives are not logged line by line.
    assert!(!s.log.lines().iter().any(|l| l.ends_with(": PING")));
}

/// Once the neighbour has sent a keep-alive, a link on which nothing
/// arrives for `link_dead_after` (4 checks of 1 s) is closed as dead and
/// logged, not one check earlier; any line it sends (an AT line, or a
/// keep-alive with spaces around it) counts as a sign of life.
#[test]
fn a_neighbour_that_beats_and_falls_silent_is_closed_as_dead() {
    let s = Setup::start();
    s.ball_says(b"PING\n");
    s.wait("Alford to note that Ball beats", || {
        s.log.contains("sends keep-alives")
    });
    // Lines keep the link alive, keep-alives or not.
    s.tick_expecting_ping();
    s.tick_expecting_ping();
    s.ball_says(b"AT Ball +0.1 other +2+2 1621464827\n");
    s.wait("Ball's AT stored", || s.alford.location(b"other").is_some());
    for _ in 0..3 {
        s.tick_expecting_ping();
    }
    s.ball_says(b"  PING \n");
    s.wait("Ball's keep-alive counted", || {
        s.alford.link_counts("Ball").unwrap().lines_received == 3
    });
    // The check after a line resets the count; then 3 silent checks are
    // not enough...
    s.tick_expecting_ping();
    for silent in 1..=3 {
        s.tick_expecting_ping();
        assert!(!s.logged_dead(), "closed after {silent} silent checks");
    }
    // ...and the 4th closes it.
    s.clock.advance(INTERVAL);
    assert!(s.logged_dead());
    s.wait("the dead link to close", || {
        s.ball.borrow().closed && s.alford.links_up().is_empty()
    });
    assert!(s.log.contains("link to Ball down"));
    // Ball's keep-alives were not logged as ignored lines.
    assert!(!s.log.lines().iter().any(|l| l.ends_with(": PING")));
}
