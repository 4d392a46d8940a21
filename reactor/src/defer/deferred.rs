//! [`Deferred`]: a result that is not there yet, with a typed callback chain.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::failure::{AlreadyCalled, Cancelled, Failure, Panicked, TimedOut};
use super::runner::{self, Job};
use crate::clock::Clock;

/// What a Deferred fires with: a value or a [`Failure`].
pub type Outcome<T> = Result<T, Failure>;

/// A result that is not there yet (Twisted's `Deferred`).
///
/// A `Deferred<T>` is fired once, with a `T` ([`callback`](Self::callback))
/// or a [`Failure`] ([`errback`](Self::errback)). Callbacks added with
/// [`add_callback`](Self::add_callback) and friends transform the result and
/// may change its type; each returns the Deferred of the next link, so a
/// chain reads top to bottom. A callback may also return another Deferred
/// ([`add_callback_deferred`](Self::add_callback_deferred)), and the chain
/// waits for it. Adding a callback to a Deferred that has fired runs it at
/// once. A panic inside a callback becomes a [`Panicked`] failure.
///
/// The handle is a cheap `Clone` (an `Rc`): the code that will fire the
/// Deferred keeps one clone, and hands another to the code that adds
/// callbacks. A Deferred's result goes to one consumer: the first
/// `add_*` call (or `.await`) takes it; a second consumer gets a failure
/// saying so ([`AlreadyConsumed`]).
///
/// Chains run from a per-thread queue, not by nested calls: firing or adding
/// a callback outside any callback runs everything that became runnable
/// before returning; inside a callback, it runs right after that callback
/// returns. No chain, however long or deeply nested, grows the stack.
///
/// A Deferred whose result is a failure that nobody consumed logs that
/// failure once, with where the Deferred was created and fired, when its last
/// handle is dropped.
///
/// A `Deferred` is also a [`Future`] with output `Result<T, Failure>`.
///
/// ```
/// use gyre_reactor::defer::{Deferred, Failure};
///
/// let d: Deferred<u32> = Deferred::new();
/// let parsed = d
///     .clone()
///     .add_callback(|n| Ok(n * 2))
///     .add_callback(|n| Ok(format!("got {n}")));
/// d.callback(21).unwrap();
/// assert_eq!(parsed.take_result().unwrap().unwrap(), "got 42");
/// ```
pub struct Deferred<T: 'static> {
    slot: Rc<Slot<T>>,
}

impl<T: 'static> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Deferred {
            slot: Rc::clone(&self.slot),
        }
    }
}

/// A second consumer asked for a Deferred's result, which had already gone
/// to (or been promised to) the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyConsumed {
    /// Where the Deferred was created.
    pub created_at: &'static Location<'static>,
}

impl fmt::Display for AlreadyConsumed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the result of the Deferred created at {} already has a consumer",
            self.created_at
        )
    }
}

impl std::error::Error for AlreadyConsumed {}

type Canceller<T> = Box<dyn FnOnce(&Deferred<T>)>;

struct Slot<T: 'static> {
    /// The result, between firing and the consumer taking it.
    result: RefCell<Option<Outcome<T>>>,
    /// Who gets the result.
    consumer: RefCell<Consumer<T>>,
    /// Fired (the result may already have moved on).
    fired: Cell<bool>,
    /// A cancel without a canceller fired this Deferred; swallow one later fire.
    suppress_already_called: Cell<bool>,
    created_at: &'static Location<'static>,
    fired_at: Cell<Option<&'static Location<'static>>>,
    canceller: RefCell<Option<Canceller<T>>>,
    /// What this Deferred waits on (the previous link, or the Deferred a
    /// callback returned): `cancel` is forwarded there.
    upstream: RefCell<Option<Weak<dyn Cancel>>>,
}

enum Consumer<T> {
    Nobody,
    /// The next link: gets the outcome and where the chain was fired.
    Callback(Box<dyn FnOnce(Outcome<T>, Option<&'static Location<'static>>)>),
    Waker(Waker),
    /// The result was taken (by `take_result`, `poll` or a callback).
    Done,
}

/// Type-erased cancellation, so a link can forward `cancel` upstream to a
/// Deferred of another type.
trait Cancel {
    fn cancel_dyn(self: Rc<Self>);
}

