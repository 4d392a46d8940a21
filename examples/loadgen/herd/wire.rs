//! IAMAT lines and the checks of their AT answers.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS: i128 = 1_000_000_000;

/// Nanoseconds since the UNIX epoch, now.
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A word that differs from run to run (so client IDs are new each run):
/// the start time and the process ID, in hex.
pub fn run_nonce() -> String {
    let t = now_ns() as u128;
    format!("{:x}{:x}", (t / 1_000) & 0xff_ffff_ffff, std::process::id())
}

/// Appends a time in nanoseconds as HERD.md's `<time>` field:
/// `seconds.nnnnnnnnn` (9 fractional digits, no sign).
pub fn write_time(ns: i128, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let ns = ns.max(0);
    let _ = write!(out, "{}.{:09}", ns / NANOS, ns % NANOS);
}

/// Client times that only go forward: the wall clock, or 1 ns after the
/// last time given when the clock has not moved (or went back).
#[derive(Debug, Default)]
pub struct ClientClock {
    last: i128,
}

impl ClientClock {
    pub fn next(&mut self) -> i128 {
        self.last = now_ns().max(self.last + 1);
        self.last
    }
}

/// The IAMATs of one connection slot: its client IDs and their locations,
/// and the times. An IAMAT is remembered as (client index, time) and its
/// fields are written again to check the answer, so nothing is allocated
/// per IAMAT.
pub struct IamatMaker {
    clients: Vec<Vec<u8>>,
    locations: Vec<Vec<u8>>,
    next: usize,
    clock: ClientClock,
}

/// One IAMAT sent: which client, which time.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub client: u32,
    pub time_ns: i128,
}

impl IamatMaker {
    /// `count` clients for connection slot `slot` of run `nonce`.
    pub fn new(nonce: &str, slot: usize, count: usize) -> IamatMaker {
        let clients = (0..count)
            .map(|k| format!("lg-{nonce}-{slot}-{k}").into_bytes())
            .collect();
        let locations = (0..count)
            .map(|k| {
                let lat = 34.0 + (k % 1000) as f64 * 0.001;
                let lon = -118.0 - (slot % 100) as f64 * 0.01;
                format!("{lat:+.6}{lon:+.6}").into_bytes()
            })
            .collect();
        IamatMaker {
            clients,
            locations,
            next: 0,
            clock: ClientClock::default(),
        }
    }

    /// The client ID of client `k`.
    pub fn client(&self, k: u32) -> &[u8] {
        &self.clients[k as usize % self.clients.len()]
    }

    /// Appends the next IAMAT line (with `\n`) to `out`.
    pub fn write_next(&mut self, out: &mut Vec<u8>) -> Sent {
        let sent = Sent {
            client: self.next as u32,
            time_ns: self.clock.next(),
        };
        self.next = (self.next + 1) % self.clients.len();
        out.extend_from_slice(b"IAMAT ");
        self.write_fields(sent, out);
        out.push(b'\n');
        sent
    }

    /// Appends the IAMAT's three fields, `client location time` (what its
    /// AT answer must end with).
    pub fn write_fields(&self, sent: Sent, out: &mut Vec<u8>) {
        let k = sent.client as usize % self.clients.len();
        out.extend_from_slice(&self.clients[k]);
        out.push(b' ');
        out.extend_from_slice(&self.locations[k]);
        out.push(b' ');
        write_time(sent.time_ns, out);
    }
}

/// What is wrong with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadAnswer {
    /// `? ...`: the server refused the IAMAT (a rate limit, say).
    Refused,
    /// Not `AT server diff fields`.
    NotAt,
    /// The fields after the diff are not the IAMAT's.
    WrongFields,
    /// Another server's name than the one asked.
    WrongServer,
    /// The diff is not `[+-]DIGITS.DDDDDDDDD`.
    BadDiff,
}

impl BadAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            BadAnswer::Refused => "refused (`? ` answer)",
            BadAnswer::NotAt => "not an AT line",
            BadAnswer::WrongFields => "AT line with other fields than the IAMAT's",
            BadAnswer::WrongServer => "AT line from another server",
            BadAnswer::BadDiff => "AT line whose time difference is not [+-]N.NNNNNNNNN",
        }
    }
}

