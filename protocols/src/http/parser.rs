//! [`ResponseParser`]: a sans-IO HTTP/1.x response parser.
//!
//! Bytes go in, [`Event`]s come out: the head (status, reason, headers), the
//! body in pieces, the trailers of a chunked body, and the end. No socket, no
//! clock: the [`HttpClient`](super::HttpClient)'s connection feeds it, and so
//! can anything else (a test, a fuzzer, another I/O layer).
//!
//! The head is parsed with [`httparse`] once its blank line has arrived;
//! body bytes are handed out as slices of the caller's input, never copied
//! or buffered by the parser. The body's framing follows RFC 9112 §6.3:
//!
//! - no body for a response to `HEAD`, for 1xx, 204 and 304;
//! - `Transfer-Encoding` ending in `chunked`: chunked, with trailers;
//!   any other `Transfer-Encoding`: read until the connection closes;
//! - `Content-Length` (every copy the same valid number): that many bytes;
//! - otherwise: read until the connection closes.
//!
//! Interim 1xx responses (other than 101) are reported as
//! [`Event::Informational`] and the parser goes on to the final response.
//!
//! Limits ([`ParserLimits`]) bound everything the parser keeps: the head
//! (64 KiB and 100 fields by default), a chunk-size line, the trailers, and
//! the body (16 MiB by default, checked against `Content-Length` as soon as
//! the head arrives, and against the bytes counted otherwise).
//!
//! ```
//! use gyre_protocols::http::{Event, ResponseParser};
//!
//! let mut parser = ResponseParser::new();
//! let mut body = Vec::new();
//! let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
//! while let Some(event) = parser.parse(&mut input)? {
//!     match event {
//!         Event::Head(head) => assert_eq!(head.status, 200),
//!         Event::Data(piece) => body.extend_from_slice(piece),
//!         Event::End => break,
//!         _ => {}
//!     }
//! }
//! assert_eq!(body, b"hello");
//! assert!(parser.is_done() && parser.keep_alive());
//! # Ok::<(), gyre_protocols::http::HttpError>(())
//! ```

use super::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};
use super::error::{excerpt, HttpError};
use super::wire::{collect_section, connection_options, first_line, parse_decimal, take, trim};

/// The default limit on the response head: 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// The default limit on header fields: 100.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// The default limit on the response body: 16 MiB.
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
/// The default limit on one chunk-size line (size, extensions, CRLF): 4 KiB.
pub const DEFAULT_MAX_CHUNK_LINE: usize = 4 * 1024;

/// What a [`ResponseParser`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserLimits {
    /// Bytes of the head (status line, headers, blank line), and separately
    /// of the trailers. Default [`DEFAULT_MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// Header fields in the head, and separately in the trailers. Default
    /// [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// Bytes of the body (decoded, for chunked). Default [`DEFAULT_MAX_BODY`].
    pub max_body: u64,
    /// Bytes of one chunk-size line. Default [`DEFAULT_MAX_CHUNK_LINE`].
    pub max_chunk_line: usize,
}

impl Default for ParserLimits {
    fn default() -> Self {
        ParserLimits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body: DEFAULT_MAX_BODY,
            max_chunk_line: DEFAULT_MAX_CHUNK_LINE,
        }
    }
}

/// A header field: name as sent, value as bytes.
pub type Header = (String, Vec<u8>);

/// The head of a response: status line and header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The header fields, in order, names as sent.
    pub headers: Vec<Header>,
}

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }
}

/// The first value of header `name` in `headers` (case-insensitive).
pub(crate) fn find_header<'h>(headers: &'h [Header], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// What [`ResponseParser::parse`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// An interim 1xx response (such as `100 Continue`); the final response
    /// follows.
    Informational(ResponseHead),
    /// The head of the final response.
    Head(ResponseHead),
    /// A piece of the body: a slice of the input given to `parse`.
    Data(&'a [u8]),
    /// The trailer fields of a chunked body (only when there are some).
    Trailers(Vec<Header>),
    /// The response is complete.
    End,
}

/// How the body is delimited, once the head is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304), or `Content-Length: 0`.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

#[derive(Debug)]
enum State {
    /// Collecting the head in `buf`.
    Head,
    /// `remaining` bytes of a `Content-Length` body; `End` when 0.
    Length { remaining: u64 },
    /// A chunked body, trailers included.
    Chunked(ChunkedDecoder),
    /// Until the connection closes.
    UntilClose,
    /// `End` was returned.
    Done,
    /// An error was returned; it is returned again.
    Failed(HttpError),
}

