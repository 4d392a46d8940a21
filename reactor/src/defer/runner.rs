//! The per-thread queues under every Deferred and every task, and the local
//! executor that runs `async` code as Deferreds.
//!
//! Each thread has two queues:
//!
//! - **Deferred chain jobs** (a fired Deferred handing its result to the next
//!   link). They run synchronously, as in Twisted: an operation started
//!   outside any callback (firing a Deferred, adding a callback to a fired
//!   one) runs everything it makes runnable before it returns; the same
//!   operation inside a callback runs it right after that callback returns.
//!   Results move through a FIFO of jobs instead of nested calls, so a chain
//!   of any length, and 100,000 Deferreds each waiting on the next, complete
//!   in constant stack depth.
//! - **Tasks** (futures spawned with [`ensure_deferred`](super::ensure_deferred)
//!   or [`Reactor::spawn`](crate::Reactor::spawn)). Waking a task only
//!   enqueues it; the reactor's loop polls tasks (once per iteration, for the
//!   tasks queued when the iteration reached them), and so does
//!   [`run_pending`] for code without a reactor. Nothing else polls a task:
//!   never `callback()`, never a waker.
//!
//! Tasks are kept in a thread-local table. Their wakers are `Send`: a wake on
//! the home thread queues a poll here; a wake from another thread goes
//! through a mutex-guarded list and a notifier that the reactor installs (its
//! mio `Waker`), and the reactor moves those wakes into this queue on its own
//! thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::{self, ThreadId};

use super::deferred::Chain;

/// A task to poll (the chain queue holds Deferred chains themselves).
pub(crate) trait Job {
    fn run(self: Rc<Self>);

    /// Called before a wake queues the job; `false` means it is already
    /// queued (or finished) and need not be queued again.
    fn mark_scheduled(&self) -> bool {
        true
    }
}

thread_local! {
    /// Deferred chain jobs, drained synchronously.
    static QUEUE: RefCell<VecDeque<Rc<Chain>>> = const { RefCell::new(VecDeque::new()) };
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    /// How many chain jobs `QUEUE` holds (read on every callback, so kept
    /// where it costs no borrow).
    static QUEUED: Cell<usize> = const { Cell::new(0) };
    /// Tasks to poll, drained only by the loop or `run_pending`.
    static TASK_QUEUE: RefCell<VecDeque<Rc<dyn Job>>> = RefCell::new(VecDeque::new());
    static POLLING_TASKS: Cell<bool> = const { Cell::new(false) };
    static TASKS: RefCell<slab::Slab<TaskEntry>> = const { RefCell::new(slab::Slab::new()) };
    static NEXT_GENERATION: Cell<u64> = const { Cell::new(1) };
    static REMOTE: Arc<RemoteWakes> = Arc::new(RemoteWakes::default());
}

thread_local! {
    static GRAVEYARD: RefCell<Vec<Box<dyn std::any::Any>>> = const { RefCell::new(Vec::new()) };
    static BURYING: Cell<bool> = const { Cell::new(false) };
}

/// Drops `value` without recursing: a value whose drop drops more values
/// handed here (the links of a long unfired chain) is dropped in a loop, so
/// dropping a chain of any length uses constant stack.
pub(crate) fn drop_later(value: Box<dyn std::any::Any>) {
    let queued = GRAVEYARD.try_with(|g| match g.try_borrow_mut() {
        Ok(mut g) => {
            g.push(value);
            None
        }
        Err(_) => Some(()),
    });
    // Thread-local storage is being torn down: nothing to do but drop here.
    if !matches!(queued, Ok(None)) {
        return;
    }
    if BURYING.with(|b| b.replace(true)) {
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BURYING.with(|b| b.set(false));
        }
    }
    let _reset = Reset;
    while let Some(next) = GRAVEYARD.with(|g| g.borrow_mut().pop()) {
        drop(next);
    }
}

/// Queues a Deferred chain job, and runs the chain queue unless it is
/// already running further up the stack.
///
/// When nothing is draining and nothing is queued (the common case: a
/// Deferred fired from outside any callback), the job runs at once instead
/// of going through the queue: the same order a queue of one would give.
pub(super) fn schedule(job: Rc<Chain>) {
    if QUEUED.with(Cell::get) != 0 || DRAINING.with(|d| d.replace(true)) {
        requeue(job);
        drain();
        return;
    }
    let _reset = ResetDraining;
    job.run();
    drain_queue();
}

