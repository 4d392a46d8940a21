//! [`timeout`]: a time limit for any future, not only a Deferred, on a
//! reactor's clock (tokio's `time::timeout`, Twisted's `addTimeout` for
//! coroutines).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::failure::TimedOut;
use crate::clock::{Clock, DelayedCall};

/// Runs `future` with a time limit of `duration` on `clock`: the returned
/// future gives `Ok(output)` if `future` completes first, or
/// `Err(`[`TimedOut`]`)` once `duration` has passed on the clock (then
/// `future` is dropped; a Deferred it awaited is not cancelled by that:
/// use [`Deferred::add_timeout`](super::Deferred::add_timeout) to cancel
/// one).
///
/// The timer starts here, not at the first poll, and lives on `clock`
/// (the reactor's, [`Reactor::clock`](crate::Reactor::clock)), so tests
/// drive it with a [`ManualClock`](crate::clock::ManualClock). It is
/// cancelled as soon as the future completes or is dropped, so nothing is
/// left on the clock. The future is checked first: one that is ready when
/// the time runs out still counts as in time.
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::defer::{ensure_deferred, run_pending, timeout, Deferred, Failure, TimedOut};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let (_never, answer) = Deferred::<u32>::new();
/// let limited = timeout(&clock.clock(), Duration::from_secs(5), answer);
/// let task = ensure_deferred(async move {
///     match limited.await {
///         Ok(n) => Ok(n?),
///         Err(TimedOut(after)) => Err(Failure::msg(format!("gave up after {after:?}"))),
///     }
/// });
/// run_pending();
/// clock.advance(Duration::from_secs(5));
/// run_pending();
/// let failure = task.take_result().unwrap().unwrap_err();
/// assert_eq!(failure.to_string(), "gave up after 5s");
/// assert!(clock.pending_calls().is_empty());
/// ```
pub fn timeout<F: Future>(clock: &Clock, duration: Duration, future: F) -> Timeout<F> {
    let shared = Rc::new(Shared {
        expired: Cell::new(false),
        waker: RefCell::new(None),
    });
    let weak: Weak<Shared> = Rc::downgrade(&shared);
    let timer = clock.call_later(duration, move || {
        if let Some(shared) = weak.upgrade() {
            shared.expired.set(true);
            let waker = shared.waker.borrow_mut().take();
            // No borrow held: the waker may do anything.
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    });
    Timeout {
        future: Some(Box::pin(future)),
        shared,
        timer,
        duration,
    }
}

/// The future [`timeout`] returns.
pub struct Timeout<F> {
    /// `None` once it has completed (either way).
    future: Option<Pin<Box<F>>>,
    shared: Rc<Shared>,
    timer: DelayedCall,
    duration: Duration,
}

/// What the timer and the future share.
struct Shared {
    expired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else {
            // Polled after completion: the time has run out for good.
            return Poll::Ready(Err(TimedOut(this.duration)));
        };
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            this.future = None;
            let _ = this.timer.cancel();
            return Poll::Ready(Ok(output));
        }
        if this.shared.expired.get() {
            this.future = None;
            return Poll::Ready(Err(TimedOut(this.duration)));
        }
        let mut waker = this.shared.waker.borrow_mut();
        match &mut *waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<F> Drop for Timeout<F> {
    fn drop(&mut self) {
        let _ = self.timer.cancel();
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("duration", &self.duration)
            .field("expired", &self.shared.expired.get())
            .field("done", &self.future.is_none())
            .finish()
    }
}
