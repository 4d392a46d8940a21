//! An HTTP/1.1 server on the reactor (Twisted's `twisted.web.server.Site`),
//! over TCP or TLS, and the sans-IO request parser under it.
//!
//! - [`HttpServer::listen`] and [`HttpServer::listen_tls`]: a port whose
//!   requests a [`Handler`] answers, each with a
//!   [`Deferred`](gyre_reactor::defer::Deferred) of a
//!   [`Response`](crate::http::Response) (the same type the client
//!   returns), or `async` through [`async_handler`].
//! - [`RequestParser`]: bytes in, [`RequestEvent`]s out, with
//!   [`RequestLimits`]; usable on its own (a fuzz target feeds it).
//! - [`HttpServerConfig`]: every limit, with its default.
//!
//! What it speaks: HTTP/1.1 and 1.0; keep-alive; pipelined requests,
//! answered in order; `Content-Length` and chunked request bodies (whole,
//! within [`RequestLimits::max_body`], before the handler runs) and
//! trailers; `Expect: 100-continue`; `HEAD` (the head a `GET` would get,
//! no body); chunked responses (a response with `Transfer-Encoding:
//! chunked`, see [`response`](self#responses)). Not: streaming bodies to
//! or from a handler, `Upgrade`, HTTP/2.
//!
//! # Limits
//!
//! Every limit has a default, is configurable in [`HttpServerConfig`], is
//! logged when hit, and is answered with its status: 400 (malformed), 408
//! (head time-out, or a body stalled past the idle time-out), 413 (body),
//! 414 (target), 431 (head, fields), 503 (connections, with
//! [`AtCapacity::Answer503`]). A refused request closes its connection
//! with the transport's lingering close, after the answers owed to the
//! requests pipelined before it: they still arrive. See
//! [`HttpServerConfig`] for the table, [`RequestParser`] for the parser's
//! part, and the `connection` module's contract for the order of answers,
//! the timers and flow control.
//!
//! # Responses
//!
//! The server writes the status line, the handler's fields, `Date` and
//! `Server` (unless given), and the framing: `Content-Length`, or chunked
//! when the response has `Transfer-Encoding: chunked` (then with its
//! trailers), and `Connection: close` when the connection closes after it.
//! A response to `HEAD` has the same head and no body.
//!
//! ```no_run
//! use gyre_protocols::http::server::{HttpServer, HttpServerConfig, ServerRequest};
//! use gyre_protocols::http::Response;
//! use gyre_reactor::defer::succeed;
//! use gyre_reactor::Reactor;
//!
//! let reactor = Reactor::new()?;
//! let server = HttpServer::listen(
//!     &reactor,
//!     "127.0.0.1:8080".parse()?,
//!     HttpServerConfig::default(),
//!     |request: ServerRequest| {
//!         let answer = serde_json::json!({"path": request.path()});
//!         succeed(Response::new(200).with_json(&answer))
//!     },
//! )?;
//! println!("serving on http://{}", server.local_addr());
//! reactor.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod budget;
mod config;
mod connection;
pub mod parser;
mod request;
mod response;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use gyre_reactor::{ListeningPort, Reactor};

use crate::tls::TlsServerFactory;
use budget::Budget;
use connection::{Counters, HttpFactory, Shared};

pub use config::{
    AtCapacity, ErrorResponder, HttpServerConfig, DEFAULT_HEAD_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PIPELINED, DEFAULT_MAX_REFUSING,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
};
pub use parser::{
    RequestError, RequestEvent, RequestHead, RequestLimits, RequestParser, DEFAULT_MAX_BODY,
    DEFAULT_MAX_CHUNK_LINE, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_URI_LEN,
    MAX_LEADING_EMPTY_BYTES,
};
pub use request::{async_handler, AsyncHandler, Handler, ServerRequest};
pub use response::{reason_phrase, CHUNK_SIZE};

