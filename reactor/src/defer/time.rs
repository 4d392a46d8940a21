//! Deferreds and time: [`defer_later`], [`sleep`] and [`LoopingCall`]
//! (Twisted's `task.deferLater` and `task.LoopingCall`).
//!
//! Everything takes the [`Clock`] to schedule on, so tests drive it with a
//! [`ManualClock`](crate::clock::ManualClock) instead of sleeping.

use std::cell::RefCell;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::deferred::{Deferred, Outcome, Resolver};
use super::failure::{Failure, Message, Panicked};
use crate::clock::{Clock, DelayedCall};

/// Calls `f` after `delay` on `clock` and fires with what it returns
/// (Twisted's `deferLater`). A panic in `f` becomes a [`Panicked`] failure.
///
/// Cancelling the Deferred before then cancels the pending call (nothing is
/// left on the clock) and fails it with [`Cancelled`](super::Cancelled).
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::defer::defer_later;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let d = defer_later(&clock.clock(), Duration::from_secs(2), || Ok("done"));
/// clock.advance(Duration::from_secs(1));
/// assert!(!d.called());
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(d.take_result().unwrap().unwrap(), "done");
/// ```
#[track_caller]
pub fn defer_later<T: 'static>(
    clock: &Clock,
    delay: Duration,
    f: impl FnOnce() -> Outcome<T> + 'static,
) -> Deferred<T> {
    let timer: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
    let to_cancel = Rc::clone(&timer);
    // The canceller holds the timer, whose closure holds the Deferred: a
    // cycle that lasts only while the call is pending (running, cancelling
    // or firing the Deferred breaks it).
    let (target, d) = Deferred::<T>::with_canceller(move |_| {
        if let Some(call) = to_cancel.borrow_mut().take() {
            let _ = call.cancel();
        }
    });
    let call = clock.call_later(delay, move || {
        let outcome = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(outcome) => outcome,
            Err(payload) => Err(Failure::new(Panicked::from_payload(&*payload))),
        };
        let _ = target.resolve(outcome);
    });
    *timer.borrow_mut() = Some(call);
    d
}

/// A Deferred that fires with `()` after `delay` on `clock`; cancelling it
/// cancels the timer.
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::defer::{sleep, Cancelled};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let nap = sleep(&clock.clock(), Duration::from_secs(60));
/// nap.cancel();
/// assert!(clock.pending_calls().is_empty());
/// assert!(nap.take_result().unwrap().unwrap_err().is::<Cancelled>());
/// ```
#[track_caller]
pub fn sleep(clock: &Clock, delay: Duration) -> Deferred<()> {
    defer_later(clock, delay, || Ok(()))
}

/// Why [`LoopingCall::start`] or [`LoopingCall::stop`] refused.
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::defer::{LoopingCall, LoopingCallError};
///
/// let clock = ManualClock::new();
/// let lc = LoopingCall::new(&clock.clock(), || Ok(()));
/// assert_eq!(lc.stop(), Err(LoopingCallError::NotRunning));
/// assert_eq!(lc.start_secs(-1.0, true).unwrap_err(), LoopingCallError::InvalidInterval(-1.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoopingCallError {
    /// `start` on a LoopingCall that is running.
    AlreadyRunning,
    /// `stop` on a LoopingCall that is not running.
    NotRunning,
    /// The interval (in seconds) is negative, not finite, or too large.
    InvalidInterval(f64),
}

impl fmt::Display for LoopingCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopingCallError::AlreadyRunning => f.write_str("the LoopingCall is already running"),
            LoopingCallError::NotRunning => f.write_str("the LoopingCall is not running"),
            LoopingCallError::InvalidInterval(secs) => {
                write!(f, "invalid interval {secs} s: it must be >= 0")
            }
        }
    }
}

impl std::error::Error for LoopingCallError {}

/// What the loop's function returned.
enum Ret {
    Now(Outcome<()>),
    Wait(Deferred<()>),
}

