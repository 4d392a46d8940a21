//! [`output`]: run a command and collect its stdout, stderr and status as
//! a Deferred (Twisted's `getProcessOutputAndValue`), with a bound on what
//! it collects.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;

use signal_hook::consts::SIGKILL;

use crate::core::Reactor;
use crate::defer::{fail, Deferred, Failure, Resolver};

use super::command::ProcessCommand;
use super::handle::ProcessHandle;
use super::protocol::ProcessProtocol;
use super::status::{ChildFd, ProcessEnd, ProcessStatus};

/// The default of [`OutputOptions::max_output`]: 16 MiB of stdout and
/// 16 MiB of stderr at most.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// What a finished command printed, and how it ended.
///
/// ```
/// use gyre_reactor::process::{ProcessOutput, ProcessStatus};
///
/// let out = ProcessOutput {
///     stdout: b"out\n".to_vec(),
///     stderr: Vec::new(),
///     status: ProcessStatus::Exited(0),
/// };
/// assert!(out.status.success());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Everything the child wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the child wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its exit code or terminating signal (a non-zero code or a signal is
    /// not a failure of the Deferred: look here).
    pub status: ProcessStatus,
}

/// The child wrote more than [`OutputOptions::max_output`] bytes to one
/// pipe; it was killed and the Deferred failed with this.
///
/// ```
/// use gyre_reactor::process::{ChildFd, OutputLimitExceeded};
///
/// let e = OutputLimitExceeded { fd: ChildFd::Stdout, limit: 10 };
/// assert_eq!(e.to_string(), "the child wrote more than 10 bytes to stdout");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimitExceeded {
    /// The pipe that went over.
    pub fd: ChildFd,
    /// The limit.
    pub limit: usize,
}

impl fmt::Display for OutputLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the child wrote more than {} bytes to {}",
            self.limit, self.fd
        )
    }
}

impl std::error::Error for OutputLimitExceeded {}

/// Settings for collecting a command's output; [`output`] uses the
/// defaults.
///
/// ```no_run
/// use gyre_reactor::process::{OutputOptions, ProcessCommand};
/// use gyre_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let sorted = OutputOptions::new()
///     .max_output(1024 * 1024)
///     .stdin(&b"b\na\n"[..])
///     .run(&reactor, ProcessCommand::new("sort"));
/// # drop(sorted);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct OutputOptions {
    max_output: usize,
    stdin: Vec<u8>,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions {
            max_output: DEFAULT_MAX_OUTPUT,
            stdin: Vec::new(),
        }
    }
}

impl OutputOptions {
    /// The defaults: at most [`DEFAULT_MAX_OUTPUT`] per pipe, empty stdin.
    ///
    /// ```
    /// # use gyre_reactor::process::OutputOptions;
    /// let options = OutputOptions::new();
    /// # drop(options);
    /// ```
    pub fn new() -> OutputOptions {
        OutputOptions::default()
    }

    /// The most bytes collected from each of stdout and stderr (default
    /// [`DEFAULT_MAX_OUTPUT`]). A child that writes more is logged (warn),
    /// sent SIGKILL, its pipes are closed, and the Deferred fails with
    /// [`OutputLimitExceeded`] once it has ended.
    ///
    /// ```
    /// # use gyre_reactor::process::OutputOptions;
    /// let options = OutputOptions::new().max_output(64 * 1024);
    /// # drop(options);
    /// ```
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// Bytes written to the child's stdin before it is closed (default
    /// none: the child reads EOF at once).
    ///
    /// ```
    /// # use gyre_reactor::process::OutputOptions;
    /// let options = OutputOptions::new().stdin("input\n");
    /// # drop(options);
    /// ```
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = data.into();
        self
    }

    /// Runs `command` and collects its output: the Deferred fires with a
    /// [`ProcessOutput`] once the process ended (reaped, pipes closed),
    /// whatever its exit code. It fails with the spawn error (an
    /// [`io::Error`], `NotFound` for a program that does not exist), with
    /// [`OutputLimitExceeded`], or with an [`io::Error`] when the status
    /// could not be learned or the reactor shut down first. Cancelling it
    /// sends the child SIGKILL. Stdout and stderr are always piped here,
    /// whatever `command` says.
    ///
    /// ```no_run
    /// # use gyre_reactor::process::{OutputOptions, ProcessCommand};
    /// # let reactor = gyre_reactor::Reactor::new()?;
    /// let d = OutputOptions::new().run(&reactor, ProcessCommand::new("date"));
    /// # drop(d);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run(
        &self,
        reactor: &Reactor,
        command: impl Into<ProcessCommand>,
    ) -> Deferred<ProcessOutput> {
        let command = command
            .into()
            .stdin(super::ChildStdio::Piped)
            .stdout(super::ChildStdio::Piped)
            .stderr(super::ChildStdio::Piped);
        let handle_slot: Rc<RefCell<Option<ProcessHandle>>> = Rc::new(RefCell::new(None));
        let for_cancel = Rc::clone(&handle_slot);
        let (resolver, deferred) = Deferred::with_canceller(move |_resolver| {
            if let Some(handle) = for_cancel.borrow().as_ref() {
                let _ = handle.signal_process(SIGKILL);
                handle.lose_connection();
            }
        });
        let collector = Collector {
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output: self.max_output,
            stdin: self.stdin.clone(),
            exceeded: None,
            handle: None,
            resolver,
        };
        match reactor.spawn_process(command, collector) {
            Ok(handle) => {
                *handle_slot.borrow_mut() = Some(handle);
                deferred
            }
            Err(e) => {
                // The canceller and its resolver go; the failure is the
                // spawn error.
                drop(deferred);
                fail(Failure::new(e))
            }
        }
    }
}

