//! [`LocalPlacesService`]: the legacy Nearby Search endpoint over HTTPS on
//! loopback, with its own CA made at start-up.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use gyre_protocols::tls::{server_config, TlsServerFactory};
use gyre_reactor::clock::DelayedCall;
use gyre_reactor::{
    factory_fn, ConnectionLost, ListenOptions, ListeningPort, Protocol, Reactor, Transport,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::http::{parse_request, route, Parsed};
use super::{PlacesApi, PlacesConfig, NEARBY_PATH};

/// The default [`LocalPlacesOptions::idle_timeout`].
pub const DEFAULT_PLACES_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`LocalPlacesOptions::handshake_timeout`].
pub const DEFAULT_PLACES_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`LocalPlacesOptions::max_connections`].
pub const DEFAULT_PLACES_MAX_CONNECTIONS: usize = 256;

/// The local Places service's limits, so that its clients can never starve
/// the herd's own port of descriptors or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPlacesOptions {
    /// A client that has not finished its TLS handshake this long after it
    /// connected is dropped (default 10 s), logged at debug level by the
    /// TLS layer.
    pub handshake_timeout: Duration,
    /// A connection that sends no request bytes this long is closed
    /// (default 60 s).
    pub idle_timeout: Duration,
    /// The most connections open at once, handshaking or not (default 256):
    /// the service's descriptor budget. At the cap it stops accepting (new
    /// connections wait in the kernel's backlog) until one closes; logged
    /// once when it pauses and once when it resumes.
    pub max_connections: usize,
}

impl Default for LocalPlacesOptions {
    fn default() -> Self {
        LocalPlacesOptions {
            handshake_timeout: DEFAULT_PLACES_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_PLACES_IDLE_TIMEOUT,
            max_connections: DEFAULT_PLACES_MAX_CONNECTIONS,
        }
    }
}

/// The service's open connections against its cap.
struct Budget {
    open: Cell<usize>,
    max: usize,
    port: RefCell<Option<ListeningPort>>,
    paused: Cell<bool>,
}

/// One open connection's share of the [`Budget`], held by its protocol
/// from the moment it is accepted (before the handshake) until it is
/// dropped.
struct Slot(Rc<Budget>);

impl Slot {
    fn take(budget: &Rc<Budget>) -> Slot {
        let open = budget.open.get() + 1;
        budget.open.set(open);
        if open >= budget.max && !budget.paused.replace(true) {
            if let Some(port) = budget.port.borrow().as_ref() {
                port.pause_accepting();
            }
            log::warn!(
                "local Places service: {open} connections open, its limit: accepting paused until one closes"
            );
        }
        Slot(Rc::clone(budget))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let budget = &self.0;
        let open = budget.open.get().saturating_sub(1);
        budget.open.set(open);
        if open < budget.max && budget.paused.replace(false) {
            if let Some(port) = budget.port.borrow().as_ref() {
                port.resume_accepting();
            }
            log::warn!("local Places service: {open} connections open: accepting again");
        }
    }
}

/// A connection whose client does not read its replies is dropped once
/// this many bytes wait to be sent.
const MAX_BUFFERED: usize = 1024 * 1024;

/// The local Places service: HTTPS on loopback speaking Google's legacy
/// Nearby Search protocol over a built-in set of real places.
///
/// At start-up it makes a fresh CA and a certificate for `localhost`,
/// `127.0.0.1`, `::1` (and the address it listens on) signed by it; a client
/// trusts it through [`ca_pem`](Self::ca_pem) (which
/// [`client_config`](Self::client_config) does).
///
/// It answers `GET` (and `HEAD`) on
/// `/maps/api/place/nearbysearch/json?location=LAT,LNG&radius=METRES`
/// (`key`, if present, is ignored; `keyword` and `type` filter) with the
/// places within the radius, nearest first, at most 20: status `OK` or
/// `ZERO_RESULTS`, or `INVALID_REQUEST` with an `error_message` for bad
/// parameters (with HTTP 200, as Google does). Other paths get a 404, other
/// methods a 405, and malformed or oversized requests a 400, 413 or 431 (and
/// the connection is closed), each with a JSON body. Connections are kept
/// alive (HTTP/1.1) until the client closes or is idle for 60 s.
///
/// A cheap `Clone` handle. Dropping it does not stop the service;
/// [`stop`](Self::stop) does.
#[derive(Clone)]
pub struct LocalPlacesService {
    port: ListeningPort,
    budget: Rc<Budget>,
    ca_pem: Rc<[u8]>,
    url: String,
}

