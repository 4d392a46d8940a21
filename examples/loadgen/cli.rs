//! The command line: one mode word, then `--flag value` pairs (see the
//! crate docs in main.rs for which flags each mode reads).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Result;

pub const USAGE: &str = "usage: loadgen MODE [OPTIONS]
  modes: pingpong pipeline accept idle (a line echo server at --addr HOST:PORT)
         herd-iamat herd-flood herd-whatsat (a herd: --addr A,B,.. or --config FILE)
  echo:  [--count N] [--connections C] [--depth D] [--seconds T] [--size BYTES] [--wait SECONDS]
  herd:  [--config FILE] [--to NAME[,NAME..]] [--via NAME] [--as NAME] [--peer-tls DIR]
         [--connections C] [--depth D] [--seconds T] [--clients K] [--rotate R]
         [--radius KM] [--max N] [--distinct K]
  common: [--warmup SECONDS] [--server-pid PID[,PID..]] [--label NAME]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PingPong,
    Pipeline,
    Accept,
    Idle,
    HerdIamat,
    HerdFlood,
    HerdWhatsat,
}

impl Mode {
    /// The mode's name on the command line and in the RESULT line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::PingPong => "pingpong",
            Mode::Pipeline => "pipeline",
            Mode::Accept => "accept",
            Mode::Idle => "idle",
            Mode::HerdIamat => "herd-iamat",
            Mode::HerdFlood => "herd-flood",
            Mode::HerdWhatsat => "herd-whatsat",
        }
    }

    fn is_herd(self) -> bool {
        matches!(self, Mode::HerdIamat | Mode::HerdFlood | Mode::HerdWhatsat)
    }
}

const MODES: [Mode; 7] = [
    Mode::PingPong,
    Mode::Pipeline,
    Mode::Accept,
    Mode::Idle,
    Mode::HerdIamat,
    Mode::HerdFlood,
    Mode::HerdWhatsat,
];

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// The first of `addrs` (the echo modes take exactly one).
    pub addr: SocketAddr,
    /// `--addr A[,B..]`.
    pub addrs: Vec<SocketAddr>,
    pub count: u64,
    pub connections: Option<usize>,
    pub depth: usize,
    pub seconds: f64,
    pub size: usize,
    pub warmup: Option<f64>,
    pub wait: f64,
    /// The first of `server_pids` (the echo modes' memory figures).
    pub server_pid: Option<u32>,
    /// `--server-pid PID[,PID..]`: CPU time is summed over them.
    pub server_pids: Vec<u32>,
    pub label: Option<String>,
    /// Herd modes: `--config FILE`, the herd's configuration JSON.
    pub config: Option<PathBuf>,
    /// `--to NAME[,NAME..]`: the servers to send to (names in `--config`).
    pub to: Vec<String>,
    /// `--via NAME`: herd-flood: the server the probe links to.
    pub via: Option<String>,
    /// `--as NAME`: herd-flood: the member the load generator plays.
    pub as_name: String,
    /// `--peer-tls DIR`: herd-flood: `herd pki init` files (`ca.pem`,
    /// `NAME.pem`, `NAME-key.pem`); without it the link is plain.
    pub peer_tls: Option<PathBuf>,
    /// `--clients K`: client IDs per connection (herd-iamat).
    pub clients: usize,
    /// `--rotate R`: IAMATs per source address (0: never move).
    pub rotate: u64,
    /// `--radius KM` (WHATSAT's radius field, sent as given).
    pub radius: String,
    /// `--max N` (WHATSAT's bound on results).
    pub max_results: u32,
    /// `--distinct K`: WHATSATs cycle through K radii (K Places queries).
    pub distinct: usize,
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    v.parse()
        .map_err(|e| format!("{flag} {v:?}: {e}\n{USAGE}").into())
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    v.split(',').map(|item| num(flag, item.trim())).collect()
}

