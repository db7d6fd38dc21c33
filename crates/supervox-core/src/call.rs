//! Calls: the per-call state and the end-to-end Noise IK handshake that the
//! two callers run through the signalling path.
//!
//! The caller knows the callee's public key from its name claim, so IK fits
//! in two messages: message 1 rides in the invite (its payload, the caller's
//! [`CallOffer`], is encrypted to the callee), message 2 in the callee's
//! `Respond`, sent as soon as the callee has read message 1 and checked the
//! caller. The prologue binds the call id, both user ids (in their roles)
//! and the invite's send time, so message 1 cannot be moved to another call
//! or replayed with another time. From `Respond` on, every signal is sealed
//! under the call keys ([`CallKeys`]); the callee also checks that the
//! static key inside message 1 is the caller's user id.

use crate::identity::{noise_public_key, Identity};
use crate::media_path::{MediaPath, PathKind};
use crate::replay::ReplayWindow;
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use supervox_proto::call::{
    call_prologue, decode_call_body, encode_call_body, CallMessage, CallOffer, SealedSignal, SEALED_NONCE_BASE,
};
use supervox_proto::{CallId, Candidate, UserId};
use thiserror::Error;

/// Noise pattern of the end-to-end call handshake.
pub const CALL_NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Time for the callee to answer an invite (its `Respond`, ringing or not).
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
/// An invite whose send time is further than this from the callee's clock
/// (either way) is refused: a captured message 1 is useless after it.
pub const MAX_INVITE_AGE_MS: u64 = 30_000;
/// Call ids of recent invites the callee remembers (the replay cache): an
/// invite whose id is here is a replay. Entries leave once their invite is
/// past [`MAX_INVITE_AGE_MS`]; when the cache is full of younger ones, new
/// invites are refused rather than an entry forgotten early.
pub const MAX_RECENT_INVITES: usize = 4096;
/// Largest handshake message accepted (IK message 1 with a full offer).
pub const MAX_HANDSHAKE_LEN: usize = 4096;
/// A private call (to a stranger) that has no working relay pair this long
/// after the answer offers its direct candidates anyway: privacy never costs
/// the call (the user has answered by then).
pub const REVEAL_FALLBACK_MS: u64 = 2_000;

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
    /// Message 1's payload is not an offer (or a message is too long).
    #[error("call handshake payload is malformed")]
    Malformed,
}

fn noise(e: snow::Error) -> CallCryptoError {
    CallCryptoError::Noise(e.to_string())
}

fn builder_params() -> Result<snow::params::NoiseParams, CallCryptoError> {
    CALL_NOISE_PARAMS.parse().map_err(noise)
}

/// What a call's handshake binds: the same on both sides, or message 1
/// does not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The call.
    pub call_id: CallId,
    /// The initiator.
    pub caller: UserId,
    /// The responder.
    pub callee: UserId,
    /// The invite's send time (caller's clock, unix ms).
    pub sent_ms: u64,
}

impl Binding {
    fn prologue(&self) -> Vec<u8> {
        call_prologue(&self.call_id, &self.caller, &self.callee, self.sent_ms)
    }
}

/// Caller: start the handshake of `binding` (we are its caller); message 1
/// carries `offer`, encrypted to the callee. Returns the state to keep and
/// message 1 for the invite.
pub fn start_handshake(
    me: &Identity,
    binding: &Binding,
    offer: &CallOffer,
) -> Result<(snow::HandshakeState, Vec<u8>), CallCryptoError> {
    let remote = noise_public_key(&binding.callee).map_err(|_| CallCryptoError::BadKey)?;
    let key = me.noise_private_key();
    let prologue = binding.prologue();
    let mut hs = crate::noise::builder(builder_params()?)
        .local_private_key(&key)
        .remote_public_key(&remote)
        .prologue(&prologue)
        .build_initiator()
        .map_err(noise)?;
    let payload = encode_call_body(offer).ok_or(CallCryptoError::Malformed)?;
    let mut buf = vec![0u8; MAX_HANDSHAKE_LEN];
    let n = hs.write_message(&payload, &mut buf).map_err(|_| CallCryptoError::Malformed)?;
    buf.truncate(n);
    Ok((hs, buf))
}

