//! `herd-flood`: the load generator joins the herd as a member and times
//! IAMATs from the moment they are sent to a server k hops away until
//! their AT line arrives over its own link.
//!
//! The herd configuration (`--config`) must hold the member (`--as`,
//! default `Probe`) with a link to server `--via` (X); the IAMATs go to
//! server `--to` (Y), and `hops` is the shortest path from Y to the member
//! (Y to X plus the last link). The member dials X and sends `PEER NAME`;
//! with `--peer-tls DIR` it then does the link's mutual TLS handshake with
//! `DIR/NAME.pem` and `DIR/NAME-key.pem` (from `herd pki init DIR --config
//! FILE`), checking that X's certificate names X (the herd's own client
//! configuration, [`gyre::herd::PeerCredentials::client_config`]);
//! without it the link is plain (a herd run with `--insecure-peer-links`).
//! X's dials to the member's own address in the configuration are refused
//! (nothing listens there): the member's link is the one it dialled.
//!
//! Closed loop, one thread, blocking sockets: send an IAMAT to Y, read Y's
//! answer (checked), then read the link until the AT line for that IAMAT
//! (from Y, with the IAMAT's fields) arrives; the time is taken when the
//! read returns it. Y answers its client before the AT can cross the k
//! links, so the loop is already waiting on the link when it arrives.
//! Other AT lines on the link (X's catch-up store, other runs' floods) are
//! skipped and counted as `other_lines`. `--rotate` moves the client
//! connection to Y to a fresh source address every R IAMATs (outside the
//! timed part).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use gyre::herd::PeerCredentials;
use rustls::pki_types::ServerName;

use super::net::{connect_from, Sources};
use super::target::{config, hops};
use super::wire::{check_at, run_nonce, BadAnswer, Errors, IamatMaker};
use crate::cli::Options;
use crate::report::{histogram, record, Report};
use crate::{Result, IO_TIMEOUT};

/// The longest line accepted from the link or the client connection.
const MAX_LINE: usize = 128 * 1024;

/// The member's link to X: plain, or TLS after the `PEER` line.
enum LinkStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for LinkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkStream::Plain(s) => s.read(buf),
            LinkStream::Tls(s) => s.read(buf),
        }
    }
}

/// Dials `via` at `addr` as `name`: `PEER name`, then TLS when `tls` holds
/// credentials.
fn dial_link(
    addr: SocketAddr,
    name: &str,
    via: &str,
    tls: Option<PeerCredentials>,
) -> Result<LinkStream> {
    let mut sock = connect_from(addr, None)?;
    sock.write_all(format!("PEER {name}\n").as_bytes())?;
    let Some(creds) = tls else {
        return Ok(LinkStream::Plain(sock));
    };
    let server_name = ServerName::try_from(via.to_string())
        .map_err(|e| format!("{via:?} is not a DNS name for TLS: {e}"))?;
    let mut conn = rustls::ClientConnection::new(creds.client_config(), server_name)?;
    let deadline = Instant::now() + IO_TIMEOUT;
    while conn.is_handshaking() {
        if Instant::now() > deadline {
            return Err(
                format!("the link's TLS handshake with {via} took over {IO_TIMEOUT:?}").into(),
            );
        }
        conn.complete_io(&mut sock)
            .map_err(|e| format!("the link's TLS handshake with {via}: {e}"))?;
    }
    Ok(LinkStream::Tls(Box::new(rustls::StreamOwned::new(
        conn, sock,
    ))))
}

/// Reads one line (without `\n`) into `line`; an error past `MAX_LINE`
/// bytes, at EOF, or after the socket's read time-out.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>, what: &str) -> Result<()> {
    line.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("{what}: nothing for {IO_TIMEOUT:?}").into())
            }
            Err(e) => return Err(format!("{what}: read: {e}").into()),
        };
        if buf.is_empty() {
            return Err(format!("{what}: closed by the server").into());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                line.extend_from_slice(&buf[..nl]);
                r.consume(nl + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                r.consume(n);
                if line.len() > MAX_LINE {
                    return Err(format!("{what}: a line over {MAX_LINE} bytes").into());
                }
            }
        }
    }
}

