//! Child processes on the loop (Twisted's `spawnProcess` and
//! `ProcessProtocol`): [`Reactor::spawn_process`] starts a child whose
//! stdin, stdout and stderr are non-blocking pipes registered with the
//! reactor, and tells a [`ProcessProtocol`] what happens to it; no thread
//! is blocked waiting for it. [`output`] runs a command and collects its
//! output as a Deferred (Twisted's `getProcessOutputAndValue`).
//!
//! ```no_run
//! use gyre_reactor::process::{self, ProcessCommand};
//! use gyre_reactor::Reactor;
//!
//! let reactor = Reactor::new()?;
//! let out = process::output(&reactor, ProcessCommand::new("uname").arg("-s"));
//! let r = reactor.clone();
//! let out = out.add_both(move |outcome| {
//!     match &outcome {
//!         Ok(o) => println!("{} ({})", String::from_utf8_lossy(&o.stdout).trim(), o.status),
//!         Err(f) => println!("failed: {}", f.describe()),
//!     }
//!     let _ = r.stop();
//!     outcome.map(|_| ())
//! });
//! reactor.run().unwrap();
//! # drop(out);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Contract
//!
//! **Order of callbacks.** For one process, the reactor calls its
//! protocol from the loop, never re-entrantly, in this order:
//!
//! 1. [`connection_made`](ProcessProtocol::connection_made), once, before
//!    `spawn_process` returns;
//! 2. then, interleaved as they happen:
//!    [`child_data_received`](ProcessProtocol::child_data_received) for
//!    each chunk read from stdout or stderr (in order within each pipe);
//!    [`child_connection_lost`](ProcessProtocol::child_connection_lost)
//!    once for each piped descriptor, after the last data of that pipe;
//!    and [`process_exited`](ProcessProtocol::process_exited) at most once,
//!    when the child is reaped (output may still follow: a grandchild may
//!    hold the pipes);
//! 3. [`process_ended`](ProcessProtocol::process_ended), **always last,
//!    exactly once**, when the child is reaped **and** every pipe is
//!    closed. Nothing is called after it, and the protocol is dropped.
//!
//! A failed spawn (a command that does not exist, say) is the `Err` of
//! `spawn_process`; then nothing is called and the protocol is dropped.
//!
//! **Stdin.** [`ProcessHandle::write`] buffers, and the loop writes what
//! the pipe takes; a registered [`Producer`](crate::Producer) is paused
//! when the buffer passes its high-water mark and resumed below its
//! low-water mark, from the loop (as for TCP: the buffer holds at most the
//! high-water mark plus what the producer wrote in one turn).
//! [`ProcessHandle::close_stdin`] flushes what is buffered, then closes
//! the pipe: the child reads EOF, writes after it are dropped, and
//! `child_connection_lost(Stdin)` follows. When the child closes its end
//! first (it exited, or closed fd 0), our end closes too, dropping what
//! was buffered (logged at debug level), with the same callback. Stdin
//! counts as a pipe for `process_ended`, as in Twisted: a grandchild that
//! inherited stdin and keeps it open delays `process_ended`.
//!
//! **Reaping: no zombies.** The reactor hears SIGCHLD through a self-pipe
//! (installed on the first spawn, whatever
//! [`install_signal_handlers`](crate::ReactorBuilder::install_signal_handlers)
//! says) and then tries `waitpid(WNOHANG)` on every child not yet reaped,
//! since one SIGCHLD may stand for several exits. A child reaped by someone
//! else (`waitpid` says `ECHILD`) ends with
//! [`ProcessEnd::StatusUnknown`], logged, never a panic.
//!
//! **Shutdown.** When the reactor shuts down (or is dropped without
//! running), each process not ended yet is sent SIGKILL if
//! [`ProcessCommand::kill_on_shutdown`] was set (**default: not
//! killed**); its stdin is flushed as far as the pipe takes it without
//! blocking and closed, its stdout and stderr are closed (unread output is
//! lost), it is reaped at once if it has exited, and otherwise handed to a
//! background thread that reaps it when it exits. The protocol gets its
//! `child_connection_lost` calls and `process_ended` (with
//! [`ProcessEnd::Shutdown`] when the child was not reaped) during the
//! shutdown, after the listening ports stopped.
//!
//! **Panics.** A panic in a protocol method is caught and logged; it costs
//! only that process: its pipes are closed, the child is sent SIGKILL, and
//! `process_ended` still comes once it is reaped.
//!
//! **Signals.** [`ProcessHandle::signal_process`] sends any named signal
//! while the child is not reaped; after that it refuses
//! ([`SignalError::AlreadyExited`]), since the pid may have been reused.
//!
//! The program must not ignore SIGPIPE's effect on itself: a Rust program
//! ignores SIGPIPE from its start (writes to a closed pipe fail with
//! `EPIPE`, which closes stdin as above); the child gets the default
//! SIGPIPE back, as `std::process::Command` arranges.

