//! The reactor's life cycle and scheduling: run/stop, triggers, timers on a
//! manual clock, and fairness between busy callbacks and I/O.

mod common;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use common::*;
use gyre_reactor::clock::{DelayedCall, TimerError};
use gyre_reactor::defer::Deferred;
use gyre_reactor::{factory_fn, Phase, Reactor, ReactorError, SystemEvent};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Test 1: `stop` before `run` is an error; `call_when_running` callbacks run
/// in order; shutdown triggers run before -> during -> after, and shutdown
/// waits for a before-trigger's Deferred before running `during`.
#[test]
fn life_cycle_and_shutdown_triggers() {
    let reactor = reactor();
    assert_eq!(reactor.stop(), Err(ReactorError::NotRunning));
    assert!(!reactor.is_running());

    let log: Shared<Vec<String>> = shared(Vec::new());
    let push = |log: &Shared<Vec<String>>, s: &str| log.borrow_mut().push(s.to_string());

    // Added out of phase order on purpose: phases, not insertion, decide.
    for (phase, name) in [
        (Phase::After, "after"),
        (Phase::During, "during"),
        (Phase::Before, "before"),
    ] {
        let log = log.clone();
        reactor.add_system_event_trigger(phase, SystemEvent::Shutdown, move |r| {
            push(&log, name);
            if phase != Phase::Before {
                return None;
            }
            // Shutdown must wait for this Deferred, fired later by a timer.
            let (fire, d) = Deferred::<()>::new();
            let log = log.clone();
            r.call_later(Duration::from_millis(1), move || {
                push(&log, "before's deferred fired");
                fire.callback(()).unwrap();
            });
            Some(d)
        });
    }
    let removed = {
        let log = log.clone();
        reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move |_| {
            push(&log, "removed trigger ran");
            None
        })
    };
    assert!(reactor.remove_system_event_trigger(removed));
    assert!(!reactor.remove_system_event_trigger(removed));
    {
        let log = log.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Startup, move |_| {
            push(&log, "startup");
            None
        });
    }
    for i in 0..3 {
        let log = log.clone();
        reactor.call_when_running(move |r| {
            assert!(r.is_running());
            push(&log, &format!("running {i}"));
        });
    }
    {
        let log = log.clone();
        reactor.call_when_running(move |r| {
            // Once running, call_when_running calls at once.
            let inner = log.clone();
            r.call_when_running(move |_| push(&inner, "nested, at once"));
            push(&log, "after nested");
            // The loop cannot be re-entered from its callbacks.
            let again = r.clone();
            r.call_soon(move || {
                assert_eq!(again.iterate(None), Err(ReactorError::Reentrant));
                assert_eq!(
                    again.run_until(|| true, BOUND),
                    Err(ReactorError::Reentrant)
                );
                assert_eq!(again.run(), Err(ReactorError::AlreadyRunning));
                again.stop().unwrap();
                // A second stop while stopping is an error, not a second shutdown.
                assert_eq!(again.stop(), Err(ReactorError::NotRunning));
            });
        });
    }

    reactor.run().unwrap();

    assert_eq!(
        *log.borrow(),
        [
            "startup",
            "running 0",
            "running 1",
            "running 2",
            "nested, at once",
            "after nested",
            "before",
            "before's deferred fired",
            "during",
            "after",
        ]
    );
    assert!(!reactor.is_running());
    assert_eq!(reactor.run(), Err(ReactorError::NotRestartable));
    assert_eq!(reactor.stop(), Err(ReactorError::NotRunning));
}

