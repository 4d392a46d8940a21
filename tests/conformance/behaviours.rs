//! The behaviours, each written once against [`TransportKind`] and run for
//! every kind and every schedule by `conformance_suite!`.
//!
//! A behaviour connects [`Peer`]s, drives the pair until the event it waits
//! for (never for a fixed time), and asserts what each side recorded.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use gyre::reactor::{Producer, Transport};

use crate::kinds::{Pair, PeerOfAbort, TransportKind};
use crate::peer::{assert_bytes, lose, pattern, pause, resume, transport, Lost, Peer, Shared};
use crate::schedule::Schedule;

/// Every behaviour's name, in the order `conformance_suite!` lists them;
/// each kind's invocation is checked against it.
pub const ALL: &[&str] = &[
    "write_ordering",
    "write_sequence",
    "half_close_by_client",
    "half_close_by_server",
    "lose_connection_flushes",
    "reading_stops_at_lose",
    "abort_drops_buffered",
    "pause_and_resume",
    "producer_water_marks",
    "lost_once_after_lose",
    "lost_once_after_abort",
    "lost_once_after_peer_close",
    "lost_once_after_half_closes",
    "server_speaks_first",
    "server_closes_at_once",
    "peer_resets",
    "peer_resets_with_unread_input",
];

/// Drives `pair` until `done()`, or fails naming `what` and both sides'
/// state.
fn wait(pair: &dyn Pair, what: &str, c: &Shared, s: &Shared, mut done: impl FnMut() -> bool) {
    if !pair.drive_until(&mut done) {
        panic!(
            "timed out waiting for {what}\n  client: {}\n  server: {}",
            state(c),
            state(s)
        );
    }
}

fn state(log: &Shared) -> String {
    let l = log.borrow();
    format!(
        "made={} received={}B in {} calls, eofs={}, lost={:?}, buffered={:?}",
        l.made,
        l.received.len(),
        l.data_calls,
        l.eofs,
        l.lost,
        l.transport.as_ref().map(|t| t.buffered_len())
    )
}

fn connected(c: &Shared, s: &Shared) -> bool {
    c.borrow().made == 1 && s.borrow().made == 1
}

fn both_lost(c: &Shared, s: &Shared) -> bool {
    !c.borrow().lost.is_empty() && !s.borrow().lost.is_empty()
}

fn lost(log: &Shared) -> Vec<Lost> {
    log.borrow().lost.clone()
}

fn received(log: &Shared) -> Vec<u8> {
    log.borrow().received.clone()
}

/// Ends a behaviour whose subject was not the close: aborts both sides and
/// drives until nothing is left, so no socket outlives the test.
fn finish(pair: &dyn Pair, c: &Shared, s: &Shared) {
    for log in [c, s] {
        if let Some(t) = log.borrow().transport.clone() {
            t.abort_connection();
        }
    }
    assert!(pair.quiesce(), "connections still open after aborting both");
}

/// After both sides got `connection_lost`: poke both transports (every
/// call must do nothing on a closed connection), drive until no connection
/// is left, and check each side was told exactly once.
fn assert_lost_once(pair: &dyn Pair, c: &Shared, s: &Shared) {
    for log in [c, s] {
        let t = transport(log);
        t.write(b"after close");
        t.lose_connection();
        t.half_close();
        t.abort_connection();
    }
    assert!(
        pair.quiesce(),
        "connections still open after both were lost"
    );
    assert_eq!(
        lost(c).len(),
        1,
        "client connection_lost calls: {:?}",
        lost(c)
    );
    assert_eq!(
        lost(s).len(),
        1,
        "server connection_lost calls: {:?}",
        lost(s)
    );
}

const SIZES: &[usize] = &[
    1, 2, 3, 7, 100, 1000, 4095, 4096, 4097, 16384, 65535, 65536, 65537, 100_000, 1, 0, 5,
];

fn write_batch(t: &Transport, stream: u8, start: usize) {
    let mut at = start;
    for &n in SIZES {
        t.write(&pattern(stream, at, n));
        at += n;
    }
}

