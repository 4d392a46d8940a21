//! [`ProcessProtocol`]: the user side of a child process.

use super::handle::ProcessHandle;
use super::status::{ChildFd, ProcessEnd, ProcessStatus};

/// The user side of one child process (Twisted's `IProcessProtocol`).
///
/// The reactor calls these methods from its loop, never re-entrantly, in
/// the order the [module docs](super#contract) state:
/// `connection_made` first (before
/// [`spawn_process`](crate::Reactor::spawn_process) returns), then any
/// number of `child_data_received`, one `child_connection_lost` per piped
/// descriptor and at most one `process_exited`, interleaved as they happen,
/// and `process_ended` last, exactly once.
///
/// A [`ProcessHandle`] method called from inside these methods (even
/// `close_stdin` or `signal_process`) never calls back into the protocol on
/// the same stack; what it causes is delivered after the method returns.
///
/// A panic in any of them is caught, logged, and costs only this process:
/// its pipes are closed, it is sent SIGKILL, and `process_ended` still
/// comes once it is reaped.
///
/// ```
/// use gyre_reactor::process::{ChildFd, ProcessEnd, ProcessHandle, ProcessProtocol};
///
/// /// Counts what the child prints, and says how it ended.
/// #[derive(Default)]
/// struct Count {
///     bytes: usize,
/// }
///
/// impl ProcessProtocol for Count {
///     fn connection_made(&mut self, process: ProcessHandle) {
///         process.close_stdin(); // the child reads EOF at once
///     }
///     fn child_data_received(&mut self, _fd: ChildFd, data: &[u8]) {
///         self.bytes += data.len();
///     }
///     fn process_ended(&mut self, end: ProcessEnd) {
///         println!("{} bytes, then {end}", self.bytes);
///     }
/// }
/// ```
pub trait ProcessProtocol: 'static {
    /// The child was spawned; keep `process` to write to its stdin, close
    /// it, or signal the child. Called once, before `spawn_process`
    /// returns.
    fn connection_made(&mut self, process: ProcessHandle) {
        let _ = process;
    }

    /// The child wrote `data` to `fd` ([`ChildFd::Stdout`] or
    /// [`ChildFd::Stderr`]). `data` is borrowed from the reactor's read
    /// buffer and only valid during the call; copy what you keep.
    fn child_data_received(&mut self, fd: ChildFd, data: &[u8]);

    /// Our end of the pipe for `fd` is closed: for stdout and stderr, after
    /// the child (and every process that inherited the pipe) closed it and
    /// all its data was delivered, or after
    /// [`ProcessHandle::close_child_fd`]; for stdin, after
    /// [`ProcessHandle::close_stdin`] flushed what was buffered, or when
    /// the child closed its end (then what was still buffered is dropped).
    /// Called once per piped descriptor.
    fn child_connection_lost(&mut self, fd: ChildFd) {
        let _ = fd;
    }

    /// The child was reaped with `status`. Its pipes may still be open (a
    /// grandchild may hold them); output may still arrive. Not called when
    /// the status could not be learned (see [`ProcessEnd`]).
    fn process_exited(&mut self, status: ProcessStatus) {
        let _ = status;
    }

    /// The child was reaped and all its pipes are closed: nothing more will
    /// be called. Always last, exactly once.
    fn process_ended(&mut self, end: ProcessEnd) {
        let _ = end;
    }
}

/// A boxed process protocol is a process protocol.
impl ProcessProtocol for Box<dyn ProcessProtocol> {
    fn connection_made(&mut self, process: ProcessHandle) {
        (**self).connection_made(process)
    }
    fn child_data_received(&mut self, fd: ChildFd, data: &[u8]) {
        (**self).child_data_received(fd, data)
    }
    fn child_connection_lost(&mut self, fd: ChildFd) {
        (**self).child_connection_lost(fd)
    }
    fn process_exited(&mut self, status: ProcessStatus) {
        (**self).process_exited(status)
    }
    fn process_ended(&mut self, end: ProcessEnd) {
        (**self).process_ended(end)
    }
}