/// A sans-IO HTTP/1.x response parser: see the [module docs](self).
///
/// One parser reads one response; [`reset`](Self::reset) prepares it for
/// the next one on the same connection.
#[derive(Debug)]
pub struct ResponseParser {
    limits: ParserLimits,
    head_request: bool,
    state: State,
    /// The head as it arrives (bounded by the limits).
    buf: Vec<u8>,
    framing: Option<BodyFraming>,
    body_received: u64,
    keep_alive: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new()
    }
}

impl ResponseParser {
    /// A parser with the default limits, for a response to a request other
    /// than `HEAD`.
    pub fn new() -> ResponseParser {
        ResponseParser::with_limits(ParserLimits::default())
    }

    /// A parser with `limits`.
    pub fn with_limits(limits: ParserLimits) -> ResponseParser {
        ResponseParser {
            limits,
            head_request: false,
            state: State::Head,
            buf: Vec::new(),
            framing: None,
            body_received: 0,
            keep_alive: false,
        }
    }

    /// Whether the response answers a `HEAD` request (then it has no body,
    /// whatever its headers say). Set before parsing.
    pub fn set_head_request(&mut self, head: bool) {
        self.head_request = head;
    }

    /// The limits.
    pub fn limits(&self) -> &ParserLimits {
        &self.limits
    }

    /// Prepares for the next response on the same connection.
    pub fn reset(&mut self, head_request: bool) {
        self.head_request = head_request;
        self.state = State::Head;
        self.buf.clear();
        self.framing = None;
        self.body_received = 0;
        self.keep_alive = false;
    }

    /// Whether [`Event::End`] was returned.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether nothing of the response has arrived yet.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// The body's framing, once the head has been parsed.
    pub fn framing(&self) -> Option<BodyFraming> {
        self.framing
    }

    /// Bytes the parser holds (part of a head, a chunk-size line or the
    /// trailers): never more than the larger of the head and chunk-size
    /// line limits (and 2).
    pub fn buffered_len(&self) -> usize {
        match &self.state {
            State::Chunked(decoder) => self.buf.len() + decoder.buffered_len(),
            _ => self.buf.len(),
        }
    }

    /// Body bytes received so far (decoded).
    pub fn body_received(&self) -> u64 {
        self.body_received
    }

    /// Whether the connection may carry another request after this
    /// response: HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `Connection: keep-alive`, and a body not delimited by the close.
    /// Meaningful once the head has been parsed.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Parses from `input`, advancing it past what was consumed, and returns
    /// the next event; `Ok(None)` when more input is needed (then `input` is
    /// empty) or after [`Event::End`] (then `input` holds whatever followed
    /// the response).
    ///
    /// After an error the parser is spent: it returns the same error again.
    pub fn parse<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>, HttpError> {
        match self.step(input) {
            Err(e) => {
                self.state = State::Failed(e.clone());
                self.buf = Vec::new();
                Err(e)
            }
            ok => ok,
        }
    }

