//! [`DeferredLock`] and [`DeferredSemaphore`]: mutual exclusion and
//! bounded concurrency for Deferred code (Twisted's
//! `defer.DeferredLock` and `defer.DeferredSemaphore`).
//!
//! # Semantics (as Twisted's)
//!
//! - `acquire` returns a Deferred that fires with the lock (semaphore)
//!   handle once a token is free: at once if one is, else when a holder
//!   releases. Waiters are served first come, first served.
//! - `release` hands the token straight to the first waiter (its
//!   Deferred's callbacks run before `release` returns, as Deferred chains
//!   do), or puts it back. Releasing more often than acquiring is an error
//!   ([`NotAcquired`]), not a panic.
//! - `run(f)` acquires, calls `f` (which returns a Deferred), and releases
//!   when that Deferred fires, either way; a panic in `f` releases too and
//!   becomes a [`Panicked`] failure.
//! - Cancelling a waiting `acquire`'s Deferred removes the waiter: it fails
//!   with [`Cancelled`](super::Cancelled) and never gets a token.
//!   Cancelling one that has fired does nothing (the token is held until
//!   `release`).
//!
//! A Deferred from `acquire` that is dropped before it fires still gets
//! its token when its turn comes, and nobody releases it: keep it, or
//! cancel it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use super::deferred::{fail, Deferred, Resolver};
use super::failure::Panicked;

/// `release` was called more often than `acquire` succeeded (Twisted's
/// "Tried to release an unlocked lock" assertion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAcquired;

impl fmt::Display for NotAcquired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("released more often than acquired")
    }
}

impl std::error::Error for NotAcquired {}

/// A semaphore asked for with no tokens (Twisted's `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroTokens;

impl fmt::Display for ZeroTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DeferredSemaphore needs at least one token")
    }
}

impl std::error::Error for ZeroTokens {}

/// Deferreds waiting their turn, first come first served; each has an id
/// so that a cancelled one can be taken out.
pub(super) struct Waiters<T: 'static> {
    queue: VecDeque<(u64, Resolver<T>)>,
    next_id: u64,
}

impl<T: 'static> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            queue: VecDeque::new(),
            next_id: 0,
        }
    }
}

impl<T: 'static> Waiters<T> {
    pub(super) fn push(&mut self, resolver: Resolver<T>) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.queue.push_back((id, resolver));
        id
    }

    pub(super) fn pop(&mut self) -> Option<Resolver<T>> {
        self.queue.pop_front().map(|(_, r)| r)
    }

    /// Takes out the waiter `id`; returns whether it was there.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self.queue.iter().position(|(i, _)| *i == id) {
            Some(at) => {
                self.queue.remove(at);
                true
            }
            None => false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// A Deferred that waits in `cell`'s [`Waiters`] (reached through
/// `waiters`); cancelling it before it fires takes it out.
pub(super) fn waiting_deferred<S: 'static, T: 'static>(
    cell: &Rc<RefCell<S>>,
    waiters: fn(&mut S) -> &mut Waiters<T>,
) -> Deferred<T> {
    let weak: Weak<RefCell<S>> = Rc::downgrade(cell);
    let id_slot: Rc<std::cell::Cell<Option<u64>>> = Rc::default();
    let id_for_cancel = Rc::clone(&id_slot);
    let (resolver, d) = Deferred::with_canceller(move |_r| {
        if let (Some(cell), Some(id)) = (weak.upgrade(), id_for_cancel.get()) {
            if let Ok(mut state) = cell.try_borrow_mut() {
                waiters(&mut state).remove(id);
            }
        }
        // Not fired here: the Deferred fails with `Cancelled`.
    });
    let id = waiters(&mut cell.borrow_mut()).push(resolver);
    id_slot.set(Some(id));
    d
}

/// A token holder's state: how many tokens are free, and who waits.
struct Tokens {
    free: usize,
    limit: usize,
    waiting: Waiters<()>,
}

impl Tokens {
    fn waiters(&mut self) -> &mut Waiters<()> {
        &mut self.waiting
    }

    /// Takes a token now, or queues a waiter.
    fn acquire(cell: &Rc<RefCell<Tokens>>) -> Deferred<()> {
        {
            let mut state = cell.borrow_mut();
            if state.free > 0 {
                state.free -= 1;
                drop(state);
                return super::deferred::succeed(());
            }
        }
        waiting_deferred(cell, Tokens::waiters)
    }

    /// Gives a token to the first waiter, or back.
    fn release(cell: &Rc<RefCell<Tokens>>) -> Result<(), NotAcquired> {
        let next = {
            let mut state = cell.borrow_mut();
            if state.free >= state.limit {
                return Err(NotAcquired);
            }
            match state.waiting.pop() {
                Some(next) => next,
                None => {
                    state.free += 1;
                    return Ok(());
                }
            }
        };
        // The borrow is released: the waiter's callbacks may acquire or
        // release again.
        let _ = next.callback(());
        Ok(())
    }
}

/// Calls `f` under a token taken by `acquire` and given back by `release`.
fn run_with<T: 'static, H: Clone + 'static>(
    acquired: Deferred<H>,
    release: impl FnOnce(&H) + 'static,
    f: impl FnOnce() -> Deferred<T> + 'static,
) -> Deferred<T> {
    acquired.add_callback_deferred(move |holder: H| {
        let d = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(d) => d,
            Err(payload) => fail(Panicked::from_payload(&*payload)),
        };
        d.add_both(move |outcome| {
            release(&holder);
            outcome
        })
    })
}

