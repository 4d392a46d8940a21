//! `herd-iamat`: C connections with D IAMATs in flight on each, every one
//! new, every answer checked; IAMAT/s and answer latency.
//!
//! One thread, one mio loop (as the line echo pipeline). A connection
//! *slot* keeps D IAMATs in flight on its current connection; with
//! `--rotate R`, after R IAMATs the slot opens a connection from the next
//! source address and sends there, while the old one only collects its
//! outstanding answers and then closes (so at a rotation the slot has up
//! to 2D in flight for a moment). Latency runs from when an IAMAT is
//! queued for writing to when its answer is read. `iamats` and the
//! latencies count the correct answers read in the measured window; wrong
//! answers (warm-up and drain included) count in `errors`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::conn::{find_newline, Wire};
use super::net::{connect_from, Sources};
use super::target::{resolve, Target};
use super::wire::{check_at, run_nonce, Errors, IamatMaker, Sent};
use crate::cli::Options;
use crate::report::{histogram, record, Report};
use crate::sys::{raise_nofile, CpuMeter};
use crate::{Result, IO_TIMEOUT};

/// The longest answer line accepted (the herd's line limit plus slack).
const MAX_LINE: usize = 128 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The slot's current connection: answered IAMATs are replaced.
    Active,
    /// Replaced by a newer connection of its slot: collects its
    /// outstanding answers, then closes.
    Draining,
}

struct HerdConn {
    wire: Wire,
    slot: usize,
    state: State,
    /// IAMATs sent on this connection.
    sent: u64,
    pending: VecDeque<(Instant, Sent)>,
}

struct Slot {
    maker: IamatMaker,
    target: usize,
}

/// The connections of the run, by token (tokens are never reused, so an
/// event for a closed connection finds nothing).
struct Conns {
    poll: Poll,
    by_token: HashMap<usize, HerdConn>,
    next_token: usize,
    sources: Sources,
    opened: u64,
}