impl<T: 'static> Cancel for Slot<T> {
    fn cancel_dyn(self: Rc<Self>) {
        Deferred { slot: self }.cancel();
    }
}

impl<T: 'static> Job for Slot<T> {
    /// Hands the result to the callback consumer.
    fn run(self: Rc<Self>) {
        let consumer = std::mem::replace(&mut *self.consumer.borrow_mut(), Consumer::Done);
        match consumer {
            Consumer::Callback(f) => {
                let outcome = self.result.borrow_mut().take();
                match outcome {
                    Some(outcome) => f(outcome, self.fired_at.get()),
                    // Not fired yet (cannot happen: jobs are queued on firing).
                    None => *self.consumer.borrow_mut() = Consumer::Callback(f),
                }
            }
            other => *self.consumer.borrow_mut() = other,
        }
    }
}

impl<T: 'static> Drop for Slot<T> {
    fn drop(&mut self) {
        if let Some(Err(failure)) = self.result.get_mut().take() {
            log::error!("Unhandled error in Deferred: {}", failure.describe());
        }
        // An unfired consumer owns the next link, which owns the one after:
        // dropping it in place would recurse once per link. Hand it to the
        // run queue's iterative dropper instead.
        if let Consumer::Callback(next) = std::mem::replace(self.consumer.get_mut(), Consumer::Done)
        {
            runner::drop_later(Box::new(next));
        }
    }
}

impl<T: 'static> Default for Deferred<T> {
    #[track_caller]
    fn default() -> Self {
        Deferred::new()
    }
}

