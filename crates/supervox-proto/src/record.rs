//! Signed directory records: name claims and presence.
//!
//! Every record is signed by its owner's Ed25519 key over a domain-separated
//! encoding of its fields, and verified by every supernode that stores or
//! serves it, so a supernode cannot forge or alter one either.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
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
    /// The verifying key, if these bytes are a valid Edwards point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, RecordError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| RecordError::BadKey)
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
#[derive(Debug, Error, PartialEq, Eq, Clone)]
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

/// "This name belongs to this key", first come first served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameClaim {
    /// The claimed name.
    pub name: String,
    /// The owner.
    pub user_id: UserId,
    /// When the owner made the claim (unix ms); the earlier of two claims wins.
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
        vk.verify(&claim_payload(&self.name, &self.user_id, self.created_ms), &self.signature)
            .map_err(|_| RecordError::BadSignature)
    }

    /// Deterministic conflict rule used by every supernode: the earlier claim
    /// wins, ties go to the smaller key. Returns true if `self` beats `other`.
    pub fn wins_over(&self, other: &NameClaim) -> bool {
        (self.created_ms, self.user_id) < (other.created_ms, other.user_id)
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
        vk.verify(
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
    fn conflict_rule_is_total() {
        let a = NameClaim::sign(&key(1), "n", 10).unwrap();
        let b = NameClaim::sign(&key(2), "n", 10).unwrap();
        assert_ne!(a.wins_over(&b), b.wins_over(&a));
        let early = NameClaim::sign(&key(9), "n", 1).unwrap();
        assert!(early.wins_over(&a) && early.wins_over(&b));
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
}
