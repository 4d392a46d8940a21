//! [`ProcessHandle`]: what a process protocol (or anyone) writes to,
//! closes and signals.

use std::cell::Cell;
use std::fmt;
use std::rc::{Rc, Weak};

use crate::protocol::Producer;

use super::child::Process;
use super::pipes::{ProducerState, StdinState};
use super::status::{ChildFd, ProcessStatus, SignalError};

/// A spawned child as its protocol sees it (Twisted's `IProcessTransport`):
/// a cheap `Clone` handle. Every method is safe to call from inside any
/// callback, and on a process that has ended (then it does nothing, or
/// says so); none of them calls back into the protocol on the same stack.
///
/// Stdin has the semantics of a TCP transport's writing side: writes are
/// buffered (the buffer is bounded only by the producer protocol: a
/// registered [`Producer`] is paused above the high-water mark and resumed
/// below the low-water mark, defaults
/// [`DEFAULT_HIGH_WATER`](crate::DEFAULT_HIGH_WATER) and
/// [`DEFAULT_LOW_WATER`](crate::DEFAULT_LOW_WATER)) and sent by the
/// reactor from its loop; [`close_stdin`](Self::close_stdin) flushes, then
/// closes, and the child reads EOF.
///
/// The handle holds the process weakly: a protocol keeping its handle
/// makes no reference cycle.
///
/// ```no_run
/// use gyre_reactor::process::{ChildFd, ProcessHandle, ProcessProtocol};
/// use gyre_reactor::Reactor;
///
/// struct Sort;
/// impl ProcessProtocol for Sort {
///     fn connection_made(&mut self, process: ProcessHandle) {
///         process.write(b"b\na\n");
///         process.close_stdin();
///     }
///     fn child_data_received(&mut self, _fd: ChildFd, data: &[u8]) {
///         print!("{}", String::from_utf8_lossy(data));
///     }
/// }
///
/// let reactor = Reactor::new()?;
/// let handle = reactor.spawn_process(std::process::Command::new("sort"), Sort)?;
/// println!("sort runs as pid {}", handle.pid());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ProcessHandle {
    process: Weak<Process>,
    pid: u32,
    status: Rc<Cell<Option<ProcessStatus>>>,
}

