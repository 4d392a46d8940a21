//! [`Deferred`]: a result that is not there yet, with a typed callback chain.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::failure::{AlreadyCalled, Cancelled, Failure, Panicked, TimedOut};
use super::runner;
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
    chain: Rc<Chain>,
    /// The type of the result at the chain's tail.
    tail: PhantomData<fn() -> T>,
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
    /// Typed: firing puts the value in the root slot with no dynamic check.
    chain: Rc<TypedChain<T>>,
    /// The type the root fires with.
    root: PhantomData<fn(T)>,
}

impl<T: 'static> Clone for Resolver<T> {
    fn clone(&self) -> Self {
        Resolver::of(&self.chain)
    }
}

impl<T: 'static> Resolver<T> {
    fn of(chain: &Rc<TypedChain<T>>) -> Resolver<T> {
        Resolver {
            chain: Rc::clone(chain),
            root: PhantomData,
        }
    }
}

impl<T: 'static> Deferred<T> {
    fn of(chain: Rc<Chain>) -> Deferred<T> {
        Deferred {
            chain,
            tail: PhantomData,
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

/// A value moving along a chain, its type erased.
///
/// Invariant: a chain's root slot holds a value exactly while the chain's
/// current outcome is `Ok(Value::Root)`; a `Value::Root` never leaves its
/// chain (it is boxed first, [`Chain::detach`]).
enum Value {
    /// In the chain's own root slot, which has the type the root fires
    /// with: no allocation while the chain's values keep that type.
    Root,
    /// In a box: a `Box<Option<T>>`, reused while the type stays the same,
    /// or a `Box<T>` for a zero-sized `T` (which allocates nothing).
    Boxed(Box<dyn Any>),
}

type ErasedOutcome = Result<Value, Failure>;

/// One callback of a chain, its types erased. It is given its chain (for
/// the root slot, and where the chain was created, for the failure a type
/// mix-up would be), so that it need not capture them: a callback that
/// captures nothing is not allocated. It transforms the chain's current
/// outcome in place (a value that keeps the root's type stays in the root
/// slot, and the outcome is not even rewritten), or returns a Deferred to
/// wait for.
type Callback = Box<dyn FnOnce(&mut ErasedOutcome, &Chain) -> Wait>;

/// What watches several Deferreds at once (the lists of `list.rs`): each
/// input's outcome arrives with the input's index.
pub(super) trait Watch: 'static {
    /// The inputs' type.
    type Input: 'static;

    /// Input `index` has its outcome.
    fn arrive(&self, index: usize, outcome: Outcome<Self::Input>);
}

/// [`Watch`] with the input's type erased, for [`Consumer::Watch`].
trait ErasedWatch {
    fn arrive_erased(&self, index: usize, outcome: ErasedOutcome, chain: &Chain);
}

impl<W: Watch> ErasedWatch for W {
    fn arrive_erased(&self, index: usize, outcome: ErasedOutcome, chain: &Chain) {
        let outcome = outcome.and_then(|value| chain.take_value::<W::Input>(value));
        self.arrive(index, outcome);
    }
}

/// What a callback hands on besides its outcome: a Deferred to wait for
/// (then the outcome it leaves is void).
type Wait = Option<(Rc<Chain>, Detach)>;

/// A chain's callbacks in order: the first inline (most chains have one or
/// two, and then need no allocation for them), the rest in a queue whose
/// buffer comes from, and goes back to, a small per-thread stock of spare
/// queues ([`SPARE_QUEUES`]), so that a long chain allocates nothing for
/// its callbacks once the thread has run one like it.
// The queue is boxed on purpose: one word in every chain instead of four.
#[allow(clippy::box_collection)]
#[derive(Default)]
struct Callbacks {
    first: Option<Callback>,
    /// Boxed, so that a chain with at most one callback (most of them)
    /// pays one word for it, not a whole `VecDeque`.
    rest: Option<Box<VecDeque<Callback>>>,
}

/// How many spare callback queues a thread keeps.
const SPARE_QUEUES: usize = 16;
/// The largest spare queue kept (in callbacks): a chain that grew longer
/// gives its memory back.
const SPARE_QUEUE_CAPACITY: usize = 64;
/// The capacity a new callback queue starts with.
const FIRST_QUEUE_CAPACITY: usize = 16;

thread_local! {
    /// Empty callback queues, with their buffers, for the next chains.
    // Boxes kept whole, so that a chain reuses the box too.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<VecDeque<Callback>>>> = const { RefCell::new(Vec::new()) };
}

impl Callbacks {
    #[inline]
    fn push_back(&mut self, callback: Callback) {
        // Once the queue exists, everything goes behind what it holds
        // (`first` is popped before it), whether or not `first` is set.
        match &mut self.rest {
            Some(rest) => rest.push_back(callback),
            None if self.first.is_none() => self.first = Some(callback),
            None => self.rest.insert(spare_queue()).push_back(callback),
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Callback> {
        match self.first.take() {
            Some(first) => Some(first),
            None => self.rest.as_mut()?.pop_front(),
        }
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|rest| rest.is_empty())
    }

    /// Gives an empty queue's buffer back to the thread's stock.
    #[inline]
    fn recycle(&mut self) {
        if self.rest.is_some() {
            self.recycle_rest();
        }
    }

    fn recycle_rest(&mut self) {
        let Some(queue) = self.rest.take() else {
            return;
        };
        if queue.capacity() > SPARE_QUEUE_CAPACITY || !queue.is_empty() {
            return;
        }
        // The thread's storage may be going away, or borrowed by a drop
        // running inside `spare_queue`: then the buffer is simply freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < SPARE_QUEUES {
                    spare.push(queue);
                }
            }
        });
    }
}

