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
//! # Sequence numbers: a cursor for catch-up
//!
//! Every location stored gets the store's next *sequence number*
//! ([`next_seq`](Store::next_seq) before the [`offer`](Store::offer)); a
//! client whose location is replaced gets a new, higher one. So
//! [`since(cursor)`](Store::since) lists, in sequence order, every location
//! stored or replaced at or after `cursor` that is still stored, and a
//! reader that walks it in batches, keeping as its cursor one past the last
//! number it saw, is robust to what happens between its batches:
//!
//! - a client added after the walk began gets a number above the cursor,
//!   so the walk reaches it;
//! - a client replaced after the walk passed it moves ahead of the cursor,
//!   so the walk sends its new location again (never an older one: the
//!   walk reads the store as it goes);
//! - a client evicted is skipped.
//!
//! When the walk finds nothing at or after its cursor it has seen the
//! current location of every client stored or replaced since it began.
//! This is how a link catches a neighbour up on the whole store without
//! copying it (see `links.rs`).
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

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use crate::command::{AtLine, Coordinates};

/// One client's stored location. Its AT line is one shared allocation:
/// cloning a `Location` (or [`shared_line`](Self::shared_line)) does not
/// copy it, and the store keys the client by the ID inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    at_line: Rc<[u8]>,
    time_ns: i128,
    coordinates: Coordinates,
}

impl Location {
    /// A location: its AT line (canonical form, no line end), the client's
    /// time in nanoseconds, and the parsed coordinates.
    pub fn new(at_line: impl Into<Rc<[u8]>>, time_ns: i128, coordinates: Coordinates) -> Location {
        Location {
            at_line: at_line.into(),
            time_ns,
            coordinates,
        }
    }

    /// The AT line as the shared allocation the store keeps: what a flood
    /// hands to every neighbour without copying it.
    pub fn shared_line(&self) -> Rc<[u8]> {
        Rc::clone(&self.at_line)
    }

