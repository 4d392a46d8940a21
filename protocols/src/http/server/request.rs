//! [`ServerRequest`], what a handler gets, and [`Handler`], what answers
//! it.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;

use gyre_reactor::defer::{ensure_deferred, Deferred, Outcome};

use crate::http::message::Response;
use crate::http::parser::{find_header, Header};

/// A complete request, as an [`HttpServer`](super::HttpServer) hands it to
/// its [`Handler`]: the head, the whole body (within
/// [`RequestLimits::max_body`](super::RequestLimits::max_body), decoded
/// from chunked), the trailers, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRequest {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target as sent, usually a path and query.
    pub target: String,
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The header fields, in order, names as sent.
    pub headers: Vec<Header>,
    /// The body (empty for none).
    pub body: Vec<u8>,
    /// The trailer fields of a chunked body.
    pub trailers: Vec<Header>,
    /// The peer's address.
    pub peer: SocketAddr,
}

impl ServerRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The target's path: up to the `?`.
    ///
    /// ```
    /// # use gyre_protocols::http::server::ServerRequest;
    /// # let mut request = ServerRequest {
    /// #     method: "GET".into(), target: String::new(), version: 1, headers: vec![],
    /// #     body: vec![], trailers: vec![], peer: "127.0.0.1:1".parse().unwrap(),
    /// # };
    /// request.target = "/search?q=deer".into();
    /// assert_eq!(request.path(), "/search");
    /// assert_eq!(request.query(), Some("q=deer"));
    /// ```
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The target's query: after the `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// What answers an [`HttpServer`](super::HttpServer)'s requests (Twisted's
/// `Resource.render`, returning a Deferred as `NOT_DONE_YET` does).
///
/// `handle` runs on the reactor's loop once a request has fully arrived,
/// and returns a [`Deferred`] of its [`Response`]: fired at once
/// ([`succeed`](gyre_reactor::defer::succeed)) or later (a timer, a
/// thread, another request). Answers go out in request order however the
/// Deferreds fire. A failed Deferred, or a panic in `handle`, answers 500
/// (logged). If the connection closes first, the Deferred is cancelled.
///
/// Any `Fn(ServerRequest) -> Deferred<Response>` is a handler; so is
/// [`async_handler`]'s.
///
/// ```
/// use gyre_protocols::http::server::{Handler, ServerRequest};
/// use gyre_protocols::http::Response;
/// use gyre_reactor::defer::{succeed, Deferred};
///
/// fn hello(request: ServerRequest) -> Deferred<Response> {
///     succeed(Response::new(200).with_body(format!("hello from {}", request.path())))
/// }
/// # fn takes(_: impl Handler) {}
/// # takes(hello);
/// ```
pub trait Handler: 'static {
    /// The answer to `request`.
    fn handle(&self, request: ServerRequest) -> Deferred<Response>;
}

impl<F> Handler for F
where
    F: Fn(ServerRequest) -> Deferred<Response> + 'static,
{
    fn handle(&self, request: ServerRequest) -> Deferred<Response> {
        self(request)
    }
}

/// A [`Handler`] written as an `async` function: each request runs as a
/// task on the reactor's loop ([`ensure_deferred`]).
///
/// ```
/// use gyre_protocols::http::server::{async_handler, ServerRequest};
/// use gyre_protocols::http::Response;
///
/// let handler = async_handler(|request: ServerRequest| async move {
///     Ok(Response::new(200).with_body(request.body))
/// });
/// # drop(handler);
/// ```
pub fn async_handler<F, Fut>(f: F) -> AsyncHandler<F>
where
    F: Fn(ServerRequest) -> Fut + 'static,
    Fut: Future<Output = Outcome<Response>> + 'static,
{
    AsyncHandler(f)
}

/// The [`Handler`] [`async_handler`] returns.
pub struct AsyncHandler<F>(F);

impl<F, Fut> Handler for AsyncHandler<F>
where
    F: Fn(ServerRequest) -> Fut + 'static,
    Fut: Future<Output = Outcome<Response>> + 'static,
{
    fn handle(&self, request: ServerRequest) -> Deferred<Response> {
        ensure_deferred((self.0)(request))
    }
}
