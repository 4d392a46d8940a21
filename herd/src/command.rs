//! The herd's wire commands, parsed sans-IO: [`parse`] turns one line (its
//! `\n` and the `\r` before it already removed) into a [`Command`] that
//! borrows from the line, or a [`ParseError`].
//!
//! The grammar (`herd/PROTOCOL.md` §1-4, from HERD.md's "Wire format"):
//!
//! ```text
//! line      = *ws field *( 1*ws field ) *ws       ws = SP / HT / FF / VT
//! IAMAT     = "IAMAT" client location time
//! WHATSAT   = "WHATSAT" client radius max
//! AT        = "AT" server diff client location time      (between servers)
//! PEER      = "PEER" server                              (a dialling server's first line)
//! location  = sign 1*DIGIT [ "." 1*DIGIT ] sign 1*DIGIT [ "." 1*DIGIT ]
//!             latitude in [-90, 90], longitude in [-180, 180] (ISO 6709)
//! time      = 1*DIGIT [ "." 1*9DIGIT ]                  (POSIX seconds, no sign)
//! radius    = 1*DIGIT [ "." 1*DIGIT ]                   (km, > 0 and <= 50)
//! max       = 1*DIGIT                                   (1 to 20)
//! diff      = sign 1*DIGIT [ "." 1*DIGIT ]
//! ```
//!
//! Command words are case-sensitive. Ranges are checked exactly on the
//! decimal digits (`+90.0000000000000000001` is out of range), never
//! through floating point; the `f64` values are only what the Places
//! service is asked with.
//!
//! A line that does not parse is answered with [`invalid_answer`]: `? `
//! followed by the line exactly as received.
//!
//! ```
//! use gyre_herd::command::{parse, Command};
//!
//! let Ok(Command::IAmAt(iamat)) =
//!     parse(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503")
//! else {
//!     panic!("a valid IAMAT");
//! };
//! let mut at = Vec::new();
//! // The server received it at 1621464828.223371889 (its `SystemTime`).
//! let received_ns = 1_621_464_828_223_371_889;
//! iamat.write_at_line(b"Alford", received_ns - iamat.time_ns, &mut at);
//! assert_eq!(
//!     at,
//!     b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
//! );
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bytes that separate fields: space, tab, form feed, vertical tab.
pub const WHITESPACE: &[u8] = b" \t\x0c\x0b";

/// The largest radius a WHATSAT may ask for, in kilometres.
pub const MAX_RADIUS_KM: u32 = 50;
/// The largest number of places a WHATSAT may ask for.
pub const MAX_RESULTS: u32 = 20;
/// At most this many integer digits (leading zeros not counted) in a
/// client's time: 10^20 seconds is far beyond any clock, and keeps every
/// nanosecond count well inside an `i128`.
const MAX_TIME_INT_DIGITS: usize = 20;
/// At most this many fractional digits in a client's time (nanoseconds).
const MAX_TIME_FRAC_DIGITS: usize = 9;
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Whether `b` separates fields.
pub fn is_space(b: u8) -> bool {
    WHITESPACE.contains(&b)
}

/// The fields of a line: runs of non-whitespace bytes, in order.
///
/// ```
/// use gyre_herd::command::fields;
///
/// let f: Vec<&[u8]> = fields(b" \tWHATSAT  kiwi\x0b10 5 \x0c").collect();
/// assert_eq!(f, [&b"WHATSAT"[..], b"kiwi", b"10", b"5"]);
/// ```
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| is_space(b)).filter(|f| !f.is_empty())
}

