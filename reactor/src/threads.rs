//! Threads as a stage boundary: [`ThreadHandle::call_from_thread`] brings
//! work into the loop, [`Reactor::defer_to_thread`] sends blocking work to a
//! bounded pool and brings its result back as a Deferred.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::core::{guard, Reactor};
use crate::defer::{ensure_deferred, Deferred, Failure, Outcome, Panicked, Resolver};

type LoopCall = Box<dyn FnOnce(&Reactor) + Send>;
/// Work for a pool thread.
type PoolJob = Box<dyn FnOnce() + Send>;

/// The state shared between the loop and other threads.
pub(crate) struct ThreadShared {
    calls: Mutex<VecDeque<LoopCall>>,
    waker: Arc<mio::Waker>,
    closed: AtomicBool,
}

impl ThreadShared {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> ThreadShared {
        ThreadShared {
            calls: Mutex::new(VecDeque::new()),
            waker,
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut calls) = self.calls.lock() {
            calls.clear();
        }
    }

    fn push(&self, call: LoopCall) -> Result<(), ReactorGone> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ReactorGone);
        }
        let was_empty = {
            let mut calls = self.calls.lock().map_err(|_| ReactorGone)?;
            let was_empty = calls.is_empty();
            calls.push_back(call);
            was_empty
        };
        // One wake per batch: the loop takes the whole queue at once.
        if was_empty {
            self.waker.wake().map_err(|_| ReactorGone)?;
        }
        Ok(())
    }

    /// Runs every queued call, in the order they were queued.
    pub(crate) fn run_calls(&self, reactor: &Reactor) {
        let calls = match self.calls.lock() {
            Ok(mut calls) => std::mem::take(&mut *calls),
            Err(_) => return,
        };
        for call in calls {
            let _ = guard(format_args!("call_from_thread callback"), || call(reactor));
        }
    }
}

/// The reactor's loop is gone; the call was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactorGone;

impl fmt::Display for ReactorGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reactor has been dropped")
    }
}

impl std::error::Error for ReactorGone {}

/// A `Send + Clone` handle through which other threads hand work to a
/// reactor's loop (Twisted's `callFromThread`).
///
/// ```
/// use gyre_reactor::Reactor;
/// use std::time::Duration;
///
/// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
/// let handle = reactor.thread_handle();
/// let worker = std::thread::spawn(move || {
///     handle.call_from_thread(|reactor| reactor.stop().unwrap()).unwrap();
/// });
/// reactor.run().unwrap();
/// worker.join().unwrap();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ThreadHandle {
    shared: Arc<ThreadShared>,
}

impl fmt::Debug for ThreadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ThreadHandle")
    }
}

impl ThreadHandle {
    /// Runs `f` on the loop thread, soon. Calls from one thread run in the
    /// order they were made (the queue is FIFO across all threads). An error
    /// if the reactor has been dropped.
    pub fn call_from_thread(
        &self,
        f: impl FnOnce(&Reactor) + Send + 'static,
    ) -> Result<(), ReactorGone> {
        self.shared.push(Box::new(f))
    }
}

/// A bounded pool of worker threads, started lazily.
///
/// Joining is bounded: [`join_within`](Self::join_within) waits for the
/// workers to finish their queued jobs until a deadline, then detaches the
/// ones still running (a job that never returns cannot block shutdown) and
/// logs how many it left behind.
pub(crate) struct ThreadPool {
    sender: Option<mpsc::Sender<PoolJob>>,
    receiver: Arc<Mutex<mpsc::Receiver<PoolJob>>>,
    workers: Vec<JoinHandle<()>>,
    idle: Arc<AtomicUsize>,
    /// Each worker sends one message here when it exits (even by panic).
    exited_tx: mpsc::Sender<()>,
    exited_rx: mpsc::Receiver<()>,
    max: usize,
}

/// Tells the pool a worker thread has exited, however it exits.
struct ExitNotice(mpsc::Sender<()>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl ThreadPool {
    fn new(max: usize) -> ThreadPool {
        let (sender, receiver) = mpsc::channel();
        let (exited_tx, exited_rx) = mpsc::channel();
        ThreadPool {
            sender: Some(sender),
            receiver: Arc::new(Mutex::new(receiver)),
            workers: Vec::new(),
            idle: Arc::new(AtomicUsize::new(0)),
            exited_tx,
            exited_rx,
            max,
        }
    }

    fn submit(&mut self, job: Box<dyn FnOnce() + Send>) -> io::Result<()> {
        if self.idle.load(Ordering::SeqCst) == 0 && self.workers.len() < self.max {
            let receiver = Arc::clone(&self.receiver);
            let idle = Arc::clone(&self.idle);
            let notice = ExitNotice(self.exited_tx.clone());
            let worker = std::thread::Builder::new()
                .name(format!("gyre-pool-{}", self.workers.len()))
                .spawn(move || {
                    let _notice = notice;
                    worker_loop(receiver, idle)
                })?;
            self.workers.push(worker);
        }
        match &self.sender {
            Some(sender) => sender
                .send(job)
                .map_err(|_| io::Error::other("thread pool is shut down")),
            None => Err(io::Error::other("thread pool is shut down")),
        }
    }

    /// Lets the workers finish the queued jobs, waiting until `deadline`;
    /// joins the workers that exited and detaches (and logs) the ones still
    /// busy. Returns how many were detached.
    pub(crate) fn join_within(mut self, deadline: Instant) -> usize {
        self.sender.take();
        let mut exited = 0;
        while exited < self.workers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exited_rx.recv_timeout(left) {
                Ok(()) => exited += 1,
                Err(_) => break,
            }
        }
        let mut detached = 0;
        for worker in self.workers.drain(..) {
            if worker.is_finished() {
                let _ = worker.join();
            } else {
                // Dropping the handle detaches the thread: it finishes its
                // job (or never does) on its own; its result is dropped.
                detached += 1;
            }
        }
        if detached > 0 {
            log::warn!(
                "shutdown: {detached} thread-pool job(s) still running at the shutdown deadline; \
                 their threads are detached and their results will be dropped"
            );
        }
        detached
    }
}

