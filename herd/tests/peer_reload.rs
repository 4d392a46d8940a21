//! Reloading a server's peer TLS credentials (what SIGHUP does in the herd
//! program), in one process over real loopback sockets: a renewed
//! certificate keeps the link up and is what the next handshake presents;
//! a new CA closes the links it no longer trusts (revocation without a
//! restart); a reload that fails keeps the old credentials and says so.
//! Every wait is on an event with a generous bound; nothing sleeps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gyre_herd::pki::{self, HerdCa, PeerCredentials};
use gyre_herd::places::PlacesAnswer;
use gyre_herd::{HerdConfig, HerdServer, PeerTls, PlacesLookup, ServerLog, ServerOptions};
use gyre_reactor::defer::Deferred;
use gyre_reactor::{Protocol, Reactor, Transport};

const WAIT: Duration = Duration::from_secs(20);

struct NoPlaces;
impl PlacesLookup for NoPlaces {
    fn nearby(&self, _: f64, _: f64, _: f64, _: u32) -> Deferred<PlacesAnswer> {
        Deferred::new().1
    }
}

fn reactor() -> Reactor {
    Reactor::builder()
        .install_signal_handlers(false)
        .build()
        .unwrap()
}

#[track_caller]
fn wait(reactor: &Reactor, what: &str, done: impl Fn() -> bool) {
    assert!(
        reactor.run_until(done, WAIT).unwrap(),
        "timed out waiting for {what}"
    );
}

fn pair_config() -> HerdConfig {
    HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0},
                        {"name": "Ball", "host": "127.0.0.1", "port": 0}],
            "links": [["Alford", "Ball"]]}"#,
    )
    .unwrap()
}

/// Binds `name` with `creds` (a memory log) and records its port.
fn bind(
    reactor: &Reactor,
    config: &mut HerdConfig,
    name: &str,
    creds: PeerCredentials,
) -> HerdServer {
    let options = ServerOptions {
        peer_tls: PeerTls::Verified(creds),
        ..ServerOptions::default()
    };
    let server = HerdServer::bind(
        reactor,
        name,
        config,
        NoPlaces,
        ServerLog::memory(),
        options,
    )
    .unwrap();
    config.set_port(name, server.local_addr().port()).unwrap();
    server
}

fn linked(alford: &HerdServer, ball: &HerdServer) -> bool {
    alford.links_up() == ["Ball"] && ball.links_up() == ["Alford"]
}

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _data: &[u8]) {}
}

fn connect(reactor: &Reactor, addr: SocketAddr) -> Transport {
    let d = reactor.connect_protocol(addr, Quiet);
    wait(reactor, "connected", || d.called());
    d.take_result().unwrap().unwrap()
}

/// Reports `client` at `server` and waits for `witness` to store it.
fn report(reactor: &Reactor, server: &HerdServer, client: &str, witness: &HerdServer) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t = connect(reactor, server.local_addr());
    t.write(format!("IAMAT {client} +34.068930-118.445127 {now}.5\n").as_bytes());
    wait(
        reactor,
        &format!("{client} to reach {}", witness.name()),
        || witness.location(client.as_bytes()).is_some(),
    );
    t.lose_connection();
}

/// Restarts `ball` on its port with `creds` and waits for the link.
fn restart_ball(
    reactor: &Reactor,
    config: &mut HerdConfig,
    alford: &HerdServer,
    ball: HerdServer,
    creds: PeerCredentials,
) -> HerdServer {
    ball.stop();
    wait(reactor, "Alford to see the link down", || {
        alford.links_up().is_empty()
    });
    let ball = bind(reactor, config, "Ball", creds);
    ball.connect_neighbours(config).unwrap();
    wait(reactor, "the link after Ball's restart", || {
        linked(alford, &ball)
    });
    ball
}

/// A certificate renewed from the same CA: the link stays up (the same
/// connection carries floods on), and the next handshake presents the new
/// certificate.
#[test]
fn a_renewed_certificate_keeps_the_link_and_is_presented_next_time() {
    let reactor = reactor();
    let ca = HerdCa::generate().unwrap();
    let mut config = pair_config();
    let alford = bind(
        &reactor,
        &mut config,
        "Alford",
        ca.credentials("Alford").unwrap(),
    );
    let ball = bind(
        &reactor,
        &mut config,
        "Ball",
        ca.credentials("Ball").unwrap(),
    );
    alford.connect_neighbours(&config).unwrap();
    ball.connect_neighbours(&config).unwrap();
    wait(&reactor, "the link", || linked(&alford, &ball));
    wait(&reactor, "one connection for the link", || {
        reactor.connection_count() == 2
    });

    let renewed = ca.credentials("Alford").unwrap();
    let serial = renewed.serial().to_string();
    let report_of = alford.reload_peer_tls(renewed).unwrap();
    assert_eq!(report_of.kept, ["Ball"]);
    assert!(report_of.closed.is_empty());
    assert_eq!(report_of.serial, serial);
    assert!(alford.log().contains(&format!(
        "peer TLS credentials reloaded (given): now presenting certificate serial {serial}; \
         links still verified and kept up: Ball"
    )));
    // Still the one link connection, and it still floods both ways.
    assert!(linked(&alford, &ball));
    assert_eq!(reactor.connection_count(), 2);
    report(&reactor, &alford, "after-reload", &ball);
    wait(&reactor, "the reporting client gone, the link left", || {
        reactor.connection_count() == 2
    });
    assert!(!alford.log().contains("link to Ball down"));

    // Ball restarts: the new link's handshake shows Alford's new certificate.
    let ball = restart_ball(
        &reactor,
        &mut config,
        &alford,
        ball,
        ca.credentials("Ball").unwrap(),
    );
    assert!(
        ball.log()
            .contains(&format!("by its certificate (serial {serial})")),
        "Ball saw Alford's new certificate"
    );
    report(&reactor, &ball, "after-restart", &alford);
}