type Func = Box<dyn FnMut(u64) -> Ret>;

/// Calls a function every `interval` on a clock (Twisted's
/// `task.LoopingCall`).
///
/// [`start`](Self::start) returns a Deferred that fires with `()` when the
/// loop is [stopped](Self::stop), or fails with the first failure of the
/// function (which stops the loop). If the function returns a Deferred
/// ([`new_deferred`](Self::new_deferred)), the loop waits for it before
/// scheduling the next call.
///
/// Calls stay on the grid of `start time + k × interval`: a call that runs
/// late does not shift the ones after it, and intervals missed entirely (the
/// process was busy, or a returned Deferred took long) are skipped, not made
/// up for. [`with_count`](Self::with_count) tells the function how many
/// intervals passed since its previous call. An interval of zero calls the
/// function once per clock turn.
///
/// The handle is a cheap `Clone`; the function may stop the loop through a
/// clone of it. A running loop is kept alive by its clock until stopped.
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::defer::LoopingCall;
/// use std::{cell::Cell, rc::Rc, time::Duration};
///
/// let clock = ManualClock::new();
/// let ticks = Rc::new(Cell::new(0));
/// let t = ticks.clone();
/// let lc = LoopingCall::new(&clock.clock(), move || {
///     t.set(t.get() + 1);
///     Ok(())
/// });
/// let done = lc.start(Duration::from_secs(1), true).unwrap();
/// assert_eq!(ticks.get(), 1); // now = true: called at once
/// clock.pump(&[Duration::from_secs(1); 3]);
/// assert_eq!(ticks.get(), 4);
/// lc.stop().unwrap();
/// assert!(done.take_result().unwrap().is_ok());
/// ```
#[derive(Clone)]
pub struct LoopingCall {
    inner: Rc<Inner>,
}

struct Inner {
    clock: Clock,
    /// Taken out while it runs, so the function may use the handle freely.
    func: RefCell<Option<Func>>,
    counted: bool,
    state: RefCell<LoopState>,
}

struct LoopState {
    running: bool,
    /// Bumped by every `start`, so the completion of a call from an earlier
    /// run (stopped while its Deferred was pending) does not drive this one.
    epoch: u64,
    interval: Duration,
    start_time: Instant,
    run_at_start: bool,
    /// When the function last ran, in nanoseconds since `start_time` (for
    /// the count).
    last_time: Option<i128>,
    /// The pending timer, when the loop waits for its next call.
    call: Option<DelayedCall>,
    /// What `start` returned, until it fires.
    deferred: Option<Resolver<()>>,
}

impl fmt::Debug for LoopingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.try_borrow();
        f.debug_struct("LoopingCall")
            .field("running", &state.as_ref().map(|s| s.running).ok())
            .field("interval", &state.as_ref().map(|s| s.interval).ok())
            .finish()
    }
}

impl LoopingCall {
    fn build(clock: &Clock, func: Func, counted: bool) -> LoopingCall {
        LoopingCall {
            inner: Rc::new(Inner {
                clock: clock.clone(),
                func: RefCell::new(Some(func)),
                counted,
                state: RefCell::new(LoopState {
                    running: false,
                    epoch: 0,
                    interval: Duration::ZERO,
                    start_time: clock.now(),
                    run_at_start: false,
                    last_time: None,
                    call: None,
                    deferred: None,
                }),
            }),
        }
    }

    /// A loop calling `f`; a failure (or a panic) stops it.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::{Failure, LoopingCall};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let lc = LoopingCall::new(&clock.clock(), || Err(Failure::msg("give up")));
    /// let done = lc.start(Duration::from_secs(1), true).unwrap();
    /// assert!(!lc.running());
    /// assert_eq!(done.take_result().unwrap().unwrap_err().to_string(), "give up");
    /// ```
    pub fn new(clock: &Clock, mut f: impl FnMut() -> Outcome<()> + 'static) -> LoopingCall {
        LoopingCall::build(clock, Box::new(move |_| Ret::Now(f())), false)
    }

