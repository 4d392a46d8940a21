//! Toxics and the per-direction pipeline that applies them.
//!
//! A [`Pipe`] is one direction of one relayed connection. Each chunk read
//! from the source becomes one or more [`Item`]s with a release time; the
//! toxics in force, applied in the order they were added, split, delay,
//! discard or cut those items; the pipe keeps them in release order (a
//! later chunk is never released before an earlier one) until the relay
//! writes them to the sink. The pipe does no I/O itself: the relay asks it
//! what is due and acts on the answer, so all of this is plain data.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Which way bytes flow, in Toxiproxy's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream server.
    Upstream,
    /// From the upstream server back to the client.
    Downstream,
}

impl Direction {
    /// Parses `upstream` or `downstream`.
    pub fn parse(word: &str) -> Result<Direction, String> {
        match word {
            "upstream" | "up" => Ok(Direction::Upstream),
            "downstream" | "down" => Ok(Direction::Downstream),
            other => Err(format!(
                "unknown direction {other:?} (upstream or downstream)"
            )),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        })
    }
}

/// One fault to inject, with its parameters.
///
/// Stream toxics (latency, bandwidth, slicer, reset after, blackhole) act
/// on every chunk from the moment they are added, on open connections too.
/// Connection toxics (reset chance, timeout) are consulted once, when a
/// connection opens, whichever direction they were added to.
#[derive(Debug, Clone, PartialEq)]
pub enum Toxic {
    /// Each chunk is delayed by `latency` ± up to `jitter` (uniformly);
    /// order is preserved.
    Latency { latency: Duration, jitter: Duration },
    /// At most `rate` bytes per second pass.
    Bandwidth { rate: u64 },
    /// Chunks are cut into segments of `size` ± up to `variation` bytes,
    /// each released `delay` after the previous one.
    Slicer {
        size: usize,
        variation: usize,
        delay: Duration,
    },
    /// After `bytes` bytes have passed in this direction, both sides of the
    /// connection are aborted.
    ResetAfter { bytes: u64 },
    /// Each new connection is aborted at once with this probability.
    ResetChance { probability: f64 },
    /// Data is accepted and discarded; the connection stays open.
    Blackhole,
    /// The connection is closed cleanly this long after it opens.
    Timeout { after: Duration },
}

/// Most bytes one slicer segment may have.
const MAX_SEGMENT: usize = 1 << 20;
/// The memory an item takes besides its bytes (the `Item`, the `Vec`'s
/// header and allocation), as counted against the queue's limit.
pub const ITEM_COST: usize = 64;
/// Longest delay any toxic may add (an hour): keeps `Instant` sums finite.
const MAX_DELAY: Duration = Duration::from_secs(3600);

impl Toxic {
    /// Builds a toxic from its kind and `key=value` parameters, rejecting
    /// unknown keys, missing required ones and out-of-range values.
    pub fn parse(kind: &str, params: &[&str]) -> Result<Toxic, String> {
        let mut p = Params::parse(params)?;
        let toxic = match kind {
            "latency" => Toxic::Latency {
                latency: p.millis("ms", None)?,
                jitter: p.millis("jitter", Some(0))?,
            },
            "bandwidth" => Toxic::Bandwidth {
                rate: p.number("rate", None, 1, u64::MAX)?,
            },
            "slicer" => {
                let size = p.number("size", None, 1, MAX_SEGMENT as u64)? as usize;
                let variation = p.number("variation", Some(0), 0, MAX_SEGMENT as u64)? as usize;
                if variation >= size {
                    return Err(format!(
                        "slicer variation ({variation}) must be below size ({size})"
                    ));
                }
                let delay_us = p.number("delay_us", Some(0), 0, MAX_DELAY.as_micros() as u64)?;
                Toxic::Slicer {
                    size,
                    variation,
                    delay: Duration::from_micros(delay_us),
                }
            }
            "reset_after" => Toxic::ResetAfter {
                bytes: p.number("bytes", None, 0, u64::MAX)?,
            },
            "reset_chance" => Toxic::ResetChance {
                probability: p.probability("p")?,
            },
            "blackhole" => Toxic::Blackhole,
            "timeout" => Toxic::Timeout {
                after: p.millis("ms", None)?,
            },
            other => {
                return Err(format!(
                    "unknown toxic kind {other:?} (latency, bandwidth, slicer, \
                     reset_after, reset_chance, blackhole, timeout)"
                ))
            }
        };
        p.finish()?;
        Ok(toxic)
    }
}

