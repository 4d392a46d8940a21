//! `splice`: a proxy in the reactor splices each accepted connection to a
//! new upstream one, over real loopback sockets. 500 MB go each way at
//! once with the spliced write buffers never above the high-water mark
//! plus one read (sampled on every loop iteration, and after every write
//! inside the splice); a half-close travels through the proxy while the
//! other direction goes on; a reset on one side aborts the other.

mod common;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use common::{any_port, reactor, wait, Recorder};
use gyre_reactor::{
    factory_fn, splice, ConnectionLost, ListeningPort, Producer, Protocol, Reactor, Splice,
    Transport, DEFAULT_HIGH_WATER,
};

/// One read of a TCP connection: the reactor's read buffer.
const ONE_READ: usize = 64 * 1024;
/// The upper bound of the big transfer (it takes seconds; this is for a
/// machine several times slower, in a debug build).
const BIG_BOUND: Duration = Duration::from_secs(600);

/// A proxy on `reactor` to `upstream`; the splices it made, in order.
fn proxy(reactor: &Reactor, upstream: SocketAddr) -> (ListeningPort, Rc<RefCell<Vec<Splice>>>) {
    let splices: Rc<RefCell<Vec<Splice>>> = Rc::default();
    let (s, r) = (Rc::clone(&splices), reactor.clone());
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_peer| {
                let (client_end, upstream_end, splice) = splice();
                let on_failure = splice.clone();
                let connected = r.connect_protocol(upstream, upstream_end);
                drop(connected.add_errback(move |f| {
                    on_failure.abort();
                    Err(f)
                }));
                s.borrow_mut().push(splice);
                Some(client_end)
            }),
        )
        .expect("listen");
    (port, splices)
}

// --- the big transfer ---------------------------------------------------

/// The pattern's length: prime, so that its phase drifts across reads.
const PATTERN: usize = 65_521;

/// `PATTERN` bytes twice over, so any window of up to `PATTERN` bytes at
/// any phase is one contiguous slice.
fn pattern() -> Rc<Vec<u8>> {
    let one: Vec<u8> = (0..PATTERN)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect();
    Rc::new([one.clone(), one].concat())
}

/// Sends `total` bytes of the pattern as a push producer, then half-closes;
/// checks that what it receives is `total` bytes of the pattern.
struct Pump {
    state: Rc<PumpState>,
}

struct PumpState {
    reactor: Reactor,
    pattern: Rc<Vec<u8>>,
    total: u64,
    sent: Cell<u64>,
    received: Cell<u64>,
    paused: Cell<bool>,
    corrupt: Cell<bool>,
    eof: Cell<bool>,
    lost: RefCell<Option<ConnectionLost>>,
    transport: RefCell<Option<Transport>>,
    me: std::rc::Weak<PumpState>,
}

impl PumpState {
    fn new(reactor: &Reactor, pattern: &Rc<Vec<u8>>, total: u64) -> Rc<PumpState> {
        Rc::new_cyclic(|me| PumpState {
            reactor: reactor.clone(),
            pattern: Rc::clone(pattern),
            total,
            sent: Cell::new(0),
            received: Cell::new(0),
            paused: Cell::new(false),
            corrupt: Cell::new(false),
            eof: Cell::new(false),
            lost: RefCell::new(None),
            transport: RefCell::new(None),
            me: me.clone(),
        })
    }

    /// Writes a few chunks, then comes back from the loop unless paused.
    fn fill(&self) {
        let Some(t) = self.transport.borrow().clone() else {
            return;
        };
        for _ in 0..4 {
            if self.paused.get() || t.is_closing() {
                return;
            }
            let left = self.total - self.sent.get();
            if left == 0 {
                t.half_close();
                return;
            }
            let at = (self.sent.get() % PATTERN as u64) as usize;
            let n = (left as usize).min(PATTERN);
            t.write(&self.pattern[at..at + n]);
            self.sent.set(self.sent.get() + n as u64);
        }
        let me = self.me.clone();
        self.reactor.call_soon(move || {
            if let Some(me) = me.upgrade() {
                me.fill();
            }
        });
    }

