//! snow with one more check: a Diffie-Hellman result of all zeros is an error.
//!
//! snow 0.9's X25519 (`resolvers/default.rs`, `Dh25519::dh`) multiplies
//! whatever public key it is given and returns the result unchecked. A peer
//! that sends a low-order point (as its ephemeral or static key) makes that
//! result all zeros whatever our private key is, so the "shared" secret is
//! known to everyone. RFC 7748 §6.1 says to refuse it; [`StrictResolver`]
//! wraps snow's default resolver so every DH of a handshake (`ee`, `es`, `se`,
//! `ss`) fails with `snow::Error::Dh` in that case, and the handshake stops.

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

/// snow's default primitives, with X25519 results of all zeros refused.
#[derive(Default)]
pub struct StrictResolver(DefaultResolver);

// snow's resolver is not Debug and holds no state worth showing.
impl std::fmt::Debug for StrictResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StrictResolver")
    }
}

impl CryptoResolver for StrictResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.0.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        self.0.resolve_dh(choice).map(|inner| Box::new(StrictDh(inner)) as Box<dyn Dh>)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.0.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.0.resolve_cipher(choice)
    }
}

/// A snow builder on [`StrictResolver`]: the only way this crate builds one.
pub fn builder<'a>(params: NoiseParams) -> snow::Builder<'a> {
    snow::Builder::with_resolver(params, Box::new(StrictResolver::default()))
}

struct StrictDh(Box<dyn Dh>);

impl Dh for StrictDh {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn pub_len(&self) -> usize {
        self.0.pub_len()
    }

    fn priv_len(&self) -> usize {
        self.0.priv_len()
    }

    fn set(&mut self, privkey: &[u8]) {
        self.0.set(privkey)
    }

    fn generate(&mut self, rng: &mut dyn Random) {
        self.0.generate(rng)
    }

    fn pubkey(&self) -> &[u8] {
        self.0.pubkey()
    }

    fn privkey(&self) -> &[u8] {
        self.0.privkey()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        self.0.dh(pubkey, out)?;
        let len = self.0.pub_len().min(out.len());
        // No early exit: the result is a secret when it is not zero.
        if out[..len].iter().fold(0u8, |acc, b| acc | b) == 0 {
            out[..len].fill(0);
            return Err(snow::Error::Dh);
        }
        Ok(())
    }
}

/// Low-order X25519 public keys (u-coordinates), as listed by libsodium and
/// RFC 7748 implementations, plus their non-canonical `u + p` forms. Used by
/// tests that play the attacker.
#[cfg(test)]
pub(crate) const LOW_ORDER_POINTS: [[u8; 32]; 7] = [
    [0; 32],
    {
        let mut u = [0u8; 32];
        u[0] = 1;
        u
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
        0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44,
        0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
    ],
    // p - 1
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    // p (= 0)
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
    // p + 1 (= 1)
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ],
];

/// An attacker's DH for tests: its "public key" is a fixed low-order point
/// and every DH it computes is zero (which is what it is for such a point).
/// `evil_static` / `evil_ephemeral` pick which of the two keys is bad; the
/// other is honest.
#[cfg(test)]
pub(crate) struct EvilResolver {
    pub point: [u8; 32],
    pub evil_static: bool,
    pub evil_ephemeral: bool,
    calls: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl EvilResolver {
    pub(crate) fn new(point: [u8; 32], evil_static: bool, evil_ephemeral: bool) -> Self {
        Self { point, evil_static, evil_ephemeral, calls: Default::default() }
    }
}

#[cfg(test)]
impl CryptoResolver for EvilResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        // snow's builder resolves the static key's DH first, then the ephemeral's.
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evil = if n == 0 { self.evil_static } else { self.evil_ephemeral };
        let inner = DefaultResolver.resolve_dh(choice)?;
        Some(if evil { Box::new(EvilDh(inner, self.point)) } else { inner })
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
struct EvilDh(Box<dyn Dh>, [u8; 32]);

#[cfg(test)]
impl Dh for EvilDh {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        self.0.set(privkey)
    }
    fn generate(&mut self, rng: &mut dyn Random) {
        self.0.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        &self.1
    }
    fn privkey(&self) -> &[u8] {
        self.0.privkey()
    }
    fn dh(&self, _pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        out[..32].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_results_are_refused_and_others_pass() {
        let r = StrictResolver::default();
        let mut dh = r.resolve_dh(&DHChoice::Curve25519).unwrap();
        dh.set(&[9; 32]);
        let mut out = [0u8; 32];
        for p in LOW_ORDER_POINTS {
            // snow's own DH computes zero for these and says Ok.
            let mut plain = DefaultResolver.resolve_dh(&DHChoice::Curve25519).unwrap();
            plain.set(&[9; 32]);
            assert!(plain.dh(&p, &mut out).is_ok() && out == [0; 32], "{p:02x?}");
            assert!(matches!(dh.dh(&p, &mut out), Err(snow::Error::Dh)), "{p:02x?}");
        }
        let mut other = r.resolve_dh(&DHChoice::Curve25519).unwrap();
        other.set(&[7; 32]);
        dh.dh(other.pubkey(), &mut out).unwrap();
        assert_ne!(out, [0; 32]);
    }
}
