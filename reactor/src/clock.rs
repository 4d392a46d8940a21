//! Timers: a monotonic timer queue shared by the event loop and tests.
//!
//! A [`Clock`] is a time source plus a queue of [`DelayedCall`]s. The same
//! code runs on the real clock ([`Clock::real`], time is [`Instant::now`]) and
//! on a manual one ([`ManualClock`], Twisted's `task.Clock`), whose time moves
//! only when a test calls [`ManualClock::advance`] or [`ManualClock::pump`], so
//! timer, back-off and time-out logic is tested deterministically, without
//! sleeping.
//!
//! Everything here is single-threaded (`Rc`, `Cell`, `RefCell`) and `!Send`.
//!
//! # Semantics
//!
//! * [`Clock::run_due`] runs one *batch*: it first collects every call due at
//!   `now()`, ordered by due time and then by (re)scheduling order, and then
//!   runs them. A call scheduled while the batch runs — even with a zero delay —
//!   runs on the next `run_due`, not in this one, so a call that keeps
//!   rescheduling itself cannot starve I/O. The same holds for a call that is
//!   [reset](DelayedCall::reset) or [delayed](DelayedCall::delay) while the
//!   batch runs: it runs at its new time, in a later batch.
//! * A callback may call any clock API (schedule, cancel, reset or delay other
//!   calls). No internal borrow is held while user code runs, including the
//!   destructors of dropped closures.
//! * A panic in a callback is caught, logged with `log::error!` naming where
//!   the call was scheduled ([`DelayedCall::location`]), and costs only that
//!   call; the rest of the batch still runs.
//! * Cancelled and rescheduled entries are removed from the heap lazily; the
//!   heap is compacted when stale entries make up more than half of it, so
//!   workloads where most timers are cancelled (time-outs) stay cheap.
//!
//! # Ownership
//!
//! [`DelayedCall`] holds only a weak reference to its clock. Dropping the last
//! [`Clock`] (and [`ManualClock`]) handle drops every pending callback and
//! marks the calls cancelled. A callback that captures a `Clock` clone forms an
//! `Rc` cycle that keeps the clock alive until that call runs or is cancelled;
//! this is by design (a timer that reschedules itself needs its clock), but a
//! self-rescheduling loop that is never cancelled keeps its clock alive.
//!
//! ```
//! use std::{cell::Cell, rc::Rc, time::Duration};
//! use gyre_reactor::clock::ManualClock;
//!
//! let manual = ManualClock::new();
//! let clock = manual.clock(); // hand this to the code under test
//! let fired = Rc::new(Cell::new(false));
//! let f = fired.clone();
//! clock.call_later(Duration::from_secs(5), move || f.set(true));
//! manual.advance(Duration::from_secs(4));
//! assert!(!fired.get());
//! manual.advance(Duration::from_secs(1));
//! assert!(fired.get());
//! ```

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use slab::Slab;

/// Compact the heap only once at least this many entries are stale.
const COMPACT_MIN_STALE: usize = 64;

/// A heap key: due time (nanoseconds since the clock's epoch), sequence
/// number (ties and staleness), slab slot. 24 bytes rather than the 32 an
/// `Instant` key takes: with 100,000 timers pending, sifting through a
/// smaller heap is most of the cost of a schedule-and-fire.
type Key = (u64, u64, usize);

/// The lifecycle of a [`DelayedCall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Called,
    Cancelled,
}

/// A type-erased, run-once callback stored inline in its [`Call`].
trait Fire {
    /// Take the callback and run it (no-op if already taken).
    fn fire(&self);
    /// Drop the callback without running it.
    fn discard(&self);
}

struct Body<F> {
    f: Cell<Option<F>>,
}

impl<F: FnOnce()> Fire for Body<F> {
    fn fire(&self) {
        if let Some(f) = self.f.take() {
            f();
        }
    }

    fn discard(&self) {
        drop(self.f.take());
    }
}

/// One scheduled call: shared by the queue (while pending) and every
/// [`DelayedCall`] handle. The closure lives inline, so scheduling costs a
/// single allocation.
struct Call<F: ?Sized> {
    time: Cell<Instant>,
    /// Sequence number of this call's one live heap entry.
    seq: Cell<u64>,
    slot: usize,
    state: Cell<State>,
    location: &'static Location<'static>,
    body: F,
}

type CallRc = Rc<Call<dyn Fire>>;

enum Source {
    Real,
    Manual {
        base: Instant,
        offset: Cell<Duration>,
    },
}

