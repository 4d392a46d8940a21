//! [`RequestParser`]: a sans-IO HTTP/1.x request parser, with limits.
//!
//! Bytes go in, [`RequestEvent`]s come out: a request's head, its body in
//! pieces (slices of the caller's input, never copied), the trailers of a
//! chunked body, the end; then the next request's head, and so on for
//! pipelined requests. No socket, no clock: the server's connection feeds
//! it, and so can a test or a fuzzer.
//!
//! The head is parsed with [`httparse`] once its blank line has arrived.
//! The body's framing follows RFC 9112 §6.3 for requests:
//!
//! - `Transfer-Encoding: chunked` (exactly that coding): chunked, with
//!   trailers; a `Transfer-Encoding` whose last coding is not `chunked`, or
//!   one sent with `Content-Length`, or in an HTTP/1.0 request, is a 400
//!   (request smuggling hides in those); other codings before `chunked`
//!   are a 501;
//! - `Content-Length` (every copy the same valid number): that many bytes;
//! - otherwise: no body.
//!
//! # Limits
//!
//! Every limit of [`RequestLimits`] is checked as early as the bytes allow,
//! so nothing a peer sends is buffered past it, and each has its status:
//!
//! | limit | default | exceeded |
//! |---|---|---|
//! | [`max_uri_len`](RequestLimits::max_uri_len) | [`DEFAULT_MAX_URI_LEN`] | 414, as soon as the target grows past it (or the request line past `max_head_bytes`) |
//! | [`max_head_bytes`](RequestLimits::max_head_bytes) | [`DEFAULT_MAX_HEAD_BYTES`] | 431 (the trailers too) |
//! | [`max_headers`](RequestLimits::max_headers) | [`DEFAULT_MAX_HEADERS`] | 431 (the trailers too) |
//! | [`max_body`](RequestLimits::max_body) | [`DEFAULT_MAX_BODY`] | 413, at the head for `Content-Length`, at the chunk-size line for chunked |
//! | [`max_chunk_line`](RequestLimits::max_chunk_line) | [`DEFAULT_MAX_CHUNK_LINE`] | 400 |
//!
//! The parser holds at most the larger of `max_head_bytes + 1` and
//! `max_chunk_line` bytes ([`buffered_len`](RequestParser::buffered_len)).
//! Up to [`MAX_LEADING_EMPTY_BYTES`] bytes of empty lines before a request
//! line are skipped (RFC 9112 §2.2); more are a 400.
//!
//! Other refusals: a malformed request line or field, a missing or repeated
//! `Host` in HTTP/1.1, a bad `Content-Length` (400); an HTTP version other
//! than 1.0 and 1.1 (505); an `Expect` other than `100-continue` (417).
//! After an error the parser is spent: it returns the same error again, and
//! the connection is to be closed after the error's answer.
//!
//! ```
//! use gyre_protocols::http::server::{RequestEvent, RequestParser};
//!
//! let mut parser = RequestParser::new();
//! let mut input: &[u8] = b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: h\r\n\r\n";
//! let mut seen = Vec::new();
//! while let Some(event) = parser.parse(&mut input)? {
//!     match event {
//!         RequestEvent::Head(head) => seen.push(format!("{} {}", head.method, head.target)),
//!         RequestEvent::Data(body) => seen.push(String::from_utf8_lossy(body).into_owned()),
//!         RequestEvent::Trailers(_) => {}
//!         RequestEvent::End => seen.push("end".to_string()),
//!     }
//! }
//! assert_eq!(seen, ["POST /echo", "hi", "end", "GET /", "end"]);
//! # Ok::<(), gyre_protocols::http::server::RequestError>(())
//! ```

use std::error::Error;
use std::fmt;

use crate::http::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};
use crate::http::error::{excerpt, HttpError};
use crate::http::parser::{find_header, BodyFraming, Header};
use crate::http::wire::{
    collect_section, connection_options, first_line, parse_decimal, take, trim,
};

