//! The request parser's unit tests: every request is also fed cut in two,
//! in three and byte by byte, and must parse the same.

use super::*;

/// What a whole input parses to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    /// Each request: head, body, trailers.
    requests: Vec<(RequestHead, Vec<u8>, Vec<Header>)>,
    /// A request's head arrived and its end did not.
    unfinished: bool,
}

fn run(limits: RequestLimits, pieces: &[&[u8]]) -> Result<Parsed, RequestError> {
    let mut p = RequestParser::with_limits(limits);
    let mut out = Parsed::default();
    for piece in pieces {
        let mut input: &[u8] = piece;
        while let Some(event) = p.parse(&mut input)? {
            match event {
                RequestEvent::Head(h) => {
                    assert!(!out.unfinished, "a head inside a request");
                    out.requests.push((h, Vec::new(), Vec::new()));
                    out.unfinished = true;
                }
                RequestEvent::Data(d) => {
                    assert!(!d.is_empty(), "empty data event");
                    out.requests
                        .last_mut()
                        .expect("a head first")
                        .1
                        .extend_from_slice(d);
                }
                RequestEvent::Trailers(t) => out.requests.last_mut().expect("a head first").2 = t,
                RequestEvent::End => {
                    assert!(out.unfinished, "an end without a head");
                    out.unfinished = false;
                }
            }
            let bound = limits.max_head_bytes.max(limits.max_chunk_line) + 1;
            assert!(p.buffered_len() <= bound, "{} > {bound}", p.buffered_len());
        }
        assert!(input.is_empty(), "input left over");
    }
    Ok(out)
}

/// The whole input, and every way to cut it in two and in three (up to
/// 300 bytes), and byte by byte: all must agree.
fn all_chunkings(limits: RequestLimits, input: &[u8]) -> Result<Parsed, RequestError> {
    let whole = run(limits, &[input]);
    let same = |other: Result<Parsed, RequestError>, how: &str| match (&whole, &other) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{how}"),
        (Err(a), Err(b)) => assert_eq!(a, b, "{how}"),
        _ => panic!("{how}: {whole:?} vs {other:?}"),
    };
    let n = input.len();
    if n <= 300 {
        for i in 0..=n {
            same(
                run(limits, &[&input[..i], &input[i..]]),
                &format!("cut at {i}"),
            );
        }
        for i in (0..=n).step_by(7) {
            for j in i..=n {
                same(
                    run(limits, &[&input[..i], &input[i..j], &input[j..]]),
                    &format!("cut at {i} and {j}"),
                );
            }
        }
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    same(run(limits, &bytes), "byte by byte");
    whole
}

fn ok(input: &[u8]) -> Parsed {
    all_chunkings(RequestLimits::default(), input).expect("parses")
}

fn err(input: &[u8]) -> RequestError {
    all_chunkings(RequestLimits::default(), input).expect_err("refused")
}

