//! End-to-end sealing of peer messages and mail bodies: HPKE (RFC 9180) in
//! Auth mode, DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + ChaCha20-Poly1305,
//! with the X25519 keys derived from both Ed25519 identities as the call
//! handshake does (identity.rs). Auth mode authenticates the sender: only
//! the holder of `from`'s key can produce a body that opens as from it.
//! The HPKE `info` binds the wire id, sender and recipient, so a body
//! cannot be replayed under another id or pinned on another sender.

use crate::identity::noise_public_key;
use crate::Identity;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand::{CryptoRng, RngCore};
use supervox_proto::UserId;

type Kem = X25519HkdfSha256;

/// Length of the encapsulated key that starts every sealed body.
pub const ENC_LEN: usize = 32;
/// Bytes sealing adds to a plaintext (encapsulated key + AEAD tag).
pub const SEAL_OVERHEAD: usize = ENC_LEN + 16;

/// Why a sealed body did not open (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A user id that is not a valid Ed25519 key.
    #[error("not a valid identity key")]
    BadKey,
    /// Too short to hold an encapsulated key and a tag.
    #[error("sealed body too short")]
    Truncated,
    /// Not sealed by `from` to us under this id (forged, altered, misrouted).
    #[error("sealed body does not open")]
    Open,
}

fn info(id: &[u8; 16], from: &UserId, to: &UserId) -> Vec<u8> {
    let mut v = b"supervox/peer/v1\0".to_vec();
    v.extend_from_slice(id);
    v.extend_from_slice(&from.0);
    v.extend_from_slice(&to.0);
    v
}

fn keypair(me: &Identity) -> Result<(<Kem as hpke::Kem>::PrivateKey, <Kem as hpke::Kem>::PublicKey), SealError> {
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&me.noise_private_key()).map_err(|_| SealError::BadKey)?;
    let pk = Kem::sk_to_pk(&sk);
    Ok((sk, pk))
}

fn public(user: &UserId) -> Result<<Kem as hpke::Kem>::PublicKey, SealError> {
    let bytes = noise_public_key(user).map_err(|_| SealError::BadKey)?;
    <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes).map_err(|_| SealError::BadKey)
}

/// Seal `plaintext` from `me` to `to` under wire id `id`: `enc || ciphertext`.
pub fn seal<R: RngCore + CryptoRng>(
    me: &Identity,
    to: &UserId,
    id: &[u8; 16],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, SealError> {
    let mode = OpModeS::Auth(keypair(me)?);
    let info = info(id, &me.user_id(), to);
    let (enc, ct) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(&mode, &public(to)?, &info, plaintext, b"", rng)
            .map_err(|_| SealError::BadKey)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Open a body sealed by `from` to `me` under wire id `id`.
pub fn open(me: &Identity, from: &UserId, id: &[u8; 16], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(SealError::Truncated);
    }
    let (enc, ct) = sealed.split_at(ENC_LEN);
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| SealError::Open)?;
    let mode = OpModeR::Auth(public(from)?);
    let (sk, _) = keypair(me)?;
    let info = info(id, from, &me.user_id());
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(&mode, &sk, &enc, &info, ct, b"")
        .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ids() -> (Identity, Identity, Identity) {
        (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]), Identity::from_seed([3; 32]))
    }

    #[test]
    fn seals_to_the_recipient_from_the_sender() {
        let (alice, bob, mallory) = ids();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let id = [9u8; 16];
        let sealed = seal(&alice, &bob.user_id(), &id, b"hello bob", &mut rng).unwrap();
        assert_eq!(sealed.len(), b"hello bob".len() + SEAL_OVERHEAD);
        assert!(!sealed.windows(5).any(|w| w == b"hello"), "plaintext visible");
        assert_eq!(open(&bob, &alice.user_id(), &id, &sealed).unwrap(), b"hello bob");
        // Not to mallory, not as from mallory, not under another id.
        assert_eq!(open(&mallory, &alice.user_id(), &id, &sealed), Err(SealError::Open));
        assert_eq!(open(&bob, &mallory.user_id(), &id, &sealed), Err(SealError::Open));
        assert_eq!(open(&bob, &alice.user_id(), &[8; 16], &sealed), Err(SealError::Open));
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert_eq!(open(&bob, &alice.user_id(), &id, &bent), Err(SealError::Open));
        assert_eq!(open(&bob, &alice.user_id(), &id, &sealed[..10]), Err(SealError::Truncated));
    }

    #[test]
    fn mallory_cannot_seal_as_alice() {
        // Mallory seals with her own key but the envelope claims alice.
        let (alice, bob, mallory) = ids();
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let sealed = seal(&mallory, &bob.user_id(), &[1; 16], b"it is me, alice", &mut rng).unwrap();
        assert_eq!(open(&bob, &alice.user_id(), &[1; 16], &sealed), Err(SealError::Open));
        assert!(open(&bob, &mallory.user_id(), &[1; 16], &sealed).is_ok());
    }
}
