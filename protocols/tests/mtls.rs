//! Mutual TLS over real loopback sockets, with certificates made by rcgen at
//! test time: a server that requires client certificates from its CA learns
//! the client's verified names; clients without a certificate, with one
//! from another CA, or with an expired one are refused. Every wait is
//! bounded; nothing sleeps.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/run.rs"]
mod run;

use run::{any_port, reactor, wait, BOUND};

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use certs::{TestCa, TestCert};
use gyre_protocols::line::{LineContext, LineHandler, LineReceiver};
use gyre_protocols::tls::{
    certificate_dns_names, certificate_serial, client_config_with_roots, connect_tls_protocol,
    listen_tls, mutual_tls_client_config, mutual_tls_server_config, parse_certs_pem, parse_key_pem,
    start_tls_client, start_tls_server, ClientConfig, ServerConfig, StartTls, TlsTransport,
};
use gyre_reactor::{factory_fn, ConnectionLost, Protocol, Reactor, Transport};

fn mtls_server(cert: &TestCert, ca: &TestCa) -> Arc<ServerConfig> {
    let chain = parse_certs_pem(cert.chain_pem.as_bytes()).unwrap();
    let key = parse_key_pem(cert.key_pem.as_bytes()).unwrap();
    mutual_tls_server_config(chain, key, &[ca.cert_der()], &[]).expect("server config")
}

fn mtls_client(roots: &TestCa, cert: &TestCert) -> Arc<ClientConfig> {
    let chain = parse_certs_pem(cert.chain_pem.as_bytes()).unwrap();
    let key = parse_key_pem(cert.key_pem.as_bytes()).unwrap();
    mutual_tls_client_config(&[roots.cert_der()], chain, key, &[]).expect("client config")
}

/// Records the names of every client the server's inner protocol saw.
type Seen = Rc<RefCell<Vec<Option<Vec<String>>>>>;

struct Recorder(Seen);
impl Protocol for Recorder {
    fn connection_made(&mut self, t: Transport) {
        let names = t
            .backend::<TlsTransport>()
            .and_then(|tls| tls.peer_dns_names());
        self.0.borrow_mut().push(names);
        t.write(b"welcome");
    }
    fn data_received(&mut self, _data: &[u8]) {}
}

/// A client that notes how its connection ended.
#[derive(Clone, Default)]
struct Ended(Rc<RefCell<Option<ConnectionLost>>>, Rc<RefCell<bool>>);
struct Quiet(Ended);
impl Protocol for Quiet {
    fn connection_made(&mut self, _t: Transport) {
        *self.0 .1.borrow_mut() = true;
    }
    fn data_received(&mut self, _data: &[u8]) {}
    fn connection_lost(&mut self, reason: ConnectionLost) {
        *self.0 .0.borrow_mut() = Some(reason);
    }
}

fn serve(reactor: &Reactor, ca: &TestCa, seen: &Seen) -> SocketAddr {
    let s = seen.clone();
    let port = listen_tls(
        reactor,
        any_port(),
        mtls_server(&ca.peer_leaf(&["server.herd"]), ca),
        factory_fn(move |_| Some(Recorder(s.clone()))),
    )
    .expect("listen");
    let addr = port.local_addr();
    std::mem::forget(port);
    addr
}

/// Connects with `client` and waits for the connection to end (refused) or
/// for the server to see it (accepted); returns whether the server did.
fn try_client(reactor: &Reactor, addr: SocketAddr, client: Arc<ClientConfig>, seen: &Seen) -> bool {
    let before = seen.borrow().len();
    let ended = Ended::default();
    let d = connect_tls_protocol(
        reactor,
        addr,
        "server.herd",
        client,
        Quiet(ended.clone()),
        BOUND,
    )
    .unwrap();
    let e = ended.clone();
    wait(reactor, "accepted or refused", || {
        seen.borrow().len() > before || e.0.borrow().is_some() || (d.called() && !*e.1.borrow())
    });
    seen.borrow().len() > before
}

