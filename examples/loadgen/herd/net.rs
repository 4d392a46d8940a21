//! Connections from chosen loopback source addresses.
//!
//! The herd limits IAMATs per source address (HERD.md's defaults: 50/s in
//! bursts of 200; 5/s in bursts of 100 for client IDs new to the server).
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so a client
//! may bind its socket to any of those addresses before connecting: each
//! is a different source address to the server. [`Sources`] hands them out
//! in order (skipping .0 and .255 last octets, so no broadcast-looking
//! address is used) over 127.1.0.1 to 127.255.255.254, wrapping around,
//! from a starting point that differs from run to run (so that a run does
//! not meet the buckets an earlier run against the same servers emptied);
//! a run would need millions of rotations to come back to an address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Result, IO_TIMEOUT};

const FIRST: u32 = u32::from_be_bytes([127, 1, 0, 1]);
const LAST: u32 = u32::from_be_bytes([127, 255, 255, 254]);

/// Hands out loopback source addresses for `--rotate`.
#[derive(Debug)]
pub struct Sources {
    next: u32,
    rotate: u64,
    warned: bool,
    used: u64,
}

impl Sources {
    /// `rotate`: IAMATs per address (0: no rotation, the OS picks).
    pub fn new(rotate: u64) -> Sources {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ (std::process::id() << 12);
        Sources {
            next: FIRST + seed % (LAST - FIRST),
            rotate,
            warned: false,
            used: 0,
        }
    }

    /// IAMATs a connection may send before it moves (`None`: never).
    pub fn budget(&self) -> Option<u64> {
        (self.rotate > 0).then_some(self.rotate)
    }

    /// How many addresses were handed out.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The source address of a new connection to `target`: the next one
    /// when rotating to an IPv4 loopback target, else none (the OS's).
    pub fn pick(&mut self, target: SocketAddr) -> Option<Ipv4Addr> {
        self.rotate.checked_sub(1)?;
        match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {}
            _ => {
                if !self.warned {
                    self.warned = true;
                    eprintln!(
                        "loadgen: --rotate needs IPv4 loopback targets; {target} gets the OS's source address"
                    );
                }
                return None;
            }
        }
        let mut a = self.next;
        while matches!(a & 0xff, 0 | 255) {
            a += 1;
        }
        self.next = if a >= LAST { FIRST } else { a + 1 };
        self.used += 1;
        Some(Ipv4Addr::from(a))
    }
}

/// A blocking connection to `target` from `source` (when given), with
/// TCP_NODELAY and 10 s read and write time-outs.
pub fn connect_from(target: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(source) = source {
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .map_err(|e| format!("bind to {source}: {e}"))?;
    }
    socket
        .connect_timeout(&target.into(), IO_TIMEOUT)
        .map_err(|e| match source {
            Some(s) => format!("connect to {target} from {s}: {e}"),
            None => format!("connect to {target}: {e}"),
        })?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_skip_zero_and_broadcast_octets_and_only_rotate_when_asked() {
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(Sources::new(0).pick(target), None);
        let mut s = Sources::new(10);
        let first = s.pick(target).unwrap();
        assert!(first.octets()[0] == 127 && first.octets()[1] >= 1);
        s.next = LAST;
        assert_eq!(s.pick(target), Some(Ipv4Addr::new(127, 255, 255, 254)));
        assert_eq!(s.pick(target), Some(Ipv4Addr::new(127, 1, 0, 1)));
        s.next = u32::from_be_bytes([127, 1, 0, 254]);
        assert_eq!(s.pick(target), Some(Ipv4Addr::new(127, 1, 0, 254)));
        assert_eq!(s.pick(target), Some(Ipv4Addr::new(127, 1, 1, 1)));
        assert_eq!(s.pick("[::1]:9".parse().unwrap()), None);
    }
}
