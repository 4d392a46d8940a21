//! The HTTP client over real loopback sockets: against a raw-bytes gyre
//! server answering canned responses by path (plain and over TLS), and
//! against Python's own `http.server` wrapped in `ssl`.
//!
//! Every wait is `run_until` with a generous bound on the event that
//! matters; nothing sleeps and nothing asserts on timing.

#[path = "common/certs.rs"]
mod certs;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use certs::TestCa;
use gyre_protocols::http::{
    HttpClient, HttpClientConfig, HttpError, PoolConfig, Request, Response,
};
use gyre_protocols::tls;
use gyre_reactor::defer::{Cancelled, Deferred, Outcome};
use gyre_reactor::{factory_fn, ConnectionLost, ListeningPort, Protocol, Reactor, Transport};

const BOUND: Duration = Duration::from_secs(30);

// ----- the canned server ------------------------------------------------------

/// What the server saw, shared by all its connections.
#[derive(Default)]
struct Seen {
    accepts: usize,
    lost: usize,
    /// "METHOD /path" of every request, in order.
    requests: Vec<String>,
    /// Body bytes the streaming responses wrote.
    streamed: u64,
}

type Shared = Rc<RefCell<Seen>>;

/// A raw-bytes HTTP server protocol: reads request heads (and bodies with
/// Content-Length), answers by path.
struct Canned {
    reactor: Reactor,
    seen: Shared,
    transport: Option<Transport>,
    buf: Vec<u8>,
    /// Requests on this connection so far.
    requests_here: usize,
    alive: Rc<Cell<bool>>,
}

impl Canned {
    fn new(reactor: &Reactor, seen: &Shared) -> Canned {
        Canned {
            reactor: reactor.clone(),
            seen: seen.clone(),
            transport: None,
            buf: Vec::new(),
            requests_here: 0,
            alive: Rc::new(Cell::new(true)),
        }
    }

    fn respond(&mut self, method: &str, path: &str, body: Vec<u8>) {
        let Some(t) = self.transport.clone() else {
            return;
        };
        let path = path.split('?').next().unwrap_or("");
        match path {
            "/cl" => t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello"),
            "/chunked" => t.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
                  5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Checksum: abc\r\n\r\n",
            ),
            "/close" => {
                t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close");
                t.lose_connection();
            }
            "/head" => {
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
                if method != "HEAD" {
                    t.write(&[b'x'; 1000]);
                }
            }
            "/204" => t.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
            "/slow" => {
                let bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\none\r\n3\r\ntwo\r\n0\r\nX-Done: 1\r\n\r\n"
                    .to_vec();
                drip(self.reactor.clone(), t, self.alive.clone(), bytes, 0);
            }
            "/huge" | "/huge-chunked" => {
                let chunked = path == "/huge-chunked";
                if chunked {
                    t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                } else {
                    t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n");
                }
                let seen = self.seen.clone();
                stream(
                    self.reactor.clone(),
                    t,
                    self.alive.clone(),
                    seen,
                    104_857_600,
                    chunked,
                );
            }
            "/never" => {}
            "/midbody" => {
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
                t.lose_connection();
            }
            "/badchunk" => t.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nxyz\r\n",
            ),
            "/badstatus" => t.write(b"HTTP/1.1 2000 Whatever\r\n\r\n"),
            "/stale" if self.requests_here >= 2 => {
                // As if the server had closed the idle connection just as
                // the request went out: close without a byte of response.
                t.lose_connection();
            }
            "/stale" | "/keep" => {
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
            "/keep-then-close" => {
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // Closes the idle connection right after answering.
                t.lose_connection();
            }
            "/echo" => {
                t.write(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                t.write(&body);
            }
            _ => t.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        }
    }
}

