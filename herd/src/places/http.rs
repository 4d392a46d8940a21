//! The local Places service's HTTP/1.1 side, sans-IO: request heads parsed
//! with httparse, within limits, and the replies to them.

use super::convert::{error_answer, to_google_json, INVALID_REQUEST};
use super::search::answer_query;
use super::NEARBY_PATH;

/// Largest request head (request line and header fields) accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields accepted.
pub(crate) const MAX_HEADERS: usize = 32;
/// Largest request body accepted (and ignored: the service only reads its
/// query string).
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024;

/// A complete, acceptable request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Whether the connection stays open after the reply.
    pub keep_alive: bool,
    /// Bytes of the head, to drop from the buffer.
    pub head_len: usize,
    /// Bytes of body that follow the head (to be skipped).
    pub body_len: usize,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed {
    /// Not a complete head yet.
    Partial,
    /// A complete head.
    Head(RequestHead),
    /// A request that cannot be served: send this reply and close.
    Bad(Reply),
}

/// Parses the request head at the start of `buf`.
pub(crate) fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Parsed::Bad(Reply::error(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => {
            return Parsed::Bad(Reply::error(431, "request head too large"))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(Reply::error(431, "too many header fields"))
        }
        Err(e) => return Parsed::Bad(Reply::error(400, &format!("malformed request: {e}"))),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parsed::Bad(Reply::error(400, "malformed request line"));
    };
    let mut body_len: Option<usize> = None;
    let mut close = false;
    let mut keep_alive = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (length, body_len) {
                (None, _) => return Parsed::Bad(Reply::error(400, "invalid Content-Length")),
                (Some(n), Some(m)) if n != m => {
                    return Parsed::Bad(Reply::error(400, "conflicting Content-Length fields"))
                }
                (Some(n), _) => body_len = Some(n),
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(Reply::error(
                400,
                "request bodies with Transfer-Encoding are not supported",
            ));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY_BYTES {
        return Parsed::Bad(Reply::error(413, "request body too large"));
    }
    Parsed::Head(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        keep_alive: !close && (version == 1 || keep_alive),
        head_len,
        body_len,
    })
}

/// A reply: status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// The status code.
    pub status: u16,
    /// The JSON body (no trailing newline).
    pub body: String,
}

impl Reply {
    /// An error reply whose body is a legacy-shaped `INVALID_REQUEST`
    /// (`NOT_FOUND` for 404) with `message`.
    pub fn error(status: u16, message: &str) -> Reply {
        let kind = if status == 404 {
            "NOT_FOUND"
        } else {
            INVALID_REQUEST
        };
        Reply {
            status,
            body: to_google_json(&error_answer(kind, message)),
        }
    }

    /// The reply's bytes: the head, then the body unless `head_only`.
    pub fn to_bytes(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: gyre-local-places\r\n\
             Content-Type: application/json; charset=UTF-8\r\n\
             Content-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        if self.status == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The reply to a complete request.
pub(crate) fn route(head: &RequestHead) -> Reply {
    let (path, query) = head
        .target
        .split_once('?')
        .unwrap_or((head.target.as_str(), ""));
    if path != NEARBY_PATH {
        let shown: String = path.chars().take(100).collect();
        return Reply::error(
            404,
            &format!(
                "no such endpoint {shown:?}: try {NEARBY_PATH}?location=LAT,LNG&radius=METRES"
            ),
        );
    }
    if head.method != "GET" && head.method != "HEAD" {
        return Reply::error(405, &format!("method {} not allowed: use GET", head.method));
    }
    Reply {
        status: 200,
        body: to_google_json(&answer_query(query)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply body's `status`.
    fn status_of(reply: &Reply) -> String {
        let value: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        value["status"].as_str().unwrap_or("").to_string()
    }

    fn head(bytes: &[u8]) -> RequestHead {
        match parse_request(bytes) {
            Parsed::Head(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn bad_status(bytes: &[u8]) -> u16 {
        match parse_request(bytes) {
            Parsed::Bad(reply) => reply.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_heads() {
        let request = b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\n\r\nrest";
        let h = head(request);
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/x?a=1");
        assert!(h.keep_alive);
        assert_eq!(h.head_len, request.len() - b"rest".len());
        assert_eq!(h.body_len, 0);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n").body_len,
            12
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost:"), Parsed::Partial);
    }

    #[test]
    fn refuses_bad_requests() {
        assert_eq!(
            bad_status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            400
        );
        assert_eq!(
            bad_status(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            400
        );
        assert_eq!(
            bad_status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            bad_status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            bad_status(b"GET / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
            413
        );
        assert_eq!(bad_status(b"GE\x01T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad_status(b"hello\r\n\r\n"), 400);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(bad_status(&many), 431);
        let mut huge = b"GET /".to_vec();
        huge.resize(MAX_HEAD_BYTES + 10, b'a');
        assert_eq!(bad_status(&huge), 431);
    }

    #[test]
    fn routes() {
        let get = |target: &str, method: &str| {
            route(&RequestHead {
                method: method.into(),
                target: target.into(),
                keep_alive: true,
                head_len: 0,
                body_len: 0,
            })
        };
        let ok = get(
            "/maps/api/place/nearbysearch/json?location=34.0729,-118.4422&radius=100",
            "GET",
        );
        assert_eq!(ok.status, 200);
        assert_eq!(status_of(&ok), "OK");
        let invalid = get("/maps/api/place/nearbysearch/json?radius=100", "GET");
        assert_eq!(invalid.status, 200);
        assert_eq!(status_of(&invalid), "INVALID_REQUEST");
        let missing = get("/nope", "GET");
        assert_eq!(missing.status, 404);
        assert_eq!(status_of(&missing), "NOT_FOUND");
        let post = get("/maps/api/place/nearbysearch/json", "POST");
        assert_eq!(post.status, 405);
        assert!(String::from_utf8(post.to_bytes(false, false))
            .unwrap()
            .contains("Allow: GET, HEAD\r\n"));
    }

    #[test]
    fn reply_bytes() {
        let reply = Reply {
            status: 200,
            body: "{}".into(),
        };
        assert_eq!(
            String::from_utf8(reply.to_bytes(false, true)).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: gyre-local-places\r\n\
             Content-Type: application/json; charset=UTF-8\r\n\
             Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
        );
        let head_only = String::from_utf8(reply.to_bytes(true, false)).unwrap();
        assert!(head_only.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"));
        assert_eq!(status_of(&Reply::error(400, "x")), "INVALID_REQUEST");
    }
}
