//! TLS errors carry a plain-words hint (see `gyre_protocols::tls::hint`):
//! real handshakes on loopback with certificates made by rcgen at test
//! time, one for each of the common mistakes: a CA certificate served as
//! the server's own, a certificate for another name, and a certificate
//! from a CA the client does not trust. Every wait is bounded.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/run.rs"]
mod run;

use std::sync::Arc;

use certs::{TestCa, TestCert};
use gyre_protocols::tls::{
    client_config_with_roots, connect_tls_protocol, listen_tls, server_config, CertificateDer,
    ServerConfig, HINT_BAD_SIGNATURE, HINT_CA_USED_AS_END_ENTITY, HINT_NAME_MISMATCH,
    HINT_UNKNOWN_ISSUER,
};
use gyre_reactor::{factory_fn, Protocol, Transport};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use run::{any_port, reactor, wait, BOUND};

/// A server protocol that says nothing.
struct Quiet;
impl Protocol for Quiet {
    fn connection_made(&mut self, _: Transport) {}
    fn data_received(&mut self, _: &[u8]) {}
}

/// Runs a TLS server with `server` and connects to it as "localhost",
/// trusting only `roots`; returns the client's error message.
fn handshake_error(server: Arc<ServerConfig>, roots: &[CertificateDer<'static>]) -> String {
    let reactor = reactor();
    let port =
        listen_tls(&reactor, any_port(), server, factory_fn(|_| Some(Quiet))).expect("listen_tls");
    let client = client_config_with_roots(roots, &[]).expect("client config");
    let d = connect_tls_protocol(
        &reactor,
        port.local_addr(),
        "localhost",
        client,
        Quiet,
        BOUND,
    )
    .expect("connect_tls_protocol");
    wait(&reactor, "the handshake to fail", || d.called());
    let failure = d
        .take_result()
        .expect("fired")
        .expect_err("the handshake must fail");
    failure.to_string()
}

fn server_cfg(cert: &TestCert) -> Arc<ServerConfig> {
    server_config(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes(), &[]).expect("server config")
}

#[test]
fn a_ca_served_as_the_server_certificate_says_to_serve_a_leaf() {
    // A CA certificate that even names localhost, trusted as the root:
    // webpki still refuses it as an end entity.
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    let ca = params.self_signed(&key).expect("self-sign");
    let server = server_config(ca.pem().as_bytes(), key.serialize_pem().as_bytes(), &[])
        .expect("server config");
    let msg = handshake_error(server, &[ca.der().clone()]);
    assert!(msg.contains("CaUsedAsEndEntity"), "{msg}");
    assert!(msg.contains(HINT_CA_USED_AS_END_ENTITY), "{msg}");
    assert!(
        msg.contains("this certificate is a CA; trust it as a root and serve a leaf it signed"),
        "{msg}"
    );
}

#[test]
fn a_certificate_for_another_name_says_the_name_does_not_match() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["other.example"]);
    let msg = handshake_error(server_cfg(&leaf), &[ca.cert_der()]);
    assert!(msg.contains("not valid for name"), "{msg}");
    assert!(msg.contains(HINT_NAME_MISMATCH), "{msg}");
}

#[test]
fn a_certificate_from_an_untrusted_ca_says_to_add_its_ca() {
    let trusted = TestCa::new();
    let stranger = TestCert::self_signed(&["localhost"]);
    let msg = handshake_error(server_cfg(&stranger), &[trusted.cert_der()]);
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(msg.contains(HINT_UNKNOWN_ISSUER), "{msg}");

    // A CA made again under the same name ("gyre test CA") with a new key:
    // webpki finds the trusted CA by name, and the signature does not verify.
    let remade = TestCa::new();
    let leaf = remade.leaf(&["localhost"]);
    let msg = handshake_error(server_cfg(&leaf), &[trusted.cert_der()]);
    assert!(msg.contains("BadSignature"), "{msg}");
    assert!(msg.contains(HINT_BAD_SIGNATURE), "{msg}");
}
