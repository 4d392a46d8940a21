//! The seeded schedules the suite runs under, and the runner that reports
//! a failing (transport, behaviour, perturbation, seed).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use gyre::reactor::testing::Perturbation;

use crate::kinds::TransportKind;

/// How many seeds each perturbation runs with by default.
pub const DEFAULT_SEEDS: u64 = 20;

/// The longest sleep before a poll: short, so the whole suite stays fast,
/// long enough for a connect completion, data and FIN to coalesce.
pub const MAX_SLEEP: Duration = Duration::from_micros(300);

/// One of the four perturbations of `gyre_reactor::testing::Perturbation`,
/// each run on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perturb {
    /// Every read cut to a random 1..=N bytes (N from the seed: 256, 4096 or
    /// 16384, so that small cuts are common without making MiB transfers
    /// take minutes).
    ShortReads,
    /// A random 0..=300 µs sleep before every poll.
    SleepBeforePoll,
    /// The events of each poll dispatched in a random order.
    ShuffleEvents,
    /// Every write offered a random prefix of the buffer.
    PartialWrites,
}

impl Perturb {
    /// The name used in test names.
    pub fn name(self) -> &'static str {
        match self {
            Perturb::ShortReads => "short_reads",
            Perturb::SleepBeforePoll => "sleep_before_poll",
            Perturb::ShuffleEvents => "shuffle_events",
            Perturb::PartialWrites => "partial_writes",
        }
    }
}

/// A perturbation and a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Which perturbation.
    pub perturb: Perturb,
    /// The seed every random choice derives from.
    pub seed: u64,
}

impl Schedule {
    /// The reactor (or pump) setting for random stream `stream` of this
    /// schedule (each side of a socket pair has its own stream, so the two
    /// reactors do not replay the same choices).
    pub fn perturbation(self, stream: u64) -> Perturbation {
        let seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(stream);
        let p = Perturbation::new(seed);
        match self.perturb {
            Perturb::ShortReads => p.short_reads([256, 4096, 16384][(self.seed % 3) as usize]),
            Perturb::SleepBeforePoll => p.sleep_before_poll(MAX_SLEEP),
            Perturb::ShuffleEvents => p.shuffle_events(),
            Perturb::PartialWrites => p.partial_writes(),
        }
    }
}

/// The seeds to run: `GYRE_SCHEDULE_SEED=S` runs only seed S (to rerun a
/// failure); otherwise `GYRE_SCHEDULE_SEEDS=N` (default 20) runs seeds
/// 0..N.
pub fn seeds() -> Vec<u64> {
    if let Some(seed) = env_u64("GYRE_SCHEDULE_SEED") {
        return vec![seed];
    }
    (0..env_u64("GYRE_SCHEDULE_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a number"),
    }
}

/// A behaviour: run it once on `kind` under `schedule` (`None`: the plain
/// loop).
pub type Behaviour = fn(&dyn TransportKind, Option<Schedule>);

/// Runs `behaviour` on `kind` without perturbation.
pub fn run_plain(kind: &dyn TransportKind, name: &str, behaviour: Behaviour) {
    init_logging();
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| behaviour(kind, None))) {
        eprintln!(
            "\nconformance failure: transport={} behaviour={name} schedule=plain\n  \
             rerun: cargo test --test conformance -- --exact {}::{name}\n",
            kind.name(),
            kind.name()
        );
        std::panic::resume_unwind(payload);
    }
}

/// How many threads run one test's seeds side by side. Much of a perturbed
/// run is waiting (sleeps before polls, a peer taking its turn), so two
/// workers per test roughly halve the suite's wall time on two cores.
const SEED_WORKERS: usize = 2;

/// Runs `behaviour` on `kind` under `perturb` with every seed of [`seeds`],
/// spread over [`SEED_WORKERS`] threads (each seed builds its own reactors
/// on its own thread); the lowest failing seed fails the test, naming
/// everything needed to rerun just it.
pub fn run_seeded(
    kind: &(dyn TransportKind + Sync),
    name: &str,
    perturb: Perturb,
    behaviour: Behaviour,
) {
    init_logging();
    let seeds = seeds();
    let failures = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..SEED_WORKERS)
            .map(|worker| {
                let mine: Vec<u64> = seeds
                    .iter()
                    .copied()
                    .skip(worker)
                    .step_by(SEED_WORKERS)
                    .collect();
                scope.spawn(move || {
                    for seed in mine {
                        let schedule = Schedule { perturb, seed };
                        if let Err(payload) =
                            catch_unwind(AssertUnwindSafe(|| behaviour(kind, Some(schedule))))
                        {
                            return Some((seed, payload));
                        }
                    }
                    None
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| match w.join() {
                Ok(failure) => failure,
                Err(payload) => Some((u64::MAX, payload)),
            })
            .collect::<Vec<_>>()
    });
    if let Some((seed, payload)) = failures.into_iter().min_by_key(|(seed, _)| *seed) {
        let schedule = Schedule { perturb, seed };
        eprintln!(
            "\nconformance failure: transport={} behaviour={name} perturbation={} seed={seed} \
             ({:?})\n  rerun: GYRE_SCHEDULE_SEED={seed} cargo test --test conformance -- \
             --exact --include-ignored {}::{}::{name}\n",
            kind.name(),
            perturb.name(),
            schedule.perturbation(0),
            kind.name(),
            perturb.name(),
        );
        std::panic::resume_unwind(payload);
    }
}

fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}
