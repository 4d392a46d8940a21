//! Limits on clients over real loopback sockets: the total connection
//! limit (accepting pauses, no busy loop), the per-address limit (a
//! refusal line), and the per-address IAMAT rate limits (a flood from one
//! address cannot evict another client's location). Every wait is bounded
//! and waits for the event that matters.

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use gyre_herd::limits::{Rate, REFUSAL_PER_ADDRESS};
use gyre_herd::places::PlacesAnswer;
use gyre_herd::{HerdConfig, HerdServer, PlacesLookup, ServerLog, ServerOptions};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::defer::{fail, Deferred, Failure};
use gyre_reactor::{ConnectionLost, Protocol, Reactor, Transport};

const WAIT: Duration = Duration::from_secs(30);

struct NoPlaces;
impl PlacesLookup for NoPlaces {
    fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
        fail(Failure::msg("no Places in these tests"))
    }
}

#[derive(Clone, Default)]
struct Received {
    data: Rc<RefCell<Vec<u8>>>,
    closed: Rc<Cell<bool>>,
    connected: Rc<Cell<bool>>,
}

struct Recorder(Received);

impl Protocol for Recorder {
    fn connection_made(&mut self, _: Transport) {
        self.0.connected.set(true);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.data.borrow_mut().extend_from_slice(data);
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.0.closed.set(true);
    }
}

struct Lone {
    reactor: Reactor,
    server: HerdServer,
}

impl Lone {
    fn start(options: ServerOptions) -> Lone {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        Lone::on(reactor, options)
    }

    /// A server on `reactor`.
    fn on(reactor: Reactor, options: ServerOptions) -> Lone {
        let config = HerdConfig::from_json(
            r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0}]}"#,
        )
        .unwrap();
        let server = HerdServer::bind(
            &reactor,
            "Alford",
            &config,
            NoPlaces,
            ServerLog::memory(),
            options,
        )
        .unwrap();
        Lone { reactor, server }
    }

    fn wait(&self, what: &str, done: impl Fn() -> bool) {
        assert!(
            self.reactor.run_until(done, WAIT).unwrap(),
            "timed out waiting for {what}"
        );
    }

    /// A connected client (the connect completes; it may not be accepted).
    fn connect(&self) -> (Transport, Received) {
        let received = Received::default();
        let d = self
            .reactor
            .connect_protocol(self.server.local_addr(), Recorder(received.clone()));
        self.wait("connect", || d.called());
        (d.take_result().unwrap().unwrap(), received)
    }

    fn log_count(&self, needle: &str) -> usize {
        self.server
            .log()
            .lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

fn iamat(client: &str) -> String {
    format!("IAMAT {client} +34.068930-118.445127 1621464827.959498503\n")
}

/// A client outside the reactor: a std stream, nonblocking, read from
/// the conditions of [`Lone::wait`] (so that waiting runs the loop).
struct Outside {
    stream: TcpStream,
    received: RefCell<Vec<u8>>,
}

impl Outside {
    /// Connects (the kernel completes the connection in the listener's
    /// backlog, accepted or not).
    fn connect(addr: SocketAddr) -> Outside {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nonblocking(true).unwrap();
        Outside {
            stream,
            received: RefCell::default(),
        }
    }

    /// The complete lines received so far (reads what has arrived).
    fn lines(&self) -> usize {
        let mut buf = [0; 4096];
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.received.borrow_mut().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading an answer: {e}"),
            }
        }
        self.received
            .borrow()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
}

/// Writes all of `data` to a nonblocking stream (a line fits in its send
/// buffer: `WouldBlock` is not expected, but handled).
fn send(mut stream: &TcpStream, data: &[u8]) {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("sending {data:?}: {e}"),
        }
    }
}

