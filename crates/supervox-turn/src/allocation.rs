//! Per-allocation state: lifetime, permissions, channel bindings and the bandwidth bucket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::codec::IntegrityKind;

/// Permission lifetime (RFC 8656 §9: 300 s).
pub const PERMISSION_LIFETIME_MS: u64 = 300_000;
/// Channel binding lifetime (RFC 8656 §12: 600 s).
pub const CHANNEL_LIFETIME_MS: u64 = 600_000;

/// After a channel binding expires its number stays reserved this long (RFC 8656 §12: a channel
/// cannot be rebound to a different peer until 5 minutes after the binding expired).
pub const CHANNEL_QUARANTINE_MS: u64 = 300_000;

/// Byte-granular token bucket; `rate_bytes_per_sec == 0` means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_bytes_per_sec: u64,
    burst_bytes: u64,
    tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `kbps` kbit/s holding at most `burst_ms` worth of traffic.
    pub fn new(kbps: u32, burst_ms: u32, now_ms: u64) -> Self {
        let rate = u64::from(kbps) * 1000 / 8;
        // Never let the burst be smaller than one maximum-size datagram, or large packets starve.
        let burst = (rate * u64::from(burst_ms) / 1000).max(65_536);
        TokenBucket { rate_bytes_per_sec: rate, burst_bytes: burst, tokens: burst, last_ms: now_ms }
    }

    /// Take `bytes` tokens if available; returns false (drop the packet) otherwise.
    pub fn take(&mut self, bytes: usize, now_ms: u64) -> bool {
        if self.rate_bytes_per_sec == 0 {
            return true;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if elapsed > 0 {
            let refill = elapsed.saturating_mul(self.rate_bytes_per_sec) / 1000;
            if refill > 0 {
                self.tokens = self.tokens.saturating_add(refill).min(self.burst_bytes);
                self.last_ms = now_ms;
            }
        } else if now_ms < self.last_ms {
            // Clock went backwards: resynchronise without refilling.
            self.last_ms = now_ms;
        }
        let need = bytes as u64;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

/// A channel binding.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    /// Peer transport address bound to the channel.
    pub peer: SocketAddr,
    /// Expiry, ms on the caller's clock.
    pub expires_ms: u64,
}

/// Cached success response for Allocate retransmissions (RFC 8656 §7.2 "stateless" retransmit).
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// Transaction id of the Allocate request.
    pub transaction_id: [u8; 12],
    /// Encoded response bytes.
    pub bytes: Vec<u8>,
}

/// One TURN allocation.
#[derive(Debug)]
pub struct Allocation {
    /// The relayed transport address (owned by the driver's relay socket).
    pub relay_addr: SocketAddr,
    /// Expiry, ms on the caller's clock.
    pub expires_ms: u64,
    /// User id from the credentials that created the allocation.
    pub user_id: String,
    /// Username (for re-deriving nothing; kept for logs/stats).
    pub username: String,
    /// Key used to sign responses to this client.
    pub key: [u8; 16],
    /// Integrity algorithm the client last used.
    pub integrity: IntegrityKind,
    /// Peer IP -> permission expiry.
    pub permissions: HashMap<IpAddr, u64>,
    /// Channel number -> binding.
    pub channels: HashMap<u16, Channel>,
    /// Peer address -> channel number (reverse index).
    pub channel_by_peer: HashMap<SocketAddr, u16>,
    /// Bandwidth limiter shared by both directions.
    pub bucket: TokenBucket,
    /// Response to the creating Allocate, replayed for retransmissions.
    pub allocate_response: CachedResponse,
}

impl Allocation {
    /// Whether a non-expired permission exists for `ip`.
    pub fn permitted(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.permissions.get(&ip).is_some_and(|&exp| exp > now_ms)
    }

    /// Live channel number bound to `peer`, if any.
    pub fn channel_for_peer(&self, peer: SocketAddr, now_ms: u64) -> Option<u16> {
        let ch = *self.channel_by_peer.get(&peer)?;
        self.channels.get(&ch).filter(|c| c.expires_ms > now_ms).map(|_| ch)
    }

