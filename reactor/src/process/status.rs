//! What a child process reports: which pipe ([`ChildFd`]), how it ended
//! ([`ProcessStatus`], [`ProcessEnd`]), and why a signal could not be sent
//! ([`SignalError`]).

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;

/// One of the child's standard descriptors, as the parent sees its pipe.
///
/// [`ProcessProtocol::child_data_received`](super::ProcessProtocol::child_data_received)
/// only ever gets [`Stdout`](Self::Stdout) or [`Stderr`](Self::Stderr);
/// [`ProcessProtocol::child_connection_lost`](super::ProcessProtocol::child_connection_lost)
/// gets any of the three (Twisted's `childFD` 0, 1 and 2).
///
/// ```
/// use gyre_reactor::process::ChildFd;
///
/// assert_eq!(ChildFd::Stderr.as_raw(), 2);
/// assert_eq!(ChildFd::Stdout.to_string(), "stdout");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildFd {
    /// The child's standard input: the pipe we write to.
    Stdin,
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

impl ChildFd {
    /// The descriptor's number in the child (0, 1 or 2).
    ///
    /// ```
    /// # use gyre_reactor::process::ChildFd;
    /// assert_eq!(ChildFd::Stdin.as_raw(), 0);
    /// ```
    pub fn as_raw(self) -> i32 {
        match self {
            ChildFd::Stdin => 0,
            ChildFd::Stdout => 1,
            ChildFd::Stderr => 2,
        }
    }
}

impl fmt::Display for ChildFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildFd::Stdin => "stdin",
            ChildFd::Stdout => "stdout",
            ChildFd::Stderr => "stderr",
        })
    }
}

/// How a reaped child ended: its exit code, or the signal that killed it.
///
/// Built from the [`ExitStatus`] that `waitpid` gave (through
/// [`ExitStatusExt`]). The reactor never asks `waitpid` about stopped or
/// continued children, so those are not statuses here.
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::ExitStatus;
/// use gyre_reactor::process::ProcessStatus;
///
/// let exited = ProcessStatus::from(ExitStatus::from_raw(3 << 8));
/// assert_eq!(exited, ProcessStatus::Exited(3));
/// assert_eq!(exited.code(), Some(3));
/// let killed = ProcessStatus::from(ExitStatus::from_raw(9));
/// assert_eq!(killed.signal(), Some(9));
/// assert!(!killed.success());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProcessStatus {
    /// The child called `exit(code)` (or returned from `main`).
    Exited(i32),
    /// A signal terminated the child.
    Signaled {
        /// The signal's number (`signal_hook::consts::SIGKILL` is 9).
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
    /// A raw wait status that is neither (never seen on Linux, where the
    /// reactor only waits for terminated children; kept so that no status
    /// is misreported).
    Other(i32),
}

impl ProcessStatus {
    /// The exit code, if the child exited.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessStatus;
    /// assert_eq!(ProcessStatus::Exited(0).code(), Some(0));
    /// ```
    pub fn code(self) -> Option<i32> {
        match self {
            ProcessStatus::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// The terminating signal, if a signal killed the child.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessStatus;
    /// let s = ProcessStatus::Signaled { signal: 15, core_dumped: false };
    /// assert_eq!(s.signal(), Some(15));
    /// ```
    pub fn signal(self) -> Option<i32> {
        match self {
            ProcessStatus::Signaled { signal, .. } => Some(signal),
            _ => None,
        }
    }

    /// Whether the child exited with code 0.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessStatus;
    /// assert!(ProcessStatus::Exited(0).success());
    /// assert!(!ProcessStatus::Exited(1).success());
    /// ```
    pub fn success(self) -> bool {
        self == ProcessStatus::Exited(0)
    }
}

impl From<ExitStatus> for ProcessStatus {
    fn from(status: ExitStatus) -> ProcessStatus {
        if let Some(code) = status.code() {
            ProcessStatus::Exited(code)
        } else if let Some(signal) = status.signal() {
            ProcessStatus::Signaled {
                signal,
                core_dumped: status.core_dumped(),
            }
        } else {
            ProcessStatus::Other(status.into_raw())
        }
    }
}

impl fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessStatus::Exited(code) => write!(f, "exited with code {code}"),
            ProcessStatus::Signaled {
                signal,
                core_dumped: false,
            } => write!(f, "killed by signal {signal}"),
            ProcessStatus::Signaled {
                signal,
                core_dumped: true,
            } => write!(f, "killed by signal {signal} (core dumped)"),
            ProcessStatus::Other(raw) => write!(f, "wait status {raw:#x}"),
        }
    }
}