/// An empty callback queue: a spare one, or a new one.
#[allow(clippy::box_collection)]
fn spare_queue() -> Box<VecDeque<Callback>> {
    SPARE
        .try_with(|spare| spare.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(VecDeque::with_capacity(FIRST_QUEUE_CAPACITY)))
}

/// A canceller, its type erased (it holds a weak handle on its chain, to
/// give the user's canceller a `Resolver<T>`).
type Canceller = Box<dyn FnOnce()>;

/// One Deferred: its result and the callbacks still to run on it, in one
/// allocation that grows (Twisted's model: a Deferred is a list of
/// callbacks). A [`Deferred<T>`] handle is a typed view of the chain's
/// tail; each `add_*` moves the handle, so the types line up by
/// construction.
///
/// # Running
///
/// A chain with a result and callbacks runs from the thread's chain queue
/// (`runner`): all of its callbacks in a loop, under one `catch_unwind`
/// (a panic fails the chain with [`Panicked`] and the loop goes on). After
/// each callback, if that callback made other chains runnable, this one
/// goes to the back of the queue, so a Deferred fired inside a callback
/// runs right after that callback returns. A callback that returns a
/// Deferred pauses the chain until that one has a result (`Head::Waiting`);
/// the inner chain hands it over through the queue, so nesting of any depth
/// uses constant stack.
///
/// The chain ends with its root slot (`root`, a `Cell<Option<T>>` for the
/// type `T` the root fires with): a value of that type stays there, not in
/// a box, so a chain whose callbacks keep the root's type allocates nothing
/// for its values.
pub(super) struct Chain<R: ?Sized = dyn Any> {
    state: RefCell<ChainState>,
    /// The root fired (or was cancelled).
    fired: Cell<bool>,
    /// Queued on the chain queue, or running.
    scheduled: Cell<bool>,
    /// A cancel without a canceller fired this Deferred; swallow one later fire.
    suppress_already_called: Cell<bool>,
    created_at: &'static Location<'static>,
    fired_at: Cell<Option<&'static Location<'static>>>,
    canceller: Cell<Option<Canceller>>,
    /// The value, while it has the root's type (see [`Value::Root`]).
    root: R,
}

/// A chain whose root fires with a `T`, its type known.
type TypedChain<T> = Chain<Cell<Option<T>>>;

