//! The transports under test: one [`TransportKind`] per transport, each of
//! which connects a client and a server protocol and drives them.
//!
//! Adding a transport (process pipes, ...) is one more
//! `impl TransportKind` here, plus one `conformance_suite!` invocation in
//! `tests/conformance.rs` listing every behaviour for it.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gyre::protocols::tls::{self, ClientConfig, ServerConfig};
use gyre::reactor::testing::{connect_in_memory, connect_in_memory_perturbed, IoPump};
use gyre::reactor::{ClientFactory, Connector, Factory, ListeningPort, Protocol, Reactor};

use crate::schedule::Schedule;

#[path = "../../protocols/tests/common/certs.rs"]
mod certs;

/// The generous upper bound on every wait: a wait that hits it fails the
/// test (it is never a measurement).
pub const WAIT_BOUND: Duration = Duration::from_secs(30);

/// How long one socket reactor may block in `poll` when it has nothing to do
/// before the other side's reactor gets its turn. It bounds a turn, it is
/// not a settle time: every wait is on a condition.
const TURN: Duration = Duration::from_micros(20);

/// How many pump steps a wait on the in-memory pump may take.
const PUMP_STEP_BOUND: usize = 5_000_000;

/// What a transport does differently, stated once per kind rather than by
/// skipping behaviours.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    /// Bytes written to a peer that paused reading stay in the writer's
    /// transport buffer (the in-memory pump: there is no kernel buffer in
    /// between). For sockets they go on into the kernel, so the writer's
    /// buffer drains while the reader is paused.
    pub paused_data_waits_in_writer: bool,
    /// What the peer of an `abort_connection` sees.
    pub peer_of_abort: PeerOfAbort,
    /// Whether the half-closed side gets `eof_received` when the peer then
    /// closes (TCP and TLS read the peer's FIN or `close_notify`; the pump
    /// closes both sides at once with `Done`).
    pub eof_after_own_half_close: bool,
}

/// What the peer of an aborted connection is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOfAbort {
    /// `ConnectionLost::Error` of kind `ConnectionReset` (an RST, or the
    /// pump's model of one).
    Reset,
    /// A Unix-domain socket has no RST: the peer reads an orderly EOF (and
    /// is told `Done`) unless the aborting side had unread input, which
    /// makes Linux report `ECONNRESET` to the peer (`ConnectionReset`).
    EofUnlessUnreadInput,
}

/// A transport that can connect a client and a server protocol and drive
/// the pair. Object-safe, so the suite holds kinds as `&dyn TransportKind`.
pub trait TransportKind {
    /// The kind's name in test names and failure messages.
    fn name(&self) -> &'static str;
    /// What this transport does differently.
    fn quirks(&self) -> Quirks;
    /// Connects `client` to `server`, under `schedule` if given (its seed
    /// drives every random choice). Both protocols get
    /// `connection_made` while the returned pair is driven (or at once).
    fn connect(
        &self,
        client: Box<dyn Protocol>,
        server: Box<dyn Protocol>,
        schedule: Option<Schedule>,
    ) -> Box<dyn Pair>;
}

/// A connected pair, driven by the test.
pub trait Pair {
    /// Drives the transport until `done()` holds, calling `done` between
    /// turns (so it may also act: write, resume, ...). Returns `false` if
    /// the generous bound passed first. Panics if the connection could not
    /// be made.
    fn drive_until(&self, done: &mut dyn FnMut() -> bool) -> bool;
    /// Drives until no connection is left that could still call a
    /// protocol; after it, no callback can arrive any more.
    fn quiesce(&self) -> bool;
}

// ---------------------------------------------------------------------------
// Sockets (TCP, TLS): two reactors on this thread, one per side.
// ---------------------------------------------------------------------------

/// Hands out one protocol (for a listening port or a connector).
struct Once {
    protocol: Option<Box<dyn Protocol>>,
    failed: Rc<RefCell<Option<String>>>,
}

impl Factory for Once {
    type Protocol = Box<dyn Protocol>;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<Box<dyn Protocol>> {
        self.protocol.take()
    }
}

impl ClientFactory for Once {
    fn client_connection_failed(&mut self, _connector: &Connector, reason: &io::Error) {
        *self.failed.borrow_mut() = Some(reason.to_string());
    }
}