    /// A loop calling `f`, which returns a Deferred: the next call is
    /// scheduled (on the interval grid) only once that Deferred has fired; a
    /// failure stops the loop.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::{sleep, LoopingCall};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let c = clock.clock();
    /// // Each run takes 1.5 s, so only every second 1 s tick is used.
    /// let lc = LoopingCall::new_deferred(&clock.clock(), move || sleep(&c, Duration::from_millis(1500)));
    /// lc.start(Duration::from_secs(1), true).unwrap();
    /// clock.advance(Duration::from_millis(1500)); // the first run ends
    /// assert_eq!(clock.pending_calls()[0].time(), clock.now() + Duration::from_millis(500));
    /// lc.stop().unwrap();
    /// ```
    pub fn new_deferred(
        clock: &Clock,
        mut f: impl FnMut() -> Deferred<()> + 'static,
    ) -> LoopingCall {
        LoopingCall::build(clock, Box::new(move |_| Ret::Wait(f())), false)
    }

    /// A loop calling `f` with the number of intervals that passed since its
    /// previous call (Twisted's `LoopingCall.withCount`): 1 when it runs on
    /// time, more when intervals were skipped. The first call counts from the
    /// start (1 when started with `now`). It is not called when no interval
    /// boundary passed (a call that ran early); with a zero interval the
    /// count is always 1.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::LoopingCall;
    /// use std::{cell::RefCell, rc::Rc, time::Duration};
    ///
    /// let clock = ManualClock::new();
    /// let counts = Rc::new(RefCell::new(Vec::new()));
    /// let c = counts.clone();
    /// let lc = LoopingCall::with_count(&clock.clock(), move |n| {
    ///     c.borrow_mut().push(n);
    ///     Ok(())
    /// });
    /// lc.start(Duration::from_secs(1), true).unwrap();
    /// clock.advance(Duration::from_millis(3500));
    /// assert_eq!(*counts.borrow(), [1, 3]);
    /// lc.stop().unwrap();
    /// ```
    pub fn with_count(
        clock: &Clock,
        mut f: impl FnMut(u64) -> Outcome<()> + 'static,
    ) -> LoopingCall {
        LoopingCall::build(clock, Box::new(move |n| Ret::Now(f(n))), true)
    }

    /// [`with_count`](Self::with_count) for a function that returns a
    /// Deferred (see [`new_deferred`](Self::new_deferred)).
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::{succeed, LoopingCall};
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    ///
    /// let clock = ManualClock::new();
    /// let total = Rc::new(Cell::new(0));
    /// let t = total.clone();
    /// let lc = LoopingCall::with_count_deferred(&clock.clock(), move |n| {
    ///     t.set(t.get() + n);
    ///     succeed(())
    /// });
    /// lc.start(Duration::from_secs(1), false).unwrap();
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(total.get(), 5);
    /// lc.stop().unwrap();
    /// ```
    pub fn with_count_deferred(
        clock: &Clock,
        mut f: impl FnMut(u64) -> Deferred<()> + 'static,
    ) -> LoopingCall {
        LoopingCall::build(clock, Box::new(move |n| Ret::Wait(f(n))), true)
    }

