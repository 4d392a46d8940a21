//! Children the loop can no longer wait for (the reactor shut down or was
//! dropped before they exited): each is reaped by a small background
//! thread that blocks in `wait`, so it never stays a zombie.
//!
//! One thread per orphan (with a small stack), so that a child that runs
//! long never keeps another that exited from being reaped. The thread ends
//! when its child exits; a child that never exits keeps its thread until
//! the program ends (then init reaps it).

use std::process::Child;

/// The stack of a reaping thread: it only calls `wait` and logs.
const REAPER_STACK: usize = 64 * 1024;

/// Reaps `child` in the background.
pub(crate) fn adopt(mut child: Child) {
    let pid = child.id();
    let spawned = std::thread::Builder::new()
        .name(format!("gyre-reap-{pid}"))
        .stack_size(REAPER_STACK)
        .spawn(move || match child.wait() {
            Ok(status) => log::debug!("orphaned process {pid} reaped: {status}"),
            Err(e) => log::debug!("orphaned process {pid}: wait failed: {e}"),
        });
    if let Err(e) = spawned {
        log::warn!(
            "could not start a thread to reap process {pid} ({e}): it stays a zombie \
             until this program exits"
        );
    }
}
