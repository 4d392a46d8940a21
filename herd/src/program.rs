//! The herd program: its command-line options (HERD.md's table) and
//! [`run`], which starts the servers on one reactor. `examples/herd.rs` is
//! a thin `main` over this module.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use gyre_reactor::defer::gather_results;
use gyre_reactor::{Phase, Reactor, SystemEvent};

use crate::config::HerdConfig;
use crate::log::{LogLimits, ServerLog};
use crate::pki::{self, HerdCa, PeerCredentials, PeerTls};
use crate::places::{LocalPlacesService, PlacesApi, PlacesClient, PlacesConfig};
use crate::server::{HerdServer, ServerOptions};
use crate::status::{StatusOptions, StatusServer};

mod limit_flags;
mod values;

pub use limit_flags::LimitOptions;

/// The environment variable that may hold the Google Places API key.
pub const API_KEY_VAR: &str = "GOOGLE_PLACES_API_KEY";

/// The herd program's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--config FILE`: the herd to run (default: the built-in herd).
    pub config: Option<PathBuf>,
    /// `--server NAME`: run only this server (default: all of them).
    pub server: Option<String>,
    /// `--places-api local|google|google-legacy` (default: `google` when a
    /// key is configured, else `local`).
    pub places_api: Option<String>,
    /// `--places-url URL`: the full endpoint URL for that back-end.
    pub places_url: Option<String>,
    /// `--places-ca FILE`: an extra trusted CA certificate (PEM).
    pub places_ca: Option<PathBuf>,
    /// `--places-key-file FILE`: the API key, read from a file.
    pub places_key_file: Option<PathBuf>,
    /// `--log-dir DIR`: one log file per server (default `logs/`).
    pub log_dir: Option<PathBuf>,
    /// `--log-max-bytes N`: rotate a server's log at this size (default
    /// [`DEFAULT_LOG_MAX_BYTES`](crate::log::DEFAULT_LOG_MAX_BYTES)).
    pub log_max_bytes: Option<u64>,
    /// `--log-keep N`: rotated log files kept per server (default
    /// [`DEFAULT_LOG_KEEP`](crate::log::DEFAULT_LOG_KEEP)).
    pub log_keep: Option<usize>,
    /// `--peer-tls DIR`: the herd CA and the servers' keys and
    /// certificates, as `herd pki init DIR` writes them.
    pub peer_tls: Option<PathBuf>,
    /// `--insecure-peer-links`: accept unauthenticated peer links (warned
    /// about in the log).
    pub insecure_peer_links: bool,
    /// `--status ADDR|off`: where the status listener serves (see
    /// [`StatusChoice`]).
    pub status: StatusChoice,
    /// `--status-allow-remote`: a non-loopback status address, and
    /// requests from non-loopback peers, are allowed.
    pub status_allow_remote: bool,
    /// `--status-show-clients`: the status shows client IDs and locations.
    pub status_show_clients: bool,
    /// The limit options (`--max-store-bytes SIZE`, `--iamat-rate RATE`,
    /// ...): one per limit of the herd README's Limits table, listed with
    /// their defaults by [`usage`].
    pub limits: LimitOptions,
}

/// Whether and where the status listener (`/status.json`, `/metrics`,
/// `/healthz`, the status page) serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusChoice {
    /// No `--status`: on, on 127.0.0.1 port 0, for the one-process herd;
    /// off for `--server NAME`.
    #[default]
    Default,
    /// `--status off`: no status listener (the counters are still kept).
    Off,
    /// `--status ADDR`: on, at this address.
    At(std::net::SocketAddr),
}

/// How much longer than the drain time-out the reactor's whole shutdown may
/// take: closing the connections a drain cut, and links that linger.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// The head of the usage text; [`usage`] adds the limit options.
pub const USAGE: &str = "\
usage: herd [--config FILE] [--server NAME] [--places-api local|google|google-legacy]
            [--places-url URL] [--places-ca FILE] [--places-key-file FILE] [--log-dir DIR]
            [--log-max-bytes SIZE] [--log-keep N] [--peer-tls DIR] [--insecure-peer-links]
            [--status ADDR|off] [--status-allow-remote] [--status-show-clients]
            [LIMIT OPTIONS, below]
       herd pki init DIR [--config FILE]
       herd pki add NAME --dir DIR