struct Queue {
    /// Pending calls (including those collected into the running batch).
    calls: Slab<CallRc>,
    /// Lazily pruned: an entry is live iff `calls[slot].seq == seq`.
    heap: BinaryHeap<Reverse<Key>>,
    /// The rest of the batch `run_due` is running, earliest first.
    batch: VecDeque<Key>,
    next_seq: u64,
}

impl Queue {
    fn is_live(calls: &Slab<CallRc>, (_, seq, slot): Key) -> bool {
        calls.get(slot).is_some_and(|c| c.seq.get() == seq)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Drop stale entries once they are more than half of all entries (and at
    /// least [`COMPACT_MIN_STALE`]). Each live call has exactly one entry in
    /// `heap` or `batch`, so the stale count is exact, and compaction is
    /// amortised O(1) per cancel or reschedule.
    fn maybe_compact(&mut self) {
        let entries = self.heap.len() + self.batch.len();
        let stale = entries.saturating_sub(self.calls.len());
        if stale >= COMPACT_MIN_STALE && stale * 2 > entries {
            let calls = &self.calls;
            self.heap.retain(|Reverse(k)| Self::is_live(calls, *k));
            self.batch.retain(|k| Self::is_live(calls, *k));
        }
    }

    /// Pop stale entries off the heap top and the batch front.
    fn prune_fronts(&mut self) {
        while let Some(&Reverse(k)) = self.heap.peek() {
            if Self::is_live(&self.calls, k) {
                break;
            }
            self.heap.pop();
        }
        while let Some(&k) = self.batch.front() {
            if Self::is_live(&self.calls, k) {
                break;
            }
            self.batch.pop_front();
        }
    }
}

struct Inner {
    source: Source,
    /// The zero of the heap's time keys (the clock's creation).
    epoch: Instant,
    queue: RefCell<Queue>,
    /// Set while `run_due` runs a batch (re-entrancy guard).
    running: Cell<bool>,
}

impl Inner {
    /// `t` as a heap key: nanoseconds since the epoch, saturating (a time
    /// more than 584 years out sorts last, which is when it would fire).
    fn ticks(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A heap key's time as an `Instant`.
    fn instant(&self, ticks: u64) -> Instant {
        add_saturating(self.epoch, Duration::from_nanos(ticks))
    }

    fn now(&self) -> Instant {
        match &self.source {
            Source::Real => Instant::now(),
            Source::Manual { base, offset } => add_saturating(*base, offset.get()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let queue = self.queue.get_mut();
        queue.heap.clear();
        queue.batch.clear();
        let calls: Vec<CallRc> = queue.calls.drain().collect();
        // Mark everything cancelled before any user destructor runs, so a
        // destructor that inspects a handle sees a consistent state.
        for call in &calls {
            call.state.set(State::Cancelled);
        }
        for call in &calls {
            call.body.discard();
        }
    }
}

/// `t + d`, saturating at the latest representable `Instant` instead of
/// panicking (a call that far out never fires in practice).
fn add_saturating(t: Instant, d: Duration) -> Instant {
    if let Some(x) = t.checked_add(d) {
        return x;
    }
    // Greedy binary descent: at most one successful add per halving.
    let (mut t, mut step) = (t, d / 2);
    while !step.is_zero() {
        match t.checked_add(step) {
            Some(x) => t = x,
            None => step /= 2,
        }
    }
    t
}

/// Resets the re-entrancy flag even if something unwinds.
struct RunGuard<'a>(&'a Cell<bool>);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A handle to a timer queue and its time source.
///
/// Cheap to clone (an `Rc`) and `!Send`. Get one from [`Clock::real`] for
/// production or from [`ManualClock::clock`] in tests; code that needs time
/// should take a `Clock` and never call [`Instant::now`] itself.
///
/// ```
/// use std::{cell::RefCell, rc::Rc, time::Duration};
/// use gyre_reactor::clock::ManualClock;
///
/// let manual = ManualClock::new();
/// let clock = manual.clock();
/// let log = Rc::new(RefCell::new(Vec::new()));
/// for (name, secs) in [("b", 2), ("a", 1)] {
///     let log = log.clone();
///     clock.call_later(Duration::from_secs(secs), move || log.borrow_mut().push(name));
/// }
/// assert_eq!(clock.next_deadline(), Some(clock.now() + Duration::from_secs(1)));
/// manual.advance(Duration::from_secs(2));
/// assert_eq!(*log.borrow(), ["a", "b"]);
/// assert!(clock.pending_calls().is_empty());
/// ```
#[derive(Clone)]
pub struct Clock {
    inner: Rc<Inner>,
}

impl Clock {
    fn with_source(source: Source) -> Clock {
        let epoch = match &source {
            Source::Real => Instant::now(),
            Source::Manual { base, .. } => *base,
        };
        Clock {
            inner: Rc::new(Inner {
                source,
                epoch,
                queue: RefCell::new(Queue {
                    calls: Slab::new(),
                    heap: BinaryHeap::new(),
                    batch: VecDeque::new(),
                    next_seq: 0,
                }),
                running: Cell::new(false),
            }),
        }
    }

    /// A clock whose time is [`Instant::now`]. Its calls run when the owner
    /// (the reactor) calls [`run_due`](Clock::run_due).
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = gyre_reactor::clock::Clock::real();
    /// clock.call_later(Duration::ZERO, || println!("tick"));
    /// assert_eq!(clock.run_due(), 1);
    /// ```
    pub fn real() -> Clock {
        Clock::with_source(Source::Real)
    }

    /// The current time: [`Instant::now`] on a real clock; on a manual clock
    /// the base `Instant` captured at creation plus everything advanced since.
    pub fn now(&self) -> Instant {
        self.inner.now()
    }

    /// Whether this is a [`ManualClock`]'s clock (time moves only when told).
    pub fn is_manual(&self) -> bool {
        matches!(self.inner.source, Source::Manual { .. })
    }

    /// Schedule `f` to run once, `delay` from [`now`](Clock::now).
    ///
    /// The caller's source location is recorded for logs
    /// ([`DelayedCall::location`]). A delay too large to represent saturates
    /// (the call effectively never fires). `O(log n)`; one allocation.
    #[track_caller]
    pub fn call_later<F: FnOnce() + 'static>(&self, delay: Duration, f: F) -> DelayedCall {
        let location = Location::caller();
        let time = add_saturating(self.now(), delay);
        let mut q = self.inner.queue.borrow_mut();
        let seq = q.take_seq();
        let entry = q.calls.vacant_entry();
        let slot = entry.key();
        let call: CallRc = Rc::new(Call {
            time: Cell::new(time),
            seq: Cell::new(seq),
            slot,
            state: Cell::new(State::Pending),
            location,
            body: Body {
                f: Cell::new(Some(f)),
            },
        });
        entry.insert(call.clone());
        q.heap.push(Reverse((self.inner.ticks(time), seq, slot)));
        drop(q);
        DelayedCall {
            call,
            clock: Rc::downgrade(&self.inner),
        }
    }

    /// The live calls (neither cancelled, running nor called), earliest first;
    /// ties in (re)scheduling order.
    pub fn pending_calls(&self) -> Vec<DelayedCall> {
        let q = self.inner.queue.borrow();
        let mut calls: Vec<CallRc> = q.calls.iter().map(|(_, c)| c.clone()).collect();
        drop(q);
        calls.sort_by_key(|c| (c.time.get(), c.seq.get()));
        calls
            .into_iter()
            .map(|call| DelayedCall {
                call,
                clock: Rc::downgrade(&self.inner),
            })
            .collect()
    }

    /// The due time of the earliest live call, if any (how long the reactor
    /// may block). Lazily-cancelled entries are skipped and dropped.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut q = self.inner.queue.borrow_mut();
        q.prune_fronts();
        let heap = q.heap.peek().map(|Reverse(k)| k.0);
        let batch = q.batch.front().map(|k| k.0);
        let earliest = match (heap, batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        earliest.map(|ticks| self.inner.instant(ticks))
    }

    /// Run every call due at [`now`](Clock::now) (read once, at the start) as
    /// one batch, and return how many ran (a call that panicked counts as run).
    ///
    /// Calls run in due-time order, ties in (re)scheduling order. Calls
    /// scheduled, reset or delayed while the batch runs wait for the next
    /// `run_due`; calls cancelled by an earlier callback of the batch are
    /// skipped. Called re-entrantly from inside a callback, it runs nothing
    /// and returns 0.
    pub fn run_due(&self) -> usize {
        if self.inner.running.get() {
            log::debug!("Clock::run_due called from inside a timer callback; ignored");
            return 0;
        }
        self.inner.running.set(true);
        let _guard = RunGuard(&self.inner.running);
        let now = self.inner.ticks(self.now());
        {
            let mut q = self.inner.queue.borrow_mut();
            let q = &mut *q;
            while let Some(&Reverse(key)) = q.heap.peek() {
                if key.0 > now {
                    break;
                }
                q.heap.pop();
                if Queue::is_live(&q.calls, key) {
                    q.batch.push_back(key);
                }
            }
        }
        let mut ran = 0;
        loop {
            let call = {
                let mut q = self.inner.queue.borrow_mut();
                let Some(key) = q.batch.pop_front() else {
                    break;
                };
                if !Queue::is_live(&q.calls, key) {
                    continue; // cancelled, reset or delayed since collected
                }
                q.calls.remove(key.2)
            };
            call.state.set(State::Running);
            let _ = crate::core::guard(
                format_args!("timer callback scheduled at {}", call.location),
                || call.body.fire(),
            );
            call.state.set(State::Called);
            ran += 1;
        }
        self.inner.queue.borrow_mut().maybe_compact();
        ran
    }

    /// Number of entries in the timer heap, including stale (cancelled or
    /// rescheduled) entries not yet pruned. For diagnostics and tests.
    pub fn queue_len(&self) -> usize {
        let q = self.inner.queue.borrow();
        q.heap.len() + q.batch.len()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pending = self.inner.queue.try_borrow().map(|q| q.calls.len()).ok();
        f.debug_struct("Clock")
            .field("manual", &self.is_manual())
            .field("now", &self.now())
            .field("pending", &pending)
            .finish()
    }
}

/// Deterministic clock for tests (Twisted's `task.Clock`).
///
/// Time starts at an `Instant` captured at creation and moves only through
/// [`advance`](ManualClock::advance) and [`pump`](ManualClock::pump); calls
/// never fire by themselves. Hand [`clock`](ManualClock::clock) to the code
/// under test. The `Clock` stays usable after the `ManualClock` is dropped.
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use gyre_reactor::clock::ManualClock;
///
/// let manual = ManualClock::new();
/// let hits = Rc::new(Cell::new(0));
/// for secs in [1, 3] {
///     let hits = hits.clone();
///     manual.clock().call_later(Duration::from_secs(secs), move || hits.set(hits.get() + 1));
/// }
/// manual.pump(&[Duration::from_secs(1), Duration::from_secs(1)]);
/// assert_eq!(hits.get(), 1);
/// assert_eq!(manual.elapsed(), Duration::from_secs(2));
/// manual.advance(Duration::from_secs(1));
/// assert_eq!(hits.get(), 2);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    clock: Clock,
}

impl ManualClock {
    /// A manual clock at time zero (a fixed `Instant` captured now).
    pub fn new() -> ManualClock {
        ManualClock {
            clock: Clock::with_source(Source::Manual {
                base: Instant::now(),
                offset: Cell::new(Duration::ZERO),
            }),
        }
    }

    /// The [`Clock`] to hand to code under test (a clone of the same handle).
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// The current (manual) time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Total time advanced so far.
    pub fn elapsed(&self) -> Duration {
        match &self.clock.inner.source {
            Source::Manual { offset, .. } => offset.get(),
            Source::Real => Duration::ZERO, // unreachable: always manual
        }
    }

    /// Move time forward by `by`, then [`run_due`](Clock::run_due) once.
    ///
    /// Calls scheduled with zero delay by the calls that run wait for the next
    /// `advance` (or `run_due`). Called from inside a timer callback, time
    /// moves but nothing more runs until the next `run_due`.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual { offset, .. } = &self.clock.inner.source {
            offset.set(offset.get().saturating_add(by));
        }
        self.clock.run_due();
    }

