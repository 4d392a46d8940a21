//! The herd's operator view: a status listener ([`StatusServer`]) on the
//! gyre HTTP server, covering every server of the process.
//!
//! | path | answer |
//! |---|---|
//! | `/status.json` | each server's [`HerdServer::status`], the herd's configuration, the Places client's counters |
//! | `/metrics` | the same in the Prometheus text format (see the `prometheus` module) |
//! | `/healthz` | 200 `serving` while every server serves, 503 `draining` otherwise |
//! | `/` | the status page: static HTML, CSS and JS in the binary; it polls every server's `/status.json` |
//!
//! # Security contract
//!
//! - Loopback only by default: [`StatusServer::start`] refuses a
//!   non-loopback address unless [`StatusOptions::allow_remote`], and
//!   every request from a non-loopback peer is answered 403 (and its
//!   connection closed) unless `allow_remote` too. Logged at warn level,
//!   the first time.
//! - No client ID or location unless [`StatusOptions::show_clients`]; never
//!   the Places API key nor any peer credential (the documents are built
//!   from counters and limits, never from `Debug` output of options).
//! - CORS: `Access-Control-Allow-Origin` only for the herd's own status
//!   origins (each server's `status` address in the configuration, and
//!   this listener's own address), never `*`.
//! - Bounded like every listener: [`StatusOptions::http`] (connection cap,
//!   head and idle time-outs, request size limits), with a small
//!   connection cap by default ([`DEFAULT_STATUS_MAX_CONNECTIONS`]).
//!
//! Serving costs the herd nothing unless asked: the counters are kept
//! anyway, and a document is made only per request.
//!
//! ```no_run
//! use gyre_herd::status::{StatusOptions, StatusServer};
//! use gyre_herd::{HerdConfig, HerdServer};
//! # fn f(reactor: &gyre_reactor::Reactor, servers: Vec<HerdServer>) -> std::io::Result<()> {
//! let options = StatusOptions::new("127.0.0.1:0".parse().unwrap(), HerdConfig::default());
//! let status = StatusServer::start(reactor, servers, None, options)?;
//! println!("status: http://{}/", status.local_addr());
//! # Ok(()) }
//! ```

pub mod prometheus;

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use gyre_protocols::http::server::{HttpServer, HttpServerConfig, ServerRequest};
use gyre_protocols::http::Response;
use gyre_reactor::defer::{succeed, Deferred};
use gyre_reactor::Reactor;
use serde_json::{json, Value};

use crate::config::HerdConfig;
use crate::places::PlacesClient;
use crate::server::HerdServer;

/// The status page (HTML, CSS and JS in one file).
pub const PAGE: &str = include_str!("page.html");

/// The default connection cap of the status listener.
pub const DEFAULT_STATUS_MAX_CONNECTIONS: usize = 32;

/// How a [`StatusServer`] listens and what it shows.
#[derive(Clone)]
pub struct StatusOptions {
    /// Where it listens (`--status ADDR`; port 0: a free port).
    pub addr: SocketAddr,
    /// `--status-allow-remote`: listen on a non-loopback address and
    /// answer non-loopback peers. Default false.
    pub allow_remote: bool,
    /// `--status-show-clients`: list stored clients (IDs and locations).
    /// Default false.
    pub show_clients: bool,
    /// The herd (its servers' status addresses are the allowed CORS
    /// origins, and the page draws its graph).
    pub herd: HerdConfig,
    /// The HTTP server's limits; by default [`HttpServerConfig::default`]
    /// with [`DEFAULT_STATUS_MAX_CONNECTIONS`], a 5 s head time-out and a
    /// 30 s idle time-out.
    pub http: HttpServerConfig,
}

impl StatusOptions {
    /// Loopback-only options for `addr`, showing no client.
    pub fn new(addr: SocketAddr, herd: HerdConfig) -> StatusOptions {
        StatusOptions {
            addr,
            allow_remote: false,
            show_clients: false,
            herd,
            http: HttpServerConfig {
                max_connections: DEFAULT_STATUS_MAX_CONNECTIONS,
                head_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(30),
                name: "status".to_string(),
                ..HttpServerConfig::default()
            },
        }
    }
}

struct State {
    servers: Vec<HerdServer>,
    places: Option<PlacesClient>,
    show_clients: bool,
    allow_remote: bool,
    herd: HerdConfig,
    origins: Vec<String>,
    refused_logged: Cell<bool>,
}

/// The status listener: see the [module docs](self).
pub struct StatusServer {
    http: HttpServer,
}

impl StatusServer {
    /// Listens on `options.addr` and serves the status of `servers` (and
    /// the counters of `places`, the Places client they share, if given).
    /// An error if the address is not loopback and
    /// [`StatusOptions::allow_remote`] is not set.
    pub fn start(
        reactor: &Reactor,
        servers: Vec<HerdServer>,
        places: Option<PlacesClient>,
        options: StatusOptions,
    ) -> io::Result<StatusServer> {
        if !options.addr.ip().is_loopback() && !options.allow_remote {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "status address {} is not loopback: the status shows the herd's state; \
                     give --status-allow-remote to serve it beyond this machine",
                    options.addr
                ),
            ));
        }
        let mut state = State {
            servers,
            places,
            show_clients: options.show_clients,
            allow_remote: options.allow_remote,
            herd: options.herd.clone(),
            origins: Vec::new(),
            refused_logged: Cell::new(false),
        };
        let state_cell: Rc<std::cell::RefCell<Option<Rc<State>>>> =
            Rc::new(std::cell::RefCell::new(None));
        let handler_state = Rc::clone(&state_cell);
        let http = HttpServer::listen(
            reactor,
            options.addr,
            options.http.clone(),
            move |request: ServerRequest| -> Deferred<Response> {
                let state = handler_state.borrow().clone();
                match state {
                    Some(state) => succeed(answer(&state, &request)),
                    None => succeed(Response::new(503)),
                }
            },
        )?;
        state.origins = allowed_origins(&options.herd, http.local_addr());
        if options.show_clients {
            log::warn!(
                "status at {}: --status-show-clients: client IDs and locations are shown",
                http.local_addr()
            );
        }
        *state_cell.borrow_mut() = Some(Rc::new(state));
        Ok(StatusServer { http })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Stops listening and closes its connections.
    pub fn stop(&self) {
        self.http.stop();
    }
}