impl<T: 'static> Deferred<T> {
    /// A Deferred that has not fired, with no canceller.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let d: Deferred<u8> = Deferred::new();
    /// assert!(!d.called());
    /// ```
    #[track_caller]
    pub fn new() -> Deferred<T> {
        Deferred::at(Location::caller())
    }

    /// A Deferred whose [`cancel`](Self::cancel) calls `canceller` (once).
    /// The canceller may fire the Deferred (then its result wins); if it does
    /// not, the Deferred fails with [`Cancelled`].
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let d: Deferred<&str> = Deferred::with_canceller(|d| {
    ///     d.callback("stopped early").unwrap();
    /// });
    /// d.cancel();
    /// assert_eq!(d.take_result().unwrap().unwrap(), "stopped early");
    /// ```
    #[track_caller]
    pub fn with_canceller(canceller: impl FnOnce(&Deferred<T>) + 'static) -> Deferred<T> {
        let d = Deferred::at(Location::caller());
        *d.slot.canceller.borrow_mut() = Some(Box::new(canceller));
        d
    }

    fn at(created_at: &'static Location<'static>) -> Deferred<T> {
        Deferred {
            slot: Rc::new(Slot {
                result: RefCell::new(None),
                consumer: RefCell::new(Consumer::Nobody),
                fired: Cell::new(false),
                suppress_already_called: Cell::new(false),
                created_at,
                fired_at: Cell::new(None),
                canceller: RefCell::new(None),
                upstream: RefCell::new(None),
            }),
        }
    }

    /// Where this Deferred (or the first link of its chain) was created.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let d: Deferred<()> = Deferred::new();
    /// assert_eq!(d.created_at().file(), file!());
    /// ```
    pub fn created_at(&self) -> &'static Location<'static> {
        self.slot.created_at
    }

    /// Whether it has fired.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let d: Deferred<u8> = Deferred::new();
    /// d.callback(1).unwrap();
    /// assert!(d.called());
    /// ```
    pub fn called(&self) -> bool {
        self.slot.fired.get()
    }

    /// Fires with a value. A second fire is an [`AlreadyCalled`] error.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let d: Deferred<&str> = Deferred::new();
    /// assert!(d.callback("once").is_ok());
    /// assert!(d.callback("twice").is_err());
    /// ```
    #[track_caller]
    pub fn callback(&self, value: T) -> Result<(), AlreadyCalled> {
        self.fire(Ok(value), Location::caller())
    }

    /// Fires with a failure. A second fire is an [`AlreadyCalled`] error.
    ///
    /// ```
    /// use gyre_reactor::defer::{Deferred, Failure};
    ///
    /// let d: Deferred<u8> = Deferred::new();
    /// d.errback(Failure::msg("no luck")).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap_err().to_string(), "no luck");
    /// ```
    #[track_caller]
    pub fn errback(&self, failure: impl Into<Failure>) -> Result<(), AlreadyCalled> {
        self.fire(Err(failure.into()), Location::caller())
    }

    /// Fires with a value or a failure.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let d: Deferred<u8> = Deferred::new();
    /// d.resolve(Ok(3)).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap(), 3);
    /// ```
    #[track_caller]
    pub fn resolve(&self, outcome: Outcome<T>) -> Result<(), AlreadyCalled> {
        self.fire(outcome, Location::caller())
    }

    fn fire(
        &self,
        outcome: Outcome<T>,
        at: &'static Location<'static>,
    ) -> Result<(), AlreadyCalled> {
        let slot = &self.slot;
        if slot.fired.get() {
            if slot.suppress_already_called.replace(false) {
                return Ok(());
            }
            return Err(AlreadyCalled {
                created_at: slot.created_at,
                first_fired_at: slot.fired_at.get(),
            });
        }
        self.set_result(outcome, Some(at));
        Ok(())
    }

    /// Stores the result and wakes its consumer. `at` is the fire location
    /// for a root Deferred; links inherit their root's.
    fn set_result(&self, mut outcome: Outcome<T>, at: Option<&'static Location<'static>>) {
        let slot = &self.slot;
        slot.fired.set(true);
        slot.fired_at.set(at.or(slot.fired_at.get()));
        slot.canceller.borrow_mut().take();
        slot.upstream.borrow_mut().take();
        if let Err(failure) = &mut outcome {
            failure.note_locations(slot.created_at, slot.fired_at.get());
        }
        *slot.result.borrow_mut() = Some(outcome);
        self.dispatch();
    }

    /// If both a result and a consumer are present, moves the result on.
    fn dispatch(&self) {
        let slot = &self.slot;
        if !slot.fired.get() || slot.result.borrow().is_none() {
            return;
        }
        let waker = {
            let mut consumer = slot.consumer.borrow_mut();
            match &*consumer {
                Consumer::Callback(_) => None,
                Consumer::Waker(_) => match std::mem::replace(&mut *consumer, Consumer::Nobody) {
                    Consumer::Waker(w) => Some(w),
                    _ => None,
                },
                Consumer::Nobody | Consumer::Done => return,
            }
        };
        match waker {
            Some(waker) => {
                waker.wake();
                runner::drain();
            }
            None => runner::schedule(Rc::clone(slot) as Rc<dyn Job>),
        }
    }

    /// Takes the result if the Deferred has fired and nobody else consumes
    /// it (for synchronous code and tests: Twisted's `successResultOf`).
    ///
    /// A Deferred whose result was taken has no result left to log, so taking
    /// a failure this way handles it.
    ///
    /// ```
    /// use gyre_reactor::defer::{succeed, Deferred};
    ///
    /// assert_eq!(succeed(5).take_result().unwrap().unwrap(), 5);
    /// let pending: Deferred<u8> = Deferred::new();
    /// assert!(pending.take_result().is_none());
    /// ```
    pub fn take_result(&self) -> Option<Outcome<T>> {
        let slot = &self.slot;
        if !matches!(
            *slot.consumer.borrow(),
            Consumer::Nobody | Consumer::Waker(_)
        ) {
            return None;
        }
        let outcome = slot.result.borrow_mut().take()?;
        *slot.consumer.borrow_mut() = Consumer::Done;
        Some(outcome)
    }

    /// Cancels the Deferred (Twisted's `Deferred.cancel`).
    ///
    /// If it has not fired: calls the canceller given at creation (once,
    /// however often `cancel` is called); if there was none, or it did not
    /// fire the Deferred, the Deferred fails with [`Cancelled`] and one later
    /// fire is silently ignored. A Deferred waiting on another (the previous
    /// link of its chain, or a Deferred a callback returned) forwards the
    /// cancel there. After firing, `cancel` does nothing.
    ///
    /// ```
    /// use gyre_reactor::defer::{Cancelled, Deferred};
    ///
    /// let d: Deferred<u8> = Deferred::new();
    /// d.cancel();
    /// assert!(d.take_result().unwrap().unwrap_err().is::<Cancelled>());
    /// ```
    #[track_caller]
    pub fn cancel(&self) {
        let slot = &self.slot;
        if slot.fired.get() {
            return;
        }
        let canceller = slot.canceller.borrow_mut().take();
        if let Some(canceller) = canceller {
            canceller(self);
        } else {
            let upstream = slot.upstream.borrow().as_ref().and_then(Weak::upgrade);
            if let Some(upstream) = upstream {
                // The upstream's outcome (Cancelled, or what its canceller
                // fired) flows down to us through the chain.
                upstream.cancel_dyn();
                return;
            }
        }
        if !slot.fired.get() {
            slot.suppress_already_called.set(true);
            self.set_result(Err(Failure::new(Cancelled)), Some(Location::caller()));
        }
    }

    /// The general link: `f` gets the outcome and returns the next step.
    #[track_caller]
    fn link<U: 'static>(self, f: impl FnOnce(Outcome<T>) -> Step<U> + 'static) -> Deferred<U> {
        let next: Deferred<U> = Deferred::at(self.slot.created_at);
        *next.slot.upstream.borrow_mut() = Some(Rc::downgrade(&self.slot) as Weak<dyn Cancel>);
        let target = next.clone();
        self.set_consumer(
            Box::new(move |outcome, fired_at| {
                let step = match catch_unwind(AssertUnwindSafe(|| f(outcome))) {
                    Ok(step) => step,
                    Err(payload) => Step::Now(Err(Failure::new(Panicked::from_payload(&*payload)))),
                };
                match step {
                    Step::Now(outcome) => target.set_result(outcome, fired_at),
                    Step::Wait(inner) => target.wait_on(inner),
                }
            }),
            &next,
        );
        next
    }

    /// Installs the consumer of this Deferred's result and runs it if the
    /// result is there; if there already is a consumer, fails `next` instead.
    #[track_caller]
    fn set_consumer<U: 'static>(
        &self,
        callback: Box<dyn FnOnce(Outcome<T>, Option<&'static Location<'static>>)>,
        next: &Deferred<U>,
    ) {
        {
            let mut consumer = self.slot.consumer.borrow_mut();
            if !matches!(*consumer, Consumer::Nobody | Consumer::Waker(_)) {
                drop(consumer);
                let already = AlreadyConsumed {
                    created_at: self.slot.created_at,
                };
                next.set_result(Err(Failure::new(already)), Some(Location::caller()));
                return;
            }
            *consumer = Consumer::Callback(callback);
        }
        self.dispatch();
    }

    /// Makes this (unfired) link fire with whatever `inner` fires with. The
    /// inner result moves here, so a failure is logged (if at all) by the
    /// outer chain, never twice.
    #[track_caller]
    fn wait_on(&self, inner: Deferred<T>) {
        *self.slot.upstream.borrow_mut() = Some(Rc::downgrade(&inner.slot) as Weak<dyn Cancel>);
        let target = self.clone();
        inner.set_consumer(
            Box::new(move |outcome, fired_at| target.set_result(outcome, fired_at)),
            self,
        );
    }

    /// Adds a callback: `f` gets the value and returns the next link's
    /// result, of any type. A failure skips `f` and passes through.
    ///
    /// ```
    /// use gyre_reactor::defer::succeed;
    ///
    /// let d = succeed("42").add_callback(|s| Ok(s.parse::<i32>()?));
    /// assert_eq!(d.take_result().unwrap().unwrap(), 42);
    /// ```
    #[track_caller]
    pub fn add_callback<U: 'static>(
        self,
        f: impl FnOnce(T) -> Result<U, Failure> + 'static,
    ) -> Deferred<U> {
        self.link(move |outcome| Step::Now(outcome.and_then(f)))
    }

    /// Adds an errback: `f` gets a failure and may recover (return `Ok`) or
    /// fail again. A value skips `f` and passes through.
    ///
    /// ```
    /// use gyre_reactor::defer::{fail, Failure};
    ///
    /// let d = fail::<u8>(Failure::msg("no")).add_errback(|_f| Ok(7));
    /// assert_eq!(d.take_result().unwrap().unwrap(), 7);
    /// ```
    #[track_caller]
    pub fn add_errback(
        self,
        f: impl FnOnce(Failure) -> Result<T, Failure> + 'static,
    ) -> Deferred<T> {
        self.link(move |outcome| Step::Now(outcome.or_else(f)))
    }

    /// Adds a callback and an errback at the same point of the chain (the
    /// errback does not see the callback's failure).
    ///
    /// ```
    /// use gyre_reactor::defer::succeed;
    ///
    /// let d = succeed(2).add_callbacks(|v| Ok(v * 10), |_failure| Ok(0));
    /// assert_eq!(d.take_result().unwrap().unwrap(), 20);
    /// ```
    #[track_caller]
    pub fn add_callbacks<U: 'static>(
        self,
        on_value: impl FnOnce(T) -> Result<U, Failure> + 'static,
        on_failure: impl FnOnce(Failure) -> Result<U, Failure> + 'static,
    ) -> Deferred<U> {
        self.link(move |outcome| {
            Step::Now(match outcome {
                Ok(v) => on_value(v),
                Err(f) => on_failure(f),
            })
        })
    }

    /// Adds a function that sees the outcome either way (Twisted's `addBoth`).
    ///
    /// ```
    /// use gyre_reactor::defer::{fail, Failure};
    ///
    /// let d = fail::<u8>(Failure::msg("lost")).add_both(|outcome| Ok(outcome.is_ok()));
    /// assert!(!d.take_result().unwrap().unwrap());
    /// ```
    #[track_caller]
    pub fn add_both<U: 'static>(
        self,
        f: impl FnOnce(Outcome<T>) -> Outcome<U> + 'static,
    ) -> Deferred<U> {
        self.link(move |outcome| Step::Now(f(outcome)))
    }

    /// Adds a callback that returns another Deferred; the chain waits for it
    /// and goes on with its result (Twisted's chaining).
    ///
    /// ```
    /// use gyre_reactor::defer::{succeed, Deferred};
    ///
    /// let inner: Deferred<u32> = Deferred::new();
    /// let waiting = inner.clone();
    /// let d = succeed(1).add_callback_deferred(move |_| waiting);
    /// assert!(!d.called());
    /// inner.callback(5).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap(), 5);
    /// ```
    #[track_caller]
    pub fn add_callback_deferred<U: 'static>(
        self,
        f: impl FnOnce(T) -> Deferred<U> + 'static,
    ) -> Deferred<U> {
        self.link(move |outcome| match outcome {
            Ok(v) => Step::Wait(f(v)),
            Err(e) => Step::Now(Err(e)),
        })
    }

    /// Adds an errback that returns another Deferred to wait for.
    ///
    /// ```
    /// use gyre_reactor::defer::{fail, succeed, Failure};
    ///
    /// let d = fail::<u8>(Failure::msg("first try")).add_errback_deferred(|_| succeed(7));
    /// assert_eq!(d.take_result().unwrap().unwrap(), 7);
    /// ```
    #[track_caller]
    pub fn add_errback_deferred(
        self,
        f: impl FnOnce(Failure) -> Deferred<T> + 'static,
    ) -> Deferred<T> {
        self.link(move |outcome| match outcome {
            Ok(v) => Step::Now(Ok(v)),
            Err(e) => Step::Wait(f(e)),
        })
    }

    /// Adds a function of the outcome that returns another Deferred to wait for.
    ///
    /// ```
    /// use gyre_reactor::defer::succeed;
    ///
    /// let d = succeed(1).add_both_deferred(|outcome| succeed(outcome.is_ok()));
    /// assert!(d.take_result().unwrap().unwrap());
    /// ```
    #[track_caller]
    pub fn add_both_deferred<U: 'static>(
        self,
        f: impl FnOnce(Outcome<T>) -> Deferred<U> + 'static,
    ) -> Deferred<U> {
        self.link(move |outcome| Step::Wait(f(outcome)))
    }

    /// Sends this Deferred's result into `other` (Twisted's `chainDeferred`);
    /// cancelling `other` cancels this one. If `other` has already fired,
    /// nothing is chained and the error says so (this Deferred keeps its
    /// result).
    ///
    /// ```
    /// use gyre_reactor::defer::{succeed, Deferred};
    ///
    /// let outer: Deferred<u8> = Deferred::new();
    /// succeed(9).chain_deferred(&outer).unwrap();
    /// assert_eq!(outer.take_result().unwrap().unwrap(), 9);
    /// ```
    #[track_caller]
    pub fn chain_deferred(self, other: &Deferred<T>) -> Result<(), AlreadyCalled> {
        if other.called() {
            return Err(AlreadyCalled {
                created_at: other.slot.created_at,
                first_fired_at: other.slot.fired_at.get(),
            });
        }
        other.wait_on(self);
        Ok(())
    }

    /// Fails with [`TimedOut`] unless it fires within `timeout` on `clock`
    /// (Twisted's `addTimeout`). On time-out the Deferred is cancelled first,
    /// so callbacks added before this one see [`Cancelled`]; this link turns
    /// that into `TimedOut`. The timer is cancelled as soon as the Deferred
    /// fires.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::{Deferred, TimedOut};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let d: Deferred<()> = Deferred::new();
    /// let timed = d.clone().add_timeout(&clock.clock(), Duration::from_secs(5));
    /// clock.advance(Duration::from_secs(5));
    /// assert!(timed.take_result().unwrap().unwrap_err().is::<TimedOut>());
    /// ```
    #[track_caller]
    pub fn add_timeout(self, clock: &Clock, timeout: Duration) -> Deferred<T> {
        let timed_out = Rc::new(Cell::new(false));
        let to_cancel = Rc::downgrade(&self.slot);
        let flag = Rc::clone(&timed_out);
        let timer = clock.call_later(timeout, move || {
            if let Some(slot) = to_cancel.upgrade() {
                flag.set(true);
                Deferred { slot }.cancel();
            }
        });
        self.add_both(move |outcome| {
            let _ = timer.cancel();
            match outcome {
                Err(f) if timed_out.get() && f.is::<Cancelled>() => Err(f.wrap(TimedOut(timeout))),
                other => other,
            }
        })
    }
}

