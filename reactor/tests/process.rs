//! Child processes on the reactor, with real processes: callback order,
//! exit codes and signals, stdin backpressure, reaping (no zombies), spawn
//! failures, the `output` helper, and shutdown.
//!
//! Every wait runs the reactor until the condition holds (`run_until` with
//! the generous [`common::BOUND`]); nothing sleeps for a fixed time.

mod common;

use std::cell::Cell;
use std::io;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use common::{reactor, shared, Shared, BOUND};
use gyre_reactor::defer::Failure;
use gyre_reactor::process::{
    self, ChildFd, ChildStdio, OutputLimitExceeded, OutputOptions, ProcessCommand, ProcessEnd,
    ProcessHandle, ProcessOutput, ProcessProtocol, ProcessStatus, SignalError,
};
use gyre_reactor::{Producer, Reactor, DEFAULT_HIGH_WATER};
use signal_hook::consts::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM};

/// One call the reactor made into a protocol.
#[derive(Debug, Clone)]
enum Event {
    Made,
    Data(ChildFd, Vec<u8>),
    Lost(ChildFd),
    Exited(ProcessStatus),
    Ended(ProcessEnd),
}

/// Records every call, in order.
struct Recorder {
    events: Shared<Vec<Event>>,
}

impl ProcessProtocol for Recorder {
    fn connection_made(&mut self, _process: ProcessHandle) {
        self.events.borrow_mut().push(Event::Made);
    }
    fn child_data_received(&mut self, fd: ChildFd, data: &[u8]) {
        self.events
            .borrow_mut()
            .push(Event::Data(fd, data.to_vec()));
    }
    fn child_connection_lost(&mut self, fd: ChildFd) {
        self.events.borrow_mut().push(Event::Lost(fd));
    }
    fn process_exited(&mut self, status: ProcessStatus) {
        self.events.borrow_mut().push(Event::Exited(status));
    }
    fn process_ended(&mut self, end: ProcessEnd) {
        self.events.borrow_mut().push(Event::Ended(end));
    }
}

fn recorder() -> (Recorder, Shared<Vec<Event>>) {
    let events = shared(Vec::new());
    (
        Recorder {
            events: Rc::clone(&events),
        },
        events,
    )
}

fn sh(script: &str) -> ProcessCommand {
    ProcessCommand::new("sh").arg("-c").arg(script)
}

fn ended(events: &Shared<Vec<Event>>) -> bool {
    events.borrow().iter().any(|e| matches!(e, Event::Ended(_)))
}

/// Runs the reactor until the process recorded by `events` has ended.
fn run_until_ended(reactor: &Reactor, events: &Shared<Vec<Event>>) {
    assert!(
        reactor.run_until(|| ended(events), BOUND).unwrap(),
        "process_ended did not arrive; saw {:?}",
        events.borrow()
    );
}

fn output_of(events: &[Event], which: ChildFd) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let Event::Data(fd, data) = e {
            if *fd == which {
                out.extend_from_slice(data);
            }
        }
    }
    out
}

/// The order contract: `connection_made` first; data on a pipe only before
/// its `child_connection_lost`; each pipe lost once; at most one
/// `process_exited`; `process_ended` exactly once and last. Returns the end.
fn check_order(events: &[Event]) -> ProcessEnd {
    assert!(matches!(events.first(), Some(Event::Made)), "{events:?}");
    let mut lost = Vec::new();
    let mut exited = 0;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Made => assert_eq!(i, 0, "connection_made twice: {events:?}"),
            Event::Data(fd, _) => {
                assert_ne!(*fd, ChildFd::Stdin, "data on stdin: {events:?}");
                assert!(!lost.contains(fd), "data after {fd} was lost: {events:?}");
            }
            Event::Lost(fd) => {
                assert!(!lost.contains(fd), "{fd} lost twice: {events:?}");
                lost.push(*fd);
            }
            Event::Exited(_) => exited += 1,
            Event::Ended(_) => assert_eq!(i, events.len() - 1, "ended not last: {events:?}"),
        }
    }
    assert!(exited <= 1, "{events:?}");
    for fd in [ChildFd::Stdin, ChildFd::Stdout, ChildFd::Stderr] {
        assert!(lost.contains(&fd), "{fd} never lost: {events:?}");
    }
    match events.last() {
        Some(Event::Ended(end)) => end.clone(),
        other => panic!("last event {other:?}"),
    }
}