pub fn parse_args(args: &[String]) -> Result<Options> {
    let mode = match args.first().map(String::as_str) {
        Some("-h" | "--help") | None => return Err(USAGE.into()),
        Some(word) => MODES
            .into_iter()
            .find(|m| m.name() == word)
            .ok_or_else(|| format!("unknown mode {word:?}\n{USAGE}"))?,
    };
    let default_addr = SocketAddr::from(([127, 0, 0, 1], 7001));
    let mut o = Options {
        mode,
        addr: default_addr,
        addrs: Vec::new(),
        count: 20_000,
        connections: None,
        depth: 16,
        seconds: 3.0,
        size: 32,
        warmup: None,
        wait: 1.0,
        server_pid: None,
        server_pids: Vec::new(),
        label: None,
        config: None,
        to: Vec::new(),
        via: None,
        as_name: "Probe".to_string(),
        peer_tls: None,
        clients: 16,
        rotate: 150,
        radius: "10".to_string(),
        max_results: 5,
        distinct: 1,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--addr" => o.addrs = list(flag, value()?)?,
            "--count" => o.count = num(flag, value()?)?,
            "--connections" => o.connections = Some(num(flag, value()?)?),
            "--depth" => o.depth = num(flag, value()?)?,
            "--seconds" => o.seconds = num(flag, value()?)?,
            "--size" => o.size = num(flag, value()?)?,
            "--warmup" => o.warmup = Some(num(flag, value()?)?),
            "--wait" => o.wait = num(flag, value()?)?,
            "--server-pid" => o.server_pids = list(flag, value()?)?,
            "--label" => o.label = Some(value()?.clone()),
            "--config" => o.config = Some(PathBuf::from(value()?)),
            "--to" => o.to = value()?.split(',').map(str::to_string).collect(),
            "--via" => o.via = Some(value()?.clone()),
            "--as" => o.as_name = value()?.clone(),
            "--peer-tls" => o.peer_tls = Some(PathBuf::from(value()?)),
            "--clients" => o.clients = num(flag, value()?)?,
            "--rotate" => o.rotate = num(flag, value()?)?,
            "--radius" => o.radius = value()?.clone(),
            "--max" => o.max_results = num(flag, value()?)?,
            "--distinct" => o.distinct = num(flag, value()?)?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}").into()),
        }
    }
    check(&mut o)?;
    Ok(o)
}

/// Checks the values' ranges (every mode is bounded in time and count).
fn check(o: &mut Options) -> Result<()> {
    if !o.mode.is_herd() {
        match o.addrs.len() {
            0 => o.addrs.push(o.addr),
            1 => {}
            _ => return Err(format!("{} takes one --addr", o.mode.name()).into()),
        }
        if o.config.is_some() || !o.to.is_empty() || o.via.is_some() || o.peer_tls.is_some() {
            return Err(format!(
                "{} is not a herd mode: no --config, --to, --via or --peer-tls",
                o.mode.name()
            )
            .into());
        }
    } else if o.addrs.is_empty() == o.config.is_none() && o.mode != Mode::HerdFlood {
        return Err(format!(
            "{} needs either --addr A[,B..] or --config FILE",
            o.mode.name()
        )
        .into());
    }
    if let Some(first) = o.addrs.first() {
        o.addr = *first;
    }
    if o.addrs.len() > 1024 || o.to.len() > 1024 || o.server_pids.len() > 1024 {
        return Err("at most 1024 addresses, servers or PIDs".into());
    }
    o.server_pid = o.server_pids.first().copied();
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
    if o.clients == 0 || o.clients > 1_000_000 {
        return Err("--clients must be 1..=1000000".into());
    }
    if o.max_results == 0 || o.max_results > 20 {
        return Err("--max must be 1..=20 (the herd refuses more)".into());
    }
    if o.distinct == 0 || o.distinct > 1000 {
        return Err("--distinct must be 1..=1000".into());
    }
    if o.radius.is_empty() || o.radius.len() > 32 || o.radius.contains(char::is_whitespace) {
        return Err("--radius must be one field of at most 32 characters".into());
    }
    if o.as_name.is_empty() || o.as_name.len() > 64 || o.as_name.contains(char::is_whitespace) {
        return Err("--as must be a server name (no whitespace, at most 64 bytes)".into());
    }
    Ok(())
}
