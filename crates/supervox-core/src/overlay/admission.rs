//! Admission of supernodes: rendezvous positions that cost work, and a
//! bound on members per network prefix.
//!
//! A member's rendezvous seed (its position in every record's ranking) is
//! not its key but the tail of
//! `SHA-256("supervox member v1" ‖ network id ‖ public key ‖ nonce)`, valid
//! only when that hash has at least `difficulty` leading zero bits. To rank
//! first for a chosen name among N members an attacker needs about N
//! different valid seeds, i.e. about `N · 2^difficulty` hashes, instead of N
//! key generations. The network id is mixed in so that work done for one
//! network is worth nothing in another. A member solves once and keeps its
//! nonce with its identity; every other member verifies it once, when the
//! member enters its table (see `membership.rs`).
//!
//! Why a proof of work and not a periodically changing network nonce: there
//! is no authority to choose the nonce (any member that chose it could grind
//! it), and a change would move every record to new holders at once.
//!
//! The second defence is per prefix: at most `max_per_prefix` live members
//! from one IPv4 /24 or IPv6 /48 (loopback exempt), so one host or one small
//! network cannot become hundreds of members however much work it does.

use sha2::{Digest, Sha256};
use std::net::IpAddr;
use supervox_proto::UserId;

/// Domain separation of the member proof.
const DOMAIN: &[u8] = b"supervox member v1";
/// The default difficulty of a real network: about a second of one core's
/// work on the reference machine (BENCHMARKS.md, "member proof").
pub const DEFAULT_DIFFICULTY: u8 = 24;
/// The highest difficulty a network may ask: the seed is the hash's last 8
/// bytes, which must stay clear of the zero prefix, and a 32-bit nonce must
/// almost surely hold a solution (2^32 tries at 2^-28 each: fails with
/// probability e^-16).
pub const MAX_DIFFICULTY: u8 = 28;
/// Live members admitted per IPv4 /24 or IPv6 /48, by default.
pub const DEFAULT_MAX_MEMBERS_PER_PREFIX: usize = 4;

/// A network's admission rules, the same at every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The network id (the overlay's network key).
    pub network: [u8; 32],
    /// Leading zero bits a member's proof needs (at most [`MAX_DIFFICULTY`]).
    pub difficulty: u8,
    /// Live members admitted per prefix ([`prefix_of`]); `usize::MAX`: no limit.
    pub max_per_prefix: usize,
}

impl Admission {
    /// No work and no prefix limit (unit tests of other parts).
    pub fn none(network: [u8; 32]) -> Self {
        Self { network, difficulty: 0, max_per_prefix: usize::MAX }
    }

    /// The seed of `id` with `nonce` if the proof holds.
    pub fn verify(&self, id: &UserId, nonce: u32) -> Option<u64> {
        verify(&self.network, id, nonce, self.difficulty)
    }
}

/// Why a member was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Its proof of work does not verify.
    #[error("member proof does not verify")]
    BadProof,
    /// Its network prefix already has the most members admitted.
    #[error("too many members from one network prefix")]
    PrefixFull,
    /// The difficulty asked is above [`MAX_DIFFICULTY`].
    #[error("difficulty {0} above the maximum {MAX_DIFFICULTY}")]
    TooHard(u8),
    /// No 32-bit nonce solves this key at this difficulty.
    #[error("no nonce solves this key at this difficulty")]
    Unsolvable,
}

/// The proof hash, with the first block (domain, network, key prefix)
/// absorbed once: a solver tries nonces at one compression each.
#[derive(Clone)]
pub struct Prover {
    state: Sha256,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prover")
    }
}

impl Prover {
    /// The hasher for one member of one network.
    pub fn new(network: &[u8; 32], id: &UserId) -> Self {
        let mut state = Sha256::new();
        state.update(DOMAIN);
        state.update(network);
        state.update(id.0);
        Self { state }
    }

    /// The proof hash for `nonce`.
    pub fn hash(&self, nonce: u32) -> [u8; 32] {
        let mut h = self.state.clone();
        h.update(nonce.to_le_bytes());
        h.finalize().into()
    }
}

