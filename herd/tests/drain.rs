//! `HerdServer::drain`, the graceful stop, in one process over real
//! loopback sockets with a fake Places service whose answers the test
//! releases. Time-outs run on the reactor's manual clock; every wait is a
//! bounded `run_until` on the event that matters.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_herd::places::PlacesAnswer;
use gyre_herd::{HerdConfig, HerdServer, PlacesLookup, ServerLog, ServerOptions};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::defer::{Deferred, Resolver};
use gyre_reactor::{ConnectionLost, Protocol, Reactor, Transport};

const WAIT: Duration = Duration::from_secs(20);

/// A Places service that answers only when the test says so.
#[derive(Default)]
struct HeldPlaces {
    pending: RefCell<Vec<Resolver<PlacesAnswer>>>,
    calls: Cell<usize>,
}

impl HeldPlaces {
    fn release(&self) {
        for r in std::mem::take(&mut *self.pending.borrow_mut()) {
            r.callback(PlacesAnswer {
                json: "{\n  \"results\": [],\n  \"status\": \"ZERO_RESULTS\"\n}\n".to_string(),
                status: "ZERO_RESULTS".to_string(),
                elapsed: Duration::from_millis(1),
                summary: "held".to_string(),
            })
            .unwrap();
        }
    }
}

impl PlacesLookup for HeldPlaces {
    fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
        self.calls.set(self.calls.get() + 1);
        let (r, d) = Deferred::new();
        self.pending.borrow_mut().push(r);
        d
    }
}

/// What a client connection received.
#[derive(Clone, Default)]
struct Seen {
    data: Rc<RefCell<Vec<u8>>>,
    eof: Rc<Cell<bool>>,
    closed: Rc<Cell<bool>>,
}

impl Seen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data.borrow()).into_owned()
    }
}

struct Recorder(Seen);

impl Protocol for Recorder {
    fn data_received(&mut self, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        // Closes our side too, as a client reading until EOF does.
        self.0.eof.set(true);
        false
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.0.closed.set(true);
    }
}

#[track_caller]
fn wait(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    assert!(
        reactor.run_until(done, WAIT).unwrap(),
        "timed out waiting for {what}"
    );
}

fn client(reactor: &Reactor, addr: SocketAddr) -> (Transport, Seen) {
    let seen = Seen::default();
    let d = reactor.connect_protocol(addr, Recorder(seen.clone()));
    wait(reactor, "connected", || d.called());
    (d.take_result().unwrap().unwrap(), seen)
}

fn fixed_clock() -> Rc<dyn Fn() -> SystemTime> {
    Rc::new(|| UNIX_EPOCH + Duration::new(1_621_464_828, 223_371_889))
}

fn lone_server() -> HerdConfig {
    HerdConfig::from_json(r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0}]}"#)
        .unwrap()
}

fn manual_reactor() -> (Reactor, ManualClock) {
    let clock = ManualClock::new();
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .clock(clock.clock())
        .build()
        .unwrap();
    (reactor, clock)
}

fn bind(reactor: &Reactor, places: &Rc<HeldPlaces>, drain_timeout: Duration) -> HerdServer {
    HerdServer::bind(
        reactor,
        "Alford",
        &lone_server(),
        Rc::clone(places),
        ServerLog::memory(),
        ServerOptions {
            wall_clock: fixed_clock(),
            drain_timeout,
            ..ServerOptions::default()
        },
    )
    .unwrap()
}

const AT_KIWI: &str = "AT Alford +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503\n";

