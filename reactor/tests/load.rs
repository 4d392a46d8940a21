//! Heavier traffic: flow control with a producer over 100 MB, and 1,000
//! concurrent connections.

mod common;

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::rc::{Rc, Weak};

use common::*;
use gyre_reactor::{factory_fn, ConnectionLost, Producer, Protocol, Reactor, Transport};

const TOTAL: usize = 100 << 20;
/// A multiple of the pattern's period, so every chunk starts at pattern offset 0.
const CHUNK: usize = 251 * 256;
const HIGH_WATER: usize = 256 * 1024;
const LOW_WATER: usize = 64 * 1024;

/// What the producer did.
#[derive(Default)]
struct ProducerLog {
    sent: Cell<usize>,
    checksum: Cell<Fnv>,
    pauses: Cell<usize>,
    resumes: Cell<usize>,
    stops: Cell<usize>,
    paused: Cell<bool>,
    /// `buffered_len` when `pause_producing` was called.
    buffered_at_pause: Cell<usize>,
    /// The most ever buffered, read after each write.
    max_buffered: Cell<usize>,
    lost: RefCell<Vec<ConnectionLost>>,
}

/// Writes `TOTAL` bytes of the pattern, one chunk per loop iteration while
/// not paused, and one on each resume.
struct Streamer {
    me: Weak<Streamer>,
    reactor: Reactor,
    transport: Transport,
    chunk: Vec<u8>,
    scheduled: Cell<bool>,
    log: Rc<ProducerLog>,
}

impl Streamer {
    fn schedule(&self) {
        if self.scheduled.replace(true) {
            return;
        }
        let me = self.me.clone();
        self.reactor.call_soon(move || {
            if let Some(me) = me.upgrade() {
                me.scheduled.set(false);
                me.produce();
            }
        });
    }

    fn produce(&self) {
        let log = &self.log;
        let sent = log.sent.get();
        if log.paused.get() || log.stops.get() > 0 || sent == TOTAL {
            return;
        }
        let n = CHUNK.min(TOTAL - sent);
        let bytes = &self.chunk[..n];
        self.transport.write(bytes);
        let mut sum = log.checksum.get();
        sum.update(bytes);
        log.checksum.set(sum);
        log.sent.set(sent + n);
        log.max_buffered
            .set(log.max_buffered.get().max(self.transport.buffered_len()));
        if sent + n == TOTAL {
            self.transport.unregister_producer();
            self.transport.lose_connection();
        } else {
            self.schedule();
        }
    }
}

impl Producer for Streamer {
    fn pause_producing(&self) {
        self.log.paused.set(true);
        self.log.pauses.set(self.log.pauses.get() + 1);
        self.log
            .buffered_at_pause
            .set(self.transport.buffered_len());
    }
    fn resume_producing(&self) {
        self.log.paused.set(false);
        self.log.resumes.set(self.log.resumes.get() + 1);
        self.produce();
    }
    fn stop_producing(&self) {
        self.log.stops.set(self.log.stops.get() + 1);
    }
}

struct StreamServer {
    reactor: Reactor,
    log: Rc<ProducerLog>,
    streamer: Option<Rc<Streamer>>,
}

impl Protocol for StreamServer {
    fn connection_made(&mut self, transport: Transport) {
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER);
        let streamer = Rc::new_cyclic(|me| Streamer {
            me: me.clone(),
            reactor: self.reactor.clone(),
            transport: transport.clone(),
            chunk: pattern(CHUNK),
            scheduled: Cell::new(false),
            log: self.log.clone(),
        });
        transport.register_producer(streamer.clone());
        streamer.schedule();
        self.streamer = Some(streamer);
    }
    fn data_received(&mut self, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.lost.borrow_mut().push(reason);
        self.streamer = None;
    }
}