/// What `/proc/<pid>/stat` says about a pid: its state letter and parent,
/// or `None` when there is no such process.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a zombie child of this test process.
fn is_our_zombie(pid: u32) -> bool {
    matches!(proc_state(pid), Some(('Z', ppid)) if ppid == std::process::id())
}

#[test]
fn exit_code_and_both_outputs_arrive_then_process_ended_last() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(sh("echo out; echo err >&2; exit 3"), protocol)
        .unwrap();
    assert!(handle.pid() > 0);
    // connection_made came before spawn_process returned.
    assert!(matches!(events.borrow().first(), Some(Event::Made)));
    run_until_ended(&reactor, &events);

    let events = events.borrow();
    let end = check_order(&events);
    assert_eq!(output_of(&events, ChildFd::Stdout), b"out\n");
    assert_eq!(output_of(&events, ChildFd::Stderr), b"err\n");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Exited(ProcessStatus::Exited(3)))));
    assert_eq!(end.status(), Some(ProcessStatus::Exited(3)));
    assert_eq!(handle.status(), Some(ProcessStatus::Exited(3)));
    assert!(!handle.is_alive());
    assert!(!is_our_zombie(handle.pid()));
}

#[test]
fn a_child_that_kills_itself_reports_the_signal() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    reactor
        .spawn_process(sh("echo before; kill -9 $$; echo after"), protocol)
        .unwrap();
    run_until_ended(&reactor, &events);

    let events = events.borrow();
    let end = check_order(&events);
    assert_eq!(output_of(&events, ChildFd::Stdout), b"before\n");
    let status = end.status().unwrap();
    assert_eq!(status.signal(), Some(SIGKILL));
    assert_eq!(status.code(), None);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Exited(s) if s.signal() == Some(SIGKILL))));
}

#[test]
fn signal_process_kills_a_child_and_is_refused_once_it_is_reaped() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(ProcessCommand::new("sleep").arg("1000"), protocol)
        .unwrap();
    handle.signal_process(SIGTERM).unwrap();
    run_until_ended(&reactor, &events);

    let end = check_order(&events.borrow());
    assert_eq!(
        end.status(),
        Some(ProcessStatus::Signaled {
            signal: SIGTERM,
            core_dumped: false
        })
    );
    assert!(matches!(
        handle.signal_process(SIGKILL),
        Err(SignalError::AlreadyExited)
    ));
}

#[test]
fn an_unknown_signal_is_refused() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(ProcessCommand::new("sleep").arg("1000"), protocol)
        .unwrap();
    assert!(matches!(
        handle.signal_process(-5),
        Err(SignalError::UnknownSignal(-5))
    ));
    handle.signal_process(SIGKILL).unwrap();
    run_until_ended(&reactor, &events);
    assert_eq!(
        check_order(&events.borrow()).status().unwrap().signal(),
        Some(SIGKILL)
    );
}

/// Writes 64 KiB per loop turn into a child's stdin while not paused, and
/// samples the stdin buffer after every write.
struct Pump {
    me: Weak<Pump>,
    reactor: Reactor,
    handle: ProcessHandle,
    chunk: Vec<u8>,
    total: usize,
    sent: Cell<usize>,
    paused: Cell<bool>,
    pauses: Cell<usize>,
    max_buffered: Cell<usize>,
    scheduled: Cell<bool>,
    /// The child starts stopped (SIGSTOP), so the pipe fills and the pump
    /// is paused for sure; the first pause lets it go on (SIGCONT).
    continued: Cell<bool>,
}

impl Pump {
    fn schedule(&self) {
        if self.scheduled.replace(true) {
            return;
        }
        let me = self.me.clone();
        self.reactor.call_soon(move || {
            if let Some(pump) = me.upgrade() {
                pump.tick();
            }
        });
    }

    fn tick(&self) {
        self.scheduled.set(false);
        let left = self.total - self.sent.get();
        if self.paused.get() || left == 0 {
            return;
        }
        let n = left.min(self.chunk.len());
        self.handle.write(&self.chunk[..n]);
        self.sent.set(self.sent.get() + n);
        let buffered = self.handle.buffered_len();
        self.max_buffered.set(self.max_buffered.get().max(buffered));
        if self.sent.get() == self.total {
            self.handle.close_stdin();
        } else {
            self.schedule();
        }
    }
}

