//! [`DeferredQueue`]: a queue whose `get` is a Deferred (Twisted's
//! `defer.DeferredQueue`), with a bound on both sides.
//!
//! # Semantics (as Twisted's)
//!
//! - `put(item)` hands the item to the oldest waiting `get` (its callbacks
//!   run before `put` returns), or keeps it. With `size` items kept
//!   already, `put` fails with [`QueueOverflow`] (and the item is dropped).
//! - `get()` fires at once with the oldest kept item, or waits for the next
//!   `put`. With `backlog` gets waiting already, it fails at once with
//!   [`QueueUnderflow`].
//! - Cancelling a waiting `get` removes it: a later `put` goes to the next
//!   waiter, or is kept. Cancelling one that has fired does nothing.
//!
//! Both limits have defaults ([`DEFAULT_QUEUE_SIZE`],
//! [`DEFAULT_QUEUE_BACKLOG`]), are set with [`DeferredQueue::with_limits`],
//! and are logged when hit (a warning at the 1st, 10th, 100th, ... time).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use super::deferred::{fail, succeed, Deferred};
use super::lock::{waiting_deferred, Waiters};

/// The default most items a [`DeferredQueue`] keeps: 65,536.
pub const DEFAULT_QUEUE_SIZE: usize = 65_536;
/// The default most `get`s that may wait on a [`DeferredQueue`]: 65,536.
pub const DEFAULT_QUEUE_BACKLOG: usize = 65_536;

/// `put` on a full [`DeferredQueue`] (Twisted's `QueueOverflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOverflow {
    /// The queue's size limit.
    pub size: usize,
}

impl fmt::Display for QueueOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the queue is full ({} items)", self.size)
    }
}

impl std::error::Error for QueueOverflow {}

/// `get` on a [`DeferredQueue`] whose backlog of waiting gets is full
/// (Twisted's `QueueUnderflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueUnderflow {
    /// The queue's backlog limit.
    pub backlog: usize,
}

impl fmt::Display for QueueUnderflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too many gets wait on the queue already ({})",
            self.backlog
        )
    }
}

impl std::error::Error for QueueUnderflow {}

struct State<T: 'static> {
    pending: VecDeque<T>,
    waiting: Waiters<T>,
    size: usize,
    backlog: usize,
}

impl<T: 'static> State<T> {
    fn waiters(&mut self) -> &mut Waiters<T> {
        &mut self.waiting
    }
}

/// A queue of items whose [`get`](Self::get) returns a Deferred. A cheap
/// `Clone` handle. See the [module docs](self) for the rules.
///
/// ```
/// use gyre_reactor::defer::{DeferredQueue, QueueOverflow};
///
/// let queue = DeferredQueue::with_limits(1, 10);
/// let waiting = queue.get();
/// assert!(!waiting.called());
/// queue.put("first").unwrap(); // goes straight to the waiting get
/// assert_eq!(waiting.take_result().unwrap().unwrap(), "first");
/// queue.put("kept").unwrap();
/// assert_eq!(queue.put("one too many"), Err(QueueOverflow { size: 1 }));
/// assert_eq!(queue.get().take_result().unwrap().unwrap(), "kept");
/// ```
pub struct DeferredQueue<T: 'static> {
    state: Rc<RefCell<State<T>>>,
    refusals: Rc<Cell<u64>>,
}

impl<T: 'static> Clone for DeferredQueue<T> {
    fn clone(&self) -> Self {
        DeferredQueue {
            state: Rc::clone(&self.state),
            refusals: Rc::clone(&self.refusals),
        }
    }
}

impl<T: 'static> DeferredQueue<T> {
    /// A queue with the default limits ([`DEFAULT_QUEUE_SIZE`] items kept,
    /// [`DEFAULT_QUEUE_BACKLOG`] gets waiting).
    pub fn new() -> DeferredQueue<T> {
        DeferredQueue::with_limits(DEFAULT_QUEUE_SIZE, DEFAULT_QUEUE_BACKLOG)
    }

    /// A queue keeping at most `size` items and letting at most `backlog`
    /// gets wait (0 and 0 are allowed: such a queue only hands items from
    /// a waiting get to a put, or refuses).
    pub fn with_limits(size: usize, backlog: usize) -> DeferredQueue<T> {
        DeferredQueue {
            state: Rc::new(RefCell::new(State {
                pending: VecDeque::new(),
                waiting: Waiters::default(),
                size,
                backlog,
            })),
            refusals: Rc::default(),
        }
    }

    /// Hands `item` to the oldest waiting get, or keeps it;
    /// `Err(QueueOverflow)` (the item is dropped) if `size` items are kept
    /// already.
    pub fn put(&self, item: T) -> Result<(), QueueOverflow> {
        let waiter = {
            let mut state = self.state.borrow_mut();
            match state.waiting.pop() {
                Some(waiter) => waiter,
                None if state.pending.len() < state.size => {
                    state.pending.push_back(item);
                    return Ok(());
                }
                None => {
                    let size = state.size;
                    drop(state);
                    self.refused(format_args!(
                        "put refused: the queue is full ({size} items)"
                    ));
                    return Err(QueueOverflow { size });
                }
            }
        };
        // No borrow held: the waiter's callbacks may put or get again.
        let _ = waiter.callback(item);
        Ok(())
    }

    /// The oldest kept item, at once, or a Deferred that fires with the
    /// next one put; fails at once with [`QueueUnderflow`] if `backlog`
    /// gets wait already. Cancelling it while it waits removes it.
    #[track_caller]
    pub fn get(&self) -> Deferred<T> {
        let refused = {
            let mut state = self.state.borrow_mut();
            if let Some(item) = state.pending.pop_front() {
                drop(state);
                return succeed(item);
            }
            (state.waiting.len() >= state.backlog).then_some(state.backlog)
        };
        match refused {
            Some(backlog) => {
                self.refused(format_args!(
                    "get refused: {backlog} gets wait on the queue already"
                ));
                fail(QueueUnderflow { backlog })
            }
            None => waiting_deferred(&self.state, State::waiters),
        }
    }

    /// Items kept (put and not yet taken).
    pub fn len(&self) -> usize {
        self.state.borrow().pending.len()
    }

    /// Whether no item is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gets waiting for an item.
    pub fn waiting(&self) -> usize {
        self.state.borrow().waiting.len()
    }

    /// Logs a refusal: a warning at the 1st, 10th, 100th, ... one.
    fn refused(&self, what: fmt::Arguments<'_>) {
        let n = self.refusals.get() + 1;
        self.refusals.set(n);
        if is_power_of_ten(n) {
            log::warn!("DeferredQueue: {what} (refusal #{n})");
        } else {
            log::debug!("DeferredQueue: {what} (refusal #{n})");
        }
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

impl<T: 'static> Default for DeferredQueue<T> {
    fn default() -> Self {
        DeferredQueue::new()
    }
}

impl<T: 'static> fmt::Debug for DeferredQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("DeferredQueue")
            .field("kept", &state.pending.len())
            .field("waiting", &state.waiting.len())
            .field("size", &state.size)
            .field("backlog", &state.backlog)
            .finish()
    }
}
