//! Your own file descriptors in the loop: [`Reactor::watch_fd`],
//! [`FdWatch`] and [`FdHandler`] (Twisted's `addReader`/`addWriter`,
//! tokio's `AsyncFd`).
//!
//! Any [`AsRawFd`] source (a pipe, a socket the reactor has no transport
//! for, a device, an eventfd) can be handed to the loop, which calls a
//! handler when it is readable or writable:
//!
//! ```
//! use std::io::{self, Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::{cell::RefCell, rc::Rc, time::Duration};
//! use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
//!
//! /// Collects what arrives, reading until `WouldBlock` (readiness is
//! /// edge-triggered).
//! struct Collect(Rc<RefCell<Vec<u8>>>);
//!
//! impl FdHandler<UnixStream> for Collect {
//!     fn readable(&mut self, stream: &mut UnixStream, watch: &FdWatch<UnixStream>) {
//!         let mut buf = [0u8; 4096];
//!         loop {
//!             match stream.read(&mut buf) {
//!                 Ok(0) => {
//!                     // EOF: stop watching; the stream comes back to
//!                     // `watch_ended` once this callback returns.
//!                     watch.remove();
//!                     return;
//!                 }
//!                 Ok(n) => self.0.borrow_mut().extend_from_slice(&buf[..n]),
//!                 Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
//!                 Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
//!                 Err(_) => { watch.remove(); return; }
//!             }
//!         }
//!     }
//! }
//!
//! let reactor = Reactor::builder().install_signal_handlers(false).build()?;
//! let (ours, mut theirs) = UnixStream::pair()?;
//! ours.set_nonblocking(true)?; // the handler must never block the loop
//! let got = Rc::new(RefCell::new(Vec::new()));
//! let watch = reactor.watch_fd(ours, FdInterest::Read, Collect(got.clone()))?;
//! theirs.write_all(b"hello")?;
//! drop(theirs);
//! assert!(reactor.run_until(|| !watch.is_watching(), Duration::from_secs(5)).unwrap());
//! assert_eq!(&*got.borrow(), b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contract
//!
//! - **The reactor owns the source while it is watched.** [`watch_fd`]
//!   takes it; [`FdWatch::remove`] hands it back; meanwhile callbacks get
//!   it as `&mut S`, and [`FdWatch::with_source`] lends it to code outside
//!   the callbacks (to write to a pipe from a timer, say). If registering
//!   fails, [`WatchError`] gives the source back too.
//! - **The source must be nonblocking** (`set_nonblocking(true)`, or a
//!   source created so, like mio's pipes): a callback runs on the loop, and
//!   a blocking read would stop every other connection and timer. The
//!   reactor cannot set `O_NONBLOCK` on an arbitrary descriptor itself.
//! - **Readiness is edge-triggered**: a callback comes when the descriptor
//!   *becomes* readable (or writable), and the handler must read (or write)
//!   until `WouldBlock`; data left unread brings no new callback until more
//!   arrives. This is the rule of every descriptor in the loop (mio's, and
//!   the TCP transports'), and it was chosen over level-triggered emulation
//!   because the emulation costs one extra system call per callback and
//!   makes a wanted-but-idle writable descriptor fire on every iteration (a
//!   busy loop unless the handler switches writing off). A handler that
//!   stops early on purpose (a budget, to be fair to other sources) calls
//!   [`FdWatch::rearm`], which asks the kernel to report the current
//!   readiness again, so the callback comes back on a later iteration if
//!   there is still something to read.
//! - **Any callback may mean EOF or an error**: a hang-up or an error is
//!   reported to `readable` (when reading is wanted) and to `writable`
//!   (when writing is), and the handler learns which by reading or
//!   writing. A readiness is a hint: a read may also find nothing
//!   (`WouldBlock`).
//! - **Interest can change at any time**, from any code on the loop thread
//!   ([`FdWatch::set_interest`], [`want_read`](FdWatch::want_read),
//!   [`want_write`](FdWatch::want_write)): a descriptor that is already
//!   ready when an interest is added is reported on the next iteration, as
//!   Twisted's `addWriter` calls `doWrite` soon after. [`FdInterest::None`]
//!   deregisters the descriptor (no events at all) while the reactor keeps
//!   it.
//! - **Removal is safe from anywhere, a callback included.** Once
//!   [`FdWatch::remove`] returns, no callback of the watch runs again, not
//!   even for an event already polled in the same iteration. Inside one of
//!   the watch's own callbacks (or inside its `with_source`) the source is
//!   lent out, so `remove` returns `None` and the source is handed to
//!   [`FdHandler::watch_ended`] with [`WatchEnded::Removed`] once the
//!   callback returns (from the loop, for `with_source`).
//! - **A panic in a callback costs only that source**: it is logged, the
//!   watch ends, and the source goes to `watch_ended` with
//!   [`WatchEnded::Panicked`] (the default drops it, closing it). Other
//!   sources, connections and timers go on.
//! - **At shutdown** ([`Reactor::run`] returning) every watch still active
//!   ends with [`WatchEnded::Shutdown`]: the default `watch_ended` drops the
//!   source, which closes it. A reactor dropped without running its
//!   shutdown drops (closes) the sources it still holds.
//!
//! [`watch_fd`]: Reactor::watch_fd

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use mio::unix::SourceFd;

