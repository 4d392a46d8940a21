//! The herd: `cargo run --release --example herd -- [OPTIONS]`.
//!
//! With no options it starts the five servers of the default herd (ports
//! 12000-12004) and a local Places service, so it works on a fresh machine
//! without an API key. Options (see HERD.md): `--config FILE`,
//! `--server NAME`, `--places-api local|google|google-legacy`,
//! `--places-url URL`, `--places-ca FILE`, `--places-key-file FILE`,
//! `--log-dir DIR`, `--peer-tls DIR`, `--insecure-peer-links`; and
//! `herd pki init DIR [--config FILE]`, `herd pki add NAME --dir DIR`.
//! Ctrl-C stops it cleanly. The same program is the `herd` binary of
//! gyre-herd (`cargo install --path herd`).

fn main() {
    gyre::herd::program::main();
}
