//! DeferredLock, DeferredSemaphore and DeferredQueue, ported from
//! Twisted's `OtherPrimitivesTests` (src/twisted/test/test_defer.py): one
//! test for each of its tests of these three, same steps, same
//! expectations. Then `defer::timeout` on a manual clock.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use gyre_reactor::clock::ManualClock;
use gyre_reactor::defer::{
    ensure_deferred, run_pending, succeed, timeout, Cancelled, Deferred, DeferredLock,
    DeferredQueue, DeferredSemaphore, Failure, NotAcquired, Outcome, QueueOverflow, QueueUnderflow,
    TimedOut, ZeroTokens,
};

/// Twisted's `self.counter` and `_incr`.
#[derive(Clone, Default)]
struct Counter(Rc<Cell<usize>>);

impl Counter {
    fn get(&self) -> usize {
        self.0.get()
    }
    fn set(&self, n: usize) {
        self.0.set(n)
    }
    /// A callback that counts one.
    fn incr<T>(&self) -> impl FnOnce(T) -> Outcome<()> {
        let c = self.0.clone();
        move |_| {
            c.set(c.get() + 1);
            Ok(())
        }
    }
}

/// Twisted's `assertImmediateFailure(d, CancelledError)`.
#[track_caller]
fn assert_cancelled<T>(d: &Deferred<T>) {
    let outcome = d.take_result().expect("fired at once");
    match outcome {
        Err(f) => assert!(f.is::<Cancelled>(), "{f}"),
        Ok(_) => panic!("expected a Cancelled failure, got a value"),
    }
}

#[test]
fn test_lock() {
    let counter = Counter::default();
    let lock = DeferredLock::new();
    let _a = lock.acquire().add_callback(counter.incr());
    assert!(lock.locked());
    assert_eq!(counter.get(), 1);

    let _b = lock.acquire().add_callback(counter.incr());
    assert!(lock.locked());
    assert_eq!(counter.get(), 1);

    lock.release().unwrap();
    assert!(lock.locked());
    assert_eq!(counter.get(), 2);

    lock.release().unwrap();
    assert!(!lock.locked());
    assert_eq!(counter.get(), 2);

    // Twisted: `assertRaises(TypeError, lock.run)` (no function); here the
    // type system rules that out, and an unbalanced release is the error.
    assert_eq!(lock.release(), Err(NotAcquired));

    // run(): the helper runs under the lock, which stays held until the
    // Deferred it returned fires.
    let result: Rc<RefCell<Option<&'static str>>> = Rc::default();
    let (control, control_deferred) = Deferred::<&'static str>::new();
    let r = result.clone();
    let result_deferred = lock.run(move || {
        *r.borrow_mut() = Some("first unique");
        control_deferred
    });
    assert!(lock.locked());
    assert_eq!(*result.borrow(), Some("first unique"));

    let r = result.clone();
    let _chained = result_deferred.add_callback(move |v| {
        *r.borrow_mut() = Some(v);
        Ok(())
    });

    let _c = lock.acquire().add_callback(counter.incr());
    assert!(lock.locked());
    assert_eq!(counter.get(), 2);

    control.callback("second unique").unwrap();
    assert_eq!(*result.borrow(), Some("second unique"));
    assert!(lock.locked(), "the waiting acquire got it");
    assert_eq!(counter.get(), 3);

    // A waiting acquire, cancelled, fails with Cancelled.
    let failed: Rc<RefCell<Option<Failure>>> = Rc::default();
    let f = failed.clone();
    let d = lock.acquire().add_both(move |outcome| {
        if let Err(e) = outcome {
            *f.borrow_mut() = Some(e);
        }
        Ok(())
    });
    d.cancel();
    assert!(failed
        .borrow()
        .as_ref()
        .expect("errback ran")
        .is::<Cancelled>());

    lock.release().unwrap();
    assert!(!lock.locked(), "the cancelled waiter did not get the lock");

    // run() with a Deferred that has already fired.
    assert_eq!(lock.run(|| succeed(2)).take_result().unwrap().unwrap(), 2);
    assert!(!lock.locked());
}

#[test]
fn test_cancel_lock_after_acquired() {
    let lock = DeferredLock::new();
    let errbacks = Rc::new(Cell::new(0));
    let e = errbacks.clone();
    let d = lock.acquire().add_errback(move |f| {
        e.set(e.get() + 1);
        Err(f)
    });
    d.cancel();
    assert_eq!(errbacks.get(), 0, "Unexpected errback call!");
    assert!(d.take_result().unwrap().is_ok());
    assert!(lock.locked());
}

