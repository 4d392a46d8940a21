//! The transport contract of the reactor's TCP connections (see the crate
//! docs, "Contract"), over real loopback sockets: a connect completion
//! carries data, read bursts stop at the high-water mark, drained buffers
//! shrink, factory callbacks are never lost, a close lingers instead of
//! resetting, reading stops at `lose_connection`, and a reset after EOF is
//! noticed.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use gyre_reactor::defer::Backoff;
use gyre_reactor::{
    factory_fn, ClientFactory, ConnectionLost, ConnectorState, Factory, Producer, Protocol,
    Reactor, ReconnectingClientFactory, Transport, DEFAULT_HIGH_WATER, WRITE_BUFFER_FLOOR,
};

/// One read of the reactor's shared read buffer.
const ONE_READ: usize = 64 * 1024;

// ---------------------------------------------------------------------
// 1. Any readiness event may carry data or EOF, a connect completion
//    included.
// ---------------------------------------------------------------------

/// A server that writes a greeting on accept; the client's thread is kept
/// busy (blocked on the server's "written" message) before its loop first
/// polls, so the connect completion and the greeting arrive in one
/// edge-triggered event. The greeting arrives, 100 times in a row.
#[test]
fn greeting_sent_on_accept_arrives_100_times() {
    let reactor = reactor();
    let listener = TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (written_tx, written_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        for _ in 0..100 {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"220 hello\r\n").unwrap();
            written_tx.send(()).unwrap();
            // Keep it open until the client has the greeting.
            let _ = done_rx.recv();
        }
    });
    for round in 0..100 {
        let (recorder, seen) = Recorder::new(false);
        let mut recorder = Some(recorder);
        let (factory, log) = test_client(move || recorder.take());
        let connector = reactor.connect_tcp(addr, factory, BOUND);
        // The thread is busy: no poll until the server has written.
        written_rx.recv().unwrap();
        wait(&reactor, &format!("greeting of round {round}"), || {
            seen.borrow().data == b"220 hello\r\n"
        });
        assert_eq!(log.borrow().built, 1);
        done_tx.send(()).unwrap();
        connector.disconnect();
        wait(&reactor, "the client to close", || {
            !seen.borrow().lost.is_empty()
        });
    }
    server.join().unwrap();
}

/// A server that accepts and closes at once: the client's `connection_lost`
/// and its factory's `client_connection_lost` arrive, 100 times in a row,
/// though the connect completion and the FIN come in one event.
#[test]
fn close_on_accept_reaches_connection_lost_100_times() {
    let reactor = reactor();
    let listener = TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        for _ in 0..100 {
            let (stream, _) = listener.accept().unwrap();
            drop(stream);
            closed_tx.send(()).unwrap();
        }
    });
    for round in 0..100 {
        let (recorder, seen) = Recorder::new(false);
        let mut recorder = Some(recorder);
        let (factory, log) = test_client(move || recorder.take());
        let _connector = reactor.connect_tcp(addr, factory, BOUND);
        closed_rx.recv().unwrap();
        wait(
            &reactor,
            &format!("connection_lost of round {round}"),
            || log.borrow().lost.len() == 1,
        );
        let seen = seen.borrow();
        assert_eq!(seen.lost.len(), 1, "connection_lost exactly once");
        assert_eq!(seen.eofs, 1);
    }
    server.join().unwrap();
}

// ---------------------------------------------------------------------
// 2, 3. A read burst stops at the high-water mark; a drained buffer gives
//    back its memory.
// ---------------------------------------------------------------------

/// The proxy's shared state.
#[derive(Default)]
struct ProxyState {
    /// The accepted side (from the sender A).
    a: Option<Transport>,
    /// The connected side (to the slow reader B).
    b: Option<Transport>,
    /// The largest `b.buffered_len()` seen, just after a write.
    max_buffered: usize,
    data_calls: usize,
    pauses: usize,
}

