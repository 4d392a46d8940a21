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

/// A result that is not there yet (Twisted's `Deferred`): the consuming
/// handle.
///
/// [`Deferred::new`] returns two handles: a [`Resolver`], which fires the
/// result once, with a `T` ([`callback`](Resolver::callback)) or a
/// [`Failure`] ([`errback`](Resolver::errback)); and this `Deferred`, which
/// consumes it. Callbacks added with [`add_callback`](Self::add_callback) and
/// friends transform the result and may change its type; each takes the
/// Deferred by value and returns the Deferred of the next link, so a chain
/// reads top to bottom, and adding several callbacks one after another is
/// `let d = d.add_callback(..);` again and again. A callback may also return
/// another Deferred ([`add_callback_deferred`](Self::add_callback_deferred)),
/// and the chain waits for it. Adding a callback to a Deferred that has fired
/// runs it at once. A panic inside a callback becomes a [`Panicked`] failure.
///
/// The `Resolver` is a cheap `Clone`; the `Deferred` is not: a result has
/// exactly one consumer, and the compiler checks it. The one consumer left
/// to a run-time check is mixing [`take_result`](Self::take_result) (which
/// takes `&self`) with a later `add_*` or `.await` on the same handle: that
/// later consumer gets an [`AlreadyConsumed`] failure.
///
/// # Two rules: chains run when fired, tasks run from the loop
///
/// - **Deferred callback chains run synchronously when fired**, as in
///   Twisted. Firing (or adding a callback to a fired Deferred) outside any
///   callback runs everything that became runnable before returning; inside
///   a callback, right after that callback returns. Chains run from a
///   per-thread queue, not by nested calls, so no chain, however long or
///   deeply nested, grows the stack.
/// - **Waking a task only enqueues it; the loop polls tasks, never
///   `callback()`.** A task (`async` code from
///   [`ensure_deferred`](super::ensure_deferred) or
///   [`Reactor::spawn`](crate::Reactor::spawn)) awaiting a Deferred is woken
///   when it fires and polled later by the reactor's loop, or by
///   [`run_pending`](super::run_pending) where no reactor runs. So a task may
///   borrow what the firing code held borrowed.
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
/// let (resolver, d) = Deferred::<u32>::new();
/// let d = d.add_callback(|n| Ok(n * 2));
/// let d = d.add_callback(|n| Ok(n + 1));
/// let parsed = d.add_callback(|n| Ok(format!("got {n}")));
/// resolver.callback(21).unwrap();
/// assert_eq!(parsed.take_result().unwrap().unwrap(), "got 43");
/// ```
///
/// Two consumers of one Deferred do not compile (`d` was moved by the first
/// `add_callback`):
///
/// ```compile_fail,E0382
/// use gyre_reactor::defer::Deferred;
///
/// let (_r, d) = Deferred::<u8>::new();
/// let a = d.add_callback(Ok);
/// let b = d.add_callback(Ok);
/// ```
///
/// and neither does copying the handle (`Deferred` is not `Clone`):
///
/// ```compile_fail,E0599
/// use gyre_reactor::defer::Deferred;
///
/// let (_r, d) = Deferred::<u8>::new();
/// let a = d.clone().add_callback(Ok);
/// let b = d.add_callback(Ok);
/// ```
///
/// The same programs with the offending line taken out compile and run:
///
/// ```
/// use gyre_reactor::defer::Deferred;
///
/// let (r, d) = Deferred::<u8>::new();
/// let a = d.add_callback(Ok);
/// r.callback(1).unwrap();
/// assert_eq!(a.take_result().unwrap().unwrap(), 1);
/// ```
pub struct Deferred<T: 'static> {
    slot: Rc<Slot<T>>,
}

/// The handle that fires a [`Deferred`]: once, with a value
/// ([`callback`](Self::callback)), a failure ([`errback`](Self::errback)) or
/// either ([`resolve`](Self::resolve)). A second fire is an
/// [`AlreadyCalled`] error.
///
/// A cheap `Clone` (an `Rc`): keep as many as the code that may fire needs.
/// Firing runs the Deferred's callback chain before returning (right after
/// the current callback, inside one); a task awaiting the Deferred is only
/// woken, and polled later by the loop.
///
/// ```
/// use gyre_reactor::defer::Deferred;
///
/// let (resolver, d) = Deferred::<&str>::new();
/// let for_timer = resolver.clone();
/// for_timer.callback("fired").unwrap();
/// assert!(resolver.callback("again").is_err());
/// assert_eq!(d.take_result().unwrap().unwrap(), "fired");
/// ```
pub struct Resolver<T: 'static> {
    slot: Rc<Slot<T>>,
}

