//! The parent's ends of a child's pipes: a registered pipe, the state of
//! stdin (our writing side, with its bounded buffer and producer) and of
//! stdout and stderr (our reading sides). Plain state; the
//! [`Process`](super::child::Process) drives it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use mio::unix::pipe::{Receiver, Sender};

use crate::core::Inner;
use crate::protocol::Producer;
use crate::transport::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, WRITE_BUFFER_FLOOR};

use super::status::ChildFd;

/// A pipe end registered with the loop under `token` (its own slot).
pub(crate) struct Registered<P: mio::event::Source> {
    pub(crate) pipe: P,
    pub(crate) token: usize,
}

impl<P: mio::event::Source> Registered<P> {
    /// Deregisters the pipe, frees its slot and closes it.
    pub(crate) fn close(mut self, inner: Option<&Inner>) {
        if let Some(inner) = inner {
            let _ = inner.registry.deregister(&mut self.pipe);
            // The slot holds an `Rc` of the process; the caller holds
            // another, so this is never the last.
            drop(inner.remove_slot(self.token));
        }
    }
}

/// Our writing side of the child's stdin.
pub(crate) enum StdinState {
    /// Writes are buffered and flushed.
    Open(Registered<Sender>),
    /// `close_stdin`: later writes are dropped; once the buffer is flushed
    /// the pipe is closed.
    Closing(Registered<Sender>),
    /// Closed (or never piped).
    Closed,
}

/// Whether the pipe had room at the last write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PipeRoom {
    /// Writing may go on.
    Room,
    /// The kernel said `WouldBlock`: wait for a writable event.
    Full,
}

/// The registered producer, and whether we paused it.
pub(crate) enum ProducerState {
    None,
    Producing(Rc<dyn Producer>),
    Paused(Rc<dyn Producer>),
}

/// A flush of stdin is queued with `call_soon` (or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlushQueued {
    No,
    Yes,
}

/// Stdin: its state, its bounded write buffer, and flow control.
pub(crate) struct Stdin {
    pub(crate) state: RefCell<StdinState>,
    pub(crate) buf: RefCell<WriteBuffer>,
    pub(crate) room: Cell<PipeRoom>,
    pub(crate) high_water: Cell<usize>,
    pub(crate) low_water: Cell<usize>,
    pub(crate) producer: RefCell<ProducerState>,
    pub(crate) flush: Cell<FlushQueued>,
}

impl Stdin {
    pub(crate) fn closed() -> Stdin {
        Stdin {
            state: RefCell::new(StdinState::Closed),
            buf: RefCell::new(WriteBuffer::default()),
            room: Cell::new(PipeRoom::Room),
            high_water: Cell::new(DEFAULT_HIGH_WATER),
            low_water: Cell::new(DEFAULT_LOW_WATER),
            producer: RefCell::new(ProducerState::None),
            flush: Cell::new(FlushQueued::No),
        }
    }

    /// Whether writes are still taken.
    pub(crate) fn is_open(&self) -> bool {
        matches!(*self.state.borrow(), StdinState::Open(_))
    }

    /// Whether the pipe is closed.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(*self.state.borrow(), StdinState::Closed)
    }
}

/// Our reading side of stdout or stderr.
pub(crate) enum OutputState {
    /// Read and delivered.
    Reading(Registered<Receiver>),
    /// `pause_reading`: not read until resumed.
    Paused(Registered<Receiver>),
    /// Closed (EOF, error, `close_child_fd`), or never piped.
    Closed,
}

/// Stdout or stderr.
pub(crate) struct Output {
    pub(crate) fd: ChildFd,
    pub(crate) state: RefCell<OutputState>,
}

impl Output {
    pub(crate) fn closed(fd: ChildFd) -> Output {
        Output {
            fd,
            state: RefCell::new(OutputState::Closed),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(*self.state.borrow(), OutputState::Closed)
    }
}

/// A write buffer that consumes from the front without moving bytes on
/// every write (the same shape as the TCP connection's): `head` advances,
/// and the vector is compacted when the consumed part is large. Drained,
/// it keeps at most [`WRITE_BUFFER_FLOOR`] bytes of capacity.
#[derive(Default)]
pub(crate) struct WriteBuffer {
    data: Vec<u8>,
    head: usize,
}

impl WriteBuffer {
    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.head
    }
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity()
    }
    pub(crate) fn pending(&self) -> &[u8] {
        &self.data[self.head..]
    }
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
    pub(crate) fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head >= self.data.len() {
            self.data.clear();
            self.head = 0;
            if self.data.capacity() > WRITE_BUFFER_FLOOR {
                self.data.shrink_to(WRITE_BUFFER_FLOOR);
            }
        } else if self.head > 64 * 1024 && self.head * 2 > self.data.len() {
            self.data.drain(..self.head);
            self.head = 0;
        }
    }
    /// Drops everything; returns how many bytes were dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let dropped = self.len();
        self.data = Vec::new();
        self.head = 0;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_compacts_and_gives_back_memory() {
        let mut buf = WriteBuffer::default();
        buf.push(&[1; 200 * 1024]);
        buf.consume(150 * 1024);
        assert_eq!(buf.len(), 50 * 1024);
        assert_eq!(buf.pending()[0], 1);
        buf.consume(50 * 1024);
        assert_eq!(buf.len(), 0);
        assert!(buf.capacity() <= WRITE_BUFFER_FLOOR);
        buf.push(b"abc");
        assert_eq!(buf.clear(), 3);
        assert_eq!(buf.len(), 0);
    }
}
