//! Threads as a stage boundary: `call_from_thread`, `defer_to_thread`,
//! `resolve`, and `spawn` of async code awaiting thread results.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;
use gyre_reactor::defer::Panicked;

/// Test 2: 4 threads x 10,000 `call_from_thread` calls: every call runs, on
/// the loop thread, in each thread's order.
#[test]
fn call_from_thread_runs_every_call_in_order() {
    const THREADS: usize = 4;
    const CALLS: u32 = 10_000;
    let reactor = reactor();
    let loop_thread = thread::current().id();
    let total = Arc::new(AtomicUsize::new(0));
    let off_loop = Arc::new(AtomicUsize::new(0));
    let logs: Vec<Arc<Mutex<Vec<u32>>>> = (0..THREADS).map(|_| Arc::default()).collect();

    let workers: Vec<_> = logs
        .iter()
        .map(|log| {
            let handle = reactor.thread_handle();
            let (log, total, off_loop) = (log.clone(), total.clone(), off_loop.clone());
            thread::spawn(move || {
                for i in 0..CALLS {
                    let (log, total, off_loop) = (log.clone(), total.clone(), off_loop.clone());
                    handle
                        .call_from_thread(move |_reactor| {
                            if thread::current().id() != loop_thread {
                                off_loop.fetch_add(1, Ordering::SeqCst);
                            }
                            log.lock().unwrap().push(i);
                            total.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                }
            })
        })
        .collect();

    let expected = THREADS * CALLS as usize;
    wait(&reactor, "every call from the threads", || {
        total.load(Ordering::SeqCst) == expected
    });
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(
        off_loop.load(Ordering::SeqCst),
        0,
        "a call ran off the loop thread"
    );
    for (t, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        assert_eq!(log.len(), CALLS as usize, "thread {t}");
        assert!(
            log.iter().copied().eq(0..CALLS),
            "thread {t}'s calls ran out of order"
        );
    }
    // Nothing runs twice.
    reactor.iterate(Some(std::time::Duration::ZERO)).unwrap();
    assert_eq!(total.load(Ordering::SeqCst), expected);
}

/// Test 15: `defer_to_thread` returns the value (computed off the loop); a
/// panic there arrives as a `Panicked` failure and the pool survives it;
/// `resolve("localhost", 80)` succeeds.
#[test]
fn defer_to_thread_and_resolve() {
    let reactor = reactor();
    let loop_thread = thread::current().id();

    let d = reactor.defer_to_thread(move || (thread::current().id(), 6 * 7));
    wait(&reactor, "the thread's value", || d.called());
    let (worker, value) = d.take_result().unwrap().unwrap();
    assert_eq!(value, 42);
    assert_ne!(
        worker, loop_thread,
        "defer_to_thread ran on the loop thread"
    );

    let d = reactor.defer_to_thread(|| -> u32 { panic!("the worker exploded") });
    wait(&reactor, "the panicking job", || d.called());
    let failure = d.take_result().unwrap().unwrap_err();
    let panicked = failure
        .downcast_ref::<Panicked>()
        .unwrap_or_else(|| panic!("not a Panicked failure: {failure}"));
    assert!(panicked.0.contains("the worker exploded"), "{}", panicked.0);

    let d = reactor.defer_to_thread(|| "still working");
    wait(&reactor, "a job after the panic", || d.called());
    assert_eq!(d.take_result().unwrap().unwrap(), "still working");

    let d = reactor.resolve("localhost", 80);
    wait(&reactor, "resolve", || d.called());
    let addrs = d.take_result().unwrap().unwrap();
    assert!(!addrs.is_empty());
    for addr in &addrs {
        assert_eq!(addr.port(), 80);
        assert!(addr.ip().is_loopback(), "localhost resolved to {addr}");
    }
}

/// `spawn` of an async block awaiting `defer_to_thread`: the block resumes
/// on the loop thread after each await, and its result fires the Deferred.
#[test]
fn spawn_awaits_thread_results() {
    let reactor = reactor();
    let loop_thread = thread::current().id();
    let r = reactor.clone();
    let first = reactor.defer_to_thread(|| 20);
    let d = reactor.spawn(async move {
        let a = first.await?;
        assert_eq!(thread::current().id(), loop_thread);
        // Start a second job from inside the task, after the first await.
        let b = r.defer_to_thread(move || a + 1).await?;
        assert_eq!(thread::current().id(), loop_thread);
        Ok((a, b))
    });
    wait(&reactor, "the async block", || d.called());
    assert_eq!(d.take_result().unwrap().unwrap(), (20, 21));

    // A panic in the awaited job fails the block with it.
    let failing = reactor.defer_to_thread(|| -> u32 { panic!("deep down") });
    let d = reactor.spawn(async move { Ok(failing.await? + 1) });
    wait(&reactor, "the failing async block", || d.called());
    assert!(d.take_result().unwrap().unwrap_err().is::<Panicked>());
}
