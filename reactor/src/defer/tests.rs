//! Deferred semantics, ported from Twisted's `test_defer.py` and
//! `test_task.py`, on the manual clock and without sleeping.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;

// ---------------------------------------------------------------------------
// Helpers

/// Captures log records per test thread (tests run in parallel threads).
struct TestLogger;

thread_local! {
    static RECORDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

impl log::Log for TestLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        // `try_with`: a record logged while the thread's locals are being
        // destroyed is dropped rather than panicking.
        let _ = RECORDS.try_with(|r| r.borrow_mut().push(line));
    }

    fn flush(&self) {}
}

static LOGGER: TestLogger = TestLogger;
static INSTALL: Once = Once::new();

/// Installs the logger (once per process) and clears this thread's records.
fn capture_logs() {
    INSTALL.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in the test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    RECORDS.with(|r| r.borrow_mut().clear());
}

/// This thread's error records so far.
fn error_logs() -> Vec<String> {
    RECORDS.with(|r| {
        r.borrow()
            .iter()
            .filter(|line| line.starts_with("ERROR"))
            .cloned()
            .collect()
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The value of a fired, successful Deferred (Twisted's `successResultOf`).
#[track_caller]
fn value<T: std::fmt::Debug>(d: &Deferred<T>) -> T {
    d.take_result()
        .expect("the Deferred has fired")
        .expect("the Deferred succeeded")
}

/// The failure of a fired, failed Deferred (Twisted's `failureResultOf`).
#[track_caller]
fn failure<T: std::fmt::Debug>(d: &Deferred<T>) -> Failure {
    d.take_result()
        .expect("the Deferred has fired")
        .expect_err("the Deferred failed")
}

/// `n` unfired Deferreds: their resolvers, and the Deferreds.
fn pending<T: 'static>(n: usize) -> (Vec<Resolver<T>>, Vec<Deferred<T>>) {
    (0..n).map(|_| Deferred::new()).unzip()
}

/// A shared list the closures of a test append to.
type Log<T> = Rc<RefCell<Vec<T>>>;

fn counter() -> Rc<Cell<u32>> {
    Rc::new(Cell::new(0))
}

fn bump(c: &Rc<Cell<u32>>) {
    c.set(c.get() + 1);
}

// ---------------------------------------------------------------------------
// 1-5: chaining

/// test_asynchronousImplicitChain: `second`'s callback returns `first`,
/// which has not fired; once it fires with R, `second`'s next callback gets R.
#[test]
fn asynchronous_implicit_chain() {
    let (first, f) = Deferred::<&str>::new();
    let (second, second_d) = Deferred::<()>::new();
    let seen: Log<&str> = Rc::default();
    let s = seen.clone();
    let tail = second_d
        .add_callback_deferred(move |()| f)
        .add_callback(move |r| {
            s.borrow_mut().push(r);
            Ok(r.len())
        });
    second.callback(()).unwrap();
    assert!(seen.borrow().is_empty(), "the chain waits for `first`");
    assert!(!tail.called());
    first.callback("R").unwrap();
    assert_eq!(*seen.borrow(), ["R"]);
    assert_eq!(value(&tail), 1);
}

/// test_synchronousImplicitChain: a callback returning an already-fired
/// Deferred passes that Deferred's value on, taking it from it.
#[test]
fn synchronous_implicit_chain_steals_result() {
    let first = succeed("R");
    let (second, second_d) = Deferred::<()>::new();
    let tail = second_d
        .add_callback_deferred(move |()| first)
        .add_callback(|r| Ok(format!("got {r}")));
    second.callback(()).unwrap();
    assert_eq!(value(&tail), "got R");
}

/// An inner Deferred's failure reaches the outer chain's errback and is not
/// logged; left unhandled, it is logged once, not once per Deferred.
#[test]
fn inner_failure_reaches_outer_errback_and_logs_at_most_once() {
    capture_logs();
    {
        let (inner, i) = Deferred::<u32>::new();
        let (outer, outer_d) = Deferred::<()>::new();
        let seen: Log<String> = Rc::default();
        let s = seen.clone();
        let handled = outer_d
            .add_callback_deferred(move |()| i)
            .add_errback(move |f| {
                s.borrow_mut().push(f.to_string());
                Ok(7)
            });
        outer.callback(()).unwrap();
        inner.errback(Failure::msg("inner boom")).unwrap();
        assert_eq!(*seen.borrow(), ["inner boom"]);
        assert_eq!(value(&handled), 7);
    }
    assert!(error_logs().is_empty(), "handled: {:?}", error_logs());

    {
        let (inner, i) = Deferred::<u32>::new();
        let (outer, outer_d) = Deferred::<()>::new();
        let tail = outer_d.add_callback_deferred(move |()| i);
        outer.callback(()).unwrap();
        inner.errback(Failure::msg("inner boom")).unwrap();
        assert!(tail.called());
        drop((inner, outer, tail));
    }
    let logs = error_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("inner boom"));
}

/// test_nonReentrantCallbacks: cb1, while running, adds cb3 to the tail of
/// the chain; it runs after cb1 has returned and after cb2, which was there
/// already.
#[test]
fn callback_added_by_running_callback_runs_after_it() {
    let order: Log<u32> = Rc::default();
    let tail: Rc<RefCell<Option<Deferred<()>>>> = Rc::default();
    let (d, first) = Deferred::<()>::new();
    let (o, t) = (order.clone(), tail.clone());
    let after_cb1 = first.add_callback(move |()| {
        o.borrow_mut().push(1);
        let current = t.borrow_mut().take().expect("tail is set");
        let o3 = o.clone();
        let next = current.add_callback(move |()| {
            o3.borrow_mut().push(3);
            Ok(())
        });
        *t.borrow_mut() = Some(next);
        assert_eq!(*o.borrow(), [1], "cb3 does not run inside cb1");
        Ok(())
    });
    let o = order.clone();
    let after_cb2 = after_cb1.add_callback(move |()| {
        o.borrow_mut().push(2);
        Ok(())
    });
    *tail.borrow_mut() = Some(after_cb2);
    d.callback(()).unwrap();
    assert_eq!(*order.borrow(), [1, 2, 3]);
    let last = tail.borrow_mut().take().unwrap();
    assert_eq!(value(&last), ());
}

/// test_boundedStackDepth: 100,000 Deferreds, each one's callback returning
/// the next, complete on a 256 KiB stack.
#[test]
fn hundred_thousand_nested_deferreds_do_not_grow_the_stack() {
    const N: usize = 100_000;
    let handle = std::thread::Builder::new()
        .name("bounded-stack".into())
        .stack_size(256 * 1024)
        .spawn(|| {
            let (top, top_d) = Deferred::<()>::new();
            let (inners, mut inner_ds) = pending::<()>(N);
            let (last, l) = Deferred::<u64>::new();
            // Link i is inner i with a callback returning link i + 1; the
            // last link's callback returns `last`.
            let mut next = match inner_ds.pop() {
                Some(d) => d.add_callback_deferred(move |()| l),
                None => unreachable!("N > 0"),
            };
            while let Some(inner) = inner_ds.pop() {
                let n = next;
                next = inner.add_callback_deferred(move |()| n);
            }
            let seen: Rc<Cell<Option<u64>>> = Rc::default();
            let s = seen.clone();
            let first = next;
            let end = top_d
                .add_callback_deferred(move |()| first)
                .add_callback(move |v| {
                    s.set(Some(v));
                    Ok(v)
                });
            top.callback(()).unwrap();
            for inner in &inners {
                inner.callback(()).unwrap();
            }
            assert_eq!(seen.get(), None, "nothing fires before `last`");
            last.callback(42).unwrap();
            assert_eq!(seen.get(), Some(42));
            value(&end)
        })
        .unwrap();
    assert_eq!(handle.join().expect("no stack overflow"), 42);
}

// ---------------------------------------------------------------------------
// 6-7: firing twice, cancellation

/// All four double-fire combinations are `AlreadyCalled`, naming where the
/// Deferred was created and first fired.
#[test]
fn double_fire_is_already_called() {
    fn fire(d: &Resolver<u8>, ok: bool) -> Result<(), AlreadyCalled> {
        if ok {
            d.callback(1)
        } else {
            d.errback(Failure::msg("x"))
        }
    }
    for (first, second, name) in [
        (true, true, "callback, callback"),
        (true, false, "callback, errback"),
        (false, true, "errback, callback"),
        (false, false, "errback, errback"),
    ] {
        let (r, d) = Deferred::<u8>::new();
        let created = line!() - 1;
        fire(&r, first).unwrap();
        let e = fire(&r, second).expect_err(name);
        assert_eq!(e.created_at.line(), created, "{name}");
        assert_eq!(e.created_at.file(), file!());
        assert!(e.first_fired_at.is_some(), "{name}");
        // The first result stands.
        let outcome = d.take_result().unwrap();
        assert_eq!(outcome.is_ok(), first, "{name}");
    }
}

/// Cancelling a Deferred with no canceller fails it with `Cancelled`; the
/// next fire (the operation finishing anyway) is swallowed, a second is an
/// error.
#[test]
fn cancel_without_canceller() {
    let (r, d) = Deferred::<u8>::new();
    d.cancel();
    assert!(d.called());
    assert!(r.called());
    assert_eq!(r.callback(1), Ok(()), "one late fire is swallowed");
    assert!(r.callback(2).is_err(), "a second is not");
    assert!(failure(&d).is::<Cancelled>());
}

/// A canceller that fires the Deferred decides its result.
#[test]
fn canceller_that_fires_wins() {
    let (_r, d) = Deferred::<&str>::with_canceller(|r| r.callback("partial").unwrap());
    d.cancel();
    assert_eq!(value(&d), "partial");
    let (_r, d) = Deferred::<&str>::with_canceller(|r| r.errback(Failure::msg("aborted")).unwrap());
    d.cancel();
    assert_eq!(failure(&d).to_string(), "aborted");
}

/// Cancelling a link that waits on an inner Deferred (returned by a
/// callback) reaches the inner one's canceller, exactly once however often
/// it is cancelled.
#[test]
fn outer_cancel_reaches_inner_canceller_once() {
    let calls = counter();
    let c = calls.clone();
    let (inner, i) = Deferred::<u8>::with_canceller(move |_| bump(&c));
    let (outer, outer_d) = Deferred::<()>::new();
    let waiting = outer_d
        .add_callback_deferred(move |()| i)
        .add_callback(|v| Ok(v + 1));
    outer.callback(()).unwrap();
    assert!(!waiting.called());
    waiting.cancel();
    waiting.cancel();
    assert_eq!(calls.get(), 1);
    assert!(inner.called());
    assert!(failure(&waiting).is::<Cancelled>());
    // The operation behind `inner` finishing late is swallowed.
    assert_eq!(inner.callback(5), Ok(()));
}

/// Cancel after firing does nothing.
#[test]
fn cancel_after_fire_is_a_noop() {
    let calls = counter();
    let c = calls.clone();
    let (r, d) = Deferred::<u8>::with_canceller(move |_| bump(&c));
    r.callback(3).unwrap();
    d.cancel();
    assert_eq!(calls.get(), 0);
    assert_eq!(value(&d), 3);
}

/// Repeated cancels call a canceller (that does not fire) once.
#[test]
fn repeated_cancel_calls_canceller_once() {
    let calls = counter();
    let c = calls.clone();
    let (_r, d) = Deferred::<u8>::with_canceller(move |_| bump(&c));
    d.cancel();
    d.cancel();
    d.cancel();
    assert_eq!(calls.get(), 1);
    assert!(failure(&d).is::<Cancelled>());
}

// ---------------------------------------------------------------------------
// 8: time-outs

#[test]
fn add_timeout_times_out() {
    let clock = ManualClock::new();
    let (r, d) = Deferred::<u8>::new();
    let timed = d.add_timeout(&clock.clock(), secs(10));
    clock.advance(ms(9_999));
    assert!(!timed.called());
    clock.advance(ms(1));
    let f = failure(&timed);
    assert_eq!(f.downcast_ref::<TimedOut>(), Some(&TimedOut(secs(10))));
    assert!(f.history().any(|e| e.is::<Cancelled>()));
    assert!(clock.pending_calls().is_empty());
    assert!(r.called(), "the input was cancelled");
}

#[test]
fn add_timeout_success_first_leaves_no_timer() {
    let clock = ManualClock::new();
    let (r, d) = Deferred::<u8>::new();
    let timed = d.add_timeout(&clock.clock(), secs(10));
    assert_eq!(clock.pending_calls().len(), 1);
    clock.advance(secs(5));
    r.callback(4).unwrap();
    assert!(clock.pending_calls().is_empty());
    clock.advance(secs(10));
    assert_eq!(value(&timed), 4);
}

/// An errback added before the time-out sees `Cancelled`; the chain after
/// the time-out sees `TimedOut`.
#[test]
fn errback_before_timeout_sees_cancelled() {
    let clock = ManualClock::new();
    let (r, d) = Deferred::<u8>::new();
    let seen: Log<bool> = Rc::default();
    let s = seen.clone();
    let timed = d
        .add_errback(move |f| {
            s.borrow_mut().push(f.is::<Cancelled>());
            Err(f)
        })
        .add_timeout(&clock.clock(), secs(1));
    clock.advance(secs(1));
    assert_eq!(*seen.borrow(), [true]);
    assert!(failure(&timed).is::<TimedOut>());
    assert!(r.called());
}

// ---------------------------------------------------------------------------
// 9: DeferredList, gather_results, race

#[test]
fn deferred_list_mixed_outcomes_in_input_order() {
    capture_logs();
    let (ds, inputs) = pending::<u32>(3);
    let list = DeferredList::new(inputs)
        .consume_errors(true)
        .into_deferred();
    ds[2].callback(30).unwrap();
    ds[1].errback(Failure::msg("one failed")).unwrap();
    assert!(!list.called(), "waits for all");
    ds[0].callback(10).unwrap();
    let results = value(&list);
    assert_eq!(results.len(), 3);
    assert_eq!(*results[0].as_ref().unwrap(), 10);
    assert_eq!(results[1].as_ref().unwrap_err().to_string(), "one failed");
    assert_eq!(*results[2].as_ref().unwrap(), 30);
    drop(results);
    assert!(error_logs().is_empty());
}

#[test]
fn deferred_list_empty_fires_at_once() {
    let list = DeferredList::<u8>::new(Vec::new()).into_deferred();
    assert!(value(&list).is_empty());
    let first = DeferredList::<u8>::new(Vec::new()).fire_on_one_callback();
    let group = failure(&first).downcast::<FailureGroup>().unwrap();
    assert!(group.failures.is_empty());
    assert!(value(&gather_results(Vec::<Deferred<u8>>::new())).is_empty());
}

/// fire_on_one_errback fails at the first failure with its index; without
/// consume_errors, the input's failure is also logged as unhandled.
#[test]
fn deferred_list_fire_on_one_errback() {
    capture_logs();
    let (ds, inputs) = pending::<u32>(3);
    let list = DeferredList::new(inputs)
        .fire_on_one_errback(true)
        .into_deferred();
    ds[0].callback(1).unwrap();
    ds[2].errback(Failure::msg("third broke")).unwrap();
    let first = failure(&list).downcast::<FirstError>().unwrap();
    assert_eq!(first.index, 2);
    assert_eq!(first.failure.to_string(), "third broke");
    // Later results are dropped; a later failure is logged too.
    ds[1].errback(Failure::msg("second broke")).unwrap();
    let logs = error_logs();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs[0].contains("third broke"));
    assert!(logs[1].contains("second broke"));
}

/// consume_errors: the list is the failures' only consumer, nothing logged.
#[test]
fn deferred_list_consume_errors_logs_nothing() {
    capture_logs();
    let (ds, inputs) = pending::<u32>(2);
    let list = DeferredList::new(inputs)
        .fire_on_one_errback(true)
        .consume_errors(true)
        .into_deferred();
    ds[1].errback(Failure::msg("a")).unwrap();
    ds[0].errback(Failure::msg("b")).unwrap();
    assert_eq!(failure(&list).downcast::<FirstError>().unwrap().index, 1);
    drop((ds, list));
    assert!(error_logs().is_empty(), "{:?}", error_logs());
}

#[test]
fn deferred_list_fire_on_one_callback() {
    let (ds, inputs) = pending::<&str>(3);
    let first = DeferredList::new(inputs)
        .consume_errors(true)
        .fire_on_one_callback();
    ds[0].errback(Failure::msg("zero")).unwrap();
    assert!(!first.called(), "a failure is not a success");
    ds[2].callback("two").unwrap();
    assert_eq!(value(&first), (2, "two"));
    assert!(!ds[1].called(), "the others are not cancelled");

    // None succeeds: a FailureGroup in input order.
    let (ds, inputs) = pending::<&str>(2);
    let first = DeferredList::new(inputs)
        .consume_errors(true)
        .fire_on_one_callback();
    ds[1].errback(Failure::msg("one")).unwrap();
    ds[0].errback(Failure::msg("zero")).unwrap();
    let group = failure(&first).downcast::<FailureGroup>().unwrap();
    let texts: Vec<String> = group.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(texts, ["zero", "one"]);
}

/// Cancelling the list cancels the inputs that have not fired.
#[test]
fn deferred_list_cancel_cancels_pending_inputs() {
    let calls = counter();
    let c = calls.clone();
    let (waiting, waiting_d) = Deferred::<u8>::with_canceller(move |_| bump(&c));
    let list = DeferredList::new(vec![succeed(1), waiting_d]).into_deferred();
    list.cancel();
    assert_eq!(calls.get(), 1);
    assert!(waiting.called());
    assert!(failure(&list).is::<Cancelled>());
}

#[test]
fn gather_results_values_and_first_error() {
    capture_logs();
    let (ds, inputs) = pending::<u32>(3);
    let all = gather_results(inputs);
    assert_eq!(all.created_at().line(), line!() - 1, "names the caller");
    for (i, d) in ds.iter().enumerate().rev() {
        d.callback(i as u32 * 10).unwrap();
    }
    assert_eq!(value(&all), [0, 10, 20]);

    let (ds, inputs) = pending::<u32>(3);
    let all = gather_results(inputs);
    ds[0].callback(0).unwrap();
    ds[1].errback(Failure::msg("middle")).unwrap();
    let first = failure(&all).downcast::<FirstError>().unwrap();
    assert_eq!(
        (first.index, first.failure.to_string()),
        (1, "middle".into())
    );
    ds[2].errback(Failure::msg("late")).unwrap();
    drop(ds);
    assert!(error_logs().is_empty(), "gather_results consumes errors");
}

/// The first success wins and the others are cancelled (their cancellation
/// not logged); all failing gives a FailureGroup; cancelling the race
/// cancels every input.
#[test]
fn race_first_success_wins_and_cancels_the_rest() {
    capture_logs();
    let cancels = counter();
    let (ds, inputs): (Vec<_>, Vec<_>) = (0..3)
        .map(|_| {
            let c = cancels.clone();
            Deferred::<u32>::with_canceller(move |_| bump(&c))
        })
        .unzip();
    let winner = race(inputs);
    ds[0].errback(Failure::msg("lost anyway")).unwrap();
    assert!(!winner.called());
    ds[1].callback(11).unwrap();
    assert_eq!(value(&winner), (1, 11));
    assert_eq!(cancels.get(), 1, "only the pending loser is cancelled");
    assert!(ds[2].called(), "cancelled");
    drop(ds);
    assert!(error_logs().is_empty(), "{:?}", error_logs());

    // An input that already succeeded wins at once; the later ones are
    // cancelled too.
    let cancels = counter();
    let c = cancels.clone();
    let (waiting, waiting_d) = Deferred::<u32>::with_canceller(move |_| bump(&c));
    let winner = race(vec![succeed(5), waiting_d]);
    assert_eq!(value(&winner), (0, 5));
    assert_eq!(cancels.get(), 1);
    assert!(waiting.called());

    let (ds, inputs) = pending::<u32>(2);
    let winner = race(inputs);
    ds[1].errback(Failure::msg("b")).unwrap();
    ds[0].errback(Failure::msg("a")).unwrap();
    let group = failure(&winner).downcast::<FailureGroup>().unwrap();
    let texts: Vec<String> = group.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(texts, ["a", "b"]);

    let cancels = counter();
    let (_ds, inputs): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| {
            let c = cancels.clone();
            Deferred::<u32>::with_canceller(move |_| bump(&c))
        })
        .unzip();
    let winner = race(inputs);
    winner.cancel();
    assert_eq!(cancels.get(), 2);
    assert!(failure(&winner).is::<Cancelled>());
}