impl Producer for Pump {
    fn pause_producing(&self) {
        self.paused.set(true);
        self.pauses.set(self.pauses.get() + 1);
        if !self.continued.replace(true) {
            self.handle.signal_process(SIGCONT).unwrap();
        }
    }
    fn resume_producing(&self) {
        self.paused.set(false);
        self.schedule();
    }
}

#[test]
fn a_hundred_megabytes_through_stdin_with_backpressure() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(ProcessCommand::new("wc").arg("-c"), protocol)
        .unwrap();
    handle.signal_process(SIGSTOP).unwrap();
    let pump = Rc::new_cyclic(|me| Pump {
        me: me.clone(),
        reactor: reactor.clone(),
        handle: handle.clone(),
        chunk: vec![b'x'; CHUNK],
        total: TOTAL,
        sent: Cell::new(0),
        paused: Cell::new(false),
        pauses: Cell::new(0),
        max_buffered: Cell::new(0),
        scheduled: Cell::new(false),
        continued: Cell::new(false),
    });
    handle.register_producer(pump.clone());
    pump.schedule();
    run_until_ended(&reactor, &events);

    let events = events.borrow();
    let end = check_order(&events);
    assert_eq!(end.status(), Some(ProcessStatus::Exited(0)));
    assert_eq!(pump.sent.get(), TOTAL);
    let counted = String::from_utf8(output_of(&events, ChildFd::Stdout)).unwrap();
    assert_eq!(counted.trim().parse::<usize>().unwrap(), TOTAL);
    assert!(pump.pauses.get() > 0, "the producer was never paused");
    assert!(
        pump.max_buffered.get() <= DEFAULT_HIGH_WATER + CHUNK,
        "stdin buffered {} bytes, more than the high-water mark plus one write",
        pump.max_buffered.get()
    );
    // stop_producing was called and the producer dropped: the pump is ours
    // alone again.
    assert_eq!(Rc::strong_count(&pump), 1);
}

#[test]
fn two_hundred_short_processes_are_all_reaped() {
    const N: usize = 200;
    let reactor = reactor();
    let mut children = Vec::new();
    for _ in 0..N {
        let (protocol, events) = recorder();
        let handle = reactor
            .spawn_process(ProcessCommand::new("true"), protocol)
            .unwrap();
        children.push((handle, events));
    }
    let all_ended = || children.iter().all(|(_, events)| ended(events));
    assert!(reactor.run_until(all_ended, BOUND).unwrap());

    for (handle, events) in &children {
        let end = check_order(&events.borrow());
        // Reaped by the reactor (try_wait gave the status) ...
        assert_eq!(end.status(), Some(ProcessStatus::Exited(0)), "{end:?}");
        assert_eq!(handle.status(), Some(ProcessStatus::Exited(0)));
        // ... so the kernel holds no zombie for it.
        assert!(
            !is_our_zombie(handle.pid()),
            "pid {} is a zombie",
            handle.pid()
        );
    }
}

