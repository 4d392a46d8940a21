//! The value syntaxes of the herd program's limit options, parsed without
//! floats and with every overflow an error:
//!
//! - a **count** `N`: decimal digits, with a per-option minimum;
//! - a **size** `SIZE`: a count of bytes, optionally followed by `KiB`,
//!   `MiB` or `GiB` (case-insensitive; `K`, `M`, `G` too, all powers of
//!   1024): `65536`, `64KiB`, `256MiB`;
//! - a **time** `TIME`: a count followed by `ms`, `s`, `m` or `h`, or bare
//!   (seconds): `500ms`, `120`, `120s`, `10m`;
//! - a **rate** `RATE`: `PER_SEC` or `PER_SEC/BURST` (bursts default to
//!   the rate): `50/200` is 50 a second in bursts of up to 200.
//!
//! Each parser takes the option's name for its error message, and each
//! value type has a formatter whose output the parser reads back (the
//! defaults in `--help` are written with them).

use std::time::Duration;

use super::UsageError;
use crate::limits::Rate;

/// Parses a count of at least `min`.
///
/// ```text
/// count("--max-clients", "1000", 1) == Ok(1000)
/// count("--max-clients", "0", 1)    -> "--max-clients must be at least 1, not \"0\""
/// ```
pub(super) fn count(name: &str, value: &str, min: usize) -> Result<usize, UsageError> {
    let n = digits(value)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| UsageError(format!("{name} needs a whole number, not {value:?}")))?;
    at_least(name, value, n, min)
}

/// Parses a size in bytes of at least `min`.
pub(super) fn size(name: &str, value: &str, min: u64) -> Result<u64, UsageError> {
    let bad = || {
        UsageError(format!(
            "{name} needs a size in bytes (like 65536, 64KiB, 256MiB or 1GiB), not {value:?}"
        ))
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(bad()),
    };
    let n = digits(number).ok_or_else(bad)?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| UsageError(format!("{name}: {value:?} is too large")))?;
    at_least(name, value, bytes, min)
}

/// Parses a time; zero only if `allow_zero`.
pub(super) fn time(name: &str, value: &str, allow_zero: bool) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "{name} needs a time (like 500ms, 30s, 10m, 1h, or bare seconds), not {value:?}"
        ))
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n = digits(number).ok_or_else(bad)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = n
        .checked_mul(millis_per_unit)
        .ok_or_else(|| UsageError(format!("{name}: {value:?} is too long")))?;
    if millis == 0 && !allow_zero {
        return Err(UsageError(format!(
            "{name} must be longer than zero, not {value:?}"
        )));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses a rate, `PER_SEC` or `PER_SEC/BURST`; the burst must be at least
/// 1 (a bucket that never holds a token would refuse everything).
pub(super) fn rate(name: &str, value: &str) -> Result<Rate, UsageError> {
    let bad = || {
        UsageError(format!(
            "{name} needs PER_SEC or PER_SEC/BURST in whole numbers (like 50/200), not {value:?}"
        ))
    };
    let number = |s: &str| {
        digits(s)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)
    };
    let (per_second, burst) = match value.split_once('/') {
        Some((rate, burst)) => (number(rate)?, number(burst)?),
        None => {
            let n = number(value)?;
            (n, n)
        }
    };
    if burst == 0 {
        return Err(UsageError(format!(
            "{name}: a burst of 0 would refuse everything; give at least 1, not {value:?}"
        )));
    }
    Ok(Rate { per_second, burst })
}