/// One parsed command, borrowing from its line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command<'a> {
    /// `IAMAT client location time`: a client reports where it is.
    IAmAt(IAmAt<'a>),
    /// `WHATSAT client radius max`: a client asks what is near a client.
    WhatsAt(WhatsAt<'a>),
    /// `AT server diff client location time`: a location flooded between
    /// servers.
    At(AtLine<'a>),
    /// `PEER name`: a neighbour that dialled us names itself.
    Peer(&'a [u8]),
}

/// A parsed ISO 6709 location.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    /// Latitude in decimal degrees, in [-90, 90].
    pub lat: f64,
    /// Longitude in decimal degrees, in [-180, 180].
    pub lon: f64,
}

/// `IAMAT client location time`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IAmAt<'a> {
    /// The client ID, as received (any non-whitespace bytes).
    pub client: &'a [u8],
    /// The location field, as received (`+34.068930-118.445127`).
    pub location: &'a [u8],
    /// The location, parsed.
    pub coordinates: Coordinates,
    /// The time field, as received (`1621464827.959498503`).
    pub time: &'a [u8],
    /// The client's time in nanoseconds since the UNIX epoch.
    pub time_ns: i128,
}

impl IAmAt<'_> {
    /// Appends the answer's AT line (no line end) to `out`:
    /// `AT server diff client location time`, with the three client fields
    /// copied byte for byte and `diff_ns` (the server's receive time minus
    /// the client's time) formatted by [`write_diff`].
    pub fn write_at_line(&self, server: &[u8], diff_ns: i128, out: &mut Vec<u8>) {
        out.reserve(
            16 + server.len() + 32 + self.client.len() + self.location.len() + self.time.len(),
        );
        out.extend_from_slice(b"AT ");
        out.extend_from_slice(server);
        out.push(b' ');
        write_diff(diff_ns, out);
        for field in [self.client, self.location, self.time] {
            out.push(b' ');
            out.extend_from_slice(field);
        }
    }
}

/// `WHATSAT client radius max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WhatsAt<'a> {
    /// The client whose location to search around.
    pub client: &'a [u8],
    /// The radius in kilometres, in (0, 50].
    pub radius_km: f64,
    /// How many places at most, 1 to 20.
    pub max_results: u32,
}

/// `AT server diff client location time`, as flooded between servers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtLine<'a> {
    /// The server that received the IAMAT.
    pub server: &'a [u8],
    /// Its time difference field, as received (`+0.263873386`).
    pub diff: &'a [u8],
    /// The client ID.
    pub client: &'a [u8],
    /// The location field, as received.
    pub location: &'a [u8],
    /// The location, parsed.
    pub coordinates: Coordinates,
    /// The client's time field, as received.
    pub time: &'a [u8],
    /// The client's time in nanoseconds since the UNIX epoch.
    pub time_ns: i128,
}

impl AtLine<'_> {
    /// The length of [`write_canonical`](Self::write_canonical)'s output.
    pub fn canonical_len(&self) -> usize {
        let fields = [
            self.server,
            self.diff,
            self.client,
            self.location,
            self.time,
        ];
        2 + fields.iter().map(|f| 1 + f.len()).sum::<usize>()
    }

    /// Appends the line in its canonical form (single spaces, no line end)
    /// to `out`. Servers store and forward this form, so that every server
    /// compares the same bytes when it breaks a tie between equal times.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"AT");
        for field in [
            self.server,
            self.diff,
            self.client,
            self.location,
            self.time,
        ] {
            out.push(b' ');
            out.extend_from_slice(field);
        }
    }
}

/// Why a line is not a valid command. Every variant is answered the same
/// way (`? ` and the line); the variant says why, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The line has no fields.
    Empty,
    /// The first field is not a command word.
    UnknownCommand,
    /// The command has the wrong number of fields.
    FieldCount,
    /// The location is not `±lat±lon` in decimal degrees.
    BadLocation,
    /// The latitude is outside [-90, 90] or the longitude outside [-180, 180].
    LocationOutOfRange,
    /// The time is not digits with an optional fraction of up to 9 digits.
    BadTime,
    /// The radius is not a plain decimal number.
    BadRadius,
    /// The radius is not greater than 0 and at most 50.
    RadiusOutOfRange,
    /// The place count is not an integer.
    BadMaxResults,
    /// The place count is not between 1 and 20.
    MaxResultsOutOfRange,
    /// An AT line's time difference is not a signed decimal number.
    BadDiff,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty line",
            ParseError::UnknownCommand => "unknown command",
            ParseError::FieldCount => "wrong number of fields",
            ParseError::BadLocation => "malformed location",
            ParseError::LocationOutOfRange => "location out of range",
            ParseError::BadTime => "malformed time",
            ParseError::BadRadius => "malformed radius",
            ParseError::RadiusOutOfRange => "radius out of range (0, 50] km",
            ParseError::BadMaxResults => "malformed place count",
            ParseError::MaxResultsOutOfRange => "place count out of range 1..=20",
            ParseError::BadDiff => "malformed time difference",
        })
    }
}

impl std::error::Error for ParseError {}