/// What an [`HttpServer`] has done so far ([`HttpServer::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted (served or refused).
    pub connections: u64,
    /// Connections open now (handshaking, served, or being refused).
    pub open: usize,
    /// Connections answered 503 at the connection cap.
    pub refused: u64,
    /// Requests handed to the handler.
    pub requests: u64,
    /// Requests refused by the server itself (malformed, or past a limit:
    /// 400, 413, 414, 417, 431, 501, 505).
    pub refusals: u64,
    /// Time-outs hit: head (408), idle in a body (408), idle between
    /// requests (closed).
    pub timeouts: u64,
    /// Bytes received (decrypted, under TLS), on every connection.
    pub bytes_received: u64,
}

/// A listening HTTP/1.1 server: see the [module docs](self).
///
/// A cheap `Clone` handle. Dropping it does not stop the server;
/// [`stop`](Self::stop) does.
#[derive(Clone)]
pub struct HttpServer {
    shared: Rc<Shared>,
    port: ListeningPort,
    tls: bool,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.shared.config.name)
            .field("local_addr", &self.local_addr())
            .field("tls", &self.tls)
            .finish()
    }
}

impl HttpServer {
    /// Serves HTTP on `addr` (port 0 picks a free port) with `handler`.
    pub fn listen(
        reactor: &Reactor,
        addr: SocketAddr,
        config: HttpServerConfig,
        handler: impl Handler,
    ) -> io::Result<HttpServer> {
        let shared = shared(reactor, config, handler);
        let factory = HttpFactory {
            shared: Rc::clone(&shared),
        };
        let port = reactor.listen_tcp_with(addr, factory, shared.config.listen.clone())?;
        HttpServer::started(shared, port, false)
    }

    /// Serves HTTPS on `addr` with `handler`: each connection runs over TLS
    /// with `tls` (see [`crate::tls::server_config`]; give it ALPN
    /// `http/1.1`), and is dropped if its handshake is not done within
    /// [`HttpServerConfig::tls_handshake_timeout`]. A connection holds its
    /// share of [`HttpServerConfig::max_connections`] from the accept, its
    /// handshake included.
    pub fn listen_tls(
        reactor: &Reactor,
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        config: HttpServerConfig,
        handler: impl Handler,
    ) -> io::Result<HttpServer> {
        let shared = shared(reactor, config, handler);
        let factory = TlsServerFactory::new(
            HttpFactory {
                shared: Rc::clone(&shared),
            },
            tls,
        )
        .with_reactor(reactor)
        .with_handshake_timeout(shared.config.tls_handshake_timeout);
        let port = reactor.listen_tcp_with(addr, factory, shared.config.listen.clone())?;
        HttpServer::started(shared, port, true)
    }

    fn started(shared: Rc<Shared>, port: ListeningPort, tls: bool) -> io::Result<HttpServer> {
        shared.budget.set_port(Some(port.clone()));
        log::info!(
            "{} listening on {}://{}",
            shared.config.name,
            if tls { "https" } else { "http" },
            port.local_addr()
        );
        Ok(HttpServer { shared, port, tls })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.port.local_addr()
    }

    /// The listening port (to pause accepting, say).
    pub fn port(&self) -> &ListeningPort {
        &self.port
    }

    /// Connections open now (handshaking, served, or being refused).
    pub fn open_connections(&self) -> usize {
        self.shared.budget.open()
    }

    /// The counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        ServerStats {
            connections: c.connections.get(),
            open: self.shared.budget.open(),
            refused: c.refused.get(),
            requests: c.requests.get(),
            refusals: c.refusals.get(),
            timeouts: c.timeouts.get(),
            bytes_received: c.bytes_received.get(),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &HttpServerConfig {
        &self.shared.config
    }

    /// Stops listening; connections already open are served until they
    /// close.
    pub fn stop(&self) {
        self.shared.budget.set_port(None);
        drop(self.port.stop_listening());
    }
}

fn shared(reactor: &Reactor, config: HttpServerConfig, handler: impl Handler) -> Rc<Shared> {
    let budget = Budget::new(&config.name, config.max_connections, config.at_capacity);
    Rc::new(Shared {
        reactor: reactor.clone(),
        config,
        handler: Box::new(handler),
        budget,
        counters: Counters::default(),
    })
}
