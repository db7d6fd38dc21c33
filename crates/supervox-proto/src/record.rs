//! Signed directory records: name claims and presence.
//!
//! Every record is signed by its owner's Ed25519 key over a domain-separated
//! encoding of its fields, and verified by every supernode that stores or
//! serves it, so a supernode cannot forge or alter one either.
//!
//! Keys and signatures are checked strictly: a user id must be the canonical
//! encoding of a point that is not of small order, and signatures go through
//! `verify_strict` (no small-order `R`), so no signature verifies for more
//! than one key or message by construction.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use thiserror::Error;

/// Longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Longest lifetime a presence record may claim, so a leaked record dies soon.
pub const MAX_PRESENCE_TTL_MS: u64 = 10 * 60 * 1000;

/// A user id is the user's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub [u8; 32]);

impl UserId {
    /// The verifying key, if these bytes are a strong Ed25519 public key:
    /// a point on the curve, in its canonical encoding, not of small order.
    pub fn verifying_key(&self) -> Result<VerifyingKey, RecordError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| RecordError::BadKey)?;
        // A small-order key makes signatures that verify for any message
        // (the identity point: for all of them). Decompression reduces y
        // mod p and accepts a sign bit on x = 0, so several byte strings name
        // one point: only the one the point compresses back to is an id.
        if vk.is_weak() || vk.to_edwards().compress().to_bytes() != self.0 {
            return Err(RecordError::BadKey);
        }
        Ok(vk)
    }

    /// True if these bytes are a user id [`UserId::verifying_key`] accepts.
    pub fn is_strong(&self) -> bool {
        self.verifying_key().is_ok()
    }

    /// Parse the 64-hex-digit form printed by [`fmt::Display`].
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(UserId(v.try_into().ok()?))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({}…)", &hex::encode(&self.0[..6]))
    }
}

/// Why a record was refused.
#[derive(Debug, Error, PartialEq, Eq, Clone, Serialize, Deserialize)]
pub enum RecordError {
    /// The signature does not verify under the record's key.
    #[error("bad signature")]
    BadSignature,
    /// The key bytes are not a valid Ed25519 public key.
    #[error("invalid public key")]
    BadKey,
    /// The name is empty, too long or uses characters outside `[a-z0-9._-]`.
    #[error("invalid name {0:?}: use 1-32 characters a-z 0-9 . _ -")]
    BadName(String),
    /// The presence record has expired or claims too long a lifetime.
    #[error("presence record expired or lifetime too long")]
    BadExpiry,
}

/// Check a user-chosen name.
pub fn validate_name(name: &str) -> Result<(), RecordError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RecordError::BadName(name.chars().take(64).collect()))
    }
}

/// "This name belongs to this key", first come first served (decided by a
/// majority of the name's holders), for a year after `created_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    /// The claimed name.
    pub name: String,
    /// The owner.
    pub user_id: UserId,
    /// When the owner signed this claim (unix ms). A client signs a fresh
    /// claim at every sign-in: the newest claim by the same key renews the
    /// name for another lifetime (a year); the time plays no part in who gets
    /// a contested name.
    pub created_ms: u64,
    /// Owner's signature over the fields above.
    pub signature: Signature,
}

fn claim_payload(name: &str, user_id: &UserId, created_ms: u64) -> Vec<u8> {
    let mut v = b"supervox/name-claim/v1\0".to_vec();
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&user_id.0);
    v.extend_from_slice(&created_ms.to_be_bytes());
    v
}

impl NameClaim {
    /// Make and sign a claim.
    pub fn sign(key: &SigningKey, name: &str, created_ms: u64) -> Result<Self, RecordError> {
        validate_name(name)?;
        let user_id = UserId(key.verifying_key().to_bytes());
        let signature = key.sign(&claim_payload(name, &user_id, created_ms));
        Ok(Self { name: name.to_owned(), user_id, created_ms, signature })
    }

    /// Check the name and the signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        validate_name(&self.name)?;
        let vk = self.user_id.verifying_key()?;
        vk.verify_strict(&claim_payload(&self.name, &self.user_id, self.created_ms), &self.signature)
            .map_err(|_| RecordError::BadSignature)
    }
}

