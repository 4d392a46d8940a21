//! TCP transports, listeners and connectors over real loopback sockets.

mod common;

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use common::*;
use gyre_reactor::testing::connect_in_memory;
use gyre_reactor::{factory_fn, ConnectionLost, Factory, FactoryRef, Protocol, Reactor, Transport};

/// Sets a flag when dropped.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[derive(Default)]
struct AbortLog {
    data_calls: usize,
    /// For each `connection_lost`: whether it ran inside `data_received`, and why.
    lost: Vec<(bool, ConnectionLost)>,
    closing_after_abort: Option<bool>,
}

/// Aborts its connection from inside `data_received`, twice, then also
/// loses it and writes to it.
struct Aborter {
    transport: Option<Transport>,
    inside: Rc<Cell<bool>>,
    log: Shared<AbortLog>,
    _dropped: DropFlag,
}

impl Protocol for Aborter {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, _data: &[u8]) {
        self.inside.set(true);
        self.log.borrow_mut().data_calls += 1;
        let t = self.transport.clone().unwrap();
        t.abort_connection();
        t.abort_connection();
        t.lose_connection();
        t.half_close();
        t.write(b"after the abort");
        t.pause_reading();
        t.resume_reading();
        self.log.borrow_mut().closing_after_abort = Some(t.is_closing());
        self.inside.set(false);
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.borrow_mut().lost.push((self.inside.get(), reason));
    }
}

/// Test 5: `abort_connection` inside `data_received`: `connection_lost` is
/// called once, not re-entrantly; aborting twice and then losing is fine; the
/// reactor keeps no slot (and no reference) for the connection afterwards.
#[test]
fn abort_inside_data_received() {
    let reactor = reactor();
    let log = shared(AbortLog::default());
    let dropped = Rc::new(Cell::new(false));
    let inside = Rc::new(Cell::new(false));
    let built = Rc::new(Cell::new(false));
    let port = {
        let (log, dropped, inside, built) =
            (log.clone(), dropped.clone(), inside.clone(), built.clone());
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    if built.replace(true) {
                        return None;
                    }
                    Some(Aborter {
                        transport: None,
                        inside: inside.clone(),
                        log: log.clone(),
                        _dropped: DropFlag(dropped.clone()),
                    })
                }),
            )
            .unwrap()
    };
    assert_eq!(reactor.connection_count(), 0);
    let mut client = std_connect(port.local_addr());
    wait(&reactor, "the connection to be accepted", || {
        reactor.connection_count() == 1
    });
    client.write_all(b"please abort").unwrap();
    wait(&reactor, "connection_lost", || {
        !log.borrow().lost.is_empty()
    });

    {
        let log = log.borrow();
        assert_eq!(log.data_calls, 1);
        assert_eq!(log.closing_after_abort, Some(true));
        assert_eq!(log.lost.len(), 1);
        let (was_inside, reason) = &log.lost[0];
        assert!(!was_inside, "connection_lost ran inside data_received");
        assert!(matches!(reason, ConnectionLost::Aborted), "{reason:?}");
    }
    assert_eq!(reactor.connection_count(), 0);
    assert!(
        dropped.get(),
        "the protocol was not dropped after connection_lost"
    );

    // The peer sees the connection close, and nothing written after the abort.
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "got {rest:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
    // More loop iterations deliver nothing more.
    for _ in 0..3 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(log.borrow().lost.len(), 1);
    assert_eq!(log.borrow().data_calls, 1);
}

/// Plays ping-pong for a number of rounds, checking that its
/// `data_received` is never entered while another one is on the stack.
struct PingPong {
    transport: Option<Transport>,
    serve: bool,
    depth: Rc<Cell<usize>>,
    max_depth: Rc<Cell<usize>>,
    rounds: Rc<Cell<usize>>,
    limit: usize,
}

impl PingPong {
    fn pair(limit: usize) -> (PingPong, PingPong, Rc<Cell<usize>>, Rc<Cell<usize>>) {
        let depth = Rc::new(Cell::new(0));
        let max_depth = Rc::new(Cell::new(0));
        let rounds = Rc::new(Cell::new(0));
        let make = |serve| PingPong {
            transport: None,
            serve,
            depth: depth.clone(),
            max_depth: max_depth.clone(),
            rounds: rounds.clone(),
            limit,
        };
        (make(false), make(true), max_depth.clone(), rounds.clone())
    }
}