#[test]
fn past_the_total_limit_accepting_pauses_without_a_busy_loop_and_existing_clients_are_served() {
    const LIMIT: usize = 20;
    const ROUNDS: usize = 5;
    /// New connections per round: ROUNDS of them fit in the backlog (1024).
    const EXCESS: usize = 150;
    // The manual clock: no timer can wake the loop, only I/O.
    let manual = ManualClock::new();
    let lone = Lone::on(
        Reactor::builder()
            .clock(manual.clock())
            .install_signal_handlers(false)
            .build()
            .unwrap(),
        ServerOptions {
            max_connections: LIMIT,
            max_connections_per_address: 100_000,
            ..ServerOptions::default()
        },
    );
    let addr = lone.server.local_addr();
    let mut clients: Vec<Outside> = (0..LIMIT).map(|_| Outside::connect(addr)).collect();
    for (i, client) in clients.iter().enumerate() {
        send(&client.stream, iamat(&format!("c{i}")).as_bytes());
    }
    lone.wait("every client answered", || {
        clients.iter().all(|c| c.lines() == 1)
    });
    assert_eq!(lone.log_count("accepting paused"), 1);
    assert_eq!(lone.reactor.stats().accepted, LIMIT as u64);

    // No busy loop while paused. Each round, another thread connects 150
    // more clients (into the backlog) and then sends an IAMAT on an
    // existing connection, while this one runs the loop: the loop wakes
    // for that IAMAT, not for the new connections nor for nothing (a
    // paused port that still woke the loop, or a loop that spun, would
    // take many iterations before the IAMAT arrives). The count of
    // iterations is a condition on events, not on time.
    let mut excess = Vec::new();
    for round in 0..ROUNDS {
        let id = format!("r{round}");
        let writer = clients[0].stream.try_clone().unwrap();
        let line = iamat(&id);
        let helper = std::thread::spawn(move || {
            let waiting: Vec<TcpStream> = (0..EXCESS)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            send(&writer, line.as_bytes());
            waiting
        });
        let before = lone.reactor.stats().iterations;
        while lone.server.location(id.as_bytes()).is_none() {
            lone.reactor.iterate(Some(WAIT)).unwrap();
            let iterations = lone.reactor.stats().iterations - before;
            assert!(
                iterations <= 3,
                "round {round}: the loop woke {iterations} times before the IAMAT arrived"
            );
        }
        excess.extend(helper.join().unwrap());
        // The existing client is answered; nothing more was accepted.
        lone.wait("the existing client's answer", || {
            clients[0].lines() == round + 2
        });
        assert!(clients[0]
            .received
            .borrow()
            .split(|&b| b == b'\n')
            .all(|l| l.is_empty() || l.starts_with(b"AT Alford ")));
        assert_eq!(lone.reactor.stats().accepted, LIMIT as u64);
    }

    // One closes: accepting resumes, takes one more, and pauses again.
    drop(clients.pop());
    lone.wait("one more accepted", || {
        lone.reactor.stats().accepted == LIMIT as u64 + 1
    });
    lone.wait("paused again", || lone.log_count("accepting paused") == 2);
    assert_eq!(lone.log_count("accepting again"), 1);
    drop(excess);
}

#[test]
fn past_the_per_address_limit_a_connection_gets_the_refusal_line_logged_once() {
    let lone = Lone::start(ServerOptions {
        max_connections_per_address: 3,
        ..ServerOptions::default()
    });
    let mut clients: Vec<_> = (0..3).map(|_| lone.connect()).collect();
    let refused: Vec<_> = (0..3).map(|_| lone.connect()).collect();
    for (_, r) in &refused {
        lone.wait("the refusal and close", || r.closed.get());
        assert_eq!(
            String::from_utf8_lossy(&r.data.borrow()),
            REFUSAL_PER_ADDRESS
        );
    }
    assert_eq!(
        lone.log_count("the limit (max_connections_per_address)"),
        1,
        "{:#?}",
        lone.server.log().lines()
    );
    // The three first are served.
    for (i, (t, _)) in clients.iter().enumerate() {
        t.write(iamat(&format!("k{i}")).as_bytes());
    }
    lone.wait("answers", || {
        clients
            .iter()
            .all(|(_, r)| r.data.borrow().ends_with(b"\n"))
    });
    // One closes: the episode ends, and a new connection is served.
    clients.pop().unwrap().0.lose_connection();
    lone.wait("the episode's end", || {
        lone.log_count("again (3 refused)") == 1
    });
    let (t, r) = lone.connect();
    t.write(iamat("k9").as_bytes());
    lone.wait("an answer", || r.data.borrow().ends_with(b"\n"));
    assert!(r.data.borrow().starts_with(b"AT Alford "));
}

