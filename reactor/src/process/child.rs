//! [`Process`]: one spawned child as the loop sees it: its pipes, its
//! life (running, reaped, ...), its protocol, and the queue of notices
//! waiting to be delivered to that protocol.
//!
//! Ownership: each registered pipe's slot holds an `Rc<Process>` (through
//! a [`PipeSource`]), and so does the reaper until the child is reaped; the
//! [`ProcessHandle`](super::ProcessHandle) given to the protocol holds only
//! a `Weak`, so a protocol keeping its handle makes no cycle. When the last
//! `Rc` goes (the process ended, or the reactor was dropped) the pipes
//! close; a child not reaped by then is handed to [`orphan::adopt`].
//!
//! Delivery: a protocol method is only ever called from the loop, at the
//! top of a dispatch, never from a [`ProcessHandle`](super::ProcessHandle)
//! method. Data is delivered as it is read; everything else (a pipe
//! closed, the child reaped, the end) is queued as a [`Notice`] and
//! delivered, in order, at the start and at the end of each loop entry
//! point for this process (its pipe events, its queued flushes and reads,
//! the reaper's SIGCHLD handling), and by a `call_soon` when a handle
//! method queued it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::process::Child;
use std::rc::{Rc, Weak};

use mio::unix::pipe::{Receiver, Sender};

use crate::core::{guard, Inner, Reactor, Readiness, SlotKind};
use crate::protocol::Producer;

use super::orphan;
use super::pipes::{
    FlushQueued, Output, OutputState, PipeRoom, ProducerState, Registered, Stdin, StdinState,
};
use super::protocol::ProcessProtocol;
use super::status::{ChildFd, ProcessEnd, ProcessStatus};

/// How many reads one readiness event may do on one output pipe before the
/// process yields to others (it is read again from `call_soon`).
const READS_PER_EVENT: usize = 16;
/// The buffer a queued read (after the budget, or a resume) reads into.
const QUEUED_READ_BUFFER: usize = 64 * 1024;

/// The child's life, as far as waiting for it goes.
pub(crate) enum Life {
    /// Not reaped yet.
    Running(Child),
    /// Reaped by us with this status.
    Exited(ProcessStatus),
    /// Gone, status unknown (someone else reaped it).
    Unknown(Rc<io::Error>),
    /// The reactor shut down first; the child went to the orphan reaper.
    Abandoned,
}

/// Whether `process_ended` was queued (and the protocol will be dropped
/// after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Open,
    Ended,
}

/// Whether a delivery run is in progress or queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Idle,
    /// A `call_soon` will deliver.
    Queued,
    /// Delivering now (a nested call leaves the queue to it).
    Running,
}

/// Something to tell the protocol (or the stdin producer), in order.
enum Notice {
    StopProducer(Rc<dyn Producer>),
    Lost(ChildFd),
    Exited(ProcessStatus),
    Ended(ProcessEnd),
}

/// One spawned child.
pub(crate) struct Process {
    reactor: Weak<Inner>,
    pid: u32,
    kill_on_shutdown: bool,
    life: RefCell<Life>,
    /// The status once reaped, shared with the handles so that they still
    /// know it after the process is gone.
    reaped: Rc<Cell<Option<ProcessStatus>>>,
    protocol: RefCell<Option<Box<dyn ProcessProtocol>>>,
    pub(crate) stdin: Stdin,
    stdout: Output,
    stderr: Output,
    notices: RefCell<VecDeque<Notice>>,
    delivery: Cell<Delivery>,
    end: Cell<End>,
    self_weak: Weak<Process>,
}

/// One pipe's slot in the reactor: the process and which pipe.
pub(crate) struct PipeSource {
    process: Rc<Process>,
    fd: ChildFd,
}

impl crate::core::EventSource for PipeSource {
    fn handle_event(&self, _reactor: &Reactor, event: &Readiness, buf: &mut [u8]) {
        self.process.on_pipe_event(self.fd, event, buf);
    }

    fn shutdown(&self, _reactor: &Reactor) {
        self.process.shutdown();
    }
}

