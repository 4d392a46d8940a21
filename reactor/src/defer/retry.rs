//! Retrying with capped exponential back-off: [`Backoff`], [`BackoffState`]
//! and [`retry`].
//!
//! [`Backoff`] holds the parameters (Twisted's `ReconnectingClientFactory`
//! knobs: initial delay, growth factor, maximum delay, maximum retries,
//! jitter) and computes delays as a pure function; [`BackoffState`] counts
//! attempts for one sequence of retries (a reconnecting client keeps one and
//! resets it when a connection succeeds); [`retry`] runs an operation that
//! returns a Deferred until it succeeds or the retries run out.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use super::deferred::{fail, Deferred, Outcome, Resolver};
use super::failure::Panicked;
use crate::clock::{Clock, DelayedCall};

/// Capped exponential back-off with jitter.
///
/// The delay before retry number `attempt` (0 for the first retry) is
/// `initial × factor^attempt`, capped at `max_delay`, then spread by up to
/// `± jitter` of itself (a uniform sample) and capped again, so it never
/// exceeds `max_delay`. After `max_retries` retries (if set) there are no
/// more.
///
/// The defaults are Twisted's `ReconnectingClientFactory`'s: 1 s initial
/// delay, factor e, 1 hour maximum, unlimited retries, jitter 0.1196.
///
/// ```
/// use gyre_reactor::defer::Backoff;
/// use std::time::Duration;
///
/// let b = Backoff::default()
///     .initial(Duration::from_millis(100))
///     .factor(2.0)
///     .max_delay(Duration::from_secs(1))
///     .jitter(0.0);
/// let delays: Vec<Duration> = (0..6).map(|n| b.delay_for(n, 0.5)).collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// How much each delay grows over the previous one.
    pub factor: f64,
    /// The largest delay, jitter included.
    pub max_delay: Duration,
    /// How many retries at most (`None`: no limit).
    pub max_retries: Option<u32>,
    /// The relative spread of each delay: `0.1` means ± 10 %. Negative or NaN
    /// counts as 0.
    pub jitter: f64,
}

impl Default for Backoff {
    /// Twisted's `ReconnectingClientFactory` parameters.
    ///
    /// ```
    /// use gyre_reactor::defer::Backoff;
    /// use std::time::Duration;
    ///
    /// let b = Backoff::default();
    /// assert_eq!(b.initial, Duration::from_secs(1));
    /// assert_eq!(b.max_delay, Duration::from_secs(3600));
    /// assert_eq!(b.max_retries, None);
    /// ```
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: std::f64::consts::E,
            max_delay: Duration::from_secs(3600),
            max_retries: None,
            jitter: 0.119_626_564_72,
        }
    }
}