impl Protocol for Canned {
    fn connection_made(&mut self, transport: Transport) {
        self.seen.borrow_mut().accepts += 1;
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if self.buf.len() < end + 4 + length {
                return;
            }
            let body = self.buf[end + 4..end + 4 + length].to_vec();
            self.buf.drain(..end + 4 + length);
            let mut words = head.lines().next().unwrap_or("").split(' ');
            let method = words.next().unwrap_or("").to_string();
            let path = words.next().unwrap_or("").to_string();
            self.requests_here += 1;
            self.seen
                .borrow_mut()
                .requests
                .push(format!("{method} {path}"));
            self.respond(&method, &path, body);
        }
    }

    fn connection_lost(&mut self, _reason: ConnectionLost) {
        self.alive.set(false);
        self.seen.borrow_mut().lost += 1;
    }
}

/// Writes `bytes[at..]` one byte per loop turn.
fn drip(reactor: Reactor, t: Transport, alive: Rc<Cell<bool>>, bytes: Vec<u8>, at: usize) {
    if !alive.get() || at >= bytes.len() {
        return;
    }
    t.write(&bytes[at..=at]);
    let r = reactor.clone();
    reactor.call_later(Duration::ZERO, move || drip(r, t, alive, bytes, at + 1));
}

/// Streams `left` body bytes in 64 KiB pieces, never more than 256 KiB
/// buffered, until done or the connection goes.
fn stream(
    reactor: Reactor,
    t: Transport,
    alive: Rc<Cell<bool>>,
    seen: Shared,
    mut left: u64,
    chunked: bool,
) {
    const PIECE: usize = 64 * 1024;
    let piece = [b'z'; PIECE];
    while alive.get() && !t.is_closing() && left > 0 && t.buffered_len() < 4 * PIECE {
        let n = PIECE.min(left as usize);
        if chunked {
            t.write(format!("{n:x}\r\n").as_bytes());
            t.write(&piece[..n]);
            t.write(b"\r\n");
        } else {
            t.write(&piece[..n]);
        }
        left -= n as u64;
        seen.borrow_mut().streamed += n as u64;
    }
    if !alive.get() || t.is_closing() || left == 0 {
        return;
    }
    let r = reactor.clone();
    let delay = if t.buffered_len() > 0 {
        Duration::from_millis(1)
    } else {
        Duration::ZERO
    };
    reactor.call_later(delay, move || stream(r, t, alive, seen, left, chunked));
}

// ----- helpers ------------------------------------------------------------------

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect("reactor")
}

/// A reactor with the canned server listening on a loopback port.
fn canned_server() -> (Reactor, ListeningPort, Shared) {
    let reactor = reactor();
    let seen = Shared::default();
    let (r, s) = (reactor.clone(), seen.clone());
    let port = reactor
        .listen_tcp(
            "127.0.0.1:0".parse().expect("addr"),
            factory_fn(move |_| Some(Canned::new(&r, &s))),
        )
        .expect("listen");
    (reactor, port, seen)
}

fn url(port: &ListeningPort, path: &str) -> String {
    format!("http://{}{path}", port.local_addr())
}

/// Runs the loop until `d` fires; its outcome.
fn wait<T>(reactor: &Reactor, d: &Deferred<T>) -> Outcome<T> {
    assert!(
        reactor.run_until(|| d.called(), BOUND).expect("run"),
        "the request did not complete within {BOUND:?}"
    );
    d.take_result().expect("a result")
}

fn ok(reactor: &Reactor, d: &Deferred<Response>) -> Response {
    match wait(reactor, d) {
        Ok(r) => r,
        Err(f) => panic!("request failed: {}", f.describe()),
    }
}

fn http_err(reactor: &Reactor, d: &Deferred<Response>) -> HttpError {
    match wait(reactor, d) {
        Ok(r) => panic!("expected an error, got {} {:?}", r.status, r.text()),
        Err(f) => f
            .downcast_ref::<HttpError>()
            .unwrap_or_else(|| panic!("not an HttpError: {}", f.describe()))
            .clone(),
    }
}

