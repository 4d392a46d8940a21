//! Waiting on several Deferreds at once: [`DeferredList`], [`gather_results`]
//! and [`race`] (Twisted's `DeferredList`, `gatherResults` and `race`).
//!
//! All three take their inputs by value (a Deferred's result has one
//! consumer) and watch each through a callback of its own. Cancelling the
//! Deferred they return cancels every input that has not fired yet, and the
//! returned Deferred fails with [`Cancelled`](super::Cancelled); what the
//! inputs then fire with is dropped without being logged.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use super::deferred::{Deferred, Outcome, Resolver, Watch, Watched};
use super::failure::Failure;

/// The Deferred at `index` failed first ([`DeferredList::fire_on_one_errback`],
/// [`gather_results`]); Twisted's `FirstError`. Its
/// [`source`](Error::source) is the input's error.
///
/// ```
/// use gyre_reactor::defer::{gather_results, Deferred, Failure, FirstError};
///
/// let (_a, a_done) = Deferred::<u8>::new();
/// let (b, b_done) = Deferred::<u8>::new();
/// let all = gather_results(vec![a_done, b_done]);
/// b.errback(Failure::msg("b broke")).unwrap();
/// let err = all.take_result().unwrap().unwrap_err().downcast::<FirstError>().unwrap();
/// assert_eq!(err.index, 1);
/// assert_eq!(err.failure.to_string(), "b broke");
/// ```
#[derive(Debug)]
pub struct FirstError {
    /// The position of the failed Deferred in the input list.
    pub index: usize,
    /// What it failed with.
    pub failure: Failure,
}

impl fmt::Display for FirstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deferred #{} of the list failed", self.index)
    }
}

impl Error for FirstError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.failure.error())
    }
}

/// Every one of several Deferreds failed ([`race`],
/// [`DeferredList::fire_on_one_callback`]); Twisted's `FailureGroup`. The
/// failures are in input order.
///
/// ```
/// use gyre_reactor::defer::{fail, race, Failure, FailureGroup};
///
/// let d = race(vec![fail::<u8>(Failure::msg("a")), fail(Failure::msg("b"))]);
/// let group = d.take_result().unwrap().unwrap_err().downcast::<FailureGroup>().unwrap();
/// let texts: Vec<String> = group.failures.iter().map(|f| f.to_string()).collect();
/// assert_eq!(texts, ["a", "b"]);
/// ```
#[derive(Debug)]
pub struct FailureGroup {
    /// The inputs' failures, in input order.
    pub failures: Vec<Failure>,
}

impl fmt::Display for FailureGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} Deferreds failed", self.failures.len())?;
        for (i, failure) in self.failures.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

impl Error for FailureGroup {}

/// Waits for a list of Deferreds (Twisted's `DeferredList`).
///
/// A builder: give it the inputs, set the options, then pick what the
/// returned Deferred fires with:
///
/// - [`into_deferred`](Self::into_deferred): every input's outcome, in input
///   order, once all have fired (`Vec<Result<T, Failure>>`); with
///   [`fire_on_one_errback`](Self::fire_on_one_errback), it fails with
///   [`FirstError`] as soon as one input fails.
/// - [`fire_on_one_callback`](Self::fire_on_one_callback): `(index, value)`
///   of the first input to succeed.
///
/// An empty list fires at once. Without
/// [`consume_errors`](Self::consume_errors), every input failure is also
/// logged as an unhandled error when it arrives (as in Twisted, where the
/// input Deferred keeps it); with it, the list is the failure's only
/// consumer and nothing is logged.
///
/// ```
/// use gyre_reactor::defer::{Deferred, DeferredList, Failure};
///
/// let (a, a_done) = Deferred::<&str>::new();
/// let (b, b_done) = Deferred::<&str>::new();
/// let all = DeferredList::new(vec![a_done, b_done])
///     .consume_errors(true)
///     .into_deferred();
/// b.errback(Failure::msg("no b")).unwrap();
/// assert!(!all.called());
/// a.callback("a").unwrap();
/// let results = all.take_result().unwrap().unwrap();
/// assert_eq!(*results[0].as_ref().unwrap(), "a");
/// assert_eq!(results[1].as_ref().unwrap_err().to_string(), "no b");
/// ```
pub struct DeferredList<T: 'static> {
    inputs: Vec<Deferred<T>>,
    fire_on_one_errback: bool,
    consume_errors: bool,
}

impl<T: 'static> fmt::Debug for DeferredList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredList")
            .field("inputs", &self.inputs)
            .field("fire_on_one_errback", &self.fire_on_one_errback)
            .field("consume_errors", &self.consume_errors)
            .finish()
    }
}

