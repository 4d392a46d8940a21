//! Reporting: latency histograms and the `key=value` report that ends in
//! the RESULT line.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cli::Options;
use crate::sys::rss_kib;
use crate::Result;

pub fn histogram() -> Result<Histogram<u64>> {
    // Nanoseconds, 1 ns to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}").into())
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().clamp(1, u64::MAX as u128) as u64);
}

pub fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Collects `key=value` pairs for the human report and the RESULT line.
pub struct Report {
    pairs: Vec<(String, String)>,
}

impl Report {
    pub fn new(o: &Options, mode: &str) -> Report {
        let mut r = Report { pairs: Vec::new() };
        r.put("mode", mode);
        if let Some(label) = &o.label {
            r.put("label", label);
        }
        let addrs: Vec<String> = o.addrs.iter().map(ToString::to_string).collect();
        if !addrs.is_empty() {
            r.put("addr", addrs.join(","));
        }
        r
    }

    pub fn put(&mut self, key: &str, value: impl std::fmt::Display) {
        self.pairs.push((key.to_string(), value.to_string()));
    }

    pub fn num(&mut self, key: &str, value: f64, decimals: usize) {
        self.put(key, format!("{value:.decimals$}"));
    }

    pub fn opt(&mut self, key: &str, value: Option<f64>, decimals: usize) {
        match value {
            Some(v) => self.num(key, v, decimals),
            None => self.put(key, "na"),
        }
    }

    pub fn latencies(&mut self, h: &Histogram<u64>) {
        self.num("p50_us", us(h, 0.50), 1);
        self.num("p99_us", us(h, 0.99), 1);
        self.num("p999_us", us(h, 0.999), 1);
        self.num("max_us", h.max() as f64 / 1000.0, 1);
    }

    /// The RSS of the server processes, summed (`na` without any).
    pub fn server_rss(&mut self, pids: &[u32]) -> Result<()> {
        if pids.is_empty() {
            self.put("server_rss_kib", "na");
        } else {
            let total: u64 = pids.iter().map(|&pid| rss_kib(pid)).sum::<Result<u64>>()?;
            self.put("server_rss_kib", total);
        }
        Ok(())
    }

    /// The value reported under `key`.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `errors` value reported (0 if none was).
    pub fn errors(&self) -> u64 {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == "errors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn print(&self) {
        let mut line = String::from("RESULT");
        for (k, v) in &self.pairs {
            println!("  {k:>20}  {v}");
            let _ = write!(line, " {k}={}", v.replace(char::is_whitespace, "_"));
        }
        println!("{line}");
    }
}