/// Moves a chain's final value out of its root slot into a box, to hand it
/// to another chain: [`detach_as`] for the type at the chain's tail, known
/// where the chain is handed over (a root slot is a `Cell<Option<R>>` seen
/// as `dyn Any`, with no method of its own to box its value).
type Detach = fn(&Chain, ErasedOutcome) -> ErasedOutcome;

/// The outcome at the tail of `chain`, of type `U`, with a value in the root
/// slot moved into a box (a value at the tail is in the root slot only if
/// the root's type is `U`).
fn detach_as<U: 'static>(chain: &Chain, outcome: ErasedOutcome) -> ErasedOutcome {
    match outcome {
        Ok(Value::Root) => match chain.root_of::<U>().and_then(Cell::take) {
            Some(value) => Ok(Value::Boxed(erase(value))),
            None => Err(type_mix_up(chain.created_at)),
        },
        other => other,
    }
}

struct ChainState {
    /// The result at the head of `callbacks` (at the tail when none are
    /// left), or the Deferred the chain waits on.
    head: Head,
    callbacks: Callbacks,
    /// Who gets the result once no callback is left.
    consumer: Consumer,
}

/// What is at the head of a chain's callbacks.
enum Head {
    /// Nothing: before firing, while a callback runs, and once consumed.
    Empty,
    /// The result.
    Ready(ErasedOutcome),
    /// The Deferred a callback returned, until it hands its result here:
    /// `cancel` is forwarded there.
    Waiting(Weak<Chain>),
}

impl Head {
    /// Takes the result, if it is there.
    #[inline]
    fn take_ready(&mut self) -> Option<ErasedOutcome> {
        if !self.is_ready() {
            return None;
        }
        match std::mem::replace(self, Head::Empty) {
            Head::Ready(outcome) => Some(outcome),
            _ => None,
        }
    }

    /// Puts the result here (the head is usually empty: then there is
    /// nothing to drop).
    #[inline]
    fn put(&mut self, outcome: ErasedOutcome) {
        let old = std::mem::replace(self, Head::Ready(outcome));
        if !matches!(old, Head::Empty) {
            drop(old);
        } else {
            std::mem::forget(old);
        }
    }

    #[inline]
    fn is_ready(&self) -> bool {
        matches!(self, Head::Ready(_))
    }

    #[inline]
    fn is_waiting(&self) -> bool {
        matches!(self, Head::Waiting(_))
    }
}

enum Consumer {
    /// Nobody yet: the result stays (for `take_result`, `poll` or more
    /// callbacks).
    Nobody,
    /// A task awaiting the Deferred.
    Waker(Waker),
    /// An outer chain waiting on this one (a callback returned it, or
    /// `chain_deferred`).
    Outer(Rc<Chain>, Detach),
    /// A list watching this Deferred as its input at that index
    /// ([`Deferred::watch`]).
    Watch(Rc<dyn ErasedWatch>, usize),
    /// The result was taken.
    Done,
}

impl Chain {
    /// Runs the chain (from the thread's chain queue).
    pub(super) fn run(self: Rc<Self>) {
        loop {
            let ran = catch_unwind(AssertUnwindSafe(|| self.run_callbacks()));
            match ran {
                Ok(()) => break,
                Err(payload) => {
                    // The callback that panicked took the result with it.
                    let failure = Failure::new(Panicked::from_payload(&*payload));
                    self.state.borrow_mut().head.put(Err(failure));
                }
            }
        }
    }
}

impl<R: ?Sized> Chain<R> {
    fn already_called(&self) -> AlreadyCalled {
        AlreadyCalled {
            created_at: self.created_at,
            first_fired_at: self.fired_at.get(),
        }
    }
}

impl<T: 'static> TypedChain<T> {
    /// Fires the root: the value goes straight into the root slot (empty
    /// until the root fires).
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
        let outcome = outcome.map(|value| {
            self.root.set(Some(value));
            Value::Root
        });
        let chain: Rc<Chain> = Rc::clone(self) as Rc<Chain>;
        chain.fire_unchecked(outcome, at);
        Ok(())
    }
}