Runs the herd of HERD.md: by default the built-in five servers (Alford 12000,
Ball 12001, Hamilton 12002, Holiday 12003, Welsh 12004) in this process, with
a local Places service unless a Google API key is configured (the
--places-key-file option or the GOOGLE_PLACES_API_KEY variable). Each
server's log rotates at --log-max-bytes (default 64 MiB), keeping
--log-keep old files (default 4).

Neighbours link over mutual TLS: each must present a certificate from the
herd's CA naming it. The one-process herd makes its CA in memory at start-up.
A herd of separate processes (--server NAME) needs the files of
`herd pki init DIR --config FILE` (the CA, and a key and certificate per
server; `herd pki add NAME --dir DIR` adds one) and --peer-tls DIR; without
them --server refuses to start unless --insecure-peer-links is given.

SIGTERM (or a first SIGINT) stops gracefully: the servers stop accepting
and reading, close their links, answer every command already received
(Places answers included) for at most --drain-timeout TIME (default 15s),
and the program exits 0; a second SIGINT exits at once. SIGHUP re-reads
--peer-tls DIR: new handshakes use the new credentials, links whose
neighbour's certificate no longer verifies are closed, and a reload that
fails keeps the old credentials (all logged).

--status ADDR serves the operator view over HTTP: /status.json, /metrics
(Prometheus), /healthz (503 while draining) and a live page at /. It is on
by default for the one-process herd (127.0.0.1, a free port, its URL
printed), off by default with --server; --status off turns it off. It
listens on loopback only and answers only loopback peers unless
--status-allow-remote; it shows no client ID or location unless
--status-show-clients, and never the API key.";

/// The whole usage text: [`USAGE`], then each limit option with its
/// default.
pub fn usage() -> String {
    format!("{USAGE}\n\n{}", limit_flags::usage())
}

/// A command line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n\n{}", self.0, usage())
    }
}

impl Error for UsageError {}

impl UsageError {
    /// Whether the command line asked for `--help` (not a mistake: print
    /// the usage and exit 0).
    pub fn is_help(&self) -> bool {
        self.0 == HELP_REQUESTED
    }
}

/// The [`UsageError`] text of `--help`.
const HELP_REQUESTED: &str = "help requested";

impl Options {
    /// Parses the arguments (without the program name). Each option takes
    /// one value, as `--opt VALUE` or `--opt=VALUE`; `--help` is an error
    /// that carries the usage text.
    ///
    /// ```
    /// use gyre_herd::program::Options;
    ///
    /// let o = Options::parse(["--server", "Ball", "--log-dir=/tmp/l"]).unwrap();
    /// assert_eq!(o.server.as_deref(), Some("Ball"));
    /// assert!(Options::parse(["--bogus"]).is_err());
    /// ```
    pub fn parse<I, S>(args: I) -> Result<Options, UsageError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut options = Options::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            if name == "--help" || name == "-h" {
                return Err(UsageError(HELP_REQUESTED.into()));
            }
            if name == "--status-allow-remote" || name == "--status-show-clients" {
                if inline.is_some() {
                    return Err(UsageError(format!("{name} takes no value")));
                }
                if name == "--status-allow-remote" {
                    options.status_allow_remote = true;
                } else {
                    options.status_show_clients = true;
                }
                continue;
            }
            if name == "--status" {
                let value = value_of(&name, inline, &mut args)?;
                options.status = if value == "off" {
                    StatusChoice::Off
                } else {
                    StatusChoice::At(value.parse().map_err(|_| {
                        UsageError(format!(
                            "--status must be an address such as 127.0.0.1:13000, or off, not {value:?}"
                        ))
                    })?)
                };
                continue;
            }
            if name == "--insecure-peer-links" {
                if inline.is_some() {
                    return Err(UsageError(
                        "--insecure-peer-links takes no value".to_string(),
                    ));
                }
                options.insecure_peer_links = true;
                continue;
            }
            match name.as_str() {
                "--log-max-bytes" => {
                    let value = value_of(&name, inline, &mut args)?;
                    options.log_max_bytes = Some(values::size(&name, &value, 1)?);
                    continue;
                }
                "--log-keep" => {
                    let value = value_of(&name, inline, &mut args)?;
                    options.log_keep = Some(values::count(&name, &value, 0)?);
                    continue;
                }
                _ => {}
            }
            if let Some(flag) = limit_flags::find(&name) {
                let value = value_of(&name, inline, &mut args)?;
                flag.apply(&mut options.limits, &value)?;
                continue;
            }
            let slot: &mut Option<String> = match name.as_str() {
                "--server" => &mut options.server,
                "--places-api" => &mut options.places_api,
                "--places-url" => &mut options.places_url,
                _ => {
                    let path = match name.as_str() {
                        "--config" => &mut options.config,
                        "--places-ca" => &mut options.places_ca,
                        "--places-key-file" => &mut options.places_key_file,
                        "--log-dir" => &mut options.log_dir,
                        "--peer-tls" => &mut options.peer_tls,
                        _ => return Err(UsageError(format!("unknown argument {arg:?}"))),
                    };
                    let value = value_of(&name, inline, &mut args)?;
                    *path = Some(PathBuf::from(value));
                    continue;
                }
            };
            *slot = Some(value_of(&name, inline, &mut args)?);
        }
        if let Some(api) = &options.places_api {
            if PlacesApi::from_name(api).is_none() {
                return Err(UsageError(format!(
                    "--places-api must be local, google or google-legacy, not {api:?}"
                )));
            }
        }
        if options.peer_tls.is_some() && options.insecure_peer_links {
            return Err(UsageError(
                "--peer-tls and --insecure-peer-links cannot be used together".to_string(),
            ));
        }
        Ok(options)
    }
}

