//! Runs a command on the reactor and collects its output as a Deferred:
//! `cargo run --example process_output -- sh -c 'echo out; echo err >&2; exit 3'`.
//!
//! With no arguments it runs `uname -a`. The collected output is bounded
//! (`--max-output BYTES` before the command, default
//! `gyre_reactor::process::DEFAULT_MAX_OUTPUT`): a command that prints more
//! is killed and reported. The program exits with the command's exit code
//! (128 + the signal if a signal killed it, 1 if it could not run).

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;

use gyre::reactor::process::{OutputOptions, ProcessCommand, ProcessStatus};
use gyre::reactor::Reactor;

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = OutputOptions::new();
    if args.first().map(String::as_str) == Some("--max-output") {
        let bytes: usize = args
            .get(1)
            .ok_or("--max-output needs a number of bytes")?
            .parse()?;
        options = options.max_output(bytes);
        args.drain(..2);
    }
    if args.is_empty() {
        args = vec!["uname".into(), "-a".into()];
    }
    let command = ProcessCommand::new(&args[0]).args(&args[1..]);

    let reactor = Reactor::new()?;
    let code = Rc::new(Cell::new(1u8));
    let exit = Rc::clone(&code);
    // Start once the loop runs, so that even a command that fails to spawn
    // (its Deferred fires at once) finds a running reactor to stop.
    reactor.call_when_running(move |reactor| {
        let stopper = reactor.clone();
        // The chain runs when the Deferred fires; the handle may go.
        drop(options.run(reactor, command).add_both(move |outcome| {
            match &outcome {
                Ok(out) => {
                    print!("{}", String::from_utf8_lossy(&out.stdout));
                    eprint!("{}", String::from_utf8_lossy(&out.stderr));
                    eprintln!("[{}]", out.status);
                    exit.set(exit_code(out.status));
                }
                Err(failure) => eprintln!("could not run it: {}", failure.describe()),
            }
            let _ = stopper.stop();
            Ok(())
        }));
    });
    reactor.run()?;
    Ok(ExitCode::from(code.get()))
}

/// The shell's convention: the code, or 128 + the signal.
fn exit_code(status: ProcessStatus) -> u8 {
    match status {
        ProcessStatus::Exited(code) => u8::try_from(code).unwrap_or(1),
        ProcessStatus::Signaled { signal, .. } => u8::try_from(128 + signal).unwrap_or(1),
        ProcessStatus::Other(_) => 1,
    }
}
