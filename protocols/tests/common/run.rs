//! Driving a real reactor in the TLS tests: a reactor without signal
//! handlers, an ephemeral loopback address, and waiting on a condition with
//! a generous bound (never reached when things work).

use std::net::SocketAddr;
use std::time::Duration;

use gyre_reactor::Reactor;

/// The upper bound of every wait.
pub const BOUND: Duration = Duration::from_secs(20);

/// A reactor for one test.
pub fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .expect("reactor")
}

/// 127.0.0.1, port 0.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs the loop until `done()`, failing the test after [`BOUND`].
#[track_caller]
pub fn wait(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    let ok = reactor.run_until(done, BOUND).expect("run_until");
    assert!(ok, "timed out after {BOUND:?} waiting for {what}");
}
