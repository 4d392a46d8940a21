//! The per-thread run queue under every Deferred, and the local executor
//! that runs `async` code as Deferreds.
//!
//! Deferred results move through a FIFO queue of jobs instead of nested
//! calls, so a chain of any length, and 100,000 Deferreds each waiting on the
//! next, complete in constant stack depth. The rule users see: an operation
//! started outside any callback (firing a Deferred, adding a callback to a
//! fired one) runs everything it makes runnable before it returns; the same
//! operation inside a callback runs it right after that callback returns.
//!
//! Futures spawned with [`ensure_deferred`](super::ensure_deferred) are kept
//! in a thread-local table. Their wakers are `Send`: a wake on the home thread
//! queues a poll here; a wake from another thread goes through a mutex-guarded
//! list and a notifier that the reactor installs (its mio `Waker`), and the
//! reactor moves those wakes into this queue on its own thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread::{self, ThreadId};

/// Something the run queue can run: a Deferred handing its result to its
/// consumer, or a task to poll.
pub(crate) trait Job {
    fn run(self: Rc<Self>);

    /// Called before a wake queues the job; `false` means it is already
    /// queued (or finished) and need not be queued again.
    fn mark_scheduled(&self) -> bool {
        true
    }
}

thread_local! {
    static QUEUE: RefCell<VecDeque<Rc<dyn Job>>> = RefCell::new(VecDeque::new());
    static DRAINING: Cell<bool> = const { Cell::new(false) };
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

/// Queues a job, and runs the queue unless it is already running further up
/// the stack.
pub(crate) fn schedule(job: Rc<dyn Job>) {
    QUEUE.with(|q| q.borrow_mut().push_back(job));
    drain();
}

/// Queues a job without running the queue (used by wakers, which may be
/// called while their caller holds borrows of its own).
fn enqueue(job: Rc<dyn Job>) {
    QUEUE.with(|q| q.borrow_mut().push_back(job));
}

/// Runs queued jobs until the queue is empty, unless a drain is already in
/// progress on this thread (then that one will get to them).
pub fn drain() {
    if DRAINING.with(|d| d.replace(true)) {
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DRAINING.with(|d| d.set(false));
        }
    }
    let _reset = Reset;
    while let Some(job) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
        job.run();
    }
}

/// Whether jobs are waiting in this thread's run queue.
pub fn has_pending() -> bool {
    QUEUE.with(|q| !q.borrow().is_empty())
}

/// Moves wakes that arrived from other threads into the run queue and runs
/// it. The reactor calls this when its notifier fired.
pub fn run_remote_wakes() {
    let ids = REMOTE.with(|r| r.take());
    for id in ids {
        wake_local(id);
    }
    drain();
}

/// Installs the function that tells this thread's event loop that another
/// thread woke one of its tasks (the reactor passes its mio `Waker`).
pub fn set_remote_notifier(notify: Option<Arc<dyn Fn() + Send + Sync>>) {
    REMOTE.with(|r| {
        if let Ok(mut slot) = r.notifier.lock() {
            *slot = notify;
        }
    });
}

/// Removes this thread's notifier if it is `notify` (a reactor being
/// dropped must not remove the notifier of a newer reactor on the thread).
pub(crate) fn clear_remote_notifier(notify: &Arc<dyn Fn() + Send + Sync>) {
    REMOTE.with(|r| {
        if let Ok(mut slot) = r.notifier.lock() {
            if slot.as_ref().is_some_and(|n| Arc::ptr_eq(n, notify)) {
                *slot = None;
            }
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
            enqueue(task);
        }
    }
}

#[derive(Default)]
struct RemoteWakes {
    ids: Mutex<Vec<TaskId>>,
    notifier: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl RemoteWakes {
    fn push(&self, id: TaskId) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id);
        }
        let notify = self.notifier.lock().ok().and_then(|n| n.clone());
        if let Some(notify) = notify {
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