use crate::core::{guard, EventSource, Inner, Reactor, Readiness, SlotKind};

/// Which readiness a watched descriptor reports: what [`FdHandler`]
/// callbacks the loop makes.
///
/// ```
/// use gyre_reactor::FdInterest;
///
/// let interest = FdInterest::Read.with_write(true);
/// assert_eq!(interest, FdInterest::ReadWrite);
/// assert!(interest.is_read() && interest.is_write());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FdInterest {
    /// Neither: the descriptor is deregistered from the poller (the
    /// reactor keeps it); no callback comes.
    None,
    /// [`FdHandler::readable`] only (Twisted's `addReader`).
    Read,
    /// [`FdHandler::writable`] only (Twisted's `addWriter`).
    Write,
    /// Both.
    ReadWrite,
}

impl FdInterest {
    /// Whether reading is wanted.
    ///
    /// ```
    /// use gyre_reactor::FdInterest;
    /// assert!(FdInterest::ReadWrite.is_read());
    /// assert!(!FdInterest::Write.is_read());
    /// ```
    pub fn is_read(self) -> bool {
        matches!(self, FdInterest::Read | FdInterest::ReadWrite)
    }

    /// Whether writing is wanted.
    ///
    /// ```
    /// use gyre_reactor::FdInterest;
    /// assert!(FdInterest::Write.is_write());
    /// assert!(!FdInterest::None.is_write());
    /// ```
    pub fn is_write(self) -> bool {
        matches!(self, FdInterest::Write | FdInterest::ReadWrite)
    }

    /// This interest with reading switched on or off.
    ///
    /// ```
    /// use gyre_reactor::FdInterest;
    /// assert_eq!(FdInterest::Write.with_read(true), FdInterest::ReadWrite);
    /// assert_eq!(FdInterest::Read.with_read(false), FdInterest::None);
    /// ```
    pub fn with_read(self, read: bool) -> FdInterest {
        FdInterest::from_parts(read, self.is_write())
    }

    /// This interest with writing switched on or off.
    ///
    /// ```
    /// use gyre_reactor::FdInterest;
    /// assert_eq!(FdInterest::Read.with_write(true), FdInterest::ReadWrite);
    /// assert_eq!(FdInterest::ReadWrite.with_write(false), FdInterest::Read);
    /// ```
    pub fn with_write(self, write: bool) -> FdInterest {
        FdInterest::from_parts(self.is_read(), write)
    }