// ---------------------------------------------------------------------------
// 10: unhandled failures

/// A failure nobody consumed is logged once, when the Deferred goes away,
/// naming where the Deferred was created.
#[test]
fn unhandled_failure_logged_once_with_creation_location() {
    capture_logs();
    let (r, d) = Deferred::<u8>::new();
    let created = line!() - 1;
    r.errback(Failure::msg("nobody listens")).unwrap();
    let other_handle = r.clone();
    drop(d);
    drop(r);
    assert!(error_logs().is_empty(), "not while a handle is alive");
    drop(other_handle);
    let logs = error_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("nobody listens"));
    let at = format!("created at {}:{}:", file!(), created);
    assert!(logs[0].contains(&at), "{} lacks {at}", logs[0]);
}

/// A panic in a callback becomes a `Panicked` failure down the chain.
#[test]
fn panicking_callback_becomes_panicked_failure() {
    let d = succeed(1u8).add_callback(|_| -> Result<u8, Failure> { panic!("kaboom") });
    let f = failure(&d);
    assert_eq!(
        f.downcast_ref::<Panicked>(),
        Some(&Panicked("kaboom".into()))
    );
    // The chain goes on: an errback can recover.
    let recovered = succeed(1u8)
        .add_callback(|_| -> Result<u8, Failure> { panic!("again") })
        .add_errback(|f| if f.is::<Panicked>() { Ok(9) } else { Err(f) });
    assert_eq!(value(&recovered), 9);
}