impl<T: 'static> Clone for Resolver<T> {
    fn clone(&self) -> Self {
        Resolver {
            slot: Rc::clone(&self.slot),
        }
    }
}

/// A second consumer asked for a Deferred's result, which had already gone
/// to the first.
///
/// The compiler rules out two consumers of one [`Deferred`] (its `add_*`
/// methods and `.await` take it by value, and it is not `Clone`). What is
/// left to this run-time failure: [`Deferred::take_result`] took the result
/// (it borrows the handle), and then the same handle was given a callback or
/// awaited; or a `Deferred` was polled again after it completed.
///
/// ```
/// use gyre_reactor::defer::{succeed, AlreadyConsumed};
///
/// let d = succeed(1);
/// assert_eq!(d.take_result().unwrap().unwrap(), 1);
/// let late = d.add_callback(Ok);
/// assert!(late.take_result().unwrap().unwrap_err().is::<AlreadyConsumed>());
/// ```
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

type Canceller<T> = Box<dyn FnOnce(&Resolver<T>)>;

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
    fn cancel_dyn(self: Rc<Self>, at: &'static Location<'static>);
}

impl<T: 'static> Cancel for Slot<T> {
    fn cancel_dyn(self: Rc<Self>, at: &'static Location<'static>) {
        self.cancel(at);
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

impl<T: 'static> Slot<T> {
    fn new(created_at: &'static Location<'static>) -> Rc<Slot<T>> {
        Rc::new(Slot {
            result: RefCell::new(None),
            consumer: RefCell::new(Consumer::Nobody),
            fired: Cell::new(false),
            suppress_already_called: Cell::new(false),
            created_at,
            fired_at: Cell::new(None),
            canceller: RefCell::new(None),
            upstream: RefCell::new(None),
        })
    }

    fn already_called(&self) -> AlreadyCalled {
        AlreadyCalled {
            created_at: self.created_at,
            first_fired_at: self.fired_at.get(),
        }
    }

    fn fire(
        self: &Rc<Self>,
        outcome: Outcome<T>,
        at: &'static Location<'static>,
    ) -> Result<(), AlreadyCalled> {
        if self.fired.get() {
            if self.suppress_already_called.replace(false) {
                return Ok(());
            }
            return Err(self.already_called());
        }
        self.set_result(outcome, Some(at));
        Ok(())
    }

    /// Stores the result and wakes its consumer. `at` is the fire location
    /// for a root Deferred; links inherit their root's.
    fn set_result(
        self: &Rc<Self>,
        mut outcome: Outcome<T>,
        at: Option<&'static Location<'static>>,
    ) {
        self.fired.set(true);
        self.fired_at.set(at.or(self.fired_at.get()));
        self.canceller.borrow_mut().take();
        self.upstream.borrow_mut().take();
        if let Err(failure) = &mut outcome {
            failure.note_locations(self.created_at, self.fired_at.get());
        }
        *self.result.borrow_mut() = Some(outcome);
        self.dispatch();
    }

    /// If both a result and a consumer are present, moves the result on: a
    /// callback consumer runs from the chain queue (now, or right after the
    /// current callback); a waker is only woken (the loop polls its task).
    fn dispatch(self: &Rc<Self>) {
        if !self.fired.get() || self.result.borrow().is_none() {
            return;
        }
        let waker = {
            let mut consumer = self.consumer.borrow_mut();
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
            // No borrow held: a waker may do anything.
            Some(waker) => waker.wake(),
            None => runner::schedule(Rc::clone(self) as Rc<dyn Job>),
        }
    }

    fn take_result(&self) -> Option<Outcome<T>> {
        if !matches!(
            *self.consumer.borrow(),
            Consumer::Nobody | Consumer::Waker(_)
        ) {
            return None;
        }
        let outcome = self.result.borrow_mut().take()?;
        *self.consumer.borrow_mut() = Consumer::Done;
        Some(outcome)
    }

    fn cancel(self: &Rc<Self>, at: &'static Location<'static>) {
        if self.fired.get() {
            return;
        }
        let canceller = self.canceller.borrow_mut().take();
        if let Some(canceller) = canceller {
            canceller(&Resolver {
                slot: Rc::clone(self),
            });
        } else {
            let upstream = self.upstream.borrow().as_ref().and_then(Weak::upgrade);
            if let Some(upstream) = upstream {
                // The upstream's outcome (Cancelled, or what its canceller
                // fired) flows down to us through the chain.
                upstream.cancel_dyn(at);
                return;
            }
        }
        if !self.fired.get() {
            self.suppress_already_called.set(true);
            self.set_result(Err(Failure::new(Cancelled)), Some(at));
        }
    }

    /// Installs the consumer of this Deferred's result and runs it if the
    /// result is there; if the result was already taken, fails `next`
    /// instead.
    fn set_consumer<U: 'static>(
        self: &Rc<Self>,
        callback: Box<dyn FnOnce(Outcome<T>, Option<&'static Location<'static>>)>,
        next: &Rc<Slot<U>>,
        at: &'static Location<'static>,
    ) {
        {
            let mut consumer = self.consumer.borrow_mut();
            if !matches!(*consumer, Consumer::Nobody | Consumer::Waker(_)) {
                drop(consumer);
                let already = AlreadyConsumed {
                    created_at: self.created_at,
                };
                next.set_result(Err(Failure::new(already)), Some(at));
                return;
            }
            *consumer = Consumer::Callback(callback);
        }
        self.dispatch();
    }

    /// Makes this (unfired) link fire with whatever `inner` fires with. The
    /// inner result moves here, so a failure is logged (if at all) by the
    /// outer chain, never twice.
    fn wait_on(self: &Rc<Self>, inner: Rc<Slot<T>>, at: &'static Location<'static>) {
        *self.upstream.borrow_mut() = Some(Rc::downgrade(&inner) as Weak<dyn Cancel>);
        let target = Rc::clone(self);
        inner.set_consumer(
            Box::new(move |outcome, fired_at| target.set_result(outcome, fired_at)),
            self,
            at,
        );
    }
}

