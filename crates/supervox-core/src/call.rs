//! Calls: the per-call state and the end-to-end Noise IK handshake that the
//! two callers run through the signalling path.
//!
//! The caller knows the callee's public key from its name claim, so IK fits
//! in exactly two messages: message 1 rides in the invite, message 2 in the
//! accept. Both ends then hold keys no supernode has seen; the callee also
//! checks that the static key inside message 1 is the caller's user id.

use crate::identity::{noise_public_key, Identity};
use crate::media_path::{MediaPath, PathKind};
use std::net::SocketAddr;
use supervox_proto::{CallId, Candidate, UserId};
use thiserror::Error;

/// Noise pattern of the end-to-end call handshake.
pub const CALL_NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Prologue binding the handshake to its purpose.
const PROLOGUE: &[u8] = b"supervox/call/v1";
/// Time for the callee's supernode to answer an invite with ringing.
pub const INVITE_TIMEOUT_MS: u64 = 5_000;
/// Time a call may ring unanswered.
pub const RING_TIMEOUT_MS: u64 = 30_000;
/// Time from accept to a working media path.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// A connected call with no media for this long is over.
pub const MEDIA_TIMEOUT_MS: u64 = 10_000;
/// Time to resolve the callee's name.
pub const LOOKUP_TIMEOUT_MS: u64 = 4_000;
/// Time the callee waits for the directory to confirm the caller's name
/// before ringing as [`Verified::Unverified`]: less than the caller's
/// [`INVITE_TIMEOUT_MS`], since `Ringing` goes out only after it.
pub const VERIFY_TIMEOUT_MS: u64 = 3_000;

/// How far we know who the peer of a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The peer's key is the one pinned for its name (a contact: an earlier
    /// call connected with this key, see [`crate::trust`]). The directory
    /// is not needed (nor asked a second time) for it.
    Contact,
    /// The directory's answer for the peer's name names the peer's key: the
    /// callee's name for an outgoing call (we looked it up), the caller's
    /// for an incoming one (looked up before ringing); a second supernode
    /// agreed where one could be asked (PROTOCOL.md §3.6).
    Directory,
    /// The directory did not answer in time (or its answer did not verify):
    /// the name is only what the caller says. Never shown as the bare name.
    Unverified,
}

impl Verified {
    /// The stable text in JSON (`"verified"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Directory => "directory",
            Self::Unverified => "unverified",
        }
    }

    /// True when the peer's name is confirmed (pinned or by the directory):
    /// only such a caller may be answered automatically.
    pub fn is_confirmed(self) -> bool {
        matches!(self, Self::Contact | Self::Directory)
    }

    /// `name` as it may be shown: quoted, with an "(unverified)" mark unless
    /// it is pinned or the directory confirmed it.
    pub fn label(self, name: &str) -> String {
        match self {
            Self::Contact | Self::Directory => format!("{name:?}"),
            Self::Unverified => format!("{name:?} (unverified)"),
        }
    }
}

/// Why a handshake step failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallCryptoError {
    /// Noise rejected the message.
    #[error("call handshake failed: {0}")]
    Noise(String),
    /// The caller's static key is not the user id it claims.
    #[error("caller's key does not match its user id")]
    IdentityMismatch,
    /// The user id is not a valid key.
    #[error("peer user id is not a valid key")]
    BadKey,
}

fn noise(e: snow::Error) -> CallCryptoError {
    CallCryptoError::Noise(e.to_string())
}

fn builder_params() -> Result<snow::params::NoiseParams, CallCryptoError> {
    CALL_NOISE_PARAMS.parse().map_err(noise)
}

/// Caller: start the handshake towards `callee`; returns the state to keep
/// and message 1 for the invite.
pub fn start_handshake(me: &Identity, callee: &UserId) -> Result<(snow::HandshakeState, Vec<u8>), CallCryptoError> {
    let remote = noise_public_key(callee).map_err(|_| CallCryptoError::BadKey)?;
    let key = me.noise_private_key();
    let mut hs = crate::noise::builder(builder_params()?)
        .local_private_key(&key)
        .remote_public_key(&remote)
        .prologue(PROLOGUE)
        .build_initiator()
        .map_err(noise)?;
    let mut buf = vec![0u8; 256];
    let n = hs.write_message(&[], &mut buf).map_err(noise)?;
    buf.truncate(n);
    Ok((hs, buf))
}