impl fmt::Debug for LocalPlacesService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPlacesService")
            .field("url", &self.url)
            .finish()
    }
}

impl LocalPlacesService {
    /// HTTPS on loopback with a fresh CA and a "localhost"/127.0.0.1 leaf
    /// certificate, listening on `addr` (port 0 picks a free port).
    pub fn start(reactor: &Reactor, addr: SocketAddr) -> io::Result<LocalPlacesService> {
        LocalPlacesService::start_with(reactor, addr, LocalPlacesOptions::default())
    }

    /// [`start`](Self::start) with explicit limits.
    pub fn start_with(
        reactor: &Reactor,
        addr: SocketAddr,
        options: LocalPlacesOptions,
    ) -> io::Result<LocalPlacesService> {
        let certs = make_certs(addr.ip()).map_err(|e| {
            io::Error::other(format!(
                "cannot make the local Places service's certificate: {e}"
            ))
        })?;
        let config = server_config(
            certs.chain_pem.as_bytes(),
            certs.key_pem.as_bytes(),
            &[b"http/1.1"],
        )?;
        let for_connections = reactor.clone();
        let budget = Rc::new(Budget {
            open: Cell::new(0),
            max: options.max_connections.max(1),
            port: RefCell::new(None),
            paused: Cell::new(false),
        });
        let for_slots = Rc::clone(&budget);
        let idle_timeout = options.idle_timeout;
        let factory = TlsServerFactory::new(
            factory_fn(move |peer| {
                let slot = Slot::take(&for_slots);
                Some(LocalConnection::new(
                    &for_connections,
                    peer,
                    idle_timeout,
                    slot,
                ))
            }),
            config,
        )
        .with_reactor(reactor)
        .with_handshake_timeout(options.handshake_timeout);
        // Its own spare descriptor: out of descriptors, it refuses its own
        // clients rather than leave them hanging.
        let port = reactor.listen_tcp_with(addr, factory, ListenOptions::new())?;
        *budget.port.borrow_mut() = Some(port.clone());
        let local = port.local_addr();
        let url = format!(
            "https://{}:{}{NEARBY_PATH}",
            url_host(local.ip()),
            local.port()
        );
        log::info!("local Places service listening at {url}");
        Ok(LocalPlacesService {
            port,
            budget,
            ca_pem: Rc::from(certs.ca_pem.into_bytes()),
            url,
        })
    }

    /// The nearbysearch endpoint, e.g.
    /// `https://127.0.0.1:PORT/maps/api/place/nearbysearch/json`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The CA certificate (PEM) a client must trust.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.port.local_addr()
    }

    /// A configuration for a [`PlacesClient`](super::PlacesClient) that asks
    /// this service: [`PlacesApi::Local`], its URL, its CA; no key; the
    /// default time-out.
    pub fn client_config(&self) -> PlacesConfig {
        PlacesConfig {
            api: PlacesApi::Local,
            url: Some(self.url()),
            extra_ca_pem: Some(self.ca_pem.to_vec()),
            ..PlacesConfig::default()
        }
    }

    /// Connections open now (handshaking or not).
    pub fn open_connections(&self) -> usize {
        self.budget.open.get()
    }

    /// Stops listening (connections already open are served until they
    /// close).
    pub fn stop(&self) {
        self.budget.port.borrow_mut().take();
        drop(self.port.stop_listening());
    }
}

/// How to write `ip` in a URL reaching it: an unspecified address is
/// reached on loopback; IPv6 goes in brackets.
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The service's certificates, PEM.
struct Certs {
    ca_pem: String,
    /// The leaf, then the CA.
    chain_pem: String,
    key_pem: String,
}

/// A new CA, and a server certificate signed by it for `localhost`,
/// `127.0.0.1`, `::1` and `listen_ip` (unless unspecified).
fn make_certs(listen_ip: IpAddr) -> Result<Certs, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gyre local Places CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let listen = listen_ip.to_string();
    if !listen_ip.is_unspecified() && !names.contains(&listen) {
        names.push(listen);
    }
    let mut leaf = CertificateParams::new(names)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca)?;
    let ca_pem = ca.pem();
    Ok(Certs {
        chain_pem: format!("{}{ca_pem}", leaf_cert.pem()),
        ca_pem,
        key_pem: leaf_key.serialize_pem(),
    })
}