impl Protocol for PingPong {
    fn connection_made(&mut self, transport: Transport) {
        if !self.serve {
            transport.write(b"ping");
        }
        self.transport = Some(transport);
    }

    fn data_received(&mut self, _data: &[u8]) {
        self.depth.set(self.depth.get() + 1);
        self.max_depth
            .set(self.max_depth.get().max(self.depth.get()));
        self.rounds.set(self.rounds.get() + 1);
        if self.rounds.get() < self.limit {
            // If `write` delivered to the peer on this stack, the peer's
            // data_received would run at depth 2.
            self.transport.as_ref().unwrap().write(b"pong");
        }
        self.depth.set(self.depth.get() - 1);
    }
}

/// Test 6: `write` never calls `data_received` on the writer's stack, with
/// the in-memory pump of `gyre_reactor::testing`.
#[test]
fn write_never_reenters_data_received_in_memory() {
    let (client, server, max_depth, rounds) = PingPong::pair(200);
    let pump = connect_in_memory(client, server);
    assert_eq!(
        rounds.get(),
        0,
        "connection_made's write was delivered at once"
    );
    pump.flush().unwrap();
    assert_eq!(rounds.get(), 200);
    assert_eq!(max_depth.get(), 1);
}

/// Test 6, over real loopback: two gyre protocols in one reactor, each
/// writing from inside its `data_received`.
#[test]
fn write_never_reenters_data_received_over_tcp() {
    let reactor = reactor();
    let (client, server, max_depth, rounds) = PingPong::pair(1000);
    let server = RefCell::new(Some(server));
    let port = reactor
        .listen_tcp(any_port(), factory_fn(move |_| server.borrow_mut().take()))
        .unwrap();
    let connected = reactor.connect_protocol(port.local_addr(), client);
    wait(&reactor, "1000 rounds of ping-pong", || {
        rounds.get() == 1000
    });
    assert!(connected.called());
    assert_eq!(max_depth.get(), 1);
}

#[derive(Default)]
struct FactoryLog {
    events: Vec<&'static str>,
}

struct CountingFactory(Shared<FactoryLog>);

impl Factory for CountingFactory {
    type Protocol = Echo;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Echo> {
        self.0.borrow_mut().events.push("build");
        Some(Echo::default())
    }
    fn start_factory(&mut self) {
        self.0.borrow_mut().events.push("start");
    }
    fn stop_factory(&mut self) {
        self.0.borrow_mut().events.push("stop");
    }
}

/// Test 7: one factory on three ports: `start_factory` once, when the first
/// port starts; `stop_factory` once, after the third port stops.
#[test]
fn factory_on_three_ports() {
    let reactor = reactor();
    let log = shared(FactoryLog::default());
    let factory = FactoryRef::new(CountingFactory(log.clone()));
    let ports: Vec<_> = (0..3)
        .map(|_| reactor.listen_tcp(any_port(), factory.clone()).unwrap())
        .collect();
    assert_eq!(log.borrow().events, ["start"]);
    assert_eq!(factory.ports(), 3);

    // Every port serves with it.
    for port in &ports {
        let mut client = std_connect(port.local_addr());
        client.write_all(b"hi").unwrap();
        let before = log.borrow().events.len();
        wait(&reactor, "the connection to be built", || {
            log.borrow().events.len() == before + 1
        });
        assert_eq!(wait_read(&reactor, &client, 2), b"hi");
    }

    let stopped = ports[0].stop_listening();
    assert!(stopped.called());
    assert!(!ports[0].is_listening());
    ports[0].stop_listening();
    assert_eq!(factory.ports(), 2, "a second stop_listening counted again");
    ports[1].stop_listening();
    assert_eq!(factory.ports(), 1);
    assert!(!log.borrow().events.contains(&"stop"));
    ports[2].stop_listening();
    assert_eq!(factory.ports(), 0);
    assert_eq!(
        log.borrow().events,
        ["start", "build", "build", "build", "stop"]
    );
}

#[derive(Default)]
struct HalfCloseLog {
    request: Vec<u8>,
    eofs: usize,
    written_after_eof: bool,
    lost: Vec<ConnectionLost>,
}