/// The A side: relays to B; pauses until B is connected.
struct ProxyIn {
    state: Shared<ProxyState>,
    reactor: Reactor,
    backend: SocketAddr,
}

/// The B side: registers the A side as its producer.
struct ProxyOut {
    state: Shared<ProxyState>,
}

/// Pauses the A side's reading while B's buffer is above the mark.
struct PauseA(Shared<ProxyState>);

impl Producer for PauseA {
    fn pause_producing(&self) {
        let mut state = self.0.borrow_mut();
        state.pauses += 1;
        if let Some(a) = &state.a {
            a.pause_reading();
        }
    }
    fn resume_producing(&self) {
        if let Some(a) = &self.0.borrow().a {
            a.resume_reading();
        }
    }
}

struct OutFactory(Option<ProxyOut>);

impl Factory for OutFactory {
    type Protocol = ProxyOut;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<ProxyOut> {
        self.0.take()
    }
}
impl ClientFactory for OutFactory {}

impl Protocol for ProxyIn {
    fn connection_made(&mut self, transport: Transport) {
        transport.pause_reading();
        self.state.borrow_mut().a = Some(transport);
        let out = ProxyOut {
            state: self.state.clone(),
        };
        self.reactor
            .connect_tcp(self.backend, OutFactory(Some(out)), BOUND);
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.data_calls += 1;
        let Some(b) = state.b.clone() else {
            panic!("data before the backend connected");
        };
        b.write(data);
        state.max_buffered = state.max_buffered.max(b.buffered_len());
        assert!(
            b.buffered_len() <= DEFAULT_HIGH_WATER + ONE_READ,
            "proxy buffer {} above high-water mark + one read",
            b.buffered_len()
        );
    }
}

impl Protocol for ProxyOut {
    fn connection_made(&mut self, transport: Transport) {
        transport.register_producer(Rc::new(PauseA(self.state.clone())));
        let mut state = self.state.borrow_mut();
        state.b = Some(transport);
        if let Some(a) = &state.a {
            a.resume_reading();
        }
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

/// A -> proxy -> B, with B not reading at first: the proxy's write buffer
/// towards B never exceeds the high-water mark plus one read (checked at
/// every `data_received`), and once the burst has drained, both of the
/// proxy's buffers are back at their floor.
#[test]
fn proxy_burst_stops_at_the_high_water_mark() {
    const TOTAL: usize = 16 * 1024 * 1024;
    let reactor = reactor();
    let backend = TcpListener::bind(any_port()).unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader = peer(&reactor, move || {
        let (mut stream, _) = backend.accept().unwrap();
        stream.set_read_timeout(Some(BOUND)).unwrap();
        go_rx.recv().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        let mut good = true;
        while got < TOTAL {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "EOF after {got} bytes");
            good &= buf[..n]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern_byte(got + i));
            got += n;
        }
        (stream, got, good)
    });

    let state = shared(ProxyState::default());
    let port = {
        let (state, r) = (state.clone(), reactor.clone());
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    Some(ProxyIn {
                        state: state.clone(),
                        reactor: r.clone(),
                        backend: backend_addr,
                    })
                }),
            )
            .unwrap()
    };
    let proxy_addr = port.local_addr();
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        let mut stream = std_connect(proxy_addr);
        stream.write_all(&pattern(TOTAL)).unwrap();
        let _ = close_rx.recv();
    });

    wait(&reactor, "the producer to be paused", || {
        state.borrow().pauses >= 1
    });
    go_tx.send(()).unwrap();
    let (b_stream, got, good) = reader.wait(&reactor, "B to read everything");
    assert_eq!(got, TOTAL);
    assert!(good, "B read the bytes A sent, in order");
    wait(&reactor, "the proxy's buffers to drain", || {
        let state = state.borrow();
        state.b.as_ref().is_some_and(|b| b.buffered_len() == 0)
    });
    {
        let state = state.borrow();
        assert!(state.data_calls > 0);
        assert!(
            state.max_buffered <= DEFAULT_HIGH_WATER + ONE_READ,
            "the proxy buffered {} bytes",
            state.max_buffered
        );
        for t in [&state.a, &state.b].into_iter().flatten() {
            assert!(
                t.buffer_capacity() <= WRITE_BUFFER_FLOOR,
                "a drained buffer keeps {} bytes",
                t.buffer_capacity()
            );
        }
    }
    close_tx.send(()).unwrap();
    sender.join().unwrap();
    drop(b_stream);
    wait(&reactor, "the proxied connections to close", || {
        reactor.connection_count() == 0
    });
    // Break the protocol -> state -> transport cycles.
    let mut state = state.borrow_mut();
    state.a = None;
    state.b = None;
}