// ---------------------------------------------------------------------------
// 11: LoopingCall

fn counting_loop(clock: &ManualClock) -> (LoopingCall, Log<Duration>) {
    let times: Log<Duration> = Rc::default();
    let (t, c, start) = (times.clone(), clock.clock(), clock.now());
    let lc = LoopingCall::new(&clock.clock(), move || {
        t.borrow_mut().push(c.now() - start);
        Ok(())
    });
    (lc, times)
}

/// test_basicFunction: at 0.1 s with now=true, pump(0.05, 0.1, 0.1) gives
/// three calls (at 0, 0.1 and 0.2 s); stop fires the start Deferred.
#[test]
fn looping_call_basic() {
    let clock = ManualClock::new();
    let (lc, times) = counting_loop(&clock);
    let done = lc.start(ms(100), true).unwrap();
    clock.pump(&[ms(50), ms(100), ms(100)]);
    assert_eq!(times.borrow().len(), 3);
    assert_eq!(*times.borrow(), [ms(0), ms(150), ms(250)]);
    assert!(lc.running());
    assert!(!done.called());
    lc.stop().unwrap();
    assert!(!lc.running());
    assert_eq!(value(&done), ());
    assert!(clock.pending_calls().is_empty());
    assert_eq!(lc.stop(), Err(LoopingCallError::NotRunning));
}

