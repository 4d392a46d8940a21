//! `herd-whatsat`: C connections with D WHATSATs in flight on each, every
//! answer checked for shape; WHATSAT/s and latency.
//!
//! Each connection first reports its own client's location (one IAMAT,
//! answered before anything else is sent) and then asks about that
//! client, so the server knows it. An answer is HERD.md's: the stored AT
//! line (exactly the IAMAT's answer), `\n`, a JSON object in the shape of
//! Places' legacy Nearby Search response, `\n\n`. The check: the AT line
//! is the one stored; the JSON parses as an object whose `results` is an
//! array of at most `--max` entries, whose `status` is a string and whose
//! `html_attributions` is an array. Statuses other than `OK` and
//! `ZERO_RESULTS` (the Places service failing or refusing, e.g.
//! `OVER_QUERY_LIMIT` when its queue is full) are well-formed answers,
//! counted apart as `not_ok`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

use super::conn::{find_newline, Wire};
use super::net::{connect_from, Sources};
use super::target::resolve;
use super::wire::{check_at, run_nonce, Errors, IamatMaker};
use crate::cli::Options;
use crate::report::{histogram, record, Report};
use crate::sys::{raise_nofile, CpuMeter};
use crate::{Result, IO_TIMEOUT};

/// The most input buffered without a complete answer (Places answers are
/// a few KiB; 20 results at most).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

struct WConn {
    wire: Wire,
    /// `WHATSAT client ` (the radius and the bound follow).
    prefix: Vec<u8>,
    /// The AT line every answer must start with.
    at_line: Vec<u8>,
    next_radius: usize,
    pending: VecDeque<Instant>,
}

impl WConn {
    fn queue(&mut self, radii: &[String], max: u32, now: Instant) {
        let radius = &radii[self.next_radius % radii.len()];
        self.next_radius += 1;
        self.wire.out.extend_from_slice(&self.prefix);
        let _ = writeln!(self.wire.out, "{radius} {max}");
        self.pending.push_back(now);
    }
}

