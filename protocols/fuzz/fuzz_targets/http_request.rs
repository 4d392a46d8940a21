//! RequestParser (the HTTP server's) on arbitrary bytes in arbitrary
//! chunks, with arbitrary limits: no panic; the same requests and the same
//! error however the input is cut; the parser's buffer, the target, the
//! fields, the body and the trailers stay within the limits; errors are
//! sticky. `protocols/tests/http_parser_fuzz.rs` runs a seeded randomized
//! version of this in `cargo test`.
#![no_main]

use arbitrary::Arbitrary;
use gyre_protocols::http::server::{RequestEvent, RequestHead, RequestLimits, RequestParser};
use gyre_protocols::http::Header;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    /// Where to cut `data` (taken modulo its length).
    cuts: Vec<u16>,
    max_head_bytes: u16,
    max_headers: u8,
    max_uri_len: u16,
    max_body: u32,
    max_chunk_line: u16,
}

#[derive(Debug, PartialEq, Eq, Default)]
struct Parsed {
    /// Each request: head, body, trailers, ended.
    requests: Vec<(RequestHead, Vec<u8>, Vec<Header>, bool)>,
    error: Option<String>,
}

fn run(limits: RequestLimits, pieces: &[&[u8]]) -> Parsed {
    let mut parser = RequestParser::with_limits(limits);
    let mut out = Parsed::default();
    let bound = (limits.max_head_bytes + 1).max(limits.max_chunk_line) + 2;
    for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            let open = out.requests.last().is_some_and(|r| !r.3);
            match parser.parse(&mut input) {
                Ok(Some(RequestEvent::Head(head))) => {
                    assert!(!open);
                    assert!(head.target.len() <= limits.max_uri_len);
                    assert!(head.headers.len() <= limits.max_headers);
                    out.requests.push((head, Vec::new(), Vec::new(), false));
                }
                Ok(Some(RequestEvent::Data(data))) => {
                    assert!(open && !data.is_empty());
                    let r = out.requests.last_mut().expect("open");
                    r.1.extend_from_slice(data);
                    assert!(r.1.len() as u64 <= limits.max_body);
                }
                Ok(Some(RequestEvent::Trailers(trailers))) => {
                    assert!(open && !trailers.is_empty() && trailers.len() <= limits.max_headers);
                    out.requests.last_mut().expect("open").2 = trailers;
                }
                Ok(Some(RequestEvent::End)) => {
                    assert!(open);
                    out.requests.last_mut().expect("open").3 = true;
                }
                Ok(None) => {
                    assert!(input.is_empty());
                    break;
                }
                Err(e) => {
                    let mut more: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
                    assert_eq!(parser.parse(&mut more).as_ref(), Err(&e));
                    out.error = Some(e.to_string());
                    return out;
                }
            }
            assert!(parser.buffered_len() <= bound);
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let limits = RequestLimits {
        max_head_bytes: usize::from(input.max_head_bytes),
        max_headers: usize::from(input.max_headers),
        max_uri_len: usize::from(input.max_uri_len),
        max_body: u64::from(input.max_body),
        max_chunk_line: usize::from(input.max_chunk_line),
    };
    let data = &input.data[..];
    let whole = run(limits, &[data]);
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts {
        pieces.push(&data[from..cut]);
        from = cut;
    }
    pieces.push(&data[from..]);
    assert_eq!(whole, run(limits, &pieces));
});