/// Parses one line (without its line end).
///
/// ```
/// use gyre_herd::command::{parse, Command, ParseError};
///
/// assert!(matches!(parse(b"WHATSAT kiwi 10.5 5"), Ok(Command::WhatsAt(w)) if w.max_results == 5));
/// assert_eq!(parse(b"WHATSAT kiwi 51 5"), Err(ParseError::RadiusOutOfRange));
/// assert_eq!(parse(b"LLL"), Err(ParseError::UnknownCommand));
/// ```
pub fn parse(line: &[u8]) -> Result<Command<'_>, ParseError> {
    // At most 7 fields matter: a longer line is a field-count error.
    let mut f: [&[u8]; 7] = [&[]; 7];
    let mut n = 0;
    for field in fields(line) {
        if n == f.len() {
            return Err(ParseError::FieldCount);
        }
        f[n] = field;
        n += 1;
    }
    if n == 0 {
        return Err(ParseError::Empty);
    }
    match f[0] {
        b"IAMAT" => {
            if n != 4 {
                return Err(ParseError::FieldCount);
            }
            let coordinates = parse_location(f[2])?;
            let time_ns = parse_time(f[3])?;
            Ok(Command::IAmAt(IAmAt {
                client: f[1],
                location: f[2],
                coordinates,
                time: f[3],
                time_ns,
            }))
        }
        b"WHATSAT" => {
            if n != 4 {
                return Err(ParseError::FieldCount);
            }
            let radius_km = parse_radius(f[2])?;
            let max_results = parse_max_results(f[3])?;
            Ok(Command::WhatsAt(WhatsAt {
                client: f[1],
                radius_km,
                max_results,
            }))
        }
        b"AT" => {
            if n != 6 {
                return Err(ParseError::FieldCount);
            }
            if !is_signed_decimal(f[2]) {
                return Err(ParseError::BadDiff);
            }
            let coordinates = parse_location(f[4])?;
            let time_ns = parse_time(f[5])?;
            Ok(Command::At(AtLine {
                server: f[1],
                diff: f[2],
                client: f[3],
                location: f[4],
                coordinates,
                time: f[5],
                time_ns,
            }))
        }
        b"PEER" => {
            if n != 2 {
                return Err(ParseError::FieldCount);
            }
            Ok(Command::Peer(f[1]))
        }
        _ => Err(ParseError::UnknownCommand),
    }
}

/// Appends the answer to an invalid line to `out`: `? `, the line exactly as
/// received (without its line end), and `\n`.
///
/// ```
/// let mut out = Vec::new();
/// gyre_herd::command::invalid_answer(b" IAMAT\tClark +12-118 ", &mut out);
/// assert_eq!(out, b"?  IAMAT\tClark +12-118 \n");
/// ```
pub fn invalid_answer(line: &[u8], out: &mut Vec<u8>) {
    out.reserve(line.len() + 3);
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Nanoseconds since the UNIX epoch (negative before it).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::new(1_621_464_827, 959_498_503);
/// assert_eq!(gyre_herd::command::unix_nanos(t), 1_621_464_827_959_498_503);
/// ```
pub fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Appends a time difference in nanoseconds as seconds, always signed, with
/// exactly 9 fractional digits (`+0.263873386`, `-1.000000000`; zero is
/// `+0.000000000`).
///
/// ```
/// let mut out = Vec::new();
/// gyre_herd::command::write_diff(-1_000_000_000, &mut out);
/// assert_eq!(out, b"-1.000000000");
/// ```
pub fn write_diff(diff_ns: i128, out: &mut Vec<u8>) {
    out.push(if diff_ns < 0 { b'-' } else { b'+' });
    let abs = diff_ns.unsigned_abs();
    let secs = abs / NANOS_PER_SEC as u128;
    let frac = abs % NANOS_PER_SEC as u128;
    out.extend_from_slice(secs.to_string().as_bytes());
    out.push(b'.');
    out.extend_from_slice(format!("{frac:09}").as_bytes());
}

/// A decimal number's parts: the digits before the point (leading zeros
/// removed) and after it.
struct Decimal<'a> {
    int: &'a [u8],
    frac: &'a [u8],
}

