//! A nonblocking HTTP/1.1 and HTTPS client and server, and the sans-IO
//! parsers under them.
//!
//! - [`ResponseParser`]: bytes in, [`Event`]s out (head, body pieces,
//!   trailers, end), with limits; usable on its own.
//! - [`HttpClient`]: requests on a [`Reactor`](gyre_reactor::Reactor), each
//!   a [`Deferred`](gyre_reactor::defer::Deferred) of a [`Response`]; DNS on
//!   the reactor's thread pool, TLS through [`crate::tls`], a keep-alive
//!   pool, time-outs, cancellation.
//! - [`Request`], [`Response`], [`Url`], [`HttpError`].
//! - [`server`]: an HTTP/1.1 server ([`server::HttpServer`]) whose handlers
//!   answer with the same [`Response`], and its sans-IO
//!   [`server::RequestParser`].
//!
//! ```no_run
//! use gyre_protocols::http::{HttpClient, HttpError, Request};
//! use gyre_reactor::Reactor;
//! use std::time::Duration;
//!
//! let reactor = Reactor::new()?;
//! let client = HttpClient::new(&reactor);
//! let d = client.request(Request::get("https://example.com/").header("Accept", "text/html"));
//! reactor.run_until(|| d.called(), Duration::from_secs(30))?;
//! match d.take_result().expect("fired") {
//!     Ok(response) => println!("{} {} bytes", response.status, response.body.len()),
//!     Err(failure) => match failure.downcast_ref::<HttpError>() {
//!         Some(HttpError::TimedOut(_)) => eprintln!("too slow"),
//!         _ => eprintln!("failed: {failure}"),
//!     },
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chunked;
mod client;
mod error;
mod message;
pub mod parser;
pub mod server;
mod url;
mod wire;

pub use client::{
    default_tls_config, ClientStats, HttpClient, HttpClientConfig, PoolConfig,
    DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_MAX_RESOLVING, DEFAULT_MAX_WAITING_PER_HOST,
    HTTP_11_ALPN,
};
pub use error::HttpError;
pub use message::{Request, Response, USER_AGENT};
pub use parser::{
    BodyFraming, Event, Header, ParserLimits, ResponseHead, ResponseParser, DEFAULT_MAX_BODY,
    DEFAULT_MAX_CHUNK_LINE, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_BYTES,
};
pub use url::{Scheme, Url};
