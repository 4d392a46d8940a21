//! A tiny curl on gyre's HTTP client:
//! `cargo run --example https_get -- https://HOST/PATH [--ca FILE]`.
//!
//! Prints the status line, the headers, a blank line and the body (as raw
//! bytes) to stdout, like `curl -i`. `--ca FILE` adds the CA certificates of
//! a PEM file to the public roots (for a private or test CA). Any response
//! exits 0; a failure (DNS, connect, TLS, time-out, a malformed response)
//! prints the error to stderr and exits 1. `RUST_LOG=debug` shows what the
//! client does.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gyre::protocols::http::{HttpClient, HttpClientConfig, Response};
use gyre::protocols::tls;
use gyre::reactor::Reactor;

const USAGE: &str = "usage: https_get URL [--ca FILE]";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("https_get: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut url = None;
    let mut ca: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca" => ca = Some(args.next().ok_or(USAGE)?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if url.is_none() && !arg.starts_with('-') => url = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    let url = url.ok_or(USAGE)?;

    let mut config = HttpClientConfig::default();
    if let Some(path) = &ca {
        config.tls = tls::client_config_from_pem_file(path, &[b"http/1.1"])
            .map_err(|e| format!("--ca {}: {e}", path.display()))?;
    }
    let bound = config.request_timeout + Duration::from_secs(5);
    let reactor = Reactor::new().map_err(|e| format!("cannot start the reactor: {e}"))?;
    let client = HttpClient::with_config(&reactor, config);

    let response = client.get(&url);
    reactor
        .run_until(|| response.called(), bound)
        .map_err(|e| e.to_string())?;
    match response.take_result() {
        Some(Ok(response)) => print(&response).map_err(|e| format!("cannot write: {e}")),
        Some(Err(failure)) => Err(failure.to_string()),
        None => Err(format!("no response within {bound:?}")),
    }
}

fn print(response: &Response) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "HTTP/1.{} {} {}",
        response.version, response.status, response.reason
    )?;
    for (name, value) in &response.headers {
        writeln!(out, "{name}: {}", String::from_utf8_lossy(value))?;
    }
    writeln!(out)?;
    out.write_all(&response.body)?;
    out.flush()
}
