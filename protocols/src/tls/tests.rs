//! The TLS layer over the in-memory pump (no sockets): handshake, echo,
//! closes, failures, start_tls; and the configuration helpers.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use gyre_reactor::testing::connect_in_memory;
use gyre_reactor::{ConnectionLost, Protocol, Transport};

use super::*;

#[path = "../../tests/common/certs.rs"]
pub(super) mod certs;
use certs::{TestCa, TestCert};

#[derive(Default)]
struct Log {
    made: bool,
    data: Vec<u8>,
    eofs: usize,
    lost: Option<ConnectionLost>,
    alpn: Option<Vec<u8>>,
    peer_certs: usize,
    transport: Option<Transport>,
}

type Shared = Rc<RefCell<Log>>;

/// Records what happens; echoes if asked; answers EOF with `keep_open`.
struct Recorder {
    log: Shared,
    echo: bool,
    keep_open: bool,
}

impl Recorder {
    fn new(echo: bool) -> (Recorder, Shared) {
        let log = Shared::default();
        let r = Recorder {
            log: log.clone(),
            echo,
            keep_open: false,
        };
        (r, log)
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, t: Transport) {
        let mut log = self.log.borrow_mut();
        log.made = true;
        if let Some(tls) = t.backend::<TlsTransport>() {
            log.alpn = tls.alpn_protocol();
            log.peer_certs = tls.peer_certificates().map_or(0, |c| c.len());
        }
        log.transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = {
            let mut log = self.log.borrow_mut();
            log.data.extend_from_slice(data);
            log.transport.clone()
        };
        if self.echo {
            if let Some(t) = t {
                t.write(data);
            }
        }
    }
    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().eofs += 1;
        self.keep_open
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        let mut log = self.log.borrow_mut();
        log.lost = Some(reason);
        log.transport = None;
    }
}

fn transport(log: &Shared) -> Transport {
    log.borrow().transport.clone().expect("connected")
}

struct Setup {
    ca: TestCa,
}

impl Setup {
    fn new() -> Setup {
        Setup { ca: TestCa::new() }
    }
    fn client(&self, inner: impl Protocol, alpn: &[&[u8]]) -> TlsProtocol {
        let config = client_config_with_roots(&[self.ca.cert_der()], alpn).unwrap();
        TlsProtocol::client(inner, "localhost", config).unwrap()
    }
    fn server_with(&self, cert: &TestCert, inner: impl Protocol, alpn: &[&[u8]]) -> TlsProtocol {
        let config =
            server_config(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), alpn).unwrap();
        TlsProtocol::server(inner, config).unwrap()
    }
    fn server(&self, inner: impl Protocol, alpn: &[&[u8]]) -> TlsProtocol {
        self.server_with(&self.ca.leaf(&["localhost"]), inner, alpn)
    }
}

#[test]
fn handshake_then_echo_then_clean_close() {
    let s = Setup::new();
    let (client, clog) = Recorder::new(false);
    let (server, slog) = Recorder::new(true);
    let pump = connect_in_memory(
        s.client(client, &[b"h2", b"echo/1"]),
        s.server(server, &[b"echo/1"]),
    );
    assert!(
        !clog.borrow().made,
        "connection_made waits for the handshake"
    );
    pump.flush().unwrap();
    assert!(clog.borrow().made && slog.borrow().made);
    assert_eq!(clog.borrow().alpn.as_deref(), Some(&b"echo/1"[..]));
    assert_eq!(slog.borrow().alpn.as_deref(), Some(&b"echo/1"[..]));
    assert_eq!(clog.borrow().peer_certs, 2, "leaf and CA");
    assert_eq!(slog.borrow().peer_certs, 0);

    let ct = transport(&clog);
    ct.write(b"hello, ");
    ct.write_sequence(&[b"tls", b" world"]);
    assert!(ct.buffered_len() > 0);
    pump.flush().unwrap();
    assert_eq!(slog.borrow().data, b"hello, tls world");
    assert_eq!(clog.borrow().data, b"hello, tls world");

    ct.lose_connection();
    assert!(ct.is_closing());
    ct.write(b"dropped");
    pump.flush().unwrap();
    assert!(pump.is_closed());
    assert_eq!(slog.borrow().eofs, 1, "close_notify is the server's EOF");
    assert!(matches!(clog.borrow().lost, Some(ConnectionLost::Done)));
    assert!(matches!(slog.borrow().lost, Some(ConnectionLost::Done)));
    assert_eq!(slog.borrow().data, b"hello, tls world");
}

