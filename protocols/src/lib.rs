//! gyre-protocols: framing protocols for the gyre reactor.
//!
//! Each framing is a sans-IO decoder (bytes in, frames or an error out,
//! usable on its own) plus a [`Protocol`](gyre_reactor::Protocol) adapter
//! that feeds it and calls a handler you write:
//!
//! | framing | decoder | protocol | handler |
//! |---|---|---|---|
//! | lines (`\r\n`, `\n`, ...) with a raw mode | [`LineDecoder`] | [`LineReceiver`] | [`LineHandler`] |
//! | netstrings (`5:hello,`) | [`NetstringDecoder`] | [`NetstringReceiver`] | [`NetstringHandler`] |
//! | 8/16/32-bit length prefixes | [`IntNDecoder`] | [`Int32StringReceiver`] and friends | [`IntNHandler`] |
//!
//! Every decoder has a maximum frame length and keeps its buffer bounded by
//! it; malformed or oversized input is an error, never a panic. Receivers can
//! be paused and resumed from inside a hook or from outside (through a
//! [`LineControl`] or [`StringControl`], which are also
//! [`Producer`](gyre_reactor::Producer)s), and stop delivering once their
//! connection is closing.
//!
//! ```
//! use gyre_protocols::{LineContext, LineHandler, LineReceiver};
//! use gyre_reactor::testing::StringTransport;
//! use gyre_reactor::Protocol;
//!
//! struct Shout;
//! impl LineHandler for Shout {
//!     fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
//!         ctx.send_line(&line.to_ascii_uppercase());
//!     }
//! }
//!
//! let st = StringTransport::new();
//! let mut proto = LineReceiver::new(Shout).with_delimiter(b"\n");
//! proto.connection_made(st.transport());
//! proto.data_received(b"hi\nthere\n");
//! assert_eq!(st.value(), b"HI\nTHERE\n");
//! ```

#![forbid(unsafe_code)]

/// The crate README's example, compiled as a doc test so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod flow;
pub mod http;
pub mod intn;
pub mod line;
pub mod netstring;
mod string;
pub mod tls;

pub use intn::{
    Int16Decoder, Int16StringReceiver, Int32Decoder, Int32StringReceiver, Int8Decoder,
    Int8StringReceiver, IntNDecoder, IntNHandler, IntNStringReceiver, LengthLimitExceeded,
    PrefixInt, StringTooLong,
};
pub use line::{
    LineContext, LineControl, LineDecoder, LineFrame, LineHandler, LineReceiver, LineTooLong,
};
pub use netstring::{
    encode_netstring, NetstringDecoder, NetstringError, NetstringHandler, NetstringReceiver,
};
pub use string::{StringContext, StringControl};

#[cfg(test)]
mod tests;
