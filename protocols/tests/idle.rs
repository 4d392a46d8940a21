//! `IdleTimeout` around a `LineReceiver`, over real loopback sockets, on
//! the reactor's manual clock: a client that trickles one byte per period
//! (less a bit), never finishing a line, stays connected, because any byte
//! counts, partial lines included; a client that sends nothing is closed
//! after one period; and the trickler is closed one period after it stops.

#[allow(dead_code)]
#[path = "common/run.rs"]
mod run;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
use gyre_reactor::clock::ManualClock;
use gyre_reactor::{factory_fn, ConnectionLost, IdleTimeout, Protocol, Reactor, Transport};
use run::{any_port, wait, BOUND};

const PERIOD: Duration = Duration::from_secs(10);
/// The trickler's pace: the period less a bit.
const PACE: Duration = Duration::from_millis(9_900);

/// One server connection as the test sees it.
#[derive(Default)]
struct Seen {
    transport: Option<Transport>,
    bytes: usize,
    lines: usize,
    lost: Option<ConnectionLost>,
}

type Conns = Rc<RefCell<Vec<Rc<RefCell<Seen>>>>>;

struct Lines {
    seen: Rc<RefCell<Seen>>,
}

impl LineHandler for Lines {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        self.seen.borrow_mut().transport = Some(ctx.transport().clone());
    }
    fn line_received(&mut self, _: &mut LineContext<'_>, _: &[u8]) {
        self.seen.borrow_mut().lines += 1;
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.seen.borrow_mut().lost = Some(reason);
    }
}

/// Counts the bytes on their way to the line receiver (which sees no
/// line in them).
struct Counting<P> {
    seen: Rc<RefCell<Seen>>,
    inner: P,
}

impl<P: Protocol> Protocol for Counting<P> {
    fn connection_made(&mut self, transport: Transport) {
        self.inner.connection_made(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.seen.borrow_mut().bytes += data.len();
        self.inner.data_received(data);
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.inner.connection_lost(reason);
    }
}

fn is_closing(seen: &Rc<RefCell<Seen>>) -> bool {
    let seen = seen.borrow();
    seen.lost.is_some() || seen.transport.as_ref().is_some_and(Transport::is_closing)
}

#[test]
fn a_trickling_client_stays_and_an_idle_one_is_closed() {
    let manual = ManualClock::new();
    let reactor = Reactor::builder()
        .clock(manual.clock())
        .install_signal_handlers(false)
        .build()
        .expect("reactor");
    let conns: Conns = Rc::default();
    let (c, clock) = (Rc::clone(&conns), reactor.clock().clone());
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                let seen = Rc::new(RefCell::new(Seen::default()));
                c.borrow_mut().push(Rc::clone(&seen));
                let lines = LineReceiver::new(Lines {
                    seen: Rc::clone(&seen),
                });
                let counting = Counting { seen, inner: lines };
                Some(IdleTimeout::new(&clock, PERIOD, counting))
            }),
        )
        .expect("listen");
    let addr = port.local_addr();

    let mut trickler = TcpStream::connect(addr).expect("connect");
    wait(&reactor, "the trickler's connection", || {
        conns.borrow().len() == 1
    });
    let mut idler = TcpStream::connect(addr).expect("connect");
    wait(&reactor, "the idler's connection", || {
        conns.borrow().len() == 2
    });
    let (trickling, idle) = {
        let conns = conns.borrow();
        (Rc::clone(&conns[0]), Rc::clone(&conns[1]))
    };

    // Twenty paces: 198 s, almost twenty periods. One byte of a line that
    // never ends each time: the line handler sees nothing, the wrapper sees
    // every byte.
    for round in 1..=20usize {
        trickler.write_all(b"x").expect("trickle");
        wait(&reactor, "the byte to arrive", || {
            trickling.borrow().bytes == round
        });
        manual.advance(PACE);
        reactor.iterate(Some(Duration::ZERO)).expect("iterate");
        assert!(
            !is_closing(&trickling),
            "the trickler was closed after {round} paces"
        );
        if round >= 2 {
            assert!(is_closing(&idle), "the idler is closed after one period");
        }
    }
    assert_eq!(trickling.borrow().lines, 0, "no line was ever complete");

    // The idler reads the end of stream the time-out sent.
    idler.set_read_timeout(Some(BOUND)).expect("read timeout");
    let mut buf = [0u8; 16];
    assert_eq!(idler.read(&mut buf).expect("EOF, not an error"), 0);
    drop(idler);
    wait(&reactor, "the idler's connection_lost", || {
        idle.borrow().lost.is_some()
    });
    assert!(matches!(idle.borrow().lost, Some(ConnectionLost::Done)));

    // The trickler stops: one period later it is closed too.
    manual.advance(PERIOD);
    wait(&reactor, "the trickler's time-out", || {
        is_closing(&trickling)
    });
    // The time-out ran inside `advance`: let the loop flush its close.
    reactor.iterate(Some(Duration::ZERO)).expect("iterate");
    trickler
        .set_read_timeout(Some(BOUND))
        .expect("read timeout");
    assert_eq!(trickler.read(&mut buf).expect("EOF"), 0);
}