/// Many writes of different sizes, from `connection_made` and then from
/// outside any callback, arrive in order and byte-exact, both ways at once.
pub fn write_ordering(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let batch: usize = SIZES.iter().sum();
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let client = client.on_made(|_, t| write_batch(t, 1, 0));
    // The server writes once the client has spoken (a server that speaks
    // first is its own behaviour).
    let server = server.on_data(|log, t| {
        if log.borrow().data_calls == 1 {
            write_batch(t, 2, 0)
        }
    });
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "the first bytes both ways", &c, &s, || {
        !c.borrow().received.is_empty() && !s.borrow().received.is_empty()
    });
    write_batch(&transport(&c), 1, batch);
    write_batch(&transport(&s), 2, batch);
    wait(pair, "both batches both ways", &c, &s, || {
        c.borrow().received.len() >= 2 * batch && s.borrow().received.len() >= 2 * batch
    });
    assert_bytes("client to server", &received(&s), &pattern(1, 0, 2 * batch));
    assert_bytes("server to client", &received(&c), &pattern(2, 0, 2 * batch));
    finish(pair, &c, &s);
}

fn sequence_parts(stream: u8) -> Vec<Vec<u8>> {
    vec![
        b"alpha-".to_vec(),
        Vec::new(),
        pattern(stream, 0, 70_000),
        b"-".to_vec(),
        pattern(stream, 1, 1),
        pattern(stream, 2, 200_000),
        b"-omega".to_vec(),
    ]
}

fn write_sequence_once(t: &Transport, stream: u8) {
    let parts = sequence_parts(stream);
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    t.write_sequence(&refs[..3]);
    t.write(b"|");
    t.write_sequence(&refs[3..]);
    t.write_sequence(&[]);
}

/// `write_sequence` sends its parts in order, contiguous, between plain
/// writes, both ways.
pub fn write_sequence(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let expected = |stream| {
        let parts = sequence_parts(stream);
        let mut v = parts[..3].concat();
        v.push(b'|');
        v.extend(parts[3..].concat());
        [v.clone(), v].concat()
    };
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let client = client.on_made(|_, t| write_sequence_once(t, 1));
    let server = server.on_data(|log, t| {
        if log.borrow().data_calls == 1 {
            write_sequence_once(t, 2)
        }
    });
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "the first bytes both ways", &c, &s, || {
        !c.borrow().received.is_empty() && !s.borrow().received.is_empty()
    });
    write_sequence_once(&transport(&c), 1);
    write_sequence_once(&transport(&s), 2);
    let (to_server, to_client) = (expected(1), expected(2));
    wait(pair, "both sequences both ways", &c, &s, || {
        s.borrow().received.len() >= to_server.len() && c.borrow().received.len() >= to_client.len()
    });
    assert_bytes("client to server", &received(&s), &to_server);
    assert_bytes("server to client", &received(&c), &to_client);
    finish(pair, &c, &s);
}