#[test]
fn half_close_lets_the_peer_answer() {
    let s = Setup::new();
    let (client, clog) = Recorder::new(false);
    let slog = Shared::default();
    struct Answer(Shared);
    impl Protocol for Answer {
        fn connection_made(&mut self, t: Transport) {
            self.0.borrow_mut().transport = Some(t);
        }
        fn data_received(&mut self, data: &[u8]) {
            self.0.borrow_mut().data.extend_from_slice(data);
        }
        fn eof_received(&mut self) -> bool {
            let t = transport(&self.0);
            let n = self.0.borrow().data.len();
            t.write(format!("got {n} bytes").as_bytes());
            t.lose_connection();
            true
        }
        fn connection_lost(&mut self, reason: ConnectionLost) {
            self.0.borrow_mut().lost = Some(reason);
        }
    }
    let pump = connect_in_memory(s.client(client, &[]), s.server(Answer(slog.clone()), &[]));
    pump.flush().unwrap();
    let ct = transport(&clog);
    ct.write(b"12345");
    ct.half_close();
    assert!(!ct.is_closing(), "a half-close is not a close");
    pump.flush().unwrap();
    assert_eq!(clog.borrow().data, b"got 5 bytes");
    assert_eq!(clog.borrow().eofs, 1);
    assert!(matches!(clog.borrow().lost, Some(ConnectionLost::Done)));
    assert!(matches!(slog.borrow().lost, Some(ConnectionLost::Done)));
}

#[test]
fn tcp_eof_without_close_notify_is_an_unexpected_eof() {
    let s = Setup::new();
    let (client, clog) = Recorder::new(false);
    let (server, slog) = Recorder::new(false);
    let server = s.server(server, &[]);
    let server_tls = server.tls_transport();
    let pump = connect_in_memory(s.client(client, &[]), server);
    pump.flush().unwrap();
    transport(&slog).write(b"partial");
    // Shut the TCP write side under TLS: no close_notify.
    server_tls.tcp_transport().unwrap().half_close();
    pump.flush().unwrap();
    assert_eq!(clog.borrow().data, b"partial");
    assert_eq!(clog.borrow().eofs, 0, "a truncation is not an EOF");
    let lost = clog.borrow_mut().lost.take();
    match lost {
        Some(ConnectionLost::Error(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert!(e.to_string().contains("without close_notify"), "{e}");
        }
        other => panic!("expected an UnexpectedEof error, got {other:?}"),
    }
}

#[test]
fn wrong_name_fails_the_handshake_on_both_sides() {
    let s = Setup::new();
    let (client, clog) = Recorder::new(false);
    let (server, slog) = Recorder::new(false);
    let client = s.client(client, &[]);
    let client_tls = client.tls_transport();
    let server = s.server_with(&s.ca.leaf(&["example.com"]), server, &[]);
    let server_tls = server.tls_transport();
    let pump = connect_in_memory(client, server);
    pump.flush().unwrap();
    assert!(pump.is_closed());
    assert!(!clog.borrow().made && clog.borrow().lost.is_none());
    assert!(!slog.borrow().made && slog.borrow().lost.is_none());
    let err = client_tls
        .handshake_error()
        .expect("a client handshake error");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(
        msg.contains("invalid peer certificate") && msg.contains("not valid for name"),
        "{msg}"
    );
    assert!(msg.contains("localhost"), "{msg}");
    let err = server_tls
        .handshake_error()
        .expect("a server handshake error");
    assert!(err.to_string().contains("alert"), "{err}");
}

#[test]
fn corrupt_record_after_the_handshake_is_an_error() {
    let s = Setup::new();
    let (client, clog) = Recorder::new(false);
    let server = s.server(Recorder::new(false).0, &[]);
    let server_tls = server.tls_transport();
    let pump = connect_in_memory(s.client(client, &[]), server);
    pump.flush().unwrap();
    // An application-data record header and garbage.
    server_tls.tcp_transport().unwrap().write(&[
        23, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    ]);
    pump.flush().unwrap();
    assert!(pump.is_closed());
    let lost = clog.borrow_mut().lost.take();
    match lost {
        Some(ConnectionLost::Error(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("TLS error"), "{e}");
        }
        other => panic!("expected an InvalidData error, got {other:?}"),
    }
}

/// A line protocol that switches to TLS on "STARTTLS" / "OK".
struct Starter {
    log: Shared,
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
    /// The client sends its ClientHello right after the command, without
    /// waiting for "OK"; the server hands the rest of the read back.
    pipelined: bool,
    tls: bool,
    buf: Vec<u8>,
}

impl Protocol for Starter {
    fn connection_made(&mut self, t: Transport) {
        self.log.borrow_mut().transport = Some(t.clone());
        if let Some(config) = &self.client {
            t.write(b"STARTTLS\n");
            if self.pipelined {
                start_tls_client(&t, "localhost", config.clone()).unwrap();
                self.tls = true;
                t.write(b"secret");
            }
        }
    }
    fn data_received(&mut self, data: &[u8]) {
        let t = transport(&self.log);
        if self.tls {
            self.log.borrow_mut().data.extend_from_slice(data);
            if self.server.is_some() {
                t.write(data);
            }
            return;
        }
        self.buf.extend_from_slice(data);
        let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
            return;
        };
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        let rest = std::mem::take(&mut self.buf);
        if let Some(config) = &self.server {
            assert_eq!(line, b"STARTTLS\n");
            if !self.pipelined {
                t.write(b"OK\n");
            }
            start_tls_server(&t, config.clone()).unwrap();
            t.backend::<TlsTransport>()
                .unwrap()
                .push_back_received(&rest);
        } else if let Some(config) = &self.client {
            assert_eq!(line, b"OK\n");
            start_tls_client(&t, "localhost", config.clone()).unwrap();
            t.write(b"secret");
        }
        self.tls = true;
    }
    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.borrow_mut().lost = Some(reason);
    }
}