    /// Starts calling the function every `interval`, at once if `now`, else
    /// first after one interval. Returns the Deferred that fires when the
    /// loop stops: with `()` after [`stop`](Self::stop), or with the
    /// function's failure. `Err(AlreadyRunning)` if it is running.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::{LoopingCall, LoopingCallError};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let lc = LoopingCall::new(&clock.clock(), || Ok(()));
    /// lc.start(Duration::from_secs(1), false).unwrap();
    /// assert_eq!(lc.start(Duration::from_secs(1), false).unwrap_err(), LoopingCallError::AlreadyRunning);
    /// lc.stop().unwrap();
    /// ```
    #[track_caller]
    pub fn start(&self, interval: Duration, now: bool) -> Result<Deferred<()>, LoopingCallError> {
        let inner = &self.inner;
        let (deferred, epoch) = {
            let mut st = inner.state.borrow_mut();
            if st.running {
                return Err(LoopingCallError::AlreadyRunning);
            }
            let (resolver, deferred) = Deferred::new();
            st.running = true;
            st.epoch += 1;
            st.interval = interval;
            st.start_time = inner.clock.now();
            st.run_at_start = now;
            st.last_time = None;
            st.deferred = Some(resolver);
            (deferred, st.epoch)
        };
        if now {
            Inner::call(inner, epoch);
        } else {
            let start = inner.state.borrow().start_time;
            Inner::schedule_from(inner, start, epoch);
        }
        Ok(deferred)
    }

    /// [`start`](Self::start) with the interval in seconds, as Twisted takes
    /// it: a negative (or NaN, infinite, or unrepresentable) interval is
    /// `Err(InvalidInterval)`.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::{LoopingCall, LoopingCallError};
    ///
    /// let clock = ManualClock::new();
    /// let lc = LoopingCall::new(&clock.clock(), || Ok(()));
    /// assert!(matches!(lc.start_secs(-0.5, true), Err(LoopingCallError::InvalidInterval(_))));
    /// assert!(!lc.running());
    /// lc.start_secs(0.25, true).unwrap();
    /// assert!(lc.running());
    /// lc.stop().unwrap();
    /// ```
    #[track_caller]
    pub fn start_secs(&self, interval: f64, now: bool) -> Result<Deferred<()>, LoopingCallError> {
        let interval = Duration::try_from_secs_f64(interval)
            .map_err(|_| LoopingCallError::InvalidInterval(interval))?;
        self.start(interval, now)
    }

    /// Stops the loop. If it waits for its next call, the Deferred from
    /// [`start`](Self::start) fires now; if the function's Deferred is still
    /// pending, it fires once that one does. `Err(NotRunning)` if it is not
    /// running.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::LoopingCall;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let lc = LoopingCall::new(&clock.clock(), || Ok(()));
    /// let done = lc.start(Duration::from_secs(1), true).unwrap();
    /// lc.stop().unwrap();
    /// assert!(done.called());
    /// assert!(clock.pending_calls().is_empty());
    /// ```
    pub fn stop(&self) -> Result<(), LoopingCallError> {
        let (call, deferred) = {
            let mut st = self.inner.state.borrow_mut();
            if !st.running {
                return Err(LoopingCallError::NotRunning);
            }
            st.running = false;
            match st.call.take() {
                Some(call) => (Some(call), st.deferred.take()),
                // The function's Deferred is pending: its completion fires.
                None => (None, None),
            }
        };
        if let Some(call) = call {
            let _ = call.cancel();
        }
        if let Some(d) = deferred {
            let _ = d.callback(());
        }
        Ok(())
    }

    /// Whether the loop is running (started and neither stopped nor failed).
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::LoopingCall;
    ///
    /// let clock = ManualClock::new();
    /// let lc = LoopingCall::new(&clock.clock(), || Ok(()));
    /// assert!(!lc.running());
    /// ```
    pub fn running(&self) -> bool {
        self.inner.state.borrow().running
    }

    /// The interval of the current (or last) run, if it was ever started.
    ///
    /// ```
    /// use gyre_reactor::clock::ManualClock;
    /// use gyre_reactor::defer::LoopingCall;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let lc = LoopingCall::new(&clock.clock(), || Ok(()));
    /// assert_eq!(lc.interval(), None);
    /// lc.start(Duration::from_secs(2), false).unwrap();
    /// assert_eq!(lc.interval(), Some(Duration::from_secs(2)));
    /// lc.stop().unwrap();
    /// ```
    pub fn interval(&self) -> Option<Duration> {
        let st = self.inner.state.borrow();
        (st.epoch > 0).then_some(st.interval)
    }
}