impl Backoff {
    /// Sets [`initial`](Self::initial).
    ///
    /// ```
    /// # use gyre_reactor::defer::Backoff; use std::time::Duration;
    /// assert_eq!(Backoff::default().initial(Duration::ZERO).initial, Duration::ZERO);
    /// ```
    pub fn initial(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// Sets [`factor`](Self::factor).
    ///
    /// ```
    /// # use gyre_reactor::defer::Backoff;
    /// assert_eq!(Backoff::default().factor(1.5).factor, 1.5);
    /// ```
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    ///
    /// ```
    /// # use gyre_reactor::defer::Backoff; use std::time::Duration;
    /// let b = Backoff::default().max_delay(Duration::from_secs(30));
    /// assert_eq!(b.delay_for(100, 1.0), Duration::from_secs(30));
    /// ```
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets [`max_retries`](Self::max_retries): a number, or `None` for no
    /// limit.
    ///
    /// ```
    /// # use gyre_reactor::defer::Backoff;
    /// assert_eq!(Backoff::default().max_retries(3).max_retries, Some(3));
    /// assert_eq!(Backoff::default().max_retries(None).max_retries, None);
    /// ```
    pub fn max_retries(mut self, retries: impl Into<Option<u32>>) -> Self {
        self.max_retries = retries.into();
        self
    }

    /// Sets [`jitter`](Self::jitter).
    ///
    /// ```
    /// # use gyre_reactor::defer::Backoff;
    /// assert_eq!(Backoff::default().jitter(0.0).jitter, 0.0);
    /// ```
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry number `attempt` (0-based), given a jitter
    /// sample in `[0, 1]` (0.5 means no spread; 0 and 1 are the extremes;
    /// out-of-range samples are clamped). A pure function: the same inputs
    /// always give the same delay.
    ///
    /// ```
    /// use gyre_reactor::defer::Backoff;
    /// use std::time::Duration;
    ///
    /// let b = Backoff::default().initial(Duration::from_secs(10)).factor(1.0).jitter(0.2);
    /// assert_eq!(b.delay_for(0, 0.5), Duration::from_secs(10));
    /// assert_eq!(b.delay_for(0, 0.0), Duration::from_secs(8));
    /// assert_eq!(b.delay_for(0, 1.0), Duration::from_secs(12));
    /// ```
    pub fn delay_for(&self, attempt: u32, jitter_sample: f64) -> Duration {
        let max = self.max_delay.as_secs_f64();
        let base = if self.initial.is_zero() {
            0.0
        } else {
            self.initial.as_secs_f64() * self.factor.powf(f64::from(attempt))
        };
        // `min` with +inf gives `max`; NaN (a NaN factor) counts as capped.
        let base = if base.is_nan() { max } else { base.min(max) };
        let jitter = if self.jitter > 0.0 { self.jitter } else { 0.0 };
        let sample = if jitter_sample.is_nan() {
            0.5
        } else {
            jitter_sample.clamp(0.0, 1.0)
        };
        let delay = (base * (1.0 + jitter * (2.0 * sample - 1.0))).clamp(0.0, max);
        Duration::try_from_secs_f64(delay).unwrap_or(self.max_delay)
    }

    /// [`delay_for`](Self::delay_for) with a random jitter sample.
    ///
    /// ```
    /// use gyre_reactor::defer::Backoff;
    /// use std::time::Duration;
    ///
    /// let b = Backoff::default().initial(Duration::from_secs(10)).factor(1.0).jitter(0.2);
    /// let d = b.sample_delay(0);
    /// assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(12));
    /// ```
    pub fn sample_delay(&self, attempt: u32) -> Duration {
        self.delay_for(attempt, fastrand::f64())
    }
}

/// One sequence of retries under a [`Backoff`]: counts the attempts and
/// draws the jitter. A reconnecting client keeps one per connector, asks
/// [`next_delay`](Self::next_delay) after each failed attempt, and calls
/// [`reset`](Self::reset) once a connection succeeds.
///
/// ```
/// use gyre_reactor::defer::{Backoff, BackoffState};
/// use std::time::Duration;
///
/// let backoff = Backoff::default()
///     .initial(Duration::from_secs(1))
///     .factor(2.0)
///     .max_retries(2)
///     .jitter(0.0);
/// let mut state = BackoffState::new(backoff);
/// assert_eq!(state.next_delay(), Some(Duration::from_secs(1)));
/// assert_eq!(state.next_delay(), Some(Duration::from_secs(2)));
/// assert_eq!(state.next_delay(), None); // two retries were allowed
/// assert_eq!(state.attempt(), 2);
/// state.reset();
/// assert_eq!(state.next_delay(), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone)]
pub struct BackoffState {
    backoff: Backoff,
    attempt: u32,
    rng: fastrand::Rng,
}

impl BackoffState {
    /// A fresh sequence (no retries yet), with a randomly seeded jitter
    /// source.
    ///
    /// ```
    /// # use gyre_reactor::defer::{Backoff, BackoffState};
    /// assert_eq!(BackoffState::new(Backoff::default()).attempt(), 0);
    /// ```
    pub fn new(backoff: Backoff) -> Self {
        BackoffState {
            backoff,
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// A fresh sequence whose jitter comes from a seeded generator, for
    /// reproducible delays.
    ///
    /// ```
    /// # use gyre_reactor::defer::{Backoff, BackoffState};
    /// let mut a = BackoffState::with_seed(Backoff::default(), 7);
    /// let mut b = BackoffState::with_seed(Backoff::default(), 7);
    /// assert_eq!(a.next_delay(), b.next_delay());
    /// ```
    pub fn with_seed(backoff: Backoff, seed: u64) -> Self {
        BackoffState {
            backoff,
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// How many retries this sequence has made (delays handed out since the
    /// last [`reset`](Self::reset)).
    ///
    /// ```
    /// # use gyre_reactor::defer::{Backoff, BackoffState};
    /// let mut s = BackoffState::new(Backoff::default());
    /// s.next_delay();
    /// assert_eq!(s.attempt(), 1);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The parameters.
    ///
    /// ```
    /// # use gyre_reactor::defer::{Backoff, BackoffState};
    /// assert_eq!(*BackoffState::new(Backoff::default()).backoff(), Backoff::default());
    /// ```
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The delay before the next retry, counting it as made; `None` once
    /// [`max_retries`](Backoff::max_retries) retries were made (and the count
    /// stays put).
    ///
    /// ```
    /// # use gyre_reactor::defer::{Backoff, BackoffState};
    /// let mut s = BackoffState::new(Backoff::default().max_retries(0));
    /// assert_eq!(s.next_delay(), None);
    /// ```
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self
            .backoff
            .max_retries
            .is_some_and(|max| self.attempt >= max)
        {
            return None;
        }
        let delay = self.backoff.delay_for(self.attempt, self.rng.f64());
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// Starts over: the next delay is the initial one again (call it when
    /// the operation succeeded).
    ///
    /// ```
    /// # use gyre_reactor::defer::{Backoff, BackoffState};
    /// let mut s = BackoffState::new(Backoff::default());
    /// s.next_delay();
    /// s.reset();
    /// assert_eq!(s.attempt(), 0);
    /// ```
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs `op` until the Deferred it returns succeeds, waiting between
/// attempts as `backoff` says, on `clock`. Fires with the first success, or
/// fails with the last failure once [`max_retries`](Backoff::max_retries)
/// retries have failed too. The first attempt is made at once. A panic in
/// `op` counts as a failed attempt ([`Panicked`]).
///
/// Cancelling the returned Deferred cancels the attempt in progress, or the
/// timer waiting for the next one; no further attempt is made, and it fails
/// with [`Cancelled`](super::Cancelled).
///
/// ```
/// use gyre_reactor::clock::ManualClock;
/// use gyre_reactor::defer::{fail, retry, succeed, Backoff, Failure};
/// use std::{cell::Cell, rc::Rc, time::Duration};
///
/// let clock = ManualClock::new();
/// let tries = Rc::new(Cell::new(0));
/// let t = tries.clone();
/// let backoff = Backoff::default().initial(Duration::from_secs(1)).jitter(0.0);
/// let d = retry(&clock.clock(), backoff, move || {
///     t.set(t.get() + 1);
///     if t.get() < 3 { fail(Failure::msg("busy")) } else { succeed(t.get()) }
/// });
/// assert_eq!(tries.get(), 1);
/// clock.advance(Duration::from_secs(1)); // second try after 1 s
/// clock.advance(Duration::from_secs(3)); // third after e s more
/// assert_eq!(d.take_result().unwrap().unwrap(), 3);
/// ```
#[track_caller]
pub fn retry<T: 'static>(
    clock: &Clock,
    backoff: Backoff,
    op: impl FnMut() -> Deferred<T> + 'static,
) -> Deferred<T> {
    let control = Rc::new(Control::default());
    let (result, returned) = {
        let control = Rc::clone(&control);
        Deferred::with_canceller(move |_| {
            control.cancelled.set(true);
            let current = control.current.replace(Current::Idle);
            match current {
                Current::Idle => {}
                Current::Attempt(link) => link.cancel(),
                Current::Timer(call) => {
                    let _ = call.cancel();
                }
            }
        })
    };
    let run = Rc::new(Retry {
        clock: clock.clone(),
        state: RefCell::new(BackoffState::new(backoff)),
        op: RefCell::new(Box::new(op)),
        result,
        control,
    });
    Retry::attempt(&run);
    returned
}

/// What the result's canceller shares with the retry loop (no reference to
/// the result, so no cycle).
#[derive(Default)]
struct Control {
    cancelled: Cell<bool>,
    current: RefCell<Current>,
}

#[derive(Default)]
enum Current {
    #[default]
    Idle,
    /// Watching an attempt: the link after it (cancelling the link cancels
    /// the attempt).
    Attempt(Deferred<()>),
    /// Waiting to make the next attempt.
    Timer(DelayedCall),
}

struct Retry<T: 'static> {
    clock: Clock,
    state: RefCell<BackoffState>,
    op: RefCell<Box<dyn FnMut() -> Deferred<T>>>,
    result: Resolver<T>,
    control: Rc<Control>,
}

impl<T: 'static> Retry<T> {
    fn attempt(this: &Rc<Self>) {
        if this.control.cancelled.get() || this.result.called() {
            return;
        }
        let made = {
            let mut op = this.op.borrow_mut();
            catch_unwind(AssertUnwindSafe(|| (*op)()))
        };
        let d = match made {
            Ok(d) => d,
            Err(payload) => fail(Panicked::from_payload(&*payload)),
        };
        let me = Rc::clone(this);
        let link = d.add_both(move |outcome| {
            Retry::done(&me, outcome);
            Ok(())
        });
        // If the attempt already completed, `done` has run (and set the
        // next state); else remember it for cancellation.
        if !link.called() {
            *this.control.current.borrow_mut() = Current::Attempt(link);
        }
    }

    fn done(this: &Rc<Self>, outcome: Outcome<T>) {
        *this.control.current.borrow_mut() = Current::Idle;
        let failure = match outcome {
            Ok(value) => {
                let _ = this.result.callback(value);
                return;
            }
            Err(failure) => failure,
        };
        if this.control.cancelled.get() || this.result.called() {
            // Cancelled: the result fails with Cancelled (or this failure).
            let _ = this.result.errback(failure);
            return;
        }
        let next = this.state.borrow_mut().next_delay();
        match next {
            None => {
                let _ = this.result.errback(failure);
            }
            Some(delay) => {
                log::debug!(
                    "retry {} in {delay:?} after: {failure}",
                    this.state.borrow().attempt()
                );
                drop(failure);
                let me = Rc::clone(this);
                let call = this.clock.call_later(delay, move || Retry::attempt(&me));
                *this.control.current.borrow_mut() = Current::Timer(call);
            }
        }
    }
}