/// The default [`RequestLimits::max_head_bytes`]: 16 KiB.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// The default [`RequestLimits::max_headers`]: 64.
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// The default [`RequestLimits::max_uri_len`]: 8 KiB.
pub const DEFAULT_MAX_URI_LEN: usize = 8 * 1024;
/// The default [`RequestLimits::max_body`]: 1 MiB.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// The default [`RequestLimits::max_chunk_line`]: 4 KiB.
pub const DEFAULT_MAX_CHUNK_LINE: usize = 4 * 1024;
/// Bytes of empty lines (CR, LF) skipped before a request line; more are a
/// 400.
pub const MAX_LEADING_EMPTY_BYTES: usize = 8;

/// What a [`RequestParser`] accepts; see the [module docs](self) for when
/// each is checked and what answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Bytes of the head (request line, fields, blank line), and separately
    /// of a chunked body's trailers. Default [`DEFAULT_MAX_HEAD_BYTES`];
    /// past it: 431.
    pub max_head_bytes: usize,
    /// Header fields, and separately trailer fields. Default
    /// [`DEFAULT_MAX_HEADERS`]; past it: 431.
    pub max_headers: usize,
    /// Bytes of the request target. Default [`DEFAULT_MAX_URI_LEN`]; past
    /// it: 414.
    pub max_uri_len: usize,
    /// Bytes of the body (decoded, for chunked). Default
    /// [`DEFAULT_MAX_BODY`]; past it: 413.
    pub max_body: u64,
    /// Bytes of one chunk-size line. Default [`DEFAULT_MAX_CHUNK_LINE`];
    /// past it: 400.
    pub max_chunk_line: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_uri_len: DEFAULT_MAX_URI_LEN,
            max_body: DEFAULT_MAX_BODY,
            max_chunk_line: DEFAULT_MAX_CHUNK_LINE,
        }
    }
}

/// Why a request was refused, with the status that answers it
/// ([`status`](Self::status)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// A malformed request line, field, length or chunk (400).
    Malformed(String),
    /// The request target is longer than the limit (414).
    UriTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The head (or the trailers) is larger than the limit (431).
    HeadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// More header (or trailer) fields than the limit (431).
    TooManyHeaders {
        /// The limit, in fields.
        limit: usize,
    },
    /// The body is larger than the limit (413).
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// An HTTP version other than 1.0 and 1.1 (505).
    UnsupportedVersion(String),
    /// A transfer coding other than `chunked` (501).
    UnsupportedCoding(String),
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed(String),
}

impl RequestError {
    /// The status code that answers it.
    ///
    /// ```
    /// use gyre_protocols::http::server::RequestError;
    ///
    /// assert_eq!(RequestError::UriTooLong { limit: 8 }.status(), 414);
    /// assert_eq!(RequestError::BodyTooLarge { limit: 8 }.status(), 413);
    /// ```
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Malformed(_) => 400,
            RequestError::UriTooLong { .. } => 414,
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders { .. } => 431,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::UnsupportedVersion(_) => 505,
            RequestError::UnsupportedCoding(_) => 501,
            RequestError::ExpectationFailed(_) => 417,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Malformed(why) => write!(f, "malformed request: {why}"),
            RequestError::UriTooLong { limit } => {
                write!(f, "request target longer than {limit} bytes")
            }
            RequestError::HeadTooLarge { limit } => {
                write!(f, "request head (or trailers) larger than {limit} bytes")
            }
            RequestError::TooManyHeaders { limit } => {
                write!(f, "more than {limit} header (or trailer) fields")
            }
            RequestError::BodyTooLarge { limit } => {
                write!(f, "request body larger than {limit} bytes")
            }
            RequestError::UnsupportedVersion(v) => write!(f, "HTTP version not supported: {v}"),
            RequestError::UnsupportedCoding(c) => write!(f, "transfer coding not supported: {c}"),
            RequestError::ExpectationFailed(e) => write!(f, "expectation not supported: {e}"),
        }
    }
}

impl Error for RequestError {}

impl From<HttpError> for RequestError {
    /// The chunked decoder's errors, as the server answers them.
    fn from(e: HttpError) -> RequestError {
        match e {
            HttpError::BodyTooLarge { limit } => RequestError::BodyTooLarge { limit },
            HttpError::HeaderTooLarge { limit } => RequestError::HeadTooLarge { limit },
            HttpError::TooManyHeaders { limit } => RequestError::TooManyHeaders { limit },
            other => RequestError::Malformed(other.to_string()),
        }
    }
}

