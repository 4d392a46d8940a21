//! Splicing two connections together: a [`Transport`] is a
//! [`Producer`], and [`splice`] proxies two connections both ways with
//! backpressure and half-close (tokio's `copy_bidirectional`, Twisted's
//! `portforward`).
//!
//! # A transport as a producer
//!
//! `impl Producer for Transport`: pausing it pauses its reading, resuming
//! resumes it, and stopping it loses the connection (as in Twisted, where
//! every transport is an `IPushProducer`). So the connection data is read
//! from can be registered directly on the connection it is written to:
//! `b.register_producer(Rc::new(a.clone()))` stops reading `a` while `b`'s
//! write buffer is above its high-water mark.
//!
//! # Splice semantics
//!
//! [`splice`] returns two protocols, [`SpliceEnd`]s, one for each
//! connection (say, one accepted, one connected upstream), and a
//! [`Splice`] handle. Once both are connected:
//!
//! - **Data**: bytes read on one end are written to the other, as they
//!   come, unchanged.
//! - **Backpressure**: each end's transport is the producer of the other's
//!   write buffer, so a slow reader on one side pauses reading on the
//!   other. A write buffer holds at most its high-water mark (default
//!   [`DEFAULT_HIGH_WATER`], set with
//!   [`splice_with_limits`]) plus one read (64 KiB for TCP); the
//!   largest seen is [`SpliceStats::max_buffered`].
//! - **Half-close**: an end of stream on one side shuts the write side of
//!   the other (after what is buffered is flushed), and the other
//!   direction goes on. Once both directions have ended, both connections
//!   close, and [`Splice::done`] fires with the byte counts.
//! - **Errors**: a connection lost in error (a reset, an abort, a panic)
//!   aborts the other one at once (tokio's `copy_bidirectional` returns
//!   the error and both streams are dropped).
//! - **Before both are up**: the end connected first does not read until
//!   the other is connected. If the other can never connect (say, the
//!   upstream connect failed), call [`Splice::abort`]. An end that
//!   connects after the other has already closed is closed at once.
//!
//! A literal `splice(a, b)` over two transports that already have their
//! own protocols is not possible in the protocol model: a connection's
//! bytes go to its protocol, so the ends are the protocols.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use crate::defer::{succeed, Deferred, Resolver};
use crate::protocol::{ConnectionLost, Producer, Protocol};
use crate::transport::{Transport, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};

/// A transport paused and resumed as a producer pauses and resumes its
/// reading; stopping it loses the connection (see the
/// [module docs](mod@crate::splice)).
///
/// ```
/// use gyre_reactor::testing::StringTransport;
/// use gyre_reactor::Producer;
///
/// let source = StringTransport::new();
/// let producer = source.transport();
/// producer.pause_producing();
/// assert!(source.reading_paused());
/// producer.resume_producing();
/// assert!(!source.reading_paused());
/// producer.stop_producing();
/// assert!(source.disconnecting());
/// ```
impl Producer for Transport {
    fn pause_producing(&self) {
        self.pause_reading();
    }

    fn resume_producing(&self) {
        self.resume_reading();
    }

    fn stop_producing(&self) {
        self.lose_connection();
    }
}

/// Byte counts of a [`Splice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Bytes read on the first end and written to the second.
    pub first_to_second: u64,
    /// Bytes read on the second end and written to the first.
    pub second_to_first: u64,
    /// The most bytes either end's write buffer held right after a write
    /// (before it was flushed): at most the high-water mark plus one read.
    pub max_buffered: usize,
}

/// One end's connection.
enum End {
    /// Not connected yet.
    Waiting,
    /// Connected.
    Open(Transport),
    /// Closed, or never to be connected (after [`Splice::abort`]).
    Closed,
}

impl End {
    fn transport(&self) -> Option<Transport> {
        match self {
            End::Open(t) => Some(t.clone()),
            End::Waiting | End::Closed => None,
        }
    }
}