pub fn run(o: &Options) -> Result<Report> {
    let config = config(o)?.ok_or("herd-flood needs --config FILE (the herd, with the member)")?;
    let me = o.as_name.as_str();
    let via = o.via.as_deref().ok_or("herd-flood needs --via NAME")?;
    let [to] = o.to.as_slice() else {
        return Err("herd-flood needs --to NAME (one server)".into());
    };
    if config.server(me).is_none() {
        return Err(format!("the herd configuration has no member {me:?} (--as)").into());
    }
    if !config.neighbours(me).contains(&via) {
        return Err(format!("{me} is not linked to {via} in the herd configuration").into());
    }
    let k = hops(&config, to, me).ok_or_else(|| format!("no path from {to} to {me}"))?;
    let via_addr = config
        .addr(via)
        .ok_or_else(|| format!("no server {via:?}"))?;
    let to_addr = config.addr(to).ok_or_else(|| format!("no server {to:?}"))?;
    let creds = o
        .peer_tls
        .as_ref()
        .map(|dir| {
            PeerCredentials::load(dir, me).map_err(|e| format!("--peer-tls {}: {e}", dir.display()))
        })
        .transpose()?;
    let tls = creds.is_some();
    let mut link = BufReader::with_capacity(64 * 1024, dial_link(via_addr, me, via, creds)?);

    let mut sources = Sources::new(o.rotate);
    let connect_to = |sources: &mut Sources| -> Result<BufReader<TcpStream>> {
        let source = sources.pick(to_addr);
        Ok(BufReader::new(connect_from(to_addr, source)?))
    };
    let mut client = connect_to(&mut sources)?;
    let mut on_this_conn = 0u64;
    let mut maker = IamatMaker::new(&run_nonce(), 0, o.clients);
    let mut line = Vec::with_capacity(256);
    let mut fields = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(256);
    let mut hist = histogram()?;
    let mut errors = Errors::default();
    let mut other_lines = 0u64;
    let mut measured = 0u64;
    let mut reconnects = 0u64;
    let begin = Instant::now();
    let measure_start = begin + Duration::from_secs_f64(o.warmup.unwrap_or(0.5));
    let measure_end = measure_start + Duration::from_secs_f64(o.seconds);
    let to_bytes = to.as_bytes();
    loop {
        let now = Instant::now();
        if now >= measure_end {
            break;
        }
        if sources.budget().is_some_and(|b| on_this_conn >= b) {
            client = connect_to(&mut sources)?;
            on_this_conn = 0;
            reconnects += 1;
        }
        out.clear();
        let sent = maker.write_next(&mut out);
        fields.clear();
        maker.write_fields(sent, &mut fields);
        let t0 = Instant::now();
        client
            .get_mut()
            .write_all(&out)
            .map_err(|e| format!("IAMAT to {to}: {e}"))?;
        on_this_conn += 1;
        read_line(
            &mut client,
            &mut line,
            &format!("the client connection to {to}"),
        )?;
        if let Err(bad) = check_at(&line, Some(to_bytes), &fields) {
            // A refused IAMAT is not flooded: nothing to wait for.
            errors.bad(bad, &line);
            continue;
        }
        let deadline = t0 + IO_TIMEOUT;
        loop {
            read_line(&mut link, &mut line, &format!("the link from {via}"))?;
            let arrived = Instant::now();
            if line.trim_ascii() == b"PING" {
                // A link keep-alive (herd/PROTOCOL.md, section 5), not an answer.
                other_lines += 1;
                continue;
            }
            match check_at(&line, Some(to_bytes), &fields) {
                Ok(_) => {
                    if t0 >= measure_start {
                        measured += 1;
                        record(&mut hist, arrived.saturating_duration_since(t0));
                    }
                    break;
                }
                Err(BadAnswer::NotAt | BadAnswer::Refused) => {
                    errors.add("not an AT line on the link", &line)
                }
                Err(_) => other_lines += 1,
            }
            if arrived > deadline {
                return Err(format!("the AT line of an IAMAT to {to} did not arrive over the link within {IO_TIMEOUT:?}").into());
            }
        }
    }
    errors.print_samples();
    let mut r = Report::new(o, "herd-flood");
    r.put("as", me);
    r.put("via", via);
    r.put("to", to);
    r.put("hops", k);
    r.put("peer_tls", if tls { "yes" } else { "no" });
    r.num("seconds", o.seconds, 3);
    r.put("samples", measured);
    r.num("floods_per_s", measured as f64 / o.seconds, 0);
    r.latencies(&hist);
    r.put("other_lines", other_lines);
    r.put("reconnects", reconnects);
    r.put("refused", errors.refused);
    r.put("errors", errors.count);
    Ok(r)
}