/// Runs `command` with the default [`OutputOptions`] and collects its
/// stdout, stderr and status (Twisted's `getProcessOutputAndValue`): see
/// [`OutputOptions::run`].
///
/// ```
/// use std::time::Duration;
/// use gyre_reactor::process::{self, ProcessCommand, ProcessStatus};
/// use gyre_reactor::Reactor;
///
/// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
/// let d = process::output(&reactor, ProcessCommand::new("sh").args(["-c", "echo hi; exit 2"]));
/// assert!(reactor.run_until(|| d.called(), Duration::from_secs(20)).unwrap());
/// let out = d.take_result().unwrap().unwrap();
/// assert_eq!(out.stdout, b"hi\n");
/// assert_eq!(out.status, ProcessStatus::Exited(2));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn output(reactor: &Reactor, command: impl Into<ProcessCommand>) -> Deferred<ProcessOutput> {
    OutputOptions::new().run(reactor, command)
}

/// The protocol behind [`output`].
struct Collector {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    max_output: usize,
    stdin: Vec<u8>,
    exceeded: Option<OutputLimitExceeded>,
    handle: Option<ProcessHandle>,
    resolver: Resolver<ProcessOutput>,
}

impl ProcessProtocol for Collector {
    fn connection_made(&mut self, process: ProcessHandle) {
        let stdin = std::mem::take(&mut self.stdin);
        if !stdin.is_empty() {
            process.write(&stdin);
        }
        process.close_stdin();
        self.handle = Some(process);
    }

    fn child_data_received(&mut self, fd: ChildFd, data: &[u8]) {
        if self.exceeded.is_some() {
            return;
        }
        let buf = match fd {
            ChildFd::Stderr => &mut self.stderr,
            _ => &mut self.stdout,
        };
        if buf.len().saturating_add(data.len()) > self.max_output {
            let exceeded = OutputLimitExceeded {
                fd,
                limit: self.max_output,
            };
            log::warn!("{exceeded}: killing it");
            self.exceeded = Some(exceeded);
            if let Some(handle) = &self.handle {
                let _ = handle.signal_process(SIGKILL);
                handle.lose_connection();
            }
            self.stdout = Vec::new();
            self.stderr = Vec::new();
            return;
        }
        buf.extend_from_slice(data);
    }

    fn process_ended(&mut self, end: ProcessEnd) {
        let outcome = match (self.exceeded, end) {
            (Some(exceeded), _) => Err(Failure::new(exceeded)),
            (None, ProcessEnd::Exited(status)) => Ok(ProcessOutput {
                stdout: std::mem::take(&mut self.stdout),
                stderr: std::mem::take(&mut self.stderr),
                status,
            }),
            (None, ProcessEnd::StatusUnknown(e)) => Err(Failure::new(io::Error::new(
                e.kind(),
                format!("the exit status is unknown: {e}"),
            ))),
            (None, ProcessEnd::Shutdown) => Err(Failure::new(io::Error::other(
                "the reactor shut down before the process exited",
            ))),
        };
        // A cancelled Deferred ignores this one late fire.
        let _ = self.resolver.resolve(outcome);
    }
}