/// A client and a server on two reactors, driven in turn (as two processes
/// would be): the server's reactor takes a turn, then the client's.
struct SocketPair {
    server: Reactor,
    client: Reactor,
    _port: ListeningPort,
    _connector: Connector,
    failed: Rc<RefCell<Option<String>>>,
    /// A Unix pair's socket file, removed last.
    _file: Option<SocketFile>,
}

impl SocketPair {
    fn turn(&self) {
        self.server
            .iterate(Some(TURN))
            .expect("server reactor turn");
        self.client
            .iterate(Some(TURN))
            .expect("client reactor turn");
        if let Some(e) = self.failed.borrow().as_ref() {
            panic!("the client could not connect: {e}");
        }
    }
}

impl Pair for SocketPair {
    fn drive_until(&self, done: &mut dyn FnMut() -> bool) -> bool {
        let deadline = Instant::now() + WAIT_BOUND;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.turn();
        }
    }

    fn quiesce(&self) -> bool {
        self.drive_until(&mut || {
            self.server.connection_count() == 0 && self.client.connection_count() == 0
        })
    }
}

/// A reactor for one side, under `schedule`, drawing from the side's own
/// random stream (`side`).
fn reactor(schedule: Option<Schedule>, side: u64) -> Reactor {
    let mut builder = Reactor::builder().install_signal_handlers(false);
    if let Some(schedule) = schedule {
        builder = builder.perturb(schedule.perturbation(side));
    }
    builder.build().expect("build a reactor")
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// Plain TCP on 127.0.0.1 (`listen_tcp`, `connect_tcp`).
pub struct Tcp;

impl TransportKind for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn quirks(&self) -> Quirks {
        Quirks {
            paused_data_waits_in_writer: false,
            peer_of_abort: PeerOfAbort::Reset,
            eof_after_own_half_close: true,
        }
    }

    fn connect(
        &self,
        client: Box<dyn Protocol>,
        server: Box<dyn Protocol>,
        schedule: Option<Schedule>,
    ) -> Box<dyn Pair> {
        socket_pair(
            schedule,
            client,
            server,
            |reactor, server| reactor.listen_tcp(loopback(), server),
            |reactor, port, client| Ok(reactor.connect_tcp(port.local_addr(), client, WAIT_BOUND)),
            None,
        )
    }
}

/// The certificates and configurations every TLS pair uses: a CA made with
/// rcgen and a leaf for `localhost`, which the client trusts through the CA.
struct TlsConfigs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn tls_configs() -> &'static TlsConfigs {
    static CONFIGS: OnceLock<TlsConfigs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ca = certs::TestCa::new();
        let leaf = ca.leaf(&["localhost"]);
        TlsConfigs {
            server: tls::server_config(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), &[])
                .expect("server config"),
            client: tls::client_config_with_roots(&[ca.cert_der()], &[]).expect("client config"),
        }
    })
}

/// TLS over TCP on 127.0.0.1 (`listen_tls`, `connect_tls`), real rustls
/// handshakes with rcgen certificates.
///
/// Differences from TCP, by design: a close sends `close_notify` first and
/// the peer's `eof_received` is called for it; a TCP EOF without
/// `close_notify` is an `UnexpectedEof` error rather than `Done`.
pub struct Tls;

impl TransportKind for Tls {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn quirks(&self) -> Quirks {
        Quirks {
            paused_data_waits_in_writer: false,
            peer_of_abort: PeerOfAbort::Reset,
            eof_after_own_half_close: true,
        }
    }

    fn connect(
        &self,
        client: Box<dyn Protocol>,
        server: Box<dyn Protocol>,
        schedule: Option<Schedule>,
    ) -> Box<dyn Pair> {
        let configs = tls_configs();
        socket_pair(
            schedule,
            client,
            server,
            |reactor, server| tls::listen_tls(reactor, loopback(), configs.server.clone(), server),
            |reactor, port, client| {
                tls::connect_tls(
                    reactor,
                    port.local_addr(),
                    "localhost",
                    configs.client.clone(),
                    client,
                    WAIT_BOUND,
                )
                .map_err(Into::into)
            },
            None,
        )
    }
}

/// Unix-domain stream sockets (`listen_unix`, `connect_unix`), each pair
/// on its own socket file in the system's temporary directory (removed by
/// the port when its reactor is dropped).
///
/// Differences from TCP, by design: a Unix socket has no RST, so the peer
/// of an abort reads EOF unless the aborting side had unread input
/// ([`PeerOfAbort::EofUnlessUnreadInput`]).
pub struct Unix;