struct Shared {
    ends: [RefCell<End>; 2],
    high_water: usize,
    low_water: usize,
    stats: Cell<SpliceStats>,
    /// Set when an end was lost in error or the splice aborted: an end
    /// connecting later is aborted, not closed.
    failed: Cell<bool>,
    done: RefCell<Vec<Resolver<SpliceStats>>>,
}

impl Shared {
    fn other(side: usize) -> usize {
        1 - side
    }

    fn count(&self, from: usize, n: usize, buffered: usize) {
        let mut stats = self.stats.get();
        let n = n as u64;
        if from == 0 {
            stats.first_to_second = stats.first_to_second.saturating_add(n);
        } else {
            stats.second_to_first = stats.second_to_first.saturating_add(n);
        }
        stats.max_buffered = stats.max_buffered.max(buffered);
        self.stats.set(stats);
    }

    fn is_done(&self) -> bool {
        self.ends.iter().all(|e| matches!(*e.borrow(), End::Closed))
    }

    /// Fires the `done` Deferreds once both ends are closed.
    fn finish_if_done(&self) {
        if !self.is_done() {
            return;
        }
        let waiting = std::mem::take(&mut *self.done.borrow_mut());
        let stats = self.stats.get();
        for d in waiting {
            let _ = d.callback(stats);
        }
    }
}

/// Two protocols that proxy between their connections, and the handle on
/// them, with the default write-buffer marks. See the
/// [module docs](mod@crate::splice) for the rules.
///
/// ```no_run
/// use gyre_reactor::{factory_fn, splice, Reactor};
/// use std::net::SocketAddr;
///
/// // A TCP proxy: every accepted connection is spliced to a new upstream one.
/// let reactor = Reactor::new()?;
/// let upstream: SocketAddr = "127.0.0.1:7000".parse()?;
/// let r = reactor.clone();
/// reactor.listen_tcp("127.0.0.1:8000".parse()?, factory_fn(move |_peer| {
///     let (client_end, upstream_end, splice) = splice();
///     let connected = r.connect_protocol(upstream, upstream_end);
///     // If upstream cannot be reached, the client is cut off.
///     drop(connected.add_errback(move |failure| {
///         splice.abort();
///         Err(failure)
///     }));
///     Some(client_end)
/// }))?;
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn splice() -> (SpliceEnd, SpliceEnd, Splice) {
    splice_with_limits(DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER)
}

/// [`splice`] with these write-buffer marks set on both connections: above
/// `high` buffered bytes on one side, reading the other pauses; at `low`
/// or below, it resumes.
///
/// ```
/// use gyre_reactor::splice_with_limits;
///
/// let (_first, _second, splice) = splice_with_limits(256 * 1024, 64 * 1024);
/// assert_eq!(splice.stats().max_buffered, 0);
/// ```
pub fn splice_with_limits(high: usize, low: usize) -> (SpliceEnd, SpliceEnd, Splice) {
    let shared = Rc::new(Shared {
        ends: [RefCell::new(End::Waiting), RefCell::new(End::Waiting)],
        high_water: high,
        low_water: low.min(high),
        stats: Cell::new(SpliceStats::default()),
        failed: Cell::new(false),
        done: RefCell::new(Vec::new()),
    });
    (
        SpliceEnd {
            shared: Rc::clone(&shared),
            side: 0,
        },
        SpliceEnd {
            shared: Rc::clone(&shared),
            side: 1,
        },
        Splice { shared },
    )
}

/// A handle on a splice: its byte counts, its end, and a way to abort it.
/// A cheap `Clone`.
#[derive(Clone)]
pub struct Splice {
    shared: Rc<Shared>,
}

impl Splice {
    /// The byte counts so far.
    pub fn stats(&self) -> SpliceStats {
        self.shared.stats.get()
    }