impl<T: 'static> DeferredList<T> {
    /// A list of the given Deferreds, with every option off.
    ///
    /// ```
    /// use gyre_reactor::defer::{succeed, DeferredList};
    ///
    /// let d = DeferredList::new([succeed(1), succeed(2)]).into_deferred();
    /// let values: Vec<i32> = d.take_result().unwrap().unwrap().into_iter().map(Result::unwrap).collect();
    /// assert_eq!(values, [1, 2]);
    /// ```
    pub fn new(inputs: impl IntoIterator<Item = Deferred<T>>) -> Self {
        DeferredList {
            inputs: inputs.into_iter().collect(),
            fire_on_one_errback: false,
            consume_errors: false,
        }
    }

    /// Fail with [`FirstError`] as soon as one input fails (Twisted's
    /// `fireOnOneErrback`). The other inputs are not cancelled.
    ///
    /// ```
    /// use gyre_reactor::defer::{Deferred, DeferredList, Failure, FirstError};
    ///
    /// let (_a, a_done) = Deferred::<()>::new();
    /// let (b, b_done) = Deferred::<()>::new();
    /// let d = DeferredList::new(vec![a_done, b_done])
    ///     .fire_on_one_errback(true)
    ///     .consume_errors(true)
    ///     .into_deferred();
    /// b.errback(Failure::msg("down")).unwrap();
    /// let first = d.take_result().unwrap().unwrap_err();
    /// assert_eq!(first.downcast_ref::<FirstError>().unwrap().index, 1);
    /// ```
    pub fn fire_on_one_errback(mut self, yes: bool) -> Self {
        self.fire_on_one_errback = yes;
        self
    }

    /// Treat the inputs' failures as handled by the list: they are not
    /// logged as unhandled errors (Twisted's `consumeErrors`).
    ///
    /// ```
    /// use gyre_reactor::defer::{fail, DeferredList, Failure};
    ///
    /// // Nothing is logged: the failure is in the results, and only there.
    /// let d = DeferredList::new([fail::<()>(Failure::msg("x"))])
    ///     .consume_errors(true)
    ///     .into_deferred();
    /// assert!(d.take_result().unwrap().unwrap()[0].is_err());
    /// ```
    pub fn consume_errors(mut self, yes: bool) -> Self {
        self.consume_errors = yes;
        self
    }

    /// A Deferred that fires with every input's outcome in input order once
    /// all have fired (at once for an empty list), or fails with
    /// [`FirstError`] under [`fire_on_one_errback`](Self::fire_on_one_errback).
    ///
    /// ```
    /// use gyre_reactor::defer::DeferredList;
    ///
    /// let d = DeferredList::<u8>::new(vec![]).into_deferred();
    /// assert!(d.take_result().unwrap().unwrap().is_empty());
    /// ```
    #[track_caller]
    pub fn into_deferred(self) -> Deferred<Vec<Outcome<T>>> {
        let n = self.inputs.len();
        let mode = self.mode();
        let results: Vec<Option<Outcome<T>>> = std::iter::repeat_with(|| None).take(n).collect();
        combine(
            self.inputs,
            (results, n),
            move |(results, left): &mut (Vec<Option<Outcome<T>>>, usize), index, outcome| {
                let outcome = match outcome {
                    Err(failure) => {
                        mode.note_failure(&failure);
                        if mode.fire_on_one_errback {
                            return Some(Err(Failure::new(FirstError { index, failure })));
                        }
                        Err(failure)
                    }
                    ok => ok,
                };
                results[index] = Some(outcome);
                *left -= 1;
                (*left == 0).then(|| Ok(all_present(results)))
            },
            Ok(Vec::new()),
            mode,
        )
    }

    /// A Deferred that fires with `(index, value)` of the first input to
    /// succeed (Twisted's `fireOnOneCallback`). If none does, it fails with a
    /// [`FailureGroup`] of all the failures (at once for an empty list), or
    /// with [`FirstError`] at the first failure under
    /// [`fire_on_one_errback`](Self::fire_on_one_errback). Unlike [`race`], the
    /// other inputs are not cancelled.
    ///
    /// ```
    /// use gyre_reactor::defer::{Deferred, DeferredList};
    ///
    /// let (slow, slow_done) = Deferred::<&str>::new();
    /// let (fast, fast_done) = Deferred::<&str>::new();
    /// let first = DeferredList::new(vec![slow_done, fast_done]).fire_on_one_callback();
    /// fast.callback("fast").unwrap();
    /// assert_eq!(first.take_result().unwrap().unwrap(), (1, "fast"));
    /// slow.callback("slow").unwrap(); // ignored
    /// ```
    #[track_caller]
    pub fn fire_on_one_callback(self) -> Deferred<(usize, T)> {
        let n = self.inputs.len();
        let mode = self.mode();
        let failures: Vec<Option<Failure>> = std::iter::repeat_with(|| None).take(n).collect();
        combine(
            self.inputs,
            (failures, n),
            move |(failures, left): &mut (Vec<Option<Failure>>, usize), index, outcome| {
                match outcome {
                    Ok(value) => Some(Ok((index, value))),
                    Err(failure) => {
                        mode.note_failure(&failure);
                        if mode.fire_on_one_errback {
                            return Some(Err(Failure::new(FirstError { index, failure })));
                        }
                        failures[index] = Some(failure);
                        *left -= 1;
                        (*left == 0).then(|| Err(group(failures)))
                    }
                }
            },
            Err(Failure::new(FailureGroup {
                failures: Vec::new(),
            })),
            mode,
        )
    }

    fn mode(&self) -> Mode {
        Mode {
            fire_on_one_errback: self.fire_on_one_errback,
            consume_errors: self.consume_errors,
            cancel_others: false,
        }
    }
}