fn until(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    assert!(reactor.run_until(done, BOUND).expect("run"), "{what}");
}

// ----- 5: bodies, framings and failures against the canned server -----------

#[test]
fn content_length_body() {
    let (reactor, port, _) = canned_server();
    let client = HttpClient::new(&reactor);
    let r = ok(&reactor, &client.get(&url(&port, "/cl")));
    assert_eq!((r.status, r.reason.as_str(), r.version), (200, "OK", 1));
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-length"), Some(&b"5"[..]));
    assert_eq!(r.header_str("X-TEST"), Some("yes"));
}

#[test]
fn chunked_body_with_trailers() {
    let (reactor, port, _) = canned_server();
    let client = HttpClient::new(&reactor);
    let r = ok(&reactor, &client.get(&url(&port, "/chunked")));
    assert_eq!(r.body, b"hello, world");
    assert_eq!(
        r.trailers,
        vec![("X-Checksum".to_string(), b"abc".to_vec())]
    );
}

#[test]
fn close_delimited_body() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let r = ok(&reactor, &client.get(&url(&port, "/close")));
    assert_eq!(r.body, b"until the close");
    assert_eq!(r.header("content-length"), None);
    until(&reactor, "server sees the close", || {
        seen.borrow().lost == 1
    });
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn head_reads_no_body_and_keeps_the_connection() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let r = ok(
        &reactor,
        &client.request(Request::head(url(&port, "/head"))),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some(&b"1000"[..]));
    assert!(r.body.is_empty());
    // The connection is in step: a GET on it reads the 1000 bytes.
    let r = ok(&reactor, &client.get(&url(&port, "/head")));
    assert_eq!(r.body.len(), 1000);
    assert_eq!(seen.borrow().accepts, 1);
}

#[test]
fn no_content_204() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let r = ok(&reactor, &client.get(&url(&port, "/204")));
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // The Content-Length of a 204 is ignored: the next response parses.
    let r = ok(&reactor, &client.get(&url(&port, "/cl")));
    assert_eq!(r.body, b"hello");
    assert_eq!(seen.borrow().accepts, 1);
}

#[test]
fn response_one_byte_at_a_time() {
    let (reactor, port, _) = canned_server();
    let client = HttpClient::new(&reactor);
    let r = ok(&reactor, &client.get(&url(&port, "/slow")));
    assert_eq!(r.body, b"onetwo");
    assert_eq!(r.trailers, vec![("X-Done".to_string(), b"1".to_vec())]);
}

#[test]
fn huge_body_refused_by_the_size_limit() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    // Announced by Content-Length: refused at the head.
    let e = http_err(&reactor, &client.get(&url(&port, "/huge")));
    assert!(
        matches!(e, HttpError::BodyTooLarge { limit } if limit == 16 << 20),
        "{e}"
    );
    until(&reactor, "server sees the abort", || {
        seen.borrow().lost == 1
    });
    // Counted as it arrives (chunked): refused once past the limit.
    let e = http_err(&reactor, &client.get(&url(&port, "/huge-chunked")));
    assert!(matches!(e, HttpError::BodyTooLarge { .. }), "{e}");
    until(&reactor, "server sees the abort", || {
        seen.borrow().lost == 2
    });
    // The 100 MB were never sent, so never buffered.
    assert!(
        seen.borrow().streamed < 50 << 20,
        "{}",
        seen.borrow().streamed
    );
}

#[test]
fn a_server_that_never_answers_hits_the_request_timeout() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            request_timeout: Duration::from_millis(200),
            ..HttpClientConfig::default()
        },
    );
    let e = http_err(&reactor, &client.get(&url(&port, "/never")));
    assert!(matches!(e, HttpError::TimedOut(_)) && e.is_timeout(), "{e}");
    until(&reactor, "server sees the abort", || {
        seen.borrow().lost == 1
    });
}