/// Callee: read message 1 from `caller`, check its identity and write
/// message 2. Returns the media keys and message 2 for the accept.
pub fn answer_handshake(
    me: &Identity,
    caller: &UserId,
    msg1: &[u8],
) -> Result<(snow::StatelessTransportState, Vec<u8>), CallCryptoError> {
    let expected = noise_public_key(caller).map_err(|_| CallCryptoError::BadKey)?;
    let key = me.noise_private_key();
    let mut hs = crate::noise::builder(builder_params()?)
        .local_private_key(&key)
        .prologue(PROLOGUE)
        .build_responder()
        .map_err(noise)?;
    let mut scratch = vec![0u8; 256];
    hs.read_message(msg1, &mut scratch).map_err(noise)?;
    if hs.get_remote_static() != Some(&expected[..]) {
        return Err(CallCryptoError::IdentityMismatch);
    }
    let mut buf = vec![0u8; 256];
    let n = hs.write_message(&[], &mut buf).map_err(noise)?;
    buf.truncate(n);
    Ok((hs.into_stateless_transport_mode().map_err(noise)?, buf))
}

/// Caller: read message 2 and derive the media keys.
pub fn finish_handshake(
    mut hs: snow::HandshakeState,
    msg2: &[u8],
) -> Result<snow::StatelessTransportState, CallCryptoError> {
    let mut scratch = vec![0u8; 256];
    hs.read_message(msg2, &mut scratch).map_err(noise)?;
    hs.into_stateless_transport_mode().map_err(noise)
}

/// Which side of the call we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We placed it.
    Outgoing,
    /// We received it.
    Incoming,
}

/// Where a call is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Looking up the callee's name (outgoing).
    Resolving {
        /// The lookup's request id.
        req_id: u64,
    },
    /// Invite sent, waiting for ringing or an answer (outgoing).
    Inviting {
        /// Handshake state awaiting message 2.
        hs: Box<snow::HandshakeState>,
        /// True once the callee rings.
        ringing: bool,
    },
    /// Incoming, not ringing yet: asking the directory whether the caller's
    /// name belongs to the caller's key (never answered in this phase).
    Verifying {
        /// The lookup's request id.
        req_id: u64,
        /// The caller's handshake message 1.
        msg1: Vec<u8>,
        /// The caller's candidates.
        candidates: Vec<Candidate>,
    },
    /// Ringing here, waiting for the local user (incoming).
    Alerting {
        /// The caller's handshake message 1.
        msg1: Vec<u8>,
        /// The caller's candidates.
        candidates: Vec<Candidate>,
    },
    /// Keys agreed; checking the media path.
    Connecting,
    /// Media flowing.
    Connected,
}

/// One call.
#[derive(Debug)]
pub struct Call {
    /// Its id.
    pub id: CallId,
    /// Outgoing or incoming.
    pub direction: Direction,
    /// The other party's name.
    pub peer_name: String,
    /// The other party's key, once known.
    pub peer_id: Option<UserId>,
    /// The other party's supernode, once known.
    pub peer_sn: Option<SocketAddr>,
    /// Whether the directory confirmed the peer's name, once known.
    pub verified: Option<Verified>,
    /// Where the call is.
    pub phase: Phase,
    /// The media path, once keys are agreed.
    pub path: Option<MediaPath>,
    /// When the call was created (ms).
    pub created_ms: u64,
    /// When the current phase's deadline falls.
    pub deadline_ms: u64,
    /// When the invite went out (setup time is measured from here).
    pub invite_ms: Option<u64>,
    /// When the media path first worked.
    pub connected_ms: Option<u64>,
    /// The path reported to the user last.
    pub reported_path: Option<PathKind>,
    /// The peer's NAT report (`CallSignal::Nat`), once received.
    pub peer_nat: Option<supervox_proto::NatReport>,
    /// Where port prediction stands.
    pub prediction: crate::client::Prediction,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two ends of a finished call handshake (caller, callee).
    pub(crate) fn handshake_pair() -> (snow::StatelessTransportState, snow::StatelessTransportState) {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let (hs, m1) = start_handshake(&a, &b.user_id()).unwrap();
        let (kb, m2) = answer_handshake(&b, &a.user_id(), &m1).unwrap();
        (finish_handshake(hs, &m2).unwrap(), kb)
    }

