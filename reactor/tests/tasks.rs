//! Tasks and the loop, on a real reactor: waking a task only enqueues it and
//! the loop polls it (never `callback()`), and one reactor per thread.

mod common;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use common::{reactor, wait};
use gyre_reactor::defer::{ensure_deferred, Deferred};
use gyre_reactor::Reactor;

/// Issue 9, Done-when 2: a task awaiting a Deferred that is fired from a
/// `call_soon` callback holding a `RefCell` borrow, which the task takes too
/// after its await. The task is not polled inside `callback()`: no "already
/// borrowed" panic, and it runs after the callback returned.
#[test]
fn task_woken_inside_a_call_soon_callback_runs_after_it_returns() {
    let reactor = reactor();
    let order: Rc<RefCell<Vec<&str>>> = Rc::default();
    let (resolver, awaited) = Deferred::<u32>::new();

    let in_task = Rc::clone(&order);
    let task = reactor.spawn(async move {
        let n = awaited.await?;
        // The firing callback held this borrow when it fired `awaited`.
        in_task.borrow_mut().push("task resumed");
        Ok(n)
    });

    let in_callback = Rc::clone(&order);
    reactor.call_soon(move || {
        let mut held = in_callback.borrow_mut();
        held.push("callback start");
        resolver.callback(7).expect("fired once");
        held.push("callback end");
    });

    wait(&reactor, "the task", || task.called());
    let outcome = task.take_result().expect("fired");
    assert_eq!(outcome.expect("the task did not panic"), 7);
    assert_eq!(
        *order.borrow(),
        ["callback start", "callback end", "task resumed"]
    );
}

/// The same with a task from `ensure_deferred`, fired from inside a
/// Deferred callback (a chain running synchronously) that holds the borrow.
#[test]
fn task_woken_inside_a_deferred_callback_runs_after_it_returns() {
    let reactor = reactor();
    let order: Rc<RefCell<Vec<&str>>> = Rc::default();
    let (resolver, awaited) = Deferred::<()>::new();

    let in_task = Rc::clone(&order);
    let task = ensure_deferred(async move {
        awaited.await?;
        in_task.borrow_mut().push("task resumed");
        Ok(())
    });

    let (trigger, chain) = Deferred::<()>::new();
    let in_callback = Rc::clone(&order);
    let chain = chain.add_callback(move |()| {
        let mut held = in_callback.borrow_mut();
        held.push("callback start");
        resolver.callback(()).expect("fired once");
        held.push("callback end");
        Ok(())
    });
    reactor.call_soon(move || {
        trigger.callback(()).expect("fired once");
    });

    wait(&reactor, "the task", || task.called());
    assert!(task.take_result().expect("fired").is_ok(), "no panic");
    assert!(chain.take_result().expect("fired").is_ok());
    assert_eq!(
        *order.borrow(),
        ["callback start", "callback end", "task resumed"]
    );
}

/// A second live reactor on one thread is a clear error, while any handle of
/// the first is alive.
#[test]
fn second_reactor_on_a_thread_is_an_error() {
    let first = reactor();
    let clone = first.clone();
    drop(first);
    let err = Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect_err("a second reactor while the first is alive");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert!(
        err.to_string().contains("one reactor per thread"),
        "message: {err}"
    );
    // The first one is unaffected and still runs.
    let (resolver, d) = Deferred::<u8>::new();
    clone.call_soon(move || resolver.callback(1).expect("fired once"));
    wait(&clone, "the first reactor's call_soon", || d.called());
    assert_eq!(d.take_result().expect("fired").expect("value"), 1);

    // Another thread may have its own.
    let other = std::thread::spawn(|| {
        Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .map(drop)
            .map_err(|e| e.kind())
    });
    assert_eq!(other.join().expect("no panic"), Ok(()));
}

/// A reactor built after the first was dropped works, including wakes of
/// its tasks from other threads (its notifier is the one installed).
#[test]
fn reactor_built_after_the_first_was_dropped_works() {
    let first = reactor();
    let d = first.defer_to_thread(|| 1);
    wait(&first, "the first reactor's thread job", || d.called());
    drop(first);

    let second = reactor();
    let work = second.defer_to_thread(|| 20);
    let task = second.spawn(async move { Ok(work.await? + 1) });
    wait(&second, "a task woken from the pool", || task.called());
    assert_eq!(task.take_result().expect("fired").expect("value"), 21);
}
