//! [`Request`] and [`Response`]: what goes to [`HttpClient::request`]
//! and what comes back.
//!
//! [`HttpClient::request`]: super::HttpClient::request

use std::borrow::Cow;

use super::error::HttpError;
use super::parser::{find_header, Header};
use super::url::Url;
use super::wire::is_token;

/// The `User-Agent` sent unless the request sets its own.
pub const USER_AGENT: &str = "gyre/0.1";

/// An HTTP request: method, URL, header fields, body.
///
/// The client adds `Host`, `User-Agent: gyre/0.1` and `Connection:
/// keep-alive` unless the request has its own (`Connection: close` is
/// honoured: the connection is not kept), and always sets `Content-Length`
/// from the body (for a request without a body, only when the method
/// usually has one). `Content-Length` and `Transfer-Encoding` given here
/// are ignored.
///
/// ```
/// use gyre_protocols::http::Request;
///
/// let req = Request::post("http://example.com/api")
///     .header("Content-Type", "text/plain")
///     .body("hi");
/// assert_eq!(req.method, "POST");
/// assert_eq!(req.body, b"hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, such as `GET`.
    pub method: String,
    /// The absolute `http://` or `https://` URL.
    pub url: String,
    /// Header fields to send, in order.
    pub headers: Vec<Header>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `method` for `url`, no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Request {
        Request::new("HEAD", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new("PUT", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new("DELETE", url)
    }

    /// Adds a header field.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Request {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Request {
        self.header("Content-Type", "application/json")
            .body(value.to_string())
    }

    /// Whether the method is idempotent (RFC 9110 §9.2.2), so the request
    /// may be sent again when a kept-alive connection turned out closed.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }
}

/// A request checked and serialized, ready to send (possibly twice).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub url: Url,
    pub head_request: bool,
    pub idempotent: bool,
    /// The request asked for `Connection: close`.
    pub close: bool,
    pub bytes: Vec<u8>,
}