    #[test]
    fn keys_agree_both_ways() {
        let (a, b) = handshake_pair();
        let mut ct = [0u8; 64];
        let mut pt = [0u8; 64];
        let n = a.write_message(7, b"hi", &mut ct).unwrap();
        assert_eq!(b.read_message(7, &ct[..n], &mut pt).unwrap(), 2);
        let n = b.write_message(1, b"yo", &mut ct).unwrap();
        assert_eq!(a.read_message(1, &ct[..n], &mut pt).unwrap(), 2);
    }

    #[test]
    fn callee_rejects_impostor_and_wrong_target() {
        let (a, b, m) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]), Identity::from_seed([3; 32]));
        // Mallory signs the handshake with her own key but claims to be alice.
        let (_, m1) = start_handshake(&m, &b.user_id()).unwrap();
        assert_eq!(answer_handshake(&b, &a.user_id(), &m1).err(), Some(CallCryptoError::IdentityMismatch));
        // A handshake meant for someone else does not decrypt at bob.
        let (_, m1) = start_handshake(&a, &m.user_id()).unwrap();
        assert!(matches!(answer_handshake(&b, &a.user_id(), &m1), Err(CallCryptoError::Noise(_))));
        assert!(answer_handshake(&b, &a.user_id(), b"garbage").is_err());
    }

    #[test]
    fn callee_refuses_a_low_order_key_in_message_1() {
        use crate::noise::{EvilResolver, LOW_ORDER_POINTS};
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let remote = noise_public_key(&b.user_id()).unwrap();
        for point in LOW_ORDER_POINTS {
            // (static, ephemeral): a low-order ephemeral zeroes `es`, a
            // low-order static zeroes `ss`.
            for (s, e) in [(false, true), (true, false)] {
                let params = builder_params().unwrap();
                let key = a.noise_private_key();
                let mut hs = snow::Builder::with_resolver(params, Box::new(EvilResolver::new(point, s, e)))
                    .local_private_key(&key)
                    .remote_public_key(&remote)
                    .prologue(PROLOGUE)
                    .build_initiator()
                    .unwrap();
                let mut m1 = vec![0u8; 256];
                let n = hs.write_message(&[], &mut m1).unwrap();
                m1.truncate(n);
                let err = answer_handshake(&b, &a.user_id(), &m1).err();
                assert!(matches!(err, Some(CallCryptoError::Noise(_))), "{point:02x?} s={s} e={e}: {err:?}");
            }
        }
    }

    #[test]
    fn caller_refuses_a_low_order_ephemeral_in_message_2() {
        use crate::noise::{EvilResolver, LOW_ORDER_POINTS};
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        for point in LOW_ORDER_POINTS {
            let (hs, m1) = start_handshake(&a, &b.user_id()).unwrap();
            let key = b.noise_private_key();
            let mut evil = snow::Builder::with_resolver(
                builder_params().unwrap(),
                Box::new(EvilResolver::new(point, false, true)),
            )
            .local_private_key(&key)
            .prologue(PROLOGUE)
            .build_responder()
            .unwrap();
            let mut buf = vec![0u8; 256];
            evil.read_message(&m1, &mut buf).unwrap();
            let n = evil.write_message(&[], &mut buf).unwrap();
            let err = finish_handshake(hs, &buf[..n]).err();
            assert!(matches!(err, Some(CallCryptoError::Noise(_))), "{point:02x?}: {err:?}");
        }
    }

    #[test]
    fn weak_caller_or_callee_ids_are_refused() {
        let b = Identity::from_seed([2; 32]);
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(start_handshake(&b, &UserId(weak)).err(), Some(CallCryptoError::BadKey));
        let (_, m1) = start_handshake(&Identity::from_seed([1; 32]), &b.user_id()).unwrap();
        assert_eq!(answer_handshake(&b, &UserId(weak), &m1).err(), Some(CallCryptoError::BadKey));
    }
}
