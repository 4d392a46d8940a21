//! TLS over real loopback sockets, with certificates made by rcgen at test
//! time (see `common/certs.rs`): echo, refused certificates, STARTTLS,
//! ALPN, truncation, and flow control. Every wait is bounded; nothing
//! sleeps.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/run.rs"]
mod run;

use run::{any_port, reactor, wait, BOUND};

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use certs::{TestCa, TestCert};
use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
use gyre_protocols::tls::{
    client_config, client_config_with_roots, connect_tls, connect_tls_protocol, listen_tls,
    server_config, start_tls_client, start_tls_server, ClientConfig, ServerConfig, StartTls,
    TlsTransport,
};
use gyre_reactor::{
    factory_fn, ClientFactory, ConnectionLost, Connector, Factory, Producer, Protocol, Reactor,
    Transport,
};

fn server_cfg(cert: &TestCert, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    server_config(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), alpn).expect("server config")
}

fn client_cfg(ca: &TestCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_with_roots(&[ca.cert_der()], alpn).expect("client config")
}

/// What one side saw.
#[derive(Default)]
struct Log {
    made: bool,
    data: Vec<u8>,
    lines: Vec<Vec<u8>>,
    eofs: usize,
    lost: Option<ConnectionLost>,
    alpn: Option<Vec<u8>>,
    transport: Option<Transport>,
}

type Shared = Rc<RefCell<Log>>;

fn lost_kind(log: &Shared) -> String {
    match &log.borrow().lost {
        None => "not lost".into(),
        Some(ConnectionLost::Error(e)) => format!("error {:?}: {e}", e.kind()),
        Some(other) => format!("{other:?}"),
    }
}

fn is_done(log: &Shared) -> bool {
    matches!(log.borrow().lost, Some(ConnectionLost::Done))
}

/// Records everything; echoes when asked; writes `greeting` once connected
/// and closes once `close_after` bytes arrived.
struct Peer {
    log: Shared,
    echo: bool,
    greeting: Rc<Vec<u8>>,
    close_after: Option<usize>,
}

impl Peer {
    fn echo(log: &Shared) -> Peer {
        Peer {
            log: log.clone(),
            echo: true,
            greeting: Rc::default(),
            close_after: None,
        }
    }
    fn quiet(log: &Shared) -> Peer {
        Peer {
            echo: false,
            ..Peer::echo(log)
        }
    }
}

impl Protocol for Peer {
    fn connection_made(&mut self, t: Transport) {
        {
            let mut log = self.log.borrow_mut();
            log.made = true;
            log.alpn = t.backend::<TlsTransport>().and_then(|b| b.alpn_protocol());
            log.transport = Some(t.clone());
        }
        if !self.greeting.is_empty() {
            t.write(&self.greeting);
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        let (t, total) = {
            let mut log = self.log.borrow_mut();
            log.data.extend_from_slice(data);
            (log.transport.clone(), log.data.len())
        };
        let Some(t) = t else { return };
        if self.echo {
            t.write(data);
        }
        if self.close_after.is_some_and(|n| total >= n) {
            t.lose_connection();
        }
    }
    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().eofs += 1;
        false
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        let mut log = self.log.borrow_mut();
        log.lost = Some(reason);
        log.transport = None;
    }
}

/// How a connect attempt ended, as its client factory heard it.
#[derive(Default)]
struct Outcome {
    failed: Option<io::Error>,
    lost: Option<ConnectionLost>,
}

/// A client factory for one protocol, recording the outcome.
struct OneClient<P> {
    protocol: Option<P>,
    outcome: Rc<RefCell<Outcome>>,
}

impl<P: Protocol> OneClient<P> {
    fn new(protocol: P) -> (OneClient<P>, Rc<RefCell<Outcome>>) {
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        (
            OneClient {
                protocol: Some(protocol),
                outcome: outcome.clone(),
            },
            outcome,
        )
    }
}

impl<P: Protocol> Factory for OneClient<P> {
    type Protocol = P;
    fn build_protocol(&mut self, _peer: SocketAddr) -> Option<P> {
        self.protocol.take()
    }
}

impl<P: Protocol> ClientFactory for OneClient<P> {
    fn client_connection_failed(&mut self, _c: &Connector, reason: &io::Error) {
        self.outcome.borrow_mut().failed = Some(io::Error::new(reason.kind(), reason.to_string()));
    }
    fn client_connection_lost(&mut self, _c: &Connector, reason: &ConnectionLost) {
        self.outcome.borrow_mut().lost = Some(reason.clone());
    }
}