/// Waits for all of `inputs` and fires with their values in input order, or
/// fails with [`FirstError`] at the first failure (Twisted's `gatherResults`
/// with `consumeErrors=True`: the inputs' failures are not logged). An empty
/// list fires at once with an empty `Vec`. The other inputs are not
/// cancelled when one fails; cancelling the returned Deferred cancels them.
///
/// ```
/// use gyre_reactor::defer::{gather_results, succeed, Deferred};
///
/// let (later, later_done) = Deferred::<u32>::new();
/// let all = gather_results(vec![succeed(1), later_done, succeed(3)]);
/// later.callback(2).unwrap();
/// assert_eq!(all.take_result().unwrap().unwrap(), [1, 2, 3]);
/// ```
#[track_caller]
pub fn gather_results<T: 'static>(inputs: Vec<Deferred<T>>) -> Deferred<Vec<T>> {
    let n = inputs.len();
    let values: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    combine(
        inputs,
        (values, n),
        |(values, left): &mut (Vec<Option<T>>, usize), index, outcome| match outcome {
            Ok(value) => {
                values[index] = Some(value);
                *left -= 1;
                (*left == 0).then(|| Ok(all_present(values)))
            }
            Err(failure) => Some(Err(Failure::new(FirstError { index, failure }))),
        },
        Ok(Vec::new()),
        Mode {
            fire_on_one_errback: true,
            consume_errors: true,
            cancel_others: false,
        },
    )
}

/// Fires with `(index, value)` of the first input to succeed and cancels all
/// the others (Twisted's `race`). If every input fails, fails with a
/// [`FailureGroup`] of their failures in input order; an empty list fails at
/// once that way (Twisted's would never fire). The losers' failures,
/// including the [`Cancelled`](super::Cancelled) ones the cancellation
/// causes, are consumed and not logged.
///
/// ```
/// use gyre_reactor::defer::{race, Deferred};
///
/// let (a, a_done) = Deferred::<&str>::new();
/// let (b, b_done) = Deferred::<&str>::new();
/// let winner = race(vec![a_done, b_done]);
/// b.callback("b").unwrap();
/// assert_eq!(winner.take_result().unwrap().unwrap(), (1, "b"));
/// assert!(a.called()); // cancelled
/// ```
#[track_caller]
pub fn race<T: 'static>(inputs: Vec<Deferred<T>>) -> Deferred<(usize, T)> {
    let n = inputs.len();
    let failures: Vec<Option<Failure>> = std::iter::repeat_with(|| None).take(n).collect();
    combine(
        inputs,
        (failures, n),
        |(failures, left): &mut (Vec<Option<Failure>>, usize), index, outcome| match outcome {
            Ok(value) => Some(Ok((index, value))),
            Err(failure) => {
                failures[index] = Some(failure);
                *left -= 1;
                (*left == 0).then(|| Err(group(failures)))
            }
        },
        Err(Failure::new(FailureGroup {
            failures: Vec::new(),
        })),
        Mode {
            fire_on_one_errback: false,
            consume_errors: true,
            cancel_others: true,
        },
    )
}

/// The values, in order, once every one is there.
fn all_present<V>(values: &mut Vec<Option<V>>) -> Vec<V> {
    let mut all = Vec::with_capacity(values.len());
    all.extend(std::mem::take(values).into_iter().flatten());
    all
}

