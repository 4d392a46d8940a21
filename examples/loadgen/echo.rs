//! The line echo modes: pingpong, pipeline, accept and idle.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use crate::cli::Options;
use crate::report::{histogram, record, Report};
use crate::sys::{kernel_slab_kib, kernel_tcp_kib, raise_nofile, rss_kib, CpuMeter};
use crate::{Result, IO_TIMEOUT};

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
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

pub fn pingpong(o: &Options) -> Result<Report> {
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
    let cpu = CpuMeter::start(&o.server_pids)?;
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
    r.server_rss(&o.server_pids)?;
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

pub fn accept(o: &Options) -> Result<Report> {
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
    let cpu = CpuMeter::start(&o.server_pids)?;
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
    r.server_rss(&o.server_pids)?;
    r.put("errors", 0);
    Ok(r)
}

pub fn idle(o: &Options) -> Result<Report> {
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

pub fn pipeline(o: &Options) -> Result<Report> {
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
                CpuMeter::start(&o.server_pids)?,
                CpuMeter::start(&[std::process::id()])?,
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
    r.server_rss(&o.server_pids)?;
    r.put("errors", 0);
    Ok(r)
}