#[test]
fn a_client_certificate_from_the_ca_is_verified_and_its_names_are_known() {
    let reactor = reactor();
    let ca = TestCa::new();
    let seen = Seen::default();
    let addr = serve(&reactor, &ca, &seen);
    let me = ca.peer_leaf(&["Alford"]);
    assert_eq!(certificate_dns_names(&me.der).unwrap(), ["Alford"]);
    // Serials tell two certificates apart in logs.
    let serial = certificate_serial(&me.der).unwrap();
    assert!(!serial.is_empty());
    assert!(serial.bytes().all(|b| b == b':' || b.is_ascii_hexdigit()));
    let other = ca.peer_leaf(&["Alford"]);
    assert_ne!(certificate_serial(&other.der).unwrap(), serial);
    assert!(try_client(&reactor, addr, mtls_client(&ca, &me), &seen));
    assert_eq!(seen.borrow()[0], Some(vec!["Alford".to_string()]));
}

#[test]
fn clients_without_a_good_certificate_are_refused() {
    let reactor = reactor();
    let ca = TestCa::new();
    let seen = Seen::default();
    let addr = serve(&reactor, &ca, &seen);
    // No certificate at all.
    let none = client_config_with_roots(&[ca.cert_der()], &[]).unwrap();
    assert!(!try_client(&reactor, addr, none, &seen), "no certificate");
    // A certificate from another CA (trusting our server all the same).
    let other = TestCa::new();
    let forged = other.peer_leaf(&["Alford"]);
    let client = {
        let chain = parse_certs_pem(forged.chain_pem.as_bytes()).unwrap();
        let key = parse_key_pem(forged.key_pem.as_bytes()).unwrap();
        mutual_tls_client_config(&[ca.cert_der()], chain, key, &[]).unwrap()
    };
    assert!(!try_client(&reactor, addr, client, &seen), "another CA");
    // An expired certificate from the right CA.
    let expired = ca.expired_peer_leaf(&["Alford"]);
    assert!(
        !try_client(&reactor, addr, mtls_client(&ca, &expired), &seen),
        "expired"
    );
    assert!(seen.borrow().is_empty());
}

/// STARTTLS server that switches at once on its first line and waits for
/// the handshake through `handshake_done`.
struct Switcher {
    config: Arc<ServerConfig>,
    names: Rc<RefCell<Option<io::Result<Vec<String>>>>>,
}

impl LineHandler for Switcher {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let t = ctx.transport().clone();
        let Some(tls) = t.backend::<TlsTransport>() else {
            return;
        };
        if tls.is_tls() {
            return;
        }
        assert_eq!(line, b"HELLO");
        start_tls_server(&t, self.config.clone()).unwrap();
        tls.push_back_received(&ctx.clear_line_buffer());
        let names = self.names.clone();
        let t2 = t.clone();
        drop(tls.handshake_done().add_both(move |outcome| {
            *names.borrow_mut() = Some(match outcome {
                Ok(()) => Ok(t2
                    .backend::<TlsTransport>()
                    .and_then(TlsTransport::peer_dns_names)
                    .unwrap_or_default()),
                Err(f) => Err(io::Error::other(f.to_string())),
            });
            Ok(())
        }));
    }
}

struct Hello(Arc<ClientConfig>);
impl LineHandler for Hello {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        ctx.send_line(b"HELLO");
        // The ClientHello follows the line at once, without a go-ahead.
        start_tls_client(ctx.transport(), "server.herd", self.0.clone()).unwrap();
    }
    fn line_received(&mut self, _ctx: &mut LineContext<'_>, _line: &[u8]) {}
}

#[test]
fn handshake_done_fires_after_a_start_tls_switch_with_the_peer_verified() {
    let reactor = reactor();
    let ca = TestCa::new();
    let names = Rc::new(RefCell::new(None));
    let n = names.clone();
    let r = reactor.clone();
    let config = mtls_server(&ca.peer_leaf(&["server.herd"]), &ca);
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| {
                Some(
                    StartTls::new(LineReceiver::new(Switcher {
                        config: config.clone(),
                        names: n.clone(),
                    }))
                    .with_reactor(&r),
                )
            }),
        )
        .unwrap();
    let client = mtls_client(&ca, &ca.peer_leaf(&["Ball"]));
    let _connected = reactor.connect_protocol(
        port.local_addr(),
        StartTls::new(LineReceiver::new(Hello(client))).with_reactor(&reactor),
    );
    wait(&reactor, "the handshake", || names.borrow().is_some());
    let got = names.borrow_mut().take().unwrap().unwrap();
    assert_eq!(got, ["Ball"]);
}
