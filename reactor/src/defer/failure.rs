//! [`Failure`]: the error half of a Deferred's result.

use std::error::Error;
use std::fmt;
use std::panic::Location;

/// The error a [`Deferred`](super::Deferred) fails with: any
/// `std::error::Error + 'static`, plus where it came from.
///
/// A `Failure` records the location where the failing Deferred was created
/// and where it was fired (filled in by the Deferred, through
/// `#[track_caller]`), and the chain of errors it went through: when an
/// errback replaces one error with another through [`Failure::wrap`], the
/// older errors are kept in [`Failure::history`], so the original cause is
/// never lost the way Twisted's "Unhandled error in Deferred" loses it.
///
/// ```
/// use gyre_reactor::defer::Failure;
/// use std::io;
///
/// let f = Failure::new(io::Error::new(io::ErrorKind::Other, "disk on fire"));
/// assert!(f.is::<io::Error>());
/// let f = f.wrap(io::Error::new(io::ErrorKind::Other, "could not save"));
/// assert_eq!(f.to_string(), "could not save");
/// assert_eq!(f.history().count(), 1);
/// ```
pub struct Failure {
    inner: Box<Inner>,
}

struct Inner {
    error: Box<dyn Error + 'static>,
    history: Vec<Box<dyn Error + 'static>>,
    created_at: Option<&'static Location<'static>>,
    fired_at: Option<&'static Location<'static>>,
}

impl Failure {
    /// Wraps an error.
    ///
    /// ```
    /// use gyre_reactor::defer::Failure;
    ///
    /// let f = Failure::new(std::fmt::Error);
    /// assert!(f.is::<std::fmt::Error>());
    /// ```
    pub fn new<E: Error + 'static>(error: E) -> Failure {
        Failure::from_boxed(Box::new(error))
    }

    /// Wraps an already boxed error.
    pub fn from_boxed(error: Box<dyn Error + 'static>) -> Failure {
        Failure {
            inner: Box::new(Inner {
                error,
                history: Vec::new(),
                created_at: None,
                fired_at: None,
            }),
        }
    }

    /// A failure carrying only a message (for errors with no type of their own).
    ///
    /// ```
    /// use gyre_reactor::defer::Failure;
    ///
    /// assert_eq!(Failure::msg("out of cheese").to_string(), "out of cheese");
    /// ```
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure::new(Message(message.into()))
    }

    /// Replaces the error with `error`, keeping the old one in [`history`](Self::history)
    /// and the recorded locations.
    pub fn wrap<E: Error + 'static>(mut self, error: E) -> Failure {
        let old = std::mem::replace(&mut self.inner.error, Box::new(error));
        self.inner.history.push(old);
        self
    }

    /// The current error.
    pub fn error(&self) -> &(dyn Error + 'static) {
        &*self.inner.error
    }

    /// Whether the current error is an `E`.
    pub fn is<E: Error + 'static>(&self) -> bool {
        self.inner.error.is::<E>()
    }

    /// The current error as an `E`, if it is one.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.inner.error.downcast_ref::<E>()
    }

    /// Takes the current error out as an `E`, or gives the failure back.
    ///
    /// ```
    /// use gyre_reactor::defer::Failure;
    /// use std::io;
    ///
    /// let f = Failure::new(io::Error::from(io::ErrorKind::TimedOut));
    /// let e: io::Error = f.downcast().unwrap();
    /// assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    /// ```
    pub fn downcast<E: Error + 'static>(self) -> Result<E, Failure> {
        if self.is::<E>() {
            let Failure { inner } = self;
            let Inner { error, .. } = *inner;
            match error.downcast::<E>() {
                Ok(e) => Ok(*e),
                // Unreachable after the `is` check, but never panic.
                Err(error) => Err(Failure::from_boxed(error)),
            }
        } else {
            Err(self)
        }
    }

    /// The errors this failure carried before, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &(dyn Error + 'static)> {
        self.inner.history.iter().map(|e| &**e)
    }

    /// Where the Deferred that failed was created, when known.
    ///
    /// ```
    /// use gyre_reactor::defer::{Deferred, Failure};
    ///
    /// let (r, d) = Deferred::<()>::new();
    /// r.errback(Failure::msg("x")).unwrap();
    /// let f = d.take_result().unwrap().unwrap_err();
    /// assert_eq!(f.created_at().unwrap().file(), file!());
    /// assert!(f.fired_at().is_some());
    /// ```
    pub fn created_at(&self) -> Option<&'static Location<'static>> {
        self.inner.created_at
    }

    /// Where the Deferred that failed was fired, when known.
    pub fn fired_at(&self) -> Option<&'static Location<'static>> {
        self.inner.fired_at
    }

    /// Records the locations if they are not known yet (the first Deferred
    /// a failure passes through is the one that tells where it came from).
    pub(crate) fn note_locations(
        &mut self,
        created: &'static Location<'static>,
        fired: Option<&'static Location<'static>>,
    ) {
        if self.inner.created_at.is_none() {
            self.inner.created_at = Some(created);
        }
        if self.inner.fired_at.is_none() {
            self.inner.fired_at = fired;
        }
    }

    /// A one-line description with the error, its causes and both locations,
    /// as written to the log for an unhandled failure.
    ///
    /// ```
    /// use gyre_reactor::defer::{fail, Failure};
    ///
    /// let f = fail::<()>(Failure::msg("boom")).take_result().unwrap().unwrap_err();
    /// assert!(f.describe().starts_with("boom; Deferred created at"));
    /// ```
    pub fn describe(&self) -> String {
        let mut text = self.inner.error.to_string();
        let mut source = self.inner.error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        for old in self.inner.history.iter().rev() {
            text.push_str(" (after: ");
            text.push_str(&old.to_string());
            text.push(')');
        }
        match self.inner.created_at {
            Some(at) => text.push_str(&format!("; Deferred created at {at}")),
            None => text.push_str("; Deferred created at an unknown place"),
        }
        match self.inner.fired_at {
            Some(at) => text.push_str(&format!(", fired at {at}")),
            None => text.push_str(", fired at an unknown place"),
        }
        text
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.error, f)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("error", &self.inner.error)
            .field("history", &self.inner.history)
            .field("created_at", &self.inner.created_at)
            .field("fired_at", &self.inner.fired_at)
            .finish()
    }
}

impl<E: Error + 'static> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::new(error)
    }
}

/// A plain-text error, for [`Failure::msg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

/// The Deferred was cancelled (Twisted's `CancelledError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operation was cancelled")
    }
}

impl Error for Cancelled {}

/// The Deferred did not fire in time ([`Deferred::add_timeout`](super::Deferred::add_timeout)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub std::time::Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.0)
    }
}

impl Error for TimedOut {}

/// A Deferred was fired a second time (Twisted's `AlreadyCalledError`),
/// through its [`Resolver`](super::Resolver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyCalled {
    /// Where it was created.
    pub created_at: &'static Location<'static>,
    /// Where it was first fired, when known.
    pub first_fired_at: Option<&'static Location<'static>>,
}

impl fmt::Display for AlreadyCalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Deferred created at {} was already fired",
            self.created_at
        )?;
        if let Some(at) = self.first_fired_at {
            write!(f, " (at {at})")?;
        }
        Ok(())
    }
}

impl Error for AlreadyCalled {}

/// A code path caught a panic and turned it into a failure (a thread job, a callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

impl Panicked {
    /// Builds one from a `catch_unwind` payload.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Panicked {
        Panicked(panic_message(payload))
    }
}

/// The message of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

impl Error for Panicked {}
