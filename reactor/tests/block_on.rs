//! `Reactor::block_on`: the loop runs until the future completes, and its
//! output (a value, or an error) comes back as a plain value.

mod common;

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{closed_port, reactor};
use gyre_reactor::defer::{sleep, Failure};
use gyre_reactor::{Protocol, ReactorError};

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _: &[u8]) {}
}

#[test]
fn block_on_returns_the_value() {
    let reactor = reactor();
    let r = reactor.clone();
    let value = reactor
        .block_on(async move {
            // Thread-pool work and a timer, both through the loop.
            let n = r.defer_to_thread(|| 6 * 7).await?;
            sleep(r.clock(), Duration::from_millis(1)).await?;
            Ok::<_, Failure>(n)
        })
        .expect("not re-entered");
    assert_eq!(value.expect("the future's value"), 42);
}

#[test]
fn block_on_returns_the_error() {
    let reactor = reactor();
    let r = reactor.clone();
    let addr = closed_port();
    let outcome = reactor
        .block_on(async move {
            let transport = r.connect_protocol(addr, Quiet).await?;
            Ok::<_, Failure>(transport)
        })
        .expect("not re-entered");
    let failure = outcome.expect_err("nothing listens there");
    let error = failure.downcast_ref::<io::Error>().expect("an io::Error");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
}

#[test]
fn block_on_from_inside_the_loop_is_refused() {
    let reactor = reactor();
    let seen: Rc<RefCell<Option<Result<u8, ReactorError>>>> = Rc::default();
    let (r, s) = (reactor.clone(), seen.clone());
    reactor.call_soon(move || {
        *s.borrow_mut() = Some(r.block_on(async { 1u8 }));
    });
    let s = seen.clone();
    let clock = reactor.clock().clone();
    let value = reactor
        .block_on(async move {
            // Yield to the loop until the call_soon has run.
            while s.borrow().is_none() {
                sleep(&clock, Duration::ZERO).await?;
            }
            Ok::<_, Failure>(())
        })
        .expect("the outer block_on runs");
    assert!(value.is_ok());
    assert_eq!(*seen.borrow(), Some(Err(ReactorError::Reentrant)));
}