/// Collects the failures (all present once every input failed).
fn group(failures: &mut [Option<Failure>]) -> Failure {
    let failures = failures.iter_mut().filter_map(Option::take).collect();
    Failure::new(FailureGroup { failures })
}

#[derive(Clone, Copy)]
struct Mode {
    fire_on_one_errback: bool,
    consume_errors: bool,
    /// Cancel the other inputs when one succeeds and fires the result (race).
    cancel_others: bool,
}

impl Mode {
    /// An input failed: unless the list consumes errors, log it as the
    /// input Deferred would have (same wording as the core's log).
    fn note_failure(&self, failure: &Failure) {
        if !self.consume_errors {
            log::error!("Unhandled error in Deferred: {}", failure.describe());
        }
    }
}

/// What the output's canceller shares with the watchers. It holds no
/// reference to the output, so the output (whose canceller holds this) and
/// the watchers (which hold the output) form no cycle.
#[derive(Default)]
struct Control {
    /// Set by the output's canceller: whatever arrives from then on is
    /// dropped silently.
    cancelling: Cell<bool>,
    /// The inputs, watched (to cancel them). An input that has not fired
    /// holds the list's shared state as its consumer, until it fires or is
    /// cancelled.
    links: RefCell<Vec<Watched>>,
    /// The input that won (`cancel_others` mode), to cancel the inputs
    /// watched after it when it won during construction.
    winner: Cell<Option<usize>>,
}

impl Control {
    /// Cancels every watched input except `except`, with no borrow held
    /// (a cancel may run callbacks, which may come back here and find the
    /// list empty: this loop is cancelling them already).
    fn cancel_all(&self, except: Option<usize>) {
        let links = std::mem::take(&mut *self.links.borrow_mut());
        for (i, link) in links.iter().enumerate() {
            if Some(i) != except {
                link.cancel();
            }
        }
        let mut slot = self.links.borrow_mut();
        if slot.is_empty() {
            *slot = links;
        }
    }
}

struct Shared<T, S, U: 'static, F> {
    /// The combinator's state and its function of each outcome.
    state: RefCell<(S, F)>,
    output: Resolver<U>,
    control: Rc<Control>,
    mode: Mode,
    input: PhantomData<fn(T)>,
}

/// The shared engine: watches every input with `on_outcome(state, index,
/// outcome)`, which returns `Some(result)` when the combined Deferred should
/// fire; `on_empty` is what an empty list fires with.
#[track_caller]
fn combine<T, U, S, F>(
    inputs: Vec<Deferred<T>>,
    state: S,
    on_outcome: F,
    on_empty: Outcome<U>,
    mode: Mode,
) -> Deferred<U>
where
    T: 'static,
    U: 'static,
    S: 'static,
    F: FnMut(&mut S, usize, Outcome<T>) -> Option<Outcome<U>> + 'static,
{
    let control = Rc::new(Control::default());
    let (output, result) = {
        let control = Rc::clone(&control);
        Deferred::with_canceller(move |_| {
            control.cancelling.set(true);
            control.cancel_all(None);
        })
    };
    if inputs.is_empty() {
        let _ = output.resolve(on_empty);
        return result;
    }
    let shared = Rc::new(Shared {
        state: RefCell::new((state, on_outcome)),
        output,
        control: Rc::clone(&control),
        mode,
        input: PhantomData,
    });
    let mut links = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        links.push(input.watch(Rc::clone(&shared), index));
    }
    *control.links.borrow_mut() = links;
    if let Some(winner) = control.winner.get() {
        // An input that had already fired won before the later inputs were
        // watched: cancel those now.
        control.cancel_all(Some(winner));
    }
    result
}

impl<T, S, U, F> Watch for Shared<T, S, U, F>
where
    T: 'static,
    U: 'static,
    S: 'static,
    F: FnMut(&mut S, usize, Outcome<T>) -> Option<Outcome<U>> + 'static,
{
    type Input = T;

    fn arrive(&self, index: usize, outcome: Outcome<T>) {
        if self.control.cancelling.get() {
            return;
        }
        if self.output.called() {
            // Already fired (first success or first error): a late failure
            // is still unhandled unless the list consumes errors.
            if let Err(failure) = outcome {
                self.mode.note_failure(&failure);
            }
            return;
        }
        let fire = {
            let mut state = self.state.borrow_mut();
            let (state, on_outcome) = &mut *state;
            on_outcome(state, index, outcome)
        };
        if let Some(result) = fire {
            let won = result.is_ok();
            let _ = self.output.resolve(result);
            if won && self.mode.cancel_others {
                self.control.winner.set(Some(index));
                self.control.cancel_all(Some(index));
            }
        }
    }
}