/// test_reactorTimeSkips: missed intervals are skipped; calls stay on the
/// grid of the start time.
#[test]
fn looping_call_skips_missed_intervals() {
    let clock = ManualClock::new();
    let (lc, times) = counting_loop(&clock);
    let t0 = clock.now();
    lc.start(ms(500), true).unwrap();
    clock.advance(ms(500));
    assert_eq!(*times.borrow(), [ms(0), ms(500)]);
    clock.advance(secs(2)); // four intervals late: one call, not four
    assert_eq!(*times.borrow(), [ms(0), ms(500), ms(2500)]);
    let next = clock.pending_calls();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].time(), t0 + secs(3));
    clock.advance(ms(500));
    assert_eq!(*times.borrow(), [ms(0), ms(500), ms(2500), ms(3000)]);

    // A late call does not shift the grid either.
    clock.advance(ms(700)); // due at 3.5, runs at 3.7
    assert_eq!(clock.pending_calls()[0].time(), t0 + secs(4));
    lc.stop().unwrap();
}

/// with_count gets the number of intervals since its last call.
#[test]
fn looping_call_with_count() {
    let clock = ManualClock::new();
    let counts: Log<u64> = Rc::default();
    let c = counts.clone();
    let lc = LoopingCall::with_count(&clock.clock(), move |n| {
        c.borrow_mut().push(n);
        Ok(())
    });
    lc.start(secs(1), true).unwrap();
    assert_eq!(*counts.borrow(), [1]);
    clock.advance(ms(3500));
    assert_eq!(*counts.borrow(), [1, 3]);
    clock.advance(ms(500));
    assert_eq!(*counts.borrow(), [1, 3, 1]);
    lc.stop().unwrap();
}