    /// The connection closed (EOF): ends a body delimited by the close, or
    /// reports what was cut short. `Ok(None)` if the response had already
    /// ended.
    pub fn finish(&mut self) -> Result<Option<Event<'static>>, HttpError> {
        let result = match &self.state {
            State::Done => Ok(None),
            State::Failed(e) => Err(e.clone()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(Some(Event::End))
            }
            State::Length { remaining: 0 } => {
                self.state = State::Done;
                Ok(Some(Event::End))
            }
            State::Head if self.buf.is_empty() => Err(HttpError::ClosedBeforeResponse(
                "no response received".to_string(),
            )),
            State::Head => Err(HttpError::ClosedBeforeResponse(format!(
                "closed after {} bytes of the response head",
                self.buf.len()
            ))),
            State::Length { remaining } => Err(HttpError::ClosedMidBody {
                received: self.body_received,
                expected: Some(self.body_received + remaining),
            }),
            State::Chunked(_) => Err(HttpError::ClosedMidBody {
                received: self.body_received,
                expected: None,
            }),
        };
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn step<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<Event<'a>>, HttpError> {
        match self.state {
            State::Failed(ref e) => Err(e.clone()),
            State::Done => Ok(None),
            State::Head => {
                if input.is_empty() {
                    return Ok(None);
                }
                if self.buf.is_empty() {
                    // A client should ignore empty lines before the
                    // status line (RFC 9112 §2.2).
                    let skip = input
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    *input = &input[skip..];
                    if input.is_empty() {
                        return Ok(None);
                    }
                }
                let Some(end) = self.collect_head(input)? else {
                    return Ok(None);
                };
                self.parse_head(end).map(Some)
            }
            State::Length { remaining: 0 } => {
                self.state = State::Done;
                Ok(Some(Event::End))
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
                Ok(Some(Event::Data(data)))
            }
            State::UntilClose => {
                if input.is_empty() {
                    return Ok(None);
                }
                let room = self.limits.max_body.saturating_sub(self.body_received);
                if input.len() as u64 > room {
                    return Err(HttpError::BodyTooLarge {
                        limit: self.limits.max_body,
                    });
                }
                let data = std::mem::take(input);
                self.body_received += data.len() as u64;
                Ok(Some(Event::Data(data)))
            }
            State::Chunked(ref mut decoder) => match decoder.decode(input)? {
                None => Ok(None),
                Some(Chunk::Data(data)) => {
                    self.body_received += data.len() as u64;
                    Ok(Some(Event::Data(data)))
                }
                Some(Chunk::Trailers(trailers)) => Ok(Some(Event::Trailers(trailers))),
                Some(Chunk::End) => {
                    self.state = State::Done;
                    Ok(Some(Event::End))
                }
            },
        }
    }

    /// Moves bytes from `input` into `buf` until the blank line that ends
    /// the head; the head's length in `buf` once complete.
    fn collect_head(&mut self, input: &mut &[u8]) -> Result<Option<usize>, HttpError> {
        let limit = self.limits.max_header_bytes;
        collect_section(&mut self.buf, input, limit, false)
            .map_err(|_| HttpError::HeaderTooLarge { limit })
    }

    /// Parses the head in `buf[..end]`: the final head, or an interim one
    /// (then the state stays `Head` for the final one).
    fn parse_head(&mut self, end: usize) -> Result<Event<'static>, HttpError> {
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut response = httparse::Response::new(&mut fields);
        let head = &self.buf[..end];
        match response.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(HttpError::BadStatusLine(excerpt(first_line(head))));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders {
                    limit: self.limits.max_headers,
                })
            }
            Err(httparse::Error::Status | httparse::Error::Version | httparse::Error::Token) => {
                return Err(HttpError::BadStatusLine(excerpt(first_line(head))));
            }
            Err(e) => return Err(HttpError::BadHeader(e.to_string())),
        }
        let (Some(version), Some(status)) = (response.version, response.code) else {
            return Err(HttpError::BadStatusLine(excerpt(first_line(head))));
        };
        if !(100..=999).contains(&status) {
            return Err(HttpError::BadStatusLine(excerpt(first_line(head))));
        }
        let head = ResponseHead {
            version,
            status,
            reason: response.reason.unwrap_or("").to_string(),
            headers: response
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
        };
        self.buf.clear();
        if (100..200).contains(&status) && status != 101 {
            // An interim response: the final one follows (state stays Head).
            return Ok(Event::Informational(head));
        }
        let framing = self.framing_of(&head)?;
        self.keep_alive = status != 101
            && framing != BodyFraming::UntilClose
            && connection_allows_reuse(&head)
            && !(head.header("transfer-encoding").is_some()
                && head.header("content-length").is_some());
        self.framing = Some(framing);
        self.state = match framing {
            BodyFraming::Empty => State::Length { remaining: 0 },
            BodyFraming::Length(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Chunked(ChunkedDecoder::new(ChunkedLimits {
                max_chunk_line: self.limits.max_chunk_line,
                max_trailer_bytes: self.limits.max_header_bytes,
                max_trailers: self.limits.max_headers,
                max_body: self.limits.max_body,
            })),
            BodyFraming::UntilClose => State::UntilClose,
        };
        Ok(Event::Head(head))
    }

    /// The body framing of `head` (RFC 9112 §6.3).
    fn framing_of(&self, head: &ResponseHead) -> Result<BodyFraming, HttpError> {
        let status = head.status;
        if self.head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(BodyFraming::Empty);
        }
        let mut codings: Vec<String> = Vec::new();
        let mut lengths: Vec<&[u8]> = Vec::new();
        for (name, value) in &head.headers {
            if name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in value.split(|&b| b == b',') {
                    let coding = trim(coding);
                    if !coding.is_empty() {
                        codings.push(String::from_utf8_lossy(coding).to_ascii_lowercase());
                    }
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                lengths.extend(value.split(|&b| b == b',').map(trim));
            }
        }
        if !codings.is_empty() {
            if codings.iter().filter(|c| *c == "chunked").count() > 1 {
                return Err(HttpError::BadHeader(
                    "chunked applied more than once".to_string(),
                ));
            }
            return Ok(match codings.last().map(String::as_str) {
                Some("chunked") => BodyFraming::Chunked,
                _ => BodyFraming::UntilClose,
            });
        }
        if lengths.is_empty() {
            return Ok(BodyFraming::UntilClose);
        }
        let mut length: Option<u64> = None;
        for text in lengths {
            let n = parse_decimal(text).ok_or_else(|| {
                HttpError::BadHeader(format!("invalid Content-Length {:?}", excerpt(text)))
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadHeader(
                    "conflicting Content-Length values".to_string(),
                ));
            }
            length = Some(n);
        }
        match length {
            Some(n) if n > self.limits.max_body => Err(HttpError::BodyTooLarge {
                limit: self.limits.max_body,
            }),
            Some(0) | None => Ok(BodyFraming::Empty),
            Some(n) => Ok(BodyFraming::Length(n)),
        }
    }
}