/// A request's head, checked: request line, fields, and what they mean for
/// the body and the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, such as `GET` (a token; case-sensitive).
    pub method: String,
    /// The request target as sent: usually a path and query
    /// (`/a/b?c=d`), or `*`, or an absolute URL.
    pub target: String,
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The header fields, in order, names as sent.
    pub headers: Vec<Header>,
    /// How the body is delimited: [`BodyFraming::Empty`],
    /// [`BodyFraming::Length`] or [`BodyFraming::Chunked`].
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this one:
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Whether the client sent `Expect: 100-continue` (HTTP/1.1 only) and
    /// waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// Whether a body follows the head.
    pub fn has_body(&self) -> bool {
        self.framing != BodyFraming::Empty
    }
}

/// What [`RequestParser::parse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent<'a> {
    /// A request's head.
    Head(RequestHead),
    /// A piece of its body: a slice of the input given to `parse`.
    Data(&'a [u8]),
    /// The trailer fields of a chunked body (only when there are some).
    Trailers(Vec<Header>),
    /// The request is complete; the next event is the next request's head.
    End,
}

/// Where the parser is.
#[derive(Debug)]
enum State {
    /// Between requests, or collecting a head in `buf`.
    Head,
    /// `remaining` bytes of a `Content-Length` body; `End` when 0.
    Length { remaining: u64 },
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// An error was returned; it is returned again.
    Failed(RequestError),
}

/// How far the request line in `buf` has been scanned, so that each byte
/// is looked at once however the head is cut.
#[derive(Debug, Default, Clone, Copy)]
struct LineScan {
    /// Bytes of `buf` scanned.
    scanned: usize,
    /// Where the target starts (after the first space).
    target_start: Option<usize>,
    /// Where it ends (the second space), or the line's end.
    target_end: Option<usize>,
}

/// A sans-IO HTTP/1.x request parser: see the [module docs](self).
///
/// One parser reads every request of a connection, one after another.
#[derive(Debug)]
pub struct RequestParser {
    limits: RequestLimits,
    state: State,
    /// The head as it arrives (at most `max_head_bytes + 1`).
    buf: Vec<u8>,
    scan: LineScan,
    /// Empty-line bytes skipped since the last request.
    skipped: usize,
    /// Body bytes of the current request so far.
    body_received: u64,
}

impl Default for RequestParser {
    fn default() -> Self {
        RequestParser::new()
    }
}

impl RequestParser {
    /// A parser with the default limits.
    pub fn new() -> RequestParser {
        RequestParser::with_limits(RequestLimits::default())
    }

    /// A parser with `limits`.
    pub fn with_limits(limits: RequestLimits) -> RequestParser {
        RequestParser {
            limits,
            state: State::Head,
            buf: Vec::new(),
            scan: LineScan::default(),
            skipped: 0,
            body_received: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// Whether the parser is between requests with nothing of the next one
    /// received (empty lines aside).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// Whether part of a head has arrived and the rest has not.
    pub fn in_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.buf.is_empty()
    }

    /// Whether a request's body is being read.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Length { .. } | State::Chunked(_))
    }