    /// A location from a parsed AT line (stored in canonical form).
    pub fn from_at(at: &AtLine<'_>) -> Location {
        // Sized once: growing it from empty took five reallocations.
        let mut line = Vec::with_capacity(at.canonical_len());
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

/// What one stored client costs beyond its AT line, as [`Store::bytes`]
/// counts it: the line's allocation header, the `Location`, its sequence
/// number, and the three indexes' per-entry bookkeeping, their growth
/// slack included (an estimate, on the high side).
pub const ENTRY_OVERHEAD: usize = 192;

/// A client's ID as the store's indexes hold it: a range of the client's
/// stored AT line (the ID is its fourth field), so that a stored client
/// costs one allocation, shared by the location and both indexes. An ID
/// that is not in its line (a hand-made location) gets its own copy.
#[derive(Debug, Clone)]
struct ClientKey {
    bytes: Rc<[u8]>,
    start: usize,
    end: usize,
}

impl ClientKey {
    /// `client` as a range of `line` if it is the line's fourth field, else
    /// a copy.
    fn new(client: &[u8], line: &Rc<[u8]>) -> ClientKey {
        let field = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
            .nth(3);
        match field {
            Some(f) if f == client => {
                let start = f.as_ptr() as usize - line.as_ptr() as usize;
                ClientKey {
                    bytes: Rc::clone(line),
                    start,
                    end: start + f.len(),
                }
            }
            _ => ClientKey {
                bytes: Rc::from(client),
                start: 0,
                end: client.len(),
            },
        }
    }

    fn id(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Bytes this key holds beyond the line it shares (0 when it shares).
    fn own_bytes(&self, line: &Rc<[u8]>) -> usize {
        if Rc::ptr_eq(&self.bytes, line) {
            0
        } else {
            self.bytes.len()
        }
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ClientKey {}

impl Hash for ClientKey {
    // As `[u8]` hashes, so that lookups by `&[u8]` find it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl Borrow<[u8]> for ClientKey {
    fn borrow(&self) -> &[u8] {
        self.id()
    }
}

/// One stored client: its location and the sequence number it was stored
/// with.
#[derive(Debug, Clone)]
struct Entry {
    location: Location,
    seq: u64,
    /// Bytes the client's key holds beyond the location's line.
    key_bytes: usize,
}

/// Client ID (bytes) → latest [`Location`].
///
/// Bounded two ways, oldest location evicted first: by the number of
/// clients and by [`bytes`](Self::bytes), which counts each entry as its
/// AT line and [`ENTRY_OVERHEAD`] (and its client ID again in the rare case
/// the ID is not a field of its line). A stored client is one allocation:
/// its AT line, which both indexes key by the ID inside it.
#[derive(Debug, Clone)]
pub struct Store {
    by_client: HashMap<ClientKey, Entry>,
    /// Every client by (the time of its stored location, its sequence
    /// number), oldest first (for eviction when the store is full).
    by_age: BTreeSet<(i128, u64)>,
    /// Every client by sequence number (see the [module docs](self)).
    by_seq: BTreeMap<u64, ClientKey>,
    /// The sequence number of the next location stored.
    next_seq: u64,
    limit: usize,
    max_bytes: usize,
    bytes: usize,
    /// Locations evicted to stay within the limits, ever.
    evictions: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store::with_limits(usize::MAX, usize::MAX)
    }
}

/// What an entry with `location` and a key holding `key_bytes` of its own
/// counts for in [`Store::bytes`].
fn entry_cost(location: &Location, key_bytes: usize) -> usize {
    location.at_line.len() + key_bytes + ENTRY_OVERHEAD
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// An empty store that keeps at most `limit` clients (at least one).
    /// When it is full, a new client's location evicts the client whose
    /// stored location is the oldest (by client time), or, if the new one is
    /// older still, is refused like any location that is not newer.
    ///
    /// ```
    /// use gyre_herd::command::Coordinates;
    /// use gyre_herd::store::{Location, Store};
    ///
    /// let here = Coordinates { lat: 1.0, lon: 2.0 };
    /// let at = |id: &str, t: i128| Location::new(format!("AT A +0.1 {id} +1+2 {t}").into_bytes(), t, here);
    /// let mut store = Store::with_limit(2);
    /// assert!(store.offer(b"a", at("a", 1)));
    /// assert!(store.offer(b"b", at("b", 2)));
    /// assert!(store.offer(b"c", at("c", 3))); // evicts a, the oldest
    /// assert!(store.get(b"a").is_none());
    /// assert!(!store.offer(b"d", at("d", 0))); // older than everything kept
    /// assert_eq!(store.len(), 2);
    /// ```
    pub fn with_limit(limit: usize) -> Store {
        Store::with_limits(limit, usize::MAX)
    }

    /// An empty store that keeps at most `limit` clients (at least one) and
    /// at most `max_bytes` as [`bytes`](Self::bytes) counts them; past
    /// either, the oldest locations are evicted as in
    /// [`with_limit`](Self::with_limit).
    ///
    /// ```
    /// use gyre_herd::command::Coordinates;
    /// use gyre_herd::store::{Location, Store, ENTRY_OVERHEAD};
    ///
    /// let here = Coordinates { lat: 1.0, lon: 2.0 };
    /// let at = |id: &str, t: i128| Location::new(format!("AT A +0.1 {id} +1+2 {t}").into_bytes(), t, here);
    /// // Room for about two small entries.
    /// let mut store = Store::with_limits(1000, 2 * (ENTRY_OVERHEAD + 40));
    /// assert!(store.offer(b"a", at("a", 1)));
    /// assert!(store.offer(b"b", at("b", 2)));
    /// assert!(store.offer(b"c", at("c", 3))); // evicts a, the oldest
    /// assert!(store.get(b"a").is_none());
    /// assert!(store.bytes() <= 2 * (ENTRY_OVERHEAD + 40));
    /// ```
    pub fn with_limits(limit: usize, max_bytes: usize) -> Store {
        Store {
            by_client: HashMap::new(),
            by_age: BTreeSet::new(),
            by_seq: BTreeMap::new(),
            next_seq: 0,
            limit: limit.max(1),
            max_bytes,
            bytes: 0,
            evictions: 0,
        }
    }

    /// Stores `location` for `client` if it is newer than what is stored
    /// (see the [module docs](self)); returns whether it was stored. A
    /// stored location gets the sequence number [`next_seq`](Self::next_seq)
    /// had before the call.
    pub fn offer(&mut self, client: &[u8], location: Location) -> bool {
        let seq = self.next_seq;
        match self.by_client.get(client) {
            Some(old) if location.is_newer_than(&old.location) => {
                let old_cost = entry_cost(&old.location, old.key_bytes);
                let old_seq = old.seq;
                let old_time = old.location.time_ns;
                // The key moves into the new line (the old one is freed).
                let key = ClientKey::new(client, &location.at_line);
                let key_bytes = key.own_bytes(&location.at_line);
                let cost = entry_cost(&location, key_bytes);
                self.by_age.remove(&(old_time, old_seq));
                self.by_age.insert((location.time_ns, seq));
                self.by_seq.remove(&old_seq);
                self.by_seq.insert(seq, key.clone());
                self.by_client.remove(client);
                self.by_client.insert(
                    key,
                    Entry {
                        location,
                        seq,
                        key_bytes,
                    },
                );
                self.next_seq += 1;
                self.bytes = self.bytes - old_cost + cost;
                self.evict_until_within(seq);
                true
            }
            Some(_) => false,
            None => {
                let key = ClientKey::new(client, &location.at_line);
                let key_bytes = key.own_bytes(&location.at_line);
                let cost = entry_cost(&location, key_bytes);
                let full = self.by_client.len() >= self.limit
                    || self.bytes.saturating_add(cost) > self.max_bytes;
                if full {
                    match self.by_age.first() {
                        Some((oldest, _)) if location.time_ns < *oldest => return false,
                        _ => {}
                    }
                }
                self.by_age.insert((location.time_ns, seq));
                self.by_seq.insert(seq, key.clone());
                self.by_client.insert(
                    key,
                    Entry {
                        location,
                        seq,
                        key_bytes,
                    },
                );
                self.next_seq += 1;
                self.bytes += cost;
                self.evict_until_within(seq);
                true
            }
        }
    }

    /// Evicts the oldest locations (never the one stored as `keep`) until
    /// the store is within both limits.
    fn evict_until_within(&mut self, keep: u64) {
        while self.by_client.len() > self.limit || self.bytes > self.max_bytes {
            let oldest = match self.by_age.iter().find(|(_, seq)| *seq != keep) {
                Some(entry) => *entry,
                None => return,
            };
            self.by_age.remove(&oldest);
            let Some(client) = self.by_seq.remove(&oldest.1) else {
                continue;
            };
            if let Some(entry) = self.by_client.remove(client.id()) {
                self.bytes -= entry_cost(&entry.location, entry.key_bytes);
                self.evictions += 1;
            }
        }
    }

    /// How many locations were evicted to stay within the limits.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The store's size as its byte limit counts it: for each client, its
    /// AT line and [`ENTRY_OVERHEAD`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The stored location of `client`.
    pub fn get(&self, client: &[u8]) -> Option<&Location> {
        self.by_client.get(client).map(|e| &e.location)
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
        self.by_client.iter().map(|(k, e)| (k.id(), &e.location))
    }

    /// The sequence number the next stored location will get: every
    /// location stored now has a smaller one (see the [module docs](self)).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// How many locations [`since(from)`](Self::since) lists.
    pub fn count_since(&self, from: u64) -> usize {
        self.by_seq.range(from..).count()
    }

    /// Every location stored (or replaced) with a sequence number of at
    /// least `from` and still stored, in sequence order, with its number:
    /// `(seq, client, location)`. A walk that resumes each time from one
    /// past the last number it saw misses no location stored meanwhile (see
    /// the [module docs](self)).
    ///
    /// ```
    /// use gyre_herd::command::Coordinates;
    /// use gyre_herd::store::{Location, Store};
    ///
    /// let here = Coordinates { lat: 1.0, lon: 2.0 };
    /// let at = |id: &str, t: i128| Location::new(format!("AT A +0.1 {id} +1+2 {t}").into_bytes(), t, here);
    /// let mut store = Store::new();
    /// store.offer(b"a", at("a", 1));
    /// store.offer(b"b", at("b", 1));
    /// // A walk sends "a", then stops for a while.
    /// let (seq, client, _) = store.since(0).next().unwrap();
    /// assert_eq!(client, b"a");
    /// let cursor = seq + 1;
    /// // Meanwhile "a" moves and "c" arrives: both come after "b".
    /// store.offer(b"a", at("a", 2));
    /// store.offer(b"c", at("c", 1));
    /// let rest: Vec<&[u8]> = store.since(cursor).map(|(_, c, _)| c).collect();
    /// assert_eq!(rest, [&b"b"[..], b"a", b"c"]);
    /// ```
    pub fn since(&self, from: u64) -> impl Iterator<Item = (u64, &[u8], &Location)> {
        self.by_seq.range(from..).filter_map(|(seq, client)| {
            let entry = self.by_client.get(client.id())?;
            Some((*seq, client.id(), &entry.location))
        })
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
    fn a_full_store_evicts_the_oldest_location() {
        let mut s = Store::with_limit(3);
        assert!(s.offer(b"a", loc("AT A +1.0 a +1+2 10", 10)));
        assert!(s.offer(b"b", loc("AT A +1.0 b +1+2 20", 20)));
        assert!(s.offer(b"c", loc("AT A +1.0 c +1+2 30", 30)));
        // An update of a kept client moves it, and never evicts.
        assert!(s.offer(b"a", loc("AT A +1.0 a +1+2 40", 40)));
        assert_eq!(s.len(), 3);
        // A new client evicts the oldest location: now b's.
        assert!(s.offer(b"d", loc("AT A +1.0 d +1+2 25", 25)));
        assert!(s.get(b"b").is_none());
        assert_eq!(s.len(), 3);
        // A new client older than everything kept is refused (not stored,
        // so not forwarded).
        assert!(!s.offer(b"e", loc("AT A +1.0 e +1+2 5", 5)));
        assert!(s.get(b"e").is_none());
        let mut kept: Vec<&[u8]> = s.iter().map(|(k, _)| k).collect();
        kept.sort();
        assert_eq!(kept, [&b"a"[..], b"c", b"d"]);
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

    /// The byte count follows every change exactly: it is always the sum of
    /// the entries' costs, through stores, replacements and evictions, and
    /// never passes the limit.
    #[test]
    fn bytes_are_counted_exactly_and_bounded() {
        let max = 10 * (ENTRY_OVERHEAD + 60);
        let mut s = Store::with_limits(usize::MAX, max);
        for i in 0..500i128 {
            let id = format!("client-{}", i % 37);
            let pad = "p".repeat((i % 11) as usize);
            let line = format!("AT A +0.1 {id} +1+2 {i}{pad}");
            s.offer(id.as_bytes(), loc(&line, i));
            // Every ID here is a field of its line: no key bytes of its own.
            let sum: usize = s.iter().map(|(_, l)| entry_cost(l, 0)).sum();
            assert_eq!(s.bytes(), sum, "after offer {i}");
            assert!(s.bytes() <= max, "after offer {i}: {} > {max}", s.bytes());
        }
        assert!(s.len() > 1);
    }

    /// A flood of new clients keeps the newest, evicting the oldest, and a
    /// location older than everything kept is refused when full.
    #[test]
    fn byte_bound_evicts_oldest_first() {
        let cost = |_id: &str, line: &str| line.len() + ENTRY_OVERHEAD;
        let line = |id: &str, t: i128| format!("AT A +0.1 {id} +1+2 {t}");
        let one = cost("c0", &line("c0", 0));
        let mut s = Store::with_limits(usize::MAX, 3 * one);
        for t in 0..10 {
            let id = format!("c{t}");
            assert!(s.offer(id.as_bytes(), loc(&line(&id, t), t)));
        }
        assert_eq!(s.len(), 3);
        for kept in ["c7", "c8", "c9"] {
            assert!(s.get(kept.as_bytes()).is_some(), "{kept}");
        }
        assert!(!s.offer(b"c1", loc(&line("c1", 1), 1)));
    }

    /// A walk over `since(cursor)` in small batches, with stores, updates
    /// and evictions between the batches, ends having sent every client's
    /// current location, and never sends a client an older location than
    /// one it sent before.
    #[test]
    fn a_cursor_walk_misses_nothing_stored_meanwhile() {
        let mut s = Store::with_limit(40);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let offer = |s: &mut Store, next: &mut dyn FnMut() -> u64, t: i128| {
            let id = format!("c{}", next() % 60);
            let line = format!("AT A +0.1 {id} +1+2 {t}");
            s.offer(id.as_bytes(), loc(&line, t));
        };
        for t in 0..30 {
            offer(&mut s, &mut next, t);
        }
        let mut sent: HashMap<Vec<u8>, (i128, Vec<u8>)> = HashMap::new();
        let mut cursor = 0;
        let mut t = 30;
        loop {
            let batch: Vec<(u64, Vec<u8>, Location)> = s
                .since(cursor)
                .take(3)
                .map(|(seq, c, l)| (seq, c.to_vec(), l.clone()))
                .collect();
            if batch.is_empty() {
                break;
            }
            for (seq, client, location) in batch {
                if let Some((old_time, _)) = sent.get(&client) {
                    assert!(location.time_ns() >= *old_time, "older copy sent");
                }
                sent.insert(client, (location.time_ns(), location.at_line().to_vec()));
                cursor = seq + 1;
            }
            // Between batches: a few new, updated (newer) or evicting offers,
            // fewer as time goes on so that the walk ends.
            if t < 400 {
                for _ in 0..2 {
                    offer(&mut s, &mut next, t);
                    t += 1;
                }
            }
        }
        assert!(s.evictions() > 0);
        assert_eq!(s.len(), 40);
        for (client, location) in s.iter() {
            assert_eq!(
                sent.get(client).map(|(_, l)| l.as_slice()),
                Some(location.at_line()),
                "{}",
                String::from_utf8_lossy(client)
            );
        }
    }

    /// A stored client is one allocation: the key both indexes hold is the
    /// ID inside the stored line. An ID that is not in its line is copied,
    /// and counted.
    #[test]
    fn a_client_is_one_allocation_shared_by_the_indexes() {
        let mut s = Store::new();
        let line = "AT A +0.1 kiwi +1+2 5";
        assert!(s.offer(b"kiwi", loc(line, 5)));
        let key = s.by_client.keys().next().unwrap().clone();
        let stored = s.get(b"kiwi").unwrap().shared_line();
        assert!(Rc::ptr_eq(&key.bytes, &stored), "the key is in the line");
        assert_eq!(key.id(), b"kiwi");
        assert!(Rc::ptr_eq(
            &s.by_seq.values().next().unwrap().bytes,
            &stored
        ));
        assert_eq!(s.bytes(), line.len() + ENTRY_OVERHEAD);
        // A replacement moves the key into the new line.
        assert!(s.offer(b"kiwi", loc("AT B +0.2 kiwi +1+2 6", 6)));
        let stored = s.get(b"kiwi").unwrap().shared_line();
        assert!(Rc::ptr_eq(
            &s.by_client.keys().next().unwrap().bytes,
            &stored
        ));
        assert_eq!(s.len(), 1);
        // A hand-made location whose line lacks the ID: a copy, counted.
        let mut t = Store::new();
        assert!(t.offer(b"other", loc("AT A +0.1 kiwi +1+2 5", 5)));
        assert_eq!(t.bytes(), line.len() + 5 + ENTRY_OVERHEAD);
        assert!(t.get(b"other").is_some());
    }

    #[test]
    fn sequence_numbers_follow_every_store() {
        let mut s = Store::new();
        assert_eq!(s.next_seq(), 0);
        assert!(s.offer(b"a", loc("AT A +1.0 a +1+2 1", 1)));
        assert!(!s.offer(b"a", loc("AT A +1.0 a +1+2 0", 0)));
        assert_eq!(s.next_seq(), 1);
        assert!(s.offer(b"b", loc("AT A +1.0 b +1+2 1", 1)));
        assert!(s.offer(b"a", loc("AT A +1.0 a +1+2 2", 2)));
        let order: Vec<(u64, &[u8])> = s.since(0).map(|(n, c, _)| (n, c)).collect();
        assert_eq!(order, [(1, &b"b"[..]), (2, b"a")]);
        assert_eq!(s.since(3).count(), 0);
        assert_eq!(s.count_since(2), 1);
    }
}