#[test]
fn a_flood_of_new_client_ids_from_one_address_hits_its_rate_limit_and_evicts_no_one_else() {
    const BURST: u32 = 50;
    const FLOOD: usize = 1_000;
    let lone = Lone::start(ServerOptions {
        max_clients: 60,
        // No refill: what is allowed does not depend on the test's speed.
        new_client_rate: Rate {
            per_second: 0,
            burst: BURST,
        },
        ..ServerOptions::default()
    });
    // The victim reports from another source address, 127.0.0.2.
    let victim = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    victim
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    victim.connect(&lone.server.local_addr().into()).unwrap();
    let mut victim: std::net::TcpStream = victim.into();
    victim.write_all(iamat("victim").as_bytes()).unwrap();
    lone.wait("the victim's location", || {
        lone.server.location(b"victim").is_some()
    });

    let (t, r) = lone.connect();
    let mut flood = String::new();
    for i in 0..FLOOD {
        flood.push_str(&iamat(&format!("churn{i}")));
    }
    t.write(flood.as_bytes());
    lone.wait("every flood answer", || {
        r.data.borrow().iter().filter(|&&b| b == b'\n').count() == FLOOD
    });
    let answers = r.data.borrow();
    let refused = answers
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"? IAMAT churn"))
        .count();
    assert_eq!(refused, FLOOD - BURST as usize);
    assert!(
        lone.server.location(b"victim").is_some(),
        "the victim was evicted"
    );
    assert_eq!(lone.server.known_clients(), 1 + BURST as usize);
    assert_eq!(
        lone.log_count("rate limit for new client IDs from 127.0.0.1 hit"),
        1
    );
    // The victim's address is not limited by the flood's.
    victim.write_all(iamat("victim2").as_bytes()).unwrap();
    lone.wait("the victim's second client", || {
        lone.server.location(b"victim2").is_some()
    });
}

#[test]
fn never_handshaking_connections_to_the_local_places_service_are_closed_while_the_herd_answers() {
    use gyre_herd::places::{LocalPlacesOptions, LocalPlacesService};
    const LORIS: usize = 1_100;
    let timeout = Duration::from_secs(5);
    let manual = ManualClock::new();
    let reactor = Reactor::builder()
        .clock(manual.clock())
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let service = LocalPlacesService::start_with(
        &reactor,
        "127.0.0.1:0".parse().unwrap(),
        LocalPlacesOptions {
            handshake_timeout: timeout,
            ..LocalPlacesOptions::default()
        },
    )
    .unwrap();
    let cap = gyre_herd::places::DEFAULT_PLACES_MAX_CONNECTIONS;
    let config = HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0}]}"#,
    )
    .unwrap();
    let server = HerdServer::bind(
        &reactor,
        "Alford",
        &config,
        NoPlaces,
        ServerLog::memory(),
        ServerOptions::default(),
    )
    .unwrap();
    let lone = Lone { reactor, server };
    // 1,100 TCP connections that never start their handshake.
    let loris: Vec<Received> = (0..LORIS)
        .map(|_| {
            let received = Received::default();
            drop(
                lone.reactor
                    .connect_protocol(service.local_addr(), Recorder(received.clone())),
            );
            received
        })
        .collect();
    lone.wait("every slow-loris connected", || {
        loris.iter().all(|r| r.connected.get())
    });
    let closed = || loris.iter().filter(|r| r.closed.get()).count();
    let mut rounds = 0;
    while closed() < LORIS {
        let waiting = LORIS - closed();
        lone.wait("the service to fill up to its cap", || {
            service.open_connections() == waiting.min(cap)
        });
        // The herd's port answers meanwhile.
        let (t, r) = lone.connect();
        t.write(iamat(&format!("h{rounds}")).as_bytes());
        lone.wait("the herd's answer", || r.data.borrow().ends_with(b"\n"));
        assert!(r.data.borrow().starts_with(b"AT Alford "));
        t.lose_connection();
        // The handshake time-out closes those accepted.
        let before = closed();
        manual.advance(timeout);
        lone.wait("the handshake time-out to close them", || {
            closed() == before + waiting.min(cap)
        });
        rounds += 1;
        assert!(rounds <= LORIS.div_ceil(cap), "too many rounds");
    }
    assert_eq!(service.open_connections(), 0);
}