/// "This user is online, reachable through this supernode, until then".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The user.
    pub user_id: UserId,
    /// The name the user is signed in as.
    pub name: String,
    /// The supernode the user is connected to (its advertised address).
    pub supernode: SocketAddr,
    /// Increases with every new record from this user; newer replaces older.
    pub seq: u64,
    /// Unix ms after which the record is void.
    pub expires_ms: u64,
    /// Owner's signature over the fields above.
    pub signature: Signature,
}

fn presence_payload(user_id: &UserId, name: &str, sn: &SocketAddr, seq: u64, expires_ms: u64) -> Vec<u8> {
    let mut v = b"supervox/presence/v1\0".to_vec();
    v.extend_from_slice(&user_id.0);
    v.extend_from_slice(&(name.len() as u32).to_be_bytes());
    v.extend_from_slice(name.as_bytes());
    let sn = sn.to_string();
    v.extend_from_slice(&(sn.len() as u32).to_be_bytes());
    v.extend_from_slice(sn.as_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&expires_ms.to_be_bytes());
    v
}

impl Presence {
    /// Make and sign a presence record.
    pub fn sign(
        key: &SigningKey,
        name: &str,
        supernode: SocketAddr,
        seq: u64,
        expires_ms: u64,
    ) -> Result<Self, RecordError> {
        validate_name(name)?;
        let user_id = UserId(key.verifying_key().to_bytes());
        let signature = key.sign(&presence_payload(&user_id, name, &supernode, seq, expires_ms));
        Ok(Self { user_id, name: name.to_owned(), supernode, seq, expires_ms, signature })
    }