impl<T: 'static> Resolver<T> {
    /// Fires with a value. A second fire is an [`AlreadyCalled`] error.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (r, d) = Deferred::<&str>::new();
    /// assert!(r.callback("once").is_ok());
    /// assert!(r.callback("twice").is_err());
    /// assert_eq!(d.take_result().unwrap().unwrap(), "once");
    /// ```
    #[track_caller]
    pub fn callback(&self, value: T) -> Result<(), AlreadyCalled> {
        self.slot.fire(Ok(value), Location::caller())
    }

    /// Fires with a failure. A second fire is an [`AlreadyCalled`] error.
    ///
    /// ```
    /// use gyre_reactor::defer::{Deferred, Failure};
    ///
    /// let (r, d) = Deferred::<u8>::new();
    /// r.errback(Failure::msg("no luck")).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap_err().to_string(), "no luck");
    /// ```
    #[track_caller]
    pub fn errback(&self, failure: impl Into<Failure>) -> Result<(), AlreadyCalled> {
        self.slot.fire(Err(failure.into()), Location::caller())
    }

    /// Fires with a value or a failure.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (r, d) = Deferred::<u8>::new();
    /// r.resolve(Ok(3)).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap(), 3);
    /// ```
    #[track_caller]
    pub fn resolve(&self, outcome: Outcome<T>) -> Result<(), AlreadyCalled> {
        self.slot.fire(outcome, Location::caller())
    }

    /// Whether the Deferred has fired (by this handle, a clone of it, or a
    /// cancel).
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (r, d) = Deferred::<u8>::new();
    /// d.cancel();
    /// assert!(r.called());
    /// ```
    pub fn called(&self) -> bool {
        self.slot.fired.get()
    }

    /// Where the Deferred was created.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (r, _d) = Deferred::<()>::new();
    /// assert_eq!(r.created_at().file(), file!());
    /// ```
    pub fn created_at(&self) -> &'static Location<'static> {
        self.slot.created_at
    }
}

impl<T: 'static> fmt::Debug for Resolver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("created_at", &self.slot.created_at)
            .field("called", &self.slot.fired.get())
            .finish()
    }
}

