//! The three herd modes against a real gyre herd server on loopback: one
//! server, `Solo`, with peer TLS from `herd pki init` files and the local
//! Places service, running on its own reactor thread; the configuration
//! file names it and the member `Probe` linked to it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre::herd::places::{LocalPlacesService, PlacesClient};
use gyre::herd::{pki, HerdConfig, HerdServer, PeerCredentials, PeerTls, ServerLog, ServerOptions};
use gyre::reactor::Reactor;

use crate::cli::parse_args;
use crate::report::Report;

/// A directory of its own under the system's temporary directory, removed
/// on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("loadgen-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `Solo` on a reactor thread; returns the configuration with its
/// real port, and a handle that stops the reactor.
fn start_solo(
    pki_dir: &Path,
) -> (
    HerdConfig,
    gyre::reactor::ThreadHandle,
    std::thread::JoinHandle<()>,
) {
    let mut config = HerdConfig::from_json(
        r#"{"servers": [{"name": "Solo", "host": "127.0.0.1", "port": 0},
                        {"name": "Probe", "host": "127.0.0.1", "port": 0}],
            "links": [["Solo", "Probe"]]}"#,
    )
    .unwrap();
    pki::init(pki_dir, &config).unwrap();
    let creds = PeerCredentials::load(pki_dir, "Solo").unwrap();
    let (tx, rx) = mpsc::channel();
    let herd_config = config.clone();
    let thread = std::thread::spawn(move || {
        let reactor = Reactor::builder()
            .install_signal_handlers(false)
            .build()
            .unwrap();
        let service = LocalPlacesService::start(&reactor, "127.0.0.1:0".parse().unwrap()).unwrap();
        let places = PlacesClient::new(&reactor, service.client_config()).unwrap();
        let options = ServerOptions {
            peer_tls: PeerTls::Verified(creds),
            ..ServerOptions::default()
        };
        // Solo does not dial Probe (nothing listens there): Probe dials it.
        let server = HerdServer::bind(
            &reactor,
            "Solo",
            &herd_config,
            places,
            ServerLog::memory(),
            options,
        )
        .unwrap();
        tx.send((server.local_addr().port(), reactor.thread_handle()))
            .unwrap();
        reactor.run().unwrap();
        drop(service);
    });
    let (port, handle) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    config.set_port("Solo", port).unwrap();
    (config, handle, thread)
}

fn run(args: &[&str]) -> Report {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let o = parse_args(&args).unwrap();
    let report = match o.mode {
        crate::cli::Mode::HerdIamat => super::iamat::run(&o),
        crate::cli::Mode::HerdFlood => super::flood::run(&o),
        crate::cli::Mode::HerdWhatsat => super::whatsat::run(&o),
        other => panic!("not a herd mode: {other:?}"),
    };
    report.unwrap()
}

fn count(report: &Report, key: &str) -> u64 {
    report
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in the report"))
}

#[test]
fn every_herd_mode_runs_clean_against_a_gyre_server() {
    let dir = TempDir::new();
    let pki_dir = dir.0.join("pki");
    let (config, handle, thread) = start_solo(&pki_dir);
    let path = dir.0.join("herd.json");
    std::fs::write(&path, config.to_json()).unwrap();
    let path = path.to_str().unwrap();
    let short = ["--seconds", "0.3", "--warmup", "0.1"];

    // Rotating every 40 IAMATs keeps each source address under the herd's
    // default burst: no IAMAT may be refused.
    let iamat = run(&[
        &[
            "herd-iamat",
            "--config",
            path,
            "--connections",
            "2",
            "--depth",
            "4",
            "--rotate",
            "40",
        ][..],
        &short,
    ]
    .concat());
    assert_eq!(iamat.errors(), 0, "herd-iamat");
    assert!(count(&iamat, "iamats") > 0);
    assert!(
        count(&iamat, "source_addresses") > 2,
        "connections moved to new source addresses"
    );

    let whatsat = run(&[
        &[
            "herd-whatsat",
            "--config",
            path,
            "--connections",
            "2",
            "--depth",
            "4",
        ][..],
        &short,
    ]
    .concat());
    assert_eq!(whatsat.errors(), 0, "herd-whatsat");
    assert!(count(&whatsat, "whatsats") > 0);

    let pki_path = pki_dir.to_str().unwrap();
    let flood = run(&[
        &[
            "herd-flood",
            "--config",
            path,
            "--via",
            "Solo",
            "--to",
            "Solo",
            "--peer-tls",
            pki_path,
        ][..],
        &short,
    ]
    .concat());
    assert_eq!(flood.errors(), 0, "herd-flood");
    assert_eq!(count(&flood, "hops"), 1);
    assert!(count(&flood, "samples") > 0);

    handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    thread.join().unwrap();
}

#[test]
fn a_server_that_refuses_is_counted_not_hidden() {
    let dir = TempDir::new();
    let (config, handle, thread) = start_solo(&dir.0.join("pki"));
    let path = dir.0.join("herd.json");
    std::fs::write(&path, config.to_json()).unwrap();
    // One source address past its burst of 200: the herd refuses the rest.
    let report = run(&[
        "herd-iamat",
        "--config",
        path.to_str().unwrap(),
        "--connections",
        "1",
        "--depth",
        "16",
        "--rotate",
        "0",
        "--seconds",
        "0.5",
        "--warmup",
        "0",
    ]);
    assert!(report.errors() > 0);
    assert_eq!(report.errors(), count(&report, "refused"));
    handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    thread.join().unwrap();
}
