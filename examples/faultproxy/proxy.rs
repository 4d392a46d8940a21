//! The state every connection and the control port share: the toxics in
//! force, whether the link is cut, the random source, the open relays and
//! the counters.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use gyre::reactor::Reactor;

use crate::relay::Relay;
use crate::toxic::{Direction, Toxic};

/// Most toxics in force at once.
pub const MAX_TOXICS: usize = 64;
/// Longest toxic name.
const MAX_NAME: usize = 64;

/// Whether traffic may pass at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Connections are accepted and relayed (through the toxics).
    Healed,
    /// A partition: new connections are closed at once and open ones were
    /// aborted.
    Cut,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Link::Healed => "healed",
            Link::Cut => "cut",
        })
    }
}

/// A toxic with its name and direction.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedToxic {
    /// Unique among the toxics in force: `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// The direction it acts on.
    pub direction: Direction,
    /// What it does.
    pub toxic: Toxic,
}

impl NamedToxic {
    /// Parses `NAME DIRECTION KIND [key=value...]`, as in `toxic add` and
    /// `--toxic`.
    pub fn parse(words: &[&str]) -> Result<NamedToxic, String> {
        let [name, direction, kind, params @ ..] = words else {
            return Err("expected NAME DIRECTION KIND [key=value...]".to_string());
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        if name.len() > MAX_NAME || !name.chars().all(valid) {
            return Err(format!(
                "bad toxic name {name:?} (1 to {MAX_NAME} of A-Z a-z 0-9 _ . -)"
            ));
        }
        Ok(NamedToxic {
            name: name.to_string(),
            direction: Direction::parse(direction)?,
            toxic: Toxic::parse(kind, params)?,
        })
    }
}

impl fmt::Display for NamedToxic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.direction, self.toxic)
    }
}

/// Counters for `status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and relayed.
    pub accepted: Cell<u64>,
    /// Connections closed at once (cut, reset chance, too many).
    pub refused: Cell<u64>,
    /// Connections aborted by a reset toxic or a cut.
    pub reset: Cell<u64>,
    /// Bytes written towards the upstream server.
    pub bytes_up: Cell<u64>,
    /// Bytes written back towards clients.
    pub bytes_down: Cell<u64>,
    /// Bytes dropped by blackholes and resets.
    pub discarded: Cell<u64>,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &Cell<u64>, n: u64) {
        counter.set(counter.get().saturating_add(n));
    }
}

/// The relay's settings that do not change at run time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where connections are forwarded.
    pub upstream: SocketAddr,
    /// How long connecting upstream may take.
    pub connect_timeout: Duration,
    /// Most relayed connections open at once; more are refused.
    pub max_connections: usize,
    /// The seed of the random source (printed by `status`).
    pub seed: u64,
}

/// Shared by all connections: a cheap `Rc` in each.
pub struct Proxy {
    /// The reactor, for timers and connecting upstream.
    pub reactor: Reactor,
    /// Fixed settings.
    pub settings: Settings,
    /// Counters.
    pub stats: Stats,
    /// Control connections open now.
    pub control_connections: Cell<usize>,
    toxics: RefCell<Vec<NamedToxic>>,
    link: Cell<Link>,
    rng: RefCell<fastrand::Rng>,
    relays: RefCell<HashMap<u64, Weak<RefCell<Relay>>>>,
    next_id: Cell<u64>,
}

impl Proxy {
    /// A proxy with no toxics, link healed.
    pub fn new(reactor: Reactor, settings: Settings) -> Rc<Proxy> {
        Rc::new(Proxy {
            reactor,
            stats: Stats::default(),
            control_connections: Cell::new(0),
            toxics: RefCell::new(Vec::new()),
            link: Cell::new(Link::Healed),
            rng: RefCell::new(fastrand::Rng::with_seed(settings.seed)),
            relays: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            settings,
        })
    }

