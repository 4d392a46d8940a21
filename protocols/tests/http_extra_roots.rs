//! `HttpClientConfig::with_extra_roots`: an HTTPS request to a real TLS
//! server on loopback whose certificate comes from a CA made by rcgen at
//! test time. The client trusts that CA on top of the public roots and
//! still offers ALPN `http/1.1`, which the server (offering `h2` first)
//! picks. Every wait is bounded.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/run.rs"]
mod run;

use std::cell::RefCell;
use std::rc::Rc;

use certs::TestCa;
use gyre_protocols::http::{HttpClient, HttpClientConfig};
use gyre_protocols::tls::{listen_tls, server_config, TlsTransport, HINT_UNKNOWN_ISSUER};
use gyre_reactor::{factory_fn, Protocol, Transport};
use run::{any_port, reactor, wait};

/// What the server saw: the negotiated ALPN protocol of each connection.
type Seen = Rc<RefCell<Vec<Option<Vec<u8>>>>>;

/// Answers the first request head with `200 OK` and `hello`, then closes.
struct Hello {
    seen: Seen,
    transport: Option<Transport>,
    head: Vec<u8>,
}

impl Protocol for Hello {
    fn connection_made(&mut self, transport: Transport) {
        let alpn = transport
            .backend::<TlsTransport>()
            .and_then(|tls| tls.alpn_protocol());
        self.seen.borrow_mut().push(alpn);
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.head.extend_from_slice(data);
        if self.head.windows(4).any(|w| w == b"\r\n\r\n") {
            if let Some(t) = self.transport.take() {
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
                t.lose_connection();
            }
        }
    }
}

#[test]
fn extra_roots_are_trusted_and_alpn_stays_http_1_1() {
    let reactor = reactor();
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let server = server_config(
        leaf.chain_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        &[b"h2", b"http/1.1"],
    )
    .expect("server config");
    let seen: Seen = Rc::default();
    let s = Rc::clone(&seen);
    let port = listen_tls(
        &reactor,
        any_port(),
        server,
        factory_fn(move |_| {
            Some(Hello {
                seen: Rc::clone(&s),
                transport: None,
                head: Vec::new(),
            })
        }),
    )
    .expect("listen_tls");
    let url = format!("https://localhost:{}/", port.local_addr().port());

    // The default configuration does not trust the test CA, and says so.
    let plain = HttpClient::new(&reactor);
    let refused = plain.get(&url);
    wait(&reactor, "the untrusted request to fail", || {
        refused.called()
    });
    let failure = refused
        .take_result()
        .expect("fired")
        .expect_err("untrusted");
    let msg = failure.describe();
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(msg.contains(HINT_UNKNOWN_ISSUER), "{msg}");

    // With the CA as an extra root: the request goes through, over http/1.1.
    let config = HttpClientConfig::with_extra_roots(&[ca.cert_der()]).expect("config");
    assert_eq!(config.tls.alpn_protocols, [b"http/1.1".to_vec()]);
    let client = HttpClient::with_config(&reactor, config);
    let response = client.get(&url);
    wait(&reactor, "the response", || response.called());
    let response = response.take_result().expect("fired").expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello");
    assert_eq!(
        seen.borrow().last().cloned(),
        Some(Some(b"http/1.1".to_vec())),
        "the server negotiated http/1.1 with the client"
    );
}
