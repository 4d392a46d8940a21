//! The HTTP/1.1 server's limits over real loopback sockets: a 1 GB chunked
//! upload refused at the body limit without being buffered, slow-loris and
//! idle connections closed by the time-outs on the manual clock, each
//! limit's status after the answers to earlier pipelined requests, and the
//! connection cap (503, or accepting paused).
//!
//! Every wait is `run_until` on the event that matters with a generous
//! bound; nothing sleeps and nothing asserts on timing.

#[path = "common/raw.rs"]
mod raw;
#[path = "common/run.rs"]
mod run;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gyre_protocols::http::server::{
    AtCapacity, HttpServer, HttpServerConfig, RequestLimits, ServerRequest,
};
use gyre_protocols::http::Response;
use gyre_reactor::defer::{succeed, Deferred};
use gyre_reactor::Reactor;
use raw::{manual_reactor, parse_answers, Raw};
use run::{any_port, reactor, wait};

fn hello(request: ServerRequest) -> Deferred<Response> {
    succeed(Response::new(200).with_body(format!("hello {}", request.body.len())))
}

fn serve(reactor: &Reactor, config: HttpServerConfig) -> HttpServer {
    HttpServer::listen(reactor, any_port(), config, hello).expect("listen")
}

const GIB: u64 = 1 << 30;

#[test]
fn a_1_gb_chunked_upload_is_refused_at_the_body_limit_without_buffering_it() {
    let reactor = reactor();
    let server = serve(
        &reactor,
        HttpServerConfig {
            limits: RequestLimits {
                max_body: 1 << 20,
                ..RequestLimits::default()
            },
            ..HttpServerConfig::default()
        },
    );
    let addr = server.local_addr();
    let answered = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The uploader: a blocking client on its own thread, streaming 64 KiB
    // chunks (one buffer, reused) until 1 GiB is sent or the answer comes.
    let (a, s, d) = (answered.clone(), sent.clone(), done.clone());
    let uploader = std::thread::spawn(move || -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        let mut reader = stream.try_clone().expect("clone");
        let a2 = a.clone();
        let reading = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") {
                            a2.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
            got
        });
        let head = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut chunk = b"10000\r\n".to_vec();
        chunk.resize(chunk.len() + 0x10000, b'u');
        chunk.extend_from_slice(b"\r\n");
        let mut ok = stream.write_all(head).is_ok();
        while ok && !a.load(Ordering::SeqCst) && s.load(Ordering::SeqCst) < GIB {
            ok = stream.write_all(&chunk).is_ok();
            if ok {
                s.fetch_add(0x10000, Ordering::SeqCst);
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        let got = reading.join().expect("reader");
        d.store(true, Ordering::SeqCst);
        got
    });
    wait(&reactor, "the uploader to finish", || {
        done.load(Ordering::SeqCst)
    });
    let got = uploader.join().expect("uploader");
    let answers = parse_answers(&got, &[false]);
    assert_eq!(answers.len(), 1, "{}", String::from_utf8_lossy(&got));
    assert_eq!(answers[0].status, 413);
    assert_eq!(answers[0].header("connection").as_deref(), Some("close"));
    // Refused near the limit, not after a gigabyte.
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < GIB / 16, "{sent} bytes were sent before the answer");
    let stats = server.stats();
    assert_eq!((stats.requests, stats.refusals), (0, 1));
    assert!(stats.bytes_received < GIB / 16, "{}", stats.bytes_received);
    wait(&reactor, "the connection to close", || {
        server.open_connections() == 0
    });
}

/// The slow-loris test's settings: a head time-out longer than the idle
/// time-out, so that only the head time-out can end a trickle.
fn slow_config() -> HttpServerConfig {
    HttpServerConfig {
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3),
        ..HttpServerConfig::default()
    }
}

#[test]
fn a_head_trickled_a_byte_a_second_gets_408_at_the_head_timeout() {
    let (reactor, manual) = manual_reactor();
    let server = serve(&reactor, slow_config());
    let client = Raw::connect(&reactor, server.local_addr());
    let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Loris: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut seconds = 0;
    for (i, byte) in head.iter().enumerate() {
        client.send([*byte]);
        wait(&reactor, "the byte to arrive", || {
            server.stats().bytes_received == i as u64 + 1
        });
        // One second per byte: never idle for 3 s, yet slow. (Advancing
        // the manual clock runs the timers due at once.)
        manual.advance(Duration::from_secs(1));
        seconds += 1;
        if server.stats().timeouts > 0 {
            break;
        }
    }
    client.wait_closed(&reactor);
    let answers = parse_answers(&client.seen.data.borrow(), &[false]);
    assert_eq!(answers[0].status, 408);
    assert_eq!(answers[0].header("connection").as_deref(), Some("close"));
    // The head time-out, not the idle one (3 s), and not the whole head.
    assert_eq!(seconds, 10);
    let stats = server.stats();
    assert_eq!((stats.timeouts, stats.requests), (1, 0));
}