#[test]
fn looping_call_negative_interval_is_an_error() {
    let clock = ManualClock::new();
    let (lc, times) = counting_loop(&clock);
    assert_eq!(
        lc.start_secs(-1.0, true).unwrap_err(),
        LoopingCallError::InvalidInterval(-1.0)
    );
    assert!(matches!(
        lc.start_secs(f64::NAN, true),
        Err(LoopingCallError::InvalidInterval(_))
    ));
    assert!(!lc.running());
    assert!(times.borrow().is_empty(), "never called");
    // Zero is allowed: once per clock turn.
    lc.start_secs(0.0, true).unwrap();
    clock.advance(Duration::ZERO);
    clock.advance(Duration::ZERO);
    assert_eq!(times.borrow().len(), 3);
    assert_eq!(
        lc.start(secs(1), true).unwrap_err(),
        LoopingCallError::AlreadyRunning
    );
    lc.stop().unwrap();
}

/// stop fires the start Deferred, also when called from the function.
#[test]
fn looping_call_stop_fires_start_deferred() {
    let clock = ManualClock::new();
    let (lc, times) = counting_loop(&clock);
    let done = lc.start(secs(1), false).unwrap();
    assert!(
        times.borrow().is_empty(),
        "now=false: first call after one interval"
    );
    clock.advance(secs(1));
    assert_eq!(times.borrow().len(), 1);
    lc.stop().unwrap();
    assert_eq!(value(&done), ());
    clock.advance(secs(5));
    assert_eq!(times.borrow().len(), 1, "no call after stop");

    // From inside the function.
    let handle: Rc<RefCell<Option<LoopingCall>>> = Rc::default();
    let (h, calls) = (handle.clone(), counter());
    let c = calls.clone();
    let lc = LoopingCall::new(&clock.clock(), move || {
        bump(&c);
        if c.get() == 2 {
            h.borrow().as_ref().unwrap().stop().unwrap();
        }
        Ok(())
    });
    *handle.borrow_mut() = Some(lc.clone());
    let done = lc.start(secs(1), true).unwrap();
    clock.advance(secs(1));
    assert_eq!(calls.get(), 2);
    assert_eq!(value(&done), ());
    assert!(clock.pending_calls().is_empty());
    handle.borrow_mut().take();
}