    fn from_parts(read: bool, write: bool) -> FdInterest {
        match (read, write) {
            (false, false) => FdInterest::None,
            (true, false) => FdInterest::Read,
            (false, true) => FdInterest::Write,
            (true, true) => FdInterest::ReadWrite,
        }
    }

    /// mio's interest; `None` when nothing is wanted (mio has no empty one).
    pub(crate) fn to_mio(self) -> Option<mio::Interest> {
        match self {
            FdInterest::None => None,
            FdInterest::Read => Some(mio::Interest::READABLE),
            FdInterest::Write => Some(mio::Interest::WRITABLE),
            FdInterest::ReadWrite => Some(mio::Interest::READABLE | mio::Interest::WRITABLE),
        }
    }
}

/// Why a watch ended other than by [`FdWatch::remove`] handing the source
/// back; given to [`FdHandler::watch_ended`] with the source.
///
/// ```
/// use gyre_reactor::WatchEnded;
///
/// assert_eq!(WatchEnded::Shutdown.to_string(), "the reactor shut down");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEnded {
    /// [`FdWatch::remove`] was called while the source was lent to a
    /// callback (or to [`FdWatch::with_source`]).
    Removed,
    /// A callback panicked (the message); the watch was ended.
    Panicked(String),
    /// The reactor shut down.
    Shutdown,
}

impl fmt::Display for WatchEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchEnded::Removed => f.write_str("removed"),
            WatchEnded::Panicked(m) => write!(f, "a callback panicked: {m}"),
            WatchEnded::Shutdown => f.write_str("the reactor shut down"),
        }
    }
}

/// What the loop calls for a watched descriptor (Twisted's
/// `IReadDescriptor`/`IWriteDescriptor`); see the [module docs](self) for
/// the contract (edge-triggered: read or write until `WouldBlock`).
///
/// Every method runs on the loop, under its panic guard, and may call any
/// reactor API, the watch's own methods included (`remove`,
/// `set_interest`). `source` is the watched descriptor, lent for the call.
///
/// ```
/// use std::io::{self, Write};
/// use std::os::unix::net::UnixStream;
/// use gyre_reactor::{FdHandler, FdWatch};
///
/// /// Writes a message as the descriptor has room, then stops wanting to
/// /// write.
/// struct Send { left: Vec<u8> }
///
/// impl FdHandler<UnixStream> for Send {
///     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
///     fn writable(&mut self, stream: &mut UnixStream, watch: &FdWatch<UnixStream>) {
///         while !self.left.is_empty() {
///             match stream.write(&self.left) {
///                 Ok(n) => { self.left.drain(..n); }
///                 Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
///                 Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
///                 Err(_) => { watch.remove(); return; }
///             }
///         }
///         let _ = watch.want_write(false);
///     }
/// }
/// ```
pub trait FdHandler<S>: 'static {
    /// The descriptor became readable, or hung up, or has an error: read
    /// until `WouldBlock` (or until EOF or the error).
    ///
    /// The default logs a warning and switches reading off, so that a
    /// handler registered for reading without this method is noticed.
    fn readable(&mut self, source: &mut S, watch: &FdWatch<S>) {
        let _ = source;
        log::warn!(
            "fd {} is watched for reading but its handler has no `readable`: reading switched off",
            watch.fd
        );
        let _ = watch.want_read(false);
    }

    /// The descriptor became writable, or hung up, or has an error: write
    /// until `WouldBlock` or until there is nothing left, then switch
    /// writing off if nothing more will come
    /// ([`FdWatch::want_write`]`(false)`), or leave it on (edge-triggered:
    /// an idle writable descriptor costs nothing).
    ///
    /// The default logs a warning and switches writing off.
    fn writable(&mut self, source: &mut S, watch: &FdWatch<S>) {
        let _ = source;
        log::warn!(
            "fd {} is watched for writing but its handler has no `writable`: writing switched off",
            watch.fd
        );
        let _ = watch.want_write(false);
    }

    /// The watch ended without [`FdWatch::remove`] handing the source back
    /// (see [`WatchEnded`]): here is the source. Called once, last; the
    /// default drops it, which closes it if `S` owns its descriptor.
    fn watch_ended(&mut self, source: S, reason: WatchEnded) {
        log::debug!("watch of an fd ended: {reason}");
        drop(source);
    }
}