/// Collects a request until EOF, then (later, from the loop) writes a large
/// answer and closes.
struct Answerer {
    reactor: Reactor,
    transport: Option<Transport>,
    log: Shared<HalfCloseLog>,
}

fn answer_for(request: &[u8]) -> Vec<u8> {
    request
        .iter()
        .rev()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect()
}

impl Protocol for Answerer {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.log.borrow_mut().request.extend_from_slice(data);
    }

    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().eofs += 1;
        let t = self.transport.clone().unwrap();
        let log = self.log.clone();
        // Answer after eof_received has returned: our write side is still open.
        self.reactor.call_soon(move || {
            let answer = answer_for(&log.borrow().request);
            t.write(&answer);
            log.borrow_mut().written_after_eof = true;
            t.lose_connection();
        });
        true
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.borrow_mut().lost.push(reason);
    }
}

/// Test 9: half-close: the client shuts its write side; the server's
/// `eof_received` returns true, the server still writes its answer, then
/// closes; the client reads the whole answer, then EOF.
#[test]
fn half_close_then_answer() {
    let reactor = reactor();
    let log = shared(HalfCloseLog::default());
    let port = {
        let (log, r) = (log.clone(), reactor.clone());
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    Some(Answerer {
                        reactor: r.clone(),
                        transport: None,
                        log: log.clone(),
                    })
                }),
            )
            .unwrap()
    };
    let request: Vec<u8> = b"what is the answer? ".repeat(1000);
    let addr = port.local_addr();
    let sent = request.clone();
    let client = peer(&reactor, move || {
        let mut stream = std_connect(addr);
        stream.write_all(&sent).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map(|_| answer)
    });
    let answer = client
        .wait(&reactor, "the client's answer")
        .expect("read the answer");
    assert_eq!(answer.len(), 1 << 20);
    assert!(answer == answer_for(&request), "the answer is corrupt");
    wait(&reactor, "the server's connection_lost", || {
        !log.borrow().lost.is_empty()
    });
    let log = log.borrow();
    assert_eq!(log.request, request);
    assert_eq!(log.eofs, 1);
    assert!(log.written_after_eof);
    assert_eq!(log.lost.len(), 1);
    assert!(
        matches!(log.lost[0], ConnectionLost::Done),
        "{:?}",
        log.lost[0]
    );
    assert_eq!(reactor.connection_count(), 0);
}

/// Echoes, but panics on "boom".
struct Touchy {
    transport: Option<Transport>,
    lost: Shared<Vec<ConnectionLost>>,
}

impl Protocol for Touchy {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if data.windows(4).any(|w| w == b"boom") {
            panic!("boom in data_received");
        }
        self.transport.as_ref().unwrap().write(data);
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.lost.borrow_mut().push(reason);
    }
}

/// Test 11: a panicking `data_received` on one of two connections closes
/// that one (its client sees EOF or a reset); the other keeps echoing.
#[test]
fn panic_in_data_received_costs_one_connection() {
    let reactor = reactor();
    let lost: Shared<Vec<ConnectionLost>> = shared(Vec::new());
    let port = {
        let lost = lost.clone();
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    Some(Touchy {
                        transport: None,
                        lost: lost.clone(),
                    })
                }),
            )
            .unwrap()
    };
    let mut a = std_connect(port.local_addr());
    let mut b = std_connect(port.local_addr());
    wait(&reactor, "both connections", || {
        reactor.connection_count() == 2
    });

    b.write_all(b"first").unwrap();
    assert_eq!(wait_read(&reactor, &b, 5), b"first");

    a.write_all(b"boom").unwrap();
    wait(&reactor, "the panicking connection to close", || {
        !lost.borrow().is_empty()
    });
    match &lost.borrow()[0] {
        ConnectionLost::Panicked(message) => assert!(message.contains("boom in data_received")),
        other => panic!("lost for {other:?}"),
    }
    assert_eq!(reactor.connection_count(), 1);
    let mut rest = Vec::new();
    match a.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }

    for round in 0..3 {
        let message = format!("still here {round}");
        b.write_all(message.as_bytes()).unwrap();
        assert_eq!(wait_read(&reactor, &b, message.len()), message.as_bytes());
    }
    assert_eq!(lost.borrow().len(), 1);
}