impl Decimal<'_> {
    /// Splits `1*DIGIT [ "." 1*DIGIT ]`; `None` if `s` is anything else.
    fn split(s: &[u8]) -> Option<Decimal<'_>> {
        let (int, frac) = match s.iter().position(|&b| b == b'.') {
            Some(dot) => {
                let frac = &s[dot + 1..];
                if frac.is_empty() {
                    return None;
                }
                (&s[..dot], frac)
            }
            None => (s, &s[s.len()..]),
        };
        if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
            return None;
        }
        let zeros = int.iter().take_while(|&&b| b == b'0').count();
        Some(Decimal {
            int: &int[zeros..],
            frac,
        })
    }

    /// Whether the number is at most `limit`, compared exactly.
    fn at_most(&self, limit: u32) -> bool {
        if self.int.len() > 10 {
            return false;
        }
        let int = self
            .int
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match int.cmp(&u64::from(limit)) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => self.frac.iter().all(|&d| d == b'0'),
            std::cmp::Ordering::Greater => false,
        }
    }

    /// Whether the number is zero.
    fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.iter().all(|&d| d == b'0')
    }
}

/// Parses an ASCII number already checked by [`Decimal::split`] (optionally
/// signed) as an `f64`.
fn to_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Whether `s` is `sign 1*DIGIT [ "." 1*DIGIT ]`.
fn is_signed_decimal(s: &[u8]) -> bool {
    matches!(s.first(), Some(b'+' | b'-')) && Decimal::split(&s[1..]).is_some()
}

/// Parses `±lat±lon` (ISO 6709 decimal degrees, each sign explicit).
fn parse_location(s: &[u8]) -> Result<Coordinates, ParseError> {
    if !matches!(s.first(), Some(b'+' | b'-')) {
        return Err(ParseError::BadLocation);
    }
    let second = s[1..]
        .iter()
        .position(|&b| b == b'+' || b == b'-')
        .map(|i| i + 1)
        .ok_or(ParseError::BadLocation)?;
    let (lat_s, lon_s) = s.split_at(second);
    let lat = Decimal::split(&lat_s[1..]).ok_or(ParseError::BadLocation)?;
    let lon = Decimal::split(&lon_s[1..]).ok_or(ParseError::BadLocation)?;
    if !lat.at_most(90) || !lon.at_most(180) {
        return Err(ParseError::LocationOutOfRange);
    }
    match (to_f64(lat_s), to_f64(lon_s)) {
        (Some(lat), Some(lon)) => Ok(Coordinates { lat, lon }),
        _ => Err(ParseError::BadLocation),
    }
}

/// Parses a client's POSIX time into nanoseconds.
fn parse_time(s: &[u8]) -> Result<i128, ParseError> {
    let d = Decimal::split(s).ok_or(ParseError::BadTime)?;
    if d.int.len() > MAX_TIME_INT_DIGITS || d.frac.len() > MAX_TIME_FRAC_DIGITS {
        return Err(ParseError::BadTime);
    }
    let digits = |ds: &[u8]| ds.iter().fold(0i128, |n, &b| n * 10 + i128::from(b - b'0'));
    let mut frac = digits(d.frac);
    for _ in d.frac.len()..MAX_TIME_FRAC_DIGITS {
        frac *= 10;
    }
    Ok(digits(d.int) * NANOS_PER_SEC + frac)
}

/// Parses a WHATSAT radius in kilometres.
fn parse_radius(s: &[u8]) -> Result<f64, ParseError> {
    let d = Decimal::split(s).ok_or(ParseError::BadRadius)?;
    if d.is_zero() || !d.at_most(MAX_RADIUS_KM) {
        return Err(ParseError::RadiusOutOfRange);
    }
    // A radius too small for an f64 (`0.` and 400 zeros, then `1`) is still
    // greater than 0: ask for the smallest one there is.
    to_f64(s)
        .map(|r| r.max(f64::MIN_POSITIVE))
        .ok_or(ParseError::BadRadius)
}