/// A failed [`Reactor::watch_fd`]: the error, and the source given back.
///
/// It converts into an [`io::Error`] (dropping the source), so `?` works in
/// a function returning `io::Result`.
///
/// ```
/// use std::fs::File;
/// use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
///
/// struct Nothing;
/// impl FdHandler<File> for Nothing {
///     fn readable(&mut self, _: &mut File, _: &FdWatch<File>) {}
/// }
///
/// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
/// // epoll refuses regular files: the file comes back with the error.
/// let file = File::open("Cargo.toml")?;
/// let failed = reactor.watch_fd(file, FdInterest::Read, Nothing).unwrap_err();
/// let (error, _file) = failed.into_parts();
/// assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct WatchError<S> {
    error: io::Error,
    source: S,
}

impl<S> WatchError<S> {
    /// Why registering failed.
    ///
    /// ```
    /// # use std::fs::File;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Nothing;
    /// # impl FdHandler<File> for Nothing {}
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let failed = reactor
    ///     .watch_fd(File::open("Cargo.toml")?, FdInterest::Read, Nothing)
    ///     .unwrap_err();
    /// assert_eq!(failed.error().kind(), std::io::ErrorKind::PermissionDenied);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The source, given back.
    ///
    /// ```
    /// # use std::fs::File;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Nothing;
    /// # impl FdHandler<File> for Nothing {}
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let failed = reactor
    ///     .watch_fd(File::open("Cargo.toml")?, FdInterest::Read, Nothing)
    ///     .unwrap_err();
    /// let file: File = failed.into_source();
    /// # drop(file);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_source(self) -> S {
        self.source
    }

    /// The error and the source.
    ///
    /// ```
    /// # use std::fs::File;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Nothing;
    /// # impl FdHandler<File> for Nothing {}
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let failed = reactor
    ///     .watch_fd(File::open("Cargo.toml")?, FdInterest::Read, Nothing)
    ///     .unwrap_err();
    /// let (error, _file) = failed.into_parts();
    /// assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_parts(self) -> (io::Error, S) {
        (self.error, self.source)
    }
}

impl<S> fmt::Debug for WatchError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<S> fmt::Display for WatchError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot watch the descriptor: {}", self.error)
    }
}

impl<S> std::error::Error for WatchError<S> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<S> From<WatchError<S>> for io::Error {
    fn from(e: WatchError<S>) -> io::Error {
        e.error
    }
}

/// Where the watched source is.
enum Held<S> {
    /// Here, between callbacks.
    Idle(S),
    /// Lent to a callback or to `with_source`.
    Lent,
    /// The watch ended while the source was lent (`remove` from inside a
    /// callback, say): when the loan ends the source goes to
    /// `watch_ended` with this reason.
    EndedWhileLent(WatchEnded),
    /// The watch ended; the source was handed on.
    Ended,
}

/// How a loan of the source ends when the watch ended meanwhile.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handback {
    /// Right away (the loop lent it to a callback that has returned).
    Now,
    /// From the loop (user code lent it through `with_source`).
    FromLoop,
}

/// Which callback.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// One watched descriptor: the slot's [`EventSource`].
struct Watched<S: 'static> {
    reactor: Weak<Inner>,
    fd: RawFd,
    token: Cell<usize>,
    /// What is registered with the poller now.
    interest: Cell<FdInterest>,
    held: RefCell<Held<S>>,
    /// Taken out for each call (so no borrow is held across user code);
    /// dropped when the watch ends (which breaks the cycle of a handler
    /// that keeps its own `FdWatch`).
    handler: RefCell<Option<Box<dyn FdHandler<S>>>>,
    self_weak: Weak<Watched<S>>,
}

