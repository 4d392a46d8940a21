//! Helpers shared by the reactor's integration tests: reactors for tests,
//! a waiting helper with a generous bound, recording protocols and client
//! factories, and a few socket utilities.
//!
//! Every test drives the reactor until the condition it cares about holds
//! (`run_until` with [`BOUND`]), never sleeping for a fixed time.

#![allow(dead_code)]

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gyre_reactor::clock::ManualClock;
use gyre_reactor::{
    ClientFactory, ConnectionLost, Connector, Factory, Protocol, Reactor, Transport,
};

/// The upper bound of every wait: generous, never reached when things work.
pub const BOUND: Duration = Duration::from_secs(20);

/// A value shared between a protocol and the test.
pub type Shared<T> = Rc<RefCell<T>>;

pub fn shared<T>(value: T) -> Shared<T> {
    Rc::new(RefCell::new(value))
}

/// A reactor for tests: real clock, no signal handlers.
pub fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect("build a reactor")
}

/// A reactor whose timers run on a manual clock.
pub fn manual_reactor() -> (ManualClock, Reactor) {
    let manual = ManualClock::new();
    let reactor = Reactor::builder()
        .clock(manual.clock())
        .install_signal_handlers(false)
        .build()
        .expect("build a reactor");
    (manual, reactor)
}

/// Loopback, any free port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An address nothing listens on (a port that was just free).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(any_port()).unwrap();
    listener.local_addr().unwrap()
}

/// Runs the reactor until `done()`, failing the test if [`BOUND`] passes.
#[track_caller]
pub fn wait(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    let ok = reactor
        .run_until(done, BOUND)
        .expect("run_until from outside the loop");
    assert!(ok, "timed out after {BOUND:?} waiting for {what}");
}

/// A helper thread (typically a blocking client) whose result the test
/// waits for while running the reactor.
pub struct Peer<T> {
    rx: mpsc::Receiver<T>,
    join: std::thread::JoinHandle<()>,
}

/// Runs `f` on a new thread. When it returns, its result is sent back and
/// the reactor's loop is woken (through its thread handle), so a loop
/// waiting for it does not sleep until its time bound.
pub fn peer<T: Send + 'static>(
    reactor: &Reactor,
    f: impl FnOnce() -> T + Send + 'static,
) -> Peer<T> {
    let (tx, rx) = mpsc::channel();
    let handle = reactor.thread_handle();
    let join = std::thread::spawn(move || {
        let result = f();
        let _ = tx.send(result);
        let _ = handle.call_from_thread(|_| {});
    });
    Peer { rx, join }
}

impl<T> Peer<T> {
    /// Runs the reactor until the thread's result arrives; joins the thread.
    #[track_caller]
    pub fn wait(self, reactor: &Reactor, what: &str) -> T {
        let slot = RefCell::new(None);
        wait(reactor, what, || {
            if slot.borrow().is_none() {
                match self.rx.try_recv() {
                    Ok(v) => *slot.borrow_mut() = Some(v),
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => panic!("{what}: the thread panicked"),
                }
            }
            slot.borrow().is_some()
        });
        self.join.join().expect("the peer thread panicked");
        slot.into_inner().unwrap()
    }
}

/// A blocking client socket whose reads and writes give up after [`BOUND`].
pub fn std_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.set_write_timeout(Some(BOUND)).unwrap();
    stream
}

/// Reads exactly `n` bytes.
pub fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Waits (spinning, bounded) until the kernel has handed everything written
/// on `stream` to the peer (nothing unacknowledged in the send queue), so the
/// bytes sit in the peer socket's receive queue and its readiness is set.
pub fn wait_acked(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let deadline = Instant::now() + BOUND;
        loop {
            let mut unacked: libc::c_int = 0;
            // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer.
            let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unacked) };
            assert_eq!(rc, 0, "ioctl(SIOCOUTQ): {}", io::Error::last_os_error());
            if unacked == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "peer did not acknowledge within {BOUND:?}"
            );
            std::thread::yield_now();
        }
    }
}