#[test]
fn test_cancel_lock_before_acquired() {
    let lock = DeferredLock::new();
    let _held = lock.acquire();
    let d = lock.acquire();
    d.cancel();
    assert_cancelled(&d);
    assert_eq!(lock.waiting(), 0);
}

#[test]
fn test_semaphore() {
    const N: usize = 13;
    let counter = Counter::default();
    let sem = DeferredSemaphore::new(N).unwrap();

    let (control, control_deferred) = Deferred::<()>::new();
    let helper_arg: Rc<Cell<Option<u32>>> = Rc::default();
    let arg = helper_arg.clone();
    let results: Rc<RefCell<Vec<()>>> = Rc::default();
    let res = results.clone();
    let result_deferred = sem
        .run(move || {
            arg.set(Some(42)); // the unique object
            control_deferred
        })
        .add_callback(move |v| {
            res.borrow_mut().push(v);
            Ok(())
        })
        .add_callback(counter.incr());
    assert!(results.borrow().is_empty());
    assert_eq!(helper_arg.get(), Some(42));
    control.callback(()).unwrap();
    assert_eq!(results.borrow_mut().pop(), Some(()));
    assert_eq!(counter.get(), 1);
    assert!(result_deferred.called());

    counter.set(0);
    let mut held = Vec::new();
    for i in 1..=N {
        held.push(sem.acquire().add_callback(counter.incr()));
        assert_eq!(counter.get(), i);
    }

    let success: Rc<RefCell<Vec<bool>>> = Rc::default();
    let (s1, s2) = (success.clone(), success.clone());
    let d = sem.acquire().add_callbacks(
        move |_| {
            s1.borrow_mut().push(false);
            Ok(())
        },
        move |_| {
            s2.borrow_mut().push(true);
            Ok(())
        },
    );
    d.cancel();
    assert_eq!(*success.borrow(), [true]);

    held.push(sem.acquire().add_callback(counter.incr()));
    assert_eq!(counter.get(), N);

    sem.release().unwrap();
    assert_eq!(counter.get(), N + 1);

    for _ in 1..=N {
        sem.release().unwrap();
        assert_eq!(counter.get(), N + 1);
    }
    assert_eq!(sem.tokens(), N);
    assert_eq!(sem.release(), Err(NotAcquired), "too many tokens");
}

#[test]
fn test_semaphore_invalid_tokens() {
    assert_eq!(DeferredSemaphore::new(0).unwrap_err(), ZeroTokens);
}

#[test]
fn test_cancel_semaphore_after_acquired() {
    let sem = DeferredSemaphore::new(1).unwrap();
    let errbacks = Rc::new(Cell::new(0));
    let e = errbacks.clone();
    let d = sem.acquire().add_errback(move |f| {
        e.set(e.get() + 1);
        Err(f)
    });
    d.cancel();
    assert_eq!(errbacks.get(), 0, "Unexpected errback call!");
    assert!(d.take_result().unwrap().is_ok());
    assert_eq!(sem.tokens(), 0);
}

#[test]
fn test_cancel_semaphore_before_acquired() {
    let sem = DeferredSemaphore::new(1).unwrap();
    let _held = sem.acquire();
    let d = sem.acquire();
    d.cancel();
    assert_cancelled(&d);
    assert_eq!(sem.waiting(), 0);
}