/// Whether `diff` is `[+-]DIGITS.DDDDDDDDD` (HERD.md: always signed,
/// exactly 9 fractional digits).
fn is_diff(diff: &[u8]) -> bool {
    let Some((&sign, rest)) = diff.split_first() else {
        return false;
    };
    let Some(dot) = rest.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (int, frac) = (&rest[..dot], &rest[dot + 1..]);
    (sign == b'+' || sign == b'-')
        && !int.is_empty()
        && int.iter().all(u8::is_ascii_digit)
        && frac.len() == 9
        && frac.iter().all(u8::is_ascii_digit)
}

/// Checks that `line` (without its `\n`) is the AT line answering an IAMAT
/// with `fields` (`client location time`): `AT <server> <diff> <fields>`,
/// single spaces, from `server` when given. Returns the server's name.
pub fn check_at<'a>(
    line: &'a [u8],
    server: Option<&[u8]>,
    fields: &[u8],
) -> Result<&'a [u8], BadAnswer> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"? ") {
        return Err(BadAnswer::Refused);
    }
    let rest = line.strip_prefix(b"AT ").ok_or(BadAnswer::NotAt)?;
    let head = rest
        .strip_suffix(fields)
        .and_then(|h| h.strip_suffix(b" "))
        .ok_or(BadAnswer::WrongFields)?;
    let mut parts = head.split(|&b| b == b' ');
    let (Some(name), Some(diff), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BadAnswer::NotAt);
    };
    if name.is_empty() {
        return Err(BadAnswer::NotAt);
    }
    if server.is_some_and(|s| s != name) {
        return Err(BadAnswer::WrongServer);
    }
    if !is_diff(diff) {
        return Err(BadAnswer::BadDiff);
    }
    Ok(name)
}

/// A tally of wrong answers: how many, how many were refusals, and the
/// first few, for the report.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub refused: u64,
    samples: Vec<String>,
}

impl Errors {
    /// Counts one wrong answer `line` (shown in the first few samples).
    pub fn add(&mut self, why: &str, line: &[u8]) {
        self.count += 1;
        if self.samples.len() < 5 {
            let shown: String = String::from_utf8_lossy(&line[..line.len().min(200)]).into();
            self.samples.push(format!("{why}: {shown:?}"));
        }
    }

    /// Counts a bad answer to an IAMAT.
    pub fn bad(&mut self, bad: BadAnswer, line: &[u8]) {
        if bad == BadAnswer::Refused {
            self.refused += 1;
        }
        self.add(bad.as_str(), line);
    }

    /// Prints the samples on stderr.
    pub fn print_samples(&self) {
        for s in &self.samples {
            eprintln!("loadgen: wrong answer: {s}");
        }
        if self.count > self.samples.len() as u64 {
            eprintln!("loadgen: ... {} wrong answers in all", self.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked() {
        let f = b"kiwi +34.068930-118.445127 1621464827.959498503";
        let ok = b"AT Alford +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";
        assert_eq!(check_at(ok, Some(b"Alford"), f), Ok(&b"Alford"[..]));
        assert_eq!(check_at(ok, Some(b"Ball"), f), Err(BadAnswer::WrongServer));
        let bad_diff = b"AT Alford +0.26387338 kiwi +34.068930-118.445127 1621464827.959498503";
        assert_eq!(check_at(bad_diff, None, f), Err(BadAnswer::BadDiff));
        let q = b"? IAMAT kiwi +34.068930-118.445127 1621464827.959498503";
        assert_eq!(check_at(q, None, f), Err(BadAnswer::Refused));
        assert_eq!(
            check_at(b"AT Alford +0.1", None, f),
            Err(BadAnswer::WrongFields)
        );
    }

    #[test]
    fn times_have_nine_digits_and_go_forward() {
        let mut out = Vec::new();
        write_time(1_621_464_827_000_000_503, &mut out);
        assert_eq!(out, b"1621464827.000000503");
        let mut clock = ClientClock::default();
        let a = clock.next();
        assert!(clock.next() > a);
    }
}