/// One side half-closes after a request; the other gets `eof_received`
/// (once), keeps its write side open, answers (a few hundred KiB) and
/// closes; the half-closed side receives all of it; both are told `Done`,
/// once. Writes after `half_close` are dropped.
fn half_close(kind: &dyn TransportKind, schedule: Option<Schedule>, client_closes: bool) {
    let request = b"request".to_vec();
    let answer = pattern(5, 0, 300_000);
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    // `a` half-closes, `b` answers.
    let (client, server, a_log, b_log) = if client_closes {
        (client, server.on_eof(|_, _| true), c.clone(), s.clone())
    } else {
        (client.on_eof(|_, _| true), server, s.clone(), c.clone())
    };
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_made on both sides", &c, &s, || {
        connected(&c, &s)
    });
    // One round trip first, so the server's first bytes do not depend on
    // server-speaks-first (its own behaviour).
    transport(&c).write(b"go");
    wait(pair, "the client's first bytes", &c, &s, || {
        s.borrow().received.len() == 2
    });
    s.borrow_mut().received.clear();
    let t = transport(&a_log);
    t.write(&request);
    t.half_close();
    t.write(b"ignored after half_close");
    wait(pair, "eof_received after the half-close", &c, &s, || {
        b_log.borrow().eofs == 1 && b_log.borrow().received.len() >= request.len()
    });
    assert_bytes("the request", &received(&b_log), &request);
    assert!(
        lost(&a_log).is_empty() && lost(&b_log).is_empty(),
        "a half-close closed the connection: {:?} {:?}",
        lost(&a_log),
        lost(&b_log)
    );
    let t = transport(&b_log);
    t.write(&answer);
    lose(&b_log);
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_bytes("the answer", &received(&a_log), &answer);
    assert_bytes("the request, after everything", &received(&b_log), &request);
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&a_log), [Lost::Done], "the half-closed side");
    assert_eq!(lost(&b_log), [Lost::Done], "the answering side");
    assert_eq!(b_log.borrow().eofs, 1);
    let a_eofs = usize::from(kind.quirks().eof_after_own_half_close);
    assert_eq!(
        a_log.borrow().eofs,
        a_eofs,
        "eof_received on the half-closed side"
    );
}

/// The client half-closes; the server answers and closes.
pub fn half_close_by_client(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    half_close(kind, schedule, true)
}

/// The server half-closes; the client answers and closes.
pub fn half_close_by_server(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    half_close(kind, schedule, false)
}

/// `n` bytes on the plain loop, a quarter under a schedule (where every
/// read or write may be cut short, and twenty seeds run), so the seeded
/// runs stay fast in a debug build.
fn volume(schedule: Option<Schedule>, n: usize) -> usize {
    if schedule.is_some() {
        n / 4
    } else {
        n
    }
}

const FLUSH_BYTES: usize = 3 * 1024 * 1024;

/// `lose_connection` sends everything written before it (3 MiB, 768 KiB
/// under a schedule), then
/// closes: both sides `Done`; a write after it is dropped.
pub fn lose_connection_flushes(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    // The server writes and closes when the client has spoken (a server
    // that closes at once is its own behaviour).
    let flush_bytes = volume(schedule, FLUSH_BYTES);
    let client = client.on_made(|_, t| t.write(b"go"));
    let server = server.on_data(move |log, t| {
        if log.borrow().lost_requested {
            return;
        }
        for at in (0..flush_bytes).step_by(64 * 1024) {
            t.write(&pattern(3, at, 64 * 1024));
        }
        lose(log);
        assert!(t.is_closing(), "is_closing after lose_connection");
        t.write(b"dropped: written after lose_connection");
    });
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_bytes(
        "what was written before lose_connection",
        &received(&c),
        &pattern(3, 0, flush_bytes),
    );
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&s), [Lost::Done], "the closing side");
    assert_eq!(lost(&c), [Lost::Done], "its peer");
}

/// Once a side has called `lose_connection`, no more `data_received` (as in
/// Twisted, which stops reading), while the peer keeps sending.
pub fn reading_stops_at_lose(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let sent = volume(schedule, 1024 * 1024);
    let client = client.on_made(move |_, t| {
        for at in (0..sent).step_by(16 * 1024) {
            t.write(&pattern(4, at, 16 * 1024));
        }
    });
    let server = server.on_data(|log, _| {
        if !log.borrow().lost_requested {
            lose(log);
        }
    });
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_lost_once(pair, &c, &s);
    assert_eq!(
        s.borrow().data_after_lose,
        0,
        "data_received calls after lose_connection ({} bytes received in all)",
        s.borrow().received.len()
    );
}

/// `abort_connection` drops what is buffered (1 MiB written just before)
/// and closes now: `is_closing` at once, the aborter is told `Aborted`, the
/// peer receives none of the dropped bytes; writes after it are dropped.
pub fn abort_drops_buffered(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_made on both sides", &c, &s, || {
        connected(&c, &s)
    });
    let t = transport(&s);
    t.write(&pattern(6, 0, 1024 * 1024));
    t.abort_connection();
    assert!(t.is_closing(), "is_closing after abort_connection");
    t.write(b"dropped: written after abort_connection");
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&s), [Lost::Aborted]);
    assert_eq!(
        received(&c).len(),
        0,
        "bytes of the aborted buffer that arrived"
    );
}

