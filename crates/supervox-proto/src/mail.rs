//! Offline messages: what a sender leaves in a recipient's mailbox on the
//! index, and the recipient's signed requests to fetch and to delete it
//! (docs/PROTOCOL.md §8).
//!
//! A [`MailItem`] is signed by its sender (so holders can bound senders and
//! the recipient knows who wrote) and carries an opaque body, end-to-end
//! encrypted to the recipient by the client. Holders check signatures,
//! sizes and lifetimes and never see plaintext. Only the recipient's
//! signature fetches a mailbox ([`MailFetch`]) or deletes from it
//! ([`MailAck`]).

use crate::record::{RecordError, UserId};
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// Largest body of one item: with its envelope it fits one overlay datagram
/// (clients split longer messages into parts).
pub const MAX_MAIL_BODY: usize = 6 * 1024;
/// Longest an item may be kept: 30 days.
pub const MAX_MAIL_LIFETIME_MS: u64 = 30 * 24 * 3600 * 1000;
/// A fetch or ack signed further than this from the holder's clock is refused.
pub const MAX_MAIL_REQUEST_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most item ids one ack may name.
pub const MAX_ACK_IDS: usize = 64;

/// An item id: 128 random bits chosen by the sender.
pub type MailId = [u8; 16];

/// One item in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailItem {
    /// Chosen by the sender, random.
    pub id: MailId,
    /// The recipient (whose mailbox).
    pub to: UserId,
    /// The sender (whose signature).
    pub from: UserId,
    /// Sender's clock when sent (unix ms).
    pub sent_ms: u64,
    /// Drop after this (unix ms), at most [`MAX_MAIL_LIFETIME_MS`] after `sent_ms`.
    pub expires_ms: u64,
    /// End-to-end encrypted to `to`; opaque to holders.
    pub body: Vec<u8>,
    /// `from`'s signature over [`mail_payload`].
    pub signature: Signature,
}

/// Why a mail record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// A key or signature check failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The body is larger than [`MAX_MAIL_BODY`].
    #[error("mail body of {0} bytes exceeds {MAX_MAIL_BODY}")]
    TooLarge(usize),
    /// Expired, or a lifetime beyond [`MAX_MAIL_LIFETIME_MS`].
    #[error("mail lifetime out of bounds")]
    Lifetime,
    /// A request signed too far from our clock (or with too many ids).
    #[error("mail request is stale or malformed")]
    BadRequest,
}

fn mail_payload(id: &MailId, to: &UserId, from: &UserId, sent_ms: u64, expires_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut v = b"supervox/mail/v1\0".to_vec();
    v.extend_from_slice(id);
    v.extend_from_slice(&to.0);
    v.extend_from_slice(&from.0);
    v.extend_from_slice(&sent_ms.to_be_bytes());
    v.extend_from_slice(&expires_ms.to_be_bytes());
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

impl MailItem {
    /// Sign an item from `key`'s owner to `to`.
    pub fn sign(key: &SigningKey, id: MailId, to: UserId, sent_ms: u64, lifetime_ms: u64, body: Vec<u8>) -> Self {
        let from = UserId(key.verifying_key().to_bytes());
        let expires_ms = sent_ms.saturating_add(lifetime_ms.min(MAX_MAIL_LIFETIME_MS));
        let signature = key.sign(&mail_payload(&id, &to, &from, sent_ms, expires_ms, &body));
        Self { id, to, from, sent_ms, expires_ms, body, signature }
    }

    /// Check size, lifetime at `now_ms` and the sender's signature (strict).
    pub fn verify(&self, now_ms: u64) -> Result<(), MailError> {
        if self.body.len() > MAX_MAIL_BODY {
            return Err(MailError::TooLarge(self.body.len()));
        }
        if self.expires_ms <= now_ms || self.expires_ms.saturating_sub(self.sent_ms) > MAX_MAIL_LIFETIME_MS {
            return Err(MailError::Lifetime);
        }
        self.to.verifying_key()?;
        let vk = self.from.verifying_key()?;
        let payload = mail_payload(&self.id, &self.to, &self.from, self.sent_ms, self.expires_ms, &self.body);
        vk.verify_strict(&payload, &self.signature).map_err(|_| RecordError::BadSignature)?;
        Ok(())
    }

    /// Bytes this item counts against a quota.
    pub fn size(&self) -> usize {
        self.body.len() + 16 + 64 + 64 + 16
    }
}

/// The recipient asks for its mailbox: signed, so nobody else learns who
/// writes to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailFetch {
    /// Whose mailbox.
    pub to: UserId,
    /// When signed (unix ms).
    pub signed_ms: u64,
    /// `to`'s signature.
    pub signature: Signature,
}

fn fetch_payload(to: &UserId, signed_ms: u64) -> Vec<u8> {
    let mut v = b"supervox/mail-fetch/v1\0".to_vec();
    v.extend_from_slice(&to.0);
    v.extend_from_slice(&signed_ms.to_be_bytes());
    v
}