/// How a process's life ended, as given to
/// [`ProcessProtocol::process_ended`](super::ProcessProtocol::process_ended):
/// always last, exactly once, after every pipe closed.
///
/// ```
/// use gyre_reactor::process::{ProcessEnd, ProcessStatus};
///
/// let end = ProcessEnd::Exited(ProcessStatus::Exited(3));
/// assert_eq!(end.status(), Some(ProcessStatus::Exited(3)));
/// assert_eq!(ProcessEnd::Shutdown.status(), None);
/// ```
#[derive(Clone, Debug)]
pub enum ProcessEnd {
    /// The child was reaped with this status (the same one
    /// [`process_exited`](super::ProcessProtocol::process_exited) got) and
    /// all its pipes are closed.
    Exited(ProcessStatus),
    /// The child is gone but its status is unknown: waiting for it failed,
    /// usually because someone else reaped it (`waitpid` said `ECHILD`:
    /// another `wait` call in the program, or SIGCHLD set to be ignored).
    /// `process_exited` was not called. Logged at warn level.
    StatusUnknown(Rc<io::Error>),
    /// The reactor shut down (or was dropped) before the child was reaped.
    /// Its pipes were closed; it was sent SIGKILL if
    /// [`kill_on_shutdown`](super::ProcessCommand::kill_on_shutdown) was
    /// set; either way a background thread reaps it when it exits, so it
    /// never stays a zombie. `process_exited` was not called.
    Shutdown,
}

impl ProcessEnd {
    /// The exit status, when the child was reaped by the reactor.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessEnd;
    /// assert!(ProcessEnd::Shutdown.status().is_none());
    /// ```
    pub fn status(&self) -> Option<ProcessStatus> {
        match self {
            ProcessEnd::Exited(status) => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ProcessEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessEnd::Exited(status) => status.fmt(f),
            ProcessEnd::StatusUnknown(e) => write!(f, "exit status unknown: {e}"),
            ProcessEnd::Shutdown => f.write_str("the reactor shut down before the child exited"),
        }
    }
}

/// Why [`ProcessHandle::signal_process`](super::ProcessHandle::signal_process)
/// sent nothing.
///
/// ```
/// use gyre_reactor::process::SignalError;
///
/// assert_eq!(SignalError::AlreadyExited.to_string(), "the process has exited already");
/// ```
#[derive(Debug)]
pub enum SignalError {
    /// The child has been reaped (or is being handed off at shutdown): its
    /// pid may belong to another process now, so nothing is sent
    /// (Twisted's `ProcessExitedAlready`). Also returned when `kill` says
    /// no such process.
    AlreadyExited,
    /// Not a signal this platform names (real-time signals are refused).
    UnknownSignal(i32),
    /// `kill` failed otherwise (permission, ...).
    Io(io::Error),
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::AlreadyExited => f.write_str("the process has exited already"),
            SignalError::UnknownSignal(n) => write!(f, "unknown signal {n}"),
            SignalError::Io(e) => write!(f, "kill failed: {e}"),
        }
    }
}

impl std::error::Error for SignalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignalError::Io(e) => Some(e),
            _ => None,
        }
    }
}