/// `pause_reading` stops `data_received` (none while paused, even with
/// data waiting); `resume_reading` delivers everything, in order. A slow
/// reader that pauses inside every `data_received` and is resumed from
/// outside gets every byte too.
pub fn pause_and_resume(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    const FIRST: usize = 32 * 1024;
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let client = client.on_made(|_, t| t.write(&pattern(7, 0, FIRST)));
    let server = server
        .on_made(|log, _| pause(log))
        .on_data(|log, _| pause(log));
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    let in_writer = kind.quirks().paused_data_waits_in_writer;
    wait(pair, "the client's bytes sent", &c, &s, || {
        connected(&c, &s) && (in_writer || transport(&c).buffered_len() == 0)
    });
    // A round trip the other way: the server's loop has run with the bytes
    // waiting for it.
    transport(&s).write(b"hello");
    wait(pair, "the server's hello", &c, &s, || {
        c.borrow().received == b"hello"
    });
    assert_eq!(s.borrow().data_calls, 0, "data_received while paused");
    let second = volume(schedule, 256 * 1024);
    transport(&c).write(&pattern(7, FIRST, second));
    let total = FIRST + second;
    while s.borrow().received.len() < total {
        let calls = s.borrow().data_calls;
        resume(&s);
        wait(pair, "data_received after resume_reading", &c, &s, || {
            s.borrow().data_calls > calls
        });
    }
    assert_eq!(
        s.borrow().data_while_paused,
        0,
        "data_received calls while paused"
    );
    assert_bytes(
        "everything, after pauses",
        &received(&s),
        &pattern(7, 0, total),
    );
    finish(pair, &c, &s);
}

/// The producer's view: when it was paused and resumed, and the transport's
/// buffer at that moment.
#[derive(Default)]
struct ProducerLog {
    paused: Cell<bool>,
    events: RefCell<Vec<(bool, usize)>>,
    stopped: Cell<u32>,
    transport: RefCell<Option<Transport>>,
}

struct Recording(Rc<ProducerLog>);

impl Producer for Recording {
    fn pause_producing(&self) {
        let buffered = self
            .0
            .transport
            .borrow()
            .as_ref()
            .map_or(0, Transport::buffered_len);
        self.0.paused.set(true);
        self.0.events.borrow_mut().push((true, buffered));
    }
    fn resume_producing(&self) {
        let buffered = self
            .0
            .transport
            .borrow()
            .as_ref()
            .map_or(0, Transport::buffered_len);
        self.0.paused.set(false);
        self.0.events.borrow_mut().push((false, buffered));
    }
    fn stop_producing(&self) {
        self.0.stopped.set(self.0.stopped.get() + 1);
    }
}

