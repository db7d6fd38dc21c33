//! Sealing overlay datagrams with the network key.
//!
//! Every supernode of one network holds the same 32-byte network key. A
//! datagram is `OVERLAY_MAGIC ‖ nonce(12) ‖ ChaCha20-Poly1305(packet)` with
//! the magic byte as associated data, so only holders of the key can join,
//! probe, declare members down or touch the index, and nobody on the path
//! reads who looks up whom. Records inside stay signed by their owners, so a
//! supernode can still not forge a claim or a presence.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use supervox_proto::overlay::{
    decode_packet, encode_packet, OverlayError, OverlayPacket, MAX_OVERLAY_DATAGRAM, OVERLAY_MAGIC,
};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The key every supernode of one network shares.
#[derive(Clone)]
pub struct NetworkKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

impl NetworkKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)) }
    }

    /// The key of the open test network, used when an operator gives none:
    /// anyone can run a supernode in it. Real networks set their own.
    pub fn open_network() -> Self {
        let mut k = [0u8; 32];
        for (i, b) in b"supervox open test network key!!".iter().enumerate() {
            k[i] = *b;
        }
        Self::new(k)
    }

    /// Seal a packet into a datagram.
    pub fn seal(&self, packet: &OverlayPacket, rng: &mut impl RngCore) -> Result<Vec<u8>, OverlayError> {
        let plain = encode_packet(packet)?;
        let len = 1 + NONCE_LEN + plain.len() + TAG_LEN;
        if len > MAX_OVERLAY_DATAGRAM {
            return Err(OverlayError::TooLarge(len));
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: &[OVERLAY_MAGIC] })
            .map_err(|_| OverlayError::Malformed("cannot seal".into()))?;
        let mut out = Vec::with_capacity(len);
        out.push(OVERLAY_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Open a datagram: authenticate, then decode.
    pub fn open(&self, datagram: &[u8]) -> Result<OverlayPacket, OverlayError> {
        if datagram.len() > MAX_OVERLAY_DATAGRAM {
            return Err(OverlayError::TooLarge(datagram.len()));
        }
        let Some((&OVERLAY_MAGIC, rest)) = datagram.split_first() else {
            return Err(OverlayError::NotOverlay);
        };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(OverlayError::NotOverlay);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &[OVERLAY_MAGIC] })
            .map_err(|_| OverlayError::Unauthenticated)?;
        decode_packet(&plain)
    }
}

/// True if a UDP datagram is meant for the overlay (cheap demultiplexing on
/// the supernode's shared UDP port).
pub fn is_overlay(datagram: &[u8]) -> bool {
    datagram.first() == Some(&OVERLAY_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use supervox_proto::overlay::{Member, MemberState, OverlayMsg};
    use supervox_proto::UserId;

    fn packet() -> OverlayPacket {
        let from = Member {
            id: UserId([1; 32]),
            addr: "10.1.1.1:5000".parse().unwrap(),
            incarnation: 0,
            state: MemberState::Alive,
            load: 0,
        };
        OverlayPacket { from, msg: OverlayMsg::Join }
    }

    #[test]
    fn only_the_network_key_opens_and_any_change_is_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let ours = NetworkKey::new([7; 32]);
        let d = ours.seal(&packet(), &mut rng).unwrap();
        assert!(is_overlay(&d));
        assert_eq!(ours.open(&d).unwrap(), packet());
        assert_eq!(NetworkKey::new([8; 32]).open(&d), Err(OverlayError::Unauthenticated));
        for i in 1..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert_eq!(ours.open(&bad), Err(OverlayError::Unauthenticated), "flipped byte {i}");
        }
        assert_eq!(ours.open(&d[..20]), Err(OverlayError::NotOverlay));
        assert_eq!(ours.open(&[]), Err(OverlayError::NotOverlay));
        assert_eq!(ours.open(&[0u8; 40]), Err(OverlayError::NotOverlay));
    }
}
