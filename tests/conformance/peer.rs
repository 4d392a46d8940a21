//! [`Peer`]: the one protocol every behaviour uses, recording what happens
//! to it in a shared [`Log`] and running the behaviour's hooks.
//!
//! Recording goes through `Rc<RefCell<Log>>`, not Deferreds: the test reads
//! the log between turns of the transport.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use gyre::reactor::{ConnectionLost, Protocol, Transport};

/// Why `connection_lost` was called, copied out of the `ConnectionLost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// `ConnectionLost::Done`.
    Done,
    /// `ConnectionLost::Aborted`.
    Aborted,
    /// `ConnectionLost::Error` of this kind (with its message, for failures).
    Error(io::ErrorKind, String),
    /// Anything else (panicked, shut down), as text.
    Other(String),
}

impl Lost {
    fn from(reason: &ConnectionLost) -> Lost {
        match reason {
            ConnectionLost::Done => Lost::Done,
            ConnectionLost::Aborted => Lost::Aborted,
            ConnectionLost::Error(e) => Lost::Error(e.kind(), e.to_string()),
            other => Lost::Other(other.to_string()),
        }
    }
}

/// Everything that happened to one side.
#[derive(Default)]
pub struct Log {
    /// The transport, once `connection_made` ran.
    pub transport: Option<Transport>,
    /// How many times `connection_made` ran.
    pub made: usize,
    /// Every byte received, in order.
    pub received: Vec<u8>,
    /// How many `data_received` calls.
    pub data_calls: usize,
    /// `data_received` calls while the test had reading paused (must stay 0).
    pub data_while_paused: usize,
    /// `data_received` calls after this side called `lose_connection`.
    pub data_after_lose: usize,
    /// Whether reading is paused (set by [`pause`], cleared by [`resume`]).
    pub paused: bool,
    /// Whether this side called `lose_connection` (through [`lose`]).
    pub lost_requested: bool,
    /// How many `eof_received` calls.
    pub eofs: usize,
    /// Every `connection_lost` reason, in order (must end up with one).
    pub lost: Vec<Lost>,
}

/// A shared log.
pub type Shared = Rc<RefCell<Log>>;

type MadeHook = Box<dyn FnMut(&Shared, &Transport)>;
type DataHook = Box<dyn FnMut(&Shared, &Transport)>;
type EofHook = Box<dyn FnMut(&Shared, &Transport) -> bool>;

/// A protocol that records into a [`Log`] and calls the behaviour's hooks
/// after recording (with no borrow of the log held).
pub struct Peer {
    log: Shared,
    on_made: Option<MadeHook>,
    on_data: Option<DataHook>,
    on_eof: Option<EofHook>,
}

impl Peer {
    /// A peer that only records; `eof_received` answers `false`.
    pub fn new() -> (Peer, Shared) {
        let log = Shared::default();
        let peer = Peer {
            log: log.clone(),
            on_made: None,
            on_data: None,
            on_eof: None,
        };
        (peer, log)
    }

    /// Runs `f` in `connection_made`.
    pub fn on_made(mut self, f: impl FnMut(&Shared, &Transport) + 'static) -> Peer {
        self.on_made = Some(Box::new(f));
        self
    }

    /// Runs `f` after each `data_received` was recorded.
    pub fn on_data(mut self, f: impl FnMut(&Shared, &Transport) + 'static) -> Peer {
        self.on_data = Some(Box::new(f));
        self
    }

    /// Answers `eof_received` with `f`.
    pub fn on_eof(mut self, f: impl FnMut(&Shared, &Transport) -> bool + 'static) -> Peer {
        self.on_eof = Some(Box::new(f));
        self
    }

    /// Boxes the peer for `TransportKind::connect`.
    pub fn boxed(self) -> Box<dyn Protocol> {
        Box::new(self)
    }
}

impl Protocol for Peer {
    fn connection_made(&mut self, transport: Transport) {
        {
            let mut log = self.log.borrow_mut();
            log.made += 1;
            log.transport = Some(transport.clone());
        }
        if let Some(f) = &mut self.on_made {
            f(&self.log, &transport);
        }
    }

    fn data_received(&mut self, data: &[u8]) {
        {
            let mut log = self.log.borrow_mut();
            log.received.extend_from_slice(data);
            log.data_calls += 1;
            if log.paused {
                log.data_while_paused += 1;
            }
            if log.lost_requested {
                log.data_after_lose += 1;
            }
        }
        if let Some(f) = &mut self.on_data {
            let t = transport(&self.log);
            f(&self.log, &t);
        }
    }

    fn eof_received(&mut self) -> bool {
        self.log.borrow_mut().eofs += 1;
        match &mut self.on_eof {
            Some(f) => {
                let t = transport(&self.log);
                f(&self.log, &t)
            }
            None => false,
        }
    }

    fn connection_lost(&mut self, reason: ConnectionLost) {
        self.log.borrow_mut().lost.push(Lost::from(&reason));
    }
}

/// The side's transport.
pub fn transport(log: &Shared) -> Transport {
    log.borrow().transport.clone().expect("connected")
}

/// Pauses reading and notes it, so late deliveries are counted.
pub fn pause(log: &Shared) {
    log.borrow_mut().paused = true;
    transport(log).pause_reading();
}

/// Resumes reading.
pub fn resume(log: &Shared) {
    log.borrow_mut().paused = false;
    transport(log).resume_reading();
}

/// Calls `lose_connection` and notes it.
pub fn lose(log: &Shared) {
    log.borrow_mut().lost_requested = true;
    transport(log).lose_connection();
}

/// `len` bytes of a pattern that changes with the position and the
/// `stream` (so that a reordered, repeated or missing chunk shows), starting
/// at offset `from`.
pub fn pattern(stream: u8, from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|i| {
            let x = i as u64;
            (x ^ (x >> 8) ^ (x >> 16) ^ u64::from(stream).wrapping_mul(0x9d)) as u8
        })
        .collect()
}

/// Asserts that `got` equals `want` byte for byte, reporting the first
/// difference rather than two MiB of bytes.
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}