#[test]
fn a_server_closing_mid_body_is_an_error() {
    let (reactor, port, _) = canned_server();
    let client = HttpClient::new(&reactor);
    let e = http_err(&reactor, &client.get(&url(&port, "/midbody")));
    assert!(
        matches!(
            e,
            HttpError::ClosedMidBody {
                received: 10,
                expected: Some(100)
            }
        ),
        "{e}"
    );
}

#[test]
fn an_invalid_chunk_size_is_an_error() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let e = http_err(&reactor, &client.get(&url(&port, "/badchunk")));
    assert!(matches!(e, HttpError::InvalidChunkSize(_)), "{e}");
    until(&reactor, "server sees the abort", || {
        seen.borrow().lost == 1
    });
}

#[test]
fn a_bad_status_line_is_an_error() {
    let (reactor, port, _) = canned_server();
    let client = HttpClient::new(&reactor);
    let e = http_err(&reactor, &client.get(&url(&port, "/badstatus")));
    assert!(matches!(e, HttpError::BadStatusLine(_)), "{e}");
}

#[test]
fn post_json_and_a_404() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let value = serde_json::json!({"name": "gyre", "n": [1, 2, 3]});
    let r = ok(&reactor, &client.post_json(&url(&port, "/echo"), &value));
    assert_eq!(r.json().expect("json"), value);
    let r = ok(&reactor, &client.get(&url(&port, "/nope")));
    assert_eq!(r.status, 404);
    assert!(!r.is_success());
    assert_eq!(seen.borrow().requests, vec!["POST /echo", "GET /nope"]);
}

#[test]
fn connect_failure_and_bad_urls_are_errors() {
    let reactor = reactor();
    let client = HttpClient::new(&reactor);
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let e = http_err(&reactor, &client.get(&format!("http://{addr}/")));
    assert!(matches!(e, HttpError::Connect { .. }), "{e}");
    for bad in [
        "ftp://example.com/",
        "http://exa mple.com/",
        "http://[::1/",
        "nope",
    ] {
        let e = http_err(&reactor, &client.get(bad));
        assert!(matches!(e, HttpError::InvalidUrl { .. }), "{bad}: {e}");
    }
}

#[test]
fn ipv6_literal() {
    let reactor = reactor();
    let seen = Shared::default();
    let (r, s) = (reactor.clone(), seen.clone());
    let Ok(port) = reactor.listen_tcp(
        "[::1]:0".parse().expect("addr"),
        factory_fn(move |_| Some(Canned::new(&r, &s))),
    ) else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    let client = HttpClient::new(&reactor);
    let d = client.get(&format!("http://[::1]:{}/cl", port.local_addr().port()));
    assert_eq!(ok(&reactor, &d).body, b"hello");
}

// ----- 6: keep-alive pool ---------------------------------------------------

#[test]
fn sequential_requests_reuse_one_connection() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let first = ok(&reactor, &client.get(&url(&port, "/keep")));
    assert_eq!(client.idle_connections(), 1);
    let second = ok(&reactor, &client.get(&url(&port, "/cl")));
    assert_eq!(
        (first.body.as_slice(), second.body.as_slice()),
        (&b"ok"[..], &b"hello"[..])
    );
    assert_eq!(seen.borrow().accepts, 1);
    assert_eq!(client.stats().connections_reused, 1);
    assert_eq!(client.stats().connections_opened, 1);
}

#[test]
fn a_stale_pooled_connection_is_retried_once() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    assert_eq!(ok(&reactor, &client.get(&url(&port, "/stale"))).body, b"ok");
    // The server closes the pooled connection as the second request
    // arrives, without answering: sent again on a new connection.
    assert_eq!(ok(&reactor, &client.get(&url(&port, "/stale"))).body, b"ok");
    assert_eq!(seen.borrow().accepts, 2);
    assert_eq!(client.stats().retries, 1);
    assert_eq!(seen.borrow().requests, vec!["GET /stale"; 3]);
}

