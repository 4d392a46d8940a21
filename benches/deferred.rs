//! Deferred overhead next to the same work done with plain boxed closures.
//!
//! - `chain10`: create a Deferred, add 10 callbacks, fire it, take the
//!   result; against a `Vec` of 10 boxed `FnOnce(u64) -> u64` applied in turn.
//! - `gather1000`: 1,000 unfired Deferreds, `gather_results`, fire each,
//!   take the `Vec`; against a `Vec` of 1,000 boxed closures whose results
//!   are collected into a `Vec`.
//!
//! Run: `cargo bench --bench deferred`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gyre::reactor::defer::{gather_results, Deferred};

const CHAIN: usize = 10;
const GATHER: usize = 1_000;

fn chain10_deferred(start: u64) -> u64 {
    let (r, mut tail) = Deferred::<u64>::new();
    for _ in 0..CHAIN {
        tail = tail.add_callback(|x| Ok(x + 1));
    }
    r.callback(start).unwrap();
    tail.take_result().unwrap().unwrap()
}

fn chain10_closures(start: u64) -> u64 {
    let mut fs: Vec<Box<dyn FnOnce(u64) -> u64>> = Vec::with_capacity(CHAIN);
    for _ in 0..CHAIN {
        fs.push(Box::new(|x| x + 1));
    }
    fs.into_iter().fold(start, |x, f| f(x))
}

fn gather1000_deferred(seed: u64) -> Vec<u64> {
    let (rs, ds): (Vec<_>, Vec<_>) = (0..GATHER).map(|_| Deferred::<u64>::new()).unzip();
    let all = gather_results(ds);
    for (i, r) in rs.iter().enumerate() {
        r.callback(seed + i as u64).unwrap();
    }
    all.take_result().unwrap().unwrap()
}

fn gather1000_closures(seed: u64) -> Vec<u64> {
    let fs: Vec<Box<dyn FnOnce() -> u64>> = (0..GATHER)
        .map(|i| Box::new(move || seed + i as u64) as Box<dyn FnOnce() -> u64>)
        .collect();
    fs.into_iter().map(|f| f()).collect()
}

fn deferred(c: &mut Criterion) {
    assert_eq!(chain10_deferred(1), chain10_closures(1));
    assert_eq!(gather1000_deferred(7), gather1000_closures(7));
    let mut group = c.benchmark_group("deferred");
    group.bench_function("chain10/deferred", |b| {
        b.iter(|| chain10_deferred(black_box(1)))
    });
    group.bench_function("chain10/boxed_closures", |b| {
        b.iter(|| chain10_closures(black_box(1)))
    });
    group.bench_function("gather1000/deferred", |b| {
        b.iter(|| gather1000_deferred(black_box(7)))
    });
    group.bench_function("gather1000/boxed_closures", |b| {
        b.iter(|| gather1000_closures(black_box(7)))
    });
    group.finish();
}

criterion_group!(benches, deferred);
criterion_main!(benches);