/// A handle on a watched descriptor, from [`Reactor::watch_fd`]: changes
/// its interest, lends its source, removes it. A cheap `Clone`; it does not
/// keep the watch alive (the reactor does, until the watch ends), so a
/// handler may keep one without a reference cycle.
pub struct FdWatch<S: 'static> {
    watched: Weak<Watched<S>>,
    fd: RawFd,
}

impl<S: 'static> Clone for FdWatch<S> {
    fn clone(&self) -> Self {
        FdWatch {
            watched: Weak::clone(&self.watched),
            fd: self.fd,
        }
    }
}

impl<S: 'static> fmt::Debug for FdWatch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdWatch")
            .field("fd", &self.fd)
            .field("interest", &self.interest())
            .finish()
    }
}

/// The error of an operation on a watch that has ended.
fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the fd watch has ended")
}

impl<S: 'static> FdWatch<S> {
    /// The watched descriptor's number (as it was when watched).
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// use std::os::unix::io::AsRawFd;
    /// let fd = ours.as_raw_fd();
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// assert_eq!(watch.raw_fd(), fd);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Whether the watch is active: not removed, and not ended by a panic
    /// or shutdown.
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// assert!(watch.is_watching());
    /// let _ours = watch.remove();
    /// assert!(!watch.is_watching());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_watching(&self) -> bool {
        self.live().is_some()
    }

    /// The interest registered now ([`FdInterest::None`] once the watch
    /// has ended).
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// assert_eq!(watch.interest(), FdInterest::Read);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn interest(&self) -> FdInterest {
        self.live()
            .map(|w| w.interest.get())
            .unwrap_or(FdInterest::None)
    }

    /// Changes which callbacks come. Adding an interest for a descriptor
    /// that is already ready brings its callback on the next iteration.
    /// An error if the watch has ended or the poller refused (then the old
    /// interest stays).
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// watch.set_interest(FdInterest::ReadWrite)?;
    /// assert_eq!(watch.interest(), FdInterest::ReadWrite);
    /// watch.set_interest(FdInterest::None)?; // deregistered, still held
    /// assert!(watch.is_watching());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_interest(&self, interest: FdInterest) -> io::Result<()> {
        self.live().ok_or_else(ended)?.set_interest(interest)
    }

    /// Switches reading on or off (Twisted's `addReader`/`removeReader`),
    /// leaving writing as it is.
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// let watch = reactor.watch_fd(ours, FdInterest::ReadWrite, Quiet)?;
    /// watch.want_read(false)?;
    /// assert_eq!(watch.interest(), FdInterest::Write);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn want_read(&self, read: bool) -> io::Result<()> {
        let watched = self.live().ok_or_else(ended)?;
        let interest = watched.interest.get().with_read(read);
        watched.set_interest(interest)
    }

    /// Switches writing on or off (Twisted's `addWriter`/`removeWriter`),
    /// leaving reading as it is.
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// watch.want_write(true)?;
    /// assert_eq!(watch.interest(), FdInterest::ReadWrite);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn want_write(&self, write: bool) -> io::Result<()> {
        let watched = self.live().ok_or_else(ended)?;
        let interest = watched.interest.get().with_write(write);
        watched.set_interest(interest)
    }

    /// Asks the kernel to report the descriptor's current readiness again:
    /// for a handler that stopped reading (or writing) before `WouldBlock`
    /// on purpose, so that it is called again on a later iteration if
    /// there is still something to do. Costs one system call; does
    /// nothing when the interest is [`FdInterest::None`].
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// watch.rearm()?; // typically from a callback that stopped early
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rearm(&self) -> io::Result<()> {
        let watched = self.live().ok_or_else(ended)?;
        let interest = watched.interest.get();
        watched.register(interest, interest)
    }

    /// Lends the source to `f` outside the callbacks (to write to it from
    /// a timer, say) and returns what `f` returns. `None` if the watch has
    /// ended or the source is lent already (inside one of the watch's own
    /// callbacks, use the `source` argument). If `f` removes the watch,
    /// the source goes to [`FdHandler::watch_ended`] from the loop. A
    /// panic in `f` is not caught (it is the caller's own code): the
    /// source is put back first.
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// use std::io::Write;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// let wrote = watch.with_source(|stream| stream.write(b"hi")).expect("not lent")?;
    /// assert_eq!(wrote, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_source<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let watched = self.live()?;
        let mut source = watched.lend()?;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut source)));
        watched.end_loan(source, Handback::FromLoop);
        match result {
            Ok(value) => Some(value),
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// Stops watching and hands the source back (Twisted's
    /// `removeReader`/`removeWriter` together). No callback of the watch
    /// runs after this returns, not even for an event already polled.
    ///
    /// `None` if the watch had already ended, or if the source is lent out
    /// now (inside one of the watch's own callbacks, or its
    /// `with_source`): then the watch still ends at once, and the source
    /// goes to [`FdHandler::watch_ended`] with [`WatchEnded::Removed`]
    /// when the loan ends.
    ///
    /// ```
    /// # use std::os::unix::net::UnixStream;
    /// # use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    /// # struct Quiet;
    /// # impl FdHandler<UnixStream> for Quiet {
    /// #     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// #     fn writable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    /// # }
    /// # let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// # let (ours, _theirs) = UnixStream::pair()?;
    /// # ours.set_nonblocking(true)?;
    /// use std::io::Write;
    /// let watch = reactor.watch_fd(ours, FdInterest::Read, Quiet)?;
    /// let mut ours = watch.remove().expect("handed back");
    /// ours.write_all(b"mine again")?;
    /// assert!(watch.remove().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self) -> Option<S> {
        let watched = self.live()?;
        let source = watched.end(WatchEnded::Removed)?;
        watched.drop_handler();
        Some(source)
    }

    fn live(&self) -> Option<Rc<Watched<S>>> {
        self.watched.upgrade().filter(|w| w.is_active())
    }
}

