//! Deferreds: typed callback chains, cancellation, time-outs, and
//! `async`/`await` (Twisted's `twisted.internet.defer`).
//!
//! - [`Deferred`] and [`Resolver`]: a result that is not there yet.
//!   [`Deferred::new`] returns both handles: the `Resolver` (a `Clone`)
//!   fires it once with a value or a [`Failure`]; the `Deferred` (not
//!   `Clone`: one consumer, checked by the compiler) carries a typed chain
//!   of callbacks and errbacks, and is also a `Future`.
//! - [`Failure`]: any error, plus where its Deferred was created and fired.
//! - [`succeed`], [`fail`], [`maybe_deferred`]: Deferreds that already fired.
//! - [`ensure_deferred`]: `async` code as a Deferred.
//! - [`DeferredList`], [`gather_results`], [`race`]: waiting on several.
//! - [`defer_later`], [`sleep`], [`LoopingCall`]: Deferreds and the clock.
//! - [`Backoff`], [`BackoffState`], [`retry`]: retrying with capped
//!   exponential back-off.
//! - [`timeout`]: a time limit for any future, on a clock.
//! - [`DeferredLock`], [`DeferredSemaphore`], [`DeferredQueue`]: mutual
//!   exclusion, bounded concurrency and a queue for Deferred code.
//!
//! Everything here is single-threaded: a Deferred lives and fires on the
//! thread that created it.
//!
//! # Two rules: chains run when fired, tasks run from the loop
//!
//! - **Deferred callback chains run synchronously when fired**, as in
//!   Twisted. Firing a Deferred (or adding a callback to a fired one)
//!   outside any callback runs every callback that became runnable before
//!   [`Resolver::callback`] returns; inside a callback, right after that
//!   callback returns. Chains run from a per-thread queue, not nested calls,
//!   so no chain grows the stack.
//! - **Waking a task only enqueues it; the loop polls tasks, never
//!   `callback()`.** `async` code ([`ensure_deferred`],
//!   [`Reactor::spawn`](crate::Reactor::spawn)) is polled by the reactor's
//!   loop, once per iteration for the tasks queued then, and by
//!   [`run_pending`] in code that has no running reactor (tests, synchronous
//!   programs). A task awaiting a Deferred is woken when it fires and runs
//!   after the firing code has returned, so it may take a `RefCell` borrow
//!   that the firing code held. As with tokio's `spawn`, even a new task's
//!   first poll is only queued.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use gyre_reactor::defer::{ensure_deferred, run_pending, Deferred};
//!
//! let state = Rc::new(RefCell::new(Vec::new()));
//! let (r, d) = Deferred::<u32>::new();
//! let task_state = Rc::clone(&state);
//! let task = ensure_deferred(async move {
//!     let n = d.await?;
//!     task_state.borrow_mut().push(n); // the firing code's borrow is over
//!     Ok(())
//! });
//! run_pending(); // the task's first poll: it waits on `d`
//! {
//!     let mut held = state.borrow_mut();
//!     r.callback(7).unwrap(); // wakes the task, does not poll it
//!     held.push(1);
//! }
//! run_pending(); // what a running reactor does on each iteration
//! assert_eq!(*state.borrow(), [1, 7]);
//! assert!(task.take_result().unwrap().is_ok());
//! ```

mod deferred;
mod failure;
mod list;
pub mod lock;
pub mod queue;
mod retry;
pub(crate) mod runner;
mod task;
mod time;
mod timeout;

#[cfg(test)]
mod tests;

pub use deferred::{fail, maybe_deferred, succeed, AlreadyConsumed, Deferred, Outcome, Resolver};
pub use failure::{panic_message, AlreadyCalled, Cancelled, Failure, Message, Panicked, TimedOut};
pub use list::{gather_results, race, DeferredList, FailureGroup, FirstError};
pub use lock::{DeferredLock, DeferredSemaphore, NotAcquired, ZeroTokens};
pub use queue::{
    DeferredQueue, QueueOverflow, QueueUnderflow, DEFAULT_QUEUE_BACKLOG, DEFAULT_QUEUE_SIZE,
};
pub use retry::{retry, Backoff, BackoffState};
pub use runner::{has_pending, run_pending};
pub use task::ensure_deferred;
pub use time::{defer_later, sleep, LoopingCall, LoopingCallError};
pub use timeout::{timeout, Timeout};
