//! Tasks and the loop, on a real reactor: waking a task only enqueues it and
//! the loop polls it (never `callback()`), and several reactors on one thread.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use common::{reactor, wait};
use gyre_reactor::defer::{ensure_deferred, Deferred};

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

/// Two reactors on one thread are independent: each runs only its own
/// calls, and a task woken from another thread is polled whichever of them
/// iterates, because a remote wake reaches every loop of the thread (a
/// second reactor once silently replaced the first one's notifier, so the
/// first slept through the wake). Dropping one leaves the other's wakes
/// working.
#[test]
fn two_reactors_on_one_thread_are_independent() {
    let first = reactor();
    let second = reactor();
    let (resolver, d) = Deferred::<u8>::new();
    second.call_soon(move || resolver.callback(1).expect("fired once"));
    first
        .iterate(Some(std::time::Duration::ZERO))
        .expect("iterate");
    assert!(
        !d.called(),
        "the first loop does not run the second's calls"
    );
    wait(&second, "the second reactor's call_soon", || d.called());

    // A task woken from another thread while only the first loop runs
    // (built before the second, whose notifier once replaced the first's):
    // the wake reaches every loop of the thread.
    let slot: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
    let in_task = Arc::clone(&slot);
    let task = first.spawn(async move {
        std::future::poll_fn(|cx| {
            let mut state = in_task.lock().expect("lock");
            if state.0 {
                Poll::Ready(())
            } else {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        Ok(7)
    });
    let polled = Arc::clone(&slot);
    wait(&first, "the task's first poll", || {
        polled.lock().expect("lock").1.is_some()
    });
    let waker_side = Arc::clone(&slot);
    std::thread::spawn(move || {
        let waker = {
            let mut state = waker_side.lock().expect("lock");
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    })
    .join()
    .expect("waker thread");
    wait(&first, "the task, woken from another thread", || {
        task.called()
    });
    assert_eq!(task.take_result().expect("fired").expect("value"), 7);

    drop(first);
    let work = second.defer_to_thread(|| 1);
    let task = second.spawn(async move { Ok(work.await? + 1) });
    wait(
        &second,
        "a task woken from the pool after the first was dropped",
        || task.called(),
    );
    assert_eq!(task.take_result().expect("fired").expect("value"), 2);
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