/// Raises the soft limit on open files to at least `needed`.
pub fn ensure_fd_limit(needed: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid, initialised struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= needed {
            return;
        }
        assert!(
            lim.rlim_max >= needed,
            "the hard limit on open files ({}) is below the {needed} this test needs",
            lim.rlim_max
        );
        lim.rlim_cur = needed;
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
            0,
            "setrlimit: {}",
            io::Error::last_os_error()
        );
    }
}

/// What a [`Recorder`] saw.
#[derive(Default)]
pub struct Seen {
    pub transport: Option<Transport>,
    pub data: Vec<u8>,
    pub eofs: usize,
    pub lost: Vec<ConnectionLost>,
}

/// A protocol that records what happens to it, and echoes if asked to.
pub struct Recorder {
    pub seen: Shared<Seen>,
    pub echo: bool,
}

impl Recorder {
    pub fn new(echo: bool) -> (Recorder, Shared<Seen>) {
        let seen = shared(Seen::default());
        (
            Recorder {
                seen: seen.clone(),
                echo,
            },
            seen,
        )
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, transport: Transport) {
        self.seen.borrow_mut().transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        let mut seen = self.seen.borrow_mut();
        seen.data.extend_from_slice(data);
        if self.echo {
            if let Some(t) = &seen.transport {
                t.write(data);
            }
        }
    }

    fn eof_received(&mut self) -> bool {
        self.seen.borrow_mut().eofs += 1;
        false
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        let mut seen = self.seen.borrow_mut();
        seen.lost.push(reason);
        // Break the protocol -> transport -> connection cycle in the test's copy.
        seen.transport = None;
    }
}

/// Echoes every byte back.
#[derive(Default)]
pub struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.0 {
            t.write(data);
        }
    }
}

/// What a [`TestClient`] factory heard.
#[derive(Default)]
pub struct ClientLog {
    pub started: usize,
    pub built: usize,
    pub failed: Vec<io::Error>,
    pub lost: Vec<ConnectionLost>,
}

/// A client factory that builds protocols with a closure and records every
/// callback.
pub struct TestClient<F> {
    pub log: Shared<ClientLog>,
    build: F,
}

pub fn test_client<P, F>(build: F) -> (TestClient<F>, Shared<ClientLog>)
where
    P: Protocol,
    F: FnMut() -> Option<P> + 'static,
{
    let log = shared(ClientLog::default());
    (
        TestClient {
            log: log.clone(),
            build,
        },
        log,
    )
}

impl<P, F> Factory for TestClient<F>
where
    P: Protocol,
    F: FnMut() -> Option<P> + 'static,
{
    type Protocol = P;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<P> {
        self.log.borrow_mut().built += 1;
        (self.build)()
    }
}

impl<P, F> ClientFactory for TestClient<F>
where
    P: Protocol,
    F: FnMut() -> Option<P> + 'static,
{
    fn started_connecting(&mut self, _connector: &Connector) {
        self.log.borrow_mut().started += 1;
    }
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &io::Error) {
        self.log
            .borrow_mut()
            .failed
            .push(io::Error::new(reason.kind(), reason.to_string()));
    }
    fn client_connection_lost(&mut self, _connector: &Connector, reason: &ConnectionLost) {
        self.log.borrow_mut().lost.push(reason.clone());
    }
}

/// The byte at `offset` of the test streams: a pattern with period 251 (a
/// prime, so it never lines up with buffer sizes).
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// `len` bytes of the pattern, starting at offset 0.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// FNV-1a, 64 bit, streaming.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Runs the reactor until `n` bytes have arrived on the client socket
/// `stream` (read without blocking between loop iterations), and returns them.
#[track_caller]
pub fn wait_read(reactor: &Reactor, stream: &TcpStream, n: usize) -> Vec<u8> {
    stream.set_nonblocking(true).unwrap();
    let got = RefCell::new(Vec::new());
    wait(reactor, &format!("{n} bytes on the client socket"), || {
        let mut buf = [0u8; 16 * 1024];
        while got.borrow().len() < n {
            match (&*stream).read(&mut buf) {
                Ok(0) => panic!("EOF after {} of {n} bytes", got.borrow().len()),
                Ok(k) => got.borrow_mut().extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        got.borrow().len() >= n
    });
    stream.set_nonblocking(false).unwrap();
    got.into_inner()
}