/// A failure from the function stops the loop and fails the Deferred.
#[test]
fn looping_call_failure_stops_it() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = calls.clone();
    let lc = LoopingCall::new(&clock.clock(), move || {
        bump(&c);
        if c.get() == 2 {
            Err(Failure::msg("tick failed"))
        } else {
            Ok(())
        }
    });
    let done = lc.start(secs(1), true).unwrap();
    clock.advance(secs(1));
    assert!(!lc.running());
    assert_eq!(failure(&done).to_string(), "tick failed");
    assert!(clock.pending_calls().is_empty());
    clock.advance(secs(3));
    assert_eq!(calls.get(), 2);
}

/// A returned Deferred delays the next call until it fires (then the next
/// call is on the grid); stop while it is pending fires the start Deferred
/// once it fires.
#[test]
fn looping_call_waits_for_returned_deferred() {
    let clock = ManualClock::new();
    let pending: Log<Resolver<()>> = Rc::default();
    let p = pending.clone();
    let lc = LoopingCall::new_deferred(&clock.clock(), move || {
        let (r, d) = Deferred::new();
        p.borrow_mut().push(r);
        d
    });
    let t0 = clock.now();
    let done = lc.start(secs(1), true).unwrap();
    assert_eq!(pending.borrow().len(), 1);
    clock.advance(secs(1));
    clock.advance(secs(1));
    assert_eq!(pending.borrow().len(), 1, "waits for the first Deferred");
    assert!(clock.pending_calls().is_empty());
    clock.advance(ms(500)); // t = 2.5 s
    let first = pending.borrow()[0].clone();
    first.callback(()).unwrap();
    let next = clock.pending_calls();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].time(), t0 + secs(3));
    clock.advance(ms(500));
    assert_eq!(pending.borrow().len(), 2);

    lc.stop().unwrap();
    assert!(!done.called(), "the second call's Deferred is pending");
    let second = pending.borrow()[1].clone();
    second.callback(()).unwrap();
    assert_eq!(value(&done), ());
    assert!(clock.pending_calls().is_empty());
}

// ---------------------------------------------------------------------------
// 12: defer_later, sleep

#[test]
fn defer_later_fires_with_value() {
    let clock = ManualClock::new();
    let d = defer_later(&clock.clock(), secs(3), || Ok(5u8));
    assert_eq!(d.created_at().line(), line!() - 1, "names the caller");
    clock.advance(ms(2_999));
    assert!(!d.called());
    clock.advance(ms(1));
    assert_eq!(value(&d), 5);
}

#[test]
fn defer_later_fails_if_function_fails() {
    let clock = ManualClock::new();
    let d = defer_later::<u8>(&clock.clock(), secs(1), || {
        Err(Failure::msg("late failure"))
    });
    let p = defer_later::<u8>(&clock.clock(), secs(1), || panic!("late panic"));
    clock.advance(secs(1));
    assert_eq!(failure(&d).to_string(), "late failure");
    assert!(failure(&p).is::<Panicked>());
}

#[test]
fn defer_later_cancel_leaves_no_pending_call() {
    let clock = ManualClock::new();
    let ran = counter();
    let r = ran.clone();
    let d = defer_later(&clock.clock(), secs(1), move || {
        bump(&r);
        Ok(())
    });
    assert_eq!(clock.pending_calls().len(), 1);
    d.cancel();
    assert!(clock.pending_calls().is_empty());
    assert!(failure(&d).is::<Cancelled>());
    clock.advance(secs(2));
    assert_eq!(ran.get(), 0);

    let nap = sleep(&clock.clock(), secs(1));
    let waiting = nap.add_callback(|()| Ok("woke"));
    clock.advance(secs(1));
    assert_eq!(value(&waiting), "woke");
}

// ---------------------------------------------------------------------------
// 13: async/await

#[test]
fn async_awaits_three_deferreds_in_sequence() {
    let (ds, inputs) = pending::<u32>(3);
    let steps: Log<u32> = Rc::default();
    let s = steps.clone();
    let d = ensure_deferred(async move {
        let mut total = 0;
        for input in inputs {
            let v = input.await?;
            s.borrow_mut().push(v);
            total += v;
        }
        Ok(total)
    });
    assert!(!d.called());
    run_pending();
    ds[0].callback(1).unwrap();
    assert!(steps.borrow().is_empty(), "firing only wakes the task");
    run_pending();
    assert_eq!(*steps.borrow(), [1]);
    ds[1].callback(2).unwrap();
    ds[2].callback(3).unwrap();
    run_pending();
    assert_eq!(*steps.borrow(), [1, 2, 3]);
    assert_eq!(value(&d), 6);
}

#[test]
fn async_question_mark_failure_reaches_errback() {
    let (input, i) = Deferred::<u32>::new();
    let after: Rc<Cell<bool>> = Rc::default();
    let a = after.clone();
    let d = ensure_deferred(async move {
        let v = i.await?;
        a.set(true);
        Ok(v)
    });
    let seen: Log<String> = Rc::default();
    let s = seen.clone();
    let handled = d.add_errback(move |f| {
        s.borrow_mut().push(f.to_string());
        Ok(0)
    });
    input.errback(Failure::msg("fetch failed")).unwrap();
    run_pending();
    assert_eq!(*seen.borrow(), ["fetch failed"]);
    assert!(!after.get(), "`?` returned early");
    assert_eq!(value(&handled), 0);
}