/// The origins allowed to read the status across origins: every status
/// address in the configuration, and `own`, as `http://IP:PORT` (and
/// `http://localhost:PORT` for 127.0.0.1).
fn allowed_origins(herd: &HerdConfig, own: SocketAddr) -> Vec<String> {
    let mut addrs: Vec<SocketAddr> = herd.servers().iter().filter_map(|s| s.status).collect();
    addrs.push(own);
    let mut origins = Vec::new();
    for a in addrs {
        origins.push(format!("http://{a}"));
        if a.ip() == IpAddr::from([127, 0, 0, 1]) {
            origins.push(format!("http://localhost:{}", a.port()));
        }
    }
    origins
}

/// The whole status document.
fn document(state: &State) -> Value {
    let servers: Vec<Value> = state
        .servers
        .iter()
        .map(|s| s.status(state.show_clients))
        .collect();
    let herd: Value = serde_json::from_str(&state.herd.to_json()).unwrap_or(Value::Null);
    let mut doc = json!({
        "herd": herd,
        "show_clients": state.show_clients,
        "servers": servers,
    });
    if let Some(places) = &state.places {
        let s = places.stats();
        doc["places_client"] = json!({
            "requests": s.requests,
            "cache_hits": s.cache_hits,
            "shared": s.shared,
            "refused": s.refused,
            "in_flight": s.in_flight,
            "queued": s.queued,
            "cached": s.cached,
        });
    }
    doc
}

fn answer(state: &State, request: &ServerRequest) -> Response {
    if !request.peer.ip().is_loopback() && !state.allow_remote {
        if !state.refused_logged.replace(true) {
            log::warn!(
                "status: refused a request from {} (not loopback; --status-allow-remote allows it; \
                 logged once)",
                request.peer
            );
        }
        return Response::new(403)
            .with_header("Connection", "close")
            .with_body("403 loopback only\n");
    }
    if request.method != "GET" && request.method != "HEAD" {
        return Response::new(405)
            .with_header("Allow", "GET, HEAD")
            .with_body("405 method not allowed\n");
    }
    let response = match request.path() {
        "/" | "/index.html" => Response::new(200)
            .with_header("Content-Type", "text/html; charset=utf-8")
            .with_body(PAGE),
        "/status.json" => Response::new(200).with_json(&document(state)),
        "/metrics" => Response::new(200)
            .with_header("Content-Type", prometheus::CONTENT_TYPE)
            .with_body(prometheus::render(&document(state))),
        "/healthz" => {
            if state
                .servers
                .iter()
                .all(|s| !s.is_draining() && !s.is_stopped())
            {
                Response::new(200).with_body("serving\n")
            } else {
                Response::new(503).with_body("draining\n")
            }
        }
        _ => Response::new(404).with_body("404 not found\n"),
    };
    let response = response
        .with_header("Cache-Control", "no-store")
        .with_header("X-Content-Type-Options", "nosniff");
    match request.header_str("Origin") {
        Some(origin) if state.origins.iter().any(|o| o == origin) => response
            .with_header("Access-Control-Allow-Origin", origin)
            .with_header("Vary", "Origin"),
        _ => response.with_header("Vary", "Origin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, path: &str) -> ServerRequest {
        ServerRequest {
            method: "GET".into(),
            target: path.into(),
            version: 1,
            headers: vec![],
            body: vec![],
            trailers: vec![],
            peer: peer.parse().unwrap(),
        }
    }

    fn state(allow_remote: bool) -> State {
        State {
            servers: Vec::new(),
            places: None,
            show_clients: false,
            allow_remote,
            herd: HerdConfig::default(),
            origins: Vec::new(),
            refused_logged: Cell::new(false),
        }
    }

    #[test]
    fn non_loopback_peers_are_refused_by_default() {
        let refused = answer(&state(false), &request("192.0.2.7:5000", "/status.json"));
        assert_eq!(refused.status, 403);
        let mapped = answer(
            &state(false),
            &request("[::ffff:192.0.2.7]:5000", "/metrics"),
        );
        assert_eq!(mapped.status, 403);
        assert_eq!(
            answer(&state(false), &request("127.0.0.1:5000", "/healthz")).status,
            200
        );
        assert_eq!(
            answer(&state(false), &request("[::1]:5000", "/healthz")).status,
            200
        );
        assert_eq!(
            answer(&state(true), &request("192.0.2.7:5000", "/healthz")).status,
            200
        );
    }

    #[test]
    fn origins_are_the_herds_status_addresses() {
        let herd = HerdConfig::from_json(
            r#"{"servers": [{"name": "A", "port": 1, "status": "127.0.0.1:13000"},
                            {"name": "B", "port": 2}]}"#,
        )
        .unwrap();
        let origins = allowed_origins(&herd, "127.0.0.1:14000".parse().unwrap());
        assert_eq!(
            origins,
            [
                "http://127.0.0.1:13000",
                "http://localhost:13000",
                "http://127.0.0.1:14000",
                "http://localhost:14000"
            ]
        );
    }
}