mod child;
mod command;
mod handle;
mod orphan;
mod output;
mod pipes;
mod protocol;
mod reaper;
mod status;

use std::io;
use std::rc::Rc;

use crate::core::Reactor;

pub use command::{ChildStdio, ProcessCommand};
pub use handle::ProcessHandle;
pub use output::{output, OutputLimitExceeded, OutputOptions, ProcessOutput, DEFAULT_MAX_OUTPUT};
pub use protocol::ProcessProtocol;
pub(crate) use reaper::Reaper;
pub use status::{ChildFd, ProcessEnd, ProcessStatus, SignalError};

use child::Process;

impl Reactor {
    /// Spawns `command` with its stdin, stdout and stderr piped to the
    /// reactor (by default; see [`ProcessCommand`]) and `protocol` told
    /// what happens to it (Twisted's `spawnProcess`). `connection_made` is
    /// called before this returns. The [module docs](crate::process) state
    /// the contract: callback order, stdin, reaping, shutdown.
    ///
    /// An error if the child could not be spawned (the program does not
    /// exist or is not executable, ...) or its pipes could not be
    /// registered (then the child is killed); the protocol is dropped
    /// uncalled.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use gyre_reactor::process::{ChildFd, ProcessEnd, ProcessProtocol};
    /// use gyre_reactor::Reactor;
    ///
    /// #[derive(Default)]
    /// struct Seen {
    ///     out: Vec<u8>,
    ///     end: Option<ProcessEnd>,
    /// }
    /// struct Collect(Rc<RefCell<Seen>>);
    /// impl ProcessProtocol for Collect {
    ///     fn child_data_received(&mut self, _fd: ChildFd, data: &[u8]) {
    ///         self.0.borrow_mut().out.extend_from_slice(data);
    ///     }
    ///     fn process_ended(&mut self, end: ProcessEnd) {
    ///         self.0.borrow_mut().end = Some(end);
    ///     }
    /// }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let seen = Rc::new(RefCell::new(Seen::default()));
    /// let mut command = std::process::Command::new("sh");
    /// command.args(["-c", "echo hi; exit 3"]);
    /// reactor.spawn_process(command, Collect(seen.clone()))?;
    /// assert!(reactor.run_until(|| seen.borrow().end.is_some(), Duration::from_secs(20)).unwrap());
    /// let seen = seen.borrow();
    /// assert_eq!(seen.out, b"hi\n");
    /// assert_eq!(seen.end.as_ref().unwrap().status().unwrap().code(), Some(3));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_process(
        &self,
        command: impl Into<ProcessCommand>,
        protocol: impl ProcessProtocol,
    ) -> io::Result<ProcessHandle> {
        let mut command = command.into();
        // The SIGCHLD handler goes in before the child exists, so that no
        // exit slips between the spawn and the handler.
        let reaper = Reaper::of(self)?;
        let child = command.prepared().spawn()?;
        let process = Process::new(self, child, Box::new(protocol), command.kills_on_shutdown());
        if let Err(e) = process.attach_pipes(&self.inner) {
            log::warn!(
                "could not register the pipes of process {}: {e}; killing it",
                process.pid()
            );
            process.abandon_spawn();
            return Err(e);
        }
        reaper.watch(Rc::clone(&process));
        let handle = ProcessHandle::new(&process);
        log::debug!(
            "spawned process {}: {}",
            process.pid(),
            command.program().to_string_lossy()
        );
        process.connection_made(handle.clone());
        Ok(handle)
    }
}
