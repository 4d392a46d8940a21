//! The reactor's own costs: callbacks, timers, readiness, and a line echo
//! round trip next to tokio and a raw mio loop.
//!
//! - `call_soon/batch`: 1,024 `call_soon`s queued, then loop iterations
//!   until all ran; time per call (queue + dispatch).
//! - `call_soon/chained`: each callback queues the next, so every call costs
//!   one loop iteration (a zero-timeout `epoll_wait` included).
//! - `timers/schedule_fire/pending_{1k,100k}`: `call_later(0)` then the loop
//!   fires it, in batches of 100, with 1k or 100k other timers pending (an
//!   hour away); time per timer.
//! - `timers/cancel90/pending_{1k,100k}`: per 100 timers, 90 are 30-second
//!   time-outs cancelled before they fire (left in the heap lazily, so
//!   compaction is included) and 10 fire at once; time per timer scheduled.
//! - `readiness/{gyre,mio_raw}`: one byte written to a connected loopback
//!   socket, time until the protocol's `data_received` sees it (gyre) or
//!   until a raw mio loop has read it (the floor). Writer and loop share the
//!   bench thread, so this is the loop's path (`epoll_wait`, dispatch, read,
//!   protocol call) without a thread wake-up.
//! - `pingpong_32B/{gyre,tokio,mio_raw}`: a 32-byte line round trip on one
//!   connection to a line echo server on its own thread (gyre's
//!   LineReceiver echo; `examples/tokio_line_echo.rs` on a current-thread
//!   runtime; `examples/mio_line_echo.rs`); the client is a blocking std
//!   socket with TCP_NODELAY in the bench thread. Client and server threads
//!   are pinned to the same core (the last one), so each round trip is two
//!   thread switches on one core and the rows compare the servers' code
//!   paths; `PINGPONG_CORES=split` puts the servers on core 0 instead, which
//!   adds two cross-core wake-ups per round trip (on a VM these dominate: see
//!   benches/peers/run.sh, which runs split). Unpinned, the rows would
//!   differ by where the scheduler happened to put each server thread.
//!
//! Run: `cargo bench --bench dispatch` (quick: `-- --warm-up-time 1
//! --measurement-time 3`). On a shared 2-core machine compare the rows of
//! one group from one run, not absolute numbers across runs.

mod common;
use common::{cores as pingpong_cores, pin_to_core, server_thread};

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gyre::protocols::{LineContext, LineHandler, LineReceiver};
use gyre::reactor::{factory_fn, Protocol, Reactor};

#[path = "../examples/mio_line_echo.rs"]
mod mio_line_echo;
#[path = "../examples/tokio_line_echo.rs"]
mod tokio_line_echo;

const TIMER_BATCH: u64 = 100;
const SOON_BATCH: u64 = 1024;
const WAIT: Duration = Duration::from_secs(10);

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect("reactor")
}

/// Iterates `reactor` until `done()`, failing the bench after `WAIT`.
fn spin(reactor: &Reactor, done: impl Fn() -> bool) {
    assert!(
        reactor.run_until(done, WAIT).expect("run_until"),
        "timed out"
    );
}

fn call_soon(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_soon");
    group.throughput(Throughput::Elements(1));
    let r = reactor();
    group.bench_function("batch", |b| {
        b.iter_custom(|iters| {
            let ran = Rc::new(Cell::new(0u64));
            let start = Instant::now();
            let mut queued = 0;
            while queued < iters {
                let n = SOON_BATCH.min(iters - queued);
                for _ in 0..n {
                    let ran = Rc::clone(&ran);
                    r.call_soon(move || ran.set(ran.get() + 1));
                }
                queued += n;
                spin(&r, || ran.get() == queued);
            }
            start.elapsed()
        })
    });
    group.bench_function("chained", |b| {
        fn next(r: &Reactor, left: Rc<Cell<u64>>) {
            if left.get() > 0 {
                left.set(left.get() - 1);
                let r2 = r.clone();
                r.call_soon(move || next(&r2, left));
            }
        }
        b.iter_custom(|iters| {
            let left = Rc::new(Cell::new(iters));
            let start = Instant::now();
            next(&r, Rc::clone(&left));
            spin(&r, || left.get() == 0);
            start.elapsed()
        })
    });
    group.finish();
    // The last `next` is still queued (the spin ends when `left` reaches 0)
    // and holds a handle to `r`: run it, so that `r` is really dropped here
    // and the next benchmark can build its reactor (one per thread).
    r.iterate(Some(Duration::ZERO)).expect("iterate");
}

/// A reactor with `pending` timers an hour away (kept alive by the caller).
fn reactor_with_pending(pending: usize) -> (Reactor, Vec<gyre::reactor::clock::DelayedCall>) {
    let r = reactor();
    let calls = (0..pending)
        .map(|i| {
            // Spread over a minute so the heap is not one long tie.
            let delay = Duration::from_secs(3600) + Duration::from_millis(i as u64 % 60_000);
            r.call_later(delay, || {})
        })
        .collect();
    (r, calls)
}

fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers");
    group.throughput(Throughput::Elements(1));
    for (name, pending) in [("pending_1k", 1_000), ("pending_100k", 100_000)] {
        let (r, _background) = reactor_with_pending(pending);
        group.bench_function(BenchmarkId::new("schedule_fire", name), |b| {
            b.iter_custom(|iters| {
                let fired = Rc::new(Cell::new(0u64));
                let start = Instant::now();
                let mut scheduled = 0;
                while scheduled < iters {
                    let n = TIMER_BATCH.min(iters - scheduled);
                    for _ in 0..n {
                        let fired = Rc::clone(&fired);
                        r.call_later(Duration::ZERO, move || fired.set(fired.get() + 1));
                    }
                    scheduled += n;
                    spin(&r, || fired.get() == scheduled);
                }
                start.elapsed()
            })
        });
        group.bench_function(BenchmarkId::new("cancel90", name), |b| {
            let mut handles = Vec::with_capacity(TIMER_BATCH as usize);
            b.iter_custom(|iters| {
                let fired = Rc::new(Cell::new(0u64));
                let start = Instant::now();
                let mut scheduled = 0;
                let mut to_fire = 0;
                while scheduled < iters {
                    let n = TIMER_BATCH.min(iters - scheduled);
                    for i in 0..n {
                        if i % 10 == 0 {
                            let fired = Rc::clone(&fired);
                            r.call_later(Duration::ZERO, move || fired.set(fired.get() + 1));
                            to_fire += 1;
                        } else {
                            handles.push(r.call_later(Duration::from_secs(30), || {}));
                        }
                    }
                    for h in handles.drain(..) {
                        let _ = h.cancel();
                    }
                    scheduled += n;
                    spin(&r, || fired.get() == to_fire);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// Records when data arrives.
struct Probe {
    seen: Rc<Cell<Option<Instant>>>,
}

impl Protocol for Probe {
    fn data_received(&mut self, _data: &[u8]) {
        self.seen.set(Some(Instant::now()));
    }
}

fn readiness(c: &mut Criterion) {
    let mut group = c.benchmark_group("readiness");

    let r = reactor();
    let seen = Rc::new(Cell::new(None));
    let accepted = Rc::new(Cell::new(false));
    let (s, a) = (Rc::clone(&seen), Rc::clone(&accepted));
    let port = r
        .listen_tcp(
            "127.0.0.1:0".parse().expect("addr"),
            factory_fn(move |_| {
                a.set(true);
                Some(Probe {
                    seen: Rc::clone(&s),
                })
            }),
        )
        .expect("listen");
    let mut client = TcpStream::connect(port.local_addr()).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    spin(&r, || accepted.get());
    group.bench_function("gyre", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                seen.set(None);
                let t0 = Instant::now();
                client.write_all(&[1]).expect("write");
                spin(&r, || seen.get().is_some());
                total += seen.get().map_or(Duration::ZERO, |t| t - t0);
            }
            total
        })
    });

    // The same on a bare mio registration.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let mut server = mio::net::TcpStream::from_std(server);
    let mut poll = mio::Poll::new().expect("poll");
    poll.registry()
        .register(&mut server, mio::Token(0), mio::Interest::READABLE)
        .expect("register");
    let mut events = mio::Events::with_capacity(64);
    let mut buf = vec![0u8; 64 * 1024];
    group.bench_function("mio_raw", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                client.write_all(&[1]).expect("write");
                let mut got = false;
                while !got {
                    poll.poll(&mut events, Some(WAIT)).expect("poll");
                    for _ in events.iter() {
                        loop {
                            match server.read(&mut buf) {
                                Ok(0) => panic!("eof"),
                                Ok(_) => got = true,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) => panic!("read: {e}"),
                            }
                        }
                    }
                }
                total += t0.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// Echoes each line (as examples/line_echo.rs does).
struct EchoLines;

impl LineHandler for EchoLines {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
    }
}

fn gyre_server() -> SocketAddr {
    server_thread(|tx| {
        let r = reactor();
        let port = r
            .listen_tcp(
                "127.0.0.1:0".parse().expect("addr"),
                factory_fn(|_| {
                    Some(
                        LineReceiver::new(EchoLines)
                            .with_delimiter(b"\n")
                            .with_max_length(4096),
                    )
                }),
            )
            .expect("listen");
        tx.send(port.local_addr()).expect("send");
        r.run().expect("run");
    })
}

fn tokio_server() -> SocketAddr {
    server_thread(|tx| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            tokio_line_echo::serve(listener).await.expect("serve");
        });
    })
}

fn mio_server() -> SocketAddr {
    server_thread(|tx| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        tx.send(listener.local_addr().expect("addr")).expect("send");
        mio_line_echo::serve(listener).expect("serve");
    })
}

fn pingpong(c: &mut Criterion) {
    let mut group = c.benchmark_group("pingpong_32B");
    group.throughput(Throughput::Elements(1));
    let line = *b"0123456789abcdefghijklmnopqrstu\n";
    // The last group: pinning the bench thread affects nothing after it.
    pin_to_core(pingpong_cores().0);
    type StartServer = fn() -> SocketAddr;
    let servers: [(&str, StartServer); 3] = [
        ("gyre", gyre_server),
        ("tokio", tokio_server),
        ("mio_raw", mio_server),
    ];
    for (name, start) in servers {
        let addr = start();
        let mut client = TcpStream::connect(addr).expect("connect");
        client.set_nodelay(true).expect("nodelay");
        client.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut echo = [0u8; 32];
        client.write_all(&line).expect("write");
        client.read_exact(&mut echo).expect("read");
        assert_eq!(echo, line, "{name} echoed wrong");
        group.bench_function(name, |b| {
            b.iter(|| {
                client.write_all(&line).expect("write");
                client.read_exact(&mut echo).expect("read");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, call_soon, timers, readiness, pingpong);
criterion_main!(benches);