#[test]
fn idle_connections_are_closed_at_the_idle_timeout() {
    let (reactor, manual) = manual_reactor();
    let server = serve(&reactor, slow_config());
    // A connection that never sends a byte.
    let silent = Raw::connect(&reactor, server.local_addr());
    // One that asks once and then idles.
    let once = Raw::connect(&reactor, server.local_addr());
    once.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(once.wait_answers(&reactor, &[false])[0].status, 200);
    wait(&reactor, "both accepted", || server.open_connections() == 2);
    // Advancing the manual clock runs the timers due at once.
    manual.advance(Duration::from_secs(2));
    assert_eq!(server.stats().timeouts, 0);
    manual.advance(Duration::from_secs(1));
    assert_eq!(server.stats().timeouts, 2);
    silent.wait_closed(&reactor);
    once.wait_closed(&reactor);
    // Closed quietly: no 408 between requests.
    assert!(silent.seen.data.borrow().is_empty());
    assert_eq!(
        parse_answers(&once.seen.data.borrow(), &[false, false]).len(),
        1
    );
    assert_eq!(server.stats().timeouts, 2);
    wait(&reactor, "the server's side to close", || {
        server.open_connections() == 0
    });
}

#[test]
fn a_body_that_stalls_gets_408_at_the_idle_timeout() {
    let (reactor, manual) = manual_reactor();
    let server = serve(&reactor, slow_config());
    let client = Raw::connect(&reactor, server.local_addr());
    let stalled = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc";
    client.send(stalled);
    wait(&reactor, "the body's start", || {
        server.stats().bytes_received == stalled.len() as u64
    });
    manual.advance(Duration::from_secs(3));
    client.wait_closed(&reactor);
    assert_eq!(
        parse_answers(&client.seen.data.borrow(), &[false])[0].status,
        408
    );
}

#[test]
fn each_limit_answers_its_status_after_the_earlier_pipelined_answers() {
    let reactor = reactor();
    let server = serve(
        &reactor,
        HttpServerConfig {
            limits: RequestLimits {
                max_head_bytes: 2048,
                max_headers: 8,
                max_uri_len: 256,
                max_body: 64,
                max_chunk_line: 64,
            },
            ..HttpServerConfig::default()
        },
    );
    let ok = "GET / HTTP/1.1\r\nHost: h\r\n\r\nPOST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
    let many_fields: String = (0..9).map(|i| format!("X-{i}: y\r\n")).collect();
    let cases = [
        (
            format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(300)),
            414,
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: h\r\n{many_fields}\r\n"),
            431,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
                "b".repeat(3000)
            ),
            431,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n".to_string(),
            413,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n".to_string()
                + &"c".repeat(64)
                + "\r\n1\r\nc\r\n",
            413,
        ),
        (
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\nHost: h\r\n\r\n"
                .to_string(),
            400,
        ),
        ("this is not HTTP\r\n\r\n".to_string(), 400),
        ("GET / HTTP/3.0\r\nHost: h\r\n\r\n".to_string(), 505),
    ];
    for (bad, status) in &cases {
        let client = Raw::connect(&reactor, server.local_addr());
        // Two good requests, the bad one, and one more that is never read.
        client.send(format!("{ok}{bad}GET /after HTTP/1.1\r\nHost: h\r\n\r\n"));
        client.wait_closed(&reactor);
        let answers = parse_answers(&client.seen.data.borrow(), &[false, false, false, false]);
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [200, 200, *status], "{bad:.60}");
        assert_eq!(answers[1].body, b"hello 2");
        assert_eq!(answers[2].header("connection").as_deref(), Some("close"));
    }
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.refusals),
        (2 * cases.len() as u64, cases.len() as u64)
    );
}