impl Request {
    /// Checks the request and writes its head and body.
    pub(crate) fn prepare(&self) -> Result<Prepared, HttpError> {
        let url = Url::parse(&self.url)?;
        if !is_token(self.method.as_bytes()) {
            return Err(HttpError::InvalidRequest(format!(
                "method {:?} is not a token",
                self.method
            )));
        }
        let mut has_host = false;
        let mut has_agent = false;
        let mut has_connection = false;
        let mut close = false;
        for (name, value) in &self.headers {
            if !is_token(name.as_bytes()) {
                return Err(HttpError::InvalidRequest(format!(
                    "header name {name:?} is not a token"
                )));
            }
            if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(HttpError::InvalidRequest(format!(
                    "the value of header {name:?} contains CR, LF or NUL"
                )));
            }
            has_host |= name.eq_ignore_ascii_case("host");
            has_agent |= name.eq_ignore_ascii_case("user-agent");
            if name.eq_ignore_ascii_case("connection") {
                has_connection = true;
                close |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        let mut bytes = Vec::with_capacity(256 + self.body.len());
        bytes.extend_from_slice(self.method.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(url.path_and_query().as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        if !has_host {
            bytes.extend_from_slice(b"Host: ");
            bytes.extend_from_slice(url.host_header().as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        if !has_agent {
            bytes.extend_from_slice(b"User-Agent: ");
            bytes.extend_from_slice(USER_AGENT.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        if !has_connection {
            bytes.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(b"\r\n");
        }
        let body_expected = matches!(self.method.as_str(), "POST" | "PUT" | "PATCH");
        if !self.body.is_empty() || body_expected {
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&self.body);
        Ok(Prepared {
            url,
            head_request: self.method == "HEAD",
            idempotent: self.is_idempotent(),
            close,
            bytes,
        })
    }
}

/// A complete response: status, headers, the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The minor HTTP version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The header fields, in order, names as sent.
    pub headers: Vec<Header>,
    /// The body (decoded from chunked; other transfer codings are left as
    /// they are).
    pub body: Vec<u8>,
    /// The trailer fields of a chunked body.
    pub trailers: Vec<Header>,
}

impl Response {
    /// A response with `status`, the standard reason phrase, HTTP/1.1, no
    /// fields and no body: what an [`HttpServer`](super::server::HttpServer)
    /// handler builds and returns.
    ///
    /// ```
    /// use gyre_protocols::http::Response;
    ///
    /// let r = Response::new(201)
    ///     .with_header("Location", "/things/7")
    ///     .with_json(&serde_json::json!({"id": 7}));
    /// assert_eq!(r.reason, "Created");
    /// assert_eq!(r.header_str("content-type"), Some("application/json"));
    /// assert_eq!(r.json().unwrap()["id"], 7);
    /// ```
    pub fn new(status: u16) -> Response {
        Response {
            status,
            reason: super::server::reason_phrase(status).to_string(),
            version: 1,
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Response {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn with_json(self, value: &serde_json::Value) -> Response {
        self.with_header("Content-Type", "application/json")
            .with_body(value.to_string())
    }

    /// Adds a trailer field (sent only with a chunked body:
    /// `Transfer-Encoding: chunked`).
    pub fn with_trailer(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Response {
        self.trailers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_a_get() {
        let p = Request::get("http://example.com:8080/a?b")
            .prepare()
            .unwrap();
        assert_eq!(
            String::from_utf8(p.bytes).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: gyre/0.1\r\n\
             Connection: keep-alive\r\n\r\n"
        );
        assert!(p.idempotent && !p.head_request && !p.close);
    }

    #[test]
    fn serializes_a_post_with_own_headers() {
        let p = Request::post("https://[::1]/x")
            .header("User-Agent", "me")
            .header("Connection", "close")
            .header("Content-Length", "999")
            .body("abc")
            .prepare()
            .unwrap();
        assert_eq!(
            String::from_utf8(p.bytes).unwrap(),
            "POST /x HTTP/1.1\r\nHost: [::1]\r\nUser-Agent: me\r\nConnection: close\r\n\
             Content-Length: 3\r\n\r\nabc"
        );
        assert!(p.close && !p.idempotent);
        let empty = Request::post("http://h/").prepare().unwrap();
        assert!(String::from_utf8(empty.bytes)
            .unwrap()
            .contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn json_body() {
        let r = Request::post("http://h/").json(&serde_json::json!({"a": 1}));
        assert_eq!(r.body, br#"{"a":1}"#);
        assert_eq!(
            r.headers,
            vec![("Content-Type".into(), b"application/json".to_vec())]
        );
    }

    #[test]
    fn refuses_bad_requests() {
        for req in [
            Request::new("GE T", "http://h/"),
            Request::new("", "http://h/"),
            Request::get("http://h/").header("X\r\nY", "z"),
            Request::get("http://h/").header("X", "a\r\nInjected: yes"),
            Request::get("ftp://h/"),
        ] {
            assert!(req.prepare().is_err(), "{req:?}");
        }
    }

    #[test]
    fn response_headers() {
        let r = Response {
            status: 200,
            reason: "OK".into(),
            version: 1,
            headers: vec![
                ("Set-Cookie".into(), b"a".to_vec()),
                ("set-cookie".into(), b"b".to_vec()),
                ("Content-Type".into(), b"text/plain".to_vec()),
            ],
            body: b"{\"x\": true}".to_vec(),
            trailers: vec![],
        };
        assert_eq!(r.header("SET-COOKIE"), Some(&b"a"[..]));
        assert_eq!(r.header_all("set-cookie").count(), 2);
        assert_eq!(r.header_str("content-type"), Some("text/plain"));
        assert_eq!(r.header("nope"), None);
        assert!(r.is_success());
        assert_eq!(r.json().unwrap()["x"], true);
    }
}
