//! Defaults of the daemon's own settings, in one place for the command line
//! and the code that builds options without it (the standby supernode).
//! Limits of the protocol state machines live in `supervox_core::defaults`
//! and `supervox_turn::defaults`.

/// Connections a supernode holds at most (clients, peers and handshakes).
pub const MAX_CONNECTIONS: usize = 20_000;

/// Connections a supernode holds at most from one host (an IPv4 address or an IPv6 /64),
/// loopback excepted: many users share a carrier NAT's address, but one host must not
/// take the whole supernode (or push its load up to get promoted itself).
pub const MAX_CONNECTIONS_PER_HOST: usize = 64;

/// TURN-over-TCP/TLS clients a supernode serves at most from one host.
pub const MAX_TURN_STREAMS_PER_HOST: usize = 32;

/// New connections from one host whose first bytes are still awaited (each waits up to
/// 2 s to tell a link from TURN).
pub const MAX_SNIFFING_PER_HOST: usize = 16;

/// Clients a promoted (`--supernode auto`) supernode serves before redirecting:
/// lower than a dedicated supernode's, as it runs on a user's machine.
pub const PROMOTED_MAX_CLIENTS: usize = 1_000;

/// Seconds signed in before a `--supernode auto` node volunteers.
pub const PROMOTE_AFTER_S: u64 = 600;

/// Seconds a promoted supernode is not needed before it steps back.
pub const STEP_BACK_AFTER_S: u64 = supervox_core::defaults::STEP_BACK_AFTER_MS / 1000;

/// The host an address counts against for per-host limits: the IPv4 address itself, or the
/// IPv6 /64 (one subscriber's network); IPv4-mapped addresses as IPv4.
pub fn host_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let k = |s: &str| super::host_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
    }
}
