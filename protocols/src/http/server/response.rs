//! Writing a [`Response`] as the answer to a request: status line, header
//! fields, framing (`Content-Length` or `chunked`), and the body unless the
//! request was `HEAD`.
//!
//! The handler's `Content-Length`, `Transfer-Encoding` and `Connection`
//! fields are the server's business and are replaced:
//!
//! - a response with `Transfer-Encoding: chunked` (to an HTTP/1.1 request)
//!   is sent chunked, its body in chunks of at most [`CHUNK_SIZE`] bytes,
//!   then its [`trailers`](Response::trailers); to an HTTP/1.0 request it is
//!   sent with `Content-Length` (and without trailers);
//! - any other response gets `Content-Length`; 204 and 304 get no body and
//!   no length (RFC 9110 §8.6);
//! - `Connection: close` when the connection closes after it,
//!   `Connection: keep-alive` to an HTTP/1.0 client that asked for it.
//!
//! `Date` (from the system clock) and `Server: gyre/0.1` are added unless
//! the response has its own. A field whose name is not a token or whose
//! value holds CR, LF or NUL is dropped (logged), never written: a handler
//! cannot split the response. A status outside 200..=999 becomes a 500
//! (logged): interim responses are the server's (`100 Continue`).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::message::{Response, USER_AGENT};
use crate::http::wire::is_token;

/// The largest chunk a chunked response body is cut into: 16 KiB.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// How the answer goes out, as the request and the connection decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AnswerContext {
    /// The request was `HEAD`: the head only.
    pub head_only: bool,
    /// The request's minor version.
    pub version: u8,
    /// The connection closes after this answer.
    pub close: bool,
}

/// The reason phrase of `status` (RFC 9110 §15), or `""` for codes
/// without a registered one.
///
/// ```
/// use gyre_protocols::http::server::reason_phrase;
///
/// assert_eq!(reason_phrase(404), "Not Found");
/// assert_eq!(reason_phrase(599), "");
/// ```
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A plain-text error response: `status`, and `message` as the body.
pub(crate) fn plain_error(status: u16, message: &str) -> Response {
    Response::new(status)
        .with_header("Content-Type", "text/plain; charset=utf-8")
        .with_body(format!("{status} {}: {message}\n", reason_phrase(status)))
}

