//! Command-line settings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::proxy::NamedToxic;

/// The usage text.
pub const USAGE: &str = "usage: faultproxy --listen ADDR --upstream HOST:PORT [--control ADDR] \
[--seed N] [--max-connections N] [--connect-timeout-ms N] [--toxic 'NAME DIRECTION KIND key=value...']...";

/// What the command line asked for.
#[derive(Debug)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where their connections are forwarded (resolved once, at start).
    pub upstream: SocketAddr,
    /// The control port, if any.
    pub control: Option<SocketAddr>,
    /// The random seed; drawn from the OS when not given.
    pub seed: u64,
    /// Most relayed connections at once.
    pub max_connections: usize,
    /// Upstream connect time-out.
    pub connect_timeout: Duration,
    /// Toxics in force from the start.
    pub toxics: Vec<NamedToxic>,
}

impl Config {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
        let mut listen = None;
        let mut upstream = None;
        let mut control = None;
        let mut seed = None;
        let mut max_connections = 1024;
        let mut connect_timeout = Duration::from_secs(10);
        let mut toxics = Vec::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_string());
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--listen" => listen = Some(address(&flag, &value)?),
                "--upstream" => upstream = Some(address(&flag, &value)?),
                "--control" => control = Some(address(&flag, &value)?),
                "--seed" => seed = Some(number(&flag, &value)?),
                "--max-connections" => {
                    max_connections = usize::try_from(number(&flag, &value)?)
                        .map_err(|_| format!("{flag} {value} is too large"))?
                }
                "--connect-timeout-ms" => {
                    connect_timeout = Duration::from_millis(number(&flag, &value)?)
                }
                "--toxic" => {
                    let words: Vec<&str> = value.split_ascii_whitespace().collect();
                    let toxic = NamedToxic::parse(&words).map_err(|e| format!("--toxic: {e}"))?;
                    if toxics.iter().any(|t: &NamedToxic| t.name == toxic.name) {
                        return Err(format!("--toxic: {} given twice", toxic.name));
                    }
                    toxics.push(toxic);
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        Ok(Config {
            listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
            upstream: upstream.ok_or_else(|| format!("--upstream is required\n{USAGE}"))?,
            control,
            seed: seed.unwrap_or_else(|| fastrand::u64(..)),
            max_connections,
            connect_timeout,
            toxics,
        })
    }
}

/// Resolves `HOST:PORT` to its first address.
fn address(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .to_socket_addrs()
        .map_err(|e| format!("{flag} {value}: {e}"))?
        .next()
        .ok_or_else(|| format!("{flag} {value}: no address"))
}

fn number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} {value}: not a whole number"))
}
