//! What a server knows: each client's latest location, as the AT line the
//! server that received its IAMAT produced.
//!
//! A location replaces the stored one only if it is newer by the client's
//! timestamp. Equal timestamps are broken by comparing the whole AT lines
//! (in their canonical, single-spaced form) byte for byte, the greater
//! winning: every server applies the same rule to the same bytes, so the
//! herd converges on one line per client whatever order the floods arrive
//! in. A location that is not newer (an older one, or the very line already
//! stored) is refused, and a refused location is not forwarded: that is
//! what ends a flood in a cyclic graph.
//!
//! ```
//! use gyre_herd::command::Coordinates;
//! use gyre_herd::store::{Location, Store};
//!
//! let here = Coordinates { lat: 1.0, lon: 2.0 };
//! let mut store = Store::new();
//! assert!(store.offer(b"kiwi", Location::new(b"AT A +0.1 kiwi +1+2 5".to_vec(), 5_000_000_000, here)));
//! assert!(!store.offer(b"kiwi", Location::new(b"AT B +0.1 kiwi +1+2 4".to_vec(), 4_000_000_000, here)));
//! assert_eq!(store.get(b"kiwi").unwrap().at_line(), b"AT A +0.1 kiwi +1+2 5");
//! ```

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::command::{AtLine, Coordinates};

/// One client's stored location.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    at_line: Vec<u8>,
    time_ns: i128,
    coordinates: Coordinates,
}

impl Location {
    /// A location: its AT line (canonical form, no line end), the client's
    /// time in nanoseconds, and the parsed coordinates.
    pub fn new(at_line: Vec<u8>, time_ns: i128, coordinates: Coordinates) -> Location {
        Location {
            at_line,
            time_ns,
            coordinates,
        }
    }

    /// A location from a parsed AT line (stored in canonical form).
    pub fn from_at(at: &AtLine<'_>) -> Location {
        let mut line = Vec::new();
        at.write_canonical(&mut line);
        Location::new(line, at.time_ns, at.coordinates)
    }

    /// The AT line, without its line end.
    pub fn at_line(&self) -> &[u8] {
        &self.at_line
    }

    /// The client's time, in nanoseconds since the UNIX epoch.
    pub fn time_ns(&self) -> i128 {
        self.time_ns
    }

    /// Where the client is.
    pub fn coordinates(&self) -> Coordinates {
        self.coordinates
    }

    /// Whether `self` should replace `old`: a later client time, or the
    /// same time and a greater AT line.
    pub fn is_newer_than(&self, old: &Location) -> bool {
        match self.time_ns.cmp(&old.time_ns) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.at_line > old.at_line,
        }
    }
}

/// Client ID (bytes) → latest [`Location`].
#[derive(Debug, Default, Clone)]
pub struct Store {
    by_client: HashMap<Vec<u8>, Location>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Stores `location` for `client` if it is newer than what is stored
    /// (see the [module docs](self)); returns whether it was stored.
    pub fn offer(&mut self, client: &[u8], location: Location) -> bool {
        match self.by_client.get_mut(client) {
            Some(old) if location.is_newer_than(old) => {
                *old = location;
                true
            }
            Some(_) => false,
            None => {
                self.by_client.insert(client.to_vec(), location);
                true
            }
        }
    }

    /// The stored location of `client`.
    pub fn get(&self, client: &[u8]) -> Option<&Location> {
        self.by_client.get(client)
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Whether no client is known.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Every stored location, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Location)> {
        self.by_client.iter().map(|(k, v)| (k.as_slice(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{parse, Command};

    const HERE: Coordinates = Coordinates { lat: 1.0, lon: 2.0 };

    fn loc(line: &str, time_ns: i128) -> Location {
        Location::new(line.as_bytes().to_vec(), time_ns, HERE)
    }

    #[test]
    fn newer_replaces_older_is_refused() {
        let mut s = Store::new();
        assert!(s.is_empty());
        assert!(s.offer(b"k", loc("AT A +1.0 k +1+2 10", 10)));
        assert!(s.offer(b"k", loc("AT B +1.0 k +1+2 11", 11)));
        assert!(!s.offer(b"k", loc("AT C +1.0 k +1+2 9", 9)));
        assert_eq!(s.get(b"k").unwrap().at_line(), b"AT B +1.0 k +1+2 11");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn same_line_again_is_refused() {
        let mut s = Store::new();
        assert!(s.offer(b"k", loc("AT A +1.0 k +1+2 10", 10)));
        assert!(!s.offer(b"k", loc("AT A +1.0 k +1+2 10", 10)));
    }

    #[test]
    fn equal_times_converge_in_any_order() {
        let a = loc("AT Alford +0.5 k +1+2 10", 10);
        let b = loc("AT Ball +0.2 k +1+2 10", 10);
        let mut s1 = Store::new();
        let mut s2 = Store::new();
        s1.offer(b"k", a.clone());
        s1.offer(b"k", b.clone());
        s2.offer(b"k", b.clone());
        s2.offer(b"k", a.clone());
        assert_eq!(s1.get(b"k"), s2.get(b"k"));
        assert_eq!(s1.get(b"k").unwrap().at_line(), b"AT Ball +0.2 k +1+2 10");
        assert!(b.is_newer_than(&a) && !a.is_newer_than(&b));
    }

    #[test]
    fn clients_are_separate_and_bytes() {
        let mut s = Store::new();
        let raw = Location::new(b"AT A +1.0 \xff +1+2 10".to_vec(), 10, HERE);
        assert!(s.offer(b"\xff", raw));
        assert!(s.offer(b"k", loc("AT A +1.0 k +1+2 1", 1)));
        assert_eq!(s.len(), 2);
        let mut keys: Vec<&[u8]> = s.iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, [&b"k"[..], b"\xff"]);
    }

    #[test]
    fn from_at_is_canonical() {
        let Ok(Command::At(at)) = parse(b"AT  Alford\t+0.1 k +1+2  10.5 ") else {
            panic!()
        };
        let l = Location::from_at(&at);
        assert_eq!(l.at_line(), b"AT Alford +0.1 k +1+2 10.5");
        assert_eq!(l.time_ns(), 10_500_000_000);
        assert_eq!(l.coordinates(), HERE);
    }
}
