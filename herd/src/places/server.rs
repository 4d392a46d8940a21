//! [`LocalPlacesService`]: the legacy Nearby Search endpoint over HTTPS on
//! loopback, with its own CA made at start-up.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use gyre_protocols::http::server::{
    AtCapacity, HttpServer, HttpServerConfig, RequestLimits, ServerRequest,
};
use gyre_protocols::http::Response;
use gyre_protocols::tls::server_config;
use gyre_reactor::defer::{succeed, Deferred};
use gyre_reactor::{ListenOptions, Reactor};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::convert::{error_answer, to_google_json, INVALID_REQUEST};
use super::search::answer_query;
use super::{PlacesApi, PlacesConfig, NEARBY_PATH};

/// The default [`LocalPlacesOptions::idle_timeout`].
pub const DEFAULT_PLACES_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`LocalPlacesOptions::handshake_timeout`].
pub const DEFAULT_PLACES_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`LocalPlacesOptions::head_timeout`].
pub const DEFAULT_PLACES_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`LocalPlacesOptions::max_connections`].
pub const DEFAULT_PLACES_MAX_CONNECTIONS: usize = 256;

/// Largest request head (request line and header fields) accepted: 8 KiB
/// (past it: 431; a longer target: 414).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields accepted: 32 (past it: 431).
const MAX_HEADERS: usize = 32;
/// Largest request body accepted (and ignored: the service only reads its
/// query string): 8 KiB (past it: 413).
const MAX_BODY_BYTES: u64 = 8 * 1024;

/// The local Places service's limits, so that its clients can never starve
/// the herd's own port of descriptors or time. The request limits (head
/// 8 KiB, 32 fields, body 8 KiB) are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPlacesOptions {
    /// A client that has not finished its TLS handshake this long after it
    /// connected is dropped (default 10 s), logged at debug level by the
    /// TLS layer.
    pub handshake_timeout: Duration,
    /// A request head must arrive whole within this time of its first
    /// byte (default 30 s); past it the client gets a 408 and is closed.
    pub head_timeout: Duration,
    /// A connection that sends nothing this long while the service waits
    /// for it is closed (default 60 s).
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
            head_timeout: DEFAULT_PLACES_HEAD_TIMEOUT,
            idle_timeout: DEFAULT_PLACES_IDLE_TIMEOUT,
            max_connections: DEFAULT_PLACES_MAX_CONNECTIONS,
        }
    }
}

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
/// methods a 405, and requests its HTTP server refuses a 400, 408, 413, 414
/// or 431 (and the connection is closed after the answers owed before it),
/// each with a JSON body. Connections are kept alive (HTTP/1.1, pipelining
/// allowed) until the client closes or is idle for 60 s.
///
/// It runs on gyre's [`HttpServer`] over TLS, with the limits of
/// [`LocalPlacesOptions`]; past its connection cap the port stops
/// accepting ([`AtCapacity::PauseAccepting`]) rather than spend a
/// handshake on a refusal.
///
/// A cheap `Clone` handle. Dropping it does not stop the service;
/// [`stop`](Self::stop) does.
#[derive(Clone)]
pub struct LocalPlacesService {
    server: HttpServer,
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
        let http = HttpServerConfig {
            limits: RequestLimits {
                max_head_bytes: MAX_HEAD_BYTES,
                max_headers: MAX_HEADERS,
                max_uri_len: MAX_HEAD_BYTES,
                max_body: MAX_BODY_BYTES,
                ..RequestLimits::default()
            },
            head_timeout: options.head_timeout,
            idle_timeout: options.idle_timeout,
            max_connections: options.max_connections.max(1),
            at_capacity: AtCapacity::PauseAccepting,
            tls_handshake_timeout: options.handshake_timeout,
            // Its own spare descriptor: out of descriptors, it refuses its
            // own clients rather than leave them hanging.
            listen: ListenOptions::new(),
            error_response: Some(Rc::new(error_reply)),
            name: "local Places service".to_string(),
            ..HttpServerConfig::default()
        };
        let server = HttpServer::listen_tls(reactor, addr, config, http, handle)?;
        let local = server.local_addr();
        let url = format!(
            "https://{}:{}{NEARBY_PATH}",
            url_host(local.ip()),
            local.port()
        );
        log::info!("local Places service listening at {url}");
        Ok(LocalPlacesService {
            server,
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
        self.server.local_addr()
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
        self.server.open_connections()
    }

    /// The HTTP server under it (its counters, say).
    pub fn http_server(&self) -> &HttpServer {
        &self.server
    }

    /// Stops listening (connections already open are served until they
    /// close).
    pub fn stop(&self) {
        self.server.stop();
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

/// The answer to a request: the endpoint for `GET` and `HEAD` (the server
/// drops the body of a `HEAD` answer), 405 for other methods, 404 for other
/// paths.
fn handle(request: ServerRequest) -> Deferred<Response> {
    succeed(route(
        &request.method,
        request.path(),
        request.query().unwrap_or(""),
    ))
}

fn route(method: &str, path: &str, query: &str) -> Response {
    if path != NEARBY_PATH {
        let shown: String = path.chars().take(100).collect();
        return error_reply(
            404,
            &format!(
                "no such endpoint {shown:?}: try {NEARBY_PATH}?location=LAT,LNG&radius=METRES"
            ),
        );
    }
    if method != "GET" && method != "HEAD" {
        return error_reply(405, &format!("method {method} not allowed: use GET"))
            .with_header("Allow", "GET, HEAD");
    }
    json_reply(200, to_google_json(&answer_query(query)))
}

/// An error answer whose body is a legacy-shaped `INVALID_REQUEST`
/// (`NOT_FOUND` for 404) with `message`: for the service's own errors and
/// for the requests its HTTP server refuses (400, 408, 413, 414, 431).
fn error_reply(status: u16, message: &str) -> Response {
    let kind = if status == 404 {
        "NOT_FOUND"
    } else {
        INVALID_REQUEST
    };
    json_reply(status, to_google_json(&error_answer(kind, message)))
}

fn json_reply(status: u16, body: String) -> Response {
    Response::new(status)
        .with_header("Server", "gyre-local-places")
        .with_header("Content-Type", "application/json; charset=UTF-8")
        .with_body(body)
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

    /// The answer body's `status`.
    fn status_of(reply: &Response) -> String {
        reply.json().unwrap()["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn routes() {
        let ok = route("GET", NEARBY_PATH, "location=34.0729,-118.4422&radius=100");
        assert_eq!(ok.status, 200);
        assert_eq!(status_of(&ok), "OK");
        assert_eq!(ok.header_str("server"), Some("gyre-local-places"));
        let invalid = route("GET", NEARBY_PATH, "radius=100");
        assert_eq!(invalid.status, 200);
        assert_eq!(status_of(&invalid), "INVALID_REQUEST");
        let missing = route("GET", "/nope", "");
        assert_eq!(missing.status, 404);
        assert_eq!(status_of(&missing), "NOT_FOUND");
        let post = route("POST", NEARBY_PATH, "");
        assert_eq!(post.status, 405);
        assert_eq!(post.header_str("allow"), Some("GET, HEAD"));
        assert_eq!(status_of(&error_reply(431, "x")), "INVALID_REQUEST");
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
