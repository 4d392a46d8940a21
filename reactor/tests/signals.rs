//! `Reactor::on_signal`: a program's own signal handlers run on the loop.
//!
//! Each test raises a real signal in this process (`signal_hook`'s safe
//! `raise`) and watches a different signal, so that tests running in
//! parallel threads never see each other's deliveries. Every wait is a
//! `run_until` with a generous bound.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use gyre_reactor::defer::Deferred;
use gyre_reactor::signal::{SIGKILL, SIGUSR1, SIGUSR2, SIGWINCH};
use gyre_reactor::{Phase, Reactor, SystemEvent};
use signal_hook::low_level::raise;

const WAIT: Duration = Duration::from_secs(20);

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap()
}

/// The callback runs on the loop once per delivery (the loop reads the
/// pipe between the two raises), survives its own panic, and no longer
/// runs once cancelled.
#[test]
fn a_signal_runs_its_callback_on_the_loop_until_cancelled() {
    let reactor = reactor();
    let calls = Rc::new(Cell::new(0u32));
    let seen = Rc::clone(&calls);
    let handler = reactor
        .on_signal(SIGUSR1, move |_| {
            seen.set(seen.get() + 1);
            if seen.get() == 1 {
                panic!("the first call panics; the handler must stay");
            }
        })
        .unwrap();
    assert_eq!(handler.signal(), SIGUSR1);
    assert!(handler.is_active());

    raise(SIGUSR1).unwrap();
    assert!(reactor.run_until(|| calls.get() == 1, WAIT).unwrap());
    raise(SIGUSR1).unwrap();
    assert!(reactor.run_until(|| calls.get() == 2, WAIT).unwrap());

    handler.cancel();
    assert!(!handler.is_active());
    handler.cancel();
    // Cancelled: the delivery is ignored (signal-hook keeps its handler, so
    // the default action, which would kill this process, does not return).
    raise(SIGUSR1).unwrap();
    for _ in 0..10 {
        reactor.iterate(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(calls.get(), 2);
}

/// The callback may call any reactor API: here it stops the loop that
/// `run` is running (and cancels itself on the way).
#[test]
fn a_signal_callback_may_stop_the_reactor_and_cancel_itself() {
    let reactor = reactor();
    let handler: Rc<RefCell<Option<gyre_reactor::SignalHandler>>> = Rc::new(RefCell::new(None));
    let own = Rc::clone(&handler);
    let installed = reactor
        .on_signal(SIGUSR2, move |r| {
            if let Some(h) = own.borrow().as_ref() {
                h.cancel();
            }
            r.stop().unwrap();
        })
        .unwrap();
    *handler.borrow_mut() = Some(installed);
    reactor.call_when_running(|_| raise(SIGUSR2).unwrap());
    reactor.run().unwrap();
    assert!(!handler.borrow().as_ref().unwrap().is_active());
}

/// A handler still runs while shutdown waits for a before-shutdown
/// Deferred (a graceful drain): here the Deferred is fired by the signal.
/// (Without that, `run` would return only after the shutdown time-out, and
/// the assertion below would fail.)
#[test]
fn a_signal_is_handled_while_shutdown_waits_for_a_trigger() {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .shutdown_timeout(WAIT)
        .build()
        .unwrap();
    let (resolver, drained) = Deferred::<()>::new();
    let fired_by_signal = Rc::new(Cell::new(false));
    let fired = Rc::clone(&fired_by_signal);
    let resolver = RefCell::new(Some(resolver));
    let _handler = reactor
        .on_signal(SIGWINCH, move |_| {
            if let Some(r) = resolver.borrow_mut().take() {
                fired.set(true);
                r.callback(()).unwrap();
            }
        })
        .unwrap();
    let drained = RefCell::new(Some(drained));
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| {
        raise(SIGWINCH).unwrap();
        drained.borrow_mut().take()
    });
    reactor.call_when_running(|r| r.stop().unwrap());
    reactor.run().unwrap();
    assert!(fired_by_signal.get(), "the drain ended by the signal");
}

#[test]
fn signals_that_cannot_be_handled_are_an_error() {
    let reactor = reactor();
    let e = reactor.on_signal(SIGKILL, |_| {}).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    // Not a signal number at all: sigaction refuses it.
    assert!(reactor.on_signal(100_000, |_| {}).is_err());
    // The failed attempt left no slot behind.
    assert_eq!(reactor.connection_count(), 0);
}