/// The error of `--server NAME` without `--peer-tls DIR` (nor
/// `--insecure-peer-links`): what to do about it.
pub const NEEDS_PEER_TLS: &str = "\
--server runs one server of a herd of separate processes, whose links to its
neighbours must be authenticated. Make the herd's keys and certificates once:
    herd pki init DIR --config FILE
give each server DIR (ca.pem, NAME.pem and NAME-key.pem are enough; keep
ca-key.pem elsewhere) and run it with --peer-tls DIR. To run without
authenticated links anyway (anyone could then forge locations), give
--insecure-peer-links.";

/// How each server's links are authenticated, from the options: the
/// credentials in `--peer-tls DIR`, none with `--insecure-peer-links`, a CA
/// made now in memory for a one-process herd, and an error for `--server`
/// without either.
fn peer_tls_for(options: &Options, names: &[String]) -> Result<Vec<PeerTls>, Box<dyn Error>> {
    if let Some(dir) = &options.peer_tls {
        return names
            .iter()
            .map(|name| {
                PeerCredentials::load(dir, name)
                    .map(PeerTls::Verified)
                    .map_err(|e| format!("--peer-tls {}: {e}", dir.display()).into())
            })
            .collect();
    }
    if options.insecure_peer_links {
        eprintln!(
            "herd: WARNING: --insecure-peer-links: peer links are not authenticated; anyone can claim to be a neighbour and forge locations"
        );
        return Ok(names.iter().map(|_| PeerTls::Insecure).collect());
    }
    if options.server.is_some() {
        return Err(NEEDS_PEER_TLS.into());
    }
    let ca = HerdCa::generate()?;
    names
        .iter()
        .map(|name| Ok(PeerTls::Verified(ca.credentials(name)?)))
        .collect()
}