impl<R: ?Sized> Drop for Chain<R> {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        if matches!(state.head, Head::Ready(Err(_))) {
            if let Head::Ready(Err(failure)) = std::mem::replace(&mut state.head, Head::Empty) {
                log::error!("Unhandled error in Deferred: {}", failure.describe());
            }
        }
        // Callbacks and an outer chain may own further chains: dropping
        // them in place would recurse once per level. Hand them to the run
        // queue's iterative dropper instead.
        if state.callbacks.is_empty() {
            state.callbacks.recycle();
        } else {
            let callbacks = std::mem::take(&mut state.callbacks);
            runner::drop_later(Box::new(callbacks));
        }
        match std::mem::replace(&mut state.consumer, Consumer::Done) {
            Consumer::Outer(outer, _) => runner::drop_later(Box::new(outer)),
            Consumer::Watch(watcher, _) => runner::drop_later(Box::new(watcher)),
            _ => {}
        }
    }
}

/// Erases a value for the chain: in a `Box<Option<T>>`, so that the box
/// can be reused for the next value of the same type, except for a
/// zero-sized `T`, whose `Box<T>` costs no allocation at all.
#[inline]
fn erase<T: 'static>(value: T) -> Box<dyn Any> {
    if std::mem::size_of::<T>() == 0 {
        Box::new(value)
    } else {
        Box::new(Some(value))
    }
}

/// Takes the value out of an erased box. A box of another type is the
/// library's bug, reported as a failure rather than a panic.
#[inline]
fn unerase<T: 'static>(erased: Box<dyn Any>, at: &'static Location<'static>) -> Outcome<T> {
    if std::mem::size_of::<T>() == 0 {
        return match erased.downcast::<T>() {
            Ok(boxed) => Ok(*boxed),
            Err(_) => Err(type_mix_up(at)),
        };
    }
    match erased.downcast::<Option<T>>() {
        Ok(mut boxed) => boxed.take().ok_or_else(|| type_mix_up(at)),
        Err(_) => Err(type_mix_up(at)),
    }
}

fn type_mix_up(at: &'static Location<'static>) -> Failure {
    Failure::msg(format!(
        "internal error: a Deferred created at {at} carried a value of an unexpected type"
    ))
}