impl fmt::Display for Toxic {
    /// The kind and parameters, in the syntax [`Toxic::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Toxic::Latency { latency, jitter } => write!(
                f,
                "latency ms={} jitter={}",
                latency.as_millis(),
                jitter.as_millis()
            ),
            Toxic::Bandwidth { rate } => write!(f, "bandwidth rate={rate}"),
            Toxic::Slicer {
                size,
                variation,
                delay,
            } => write!(
                f,
                "slicer size={size} variation={variation} delay_us={}",
                delay.as_micros()
            ),
            Toxic::ResetAfter { bytes } => write!(f, "reset_after bytes={bytes}"),
            Toxic::ResetChance { probability } => write!(f, "reset_chance p={probability}"),
            Toxic::Blackhole => f.write_str("blackhole"),
            Toxic::Timeout { after } => write!(f, "timeout ms={}", after.as_millis()),
        }
    }
}

/// `key=value` parameters; each must be used exactly once.
struct Params<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn parse(words: &[&'a str]) -> Result<Params<'a>, String> {
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(words.len());
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("parameter {word:?} is not key=value"))?;
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(format!("parameter {key:?} given twice"));
            }
            pairs.push((key, value));
        }
        Ok(Params { pairs })
    }

    /// Removes and returns `key`'s value, if given.
    fn take(&mut self, key: &str) -> Option<&'a str> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// A decimal integer in `min..=max`; `default` when absent, or an
    /// error when absent and there is no default.
    fn number(
        &mut self,
        key: &str,
        default: Option<u64>,
        min: u64,
        max: u64,
    ) -> Result<u64, String> {
        let value = match (self.take(key), default) {
            (Some(text), _) => text
                .parse::<u64>()
                .map_err(|_| format!("{key}={text:?} is not a whole number"))?,
            (None, Some(d)) => d,
            (None, None) => return Err(format!("missing parameter {key}=")),
        };
        if !(min..=max).contains(&value) {
            return Err(format!("{key}={value} is out of range {min}..={max}"));
        }
        Ok(value)
    }

    /// Milliseconds, at most [`MAX_DELAY`].
    fn millis(&mut self, key: &str, default: Option<u64>) -> Result<Duration, String> {
        let ms = self.number(key, default, 0, MAX_DELAY.as_millis() as u64)?;
        Ok(Duration::from_millis(ms))
    }

    /// A probability in `0..=1` (required).
    fn probability(&mut self, key: &str) -> Result<f64, String> {
        let text = self
            .take(key)
            .ok_or_else(|| format!("missing parameter {key}="))?;
        match text.parse::<f64>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
            _ => Err(format!("{key}={text:?} is not a probability in 0..=1")),
        }
    }

    /// Rejects parameters nobody asked for.
    fn finish(self) -> Result<(), String> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => Err(format!("unknown parameter {key:?}")),
        }
    }
}

/// What to do when an item comes due.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the sink.
    Data(Vec<u8>),
    /// The source sent EOF: shut the sink's write side after what came before.
    HalfClose,
    /// A reset toxic fired: abort both sides.
    Reset,
}

/// An action and when it is due.
#[derive(Debug)]
pub struct Item {
    /// Not before this instant.
    pub at: Instant,
    /// What to do.
    pub action: Action,
}

/// Whether the pipe still takes input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Chunks are accepted.
    Open,
    /// The source sent EOF; nothing more will come.
    Ended,
    /// A reset is queued; whatever arrives is dropped.
    Doomed,
}

/// One direction's toxic state and queue of items not yet released.
pub struct Pipe {
    queue: VecDeque<Item>,
    queued_cost: usize,
    /// No item may be released before this (order preservation).
    last_release: Option<Instant>,
    /// The bandwidth toxic's link is busy until then.
    busy_until: Option<Instant>,
    /// Bytes that arrived from the source.
    bytes_in: u64,
    input: Input,
}

/// A fresh pipe: empty, open.
impl Default for Pipe {
    fn default() -> Pipe {
        Pipe {
            queue: VecDeque::new(),
            queued_cost: 0,
            last_release: None,
            busy_until: None,
            bytes_in: 0,
            input: Input::Open,
        }
    }
}

impl Pipe {
    /// What the queue holds: its bytes plus [`ITEM_COST`] per item, so
    /// that many tiny slices count for the memory they take.
    pub fn queued_cost(&self) -> usize {
        self.queued_cost
    }