/// `herd pki init DIR [--config FILE]` and `herd pki add NAME --dir DIR`
/// (the arguments after `pki`). Prints the files written.
pub fn run_pki(args: impl IntoIterator<Item = String>) -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = args.into_iter().collect();
    let usage = |m: &str| -> Box<dyn Error> { Box::new(UsageError(m.to_string())) };
    let written = match args.first().map(String::as_str) {
        Some("init") => {
            let mut dir = None;
            let mut config = None;
            let mut rest = args[1..].iter().cloned();
            while let Some(arg) = rest.next() {
                match arg.split_once('=') {
                    Some(("--config", v)) => config = Some(PathBuf::from(v)),
                    _ if arg == "--config" => {
                        config = Some(PathBuf::from(value_of("--config", None, &mut rest)?))
                    }
                    _ if arg.starts_with("--") || dir.is_some() => {
                        return Err(usage(&format!("pki init: unexpected argument {arg:?}")))
                    }
                    _ => dir = Some(PathBuf::from(arg)),
                }
            }
            let dir = dir.ok_or_else(|| usage("pki init needs a directory"))?;
            let config = match &config {
                Some(path) => HerdConfig::from_file(path)?,
                None => HerdConfig::default(),
            };
            pki::init(&dir, &config)?
        }
        Some("add") => {
            let mut name = None;
            let mut dir = None;
            let mut rest = args[1..].iter().cloned();
            while let Some(arg) = rest.next() {
                match arg.split_once('=') {
                    Some(("--dir", v)) => dir = Some(PathBuf::from(v)),
                    _ if arg == "--dir" => {
                        dir = Some(PathBuf::from(value_of("--dir", None, &mut rest)?))
                    }
                    _ if arg.starts_with("--") || name.is_some() => {
                        return Err(usage(&format!("pki add: unexpected argument {arg:?}")))
                    }
                    _ => name = Some(arg),
                }
            }
            let name = name.ok_or_else(|| usage("pki add needs a server name"))?;
            let dir = dir.ok_or_else(|| usage("pki add needs --dir DIR"))?;
            pki::add(&dir, &name)?
        }
        _ => return Err(usage("pki needs init or add")),
    };
    for path in written {
        println!("pki: wrote {}", path.display());
    }
    Ok(())
}

fn value_of(
    name: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, UsageError> {
    match inline.or_else(|| rest.next()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(UsageError(format!("{name} needs a value"))),
    }
}

/// Reads the API key: the key file if given, else the environment variable.
/// Surrounding whitespace is dropped; an empty key counts as none.
fn api_key(options: &Options) -> Result<Option<String>, Box<dyn Error>> {
    let key = match &options.places_key_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
        None => std::env::var(API_KEY_VAR).unwrap_or_default(),
    };
    let key = key.trim().to_string();
    Ok((!key.is_empty()).then_some(key))
}

/// Starts the herd described by `options` on `reactor` and returns the
/// servers (and the local Places service, when one was started). The caller
/// runs the reactor; the `herd: NAME listening on ADDR` lines are printed
/// when it starts running.
pub fn start(
    reactor: &Reactor,
    options: &Options,
) -> Result<(Vec<HerdServer>, Option<LocalPlacesService>), Box<dyn Error>> {
    let config = match &options.config {
        Some(path) => HerdConfig::from_file(path)?,
        None => HerdConfig::default(),
    };
    let names: Vec<String> = match &options.server {
        Some(name) => {
            if config.server(name).is_none() {
                return Err(format!("the herd has no server named {name:?}").into());
            }
            vec![name.clone()]
        }
        None => config.servers().iter().map(|s| s.name.clone()).collect(),
    };
    let key = api_key(options)?;
    let api = match &options.places_api {
        Some(name) => PlacesApi::from_name(name).ok_or("bad --places-api")?,
        None if key.is_some() => PlacesApi::Google,
        None => PlacesApi::Local,
    };
    let extra_ca_pem = match &options.places_ca {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut local_service = None;
    let places_config = if api == PlacesApi::Local && options.places_url.is_none() {
        let service = LocalPlacesService::start_with(
            reactor,
            "127.0.0.1:0".parse()?,
            options.limits.local_places_options(),
        )?;
        println!("places: local service at {}", service.url());
        let config = service.client_config();
        local_service = Some(service);
        config
    } else {
        PlacesConfig {
            api: api.clone(),
            url: options.places_url.clone(),
            extra_ca_pem,
            api_key: key,
            ..PlacesConfig::default()
        }
    };
    let places_config = options.limits.places_config(places_config);
    let places = PlacesClient::new(reactor, places_config)?;
    println!("places: {} back-end at {}", api.name(), places.endpoint());
    let log_dir = options
        .log_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("logs"));
    let defaults = LogLimits::default();
    let log_limits = LogLimits {
        max_bytes: options.log_max_bytes.unwrap_or(defaults.max_bytes),
        keep: options.log_keep.unwrap_or(defaults.keep),
    };
    let peer_tls = peer_tls_for(options, &names)?;
    let mut servers = Vec::new();
    for (name, peer_tls) in names.iter().zip(peer_tls) {
        let log = ServerLog::open_with_limits(&log_dir, name, log_limits).map_err(|e| {
            format!(
                "cannot open the log of {name} in {}: {e}",
                log_dir.display()
            )
        })?;
        let server = start_server(reactor, name, &config, &places, log, options, peer_tls)
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        // Scripts read these lines to know the herd is up, and may signal
        // it at once: print them when the loop runs, with its SIGINT and
        // SIGTERM handlers installed, so that stops it cleanly.
        let line = format!("herd: {name} listening on {}", server.local_addr());
        reactor.call_when_running(move |_| println!("{line}"));
        servers.push(server);
    }
    let status_addr = match options.status {
        StatusChoice::Default if options.server.is_none() => {
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        }
        StatusChoice::Default | StatusChoice::Off => None,
        StatusChoice::At(addr) => Some(addr),
    };
    if let Some(addr) = status_addr {
        let mut status_options = StatusOptions::new(addr, config.clone());
        status_options.allow_remote = options.status_allow_remote;
        status_options.show_clients = options.status_show_clients;
        let status = StatusServer::start(
            reactor,
            servers.clone(),
            Some(places.clone()),
            status_options,
        )
        .map_err(|e| format!("--status {addr}: {e}"))?;
        // Dropping the handle leaves it serving until the reactor stops.
        let line = format!("herd: status at http://{}/", status.local_addr());
        reactor.call_when_running(move |_| println!("{line}"));
    }
    Ok((servers, local_service))
}