/// Test 10: a client that does not read while the server writes 100 MB
/// through a registered producer: the producer is paused at the high-water
/// mark, the write buffer stays bounded, and everything arrives intact once
/// the client reads.
#[test]
fn producer_backpressure_100_mb() {
    let reactor = reactor();
    let log = Rc::new(ProducerLog::default());
    let port = {
        let (r, log) = (reactor.clone(), log.clone());
        reactor
            .listen_tcp(
                any_port(),
                factory_fn(move |_| {
                    Some(StreamServer {
                        reactor: r.clone(),
                        log: log.clone(),
                        streamer: None,
                    })
                }),
            )
            .unwrap()
    };
    let client = std_connect(port.local_addr());
    wait(&reactor, "the producer to be paused", || {
        log.pauses.get() > 0
    });
    assert!(log.paused.get());
    assert!(log.buffered_at_pause.get() > HIGH_WATER);
    assert!(
        log.sent.get() < TOTAL,
        "everything was written before the client read anything"
    );
    // Paused, it stays paused while the client does not read.
    let sent_at_pause = log.sent.get();
    for _ in 0..10 {
        reactor.iterate(Some(std::time::Duration::ZERO)).unwrap();
    }
    assert!(log.paused.get());
    assert_eq!(log.sent.get(), sent_at_pause);

    let reader = peer(&reactor, move || {
        let mut client = client;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut count, mut sum, mut bad) = (0usize, Fnv::default(), None);
        loop {
            let n = client.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            let bytes = &buf[..n];
            if bad.is_none() {
                if let Some(i) = (0..n).find(|&i| bytes[i] != pattern_byte((count + i) % CHUNK)) {
                    bad = Some(count + i);
                }
            }
            sum.update(bytes);
            count += n;
        }
        (count, sum.0, bad)
    });
    let (count, checksum, bad) = reader.wait(&reactor, "the client to read 100 MB");
    assert_eq!(bad, None, "the stream is corrupt at this offset");
    assert_eq!(count, TOTAL);
    assert_eq!(log.sent.get(), TOTAL);
    assert_eq!(checksum, log.checksum.get().0);
    assert!(log.resumes.get() > 0);
    assert!(
        log.max_buffered.get() <= HIGH_WATER + CHUNK,
        "the write buffer grew to {} bytes",
        log.max_buffered.get()
    );
    wait(&reactor, "the server's connection_lost", || {
        !log.lost.borrow().is_empty()
    });
    assert!(matches!(log.lost.borrow()[0], ConnectionLost::Done));
    assert_eq!(
        log.stops.get(),
        0,
        "the producer was unregistered before the close"
    );
}

/// Writes its message on connection, keeps what comes back.
struct EchoClient {
    message: Vec<u8>,
    transport: Option<Transport>,
    got: Vec<u8>,
    done: Rc<Cell<usize>>,
    wrong: Rc<Cell<usize>>,
    lost: Rc<Cell<usize>>,
}

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.message);
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.message.len() {
            if self.got != self.message {
                self.wrong.set(self.wrong.get() + 1);
            }
            self.done.set(self.done.get() + 1);
        }
    }
    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.lost.set(self.lost.get() + 1);
        self.transport = None;
    }
}

/// Test 13: 1,000 concurrent connections (clients and server in one
/// reactor) each echo a message; all are open at once.
#[test]
fn thousand_concurrent_echo_connections() {
    const N: usize = 1000;
    // Each connection has two ends here, plus the listener, epoll, and
    // whatever the test harness holds.
    ensure_fd_limit((2 * N + 256) as libc::rlim_t);
    let reactor = reactor();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(|_| Some(Echo::default())))
        .unwrap();
    let done = Rc::new(Cell::new(0));
    let wrong = Rc::new(Cell::new(0));
    let lost = Rc::new(Cell::new(0));
    let failed = Rc::new(Cell::new(0));
    let transports: Shared<Vec<Transport>> = shared(Vec::new());
    for i in 0..N {
        let client = EchoClient {
            message: format!("message number {i} from client {i}\n").into_bytes(),
            transport: None,
            got: Vec::new(),
            done: done.clone(),
            wrong: wrong.clone(),
            lost: lost.clone(),
        };
        let (failed, transports) = (failed.clone(), transports.clone());
        let connected = reactor
            .connect_protocol(port.local_addr(), client)
            .add_both(move |outcome| {
                match outcome {
                    Ok(t) => transports.borrow_mut().push(t),
                    Err(_) => failed.set(failed.get() + 1),
                }
                Ok(())
            });
        // The chain runs on its own; the last link is not needed.
        drop(connected);
    }
    wait(&reactor, "every echo (or a failure)", || {
        done.get() + failed.get() >= N
    });
    assert_eq!(failed.get(), 0, "connections failed");
    assert_eq!(done.get(), N);
    assert_eq!(wrong.get(), 0, "echoes came back wrong");
    assert_eq!(lost.get(), 0);
    // Both ends of every connection are open at once.
    assert_eq!(reactor.connection_count(), 2 * N);
    assert_eq!(reactor.stats().accepted, N as u64);

    for t in transports.borrow_mut().drain(..) {
        t.lose_connection();
    }
    wait(&reactor, "every connection to close", || {
        reactor.connection_count() == 0
    });
    wait(&reactor, "every client's connection_lost", || {
        lost.get() == N
    });
}