impl<S: 'static> Watched<S> {
    fn is_active(&self) -> bool {
        matches!(&*self.held.borrow(), Held::Idle(_) | Held::Lent)
    }

    /// Takes the source out for a callback or `with_source`.
    fn lend(&self) -> Option<S> {
        let mut held = self.held.borrow_mut();
        match std::mem::replace(&mut *held, Held::Lent) {
            Held::Idle(source) => Some(source),
            other => {
                *held = other;
                None
            }
        }
    }

    /// Takes back a lent source; if the watch ended meanwhile, hands it to
    /// `watch_ended` (now, or from the loop).
    fn end_loan(self: &Rc<Self>, source: S, handback: Handback) {
        let reason = {
            let mut held = self.held.borrow_mut();
            match std::mem::replace(&mut *held, Held::Ended) {
                Held::Lent => {
                    *held = Held::Idle(source);
                    return;
                }
                Held::EndedWhileLent(reason) => reason,
                // Only a loan ends a loan, so neither can happen; keep
                // what is there.
                other => {
                    *held = other;
                    return;
                }
            }
        };
        match handback {
            Handback::Now => self.end_with(source, reason),
            Handback::FromLoop => {
                let watched = Rc::clone(self);
                match self.reactor.upgrade().and_then(|i| i.reactor()) {
                    Some(reactor) => reactor.call_soon(move || watched.end_with(source, reason)),
                    None => drop(source),
                }
            }
        }
    }

    /// Moves the poller registration from `old` to `new`; on success
    /// records `new`.
    fn register(&self, old: FdInterest, new: FdInterest) -> io::Result<()> {
        let Some(reactor) = self.reactor.upgrade() else {
            return Err(ended());
        };
        let token = mio::Token(self.token.get());
        let mut fd = SourceFd(&self.fd);
        match (old.to_mio(), new.to_mio()) {
            (None, None) => Ok(()),
            (None, Some(i)) => reactor.registry.register(&mut fd, token, i),
            (Some(_), Some(i)) => reactor.registry.reregister(&mut fd, token, i),
            (Some(_), None) => reactor.registry.deregister(&mut fd),
        }?;
        self.interest.set(new);
        Ok(())
    }

    fn set_interest(&self, interest: FdInterest) -> io::Result<()> {
        let old = self.interest.get();
        if old == interest {
            return Ok(());
        }
        self.register(old, interest)
    }

    /// Deregisters and frees the slot (the watch is over for the loop).
    fn close_registration(&self) {
        if let Err(e) = self.register(self.interest.get(), FdInterest::None) {
            log::debug!("cannot deregister fd {}: {e}", self.fd);
        }
        self.interest.set(FdInterest::None);
        if let Some(reactor) = self.reactor.upgrade() {
            reactor.remove_slot(self.token.get());
        }
    }

    /// Ends the watch for `reason`: returns the source if it is here; if
    /// it is lent, it goes to `watch_ended` when the loan ends.
    fn end(&self, reason: WatchEnded) -> Option<S> {
        let source = {
            let mut held = self.held.borrow_mut();
            match std::mem::replace(&mut *held, Held::Ended) {
                Held::Idle(source) => Some(source),
                Held::Lent => {
                    *held = Held::EndedWhileLent(reason);
                    None
                }
                other => {
                    *held = other;
                    return None;
                }
            }
        };
        self.close_registration();
        log::debug!("fd {} no longer watched", self.fd);
        source
    }

    /// Gives the source to the handler's `watch_ended` (under the guard),
    /// then drops the handler.
    fn end_with(&self, source: S, reason: WatchEnded) {
        let handler = self.handler.borrow_mut().take();
        match handler {
            Some(mut handler) => {
                let _ = guard(format_args!("watch_ended of fd {}", self.fd), || {
                    handler.watch_ended(source, reason)
                });
                let _ = guard(
                    format_args!("dropping the handler of fd {}", self.fd),
                    || drop(handler),
                );
            }
            None => drop(source),
        }
    }

    /// Drops the handler (the watch ended and the source went back to
    /// the user), outside any borrow: its destructor is user code.
    fn drop_handler(&self) {
        let handler = self.handler.borrow_mut().take();
        let _ = guard(
            format_args!("dropping the handler of fd {}", self.fd),
            || drop(handler),
        );
    }

    /// Runs one callback with the source lent; a panic ends the watch.
    fn call(self: &Rc<Self>, direction: Direction) {
        let Some(mut source) = self.lend() else {
            return;
        };
        let Some(mut handler) = self.handler.borrow_mut().take() else {
            self.end_loan(source, Handback::Now);
            return;
        };
        let watch = FdWatch {
            watched: Rc::downgrade(self),
            fd: self.fd,
        };
        let what = match direction {
            Direction::Read => "readable",
            Direction::Write => "writable",
        };
        let outcome = guard(
            format_args!("{what} callback of fd {}", self.fd),
            || match direction {
                Direction::Read => handler.readable(&mut source, &watch),
                Direction::Write => handler.writable(&mut source, &watch),
            },
        );
        // Put the handler back before the loan ends: a removal during the
        // callback hands the source to it.
        *self.handler.borrow_mut() = Some(handler);
        match outcome {
            Ok(()) => self.end_loan(source, Handback::Now),
            Err(message) => {
                // Costs only this source: end the watch (if the callback
                // did not already) and hand the source on.
                let reason = WatchEnded::Panicked(message);
                {
                    let mut held = self.held.borrow_mut();
                    if matches!(&*held, Held::Lent) {
                        *held = Held::EndedWhileLent(reason.clone());
                    }
                }
                self.close_registration();
                log::warn!(
                    "fd {} no longer watched: its {what} callback panicked",
                    self.fd
                );
                self.end_loan(source, Handback::Now);
            }
        }
    }
}

