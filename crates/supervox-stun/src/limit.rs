//! Answer-rate limits for the open Binding service.
//!
//! A Binding answer goes to the request's source, which a stranger can spoof: every
//! supernode is then a reflector toward the victim. PADDING is bounded by the request, so
//! the answer is only a few times larger than the request; what caps a flood toward one
//! victim is the *rate* of answers per destination prefix (/24 for IPv4, /48 for IPv6:
//! an attacker spoofs many addresses of one victim network as easily as one).
//!
//! The table is a fixed array of token buckets indexed by a keyed hash of the prefix, so
//! its memory is bounded whatever the number of sources, and nobody who does not know the
//! key can aim collisions at a chosen victim. Prefixes that collide share a bucket: that
//! errs toward answering less, never more.

use std::hash::BuildHasher;
use std::net::IpAddr;

/// Answers per second to one destination prefix, sustained.
pub const ANSWERS_PER_SEC: u32 = 50;
/// Answers to one destination prefix in a burst (sign-ins of many clients behind one
/// carrier NAT, NAT probes with retransmissions).
pub const ANSWER_BURST: u32 = 250;
/// Buckets in the table.
pub const BUCKETS: usize = 4096;

/// A token bucket per destination prefix (see the module documentation).
#[derive(Debug, Clone)]
pub struct PrefixLimiter {
    /// Tokens in thousandths, and when they were last refilled.
    buckets: Vec<(u32, u64)>,
    per_sec: u32,
    burst_milli: u32,
    key: std::collections::hash_map::RandomState,
}

impl PrefixLimiter {
    /// A table of `buckets` buckets (at least 1) allowing `per_sec` answers per second and
    /// bursts of `burst` per prefix.
    pub fn new(buckets: usize, per_sec: u32, burst: u32) -> Self {
        let burst_milli = burst.saturating_mul(1000);
        PrefixLimiter {
            buckets: vec![(burst_milli, 0); buckets.max(1)],
            per_sec,
            burst_milli,
            key: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Whether one more answer toward `to` is allowed at `now_ms` (and spend it).
    pub fn allow(&mut self, to: IpAddr, now_ms: u64) -> bool {
        let i = self.index(to);
        let (tokens, last) = &mut self.buckets[i];
        let elapsed = now_ms.saturating_sub(*last);
        // per_sec tokens per 1000 ms = per_sec thousandths per ms.
        let refill = elapsed.saturating_mul(u64::from(self.per_sec));
        *tokens = (u64::from(*tokens).saturating_add(refill)).min(u64::from(self.burst_milli)) as u32;
        *last = (*last).max(now_ms);
        if *tokens >= 1000 {
            *tokens -= 1000;
            true
        } else {
            false
        }
    }

    fn index(&self, ip: IpAddr) -> usize {
        (self.key.hash_one(prefix(ip)) % self.buckets.len() as u64) as usize
    }
}

impl Default for PrefixLimiter {
    fn default() -> Self {
        Self::new(BUCKETS, ANSWERS_PER_SEC, ANSWER_BURST)
    }
}

/// The network an address belongs to for rate limits: its /24 (IPv4, also when mapped
/// into IPv6) or its /48 (IPv6), tagged with the family.
pub fn prefix(ip: IpAddr) -> (u8, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4) >> 8)),
        IpAddr::V6(v6) => (6, u128::from(v6) >> 80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_flood_toward_one_prefix_is_capped_at_the_burst_then_the_rate() {
        let mut l = PrefixLimiter::default();
        // 10 000 spoofed requests in one second, spread over the victim's /24.
        let answered = (0..10_000u64).filter(|i| l.allow(ip(&format!("203.0.113.{}", i % 256)), i / 10 + 1)).count();
        let cap = (ANSWER_BURST + ANSWERS_PER_SEC) as usize;
        assert!(answered <= cap && answered >= ANSWER_BURST as usize, "{answered} answers (cap {cap})");
        // Ten more seconds of flood: the rate, not more.
        let more = (0..100_000u64).filter(|i| l.allow(ip("203.0.113.9"), 1_000 + i / 10)).count();
        assert!(more <= 10 * ANSWERS_PER_SEC as usize + 1, "{more}");
        assert!(more >= 9 * ANSWERS_PER_SEC as usize, "{more}");
    }

    #[test]
    fn other_prefixes_keep_their_own_budget() {
        let mut l = PrefixLimiter::default();
        while l.allow(ip("203.0.113.1"), 5) {}
        // Another /24, and an IPv6 /48: not affected (unless they collide, which with
        // 4096 buckets and a random key is rare; try several to be sure).
        let fresh = (0..20).filter(|i| l.allow(ip(&format!("198.51.{i}.7")), 5)).count();
        assert!(fresh >= 19, "{fresh}");
        assert!(l.allow(ip("2001:db8:1::1"), 5));
        // The same /48 shares one budget; a mapped IPv4 address is its IPv4 prefix.
        assert_eq!(prefix(ip("2001:db8:1:2::1")), prefix(ip("2001:db8:1:ffff::9")));
        assert_eq!(prefix(ip("::ffff:203.0.113.77")), prefix(ip("203.0.113.1")));
        assert_ne!(prefix(ip("203.0.114.1")), prefix(ip("203.0.113.1")));
    }

    #[test]
    fn time_going_backwards_or_far_forwards_does_not_overflow() {
        let mut l = PrefixLimiter::new(1, u32::MAX, u32::MAX);
        assert!(l.allow(ip("192.0.2.1"), u64::MAX));
        assert!(l.allow(ip("192.0.2.1"), 0));
        let mut l = PrefixLimiter::new(0, 1, 1);
        assert!(l.allow(ip("192.0.2.1"), 0));
        assert!(!l.allow(ip("192.0.2.1"), 0));
    }
}
