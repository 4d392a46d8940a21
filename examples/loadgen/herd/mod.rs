//! The herd modes: `herd-iamat`, `herd-flood` and `herd-whatsat`.
//!
//! They speak HERD.md's protocol to any herd (gyre's, or the Twisted peer
//! in benches/peers/twisted_herd.py) and check what comes back.
//!
//! - **Which servers.** `--addr A,B,..` names them by address, or
//!   `--config FILE` (the herd's configuration JSON) with `--to NAME,..`
//!   (default: every server of the file but the `--as` member) by name;
//!   with names, every AT answer must carry the right server's name.
//!   Connections are spread round-robin over the servers.
//! - **Every IAMAT is new.** Client IDs are `lg-<run>-<connection>-<k>`
//!   (`<run>` differs from run to run; `--clients K` IDs per connection,
//!   default 16, used in turn) and every time is later than any the run
//!   sent before (the wall clock in nanoseconds, bumped by 1 ns when the
//!   clock has not moved), so every IAMAT is stored, logged and flooded.
//! - **Answers are checked** ([`wire::check_at`]): an IAMAT's answer must be
//!   `AT <server> <diff> <the IAMAT's three fields, byte for byte>`, with
//!   `<diff>` signed and exactly 9 fractional digits. A `? ` answer (a rate
//!   limit, say) is counted as `refused`, any other mismatch as a wrong
//!   answer; both count in `errors`. A connection that closes with answers
//!   outstanding, an answer nobody asked for, or no answer within 10 s ends
//!   the run.
//! - **Source addresses** ([`net`]): `--rotate R` moves each connection to a
//!   fresh loopback source address every R IAMATs, under the herd's
//!   per-address IAMAT limit; `--rotate 0` stays put.
//! - **WHATSAT radii.** `--radius KM` (default 10) and `--max N` (default 5)
//!   are sent as given; `--distinct K` (default 1) replaces the radius by K
//!   radii evenly spaced up to 50 km, used in turn, so that K distinct
//!   Places queries are made (the herd caches identical ones for 60 s).

pub mod conn;
pub mod flood;
pub mod iamat;
pub mod net;
pub mod target;
pub mod whatsat;
pub mod wire;

#[cfg(test)]
mod tests;