#[test]
fn test_queue() {
    const N: usize = 2;
    const M: usize = 2;
    let queue = DeferredQueue::<usize>::with_limits(N, M);

    let gotten: Rc<RefCell<Vec<usize>>> = Rc::default();
    let collect = |gotten: &Rc<RefCell<Vec<usize>>>| {
        let g = gotten.clone();
        move |v: usize| {
            g.borrow_mut().push(v);
            Ok(())
        }
    };

    let mut keep = Vec::new();
    for _ in 0..M {
        keep.push(queue.get().add_callback(collect(&gotten)));
    }
    let underflow = queue.get();
    assert!(underflow
        .take_result()
        .unwrap()
        .unwrap_err()
        .is::<QueueUnderflow>());

    for i in 0..M {
        queue.put(i).unwrap();
        assert_eq!(*gotten.borrow(), (0..=i).collect::<Vec<_>>());
    }
    for i in 0..N {
        queue.put(N + i).unwrap();
        assert_eq!(*gotten.borrow(), (0..M).collect::<Vec<_>>());
    }
    assert_eq!(queue.put(99), Err(QueueOverflow { size: N }));

    gotten.borrow_mut().clear();
    for i in 0..N {
        keep.push(queue.get().add_callback(collect(&gotten)));
        assert_eq!(*gotten.borrow(), (N..=N + i).collect::<Vec<_>>());
    }

    let queue = DeferredQueue::<usize>::new();
    gotten.borrow_mut().clear();
    for _ in 0..N {
        keep.push(queue.get().add_callback(collect(&gotten)));
    }
    for i in 0..N {
        queue.put(i).unwrap();
    }
    assert_eq!(*gotten.borrow(), (0..N).collect::<Vec<_>>());

    let queue = DeferredQueue::<()>::with_limits(0, 10);
    assert_eq!(queue.put(()), Err(QueueOverflow { size: 0 }));

    let queue = DeferredQueue::<()>::with_limits(10, 0);
    let underflow = queue.get();
    assert!(underflow
        .take_result()
        .unwrap()
        .unwrap_err()
        .is::<QueueUnderflow>());
}

#[test]
fn test_cancel_queue_after_synchronous_get() {
    let queue = DeferredQueue::<()>::new();
    let errbacks = Rc::new(Cell::new(0));
    let e = errbacks.clone();
    let d = queue.get().add_errback(move |f| {
        e.set(e.get() + 1);
        Err(f)
    });
    queue.put(()).unwrap();
    d.cancel();
    assert_eq!(errbacks.get(), 0, "Unexpected errback call!");
    assert!(d.take_result().unwrap().is_ok());
}

#[test]
fn test_cancel_queue_after_get() {
    let queue = DeferredQueue::<Option<u8>>::new();
    let d = queue.get();
    d.cancel();
    // Twisted's assertImmediateFailure consumes the failure and then adds
    // callbacks after it; here the errback recovers, then the same steps.
    let q = queue.clone();
    let d = d
        .add_errback(|f| {
            assert!(f.is::<Cancelled>(), "{f}");
            Ok(None)
        })
        .add_callback_deferred(move |_| {
            // Were the cancelled get still linked with the queue, this put
            // would fire it a second time.
            q.put(None).unwrap();
            q.get().add_callback(|v| {
                assert_eq!(v, None);
                Ok(())
            })
        });
    let done = Rc::new(Cell::new(0));
    let dn = done.clone();
    let _d = d.add_callback(move |()| {
        dn.set(dn.get() + 1);
        Ok(())
    });
    assert_eq!(done.get(), 1);
    assert!(queue.is_empty());
}

#[test]
fn timeout_of_a_future_that_never_completes_is_timed_out() {
    let clock = ManualClock::new();
    let (_never, pending) = Deferred::<u32>::new();
    let limited = timeout(&clock.clock(), Duration::from_secs(5), async move {
        pending.await.map(|n| n + 1)
    });
    let task = ensure_deferred(async move { Ok(limited.await) });
    run_pending();
    assert!(!task.called());
    clock.advance(Duration::from_millis(4999));
    run_pending();
    assert!(!task.called(), "not before the time is up");
    clock.advance(Duration::from_millis(1));
    run_pending();
    let outcome = task.take_result().unwrap().unwrap();
    assert_eq!(outcome.unwrap_err(), TimedOut(Duration::from_secs(5)));
    assert!(clock.pending_calls().is_empty());
}

#[test]
fn timeout_of_a_future_that_completes_in_time_gives_its_output() {
    let clock = ManualClock::new();
    let c = clock.clock();
    let (answer, pending) = Deferred::<u32>::new();
    // A plain future (not a Deferred): an async block awaiting a sleep.
    let limited = timeout(&clock.clock(), Duration::from_secs(5), async move {
        gyre_reactor::defer::sleep(&c, Duration::from_secs(1)).await?;
        pending.await
    });
    let task = ensure_deferred(async move { Ok(limited.await) });
    run_pending();
    clock.advance(Duration::from_secs(1));
    run_pending();
    answer.callback(7).unwrap();
    run_pending();
    let outcome = task.take_result().unwrap().unwrap();
    assert_eq!(outcome.unwrap().unwrap(), 7);
    assert!(
        clock.pending_calls().is_empty(),
        "the timer is cancelled once the future completed"
    );
}