/// Callee: read message 1 of `binding` (we are its callee), check that the
/// caller's static key is its user id, and write message 2 at once. Returns
/// the call keys, message 2 (for `Respond`) and the caller's offer.
pub fn answer_handshake(
    me: &Identity,
    binding: &Binding,
    msg1: &[u8],
) -> Result<(CallKeys, Vec<u8>, CallOffer), CallCryptoError> {
    let expected = noise_public_key(&binding.caller).map_err(|_| CallCryptoError::BadKey)?;
    if msg1.len() > MAX_HANDSHAKE_LEN {
        return Err(CallCryptoError::Malformed);
    }
    let key = me.noise_private_key();
    let prologue = binding.prologue();
    let mut hs = crate::noise::builder(builder_params()?)
        .local_private_key(&key)
        .prologue(&prologue)
        .build_responder()
        .map_err(noise)?;
    let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
    let n = hs.read_message(msg1, &mut payload).map_err(noise)?;
    if hs.get_remote_static() != Some(&expected[..]) {
        return Err(CallCryptoError::IdentityMismatch);
    }
    let offer: CallOffer = decode_call_body(&payload[..n]).ok_or(CallCryptoError::Malformed)?;
    let mut buf = vec![0u8; 256];
    let n = hs.write_message(&[], &mut buf).map_err(noise)?;
    buf.truncate(n);
    Ok((CallKeys::new(hs.into_stateless_transport_mode().map_err(noise)?), buf, offer))
}

/// Caller: read message 2 and derive the call keys.
pub fn finish_handshake(mut hs: snow::HandshakeState, msg2: &[u8]) -> Result<CallKeys, CallCryptoError> {
    if msg2.len() > MAX_HANDSHAKE_LEN {
        return Err(CallCryptoError::Malformed);
    }
    let mut scratch = vec![0u8; MAX_HANDSHAKE_LEN];
    hs.read_message(msg2, &mut scratch).map_err(noise)?;
    Ok(CallKeys::new(hs.into_stateless_transport_mode().map_err(noise)?))
}

/// First plaintext byte of a sealed signal: no media datagram's inner kind
/// (1-3) is this, so a sealed signal never opens as a datagram or back.
const SEALED_DOMAIN: u8 = 0xC5;
/// Largest sealed signal accepted.
pub const MAX_SEALED_LEN: usize = 8 * 1024;

/// The keys of a finished call handshake, shared by the call's signals
/// (nonces from [`SEALED_NONCE_BASE`]) and its media path (nonces from 0).
#[derive(Clone)]
pub struct CallKeys(Arc<snow::StatelessTransportState>);

impl std::fmt::Debug for CallKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallKeys")
    }
}

impl CallKeys {
    fn new(t: snow::StatelessTransportState) -> Self {
        Self(Arc::new(t))
    }

    /// The transport for the media path.
    pub fn transport(&self) -> Arc<snow::StatelessTransportState> {
        self.0.clone()
    }

    /// Seal `msg` as our signal number `seq`.
    pub fn seal(&self, seq: u64, msg: &CallMessage) -> Option<SealedSignal> {
        let mut plain = vec![SEALED_DOMAIN];
        plain.extend_from_slice(&encode_call_body(msg)?);
        if plain.len() + 16 > MAX_SEALED_LEN || seq >= SEALED_NONCE_BASE {
            return None;
        }
        let mut ct = vec![0u8; plain.len() + 16];
        let n = self.0.write_message(SEALED_NONCE_BASE + seq, &plain, &mut ct).ok()?;
        ct.truncate(n);
        Some(SealedSignal { seq, ciphertext: ct })
    }