fn worker_loop(receiver: Arc<Mutex<mpsc::Receiver<PoolJob>>>, idle: Arc<AtomicUsize>) {
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        idle.fetch_sub(1, Ordering::SeqCst);
        match job {
            // Jobs catch their own panics.
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

impl Reactor {
    /// A handle for other threads to call into this loop.
    pub fn thread_handle(&self) -> ThreadHandle {
        ThreadHandle {
            shared: std::sync::Arc::clone(&self.inner.threads),
        }
    }

    /// Runs blocking `f` on the reactor's thread pool (bounded, started on
    /// first use, joined at shutdown within the shutdown time-out; a job
    /// still running then is detached and its result dropped) and fires the Deferred with its result
    /// on the loop. A panic in `f` arrives as a [`Panicked`] failure.
    /// Cancelling the Deferred cannot stop the thread; its result is then
    /// dropped.
    ///
    /// ```
    /// use gyre_reactor::Reactor;
    /// use std::time::Duration;
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let d = reactor.defer_to_thread(|| 6 * 7);
    /// reactor.run_until(|| d.called(), Duration::from_secs(10)).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap(), 42);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn defer_to_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Deferred<T> {
        let (r, d) = Deferred::<T>::new();
        let id = self.inner.pending_thread_jobs_insert(Box::new(r.clone()));
        let handle = self.thread_handle();
        let job = Box::new(move || {
            let outcome: Result<T, String> = catch_unwind(AssertUnwindSafe(f))
                .map_err(|payload| crate::defer::panic_message(&*payload));
            let _ = handle.call_from_thread(move |reactor| {
                reactor.finish_thread_job::<T>(id, outcome);
            });
        });
        let submitted = {
            let mut pool = self.inner.pool.borrow_mut();
            let pool = pool.get_or_insert_with(|| ThreadPool::new(self.inner.thread_pool_size));
            pool.submit(job)
        };
        if let Err(e) = submitted {
            self.inner.pending_thread_jobs_remove(id);
            let _ = r.errback(e);
        }
        d
    }

    fn finish_thread_job<T: 'static>(&self, id: usize, outcome: Result<T, String>) {
        let Some(d) = self.inner.pending_thread_jobs_remove(id) else {
            return;
        };
        let Ok(d) = d.downcast::<Resolver<T>>() else {
            return;
        };
        let outcome: Outcome<T> = outcome.map_err(|msg| Failure::new(Panicked(msg)));
        // Cancelled meanwhile: the Deferred already failed; drop the result.
        if !d.called() {
            let _ = d.resolve(outcome);
        }
    }

    /// Resolves a host name on the thread pool (`getaddrinfo`), Twisted's
    /// `resolve`.
    ///
    /// ```
    /// use gyre_reactor::Reactor;
    /// use std::time::Duration;
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let d = reactor.resolve("localhost", 80);
    /// reactor.run_until(|| d.called(), Duration::from_secs(10)).unwrap();
    /// assert!(!d.take_result().unwrap().unwrap().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn resolve(&self, host: &str, port: u16) -> Deferred<Vec<SocketAddr>> {
        let host = host.to_string();
        self.defer_to_thread(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>())
                .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host}: {e}")))
        })
        .add_callback(|r| r.map_err(Failure::new))
    }

    /// Runs `async` code on the loop and returns its result as a Deferred
    /// (the future's waker goes through the loop, from any thread). Like
    /// tokio's `spawn`, this only queues the first poll: the loop polls the
    /// task, then again each time it is woken (waking only enqueues it).
    ///
    /// ```
    /// use gyre_reactor::Reactor;
    /// use std::time::Duration;
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let work = reactor.defer_to_thread(|| 20);
    /// let d = reactor.spawn(async move { Ok(work.await? + 1) });
    /// reactor.run_until(|| d.called(), Duration::from_secs(10)).unwrap();
    /// assert_eq!(d.take_result().unwrap().unwrap(), 21);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn spawn<T: 'static>(
        &self,
        future: impl std::future::Future<Output = Outcome<T>> + 'static,
    ) -> Deferred<T> {
        ensure_deferred(future)
    }
}

/// Keeps the resolvers of thread jobs in flight, type-erased.
#[derive(Default)]
pub(crate) struct PendingJobs {
    jobs: slab::Slab<Box<dyn Any>>,
}

impl crate::core::Inner {
    fn pending_thread_jobs_insert(&self, d: Box<dyn Any>) -> usize {
        self.thread_jobs.borrow_mut().jobs.insert(d)
    }

    fn pending_thread_jobs_remove(&self, id: usize) -> Option<Box<dyn Any>> {
        self.thread_jobs.borrow_mut().jobs.try_remove(id)
    }
}