/// A lock for Deferred code (Twisted's `DeferredLock`): one holder at a
/// time, the others wait their turn. A cheap `Clone` handle. See the
/// [module docs](self) for the rules.
///
/// ```
/// use gyre_reactor::defer::{succeed, DeferredLock};
///
/// let lock = DeferredLock::new();
/// let first = lock.acquire();
/// assert!(first.called() && lock.locked());
/// let second = lock.acquire();
/// assert!(!second.called());
/// lock.release().unwrap(); // the lock passes to the second acquirer
/// assert!(second.called() && lock.locked());
/// lock.release().unwrap();
/// assert!(!lock.locked());
///
/// // `run`: acquire, call, release when the returned Deferred fires.
/// let d = lock.run(|| succeed(7));
/// assert_eq!(d.take_result().unwrap().unwrap(), 7);
/// assert!(!lock.locked());
/// ```
#[derive(Clone)]
pub struct DeferredLock {
    tokens: Rc<RefCell<Tokens>>,
}

impl DeferredLock {
    /// An unlocked lock.
    pub fn new() -> DeferredLock {
        DeferredLock {
            tokens: Rc::new(RefCell::new(Tokens {
                free: 1,
                limit: 1,
                waiting: Waiters::default(),
            })),
        }
    }

    /// Whether someone holds the lock.
    pub fn locked(&self) -> bool {
        self.tokens.borrow().free == 0
    }

    /// How many acquirers wait.
    pub fn waiting(&self) -> usize {
        self.tokens.borrow().waiting.len()
    }

    /// A Deferred that fires with the lock once it is ours (at once if it
    /// is free). Cancelling it while it waits takes it out of the queue.
    #[track_caller]
    pub fn acquire(&self) -> Deferred<DeferredLock> {
        let me = self.clone();
        Tokens::acquire(&self.tokens).add_callback(move |()| Ok(me))
    }

    /// Releases the lock: the first waiter gets it (its callbacks run
    /// now), or it is unlocked. `Err(NotAcquired)` if it was not locked.
    pub fn release(&self) -> Result<(), NotAcquired> {
        Tokens::release(&self.tokens)
    }

    /// Acquires, calls `f`, and releases once the Deferred `f` returns
    /// fires (either way); fires with its outcome.
    #[track_caller]
    pub fn run<T: 'static>(&self, f: impl FnOnce() -> Deferred<T> + 'static) -> Deferred<T> {
        run_with(
            self.acquire(),
            |lock: &DeferredLock| {
                let _ = lock.release();
            },
            f,
        )
    }
}

impl Default for DeferredLock {
    fn default() -> Self {
        DeferredLock::new()
    }
}

impl fmt::Debug for DeferredLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredLock")
            .field("locked", &self.locked())
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// A semaphore for Deferred code (Twisted's `DeferredSemaphore`): at most
/// `tokens` holders at a time, to bound concurrency (say, requests in
/// flight). A cheap `Clone` handle. See the [module docs](self) for the
/// rules.
///
/// ```
/// use gyre_reactor::defer::{Deferred, DeferredSemaphore};
///
/// let sem = DeferredSemaphore::new(2).unwrap();
/// let (first_done, first) = Deferred::<()>::new();
/// let a = sem.run(move || first);
/// let b = sem.run(|| gyre_reactor::defer::succeed(()));
/// let (_third_done, third) = Deferred::<()>::new();
/// let c = sem.run(move || third);
/// assert!(b.called() && !a.called() && !c.called());
/// assert_eq!(sem.tokens(), 0);
/// first_done.callback(()).unwrap();
/// assert!(a.called());
/// assert_eq!(sem.tokens(), 1, "the third run still holds the other");
/// ```
#[derive(Clone)]
pub struct DeferredSemaphore {
    tokens: Rc<RefCell<Tokens>>,
}

impl DeferredSemaphore {
    /// A semaphore with `tokens` tokens; `Err(ZeroTokens)` for 0.
    pub fn new(tokens: usize) -> Result<DeferredSemaphore, ZeroTokens> {
        if tokens == 0 {
            return Err(ZeroTokens);
        }
        Ok(DeferredSemaphore {
            tokens: Rc::new(RefCell::new(Tokens {
                free: tokens,
                limit: tokens,
                waiting: Waiters::default(),
            })),
        })
    }

    /// Tokens free now.
    pub fn tokens(&self) -> usize {
        self.tokens.borrow().free
    }

    /// The number of tokens it was made with.
    pub fn limit(&self) -> usize {
        self.tokens.borrow().limit
    }

    /// How many acquirers wait.
    pub fn waiting(&self) -> usize {
        self.tokens.borrow().waiting.len()
    }

    /// A Deferred that fires with the semaphore once a token is ours (at
    /// once if one is free). Cancelling it while it waits takes it out of
    /// the queue.
    #[track_caller]
    pub fn acquire(&self) -> Deferred<DeferredSemaphore> {
        let me = self.clone();
        Tokens::acquire(&self.tokens).add_callback(move |()| Ok(me))
    }

    /// Gives a token back: the first waiter gets it (its callbacks run
    /// now). `Err(NotAcquired)` if all tokens are free already.
    pub fn release(&self) -> Result<(), NotAcquired> {
        Tokens::release(&self.tokens)
    }

    /// Acquires, calls `f`, and releases once the Deferred `f` returns
    /// fires (either way); fires with its outcome.
    #[track_caller]
    pub fn run<T: 'static>(&self, f: impl FnOnce() -> Deferred<T> + 'static) -> Deferred<T> {
        run_with(
            self.acquire(),
            |sem: &DeferredSemaphore| {
                let _ = sem.release();
            },
            f,
        )
    }
}

impl fmt::Debug for DeferredSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredSemaphore")
            .field("tokens", &self.tokens())
            .field("limit", &self.limit())
            .field("waiting", &self.waiting())
            .finish()
    }
}