/// Starts one server with the limits the options give.
fn start_server(
    reactor: &Reactor,
    name: &str,
    config: &HerdConfig,
    places: &PlacesClient,
    log: ServerLog,
    options: &Options,
    peer_tls: PeerTls,
) -> std::io::Result<HerdServer> {
    let server_options = options.limits.server_options(ServerOptions {
        peer_tls,
        ..ServerOptions::default()
    });
    let server = HerdServer::bind(reactor, name, config, places.clone(), log, server_options)?;
    if let Err(e) = server.connect_neighbours(config) {
        server.stop();
        return Err(e);
    }
    Ok(server)
}

/// The whole `herd` program, shared by the `herd` binary and
/// `examples/herd.rs`: logging to stderr (`RUST_LOG`, default `info`),
/// [`run`] with the process's arguments, the usage on `--help` (exit 0),
/// and any error on stderr with exit status 2.
pub fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = run(std::env::args().skip(1)) {
        if e.downcast_ref::<UsageError>()
            .is_some_and(UsageError::is_help)
        {
            println!("{}", usage());
            return;
        }
        eprintln!("herd: {e}");
        std::process::exit(2);
    }
}

/// The drain time-out the options give (`--drain-timeout`, else the
/// default).
fn drain_timeout(options: &Options) -> Duration {
    options
        .limits
        .drain_timeout
        .unwrap_or(crate::server::DEFAULT_DRAIN_TIMEOUT)
}