    /// [`advance`](ManualClock::advance) by each duration in turn.
    pub fn pump(&self, timings: &[Duration]) {
        for &by in timings {
            self.advance(by);
        }
    }

    /// The live calls, earliest first (see [`Clock::pending_calls`]).
    pub fn pending_calls(&self) -> Vec<DelayedCall> {
        self.clock.pending_calls()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

/// A scheduled call (Twisted's `IDelayedCall`), returned by
/// [`Clock::call_later`]. A cheap, clonable handle; dropping it does not
/// cancel the call. It holds only a weak reference to its clock.
///
/// ```
/// use std::time::Duration;
/// use gyre_reactor::clock::{ManualClock, TimerError};
///
/// let manual = ManualClock::new();
/// let call = manual.clock().call_later(Duration::from_secs(10), || unreachable!());
/// assert!(call.active());
/// call.delay(Duration::from_secs(5)).unwrap();
/// assert_eq!(call.time(), manual.now() + Duration::from_secs(15));
/// call.cancel().unwrap();
/// assert_eq!(call.cancel(), Err(TimerError::AlreadyCancelled));
/// manual.advance(Duration::from_secs(20)); // nothing runs
/// ```
#[derive(Clone)]
pub struct DelayedCall {
    call: CallRc,
    clock: Weak<Inner>,
}

impl DelayedCall {
    /// Check the call is still pending, else the matching error.
    fn check_pending(&self) -> Result<(), TimerError> {
        match self.call.state.get() {
            State::Pending => Ok(()),
            State::Running | State::Called => Err(TimerError::AlreadyCalled),
            State::Cancelled => Err(TimerError::AlreadyCancelled),
        }
    }

    /// Cancel the call and drop its closure (freeing what it captured).
    ///
    /// `Err(AlreadyCalled)` if it has run or is running (including a call
    /// cancelling itself from its own callback); `Err(AlreadyCancelled)` if
    /// it was cancelled (or its clock was dropped).
    pub fn cancel(&self) -> Result<(), TimerError> {
        self.check_pending()?;
        self.call.state.set(State::Cancelled);
        if let Some(inner) = self.clock.upgrade() {
            let removed = {
                let mut q = inner.queue.borrow_mut();
                let slot = self.call.slot;
                let seq = self.call.seq.get();
                let removed = if q.calls.get(slot).is_some_and(|c| c.seq.get() == seq) {
                    q.calls.try_remove(slot)
                } else {
                    None
                };
                q.maybe_compact();
                removed
            };
            drop(removed);
        }
        // Outside any borrow: the closure's destructor is user code.
        self.call.body.discard();
        Ok(())
    }

    /// Move a pending call so it fires `delay` from the clock's current time.
    ///
    /// Errors as for [`cancel`](DelayedCall::cancel). For ordering, the call
    /// counts as scheduled now: among calls due at the same time it runs
    /// after those scheduled earlier.
    pub fn reset(&self, delay: Duration) -> Result<(), TimerError> {
        self.check_pending()?;
        let inner = self.clock.upgrade().ok_or(TimerError::AlreadyCancelled)?;
        let time = add_saturating(inner.now(), delay);
        self.reschedule(&inner, time);
        Ok(())
    }

    /// Push a pending call `extra` later than its current due time.
    ///
    /// Errors as for [`cancel`](DelayedCall::cancel); ordering as for
    /// [`reset`](DelayedCall::reset).
    pub fn delay(&self, extra: Duration) -> Result<(), TimerError> {
        self.check_pending()?;
        let inner = self.clock.upgrade().ok_or(TimerError::AlreadyCancelled)?;
        let time = add_saturating(self.call.time.get(), extra);
        self.reschedule(&inner, time);
        Ok(())
    }

    /// Push a new heap entry; the old one becomes stale (its seq no longer
    /// matches).
    fn reschedule(&self, inner: &Inner, time: Instant) {
        let mut q = inner.queue.borrow_mut();
        let seq = q.take_seq();
        self.call.time.set(time);
        self.call.seq.set(seq);
        q.heap
            .push(Reverse((inner.ticks(time), seq, self.call.slot)));
        q.maybe_compact();
    }

    /// Whether the call is still pending: neither running, called nor
    /// cancelled.
    pub fn active(&self) -> bool {
        self.call.state.get() == State::Pending
    }

    /// When the call is (or was last) due.
    pub fn time(&self) -> Instant {
        self.call.time.get()
    }

    /// Where [`Clock::call_later`] was called, for logs.
    pub fn location(&self) -> &'static Location<'static> {
        self.call.location
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedCall")
            .field("time", &self.call.time.get())
            .field("state", &self.call.state.get())
            .field("location", &format_args!("{}", self.call.location))
            .finish()
    }
}

/// Why a [`DelayedCall`] could not be cancelled, reset or delayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerError {
    /// The call has run or is running.
    AlreadyCalled,
    /// The call was cancelled (or its clock was dropped).
    AlreadyCancelled,
}

impl fmt::Display for TimerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimerError::AlreadyCalled => "the delayed call has already been called",
            TimerError::AlreadyCancelled => "the delayed call has already been cancelled",
        })
    }
}

