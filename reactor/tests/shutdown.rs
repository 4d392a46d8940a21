//! Shutdown is bounded by `shutdown_timeout`, whatever user code does.

use std::sync::mpsc;
use std::time::Duration;

use gyre_reactor::Reactor;

/// Done-when 7 of issue 9: a thread-pool job that never returns (it waits
/// on a channel the test only releases afterwards) does not hold shutdown
/// past `shutdown_timeout`: `run` returns, the job's thread is detached, and
/// its result is dropped. The bound below is a hang guard, not a timing
/// measurement: without the fix `run` never returns at all.
#[test]
fn stuck_pool_job_does_not_block_shutdown() {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .expect("reactor");
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let stuck = reactor.defer_to_thread(move || {
        let _ = started_tx.send(());
        // Blocks until the test releases it, long after shutdown.
        let _ = release_rx.recv();
        "finished late"
    });
    let r = reactor.clone();
    reactor.call_when_running(move |_| {
        // Stop only once the job is really running on a pool thread.
        let _ = started_rx.recv_timeout(Duration::from_secs(30));
        r.stop().expect("stop");
    });

    let (done_tx, done_rx) = mpsc::channel::<()>();
    // `run` on this thread; a watchdog thread turns a hang into a failure
    // of the whole test binary instead of a CI run that never ends.
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            eprintln!("stuck_pool_job_does_not_block_shutdown: run() hung in shutdown");
            std::process::exit(1);
        }
    });
    reactor.run().expect("run");
    let _ = done_tx.send(());
    watchdog.join().expect("watchdog");
    assert!(
        !stuck.called(),
        "the stuck job's Deferred never fires: its result is dropped"
    );
    // Let the detached thread finish; it must not touch the dropped reactor.
    let _ = release_tx.send(());
    drop(reactor);
}

/// A job that finishes in time is joined, not detached: its Deferred fires
/// before shutdown completes.
#[test]
fn finished_pool_job_is_joined_at_shutdown() {
    let reactor = Reactor::builder()
        .install_signal_handlers(false)
        .shutdown_timeout(Duration::from_secs(30))
        .build()
        .expect("reactor");
    let d = reactor.defer_to_thread(|| 6 * 7);
    let r = reactor.clone();
    let probe = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = probe.clone();
    drop(d.add_callback(move |v| {
        seen.set(Some(v));
        let _ = r.stop();
        Ok(())
    }));
    reactor.run().expect("run");
    assert_eq!(probe.get(), Some(42));
}
