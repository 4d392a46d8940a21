//! LineDecoder on arbitrary bytes in arbitrary chunks, with arbitrary mode
//! switches: no panic, and the buffer stays under `max_length + delimiter`.
#![no_main]

use arbitrary::Arbitrary;
use gyre_protocols::line::{LineDecoder, LineFrame};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0: `\r\n`, 1: `\n`, else a three-byte delimiter.
    delimiter: u8,
    max_length: u8,
    /// Each chunk, and whether to flip raw/line mode after it.
    chunks: Vec<(Vec<u8>, bool)>,
}

fuzz_target!(|input: Input| {
    let delimiter: &[u8] = match input.delimiter {
        0 => b"\r\n",
        1 => b"\n",
        _ => b"END",
    };
    let max = usize::from(input.max_length);
    let mut dec = LineDecoder::with_delimiter(delimiter, max);
    let mut fed = 0u64;
    let mut feeds = 0u64;
    for (chunk, flip) in &input.chunks {
        dec.feed(chunk);
        fed += chunk.len() as u64;
        feeds += 1;
        loop {
            match dec.next_frame() {
                Ok(Some(LineFrame::Line(line))) => assert!(line.len() <= max),
                Ok(Some(LineFrame::Raw(_))) => {}
                Err(e) => assert!(!e.data.is_empty()),
                Ok(None) => break,
            }
        }
        if dec.is_raw_mode() {
            assert_eq!(dec.buffered_len(), 0);
        } else {
            assert!(dec.buffered_len() < max + delimiter.len());
        }
        if *flip {
            if dec.is_raw_mode() {
                dec.set_line_mode();
            } else {
                dec.set_raw_mode();
            }
        }
    }
    // Linear: each byte searched about once.
    assert!(dec.bytes_scanned() <= fed + feeds * (delimiter.len() as u64 - 1) + fed);
});
