//! Framing decoders: lines (1 MB and 10 MB of 10-byte lines, to show that
//! decoding is linear: the 10 MB case should take ~10x the 1 MB one, the
//! same throughput), netstrings and 32-bit length prefixes, plus the full
//! LineReceiver path over a StringTransport.
//!
//! `cargo bench --bench framing`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gyre::protocols::{
    encode_netstring, Int32Decoder, LineContext, LineDecoder, LineHandler, LineReceiver,
    NetstringDecoder,
};
use gyre::reactor::testing::StringTransport;
use gyre::reactor::Protocol;

/// Bytes handed to the decoder per read, like a socket read.
const READ: usize = 4096;
const MB: usize = 1024 * 1024;

fn ten_byte_lines(bytes: usize) -> Vec<u8> {
    b"123456789\n".repeat(bytes / 10)
}

fn lines(c: &mut Criterion) {
    let mut group = c.benchmark_group("lines");
    group.sample_size(10);
    for mb in [1, 10] {
        let input = ten_byte_lines(mb * MB);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("decoder", format!("{mb}MB")),
            &input,
            |b, input| {
                b.iter(|| {
                    let mut dec = LineDecoder::with_delimiter(b"\n", 16_384);
                    let mut n = 0usize;
                    for chunk in input.chunks(READ) {
                        dec.feed(chunk);
                        while let Ok(Some(frame)) = dec.next_frame() {
                            black_box(frame);
                            n += 1;
                        }
                    }
                    n
                })
            },
        );
    }

    struct Count(usize);
    impl LineHandler for Count {
        fn line_received(&mut self, _: &mut LineContext<'_>, line: &[u8]) {
            self.0 += black_box(line).len();
        }
    }
    let input = ten_byte_lines(MB);
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("receiver/1MB", |b| {
        b.iter(|| {
            let st = StringTransport::new();
            let mut proto = LineReceiver::new(Count(0)).with_delimiter(b"\n");
            proto.connection_made(st.transport());
            for chunk in input.chunks(READ) {
                proto.data_received(chunk);
            }
            proto.with_handler(|h| h.0)
        })
    });
    group.finish();
}

fn netstrings(c: &mut Criterion) {
    let mut wire = Vec::new();
    let payload = vec![b'n'; 100];
    while wire.len() < MB {
        encode_netstring(&payload, &mut wire);
    }
    let mut group = c.benchmark_group("netstrings");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decoder/1MB of 100-byte strings", |b| {
        b.iter(|| {
            let mut dec = NetstringDecoder::new();
            let mut n = 0usize;
            for chunk in wire.chunks(READ) {
                dec.feed(chunk);
                while let Ok(Some(s)) = dec.next_frame() {
                    n += black_box(s).len();
                }
            }
            n
        })
    });
    group.finish();
}

fn int32(c: &mut Criterion) {
    let mut wire = Vec::new();
    let payload = vec![b'i'; 100];
    while wire.len() < MB {
        Int32Decoder::encode(&payload, &mut wire).expect("fits a 32-bit prefix");
    }
    let mut group = c.benchmark_group("int32");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decoder/1MB of 100-byte frames", |b| {
        b.iter(|| {
            let mut dec = Int32Decoder::new();
            let mut n = 0usize;
            for chunk in wire.chunks(READ) {
                dec.feed(chunk);
                while let Ok(Some(s)) = dec.next_frame() {
                    n += black_box(s).len();
                }
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, lines, netstrings, int32);
criterion_main!(benches);
