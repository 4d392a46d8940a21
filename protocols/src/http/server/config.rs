//! [`HttpServerConfig`]: every limit of an [`HttpServer`](super::HttpServer),
//! with its default.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use gyre_reactor::ListenOptions;

use super::parser::RequestLimits;
use crate::http::message::Response;

/// The default [`HttpServerConfig::head_timeout`]: 30 s.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`HttpServerConfig::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default [`HttpServerConfig::max_connections`]: 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default [`HttpServerConfig::max_pipelined`]: 16.
pub const DEFAULT_MAX_PIPELINED: usize = 16;
/// The default [`HttpServerConfig::tls_handshake_timeout`]: 10 s.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of connections answered 503 at once past the cap
/// ([`AtCapacity::Answer503`]): 64.
pub const DEFAULT_MAX_REFUSING: usize = 64;

/// What an [`HttpServer`](super::HttpServer) does with a connection that
/// arrives when [`max_connections`](HttpServerConfig::max_connections) are
/// open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCapacity {
    /// Accept it, answer `503 Service Unavailable` (with `Retry-After: 1`
    /// and `Connection: close`) and close, so the client learns at once.
    /// At most `at_most` such connections are open at once; past that the
    /// port stops accepting until one closes. The default, with
    /// [`DEFAULT_MAX_REFUSING`].
    Answer503 {
        /// Connections being refused at once, at most.
        at_most: usize,
    },
    /// Stop accepting until a connection closes: new connections wait in
    /// the kernel's backlog (and past it are not answered). Nothing is
    /// spent on them, not even a TLS handshake.
    PauseAccepting,
}

/// Builds the response to a request the server refuses itself (a limit,
/// a malformed request, a time-out, the connection cap) from the status
/// and a one-line reason.
pub type ErrorResponder = Rc<dyn Fn(u16, &str) -> Response>;

/// The settings of an [`HttpServer`](super::HttpServer). Every limit has a
/// default, is logged when hit (at info level for a client's fault, warn
/// for the server's capacity), and is answered with its status before the
/// connection closes (with a lingering close, so answers to earlier
/// pipelined requests still arrive):
///
/// | limit | default | when hit |
/// |---|---|---|
/// | [`limits`](Self::limits) | see [`RequestLimits`] | 400, 413, 414, 431 |
/// | [`head_timeout`](Self::head_timeout) | [`DEFAULT_HEAD_TIMEOUT`] | 408 |
/// | [`idle_timeout`](Self::idle_timeout) | [`DEFAULT_IDLE_TIMEOUT`] | closed (408 mid-body; logged at debug level between requests) |
/// | [`max_connections`](Self::max_connections) | [`DEFAULT_MAX_CONNECTIONS`] | [`at_capacity`](Self::at_capacity): 503, or accepting paused |
/// | [`max_pipelined`](Self::max_pipelined) | [`DEFAULT_MAX_PIPELINED`] | reading paused until answers go out (logged at debug level) |
/// | [`tls_handshake_timeout`](Self::tls_handshake_timeout) | [`DEFAULT_TLS_HANDSHAKE_TIMEOUT`] | closed (TLS only) |
///
/// ```
/// use gyre_protocols::http::server::{AtCapacity, HttpServerConfig, RequestLimits};
/// use std::time::Duration;
///
/// let config = HttpServerConfig {
///     limits: RequestLimits { max_body: 64 * 1024, ..RequestLimits::default() },
///     idle_timeout: Duration::from_secs(15),
///     at_capacity: AtCapacity::PauseAccepting,
///     ..HttpServerConfig::default()
/// };
/// # drop(config);
/// ```
#[derive(Clone)]
pub struct HttpServerConfig {
    /// What a request may be: head, fields, target, body, chunk lines.
    pub limits: RequestLimits,
    /// The request (head-read) time-out: a request head must arrive whole
    /// within this time of its first byte, however slowly it trickles in;
    /// past it the connection is answered 408 and closed. While a head is
    /// arriving this applies instead of the idle time-out.
    pub head_timeout: Duration,
    /// A connection from which nothing arrives this long while the server
    /// waits for it (between requests, or in a body) is closed: quietly
    /// between requests, with a 408 in the middle of a body. It does not
    /// run while a handler is working on a request. A connection closing
    /// whose answers the peer does not read is aborted after this long.
    pub idle_timeout: Duration,
    /// The most connections open at once (TLS handshakes included): the
    /// server's descriptor budget. See [`at_capacity`](Self::at_capacity).
    /// A value of 0 is taken as 1.
    pub max_connections: usize,
    /// What a connection past [`max_connections`](Self::max_connections)
    /// gets. Logged once when the cap is reached and once when there is room
    /// again.
    pub at_capacity: AtCapacity,
    /// Requests of one connection read ahead of their answers (pipelining):
    /// past it the server stops reading that connection until an answer
    /// goes out. Reading also stops while the connection's write buffer is
    /// above its high-water mark (the peer does not read its answers). A
    /// value of 0 is taken as 1.
    pub max_pipelined: usize,
    /// A TLS client that has not finished its handshake this long after it
    /// connected is dropped (logged at debug level by the TLS layer).
    pub tls_handshake_timeout: Duration,
    /// How the port listens (backlog, spare descriptor, back-off when out
    /// of descriptors). Default: [`ListenOptions::new`].
    pub listen: ListenOptions,
    /// The response to a request the server refuses itself; default: a
    /// `text/plain` body saying the status and why.
    pub error_response: Option<ErrorResponder>,
    /// What the server is called in its log lines. Default `"HTTP server"`.
    pub name: String,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            limits: RequestLimits::default(),
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            at_capacity: AtCapacity::Answer503 {
                at_most: DEFAULT_MAX_REFUSING,
            },
            max_pipelined: DEFAULT_MAX_PIPELINED,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            listen: ListenOptions::new(),
            error_response: None,
            name: "HTTP server".to_string(),
        }
    }
}

impl fmt::Debug for HttpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServerConfig")
            .field("limits", &self.limits)
            .field("head_timeout", &self.head_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("at_capacity", &self.at_capacity)
            .field("max_pipelined", &self.max_pipelined)
            .field("tls_handshake_timeout", &self.tls_handshake_timeout)
            .field("listen", &self.listen)
            .field("error_response", &self.error_response.is_some())
            .field("name", &self.name)
            .finish()
    }
}