#[test]
fn tls_echo_of_one_megabyte_with_clean_closes() {
    let reactor = reactor();
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let slog = Shared::default();
    let s = slog.clone();
    let port = listen_tls(
        &reactor,
        any_port(),
        server_cfg(&leaf, &[]),
        factory_fn(move |_| Some(Peer::echo(&s))),
    )
    .expect("listen");

    let payload: Rc<Vec<u8>> = Rc::new((0..1usize << 20).map(|i| (i * 7 % 251) as u8).collect());
    let clog = Shared::default();
    let client = Peer {
        log: clog.clone(),
        echo: false,
        greeting: payload.clone(),
        close_after: Some(payload.len()),
    };
    let (factory, outcome) = OneClient::new(client);
    connect_tls(
        &reactor,
        port.local_addr(),
        "localhost",
        client_cfg(&ca, &[]),
        factory,
        BOUND,
    )
    .expect("connect_tls");

    wait(&reactor, "both sides to close", || {
        clog.borrow().lost.is_some()
            && slog.borrow().lost.is_some()
            && outcome.borrow().lost.is_some()
    });
    assert!(clog.borrow().data == *payload, "the echo came back intact");
    assert!(slog.borrow().data == *payload);
    assert!(is_done(&clog), "client: {}", lost_kind(&clog));
    assert!(is_done(&slog), "server: {}", lost_kind(&slog));
    assert_eq!(
        slog.borrow().eofs,
        1,
        "the client's close_notify is the server's EOF"
    );
    assert!(matches!(outcome.borrow().lost, Some(ConnectionLost::Done)));
    assert!(outcome.borrow().failed.is_none());
}

/// Connects a client trusting `client` to a server presenting `cert`;
/// returns the error the client factory got, after checking that neither
/// side's protocol ever connected.
fn refused(cert: &TestCert, client: Arc<ClientConfig>) -> io::Error {
    let reactor = reactor();
    let slog = Shared::default();
    let s = slog.clone();
    let port = listen_tls(
        &reactor,
        any_port(),
        server_cfg(cert, &[]),
        factory_fn(move |_| Some(Peer::echo(&s))),
    )
    .expect("listen");
    let clog = Shared::default();
    let (factory, outcome) = OneClient::new(Peer::quiet(&clog));
    let connector = connect_tls(
        &reactor,
        port.local_addr(),
        "localhost",
        client,
        factory,
        BOUND,
    )
    .expect("connect_tls");
    wait(
        &reactor,
        "the handshake to fail and both ends to close",
        || outcome.borrow().failed.is_some() && reactor.connection_count() == 0,
    );
    assert!(
        !clog.borrow().made && clog.borrow().lost.is_none(),
        "client protocol untouched"
    );
    assert!(
        !slog.borrow().made && slog.borrow().lost.is_none(),
        "server protocol untouched"
    );
    assert!(
        outcome.borrow().lost.is_none(),
        "a failed handshake is not a lost connection"
    );
    assert_eq!(
        connector.state(),
        gyre_reactor::ConnectorState::Disconnected
    );
    let err = outcome.borrow_mut().failed.take().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("TLS handshake with localhost"), "{msg}");
    assert!(msg.contains("invalid peer certificate"), "{msg}");
    err
}

