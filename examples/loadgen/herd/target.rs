//! Which herd servers a run talks to: addresses from `--addr`, or names
//! from `--config` and `--to`; and hop counts in a herd's graph.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use gyre::herd::HerdConfig;

use crate::cli::Options;
use crate::Result;

/// One server to send to.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Its name, when `--config` gave it (answers must carry it).
    pub name: Option<String>,
}

/// The herd configuration of `--config`, if any.
pub fn config(o: &Options) -> Result<Option<HerdConfig>> {
    o.config
        .as_ref()
        .map(|path| {
            HerdConfig::from_file(path)
                .map_err(|e| format!("--config {}: {e}", path.display()).into())
        })
        .transpose()
}

/// The servers of `--addr`, or of `--to` (default: all but `--as`) in
/// `--config`.
pub fn resolve(o: &Options) -> Result<Vec<Target>> {
    let Some(config) = config(o)? else {
        return Ok(o
            .addrs
            .iter()
            .map(|&addr| Target { addr, name: None })
            .collect());
    };
    let names: Vec<String> = if o.to.is_empty() {
        config
            .servers()
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| *n != o.as_name)
            .collect()
    } else {
        o.to.clone()
    };
    if names.is_empty() {
        return Err("no servers to send to".into());
    }
    names
        .into_iter()
        .map(|name| match config.addr(&name) {
            Some(addr) => Ok(Target {
                addr,
                name: Some(name),
            }),
            None => Err(format!("the herd has no server named {name:?}").into()),
        })
        .collect()
}

/// The number of links on the shortest path from `from` to `to`.
pub fn hops(config: &HerdConfig, from: &str, to: &str) -> Option<usize> {
    let mut dist: HashMap<&str, usize> = HashMap::from([(from, 0)]);
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        let d = dist[at];
        if at == to {
            return Some(d);
        }
        for next in config.neighbours(at) {
            if !dist.contains_key(next) {
                dist.insert(next, d + 1);
                queue.push_back(next);
            }
        }
    }
    None
}
