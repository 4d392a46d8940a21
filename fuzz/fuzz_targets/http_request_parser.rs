//! libFuzzer target: the sans-IO HTTP request parser, with tiny limits
//! taken from the input's first bytes and the rest cut where its second
//! byte says. The parser must not panic, must keep `buffered_len` within
//! its limits, and must give the same outcome however the input is cut.

#![no_main]

use gyre_protocols::http::server::{RequestEvent, RequestLimits, RequestParser};
use libfuzzer_sys::fuzz_target;

/// The events of a run, as comparable text, and whether it failed.
fn run(limits: RequestLimits, pieces: &[&[u8]]) -> (Vec<String>, Option<u16>) {
    let mut parser = RequestParser::with_limits(limits);
    let bound = (limits.max_head_bytes + 1).max(limits.max_chunk_line) + 2;
    let mut events = Vec::new();
    let mut body = Vec::new();
    for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            let result = parser.parse(&mut input);
            assert!(parser.buffered_len() <= bound);
            match result {
                Ok(None) => {
                    assert!(input.is_empty());
                    break;
                }
                Ok(Some(RequestEvent::Head(h))) => {
                    assert!(h.target.len() <= limits.max_uri_len);
                    events.push(format!("{} {} {}", h.method, h.target, h.headers.len()));
                }
                Ok(Some(RequestEvent::Data(d))) => {
                    body.extend_from_slice(d);
                    assert!(body.len() as u64 <= limits.max_body);
                }
                Ok(Some(RequestEvent::Trailers(t))) => events.push(format!("trailers {}", t.len())),
                Ok(Some(RequestEvent::End)) => {
                    events.push(format!("end {}", String::from_utf8_lossy(&body)));
                    body.clear();
                }
                Err(e) => return (events, Some(e.status())),
            }
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let [a, b, cut, rest @ ..] = data else {
        return;
    };
    let limits = RequestLimits {
        max_head_bytes: 16 + usize::from(*a) * 4,
        max_headers: 1 + usize::from(*b % 16),
        max_uri_len: 1 + usize::from(*b),
        max_body: u64::from(*a),
        max_chunk_line: 1 + usize::from(*a % 64),
    };
    let whole = run(limits, &[rest]);
    let at = usize::from(*cut).min(rest.len());
    assert_eq!(run(limits, &[&rest[..at], &rest[at..]]), whole);
});
