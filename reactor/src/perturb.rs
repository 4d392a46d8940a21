//! Seeded schedule perturbation: hostile but reproducible schedules for
//! tests, in the spirit of Twisted's ReactorBuilder running one suite
//! against every reactor.
//!
//! A [`Perturbation`] given to [`ReactorBuilder::perturb`](crate::ReactorBuilder::perturb)
//! makes the loop behave as a slow, unlucky machine would, without changing
//! what a correct program observes:
//!
//! - **short reads**: every `read` of a socket asks for a random 1..=N bytes,
//!   as if the kernel had only that much queued;
//! - **sleep before poll**: the loop sleeps a random time before each poll,
//!   so a connect completion, data, FIN and RST arrive coalesced in one
//!   readiness event;
//! - **shuffled events**: the events of one poll are dispatched in a random
//!   order;
//! - **partial writes**: every `write` to a socket offers a random
//!   1..=len prefix of what is buffered, as if the kernel took only that.
//!
//! Every choice comes from one seeded generator, so a failing schedule is
//! reproduced by running again with the seed the failure printed (the
//! conformance suite prints it). Perturbation is meant for tests; it costs
//! nothing when not configured.
//!
//! ```
//! use gyre_reactor::{testing::Perturbation, Reactor};
//! use std::time::Duration;
//!
//! let schedule = Perturbation::new(7)
//!     .short_reads(3)
//!     .sleep_before_poll(Duration::from_micros(200))
//!     .shuffle_events()
//!     .partial_writes();
//! let reactor = Reactor::builder()
//!     .install_signal_handlers(false)
//!     .perturb(schedule)
//!     .build()?;
//! # drop(reactor);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::time::Duration;

/// A seeded schedule perturbation, given to
/// [`ReactorBuilder::perturb`](crate::ReactorBuilder::perturb): short reads,
/// a sleep before each poll (so a connect completion, data, FIN and RST
/// coalesce into one event), shuffled events and partial writes, every
/// choice drawn from one seeded generator so a failing schedule is
/// reproduced from its seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Perturbation {
    seed: u64,
    max_read: Option<usize>,
    max_sleep: Option<Duration>,
    shuffle: bool,
    partial_writes: bool,
}

impl fmt::Debug for Perturbation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Perturbation(seed={}", self.seed)?;
        if let Some(n) = self.max_read {
            write!(f, ", short_reads={n}")?;
        }
        if let Some(d) = self.max_sleep {
            write!(f, ", sleep_before_poll={d:?}")?;
        }
        if self.shuffle {
            f.write_str(", shuffle_events")?;
        }
        if self.partial_writes {
            f.write_str(", partial_writes")?;
        }
        f.write_str(")")
    }
}

impl Perturbation {
    /// A perturbation with seed `seed` that perturbs nothing yet; add the
    /// kinds wanted with the other methods.
    ///
    /// ```
    /// use gyre_reactor::testing::Perturbation;
    ///
    /// assert_eq!(Perturbation::new(3).seed(), 3);
    /// ```
    pub fn new(seed: u64) -> Perturbation {
        Perturbation {
            seed,
            max_read: None,
            max_sleep: None,
            shuffle: false,
            partial_writes: false,
        }
    }

    /// The seed every random choice derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Cuts every socket read to a random 1..=`max` bytes (`max` at least 1).
    pub fn short_reads(mut self, max: usize) -> Perturbation {
        self.max_read = Some(max.max(1));
        self
    }

    /// Sleeps a random 0..=`max` before each poll, so that readiness of
    /// several kinds (connect, data, EOF, reset) coalesces into one event.
    pub fn sleep_before_poll(mut self, max: Duration) -> Perturbation {
        self.max_sleep = Some(max);
        self
    }

    /// Dispatches the events of each poll in a random order.
    pub fn shuffle_events(mut self) -> Perturbation {
        self.shuffle = true;
        self
    }

    /// Offers every socket write a random 1..=len prefix of the buffer.
    pub fn partial_writes(mut self) -> Perturbation {
        self.partial_writes = true;
        self
    }
}

/// The reactor's side of a perturbation: the settings and the generator.
pub(crate) struct Perturber {
    settings: Perturbation,
    rng: RefCell<fastrand::Rng>,
}

impl Perturber {
    pub(crate) fn new(settings: Perturbation) -> Perturber {
        let rng = RefCell::new(fastrand::Rng::with_seed(settings.seed));
        Perturber { settings, rng }
    }

    /// How many bytes the next read asks for, out of a buffer of `len`.
    pub(crate) fn read_len(&self, len: usize) -> usize {
        match self.settings.max_read {
            Some(max) if len > 1 => self.rng.borrow_mut().usize(1..=max.min(len)),
            _ => len,
        }
    }

    /// How many bytes the next write offers, out of `len` buffered.
    pub(crate) fn write_len(&self, len: usize) -> usize {
        if self.settings.partial_writes && len > 1 {
            self.rng.borrow_mut().usize(1..=len)
        } else {
            len
        }
    }

    /// Sleeps before a poll, if configured.
    pub(crate) fn before_poll(&self) {
        if let Some(max) = self.settings.max_sleep {
            let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
            let pause = self.rng.borrow_mut().u64(0..=nanos);
            std::thread::sleep(Duration::from_nanos(pause));
        }
    }

    /// Shuffles one poll's events, if configured.
    pub(crate) fn order<T>(&self, events: &mut [T]) {
        if self.settings.shuffle {
            self.rng.borrow_mut().shuffle(events);
        }
    }

    /// The in-memory pump's counterpart of sleeping before a poll: whether
    /// to hold one direction back for one step (a coin toss, if
    /// `sleep_before_poll` is configured), so that data, EOF and close pile
    /// up and arrive together.
    pub(crate) fn hold_back(&self) -> bool {
        self.settings.max_sleep.is_some() && self.rng.borrow_mut().bool()
    }
}
