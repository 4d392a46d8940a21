//! The HTTP/1.1 server over real loopback sockets: Python's `http.client`
//! as a child process (keep-alive, chunked both ways, HEAD), raw-socket
//! pipelining answered in order, 100-continue, chunked responses, HEAD,
//! handlers that are Deferreds, `async`, failing or panicking, and HTTPS
//! with gyre's own client.
//!
//! Every wait is `run_until` on the event that matters with a generous
//! bound; nothing sleeps and nothing asserts on timing.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/raw.rs"]
mod raw;
#[path = "common/run.rs"]
mod run;

use std::cell::RefCell;
use std::process::{Command, Stdio};
use std::rc::Rc;

use gyre_protocols::http::server::{async_handler, HttpServer, HttpServerConfig, ServerRequest};
use gyre_protocols::http::{HttpClient, HttpClientConfig, Request, Response};
use gyre_protocols::tls;
use gyre_reactor::defer::{fail, succeed, Deferred, Failure, Resolver};
use gyre_reactor::Reactor;
use raw::Raw;
use run::{any_port, reactor, wait};

/// Resolvers of `/held` requests, fired by the test.
type Held = Rc<RefCell<Vec<Resolver<Response>>>>;

/// The test site.
fn site(held: Held) -> impl Fn(ServerRequest) -> Deferred<Response> {
    move |request: ServerRequest| match (request.method.as_str(), request.path()) {
        ("GET" | "HEAD", "/hello") => succeed(
            Response::new(200)
                .with_header("Content-Type", "text/plain")
                .with_body("hello"),
        ),
        ("POST" | "PUT", "/echo") => succeed(
            Response::new(200)
                .with_header("X-Trailers", request.trailers.len().to_string())
                .with_header(
                    "X-Framing",
                    if request.header("transfer-encoding").is_some() {
                        "chunked"
                    } else {
                        "length"
                    },
                )
                .with_body(request.body),
        ),
        ("GET" | "HEAD", "/chunked") => succeed(
            Response::new(200)
                .with_header("Transfer-Encoding", "chunked")
                .with_body("0123456789".repeat(4000))
                .with_trailer("X-Checksum", "abc"),
        ),
        ("GET", "/held") => {
            let (resolver, d) = Deferred::new();
            held.borrow_mut().push(resolver);
            d
        }
        ("GET", "/fail") => fail(Failure::msg("the database is down")),
        ("GET", "/panic") => panic!("a handler bug"),
        _ => succeed(Response::new(404).with_body("no such page")),
    }
}

fn serve(reactor: &Reactor) -> (HttpServer, Held) {
    let held = Held::default();
    let server = HttpServer::listen(
        reactor,
        any_port(),
        HttpServerConfig::default(),
        site(held.clone()),
    )
    .expect("listen");
    (server, held)
}

/// Wakes the loop every 10 ms while `on`.
fn tick(reactor: &Reactor, on: &Rc<std::cell::Cell<bool>>) {
    let (again, on) = (reactor.clone(), Rc::clone(on));
    drop(
        reactor.call_later(std::time::Duration::from_millis(10), move || {
            if on.get() {
                tick(&again, &on);
            }
        }),
    );
}

const PYTHON_CLIENT: &str = r#"
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
out = []
def ask(method, path, body=None, headers={}, **kw):
    c.request(method, path, body=body, headers=headers, **kw)
    r = c.getresponse()
    data = r.read()
    out.append({"status": r.status, "length": len(data), "start": data[:16].decode("latin-1"),
                "te": r.getheader("Transfer-Encoding"), "cl": r.getheader("Content-Length"),
                "framing": r.getheader("X-Framing"), "trailers": r.getheader("X-Trailers")})
ask("GET", "/hello")
ask("HEAD", "/hello")
ask("POST", "/echo", body=b"x" * 100000)
ask("POST", "/echo", body=iter([b"abc", b"defg", b"h" * 70000]), encode_chunked=True)
ask("GET", "/chunked")
ask("HEAD", "/chunked")
ask("PUT", "/echo", body=b"hi", headers={"Expect": "100-continue"})
ask("GET", "/missing")
c.close()
print(json.dumps(out))
"#;