/// A registered producer is paused once the write buffer rises above the
/// high-water mark (set with `set_write_buffer_limits`) and resumed once it
/// drains to the low-water mark, twice over, while the peer reads slowly
/// (it stops reading until the producer is paused, then reads until it is
/// resumed). The producer writes one chunk per turn while not paused, so
/// the buffer never goes past the mark by more than one chunk.
pub fn producer_water_marks(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    const HIGH: usize = 64 * 1024;
    const LOW: usize = 16 * 1024;
    const CHUNK: usize = 16 * 1024;
    /// Slack for TLS record overhead on a chunk (the buffer holds records).
    const SLACK: usize = 2 * 1024;
    const CYCLES: usize = 2;
    let producer = Rc::new(ProducerLog::default());
    let p = producer.clone();
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let client = client.on_made(|log, _| pause(log));
    let server = server.on_made(move |_, t| {
        t.set_write_buffer_limits(HIGH, LOW);
        *p.transport.borrow_mut() = Some(t.clone());
        t.register_producer(Rc::new(Recording(p.clone())));
    });
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    let written = Cell::new(0usize);
    let closing = Cell::new(false);
    wait(
        pair,
        "two pause/resume cycles, then the close",
        &c,
        &s,
        || {
            if !connected(&c, &s) {
                return false;
            }
            let events = producer.events.borrow().len();
            let cycles_done = events / 2;
            if cycles_done >= CYCLES && !closing.get() {
                closing.set(true);
                transport(&s).unregister_producer();
                lose(&s);
                if c.borrow().paused {
                    resume(&c);
                }
            }
            if !closing.get() {
                // The reader: stalled while the producer runs, reading while it
                // is paused.
                let reader_paused = c.borrow().paused;
                if producer.paused.get() && reader_paused {
                    resume(&c);
                } else if !producer.paused.get() && !reader_paused && events % 2 == 0 && events > 0
                {
                    pause(&c);
                }
                if !producer.paused.get() {
                    let t = transport(&s);
                    t.write(&pattern(8, written.get(), CHUNK));
                    written.set(written.get() + CHUNK);
                }
            }
            both_lost(&c, &s)
        },
    );
    let events = producer.events.borrow().clone();
    assert!(events.len() >= 2 * CYCLES, "producer events: {events:?}");
    for (i, &(paused, buffered)) in events.iter().enumerate() {
        assert_eq!(paused, i % 2 == 0, "pause and resume alternate: {events:?}");
        if paused {
            assert!(
                buffered > HIGH && buffered <= HIGH + CHUNK + SLACK,
                "paused with {buffered} bytes buffered (high-water mark {HIGH}): {events:?}"
            );
        } else {
            assert!(
                buffered <= LOW,
                "resumed with {buffered} bytes buffered (low-water mark {LOW}): {events:?}"
            );
        }
    }
    assert_bytes(
        "everything produced",
        &received(&c),
        &pattern(8, 0, written.get()),
    );
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&s), [Lost::Done]);
    assert_eq!(lost(&c), [Lost::Done]);
}

/// Which side closes how, for the `lost_once_*` behaviours.
#[derive(Clone, Copy)]
enum Close {
    Lose,
    Abort,
    PeerLoses,
    HalfClosesBothWays,
}

fn lost_once(kind: &dyn TransportKind, schedule: Option<Schedule>, how: Close) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let (client, server) = match how {
        Close::HalfClosesBothWays => (client.on_eof(|_, _| true), server.on_eof(|_, _| true)),
        _ => (client, server),
    };
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_made on both sides", &c, &s, || {
        connected(&c, &s)
    });
    match how {
        Close::Lose => lose(&c),
        Close::Abort => transport(&c).abort_connection(),
        Close::PeerLoses => lose(&s),
        Close::HalfClosesBothWays => {
            transport(&c).half_close();
            wait(pair, "the server's eof_received", &c, &s, || {
                s.borrow().eofs == 1
            });
            assert!(lost(&s).is_empty() && lost(&c).is_empty());
            transport(&s).half_close();
        }
    }
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_lost_once(pair, &c, &s);
    match how {
        Close::Lose | Close::PeerLoses | Close::HalfClosesBothWays => {
            assert_eq!(lost(&c), [Lost::Done], "client");
            assert_eq!(lost(&s), [Lost::Done], "server");
        }
        Close::Abort => assert_eq!(lost(&c), [Lost::Aborted], "client"),
    }
    if let Close::HalfClosesBothWays = how {
        assert_eq!(
            (c.borrow().eofs, s.borrow().eofs),
            (1, 1),
            "eofs (client, server)"
        );
    }
}

/// `connection_lost` once on both sides after the client's `lose_connection`.
pub fn lost_once_after_lose(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    lost_once(kind, schedule, Close::Lose)
}

/// `connection_lost` once on both sides after the client's `abort_connection`.
pub fn lost_once_after_abort(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    lost_once(kind, schedule, Close::Abort)
}

/// `connection_lost` once on both sides after the server (the client's
/// peer) closes.
pub fn lost_once_after_peer_close(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    lost_once(kind, schedule, Close::PeerLoses)
}