/// The bytes of `response` answering a request, as `ctx` says.
pub(crate) fn serialize(response: &Response, ctx: AnswerContext) -> Vec<u8> {
    let status = if (200..=999).contains(&response.status) {
        response.status
    } else {
        log::error!(
            "an HTTP handler answered status {}, not a final status: sending 500",
            response.status
        );
        500
    };
    let reason = if status == response.status
        && !response.reason.is_empty()
        && response
            .reason
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        response.reason.as_str()
    } else {
        reason_phrase(status)
    };
    let no_body = status == 204 || status == 304;
    let chunked = !no_body
        && ctx.version >= 1
        && response.header_all("transfer-encoding").any(|v| {
            v.split(|&b| b == b',')
                .any(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
    let mut out = Vec::with_capacity(
        256 + if ctx.head_only {
            0
        } else {
            response.body.len() + 64
        },
    );
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    let (mut has_date, mut has_server) = (false, false);
    for (name, value) in &response.headers {
        if !valid_field(name, value) {
            continue;
        }
        if ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case("date");
        has_server |= name.eq_ignore_ascii_case("server");
        put_field(&mut out, name.as_bytes(), value);
    }
    if !has_date {
        put_field(&mut out, b"Date", http_date(SystemTime::now()).as_bytes());
    }
    if !has_server {
        put_field(&mut out, b"Server", USER_AGENT.as_bytes());
    }
    if ctx.close {
        put_field(&mut out, b"Connection", b"close");
    } else if ctx.version == 0 {
        put_field(&mut out, b"Connection", b"keep-alive");
    }
    if no_body {
        out.extend_from_slice(b"\r\n");
        return out;
    }
    if chunked {
        put_field(&mut out, b"Transfer-Encoding", b"chunked");
        out.extend_from_slice(b"\r\n");
        if ctx.head_only {
            return out;
        }
        for chunk in response.body.chunks(CHUNK_SIZE) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in &response.trailers {
            if valid_field(name, value) {
                put_field(&mut out, name.as_bytes(), value);
            }
        }
        out.extend_from_slice(b"\r\n");
        return out;
    }
    put_field(
        &mut out,
        b"Content-Length",
        response.body.len().to_string().as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    if !ctx.head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a field may be written; a bad one is logged.
fn valid_field(name: &str, value: &[u8]) -> bool {
    if !is_token(name.as_bytes()) {
        log::warn!("an HTTP handler's field name {name:?} is not a token: dropped");
        return false;
    }
    if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        log::warn!("an HTTP handler's field {name:?} holds CR, LF or NUL: dropped");
        return false;
    }
    true
}

/// `time` as an IMF-fixdate (RFC 9110 §5.6.7):
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1).clamp(0, 11) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(response: &Response, ctx: AnswerContext) -> String {
        String::from_utf8(serialize(response, ctx)).unwrap()
    }

    const KEEP: AnswerContext = AnswerContext {
        head_only: false,
        version: 1,
        close: false,
    };

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn content_length_head_and_close() {
        let r = Response::new(200)
            .with_header("Date", "x")
            .with_header("Content-Length", "999")
            .with_body("hello");
        assert_eq!(
            text(&r, KEEP),
            "HTTP/1.1 200 OK\r\nDate: x\r\nServer: gyre/0.1\r\nContent-Length: 5\r\n\r\nhello"
        );
        let head = text(
            &r,
            AnswerContext {
                head_only: true,
                close: true,
                ..KEEP
            },
        );
        assert!(
            head.ends_with("Connection: close\r\nContent-Length: 5\r\n\r\n"),
            "{head}"
        );
        let old = text(&r, AnswerContext { version: 0, ..KEEP });
        assert!(old.contains("Connection: keep-alive\r\n"), "{old}");
        let empty = text(
            &Response::new(204).with_header("Date", "x").with_body("no"),
            KEEP,
        );
        assert_eq!(
            empty,
            "HTTP/1.1 204 No Content\r\nDate: x\r\nServer: gyre/0.1\r\n\r\n"
        );
    }

    #[test]
    fn chunked_with_trailers() {
        let mut r = Response::new(200)
            .with_header("Date", "x")
            .with_header("Transfer-Encoding", "chunked")
            .with_body(vec![b'a'; CHUNK_SIZE + 1]);
        r.trailers.push(("X-Sum".into(), b"1".to_vec()));
        let bytes = serialize(&r, KEEP);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nDate: x\r\nServer: gyre/0.1\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n"));
        assert!(
            text.ends_with("\r\n1\r\na\r\n0\r\nX-Sum: 1\r\n\r\n"),
            "{}",
            &text[text.len() - 40..]
        );
        // To HTTP/1.0: a length instead.
        let old = String::from_utf8(serialize(&r, AnswerContext { version: 0, ..KEEP })).unwrap();
        assert!(old.contains(&format!("Content-Length: {}\r\n", CHUNK_SIZE + 1)));
        assert!(!old.contains("chunked") && !old.contains("X-Sum"));
    }

    #[test]
    fn bad_fields_and_statuses_are_not_written() {
        let r = Response::new(100)
            .with_header("Date", "x")
            .with_header("X-Bad", "a\r\nInjected: yes")
            .with_header("Bad Name", "v")
            .with_body("b");
        assert_eq!(
            text(&r, KEEP),
            "HTTP/1.1 500 Internal Server Error\r\nDate: x\r\nServer: gyre/0.1\r\nContent-Length: 1\r\n\r\nb"
        );
        let mut custom = Response::new(299).with_header("Date", "x");
        custom.reason = "Fine\r\nX: y".into();
        assert!(text(&custom, KEEP).starts_with("HTTP/1.1 299 \r\n"));
    }
}