/// A new CA (Ball's certificate is not from it): the link with Ball is
/// closed at the reload and cannot be made again until Ball is given a
/// certificate from the new CA and reloads too; then it comes back by
/// itself (Alford keeps re-dialling).
#[test]
fn a_new_ca_closes_the_links_it_no_longer_trusts_until_they_are_reissued() {
    let reactor = reactor();
    let old = HerdCa::generate().unwrap();
    let mut config = pair_config();
    let alford = bind(
        &reactor,
        &mut config,
        "Alford",
        old.credentials("Alford").unwrap(),
    );
    let ball = bind(
        &reactor,
        &mut config,
        "Ball",
        old.credentials("Ball").unwrap(),
    );
    alford.connect_neighbours(&config).unwrap();
    ball.connect_neighbours(&config).unwrap();
    wait(&reactor, "the link", || linked(&alford, &ball));

    let new = HerdCa::generate().unwrap();
    let reload = alford
        .reload_peer_tls(new.credentials("Alford").unwrap())
        .unwrap();
    assert!(reload.kept.is_empty());
    assert_eq!(reload.closed, ["Ball"]);
    wait(&reactor, "the link down on both sides", || {
        alford.links_up().is_empty() && ball.links_up().is_empty()
    });
    assert!(alford
        .log()
        .contains("its certificate does not verify under the reloaded credentials"));
    // Alford re-dials with the new CA; Ball (old CA) refuses it.
    wait(&reactor, "a refused attempt", || {
        alford
            .log()
            .contains("no verified link with neighbour Ball")
    });
    assert!(alford.links_up().is_empty());

    // Ball gets a certificate from the new CA: the link comes back.
    let reload = ball
        .reload_peer_tls(new.credentials("Ball").unwrap())
        .unwrap();
    assert!(reload.kept.is_empty() && reload.closed.is_empty());
    wait(&reactor, "the link under the new CA", || {
        linked(&alford, &ball)
    });
    report(&reactor, &alford, "under-the-new-ca", &ball);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "gyre-peer-reload-{}-{tag}-{nanos}",
            std::process::id()
        ));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(dir: &Path, name: &str) -> PeerCredentials {
    PeerCredentials::load(dir, name).unwrap()
}

/// Reloads that fail (a corrupt or missing file, another server's
/// credentials, a server without peer TLS) keep the old credentials, are
/// logged, and change nothing: the link stays up, and after Ball restarts
/// it is made again with Alford's old certificate.
#[test]
fn a_failed_reload_keeps_the_old_credentials_and_logs_it() {
    let reactor = reactor();
    let dir = TempDir::new("corrupt");
    let mut config = pair_config();
    pki::init(&dir.0, &config).unwrap();
    let first = load(&dir.0, "Alford");
    let old_serial = first.serial().to_string();
    let alford = bind(&reactor, &mut config, "Alford", first);
    let ball = bind(&reactor, &mut config, "Ball", load(&dir.0, "Ball"));
    alford.connect_neighbours(&config).unwrap();
    ball.connect_neighbours(&config).unwrap();
    wait(&reactor, "the link", || linked(&alford, &ball));

    // The directory as written reloads (the same certificate).
    let same = alford.reload_peer_tls_from(&dir.0).unwrap();
    assert_eq!(same.serial, old_serial);
    assert_eq!(same.kept, ["Ball"]);

    // A corrupt certificate file.
    std::fs::write(dir.0.join(pki::cert_file("Alford")), "not a certificate\n").unwrap();
    let e = alford.reload_peer_tls_from(&dir.0).unwrap_err();
    let logged = format!(
        "reloading the peer TLS credentials (from {}) failed: {e}; keeping the old ones \
         (certificate serial {old_serial})",
        dir.0.display()
    );
    assert!(alford.log().contains(&logged), "logged: {logged}");
    // A missing key file.
    std::fs::remove_file(dir.0.join(pki::key_file("Alford"))).unwrap();
    let e = alford.reload_peer_tls_from(&dir.0).unwrap_err();
    assert!(e.to_string().contains("Alford-key.pem"), "{e}");
    // Credentials for another server.
    let e = alford.reload_peer_tls(load(&dir.0, "Ball")).unwrap_err();
    assert!(e.to_string().contains("\"Ball\""), "{e}");
    assert!(linked(&alford, &ball));

    // Ball restarts: Alford still presents its old certificate.
    let ball = restart_ball(&reactor, &mut config, &alford, ball, load(&dir.0, "Ball"));
    assert!(ball
        .log()
        .contains(&format!("by its certificate (serial {old_serial})")));
    report(&reactor, &alford, "still-linked", &ball);
}

#[test]
fn a_server_without_peer_tls_has_nothing_to_reload() {
    let reactor = reactor();
    let config = HerdConfig::from_json(
        r#"{"servers": [{"name": "Alford", "host": "127.0.0.1", "port": 0}]}"#,
    )
    .unwrap();
    let alford = HerdServer::bind(
        &reactor,
        "Alford",
        &config,
        NoPlaces,
        ServerLog::memory(),
        ServerOptions {
            peer_tls: PeerTls::Insecure,
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let ca = HerdCa::generate().unwrap();
    let e = alford
        .reload_peer_tls(ca.credentials("Alford").unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("not authenticated"), "{e}");
    assert!(alford.log().contains("keeping the old ones"));
}