    /// Check the signature and that the record is live at `now_ms` and does
    /// not claim a lifetime longer than [`MAX_PRESENCE_TTL_MS`].
    pub fn verify(&self, now_ms: u64) -> Result<(), RecordError> {
        validate_name(&self.name)?;
        let vk = self.user_id.verifying_key()?;
        vk.verify_strict(
            &presence_payload(&self.user_id, &self.name, &self.supernode, self.seq, self.expires_ms),
            &self.signature,
        )
        .map_err(|_| RecordError::BadSignature)?;
        if self.expires_ms <= now_ms || self.expires_ms > now_ms.saturating_add(MAX_PRESENCE_TTL_MS) {
            return Err(RecordError::BadExpiry);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn claim_roundtrip_and_forgery() {
        let c = NameClaim::sign(&key(1), "alice", 5).unwrap();
        c.verify().unwrap();
        let mut forged = c.clone();
        forged.user_id = UserId(key(2).verifying_key().to_bytes());
        assert_eq!(forged.verify(), Err(RecordError::BadSignature));
        let mut renamed = c.clone();
        renamed.name = "mallory".into();
        assert_eq!(renamed.verify(), Err(RecordError::BadSignature));
    }

    #[test]
    fn name_rules() {
        assert!(validate_name("bob.smith-2_x").is_ok());
        for bad in ["", "Bob", "a b", "ä", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presence_expiry_and_signature() {
        let sn: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let p = Presence::sign(&key(1), "alice", sn, 1, 100_000).unwrap();
        p.verify(1000).unwrap();
        assert_eq!(p.verify(100_000), Err(RecordError::BadExpiry));
        let too_long = Presence::sign(&key(1), "alice", sn, 1, 10 * MAX_PRESENCE_TTL_MS).unwrap();
        assert_eq!(too_long.verify(0), Err(RecordError::BadExpiry));
        let mut moved = p.clone();
        moved.supernode = "127.0.0.1:4001".parse().unwrap();
        assert_eq!(moved.verify(1000), Err(RecordError::BadSignature));
    }

    mod strict {
        //! Attacks on lax Ed25519 checks, each performed against the records.
        use super::*;
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::edwards::CompressedEdwardsY;
        use curve25519_dalek::scalar::Scalar;
        use curve25519_dalek::traits::Identity;
        use ed25519_dalek::Verifier;
        use sha2::{Digest, Sha512};

        fn sig(r: [u8; 32], s: Scalar) -> Signature {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&r);
            b[32..].copy_from_slice(s.as_bytes());
            Signature::from_bytes(&b)
        }

        /// The RFC 8032 challenge `k = SHA-512(R || A || M) mod l`.
        fn challenge(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
            let mut h = Sha512::new();
            h.update(r);
            h.update(a);
            h.update(msg);
            Scalar::from_hash(h)
        }

        #[test]
        fn claim_signed_by_the_identity_key_is_refused() {
            // With A = the identity point, [s]B - [k]A = [s]B: one signature
            // (R = [s]B, s) "verifies" for every name. The lax check takes it.
            let a = UserId(CompressedEdwardsY::identity().to_bytes());
            let s = Scalar::from(12345u64);
            let forged_sig = sig((ED25519_BASEPOINT_POINT * s).compress().to_bytes(), s);
            for name in ["alice", "bob"] {
                let payload = claim_payload(name, &a, 1);
                let lax = VerifyingKey::from_bytes(&a.0).unwrap();
                assert!(lax.verify(&payload, &forged_sig).is_ok(), "the attack works on verify()");
                let claim = NameClaim { name: name.into(), user_id: a, created_ms: 1, signature: forged_sig };
                assert_eq!(claim.verify(), Err(RecordError::BadKey));
            }
            let sn: SocketAddr = "127.0.0.1:4000".parse().unwrap();
            let p = Presence {
                user_id: a,
                name: "alice".into(),
                supernode: sn,
                seq: 1,
                expires_ms: 5000,
                signature: forged_sig,
            };
            assert!(lax_presence_ok(&p), "the attack works on verify()");
            assert_eq!(p.verify(1000), Err(RecordError::BadKey));
        }

        fn lax_presence_ok(p: &Presence) -> bool {
            let payload = presence_payload(&p.user_id, &p.name, &p.supernode, p.seq, p.expires_ms);
            VerifyingKey::from_bytes(&p.user_id.0).unwrap().verify(&payload, &p.signature).is_ok()
        }

        #[test]
        fn every_small_order_key_is_refused() {
            for point in EIGHT_TORSION {
                let id = UserId(point.compress().to_bytes());
                assert!(VerifyingKey::from_bytes(&id.0).is_ok(), "decodes, so only the weak check stops it");
                assert_eq!(id.verifying_key().err(), Some(RecordError::BadKey), "{id}");
            }
            // A genuine key is still fine.
            assert!(UserId(key(1).verifying_key().to_bytes()).is_strong());
        }

        #[test]
        fn non_canonical_key_encoding_is_refused() {
            // y + p encodes the same point as y (decompression reduces mod p),
            // so one key would have two ids. p = 2^255 - 19.
            let mut found = 0;
            for y in 2u8..19 {
                let mut canonical = [0u8; 32];
                canonical[0] = y;
                let Ok(vk) = VerifyingKey::from_bytes(&canonical) else { continue };
                if vk.is_weak() {
                    continue;
                }
                // y + p, little-endian: p's bytes are ed ff .. ff 7f.
                let mut alias = [0xffu8; 32];
                alias[0] = 0xed + y;
                alias[31] = 0x7f;
                let lax = VerifyingKey::from_bytes(&alias).expect("the alias decodes");
                assert_eq!(lax.to_edwards(), vk.to_edwards(), "same point");
                assert!(UserId(canonical).is_strong());
                assert_eq!(UserId(alias).verifying_key().err(), Some(RecordError::BadKey));
                found += 1;
            }
            assert!(found > 0, "no y in 2..19 is on the curve");
        }

        #[test]
        fn signature_with_a_small_order_r_is_refused() {
            // The key's owner picks r = 0, so R is the identity point and
            // s = k·a: verify() accepts it, verify_strict() does not (a
            // small-order R lets a signature be re-shaped without the key).
            let sk = key(3);
            let a = UserId(sk.verifying_key().to_bytes());
            let r = CompressedEdwardsY::identity().to_bytes();
            let payload = claim_payload("alice", &a, 7);
            let s = challenge(&r, &a.0, &payload) * sk.to_scalar();
            let odd = sig(r, s);
            assert!(sk.verifying_key().verify(&payload, &odd).is_ok(), "the attack works on verify()");
            let claim = NameClaim { name: "alice".into(), user_id: a, created_ms: 7, signature: odd };
            assert_eq!(claim.verify(), Err(RecordError::BadSignature));

            let sn: SocketAddr = "127.0.0.1:4000".parse().unwrap();
            let payload = presence_payload(&a, "alice", &sn, 1, 5000);
            let odd = sig(r, challenge(&r, &a.0, &payload) * sk.to_scalar());
            let p =
                Presence { user_id: a, name: "alice".into(), supernode: sn, seq: 1, expires_ms: 5000, signature: odd };
            assert!(lax_presence_ok(&p), "the attack works on verify()");
            assert_eq!(p.verify(1000), Err(RecordError::BadSignature));
        }
    }
}
