//! A load generator for any `\n` line echo server (gyre's line_echo, the
//! peers in benches/peers/, or your own).
//!
//! ```text
//! loadgen pingpong --addr A [--count N] [--size S]
//! loadgen pipeline --addr A [--connections C] [--depth D] [--seconds T] [--size S]
//! loadgen accept   --addr A [--seconds T] [--connections C] [--size S]
//! loadgen idle     --addr A [--connections C] [--wait W]
//! common:          [--server-pid PID] [--warmup SECONDS] [--label NAME]
//! ```
//!
//! - `pingpong`: one connection, closed loop, N round trips of one line;
//!   round-trip percentiles from an HDR histogram.
//! - `pipeline`: C connections with D lines in flight on each for T seconds
//!   (after a warm-up); lines per second and per-line latency. Every echoed
//!   line is checked byte for byte against what was sent (each line encodes
//!   its connection and sequence number), and every line must come back.
//!   The client is one thread running a mio loop, so on a 2-core machine it
//!   needs one core and leaves the other to the server.
//! - `accept`: C threads (default 1) each connect, send one line, read it
//!   back and close, for T seconds; connections per second and p99.
//! - `idle`: opens C connections (default 10,000), sends one line on each
//!   (so the server has accepted it and built its protocol), then holds them
//!   for W seconds and reports the server's RSS growth per connection
//!   (needs `--server-pid`). RSS is user-space memory only: the kernel's
//!   socket buffers (/proc/net/sockstat) and slab objects (/proc/meminfo),
//!   host-wide and for both ends of each connection, are reported beside it.
//!
//! `--server-pid` adds the server's CPU time (utime + stime from
//! /proc/PID/stat, in clock ticks, so 10 ms resolution at 100 Hz) per
//! request and its RSS after the run. Every mode is bounded in time and
//! count. The last line printed is a summary for scripts:
//! `RESULT mode=pipeline lines_per_s=... p50_us=... p99_us=... cpu_us_per_req=...`
//! (`na` where a value is unknown). Any error (refused connection, wrong or
//! missing echo, time-out) exits with status 1.
//!
//! Loopback or your own test hosts only: this is a load test.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// How long any single socket operation may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: loadgen (pingpong|pipeline|accept|idle) --addr HOST:PORT \
[--count N] [--connections C] [--depth D] [--seconds T] [--size BYTES] \
[--warmup SECONDS] [--wait SECONDS] [--server-pid PID] [--label NAME]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    PingPong,
    Pipeline,
    Accept,
    Idle,
}