    /// Open the peer's sealed signal; `None` if it was not sealed by the
    /// peer under these keys (or is not a call message). Replays are the
    /// caller's to check, by `seq`, after this succeeds.
    pub fn open(&self, s: &SealedSignal) -> Option<CallMessage> {
        if s.seq >= SEALED_NONCE_BASE || s.ciphertext.len() > MAX_SEALED_LEN {
            return None;
        }
        let mut plain = vec![0u8; s.ciphertext.len()];
        let n = self.0.read_message(SEALED_NONCE_BASE + s.seq, &s.ciphertext, &mut plain).ok()?;
        match plain[..n].split_first() {
            Some((&SEALED_DOMAIN, body)) => decode_call_body(body),
            _ => None,
        }
    }
}

/// Signal state of a call once keys exist: our next sequence number and the
/// peer's seen ones.
#[derive(Debug, Default)]
pub struct SignalChannel {
    /// The keys, once the handshake finished.
    pub keys: Option<CallKeys>,
    next_seq: u64,
    seen: ReplayWindow,
}

impl SignalChannel {
    /// A channel under `keys`, no signal sent or seen yet.
    pub fn with_keys(keys: CallKeys) -> Self {
        Self { keys: Some(keys), ..Default::default() }
    }

    /// Seal `msg` with our next sequence number; `None` without keys.
    pub fn seal(&mut self, msg: &CallMessage) -> Option<SealedSignal> {
        let s = self.keys.as_ref()?.seal(self.next_seq, msg)?;
        self.next_seq += 1;
        Some(s)
    }

    /// Open a sealed signal from the peer: authentic and not seen before.
    pub fn open(&mut self, s: &SealedSignal) -> Option<CallMessage> {
        let msg = self.keys.as_ref()?.open(s)?;
        self.seen.accept(s.seq).then_some(msg)
    }
}

/// Why an invite was refused before its handshake was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    /// Its send time is more than [`MAX_INVITE_AGE_MS`] away from our clock.
    Stale,
    /// Its call id was seen within that time: a replay.
    Replayed,
    /// The cache is full of recent invites (a flood): refused, not forgotten.
    Flooded,
}

/// The callee's replay cache: call ids of invites accepted in the last
/// 2 × [`MAX_INVITE_AGE_MS`], bounded by [`MAX_RECENT_INVITES`].
#[derive(Debug, Default)]
pub struct RecentInvites {
    ids: HashSet<CallId>,
    /// (forget at, id), oldest first.
    order: VecDeque<(u64, CallId)>,
}

