//! The transport conformance suite: one set of behaviours that every
//! transport passes, run again under seeded hostile schedules (issue 9), as
//! Twisted's ReactorBuilder runs one suite against every reactor.
//!
//! # Layout
//!
//! - `conformance/kinds.rs`: the [`TransportKind`](kinds::TransportKind)
//!   trait (connect a client and a server protocol, drive the pair until a
//!   condition holds, with a generous bound) and its implementations: TCP
//!   and TLS on 127.0.0.1 port 0 and Unix-domain sockets on a socket file
//!   in the temporary directory (two reactors on the test's thread, one per
//!   side, taking turns), and the in-memory pump. What a transport does
//!   differently is stated in its [`Quirks`](kinds::Quirks), never by
//!   skipping a behaviour.
//! - `conformance/behaviours.rs`: each behaviour, written once against the
//!   trait.
//! - `conformance/peer.rs`: the recording protocol the behaviours use.
//! - `conformance/schedule.rs`: the four perturbations, the seeds and the
//!   runner that names a failing (transport, behaviour, perturbation, seed).
//!
//! Test names are `KIND::BEHAVIOUR` (the plain loop) and
//! `KIND::PERTURBATION::BEHAVIOUR` (short_reads, sleep_before_poll,
//! shuffle_events, partial_writes), each running seeds 0..20.
//!
//! # Adding a transport
//!
//! Implement `TransportKind` in `kinds.rs`, then add one line
//! `conformance_suite!(NAME = kinds::Kind);` below: it generates every
//! behaviour for the plain loop and for each perturbation (the
//! `every_behaviour_is_listed` test checks the one list against
//! `behaviours::ALL`).
//!
//! # Seeds
//!
//! - `GYRE_SCHEDULE_SEEDS=N cargo test --test conformance` runs N seeds per
//!   perturbation (default 20), for a longer search.
//! - A failure prints the transport, behaviour, perturbation and seed, and
//!   the command that reruns just it:
//!   `GYRE_SCHEDULE_SEED=S cargo test --test conformance -- --exact --include-ignored KIND::PERTURBATION::BEHAVIOUR`.
//!
//! # Ignored tests
//!
//! None: every kind passes every behaviour under every schedule. Should a
//! transport added later fail one because of a known bug, give it a
//! hand-written test module with `#[ignore = "fails until ...: see issue
//! N"]` on that (kind, schedule, behaviour) only, never a weakened
//! behaviour. The bugs this suite found when it was
//! written (a greeting or a FIN coalesced with the connect completion never
//! read, reading after `lose_connection` over TCP and TLS, `abort_connection`
//! closing with FIN instead of RST, a TCP reset reported by TLS as a
//! truncation) are fixed, each caught here under every perturbation.

#[path = "conformance/behaviours.rs"]
mod behaviours;
#[path = "conformance/kinds.rs"]
mod kinds;
#[path = "conformance/peer.rs"]
mod peer;
#[path = "conformance/schedule.rs"]
mod schedule;

/// Calls `$then!{ [$args] behaviour, ... }` with every behaviour, in the
/// order of `behaviours::ALL`: the one list every kind and schedule uses.
macro_rules! with_every_behaviour {
    ($then:ident [$($args:tt)*]) => {
        $then! { [$($args)*]
            write_ordering,
            write_sequence,
            half_close_by_client,
            half_close_by_server,
            lose_connection_flushes,
            reading_stops_at_lose,
            abort_drops_buffered,
            pause_and_resume,
            producer_water_marks,
            lost_once_after_lose,
            lost_once_after_abort,
            lost_once_after_peer_close,
            lost_once_after_half_closes,
            server_speaks_first,
            server_closes_at_once,
            peer_resets,
            peer_resets_with_unread_input,
        }
    };
}

/// One `#[test]` per behaviour on the plain loop, and the list's names.
macro_rules! plain_tests {
    ([$kind:expr] $($b:ident),* $(,)?) => {
        /// The behaviours generated for this kind, for `every_behaviour_is_listed`.
        pub const LISTED: &[&str] = &[$(stringify!($b)),*];
        $(
            #[test]
            fn $b() {
                schedule::run_plain(&$kind, stringify!($b), behaviours::$b);
            }
        )*
    };
}

/// One `#[test]` per behaviour under one perturbation, each over the seeds.
macro_rules! seeded_tests {
    ([$kind:expr, $variant:ident] $($b:ident),* $(,)?) => {
        $(
            #[test]
            fn $b() {
                schedule::run_seeded(
                    &$kind,
                    stringify!($b),
                    schedule::Perturb::$variant,
                    behaviours::$b,
                );
            }
        )*
    };
}

/// Generates, for one kind, `KIND::BEHAVIOUR` tests on the plain loop and
/// `KIND::PERTURBATION::BEHAVIOUR` tests under each perturbation.
macro_rules! conformance_suite {
    ($kind_mod:ident = $kind:expr) => {
        mod $kind_mod {
            #[allow(unused_imports)]
            use super::*;
            with_every_behaviour!(plain_tests[$kind]);
            conformance_suite!(@perturbed $kind;
                short_reads ShortReads,
                sleep_before_poll SleepBeforePoll,
                shuffle_events ShuffleEvents,
                partial_writes PartialWrites);
        }
    };
    (@perturbed $kind:expr; $($perturb:ident $variant:ident),*) => {
        $(
            mod $perturb {
                #[allow(unused_imports)]
                use super::*;
                with_every_behaviour!(seeded_tests[$kind, $variant]);
            }
        )*
    };
}

conformance_suite!(tcp = kinds::Tcp);
conformance_suite!(tls = kinds::Tls);
conformance_suite!(pump = kinds::Pump);
conformance_suite!(unix = kinds::Unix);

#[test]
fn every_behaviour_is_listed() {
    for (kind, lists) in [
        ("tcp", tcp::LISTED),
        ("tls", tls::LISTED),
        ("pump", pump::LISTED),
        ("unix", unix::LISTED),
    ] {
        assert_eq!(
            lists,
            behaviours::ALL,
            "{kind} must generate every behaviour, in order"
        );
    }
}

#[test]
fn schedules_are_reproducible() {
    use schedule::{Perturb, Schedule};
    let a = Schedule {
        perturb: Perturb::ShortReads,
        seed: 3,
    };
    assert_eq!(a.perturbation(0), a.perturbation(0));
    assert_ne!(a.perturbation(0), a.perturbation(1));
    let _ = kinds::WAIT_BOUND;
}