    /// When the first item comes due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|item| item.at)
    }

    /// Takes the next item due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Item> {
        if self.queue.front()?.at > now {
            return None;
        }
        let item = self.queue.pop_front()?;
        if let Action::Data(bytes) = &item.action {
            self.queued_cost -= bytes.len() + ITEM_COST;
        }
        Some(item)
    }

    /// Drops everything queued (the sink is gone).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued_cost = 0;
        self.input = Input::Doomed;
    }

    /// A chunk arrived at `now`: runs it through `toxics` and queues the
    /// result. Returns the bytes discarded (by a blackhole or a reset).
    pub fn push(
        &mut self,
        now: Instant,
        data: &[u8],
        toxics: &[&Toxic],
        rng: &mut fastrand::Rng,
    ) -> usize {
        if self.input != Input::Open || data.is_empty() {
            return data.len();
        }
        let offset = self.bytes_in;
        self.bytes_in = self.bytes_in.saturating_add(data.len() as u64);
        let mut items = vec![Item {
            at: now,
            action: Action::Data(data.to_vec()),
        }];
        let mut discarded = 0;
        for toxic in toxics {
            items = match toxic {
                Toxic::Latency { latency, jitter } => {
                    let delay = jittered(*latency, *jitter, rng);
                    for item in &mut items {
                        item.at += delay;
                    }
                    items
                }
                Toxic::Bandwidth { rate } => self.throttle(items, *rate),
                Toxic::Slicer {
                    size,
                    variation,
                    delay,
                } => slice(items, *size, *variation, *delay, rng),
                Toxic::ResetAfter { bytes } => {
                    let (kept, dropped) = cut_after(items, offset, *bytes);
                    discarded += dropped;
                    kept
                }
                Toxic::Blackhole => {
                    discarded += items.iter().map(data_len).sum::<usize>();
                    items.retain(|item| !matches!(item.action, Action::Data(_)));
                    items
                }
                Toxic::ResetChance { .. } | Toxic::Timeout { .. } => items,
            };
        }
        for item in items {
            self.enqueue(item);
        }
        discarded
    }

    /// The source sent EOF: the sink is half-closed after what is queued.
    pub fn push_eof(&mut self, now: Instant) {
        if self.input == Input::Open {
            self.input = Input::Ended;
            self.enqueue(Item {
                at: now,
                action: Action::HalfClose,
            });
        }
    }

    /// Queues an item no earlier than the last one.
    fn enqueue(&mut self, mut item: Item) {
        if let Some(last) = self.last_release {
            item.at = item.at.max(last);
        }
        self.last_release = Some(item.at);
        match &item.action {
            Action::Data(bytes) => self.queued_cost += bytes.len() + ITEM_COST,
            Action::Reset => self.input = Input::Doomed,
            Action::HalfClose => {}
        }
        self.queue.push_back(item);
    }

    /// Bandwidth: pieces of about 1/20 s of traffic, each released when the
    /// link would have finished sending it.
    fn throttle(&mut self, items: Vec<Item>, rate: u64) -> Vec<Item> {
        let piece = usize::try_from((rate / 20).max(1)).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Action::Data(bytes) = item.action else {
                out.push(item);
                continue;
            };
            for part in bytes.chunks(piece) {
                let start = self.busy_until.map_or(item.at, |busy| busy.max(item.at));
                let nanos = (part.len() as u128 * 1_000_000_000) / u128::from(rate);
                let took =
                    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).min(MAX_DELAY);
                let done = start + took;
                self.busy_until = Some(done);
                out.push(Item {
                    at: done,
                    action: Action::Data(part.to_vec()),
                });
            }
        }
        out
    }
}

fn data_len(item: &Item) -> usize {
    match &item.action {
        Action::Data(bytes) => bytes.len(),
        _ => 0,
    }
}

/// `base` ± up to `jitter`, uniformly, never negative.
fn jittered(base: Duration, jitter: Duration, rng: &mut fastrand::Rng) -> Duration {
    let jitter_us = jitter.as_micros() as u64;
    if jitter_us == 0 {
        return base;
    }
    let offset = rng.u64(0..=2 * jitter_us);
    (base + Duration::from_micros(offset)).saturating_sub(jitter)
}

/// Slicer: splits data items into segments of `size ± variation` bytes,
/// `delay` apart.
fn slice(
    items: Vec<Item>,
    size: usize,
    variation: usize,
    delay: Duration,
    rng: &mut fastrand::Rng,
) -> Vec<Item> {
    let mut out = Vec::new();
    for item in items {
        let Action::Data(bytes) = item.action else {
            out.push(item);
            continue;
        };
        let mut at = item.at;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = rng
                .usize(size - variation..=size + variation)
                .clamp(1, rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(Item {
                at,
                action: Action::Data(head.to_vec()),
            });
            rest = tail;
            at += delay;
        }
    }
    out
}