fn start_tls_pair(pipelined: bool) {
    let s = Setup::new();
    let leaf = s.ca.leaf(&["localhost"]);
    let (clog, slog) = (Shared::default(), Shared::default());
    let client = Starter {
        log: clog.clone(),
        server: None,
        client: Some(client_config_with_roots(&[s.ca.cert_der()], &[]).unwrap()),
        pipelined,
        tls: false,
        buf: Vec::new(),
    };
    let server = Starter {
        log: slog.clone(),
        server: Some(
            server_config(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), &[]).unwrap(),
        ),
        client: None,
        pipelined,
        tls: false,
        buf: Vec::new(),
    };
    let pump = connect_in_memory(StartTls::new(client), StartTls::new(server));
    pump.flush().unwrap();
    assert_eq!(slog.borrow().data, b"secret");
    assert_eq!(clog.borrow().data, b"secret");
    for log in [&clog, &slog] {
        let t = transport(log);
        let tls = t.backend::<TlsTransport>().unwrap();
        assert!(tls.is_tls() && tls.is_handshake_complete());
        let config = server_config(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), &[]);
        let again = start_tls_server(&t, config.unwrap());
        assert_eq!(again.unwrap_err().kind(), TlsErrorKind::StartTls);
    }
    transport(&clog).lose_connection();
    pump.flush().unwrap();
    assert!(matches!(clog.borrow().lost, Some(ConnectionLost::Done)));
    assert!(matches!(slog.borrow().lost, Some(ConnectionLost::Done)));
}

#[test]
fn start_tls_after_a_plaintext_exchange() {
    start_tls_pair(false);
}

#[test]
fn start_tls_with_the_client_hello_in_the_same_read() {
    start_tls_pair(true);
}

#[test]
fn start_tls_needs_a_start_tls_transport() {
    let st = gyre_reactor::testing::StringTransport::new();
    let cert = TestCert::self_signed(&["localhost"]);
    let config = server_config(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), &[]).unwrap();
    let err = start_tls_server(&st.transport(), config).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::StartTls);
}