/// Whether nothing is queued or running: a chain made runnable now would
/// run at once ([`schedule`]).
#[inline]
pub(super) fn idle() -> bool {
    QUEUED.with(Cell::get) == 0 && !DRAINING.with(Cell::get)
}

/// Runs `f` as [`schedule`] runs a chain when the queue is [`idle`]: what
/// it makes runnable is queued, and runs after it returns.
pub(super) fn run_now(f: impl FnOnce()) {
    if DRAINING.with(|d| d.replace(true)) {
        // Not idle after all: still run `f` (it is this chain's turn: the
        // caller found the queue idle), then let the running drain go on.
        f();
        return;
    }
    let _reset = ResetDraining;
    f();
    drain_queue();
}

/// Clears `DRAINING` when a drain ends, unwinding included.
struct ResetDraining;

impl Drop for ResetDraining {
    fn drop(&mut self) {
        DRAINING.with(|d| d.set(false));
    }
}

/// Runs chain jobs until the queue is empty (the caller set `DRAINING`).
fn drain_queue() {
    while let Some(job) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
        QUEUED.with(|n| n.set(n.get() - 1));
        job.run();
    }
}

/// Queues a task poll without running anything (wakers may be called while
/// their caller holds borrows of its own: the loop polls the task later).
pub(crate) fn enqueue_task(task: Rc<dyn Job>) {
    TASK_QUEUE.with(|q| q.borrow_mut().push_back(task));
}

/// Runs queued Deferred chain jobs until that queue is empty, unless a drain
/// is already in progress on this thread (then that one will get to them).
/// Tasks are not polled here.
pub(crate) fn drain() {
    if DRAINING.with(|d| d.replace(true)) {
        return;
    }
    let _reset = ResetDraining;
    drain_queue();
}

/// Runs chain jobs, then polls the tasks that are queued now (not those
/// woken meanwhile: they wait for the next call), running the chain jobs
/// each poll makes runnable. Returns whether anything is still queued.
/// Does nothing inside a Deferred callback or a task poll.
///
/// The reactor calls this once per loop iteration.
pub(crate) fn run_tasks() -> bool {
    if DRAINING.with(Cell::get) || POLLING_TASKS.with(|p| p.replace(true)) {
        return has_pending();
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            POLLING_TASKS.with(|p| p.set(false));
        }
    }
    let _reset = Reset;
    drain();
    let n = TASK_QUEUE.with(|q| q.borrow().len());
    for _ in 0..n {
        let Some(task) = TASK_QUEUE.with(|q| q.borrow_mut().pop_front()) else {
            break;
        };
        task.run();
        drain();
    }
    has_pending()
}

/// Runs everything runnable on this thread now: Deferred chain jobs, and
/// task polls (futures from [`ensure_deferred`](super::ensure_deferred) and
/// [`Reactor::spawn`](crate::Reactor::spawn)), until both queues are empty.
///
/// A running reactor does this itself on every loop iteration. Code with no
/// reactor running (tests, synchronous programs) calls it after waking or
/// spawning a task. A task that wakes itself on every poll keeps this
/// running. Called inside a Deferred callback or a task poll, it does
/// nothing: tasks are never polled on the stack of code that fires them.
///
/// ```
/// use gyre_reactor::defer::{ensure_deferred, run_pending, Deferred};
///
/// let (r, d) = Deferred::<u32>::new();
/// let task = ensure_deferred(async move { Ok(d.await? + 1) });
/// r.callback(1).unwrap();
/// assert!(!task.called(), "waking a task only enqueues it");
/// run_pending();
/// assert_eq!(task.take_result().unwrap().unwrap(), 2);
/// ```
pub fn run_pending() {
    while run_tasks() {
        if DRAINING.with(Cell::get) || POLLING_TASKS.with(Cell::get) {
            return;
        }
    }
}

/// Whether Deferred chain jobs or task polls are waiting on this thread.
///
/// ```
/// use gyre_reactor::defer::{ensure_deferred, has_pending, run_pending};
///
/// let d = ensure_deferred(async { Ok(1) });
/// assert!(has_pending(), "the first poll is queued");
/// run_pending();
/// assert!(!has_pending());
/// assert!(d.called());
/// ```
pub fn has_pending() -> bool {
    QUEUE.with(|q| !q.borrow().is_empty()) || TASK_QUEUE.with(|q| !q.borrow().is_empty())
}

