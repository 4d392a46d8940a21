//! [`HttpError`]: everything that can go wrong with a request, as one enum.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

use gyre_reactor::defer::TimedOut;

/// Why a request failed: carried in the [`Failure`](gyre_reactor::defer::Failure)
/// of the Deferred that [`HttpClient::request`](super::HttpClient::request)
/// returns (get it back with `failure.downcast_ref::<HttpError>()`), and
/// returned by the sans-IO [`ResponseParser`](super::ResponseParser).
///
/// Cancelling a request is not an `HttpError`: its Deferred fails with
/// [`Cancelled`](gyre_reactor::defer::Cancelled), as every cancelled
/// Deferred does.
///
/// `HttpError` is `Clone` (I/O errors are shared behind an `Arc`), so a
/// parser that failed can report the same error again.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL is malformed, or its scheme is not `http` or `https`.
    InvalidUrl {
        /// The URL as given (shortened if very long).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The request cannot be sent as given: a method or header name that is
    /// not a token, a header value with a line break.
    InvalidRequest(String),
    /// The host name did not resolve.
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: Arc<io::Error>,
    },
    /// The TCP connection could not be made (refused, unreachable, or not
    /// within the connect time-out: then `source.kind()` is
    /// [`io::ErrorKind::TimedOut`]).
    Connect {
        /// The address of the last attempt.
        addr: String,
        /// The connect error.
        source: Arc<io::Error>,
    },
    /// TLS failed: the handshake (certificate not trusted, wrong name, no
    /// common protocol) or the TLS layer itself.
    Tls(String),
    /// The whole request did not complete within the request time-out.
    TimedOut(TimedOut),
    /// The host had [`PoolConfig::max_connections_per_host`](super::PoolConfig::max_connections_per_host)
    /// connections open and already
    /// [`PoolConfig::max_waiting_per_host`](super::PoolConfig::max_waiting_per_host)
    /// requests waiting for one: refused at once, nothing sent.
    TooManyWaiting {
        /// The host.
        host: String,
        /// The limit on waiting requests.
        limit: usize,
    },
    /// [`HttpClientConfig::max_resolving`](super::HttpClientConfig::max_resolving)
    /// host name lookups were in flight already: refused at once, nothing
    /// sent.
    ResolverBusy {
        /// The limit on lookups in flight.
        limit: usize,
    },
    /// The response head (status line and headers) exceeded the limit.
    HeaderTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The response has more header fields than the limit.
    TooManyHeaders {
        /// The limit, in fields.
        limit: usize,
    },
    /// The response body exceeded the limit (announced by its
    /// `Content-Length`, or counted as it arrived).
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The status line is not `HTTP/1.x NNN reason`.
    BadStatusLine(String),
    /// A header field is malformed, or the framing headers
    /// (`Content-Length`, `Transfer-Encoding`) are invalid or contradictory.
    BadHeader(String),
    /// A chunk-size line of a chunked body is invalid or too long, or a
    /// chunk is not followed by CRLF.
    InvalidChunkSize(String),
    /// The connection closed before a complete response head arrived.
    ClosedBeforeResponse(String),
    /// The connection closed in the middle of the response body.
    ClosedMidBody {
        /// Body bytes received before the close.
        received: u64,
        /// The announced length, when there was one.
        expected: Option<u64>,
    },
}

impl HttpError {
    pub(crate) fn invalid_url(url: &str, reason: &'static str) -> HttpError {
        let mut short: String = url.chars().take(200).collect();
        if short.len() < url.len() {
            short.push_str("...");
        }
        HttpError::InvalidUrl { url: short, reason }
    }

    /// Whether this is the request time-out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::TimedOut(_))
            || matches!(self, HttpError::Connect { source, .. } if source.kind() == io::ErrorKind::TimedOut)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            HttpError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            HttpError::Resolve { host, source } => {
                let source = source.to_string();
                if source.contains(host.as_str()) {
                    f.write_str(&source)
                } else {
                    write!(f, "cannot resolve {host}: {source}")
                }
            }
            HttpError::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            HttpError::Tls(why) => write!(f, "TLS failed: {why}"),
            HttpError::TimedOut(t) => write!(f, "HTTP request {t}"),
            HttpError::TooManyWaiting { host, limit } => write!(
                f,
                "too many requests waiting for a connection to {host} (limit {limit})"
            ),
            HttpError::ResolverBusy { limit } => {
                write!(f, "too many host name lookups in flight (limit {limit})")
            }
            HttpError::HeaderTooLarge { limit } => {
                write!(f, "response head larger than the limit of {limit} bytes")
            }
            HttpError::TooManyHeaders { limit } => {
                write!(f, "response has more than {limit} header fields")
            }
            HttpError::BodyTooLarge { limit } => {
                write!(f, "response body larger than the limit of {limit} bytes")
            }
            HttpError::BadStatusLine(line) => write!(f, "bad status line {line:?}"),
            HttpError::BadHeader(why) => write!(f, "bad response header: {why}"),
            HttpError::InvalidChunkSize(why) => write!(f, "invalid chunked body: {why}"),
            HttpError::ClosedBeforeResponse(why) => {
                write!(f, "connection closed before a complete response: {why}")
            }
            HttpError::ClosedMidBody { received, expected } => match expected {
                Some(n) => write!(
                    f,
                    "connection closed in the middle of the response body ({received} of {n} bytes)"
                ),
                None => write!(
                    f,
                    "connection closed in the middle of the response body (after {received} bytes)"
                ),
            },
        }
    }
}

/// The message of every variant is complete (it includes the I/O error of
/// `Resolve` and `Connect`), so there is no `source()`: the I/O errors are in
/// the variants' fields.
impl Error for HttpError {}

/// Shortens peer-supplied text for an error message.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    let mut text: String = text.trim_end_matches(['\r', '\n']).to_string();
    if bytes.len() > MAX {
        text.push_str("...");
    }
    text
}