#[test]
fn a_stale_connection_is_not_retried_for_a_post() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    ok(&reactor, &client.get(&url(&port, "/stale")));
    let e = http_err(
        &reactor,
        &client.request(Request::post(url(&port, "/stale")).body("x")),
    );
    assert!(matches!(e, HttpError::ClosedBeforeResponse(_)), "{e}");
    assert_eq!(seen.borrow().accepts, 1);
    assert_eq!(client.stats().retries, 0);
}

#[test]
fn a_connection_the_server_closed_while_idle_is_not_used() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    ok(&reactor, &client.get(&url(&port, "/keep-then-close")));
    until(&reactor, "the idle connection closes", || {
        seen.borrow().lost == 1 && client.idle_connections() == 0
    });
    assert_eq!(ok(&reactor, &client.get(&url(&port, "/cl"))).body, b"hello");
    assert_eq!(seen.borrow().accepts, 2);
    assert_eq!(client.stats().retries, 0);
}

#[test]
fn idle_connections_expire_and_the_pool_is_bounded() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            pool: PoolConfig {
                max_idle_per_host: 2,
                idle_timeout: Duration::from_millis(100),
                ..PoolConfig::default()
            },
            ..HttpClientConfig::default()
        },
    );
    let all: Vec<_> = (0..3).map(|_| client.get(&url(&port, "/keep"))).collect();
    for d in &all {
        ok(&reactor, d);
    }
    assert_eq!(seen.borrow().accepts, 3);
    // Three done, two kept: the third was closed.
    until(&reactor, "one closed", || seen.borrow().lost >= 1);
    assert!(client.idle_connections() <= 2);
    // The kept ones expire.
    until(&reactor, "idle connections expire", || {
        seen.borrow().lost == 3 && client.idle_connections() == 0
    });
}

// ----- 7: cancellation ----------------------------------------------------

/// Issue 10: the connections per host are limited, not only the idle ones;
/// requests past the limit wait (bounded) and get a connection when one
/// frees up; past the wait bound they fail at once with `TooManyWaiting`.
#[test]
fn connections_per_host_are_limited_and_waiting_is_bounded() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            pool: PoolConfig {
                max_connections_per_host: 2,
                max_waiting_per_host: 3,
                ..PoolConfig::default()
            },
            ..HttpClientConfig::default()
        },
    );
    let held: Vec<_> = (0..2).map(|_| client.get(&url(&port, "/never"))).collect();
    let waiting: Vec<_> = (0..3).map(|_| client.get(&url(&port, "/keep"))).collect();
    assert_eq!(client.waiting_requests(), 3);
    let refused = client.get(&url(&port, "/keep"));
    assert!(refused.called(), "refused at once");
    let e = http_err(&reactor, &refused);
    assert!(
        matches!(e, HttpError::TooManyWaiting { limit: 3, .. }),
        "{e}"
    );
    until(&reactor, "two requests arrive", || {
        seen.borrow().requests.len() == 2
    });
    assert_eq!(seen.borrow().accepts, 2);
    assert_eq!(client.open_connections(), 2);
    assert!(waiting.iter().all(|d| !d.called()));
    // Freeing the slots lets the waiting requests through.
    for d in &held {
        d.cancel();
    }
    for d in &waiting {
        assert_eq!(ok(&reactor, d).body, b"ok");
    }
    assert!(seen.borrow().accepts <= 4);
    assert!(client.open_connections() <= 2);
    assert_eq!(client.waiting_requests(), 0);
    let stats = client.stats();
    assert_eq!((stats.waited, stats.refused), (3, 1));
}