impl Conns {
    /// Opens a connection for `slot` to `target` (from the next source
    /// address when rotating) and fills it with `depth` IAMATs.
    fn open(
        &mut self,
        slot_id: usize,
        slot: &mut Slot,
        target: &Target,
        depth: usize,
        now: Instant,
    ) -> Result<()> {
        let source = self.sources.pick(target.addr);
        let stream = connect_from(target.addr, source)?;
        let token = self.next_token;
        self.next_token += 1;
        let mut wire = Wire::new(stream, format!("connection {token} to {}", target.addr))?;
        self.poll.registry().register(
            &mut wire.stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut c = HerdConn {
            wire,
            slot: slot_id,
            state: State::Active,
            sent: 0,
            pending: VecDeque::with_capacity(depth),
        };
        for _ in 0..depth {
            queue(&mut c, slot, now);
        }
        c.wire.flush()?;
        self.by_token.insert(token, c);
        self.opened += 1;
        Ok(())
    }

    fn close(&mut self, token: usize) -> Result<()> {
        if let Some(mut c) = self.by_token.remove(&token) {
            self.poll.registry().deregister(&mut c.wire.stream)?;
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.by_token.values().map(|c| c.pending.len()).sum()
    }
}

fn queue(c: &mut HerdConn, slot: &mut Slot, now: Instant) {
    let sent = slot.maker.write_next(&mut c.wire.out);
    c.pending.push_back((now, sent));
    c.sent += 1;
}

pub fn run(o: &Options) -> Result<Report> {
    let targets = resolve(o)?;
    let nconn = o.connections.unwrap_or(4);
    let depth = o.depth;
    raise_nofile(2 * nconn as u64 + 64)?;
    let nonce = run_nonce();
    let mut slots: Vec<Slot> = (0..nconn)
        .map(|i| Slot {
            maker: IamatMaker::new(&nonce, i, o.clients),
            target: i % targets.len(),
        })
        .collect();
    let mut conns = Conns {
        poll: Poll::new()?,
        by_token: HashMap::new(),
        next_token: 0,
        sources: Sources::new(o.rotate),
        opened: 0,
    };
    let begin = Instant::now();
    for (i, slot) in slots.iter_mut().enumerate() {
        let target = &targets[slot.target];
        conns.open(i, slot, target, depth, begin)?;
    }
    let measure_start = begin + Duration::from_secs_f64(o.warmup.unwrap_or(0.5));
    let measure_end = measure_start + Duration::from_secs_f64(o.seconds);
    let mut cpu: Option<(CpuMeter, CpuMeter)> = None;
    let mut hist = histogram()?;
    let mut measured = 0u64;
    let mut errors = Errors::default();
    let mut reconnects_measured = 0u64;
    let mut last_answer = Instant::now();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 256 * 1024];
    let mut fields = Vec::with_capacity(256);
    let mut to_open: Vec<usize> = Vec::new();
    let mut to_close: Vec<usize> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= measure_start && cpu.is_none() {
            cpu = Some((
                CpuMeter::start(&o.server_pids)?,
                CpuMeter::start(&[std::process::id()])?,
            ));
        }
        let sending = now < measure_end;
        let in_flight = conns.in_flight();
        if !sending && in_flight == 0 {
            break;
        }
        if in_flight > 0 && now.saturating_duration_since(last_answer) > IO_TIMEOUT {
            return Err(format!("{in_flight} IAMATs unanswered for {IO_TIMEOUT:?}").into());
        }
        let timeout = if now < measure_start {
            measure_start - now
        } else if sending {
            measure_end - now
        } else {
            Duration::from_millis(100)
        };
        match conns
            .poll
            .poll(&mut events, Some(timeout.min(Duration::from_millis(100))))
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        let now = Instant::now();
        let measuring = now >= measure_start && now < measure_end;
        let sending = now < measure_end;
        for event in events.iter() {
            let token = event.token().0;
            let Some(c) = conns.by_token.get_mut(&token) else {
                continue;
            };
            let slot = &mut slots[c.slot];
            let expected = targets[slot.target].name.as_deref().map(str::as_bytes);
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let closing = event.is_read_closed() || event.is_error();
                c.wire.read_available(&mut scratch, closing, MAX_LINE)?;
                let mut at = 0;
                let mut answered = 0usize;
                while let Some(nl) = find_newline(&c.wire.inbuf[at..]) {
                    let line = &c.wire.inbuf[at..at + nl];
                    at += nl + 1;
                    let (sent_at, sent) = c.pending.pop_front().ok_or_else(|| {
                        format!(
                            "{}: an answer to no IAMAT: {:?}",
                            c.wire.name,
                            String::from_utf8_lossy(line)
                        )
                    })?;
                    fields.clear();
                    slot.maker.write_fields(sent, &mut fields);
                    answered += 1;
                    last_answer = now;
                    match check_at(line, expected, &fields) {
                        Ok(_) if measuring => {
                            measured += 1;
                            record(&mut hist, now.saturating_duration_since(sent_at));
                        }
                        Ok(_) => {}
                        Err(bad) => errors.bad(bad, line),
                    }
                }
                c.wire.inbuf.drain(..at);
                if c.wire.eof && !c.pending.is_empty() {
                    return Err(format!(
                        "{}: the server closed it with {} IAMATs unanswered",
                        c.wire.name,
                        c.pending.len()
                    )
                    .into());
                }
                if sending && c.state == State::Active {
                    for _ in 0..answered {
                        if conns.sources.budget().is_some_and(|b| c.sent >= b) {
                            c.state = State::Draining;
                            to_open.push(c.slot);
                            break;
                        }
                        queue(c, slot, now);
                    }
                }
                if c.state == State::Draining && c.pending.is_empty() {
                    to_close.push(token);
                }
            }
            c.wire.flush()?;
        }
        for token in to_close.drain(..) {
            conns.close(token)?;
        }
        for slot_id in to_open.drain(..) {
            let slot = &mut slots[slot_id];
            let target = &targets[slot.target];
            conns.open(slot_id, slot, target, depth, now)?;
            if measuring {
                reconnects_measured += 1;
            }
        }
    }
    let (cpu, server_busy, client_busy) = match cpu {
        Some((server, client)) => (
            server.per_request(measured)?,
            server.busy_pct()?,
            client.busy_pct()?,
        ),
        None => (None, None, None),
    };
    errors.print_samples();
    let seconds = o.seconds;
    let mut r = Report::new(o, "herd-iamat");
    r.put("servers", targets.len());
    r.put("connections", nconn);
    r.put("depth", depth);
    r.put("clients_per_conn", o.clients);
    r.put("rotate", o.rotate);
    r.num("seconds", seconds, 3);
    r.put("iamats", measured);
    r.num("iamats_per_s", measured as f64 / seconds, 0);
    r.latencies(&hist);
    r.opt("cpu_us_per_req", cpu, 3);
    r.opt("server_cpu_pct", server_busy, 0);
    r.opt("client_cpu_pct", client_busy, 0);
    r.put("reconnects", reconnects_measured);
    r.put("source_addresses", conns.sources.used());
    r.server_rss(&o.server_pids)?;
    r.put("refused", errors.refused);
    r.put("errors", errors.count);
    Ok(r)
}