/// Reset after: keeps the bytes up to stream offset `limit` (the items
/// start at `offset`), then a reset; returns the kept items and the count
/// of bytes dropped.
fn cut_after(items: Vec<Item>, offset: u64, limit: u64) -> (Vec<Item>, usize) {
    let mut out = Vec::with_capacity(items.len() + 1);
    let mut position = offset;
    let mut dropped = 0;
    let mut reset_at = None;
    for item in items {
        if reset_at.is_some() {
            dropped += data_len(&item);
            continue;
        }
        let Action::Data(mut bytes) = item.action else {
            out.push(item);
            continue;
        };
        let room = limit.saturating_sub(position);
        if (bytes.len() as u64) < room {
            position += bytes.len() as u64;
            out.push(Item {
                at: item.at,
                action: Action::Data(bytes),
            });
            continue;
        }
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        dropped += bytes.len() - keep;
        bytes.truncate(keep);
        position += keep as u64;
        if !bytes.is_empty() {
            out.push(Item {
                at: item.at,
                action: Action::Data(bytes),
            });
        }
        reset_at = Some(item.at);
    }
    if let Some(at) = reset_at {
        out.push(Item {
            at,
            action: Action::Reset,
        });
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    // The example's unit tests run with `cargo test --example faultproxy`.
    use super::*;

    fn drain(pipe: &mut Pipe) -> Vec<Item> {
        let far = Instant::now() + Duration::from_secs(7200);
        std::iter::from_fn(|| pipe.pop_due(far)).collect()
    }

    #[test]
    fn reset_after_keeps_exactly_the_limit() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut pipe = Pipe::default();
        let t = Toxic::ResetAfter { bytes: 5 };
        let now = Instant::now();
        pipe.push(now, b"abc", &[&t], &mut rng);
        pipe.push(now, b"defg", &[&t], &mut rng);
        pipe.push(now, b"hij", &[&t], &mut rng);
        let actions: Vec<Action> = drain(&mut pipe).into_iter().map(|i| i.action).collect();
        assert_eq!(
            actions,
            [
                Action::Data(b"abc".to_vec()),
                Action::Data(b"de".to_vec()),
                Action::Reset
            ]
        );
    }

    #[test]
    fn slicer_and_latency_keep_bytes_and_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut pipe = Pipe::default();
        let lat = Toxic::Latency {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(40),
        };
        let sl = Toxic::Slicer {
            size: 3,
            variation: 2,
            delay: Duration::from_micros(10),
        };
        let now = Instant::now();
        let mut sent = Vec::new();
        for i in 0..50u8 {
            let chunk: Vec<u8> = (0..i).collect();
            pipe.push(now, &chunk, &[&lat, &sl], &mut rng);
            sent.extend(chunk);
        }
        let items = drain(&mut pipe);
        assert!(items.windows(2).all(|w| w[0].at <= w[1].at));
        let got: Vec<u8> = items
            .into_iter()
            .flat_map(|i| match i.action {
                Action::Data(b) => b,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(got, sent);
    }

    #[test]
    fn bandwidth_spreads_bytes_over_time() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut pipe = Pipe::default();
        let bw = Toxic::Bandwidth { rate: 1000 };
        let now = Instant::now();
        pipe.push(now, &[0; 2000], &[&bw], &mut rng);
        let last = drain(&mut pipe).last().map(|i| i.at);
        assert_eq!(last, Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn parse_rejects_bad_parameters() {
        assert!(Toxic::parse("latency", &["ms=10", "jitter=2"]).is_ok());
        assert!(Toxic::parse("latency", &[]).is_err());
        assert!(Toxic::parse("latency", &["ms=-1"]).is_err());
        assert!(Toxic::parse("latency", &["ms=1", "ms=2"]).is_err());
        assert!(Toxic::parse("latency", &["ms=1", "bogus=2"]).is_err());
        assert!(Toxic::parse("bandwidth", &["rate=0"]).is_err());
        assert!(Toxic::parse("slicer", &["size=4", "variation=4"]).is_err());
        assert!(Toxic::parse("reset_chance", &["p=NaN"]).is_err());
        assert!(Toxic::parse("reset_chance", &["p=1.5"]).is_err());
        assert!(Toxic::parse("teleport", &[]).is_err());
        let t = Toxic::parse("slicer", &["size=4", "variation=1", "delay_us=5"]);
        assert_eq!(
            t.map(|t| t.to_string()).as_deref(),
            Ok("slicer size=4 variation=1 delay_us=5")
        );
    }
}