/// Issue 10: host name lookups in flight on the thread pool are bounded;
/// past the bound a request fails at once with `ResolverBusy`.
#[test]
fn resolver_jobs_are_bounded() {
    let (reactor, port, _) = canned_server();
    let client = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            max_resolving: 1,
            ..HttpClientConfig::default()
        },
    );
    let by_name = format!("http://localhost:{}/keep", port.local_addr().port());
    let first = client.get(&by_name);
    assert_eq!(client.resolving(), 1);
    let second = client.get(&by_name);
    assert!(second.called(), "refused at once");
    let e = http_err(&reactor, &second);
    assert!(matches!(e, HttpError::ResolverBusy { limit: 1 }), "{e}");
    // The first lookup goes on (localhost may resolve to ::1 first, where
    // nothing listens; the request then tries 127.0.0.1).
    let _ = wait(&reactor, &first);
    assert_eq!(client.resolving(), 0);
    assert_eq!(client.stats().refused, 1);
}

#[test]
fn cancelling_a_request_closes_its_connection() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    let d = client.get(&url(&port, "/never"));
    until(&reactor, "the server sees the request", || {
        seen.borrow().requests.len() == 1
    });
    d.cancel();
    let failure = wait(&reactor, &d).expect_err("cancelled");
    assert!(failure.is::<Cancelled>(), "{}", failure.describe());
    until(&reactor, "the server sees connection_lost", || {
        seen.borrow().lost == 1
    });
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn cancelling_before_connecting() {
    let (reactor, port, seen) = canned_server();
    let client = HttpClient::new(&reactor);
    // By name, so it is resolving when cancelled.
    let d = client.get(&format!("http://localhost:{}/cl", port.local_addr().port()));
    d.cancel();
    assert!(wait(&reactor, &d).expect_err("cancelled").is::<Cancelled>());
    // The loop goes on fine and nothing was sent.
    let again = client.get(&url(&port, "/cl"));
    assert_eq!(ok(&reactor, &again).body, b"hello");
    assert_eq!(seen.borrow().requests, vec!["GET /cl"]);
}

// ----- 4: HTTPS against Python's http.server ----------------------------------

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("gyre-http-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills and reaps the child, whatever happens to the test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PYTHON_HTTPS_SERVER: &str = r#"
import functools, http.server, ssl, sys
root, cert, key = sys.argv[1:4]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[test]
fn https_get_against_python_http_server() {
    if Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = TempDir::new("python");
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let cert = dir.0.join("chain.pem");
    let key = dir.0.join("key.pem");
    std::fs::write(&cert, &leaf.chain_pem).expect("write cert");
    std::fs::write(&key, &leaf.key_pem).expect("write key");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.0.join("data.bin"), &content).expect("write file");

    let child = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_HTTPS_SERVER)
        .arg(&dir.0)
        .arg(&cert)
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3");
    let mut child = ChildGuard(child);
    let mut line = String::new();
    let stdout = child.0.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python printed {line:?} instead of its port"));

    let reactor = reactor();
    let client = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            tls: tls::client_config_with_roots(&[ca.cert_der()], &[b"http/1.1"]).expect("tls"),
            ..HttpClientConfig::default()
        },
    );
    let r = ok(
        &reactor,
        &client.get(&format!("https://localhost:{port}/data.bin")),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_str("content-length"),
        Some(content.len().to_string().as_str())
    );
    assert_eq!(r.body.len(), content.len());
    assert!(r.body == content, "the body differs from the file");
    drop(child);
}

// ----- 8 and TLS failures: against a gyre TLS server --------------------------

fn tls_server(reactor: &Reactor, ca: &TestCa, names: &[&str]) -> (ListeningPort, Shared) {
    let leaf = ca.leaf(names);
    let config = tls::server_config(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), &[])
        .expect("server config");
    let seen = Shared::default();
    let (r, s) = (reactor.clone(), seen.clone());
    let port = tls::listen_tls(
        reactor,
        "127.0.0.1:0".parse().expect("addr"),
        config,
        factory_fn(move |_: SocketAddr| Some(Canned::new(&r, &s))),
    )
    .expect("listen_tls");
    (port, seen)
}