impl MailFetch {
    /// Sign a fetch of our own mailbox.
    pub fn sign(key: &SigningKey, signed_ms: u64) -> Self {
        let to = UserId(key.verifying_key().to_bytes());
        Self { to, signed_ms, signature: key.sign(&fetch_payload(&to, signed_ms)) }
    }

    /// Check the signature and freshness at `now_ms`.
    pub fn verify(&self, now_ms: u64) -> Result<(), MailError> {
        if self.signed_ms.abs_diff(now_ms) > MAX_MAIL_REQUEST_SKEW_MS {
            return Err(MailError::BadRequest);
        }
        let vk = self.to.verifying_key()?;
        vk.verify_strict(&fetch_payload(&self.to, self.signed_ms), &self.signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(())
    }
}

/// The recipient has these items: holders delete them. Signed by the
/// recipient, so nobody else can delete its mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAck {
    /// Whose mailbox.
    pub to: UserId,
    /// The items received (at most [`MAX_ACK_IDS`]).
    pub ids: Vec<MailId>,
    /// When signed (unix ms).
    pub signed_ms: u64,
    /// `to`'s signature.
    pub signature: Signature,
}

fn ack_payload(to: &UserId, ids: &[MailId], signed_ms: u64) -> Vec<u8> {
    let mut v = b"supervox/mail-ack/v1\0".to_vec();
    v.extend_from_slice(&to.0);
    v.extend_from_slice(&signed_ms.to_be_bytes());
    for id in ids {
        v.extend_from_slice(id);
    }
    v
}

impl MailAck {
    /// Sign an ack for items of our own mailbox.
    pub fn sign(key: &SigningKey, ids: Vec<MailId>, signed_ms: u64) -> Self {
        let to = UserId(key.verifying_key().to_bytes());
        let signature = key.sign(&ack_payload(&to, &ids, signed_ms));
        Self { to, ids, signed_ms, signature }
    }

    /// Check the signature, the id count and freshness at `now_ms`.
    pub fn verify(&self, now_ms: u64) -> Result<(), MailError> {
        if self.ids.len() > MAX_ACK_IDS || self.signed_ms.abs_diff(now_ms) > MAX_MAIL_REQUEST_SKEW_MS {
            return Err(MailError::BadRequest);
        }
        let vk = self.to.verifying_key()?;
        vk.verify_strict(&ack_payload(&self.to, &self.ids, self.signed_ms), &self.signature)
            .map_err(|_| RecordError::BadSignature)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn uid(n: u8) -> UserId {
        UserId(key(n).verifying_key().to_bytes())
    }

    #[test]
    fn items_verify_and_any_change_breaks_them() {
        let item = MailItem::sign(&key(1), [7; 16], uid(2), 1_000, 60_000, b"sealed".to_vec());
        assert_eq!(item.from, uid(1));
        item.verify(2_000).unwrap();
        assert_eq!(item.verify(61_000), Err(MailError::Lifetime), "expired");
        let mut m = item.clone();
        m.to = uid(3);
        assert!(m.verify(2_000).is_err(), "moved to another mailbox");
        let mut m = item.clone();
        m.body.push(0);
        assert!(m.verify(2_000).is_err());
        let mut m = item.clone();
        m.expires_ms += 1;
        assert!(m.verify(2_000).is_err(), "lifetime stretched");
        let big = MailItem::sign(&key(1), [8; 16], uid(2), 1_000, 60_000, vec![0; MAX_MAIL_BODY + 1]);
        assert_eq!(big.verify(2_000), Err(MailError::TooLarge(MAX_MAIL_BODY + 1)));
        // A lifetime beyond 30 days is cut to 30 days when signed, refused when forged.
        let long = MailItem::sign(&key(1), [9; 16], uid(2), 0, u64::MAX, vec![]);
        assert_eq!(long.expires_ms, MAX_MAIL_LIFETIME_MS);
    }

    #[test]
    fn only_the_recipient_fetches_or_acks_and_only_fresh() {
        let f = MailFetch::sign(&key(2), 10_000);
        f.verify(10_000 + MAX_MAIL_REQUEST_SKEW_MS).unwrap();
        assert_eq!(f.verify(10_001 + MAX_MAIL_REQUEST_SKEW_MS), Err(MailError::BadRequest));
        let mut forged = f.clone();
        forged.to = uid(3);
        assert!(forged.verify(10_000).is_err());
        let a = MailAck::sign(&key(2), vec![[7; 16]], 10_000);
        a.verify(10_000).unwrap();
        // Someone else's signature over bob's mailbox does not delete.
        let mut theirs = MailAck::sign(&key(3), vec![[7; 16]], 10_000);
        theirs.to = uid(2);
        assert!(theirs.verify(10_000).is_err());
        let mut more = a.clone();
        more.ids.push([8; 16]);
        assert!(more.verify(10_000).is_err(), "an id added after signing");
        let many = MailAck::sign(&key(2), vec![[1; 16]; MAX_ACK_IDS + 1], 10_000);
        assert_eq!(many.verify(10_000), Err(MailError::BadRequest));
    }
}