/// `connection_lost` once on both sides after each half-closes in turn.
pub fn lost_once_after_half_closes(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    lost_once(kind, schedule, Close::HalfClosesBothWays)
}

/// A server that writes in `connection_made` (SMTP, SSH, Redis): the client
/// receives the greeting.
pub fn server_speaks_first(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    const GREETING: &[u8] = b"220 gyre ESMTP ready\r\n";
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let server = server.on_made(|_, t| t.write(GREETING));
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "the greeting", &c, &s, || {
        c.borrow().received.len() >= GREETING.len()
    });
    assert_bytes("the greeting", &received(&c), GREETING);
    finish(pair, &c, &s);
}

/// A server that accepts and closes at once: the client is connected and
/// then told `Done`, once.
pub fn server_closes_at_once(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let server = server.on_made(|log, _| lose(log));
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_eq!(c.borrow().made, 1, "the client's connection_made");
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&s), [Lost::Done]);
    assert_eq!(lost(&c), [Lost::Done]);
}

fn assert_peer_of_abort(kind: &dyn TransportKind, peer: &Shared, rst_certain: bool) {
    let got = lost(peer);
    match kind.quirks().peer_of_abort {
        PeerOfAbort::Reset if rst_certain => assert!(
            matches!(
                got.as_slice(),
                [Lost::Error(io::ErrorKind::ConnectionReset, _)]
            ),
            "the peer of a reset was told {got:?}, not a ConnectionReset error"
        ),
        PeerOfAbort::Reset => assert!(
            matches!(got.as_slice(), [Lost::Error(..)]),
            "the peer of an abort was told {got:?}, not an error"
        ),
        PeerOfAbort::EofUnlessUnreadInput if rst_certain => assert!(
            matches!(
                got.as_slice(),
                [Lost::Error(io::ErrorKind::ConnectionReset, _)]
            ),
            "the peer of an abort with unread input was told {got:?}, not a ConnectionReset error"
        ),
        // No unread input on the aborting side: an orderly EOF, all the
        // socket can say.
        PeerOfAbort::EofUnlessUnreadInput => assert_eq!(
            got,
            [Lost::Done],
            "the peer of an abort without unread input reads EOF"
        ),
    }
}

/// The server aborts an idle connection: the client must learn that it was
/// not an orderly close (`ConnectionLost::Error`, not `Done`), or a
/// truncated transfer looks complete. The pump models the reset: the peer
/// gets a `ConnectionReset` error. A Unix socket cannot say it (it has no
/// RST): its client is told `Done`, as its quirk states.
pub fn peer_resets(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    wait(pair, "connection_made on both sides", &c, &s, || {
        connected(&c, &s)
    });
    transport(&s).abort_connection();
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&s), [Lost::Aborted]);
    assert_peer_of_abort(kind, &c, false);
}

/// The server aborts with the client's bytes unread in its receive queue
/// (the kernel sends an RST for certain, or for a Unix socket marks the
/// client `ECONNRESET`): the client is told `ConnectionReset`.
pub fn peer_resets_with_unread_input(kind: &dyn TransportKind, schedule: Option<Schedule>) {
    let (client, c) = Peer::new();
    let (server, s) = Peer::new();
    let client = client.on_made(|_, t| t.write(&pattern(9, 0, 32 * 1024)));
    let server = server.on_made(|log, _| pause(log));
    let pair = kind.connect(client.boxed(), server.boxed(), schedule);
    let pair = &*pair;
    let in_writer = kind.quirks().paused_data_waits_in_writer;
    wait(pair, "the client's bytes sent", &c, &s, || {
        connected(&c, &s) && (in_writer || transport(&c).buffered_len() == 0)
    });
    transport(&s).abort_connection();
    wait(pair, "connection_lost on both sides", &c, &s, || {
        both_lost(&c, &s)
    });
    assert_lost_once(pair, &c, &s);
    assert_eq!(lost(&s), [Lost::Aborted]);
    assert_peer_of_abort(kind, &c, true);
}