impl Inner {
    /// Runs the function once (from `start` or from the timer).
    fn call(this: &Rc<Inner>, epoch: u64) {
        let (count, deferred) = {
            let mut st = this.state.borrow_mut();
            if st.epoch != epoch || !st.running {
                return;
            }
            st.call = None;
            let count = if this.counted {
                st.count(this.clock.now())
            } else {
                1
            };
            (count, st.deferred.clone())
        };
        if count == 0 {
            // No interval boundary passed since the last call: skip it.
            Inner::finish(this, epoch, deferred, Ok(()));
            return;
        }
        let func = this.func.borrow_mut().take();
        let Some(mut func) = func else {
            let failure = Failure::new(Message(
                "LoopingCall function called while it was running".into(),
            ));
            Inner::finish(this, epoch, deferred, Err(failure));
            return;
        };
        let ret = catch_unwind(AssertUnwindSafe(|| func(count)));
        *this.func.borrow_mut() = Some(func);
        match ret {
            Ok(Ret::Now(outcome)) => Inner::finish(this, epoch, deferred, outcome),
            Ok(Ret::Wait(d)) => {
                let this = Rc::clone(this);
                // The link is kept alive by `d`; nothing needs it here.
                drop(d.add_both(move |outcome| {
                    Inner::finish(&this, epoch, deferred, outcome);
                    Ok(())
                }));
            }
            Err(payload) => {
                let failure = Failure::new(Panicked::from_payload(&*payload));
                Inner::finish(this, epoch, deferred, Err(failure));
            }
        }
    }

    /// A call of run `epoch` completed: schedule the next one, or fire that
    /// run's Deferred if it was stopped or failed.
    fn finish(this: &Rc<Inner>, epoch: u64, deferred: Option<Resolver<()>>, outcome: Outcome<()>) {
        let current = {
            let mut st = this.state.borrow_mut();
            let current = st.epoch == epoch;
            match &outcome {
                Ok(()) if current && st.running => {
                    drop(st);
                    Inner::schedule_from(this, this.clock.now(), epoch);
                    return;
                }
                Err(_) if current => st.running = false,
                _ => {}
            }
            current
        };
        if current {
            this.state.borrow_mut().deferred = None;
        }
        if let Some(d) = deferred {
            let _ = d.resolve(outcome);
        }
    }

    /// Schedules the next call at the next grid point strictly after `when`.
    fn schedule_from(this: &Rc<Inner>, when: Instant, epoch: u64) {
        let delay = {
            let st = this.state.borrow();
            let interval = st.interval.as_nanos();
            if interval == 0 {
                Duration::ZERO
            } else {
                let running_for = when.saturating_duration_since(st.start_time).as_nanos();
                nanos(interval - running_for % interval)
            }
        };
        let me = Rc::clone(this);
        let call = this
            .clock
            .call_later(delay, move || Inner::call(&me, epoch));
        this.state.borrow_mut().call = Some(call);
    }
}

impl LoopState {
    /// The number of interval boundaries passed since the last call (Twisted's
    /// `withCount` counter); records `now` as the last call if positive.
    fn count(&mut self, now: Instant) -> u64 {
        let now = now.saturating_duration_since(self.start_time).as_nanos() as i128;
        let interval = self.interval.as_nanos() as i128;
        if interval == 0 {
            self.last_time = Some(now);
            return 1;
        }
        let last = self
            .last_time
            .unwrap_or(if self.run_at_start { -interval } else { 0 });
        let count = now.div_euclid(interval) - last.div_euclid(interval);
        if count > 0 {
            self.last_time = Some(now);
            u64::try_from(count).unwrap_or(u64::MAX)
        } else {
            0
        }
    }
}

/// A nanosecond count as a `Duration` (saturating).
fn nanos(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (n % 1_000_000_000) as u32)
}
