//! ResponseParser on arbitrary bytes in arbitrary chunks, with arbitrary
//! limits: no panic; the same events (joined) and the same error however
//! the input is cut; the parser's buffer, the body and the trailers stay
//! within the limits.
#![no_main]

use arbitrary::Arbitrary;
use gyre_protocols::http::{Event, Header, ParserLimits, ResponseHead, ResponseParser};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    /// Where to cut `data` (taken modulo its length).
    cuts: Vec<u16>,
    head_request: bool,
    eof: bool,
    max_header_bytes: u16,
    max_headers: u8,
    max_body: u32,
    max_chunk_line: u16,
}

#[derive(Debug, PartialEq, Eq, Default)]
struct Parsed {
    interim: Vec<ResponseHead>,
    head: Option<ResponseHead>,
    body: Vec<u8>,
    trailers: Vec<Header>,
    ended: bool,
    rest: Vec<u8>,
    error: Option<String>,
}

fn run(limits: ParserLimits, head_request: bool, pieces: &[&[u8]], eof: bool) -> Parsed {
    let mut parser = ResponseParser::with_limits(limits);
    parser.set_head_request(head_request);
    let mut out = Parsed::default();
    let bound = limits.max_header_bytes.max(limits.max_chunk_line).max(2);
    let record = |event: Event<'_>, out: &mut Parsed| match event {
        Event::Informational(head) => out.interim.push(head),
        Event::Head(head) => {
            assert!(out.head.is_none());
            out.head = Some(head);
        }
        Event::Data(data) => {
            assert!(!data.is_empty() && out.head.is_some() && !out.ended);
            out.body.extend_from_slice(data);
            assert!(out.body.len() as u64 <= limits.max_body);
        }
        Event::Trailers(trailers) => {
            assert!(!trailers.is_empty() && trailers.len() <= limits.max_headers);
            out.trailers = trailers;
        }
        Event::End => {
            assert!(out.head.is_some() && !out.ended);
            out.ended = true;
        }
    };
    for piece in pieces {
        let mut input: &[u8] = piece;
        loop {
            match parser.parse(&mut input) {
                Ok(Some(event)) => record(event, &mut out),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e.to_string());
                    return out;
                }
            }
            assert!(parser.buffered_len() <= bound);
        }
        assert!(parser.buffered_len() <= bound);
        if out.ended {
            out.rest.extend_from_slice(input);
        } else {
            assert!(input.is_empty());
        }
    }
    if eof {
        match parser.finish() {
            Ok(Some(event)) => record(event, &mut out),
            Ok(None) => {}
            Err(e) => out.error = Some(e.to_string()),
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let limits = ParserLimits {
        max_header_bytes: usize::from(input.max_header_bytes),
        max_headers: usize::from(input.max_headers),
        max_body: u64::from(input.max_body),
        max_chunk_line: usize::from(input.max_chunk_line),
    };
    let data = &input.data[..];
    let whole = run(limits, input.head_request, &[data], input.eof);
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| {
            if data.is_empty() {
                0
            } else {
                usize::from(c) % (data.len() + 1)
            }
        })
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts {
        pieces.push(&data[from..cut]);
        from = cut;
    }
    pieces.push(&data[from..]);
    let cut = run(limits, input.head_request, &pieces, input.eof);
    assert_eq!(whole, cut);
});