#[test]
fn a_program_that_does_not_exist_is_an_error() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let err = reactor
        .spawn_process(
            ProcessCommand::new("/nonexistent/gyre-no-such-program"),
            protocol,
        )
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(events.borrow().is_empty(), "the protocol was called");

    // The reactor goes on: another child runs fine.
    let (protocol, events) = recorder();
    reactor.spawn_process(sh("exit 0"), protocol).unwrap();
    run_until_ended(&reactor, &events);

    let missing = process::output(&reactor, ProcessCommand::new("/nonexistent/gyre-nope"));
    let failure: Failure = missing.take_result().unwrap().unwrap_err();
    assert_eq!(
        failure.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn output_returns_stdout_stderr_and_status() {
    let reactor = reactor();
    let d = process::output(&reactor, sh("echo out; echo err >&2; exit 3"));
    assert!(reactor.run_until(|| d.called(), BOUND).unwrap());
    let out = d.take_result().unwrap().unwrap();
    assert_eq!(
        out,
        ProcessOutput {
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            status: ProcessStatus::Exited(3),
        }
    );
}

#[test]
fn output_writes_stdin_then_closes_it() {
    let reactor = reactor();
    let d = OutputOptions::new()
        .stdin("one\ntwo\n")
        .run(&reactor, ProcessCommand::new("cat"));
    assert!(reactor.run_until(|| d.called(), BOUND).unwrap());
    let out = d.take_result().unwrap().unwrap();
    assert_eq!(out.stdout, b"one\ntwo\n");
    assert!(out.status.success());
}

#[test]
fn output_over_the_limit_kills_the_child_and_fails() {
    let reactor = reactor();
    let d = OutputOptions::new()
        .max_output(64 * 1024)
        .run(&reactor, ProcessCommand::new("yes"));
    assert!(reactor.run_until(|| d.called(), BOUND).unwrap());
    let failure = d.take_result().unwrap().unwrap_err();
    assert_eq!(
        failure.downcast_ref::<OutputLimitExceeded>(),
        Some(&OutputLimitExceeded {
            fd: ChildFd::Stdout,
            limit: 64 * 1024
        })
    );
}

/// The pids of this process's children whose command line is `args`.
fn children_running(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = matches!(proc_state(pid), Some((_, ppid)) if ppid == std::process::id());
        if ours && std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(wanted.clone()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn cancelling_output_kills_and_reaps_the_child() {
    let reactor = reactor();
    // An argument no other test uses, to find this child in /proc.
    let args = ["sleep", "1000.25"];
    let d = process::output(&reactor, ProcessCommand::new(args[0]).arg(args[1]));
    let pids = children_running(&args);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let pid = pids[0];
    d.cancel();
    let failure = d.take_result().unwrap().unwrap_err();
    assert!(failure.is::<gyre_reactor::defer::Cancelled>());
    // Killed, then reaped by the reactor: not our child in any state,
    // not even a zombie.
    let gone = || !matches!(proc_state(pid), Some((_, ppid)) if ppid == std::process::id());
    assert!(
        reactor.run_until(gone, BOUND).unwrap(),
        "pid {pid} still ours"
    );
}

#[test]
fn descriptors_not_piped_are_not_reported() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(
            ProcessCommand::new("sh")
                .args(["-c", "echo out; echo err >&2"])
                .stdin(ChildStdio::Null)
                .stderr(ChildStdio::Null),
            protocol,
        )
        .unwrap();
    // Writes to a stdin that is not piped are dropped; a producer is
    // stopped at once (from the loop).
    handle.write(b"nowhere");
    assert_eq!(handle.buffered_len(), 0);
    struct Stopped(Cell<bool>);
    impl Producer for Stopped {
        fn pause_producing(&self) {}
        fn resume_producing(&self) {}
        fn stop_producing(&self) {
            self.0.set(true);
        }
    }
    let producer = Rc::new(Stopped(Cell::new(false)));
    handle.register_producer(producer.clone());
    run_until_ended(&reactor, &events);
    assert!(producer.0.get());

    let events = events.borrow();
    assert!(matches!(events.first(), Some(Event::Made)));
    let lost: Vec<ChildFd> = events
        .iter()
        .filter_map(|e| match e {
            Event::Lost(fd) => Some(*fd),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [ChildFd::Stdout]);
    assert_eq!(output_of(&events, ChildFd::Stdout), b"out\n");
    assert!(output_of(&events, ChildFd::Stderr).is_empty());
    assert!(matches!(
        events.last(),
        Some(Event::Ended(ProcessEnd::Exited(ProcessStatus::Exited(0))))
    ));
}

#[test]
fn close_stdin_gives_the_child_eof() {
    let reactor = reactor();
    let events = shared(Vec::new());
    struct Cat(Shared<Vec<Event>>);
    impl ProcessProtocol for Cat {
        fn connection_made(&mut self, process: ProcessHandle) {
            self.0.borrow_mut().push(Event::Made);
            process.write(b"hello ");
            process.write_sequence(&[b"wor", b"ld"]);
            process.close_stdin();
            process.write(b"dropped after close");
        }
        fn child_data_received(&mut self, fd: ChildFd, data: &[u8]) {
            self.0.borrow_mut().push(Event::Data(fd, data.to_vec()));
        }
        fn child_connection_lost(&mut self, fd: ChildFd) {
            self.0.borrow_mut().push(Event::Lost(fd));
        }
        fn process_exited(&mut self, status: ProcessStatus) {
            self.0.borrow_mut().push(Event::Exited(status));
        }
        fn process_ended(&mut self, end: ProcessEnd) {
            self.0.borrow_mut().push(Event::Ended(end));
        }
    }
    reactor
        .spawn_process(ProcessCommand::new("cat"), Cat(Rc::clone(&events)))
        .unwrap();
    run_until_ended(&reactor, &events);
    let events = events.borrow();
    let end = check_order(&events);
    assert_eq!(output_of(&events, ChildFd::Stdout), b"hello world");
    assert!(end.status().unwrap().success());
}

#[test]
fn a_grandchild_holding_the_pipes_delays_process_ended() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    // The child exits at once; the grandchild it leaves behind holds
    // stdin (as fd 3: sh gives a background job /dev/null as its fd 0),
    // stdout and stderr, and writes after the child was reaped.
    let handle = reactor
        .spawn_process(sh("exec 3<&0; (read x <&3; echo late) & exit 0"), protocol)
        .unwrap();
    let exited = || {
        events
            .borrow()
            .iter()
            .any(|e| matches!(e, Event::Exited(_)))
    };
    assert!(reactor.run_until(exited, BOUND).unwrap());
    // Reaped, but the pipes are open: no process_ended yet. Wake the
    // grandchild through the stdin it inherited.
    assert!(!ended(&events), "{:?}", events.borrow());
    assert_eq!(handle.status(), Some(ProcessStatus::Exited(0)));
    handle.write(b"go\n");
    handle.close_stdin();
    run_until_ended(&reactor, &events);

    let events = events.borrow();
    let end = check_order(&events);
    assert_eq!(end.status(), Some(ProcessStatus::Exited(0)));
    assert_eq!(output_of(&events, ChildFd::Stdout), b"late\n");
    // The output came after the child was reaped.
    let exited_at = events.iter().position(|e| matches!(e, Event::Exited(_)));
    let data_at = events.iter().position(|e| matches!(e, Event::Data(..)));
    assert!(exited_at < data_at, "{events:?}");
}

#[test]
fn a_child_that_stops_reading_closes_stdin_without_harm() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    // head exits after 10 bytes; the rest of the megabyte meets EPIPE.
    let handle = reactor
        .spawn_process(ProcessCommand::new("head").args(["-c", "10"]), protocol)
        .unwrap();
    handle.write(&vec![b'y'; 1024 * 1024]);
    run_until_ended(&reactor, &events);
    let events = events.borrow();
    let end = check_order(&events);
    assert_eq!(end.status(), Some(ProcessStatus::Exited(0)));
    assert_eq!(output_of(&events, ChildFd::Stdout), b"yyyyyyyyyy");
    assert_eq!(handle.buffered_len(), 0);
}

#[test]
fn a_panicking_protocol_costs_only_its_process() {
    let reactor = reactor();
    let events = shared(Vec::new());
    struct Panics(Shared<Vec<Event>>);
    impl ProcessProtocol for Panics {
        fn connection_made(&mut self, _process: ProcessHandle) {
            self.0.borrow_mut().push(Event::Made);
        }
        fn child_data_received(&mut self, _fd: ChildFd, _data: &[u8]) {
            panic!("boom (expected by the test)");
        }
        fn child_connection_lost(&mut self, fd: ChildFd) {
            self.0.borrow_mut().push(Event::Lost(fd));
        }
        fn process_ended(&mut self, end: ProcessEnd) {
            self.0.borrow_mut().push(Event::Ended(end));
        }
    }
    reactor
        .spawn_process(
            sh("echo hello; exec sleep 1000"),
            Panics(Rc::clone(&events)),
        )
        .unwrap();
    run_until_ended(&reactor, &events);
    let end = check_order(&events.borrow());
    // Killed, and still reaped.
    assert_eq!(end.status().unwrap().signal(), Some(SIGKILL));

    // Another process on the same reactor is unaffected.
    let (protocol, events) = recorder();
    reactor.spawn_process(sh("echo fine"), protocol).unwrap();
    run_until_ended(&reactor, &events);
    assert_eq!(output_of(&events.borrow(), ChildFd::Stdout), b"fine\n");
}

#[test]
fn a_child_reaped_by_someone_else_is_reported() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(ProcessCommand::new("true"), protocol)
        .unwrap();
    // Someone else waits for it first (the reactor is not running meanwhile).
    let pid = rustix::process::Pid::from_raw(handle.pid() as i32).unwrap();
    let waited = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    assert!(matches!(waited, Ok(Some(_))));
    run_until_ended(&reactor, &events);

    let events = events.borrow();
    let end = check_order(&events);
    assert!(matches!(end, ProcessEnd::StatusUnknown(_)), "{end:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Exited(_))));
}

/// Waits (bounded) until `pid` is no longer a child of this process, in
/// any state: the orphan reaper thread has waited for it.
fn wait_until_reaped(pid: u32) -> bool {
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        match proc_state(pid) {
            Some((_, ppid)) if ppid == std::process::id() => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return true,
        }
    }
    false
}

