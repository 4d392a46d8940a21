//! The control port: one command per line, one answer per command.
//!
//! The grammar and a transcript are in the crate docs (`main.rs`). Lines
//! are at most [`MAX_LINE`] bytes; a longer one is answered `ERR` and the
//! connection is closed. Commands are parsed into [`Command`] first, so a
//! bad line changes nothing.

use std::rc::Rc;

use gyre::protocols::{LineContext, LineHandler, LineReceiver};
use gyre::reactor::ConnectionLost;

use crate::proxy::{NamedToxic, Proxy};

/// Longest command line, in bytes.
pub const MAX_LINE: usize = 1024;
/// Most control connections open at once; more are closed at once.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;

/// A parsed control command.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `toxic add NAME DIRECTION KIND [key=value...]`
    Add(NamedToxic),
    /// `toxic remove NAME`
    Remove(String),
    /// `toxic list`
    List,
    /// `toxic clear`
    Clear,
    /// `cut`: a partition.
    Cut,
    /// `heal`: the partition ends.
    Heal,
    /// `status`
    Status,
    /// `help`
    Help,
    /// `quit`: close this control connection.
    Quit,
}

/// The answer to `help`.
const HELP: &str = "OK commands: toxic add NAME upstream|downstream KIND [key=value...]; \
    toxic remove NAME; toxic list; toxic clear; cut; heal; status; help; quit. \
    KIND: latency ms= [jitter=]; bandwidth rate=; slicer size= [variation=] [delay_us=]; \
    reset_after bytes=; reset_chance p=; blackhole; timeout ms=";

impl Command {
    /// Parses one line (without its delimiter).
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["toxic", "add", spec @ ..] => Ok(Command::Add(NamedToxic::parse(spec)?)),
            ["toxic", "remove", name] => Ok(Command::Remove(name.to_string())),
            ["toxic", "list"] => Ok(Command::List),
            ["toxic", "clear"] => Ok(Command::Clear),
            ["toxic", ..] => Err("usage: toxic add|remove|list|clear ...".to_string()),
            ["cut"] => Ok(Command::Cut),
            ["heal"] => Ok(Command::Heal),
            ["status"] => Ok(Command::Status),
            ["help"] => Ok(Command::Help),
            ["quit"] => Ok(Command::Quit),
            [] => Err("empty command".to_string()),
            [word, ..] => Err(format!("unknown command {word:?} (try help)")),
        }
    }

    /// Carries the command out; the answer line.
    fn run(self, proxy: &Proxy) -> String {
        match self {
            Command::Add(toxic) => {
                let shown = toxic.to_string();
                match proxy.add_toxic(toxic) {
                    Ok(()) => format!("OK added {shown}"),
                    Err(e) => format!("ERR {e}"),
                }
            }
            Command::Remove(name) => match proxy.remove_toxic(&name) {
                Ok(t) => format!("OK removed {t}"),
                Err(e) => format!("ERR {e}"),
            },
            Command::List => {
                let toxics = proxy.toxics();
                let list: Vec<String> = toxics.iter().map(ToString::to_string).collect();
                format!("OK {} toxics: {}", list.len(), list.join("; "))
            }
            Command::Clear => format!("OK cleared {} toxics", proxy.clear_toxics()),
            Command::Cut => format!("OK cut, aborted {} connections", proxy.cut()),
            Command::Heal => {
                proxy.heal();
                "OK healed".to_string()
            }
            Command::Status => format!("OK {}", proxy.status()),
            Command::Help => HELP.to_string(),
            Command::Quit => "OK bye".to_string(),
        }
    }
}

/// One control connection.
pub struct Control {
    proxy: Rc<Proxy>,
}

impl Control {
    /// A control protocol on `proxy`, framed by `\n` (a trailing `\r` is
    /// ignored) with lines of at most [`MAX_LINE`] bytes; `None` when
    /// [`MAX_CONTROL_CONNECTIONS`] are open.
    pub fn accept(proxy: &Rc<Proxy>) -> Option<LineReceiver<Control>> {
        let open = proxy.control_connections.get();
        if open >= MAX_CONTROL_CONNECTIONS {
            log::warn!("control: {open} connections open; refusing another");
            return None;
        }
        proxy.control_connections.set(open + 1);
        Some(
            LineReceiver::new(Control {
                proxy: Rc::clone(proxy),
            })
            .with_delimiter(b"\n")
            .with_max_length(MAX_LINE),
        )
    }
}

impl LineHandler for Control {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let answer = match std::str::from_utf8(line) {
            Err(_) => "ERR command is not UTF-8".to_string(),
            Ok(text) => match Command::parse(text) {
                Err(e) => format!("ERR {e}"),
                Ok(Command::Quit) => {
                    ctx.send_line(b"OK bye");
                    ctx.lose_connection();
                    return;
                }
                Ok(command) => {
                    log::info!("control: {text}");
                    command.run(&self.proxy)
                }
            },
        };
        ctx.send_line(answer.as_bytes());
    }

    fn line_length_exceeded(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        log::warn!(
            "control: {:?} sent a line over {MAX_LINE} bytes ({} buffered); closing",
            ctx.transport().peer_addr(),
            data.len()
        );
        ctx.send_line(format!("ERR line longer than {MAX_LINE} bytes").as_bytes());
        ctx.lose_connection();
    }

    fn connection_lost(&mut self, _reason: ConnectionLost) {
        let open = self.proxy.control_connections.get();
        self.proxy.control_connections.set(open.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_rejects_garbage() {
        assert_eq!(Command::parse("cut"), Ok(Command::Cut));
        assert_eq!(Command::parse("  toxic   list "), Ok(Command::List));
        assert!(matches!(
            Command::parse("toxic add lag upstream latency ms=5"),
            Ok(Command::Add(_))
        ));
        assert!(Command::parse("toxic add lag sideways latency ms=5").is_err());
        assert!(Command::parse("toxic add lag").is_err());
        assert!(Command::parse("toxic add bad/name upstream blackhole").is_err());
        assert!(Command::parse("toxic").is_err());
        assert!(Command::parse("frobnicate").is_err());
        assert!(Command::parse("").is_err());
    }
}
