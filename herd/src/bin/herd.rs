//! The herd program: `cargo install --path herd`, then `herd [OPTIONS]`
//! or `herd pki init DIR [--config FILE]` (see `herd --help` and the herd
//! README). `examples/herd.rs` in the workspace is the same program.

fn main() {
    gyre_herd::program::main();
}