#[test]
fn shutdown_kills_when_asked_and_never_leaves_a_zombie() {
    let reactor = reactor();
    let (protocol, killed_events) = recorder();
    let killed = reactor
        .spawn_process(
            ProcessCommand::new("sleep")
                .arg("1000")
                .kill_on_shutdown(true),
            protocol,
        )
        .unwrap();
    // Not killed (the default): its stdin closes at shutdown, so it reads
    // EOF and exits by itself.
    let (protocol, left_events) = recorder();
    let left = reactor
        .spawn_process(sh("read line; exit 7"), protocol)
        .unwrap();
    let r = reactor.clone();
    reactor.call_later(Duration::ZERO, move || r.stop().unwrap());
    reactor.run().unwrap();

    for (handle, events) in [(&killed, &killed_events), (&left, &left_events)] {
        let end = check_order(&events.borrow());
        // Reaped during shutdown, or handed to the orphan reaper.
        match end {
            ProcessEnd::Shutdown => {}
            ProcessEnd::Exited(status) if handle.pid() == killed.pid() => {
                assert_eq!(status.signal(), Some(SIGKILL))
            }
            ProcessEnd::Exited(status) => assert_eq!(status.code(), Some(7)),
            other => panic!("{other:?}"),
        }
        assert!(
            wait_until_reaped(handle.pid()),
            "pid {} was not reaped after shutdown",
            handle.pid()
        );
    }
}