/// How one answer was judged.
enum Verdict {
    Ok,
    NotOk,
    Bad(&'static str),
}

/// Checks one answer (without its final `\n\n`).
fn check_answer(answer: &[u8], at_line: &[u8], max: u32) -> Verdict {
    let Some(nl) = find_newline(answer) else {
        return Verdict::Bad("no JSON after the AT line");
    };
    if &answer[..nl] != at_line {
        return Verdict::Bad("not the stored AT line");
    }
    let Ok(json) = serde_json::from_slice::<Value>(&answer[nl + 1..]) else {
        return Verdict::Bad("the body is not JSON");
    };
    let results = json.get("results").and_then(Value::as_array);
    let status = json.get("status").and_then(Value::as_str);
    let attributions = json.get("html_attributions").and_then(Value::as_array);
    match (results, status, attributions) {
        (Some(r), Some(_), Some(_)) if r.len() > max as usize => {
            Verdict::Bad("more results than asked for")
        }
        (Some(_), Some("OK" | "ZERO_RESULTS"), Some(_)) => Verdict::Ok,
        (Some(_), Some(_), Some(_)) => Verdict::NotOk,
        _ => Verdict::Bad("JSON without results, status or html_attributions"),
    }
}

/// The radii to cycle through: `--radius`, or `--distinct K` spaced up to
/// 50 km.
fn radii(o: &Options) -> Vec<String> {
    if o.distinct <= 1 {
        return vec![o.radius.clone()];
    }
    (1..=o.distinct)
        .map(|i| format!("{:.3}", 50.0 * i as f64 / o.distinct as f64))
        .collect()
}

pub fn run(o: &Options) -> Result<Report> {
    let targets = resolve(o)?;
    let nconn = o.connections.unwrap_or(4);
    let depth = o.depth;
    let max = o.max_results;
    let radii = radii(o);
    raise_nofile(nconn as u64 + 64)?;
    let nonce = run_nonce();
    let mut sources = Sources::new(o.rotate);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(nconn);
    let mut errors = Errors::default();
    for i in 0..nconn {
        let target = &targets[i % targets.len()];
        let stream = connect_from(target.addr, sources.pick(target.addr))?;
        // The client's location, answered before the WHATSATs start.
        let mut maker = IamatMaker::new(&nonce, i, 1);
        let mut out = Vec::new();
        let sent = maker.write_next(&mut out);
        let mut fields = Vec::new();
        maker.write_fields(sent, &mut fields);
        (&stream).write_all(&out)?;
        let mut reader = BufReader::new(&stream);
        let mut at_line = Vec::new();
        reader
            .read_until(b'\n', &mut at_line)
            .map_err(|e| format!("the IAMAT answer from {}: {e}", target.addr))?;
        if !reader.buffer().is_empty() {
            return Err(format!("{} sent more than the IAMAT's answer", target.addr).into());
        }
        if at_line.pop() != Some(b'\n') {
            return Err(format!("{} closed before answering the IAMAT", target.addr).into());
        }
        let name = target.name.as_deref().map(str::as_bytes);
        if let Err(bad) = check_at(&at_line, name, &fields) {
            return Err(format!(
                "the IAMAT before the WHATSATs was answered {:?}: {}",
                String::from_utf8_lossy(&at_line),
                bad.as_str()
            )
            .into());
        }
        let mut wire = Wire::new(stream, format!("connection {i} to {}", target.addr))?;
        poll.registry().register(
            &mut wire.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut prefix = b"WHATSAT ".to_vec();
        prefix.extend_from_slice(maker.client(0));
        prefix.push(b' ');
        conns.push(WConn {
            wire,
            prefix,
            at_line,
            next_radius: i,
            pending: VecDeque::with_capacity(depth),
        });
    }
    let begin = Instant::now();
    for c in &mut conns {
        for _ in 0..depth {
            c.queue(&radii, max, begin);
        }
        c.wire.flush()?;
    }
    let measure_start = begin + Duration::from_secs_f64(o.warmup.unwrap_or(0.5));
    let measure_end = measure_start + Duration::from_secs_f64(o.seconds);
    let mut cpu: Option<CpuMeter> = None;
    let mut hist = histogram()?;
    let (mut measured, mut not_ok) = (0u64, 0u64);
    let mut last_answer = Instant::now();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 256 * 1024];
    loop {
        let now = Instant::now();
        if now >= measure_start && cpu.is_none() {
            cpu = Some(CpuMeter::start(&o.server_pids)?);
        }
        let sending = now < measure_end;
        let in_flight: usize = conns.iter().map(|c| c.pending.len()).sum();
        if !sending && in_flight == 0 {
            break;
        }
        if in_flight > 0 && now.saturating_duration_since(last_answer) > IO_TIMEOUT {
            return Err(format!("{in_flight} WHATSATs unanswered for {IO_TIMEOUT:?}").into());
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}").into()),
        }
        let now = Instant::now();
        let measuring = now >= measure_start && now < measure_end;
        let sending = now < measure_end;
        for event in events.iter() {
            let Some(c) = conns.get_mut(event.token().0) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let closing = event.is_read_closed() || event.is_error();
                c.wire.read_available(&mut scratch, closing, MAX_ANSWER)?;
                let mut at = 0;
                let mut answered = 0;
                loop {
                    let rest = &c.wire.inbuf[at..];
                    let Some(nl) = find_newline(rest) else { break };
                    // A one-line answer: `? WHATSAT ...` (or garbage).
                    let end = if rest.starts_with(b"AT ") {
                        match rest.windows(2).position(|w| w == b"\n\n") {
                            Some(p) => p,
                            None => break,
                        }
                    } else {
                        nl
                    };
                    let answer = &rest[..end];
                    at += if end == nl { nl + 1 } else { end + 2 };
                    let sent_at = c
                        .pending
                        .pop_front()
                        .ok_or_else(|| format!("{}: an answer to no WHATSAT", c.wire.name))?;
                    if end == nl {
                        errors.add("a one-line answer to a WHATSAT", answer);
                    } else {
                        match check_answer(answer, &c.at_line, max) {
                            Verdict::Ok => {}
                            Verdict::NotOk => not_ok += 1,
                            Verdict::Bad(why) => errors.add(why, answer),
                        }
                    }
                    answered += 1;
                    last_answer = now;
                    if measuring {
                        measured += 1;
                        record(&mut hist, now.saturating_duration_since(sent_at));
                    }
                }
                c.wire.inbuf.drain(..at);
                if c.wire.eof && !c.pending.is_empty() {
                    return Err(format!(
                        "{}: the server closed it with {} WHATSATs unanswered",
                        c.wire.name,
                        c.pending.len()
                    )
                    .into());
                }
                if sending {
                    for _ in 0..answered {
                        c.queue(&radii, max, now);
                    }
                }
            }
            c.wire.flush()?;
        }
    }
    let cpu_per = match &cpu {
        Some(m) => m.per_request(measured)?,
        None => None,
    };
    let server_busy = match &cpu {
        Some(m) => m.busy_pct()?,
        None => None,
    };
    errors.print_samples();
    let mut r = Report::new(o, "herd-whatsat");
    r.put("servers", targets.len());
    r.put("connections", nconn);
    r.put("depth", depth);
    r.put("radii", radii.len());
    r.put("max", max);
    r.num("seconds", o.seconds, 3);
    r.put("whatsats", measured);
    r.num("whatsats_per_s", measured as f64 / o.seconds, 0);
    r.latencies(&hist);
    r.opt("cpu_us_per_req", cpu_per, 3);
    r.opt("server_cpu_pct", server_busy, 0);
    r.server_rss(&o.server_pids)?;
    r.put("not_ok", not_ok);
    r.put("errors", errors.count);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_by_shape() {
        let at = b"AT A +0.1 c +1+1 1.0";
        let ok = b"AT A +0.1 c +1+1 1.0\n{\"html_attributions\": [], \"results\": [{}], \"status\": \"OK\"}";
        assert!(matches!(check_answer(ok, at, 5), Verdict::Ok));
        assert!(matches!(check_answer(ok, at, 0), Verdict::Bad(_)));
        let busy = b"AT A +0.1 c +1+1 1.0\n{\"html_attributions\": [], \"results\": [], \"status\": \"OVER_QUERY_LIMIT\"}";
        assert!(matches!(check_answer(busy, at, 5), Verdict::NotOk));
        assert!(matches!(
            check_answer(b"AT B +0.1 c +1+1 1.0\n{}", at, 5),
            Verdict::Bad(_)
        ));
        assert!(matches!(
            check_answer(b"AT A +0.1 c +1+1 1.0\n{", at, 5),
            Verdict::Bad(_)
        ));
    }
}
