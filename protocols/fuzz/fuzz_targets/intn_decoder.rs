//! IntNDecoder (8-, 16- and 32-bit prefixes) on arbitrary bytes in
//! arbitrary chunks: no panic, bounded buffer, frames within the maximum.
#![no_main]

use arbitrary::Arbitrary;
use gyre_protocols::intn::{IntNDecoder, PrefixInt};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    prefix: u8,
    max_length: u16,
    chunks: Vec<Vec<u8>>,
}

fn run<N: PrefixInt>(max: usize, chunks: &[Vec<u8>]) {
    let mut dec = IntNDecoder::<N>::with_max_length(max);
    for chunk in chunks {
        dec.feed(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(s)) => assert!(s.len() <= max),
                Ok(None) => break,
                Err(e) => {
                    assert!(e.length > max as u64);
                    assert_eq!(dec.buffered_len(), 0);
                    break;
                }
            }
        }
        assert!(dec.buffered_len() <= max + N::SIZE);
    }
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_length);
    match input.prefix % 3 {
        0 => run::<u8>(max, &input.chunks),
        1 => run::<u16>(max, &input.chunks),
        _ => run::<u32>(max, &input.chunks),
    }
});