#[derive(Debug, Clone)]
struct Options {
    mode: Mode,
    addr: SocketAddr,
    count: u64,
    connections: Option<usize>,
    depth: usize,
    seconds: f64,
    size: usize,
    warmup: Option<f64>,
    wait: f64,
    server_pid: Option<u32>,
    label: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mode = match args.first().map(String::as_str) {
        Some("pingpong") => Mode::PingPong,
        Some("pipeline") => Mode::Pipeline,
        Some("accept") => Mode::Accept,
        Some("idle") => Mode::Idle,
        Some("-h" | "--help") | None => return Err(USAGE.into()),
        Some(other) => return Err(format!("unknown mode {other:?}\n{USAGE}").into()),
    };
    let mut o = Options {
        mode,
        addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
        count: 20_000,
        connections: None,
        depth: 16,
        seconds: 3.0,
        size: 32,
        warmup: None,
        wait: 1.0,
        server_pid: None,
        label: None,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T>
        where
            T::Err: std::fmt::Display,
        {
            v.parse()
                .map_err(|e| format!("{flag} {v:?}: {e}\n{USAGE}").into())
        }
        match flag.as_str() {
            "--addr" => o.addr = num(flag, value()?)?,
            "--count" => o.count = num(flag, value()?)?,
            "--connections" => o.connections = Some(num(flag, value()?)?),
            "--depth" => o.depth = num(flag, value()?)?,
            "--seconds" => o.seconds = num(flag, value()?)?,
            "--size" => o.size = num(flag, value()?)?,
            "--warmup" => o.warmup = Some(num(flag, value()?)?),
            "--wait" => o.wait = num(flag, value()?)?,
            "--server-pid" => o.server_pid = Some(num(flag, value()?)?),
            "--label" => o.label = Some(value()?.clone()),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}").into()),
        }
    }
    if !(2..=4096).contains(&o.size) {
        return Err("--size must be 2..=4096 bytes (the newline included)".into());
    }
    if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    if o.count == 0 || o.count > 100_000_000 {
        return Err("--count must be 1..=100000000".into());
    }
    if o.depth == 0 || o.depth > 100_000 {
        return Err("--depth must be 1..=100000".into());
    }
    if let Some(c) = o.connections {
        if c == 0 || c > 1_000_000 {
            return Err("--connections must be 1..=1000000".into());
        }
    }
    if !(0.0..=3600.0).contains(&o.wait) || !(0.0..=3600.0).contains(&o.warmup.unwrap_or(0.0)) {
        return Err("--wait and --warmup must be in [0, 3600]".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------
// Lines: each encodes (connection, sequence number), so an echo can be
// checked byte for byte and a lost, duplicated or reordered line is caught.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Makes and checks the lines of one connection. Line `seq` is: the low
/// hex digits of seq (16, or fewer for short sizes), `.`, 8 hex digits of
/// the connection, `.`, letters, `\n`; truncated to the line size. Only the
/// seq digits change from line to line, so making and checking a line is a
/// copy or a compare plus 16 digits (the pipeline's client must stay cheap).
struct LineMaker {
    template: Vec<u8>,
    digits: usize,
}

impl LineMaker {
    fn new(conn: u32, size: usize) -> LineMaker {
        let body = size - 1;
        let mut template: Vec<u8> = (0..body)
            .map(|i| match i {
                0..=15 => b'0',
                16 | 25 => b'.',
                17..=24 => HEX[((conn >> (28 - 4 * (i - 17))) & 0xf) as usize],
                _ => b'a' + ((conn as usize + i) % 26) as u8,
            })
            .collect();
        template.push(b'\n');
        LineMaker {
            template,
            digits: body.min(16),
        }
    }

    /// The seq digits of line `seq`.
    fn seq_digits(&self, seq: u64) -> [u8; 16] {
        let mut d = [0u8; 16];
        for (j, b) in d[..self.digits].iter_mut().enumerate() {
            *b = HEX[((seq >> (4 * (self.digits - 1 - j))) & 0xf) as usize];
        }
        d
    }

    /// Writes line `seq` into `out` (exactly the line size).
    fn write(&self, out: &mut [u8], seq: u64) {
        out.copy_from_slice(&self.template);
        out[..self.digits].copy_from_slice(&self.seq_digits(seq)[..self.digits]);
    }

    /// Whether `got` is exactly line `seq`.
    fn matches(&self, got: &[u8], seq: u64) -> bool {
        got.len() == self.template.len()
            && got[self.digits..] == self.template[self.digits..]
            && got[..self.digits] == self.seq_digits(seq)[..self.digits]
    }
}

/// Bytes as text for error messages (print with `{:?}`).
fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// The server's CPU time and memory, from /proc.

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
fn rss_kib(pid: u32) -> Result<u64> {
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
fn kernel_tcp_kib() -> Option<u64> {
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
fn kernel_slab_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Slab:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's CPU ticks at the start of a measurement.
struct CpuMeter {
    pid: Option<u32>,
    start: u64,
    since: Instant,
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> Result<CpuMeter> {
        let start = match pid {
            Some(pid) => cpu_ticks(pid)?,
            None => 0,
        };
        Ok(CpuMeter {
            pid,
            start,
            since: Instant::now(),
        })
    }

    /// CPU seconds used since `start`, if known.
    fn seconds(&self) -> Result<Option<f64>> {
        let Some(pid) = self.pid else {
            return Ok(None);
        };
        let ticks = cpu_ticks(pid)?.saturating_sub(self.start);
        Ok(Some(ticks as f64 / clock_ticks_per_second() as f64))
    }

    /// How busy the process was since `start`, in percent of one core.
    fn busy_pct(&self) -> Result<Option<f64>> {
        let wall = self.since.elapsed().as_secs_f64();
        Ok(self.seconds()?.map(|s| s * 100.0 / wall.max(1e-9)))
    }

    /// CPU microseconds per request since `start`, if known.
    fn per_request(&self, requests: u64) -> Result<Option<f64>> {
        let secs = self.seconds()?;
        Ok(secs
            .filter(|_| requests > 0)
            .map(|s| s * 1e6 / requests as f64))
    }
}

// ---------------------------------------------------------------------------
// Reporting.

fn histogram() -> Result<Histogram<u64>> {
    // Nanoseconds, 1 ns to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}").into())
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().clamp(1, u64::MAX as u128) as u64);
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Collects `key=value` pairs for the human report and the RESULT line.
struct Report {
    pairs: Vec<(String, String)>,
}

impl Report {
    fn new(o: &Options, mode: &str) -> Report {
        let mut r = Report { pairs: Vec::new() };
        r.put("mode", mode);
        if let Some(label) = &o.label {
            r.put("label", label);
        }
        r.put("addr", o.addr);
        r
    }

    fn put(&mut self, key: &str, value: impl std::fmt::Display) {
        self.pairs.push((key.to_string(), value.to_string()));
    }

    fn num(&mut self, key: &str, value: f64, decimals: usize) {
        self.put(key, format!("{value:.decimals$}"));
    }

    fn opt(&mut self, key: &str, value: Option<f64>, decimals: usize) {
        match value {
            Some(v) => self.num(key, v, decimals),
            None => self.put(key, "na"),
        }
    }

    fn latencies(&mut self, h: &Histogram<u64>) {
        self.num("p50_us", us(h, 0.50), 1);
        self.num("p99_us", us(h, 0.99), 1);
        self.num("p999_us", us(h, 0.999), 1);
        self.num("max_us", h.max() as f64 / 1000.0, 1);
    }

    fn server_rss(&mut self, pid: Option<u32>) -> Result<()> {
        match pid {
            Some(pid) => self.put("server_rss_kib", rss_kib(pid)?),
            None => self.put("server_rss_kib", "na"),
        }
        Ok(())
    }

    fn print(&self) {
        let mut line = String::from("RESULT");
        for (k, v) in &self.pairs {
            println!("  {k:>20}  {v}");
            let _ = write!(line, " {k}={}", v.replace(char::is_whitespace, "_"));
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------
// Blocking connections (pingpong, accept, idle).

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `line` and checks that exactly it comes back.
fn round_trip(stream: &mut TcpStream, line: &[u8], echo: &mut [u8]) -> Result<()> {
    stream.write_all(line).map_err(|e| format!("write: {e}"))?;
    stream.read_exact(echo).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => "the server closed the connection".to_string(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no echo within {IO_TIMEOUT:?}")
        }
        _ => format!("read: {e}"),
    })?;
    if echo != line {
        return Err(format!("wrong echo: sent {:?}, got {:?}", show(line), show(echo)).into());
    }
    Ok(())
}

fn pingpong(o: &Options) -> Result<Report> {
    let mut stream = connect(o.addr)?;
    let maker = LineMaker::new(0, o.size);
    let mut line = vec![0u8; o.size];
    let mut echo = vec![0u8; o.size];
    let warm = (o.count / 10).clamp(1, 1000);
    for seq in 0..warm {
        maker.write(&mut line, seq);
        round_trip(&mut stream, &line, &mut echo)?;
    }
    let mut h = histogram()?;
    let cpu = CpuMeter::start(o.server_pid)?;
    let start = Instant::now();
    for seq in warm..warm + o.count {
        maker.write(&mut line, seq);
        let t0 = Instant::now();
        round_trip(&mut stream, &line, &mut echo)?;
        record(&mut h, t0.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu.per_request(o.count)?;
    let mut r = Report::new(o, "pingpong");
    r.put("count", o.count);
    r.put("size", o.size);
    r.num("seconds", elapsed, 3);
    r.num("round_trips_per_s", o.count as f64 / elapsed, 0);
    r.latencies(&h);
    r.opt("cpu_us_per_req", cpu, 3);
    r.server_rss(o.server_pid)?;
    r.put("errors", 0);
    Ok(r)
}

/// One accept-mode client thread: connections until `warm_until` are not
/// counted, then connect, round trip, close until `end`.
fn accept_worker(
    id: u32,
    addr: SocketAddr,
    size: usize,
    warm_until: Instant,
    end: Instant,
) -> Result<(u64, Histogram<u64>)> {
    let mut h = histogram()?;
    let maker = LineMaker::new(id, size);
    let mut line = vec![0u8; size];
    let mut echo = vec![0u8; size];
    let mut seq = 0u64;
    let mut done = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            return Ok((done, h));
        }
        maker.write(&mut line, seq);
        let mut stream = connect(addr)?;
        round_trip(&mut stream, &line, &mut echo)?;
        drop(stream);
        seq += 1;
        if t0 >= warm_until {
            record(&mut h, t0.elapsed());
            done += 1;
        }
    }
}

fn accept(o: &Options) -> Result<Report> {
    let threads = o.connections.unwrap_or(1).min(64);
    let warm_until = Instant::now() + Duration::from_secs_f64(o.warmup.unwrap_or(0.0));
    let end = warm_until + Duration::from_secs_f64(o.seconds);
    let handles: Vec<_> = (0..threads)
        .map(|id| {
            let (addr, size) = (o.addr, o.size);
            std::thread::spawn(move || accept_worker(id as u32, addr, size, warm_until, end))
        })
        .collect();
    std::thread::sleep(warm_until.saturating_duration_since(Instant::now()));
    let cpu = CpuMeter::start(o.server_pid)?;
    let mut total = 0u64;
    let mut h = histogram()?;
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok((done, th))) => {
                total += done;
                h.add(th).map_err(|e| format!("histogram: {e}"))?;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert_with(|| "a client thread panicked".into());
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // The last connections may end a little after `end`.
    let elapsed = Instant::now()
        .saturating_duration_since(warm_until)
        .as_secs_f64()
        .max(o.seconds);
    let cpu = cpu.per_request(total)?;
    let mut r = Report::new(o, "accept");
    r.put("threads", threads);
    r.num("seconds", elapsed, 3);
    r.put("connections", total);
    r.num("connections_per_s", total as f64 / elapsed, 0);
    r.latencies(&h);
    r.opt("cpu_us_per_req", cpu, 3);
    r.server_rss(o.server_pid)?;
    r.put("errors", 0);
    Ok(r)
}

/// Raises RLIMIT_NOFILE's soft limit to at least `want` (up to the hard
/// limit); returns the soft limit in force.
fn raise_nofile(want: u64) -> Result<u64> {
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

fn idle(o: &Options) -> Result<Report> {
    let n = o.connections.unwrap_or(10_000);
    let limit = raise_nofile(n as u64 + 64)?;
    if limit < n as u64 + 16 {
        return Err(format!(
            "{n} connections need more descriptors than RLIMIT_NOFILE's hard limit ({limit})"
        )
        .into());
    }
    let pid = o.server_pid;
    let settle = Duration::from_secs_f64(o.wait);
    std::thread::sleep(settle.min(Duration::from_millis(200)));
    let rss_before = pid.map(rss_kib).transpose()?;
    let kernel_before = kernel_tcp_kib();
    let slab_before = kernel_slab_kib();
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut line = vec![0u8; o.size];
    let mut echo = vec![0u8; o.size];
    for i in 0..n {
        let mut stream = connect(o.addr).map_err(|e| format!("connection {i} of {n}: {e}"))?;
        LineMaker::new(i as u32, o.size).write(&mut line, 0);
        round_trip(&mut stream, &line, &mut echo)
            .map_err(|e| format!("connection {i} of {n}: {e}"))?;
        conns.push(stream);
    }
    let opened_in = start.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let rss_after = pid.map(rss_kib).transpose()?;
    let kernel_after = kernel_tcp_kib();
    let slab_after = kernel_slab_kib();
    // Check that the server still holds them all: one more line on the first
    // and the last.
    for i in [0, n - 1] {
        LineMaker::new(i as u32, o.size).write(&mut line, 1);
        round_trip(&mut conns[i], &line, &mut echo)
            .map_err(|e| format!("idle connection {i}: {e}"))?;
    }
    drop(conns);
    let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) / n as f64),
        _ => None,
    };
    let mut r = Report::new(o, "idle");
    r.put("connections", n);
    r.num("open_seconds", opened_in, 3);
    match rss_before {
        Some(v) => r.put("rss_before_kib", v),
        None => r.put("rss_before_kib", "na"),
    }
    match rss_after {
        Some(v) => r.put("rss_after_kib", v),
        None => r.put("rss_after_kib", "na"),
    }
    r.opt("kib_per_conn", per_conn(rss_before, rss_after), 3);
    // Both ends' sockets are on this host: the kernel figures cover the
    // pair, and are host-wide (other processes move them too). TCP buffer
    // memory of idle sockets is normally zero; their kernel objects are slab.
    r.opt(
        "kernel_tcp_kib_per_conn_pair",
        per_conn(kernel_before, kernel_after),
        3,
    );
    r.opt(
        "kernel_slab_kib_per_conn_pair",
        per_conn(slab_before, slab_after),
        3,
    );
    r.put("errors", 0);
    Ok(r)
}

// ---------------------------------------------------------------------------
// Pipeline: one thread, a mio loop over C connections.

struct PipeConn {
    stream: mio::net::TcpStream,
    id: u32,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    next_send: u64,
    next_recv: u64,
    sent_at: VecDeque<Instant>,
    eof: bool,
    lines: LineMaker,
}

impl PipeConn {
    fn queue_line(&mut self, size: usize, now: Instant) {
        let at = self.out.len();
        self.out.resize(at + size, 0);
        self.lines.write(&mut self.out[at..], self.next_send);
        self.next_send += 1;
        self.sent_at.push_back(now);
    }

    fn in_flight(&self) -> usize {
        self.sent_at.len()
    }

    fn flush(&mut self) -> Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(format!("connection {}: write returned 0", self.id).into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {}: write: {e}", self.id).into()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Reads what is queued. `closing`: the event said the peer closed,
    /// so read on to the end of the stream.
    fn read_available(&mut self, scratch: &mut [u8], closing: bool) -> Result<()> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    // A short read emptied the socket's queue: skip the read
                    // that would say WouldBlock (as tokio does on Linux).
                    // Safe with edge triggering: data arriving later raises
                    // a new edge.
                    if n < scratch.len() && !closing {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {}: read: {e}", self.id).into()),
            }
        }
    }
}

/// What the measured part of a pipeline run counted.
struct PipeStats {
    lines: u64,
    hist: Histogram<u64>,
}

fn pipeline(o: &Options) -> Result<Report> {
    let nconn = o.connections.unwrap_or(8);
    raise_nofile(nconn as u64 + 64)?;
    let size = o.size;
    let depth = o.depth;
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(nconn);
    for i in 0..nconn {
        let std_stream = connect(o.addr)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(PipeConn {
            stream,
            id: i as u32,
            out: Vec::with_capacity(size * depth),
            out_pos: 0,
            inbuf: Vec::with_capacity(64 * 1024),
            next_send: 0,
            next_recv: 0,
            sent_at: VecDeque::with_capacity(depth),
            eof: false,
            lines: LineMaker::new(i as u32, size),
        });
    }
    let warmup = Duration::from_secs_f64(o.warmup.unwrap_or(0.5));
    let measure = Duration::from_secs_f64(o.seconds);
    let drain_limit = IO_TIMEOUT;
    let begin = Instant::now();
    let measure_start = begin + warmup;
    let measure_end = measure_start + measure;
    let mut cpu: Option<(CpuMeter, CpuMeter)> = None;
    let mut cpu_lines = 0u64;
    let mut stats = PipeStats {
        lines: 0,
        hist: histogram()?,
    };
    for c in &mut conns {
        for _ in 0..depth {
            c.queue_line(size, begin);
        }
        c.flush()?;
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 256 * 1024];
    let mut expected = vec![0u8; size];
    loop {
        let now = Instant::now();
        if now >= measure_start && cpu.is_none() {
            cpu = Some((
                CpuMeter::start(o.server_pid)?,
                CpuMeter::start(Some(std::process::id()))?,
            ));
        }
        let sending = now < measure_end;
        if !sending {
            if conns.iter().all(|c| c.in_flight() == 0) {
                break;
            }
            if now >= measure_end + drain_limit {
                let missing: usize = conns.iter().map(PipeConn::in_flight).sum();
                return Err(format!("{missing} lines not echoed within {drain_limit:?}").into());
            }
        }
        let timeout = if now < measure_start {
            measure_start - now
        } else if sending {
            measure_end - now
        } else {
            Duration::from_millis(100)
        };
        match poll.poll(&mut events, Some(timeout.min(Duration::from_millis(100)))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        let now = Instant::now();
        let measuring = now >= measure_start && now < measure_end;
        for event in events.iter() {
            let Some(c) = conns.get_mut(event.token().0) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                c.read_available(&mut scratch, event.is_read_closed() || event.is_error())?;
                let whole = c.inbuf.len() / size * size;
                let mut at = 0;
                while at < whole {
                    let got = &c.inbuf[at..at + size];
                    if !c.lines.matches(got, c.next_recv) {
                        c.lines.write(&mut expected, c.next_recv);
                        return Err(format!(
                            "connection {}: line {} echoed wrong: expected {:?}, got {:?}",
                            c.id,
                            c.next_recv,
                            show(&expected),
                            show(got)
                        )
                        .into());
                    }
                    let sent = c
                        .sent_at
                        .pop_front()
                        .ok_or_else(|| format!("connection {}: an echo nobody sent", c.id))?;
                    c.next_recv += 1;
                    at += size;
                    if measuring {
                        stats.lines += 1;
                        record(&mut stats.hist, now.saturating_duration_since(sent));
                    }
                    if cpu.is_some() {
                        cpu_lines += 1;
                    }
                    if sending {
                        c.queue_line(size, now);
                    }
                }
                c.inbuf.drain(..whole);
                if c.eof && c.in_flight() > 0 {
                    return Err(format!(
                        "connection {}: the server closed it with {} lines in flight",
                        c.id,
                        c.in_flight()
                    )
                    .into());
                }
            }
            c.flush()?;
        }
    }
    // Both processes' load: if neither is near 100%, the run is bound by
    // wake-up latency rather than by either side's CPU.
    let (cpu, server_busy, client_busy) = match cpu {
        Some((server, client)) => (
            server.per_request(cpu_lines)?,
            server.busy_pct()?,
            client.busy_pct()?,
        ),
        None => (None, None, None),
    };
    let mut r = Report::new(o, "pipeline");
    r.put("connections", nconn);
    r.put("depth", depth);
    r.put("size", size);
    r.num("seconds", measure.as_secs_f64(), 3);
    r.put("lines", stats.lines);
    r.num("lines_per_s", stats.lines as f64 / measure.as_secs_f64(), 0);
    r.latencies(&stats.hist);
    r.opt("cpu_us_per_req", cpu, 3);
    r.opt("server_cpu_pct", server_busy, 0);
    r.opt("client_cpu_pct", client_busy, 0);
    r.server_rss(o.server_pid)?;
    r.put("errors", 0);
    Ok(r)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = parse_args(&args).and_then(|o| match o.mode {
        Mode::PingPong => pingpong(&o),
        Mode::Pipeline => pipeline(&o),
        Mode::Accept => accept(&o),
        Mode::Idle => idle(&o),
    });
    match outcome {
        Ok(report) => report.print(),
        Err(e) => {
            eprintln!("loadgen: {e}");
            println!("RESULT errors=1");
            std::process::exit(1);
        }
    }
}
