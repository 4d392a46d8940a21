//! A seeded randomized test of the sans-IO HTTP request parser: mutated
//! and random bytes, cut at random points, under the default and under
//! tiny limits. It asserts that the parser never panics, that its memory
//! (`buffered_len`) stays within its limits after every call, that its
//! events are well-formed (a head, then body pieces within the body limit,
//! then the end), that errors are sticky, and that however the input is cut
//! the outcome is the same as when it comes whole.
//!
//! How long: `CASES` (100,000) cases from seed `SEED`, about a second in a
//! debug build. To run longer or elsewhere, set the environment:
//!
//! ```text
//! GYRE_FUZZ_CASES=2000000 GYRE_FUZZ_SEED=7 cargo test --release -p gyre-protocols --test http_parser_fuzz
//! ```
//!
//! A failure prints the seed and the case number, and the input, so it can
//! be replayed. A coverage-guided target for the same parser is
//! `protocols/fuzz/fuzz_targets/http_request.rs` (`cargo +nightly fuzz run
//! http_request` in `protocols/`; its own workspace, never built by CI).

use gyre_protocols::http::server::{RequestError, RequestEvent, RequestLimits, RequestParser};

const CASES: u64 = 100_000;
const SEED: u64 = 0x6779_7265_6874_7470; // "gyrehttp"

/// SplitMix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Valid requests to mutate.
const CORPUS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a/b?c=d&e HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\nU: 2\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /g HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\nOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"DELETE /d HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
];

/// Fragments that steer mutations towards interesting places.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b" ",
    b":",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/9.9",
    b"Host: h\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Content-Length: 7\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"5;a=b\r\n",
    b"\x00",
    b"\xff\xfe",
    b"GET ",
    b"POST /",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(8) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            3 => {
                let at = rng.below(len + 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(32)).min(len);
                input.drain(start..end);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(64)).min(len);
                let piece = input[start..end].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, piece);
            }
            6 => input.extend_from_slice(CORPUS[rng.below(CORPUS.len())]),
            7 if len > 0 => input.truncate(rng.below(len)),
            _ => {}
        }
    }
}

/// One request as parsed.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    version: u8,
    fields: usize,
    body: Vec<u8>,
    trailers: usize,
    ended: bool,
}

/// What a whole run amounts to, compared across cuts.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Seen>,
    error: Option<RequestError>,
}

/// Feeds `pieces` and checks the invariants on the way.
fn run(limits: RequestLimits, pieces: &[&[u8]], what: &dyn Fn() -> String) -> Outcome {
    let mut parser = RequestParser::with_limits(limits);
    let mut out = Outcome {
        requests: Vec::new(),
        error: None,
    };
    let bound = (limits.max_head_bytes + 1).max(limits.max_chunk_line) + 2;
    'pieces: for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            let before = input.len();
            let result = parser.parse(&mut input);
            assert!(
                parser.buffered_len() <= bound,
                "{} bytes held (bound {bound}) in {}",
                parser.buffered_len(),
                what()
            );
            match result {
                Ok(None) => {
                    assert!(input.is_empty(), "stopped with input left in {}", what());
                    break;
                }
                Ok(Some(event)) => {
                    assert!(input.len() <= before);
                    let open = out.requests.last().is_some_and(|r| !r.ended);
                    match event {
                        RequestEvent::Head(h) => {
                            assert!(!open, "a head inside a request in {}", what());
                            assert!(h.target.len() <= limits.max_uri_len, "{}", what());
                            assert!(h.headers.len() <= limits.max_headers, "{}", what());
                            out.requests.push(Seen {
                                fields: h.headers.len(),
                                method: h.method,
                                target: h.target,
                                version: h.version,
                                body: Vec::new(),
                                trailers: 0,
                                ended: false,
                            });
                        }
                        RequestEvent::Data(d) => {
                            assert!(open && !d.is_empty(), "stray data in {}", what());
                            let r = out.requests.last_mut().expect("open");
                            r.body.extend_from_slice(d);
                            assert!(r.body.len() as u64 <= limits.max_body, "{}", what());
                        }
                        RequestEvent::Trailers(t) => {
                            assert!(open && !t.is_empty(), "stray trailers in {}", what());
                            assert!(t.len() <= limits.max_headers, "{}", what());
                            out.requests.last_mut().expect("open").trailers = t.len();
                        }
                        RequestEvent::End => {
                            assert!(open, "an end without a head in {}", what());
                            out.requests.last_mut().expect("open").ended = true;
                        }
                    }
                }
                Err(e) => {
                    assert!((400..=505).contains(&e.status()), "{}", what());
                    let mut more: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
                    assert_eq!(
                        parser.parse(&mut more).as_ref(),
                        Err(&e),
                        "not sticky: {}",
                        what()
                    );
                    assert!(parser.is_failed());
                    out.error = Some(e);
                    break 'pieces;
                }
            }
        }
    }
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn the_request_parser_survives_mutated_and_random_input_cut_anywhere() {
    let seed = env_u64("GYRE_FUZZ_SEED", SEED);
    let cases = env_u64("GYRE_FUZZ_CASES", CASES);
    let mut rng = Rng(seed);
    let (mut requests, mut errors) = (0usize, 0usize);
    for case in 0..cases {
        let mut input = if rng.chance(10) {
            (0..rng.below(512)).map(|_| rng.next() as u8).collect()
        } else {
            CORPUS[rng.below(CORPUS.len())].to_vec()
        };
        if rng.chance(90) {
            mutate(&mut rng, &mut input);
        }
        let limits = if rng.chance(50) {
            RequestLimits::default()
        } else {
            RequestLimits {
                max_head_bytes: 16 + rng.below(200),
                max_headers: 1 + rng.below(8),
                max_uri_len: 1 + rng.below(64),
                max_body: rng.below(32) as u64,
                max_chunk_line: 1 + rng.below(32),
            }
        };
        let what = || {
            format!(
                "case {case} of seed {seed}: {limits:?}, input {:?}",
                String::from_utf8_lossy(&input)
            )
        };
        let whole = run(limits, &[&input], &what);
        // Cut at random points, and sometimes byte by byte.
        let mut cuts: Vec<usize> = (0..rng.below(6))
            .map(|_| rng.below(input.len() + 1))
            .collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in cuts {
            pieces.push(&input[start..cut]);
            start = cut;
        }
        pieces.push(&input[start..]);
        assert_eq!(
            run(limits, &pieces, &what),
            whole,
            "cut at random: {}",
            what()
        );
        if rng.chance(20) {
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                run(limits, &bytes, &what),
                whole,
                "byte by byte: {}",
                what()
            );
        }
        requests += whole.requests.len();
        errors += usize::from(whole.error.is_some());
    }
    // The mutations reach both sides: requests parsed, and refusals.
    assert!(
        requests > cases as usize / 10,
        "{requests} requests in {cases} cases"
    );
    assert!(
        errors > cases as usize / 10,
        "{errors} errors in {cases} cases"
    );
}