// ---------------------------------------------------------------------
// 4. Neither a factory nor a connector callback is ever lost.
// ---------------------------------------------------------------------

/// User code holds the client factory's cell while a connect starts and
/// fails: `started_connecting` and `client_connection_failed` still arrive,
/// once the cell is free.
#[test]
fn client_factory_calls_wait_for_a_busy_cell() {
    let reactor = reactor();
    let (factory, log) = test_client(|| Some(Echo::default()));
    let factory = Rc::new(RefCell::new(factory));
    let held = factory.borrow_mut();
    let connector = reactor.connect_tcp(closed_port(), factory.clone(), BOUND);
    wait(&reactor, "the attempt to fail", || {
        connector.state() == ConnectorState::Disconnected
    });
    assert_eq!(log.borrow().started, 0, "not called while held");
    drop(held);
    wait(&reactor, "the factory calls", || {
        log.borrow().failed.len() == 1
    });
    assert_eq!(log.borrow().started, 1);
}

/// The connection completes, and later closes, while user code holds the
/// factory's cell: the protocol is built once the cell is free (and the
/// data that came meanwhile is delivered), and `client_connection_lost`
/// arrives.
#[test]
fn client_factory_builds_and_hears_lost_after_a_busy_cell() {
    let reactor = reactor();
    let listener = TcpListener::bind(any_port()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (recorder, seen) = Recorder::new(false);
    let mut recorder = Some(recorder);
    let (factory, log) = test_client(move || recorder.take());
    let factory = Rc::new(RefCell::new(factory));

    let held = factory.borrow_mut();
    let connector = reactor.connect_tcp(addr, factory.clone(), BOUND);
    let server = peer(&reactor, move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(b"hi").unwrap();
        stream
    });
    let server_stream = server.wait(&reactor, "the server to accept");
    // The connection was established before the server's accept returned,
    // so its readiness is already queued: one more poll handles it, with
    // the cell still held.
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!(
        connector.state(),
        ConnectorState::Connecting,
        "waits for the factory"
    );
    assert_eq!(log.borrow().built, 0, "not called while held");
    drop(held);
    wait(&reactor, "the protocol to be built and fed", || {
        seen.borrow().data == b"hi"
    });
    assert!(log.borrow().failed.is_empty());
    assert_eq!(log.borrow().started, 1);

    let held = factory.borrow_mut();
    drop(server_stream);
    wait(&reactor, "the connection to close", || {
        connector.state() == ConnectorState::Disconnected
    });
    assert!(log.borrow().lost.is_empty(), "not called while held");
    drop(held);
    wait(&reactor, "client_connection_lost", || {
        log.borrow().lost.len() == 1
    });
    assert_eq!(seen.borrow().lost.len(), 1);
}