    fn done(&self) -> bool {
        self.lost.borrow().is_some()
    }
}

struct PumpProducer(Rc<PumpState>);

impl Producer for PumpProducer {
    fn pause_producing(&self) {
        self.0.paused.set(true);
    }
    fn resume_producing(&self) {
        self.0.paused.set(false);
        self.0.fill();
    }
}

impl Protocol for Pump {
    fn connection_made(&mut self, transport: Transport) {
        transport.register_producer(Rc::new(PumpProducer(Rc::clone(&self.state))));
        *self.state.transport.borrow_mut() = Some(transport);
        self.state.fill();
    }

    fn data_received(&mut self, mut data: &[u8]) {
        let s = &self.state;
        while !data.is_empty() {
            let at = (s.received.get() % PATTERN as u64) as usize;
            let n = data.len().min(PATTERN);
            if data[..n] != s.pattern[at..at + n] {
                s.corrupt.set(true);
            }
            s.received.set(s.received.get() + n as u64);
            data = &data[n..];
        }
    }

    fn eof_received(&mut self) -> bool {
        self.state.eof.set(true);
        // Keep writing until all is sent; the connection closes once both
        // directions are done.
        true
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        *self.state.lost.borrow_mut() = Some(reason);
    }
}

#[test]
fn splice_moves_500_mb_each_way_with_bounded_buffers() {
    const TOTAL: u64 = 500 * 1024 * 1024;
    let reactor = reactor();
    let pattern = pattern();

    let server_state: Rc<RefCell<Option<Rc<PumpState>>>> = Rc::default();
    let (ss, r, p) = (
        Rc::clone(&server_state),
        reactor.clone(),
        Rc::clone(&pattern),
    );
    let server = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                let state = PumpState::new(&r, &p, TOTAL);
                *ss.borrow_mut() = Some(Rc::clone(&state));
                Some(Pump { state })
            }),
        )
        .expect("listen");
    let (proxy_port, splices) = proxy(&reactor, server.local_addr());

    let client = PumpState::new(&reactor, &pattern, TOTAL);
    drop(reactor.connect_protocol(
        proxy_port.local_addr(),
        Pump {
            state: Rc::clone(&client),
        },
    ));

    let bound = DEFAULT_HIGH_WATER + ONE_READ;
    let max_sampled = Cell::new(0usize);
    let samples = Cell::new(0u64);
    let finished = reactor
        .run_until(
            || {
                if let Some(splice) = splices.borrow().first() {
                    let (a, b) = splice.buffered();
                    max_sampled.set(max_sampled.get().max(a).max(b));
                    samples.set(samples.get() + 1);
                }
                let server_done = server_state.borrow().as_ref().is_some_and(|s| s.done());
                client.done() && server_done
            },
            BIG_BOUND,
        )
        .expect("run_until");
    assert!(finished, "the transfer did not finish within {BIG_BOUND:?}");

    let server = server_state.borrow().clone().expect("the server side");
    for (who, pump) in [("client", &client), ("server", &server)] {
        assert_eq!(pump.sent.get(), TOTAL, "{who} sent everything");
        assert_eq!(pump.received.get(), TOTAL, "{who} received everything");
        assert!(!pump.corrupt.get(), "{who} received the bytes unchanged");
        assert!(pump.eof.get(), "{who} saw the end of stream");
        let lost = pump.lost.borrow();
        assert!(
            matches!(*lost, Some(ConnectionLost::Done)),
            "{who} closed cleanly: {lost:?}"
        );
    }

    let splice = splices.borrow()[0].clone();
    wait(&reactor, "the splice to finish", || splice.is_done());
    let stats = splice.stats();
    assert_eq!(stats.first_to_second, TOTAL);
    assert_eq!(stats.second_to_first, TOTAL);
    assert!(samples.get() > 0);
    assert!(
        max_sampled.get() <= bound,
        "a spliced write buffer held {} bytes between iterations (bound {bound})",
        max_sampled.get()
    );
    assert!(
        stats.max_buffered <= bound,
        "a spliced write buffer held {} bytes after a write (bound {bound})",
        stats.max_buffered
    );
    assert!(
        stats.max_buffered > DEFAULT_HIGH_WATER / 2,
        "the transfer did push against the mark ({} bytes)",
        stats.max_buffered
    );
    let done = splice.done().take_result().expect("fired").expect("stats");
    assert_eq!(done, stats);
}