/// What the slot-reuse test's server saw.
struct RaceState {
    reactor: Reactor,
    transports: RefCell<Vec<Transport>>,
    first_done: Cell<bool>,
    /// (connection index, data) per data_received.
    got: RefCell<Vec<(usize, Vec<u8>)>>,
    lost: RefCell<Vec<(usize, ConnectionLost)>>,
    welcome_addr: SocketAddr,
    newcomer: Shared<Seen>,
    newcomer_log: RefCell<Option<Shared<ClientLog>>>,
}

struct Racer {
    index: usize,
    state: Rc<RaceState>,
}

impl Protocol for Racer {
    fn connection_made(&mut self, transport: Transport) {
        self.state.transports.borrow_mut().push(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        let st = &self.state;
        st.got.borrow_mut().push((self.index, data.to_vec()));
        if st.first_done.replace(true) {
            return;
        }
        // Free the other connection's slot, and take it at once with a new
        // outgoing connection, while its readiness event is still queued in
        // this poll batch.
        let other = st.transports.borrow()[1 - self.index].clone();
        other.abort_connection();
        let newcomer = st.newcomer.clone();
        let built = Cell::new(false);
        let (factory, log) = test_client(move || {
            (!built.replace(true)).then(|| Recorder {
                seen: newcomer.clone(),
                echo: false,
            })
        });
        *st.newcomer_log.borrow_mut() = Some(log);
        st.reactor.connect_tcp(st.welcome_addr, factory, BOUND);
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.state.lost.borrow_mut().push((self.index, reason));
    }
}

/// Says "welcome" to whoever connects.
struct Welcome;

impl Protocol for Welcome {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"welcome");
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

/// Test 12: a slot closed and reused within one poll batch does not deliver
/// the old connection's event to the new one (see `ReactorStats::stale_events`).
#[test]
fn reused_slot_ignores_stale_event() {
    let reactor = reactor();
    let welcome = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(Welcome)))
        .unwrap();
    let state = Rc::new(RaceState {
        reactor: reactor.clone(),
        transports: RefCell::new(Vec::new()),
        first_done: Cell::new(false),
        got: RefCell::new(Vec::new()),
        lost: RefCell::new(Vec::new()),
        welcome_addr: welcome.local_addr(),
        newcomer: shared(Seen::default()),
        newcomer_log: RefCell::new(None),
    });
    let port = {
        let state = state.clone();
        let next = Cell::new(0);
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    let index = next.replace(next.get() + 1);
                    Some(Racer {
                        index,
                        state: state.clone(),
                    })
                }),
            )
            .unwrap()
    };
    let mut a = std_connect(port.local_addr());
    let mut b = std_connect(port.local_addr());
    wait(&reactor, "both connections accepted", || {
        state.transports.borrow().len() == 2
    });
    // Let the first readiness events of the new connections pass.
    for _ in 0..3 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    let stale_before = reactor.stats().stale_events;

    // Both sockets become readable before the reactor polls: their events
    // come in one batch.
    a.write_all(b"data from a").unwrap();
    b.write_all(b"data from b").unwrap();
    wait_acked(&a);
    wait_acked(&b);
    reactor.iterate(Some(BOUND)).unwrap();

    let got = state.got.borrow().clone();
    assert_eq!(got.len(), 1, "both connections got data: {got:?}");
    let (first, _) = got[0];
    let expected: &[u8] = if first == 0 {
        b"data from a"
    } else {
        b"data from b"
    };
    assert_eq!(got[0].1, expected);
    assert!(
        reactor.stats().stale_events > stale_before,
        "the aborted connection's event was not counted as stale"
    );
    assert!(
        state.newcomer.borrow().data.is_empty(),
        "the new connection got the old one's data"
    );

    wait(&reactor, "the new connection's welcome", || {
        state.newcomer.borrow().data.len() >= 7
    });
    assert_eq!(state.newcomer.borrow().data, b"welcome");
    let log = state.newcomer_log.borrow().clone().unwrap();
    assert_eq!(log.borrow().built, 1);
    assert!(log.borrow().failed.is_empty());
    let lost = state.lost.borrow();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].0, 1 - first);
    assert!(matches!(lost[0].1, ConnectionLost::Aborted));
    assert_eq!(
        state.got.borrow().len(),
        1,
        "the aborted connection got data"
    );
}