/// A reconnecting client kept in a shared cell: its first failure comes
/// while user code holds the cell, and it still keeps reconnecting.
#[test]
fn reconnecting_client_keeps_reconnecting_past_a_busy_cell() {
    let reactor = reactor();
    let (inner, log) = test_client(|| Some(Echo::default()));
    let backoff = Backoff::default()
        .initial(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5));
    let factory = Rc::new(RefCell::new(ReconnectingClientFactory::new(inner, backoff)));
    let control = factory.borrow().control();
    let held = factory.borrow_mut();
    let connector = reactor.connect_tcp(closed_port(), factory.clone(), BOUND);
    wait(&reactor, "the first attempt to fail", || {
        connector.state() == ConnectorState::Disconnected
    });
    drop(held);
    wait(&reactor, "three failures (reconnecting)", || {
        log.borrow().failed.len() >= 3
    });
    control.stop_trying();
}

/// A server factory in a shared cell: `start_factory` and the
/// `build_protocol` of a connection accepted while user code holds the
/// cell are delivered once it is free; the connection is not refused.
#[test]
fn server_factory_calls_wait_for_a_busy_cell() {
    #[derive(Default)]
    struct Server {
        started: usize,
        built: usize,
        seen: Vec<Shared<Seen>>,
    }
    impl Factory for Server {
        type Protocol = Recorder;
        fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Recorder> {
            self.built += 1;
            let (recorder, seen) = Recorder::new(true);
            self.seen.push(seen);
            Some(recorder)
        }
        fn start_factory(&mut self) {
            self.started += 1;
        }
    }
    let reactor = reactor();
    let factory = Rc::new(RefCell::new(Server::default()));
    let held = factory.borrow_mut();
    let port = reactor.listen_tcp(any_port(), factory.clone()).unwrap();
    let mut client = std_connect(port.local_addr());
    client.write_all(b"ping").unwrap();
    wait(&reactor, "the accept", || reactor.stats().accepted == 1);
    assert_eq!(held.started + held.built, 0, "not called while held");
    drop(held);
    assert_eq!(wait_read(&reactor, &client, 4), b"ping");
    assert_eq!(factory.borrow().started, 1);
    assert_eq!(factory.borrow().built, 1);
    drop(client);
    wait(&reactor, "the server side to close", || {
        factory.borrow().seen[0].borrow().lost.len() == 1
    });
}

// ---------------------------------------------------------------------
// 5. A close with unread input lingers; it never resets answers away.
// ---------------------------------------------------------------------

/// Answers each line; on "quit" answers "bye" and closes, ignoring the rest.
struct Answerer {
    transport: Option<Transport>,
    partial: Vec<u8>,
    quit: bool,
}

impl Protocol for Answerer {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let Some(t) = self.transport.clone() else {
            return;
        };
        self.partial.extend_from_slice(data);
        while !self.quit {
            let Some(end) = self.partial.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if line == b"quit\n" {
                self.quit = true;
                t.write(b"bye\n");
                t.lose_connection();
            } else {
                t.write(b"answer ");
                t.write(&line);
            }
        }
        if self.quit {
            self.partial.clear();
        }
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.transport = None;
    }
}

