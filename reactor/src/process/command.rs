//! [`ProcessCommand`]: a `std::process::Command` plus what the reactor
//! needs to know about the child (which descriptors to pipe, whether to
//! kill it at shutdown).

use std::ffi::OsStr;
use std::fmt;
use std::process::{Command, Stdio};

/// What one of the child's standard descriptors is connected to.
///
/// ```
/// use gyre_reactor::process::{ChildStdio, ProcessCommand};
///
/// // Let the child's errors go to our own stderr.
/// let command = ProcessCommand::new("ls").stderr(ChildStdio::Inherit);
/// # drop(command);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChildStdio {
    /// A pipe to the reactor (the default): written through the
    /// [`ProcessHandle`](super::ProcessHandle) for stdin, delivered to
    /// [`child_data_received`](super::ProcessProtocol::child_data_received)
    /// for stdout and stderr.
    #[default]
    Piped,
    /// `/dev/null`. The protocol gets no `child_connection_lost` for it.
    Null,
    /// The parent's own descriptor. The protocol gets no
    /// `child_connection_lost` for it.
    Inherit,
}

impl ChildStdio {
    fn to_stdio(self) -> Stdio {
        match self {
            ChildStdio::Piped => Stdio::piped(),
            ChildStdio::Null => Stdio::null(),
            ChildStdio::Inherit => Stdio::inherit(),
        }
    }
}

/// A command to spawn with
/// [`Reactor::spawn_process`](crate::Reactor::spawn_process): a
/// [`std::process::Command`] (program, arguments, environment, directory:
/// set them through [`command_mut`](Self::command_mut) or the shortcuts
/// here) and the reactor's own settings for the child.
///
/// A plain `Command` converts into one with the defaults: all three
/// descriptors piped, not killed at shutdown. The `Command`'s own stdio
/// settings are replaced by this type's.
///
/// ```
/// use gyre_reactor::process::ProcessCommand;
///
/// let command = ProcessCommand::new("sh")
///     .arg("-c")
///     .arg("echo hello")
///     .kill_on_shutdown(true);
/// assert!(command.kills_on_shutdown());
/// let from_std: ProcessCommand = std::process::Command::new("true").into();
/// assert!(!from_std.kills_on_shutdown());
/// ```
pub struct ProcessCommand {
    command: Command,
    stdin: ChildStdio,
    stdout: ChildStdio,
    stderr: ChildStdio,
    kill_on_shutdown: bool,
}

impl ProcessCommand {
    /// A command running `program` (looked up in `PATH` as
    /// [`Command::new`] does).
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// let command = ProcessCommand::new("true");
    /// # drop(command);
    /// ```
    pub fn new(program: impl AsRef<OsStr>) -> ProcessCommand {
        ProcessCommand::from(Command::new(program))
    }

    /// Adds an argument.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// let command = ProcessCommand::new("echo").arg("hi");
    /// # drop(command);
    /// ```
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// let command = ProcessCommand::new("sh").args(["-c", "exit 3"]);
    /// # drop(command);
    /// ```
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable of the child.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// let command = ProcessCommand::new("env").env("LANG", "C");
    /// # drop(command);
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// The wrapped `Command`, for everything else it can set
    /// (`current_dir`, `env_clear`, `CommandExt::process_group`, ...).
    /// Its stdio settings are ignored: use [`stdin`](Self::stdin),
    /// [`stdout`](Self::stdout) and [`stderr`](Self::stderr).
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// let mut command = ProcessCommand::new("ls");
    /// command.command_mut().current_dir("/");
    /// ```
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// What the child's stdin is (default [`ChildStdio::Piped`]).
    ///
    /// ```
    /// # use gyre_reactor::process::{ChildStdio, ProcessCommand};
    /// let command = ProcessCommand::new("true").stdin(ChildStdio::Null);
    /// # drop(command);
    /// ```
    pub fn stdin(mut self, stdio: ChildStdio) -> Self {
        self.stdin = stdio;
        self
    }

    /// What the child's stdout is (default [`ChildStdio::Piped`]).
    ///
    /// ```
    /// # use gyre_reactor::process::{ChildStdio, ProcessCommand};
    /// let command = ProcessCommand::new("true").stdout(ChildStdio::Null);
    /// # drop(command);
    /// ```
    pub fn stdout(mut self, stdio: ChildStdio) -> Self {
        self.stdout = stdio;
        self
    }

    /// What the child's stderr is (default [`ChildStdio::Piped`]).
    ///
    /// ```
    /// # use gyre_reactor::process::{ChildStdio, ProcessCommand};
    /// let command = ProcessCommand::new("true").stderr(ChildStdio::Inherit);
    /// # drop(command);
    /// ```
    pub fn stderr(mut self, stdio: ChildStdio) -> Self {
        self.stderr = stdio;
        self
    }

    /// Whether the child is sent SIGKILL when the reactor shuts down (or is
    /// dropped) before the child was reaped. **Default `false`**, as in
    /// Twisted and tokio (`kill_on_drop`): at shutdown the child's pipes
    /// are closed (so a child that reads stdin sees EOF and one that
    /// writes gets SIGPIPE) and it is left to finish. Either way a
    /// background thread reaps it once it exits, so it never stays a
    /// zombie.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// let command = ProcessCommand::new("sleep").arg("1000").kill_on_shutdown(true);
    /// # drop(command);
    /// ```
    pub fn kill_on_shutdown(mut self, kill: bool) -> Self {
        self.kill_on_shutdown = kill;
        self
    }

    /// Whether [`kill_on_shutdown`](Self::kill_on_shutdown) is set.
    ///
    /// ```
    /// # use gyre_reactor::process::ProcessCommand;
    /// assert!(!ProcessCommand::new("true").kills_on_shutdown());
    /// ```
    pub fn kills_on_shutdown(&self) -> bool {
        self.kill_on_shutdown
    }

    /// The program's name, for logs (the arguments and environment may hold
    /// secrets, so they are not logged).
    pub(crate) fn program(&self) -> &OsStr {
        self.command.get_program()
    }

    /// The `Command` with its stdio set as asked, ready to spawn.
    pub(crate) fn prepared(&mut self) -> &mut Command {
        self.command
            .stdin(self.stdin.to_stdio())
            .stdout(self.stdout.to_stdio())
            .stderr(self.stderr.to_stdio())
    }
}

impl From<Command> for ProcessCommand {
    fn from(command: Command) -> ProcessCommand {
        ProcessCommand {
            command,
            stdin: ChildStdio::Piped,
            stdout: ChildStdio::Piped,
            stderr: ChildStdio::Piped,
            kill_on_shutdown: false,
        }
    }
}

impl fmt::Debug for ProcessCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessCommand")
            .field("command", &self.command)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .field("kill_on_shutdown", &self.kill_on_shutdown)
            .finish()
    }
}