/// Leading zero bits of a hash.
pub fn leading_zeros(h: &[u8; 32]) -> u32 {
    let mut n = 0;
    for b in h {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// The seed a proof hash gives: its last 8 bytes (never in the zero prefix,
/// which is at most [`MAX_DIFFICULTY`] bits).
pub fn seed_of(h: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[24..]);
    u64::from_le_bytes(b)
}

/// The rendezvous seed of `id` with `nonce`, whether or not the proof holds
/// (a member already verified).
pub fn seed(network: &[u8; 32], id: &UserId, nonce: u32) -> u64 {
    seed_of(&Prover::new(network, id).hash(nonce))
}

/// The seed of `id` with `nonce` if its proof has `difficulty` leading zero
/// bits; a difficulty above [`MAX_DIFFICULTY`] is never met.
pub fn verify(network: &[u8; 32], id: &UserId, nonce: u32, difficulty: u8) -> Option<u64> {
    if difficulty > MAX_DIFFICULTY {
        return None;
    }
    let h = Prover::new(network, id).hash(nonce);
    (leading_zeros(&h) >= u32::from(difficulty)).then(|| seed_of(&h))
}

/// The first nonce from 0 up whose proof holds: about `2^difficulty` hashes.
/// CPU work (about a second at [`DEFAULT_DIFFICULTY`]): a driver runs it
/// off its event loop, once, and keeps the nonce with the identity.
pub fn solve(network: &[u8; 32], id: &UserId, difficulty: u8) -> Result<u32, AdmissionError> {
    if difficulty > MAX_DIFFICULTY {
        return Err(AdmissionError::TooHard(difficulty));
    }
    let p = Prover::new(network, id);
    let want = u32::from(difficulty);
    (0..=u32::MAX).find(|n| leading_zeros(&p.hash(*n)) >= want).ok_or(AdmissionError::Unsolvable)
}

/// The prefix a member's address counts against: an IPv4 /24 or IPv6 /48
/// (an IPv4-mapped IPv6 address counts as its IPv4 address); `None` for
/// loopback, which is never limited (single-machine tests).
pub fn prefix_of(ip: IpAddr) -> Option<u64> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if ip.is_loopback() {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => Some(u64::from(u32::from(v4) >> 8)),
        IpAddr::V6(v6) => Some((1 << 63) | (u128::from(v6) >> 80) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: [u8; 32] = [7; 32];

    #[test]
    fn a_solved_proof_verifies_and_a_wrong_nonce_or_network_does_not() {
        let id = UserId([3; 32]);
        let n = solve(&NET, &id, 12).unwrap();
        let s = verify(&NET, &id, n, 12).expect("solved");
        assert_eq!(s, seed(&NET, &id, n));
        assert!(leading_zeros(&Prover::new(&NET, &id).hash(n)) >= 12);
        // The first solution: every smaller nonce fails.
        assert!((0..n).all(|m| verify(&NET, &id, m, 12).is_none()));
        // Another key or network does not inherit the work (2^-12 by chance:
        // fixed inputs here, checked once).
        assert!(verify(&NET, &UserId([4; 32]), n, 12).is_none());
        assert!(verify(&[8; 32], &id, n, 12).is_none());
        // Difficulty 0 accepts every nonce; too hard is refused, not looped on.
        assert!((0..100).all(|m| verify(&NET, &id, m, 0).is_some()));
        assert_eq!(solve(&NET, &id, 0), Ok(0));
        assert_eq!(solve(&NET, &id, MAX_DIFFICULTY + 1), Err(AdmissionError::TooHard(MAX_DIFFICULTY + 1)));
        assert!(verify(&NET, &id, n, MAX_DIFFICULTY + 1).is_none());
        // The seed is not the key's bytes: grinding keys does not choose it.
        assert_ne!(s, u64::from_le_bytes([3; 8]));
    }

    #[test]
    fn leading_zeros_counts_bits() {
        let mut h = [0u8; 32];
        assert_eq!(leading_zeros(&h), 256);
        h[2] = 0x10;
        assert_eq!(leading_zeros(&h), 19);
        h[0] = 0x80;
        assert_eq!(leading_zeros(&h), 0);
    }

    #[test]
    fn prefixes_are_24_and_48_bits_and_loopback_is_exempt() {
        let p = |s: &str| prefix_of(s.parse().unwrap());
        assert_eq!(p("203.0.113.1"), p("203.0.113.254"));
        assert_ne!(p("203.0.113.1"), p("203.0.114.1"));
        assert_eq!(p("2001:db8:1::1"), p("2001:db8:1:ffff::2"));
        assert_ne!(p("2001:db8:1::1"), p("2001:db8:2::1"));
        assert_eq!(p("::ffff:203.0.113.9"), p("203.0.113.1"));
        assert_ne!(p("0.0.0.1"), p("::1:0:0:0"));
        assert_eq!(p("127.0.0.1"), None);
        assert_eq!(p("127.5.0.1"), None);
        assert_eq!(p("::1"), None);
    }
}