impl Chain {
    /// A chain whose root fires with a `T`.
    fn new<T: 'static>(created_at: &'static Location<'static>) -> Rc<TypedChain<T>> {
        Rc::new(Chain {
            state: RefCell::new(ChainState {
                head: Head::Empty,
                callbacks: Callbacks::default(),
                consumer: Consumer::Nobody,
            }),
            fired: Cell::new(false),
            scheduled: Cell::new(false),
            suppress_already_called: Cell::new(false),
            created_at,
            fired_at: Cell::new(None),
            canceller: Cell::new(None),
            root: Cell::new(None),
        })
    }

    /// The root slot, if the root's type is `T`.
    #[inline]
    fn root_of<T: 'static>(&self) -> Option<&Cell<Option<T>>> {
        self.root.downcast_ref::<Cell<Option<T>>>()
    }

    /// Takes a value of type `T` out of the chain's root slot or its box.
    #[inline]
    fn take_value<T: 'static>(&self, value: Value) -> Outcome<T> {
        match value {
            Value::Root => self
                .root_of::<T>()
                .and_then(Cell::take)
                .ok_or_else(|| type_mix_up(self.created_at)),
            Value::Boxed(erased) => unerase(erased, self.created_at),
        }
    }

    /// Erases a value: into the root slot if it has the root's type (the
    /// slot is empty then: see [`Value`]), else into a box.
    #[inline]
    fn put_value<T: 'static>(&self, value: T) -> Value {
        match self.root_of::<T>() {
            Some(slot) => {
                slot.set(Some(value));
                Value::Root
            }
            None => Value::Boxed(erase(value)),
        }
    }

    fn fire_unchecked(self: &Rc<Self>, mut outcome: ErasedOutcome, at: &'static Location<'static>) {
        self.fired.set(true);
        self.fired_at.set(Some(at));
        let canceller = self.canceller.take();
        drop(canceller);
        if let Err(failure) = &mut outcome {
            failure.note_locations(self.created_at, Some(at));
        }
        let watch = {
            let mut state = self.state.borrow_mut();
            if state.callbacks.is_empty()
                && matches!(state.consumer, Consumer::Watch(..))
                && runner::idle()
            {
                match std::mem::replace(&mut state.consumer, Consumer::Done) {
                    Consumer::Watch(watcher, index) => Some((watcher, index)),
                    other => {
                        state.consumer = other;
                        None
                    }
                }
            } else {
                None
            }
        };
        match watch {
            // A list's input with no callbacks, fired outside any callback:
            // what the chain queue would do at once, without the queue.
            Some((watcher, index)) => runner::run_now(|| {
                let delivered = catch_unwind(AssertUnwindSafe(|| {
                    watcher.arrive_erased(index, outcome, self);
                }));
                if let Err(payload) = delivered {
                    let failure = Failure::new(Panicked::from_payload(&*payload));
                    self.state.borrow_mut().head.put(Err(failure));
                }
            }),
            None => {
                self.state.borrow_mut().head.put(outcome);
                self.wake();
            }
        }
    }

    /// Moves the result on if there is work: callbacks to run or a
    /// consumer to hand it to.
    fn wake(self: &Rc<Self>) {
        let runnable = {
            let state = self.state.borrow();
            state.head.is_ready()
                && (!state.callbacks.is_empty()
                    || matches!(
                        state.consumer,
                        Consumer::Waker(_) | Consumer::Outer(..) | Consumer::Watch(..)
                    ))
        };
        if runnable && !self.scheduled.replace(true) {
            runner::schedule(Rc::clone(self));
        }
    }

    /// Runs callbacks until none is left, the chain waits on an inner
    /// Deferred, or another chain became runnable (then this one is queued
    /// again behind it); then hands a final result to the consumer. The
    /// result is held here, not in the chain, while callbacks run.
    fn run_callbacks(self: &Rc<Self>) {
        let first = {
            let mut state = self.state.borrow_mut();
            if state.callbacks.is_empty() {
                // Nothing to run: straight to the consumer.
                None
            } else {
                state.head.take_ready()
            }
        };
        if let Some(mut current) = first {
            loop {
                // One borrow per callback: to take it, or, when none is
                // left, to put the final result back.
                let callback = {
                    let mut state = self.state.borrow_mut();
                    match state.callbacks.pop_front() {
                        Some(callback) => callback,
                        None => {
                            state.head.put(current);
                            break;
                        }
                    }
                };
                if let Some((inner, detach)) = callback(&mut current, self) {
                    match self.wait_on(inner, detach) {
                        Ok(()) => break,
                        Err(failure) => current = Err(failure),
                    }
                }
                if runner::chains_queued() {
                    // Fairness: what this callback fired runs first.
                    self.state.borrow_mut().head.put(current);
                    runner::requeue(Rc::clone(self));
                    return;
                }
            }
        }
        self.scheduled.set(false);
        self.deliver();
    }

    /// Hands a final result (no callbacks left) to an outer chain or wakes
    /// the task awaiting it.
    fn deliver(self: &Rc<Self>) {
        let handoff = {
            let mut state = self.state.borrow_mut();
            if !state.head.is_ready() || !state.callbacks.is_empty() {
                return;
            }
            match std::mem::replace(&mut state.consumer, Consumer::Nobody) {
                Consumer::Outer(outer, detach) => {
                    state.consumer = Consumer::Done;
                    state
                        .head
                        .take_ready()
                        .map(|outcome| (outer, detach, outcome))
                }
                Consumer::Waker(waker) => {
                    drop(state);
                    // No borrow held: a waker may do anything.
                    waker.wake();
                    return;
                }
                Consumer::Watch(watcher, index) => {
                    state.consumer = Consumer::Done;
                    let outcome = state.head.take_ready();
                    drop(state);
                    if let Some(outcome) = outcome {
                        watcher.arrive_erased(index, outcome, self);
                    }
                    return;
                }
                other => {
                    state.consumer = other;
                    None
                }
            }
        };
        if let Some((outer, detach, outcome)) = handoff {
            outer.resume(detach(self, outcome));
        }
    }

    /// An inner chain this one waited on has its result.
    fn resume(self: &Rc<Self>, outcome: ErasedOutcome) {
        {
            self.state.borrow_mut().head.put(outcome);
        }
        self.wake();
    }

    /// Pauses this chain until `inner` has a result, which then moves here
    /// (so a failure is logged, if at all, by the outer chain, never twice).
    ///
    /// An error (for the chain to go on with) when `inner` is this chain
    /// or already has a consumer.
    fn wait_on(self: &Rc<Self>, inner: Rc<Chain>, detach: Detach) -> Result<(), Failure> {
        if Rc::ptr_eq(self, &inner) {
            return Err(Failure::msg(format!(
                "a callback of the Deferred created at {} returned that same Deferred",
                self.created_at
            )));
        }
        let taken = {
            let mut state = inner.state.borrow_mut();
            match state.consumer {
                Consumer::Nobody | Consumer::Waker(_) => {
                    state.consumer = Consumer::Outer(Rc::clone(self), detach);
                    false
                }
                Consumer::Outer(..) | Consumer::Watch(..) | Consumer::Done => true,
            }
        };
        if taken {
            return Err(Failure::new(AlreadyConsumed {
                created_at: inner.created_at,
            }));
        }
        self.state.borrow_mut().head = Head::Waiting(Rc::downgrade(&inner));
        inner.wake();
        Ok(())
    }

    /// Appends a callback, and runs it if the result is there.
    #[inline]
    fn push(self: &Rc<Self>, callback: Callback) {
        {
            let mut state = self.state.borrow_mut();
            if matches!(
                state.consumer,
                Consumer::Done | Consumer::Outer(..) | Consumer::Watch(..)
            ) {
                // A second consumer: it gets a failure saying so.
                state.consumer = Consumer::Nobody;
                let already = AlreadyConsumed {
                    created_at: self.created_at,
                };
                state.head.put(Err(Failure::new(already)));
            }
            state.callbacks.push_back(callback);
        }
        if self.fired.get() {
            self.wake();
        }
    }

    /// The result at the tail, if it is there and nobody took it.
    fn take_result<T: 'static>(&self) -> Option<Outcome<T>> {
        let erased = {
            let mut state = self.state.borrow_mut();
            if !state.callbacks.is_empty()
                || state.head.is_waiting()
                || !matches!(state.consumer, Consumer::Nobody | Consumer::Waker(_))
            {
                return None;
            }
            let erased = state.head.take_ready()?;
            state.consumer = Consumer::Done;
            erased
        };
        Some(erased.and_then(|value| self.take_value(value)))
    }

    /// Whether the result at the tail is there (fired, and no callback
    /// left to run or inner Deferred to wait for).
    fn tail_ready(&self) -> bool {
        let state = self.state.borrow();
        self.fired.get()
            && state.callbacks.is_empty()
            && !state.head.is_waiting()
            && !self.scheduled.get()
            && (state.head.is_ready() || matches!(state.consumer, Consumer::Done))
    }

    fn cancel(self: &Rc<Self>, at: &'static Location<'static>) {
        if self.fired.get() {
            // Fired: cancel what the chain waits on, if anything (after the
            // canceller of a Deferred that `chain_deferred` feeds).
            let canceller = self.canceller.take();
            if let Some(canceller) = canceller {
                canceller();
            }
            let inner = match &self.state.borrow().head {
                Head::Waiting(inner) => inner.upgrade(),
                _ => None,
            };
            if let Some(inner) = inner {
                inner.cancel(at);
            }
            return;
        }
        let canceller = self.canceller.take();
        if let Some(canceller) = canceller {
            canceller();
        }
        if !self.fired.get() {
            self.suppress_already_called.set(true);
            self.fire_unchecked(Err(Failure::new(Cancelled)), at);
        }
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
        self.chain.fire(Ok(value), Location::caller())
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
        self.chain.fire(Err(failure.into()), Location::caller())
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
        self.chain.fire(outcome, Location::caller())
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
        self.chain.fired.get()
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
        self.chain.created_at
    }
}

