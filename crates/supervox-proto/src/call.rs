//! The end-to-end part of call signalling: what travels inside the callers'
//! own Noise handshake and under its keys, so no supernode can read, forge,
//! swap or replay it (docs/PROTOCOL.md §3.3).
//!
//! A supernode routes a [`crate::CallSignal`] by its envelope; the bodies
//! here are opaque to it:
//! - [`CallOffer`] is the payload of IK message 1 (encrypted to the callee);
//! - [`CallMessage`] is the plaintext of a [`SealedSignal`], sealed under the
//!   call keys with a sequence number as the nonce;
//! - [`SignedSignal`] is what a side says before it holds the call keys,
//!   signed by its identity key over [`signed_signal_payload`].

use crate::message::{CallId, Candidate, NatReport};
use crate::record::UserId;
use serde::{Deserialize, Serialize};

/// Domain of the call handshake's prologue; [`call_prologue`] appends the
/// values it binds.
pub const CALL_PROLOGUE_DOMAIN: &[u8] = b"supervox/call/v2\0";

/// Most candidates one offer, answer or trickle may carry.
pub const MAX_CALL_CANDIDATES: usize = 32;

/// The Noise prologue of a call's IK handshake: both sides must compute the
/// same bytes, so a message 1 moved to another call id, another caller or
/// callee, or given another send time does not decrypt.
pub fn call_prologue(call_id: &CallId, caller: &UserId, callee: &UserId, sent_ms: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(CALL_PROLOGUE_DOMAIN.len() + 16 + 32 + 32 + 8);
    p.extend_from_slice(CALL_PROLOGUE_DOMAIN);
    p.extend_from_slice(&call_id.0);
    p.extend_from_slice(&caller.0);
    p.extend_from_slice(&callee.0);
    p.extend_from_slice(&sent_ms.to_be_bytes());
    p
}

/// The caller's offer, inside IK message 1: only the callee can read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallOffer {
    /// The caller's media candidates (relays only, to a stranger: §3.6).
    pub candidates: Vec<Candidate>,
    /// The caller's NAT report, when its probe has finished.
    pub nat: Option<NatReport>,
}

/// A signal sealed under the call keys (ChaCha20-Poly1305 with the sender's
/// direction key; nonce = [`SEALED_NONCE_BASE`] + `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSignal {
    /// The sender's signal counter for this call, from 0.
    pub seq: u64,
    /// The sealed postcard encoding of a [`CallMessage`], with its tag.
    pub ciphertext: Vec<u8>,
}

/// Sealed signals use the top half of the call keys' nonce space; media
/// datagrams count up from 0 in the bottom half, so the two never share a
/// nonce.
pub const SEALED_NONCE_BASE: u64 = 1 << 63;

/// What the two callers say to each other under the call keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallMessage {
    /// Callee: the phone rings.
    Ringing,
    /// Callee: answered; its candidates (relays only, to a stranger, until
    /// the call is up) and NAT report.
    Accept {
        /// The callee's media candidates.
        candidates: Vec<Candidate>,
        /// The callee's NAT report.
        nat: Option<NatReport>,
    },
    /// Callee: declined (reason text, §6.3).
    Reject {
        /// Why.
        reason: String,
    },
    /// Caller: gave up before an answer.
    Cancel,
    /// Either: the call is over.
    Bye {
        /// Why.
        reason: String,
    },
    /// Either: more candidates (trickled, or revealed once the call is up).
    Candidates {
        /// New candidates.
        candidates: Vec<Candidate>,
    },
    /// Either: a (new) NAT report.
    Nat(NatReport),
}

/// What a side may say before it holds the call keys, signed by its
/// identity key: the caller's cancel before the callee's `Respond`, and the
/// callee's refusal of a message 1 it could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignedSignal {
    /// Caller: gave up before an answer.
    Cancel,
    /// Callee: refused (reason text, §6.3).
    Reject {
        /// Why.
        reason: String,
    },
}

/// Domain of a [`SignedSignal`]'s signature.
pub const SIGNED_SIGNAL_DOMAIN: &[u8] = b"supervox/call-signal/v1\0";

/// The bytes a [`SignedSignal`] signature covers: the domain, the call id,
/// sender and recipient, and the body's postcard encoding. Bound to one
/// call, so it cannot be replayed into another.
pub fn signed_signal_payload(call_id: &CallId, from: &UserId, to: &UserId, body: &SignedSignal) -> Vec<u8> {
    let mut v = SIGNED_SIGNAL_DOMAIN.to_vec();
    v.extend_from_slice(&call_id.0);
    v.extend_from_slice(&from.0);
    v.extend_from_slice(&to.0);
    // Encoding an enum of a string into a Vec cannot fail.
    v.extend_from_slice(&postcard::to_allocvec(body).unwrap_or_default());
    v
}

/// Encode a call body (offer or message) for sealing.
pub fn encode_call_body<T: Serialize>(body: &T) -> Option<Vec<u8>> {
    postcard::to_allocvec(body).ok()
}

/// Decode a call body; `None` for bytes that are not one (never a panic).
pub fn decode_call_body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CandidateKind, Transport};

    #[test]
    fn prologue_binds_every_field() {
        let (c, a, b) = (CallId([1; 16]), UserId([2; 32]), UserId([3; 32]));
        let base = call_prologue(&c, &a, &b, 5);
        assert_ne!(base, call_prologue(&CallId([9; 16]), &a, &b, 5));
        assert_ne!(base, call_prologue(&c, &b, &a, 5), "roles are bound");
        assert_ne!(base, call_prologue(&c, &a, &b, 6));
        assert!(base.starts_with(CALL_PROLOGUE_DOMAIN));
    }

    #[test]
    fn bodies_roundtrip_and_garbage_is_none() {
        let cand = Candidate {
            kind: CandidateKind::Relay,
            transport: Transport::Udp,
            addr: "127.0.0.1:9".parse().unwrap(),
            priority: 3,
        };
        let m = CallMessage::Accept { candidates: vec![cand], nat: None };
        let b = encode_call_body(&m).unwrap();
        assert_eq!(decode_call_body::<CallMessage>(&b), Some(m));
        assert_eq!(decode_call_body::<CallMessage>(&[0xff, 0xff]), None);
        let o = CallOffer { candidates: vec![cand], nat: None };
        assert_eq!(decode_call_body::<CallOffer>(&encode_call_body(&o).unwrap()), Some(o));
    }

    #[test]
    fn signed_payload_is_bound_to_the_call_and_the_direction() {
        let (c, a, b) = (CallId([1; 16]), UserId([2; 32]), UserId([3; 32]));
        let p = signed_signal_payload(&c, &a, &b, &SignedSignal::Cancel);
        assert_ne!(p, signed_signal_payload(&c, &b, &a, &SignedSignal::Cancel));
        assert_ne!(p, signed_signal_payload(&CallId([0; 16]), &a, &b, &SignedSignal::Cancel));
        assert_ne!(p, signed_signal_payload(&c, &a, &b, &SignedSignal::Reject { reason: String::new() }));
    }
}