#[test]
fn past_the_connection_cap_clients_get_503() {
    let reactor = reactor();
    let server = serve(
        &reactor,
        HttpServerConfig {
            max_connections: 2,
            ..HttpServerConfig::default()
        },
    );
    let first = Raw::connect(&reactor, server.local_addr());
    let second = Raw::connect(&reactor, server.local_addr());
    wait(&reactor, "two served", || server.open_connections() == 2);
    let third = Raw::connect(&reactor, server.local_addr());
    let answers = third.wait_answers(&reactor, &[false]);
    assert_eq!(answers[0].status, 503);
    assert_eq!(answers[0].header("retry-after").as_deref(), Some("1"));
    third.wait_closed(&reactor);
    assert_eq!(server.stats().refused, 1);
    // The two served still are; once one leaves, a newcomer is served.
    second.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(second.wait_answers(&reactor, &[false])[0].status, 200);
    first.transport.lose_connection();
    wait(&reactor, "room again", || server.open_connections() == 1);
    let fourth = Raw::connect(&reactor, server.local_addr());
    fourth.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(fourth.wait_answers(&reactor, &[false])[0].status, 200);
}

#[test]
fn past_the_connection_cap_accepting_can_pause_instead() {
    let reactor = reactor();
    let server = serve(
        &reactor,
        HttpServerConfig {
            max_connections: 2,
            at_capacity: AtCapacity::PauseAccepting,
            ..HttpServerConfig::default()
        },
    );
    let first = Raw::connect(&reactor, server.local_addr());
    let _second = Raw::connect(&reactor, server.local_addr());
    wait(&reactor, "two served", || server.open_connections() == 2);
    assert!(server.port().is_paused());
    // The third waits in the backlog: connected, but not accepted.
    let third = Raw::connect(&reactor, server.local_addr());
    third.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    first.transport.lose_connection();
    assert_eq!(third.wait_answers(&reactor, &[false])[0].status, 200);
    // Two open again (the first left, the third came): paused again.
    assert_eq!(server.open_connections(), 2);
    assert!(server.port().is_paused());
    assert_eq!(server.stats().connections, 3);
}

#[test]
fn a_client_that_reads_no_answers_stops_being_read_and_is_aborted_when_idle() {
    let (reactor, manual) = manual_reactor();
    let server = HttpServer::listen(
        &reactor,
        any_port(),
        slow_config(),
        |_request: ServerRequest| succeed(Response::new(200).with_body(vec![b'z'; 1024 * 1024])),
    )
    .expect("listen");
    // A blocking client that pipelines requests and never reads.
    let stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_nonblocking(true).expect("nonblocking");
    let mut stream = stream;
    let request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut written = 0usize;
    for _ in 0..2000 {
        match stream.write(request) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(written >= request.len() * 100, "{written}");
    // The server answers some, then stops reading: far fewer requests are
    // handled than were sent, and its memory stays bounded.
    wait(&reactor, "some answers", || server.stats().requests >= 2);
    let before = server.stats().requests;
    let (r2, flag) = (reactor.clone(), std::rc::Rc::new(std::cell::Cell::new(0)));
    for _ in 0..50 {
        let f = flag.clone();
        r2.call_soon(move || f.set(f.get() + 1));
        let f = flag.clone();
        let target = f.get() + 1;
        wait(&reactor, "a turn of the loop", move || f.get() >= target);
    }
    let handled = server.stats().requests;
    assert!(
        handled < 100,
        "{handled} requests handled for a client that reads nothing (from {before})"
    );
    // Idle with unread answers: aborted at the idle time-out.
    manual.advance(Duration::from_secs(3));
    wait(&reactor, "the abort", || server.open_connections() == 0);
    assert_eq!(server.stats().timeouts, 1);
}

#[test]
fn big_answers_to_pipelined_requests_all_arrive_to_a_client_that_reads() {
    // Twenty requests in one write: sixteen (the pipelining limit) are
    // read and answered, then reading waits until the loop has flushed
    // answers far above the write buffer's high-water mark.
    let reactor = reactor();
    let server = HttpServer::listen(
        &reactor,
        any_port(),
        HttpServerConfig::default(),
        |request: ServerRequest| {
            let fill = request.path().as_bytes()[1];
            succeed(Response::new(200).with_body(vec![fill; 100 * 1024]))
        },
    )
    .expect("listen");
    let client = Raw::connect(&reactor, server.local_addr());
    let paths: Vec<char> = ('a'..='t').collect();
    let requests: String = paths
        .iter()
        .map(|p| format!("GET /{p} HTTP/1.1\r\nHost: h\r\n\r\n"))
        .collect();
    client.send(requests);
    let answers = client.wait_answers(&reactor, &[false; 20]);
    for (answer, path) in answers.iter().zip(paths) {
        assert_eq!(answer.body.len(), 100 * 1024);
        assert!(answer.body.iter().all(|&b| char::from(b) == path));
    }
}