impl<T: 'static> fmt::Debug for Resolver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("created_at", &self.chain.created_at)
            .field("called", &self.chain.fired.get())
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
        let chain = Chain::new::<T>(Location::caller());
        (Resolver::of(&chain), Deferred::of(chain))
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
        let chain = Chain::new::<T>(Location::caller());
        // A weak handle: the chain owns its canceller.
        let typed = Rc::downgrade(&chain);
        chain.canceller.set(Some(Box::new(move || {
            if let Some(chain) = typed.upgrade() {
                canceller(&Resolver::of(&chain));
            }
        })));
        (Resolver::of(&chain), Deferred::of(chain))
    }

    /// A Deferred already fired with `outcome`, created and fired at `at`.
    fn fired(outcome: Outcome<T>, at: &'static Location<'static>) -> Deferred<T> {
        let chain = Chain::new::<T>(at);
        let outcome = outcome.map(|value| {
            chain.root.set(Some(value));
            Value::Root
        });
        let chain: Rc<Chain> = chain;
        chain.fire_unchecked(outcome, at);
        Deferred::of(chain)
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
        self.chain.created_at
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
        self.chain.tail_ready()
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
        self.chain.take_result()
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
        self.chain.cancel(Location::caller());
    }

    /// The general link: `f` gets the outcome and returns the next step.
    /// It runs under the chain's `catch_unwind` (one per run of the chain,
    /// not one per callback).
    #[track_caller]
    fn link<U: 'static>(self, f: impl FnOnce(Outcome<T>) -> Link<U> + 'static) -> Deferred<U> {
        self.chain.push(Box::new(
            move |current: &mut ErasedOutcome, chain: &Chain| {
                if std::mem::size_of::<T>() == 0 || current.is_err() {
                    // Nothing to keep in place: take the outcome out.
                    let outcome = std::mem::replace(current, Ok(Value::Root));
                    let outcome = outcome.and_then(|value| chain.take_value::<T>(value));
                    return f(outcome).settle(current, chain);
                }
                match current {
                    Ok(Value::Root) => {
                        let Some(slot) = chain.root_of::<T>() else {
                            return f(Err(type_mix_up(chain.created_at))).settle(current, chain);
                        };
                        let Some(value) = slot.take() else {
                            return f(Err(type_mix_up(chain.created_at))).settle(current, chain);
                        };
                        match f(Ok(value)) {
                            // The same type as the root's goes back in its
                            // slot (decided at compile time), and the outcome
                            // stays as it is; another is boxed.
                            Link::Now(Ok(next)) => {
                                match (slot as &dyn Any).downcast_ref::<Cell<Option<U>>>() {
                                    Some(same) => same.set(Some(next)),
                                    None => *current = Ok(Value::Boxed(erase(next))),
                                }
                                None
                            }
                            other => other.settle(current, chain),
                        }
                    }
                    Ok(Value::Boxed(erased)) => {
                        // Take the value out of its box and keep the box, to
                        // put the next value in if it has the same type
                        // (decided at compile time: no second dynamic check).
                        let Some(slot) = erased.downcast_mut::<Option<T>>() else {
                            return f(Err(type_mix_up(chain.created_at))).settle(current, chain);
                        };
                        let Some(value) = slot.take() else {
                            return f(Err(type_mix_up(chain.created_at))).settle(current, chain);
                        };
                        match f(Ok(value)) {
                            Link::Now(Ok(next)) => {
                                let same = (slot as &mut dyn Any).downcast_mut::<Option<U>>();
                                match same {
                                    Some(same) if std::mem::size_of::<U>() != 0 => {
                                        *same = Some(next);
                                    }
                                    _ => *current = Ok(chain.put_value(next)),
                                }
                                None
                            }
                            other => other.settle(current, chain),
                        }
                    }
                    // Handled above.
                    Err(_) => None,
                }
            },
        ));
        Deferred::of(self.chain)
    }

    /// Watches this Deferred for a list: its outcome (after its callbacks)
    /// goes to `watcher` with `index`, as to any other consumer, without
    /// an allocation. The returned handle cancels it.
    pub(super) fn watch<W: Watch<Input = T>>(self, watcher: Rc<W>, index: usize) -> Watched {
        let taken = {
            let mut state = self.chain.state.borrow_mut();
            match state.consumer {
                Consumer::Nobody | Consumer::Waker(_) => {
                    state.consumer =
                        Consumer::Watch(Rc::clone(&watcher) as Rc<dyn ErasedWatch>, index);
                    false
                }
                Consumer::Outer(..) | Consumer::Watch(..) | Consumer::Done => true,
            }
        };
        if taken {
            watcher.arrive(
                index,
                Err(Failure::new(AlreadyConsumed {
                    created_at: self.chain.created_at,
                })),
            );
        } else {
            self.chain.wake();
        }
        Watched { chain: self.chain }
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
        self.link(move |outcome| Link::Now(outcome.and_then(f)))
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
        self.link(move |outcome| Link::Now(outcome.or_else(f)))
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
            Link::Now(match outcome {
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
        self.link(move |outcome| Link::Now(f(outcome)))
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
            Ok(v) => Link::Wait(f(v)),
            Err(e) => Link::Now(Err(e)),
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
            Ok(v) => Link::Now(Ok(v)),
            Err(e) => Link::Wait(f(e)),
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
        self.link(move |outcome| Link::Wait(f(outcome)))
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
            return Err(other.chain.already_called());
        }
        // The other Deferred's root takes this one's result as its own.
        let outer: Rc<Chain> = Rc::clone(&other.chain) as Rc<Chain>;
        let outer = &outer;
        outer.fired.set(true);
        outer.fired_at.set(Some(Location::caller()));
        if let Err(failure) = outer.wait_on(self.chain, detach_as::<T>) {
            outer.state.borrow_mut().head.put(Err(failure));
            outer.wake();
        }
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
        let to_cancel = Rc::downgrade(&self.chain);
        let flag = Rc::clone(&timed_out);
        let timer = clock.call_later(timeout, move || {
            if let Some(chain) = to_cancel.upgrade() {
                flag.set(true);
                chain.cancel(Location::caller());
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

/// A Deferred a list watches ([`Deferred::watch`]), kept to cancel it.
pub(super) struct Watched {
    chain: Rc<Chain>,
}

impl Watched {
    /// Cancels the watched Deferred ([`Deferred::cancel`]).
    #[track_caller]
    pub(super) fn cancel(&self) {
        self.chain.cancel(Location::caller());
    }
}

/// What a typed link hands on: a result now, or a Deferred to wait for.
enum Link<U: 'static> {
    Now(Outcome<U>),
    Wait(Deferred<U>),
}

impl<U: 'static> Link<U> {
    /// Erases a link's step: its outcome into `current`, or the Deferred
    /// to wait for.
    #[inline]
    fn settle(self, current: &mut ErasedOutcome, chain: &Chain) -> Wait {
        match self {
            Link::Now(outcome) => {
                *current = outcome.map(|value| chain.put_value(value));
                None
            }
            Link::Wait(inner) => Some((inner.chain, detach_as::<U>)),
        }
    }
}

impl<T: 'static> Future for Deferred<T> {
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let chain = &self.chain;
        if let Some(outcome) = chain.take_result() {
            return Poll::Ready(outcome);
        }
        let mut state = chain.state.borrow_mut();
        match &mut state.consumer {
            Consumer::Nobody => state.consumer = Consumer::Waker(cx.waker().clone()),
            Consumer::Waker(w) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            Consumer::Outer(..) | Consumer::Watch(..) | Consumer::Done => {
                return Poll::Ready(Err(Failure::new(AlreadyConsumed {
                    created_at: chain.created_at,
                })))
            }
        }
        Poll::Pending
    }
}

impl<T: 'static> fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("created_at", &self.chain.created_at)
            .field("called", &self.chain.fired.get())
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
