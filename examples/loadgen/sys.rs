//! The server's CPU time and memory, from /proc, and the descriptor limit.

use std::io;
use std::time::Instant;

use crate::Result;

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no
    // memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: fields after its ')'.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .ok_or("short /proc/PID/stat")?
            .parse::<u64>()
            .map_err(|e| format!("/proc/PID/stat field: {e}").into())
    };
    Ok(get(11)? + get(12)?)
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}

/// The kernel's TCP memory (all sockets of the host), in KiB, from
/// /proc/net/sockstat (`TCP: ... mem PAGES`).
pub fn kernel_tcp_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            let pages: u64 = words.next()?.parse().ok()?;
            // SAFETY: sysconf only reads a configuration value.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let page = if page > 0 { page as u64 } else { 4096 };
            return Some(pages * page / 1024);
        }
    }
    None
}

/// The kernel's slab memory (socket, inode, dentry and other kernel
/// objects of the whole host), in KiB, from /proc/meminfo.
pub fn kernel_slab_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Slab:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Some processes' CPU ticks (summed) at the start of a measurement.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: u64,
    since: Instant,
}

/// utime + stime of all of `pids`, in clock ticks.
fn cpu_ticks_sum(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&pid| cpu_ticks(pid)).sum()
}

impl CpuMeter {
    /// Starts measuring `pids` (none: every figure is unknown).
    pub fn start(pids: &[u32]) -> Result<CpuMeter> {
        Ok(CpuMeter {
            pids: pids.to_vec(),
            start: cpu_ticks_sum(pids)?,
            since: Instant::now(),
        })
    }

    /// CPU seconds used since `start`, if known.
    fn seconds(&self) -> Result<Option<f64>> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        let ticks = cpu_ticks_sum(&self.pids)?.saturating_sub(self.start);
        Ok(Some(ticks as f64 / clock_ticks_per_second() as f64))
    }

    /// How busy the process was since `start`, in percent of one core.
    pub fn busy_pct(&self) -> Result<Option<f64>> {
        let wall = self.since.elapsed().as_secs_f64();
        Ok(self.seconds()?.map(|s| s * 100.0 / wall.max(1e-9)))
    }

    /// CPU microseconds per request since `start`, if known.
    pub fn per_request(&self, requests: u64) -> Result<Option<f64>> {
        let secs = self.seconds()?;
        Ok(secs
            .filter(|_| requests > 0)
            .map(|s| s * 1e6 / requests as f64))
    }
}

/// Raises RLIMIT_NOFILE's soft limit to at least `want` (up to the hard
/// limit); returns the soft limit in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively
    // borrowed struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()).into());
    }
    if lim.rlim_cur < want {
        let new = libc::rlimit {
            rlim_cur: (want as libc::rlim_t).min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one valid rlimit struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            return Err(format!("setrlimit: {}", io::Error::last_os_error()).into());
        }
        lim = new;
    }
    Ok(lim.rlim_cur)
}