    /// Adds a toxic; its name must be new.
    pub fn add_toxic(&self, toxic: NamedToxic) -> Result<(), String> {
        let mut toxics = self.toxics.borrow_mut();
        if toxics.iter().any(|t| t.name == toxic.name) {
            return Err(format!("a toxic named {} exists", toxic.name));
        }
        if toxics.len() >= MAX_TOXICS {
            return Err(format!("at most {MAX_TOXICS} toxics"));
        }
        toxics.push(toxic);
        Ok(())
    }

    /// Removes the toxic named `name`.
    pub fn remove_toxic(&self, name: &str) -> Result<NamedToxic, String> {
        let mut toxics = self.toxics.borrow_mut();
        let at = toxics
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| format!("no toxic named {name}"))?;
        Ok(toxics.remove(at))
    }

    /// Removes every toxic; returns how many there were.
    pub fn clear_toxics(&self) -> usize {
        self.toxics.borrow_mut().drain(..).count()
    }

    /// The toxics in force, in the order they apply.
    pub fn toxics(&self) -> Vec<NamedToxic> {
        self.toxics.borrow().clone()
    }

    /// Runs `f` with the toxics acting on `direction`'s stream and the
    /// random source.
    pub fn with_stream_toxics<R>(
        &self,
        direction: Direction,
        f: impl FnOnce(&[&Toxic], &mut fastrand::Rng) -> R,
    ) -> R {
        let toxics = self.toxics.borrow();
        let chosen: Vec<&Toxic> = toxics
            .iter()
            .filter(|t| t.direction == direction)
            .map(|t| &t.toxic)
            .collect();
        f(&chosen, &mut self.rng.borrow_mut())
    }

    /// Whether a new connection draws a reset from a `reset_chance` toxic.
    pub fn draw_reset(&self) -> bool {
        let toxics = self.toxics.borrow();
        let mut rng = self.rng.borrow_mut();
        toxics.iter().any(|t| match t.toxic {
            Toxic::ResetChance { probability } => rng.f64() < probability,
            _ => false,
        })
    }

    /// The shortest `timeout` toxic in force, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.toxics
            .borrow()
            .iter()
            .filter_map(|t| match t.toxic {
                Toxic::Timeout { after } => Some(after),
                _ => None,
            })
            .min()
    }

    /// Whether the link is cut.
    pub fn link(&self) -> Link {
        self.link.get()
    }

    /// Cuts the link: open relays are aborted; returns how many.
    pub fn cut(&self) -> usize {
        self.link.set(Link::Cut);
        let open: Vec<Rc<RefCell<Relay>>> = self
            .relays
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let mut aborted = 0;
        for relay in open {
            if let Ok(mut relay) = relay.try_borrow_mut() {
                relay.abort_all();
                aborted += 1;
            }
        }
        Stats::add(&self.stats.reset, aborted as u64);
        aborted
    }

    /// Heals the link.
    pub fn heal(&self) {
        self.link.set(Link::Healed);
    }

    /// Open relays.
    pub fn open_relays(&self) -> usize {
        self.relays.borrow().len()
    }

    /// Registers a new relay; returns its id.
    pub fn register(&self, relay: &Rc<RefCell<Relay>>) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.relays.borrow_mut().insert(id, Rc::downgrade(relay));
        id
    }

    /// Forgets a relay that has closed.
    pub fn forget(&self, id: u64) {
        self.relays.borrow_mut().remove(&id);
    }

    /// One line for `status`.
    pub fn status(&self) -> String {
        let s = &self.stats;
        format!(
            "link={} upstream={} connections={} accepted={} refused={} reset={} \
             bytes_up={} bytes_down={} discarded={} toxics={} seed={}",
            self.link(),
            self.settings.upstream,
            self.open_relays(),
            s.accepted.get(),
            s.refused.get(),
            s.reset.get(),
            s.bytes_up.get(),
            s.bytes_down.get(),
            s.discarded.get(),
            self.toxics.borrow().len(),
            self.settings.seed,
        )
    }
}