/// Test 3: timers on a manual clock through the reactor's `call_later`.
#[test]
fn timers_on_a_manual_clock() {
    let (manual, reactor) = manual_reactor();
    let log: Shared<Vec<&'static str>> = shared(Vec::new());
    let logger = |name: &'static str| {
        let log = log.clone();
        move || log.borrow_mut().push(name)
    };

    // call_later(2): nothing after 1 s, fires after 2 s, then inactive.
    let call = reactor.call_later(secs(2), logger("two"));
    assert!(call.active());
    manual.advance(secs(1));
    assert!(log.borrow().is_empty());
    assert!(call.active());
    manual.advance(secs(1));
    assert_eq!(*log.borrow(), ["two"]);
    assert!(!call.active());
    assert_eq!(call.cancel(), Err(TimerError::AlreadyCalled));

    // Cancelling a call from inside itself is an error.
    let me: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let self_cancel = Rc::new(Cell::new(None));
    {
        let handle = me.clone();
        let result = self_cancel.clone();
        let call = reactor.call_later(secs(1), move || {
            let call = handle.borrow().clone().unwrap();
            result.set(Some(call.cancel()));
        });
        *me.borrow_mut() = Some(call);
    }
    manual.advance(secs(1));
    assert_eq!(self_cancel.get(), Some(Err(TimerError::AlreadyCalled)));
    me.borrow_mut().take();

    // delay moves a call later; reset moves it to `now + delay`.
    log.borrow_mut().clear();
    let delayed = reactor.call_later(secs(5), logger("delayed"));
    delayed.delay(secs(3)).unwrap();
    assert_eq!(delayed.time(), manual.now() + secs(8));
    let reset = reactor.call_later(secs(10), logger("reset"));
    reset.reset(secs(1)).unwrap();
    assert_eq!(reset.time(), manual.now() + secs(1));
    manual.advance(secs(1));
    assert_eq!(*log.borrow(), ["reset"]);
    manual.advance(secs(4));
    assert_eq!(
        *log.borrow(),
        ["reset"],
        "the delayed call ran at its old time"
    );
    manual.advance(secs(3));
    assert_eq!(*log.borrow(), ["reset", "delayed"]);
    let cancelled = reactor.call_later(secs(1), logger("cancelled"));
    cancelled.cancel().unwrap();
    assert_eq!(cancelled.reset(secs(1)), Err(TimerError::AlreadyCancelled));
    manual.advance(secs(2));
    assert_eq!(*log.borrow(), ["reset", "delayed"]);

    // A reset inside another call keeps order: `a` resets `b` (due with it)
    // to one second later, where `c` was already due; a reset counts as
    // scheduled now, so `c` runs before `b`.
    log.borrow_mut().clear();
    let b_slot: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    {
        let b_slot = b_slot.clone();
        let log = log.clone();
        reactor.call_later(secs(1), move || {
            log.borrow_mut().push("a");
            let b = b_slot.borrow().clone().unwrap();
            b.reset(secs(1)).unwrap();
        });
    }
    *b_slot.borrow_mut() = Some(reactor.call_later(secs(1), logger("b")));
    reactor.call_later(secs(2), logger("c"));
    manual.advance(secs(1));
    assert_eq!(*log.borrow(), ["a"], "b was reset by a, in a's batch");
    manual.advance(secs(1));
    assert_eq!(*log.borrow(), ["a", "c", "b"]);

    // A zero-delay reset from inside a batch waits for the next batch, which
    // the reactor's own iteration runs, after the rest of the current one.
    log.borrow_mut().clear();
    let late: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    {
        let late = late.clone();
        let log = log.clone();
        reactor.call_later(secs(1), move || {
            log.borrow_mut().push("first");
            late.borrow()
                .clone()
                .unwrap()
                .reset(Duration::ZERO)
                .unwrap();
        });
    }
    reactor.call_later(secs(1), logger("second"));
    *late.borrow_mut() = Some(reactor.call_later(secs(60), logger("moved up")));
    manual.advance(secs(1));
    assert_eq!(*log.borrow(), ["first", "second"]);
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!(*log.borrow(), ["first", "second", "moved up"]);
    assert!(reactor.clock().pending_calls().is_empty());
}

/// Test 4: callbacks that reschedule themselves with zero delay forever
/// (`call_soon` and `call_later(0)`) do not starve a socket read.
#[test]
fn self_rescheduling_calls_do_not_starve_reads() {
    let reactor = reactor();
    let (protocol, seen) = Recorder::new(false);
    let protocol = RefCell::new(Some(protocol));
    let port = reactor
        .listen_tcp(
            any_port(),
            factory_fn(move |_| protocol.borrow_mut().take()),
        )
        .unwrap();

    let stop = Rc::new(Cell::new(false));
    let soon_runs = Rc::new(Cell::new(0u64));
    let later_runs = Rc::new(Cell::new(0u64));

    fn soon_forever(r: Reactor, runs: Rc<Cell<u64>>, stop: Rc<Cell<bool>>) {
        if stop.get() {
            return;
        }
        runs.set(runs.get() + 1);
        let again = r.clone();
        r.call_soon(move || soon_forever(again, runs, stop));
    }
    fn later_forever(r: Reactor, runs: Rc<Cell<u64>>, stop: Rc<Cell<bool>>) {
        if stop.get() {
            return;
        }
        runs.set(runs.get() + 1);
        let again = r.clone();
        r.call_later(Duration::ZERO, move || later_forever(again, runs, stop));
    }
    soon_forever(reactor.clone(), soon_runs.clone(), stop.clone());
    later_forever(reactor.clone(), later_runs.clone(), stop.clone());
    wait(&reactor, "the busy callbacks to get going", || {
        soon_runs.get() > 100 && later_runs.get() > 100
    });

    let mut client = std_connect(port.local_addr());
    client.write_all(b"a line of text\n").unwrap();
    wait(&reactor, "the line to arrive", || {
        seen.borrow().data == b"a line of text\n"
    });
    let (soon_then, later_then) = (soon_runs.get(), later_runs.get());
    assert!(soon_then > 100 && later_then > 100);
    // And they are still going.
    wait(&reactor, "the busy callbacks to go on", || {
        soon_runs.get() > soon_then + 10 && later_runs.get() > later_then + 10
    });
    stop.set(true);
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    let (soon_end, later_end) = (soon_runs.get(), later_runs.get());
    reactor.iterate(Some(Duration::ZERO)).unwrap();
    assert_eq!((soon_runs.get(), later_runs.get()), (soon_end, later_end));
}