impl std::error::Error for TimerError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    /// A shared log of names, and a closure factory that pushes to it.
    type Log = Rc<RefCell<Vec<&'static str>>>;

    fn push(log: &Log, name: &'static str) -> impl FnOnce() + 'static {
        let log = log.clone();
        move || log.borrow_mut().push(name)
    }

    #[test]
    fn fires_only_when_due() {
        let manual = ManualClock::new();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        let call = manual.clock().call_later(secs(2), move || f.set(true));
        assert!(call.active());
        manual.advance(secs(1));
        assert!(!fired.get());
        assert!(call.active());
        manual.advance(secs(1));
        assert!(fired.get());
        assert!(!call.active());
        assert!(manual.pending_calls().is_empty());
    }

    #[test]
    fn cancel_semantics() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let ran = Rc::new(Cell::new(0));

        let r = ran.clone();
        let call = clock.call_later(secs(1), move || r.set(r.get() + 1));
        assert_eq!(call.cancel(), Ok(()));
        assert!(!call.active());
        assert!(manual.pending_calls().is_empty());
        assert_eq!(clock.next_deadline(), None);
        assert_eq!(call.cancel(), Err(TimerError::AlreadyCancelled));
        assert_eq!(call.reset(secs(1)), Err(TimerError::AlreadyCancelled));
        manual.advance(secs(2));
        assert_eq!(ran.get(), 0);

        let r = ran.clone();
        let call = clock.call_later(secs(1), move || r.set(r.get() + 1));
        manual.advance(secs(1));
        assert_eq!(ran.get(), 1);
        assert_eq!(call.cancel(), Err(TimerError::AlreadyCalled));
        assert_eq!(call.delay(secs(1)), Err(TimerError::AlreadyCalled));

        // Cancel (and inspect) from inside its own callback.
        let handle: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        type Seen = Option<(Result<(), TimerError>, bool)>;
        let seen: Rc<Cell<Seen>> = Rc::default();
        let (h, s) = (handle.clone(), seen.clone());
        let call = clock.call_later(secs(1), move || {
            if let Some(me) = h.borrow().as_ref() {
                s.set(Some((me.cancel(), me.active())));
            }
        });
        *handle.borrow_mut() = Some(call.clone());
        manual.advance(secs(1));
        assert_eq!(seen.get(), Some((Err(TimerError::AlreadyCalled), false)));
        assert!(!call.active());
        handle.borrow_mut().take(); // break the handle cycle
    }

    #[test]
    fn cancel_drops_closure_promptly() {
        let manual = ManualClock::new();
        let captured = Rc::new(());
        let c = captured.clone();
        let call = manual.clock().call_later(secs(1), move || drop(c));
        assert_eq!(Rc::strong_count(&captured), 2);
        call.cancel().unwrap();
        assert_eq!(Rc::strong_count(&captured), 1);
    }

    #[test]
    fn delay_and_reset_move_due_time() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let t0 = manual.now();
        let log: Log = Rc::default();

        let a = clock.call_later(secs(2), push(&log, "a"));
        a.delay(secs(3)).unwrap();
        assert_eq!(a.time(), t0 + secs(5));
        let b = clock.call_later(secs(10), push(&log, "b"));
        manual.advance(secs(1));
        b.reset(secs(1)).unwrap(); // now is t0+1s
        assert_eq!(b.time(), t0 + secs(2));
        assert_eq!(clock.next_deadline(), Some(t0 + secs(2)));

        manual.advance(secs(1)); // t0+2s
        assert_eq!(*log.borrow(), ["b"]);
        manual.advance(secs(2)); // t0+4s
        assert_eq!(*log.borrow(), ["b"]);
        manual.advance(secs(1)); // t0+5s
        assert_eq!(*log.borrow(), ["b", "a"]);
        assert!(clock.pending_calls().is_empty());
        // B's old entry (10s) is stale, pruned lazily.
        assert_eq!(clock.queue_len(), 1);
        assert_eq!(clock.next_deadline(), None);
        assert_eq!(clock.queue_len(), 0);
    }

    #[test]
    fn reset_inside_another_call_keeps_order() {
        // Stepwise: A at 1s resets C from 3s to 2s; B is at 2.5s.
        let manual = ManualClock::new();
        let clock = manual.clock();
        let log: Log = Rc::default();
        let c_slot: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let (l, cs) = (log.clone(), c_slot.clone());
        clock.call_later(secs(1), move || {
            l.borrow_mut().push("a");
            if let Some(c) = cs.borrow().as_ref() {
                c.reset(secs(1)).unwrap();
            }
        });
        clock.call_later(ms(2500), push(&log, "b"));
        *c_slot.borrow_mut() = Some(clock.call_later(secs(3), push(&log, "c")));
        manual.advance(secs(1));
        assert_eq!(*log.borrow(), ["a"]);
        manual.advance(secs(1));
        assert_eq!(*log.borrow(), ["a", "c"]);
        manual.advance(ms(500));
        assert_eq!(*log.borrow(), ["a", "c", "b"]);

        // One big batch (now = 10s): A at 1s delays B from 2s to 4s; C at 3s
        // runs first.
        let manual = ManualClock::new();
        let clock = manual.clock();
        let log: Log = Rc::default();
        let b_slot: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let (l, bs) = (log.clone(), b_slot.clone());
        clock.call_later(secs(1), move || {
            l.borrow_mut().push("a");
            if let Some(b) = bs.borrow().as_ref() {
                b.delay(secs(2)).unwrap();
            }
        });
        *b_slot.borrow_mut() = Some(clock.call_later(secs(2), push(&log, "b")));
        clock.call_later(secs(3), push(&log, "c"));
        manual.advance(secs(10));
        // B was rescheduled during the batch, so it waits for the next one.
        assert_eq!(*log.borrow(), ["a", "c"]);
        assert_eq!(clock.run_due(), 1);
        assert_eq!(*log.borrow(), ["a", "c", "b"]);
    }

    #[test]
    fn zero_delay_reschedule_runs_next_batch() {
        fn again(clock: Clock, count: Rc<Cell<u32>>) {
            let c = clock.clone();
            clock.call_later(Duration::ZERO, move || {
                count.set(count.get() + 1);
                again(c, count);
            });
        }
        let manual = ManualClock::new();
        let clock = manual.clock();
        let count = Rc::new(Cell::new(0));
        again(clock.clone(), count.clone());
        assert_eq!(count.get(), 0);
        for n in 1..=3 {
            assert_eq!(clock.run_due(), 1);
            assert_eq!(count.get(), n);
        }
        manual.advance(Duration::ZERO);
        assert_eq!(count.get(), 4);
        // Stop the loop (it holds a Clock clone: an Rc cycle until cancelled).
        for call in clock.pending_calls() {
            call.cancel().unwrap();
        }
        assert_eq!(clock.run_due(), 0);
    }

    #[test]
    fn mass_cancel_compacts_and_runs_rest_in_order() {
        const N: u64 = 100_000;
        let manual = ManualClock::new();
        let clock = manual.clock();
        let t0 = manual.now();
        let ran: Rc<RefCell<Vec<u64>>> = Rc::default();
        let mut calls = Vec::with_capacity(N as usize);
        for i in 0..N {
            // Due times are a permutation of 0..N ms, not in scheduling order.
            let due = (i * 7919) % N;
            let r = ran.clone();
            calls.push(clock.call_later(ms(due), move || r.borrow_mut().push(due)));
        }
        let mut expected = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            if i % 10 == 0 {
                expected.push((i as u64 * 7919) % N);
            } else {
                call.cancel().unwrap();
            }
        }
        expected.sort_unstable();
        assert_eq!(clock.pending_calls().len(), expected.len());
        let len = clock.queue_len();
        assert!(
            (expected.len()..=2 * expected.len() + COMPACT_MIN_STALE).contains(&len),
            "heap not compacted: {len} entries"
        );
        assert_eq!(clock.next_deadline(), Some(t0 + ms(expected[0])));

        manual.advance(ms(N));
        assert_eq!(*ran.borrow(), expected);
        assert!(calls.iter().all(|c| !c.active()));
        assert!(clock.pending_calls().is_empty());
        assert_eq!(clock.queue_len(), 0);
        assert_eq!(clock.next_deadline(), None);
    }

    #[test]
    fn panicking_callback_does_not_stop_others() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let log: Log = Rc::default();
        let boom = clock.call_later(secs(1), || panic!("boom"));
        clock.call_later(secs(1), push(&log, "after"));
        assert_eq!(clock.run_due(), 0);
        manual.advance(secs(1));
        assert_eq!(*log.borrow(), ["after"]);
        assert!(!boom.active());
        assert_eq!(boom.cancel(), Err(TimerError::AlreadyCalled));
        // The clock still works afterwards.
        clock.call_later(secs(1), push(&log, "later"));
        manual.advance(secs(1));
        assert_eq!(*log.borrow(), ["after", "later"]);
    }

    #[test]
    fn pump_fires_at_the_right_steps() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let log: Log = Rc::default();
        clock.call_later(ms(500), push(&log, "0.5"));
        clock.call_later(secs(1), push(&log, "1"));
        clock.call_later(ms(2500), push(&log, "2.5"));
        clock.call_later(secs(4), push(&log, "4"));

        manual.pump(&[ms(400), ms(100)]); // 0.5s
        assert_eq!(*log.borrow(), ["0.5"]);
        manual.pump(&[ms(500), secs(1)]); // 1s, 2s
        assert_eq!(*log.borrow(), ["0.5", "1"]);
        manual.pump(&[secs(1), secs(1)]); // 3s, 4s
        assert_eq!(*log.borrow(), ["0.5", "1", "2.5", "4"]);
        assert_eq!(manual.elapsed(), secs(4));
    }

    #[test]
    fn same_time_calls_run_in_scheduling_order() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let log: Log = Rc::default();
        for name in ["a", "b", "c", "d", "e"] {
            clock.call_later(secs(1), push(&log, name));
        }
        let pending: Vec<_> = clock.pending_calls().iter().map(|c| c.time()).collect();
        assert_eq!(pending, vec![manual.now() + secs(1); 5]);
        manual.advance(secs(1));
        assert_eq!(*log.borrow(), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn cancel_later_call_from_earlier_one_in_batch() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let log: Log = Rc::default();
        let victim: Rc<RefCell<Option<DelayedCall>>> = Rc::default();
        let (l, v) = (log.clone(), victim.clone());
        clock.call_later(secs(1), move || {
            l.borrow_mut().push("a");
            if let Some(b) = v.borrow().as_ref() {
                assert_eq!(b.cancel(), Ok(()));
            }
        });
        *victim.borrow_mut() = Some(clock.call_later(secs(2), push(&log, "b")));
        clock.call_later(secs(2), push(&log, "c"));
        manual.advance(secs(5));
        assert_eq!(*log.borrow(), ["a", "c"]);
    }

    #[test]
    fn reentrant_advance_runs_nothing_extra() {
        let manual = Rc::new(ManualClock::new());
        let clock = manual.clock();
        let log: Log = Rc::default();
        let (m, l, c) = (manual.clone(), log.clone(), clock.clone());
        clock.call_later(secs(1), move || {
            l.borrow_mut().push("outer");
            c.call_later(secs(1), push(&l, "inner"));
            m.advance(secs(5)); // moves time, runs nothing now
            assert_eq!(c.run_due(), 0);
        });
        manual.advance(secs(1));
        assert_eq!(*log.borrow(), ["outer"]);
        assert_eq!(manual.elapsed(), secs(6));
        assert_eq!(clock.run_due(), 1);
        assert_eq!(*log.borrow(), ["outer", "inner"]);
    }

    #[test]
    fn clock_outlives_manual_and_drop_frees_pending() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        drop(manual);
        let captured = Rc::new(());
        let c = captured.clone();
        let call = clock.call_later(secs(1), move || drop(c));
        assert!(clock.is_manual());
        assert_eq!(clock.pending_calls().len(), 1);
        drop(clock);
        assert_eq!(Rc::strong_count(&captured), 1);
        assert!(!call.active());
        assert_eq!(call.cancel(), Err(TimerError::AlreadyCancelled));
        assert_eq!(call.reset(secs(1)), Err(TimerError::AlreadyCancelled));
    }

    #[test]
    fn real_clock_runs_zero_delay_call() {
        let clock = Clock::real();
        assert!(!clock.is_manual());
        let log: Log = Rc::default();
        let call = clock.call_later(Duration::ZERO, push(&log, "now"));
        clock.call_later(Duration::from_secs(3600), push(&log, "later"));
        assert!(call.location().file().ends_with("clock.rs"));
        assert_eq!(clock.run_due(), 1);
        assert_eq!(*log.borrow(), ["now"]);
        assert_eq!(clock.pending_calls().len(), 1);
    }

    #[test]
    fn huge_delays_saturate() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let call = clock.call_later(Duration::MAX, || {});
        assert!(call.time() > manual.now());
        call.delay(Duration::MAX).unwrap();
        manual.advance(Duration::MAX);
        manual.advance(Duration::MAX);
        let _ = clock.run_due();
    }

    #[test]
    fn timer_error_display() {
        assert!(TimerError::AlreadyCalled.to_string().contains("called"));
        assert!(TimerError::AlreadyCancelled
            .to_string()
            .contains("cancelled"));
    }
}