#[test]
fn pause_reading_holds_output_until_resumed() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(sh("echo one; read x; echo two"), protocol)
        .unwrap();
    handle.pause_reading();
    // Let the child run and write while we do not read; then wake it up.
    handle.write(b"go\n");
    let flushed = || handle.buffered_len() == 0;
    assert!(reactor.run_until(flushed, BOUND).unwrap());
    assert!(output_of(&events.borrow(), ChildFd::Stdout).is_empty());
    handle.resume_reading();
    run_until_ended(&reactor, &events);
    let events = events.borrow();
    check_order(&events);
    assert_eq!(output_of(&events, ChildFd::Stdout), b"one\ntwo\n");
}

#[test]
fn dropping_a_reactor_with_a_running_child_reaps_it() {
    let reactor = reactor();
    let (protocol, events) = recorder();
    let handle = reactor
        .spawn_process(sh("read line; exit 0"), protocol)
        .unwrap();
    let pid = handle.pid();
    drop(reactor);
    // The pipes closed with the reactor: the child read EOF and exited,
    // and a background thread reaped it.
    assert!(wait_until_reaped(pid), "pid {pid} was not reaped");
    assert!(!handle.is_alive());
    drop(events);
}

#[test]
fn status_of_an_exited_child_is_exact() {
    // Code 0 and a large code survive the trip through waitpid.
    let reactor = reactor();
    let d0 = process::output(&reactor, sh("exit 0"));
    let d255 = process::output(&reactor, sh("exit 255"));
    assert!(reactor
        .run_until(|| d0.called() && d255.called(), BOUND)
        .unwrap());
    assert_eq!(
        d0.take_result().unwrap().unwrap().status,
        ProcessStatus::Exited(0)
    );
    assert_eq!(
        d255.take_result().unwrap().unwrap().status,
        ProcessStatus::Exited(255)
    );
}

#[test]
fn the_contract_holds_under_a_perturbed_schedule() {
    use gyre_reactor::testing::Perturbation;
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for seed in 1..=4 {
        let perturbation = Perturbation::new(seed)
            .short_reads(700)
            .partial_writes()
            .shuffle_events()
            .sleep_before_poll(Duration::from_millis(1));
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .perturb(perturbation)
            .build()
            .unwrap();
        let (protocol, events) = recorder();
        // cat echoes stdin to stdout, then a line to stderr, then exits 5.
        let handle = reactor
            .spawn_process(sh("cat; echo done >&2; exit 5"), protocol)
            .unwrap();
        handle.write(&input);
        handle.close_stdin();
        run_until_ended(&reactor, &events);
        let events = events.borrow();
        let end = check_order(&events);
        assert_eq!(end.status(), Some(ProcessStatus::Exited(5)), "seed {seed}");
        assert!(
            output_of(&events, ChildFd::Stdout) == input,
            "seed {seed}: stdout differs"
        );
        assert_eq!(
            output_of(&events, ChildFd::Stderr),
            b"done\n",
            "seed {seed}"
        );
    }
}