/// Test 14: connecting to a closed port fails with ConnectionRefused; a
/// connect time-out on the manual clock fails with TimedOut.
#[test]
fn connect_failures() {
    let reactor = reactor();
    let (factory, log) = test_client(|| Some(Echo::default()));
    let connector = reactor.connect_tcp(closed_port(), factory, BOUND);
    wait(&reactor, "client_connection_failed", || {
        !log.borrow().failed.is_empty()
    });
    {
        let log = log.borrow();
        assert_eq!(log.started, 1);
        assert_eq!(log.built, 0);
        assert_eq!(log.failed.len(), 1);
        assert_eq!(log.failed[0].kind(), io::ErrorKind::ConnectionRefused);
    }
    assert_eq!(
        connector.state(),
        gyre_reactor::ConnectorState::Disconnected
    );

    // The same through connect_protocol's Deferred.
    let d = reactor.connect_protocol(closed_port(), Echo::default());
    wait(&reactor, "connect_protocol to fail", || d.called());
    let failure = d.take_result().unwrap().unwrap_err();
    let error = failure.downcast_ref::<io::Error>().expect("an io::Error");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);

    // A time-out on the manual clock, before the loop ever runs, on a new
    // reactor (one reactor per thread: the first one goes first).
    drop((connector, d, reactor));
    let (manual, reactor) = manual_reactor();
    let listener = std::net::TcpListener::bind(any_port()).unwrap();
    let timeout = Duration::from_secs(7);
    let (factory, log) = test_client(|| Some(Echo::default()));
    let connector = reactor.connect_tcp(listener.local_addr().unwrap(), factory, timeout);
    manual.advance(timeout - Duration::from_millis(1));
    assert!(log.borrow().failed.is_empty());
    manual.advance(Duration::from_millis(1));
    {
        let log = log.borrow();
        assert_eq!(log.failed.len(), 1);
        assert_eq!(log.failed[0].kind(), io::ErrorKind::TimedOut);
    }
    assert_eq!(
        connector.state(),
        gyre_reactor::ConnectorState::Disconnected
    );
    // The kernel did connect meanwhile; the loop must not pick that up now.
    for _ in 0..3 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    let log = log.borrow();
    assert_eq!(log.failed.len(), 1);
    assert_eq!(log.built, 0);
    assert_eq!(reactor.connection_count(), 0);
}

/// `connect_protocol` fires with the transport, after `connection_made`.
#[test]
fn connect_protocol_fires_with_the_transport() {
    let reactor = reactor();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(Echo::default())))
        .unwrap();
    let (client, seen) = Recorder::new(false);
    let d = reactor.connect_protocol(port.local_addr(), client);
    let made_when_fired = Rc::new(Cell::new(None));
    let transport = shared(None);
    let d = {
        let (seen, made, transport) = (seen.clone(), made_when_fired.clone(), transport.clone());
        d.add_callback(move |t| {
            made.set(Some(seen.borrow().transport.is_some()));
            *transport.borrow_mut() = Some(t);
            Ok(())
        })
    };
    wait(&reactor, "connect_protocol", || d.called());
    assert_eq!(made_when_fired.get(), Some(true));
    let t: Transport = transport.borrow_mut().take().unwrap();
    assert_eq!(t.peer_addr(), Some(port.local_addr()));
    t.write(b"through the transport");
    wait(&reactor, "the echo", || {
        seen.borrow().data.len() >= b"through the transport".len()
    });
    assert_eq!(seen.borrow().data, b"through the transport");
    t.lose_connection();
    wait(&reactor, "the close", || !seen.borrow().lost.is_empty());
    assert!(matches!(seen.borrow().lost[0], ConnectionLost::Done));
}

/// After `stop_listening`, connecting is refused.
#[test]
fn stop_listening_refuses_connections() {
    let reactor = reactor();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(Echo::default())))
        .unwrap();
    let addr = port.local_addr();
    let mut client = std_connect(addr);
    client.write_all(b"up").unwrap();
    wait(&reactor, "the first connection", || {
        reactor.connection_count() == 1
    });
    assert_eq!(wait_read(&reactor, &client, 2), b"up");

    assert!(port.is_listening());
    port.stop_listening();
    assert!(!port.is_listening());
    let refused = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    let (factory, log) = test_client(|| Some(Echo::default()));
    reactor.connect_tcp(addr, factory, BOUND);
    wait(&reactor, "the refusal", || !log.borrow().failed.is_empty());
    assert_eq!(
        log.borrow().failed[0].kind(),
        io::ErrorKind::ConnectionRefused
    );

    // The connection accepted before stays up.
    client.write_all(b"still").unwrap();
    assert_eq!(wait_read(&reactor, &client, 5), b"still");
}