impl<T: 'static> Deferred<T> {
    /// A Deferred that has not fired, with no canceller: the [`Resolver`]
    /// that fires it and the `Deferred` that consumes it.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (r, d) = Deferred::<u8>::new();
    /// assert!(!d.called());
    /// r.callback(1).unwrap();
    /// assert!(d.called());
    /// ```
    #[track_caller]
    pub fn new() -> (Resolver<T>, Deferred<T>) {
        let slot = Slot::new(Location::caller());
        (
            Resolver {
                slot: Rc::clone(&slot),
            },
            Deferred { slot },
        )
    }

    /// A Deferred whose [`cancel`](Self::cancel) calls `canceller` (once)
    /// with a resolver. The canceller may fire the Deferred (then its result
    /// wins); if it does not, the Deferred fails with [`Cancelled`].
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (_r, d) = Deferred::<&str>::with_canceller(|r| {
    ///     r.callback("stopped early").unwrap();
    /// });
    /// d.cancel();
    /// assert_eq!(d.take_result().unwrap().unwrap(), "stopped early");
    /// ```
    #[track_caller]
    pub fn with_canceller(
        canceller: impl FnOnce(&Resolver<T>) + 'static,
    ) -> (Resolver<T>, Deferred<T>) {
        let slot = Slot::new(Location::caller());
        *slot.canceller.borrow_mut() = Some(Box::new(canceller));
        (
            Resolver {
                slot: Rc::clone(&slot),
            },
            Deferred { slot },
        )
    }

    /// A Deferred already fired with `outcome`, created and fired at `at`.
    fn fired(outcome: Outcome<T>, at: &'static Location<'static>) -> Deferred<T> {
        let slot = Slot::new(at);
        slot.set_result(outcome, Some(at));
        Deferred { slot }
    }

    /// Where this Deferred (or the first link of its chain) was created.
    ///
    /// ```
    /// use gyre_reactor::defer::Deferred;
    ///
    /// let (_r, d) = Deferred::<()>::new();
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
    /// let (r, d) = Deferred::<u8>::new();
    /// r.callback(1).unwrap();
    /// assert!(d.called());
    /// ```
    pub fn called(&self) -> bool {
        self.slot.fired.get()
    }

    /// Takes the result if the Deferred has fired (for synchronous code and
    /// tests: Twisted's `successResultOf`). `None` if it has not fired, or
    /// the result was taken already.
    ///
    /// A Deferred whose result was taken has no result left to log, so taking
    /// a failure this way handles it. Adding a callback to (or awaiting) the
    /// same handle afterwards gets an [`AlreadyConsumed`] failure.
    ///
    /// ```
    /// use gyre_reactor::defer::{succeed, Deferred};
    ///
    /// assert_eq!(succeed(5).take_result().unwrap().unwrap(), 5);
    /// let (_r, pending) = Deferred::<u8>::new();
    /// assert!(pending.take_result().is_none());
    /// ```
    pub fn take_result(&self) -> Option<Outcome<T>> {
        self.slot.take_result()
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
    /// let (r, d) = Deferred::<u8>::new();
    /// d.cancel();
    /// assert!(d.take_result().unwrap().unwrap_err().is::<Cancelled>());
    /// assert!(r.callback(1).is_ok(), "one late fire is ignored");
    /// ```
    #[track_caller]
    pub fn cancel(&self) {
        self.slot.cancel(Location::caller());
    }

    /// The general link: `f` gets the outcome and returns the next step.
    #[track_caller]
    fn link<U: 'static>(self, f: impl FnOnce(Outcome<T>) -> Step<U> + 'static) -> Deferred<U> {
        let next: Rc<Slot<U>> = Slot::new(self.slot.created_at);
        *next.upstream.borrow_mut() = Some(Rc::downgrade(&self.slot) as Weak<dyn Cancel>);
        let target = Rc::clone(&next);
        let at = Location::caller();
        self.slot.set_consumer(
            Box::new(move |outcome, fired_at| {
                let step = match catch_unwind(AssertUnwindSafe(|| f(outcome))) {
                    Ok(step) => step,
                    Err(payload) => Step::Now(Err(Failure::new(Panicked::from_payload(&*payload)))),
                };
                match step {
                    Step::Now(outcome) => target.set_result(outcome, fired_at),
                    Step::Wait(inner) => target.wait_on(inner.slot, at),
                }
            }),
            &next,
            at,
        );
        Deferred { slot: next }
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
    /// let (inner, waiting) = Deferred::<u32>::new();
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

    /// Sends this Deferred's result into the Deferred that `other` fires
    /// (Twisted's `chainDeferred`); cancelling that Deferred cancels this one
    /// (after its own canceller, if it has one). If `other` has already
    /// fired, nothing is chained and the error says so (this Deferred, and
    /// its result, are dropped).
    ///
    /// ```
    /// use gyre_reactor::defer::{succeed, Deferred};
    ///
    /// let (r, outer) = Deferred::<u8>::new();
    /// succeed(9).chain_deferred(&r).unwrap();
    /// assert_eq!(outer.take_result().unwrap().unwrap(), 9);
    /// ```
    #[track_caller]
    pub fn chain_deferred(self, other: &Resolver<T>) -> Result<(), AlreadyCalled> {
        if other.called() {
            return Err(other.slot.already_called());
        }
        other.slot.wait_on(self.slot, Location::caller());
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
    /// let (_r, d) = Deferred::<()>::new();
    /// let timed = d.add_timeout(&clock.clock(), Duration::from_secs(5));
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
                slot.cancel(Location::caller());
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
        if let Some(outcome) = slot.take_result() {
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
    Deferred::fired(Ok(value), Location::caller())
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
    Deferred::fired(Err(failure.into()), Location::caller())
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
    let outcome = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(outcome) => outcome,
        Err(payload) => Err(Failure::new(Panicked::from_payload(&*payload))),
    };
    Deferred::fired(outcome, Location::caller())
}