#[test]
fn client_refuses_a_certificate_for_another_name() {
    let ca = TestCa::new();
    let err = refused(&ca.leaf(&["example.com"]), client_cfg(&ca, &[]));
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[test]
fn client_refuses_an_untrusted_self_signed_certificate() {
    let ca = TestCa::new();
    // The public roots and our CA, but not this certificate.
    let client = client_config(&[ca.cert_der()], &[]).expect("client config");
    let err = refused(&TestCert::self_signed(&["localhost"]), client);
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn client_refuses_an_expired_certificate() {
    let ca = TestCa::new();
    let err = refused(&ca.expired_leaf(&["localhost"]), client_cfg(&ca, &[]));
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn alpn_protocol_is_negotiated_and_visible() {
    let reactor = reactor();
    let ca = TestCa::new();
    let slog = Shared::default();
    let s = slog.clone();
    let port = listen_tls(
        &reactor,
        any_port(),
        server_cfg(&ca.leaf(&["localhost"]), &[b"h2", b"http/1.1"]),
        factory_fn(move |_| Some(Peer::echo(&s))),
    )
    .expect("listen");
    let clog = Shared::default();
    let (factory, _outcome) = OneClient::new(Peer::quiet(&clog));
    let client = client_cfg(&ca, &[b"http/1.1", b"spdy/1"]);
    connect_tls(
        &reactor,
        port.local_addr(),
        "localhost",
        client,
        factory,
        BOUND,
    )
    .unwrap();
    wait(&reactor, "both sides connected", || {
        clog.borrow().made && slog.borrow().made
    });
    assert_eq!(clog.borrow().alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(slog.borrow().alpn.as_deref(), Some(&b"http/1.1"[..]));
    let t = clog.borrow().transport.clone().unwrap();
    let tls = t.backend::<TlsTransport>().unwrap();
    assert_eq!(tls.peer_certificates().map(|c| c.len()), Some(2));
    assert_eq!(tls.server_name().as_deref(), Some("localhost"));
    assert!(tls.protocol_version().is_some() && tls.cipher_suite().is_some());
    t.lose_connection();
    wait(&reactor, "both sides closed", || {
        clog.borrow().lost.is_some() && slog.borrow().lost.is_some()
    });
    assert!(is_done(&clog), "client: {}", lost_kind(&clog));
    assert!(is_done(&slog), "server: {}", lost_kind(&slog));
}

/// Writes "bye" and closes the TCP connection under TLS: no close_notify.
struct Truncate;
impl Protocol for Truncate {
    fn connection_made(&mut self, t: Transport) {
        t.write(b"bye");
        let tcp = t.backend::<TlsTransport>().and_then(|b| b.tcp_transport());
        tcp.expect("a TLS transport over TCP").lose_connection();
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

#[test]
fn a_close_without_close_notify_is_reported_as_unexpected_eof() {
    let reactor = reactor();
    let ca = TestCa::new();
    let port = listen_tls(
        &reactor,
        any_port(),
        server_cfg(&ca.leaf(&["localhost"]), &[]),
        factory_fn(|_| Some(Truncate)),
    )
    .expect("listen");
    let clog = Shared::default();
    let (factory, outcome) = OneClient::new(Peer::quiet(&clog));
    connect_tls(
        &reactor,
        port.local_addr(),
        "localhost",
        client_cfg(&ca, &[]),
        factory,
        BOUND,
    )
    .unwrap();
    wait(&reactor, "the client to see the close", || {
        outcome.borrow().lost.is_some()
    });
    assert_eq!(clog.borrow().data, b"bye");
    assert_eq!(clog.borrow().eofs, 0);
    for reason in [clog.borrow().lost.clone(), outcome.borrow().lost.clone()] {
        match reason {
            Some(ConnectionLost::Error(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                assert!(e.to_string().contains("without close_notify"), "{e}");
            }
            other => panic!("expected UnexpectedEof, got {other:?}"),
        }
    }
}

// ----- STARTTLS over line receivers ------------------------------------------

/// The server side: "STARTTLS" -> "OK" and TLS; then echoes lines.
struct StartTlsServer {
    config: Arc<ServerConfig>,
    log: Shared,
}

impl LineHandler for StartTlsServer {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.log.borrow_mut().lines.push(line.to_vec());
        let t = ctx.transport().clone();
        let tls = t.backend::<TlsTransport>().expect("run by StartTls");
        if !tls.is_tls() {
            if line == b"STARTTLS" {
                ctx.send_line(b"OK"); // in plaintext, before the switch
                start_tls_server(&t, self.config.clone()).expect("start_tls_server");
                // Whatever followed the command is TLS.
                tls.push_back_received(&ctx.clear_line_buffer());
            } else {
                ctx.send_line(b"ERR");
            }
        } else {
            self.log.borrow_mut().made = tls.is_handshake_complete();
            ctx.send_line(line);
        }
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

/// The client side: "STARTTLS", waits for "OK", switches, sends a line,
/// closes when it comes back.
struct StartTlsClient {
    config: Arc<ClientConfig>,
    log: Shared,
}

impl LineHandler for StartTlsClient {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        self.log.borrow_mut().transport = Some(ctx.transport().clone());
        ctx.send_line(b"STARTTLS");
    }
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.log.borrow_mut().lines.push(line.to_vec());
        let t = ctx.transport().clone();
        let tls = t.backend::<TlsTransport>().expect("run by StartTls");
        if !tls.is_tls() {
            assert_eq!(line, b"OK");
            start_tls_client(&t, "localhost", self.config.clone()).expect("start_tls_client");
            ctx.send_line(b"hello over TLS"); // held until the handshake is done
        } else {
            self.log.borrow_mut().made = tls.is_handshake_complete();
            ctx.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

#[test]
fn start_tls_after_a_plaintext_exchange() {
    let reactor = reactor();
    let ca = TestCa::new();
    let config = server_cfg(&ca.leaf(&["localhost"]), &[]);
    let slog = Shared::default();
    let s = slog.clone();
    let r = reactor.clone();
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                let handler = StartTlsServer {
                    config: config.clone(),
                    log: s.clone(),
                };
                Some(StartTls::new(LineReceiver::new(handler)).with_reactor(&r))
            }),
        )
        .expect("listen");
    let clog = Shared::default();
    let client = StartTls::new(LineReceiver::new(StartTlsClient {
        config: client_cfg(&ca, &[]),
        log: clog.clone(),
    }))
    .with_reactor(&reactor);
    let (factory, outcome) = OneClient::new(client);
    reactor.connect_tcp(port.local_addr(), factory, BOUND);
    wait(&reactor, "both sides to close", || {
        clog.borrow().lost.is_some() && slog.borrow().lost.is_some()
    });
    assert_eq!(
        slog.borrow().lines,
        [b"STARTTLS".to_vec(), b"hello over TLS".to_vec()]
    );
    assert_eq!(
        clog.borrow().lines,
        [b"OK".to_vec(), b"hello over TLS".to_vec()]
    );
    assert!(
        slog.borrow().made && clog.borrow().made,
        "the echo went over TLS"
    );
    assert!(is_done(&clog), "client: {}", lost_kind(&clog));
    assert!(is_done(&slog), "server: {}", lost_kind(&slog));
    assert!(matches!(outcome.borrow().lost, Some(ConnectionLost::Done)));
}

// ----- flow control -------------------------------------------------------------

const CHUNK: usize = 16 * 1024;

/// Writes a chunk per loop turn while not paused.
struct Flood {
    me: Weak<Flood>,
    reactor: Reactor,
    transport: Transport,
    paused: Cell<bool>,
    stopped: Cell<bool>,
    pauses: Cell<usize>,
    resumes: Cell<usize>,
    written: Cell<usize>,
    max_buffered: Cell<usize>,
}

impl Flood {
    fn produce(&self) {
        if self.paused.get() || self.stopped.get() || self.transport.is_closing() {
            return;
        }
        self.transport.write(&[b'x'; CHUNK]);
        self.written.set(self.written.get() + CHUNK);
        let buffered = self.transport.buffered_len();
        self.max_buffered.set(self.max_buffered.get().max(buffered));
        if self.written.get() > 512 << 20 {
            return; // never stopped by back-pressure: the test fails on its wait
        }
        let me = self.me.clone();
        self.reactor.call_soon(move || {
            if let Some(me) = me.upgrade() {
                me.produce();
            }
        });
    }
}

impl Producer for Flood {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.resumes.set(self.resumes.get() + 1);
        self.produce();
    }
    fn stop_producing(&self) {
        self.stopped.set(true);
    }
}

struct FloodServer {
    reactor: Reactor,
    flood: Rc<RefCell<Option<Rc<Flood>>>>,
}

impl Protocol for FloodServer {
    fn connection_made(&mut self, t: Transport) {
        let flood = Rc::new_cyclic(|me| Flood {
            me: me.clone(),
            reactor: self.reactor.clone(),
            transport: t.clone(),
            paused: Cell::new(false),
            stopped: Cell::new(false),
            pauses: Cell::new(0),
            resumes: Cell::new(0),
            written: Cell::new(0),
            max_buffered: Cell::new(0),
        });
        t.register_producer(flood.clone());
        flood.produce();
        *self.flood.borrow_mut() = Some(flood);
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

/// Stops reading as soon as it is connected.
struct Stalled(Shared);
impl Protocol for Stalled {
    fn connection_made(&mut self, t: Transport) {
        t.pause_reading();
        self.0.borrow_mut().transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.0.borrow_mut().lost = Some(reason);
    }
}

#[test]
fn a_producer_is_paused_while_the_client_does_not_read() {
    let reactor = reactor();
    let ca = TestCa::new();
    let flood: Rc<RefCell<Option<Rc<Flood>>>> = Rc::default();
    let (f, r) = (flood.clone(), reactor.clone());
    let port = listen_tls(
        &reactor,
        any_port(),
        server_cfg(&ca.leaf(&["localhost"]), &[]),
        factory_fn(move |_| {
            Some(FloodServer {
                reactor: r.clone(),
                flood: f.clone(),
            })
        }),
    )
    .expect("listen");
    let clog = Shared::default();
    let (factory, _outcome) = OneClient::new(Stalled(clog.clone()));
    connect_tls(
        &reactor,
        port.local_addr(),
        "localhost",
        client_cfg(&ca, &[]),
        factory,
        BOUND,
    )
    .unwrap();
    let get = |f: &dyn Fn(&Flood) -> usize| flood.borrow().as_ref().map_or(0, |fl| f(fl));
    wait(&reactor, "the producer to be paused", || {
        get(&|f| f.pauses.get()) > 0
    });
    let written = get(&|f| f.written.get());
    let max_buffered = get(&|f| f.max_buffered.get());
    let bound = gyre_reactor::DEFAULT_HIGH_WATER + 2 * CHUNK + 4096;
    assert!(
        max_buffered <= bound,
        "buffered_len reached {max_buffered} (bound {bound}) after {written} bytes"
    );
    let server_t = flood.borrow().as_ref().unwrap().transport.clone();
    assert!(server_t.buffered_len() <= bound);

    // The client reads again: the producer resumes.
    let client_t = clog.borrow().transport.clone().unwrap();
    client_t.resume_reading();
    wait(&reactor, "the producer to resume", || {
        get(&|f| f.resumes.get()) > 0
    });
    assert!(!clog.borrow().data.is_empty());
    assert!(clog.borrow().data.iter().all(|&b| b == b'x'));
    client_t.abort_connection();
    wait(&reactor, "the client to close", || {
        clog.borrow().lost.is_some()
    });
    assert!(matches!(clog.borrow().lost, Some(ConnectionLost::Aborted)));
}

#[test]
fn a_server_that_never_answers_the_handshake_times_out() {
    let manual = gyre_reactor::clock::ManualClock::new();
    let reactor = Reactor::builder()
        .clock(manual.clock())
        .install_signal_handlers(false)
        .build()
        .expect("reactor");
    // A plain TCP server that reads the ClientHello and says nothing.
    let slog = Shared::default();
    let s = slog.clone();
    let port = reactor
        .listen_tcp(any_port(), factory_fn(move |_| Some(Peer::quiet(&s))))
        .expect("listen");
    let ca = TestCa::new();
    let clog = Shared::default();
    let (factory, outcome) = OneClient::new(Peer::quiet(&clog));
    let timeout = Duration::from_secs(5);
    connect_tls(
        &reactor,
        port.local_addr(),
        "localhost",
        client_cfg(&ca, &[]),
        factory,
        timeout,
    )
    .unwrap();
    wait(&reactor, "the ClientHello", || {
        !slog.borrow().data.is_empty()
    });
    assert!(outcome.borrow().failed.is_none());
    manual.advance(timeout);
    wait(&reactor, "the handshake time-out", || {
        outcome.borrow().failed.is_some()
    });
    let err = outcome.borrow_mut().failed.take().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake with localhost") && msg.contains("no handshake within"),
        "{msg}"
    );
    assert!(!clog.borrow().made && clog.borrow().lost.is_none());
    wait(&reactor, "the server to see the abort", || {
        slog.borrow().lost.is_some()
    });
}

#[test]
fn connect_tls_protocol_fires_after_the_handshake_or_fails_with_the_reason() {
    let reactor = reactor();
    let ca = TestCa::new();
    let slog = Shared::default();
    let s = slog.clone();
    let port = listen_tls(
        &reactor,
        any_port(),
        server_cfg(&ca.leaf(&["localhost"]), &[]),
        factory_fn(move |_| Some(Peer::echo(&s))),
    )
    .expect("listen");
    let addr = port.local_addr();

    let clog = Shared::default();
    let d = connect_tls_protocol(
        &reactor,
        addr,
        "localhost",
        client_cfg(&ca, &[]),
        Peer::quiet(&clog),
        BOUND,
    )
    .unwrap();
    wait(&reactor, "the Deferred", || d.called());
    let t = d.take_result().unwrap().expect("connected");
    assert!(clog.borrow().made, "connection_made ran first");
    assert!(t
        .backend::<TlsTransport>()
        .is_some_and(|tls| tls.is_handshake_complete()));
    t.lose_connection();

    // A client that trusts nothing of ours: the Deferred fails with the reason.
    let untrusting = client_config(&[], &[]).unwrap();
    let d = connect_tls_protocol(
        &reactor,
        addr,
        "localhost",
        untrusting,
        Peer::quiet(&clog),
        BOUND,
    )
    .unwrap();
    wait(&reactor, "the Deferred", || d.called());
    let failure = d.take_result().unwrap().expect_err("a failure");
    let err = failure.downcast_ref::<io::Error>().expect("an io::Error");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}