/// Listening on a port in use is an error whose message names the address.
#[test]
fn listening_on_a_port_in_use_names_the_address() {
    let reactor = reactor();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(Echo::default())))
        .unwrap();
    let addr = port.local_addr();
    let error = reactor
        .listen_tcp(addr, factory_fn(|_| Some(Echo::default())))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert!(
        error.to_string().contains(&addr.to_string()),
        "the error does not name {addr}: {error}"
    );
    assert!(port.is_listening());
}

/// `lose_connection` right after a large write sends everything, then closes.
#[test]
fn lose_connection_flushes_a_large_buffer() {
    const SIZE: usize = 8 << 20;
    let reactor = reactor();
    let lost = shared(Vec::new());
    struct Dump(Shared<Vec<ConnectionLost>>);
    impl Protocol for Dump {
        fn connection_made(&mut self, transport: Transport) {
            transport.write(&pattern(SIZE));
            assert!(transport.buffered_len() > 0);
            transport.lose_connection();
            assert!(transport.is_closing());
            transport.write(b"too late");
        }
        fn data_received(&mut self, _data: &[u8]) {}
        fn connection_lost(&mut self, reason: ConnectionLost) {
            self.0.borrow_mut().push(reason);
        }
    }
    let port = {
        let lost = lost.clone();
        reactor
            .listen_tcp(any_port(), factory_fn(move |_| Some(Dump(lost.clone()))))
            .unwrap()
    };
    let addr = port.local_addr();
    let client = peer(&reactor, move || {
        let mut stream = std_connect(addr);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).map(|_| all)
    });
    let all = client.wait(&reactor, "the client to read to EOF").unwrap();
    assert_eq!(all.len(), SIZE);
    assert!(all == pattern(SIZE), "the data is corrupt");
    wait(&reactor, "connection_lost", || !lost.borrow().is_empty());
    assert!(matches!(lost.borrow()[0], ConnectionLost::Done));
}

/// `pause_reading` holds data back; `resume_reading` delivers it.
#[test]
fn pause_and_resume_reading() {
    let reactor = reactor();
    struct Pauser(Shared<Seen>);
    impl Protocol for Pauser {
        fn connection_made(&mut self, transport: Transport) {
            transport.pause_reading();
            self.0.borrow_mut().transport = Some(transport);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.0.borrow_mut().data.extend_from_slice(data);
        }
    }
    let seen = shared(Seen::default());
    let port = {
        let seen = seen.clone();
        reactor
            .listen_tcp(any_port(), factory_fn(move |_| Some(Pauser(seen.clone()))))
            .unwrap()
    };
    let mut client = std_connect(port.local_addr());
    wait(&reactor, "the connection", || {
        seen.borrow().transport.is_some()
    });
    let transport = seen.borrow().transport.clone().unwrap();

    // Paused since connection_made: the data waits in the kernel.
    client.write_all(b"hello").unwrap();
    wait_acked(&client);
    for _ in 0..5 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert!(seen.borrow().data.is_empty(), "data delivered while paused");
    transport.resume_reading();
    wait(&reactor, "the held data", || seen.borrow().data == b"hello");

    // Paused again from outside, with a larger burst.
    transport.pause_reading();
    let burst = pattern(256 * 1024);
    let writer = {
        let mut client = client.try_clone().unwrap();
        let burst = burst.clone();
        std::thread::spawn(move || client.write_all(&burst))
    };
    for _ in 0..5 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(seen.borrow().data, b"hello", "data delivered while paused");
    transport.resume_reading();
    let total = 5 + burst.len();
    wait(&reactor, "the burst", || seen.borrow().data.len() >= total);
    writer.join().unwrap().unwrap();
    assert!(seen.borrow().data[5..] == burst[..]);
    drop(client);
    seen.borrow_mut().transport.take();
}