#[test]
fn pem_and_config_errors() {
    let cert = TestCert::self_signed(&["localhost"]);
    assert_eq!(parse_certs_pem(cert.chain_pem.as_bytes()).unwrap().len(), 1);
    assert!(parse_key_pem(cert.key_pem.as_bytes()).is_ok());

    let err = parse_certs_pem(cert.key_pem.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::NoCertificates);
    let err = parse_key_pem(cert.chain_pem.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::NoPrivateKey);
    assert!(err.to_string().contains("no private key"), "{err}");
    let truncated = &cert.chain_pem[..cert.chain_pem.len() / 2];
    let err = parse_certs_pem(truncated.as_bytes()).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Pem, "{err}");

    // A key that does not match the certificate.
    let other = TestCert::self_signed(&["localhost"]);
    let err = server_config(cert.chain_pem.as_bytes(), other.key_pem.as_bytes(), &[]).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Config, "{err}");

    let config = client_config(&[], &[]).unwrap();
    let err = TlsProtocol::client(Recorder::new(false).0, "not a name!", config)
        .err()
        .unwrap();
    assert_eq!(err.kind(), TlsErrorKind::ServerName);
    assert!(err.to_string().contains("not a name!"), "{err}");
    let as_io: io::Error = err.into();
    assert_eq!(as_io.kind(), io::ErrorKind::InvalidInput);

    let missing = std::env::temp_dir().join(format!("gyre-tls-missing-{}.pem", std::process::id()));
    let err = client_config_from_pem_file(&missing, &[]).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::Io);
    assert!(err.to_string().contains("gyre-tls-missing"), "{err}");

    let ca = TestCa::new();
    let path = std::env::temp_dir().join(format!("gyre-tls-ca-{}.pem", std::process::id()));
    std::fs::write(&path, ca.cert_pem()).unwrap();
    let config = client_config_from_pem_file(&path, &[b"http/1.1"]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(config.unwrap().alpn_protocols, [b"http/1.1".to_vec()]);
}

/// Pauses reading as soon as it is connected.
struct PauseAtOnce(Shared);
impl Protocol for PauseAtOnce {
    fn connection_made(&mut self, t: Transport) {
        t.pause_reading();
        self.0.borrow_mut().transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(data);
    }
}

/// Writes a greeting as soon as it is connected.
struct Greet;
impl Protocol for Greet {
    fn connection_made(&mut self, t: Transport) {
        t.write(b"early");
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

#[test]
fn plaintext_read_with_the_handshake_waits_for_resume_reading() {
    // With TLS 1.2 the server finishes first, so its first write arrives in
    // the same read as its Finished: after the client's connection_made,
    // which pauses reading.
    let s = Setup::new();
    let leaf = s.ca.leaf(&["localhost"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        parse_certs_pem(leaf.chain_pem.as_bytes()).unwrap(),
        parse_key_pem(leaf.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let reactor = gyre_reactor::Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap();
    let clog = Shared::default();
    let client = s
        .client(PauseAtOnce(clog.clone()), &[])
        .with_reactor(&reactor);
    let client_tls = client.tls_transport();
    let server = TlsProtocol::server(Greet, Arc::new(config)).unwrap();
    let pump = connect_in_memory(client, server);
    pump.flush().unwrap();
    assert_eq!(
        client_tls.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(clog.borrow().data.is_empty(), "held while paused");
    transport(&clog).resume_reading();
    assert!(
        clog.borrow().data.is_empty(),
        "never delivered from resume_reading itself"
    );
    let ok = reactor
        .run_until(
            || !clog.borrow().data.is_empty(),
            std::time::Duration::from_secs(20),
        )
        .unwrap();
    assert!(ok);
    assert_eq!(clog.borrow().data, b"early");
}

#[test]
fn buffers_return_to_the_floor_after_a_4_mib_burst() {
    let s = Setup::new();
    let (client, clog) = Recorder::new(false);
    let (server, slog) = Recorder::new(true);
    let client = s.client(client, &[]);
    let server = s.server(server, &[]);
    let (client_tls, server_tls) = (client.tls_transport(), server.tls_transport());
    let pump = connect_in_memory(client, server);
    pump.flush().unwrap();
    let ct = transport(&clog);
    // Written before any of it is pumped: the burst is in flight at once.
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for _ in 0..64 {
        ct.write(&chunk);
    }
    let before_drain = client_tls.buffer_capacity();
    pump.flush().unwrap();
    assert_eq!(slog.borrow().data.len(), 4 << 20);
    assert_eq!(clog.borrow().data.len(), 4 << 20, "echoed back");
    assert!(before_drain <= TLS_BUFFER_FLOOR, "{before_drain}");
    for tls in [&client_tls, &server_tls] {
        assert!(
            tls.buffer_capacity() <= TLS_BUFFER_FLOOR,
            "{}",
            tls.buffer_capacity()
        );
        assert!(
            tls.read_buffer_capacity() <= TLS_BUFFER_FLOOR,
            "{}",
            tls.read_buffer_capacity()
        );
    }
}