/// One client connection (over TLS): parses requests, writes replies.
struct LocalConnection {
    reactor: Reactor,
    peer: SocketAddr,
    transport: Option<Transport>,
    /// Received bytes not yet parsed.
    buf: Vec<u8>,
    /// Body bytes of the last request still to arrive and be skipped.
    skip: usize,
    /// A reply that closes the connection was sent: ignore further bytes.
    done: bool,
    idle: Option<DelayedCall>,
    idle_timeout: Duration,
    /// Its share of the connection cap, given back when dropped.
    _slot: Slot,
}

impl LocalConnection {
    fn new(
        reactor: &Reactor,
        peer: SocketAddr,
        idle_timeout: Duration,
        slot: Slot,
    ) -> LocalConnection {
        LocalConnection {
            idle_timeout,
            _slot: slot,
            reactor: reactor.clone(),
            peer,
            transport: None,
            buf: Vec::new(),
            skip: 0,
            done: false,
            idle: None,
        }
    }

    /// Answers every complete request in the buffer.
    fn process(&mut self, transport: &Transport) {
        while !self.buf.is_empty() {
            let head = match parse_request(&self.buf) {
                Parsed::Partial => return,
                Parsed::Bad(reply) => {
                    log::info!(
                        "local Places service: bad request from {}: HTTP {}",
                        self.peer,
                        reply.status
                    );
                    transport.write(&reply.to_bytes(false, false));
                    self.close(transport);
                    return;
                }
                Parsed::Head(head) => head,
            };
            let reply = route(&head);
            // The path only: the query may hold a key.
            let path = head.target.split('?').next().unwrap_or("");
            log::debug!(
                "local Places service: {} {} {path:.100} -> HTTP {}",
                self.peer,
                head.method,
                reply.status
            );
            transport.write(&reply.to_bytes(head.method == "HEAD", head.keep_alive));
            let consumed = head.head_len + head.body_len;
            if consumed <= self.buf.len() {
                self.buf.drain(..consumed);
            } else {
                self.skip = consumed - self.buf.len();
                self.buf.clear();
            }
            if !head.keep_alive {
                self.close(transport);
                return;
            }
            if transport.buffered_len() > MAX_BUFFERED {
                log::info!(
                    "local Places service: {} does not read its replies; dropping it",
                    self.peer
                );
                self.done = true;
                transport.abort_connection();
                return;
            }
        }
    }

    /// Closes after the replies are flushed; ignores anything more.
    fn close(&mut self, transport: &Transport) {
        self.done = true;
        self.buf = Vec::new();
        transport.lose_connection();
    }
}

impl Protocol for LocalConnection {
    fn connection_made(&mut self, transport: Transport) {
        let for_timer = transport.clone();
        self.idle = Some(self.reactor.call_later(self.idle_timeout, move || {
            for_timer.lose_connection();
        }));
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        let Some(transport) = self.transport.clone() else {
            return;
        };
        if let Some(timer) = &self.idle {
            let _ = timer.reset(self.idle_timeout);
        }
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        self.buf.extend_from_slice(&data[skipped..]);
        self.process(&transport);
    }

    fn connection_lost(&mut self, _reason: ConnectionLost) {
        if let Some(timer) = self.idle.take() {
            let _ = timer.cancel();
        }
        self.transport = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("127.0.0.1".parse().unwrap()), "127.0.0.1");
        assert_eq!(url_host("0.0.0.0".parse().unwrap()), "127.0.0.1");
        assert_eq!(url_host("::".parse().unwrap()), "[::1]");
        assert_eq!(url_host("::1".parse().unwrap()), "[::1]");
    }

    #[test]
    fn makes_certificates() {
        let certs = make_certs("127.0.0.2".parse().unwrap()).unwrap();
        let chain = gyre_protocols::tls::parse_certs_pem(certs.chain_pem.as_bytes()).unwrap();
        assert_eq!(chain.len(), 2);
        let ca = gyre_protocols::tls::parse_certs_pem(certs.ca_pem.as_bytes()).unwrap();
        assert_eq!(ca[0], chain[1]);
        gyre_protocols::tls::parse_key_pem(certs.key_pem.as_bytes()).unwrap();
    }
}
