//! Your own descriptors in the loop (`Reactor::watch_fd`), over real pipes
//! and socket pairs: readable and writable callbacks, interest changes,
//! removal (from outside and from inside a callback) handing the source
//! back, a panicking callback costing only its source, `rearm`, and
//! shutdown closing what is still watched.

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use common::{reactor, shared, wait, Shared};
use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor, WatchEnded};
use mio::unix::pipe::{self, Receiver, Sender};

/// What a handler saw.
#[derive(Default)]
struct Log {
    data: Vec<u8>,
    readable_calls: usize,
    writable_calls: usize,
    eof: bool,
    /// Bytes written by the writable callback, in total.
    written: usize,
    ended: Vec<WatchEnded>,
}

/// Reads until `WouldBlock` (or EOF), records everything.
struct Reader {
    log: Shared<Log>,
    /// Remove the watch from inside the callback at EOF.
    remove_at_eof: bool,
    /// Panic when this byte arrives.
    panic_on: Option<u8>,
}

impl Reader {
    fn new(log: &Shared<Log>) -> Reader {
        Reader {
            log: log.clone(),
            remove_at_eof: false,
            panic_on: None,
        }
    }
}

impl<S: Read + 'static> FdHandler<S> for Reader {
    fn readable(&mut self, source: &mut S, watch: &FdWatch<S>) {
        self.log.borrow_mut().readable_calls += 1;
        let mut buf = [0u8; 1024];
        loop {
            match source.read(&mut buf) {
                Ok(0) => {
                    self.log.borrow_mut().eof = true;
                    if self.remove_at_eof {
                        assert!(
                            watch.remove().is_none(),
                            "the source is lent to this callback"
                        );
                        assert!(!watch.is_watching());
                    }
                    return;
                }
                Ok(n) => {
                    self.log.borrow_mut().data.extend_from_slice(&buf[..n]);
                    if let Some(bad) = self.panic_on {
                        if buf[..n].contains(&bad) {
                            panic!("the handler chokes on {bad}");
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    fn watch_ended(&mut self, source: S, reason: WatchEnded) {
        self.log.borrow_mut().ended.push(reason);
        drop(source);
    }
}

/// Writes until `WouldBlock`, every time it is called; never switches
/// writing off (edge-triggered: an idle writable descriptor costs nothing).
struct Filler {
    log: Shared<Log>,
}

impl FdHandler<Sender> for Filler {
    fn readable(&mut self, _: &mut Sender, _: &FdWatch<Sender>) {
        panic!("a write end is not read");
    }

    fn writable(&mut self, sender: &mut Sender, _: &FdWatch<Sender>) {
        self.log.borrow_mut().writable_calls += 1;
        let chunk = [7u8; 4096];
        loop {
            match sender.write(&chunk) {
                Ok(n) => self.log.borrow_mut().written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }
}

/// Reads what the nonblocking receiver holds now.
fn drain(receiver: &mut Receiver) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        match receiver.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn watch_reader(reactor: &Reactor, receiver: Receiver, handler: Reader) -> FdWatch<Receiver> {
    reactor
        .watch_fd(receiver, FdInterest::Read, handler)
        .expect("watch the pipe")
}

#[test]
fn a_watched_pipe_gets_readable_callbacks_with_the_data_and_eof() {
    let reactor = reactor();
    let (mut sender, receiver) = pipe::new().unwrap();
    let log = shared(Log::default());
    let watch = watch_reader(&reactor, receiver, Reader::new(&log));
    assert_eq!(watch.interest(), FdInterest::Read);

    sender.write_all(b"hello ").unwrap();
    wait(&reactor, "the first bytes", || {
        log.borrow().data == b"hello "
    });
    sender.write_all(b"world").unwrap();
    wait(&reactor, "the second bytes", || {
        log.borrow().data == b"hello world"
    });
    assert!(log.borrow().readable_calls >= 2, "one callback per edge");

    drop(sender);
    wait(&reactor, "EOF", || log.borrow().eof);
    assert!(watch.is_watching(), "EOF does not end a watch by itself");
    assert!(watch.remove().is_some());
}

#[test]
fn writable_callbacks_come_again_when_room_comes_back() {
    let reactor = reactor();
    let (sender, mut receiver) = pipe::new().unwrap();
    let log = shared(Log::default());
    let watch = reactor
        .watch_fd(sender, FdInterest::Write, Filler { log: log.clone() })
        .expect("watch the write end");

    // The pipe is writable at once: the filler fills it to WouldBlock.
    wait(&reactor, "the first writable callback", || {
        log.borrow().writable_calls == 1
    });
    let filled = log.borrow().written;
    assert!(filled > 0);

    // Making room brings a new edge, and the filler fills it again.
    let mut drained = drain(&mut receiver);
    wait(&reactor, "a writable callback after draining", || {
        log.borrow().writable_calls >= 2
    });
    assert!(log.borrow().written > filled);

    // With writing switched off, draining brings no callback: the filler
    // would fill the pipe again, so everything written so far is all the
    // receiver gets.
    watch.want_write(false).unwrap();
    assert_eq!(watch.interest(), FdInterest::None);
    let calls = log.borrow().writable_calls;
    let written = log.borrow().written;
    drained += drain(&mut receiver);
    reactor
        .iterate(Some(std::time::Duration::ZERO))
        .expect("iterate from outside the loop");
    drained += drain(&mut receiver);
    assert_eq!(drained, written, "nothing written once writing was off");
    assert_eq!(log.borrow().writable_calls, calls);

    // Switching it on again reports the (now empty, writable) pipe.
    watch.want_write(true).unwrap();
    wait(
        &reactor,
        "a writable callback after want_write(true)",
        || log.borrow().writable_calls > calls,
    );
    assert!(watch.remove().is_some());
}

#[test]
fn removal_stops_callbacks_and_hands_the_descriptor_back() {
    let reactor = reactor();
    let (mut sender, receiver) = pipe::new().unwrap();
    let raw = receiver.as_raw_fd();
    let log = shared(Log::default());
    let watch = watch_reader(&reactor, receiver, Reader::new(&log));

    sender.write_all(b"one").unwrap();
    wait(&reactor, "the data", || log.borrow().data == b"one");
    let calls = log.borrow().readable_calls;

    let mut receiver = watch.remove().expect("the receiver comes back");
    assert_eq!(receiver.as_raw_fd(), raw, "the same descriptor");
    assert!(!watch.is_watching());
    assert!(watch.remove().is_none(), "removed once");
    assert!(watch.set_interest(FdInterest::Read).is_err());

    // Data written now is not delivered to the handler. A second watched
    // pipe written after it is a witness: once its data arrived the loop
    // has polled since, and the removed pipe brought no callback.
    sender.write_all(b"two").unwrap();
    let (mut witness_tx, witness_rx) = pipe::new().unwrap();
    let witness_log = shared(Log::default());
    let _witness = watch_reader(&reactor, witness_rx, Reader::new(&witness_log));
    witness_tx.write_all(b"w").unwrap();
    wait(&reactor, "the witness's data", || {
        witness_log.borrow().data == b"w"
    });
    assert_eq!(log.borrow().readable_calls, calls);
    assert_eq!(log.borrow().data, b"one");
    assert!(
        log.borrow().ended.is_empty(),
        "remove handed it back instead"
    );

    // The descriptor is open and ours: the data waits in it.
    let mut buf = [0u8; 8];
    assert_eq!(receiver.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");

    // And it can be watched again.
    let again = shared(Log::default());
    let watch = watch_reader(&reactor, receiver, Reader::new(&again));
    sender.write_all(b"three").unwrap();
    wait(&reactor, "data on the watch again", || {
        again.borrow().data == b"three"
    });
    assert!(watch.remove().is_some());
}

#[test]
fn removal_inside_a_callback_hands_the_source_to_watch_ended() {
    let reactor = reactor();
    let (mut sender, receiver) = pipe::new().unwrap();
    let log = shared(Log::default());
    let mut handler = Reader::new(&log);
    handler.remove_at_eof = true;
    let watch = watch_reader(&reactor, receiver, handler);

    sender.write_all(b"last words").unwrap();
    drop(sender);
    wait(&reactor, "the watch to end", || {
        !log.borrow().ended.is_empty()
    });
    assert_eq!(log.borrow().data, b"last words");
    assert_eq!(log.borrow().ended, vec![WatchEnded::Removed]);
    assert!(!watch.is_watching());
    assert_eq!(watch.interest(), FdInterest::None);
}

#[test]
fn a_panicking_callback_costs_only_that_source() {
    let reactor = reactor();
    let (mut bad_tx, bad_rx) = pipe::new().unwrap();
    let (mut good_tx, good_rx) = pipe::new().unwrap();
    let bad_log = shared(Log::default());
    let good_log = shared(Log::default());
    let mut bad = Reader::new(&bad_log);
    bad.panic_on = Some(b'!');
    let bad_watch = watch_reader(&reactor, bad_rx, bad);
    let good_watch = watch_reader(&reactor, good_rx, Reader::new(&good_log));

    bad_tx.write_all(b"boom!").unwrap();
    good_tx.write_all(b"fine").unwrap();
    wait(&reactor, "the panicking watch to end", || {
        !bad_log.borrow().ended.is_empty()
    });
    assert!(matches!(
        bad_log.borrow().ended.as_slice(),
        [WatchEnded::Panicked(m)] if m.contains("chokes")
    ));
    assert!(!bad_watch.is_watching());
    // Its descriptor was closed (watch_ended dropped it): the writer sees
    // a broken pipe.
    let broken = bad_tx.write(b"more").unwrap_err();
    assert_eq!(broken.kind(), io::ErrorKind::BrokenPipe);

    // The other source goes on.
    wait(&reactor, "the good pipe's data", || {
        good_log.borrow().data == b"fine"
    });
    good_tx.write_all(b" still").unwrap();
    wait(&reactor, "more good data", || {
        good_log.borrow().data == b"fine still"
    });
    assert!(good_watch.is_watching());
    assert!(good_log.borrow().ended.is_empty());
}

/// Reads one byte per callback, then asks to be called again.
struct OneByte {
    log: Shared<Log>,
}

impl FdHandler<UnixStream> for OneByte {
    fn readable(&mut self, stream: &mut UnixStream, watch: &FdWatch<UnixStream>) {
        self.log.borrow_mut().readable_calls += 1;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => {
                self.log.borrow_mut().data.push(byte[0]);
                watch.rearm().expect("rearm");
            }
            Ok(_) => self.log.borrow_mut().eof = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

#[test]
fn rearm_brings_a_callback_back_for_data_left_unread() {
    let reactor = reactor();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let log = shared(Log::default());
    let watch = reactor
        .watch_fd(ours, FdInterest::Read, OneByte { log: log.clone() })
        .expect("watch the stream");
    // One write, one edge: without rearm only the first byte would come.
    theirs.write_all(b"abcde").unwrap();
    wait(&reactor, "all five bytes, one per callback", || {
        log.borrow().data == b"abcde"
    });
    assert!(log.borrow().readable_calls >= 5);
    assert!(watch.remove().is_some());
}

#[test]
fn with_source_lends_the_source_outside_callbacks() {
    let reactor = reactor();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let log = shared(Log::default());
    let watch = reactor
        .watch_fd(ours, FdInterest::Read, Reader::new(&log))
        .expect("watch the stream");

    // Write through the watched stream, from outside any callback.
    let wrote = watch.with_source(|stream| stream.write(b"ping")).unwrap();
    assert_eq!(wrote.unwrap(), 4);
    let mut buf = [0u8; 4];
    theirs.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    // Removing inside `with_source` ends the watch; the source goes to
    // `watch_ended` from the loop, not on this stack.
    let inner_watch = watch.clone();
    let removed = watch.with_source(move |_| inner_watch.remove()).unwrap();
    assert!(removed.is_none(), "the source was lent");
    assert!(!watch.is_watching());
    assert!(log.borrow().ended.is_empty());
    wait(&reactor, "watch_ended", || !log.borrow().ended.is_empty());
    assert_eq!(log.borrow().ended, vec![WatchEnded::Removed]);
    assert!(watch.with_source(|_| ()).is_none());
}

#[test]
fn a_refused_descriptor_comes_back_with_the_error() {
    let reactor = reactor();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let log = shared(Log::default());
    let first = reactor
        .watch_fd(ours, FdInterest::Read, Reader::new(&log))
        .expect("watch the stream");
    // The same descriptor number again: the poller has it already.
    struct Borrowed(std::os::unix::io::RawFd);
    impl AsRawFd for Borrowed {
        fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
            self.0
        }
    }
    let again = reactor.watch_fd(Borrowed(first.raw_fd()), FdInterest::Read, NoHandler);
    let failed = again.expect_err("a descriptor already watched is refused");
    assert_eq!(failed.error().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(failed.into_source().0, first.raw_fd());
    assert!(first.is_watching(), "the first watch is untouched");

    // A regular file: epoll refuses it, the file comes back.
    let file =
        std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/own_fd.rs")).unwrap();
    let failed = reactor
        .watch_fd(file, FdInterest::Read, NoHandler)
        .expect_err("epoll refuses regular files");
    let (error, mut file) = failed.into_parts();
    assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    let mut head = [0u8; 3];
    file.read_exact(&mut head).expect("the file is still open");
    assert_eq!(&head, b"//!");
}

/// A handler with no callbacks of its own (the defaults).
struct NoHandler;
impl<S: 'static> FdHandler<S> for NoHandler {}

#[test]
fn default_callbacks_switch_their_interest_off() {
    let reactor = reactor();
    let (ours, _theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let watch = reactor
        .watch_fd(ours, FdInterest::ReadWrite, NoHandler)
        .expect("watch the stream");
    // Writable at once: the default `writable` switches writing off.
    wait(&reactor, "writing switched off", || {
        watch.interest() == FdInterest::Read
    });
    assert!(watch.remove().is_some());
}

#[test]
fn shutdown_ends_watches_and_closes_their_descriptors() {
    let reactor = common::reactor();
    let (mut sender, receiver) = pipe::new().unwrap();
    let log = shared(Log::default());
    let watch = watch_reader(&reactor, receiver, Reader::new(&log));
    let r = reactor.clone();
    reactor.call_soon(move || r.stop().unwrap());
    reactor.run().expect("run");
    assert_eq!(log.borrow().ended, vec![WatchEnded::Shutdown]);
    assert!(!watch.is_watching());
    let broken = sender.write(b"anyone?").unwrap_err();
    assert_eq!(broken.kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn a_handler_may_keep_its_own_watch_without_a_cycle() {
    /// Keeps its watch, and notices when it is called and dropped.
    struct Keeper {
        watch: Option<FdWatch<UnixStream>>,
        called: Rc<Cell<bool>>,
        dropped: Rc<Cell<bool>>,
    }
    impl Drop for Keeper {
        fn drop(&mut self) {
            self.dropped.set(true);
        }
    }
    impl FdHandler<UnixStream> for Keeper {
        fn readable(&mut self, _: &mut UnixStream, watch: &FdWatch<UnixStream>) {
            self.watch = Some(watch.clone());
            self.called.set(true);
        }
    }
    let reactor = reactor();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let called = Rc::new(Cell::new(false));
    let dropped = Rc::new(Cell::new(false));
    let keeper = Keeper {
        watch: None,
        called: called.clone(),
        dropped: dropped.clone(),
    };
    let watch = reactor
        .watch_fd(ours, FdInterest::Read, keeper)
        .expect("watch");
    theirs.write_all(b"x").unwrap();
    wait(&reactor, "the keeper's callback", || called.get());
    assert!(!dropped.get());
    assert!(watch.remove().is_some());
    assert!(
        dropped.get(),
        "removing drops the handler and the watch it kept"
    );
}