/// A socket path no other pair (or test process) uses.
fn unix_socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("gyre-conformance-{}-{n}.sock", std::process::id()))
}

/// Removes the socket file if a pair's port did not (a panic before the
/// port existed, say).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl TransportKind for Unix {
    fn name(&self) -> &'static str {
        "unix"
    }

    fn quirks(&self) -> Quirks {
        Quirks {
            paused_data_waits_in_writer: false,
            peer_of_abort: PeerOfAbort::EofUnlessUnreadInput,
            eof_after_own_half_close: true,
        }
    }

    fn connect(
        &self,
        client: Box<dyn Protocol>,
        server: Box<dyn Protocol>,
        schedule: Option<Schedule>,
    ) -> Box<dyn Pair> {
        let path = unix_socket_path();
        let dial = path.clone();
        socket_pair(
            schedule,
            client,
            server,
            |reactor, server| reactor.listen_unix(&path, server),
            move |reactor, _port, client| Ok(reactor.connect_unix(&dial, client, WAIT_BOUND)),
            Some(SocketFile(path.clone())),
        )
    }
}

/// A client and a server, each on its own reactor (perturbed by
/// `schedule`, one random stream each): `listen` starts the server's port
/// (on 127.0.0.1, or a Unix socket) with the factory it is given, `connect`
/// dials it from the client's reactor. TCP, TLS and Unix differ only in
/// those two calls (and a Unix pair's socket file, `file`).
fn socket_pair(
    schedule: Option<Schedule>,
    client: Box<dyn Protocol>,
    server: Box<dyn Protocol>,
    listen: impl FnOnce(&Reactor, Once) -> io::Result<ListeningPort>,
    connect: impl FnOnce(
        &Reactor,
        &ListeningPort,
        Once,
    ) -> Result<Connector, Box<dyn std::error::Error>>,
    file: Option<SocketFile>,
) -> Box<dyn Pair> {
    let (server_reactor, client_reactor) = (reactor(schedule, 0), reactor(schedule, 1));
    let failed = Rc::new(RefCell::new(None));
    let port = listen(
        &server_reactor,
        Once {
            protocol: Some(server),
            failed: failed.clone(),
        },
    )
    .expect("listen");
    let connector = connect(
        &client_reactor,
        &port,
        Once {
            protocol: Some(client),
            failed: failed.clone(),
        },
    )
    .expect("connect");
    Box::new(SocketPair {
        server: server_reactor,
        client: client_reactor,
        _port: port,
        _connector: connector,
        failed,
        _file: file,
    })
}

// ---------------------------------------------------------------------------
// The in-memory pump
// ---------------------------------------------------------------------------

/// The in-memory pump (`gyre_reactor::testing::connect_in_memory`), under
/// `connect_in_memory_perturbed` when a schedule is given.
///
/// It has no kernel in between: bytes for a paused reader wait in the
/// writer's buffer. It cannot send a real RST: an abort closes both sides at
/// the next step, the aborter with `Aborted`, the peer with a
/// `ConnectionReset` error, which is what a reset peer sees over TCP.
pub struct Pump;

struct PumpPair(IoPump<Box<dyn Protocol>, Box<dyn Protocol>>);

impl Pair for PumpPair {
    fn drive_until(&self, done: &mut dyn FnMut() -> bool) -> bool {
        for _ in 0..PUMP_STEP_BOUND {
            if done() {
                return true;
            }
            self.0.pump();
        }
        done()
    }

    fn quiesce(&self) -> bool {
        self.drive_until(&mut || self.0.is_closed())
    }
}

impl TransportKind for Pump {
    fn name(&self) -> &'static str {
        "pump"
    }

    fn quirks(&self) -> Quirks {
        Quirks {
            paused_data_waits_in_writer: true,
            peer_of_abort: PeerOfAbort::Reset,
            eof_after_own_half_close: false,
        }
    }

    fn connect(
        &self,
        client: Box<dyn Protocol>,
        server: Box<dyn Protocol>,
        schedule: Option<Schedule>,
    ) -> Box<dyn Pair> {
        Box::new(PumpPair(match schedule {
            Some(schedule) => connect_in_memory_perturbed(client, server, schedule.perturbation(0)),
            None => connect_in_memory(client, server),
        }))
    }
}