impl<S: 'static> EventSource for Watched<S> {
    fn handle_event(&self, _reactor: &Reactor, event: &Readiness, _buf: &mut [u8]) {
        let Some(me) = self.self_weak.upgrade() else {
            return;
        };
        let trouble = event.error || event.read_closed || event.write_closed;
        if self.interest.get().is_read() && (event.readable || trouble) {
            me.call(Direction::Read);
        }
        // Checked again: the read callback may have removed the watch or
        // switched writing off.
        if self.is_active() && self.interest.get().is_write() && (event.writable || trouble) {
            me.call(Direction::Write);
        }
    }

    fn shutdown(&self, _reactor: &Reactor) {
        if let Some(source) = self.end(WatchEnded::Shutdown) {
            self.end_with(source, WatchEnded::Shutdown);
        }
    }
}

impl Reactor {
    /// Watches a descriptor of your own (Twisted's `addReader` and
    /// `addWriter`, tokio's `AsyncFd`): the loop calls `handler` when
    /// `source` is readable or writable, as `interest` says. The reactor
    /// owns `source` until [`FdWatch::remove`] hands it back (or the watch
    /// ends, see [`WatchEnded`]). Read the [module docs](crate::fd) for the
    /// contract: the source must be nonblocking, and readiness is
    /// edge-triggered (read or write until `WouldBlock`).
    ///
    /// If the poller refuses the descriptor (epoll refuses regular files;
    /// a descriptor already in this loop is refused too), the error comes
    /// back with the source ([`WatchError`]).
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use gyre_reactor::{FdHandler, FdInterest, FdWatch, Reactor};
    ///
    /// struct Ready(Rc<Cell<bool>>);
    /// impl FdHandler<UnixStream> for Ready {
    ///     fn readable(&mut self, _: &mut UnixStream, _: &FdWatch<UnixStream>) {}
    ///     fn writable(&mut self, _: &mut UnixStream, w: &FdWatch<UnixStream>) {
    ///         self.0.set(true);
    ///         let _ = w.want_write(false);
    ///     }
    /// }
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let (ours, _theirs) = UnixStream::pair()?;
    /// ours.set_nonblocking(true)?;
    /// let ready = Rc::new(Cell::new(false));
    /// let watch = reactor.watch_fd(ours, FdInterest::Write, Ready(ready.clone()))?;
    /// assert!(reactor.run_until(|| ready.get(), Duration::from_secs(5)).unwrap());
    /// let mut ours = watch.remove().expect("the stream comes back");
    /// ours.write_all(b"still mine")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_fd<S, H>(
        &self,
        source: S,
        interest: FdInterest,
        handler: H,
    ) -> Result<FdWatch<S>, WatchError<S>>
    where
        S: AsRawFd + 'static,
        H: FdHandler<S>,
    {
        let fd = source.as_raw_fd();
        // The source moves in once the poller took the descriptor, so a
        // refusal can give it back.
        let watched = Rc::new_cyclic(|weak| Watched {
            reactor: Rc::downgrade(&self.inner),
            fd,
            token: Cell::new(0),
            interest: Cell::new(FdInterest::None),
            held: RefCell::new(Held::Ended),
            handler: RefCell::new(Some(Box::new(handler) as Box<dyn FdHandler<S>>)),
            self_weak: weak.clone(),
        });
        let slot: Rc<dyn EventSource> = Rc::clone(&watched) as Rc<dyn EventSource>;
        let token = self.inner.insert_slot(|_| SlotKind::Source(slot));
        watched.token.set(token);
        if let Err(error) = watched.register(FdInterest::None, interest) {
            self.inner.remove_slot(token);
            watched.drop_handler();
            return Err(WatchError { error, source });
        }
        *watched.held.borrow_mut() = Held::Idle(source);
        log::debug!("watching fd {fd} for {interest:?}");
        Ok(FdWatch {
            watched: Rc::downgrade(&watched),
            fd,
        })
    }
}