/// Whether the `Connection` header and the version allow another request.
fn connection_allows_reuse(head: &ResponseHead) -> bool {
    let (close, keep_alive) = connection_options(
        head.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .map(|(_, value)| value.as_slice()),
    );
    if close {
        return false;
    }
    head.version >= 1 || keep_alive
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a whole response parses to, with the body joined.
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        interim: Vec<u16>,
        head: Option<ResponseHead>,
        body: Vec<u8>,
        trailers: Vec<Header>,
        ended: bool,
        rest: Vec<u8>,
    }

    /// Feeds `pieces` one after another, then EOF if `eof`.
    fn run(
        limits: ParserLimits,
        head_request: bool,
        pieces: &[&[u8]],
        eof: bool,
    ) -> Result<Parsed, HttpError> {
        let mut p = ResponseParser::with_limits(limits);
        p.set_head_request(head_request);
        let mut out = Parsed {
            interim: vec![],
            head: None,
            body: vec![],
            trailers: vec![],
            ended: false,
            rest: vec![],
        };
        let record = |ev: Event<'_>, out: &mut Parsed| match ev {
            Event::Informational(h) => out.interim.push(h.status),
            Event::Head(h) => {
                assert!(out.head.is_none(), "two heads");
                out.head = Some(h)
            }
            Event::Data(d) => {
                assert!(!d.is_empty(), "empty data event");
                assert!(!out.ended);
                out.body.extend_from_slice(d)
            }
            Event::Trailers(t) => out.trailers = t,
            Event::End => {
                assert!(!out.ended, "two ends");
                out.ended = true
            }
        };
        for piece in pieces {
            let mut input: &[u8] = piece;
            while let Some(ev) = p.parse(&mut input)? {
                record(ev, &mut out);
            }
            if out.ended {
                out.rest.extend_from_slice(input);
            } else {
                assert!(input.is_empty(), "input left while not done");
            }
        }
        if eof {
            if let Some(ev) = p.finish()? {
                record(ev, &mut out);
            }
        }
        Ok(out)
    }

    /// Every way to cut `input` in two and in three, and byte by byte: all
    /// must give the same result as the whole.
    fn all_chunkings(
        limits: ParserLimits,
        head_request: bool,
        input: &[u8],
        eof: bool,
    ) -> Result<Parsed, HttpError> {
        let whole = run(limits, head_request, &[input], eof);
        let same = |other: Result<Parsed, HttpError>, how: &str| match (&whole, &other) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{how}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{how}"),
            _ => panic!("{how}: {whole:?} vs {other:?}"),
        };
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        same(run(limits, head_request, &bytes, eof), "byte by byte");
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            same(
                run(limits, head_request, &[a, b], eof),
                &format!("split at {i}"),
            );
        }
        if input.len() <= 120 {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let pieces = [&input[..i], &input[i..j], &input[j..]];
                    same(
                        run(limits, head_request, &pieces, eof),
                        &format!("split at {i}, {j}"),
                    );
                }
            }
        }
        whole
    }

    fn ok(input: &[u8]) -> Parsed {
        all_chunkings(ParserLimits::default(), false, input, false).expect("parses")
    }

    fn err(input: &[u8]) -> HttpError {
        all_chunkings(ParserLimits::default(), false, input, true).expect_err("fails")
    }

    #[test]
    fn content_length() {
        let p = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let head = p.head.unwrap();
        assert_eq!(
            (head.version, head.status, head.reason.as_str()),
            (1, 200, "OK")
        );
        assert_eq!(head.header("x-a"), Some(&b"b"[..]));
        assert_eq!(head.header("content-LENGTH"), Some(&b"5"[..]));
        assert_eq!(p.body, b"hello");
        assert!(p.ended);
        assert!(p.rest.is_empty());
    }

    #[test]
    fn bytes_after_the_response_are_left_in_the_input() {
        let p = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1");
        assert_eq!(p.body, b"hi");
        assert_eq!(p.rest, b"HTTP/1.1");
    }

    #[test]
    fn zero_length_and_leading_blank_lines() {
        let p = ok(b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(p.head.unwrap().status, 200);
        assert!(p.body.is_empty() && p.ended);
    }

    #[test]
    fn bare_lf_head() {
        let p = ok(b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc");
        assert_eq!(p.body, b"abc");
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let p = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;name=value\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\
            Expires: never\r\nX-Sum: 31\r\n\r\nnext",
        );
        assert_eq!(p.body, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(
            p.trailers,
            vec![
                ("Expires".to_string(), b"never".to_vec()),
                ("X-Sum".to_string(), b"31".to_vec())
            ]
        );
        assert!(p.ended);
        assert_eq!(p.rest, b"next");
    }

    #[test]
    fn chunked_without_trailers() {
        let p = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        assert_eq!(p.body, b"abc");
        assert!(p.trailers.is_empty() && p.ended && p.rest.is_empty());
    }

    #[test]
    fn close_delimited() {
        let input = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil the end";
        let p = all_chunkings(ParserLimits::default(), false, input, true).unwrap();
        assert_eq!(p.body, b"until the end");
        assert!(p.ended);
        // Without EOF it never ends.
        assert!(!ok(input).ended);
        // A transfer coding other than chunked is also read until the close.
        let p = all_chunkings(
            ParserLimits::default(),
            false,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
            true,
        )
        .unwrap();
        assert_eq!(p.body, b"zz");
    }

    #[test]
    fn no_body_for_head_204_304_and_1xx() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let p = all_chunkings(ParserLimits::default(), true, input, false).unwrap();
        assert!(p.ended && p.body.is_empty());
        for status in ["204 No Content", "304 Not Modified"] {
            let input = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            let p = ok(input.as_bytes());
            assert!(p.ended && p.body.is_empty(), "{status}");
        }
        let p = ok(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(p.interim, vec![100, 103]);
        assert_eq!(p.head.unwrap().status, 200);
        assert_eq!(p.body, b"ok");
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
            ),
        ];
        for (input, expected) in cases {
            let mut p = ResponseParser::new();
            let mut input: &[u8] = input;
            while let Some(ev) = p.parse(&mut input).unwrap() {
                if matches!(ev, Event::Head(_)) {
                    break;
                }
            }
            assert_eq!(
                p.keep_alive(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn reset_parses_the_next_response() {
        let mut p = ResponseParser::new();
        let mut input: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 204 No\r\n\r\n";
        let mut events = 0;
        while let Some(ev) = p.parse(&mut input).unwrap() {
            events += 1;
            if ev == Event::End {
                break;
            }
        }
        assert_eq!(events, 3);
        assert!(p.is_done());
        assert_eq!(p.parse(&mut input).unwrap(), None);
        p.reset(false);
        assert!(matches!(p.parse(&mut input).unwrap(), Some(Event::Head(h)) if h.status == 204));
        assert_eq!(p.parse(&mut input).unwrap(), Some(Event::End));
    }

    #[test]
    fn bad_status_lines() {
        for input in [
            &b"HTTP/2.0 200 OK\r\n\r\n"[..],
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(err(input), HttpError::BadStatusLine(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bad_headers() {
        for input in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                matches!(err(input), HttpError::BadHeader(_)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // Repeated equal lengths are fine.
        let p = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab");
        assert_eq!(p.body, b"ab");
    }

    #[test]
    fn invalid_chunk_sizes() {
        for chunks in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b" 5\r\n",
            b"5\n",
            b"ffffffffffffffffff\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\r\nabc\n0\r\n\r\n",
        ] {
            let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(chunks);
            assert!(
                matches!(err(&input), HttpError::InvalidChunkSize(_)),
                "{:?}",
                String::from_utf8_lossy(chunks)
            );
        }
    }

    #[test]
    fn chunk_size_line_limit() {
        let limits = ParserLimits {
            max_chunk_line: 16,
            ..ParserLimits::default()
        };
        let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(b"1;ext=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\na\r\n0\r\n\r\n");
        let e = all_chunkings(limits, false, &input, true).unwrap_err();
        assert!(matches!(e, HttpError::InvalidChunkSize(_)), "{e}");
        // Right at the limit is fine.
        let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(b"1;ext=aaaaaaaa\r\na\r\n0\r\n\r\n");
        assert_eq!(
            all_chunkings(limits, false, &input, true).unwrap().body,
            b"a"
        );
    }

    #[test]
    fn header_limits() {
        let limits = ParserLimits {
            max_header_bytes: 64,
            max_headers: 3,
            ..ParserLimits::default()
        };
        let fits = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nContent-Length: 0\r\n\r\n";
        // 4 fields > 3.
        let e = all_chunkings(limits, false, fits, true).unwrap_err();
        assert!(matches!(e, HttpError::TooManyHeaders { limit: 3 }), "{e}");
        let limits = ParserLimits {
            max_header_bytes: fits.len(),
            ..ParserLimits::default()
        };
        assert!(all_chunkings(limits, false, fits, true).unwrap().ended);
        let limits = ParserLimits {
            max_header_bytes: fits.len() - 1,
            ..ParserLimits::default()
        };
        let e = all_chunkings(limits, false, fits, true).unwrap_err();
        assert!(matches!(e, HttpError::HeaderTooLarge { .. }), "{e}");
        // A head that never ends is refused at the limit, not buffered.
        let mut p = ResponseParser::with_limits(ParserLimits {
            max_header_bytes: 1024,
            ..ParserLimits::default()
        });
        let junk = vec![b'a'; 600];
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nX: ";
        assert_eq!(p.parse(&mut input).unwrap(), None);
        let mut input: &[u8] = &junk;
        assert_eq!(p.parse(&mut input).unwrap(), None);
        let mut input: &[u8] = &junk;
        assert!(matches!(
            p.parse(&mut input),
            Err(HttpError::HeaderTooLarge { limit: 1024 })
        ));
        assert_eq!(p.buffered_len(), 0);
    }

    #[test]
    fn trailer_limits() {
        let limits = ParserLimits {
            max_header_bytes: 64,
            ..ParserLimits::default()
        };
        let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
        input.extend_from_slice(format!("X: {}\r\n\r\n", "y".repeat(100)).as_bytes());
        let e = all_chunkings(limits, false, &input, true).unwrap_err();
        assert!(matches!(e, HttpError::HeaderTooLarge { limit: 64 }), "{e}");
    }

    #[test]
    fn body_limits() {
        let limits = ParserLimits {
            max_body: 10,
            ..ParserLimits::default()
        };
        // Announced too large: refused at the head.
        let mut p = ResponseParser::with_limits(limits);
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\nxx";
        assert!(matches!(
            p.parse(&mut input),
            Err(HttpError::BodyTooLarge { limit: 10 })
        ));
        // Exactly at the limit is fine, one more is not.
        for (input, fits) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"[..], true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", false),
            (b"HTTP/1.1 200 OK\r\n\r\n0123456789", true),
            (b"HTTP/1.1 200 OK\r\n\r\n0123456789a", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n56789a\r\n0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
                false,
            ),
        ] {
            let r = all_chunkings(limits, false, input, true);
            match r {
                Ok(p) => assert!(fits && p.ended && p.body.len() == 10),
                Err(e) => assert!(!fits && matches!(e, HttpError::BodyTooLarge { limit: 10 })),
            }
        }
    }

    #[test]
    fn closed_early() {
        assert!(matches!(err(b""), HttpError::ClosedBeforeResponse(_)));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\n"),
            HttpError::ClosedBeforeResponse(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            HttpError::ClosedMidBody {
                received: 3,
                expected: Some(10)
            }
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            HttpError::ClosedMidBody {
                received: 2,
                expected: None
            }
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"),
            HttpError::ClosedMidBody { .. }
        ));
    }

    #[test]
    fn errors_are_sticky() {
        let mut p = ResponseParser::new();
        let mut input: &[u8] = b"nonsense\r\n\r\n";
        let first = p.parse(&mut input).unwrap_err().to_string();
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(p.parse(&mut input).unwrap_err().to_string(), first);
        assert_eq!(p.finish().unwrap_err().to_string(), first);
    }
}