impl Process {
    /// A process for `child`, its pipes not yet attached.
    pub(crate) fn new(
        reactor: &Reactor,
        child: Child,
        protocol: Box<dyn ProcessProtocol>,
        kill_on_shutdown: bool,
    ) -> Rc<Process> {
        let pid = child.id();
        Rc::new_cyclic(|weak| Process {
            reactor: Rc::downgrade(&reactor.inner),
            pid,
            kill_on_shutdown,
            life: RefCell::new(Life::Running(child)),
            reaped: Rc::new(Cell::new(None)),
            protocol: RefCell::new(Some(protocol)),
            stdin: Stdin::closed(),
            stdout: Output::closed(ChildFd::Stdout),
            stderr: Output::closed(ChildFd::Stderr),
            notices: RefCell::new(VecDeque::new()),
            delivery: Cell::new(Delivery::Idle),
            end: Cell::new(End::Open),
            self_weak: weak.clone(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn weak(&self) -> Weak<Process> {
        self.self_weak.clone()
    }

    /// Takes the child's pipes out of `Child` and registers them, each in
    /// its own slot. On error the pipes attached so far stay attached: the
    /// caller tears the process down.
    pub(crate) fn attach_pipes(self: &Rc<Self>, inner: &Inner) -> io::Result<()> {
        let (stdin, stdout, stderr) = match &mut *self.life.borrow_mut() {
            Life::Running(child) => (child.stdin.take(), child.stdout.take(), child.stderr.take()),
            _ => (None, None, None),
        };
        if let Some(stdin) = stdin {
            let mut pipe = Sender::from(stdin);
            pipe.set_nonblocking(true)?;
            let token = self.insert_slot(inner, ChildFd::Stdin);
            let registered =
                inner
                    .registry
                    .register(&mut pipe, mio::Token(token), mio::Interest::WRITABLE);
            *self.stdin.state.borrow_mut() = StdinState::Open(Registered { pipe, token });
            registered?;
        }
        let outputs = [
            (stdout.map(Receiver::from), &self.stdout),
            (stderr.map(Receiver::from), &self.stderr),
        ];
        for (pipe, output) in outputs {
            let Some(mut pipe) = pipe else { continue };
            pipe.set_nonblocking(true)?;
            let token = self.insert_slot(inner, output.fd);
            let registered =
                inner
                    .registry
                    .register(&mut pipe, mio::Token(token), mio::Interest::READABLE);
            *output.state.borrow_mut() = OutputState::Reading(Registered { pipe, token });
            registered?;
        }
        Ok(())
    }

    /// Undoes a spawn whose pipes could not be set up: the child is killed,
    /// the pipes closed, the protocol dropped uncalled; the child is reaped
    /// in the background when the last `Rc` goes.
    pub(crate) fn abandon_spawn(&self) {
        self.end.set(End::Ended);
        if let Life::Running(child) = &mut *self.life.borrow_mut() {
            let _ = child.kill();
        }
        let inner = self.reactor.upgrade();
        let stdin = std::mem::replace(&mut *self.stdin.state.borrow_mut(), StdinState::Closed);
        if let StdinState::Open(r) | StdinState::Closing(r) = stdin {
            r.close(inner.as_deref());
        }
        for output in [&self.stdout, &self.stderr] {
            let state = std::mem::replace(&mut *output.state.borrow_mut(), OutputState::Closed);
            if let OutputState::Reading(r) | OutputState::Paused(r) = state {
                r.close(inner.as_deref());
            }
        }
        let protocol = self.protocol.borrow_mut().take();
        let _ = guard(
            format_args!("dropping the protocol of process {}", self.pid),
            || drop(protocol),
        );
    }

    /// Calls `connection_made`, then delivers what it caused.
    pub(crate) fn connection_made(&self, handle: super::ProcessHandle) {
        self.call_protocol("connection_made", |p| p.connection_made(handle));
        self.deliver();
    }

    fn insert_slot(self: &Rc<Self>, inner: &Inner, fd: ChildFd) -> usize {
        let source = Rc::new(PipeSource {
            process: Rc::clone(self),
            fd,
        });
        inner.insert_slot(|_| SlotKind::Source(source))
    }

    fn output(&self, fd: ChildFd) -> Option<&Output> {
        match fd {
            ChildFd::Stdout => Some(&self.stdout),
            ChildFd::Stderr => Some(&self.stderr),
            ChildFd::Stdin => None,
        }
    }

    // ----- protocol calls and notices -------------------------------------

    /// Calls the protocol under the reactor's panic guard. The protocol is
    /// taken out of its cell for the call, so nothing it calls can find it
    /// borrowed. A panic fails the process.
    fn call_protocol(&self, what: &str, f: impl FnOnce(&mut dyn ProcessProtocol)) {
        let Some(mut protocol) = self.protocol.borrow_mut().take() else {
            return;
        };
        let outcome = guard(format_args!("{what} for process {}", self.pid), || {
            f(&mut *protocol)
        });
        *self.protocol.borrow_mut() = Some(protocol);
        if outcome.is_err() {
            self.fail();
        }
    }

    fn notice(&self, notice: Notice) {
        self.notices.borrow_mut().push_back(notice);
    }

    /// Delivers queued notices, in order (see the module docs).
    pub(crate) fn deliver(&self) {
        if self.delivery.get() == Delivery::Running {
            return;
        }
        self.delivery.set(Delivery::Running);
        loop {
            let next = self.notices.borrow_mut().pop_front();
            match next {
                None => break,
                Some(Notice::StopProducer(producer)) => {
                    let _ = guard(
                        format_args!("stop_producing for the stdin of process {}", self.pid),
                        || producer.stop_producing(),
                    );
                }
                Some(Notice::Lost(fd)) => {
                    self.call_protocol("child_connection_lost", |p| p.child_connection_lost(fd))
                }
                Some(Notice::Exited(status)) => {
                    self.call_protocol("process_exited", |p| p.process_exited(status))
                }
                Some(Notice::Ended(end)) => {
                    log::debug!("process {} ended: {end}", self.pid);
                    self.call_protocol("process_ended", |p| p.process_ended(end));
                    // Whatever happens, nothing is called after process_ended.
                    let protocol = self.protocol.borrow_mut().take();
                    if let Some(protocol) = protocol {
                        let _ = guard(
                            format_args!("dropping the protocol of process {}", self.pid),
                            || drop(protocol),
                        );
                    }
                }
            }
        }
        self.delivery.set(Delivery::Idle);
    }

    /// Delivers from the loop soon (for notices queued by a handle method).
    pub(crate) fn queue_delivery(&self) {
        if self.delivery.get() != Delivery::Idle || self.notices.borrow().is_empty() {
            return;
        }
        let Some(inner) = self.reactor.upgrade() else {
            return;
        };
        self.delivery.set(Delivery::Queued);
        let weak = self.weak();
        Reactor::from_inner(inner).call_soon(move || {
            if let Some(process) = weak.upgrade() {
                if process.delivery.get() == Delivery::Queued {
                    process.delivery.set(Delivery::Idle);
                }
                process.deliver();
            }
        });
    }

    /// Calls `stop_producing` from the loop (a producer registered on a
    /// closed stdin).
    pub(crate) fn queue_stop_producing(&self, producer: Rc<dyn Producer>) {
        self.notice(Notice::StopProducer(producer));
        self.queue_delivery();
    }

    /// Whether `process_ended` was queued.
    pub(crate) fn has_ended(&self) -> bool {
        self.end.get() == End::Ended
    }

    /// A protocol method panicked: this process costs only itself. Its
    /// pipes close and the child is killed; `process_ended` still comes.
    fn fail(&self) {
        log::warn!(
            "a protocol method of process {} panicked: closing its pipes and killing it",
            self.pid
        );
        if let Life::Running(child) = &mut *self.life.borrow_mut() {
            let _ = child.kill();
        }
        self.close_all_now();
    }

    // ----- events ----------------------------------------------------------

    /// A readiness event for one of the pipes.
    fn on_pipe_event(&self, fd: ChildFd, event: &Readiness, buf: &mut [u8]) {
        self.deliver();
        match fd {
            ChildFd::Stdin => {
                if event.error || event.write_closed {
                    // The child (and everyone who inherited its stdin)
                    // closed the read end.
                    self.close_stdin_now("the child closed its stdin");
                } else if event.writable {
                    self.stdin.room.set(PipeRoom::Room);
                    self.flush_stdin();
                }
            }
            ChildFd::Stdout | ChildFd::Stderr => self.read_output(fd, buf),
        }
        self.deliver();
    }

    /// Reads an output pipe until `WouldBlock`, EOF, or the per-event
    /// budget (then it is read again from `call_soon`).
    fn read_output(&self, fd: ChildFd, buf: &mut [u8]) {
        let Some(output) = self.output(fd) else {
            return;
        };
        let inner = self.reactor.upgrade();
        for _ in 0..READS_PER_EVENT {
            let want = match &inner {
                Some(inner) => inner.read_len(buf.len()),
                None => buf.len(),
            };
            let result = match &*output.state.borrow() {
                OutputState::Reading(registered) => (&registered.pipe).read(&mut buf[..want]),
                OutputState::Paused(_) | OutputState::Closed => return,
            };
            match result {
                Ok(0) => {
                    self.close_output_now(fd);
                    return;
                }
                Ok(n) => {
                    let data = &buf[..n];
                    // No short-read shortcut: an EOF that came with this
                    // data is announced by no later edge, so read on
                    // until `WouldBlock` or EOF.
                    self.call_protocol("child_data_received", |p| p.child_data_received(fd, data));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("reading the {fd} of process {} failed: {e}", self.pid);
                    self.close_output_now(fd);
                    return;
                }
            }
        }
        self.queue_read(fd);
    }

    /// Reads `fd` again from the loop.
    pub(crate) fn queue_read(&self, fd: ChildFd) {
        let Some(inner) = self.reactor.upgrade() else {
            return;
        };
        let weak = self.weak();
        Reactor::from_inner(inner).call_soon(move || {
            if let Some(process) = weak.upgrade() {
                process.deliver();
                let mut buf = vec![0; QUEUED_READ_BUFFER];
                process.read_output(fd, &mut buf);
                process.deliver();
            }
        });
    }

    /// Flushes stdin from the loop soon.
    pub(crate) fn queue_flush(&self) {
        if self.stdin.flush.replace(FlushQueued::Yes) == FlushQueued::Yes {
            return;
        }
        let Some(inner) = self.reactor.upgrade() else {
            self.stdin.flush.set(FlushQueued::No);
            return;
        };
        let weak = self.weak();
        Reactor::from_inner(inner).call_soon(move || {
            if let Some(process) = weak.upgrade() {
                process.deliver();
                process.flush_stdin();
                process.deliver();
            }
        });
    }

    /// Writes what stdin buffers until `WouldBlock`, closes it if asked and
    /// drained, and pauses or resumes its producer.
    fn flush_stdin(&self) {
        self.stdin.flush.set(FlushQueued::No);
        let inner = self.reactor.upgrade();
        loop {
            let result = {
                let state = self.stdin.state.borrow();
                let registered = match &*state {
                    StdinState::Open(r) | StdinState::Closing(r) => r,
                    StdinState::Closed => return,
                };
                if self.stdin.room.get() == PipeRoom::Full {
                    break;
                }
                let buf = self.stdin.buf.borrow();
                let pending = buf.pending();
                if pending.is_empty() {
                    break;
                }
                let offer = match &inner {
                    Some(inner) => inner.write_len(pending.len()),
                    None => pending.len(),
                };
                (&registered.pipe).write(&pending[..offer])
            };
            match result {
                Ok(0) => {
                    self.close_stdin_now("the pipe took no bytes");
                    return;
                }
                Ok(n) => self.stdin.buf.borrow_mut().consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stdin.room.set(PipeRoom::Full);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EPIPE: the child closed its stdin.
                    self.close_stdin_now(&format!("writing failed: {e}"));
                    return;
                }
            }
        }
        let buffered = self.stdin.buf.borrow().len();
        let closing = matches!(*self.stdin.state.borrow(), StdinState::Closing(_));
        if buffered == 0 && closing {
            self.close_stdin_now("close_stdin");
            return;
        }
        self.update_producer(buffered);
    }

    fn update_producer(&self, buffered: usize) {
        let change = {
            let mut state = self.stdin.producer.borrow_mut();
            match &*state {
                ProducerState::Producing(p) if buffered > self.stdin.high_water.get() => {
                    let p = Rc::clone(p);
                    *state = ProducerState::Paused(Rc::clone(&p));
                    Some((p, true))
                }
                ProducerState::Paused(p) if buffered <= self.stdin.low_water.get() => {
                    let p = Rc::clone(p);
                    *state = ProducerState::Producing(Rc::clone(&p));
                    Some((p, false))
                }
                _ => None,
            }
        };
        match change {
            Some((producer, true)) => {
                let _ = guard(
                    format_args!("pause_producing for the stdin of process {}", self.pid),
                    || producer.pause_producing(),
                );
            }
            Some((producer, false)) => {
                let _ = guard(
                    format_args!("resume_producing for the stdin of process {}", self.pid),
                    || producer.resume_producing(),
                );
            }
            None => {}
        }
    }

    // ----- closing ---------------------------------------------------------

    /// Closes stdin now, dropping what is buffered; queues
    /// `stop_producing` and `child_connection_lost(Stdin)`.
    pub(crate) fn close_stdin_now(&self, why: &str) {
        let state = std::mem::replace(&mut *self.stdin.state.borrow_mut(), StdinState::Closed);
        let registered = match state {
            StdinState::Open(r) | StdinState::Closing(r) => r,
            StdinState::Closed => return,
        };
        let inner = self.reactor.upgrade();
        registered.close(inner.as_deref());
        let dropped = self.stdin.buf.borrow_mut().clear();
        if dropped > 0 {
            log::debug!(
                "stdin of process {} closed ({why}) with {dropped} bytes unwritten",
                self.pid
            );
        }
        let producer =
            std::mem::replace(&mut *self.stdin.producer.borrow_mut(), ProducerState::None);
        if let ProducerState::Producing(p) | ProducerState::Paused(p) = producer {
            self.notice(Notice::StopProducer(p));
        }
        self.notice(Notice::Lost(ChildFd::Stdin));
        self.maybe_end();
    }

    /// Asks stdin to close once its buffer is flushed.
    pub(crate) fn close_stdin(&self) {
        let mut state = self.stdin.state.borrow_mut();
        if let StdinState::Open(_) = &*state {
            if let StdinState::Open(r) = std::mem::replace(&mut *state, StdinState::Closed) {
                *state = StdinState::Closing(r);
            }
            drop(state);
            self.queue_flush();
        }
    }

    /// Closes an output pipe now (EOF, an error, or `close_child_fd`);
    /// queues `child_connection_lost(fd)`.
    pub(crate) fn close_output_now(&self, fd: ChildFd) {
        let Some(output) = self.output(fd) else {
            return;
        };
        let state = std::mem::replace(&mut *output.state.borrow_mut(), OutputState::Closed);
        let registered = match state {
            OutputState::Reading(r) | OutputState::Paused(r) => r,
            OutputState::Closed => return,
        };
        registered.close(self.reactor.upgrade().as_deref());
        self.notice(Notice::Lost(fd));
        self.maybe_end();
    }

    /// Stops delivering output until resumed.
    pub(crate) fn pause_reading(&self) {
        for output in [&self.stdout, &self.stderr] {
            let mut state = output.state.borrow_mut();
            if let OutputState::Reading(_) = &*state {
                if let OutputState::Reading(r) = std::mem::replace(&mut *state, OutputState::Closed)
                {
                    *state = OutputState::Paused(r);
                }
            }
        }
    }

    /// Delivers output again; reads from the loop what came meanwhile.
    pub(crate) fn resume_reading(&self) {
        for output in [&self.stdout, &self.stderr] {
            let resumed = {
                let mut state = output.state.borrow_mut();
                match std::mem::replace(&mut *state, OutputState::Closed) {
                    OutputState::Paused(r) => {
                        *state = OutputState::Reading(r);
                        true
                    }
                    other => {
                        *state = other;
                        false
                    }
                }
            };
            if resumed {
                self.queue_read(output.fd);
            }
        }
    }

    /// Closes every pipe now (stdin without flushing).
    fn close_all_now(&self) {
        self.close_stdin_now("the process failed or the reactor shut down");
        self.close_output_now(ChildFd::Stdout);
        self.close_output_now(ChildFd::Stderr);
    }

    // ----- reaping and the end --------------------------------------------

    /// Whether the child is still to be reaped.
    pub(crate) fn is_running(&self) -> bool {
        matches!(*self.life.borrow(), Life::Running(_))
    }

    /// Where the status goes once reaped (for handles).
    pub(crate) fn reaped_status(&self) -> Rc<Cell<Option<ProcessStatus>>> {
        Rc::clone(&self.reaped)
    }

    /// `waitpid(WNOHANG)` once; queues `process_exited` when reaped.
    /// Returns whether the child is still to be reaped.
    pub(crate) fn try_reap(&self) -> bool {
        let waited = match &mut *self.life.borrow_mut() {
            Life::Running(child) => child.try_wait(),
            _ => return false,
        };
        match waited {
            Ok(None) => return true,
            Ok(Some(status)) => {
                let status = ProcessStatus::from(status);
                log::debug!("process {} {status}", self.pid);
                *self.life.borrow_mut() = Life::Exited(status);
                self.reaped.set(Some(status));
                self.notice(Notice::Exited(status));
            }
            Err(e) => {
                log::warn!(
                    "could not wait for process {} (reaped elsewhere?): {e}",
                    self.pid
                );
                *self.life.borrow_mut() = Life::Unknown(Rc::new(e));
            }
        }
        self.maybe_end();
        false
    }

    /// Queues `process_ended` once the child is reaped and every pipe is
    /// closed. When the pipes are closed first, tries to reap at once (the
    /// SIGCHLD may be on its way, or may have been missed).
    fn maybe_end(&self) {
        if self.end.get() == End::Ended
            || !self.stdin.is_closed()
            || !self.stdout.is_closed()
            || !self.stderr.is_closed()
        {
            return;
        }
        let end = match &*self.life.borrow() {
            Life::Running(_) => None,
            Life::Exited(status) => Some(ProcessEnd::Exited(*status)),
            Life::Unknown(e) => Some(ProcessEnd::StatusUnknown(Rc::clone(e))),
            Life::Abandoned => Some(ProcessEnd::Shutdown),
        };
        match end {
            Some(end) => {
                self.end.set(End::Ended);
                self.notice(Notice::Ended(end));
            }
            None => {
                // try_reap calls back here once it has a result.
                self.try_reap();
            }
        }
    }

    /// Sends `signal` to the child if it is not reaped yet.
    pub(crate) fn signal(&self, signal: i32) -> Result<(), super::SignalError> {
        use super::SignalError;
        if !self.is_running() {
            return Err(SignalError::AlreadyExited);
        }
        let sig = rustix::process::Signal::from_named_raw(signal)
            .ok_or(SignalError::UnknownSignal(signal))?;
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or(SignalError::AlreadyExited)?;
        match rustix::process::kill_process(pid, sig) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::SRCH) => Err(SignalError::AlreadyExited),
            Err(e) => Err(SignalError::Io(e.into())),
        }
    }

    /// The reactor is shutting down: kill the child if asked, close every
    /// pipe (stdin after one last non-blocking flush), reap it if it has
    /// exited, else hand it to the orphan reaper; `process_ended` is
    /// delivered before this returns. Idempotent.
    pub(crate) fn shutdown(&self) {
        if self.end.get() == End::Ended {
            self.deliver();
            return;
        }
        self.deliver();
        if self.kill_on_shutdown {
            if let Life::Running(child) = &mut *self.life.borrow_mut() {
                log::debug!("shutdown: killing process {}", self.pid);
                let _ = child.kill();
            }
        }
        self.flush_stdin();
        self.close_all_now();
        if self.try_reap() {
            let life = std::mem::replace(&mut *self.life.borrow_mut(), Life::Abandoned);
            if let Life::Running(child) = life {
                log::debug!(
                    "shutdown: process {} has not exited; a thread reaps it when it does",
                    self.pid
                );
                orphan::adopt(child);
            }
            self.maybe_end();
        }
        self.deliver();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The reactor was dropped without shutting down (or spawning
        // failed half-way): the child must still be reaped.
        let life = std::mem::replace(self.life.get_mut(), Life::Abandoned);
        if let Life::Running(mut child) = life {
            if self.kill_on_shutdown {
                let _ = child.kill();
            }
            orphan::adopt(child);
        }
    }
}