#[test]
fn python_http_client_keep_alive_chunked_and_head() {
    let reactor = reactor();
    let (server, _) = serve(&reactor);
    let child = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(server.local_addr().port().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let child = RefCell::new(child);
    // The child's exit is no event of the loop: look every few
    // milliseconds (a wake-up, not a timing assumption).
    let ticking = Rc::new(std::cell::Cell::new(true));
    tick(&reactor, &ticking);
    wait(&reactor, "the Python client to finish", || {
        matches!(child.borrow_mut().try_wait(), Ok(Some(_)))
    });
    ticking.set(false);
    let output = child.into_inner().wait_with_output().expect("output");
    assert!(output.status.success(), "python3 failed");
    let answers: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let a = |i: usize, key: &str| answers[i][key].clone();
    // GET and HEAD: the same head, HEAD without the body.
    assert_eq!(
        (a(0, "status"), a(0, "length"), a(0, "start")),
        (200.into(), 5.into(), "hello".into())
    );
    assert_eq!(
        (a(1, "status"), a(1, "length"), a(1, "cl")),
        (200.into(), 0.into(), "5".into())
    );
    // A body with a length, and a chunked one (decoded).
    assert_eq!(
        (a(2, "length"), a(2, "framing")),
        (100000.into(), "length".into())
    );
    assert_eq!(
        (a(3, "length"), a(3, "framing")),
        (70007.into(), "chunked".into())
    );
    assert_eq!(a(3, "start"), "abcdefghhhhhhhhh");
    // A chunked response, decoded by Python; its HEAD has no body.
    assert_eq!(
        (a(4, "te"), a(4, "length")),
        ("chunked".into(), 40000.into())
    );
    assert_eq!((a(5, "te"), a(5, "length")), ("chunked".into(), 0.into()));
    assert_eq!((a(6, "status"), a(6, "start")), (200.into(), "hi".into()));
    assert_eq!(a(7, "status"), 404);
    // Eight requests, one connection: kept alive throughout.
    let stats = server.stats();
    assert_eq!((stats.connections, stats.requests), (1, 8));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let reactor = reactor();
    let (server, held) = serve(&reactor);
    let client = Raw::connect(&reactor, server.local_addr());
    // Four requests in one write: the first is answered last by its
    // handler, the others at once.
    client.send(
        "GET /held HTTP/1.1\r\nHost: h\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nfirst\
         HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n\
         PUT /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    );
    wait(&reactor, "the handler to see all four", || {
        server.stats().requests == 4
    });
    // Nothing may overtake the held answer.
    assert!(client.seen.data.borrow().is_empty(), "{}", client.text());
    let resolver = held.borrow_mut().pop().expect("held");
    resolver
        .callback(Response::new(200).with_body("late"))
        .expect("fire");
    let answers = client.wait_answers(&reactor, &[false, false, true, false]);
    let bodies: Vec<&[u8]> = answers.iter().map(|a| a.body.as_slice()).collect();
    assert_eq!(bodies, [&b"late"[..], b"first", b"", b"abc"]);
    assert_eq!(answers[2].header("content-length").as_deref(), Some("5"));
    assert_eq!(answers[3].header("x-trailers").as_deref(), Some("1"));
    // Still open for more.
    client.send("GET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let answers = client.wait_answers(&reactor, &[false, false, true, false, false]);
    assert_eq!(answers[4].body, b"hello");
    assert_eq!(answers[4].header("connection").as_deref(), Some("close"));
    client.wait_closed(&reactor);
    assert_eq!(server.stats().connections, 1);
}

#[test]
fn head_gets_the_head_of_get_and_the_connection_goes_on() {
    let reactor = reactor();
    let (server, _) = serve(&reactor);
    let client = Raw::connect(&reactor, server.local_addr());
    client.send(
        "HEAD /chunked HTTP/1.1\r\nHost: h\r\n\r\nHEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n\
         GET /hello HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let answers = client.wait_answers(&reactor, &[true, true, false]);
    assert_eq!(
        answers[0].header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert!(answers[0].body.is_empty() && answers[0].trailers.is_empty());
    assert_eq!(answers[1].header("content-length").as_deref(), Some("5"));
    assert!(answers[1].body.is_empty());
    assert_eq!(answers[2].body, b"hello");
    // Nothing but the three answers: no stray body bytes.
    let text = client.text();
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3);
}

#[test]
fn chunked_response_on_the_wire() {
    let reactor = reactor();
    let (server, _) = serve(&reactor);
    let client = Raw::connect(&reactor, server.local_addr());
    client.send("GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n");
    let answers = client.wait_answers(&reactor, &[false]);
    let text = client.text();
    let head_end = text.find("\r\n\r\n").expect("a head") + 4;
    assert!(
        text[..head_end].contains("Transfer-Encoding: chunked\r\n"),
        "{text:.300}"
    );
    assert!(!text[..head_end].contains("Content-Length"), "{text:.300}");
    // 40,000 bytes in chunks of at most 16 KiB, then the trailer.
    assert!(
        text[head_end..].starts_with("4000\r\n0123456789"),
        "{:.40}",
        &text[head_end..]
    );
    assert!(text.ends_with("\r\n0\r\nX-Checksum: abc\r\n\r\n"));
    assert_eq!(answers[0].body, "0123456789".repeat(4000).as_bytes());
    assert_eq!(
        answers[0].trailers,
        vec![("X-Checksum".to_string(), b"abc".to_vec())]
    );
    // To an HTTP/1.0 client: a length instead.
    let old = Raw::connect(&reactor, server.local_addr());
    old.send("GET /chunked HTTP/1.0\r\n\r\n");
    let answers = old.wait_answers(&reactor, &[false]);
    assert_eq!(
        answers[0].header("content-length").as_deref(),
        Some("40000")
    );
    assert_eq!(answers[0].header("connection").as_deref(), Some("close"));
    old.wait_closed(&reactor);
}

#[test]
fn expect_100_continue() {
    let reactor = reactor();
    let (server, _) = serve(&reactor);
    let client = Raw::connect(&reactor, server.local_addr());
    client.send(
        "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    wait(&reactor, "100 Continue", || {
        client.seen.data.borrow().as_slice() == b"HTTP/1.1 100 Continue\r\n\r\n"
    });
    assert_eq!(server.stats().requests, 0);
    client.send("hello");
    let answers = client.wait_answers(&reactor, &[false]);
    assert_eq!(
        (answers[0].interim.as_slice(), answers[0].body.as_slice()),
        (&[100][..], &b"hello"[..])
    );

    // Too large for the limit: 413 at once, no 100, and the connection closes.
    let big = Raw::connect(&reactor, server.local_addr());
    big.send("POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 99999999\r\n\r\n");
    let answers = big.wait_answers(&reactor, &[false]);
    assert_eq!((answers[0].status, answers[0].interim.len()), (413, 0));
    big.wait_closed(&reactor);

    // An expectation the server does not know: 417.
    let odd = Raw::connect(&reactor, server.local_addr());
    odd.send("POST /echo HTTP/1.1\r\nHost: h\r\nExpect: tea\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(odd.wait_answers(&reactor, &[false])[0].status, 417);
    odd.wait_closed(&reactor);
}

#[test]
fn failing_panicking_and_async_handlers() {
    let reactor = reactor();
    let (server, _) = serve(&reactor);
    let client = Raw::connect(&reactor, server.local_addr());
    client.send(
        "GET /fail HTTP/1.1\r\nHost: h\r\n\r\nGET /panic HTTP/1.1\r\nHost: h\r\n\r\n\
         GET /hello HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let answers = client.wait_answers(&reactor, &[false, false, false]);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [500, 500, 200]);

    // An async handler that waits for a Deferred fired by a timer.
    let for_handler = reactor.clone();
    let async_server = HttpServer::listen(
        &reactor,
        any_port(),
        HttpServerConfig::default(),
        async_handler(move |request: ServerRequest| {
            let (resolver, later) = Deferred::<u32>::new();
            for_handler.call_soon(move || {
                let _ = resolver.callback(42);
            });
            async move {
                let n = later.await?;
                Ok(Response::new(200).with_body(format!("{} {n}", request.path())))
            }
        }),
    )
    .expect("listen");
    let client = Raw::connect(&reactor, async_server.local_addr());
    client.send("GET /answer HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        client.wait_answers(&reactor, &[false])[0].body,
        b"/answer 42"
    );
}

#[test]
fn https_with_gyres_own_client_keeps_the_connection() {
    let reactor = reactor();
    let ca = certs::TestCa::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let tls_config = tls::server_config(
        leaf.chain_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        &[b"http/1.1"],
    )
    .expect("server config");
    let server = HttpServer::listen_tls(
        &reactor,
        any_port(),
        tls_config,
        HttpServerConfig::default(),
        site(Held::default()),
    )
    .expect("listen");
    let client = HttpClient::with_config(
        &reactor,
        HttpClientConfig {
            tls: tls::client_config_with_roots(&[ca.cert_der()], &[b"http/1.1"]).expect("client"),
            ..HttpClientConfig::default()
        },
    );
    let base = format!("https://127.0.0.1:{}", server.local_addr().port());
    for (request, body) in [
        (Request::get(format!("{base}/hello")), &b"hello"[..]),
        (
            Request::post(format!("{base}/echo")).body("over TLS"),
            b"over TLS",
        ),
    ] {
        let d = client.request(request);
        wait(&reactor, "the response", || d.called());
        let response = d.take_result().expect("fired").expect("response");
        assert_eq!((response.status, response.body.as_slice()), (200, body));
    }
    let d = client.request(Request::get(format!("{base}/chunked")));
    wait(&reactor, "the chunked response", || d.called());
    let response = d.take_result().expect("fired").expect("response");
    assert_eq!(response.body.len(), 40000);
    assert_eq!(
        response.trailers,
        vec![("X-Checksum".to_string(), b"abc".to_vec())]
    );
    let stats = server.stats();
    assert_eq!((stats.connections, stats.requests), (1, 3));
}