enum Step<U: 'static> {
    Now(Outcome<U>),
    Wait(Deferred<U>),
}

impl<T: 'static> Future for Deferred<T> {
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let slot = &self.slot;
        if let Some(outcome) = self.take_result() {
            return Poll::Ready(outcome);
        }
        let mut consumer = slot.consumer.borrow_mut();
        match &mut *consumer {
            Consumer::Nobody => *consumer = Consumer::Waker(cx.waker().clone()),
            Consumer::Waker(w) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            Consumer::Callback(_) | Consumer::Done => {
                return Poll::Ready(Err(Failure::new(AlreadyConsumed {
                    created_at: slot.created_at,
                })))
            }
        }
        Poll::Pending
    }
}

impl<T: 'static> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("created_at", &self.slot.created_at)
            .field("called", &self.slot.fired.get())
            .finish()
    }
}

/// A Deferred that has already fired with `value` (Twisted's `succeed`).
///
/// ```
/// use gyre_reactor::defer::succeed;
///
/// assert!(succeed("done").called());
/// ```
#[track_caller]
pub fn succeed<T: 'static>(value: T) -> Deferred<T> {
    let d = Deferred::at(Location::caller());
    d.set_result(Ok(value), Some(Location::caller()));
    d
}

/// A Deferred that has already failed (Twisted's `fail`).
///
/// ```
/// use gyre_reactor::defer::{fail, Failure};
///
/// let d = fail::<()>(Failure::msg("broken"));
/// assert!(d.take_result().unwrap().is_err());
/// ```
#[track_caller]
pub fn fail<T: 'static>(failure: impl Into<Failure>) -> Deferred<T> {
    let d = Deferred::at(Location::caller());
    d.set_result(Err(failure.into()), Some(Location::caller()));
    d
}

/// Calls `f` now and wraps what it returns in a fired Deferred; a panic
/// becomes a [`Panicked`] failure (Twisted's `maybeDeferred`).
///
/// ```
/// use gyre_reactor::defer::maybe_deferred;
///
/// let d = maybe_deferred(|| Ok::<_, gyre_reactor::defer::Failure>(3));
/// assert_eq!(d.take_result().unwrap().unwrap(), 3);
/// ```
#[track_caller]
pub fn maybe_deferred<T: 'static>(f: impl FnOnce() -> Outcome<T>) -> Deferred<T> {
    let d = Deferred::at(Location::caller());
    let outcome = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(outcome) => outcome,
        Err(payload) => Err(Failure::new(Panicked::from_payload(&*payload))),
    };
    d.set_result(outcome, Some(Location::caller()));
    d
}