#[test]
fn get_and_keep_alive() {
    let p = ok(b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
    assert!(!p.unfinished);
    let (head, body, _) = &p.requests[0];
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/a?b=c");
    assert_eq!(head.version, 1);
    assert_eq!(head.header("accept"), Some(&b"*/*"[..]));
    assert!(head.keep_alive && !head.has_body() && body.is_empty());
    let close = ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x, Close\r\n\r\n");
    assert!(!close.requests[0].0.keep_alive);
    let old = ok(b"GET / HTTP/1.0\r\n\r\n");
    assert!(!old.requests[0].0.keep_alive);
    let old_kept = ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(old_kept.requests[0].0.keep_alive);
}

#[test]
fn pipelined_requests_with_bodies() {
    let p = ok(
        b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
        \r\nPUT /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
        2;x=y\r\nde\r\n1\r\nf\r\n0\r\nT: 1\r\n\r\n\
        GET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let summary: Vec<_> = p
        .requests
        .iter()
        .map(|(h, b, t)| (h.target.as_str(), b.as_slice(), t.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("/1", &b"abc"[..], 0),
            ("/2", &b"def"[..], 1),
            ("/3", &b""[..], 0)
        ]
    );
    assert_eq!(p.requests[1].0.framing, BodyFraming::Chunked);
    assert_eq!(p.requests[1].2, vec![("T".to_string(), b"1".to_vec())]);
}

#[test]
fn expect_continue() {
    let p = ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx");
    assert!(p.requests[0].0.expect_continue);
    // Without a body, or from HTTP/1.0, there is nothing to wait for.
    let p = ok(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n");
    assert!(!p.requests[0].0.expect_continue);
    let p = ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
    assert!(!p.requests[0].0.expect_continue);
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\n\r\n").status(),
        417
    );
}

#[test]
fn malformed_requests_are_400() {
    for input in [
        &b"GE T / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"hello\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY",
        b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        let e = err(input);
        assert_eq!(
            e.status(),
            400,
            "{e} for {:?}",
            String::from_utf8_lossy(input)
        );
    }
    // A little leading CRLF is forgiven.
    assert_eq!(
        ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .requests
            .len(),
        1
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status(),
        501
    );
    assert_eq!(err(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n").status(), 505);
}

#[test]
fn limits_and_their_statuses() {
    let limits = RequestLimits {
        max_head_bytes: 128,
        max_headers: 3,
        max_uri_len: 16,
        max_body: 8,
        max_chunk_line: 16,
    };
    let check = |input: &[u8], status: u16| {
        let e = all_chunkings(limits, input).expect_err("refused");
        assert_eq!(
            e.status(),
            status,
            "{e} for {:?}",
            String::from_utf8_lossy(input)
        );
    };
    // The target: right at the limit is fine, one more is 414, and a
    // target that never ends is refused before the head limit.
    assert!(all_chunkings(limits, b"GET /234567890123456 HTTP/1.1\r\nHost: h\r\n\r\n").is_ok());
    check(b"GET /2345678901234567 HTTP/1.1\r\nHost: h\r\n\r\n", 414);
    check(&[b"GET /".as_slice(), &[b'a'; 40]].concat(), 414);
    // A request line longer than the whole head limit is still a 414.
    let wide = RequestLimits {
        max_uri_len: 1000,
        ..limits
    };
    let e = all_chunkings(wide, &[b"GET /".as_slice(), &[b'a'; 300]].concat()).unwrap_err();
    assert_eq!(e.status(), 414);
    // The head.
    let fits = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(all_chunkings(limits, fits).is_ok());
    check(
        b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        431,
    );
    let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    big.resize(200, b'x');
    check(&big, 431);
    // The body, announced and chunked.
    assert!(all_chunkings(
        limits,
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n12345678"
    )
    .is_ok());
    check(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n",
        413,
    );
    check(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n4\r\n",
        413,
    );
    check(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;aaaaaaaaaaaaaaaaaaaa\r\n", 400);
    // Trailers count as a head.
    let mut trailer =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ".to_vec();
    trailer.extend_from_slice(&[b'y'; 200]);
    check(&trailer, 431);
}

#[test]
fn a_head_that_never_ends_is_refused_at_the_limit_not_buffered() {
    let mut p = RequestParser::with_limits(RequestLimits {
        max_head_bytes: 1024,
        ..RequestLimits::default()
    });
    let mut input: &[u8] = b"GET / HTTP/1.1\r\nX: ";
    assert_eq!(p.parse(&mut input), Ok(None));
    assert!(p.in_head() && !p.is_idle());
    let junk = [b'a'; 600];
    let mut input: &[u8] = &junk;
    assert_eq!(p.parse(&mut input), Ok(None));
    let mut input: &[u8] = &junk;
    assert_eq!(
        p.parse(&mut input),
        Err(RequestError::HeadTooLarge { limit: 1024 })
    );
    assert_eq!(p.buffered_len(), 0);
    // Spent: the same error again.
    let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(
        p.parse(&mut input),
        Err(RequestError::HeadTooLarge { limit: 1024 })
    );
    assert!(p.is_failed());
}

#[test]
fn body_state_is_visible() {
    let mut p = RequestParser::new();
    let mut input: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab";
    assert!(matches!(
        p.parse(&mut input),
        Ok(Some(RequestEvent::Head(_)))
    ));
    assert!(p.in_body());
    assert_eq!(p.parse(&mut input), Ok(Some(RequestEvent::Data(b"ab"))));
    assert_eq!(p.body_received(), 2);
    assert_eq!(p.parse(&mut input), Ok(None));
    let mut input: &[u8] = b"cd";
    assert_eq!(p.parse(&mut input), Ok(Some(RequestEvent::Data(b"cd"))));
    assert_eq!(p.parse(&mut input), Ok(Some(RequestEvent::End)));
    assert!(p.is_idle());
}
