//! A load generator for any `\n` line echo server (gyre's line_echo, the
//! peers in benches/peers/, or your own), and for a herd (HERD.md: gyre's
//! herd, or benches/peers/twisted_herd.py).
//!
//! ```text
//! loadgen pingpong     --addr A [--count N] [--size S]
//! loadgen pipeline     --addr A [--connections C] [--depth D] [--seconds T] [--size S]
//! loadgen accept       --addr A [--seconds T] [--connections C] [--size S]
//! loadgen idle         --addr A [--connections C] [--wait W]
//! loadgen herd-iamat   (--addr A,B,.. | --config FILE [--to NAME,..]) [--connections C]
//!                      [--depth D] [--seconds T] [--clients K] [--rotate R]
//! loadgen herd-flood   --config FILE --via X --to Y [--as NAME] [--peer-tls DIR]
//!                      [--seconds T] [--rotate R]
//! loadgen herd-whatsat (--addr A,B,.. | --config FILE [--to NAME,..]) [--connections C]
//!                      [--depth D] [--seconds T] [--radius KM] [--max N] [--distinct K]
//! common:              [--server-pid PID[,PID..]] [--warmup SECONDS] [--label NAME]
//! ```
//!
//! Line echo modes (module `echo`):
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
//! Herd modes (module `herd`; see its docs for the details):
//!
//! - `herd-iamat`: C connections (spread round-robin over the servers given)
//!   with D IAMATs in flight on each for T seconds. Every IAMAT is new (a
//!   client ID of this run, a time later than any before it), so every one
//!   is stored, logged and flooded to the whole herd; every answer is
//!   checked (the AT line must echo the IAMAT's fields, with a well-formed
//!   time difference, from the right server when `--config` names them).
//!   IAMAT/s and answer latency percentiles.
//! - `herd-flood`: joins the herd as the member `--as` (default `Probe`,
//!   which the configuration must link to server `--via`), over peer TLS
//!   with `--peer-tls DIR` (the `herd pki init` files) or plain `PEER NAME`
//!   for a herd run with `--insecure-peer-links`; then, one at a time, sends
//!   an IAMAT to server `--to` and times it until its AT line arrives over
//!   the link (k hops: reported as `hops`). p50, p99, p99.9.
//! - `herd-whatsat`: reports one location per connection, then keeps D
//!   WHATSATs in flight on each of C connections for T seconds; every
//!   answer is checked for shape (the stored AT line, a Places JSON object
//!   with `results` no longer than asked and a `status`, the empty line).
//!   WHATSAT/s and latency percentiles.
//!
//! The herd limits IAMATs per source address (by default 50/s, bursts of
//! 200). `--rotate R` (default 150, under the burst) moves a connection to
//! a fresh loopback source address (127.x.y.z, in order from a point that
//! differs from run to run) after R
//! IAMATs: the old connection drains its answers and closes while the new
//! one carries on, so a herd with its default limits is measured at full
//! speed, at the price of one reconnection per R IAMATs. `--rotate 0`
//! keeps each connection for the whole run (for servers started with their
//! rate limits raised).
//!
//! `--server-pid` (one process, or a comma-separated list whose figures
//! are summed, e.g. the five processes of a herd) adds the server's CPU
//! time (utime + stime from /proc/PID/stat, in clock ticks, so 10 ms
//! resolution at 100 Hz) per request and its RSS after the run. Every mode
//! is bounded in time and count. The last line printed is a summary for
//! scripts:
//! `RESULT mode=pipeline lines_per_s=... p50_us=... p99_us=... cpu_us_per_req=...`
//! (`na` where a value is unknown). Any error (refused connection, wrong or
//! missing echo, time-out) exits with status 1; the herd modes count wrong
//! answers, print their report with `errors=N`, and then exit with status 1
//! if N is not 0.
//!
//! Loopback or your own test hosts only: this is a load test.

use std::error::Error;
use std::time::Duration;

mod cli;
mod echo;
mod herd;
mod report;
mod sys;

use cli::{parse_args, Mode};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// How long any single socket operation may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = parse_args(&args).and_then(|o| match o.mode {
        Mode::PingPong => echo::pingpong(&o),
        Mode::Pipeline => echo::pipeline(&o),
        Mode::Accept => echo::accept(&o),
        Mode::Idle => echo::idle(&o),
        Mode::HerdIamat => herd::iamat::run(&o),
        Mode::HerdFlood => herd::flood::run(&o),
        Mode::HerdWhatsat => herd::whatsat::run(&o),
    });
    match outcome {
        Ok(report) => {
            report.print();
            if report.errors() > 0 {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            println!("RESULT errors=1");
            std::process::exit(1);
        }
    }
}
