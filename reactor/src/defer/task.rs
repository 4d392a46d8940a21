//! Running `async` code as Deferreds: [`ensure_deferred`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use super::deferred::{Deferred, Outcome, Resolver};
use super::failure::{Failure, Panicked};
use super::runner::{self, Job, TaskId};

/// Runs a future as a Deferred (Twisted's `ensureDeferred` /
/// `Deferred.fromCoroutine`), always on this thread. Its output fires the
/// returned Deferred. Cancelling that Deferred drops the future. A panic
/// while polling becomes a [`Panicked`] failure.
///
/// The future is not polled here: like tokio's `spawn`, this only queues its
/// first poll. Waking it later only queues it too. The reactor's loop polls
/// queued tasks on every iteration; code without a running reactor calls
/// [`run_pending`](super::run_pending). Wakes from other threads need a
/// reactor running on this thread, which picks them up through its waker.
///
/// ```
/// use gyre_reactor::defer::{ensure_deferred, run_pending, Deferred};
///
/// let (a, a_done) = Deferred::<u32>::new();
/// let (b, b_done) = Deferred::<u32>::new();
/// let sum = ensure_deferred(async move { Ok(a_done.await? + b_done.await?) });
/// a.callback(1).unwrap();
/// b.callback(2).unwrap();
/// assert!(!sum.called(), "not polled yet");
/// run_pending();
/// assert_eq!(sum.take_result().unwrap().unwrap(), 3);
/// ```
#[track_caller]
pub fn ensure_deferred<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Outcome<T>> + 'static,
{
    let cell: Rc<RefCell<Option<Weak<Task<T>>>>> = Rc::default();
    let for_cancel = Rc::clone(&cell);
    // The canceller drops the future; the Deferred then fails with
    // `Cancelled` (the task never fires it after a cancel).
    let (resolver, deferred) = Deferred::with_canceller(move |_r| {
        let task = for_cancel.borrow_mut().take().and_then(|w| w.upgrade());
        if let Some(task) = task {
            task.cancel();
        }
    });
    let task = Rc::new(Task {
        future: RefCell::new(Some(Box::pin(future))),
        result: resolver,
        id: Cell::new(None),
        waker: RefCell::new(None),
        state: Cell::new(State::Scheduled),
    });
    *cell.borrow_mut() = Some(Rc::downgrade(&task));
    let (id, waker) = runner::register_task(Rc::clone(&task) as Rc<dyn Job>);
    task.id.set(Some(id));
    *task.waker.borrow_mut() = Some(waker);
    runner::enqueue_task(task as Rc<dyn Job>);
    deferred
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Idle,
    Scheduled,
    Running,
    /// Woken while running: poll again when this poll returns.
    RunningWoken,
    Done,
}

/// A spawned future, pinned on the heap.
type LocalFuture<T> = Pin<Box<dyn Future<Output = Outcome<T>>>>;

struct Task<T: 'static> {
    future: RefCell<Option<LocalFuture<T>>>,
    result: Resolver<T>,
    id: Cell<Option<TaskId>>,
    waker: RefCell<Option<Waker>>,
    state: Cell<State>,
}

impl<T: 'static> Task<T> {
    /// Drops the future and fails the Deferred with `Cancelled` (through the
    /// canceller's caller). During a poll, the future is dropped when the
    /// poll returns.
    fn cancel(&self) {
        match self.state.get() {
            State::Running | State::RunningWoken => {
                // Finish after the poll: `run` sees Done and drops the future.
                self.state.set(State::Done);
            }
            State::Done => {}
            State::Idle | State::Scheduled => {
                self.state.set(State::Done);
                self.finish();
            }
        }
    }

    /// Forgets the task and drops its future, outside any borrow.
    fn finish(&self) {
        let future = self.future.borrow_mut().take();
        let entry = self.id.take().and_then(runner::unregister_task);
        self.waker.borrow_mut().take();
        drop(future);
        drop(entry);
    }
}

impl<T: 'static> Job for Task<T> {
    fn mark_scheduled(&self) -> bool {
        match self.state.get() {
            State::Idle => {
                self.state.set(State::Scheduled);
                true
            }
            State::Running => {
                self.state.set(State::RunningWoken);
                false
            }
            State::Scheduled | State::RunningWoken | State::Done => false,
        }
    }

    fn run(self: Rc<Self>) {
        loop {
            if self.state.get() == State::Done {
                return;
            }
            self.state.set(State::Running);
            let Some(waker) = self.waker.borrow().clone() else {
                return;
            };
            let mut cx = Context::from_waker(&waker);
            let polled = {
                let mut slot = self.future.borrow_mut();
                let Some(future) = slot.as_mut() else {
                    return;
                };
                catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)))
            };
            let outcome = match polled {
                Ok(Poll::Pending) => match self.state.get() {
                    State::RunningWoken => continue,
                    State::Done => {
                        self.finish();
                        return;
                    }
                    _ => {
                        self.state.set(State::Idle);
                        return;
                    }
                },
                Ok(Poll::Ready(outcome)) => outcome,
                Err(payload) => Err(Failure::new(Panicked::from_payload(&*payload))),
            };
            let cancelled = self.state.get() == State::Done;
            self.state.set(State::Done);
            self.finish();
            if !cancelled {
                let _ = self.result.resolve(outcome);
            }
            return;
        }
    }
}