    /// Whether an error was returned (the parser is spent).
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed(_))
    }

    /// Body bytes of the current request received so far (decoded).
    pub fn body_received(&self) -> u64 {
        self.body_received
    }

    /// Bytes the parser holds: at most the larger of `max_head_bytes + 1`
    /// and `max_chunk_line`.
    pub fn buffered_len(&self) -> usize {
        match &self.state {
            State::Chunked(decoder) => self.buf.len() + decoder.buffered_len(),
            _ => self.buf.len(),
        }
    }

    /// Parses from `input`, advancing it past what was consumed, and
    /// returns the next event; `Ok(None)` when more input is needed (then
    /// `input` is empty).
    ///
    /// After an error the parser is spent: it returns the same error again.
    pub fn parse<'a>(
        &mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<RequestEvent<'a>>, RequestError> {
        match self.step(input) {
            Err(e) => {
                self.state = State::Failed(e.clone());
                self.buf = Vec::new();
                Err(e)
            }
            ok => ok,
        }
    }

    fn step<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<RequestEvent<'a>>, RequestError> {
        match self.state {
            State::Failed(ref e) => Err(e.clone()),
            State::Head => {
                if self.buf.is_empty() {
                    let skip = input
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    *input = &input[skip..];
                    self.skipped = self.skipped.saturating_add(skip);
                    if self.skipped > MAX_LEADING_EMPTY_BYTES {
                        return Err(RequestError::Malformed(format!(
                            "more than {MAX_LEADING_EMPTY_BYTES} bytes of empty lines before a request line"
                        )));
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                }
                let limit = self.limits.max_head_bytes;
                let collected = collect_section(&mut self.buf, input, limit, false);
                self.scan_request_line()?;
                let Some(end) = collected.map_err(|_| self.head_too_large())? else {
                    return Ok(None);
                };
                let head = self.parse_head(end)?;
                self.buf = Vec::new();
                self.scan = LineScan::default();
                self.skipped = 0;
                self.body_received = 0;
                self.state = match head.framing {
                    BodyFraming::Length(n) => State::Length { remaining: n },
                    BodyFraming::Chunked => State::Chunked(ChunkedDecoder::new(ChunkedLimits {
                        max_chunk_line: self.limits.max_chunk_line,
                        max_trailer_bytes: self.limits.max_head_bytes,
                        max_trailers: self.limits.max_headers,
                        max_body: self.limits.max_body,
                    })),
                    BodyFraming::Empty | BodyFraming::UntilClose => State::Length { remaining: 0 },
                };
                Ok(Some(RequestEvent::Head(head)))
            }
            State::Length { remaining: 0 } => {
                self.state = State::Head;
                Ok(Some(RequestEvent::End))
            }
            State::Length { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let data = take(input, remaining);
                self.state = State::Length {
                    remaining: remaining - data.len() as u64,
                };
                self.body_received += data.len() as u64;
                Ok(Some(RequestEvent::Data(data)))
            }
            State::Chunked(ref mut decoder) => match decoder.decode(input)? {
                None => Ok(None),
                Some(Chunk::Data(data)) => {
                    self.body_received += data.len() as u64;
                    Ok(Some(RequestEvent::Data(data)))
                }
                Some(Chunk::Trailers(trailers)) => Ok(Some(RequestEvent::Trailers(trailers))),
                Some(Chunk::End) => {
                    self.state = State::Head;
                    Ok(Some(RequestEvent::End))
                }
            },
        }
    }

    /// Scans the bytes of `buf` not scanned yet for the request line's
    /// spaces and end, and refuses a target past the limit as soon as it is.
    fn scan_request_line(&mut self) -> Result<(), RequestError> {
        let scan = &mut self.scan;
        if scan.target_end.is_none() {
            let start = scan.scanned.min(self.buf.len());
            for (i, &b) in self.buf.iter().enumerate().skip(start) {
                match (b, scan.target_start) {
                    (b' ', None) => scan.target_start = Some(i + 1),
                    (b' ' | b'\r' | b'\n', Some(_)) => {
                        scan.target_end = Some(i);
                        break;
                    }
                    (b'\n', None) => {
                        // A line without a target: httparse says why.
                        scan.target_start = Some(i);
                        scan.target_end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            scan.scanned = self.buf.len();
        }
        let limit = self.limits.max_uri_len;
        let length = match (scan.target_start, scan.target_end) {
            (Some(start), Some(end)) => end.saturating_sub(start),
            (Some(start), None) => self.buf.len().saturating_sub(start),
            (None, _) => 0,
        };
        if length > limit {
            return Err(RequestError::UriTooLong { limit });
        }
        Ok(())
    }

    /// The error for a head past its limit: 414 if it is the request line
    /// that has not ended (the target is what is too long), else 431.
    fn head_too_large(&self) -> RequestError {
        match (self.scan.target_start, self.scan.target_end) {
            (Some(_), None) => RequestError::UriTooLong {
                limit: self.limits.max_uri_len,
            },
            _ => RequestError::HeadTooLarge {
                limit: self.limits.max_head_bytes,
            },
        }
    }

    /// Parses and checks the head in `buf[..end]`.
    fn parse_head(&self, end: usize) -> Result<RequestHead, RequestError> {
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut request = httparse::Request::new(&mut fields);
        let bytes = &self.buf[..end];
        let line = || excerpt(first_line(bytes));
        match request.parse(bytes) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(RequestError::Malformed(format!(
                    "incomplete request line {:?}",
                    line()
                )))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(RequestError::TooManyHeaders {
                    limit: self.limits.max_headers,
                })
            }
            Err(httparse::Error::Version) if names_other_version(first_line(bytes)) => {
                return Err(RequestError::UnsupportedVersion(line()));
            }
            Err(e) => return Err(RequestError::Malformed(format!("{e} in {:?}", line()))),
        }
        let (Some(method), Some(target), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return Err(RequestError::Malformed(format!(
                "bad request line {:?}",
                line()
            )));
        };
        let headers: Vec<Header> = request
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        let framing = self.framing_of(version, &headers)?;
        let hosts = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count();
        if hosts > 1 || (version == 1 && hosts == 0) {
            return Err(RequestError::Malformed(format!(
                "{hosts} Host fields in an HTTP/1.{version} request"
            )));
        }
        let (close, keep) = connection_options(
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .map(|(_, v)| v.as_slice()),
        );
        let mut expect_continue = false;
        for (_, value) in headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("expect"))
        {
            if trim(value).eq_ignore_ascii_case(b"100-continue") {
                // An HTTP/1.0 client cannot wait for it (RFC 9110 §10.1.1).
                expect_continue = version == 1;
            } else {
                return Err(RequestError::ExpectationFailed(excerpt(value)));
            }
        }
        Ok(RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            version,
            framing,
            keep_alive: !close && (version == 1 || keep),
            expect_continue: expect_continue && framing != BodyFraming::Empty,
            headers,
        })
    }

    /// The body framing of a request (RFC 9112 §6.3).
    fn framing_of(&self, version: u8, headers: &[Header]) -> Result<BodyFraming, RequestError> {
        let mut codings: Vec<&[u8]> = Vec::new();
        let mut lengths: Vec<&[u8]> = Vec::new();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("transfer-encoding") {
                codings.extend(
                    value
                        .split(|&b| b == b',')
                        .map(trim)
                        .filter(|c| !c.is_empty()),
                );
            } else if name.eq_ignore_ascii_case("content-length") {
                lengths.extend(value.split(|&b| b == b',').map(trim));
            }
        }
        if !codings.is_empty() {
            if !lengths.is_empty() {
                return Err(RequestError::Malformed(
                    "both Transfer-Encoding and Content-Length".to_string(),
                ));
            }
            if version == 0 {
                return Err(RequestError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request".to_string(),
                ));
            }
            let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
            if !codings.last().is_some_and(chunked) {
                return Err(RequestError::Malformed(
                    "the last transfer coding is not chunked".to_string(),
                ));
            }
            if codings.len() > 1 {
                let first = codings.first().copied().unwrap_or_default();
                return Err(RequestError::UnsupportedCoding(excerpt(first)));
            }
            return Ok(BodyFraming::Chunked);
        }
        let mut length: Option<u64> = None;
        for text in lengths {
            let n = parse_decimal(text).ok_or_else(|| {
                RequestError::Malformed(format!("invalid Content-Length {:?}", excerpt(text)))
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(RequestError::Malformed(
                    "conflicting Content-Length values".to_string(),
                ));
            }
            length = Some(n);
        }
        match length {
            Some(n) if n > self.limits.max_body => Err(RequestError::BodyTooLarge {
                limit: self.limits.max_body,
            }),
            Some(0) | None => Ok(BodyFraming::Empty),
            Some(n) => Ok(BodyFraming::Length(n)),
        }
    }
}

/// Whether a request line that httparse refused for its version ends in a
/// well-formed version other than 1.0 and 1.1 (`GET / HTTP/2.0`): a 505,
/// where any other bad line is a 400.
fn names_other_version(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.len().checked_sub(9).map(|i| &line[i..]) {
        Some([b' ', b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit()
                && minor.is_ascii_digit()
                && !(*major == b'1' && matches!(minor, b'0' | b'1'))
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
