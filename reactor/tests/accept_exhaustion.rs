//! Running out of file descriptors while listening: the spare descriptor,
//! the refusal line, back-off, and one event per episode. Its own test
//! binary, because it lowers the process's limit on open files.

mod common;

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use common::{any_port, manual_reactor, wait};
use gyre_reactor::{factory_fn, ListenOptions, PortEvent, Protocol};
use socket2::{Domain, Socket, Type};

struct Nothing;
impl Protocol for Nothing {
    fn data_received(&mut self, _: &[u8]) {}
}

fn rlimit() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain libc call on a valid struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_soft_limit(cur: libc::rlim_t) {
    let mut lim = rlimit();
    lim.rlim_cur = cur;
    // SAFETY: a plain libc call on a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

/// Opens /dev/null until the process is out of descriptors; returns them.
fn fill_descriptors() -> Vec<File> {
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(24) => return held,
            Err(e) => panic!("open: {e}"),
        }
        assert!(held.len() < 100_000, "no descriptor limit?");
    }
}

/// Reads until EOF (the socket is blocking with a time-out).
fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(common::BOUND)).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("read to EOF");
    got
}

#[test]
fn out_of_descriptors_refuses_with_the_line_backs_off_and_reports_one_episode() {
    let (clock, reactor) = manual_reactor();
    let events: Rc<RefCell<Vec<PortEvent>>> = Rc::default();
    let ev = Rc::clone(&events);
    let accepted = Rc::new(std::cell::Cell::new(0));
    let a = Rc::clone(&accepted);
    let port = reactor
        .listen_tcp_with(
            any_port(),
            factory_fn(move |_| {
                a.set(a.get() + 1);
                Some(Nothing)
            }),
            ListenOptions::new()
                .refusal_line(&b"busy: out of descriptors\n"[..])
                .exhaustion_backoff(Duration::from_millis(10), Duration::from_millis(80))
                .on_event(move |e| ev.borrow_mut().push(e.clone())),
        )
        .unwrap();
    let addr = port.local_addr();
    // Client sockets made before the limit bites (connecting needs no new
    // descriptor).
    let sockets: Vec<Socket> = (0..7)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    let saved = rlimit();
    set_soft_limit(256);
    let mut filler = fill_descriptors();

    let mut sockets = sockets.into_iter();
    let mut connect = || -> TcpStream {
        let s = sockets.next().unwrap();
        s.connect(&addr.into()).expect("connect into the backlog");
        s.into()
    };
    // Two clients wait; the first accept fails with EMFILE: both are
    // refused with the line, through the spare descriptor.
    let mut first = connect();
    let mut second = connect();
    wait(&reactor, "the episode to start", || {
        !events.borrow().is_empty()
    });
    assert!(port.is_exhausted());
    assert_eq!(read_to_end(&mut first), b"busy: out of descriptors\n");
    assert_eq!(read_to_end(&mut second), b"busy: out of descriptors\n");

    // Retries with back-off, still out of descriptors: more refusals, no
    // more events (one per episode, not per attempt). The clients are held:
    // closing one would free a descriptor.
    let mut held = vec![first, second];
    for round in 0..4 {
        let mut client = connect();
        clock.advance(Duration::from_millis(80));
        reactor.iterate(Some(Duration::ZERO)).unwrap();
        assert_eq!(
            read_to_end(&mut client),
            b"busy: out of descriptors\n",
            "round {round}"
        );
        held.push(client);
    }
    assert_eq!(events.borrow().len(), 1, "{:?}", events.borrow());
    assert!(matches!(&events.borrow()[0], PortEvent::Exhausted { .. }));
    assert_eq!(accepted.get(), 0);

    // Descriptors come back: the next retry accepts, and the episode ends.
    filler.clear();
    held.clear();
    set_soft_limit(saved.rlim_cur);
    let client = connect();
    clock.advance(Duration::from_millis(80));
    wait(&reactor, "the connection to be accepted", || {
        accepted.get() == 1
    });
    assert!(!port.is_exhausted());
    let events = events.borrow();
    assert_eq!(events.len(), 2, "{events:?}");
    match &events[1] {
        PortEvent::Recovered {
            refused, attempts, ..
        } => {
            assert_eq!(*refused, 6);
            assert!(*attempts >= 5, "{attempts}");
        }
        other => panic!("{other:?}"),
    }
    drop(client);
}