impl ProcessHandle {
    pub(crate) fn new(process: &Rc<Process>) -> ProcessHandle {
        ProcessHandle {
            process: process.weak(),
            pid: process.pid(),
            status: process.reaped_status(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Process) -> T) -> Option<T> {
        let process = self.process.upgrade()?;
        let out = f(&process);
        // Notices a handle method queued are delivered from the loop.
        process.queue_delivery();
        Some(out)
    }

    /// The child's process id. It stays the same after the child exits;
    /// once reaped, the id may be reused by another process.
    ///
    /// ```no_run
    /// # use gyre_reactor::process::{ChildFd, ProcessProtocol, ProcessHandle};
    /// # struct P; impl ProcessProtocol for P { fn child_data_received(&mut self, _: ChildFd, _: &[u8]) {} }
    /// # let reactor = gyre_reactor::Reactor::new()?;
    /// let handle = reactor.spawn_process(std::process::Command::new("true"), P)?;
    /// assert!(handle.pid() > 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues `data` for the child's stdin. Dropped silently after
    /// [`close_stdin`](Self::close_stdin), once stdin closed, or when stdin
    /// is not piped (as in Twisted).
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.write(b"hello\n");
    /// # }
    /// ```
    pub fn write(&self, data: &[u8]) {
        self.write_sequence(&[data])
    }

    /// Queues several buffers for stdin, in order.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.write_sequence(&[b"hello", b" ", b"world\n"]);
    /// # }
    /// ```
    pub fn write_sequence(&self, parts: &[&[u8]]) {
        self.with(|process| {
            if !process.stdin.is_open() || parts.iter().all(|p| p.is_empty()) {
                return;
            }
            {
                let mut buf = process.stdin.buf.borrow_mut();
                for part in parts {
                    buf.push(part);
                }
            }
            process.queue_flush();
        });
    }

    /// Flushes what stdin buffers, then closes it: the child reads EOF,
    /// and `child_connection_lost(Stdin)` follows. Later writes are
    /// dropped.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.write(b"last line\n");
    /// process.close_stdin();
    /// # }
    /// ```
    pub fn close_stdin(&self) {
        self.with(|process| process.close_stdin());
    }

    /// Closes our end of one pipe (Twisted's `closeChildFD`): for stdin as
    /// [`close_stdin`](Self::close_stdin); for stdout or stderr at once,
    /// discarding what was not read yet (a child writing to it later gets
    /// SIGPIPE or `EPIPE`). `child_connection_lost(fd)` follows.
    ///
    /// ```no_run
    /// # use gyre_reactor::process::ChildFd;
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.close_child_fd(ChildFd::Stderr); // not interested
    /// # }
    /// ```
    pub fn close_child_fd(&self, fd: ChildFd) {
        self.with(|process| match fd {
            ChildFd::Stdin => process.close_stdin(),
            ChildFd::Stdout | ChildFd::Stderr => process.close_output_now(fd),
        });
    }

    /// Closes all three pipes (Twisted's `loseConnection`): stdin after
    /// flushing, stdout and stderr at once. The child is not signalled.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.lose_connection();
    /// # }
    /// ```
    pub fn lose_connection(&self) {
        self.with(|process| {
            process.close_stdin();
            process.close_output_now(ChildFd::Stdout);
            process.close_output_now(ChildFd::Stderr);
        });
    }

    /// Sends `signal` (a number, such as `signal_hook::consts::SIGTERM`)
    /// to the child. Refused with [`SignalError::AlreadyExited`] once the
    /// child was reaped, since its pid may belong to another process by
    /// then; a child that exited but is not reaped yet takes the signal
    /// harmlessly.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// if let Err(e) = process.signal_process(signal_hook::consts::SIGTERM) {
    ///     println!("not sent: {e}");
    /// }
    /// # }
    /// ```
    pub fn signal_process(&self, signal: i32) -> Result<(), SignalError> {
        self.with(|process| process.signal(signal))
            .unwrap_or(Err(SignalError::AlreadyExited))
    }

    /// The child's status once it was reaped, `None` before (or when it
    /// never will be by the reactor: see
    /// [`ProcessEnd`](super::ProcessEnd)).
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// if let Some(status) = process.status() {
    ///     println!("{status}");
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> Option<ProcessStatus> {
        self.status.get()
    }

    /// Stops delivering the child's output (stdout and stderr) until
    /// [`resume_reading`](Self::resume_reading): the pipes fill up and the
    /// child blocks on its writes (Twisted's `pauseProducing`).
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.pause_reading();
    /// process.resume_reading();
    /// # }
    /// ```
    pub fn pause_reading(&self) {
        self.with(|process| process.pause_reading());
    }

    /// Delivers output again after [`pause_reading`](Self::pause_reading).
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.resume_reading();
    /// # }
    /// ```
    pub fn resume_reading(&self) {
        self.with(|process| process.resume_reading());
    }

    /// Bytes written to stdin and not yet taken by the pipe.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.write(b"x");
    /// assert_eq!(process.buffered_len(), 1); // flushed from the loop
    /// # }
    /// ```
    pub fn buffered_len(&self) -> usize {
        self.process
            .upgrade()
            .map_or(0, |p| p.stdin.buf.borrow().len())
    }

    /// Bytes of memory the stdin buffer holds (its capacity); once drained,
    /// at most [`WRITE_BUFFER_FLOOR`](crate::WRITE_BUFFER_FLOOR).
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// println!("{} bytes held", process.buffer_capacity());
    /// # }
    /// ```
    pub fn buffer_capacity(&self) -> usize {
        self.process
            .upgrade()
            .map_or(0, |p| p.stdin.buf.borrow().capacity())
    }

    /// Sets the stdin buffer's high- and low-water marks (defaults
    /// [`DEFAULT_HIGH_WATER`](crate::DEFAULT_HIGH_WATER) and
    /// [`DEFAULT_LOW_WATER`](crate::DEFAULT_LOW_WATER)); `low` is capped at
    /// `high`.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.set_write_buffer_limits(1 << 20, 256 << 10);
    /// # }
    /// ```
    pub fn set_write_buffer_limits(&self, high: usize, low: usize) {
        self.with(|process| {
            process.stdin.high_water.set(high);
            process.stdin.low_water.set(low.min(high));
            process.queue_flush();
        });
    }

    /// Registers a producer for stdin, paused and resumed from the loop as
    /// the buffer crosses its marks (Twisted's `registerProducer(p, True)`);
    /// `stop_producing` is called when stdin closes. When stdin is closed
    /// already (or not piped), `stop_producing` is called from the loop.
    ///
    /// ```no_run
    /// use std::rc::Rc;
    /// use gyre_reactor::Producer;
    ///
    /// struct Source;
    /// impl Producer for Source {
    ///     fn pause_producing(&self) {}
    ///     fn resume_producing(&self) {}
    /// }
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.register_producer(Rc::new(Source));
    /// # }
    /// ```
    pub fn register_producer(&self, producer: Rc<dyn Producer>) {
        let Some(process) = self.process.upgrade() else {
            return;
        };
        let open = !matches!(*process.stdin.state.borrow(), StdinState::Closed);
        if open {
            *process.stdin.producer.borrow_mut() = ProducerState::Producing(producer);
            // Tell it to pause from the loop if the buffer is full already.
            process.queue_flush();
        } else {
            process.queue_stop_producing(producer);
        }
    }

    /// Forgets the stdin producer.
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// process.unregister_producer();
    /// # }
    /// ```
    pub fn unregister_producer(&self) {
        if let Some(process) = self.process.upgrade() {
            *process.stdin.producer.borrow_mut() = ProducerState::None;
        }
    }

    /// Whether the process has not ended yet (`process_ended` not yet
    /// delivered, or not yet dropped).
    ///
    /// ```no_run
    /// # fn f(process: gyre_reactor::process::ProcessHandle) {
    /// if process.is_alive() {
    ///     process.close_stdin();
    /// }
    /// # }
    /// ```
    pub fn is_alive(&self) -> bool {
        self.process.upgrade().is_some_and(|p| !p.has_ended())
    }
}

impl fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("pid", &self.pid)
            .field("status", &self.status())
            .finish()
    }
}