    /// A Deferred that fires with the final counts once both connections
    /// have closed (at once if they have).
    #[track_caller]
    pub fn done(&self) -> Deferred<SpliceStats> {
        if self.shared.is_done() {
            return succeed(self.shared.stats.get());
        }
        let (r, d) = Deferred::new();
        self.shared.done.borrow_mut().push(r);
        d
    }

    /// Whether both connections have closed.
    pub fn is_done(&self) -> bool {
        self.shared.is_done()
    }

    /// Bytes buffered now in the first and the second end's write buffers
    /// (0 for an end that is not connected).
    pub fn buffered(&self) -> (usize, usize) {
        let len = |e: &RefCell<End>| e.borrow().transport().map_or(0, |t| t.buffered_len());
        (len(&self.shared.ends[0]), len(&self.shared.ends[1]))
    }

    /// Aborts both connections now (buffered data is dropped); an end not
    /// connected yet is aborted as soon as it connects. For an upstream
    /// that could not be reached, a time-out, a shutdown.
    pub fn abort(&self) {
        self.shared.failed.set(true);
        for end in &self.shared.ends {
            let transport = {
                let mut end = end.borrow_mut();
                match &*end {
                    End::Waiting => {
                        *end = End::Closed;
                        None
                    }
                    End::Open(t) => Some(t.clone()),
                    End::Closed => None,
                }
            };
            // No borrow held: aborting never calls back into us on this
            // stack, but stay safe.
            if let Some(t) = transport {
                t.abort_connection();
            }
        }
        self.shared.finish_if_done();
    }
}

impl fmt::Debug for Splice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Splice")
            .field("stats", &self.stats())
            .field("done", &self.is_done())
            .finish()
    }
}

/// One end of a [`splice`]: the protocol of one of the two connections.
pub struct SpliceEnd {
    shared: Rc<Shared>,
    side: usize,
}

impl SpliceEnd {
    fn other(&self) -> Option<Transport> {
        self.shared.ends[Shared::other(self.side)]
            .borrow()
            .transport()
    }
}

impl Protocol for SpliceEnd {
    fn connection_made(&mut self, transport: Transport) {
        let shared = &self.shared;
        transport.set_write_buffer_limits(shared.high_water, shared.low_water);
        let mine = std::mem::replace(
            &mut *shared.ends[self.side].borrow_mut(),
            End::Open(transport.clone()),
        );
        if matches!(mine, End::Closed) {
            // Aborted before we connected.
            *shared.ends[self.side].borrow_mut() = End::Closed;
            transport.abort_connection();
            return;
        }
        let other = {
            let other = shared.ends[Shared::other(self.side)].borrow();
            match &*other {
                End::Waiting => None,
                End::Open(t) => Some(Some(t.clone())),
                End::Closed => Some(None),
            }
        };
        match other {
            // Wait for the partner before reading anything.
            None => transport.pause_reading(),
            Some(Some(other)) => {
                // Each is the producer of the other's write buffer.
                other.register_producer(Rc::new(transport.clone()));
                transport.register_producer(Rc::new(other.clone()));
                other.resume_reading();
            }
            // The partner is gone already.
            Some(None) if shared.failed.get() => transport.abort_connection(),
            Some(None) => transport.lose_connection(),
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(other) = self.other() {
            other.write(data);
            self.shared
                .count(self.side, data.len(), other.buffered_len());
        }
    }

    fn eof_received(&mut self) -> bool {
        match self.other() {
            Some(other) => {
                // Our peer is done sending: so are we, towards the other
                // side; the other direction goes on.
                other.half_close();
                true
            }
            None => false,
        }
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        *self.shared.ends[self.side].borrow_mut() = End::Closed;
        if !reason.is_clean() {
            self.shared.failed.set(true);
            log::debug!("splice: one end lost ({reason}); aborting the other");
            if let Some(other) = self.other() {
                other.abort_connection();
            }
        }
        self.shared.finish_if_done();
    }
}

impl fmt::Debug for SpliceEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpliceEnd")
            .field("side", &self.side)
            .finish()
    }
}