/// Moves wakes that arrived from other threads into the task queue (the
/// loop polls them later in its iteration). The reactor calls this when its
/// notifier fired.
pub(crate) fn run_remote_wakes() {
    let ids = REMOTE.with(|r| r.take());
    for id in ids {
        wake_local(id);
    }
}

/// Adds a function that tells one of this thread's event loops that
/// another thread woke a task (each reactor adds its mio `Waker`). A
/// remote wake calls every loop's notifier: tasks belong to the thread, and
/// whichever of its loops iterates first polls them.
pub(crate) fn add_remote_notifier(notify: Arc<dyn Fn() + Send + Sync>) {
    REMOTE.with(|r| {
        if let Ok(mut notifiers) = r.notifiers.lock() {
            notifiers.push(notify);
        }
    });
}

/// Removes the notifier `notify` (its reactor is dropped); the notifiers
/// of other reactors on the thread stay.
pub(crate) fn remove_remote_notifier(notify: &Arc<dyn Fn() + Send + Sync>) {
    let _ = REMOTE.try_with(|r| {
        if let Ok(mut notifiers) = r.notifiers.lock() {
            notifiers.retain(|n| !Arc::ptr_eq(n, notify));
        }
    });
}

/// A task's identity: its slot in the thread's table and a generation, so a
/// late wake for a finished task never polls the task that reused its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskId {
    index: usize,
    generation: u64,
}

struct TaskEntry {
    generation: u64,
    task: Rc<dyn Job>,
}

/// Registers a task and returns its id and a waker for it.
pub(crate) fn register_task(task: Rc<dyn Job>) -> (TaskId, Waker) {
    let generation = NEXT_GENERATION.with(|g| {
        let n = g.get();
        g.set(n.wrapping_add(1));
        n
    });
    let index = TASKS.with(|t| t.borrow_mut().insert(TaskEntry { generation, task }));
    let id = TaskId { index, generation };
    let waker = Waker::from(Arc::new(TaskWaker {
        id,
        home: thread::current().id(),
        remote: REMOTE.with(Arc::clone),
    }));
    (id, waker)
}

/// Forgets a finished or cancelled task. Returns the entry so the caller can
/// drop it outside any borrow.
pub(crate) fn unregister_task(id: TaskId) -> Option<Rc<dyn Job>> {
    TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        match tasks.get(id.index) {
            Some(entry) if entry.generation == id.generation => Some(tasks.remove(id.index).task),
            _ => None,
        }
    })
}

/// Queues a poll of a live task (no-op for a finished one).
fn wake_local(id: TaskId) {
    let task = TASKS.with(|t| {
        t.borrow()
            .get(id.index)
            .filter(|e| e.generation == id.generation)
            .map(|e| Rc::clone(&e.task))
    });
    if let Some(task) = task {
        if task.mark_scheduled() {
            enqueue_task(task);
        }
    }
}

#[derive(Default)]
struct RemoteWakes {
    ids: Mutex<Vec<TaskId>>,
    /// One per live reactor on the home thread.
    notifiers: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
}

impl RemoteWakes {
    fn push(&self, id: TaskId) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id);
        }
        let notifiers = self.notifiers.lock().map(|n| n.clone()).unwrap_or_default();
        for notify in notifiers {
            notify();
        }
    }

    fn take(&self) -> Vec<TaskId> {
        self.ids
            .lock()
            .map(|mut ids| std::mem::take(&mut *ids))
            .unwrap_or_default()
    }
}

struct TaskWaker {
    id: TaskId,
    home: ThreadId,
    remote: Arc<RemoteWakes>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if thread::current().id() == self.home {
            wake_local(self.id);
        } else {
            self.remote.push(self.id);
        }
    }
}

/// Whether chain jobs are queued (a callback just made another chain
/// runnable): the running chain then lets them go first.
pub(crate) fn chains_queued() -> bool {
    QUEUED.with(|n| n.get() > 0)
}

/// Queues a chain job again, behind what is queued, without draining (the
/// caller runs inside the drain).
pub(super) fn requeue(job: Rc<Chain>) {
    QUEUE.with(|q| q.borrow_mut().push_back(job));
    QUEUED.with(|n| n.set(n.get() + 1));
}