/// Parses a WHATSAT place count.
fn parse_max_results(s: &[u8]) -> Result<u32, ParseError> {
    let d = Decimal::split(s).ok_or(ParseError::BadMaxResults)?;
    if !d.frac.is_empty() || s.contains(&b'.') {
        return Err(ParseError::BadMaxResults);
    }
    if d.int.len() > 2 {
        return Err(ParseError::MaxResultsOutOfRange);
    }
    let n = d
        .int
        .iter()
        .fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'));
    if (1..=MAX_RESULTS).contains(&n) {
        Ok(n)
    } else {
        Err(ParseError::MaxResultsOutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iamat(line: &[u8]) -> IAmAt<'_> {
        match parse(line) {
            Ok(Command::IAmAt(i)) => i,
            other => panic!("not an IAMAT: {other:?}"),
        }
    }

    fn whatsat(line: &[u8]) -> WhatsAt<'_> {
        match parse(line) {
            Ok(Command::WhatsAt(w)) => w,
            other => panic!("not a WHATSAT: {other:?}"),
        }
    }

    fn diff(ns: i128) -> String {
        let mut out = Vec::new();
        write_diff(ns, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn herd_md_iamat_example() {
        let i = iamat(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
        assert_eq!(i.client, b"kiwi.cs.ucla.edu");
        assert_eq!(i.location, b"+34.068930-118.445127");
        assert_eq!(i.coordinates.lat, 34.068930);
        assert_eq!(i.coordinates.lon, -118.445127);
        assert_eq!(i.time, b"1621464827.959498503");
        assert_eq!(i.time_ns, 1_621_464_827_959_498_503);
        let received = 1_621_464_827_959_498_503 + 263_873_386;
        let mut at = Vec::new();
        i.write_at_line(b"Alford", received - i.time_ns, &mut at);
        assert_eq!(
            at,
            b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
    }

    #[test]
    fn herd_md_location_forms() {
        let c = iamat(b"IAMAT a -34.06894+119.445127 1").coordinates;
        assert_eq!((c.lat, c.lon), (-34.06894, 119.445127));
        let c = iamat(b"IAMAT a +12-118 1").coordinates;
        assert_eq!((c.lat, c.lon), (12.0, -118.0));
    }

    #[test]
    fn herd_md_invalid_examples() {
        assert_eq!(parse(b"LLL"), Err(ParseError::UnknownCommand));
        assert_eq!(parse(b"IAMAT Clark +12-118"), Err(ParseError::FieldCount));
        assert_eq!(
            parse(b"WHATSAT kiwi.cs.ucla.edu 51 5"),
            Err(ParseError::RadiusOutOfRange)
        );
        let mut out = Vec::new();
        invalid_answer(b"WHATSAT kiwi.cs.ucla.edu 51 5", &mut out);
        assert_eq!(out, b"? WHATSAT kiwi.cs.ucla.edu 51 5\n");
    }

    #[test]
    fn whitespace_set_and_trimming() {
        let i = iamat(b"\x0b\tIAMAT \x0c kiwi\t\t+1+2\x0b 5 \t");
        assert_eq!(
            (i.client, i.location, i.time),
            (&b"kiwi"[..], &b"+1+2"[..], &b"5"[..])
        );
        // `\r` and `\n` are not separators: they belong to the field.
        assert_eq!(parse(b"IAMAT kiwi +1+2 5\r"), Err(ParseError::BadTime));
        assert_eq!(
            parse(b"IAMAT\rkiwi +1+2 5"),
            Err(ParseError::UnknownCommand)
        );
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b" \t\x0b\x0c"), Err(ParseError::Empty));
    }

    #[test]
    fn command_words_are_case_sensitive() {
        assert_eq!(parse(b"iamat a +1+1 1"), Err(ParseError::UnknownCommand));
        assert_eq!(parse(b"Whatsat a 1 1"), Err(ParseError::UnknownCommand));
    }

    #[test]
    fn field_counts() {
        assert_eq!(parse(b"IAMAT a +1+1 1 extra"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"WHATSAT a 1"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"WHATSAT a 1 1 1"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"AT s +0.1 a +1+1"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"PEER"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"PEER a b"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"a b c d e f g h i j"), Err(ParseError::FieldCount));
        assert_eq!(parse(b"PEER Ball"), Ok(Command::Peer(b"Ball")));
    }

    #[test]
    fn client_ids_are_any_bytes() {
        let i = iamat(b"IAMAT \xff\xfe\xc3(\x00 +1+1 1");
        assert_eq!(i.client, b"\xff\xfe\xc3(\x00");
        let w = whatsat(b"WHATSAT \xff\xfe\xc3(\x00 1 1");
        assert_eq!(w.client, b"\xff\xfe\xc3(\x00");
    }

    #[test]
    fn location_grammar() {
        for bad in [
            &b"34.1-118.4"[..], // first sign missing
            b"+34.1",           // one coordinate
            b"+34.1118.4",      // second sign missing
            b"+34.1-118.4+1",   // three numbers
            b"+-34.1-118.4",    // double sign
            b"+34.-118.4",      // empty fraction
            b"+.5-118.4",       // empty integer part
            b"+34.1-",          // empty longitude
            b"+34,1-118.4",     // comma
            b"+34.1-118.4e1",   // exponent
            b"+inf-118",
            b"+nan+1",
            b"+\x0034-118",
            b"+34.1.2-118",
        ] {
            let mut line = b"IAMAT a ".to_vec();
            line.extend_from_slice(bad);
            line.extend_from_slice(b" 1");
            assert_eq!(
                parse(&line),
                Err(ParseError::BadLocation),
                "{}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn location_ranges_are_exact() {
        for ok in [
            &b"+90-180"[..],
            b"-90+180",
            b"+90.000000-180.0000",
            b"+0+0",
            b"-0-0",
            b"+089.9999999999999999999-179.99999999999999999999",
            b"+00000000000000000000090+0",
        ] {
            let mut line = b"IAMAT a ".to_vec();
            line.extend_from_slice(ok);
            line.extend_from_slice(b" 1");
            assert!(parse(&line).is_ok(), "{}", ok.escape_ascii());
        }
        for bad in [
            &b"+90.0000000000000000000001+0"[..],
            b"-90.1+0",
            b"+91+0",
            b"+0+180.00000000000000000001",
            b"+0-181",
            b"+99999999999999999999999+0",
        ] {
            let mut line = b"IAMAT a ".to_vec();
            line.extend_from_slice(bad);
            line.extend_from_slice(b" 1");
            assert_eq!(
                parse(&line),
                Err(ParseError::LocationOutOfRange),
                "{}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn time_grammar() {
        assert_eq!(iamat(b"IAMAT a +1+1 0").time_ns, 0);
        assert_eq!(iamat(b"IAMAT a +1+1 1.5").time_ns, 1_500_000_000);
        assert_eq!(iamat(b"IAMAT a +1+1 1.000000001").time_ns, 1_000_000_001);
        assert_eq!(iamat(b"IAMAT a +1+1 0001.1").time_ns, 1_100_000_000);
        let big = iamat(b"IAMAT a +1+1 99999999999999999999.999999999").time_ns;
        assert_eq!(big, 99_999_999_999_999_999_999_999_999_999);
        for bad in [
            &b"-1"[..],
            b"+1",
            b"1.",
            b".5",
            b"1.0000000001", // ten fractional digits
            b"1e9",
            b"1,5",
            b"123456789012345678901", // 21 integer digits
            b"0x10",
            b"1..2",
        ] {
            let mut line = b"IAMAT a +1+1 ".to_vec();
            line.extend_from_slice(bad);
            assert_eq!(
                parse(&line),
                Err(ParseError::BadTime),
                "{}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn radius_rules() {
        assert_eq!(whatsat(b"WHATSAT a 10 5").radius_km, 10.0);
        assert_eq!(whatsat(b"WHATSAT a 10.5871263 5").radius_km, 10.5871263);
        assert_eq!(whatsat(b"WHATSAT a 50 5").radius_km, 50.0);
        assert_eq!(whatsat(b"WHATSAT a 50.000 5").radius_km, 50.0);
        assert_eq!(whatsat(b"WHATSAT a 0.001 5").radius_km, 0.001);
        let tiny = format!("WHATSAT a 0.{}1 5", "0".repeat(400));
        assert_eq!(whatsat(tiny.as_bytes()).radius_km, f64::MIN_POSITIVE);
        for out_of_range in [
            &b"0"[..],
            b"0.0",
            b"000",
            b"50.0000001",
            b"51",
            b"100000000000000",
        ] {
            let mut line = b"WHATSAT a ".to_vec();
            line.extend_from_slice(out_of_range);
            line.extend_from_slice(b" 5");
            assert_eq!(parse(&line), Err(ParseError::RadiusOutOfRange));
        }
        for bad in [
            &b"-1"[..],
            b"+1",
            b"1.",
            b".5",
            b"1e1",
            b"ten",
            b"inf",
            b"NaN",
        ] {
            let mut line = b"WHATSAT a ".to_vec();
            line.extend_from_slice(bad);
            line.extend_from_slice(b" 5");
            assert_eq!(parse(&line), Err(ParseError::BadRadius));
        }
    }

    #[test]
    fn max_results_rules() {
        assert_eq!(whatsat(b"WHATSAT a 1 1").max_results, 1);
        assert_eq!(whatsat(b"WHATSAT a 1 20").max_results, 20);
        assert_eq!(whatsat(b"WHATSAT a 1 05").max_results, 5);
        for out_of_range in [&b"0"[..], b"21", b"100", b"99999999999999999999"] {
            let mut line = b"WHATSAT a 1 ".to_vec();
            line.extend_from_slice(out_of_range);
            assert_eq!(parse(&line), Err(ParseError::MaxResultsOutOfRange));
        }
        for bad in [&b"5.0"[..], b"-5", b"+5", b"five", b"5."] {
            let mut line = b"WHATSAT a 1 ".to_vec();
            line.extend_from_slice(bad);
            assert_eq!(parse(&line), Err(ParseError::BadMaxResults));
        }
    }

    #[test]
    fn at_lines() {
        let line =
            b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let Ok(Command::At(at)) = parse(line) else {
            panic!("valid AT");
        };
        assert_eq!(at.server, b"Alford");
        assert_eq!(at.diff, b"+0.263873386");
        assert_eq!(at.client, b"kiwi.cs.ucla.edu");
        assert_eq!(at.time_ns, 1_621_464_827_959_498_503);
        let mut out = Vec::new();
        at.write_canonical(&mut out);
        assert_eq!(out, line);
        assert_eq!(at.canonical_len(), out.len());
        let Ok(Command::At(spaced)) = parse(b" AT\tAlford  -1.5 k +1+1 2 ") else {
            panic!("valid AT");
        };
        out.clear();
        spaced.write_canonical(&mut out);
        assert_eq!(out, b"AT Alford -1.5 k +1+1 2");
        assert_eq!(spaced.canonical_len(), out.len());
        assert_eq!(parse(b"AT s 0.1 k +1+1 2"), Err(ParseError::BadDiff));
        assert_eq!(parse(b"AT s +x k +1+1 2"), Err(ParseError::BadDiff));
        assert_eq!(parse(b"AT s +1 k 1+1 2"), Err(ParseError::BadLocation));
        assert_eq!(parse(b"AT s +1 k +1+1 -2"), Err(ParseError::BadTime));
    }

    #[test]
    fn diff_format() {
        assert_eq!(diff(263_873_386), "+0.263873386");
        assert_eq!(diff(0), "+0.000000000");
        assert_eq!(diff(-1_000_000_000), "-1.000000000");
        assert_eq!(diff(-1), "-0.000000001");
        assert_eq!(diff(12_345_000_000_007), "+12345.000000007");
        assert_eq!(
            diff(i128::MIN),
            format!(
                "-{}.{:09}",
                i128::MIN.unsigned_abs() / 1_000_000_000,
                i128::MIN.unsigned_abs() % 1_000_000_000
            )
        );
    }

    #[test]
    fn diff_is_exact_integer_arithmetic() {
        // A float would lose the last digits of a nanosecond timestamp.
        let i = iamat(b"IAMAT a +1+1 1621464827.959498503");
        let received =
            unix_nanos(UNIX_EPOCH + std::time::Duration::new(1_621_464_827, 959_498_504));
        assert_eq!(diff(received - i.time_ns), "+0.000000001");
        let early = unix_nanos(UNIX_EPOCH + std::time::Duration::new(1_621_464_826, 959_498_503));
        assert_eq!(diff(early - i.time_ns), "-1.000000000");
        assert_eq!(
            unix_nanos(UNIX_EPOCH - std::time::Duration::from_nanos(5)),
            -5
        );
    }

    #[test]
    fn at_line_round_trips_through_the_parser() {
        let i = iamat(b"IAMAT \xc3\xa9t\xc3\xa9 -0.5+0.25 42.000000001");
        let mut at = Vec::new();
        i.write_at_line(b"Welsh", -7, &mut at);
        let Ok(Command::At(parsed)) = parse(&at) else {
            panic!("AT line parses");
        };
        assert_eq!(parsed.server, b"Welsh");
        assert_eq!(parsed.diff, b"-0.000000007");
        assert_eq!(parsed.client, i.client);
        assert_eq!(parsed.location, i.location);
        assert_eq!(parsed.time_ns, i.time_ns);
        assert_eq!(parsed.coordinates, i.coordinates);
    }
}