#[test]
fn cancelling_ensure_deferred_drops_the_future() {
    struct DropFlag(Rc<Cell<bool>>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped: Rc<Cell<bool>> = Rc::default();
    let guard = DropFlag(dropped.clone());
    let (never, n) = Deferred::<u32>::new();
    let d = ensure_deferred(async move {
        let _guard = guard;
        let v = n.await?;
        Ok(v)
    });
    run_pending();
    assert!(!dropped.get());
    d.cancel();
    assert!(dropped.get());
    assert!(failure(&d).is::<Cancelled>());
    // A late fire of what it awaited wakes nothing.
    never.callback(1).unwrap();
    assert!(!has_pending());
}

// ---------------------------------------------------------------------------
// retry

/// A backoff with exact delays: 1, 2, 4, then capped at 5 s.
fn exact_backoff() -> Backoff {
    Backoff::default()
        .initial(secs(1))
        .factor(2.0)
        .max_delay(secs(5))
        .jitter(0.0)
}

#[test]
fn backoff_delays_grow_cap_and_jitter() {
    let b = exact_backoff();
    let delays: Vec<Duration> = (0..6).map(|n| b.delay_for(n, 0.5)).collect();
    assert_eq!(delays, [1, 2, 4, 5, 5, 5].map(secs));
    let j = b.clone().jitter(0.5);
    assert_eq!(j.delay_for(1, 0.0), secs(1));
    assert_eq!(j.delay_for(1, 1.0), secs(3));
    assert_eq!(j.delay_for(3, 1.0), secs(5), "capped after jitter");
    assert_eq!(j.delay_for(u32::MAX, 0.5), secs(5), "no overflow");
    for attempt in 0..10 {
        let d = j.sample_delay(attempt);
        assert!(d <= secs(5));
    }
}

/// Attempts happen after growing, capped delays, on the manual clock.
#[test]
fn retry_delays_grow_and_cap() {
    let clock = ManualClock::new();
    let (c, t0) = (clock.clock(), clock.now());
    let attempts: Log<Duration> = Rc::default();
    let a = attempts.clone();
    let d = retry(&clock.clock(), exact_backoff(), move || {
        a.borrow_mut().push(c.now() - t0);
        fail::<u8>(Failure::msg("refused"))
    });
    for _ in 0..5 {
        let next = clock.pending_calls();
        assert_eq!(next.len(), 1);
        clock.advance(next[0].time() - clock.now());
    }
    assert_eq!(*attempts.borrow(), [0, 1, 3, 7, 12, 17].map(secs));
    assert!(!d.called(), "no retry limit");
    d.cancel();
    assert!(clock.pending_calls().is_empty(), "cancel stops the timer");
    assert!(failure(&d).is::<Cancelled>());
    clock.advance(secs(100));
    assert_eq!(attempts.borrow().len(), 6);
}

#[test]
fn retry_gives_up_after_max_retries() {
    capture_logs();
    let clock = ManualClock::new();
    let calls = counter();
    let c = calls.clone();
    let d = retry(&clock.clock(), exact_backoff().max_retries(2), move || {
        bump(&c);
        fail::<u8>(Failure::msg(format!("attempt {} failed", c.get())))
    });
    clock.pump(&[secs(1), secs(2)]);
    assert_eq!(calls.get(), 3, "the first try and two retries");
    assert_eq!(failure(&d).to_string(), "attempt 3 failed");
    assert!(clock.pending_calls().is_empty());
    assert!(error_logs().is_empty(), "earlier failures were handled");
}

#[test]
fn retry_succeeds_on_a_later_attempt() {
    let clock = ManualClock::new();
    let calls = counter();
    let c = calls.clone();
    let d = retry(&clock.clock(), exact_backoff().max_retries(5), move || {
        bump(&c);
        if c.get() < 3 {
            fail(Failure::msg("not yet"))
        } else {
            succeed(c.get())
        }
    });
    clock.advance(secs(1));
    assert!(!d.called());
    clock.advance(secs(2));
    assert_eq!(value(&d), 3);
    assert!(clock.pending_calls().is_empty());
}

/// Cancelling while an attempt is in progress cancels that attempt and
/// makes no further one.
#[test]
fn retry_cancel_cancels_pending_attempt() {
    let clock = ManualClock::new();
    let cancels = counter();
    // The operations in progress (whoever would fire them holds them).
    let in_progress: Log<Resolver<u8>> = Rc::default();
    let (c, p) = (cancels.clone(), in_progress.clone());
    let d = retry(&clock.clock(), exact_backoff(), move || {
        let c = c.clone();
        let (r, attempt) = Deferred::with_canceller(move |_| bump(&c));
        p.borrow_mut().push(r);
        attempt
    });
    assert_eq!(in_progress.borrow().len(), 1);
    d.cancel();
    d.cancel();
    assert_eq!(cancels.get(), 1);
    assert!(in_progress.borrow()[0].called());
    assert!(failure(&d).is::<Cancelled>());
    assert!(clock.pending_calls().is_empty());
    clock.advance(secs(10));
    assert_eq!(in_progress.borrow().len(), 1, "no further attempt");
}

#[test]
fn dropping_a_long_unfired_chain_does_not_overflow_the_stack() {
    const N: usize = 100_000;
    let handle = std::thread::Builder::new()
        .name("bounded-stack-drop".into())
        .stack_size(256 * 1024)
        .spawn(|| {
            let (root, root_d) = Deferred::<u64>::new();
            let mut tail = root_d.add_callback(|v| Ok(v + 1));
            for _ in 1..N {
                tail = tail.add_callback(|v| Ok(v + 1));
            }
            drop(tail);
            // The chain hangs off `root`; dropping it drops every link.
            drop(root);
        })
        .unwrap();
    handle.join().expect("no stack overflow while dropping");
}

// ---------------------------------------------------------------------------
// One consumer, checked by the compiler; tasks polled only by the loop

/// Twisted's "add several callbacks to one chain": each `add_callback`
/// returns the chain, so three callbacks added one after another (chained,
/// or as separate statements) all run, in order, when the resolver fires.
#[test]
fn three_callbacks_added_one_after_another() {
    let order: Log<&str> = Rc::default();
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    let (r, d) = Deferred::<u32>::new();
    let d = d
        .add_callback(move |n| {
            o1.borrow_mut().push("a");
            Ok(n + 1)
        })
        .add_callback(move |n| {
            o2.borrow_mut().push("b");
            Ok(n * 10)
        })
        .add_callback(move |n| {
            o3.borrow_mut().push("c");
            Ok(format!("{n}"))
        });
    r.callback(1).unwrap();
    assert_eq!(*order.borrow(), ["a", "b", "c"]);
    assert_eq!(value(&d), "20");

    // The same as separate statements, on a Deferred that already fired.
    let seen: Log<u32> = Rc::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let d = succeed(5u32);
    let d = d.add_callback(move |n| {
        s1.borrow_mut().push(n);
        Ok(n + 1)
    });
    let d = d.add_callback(move |n| {
        s2.borrow_mut().push(n);
        Ok(n + 1)
    });
    let d = d.add_callback(move |n| {
        s3.borrow_mut().push(n);
        Ok(n + 1)
    });
    assert_eq!(*seen.borrow(), [5, 6, 7]);
    assert_eq!(value(&d), 8);
}

/// The one consumer left to a run-time check: `take_result` (a borrow)
/// followed by `add_callback` or `.await` on the same handle.
#[test]
fn take_result_then_add_callback_or_await_is_already_consumed() {
    let d = succeed(1u8);
    assert_eq!(value(&d), 1);
    let late = d.add_callback(|n| Ok(n + 1));
    assert!(failure(&late).is::<AlreadyConsumed>());

    let d = succeed(1u8);
    assert_eq!(value(&d), 1);
    let awaited = ensure_deferred(d); // polls `d` as a future
    run_pending();
    assert!(failure(&awaited).is::<AlreadyConsumed>());
}

/// A new task's first poll is only queued (tokio's `spawn`), and
/// `run_pending` runs it.
#[test]
fn ensure_deferred_queues_its_first_poll() {
    let polled = counter();
    let p = polled.clone();
    let d = ensure_deferred(async move {
        bump(&p);
        Ok(1u8)
    });
    assert_eq!(polled.get(), 0);
    assert!(has_pending());
    run_pending();
    assert_eq!(polled.get(), 1);
    assert_eq!(value(&d), 1);
    assert!(!has_pending());
}

/// A task awaiting a Deferred fired inside a callback that holds a
/// `RefCell` borrow the task also takes: the task is not polled inside the
/// callback (not even by a `run_pending` there), so it takes the borrow
/// after the callback returned.
#[test]
fn task_woken_inside_a_callback_runs_after_it_returns() {
    let shared: Rc<RefCell<Vec<&str>>> = Rc::default();
    let (r, awaited) = Deferred::<()>::new();
    let s = shared.clone();
    let task = ensure_deferred(async move {
        awaited.await?;
        s.borrow_mut().push("task");
        Ok(())
    });
    run_pending();
    let (trigger, trigger_d) = Deferred::<()>::new();
    let s = shared.clone();
    let after = trigger_d.add_callback(move |()| {
        let mut held = s.borrow_mut();
        held.push("callback start");
        r.callback(()).unwrap();
        run_pending(); // inside a callback: does nothing
        held.push("callback end");
        Ok(())
    });
    trigger.callback(()).unwrap();
    assert_eq!(value(&after), ());
    assert_eq!(*shared.borrow(), ["callback start", "callback end"]);
    run_pending();
    assert_eq!(*shared.borrow(), ["callback start", "callback end", "task"]);
    assert_eq!(value(&task), ());
}

/// A Deferred fired inside a callback runs right after that callback
/// returns: before the firing chain's next callback, not at the end of it.
#[test]
fn deferred_fired_in_a_callback_runs_before_the_next_callback() {
    let order: Log<&str> = Rc::default();
    let (inner_r, inner) = Deferred::<()>::new();
    let o = order.clone();
    let inner_done = inner.add_callback(move |()| {
        o.borrow_mut().push("inner");
        Ok(())
    });
    let (outer_r, outer) = Deferred::<()>::new();
    let o = order.clone();
    let outer = outer.add_callback(move |()| {
        o.borrow_mut().push("outer 1");
        inner_r.callback(()).unwrap();
        assert_eq!(*o.borrow(), ["outer 1"], "not inside the callback");
        Ok(())
    });
    let o = order.clone();
    let outer = outer.add_callback(move |()| {
        o.borrow_mut().push("outer 2");
        Ok(())
    });
    outer_r.callback(()).unwrap();
    assert_eq!(*order.borrow(), ["outer 1", "inner", "outer 2"]);
    assert!(outer.called() && inner_done.called());
}

/// A chain whose callbacks keep the value's type reuses one box for it:
/// the result still comes out right through type changes and back.
#[test]
fn chains_that_change_type_and_back_carry_the_right_values() {
    let (r, d) = Deferred::<u64>::new();
    let d = d
        .add_callback(|n| Ok(n + 1))
        .add_callback(|n| Ok(n.to_string()))
        .add_callback(|s| Ok(format!("{s}!")))
        .add_callback(|s| Ok(s.len() as u64))
        .add_callback(|n| Ok(n * 10))
        .add_errback(|_| Ok(0));
    r.callback(41).unwrap();
    assert_eq!(value(&d), 30);
}