fn trusting(reactor: &Reactor, ca: &TestCa) -> HttpClient {
    HttpClient::with_config(
        reactor,
        HttpClientConfig {
            tls: tls::client_config_with_roots(&[ca.cert_der()], &[b"http/1.1"]).expect("tls"),
            ..HttpClientConfig::default()
        },
    )
}

#[test]
fn two_hundred_concurrent_https_requests() {
    let reactor = reactor();
    let ca = TestCa::new();
    let (port, seen) = tls_server(&reactor, &ca, &["localhost"]);
    let client = trusting(&reactor, &ca);
    let port = port.local_addr().port();
    let all: Vec<Deferred<Response>> = (0..200)
        .map(|i| {
            let path = if i % 2 == 0 { "/cl" } else { "/chunked" };
            client.get(&format!("https://localhost:{port}{path}?{i}"))
        })
        .collect();
    assert!(
        reactor
            .run_until(
                || all.iter().all(Deferred::called),
                Duration::from_secs(120)
            )
            .expect("run"),
        "not all 200 requests completed"
    );
    for (i, d) in all.iter().enumerate() {
        let r = match d.take_result().expect("fired") {
            Ok(r) => r,
            Err(f) => panic!("request {i} failed: {}", f.describe()),
        };
        let expected: &[u8] = if i % 2 == 0 {
            b"hello"
        } else {
            b"hello, world"
        };
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, expected),
            "request {i}"
        );
    }
    assert_eq!(seen.borrow().requests.len(), 200);
    // At most the pool's bound stays open.
    assert!(client.idle_connections() <= 4);
}

#[test]
fn https_close_delimited_and_keep_alive() {
    let reactor = reactor();
    let ca = TestCa::new();
    let (port, seen) = tls_server(&reactor, &ca, &["localhost"]);
    let client = trusting(&reactor, &ca);
    let base = format!("https://localhost:{}", port.local_addr().port());
    assert_eq!(
        ok(&reactor, &client.get(&format!("{base}/keep"))).body,
        b"ok"
    );
    assert_eq!(
        ok(&reactor, &client.get(&format!("{base}/cl"))).body,
        b"hello"
    );
    assert_eq!(seen.borrow().accepts, 1);
    let r = ok(&reactor, &client.get(&format!("{base}/close")));
    assert_eq!(r.body, b"until the close");
}

#[test]
fn an_untrusted_certificate_is_a_tls_error() {
    let reactor = reactor();
    let (port, seen) = tls_server(&reactor, &TestCa::new(), &["localhost"]);
    // Trusts another CA.
    let client = trusting(&reactor, &TestCa::new());
    let d = client.get(&format!(
        "https://localhost:{}/cl",
        port.local_addr().port()
    ));
    let e = http_err(&reactor, &d);
    assert!(matches!(e, HttpError::Tls(_)), "{e}");
    assert!(seen.borrow().requests.is_empty());
}

#[test]
fn a_certificate_for_another_name_is_a_tls_error() {
    let reactor = reactor();
    let ca = TestCa::new();
    let (port, _) = tls_server(&reactor, &ca, &["elsewhere.example"]);
    let client = trusting(&reactor, &ca);
    let d = client.get(&format!(
        "https://127.0.0.1:{}/cl",
        port.local_addr().port()
    ));
    let e = http_err(&reactor, &d);
    assert!(matches!(e, HttpError::Tls(_)), "{e}");
}

#[test]
fn cancelling_during_the_tls_handshake() {
    // A plain TCP server that never speaks TLS: the handshake hangs.
    let (reactor, port, seen) = canned_server();
    let client = trusting(&reactor, &TestCa::new());
    let d = client.get(&format!(
        "https://127.0.0.1:{}/cl",
        port.local_addr().port()
    ));
    until(&reactor, "TCP connected", || seen.borrow().accepts == 1);
    d.cancel();
    assert!(wait(&reactor, &d).expect_err("cancelled").is::<Cancelled>());
    until(&reactor, "the server sees the abort", || {
        seen.borrow().lost == 1
    });
}