    /// Live peer bound to `channel`, if any.
    pub fn peer_for_channel(&self, channel: u16, now_ms: u64) -> Option<SocketAddr> {
        self.channels.get(&channel).filter(|c| c.expires_ms > now_ms).map(|c| c.peer)
    }

    /// Drop expired permissions, and channels whose quarantine has ended.
    pub fn sweep(&mut self, now_ms: u64) {
        self.permissions.retain(|_, exp| *exp > now_ms);
        let before = self.channels.len();
        self.channels.retain(|_, c| c.expires_ms.saturating_add(CHANNEL_QUARANTINE_MS) > now_ms);
        if self.channels.len() != before {
            let channels = &self.channels;
            self.channel_by_peer.retain(|_, ch| channels.contains_key(ch));
        }
    }

    /// Number of live permissions.
    pub fn live_permissions(&self, now_ms: u64) -> usize {
        self.permissions.values().filter(|&&e| e > now_ms).count()
    }
}

/// Which peers a relay may reach. By default only the public internet: a relay that
/// reaches private, CGNAT or unique-local addresses is an anonymous proxy into the
/// operator's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Permit loopback peers (single-machine tests only).
    pub allow_loopback: bool,
    /// Permit private (RFC 1918), shared/CGNAT (100.64/10) and unique-local (fc00::/7)
    /// peers: for a network run inside one organisation's address space.
    pub allow_private: bool,
}

/// Whether relaying to `ip` is forbidden (403) under `policy`: always unspecified, "this
/// network" (0/8), multicast, broadcast, link-local (e.g. cloud metadata 169.254.169.254,
/// fe80::/10) and the deprecated site-local fec0::/10; loopback unless `allow_loopback`;
/// private, CGNAT and ULA unless `allow_private`. IPv4-mapped IPv6 addresses are judged
/// by their IPv4 form. (The relay's own addresses are checked by the server, which knows
/// them and its relay ports.)
pub fn peer_forbidden(ip: IpAddr, policy: PeerPolicy) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let private = v4.is_private() || (o[0] == 100 && (o[1] & 0xC0) == 64);
            v4.is_unspecified()
                || o[0] == 0
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_link_local()
                || (v4.is_loopback() && !policy.allow_loopback)
                || (private && !policy.allow_private)
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            let unique_local = (seg0 & 0xFE00) == 0xFC00;
            v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xFFC0) == 0xFE80
                || (seg0 & 0xFFC0) == 0xFEC0
                || (v6.is_loopback() && !policy.allow_loopback)
                || (unique_local && !policy.allow_private)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_and_refills() {
        // 800 kbit/s = 100_000 B/s, burst floor 65_536 B.
        let mut b = TokenBucket::new(800, 100, 0);
        assert!(b.take(65_536, 0));
        assert!(!b.take(1, 0));
        assert!(b.take(10_000, 100));
        assert!(!b.take(1_000, 100));
        assert!(b.take(100_000, 10_000) || b.take(65_536, 10_000));
        let mut unlimited = TokenBucket::new(0, 0, 0);
        assert!((0..1000).all(|_| unlimited.take(65_535, 0)));
    }

    #[test]
    fn forbidden_peers() {
        let strict = PeerPolicy::default();
        let loopback = PeerPolicy { allow_loopback: true, allow_private: false };
        let private = PeerPolicy { allow_loopback: false, allow_private: true };
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.169.254",
            "::",
            "ff02::1",
            "fe80::1",
            "fec0::1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            for policy in [strict, loopback, private] {
                assert!(peer_forbidden(ip, policy), "{ip} under {policy:?}");
            }
        }
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(peer_forbidden(ip, strict) && peer_forbidden(ip, private), "{ip}");
            assert!(!peer_forbidden(ip, loopback), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.1.2.3",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(peer_forbidden(ip, strict) && peer_forbidden(ip, loopback), "{ip}");
            assert!(!peer_forbidden(ip, private), "{ip}");
        }
        for ip in ["192.0.2.1", "172.32.0.1", "100.128.0.1", "198.18.0.5", "203.0.113.7", "2001:db8::1", "2a00::1"] {
            assert!(!peer_forbidden(ip.parse().expect("ip"), strict), "{ip}");
        }
    }
}
