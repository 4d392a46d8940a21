//! NetstringDecoder on arbitrary bytes in arbitrary chunks: no panic, the
//! buffer stays within the maximum, and strings never exceed it.
#![no_main]

use arbitrary::Arbitrary;
use gyre_protocols::netstring::NetstringDecoder;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    max_length: u16,
    chunks: Vec<Vec<u8>>,
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_length);
    let mut dec = NetstringDecoder::with_max_length(max);
    for chunk in &input.chunks {
        dec.feed(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(s)) => assert!(s.len() <= max),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(dec.error(), Some(e));
                    assert_eq!(dec.buffered_len(), 0);
                    break;
                }
            }
        }
        assert!(dec.buffered_len() <= max);
    }
});
