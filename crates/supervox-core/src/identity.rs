//! A user's (or supernode's) long-term identity: one Ed25519 key pair.
//!
//! The same key is used, converted to X25519, as the Noise static key, so a
//! Noise handshake authenticates the Ed25519 identity without a second key.

use ed25519_dalek::SigningKey;
use rand::{CryptoRng, RngCore};
use supervox_proto::UserId;
use thiserror::Error;

const FILE_HEADER: &str = "supervox-identity-v1";

/// Why an identity file was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The file is not an identity file of ours, or is damaged.
    #[error("identity file is corrupt: {0}")]
    Corrupt(&'static str),
    /// The user id is not a strong Ed25519 key (not a point, not canonical, or of small order).
    #[error("user id is not a valid Ed25519 public key")]
    BadPublicKey,
}

/// An Ed25519 key pair.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.user_id())
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self { key: SigningKey::generate(rng) }
    }

    /// From a 32-byte secret seed (tests, simulator).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// The signing key, for making records.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public user id.
    pub fn user_id(&self) -> UserId {
        UserId(self.key.verifying_key().to_bytes())
    }

    /// Short printable fingerprint: the first 8 bytes of the id in groups.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.user_id())
    }

    /// X25519 private key for Noise, derived from the Ed25519 secret.
    pub fn noise_private_key(&self) -> [u8; 32] {
        self.key.to_scalar_bytes()
    }

    /// Serialise for the identity file (text: header line, hex seed line).
    pub fn to_file_bytes(&self) -> Vec<u8> {
        format!("{FILE_HEADER}\n{}\n", hex::encode(self.key.to_bytes())).into_bytes()
    }

    /// Parse an identity file, refusing anything damaged.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let text = std::str::from_utf8(bytes).map_err(|_| IdentityError::Corrupt("not text"))?;
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEADER) {
            return Err(IdentityError::Corrupt("missing header"));
        }
        let seed = lines.next().ok_or(IdentityError::Corrupt("missing key"))?;
        let seed = hex::decode(seed.trim()).map_err(|_| IdentityError::Corrupt("key is not hex"))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| IdentityError::Corrupt("key has the wrong length"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(IdentityError::Corrupt("unexpected trailing data"));
        }
        Ok(Self::from_seed(seed))
    }
}

/// The X25519 (Noise) public key that belongs to an Ed25519 user id.
pub fn noise_public_key(user: &UserId) -> Result<[u8; 32], IdentityError> {
    let vk = user.verifying_key().map_err(|_| IdentityError::BadPublicKey)?;
    Ok(vk.to_montgomery().to_bytes())
}

/// Printable fingerprint of a user id, e.g. `3f2a-91c0-77de-0b41`.
pub fn fingerprint(user: &UserId) -> String {
    user.0[..8].chunks(2).map(hex::encode).collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_roundtrip_and_corruption() {
        let id = Identity::generate(&mut rand::thread_rng());
        let back = Identity::from_file_bytes(&id.to_file_bytes()).unwrap();
        assert_eq!(back.user_id(), id.user_id());
        let mut bad = id.to_file_bytes();
        bad.truncate(30);
        assert!(Identity::from_file_bytes(&bad).is_err());
        assert!(Identity::from_file_bytes(b"\xff\xfe").is_err());
        assert!(Identity::from_file_bytes(b"supervox-identity-v1\nzz\n").is_err());
    }

    #[test]
    fn noise_key_matches_identity() {
        // A Noise handshake keyed with the derived private key must present
        // the Montgomery form of the Ed25519 public key as its static key.
        let (a, b) = (Identity::from_seed([5; 32]), Identity::from_seed([6; 32]));
        let p: snow::params::NoiseParams = "Noise_XX_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
        let mut i = snow::Builder::new(p.clone()).local_private_key(&a.noise_private_key()).build_initiator().unwrap();
        let mut r = snow::Builder::new(p).local_private_key(&b.noise_private_key()).build_responder().unwrap();
        let (mut m, mut out) = ([0u8; 200], [0u8; 200]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut out).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut out).unwrap();
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut out).unwrap();
        assert_eq!(r.get_remote_static().unwrap(), noise_public_key(&a.user_id()).unwrap());
        assert_eq!(i.get_remote_static().unwrap(), noise_public_key(&b.user_id()).unwrap());
    }
}