/// Parses the command line, starts the herd and runs it until SIGINT or
/// SIGTERM, then stops gracefully: every server drains
/// ([`HerdServer::drain`]) before the reactor shuts down, and it returns.
/// With `--peer-tls DIR`, SIGHUP reloads each server's credentials from
/// DIR ([`HerdServer::reload_peer_tls_from`]).
///
/// `herd pki ...` (a first argument `pki`) runs [`run_pki`] instead.
pub fn run(args: impl IntoIterator<Item = String>) -> Result<(), Box<dyn Error>> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("pki") {
        args.next();
        return run_pki(args);
    }
    let options = Options::parse(args)?;
    // The reactor's shutdown waits for the drains: give it their time-out
    // and a margin to close what they leave.
    let reactor = Reactor::builder()
        .shutdown_timeout(drain_timeout(&options) + SHUTDOWN_MARGIN)
        .build()?;
    let (servers, _local) = start(&reactor, &options)?;
    if let Some(dir) = options.peer_tls.clone() {
        let reloading = servers.clone();
        reactor.on_signal(gyre_reactor::signal::SIGHUP, move |_| {
            log::info!(
                "SIGHUP: reloading the peer TLS credentials from {}",
                dir.display()
            );
            for server in &reloading {
                // Logged either way; a failure keeps the old credentials.
                let _ = server.reload_peer_tls_from(&dir);
            }
        })?;
    }
    let draining = servers.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| {
        let drains = draining.iter().map(HerdServer::drain).collect();
        Some(gather_results(drains).add_callback(|_| Ok(())))
    });
    reactor.run()?;
    // Entries made after the loop's last iteration are still batched.
    for server in &servers {
        server.log().flush();
    }
    println!("herd: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_parses_in_both_forms() {
        let o = Options::parse([
            "--config",
            "h.json",
            "--server=Welsh",
            "--places-api",
            "google-legacy",
            "--places-url=https://127.0.0.1:1/x",
            "--places-ca",
            "ca.pem",
            "--places-key-file=key.txt",
            "--log-dir",
            "out",
            "--log-max-bytes=1048576",
            "--log-keep",
            "2",
            "--max-store-bytes=64MiB",
            "--iamat-rate",
            "1000/5000",
            "--client-idle-timeout=500ms",
            "--drain-timeout=3",
            "--local-places-max-connections",
            "8",
        ])
        .unwrap();
        assert_eq!(o.config, Some(PathBuf::from("h.json")));
        assert_eq!(o.server.as_deref(), Some("Welsh"));
        assert_eq!(o.places_api.as_deref(), Some("google-legacy"));
        assert_eq!(o.places_url.as_deref(), Some("https://127.0.0.1:1/x"));
        assert_eq!(o.places_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(o.places_key_file, Some(PathBuf::from("key.txt")));
        assert_eq!(o.log_dir, Some(PathBuf::from("out")));
        assert_eq!(o.log_max_bytes, Some(1_048_576));
        assert_eq!(o.log_keep, Some(2));
        assert_eq!(o.limits.max_store_bytes, Some(64 << 20));
        assert_eq!(o.limits.drain_timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            o.limits.iamat_rate,
            Some(crate::limits::Rate {
                per_second: 1000,
                burst: 5000
            })
        );
        assert_eq!(
            o.limits.client_idle_timeout,
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(o.limits.local_places_max_connections, Some(8));
    }

    #[test]
    fn help_lists_every_limit_with_its_default() {
        let err = Options::parse(["--help"]).unwrap_err();
        assert!(err.is_help());
        let help = usage();
        assert!(help.starts_with(USAGE));
        assert!(help.contains("--max-store-bytes SIZE"), "{help}");
        assert!(help.contains("[256MiB]"), "{help}");
        assert!(help.contains("--iamat-rate RATE"), "{help}");
        assert!(help.contains("[50/200]"), "{help}");
        assert!(help.contains("--client-idle-timeout TIME"), "{help}");
        assert!(help.contains("[2m]"), "{help}");
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            vec!["--server"],
            vec!["--server="],
            vec!["--places-api", "bing"],
            vec!["--log-max-bytes", "lots"],
            vec!["--log-keep", "-1"],
            vec!["--log-max-bytes", "0"],
            vec!["--max-store-bytes", "64MB"],
            vec!["--max-store-bytes"],
            vec!["--max-connections=0"],
            vec!["--iamat-rate", "5/0"],
            vec!["--new-client-rate", "fast"],
            vec!["--client-idle-timeout", "0"],
            vec!["--places-cache-ttl", "1.5s"],
            vec!["positional"],
            vec!["--help"],
        ] {
            let err = Options::parse(bad.clone()).unwrap_err();
            assert!(err.to_string().contains("usage: herd"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn unknown_server_is_an_error() {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let options = Options {
            server: Some("Nobody".into()),
            ..Options::default()
        };
        let err = start(&reactor, &options).err().unwrap();
        assert!(err.to_string().contains("Nobody"), "{err}");
    }
}
