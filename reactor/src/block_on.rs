//! [`Reactor::block_on`]: run the loop until one future completes
//! (Twisted's `task.react`, tokio's `Runtime::block_on`).

use std::future::Future;
use std::time::Duration;

use crate::core::{Reactor, ReactorError};
use crate::defer::{ensure_deferred, Panicked};

impl Reactor {
    /// Runs the loop until `future` completes and returns its output: the
    /// way a synchronous `main` (or a test) calls `async` code on the
    /// reactor, as Twisted's `react` does.
    ///
    /// The future runs as a task on this thread ([`Reactor::spawn`]), so it
    /// may await Deferreds, connections, timers and thread-pool work of
    /// this reactor. Only loop iterations are run: startup triggers,
    /// [`call_when_running`](Self::call_when_running) callbacks and the
    /// shutdown sequence belong to [`run`](Self::run), and `block_on` may
    /// be called again afterwards on the same reactor.
    ///
    /// `Err(`[`ReactorError::Reentrant`]`)` when called from inside one of
    /// this reactor's callbacks (the loop is already running there). A
    /// panic in the future is caught like any task's and raised again here,
    /// on the caller's stack. A future that waits for something that never
    /// happens (say, a timer on a manual clock nobody advances) blocks
    /// forever: bound it with [`defer::timeout`](crate::defer::timeout).
    ///
    /// ```
    /// use gyre_reactor::defer::{sleep, Failure};
    /// use gyre_reactor::Reactor;
    /// use std::time::Duration;
    ///
    /// let reactor = Reactor::builder().install_signal_handlers(false).build()?;
    /// let clock = reactor.clock().clone();
    /// let answer = reactor.block_on(async move {
    ///     sleep(&clock, Duration::from_millis(1)).await?;
    ///     Ok::<_, Failure>(42)
    /// })?;
    /// assert_eq!(answer.map_err(|f| f.to_string())?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn block_on<F>(&self, future: F) -> Result<F::Output, ReactorError>
    where
        F: Future + 'static,
    {
        // Cheap check first: `iterate` would refuse too, but only after the
        // task had been spawned.
        self.iterate(Some(Duration::ZERO))?;
        let done = ensure_deferred(async move { Ok(future.await) });
        while !done.called() {
            self.iterate(None)?;
        }
        match done.take_result() {
            Some(Ok(output)) => Ok(output),
            Some(Err(failure)) => match failure.downcast::<Panicked>() {
                Ok(Panicked(message)) => std::panic::resume_unwind(Box::new(message)),
                // The task is ours and never cancelled: cannot happen.
                Err(other) => std::panic::resume_unwind(Box::new(other.to_string())),
            },
            // Fired but taken: cannot happen, the Deferred is only ours.
            None => std::panic::resume_unwind(Box::new("block_on lost its result".to_string())),
        }
    }
}
