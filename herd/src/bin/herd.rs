//! The herd program: `cargo install --path herd`, then `herd [OPTIONS]`
//! or `herd pki init DIR [--config FILE]` (see `herd --help` and the herd
//! README). `examples/herd.rs` in the workspace is the same program.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    use gyre_herd::program::{run, UsageError, USAGE};
    if let Err(e) = run(std::env::args().skip(1)) {
        if e.downcast_ref::<UsageError>()
            .is_some_and(UsageError::is_help)
        {
            println!("{USAGE}");
            return;
        }
        eprintln!("herd: {e}");
        std::process::exit(2);
    }
}