/// A size as [`size`] reads it: the largest unit that divides it exactly.
pub(super) fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A time as [`time`] reads it: the largest unit that divides it exactly
/// (sub-millisecond parts are dropped).
pub(super) fn format_time(time: Duration) -> String {
    let millis = time.as_millis();
    for (per, unit) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if millis != 0 && millis % per == 0 {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

/// A rate as [`rate`] reads it.
pub(super) fn format_rate(rate: Rate) -> String {
    format!("{}/{}", rate.per_second, rate.burst)
}

/// A non-empty run of ASCII digits as a `u64` (no sign, no spaces, no
/// overflow).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn at_least<N: PartialOrd + std::fmt::Display>(
    name: &str,
    value: &str,
    n: N,
    min: N,
) -> Result<N, UsageError> {
    if n < min {
        return Err(UsageError(format!(
            "{name} must be at least {min}, not {value:?}"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: std::fmt::Debug>(r: Result<T, UsageError>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn counts() {
        assert_eq!(count("--n", "0", 0), Ok(0));
        assert_eq!(count("--n", "10000", 1), Ok(10_000));
        assert!(err(count("--n", "0", 1)).contains("--n must be at least 1"));
        for bad in ["", "-1", "+1", " 1", "1 ", "1.5", "1e3", "10_000", "x"] {
            assert!(
                err(count("--n", bad, 0)).contains("--n needs a whole number"),
                "{bad:?}"
            );
        }
        assert!(count("--n", "99999999999999999999999", 0).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("--s", "65536", 1), Ok(65_536));
        assert_eq!(size("--s", "64KiB", 1), Ok(65_536));
        assert_eq!(size("--s", "64k", 1), Ok(65_536));
        assert_eq!(size("--s", "8MiB", 1), Ok(8 << 20));
        assert_eq!(size("--s", "8mib", 1), Ok(8 << 20));
        assert_eq!(size("--s", "1G", 1), Ok(1 << 30));
        assert_eq!(size("--s", "100B", 1), Ok(100));
        assert!(err(size("--s", "0", 1)).contains("at least 1"));
        for bad in ["", "MiB", "8 MiB", "8MB", "8TiB", "-8", "1.5GiB", "8MiBs"] {
            assert!(
                err(size("--s", bad, 0)).contains("--s needs a size"),
                "{bad:?}"
            );
        }
        assert!(err(size("--s", "18446744073709551615GiB", 0)).contains("too large"));
    }

    #[test]
    fn times() {
        assert_eq!(time("--t", "500ms", false), Ok(Duration::from_millis(500)));
        assert_eq!(time("--t", "120", false), Ok(Duration::from_secs(120)));
        assert_eq!(time("--t", "120s", false), Ok(Duration::from_secs(120)));
        assert_eq!(time("--t", "10m", false), Ok(Duration::from_secs(600)));
        assert_eq!(time("--t", "2h", false), Ok(Duration::from_secs(7200)));
        assert_eq!(time("--t", "0", true), Ok(Duration::ZERO));
        assert!(err(time("--t", "0s", false)).contains("longer than zero"));
        for bad in ["", "s", "1.5s", "10 s", "10sec", "-1s", "1d", "1M"] {
            assert!(
                err(time("--t", bad, true)).contains("--t needs a time"),
                "{bad:?}"
            );
        }
        assert!(err(time("--t", "18446744073709551615h", true)).contains("too long"));
    }

    #[test]
    fn rates() {
        let r = |per_second, burst| Ok(Rate { per_second, burst });
        assert_eq!(rate("--r", "50/200"), r(50, 200));
        assert_eq!(rate("--r", "50"), r(50, 50));
        assert_eq!(rate("--r", "0/100"), r(0, 100));
        assert_eq!(rate("--r", "4294967295/4294967295"), r(u32::MAX, u32::MAX));
        assert!(err(rate("--r", "0")).contains("burst of 0"));
        assert!(err(rate("--r", "5/0")).contains("burst of 0"));
        for bad in [
            "",
            "/",
            "50/",
            "/200",
            "50/200/1",
            "5.5/10",
            "4294967296",
            "a/b",
        ] {
            assert!(
                err(rate("--r", bad)).contains("--r needs PER_SEC or PER_SEC/BURST"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn formats_read_back() {
        for bytes in [
            0,
            1,
            1000,
            1024,
            65_536,
            3 << 20,
            256 << 20,
            1 << 30,
            5 << 40,
        ] {
            assert_eq!(size("--s", &format_size(bytes), 0), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(64 << 10), "64KiB");
        assert_eq!(format_size(256 << 20), "256MiB");
        for millis in [0, 1, 999, 1000, 60_000, 90_000, 3_600_000, 5_400_000] {
            let t = Duration::from_millis(millis);
            assert_eq!(time("--t", &format_time(t), true), Ok(t), "{millis}");
        }
        assert_eq!(format_time(Duration::from_secs(120)), "2m");
        assert_eq!(format_time(Duration::from_secs(10)), "10s");
        let r = Rate {
            per_second: 5,
            burst: 100,
        };
        assert_eq!(rate("--r", &format_rate(r)), Ok(r));
    }
}