/// A peer keeps sending (16 MiB, more than the kernel's receive buffer)
/// after the line that makes the server close: it still receives every
/// answer written before the close, and then EOF, not a reset.
#[test]
fn close_with_unread_input_lingers_instead_of_resetting() {
    const JUNK: usize = 16 * 1024 * 1024;
    let reactor = reactor();
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(|_| {
                Some(Answerer {
                    transport: None,
                    partial: Vec::new(),
                    quit: false,
                })
            }),
        )
        .unwrap();
    let stream = std_connect(port.local_addr());
    let mut writer = stream.try_clone().unwrap();
    let writer = peer(&reactor, move || {
        let mut head = Vec::new();
        for i in 0..100 {
            head.extend_from_slice(format!("ask {i}\n").as_bytes());
        }
        head.extend_from_slice(b"quit\n");
        writer.write_all(&head)?;
        let junk = vec![b'x'; 64 * 1024];
        for _ in 0..JUNK / junk.len() {
            writer.write_all(&junk)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let reader = peer(&reactor, move || {
        let mut stream = stream;
        let mut got = Vec::new();
        let end = stream.read_to_end(&mut got).map(|_| ());
        (got, end)
    });
    let (got, end) = reader.wait(&reactor, "the client to read to the end");
    let mut expected = Vec::new();
    for i in 0..100 {
        expected.extend_from_slice(format!("answer ask {i}\n").as_bytes());
    }
    expected.extend_from_slice(b"bye\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    assert!(end.is_ok(), "the client saw {end:?}, not EOF");
    writer
        .wait(&reactor, "the peer to send everything")
        .expect("the peer could send everything");
    wait(&reactor, "the server to close", || {
        reactor.connection_count() == 0
    });
}

// ---------------------------------------------------------------------
// 6. Reading stops at lose_connection.
// ---------------------------------------------------------------------

/// Records data; on its first data writes a large answer and loses the
/// connection.
struct Closer {
    transport: Option<Transport>,
    seen: Shared<Seen>,
    answer: usize,
}

impl Protocol for Closer {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        let first = self.seen.borrow().data.is_empty();
        self.seen.borrow_mut().data.extend_from_slice(data);
        if first {
            if let Some(t) = &self.transport {
                t.write(&vec![b'a'; self.answer]);
                t.lose_connection();
            }
        }
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.seen.borrow_mut().lost.push(reason);
        self.transport = None;
    }
}

/// Data that arrives after `lose_connection` (while the answer is still
/// flushing) is not delivered.
#[test]
fn no_data_is_delivered_after_lose_connection() {
    const ANSWER: usize = 32 * 1024 * 1024;
    let reactor = reactor();
    let seen = shared(Seen::default());
    let port = {
        let seen = seen.clone();
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    Some(Closer {
                        transport: None,
                        seen: seen.clone(),
                        answer: ANSWER,
                    })
                }),
            )
            .unwrap()
    };
    let addr = port.local_addr();
    let client = peer(&reactor, move || {
        let mut stream = std_connect(addr);
        stream.write_all(b"stop\n").unwrap();
        // The first byte of the answer: the server has called
        // lose_connection, and is still flushing.
        let first = read_n(&mut stream, 1);
        stream.write_all(b"more\n").unwrap();
        let mut rest = Vec::new();
        let end = stream.read_to_end(&mut rest).map(|_| ());
        (first.len() + rest.len(), end)
    });
    let (got, end) = client.wait(&reactor, "the client to read the answer");
    assert_eq!(got, ANSWER);
    assert!(end.is_ok(), "{end:?}");
    wait(&reactor, "connection_lost", || {
        seen.borrow().lost.len() == 1
    });
    assert_eq!(seen.borrow().data, b"stop\n");
}

// ---------------------------------------------------------------------
// 7. A reset after EOF is noticed.
// ---------------------------------------------------------------------

/// Keeps the connection open after EOF (a half-close), recording.
struct KeepOpen(Shared<Seen>);

impl Protocol for KeepOpen {
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.0.borrow_mut().eofs += 1;
        true
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.0.borrow_mut().lost.push(reason);
    }
}

/// After the peer's FIN the server keeps the connection open; the peer's
/// later reset closes it with an error.
#[test]
fn reset_after_eof_closes_with_the_error() {
    let reactor = reactor();
    let seen = shared(Seen::default());
    let port = {
        let seen = seen.clone();
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| Some(KeepOpen(seen.clone()))),
            )
            .unwrap()
    };
    let mut client = std_connect(port.local_addr());
    client.write_all(b"hi").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    wait(&reactor, "the server to read EOF", || {
        seen.borrow().eofs == 1
    });
    assert_eq!(seen.borrow().data, b"hi");
    assert!(seen.borrow().lost.is_empty(), "kept open after EOF");
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client); // RST
    wait(&reactor, "connection_lost after the reset", || {
        seen.borrow().lost.len() == 1
    });
    let seen = seen.borrow();
    assert!(
        matches!(seen.lost[0], ConnectionLost::Error(_)),
        "lost with {:?}",
        seen.lost[0]
    );
}
