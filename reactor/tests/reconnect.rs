//! The reconnecting client on a manual clock: one pending retry after a lost
//! connection, delays that grow and cap, and `stop_trying`.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use gyre_reactor::clock::ManualClock;
use gyre_reactor::defer::{Backoff, BackoffState};
use gyre_reactor::{
    factory_fn, ClientFactory, ConnectionLost, Connector, Factory, Protocol, Reactor,
    ReconnectingClientFactory, Transport,
};

const BOUND: Duration = Duration::from_secs(20);

/// Counts what happens to the client side.
#[derive(Default)]
struct Events {
    made: Cell<u32>,
    lost: Cell<u32>,
    failed: RefCell<Vec<io::ErrorKind>>,
}

struct Client;
impl Protocol for Client {
    fn data_received(&mut self, _data: &[u8]) {}
}

struct CountingFactory(Rc<Events>);
impl Factory for CountingFactory {
    type Protocol = Client;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Client> {
        self.0.made.set(self.0.made.get() + 1);
        Some(Client)
    }
}
impl ClientFactory for CountingFactory {
    fn client_connection_failed(&mut self, _c: &Connector, reason: &io::Error) {
        self.0.failed.borrow_mut().push(reason.kind());
    }
    fn client_connection_lost(&mut self, _c: &Connector, _reason: &ConnectionLost) {
        self.0.lost.set(self.0.lost.get() + 1);
    }
}

/// A server that keeps the transports of its connections so the test can
/// drop them.
struct Keeper(Rc<RefCell<Vec<Transport>>>);
impl Protocol for Keeper {
    fn connection_made(&mut self, t: Transport) {
        self.0.borrow_mut().push(t);
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

fn setup() -> (ManualClock, Reactor) {
    let clock = ManualClock::new();
    let reactor = Reactor::builder()
        .clock(clock.clock())
        .install_signal_handlers(false)
        .build()
        .expect("reactor");
    (clock, reactor)
}

fn backoff() -> BackoffState {
    let backoff = Backoff::default()
        .initial(Duration::from_secs(1))
        .factor(2.0)
        .max_delay(Duration::from_secs(4))
        .jitter(0.0);
    BackoffState::with_seed(backoff, 1)
}

#[test]
fn lost_connection_schedules_one_retry_and_delays_grow_and_cap() {
    let (clock, reactor) = setup();
    let server_side = Rc::new(RefCell::new(Vec::new()));
    let keep = Rc::clone(&server_side);
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0".parse().unwrap(),
            factory_fn(move |_| Some(Keeper(Rc::clone(&keep)))),
        )
        .expect("listen");
    let addr = port.local_addr();

    let events = Rc::new(Events::default());
    let factory =
        ReconnectingClientFactory::with_state(CountingFactory(Rc::clone(&events)), backoff());
    let control = factory.control();
    reactor.connect_tcp(addr, factory, Duration::from_secs(5));
    assert!(reactor
        .run_until(
            || events.made.get() == 1 && server_side.borrow().len() == 1,
            BOUND
        )
        .unwrap());
    assert!(control.pending_retry().is_none());

    // The server drops the connection: exactly one retry is pending, after
    // the initial delay.
    server_side.borrow()[0].abort_connection();
    assert!(reactor.run_until(|| events.lost.get() == 1, BOUND).unwrap());
    assert!(control.pending_retry().is_some());
    assert_eq!(clock.pending_calls().len(), 1, "exactly one pending call");
    assert_eq!(control.last_delay(), Some(Duration::from_secs(1)));

    // With the port closed, every retry is refused, and the delay doubles up
    // to the cap.
    drop(port.stop_listening());
    let mut delays = vec![control.last_delay().unwrap()];
    for n in 1..=4 {
        clock.advance(control.last_delay().unwrap());
        assert!(reactor
            .run_until(|| events.failed.borrow().len() == n, BOUND)
            .unwrap());
        assert_eq!(
            events.failed.borrow()[n - 1],
            io::ErrorKind::ConnectionRefused
        );
        assert_eq!(
            clock.pending_calls().len(),
            1,
            "one retry pending at a time"
        );
        delays.push(control.last_delay().unwrap());
    }
    assert_eq!(
        delays,
        [1, 2, 4, 4, 4].map(Duration::from_secs).to_vec(),
        "delays grow and cap"
    );
    assert_eq!(events.made.get(), 1);

    control.stop_trying();
    assert!(control.pending_retry().is_none());
    assert!(clock.pending_calls().is_empty());
}

#[test]
fn stop_trying_while_connected_means_no_reconnect() {
    let (clock, reactor) = setup();
    let server_side = Rc::new(RefCell::new(Vec::new()));
    let keep = Rc::clone(&server_side);
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0".parse().unwrap(),
            factory_fn(move |_| Some(Keeper(Rc::clone(&keep)))),
        )
        .expect("listen");
    let events = Rc::new(Events::default());
    let factory =
        ReconnectingClientFactory::with_state(CountingFactory(Rc::clone(&events)), backoff());
    let control = factory.control();
    reactor.connect_tcp(port.local_addr(), factory, Duration::from_secs(5));
    assert!(reactor
        .run_until(|| server_side.borrow().len() == 1, BOUND)
        .unwrap());

    control.stop_trying();
    assert!(!control.continue_trying());
    server_side.borrow()[0].abort_connection();
    assert!(reactor.run_until(|| events.lost.get() == 1, BOUND).unwrap());
    assert!(control.pending_retry().is_none());
    assert!(clock.pending_calls().is_empty());
    // Nothing reconnects, however far time moves.
    clock.advance(Duration::from_secs(3600));
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!(events.made.get(), 1);
    assert_eq!(server_side.borrow().len(), 1);
}

#[test]
fn gives_up_after_max_retries() {
    let (clock, reactor) = setup();
    // A port that refuses: bind, learn the port, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let events = Rc::new(Events::default());
    let backoff = Backoff::default()
        .initial(Duration::from_secs(1))
        .factor(2.0)
        .max_delay(Duration::from_secs(4))
        .max_retries(2)
        .jitter(0.0);
    let factory = ReconnectingClientFactory::new(CountingFactory(Rc::clone(&events)), backoff);
    let control = factory.control();
    reactor.connect_tcp(addr, factory, Duration::from_secs(5));
    for n in 1..=3 {
        assert!(reactor
            .run_until(|| events.failed.borrow().len() == n, BOUND)
            .unwrap());
        if let Some(delay) = control.pending_retry().map(|c| c.time() - clock.now()) {
            clock.advance(delay);
        }
    }
    assert_eq!(events.failed.borrow().len(), 3, "first attempt + 2 retries");
    assert!(!control.continue_trying());
    assert!(clock.pending_calls().is_empty());
}
