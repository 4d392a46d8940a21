//! Deferreds: typed callback chains, cancellation, time-outs, and
//! `async`/`await` (Twisted's `twisted.internet.defer`).
//!
//! - [`Deferred`]: a result that is not there yet, fired once with a value or
//!   a [`Failure`]; a typed chain of callbacks and errbacks; also a `Future`.
//! - [`Failure`]: any error, plus where its Deferred was created and fired.
//! - [`succeed`], [`fail`], [`maybe_deferred`]: Deferreds that already fired.
//! - [`ensure_deferred`]: `async` code as a Deferred.
//! - [`DeferredList`], [`gather_results`], [`race`]: waiting on several.
//! - [`defer_later`], [`sleep`], [`LoopingCall`]: Deferreds and the clock.
//! - [`Backoff`], [`BackoffState`], [`retry`]: retrying with capped
//!   exponential back-off.
//!
//! Everything here is single-threaded: a Deferred lives and fires on the
//! thread that created it.

mod deferred;
mod failure;
mod list;
mod retry;
pub(crate) mod runner;
mod task;
mod time;

#[cfg(test)]
mod tests;

pub use deferred::{fail, maybe_deferred, succeed, AlreadyConsumed, Deferred, Outcome};
pub use failure::{panic_message, AlreadyCalled, Cancelled, Failure, Message, Panicked, TimedOut};
pub use list::{gather_results, race, DeferredList, FailureGroup, FirstError};
pub use retry::{retry, Backoff, BackoffState};
pub use runner::{drain as run_pending, has_pending};
pub use task::ensure_deferred;
pub use time::{defer_later, sleep, LoopingCall, LoopingCallError};