impl RecentInvites {
    /// Check an invite sent at `sent_ms` and, if it is fresh and new,
    /// remember its id.
    pub fn admit(&mut self, id: CallId, sent_ms: u64, now_ms: u64) -> Result<(), InviteRefusal> {
        while self.order.front().is_some_and(|(t, _)| *t <= now_ms) {
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        if sent_ms.abs_diff(now_ms) > MAX_INVITE_AGE_MS {
            return Err(InviteRefusal::Stale);
        }
        if self.ids.contains(&id) {
            return Err(InviteRefusal::Replayed);
        }
        if self.order.len() >= MAX_RECENT_INVITES {
            return Err(InviteRefusal::Flooded);
        }
        // Kept until no clock within the window could call it fresh again.
        let forget = sent_ms.max(now_ms) + MAX_INVITE_AGE_MS + 1;
        // `forget` grows with now, so the queue stays in order within the
        // skew; an out-of-order entry only leaves a little late.
        self.ids.insert(id);
        self.order.push_back((forget, id));
        Ok(())
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when none are remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
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
    /// Invite sent, waiting for the callee's `Respond`, then for an answer
    /// (outgoing).
    Inviting {
        /// Handshake state awaiting message 2 (taken when it arrives).
        hs: Option<Box<snow::HandshakeState>>,
        /// True once the callee rings.
        ringing: bool,
    },
    /// Incoming, not ringing yet: asking the directory whether the caller's
    /// name belongs to the caller's key (never answered in this phase).
    /// Message 1 is read; message 2 waits to go out with the outcome.
    Verifying {
        /// The lookup's request id.
        req_id: u64,
        /// Message 2 for `Respond`.
        msg2: Vec<u8>,
    },
    /// Ringing here, waiting for the local user (incoming).
    Alerting,
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
    /// Sealed signalling with the peer, once the handshake is done.
    pub signals: SignalChannel,
    /// Signals to seal once the keys exist (the caller's trickle before
    /// `Respond`), bounded.
    pub queued: Vec<CallMessage>,
    /// The peer's candidates so far (offer, answer, trickle), bounded.
    pub peer_candidates: Vec<Candidate>,
    /// We offer this peer our relays only, until the call is up (a
    /// stranger, §3.6); false once our other candidates went out.
    pub private: bool,
    /// When a private call offers its direct candidates even if no relay
    /// pair worked ([`REVEAL_FALLBACK_MS`] after the answer).
    pub reveal_by_ms: Option<u64>,
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
    /// The peer's NAT report, once received.
    pub peer_nat: Option<supervox_proto::NatReport>,
    /// Where port prediction stands.
    pub prediction: crate::client::Prediction,
}

impl Call {
    /// A call in `phase`, created now.
    pub fn new(id: CallId, direction: Direction, peer_name: String, phase: Phase, now_ms: u64) -> Self {
        Self {
            id,
            direction,
            peer_name,
            peer_id: None,
            peer_sn: None,
            verified: None,
            phase,
            signals: SignalChannel::default(),
            queued: Vec::new(),
            peer_candidates: Vec::new(),
            private: false,
            reveal_by_ms: None,
            path: None,
            created_ms: now_ms,
            deadline_ms: now_ms,
            invite_ms: None,
            connected_ms: None,
            reported_path: None,
            peer_nat: None,
            prediction: Default::default(),
        }
    }

    /// Remember more of the peer's candidates (at most
    /// [`supervox_proto::call::MAX_CALL_CANDIDATES`] in all).
    pub fn learn_candidates(&mut self, c: &[Candidate]) {
        let room = supervox_proto::call::MAX_CALL_CANDIDATES.saturating_sub(self.peer_candidates.len());
        for cand in c.iter().take(room) {
            if !self.peer_candidates.contains(cand) {
                self.peer_candidates.push(*cand);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn binding(a: &Identity, b: &Identity) -> Binding {
        Binding { call_id: CallId([7; 16]), caller: a.user_id(), callee: b.user_id(), sent_ms: 1_000 }
    }

    fn no_offer() -> CallOffer {
        CallOffer { candidates: vec![], nat: None }
    }

    /// The media transports of a finished call handshake (caller, callee).
    pub(crate) fn transport_pair() -> (Arc<snow::StatelessTransportState>, Arc<snow::StatelessTransportState>) {
        let (a, b) = handshake_pair();
        (a.transport(), b.transport())
    }

    /// Two ends of a finished call handshake (caller, callee).
    pub(crate) fn handshake_pair() -> (CallKeys, CallKeys) {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let bind = binding(&a, &b);
        let (hs, m1) = start_handshake(&a, &bind, &no_offer()).unwrap();
        let (kb, m2, _) = answer_handshake(&b, &bind, &m1).unwrap();
        (finish_handshake(hs, &m2).unwrap(), kb)
    }

    #[test]
    fn keys_agree_both_ways_and_the_offer_arrives() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let bind = binding(&a, &b);
        let cand = Candidate {
            kind: supervox_proto::CandidateKind::Relay,
            transport: supervox_proto::Transport::Udp,
            addr: "127.0.0.1:5".parse().unwrap(),
            priority: 9,
        };
        let offer = CallOffer { candidates: vec![cand], nat: None };
        let (hs, m1) = start_handshake(&a, &bind, &offer).unwrap();
        // The candidates are not in clear in message 1.
        assert!(!m1.windows(4).any(|w| w == [127, 0, 0, 1]));
        let (kb, m2, got) = answer_handshake(&b, &bind, &m1).unwrap();
        assert_eq!(got, offer);
        let ka = finish_handshake(hs, &m2).unwrap();
        let (ta, tb) = (ka.transport(), kb.transport());
        let mut ct = [0u8; 64];
        let mut pt = [0u8; 64];
        let n = ta.write_message(7, b"hi", &mut ct).unwrap();
        assert_eq!(tb.read_message(7, &ct[..n], &mut pt).unwrap(), 2);
        let n = tb.write_message(1, b"yo", &mut ct).unwrap();
        assert_eq!(ta.read_message(1, &ct[..n], &mut pt).unwrap(), 2);
    }

    #[test]
    fn message_1_moved_to_another_call_time_or_roles_does_not_decrypt() {
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let bind = binding(&a, &b);
        let (_, m1) = start_handshake(&a, &bind, &no_offer()).unwrap();
        for other in [
            Binding { call_id: CallId([8; 16]), ..bind },
            Binding { sent_ms: bind.sent_ms + 1, ..bind },
            Binding { caller: b.user_id(), callee: a.user_id(), ..bind },
        ] {
            assert!(answer_handshake(&b, &other, &m1).is_err(), "{other:?}");
        }
        assert!(answer_handshake(&b, &bind, &m1).is_ok());
    }

    #[test]
    fn callee_rejects_impostor_and_wrong_target() {
        let (a, b, m) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]), Identity::from_seed([3; 32]));
        // Mallory runs the handshake with her own key but claims to be alice.
        let (_, m1) = start_handshake(&m, &binding(&a, &b), &no_offer()).unwrap();
        assert_eq!(answer_handshake(&b, &binding(&a, &b), &m1).err(), Some(CallCryptoError::IdentityMismatch));
        // A handshake meant for someone else does not decrypt at bob.
        let bind = Binding { callee: m.user_id(), ..binding(&a, &b) };
        let (_, m1) = start_handshake(&a, &bind, &no_offer()).unwrap();
        assert!(matches!(answer_handshake(&b, &binding(&a, &b), &m1), Err(CallCryptoError::Noise(_))));
        assert!(answer_handshake(&b, &binding(&a, &b), b"garbage").is_err());
        assert!(answer_handshake(&b, &binding(&a, &b), &vec![0; MAX_HANDSHAKE_LEN + 1]).is_err());
    }

    #[test]
    fn sealed_signals_open_once_only_at_the_peer_and_never_as_media() {
        let (ka, kb) = handshake_pair();
        let mut a = SignalChannel::with_keys(ka);
        let mut b = SignalChannel::with_keys(kb);
        let bye = CallMessage::Bye { reason: "hangup".into() };
        let s = a.seal(&bye).unwrap();
        assert_eq!(b.open(&s), Some(bye.clone()));
        assert_eq!(b.open(&s), None, "a replay");
        // Our own signal does not open as the peer's (directions have their own keys).
        let s2 = a.seal(&CallMessage::Ringing).unwrap();
        assert_eq!(a.open(&s2), None);
        let mut tampered = s2.clone();
        tampered.seq += 1;
        assert_eq!(b.open(&tampered), None, "the sequence number is the nonce");
        let mut flipped = s2.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(b.open(&flipped), None);
        assert_eq!(b.open(&s2), Some(CallMessage::Ringing));
        // Without keys nothing opens or seals.
        assert_eq!(SignalChannel::default().seal(&bye), None);
        assert_eq!(SignalChannel::default().open(&s), None);
    }

    #[test]
    fn the_replay_cache_refuses_stale_replayed_and_flooding_invites() {
        let mut r = RecentInvites::default();
        let now = 100_000;
        assert_eq!(r.admit(CallId([1; 16]), now - MAX_INVITE_AGE_MS - 1, now), Err(InviteRefusal::Stale));
        assert_eq!(r.admit(CallId([1; 16]), now + MAX_INVITE_AGE_MS + 1, now), Err(InviteRefusal::Stale));
        assert_eq!(r.admit(CallId([1; 16]), now - MAX_INVITE_AGE_MS, now), Ok(()));
        assert_eq!(r.admit(CallId([1; 16]), now, now + 5), Err(InviteRefusal::Replayed));
        // Once forgotten, the same message is stale.
        let later = now + MAX_INVITE_AGE_MS + 1;
        assert_eq!(r.admit(CallId([1; 16]), now - MAX_INVITE_AGE_MS, later), Err(InviteRefusal::Stale));
        assert!(r.is_empty());
        for i in 0..MAX_RECENT_INVITES {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            r.admit(CallId(id), later, later).unwrap();
        }
        assert_eq!(r.admit(CallId([0xee; 16]), later, later), Err(InviteRefusal::Flooded));
        // The flood ages out and invites are admitted again.
        let after = later + MAX_INVITE_AGE_MS + 1;
        assert_eq!(r.admit(CallId([0xee; 16]), after, after), Ok(()));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn callee_refuses_a_low_order_key_in_message_1() {
        use crate::noise::{EvilResolver, LOW_ORDER_POINTS};
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let bind = binding(&a, &b);
        let remote = noise_public_key(&b.user_id()).unwrap();
        for point in LOW_ORDER_POINTS {
            // (static, ephemeral): a low-order ephemeral zeroes `es`, a
            // low-order static zeroes `ss`.
            for (s, e) in [(false, true), (true, false)] {
                let params = builder_params().unwrap();
                let key = a.noise_private_key();
                let prologue = bind.prologue();
                let mut hs = snow::Builder::with_resolver(params, Box::new(EvilResolver::new(point, s, e)))
                    .local_private_key(&key)
                    .remote_public_key(&remote)
                    .prologue(&prologue)
                    .build_initiator()
                    .unwrap();
                let mut m1 = vec![0u8; 256];
                let n = hs.write_message(&encode_call_body(&no_offer()).unwrap(), &mut m1).unwrap();
                m1.truncate(n);
                let err = answer_handshake(&b, &bind, &m1).err();
                assert!(matches!(err, Some(CallCryptoError::Noise(_))), "{point:02x?} s={s} e={e}: {err:?}");
            }
        }
    }

    #[test]
    fn caller_refuses_a_low_order_ephemeral_in_message_2() {
        use crate::noise::{EvilResolver, LOW_ORDER_POINTS};
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let bind = binding(&a, &b);
        for point in LOW_ORDER_POINTS {
            let (hs, m1) = start_handshake(&a, &bind, &no_offer()).unwrap();
            let key = b.noise_private_key();
            let prologue = bind.prologue();
            let mut evil = snow::Builder::with_resolver(
                builder_params().unwrap(),
                Box::new(EvilResolver::new(point, false, true)),
            )
            .local_private_key(&key)
            .prologue(&prologue)
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
        let (a, b) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let to_weak = Binding { callee: UserId(weak), ..binding(&a, &b) };
        assert_eq!(start_handshake(&a, &to_weak, &no_offer()).err(), Some(CallCryptoError::BadKey));
        let (_, m1) = start_handshake(&a, &binding(&a, &b), &no_offer()).unwrap();
        let from_weak = Binding { caller: UserId(weak), ..binding(&a, &b) };
        assert_eq!(answer_handshake(&b, &from_weak, &m1).err(), Some(CallCryptoError::BadKey));
    }
}