// --- half-close and errors ----------------------------------------------

/// Echoes upper-cased once the client has finished sending (on its EOF),
/// then closes.
struct Shout {
    transport: Option<Transport>,
    got: Vec<u8>,
    eof_after: Rc<Cell<Option<usize>>>,
}

impl Protocol for Shout {
    fn connection_made(&mut self, t: Transport) {
        self.transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn eof_received(&mut self) -> bool {
        self.eof_after.set(Some(self.got.len()));
        if let Some(t) = &self.transport {
            t.write(&self.got.to_ascii_uppercase());
            t.lose_connection();
        }
        true
    }
}

#[test]
fn splice_propagates_a_half_close() {
    let reactor = reactor();
    let eof_after: Rc<Cell<Option<usize>>> = Rc::default();
    let e = Rc::clone(&eof_after);
    let server = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                Some(Shout {
                    transport: None,
                    got: Vec::new(),
                    eof_after: Rc::clone(&e),
                })
            }),
        )
        .expect("listen");
    let (proxy_port, splices) = proxy(&reactor, server.local_addr());

    let (client, seen) = Recorder::new(false);
    let connected = reactor.connect_protocol(proxy_port.local_addr(), client);
    wait(&reactor, "the client to connect", || connected.called());
    let t = connected.take_result().unwrap().expect("connected");
    t.write(b"hello through the proxy");
    t.half_close();

    wait(&reactor, "the answer and the close", || {
        !seen.borrow().lost.is_empty()
    });
    assert_eq!(
        eof_after.get(),
        Some(23),
        "the server saw all the data, then the client's EOF"
    );
    let seen = seen.borrow();
    assert_eq!(
        seen.data, b"HELLO THROUGH THE PROXY",
        "answered after the half-close"
    );
    assert_eq!(seen.eofs, 1, "the server's close reached the client as EOF");
    assert!(seen.lost[0].is_clean(), "{:?}", seen.lost[0]);

    let splice = splices.borrow()[0].clone();
    wait(&reactor, "the splice to finish", || splice.is_done());
    let stats = splice.done().take_result().expect("fired").expect("stats");
    assert_eq!((stats.first_to_second, stats.second_to_first), (23, 23));
}

#[test]
fn splice_aborts_the_other_side_on_a_reset() {
    let reactor = reactor();
    let (server_proto, server_seen) = Recorder::new(false);
    let slot = RefCell::new(Some(server_proto));
    let server = reactor
        .listen_tcp(any_port(), factory_fn(move |_| slot.borrow_mut().take()))
        .expect("listen");
    let (proxy_port, splices) = proxy(&reactor, server.local_addr());
    let (client, client_seen) = Recorder::new(false);
    let connected = reactor.connect_protocol(proxy_port.local_addr(), client);
    wait(&reactor, "both sides up", || {
        server_seen.borrow().transport.is_some() && connected.called()
    });
    let server_transport = server_seen.borrow().transport.clone().unwrap();
    server_transport.abort_connection(); // RST towards the proxy
    wait(&reactor, "the client to be cut off", || {
        !client_seen.borrow().lost.is_empty()
    });
    assert!(
        !client_seen.borrow().lost[0].is_clean(),
        "{:?}",
        client_seen.borrow().lost[0]
    );
    let splice = splices.borrow()[0].clone();
    wait(&reactor, "the splice to finish", || splice.is_done());
}

#[test]
fn splice_cuts_the_client_off_when_upstream_is_unreachable() {
    let reactor = reactor();
    let (proxy_port, splices) = proxy(&reactor, common::closed_port());
    let (client, seen) = Recorder::new(false);
    drop(reactor.connect_protocol(proxy_port.local_addr(), client));
    wait(&reactor, "the client to be cut off", || {
        !seen.borrow().lost.is_empty()
    });
    let splice = splices.borrow()[0].clone();
    wait(&reactor, "the splice to finish", || splice.is_done());
}