/// Reports kiwi and waits for the AT answer.
fn report_kiwi(reactor: &Reactor, addr: SocketAddr) {
    let (t, seen) = client(reactor, addr);
    t.write(b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n");
    let data = Rc::clone(&seen.data);
    wait(reactor, "the AT answer", || data.borrow().ends_with(b"\n"));
    assert_eq!(seen.text(), AT_KIWI);
    t.lose_connection();
}

/// The drain answers every command it read (two WHATSATs waiting on
/// Places, an IAMAT queued behind the first), in order, then closes; an
/// idle client is closed at once; no new connection is accepted; a line
/// sent after the drain started is not read; the Deferred fires once the
/// last connection closed, and the log says the server drained.
#[test]
fn a_drain_answers_every_command_received_then_closes() {
    let (reactor, _clock) = manual_reactor();
    let places = Rc::new(HeldPlaces::default());
    let server = bind(&reactor, &places, Duration::from_secs(15));
    let addr = server.local_addr();
    report_kiwi(&reactor, addr);

    let (busy, busy_seen) = client(&reactor, addr);
    busy.write(b"WHATSAT kiwi 10 5\nIAMAT kiwi2 +1+1 1621464827.9\nWHATSAT kiwi 10.5 5\n");
    wait(&reactor, "both lookups asked", || places.calls.get() == 2);
    let (_idle, idle_seen) = client(&reactor, addr);
    wait(&reactor, "both clients accepted", || {
        reactor.connection_count() == 4
    });
    assert!(busy_seen.data.borrow().is_empty(), "answers wait on Places");

    let drained = server.drain();
    assert!(server.is_draining() && !server.is_stopped());
    assert!(!drained.called());
    let joined = server.drain();

    // The idle client is closed at once; a new one is refused.
    let eof = Rc::clone(&idle_seen.eof);
    wait(&reactor, "the idle client's EOF", || eof.get());
    assert!(idle_seen.data.borrow().is_empty());
    let refused = reactor.connect_protocol(addr, Recorder(Seen::default()));
    wait(&reactor, "the new connection to fail", || refused.called());
    assert!(refused.take_result().unwrap().is_err(), "not accepted");

    // Sent after the drain started: not read, so neither answered nor
    // stored.
    busy.write(b"IAMAT late +1+1 1621464827.9\n");
    for _ in 0..20 {
        reactor.iterate(Some(Duration::from_millis(1))).unwrap();
    }
    assert!(!drained.called(), "an answer is still missing");

    places.release();
    let closed = Rc::clone(&busy_seen.closed);
    wait(&reactor, "the busy client closed", || closed.get());
    assert!(busy_seen.eof.get(), "closed with an EOF, not a reset");
    let text = busy_seen.text();
    let answers: Vec<&str> = text.split_inclusive("\n\n").collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(answers[0].starts_with(AT_KIWI), "{text}");
    assert!(answers[0].contains("ZERO_RESULTS"), "{text}");
    assert!(
        answers[1].starts_with("AT Alford +0.323371889 kiwi2 +1+1 1621464827.9\n"),
        "{text}"
    );
    assert!(
        answers[1]["AT Alford +0.323371889 kiwi2 +1+1 1621464827.9\n".len()..].starts_with(AT_KIWI)
    );
    assert!(!text.contains("late"), "{text}");
    assert!(server.location(b"late").is_none());

    wait(&reactor, "the drain to end", || drained.called());
    assert!(drained.take_result().unwrap().is_ok());
    assert!(joined.called(), "a second caller joins the same drain");
    assert!(server.is_stopped());
    let log = server.log();
    assert!(log.contains("server Alford draining: stopped accepting and reading; 2 client connection(s) with 3 answer(s) to finish"));
    assert!(log.contains("server Alford drained in"));
    assert!(!log.contains("(drain_timeout) hit"));
    // After the stop, a drain is over at once.
    assert!(server.drain().called());
}

/// A Places answer that never comes: the drain ends at its time-out (on
/// the manual clock, not before), logged with what it cut, and the
/// connection is closed after the answers that were ready.
#[test]
fn a_drain_that_times_out_closes_what_is_left_and_says_so() {
    let (reactor, clock) = manual_reactor();
    let places = Rc::new(HeldPlaces::default());
    let timeout = Duration::from_secs(30);
    let server = bind(&reactor, &places, timeout);
    let addr = server.local_addr();
    let (t, seen) = client(&reactor, addr);
    t.write(b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\nWHATSAT kiwi 10 5\n");
    wait(&reactor, "the lookup asked", || places.calls.get() == 1);
    let data = Rc::clone(&seen.data);
    wait(&reactor, "the AT answer", || data.borrow().ends_with(b"\n"));

    let drained = server.drain();
    clock.advance(timeout - Duration::from_secs(1));
    for _ in 0..10 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert!(!drained.called(), "not before the time-out");
    assert!(!seen.closed.get());
    clock.advance(Duration::from_secs(1));
    wait(&reactor, "the drain to end at its time-out", || {
        drained.called()
    });
    assert!(drained.take_result().unwrap().is_ok());
    let closed = Rc::clone(&seen.closed);
    wait(&reactor, "the client closed", || closed.get());
    assert!(seen.eof.get(), "closed with an EOF, not a reset");
    assert_eq!(seen.text(), AT_KIWI, "only the answer that was ready");
    assert!(server.is_stopped());
    let log = server.log();
    assert!(
        log.contains(
            "server Alford: drain time-out of 30.000 s (drain_timeout) hit: closing 1 connection(s) still open, 1 answer(s) never written"
        ),
        "the time-out is logged"
    );
    assert!(!log.contains("drained in"));
    // The lookup ends after all: nothing is written to the closed client.
    places.release();
    for _ in 0..10 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(seen.text(), AT_KIWI);
}

/// A drain closes the links cleanly, with no goodbye line: the neighbour
/// sees the link go down, logs it, and re-dials with back-off, which finds
/// the server again once it is back on its port.
#[test]
fn a_drained_servers_neighbour_redials_until_it_is_back() {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let places = Rc::new(HeldPlaces::default());
    let mut config = HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0},
                        {"name": "Ball", "host": "127.0.0.1", "port": 0}],
            "links": [["Alford", "Ball"]]}"#,
    )
    .unwrap();
    let start = |config: &HerdConfig, name: &str| {
        HerdServer::bind(
            &reactor,
            name,
            config,
            Rc::clone(&places),
            ServerLog::memory(),
            ServerOptions::default(),
        )
        .unwrap()
    };
    let alford = start(&config, "Alford");
    config
        .set_port("Alford", alford.local_addr().port())
        .unwrap();
    let ball = start(&config, "Ball");
    config.set_port("Ball", ball.local_addr().port()).unwrap();
    alford.connect_neighbours(&config).unwrap();
    ball.connect_neighbours(&config).unwrap();
    wait(&reactor, "the link", || {
        alford.links_up() == ["Ball"] && ball.links_up() == ["Alford"]
    });

    let drained = alford.drain();
    wait(&reactor, "the drain to end", || drained.called());
    assert!(alford.log().contains("closing the link(s) to Ball"));
    wait(&reactor, "Ball to see the link down", || {
        ball.links_up().is_empty()
    });
    assert!(ball.log().contains("link to Alford down"));

    // Alford comes back on its port; Ball's back-off finds it.
    let back = start(&config, "Alford");
    assert_eq!(back.local_addr(), alford.local_addr());
    wait(&reactor, "the link again, dialled by Ball", || {
        ball.links_up() == ["Alford"] && back.links_up() == ["Ball"]
    });
    back.stop();
    ball.stop();
}
