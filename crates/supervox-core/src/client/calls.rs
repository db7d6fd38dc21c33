//! The client's calls: placing, answering, ending, and the media path.

use super::{Client, ClientEvent, ClientOutput};
use crate::call::{
    answer_handshake, finish_handshake, start_handshake, Binding, Call, Direction, Phase, SignalChannel, Verified,
    CONNECT_TIMEOUT_MS, INVITE_TIMEOUT_MS, LOOKUP_TIMEOUT_MS, MAX_INVITE_AGE_MS, MEDIA_TIMEOUT_MS, REVEAL_FALLBACK_MS,
    RING_TIMEOUT_MS, VERIFY_TIMEOUT_MS,
};
use crate::media_path::{call_tag, datagram_tag, MediaPath, Via};
use crate::reason::{CallEnd, CallFailure, ReasonText, Rejection};
use crate::trust::PinCheck;
use ed25519_dalek::Signer;
use rand::RngCore;
use std::net::SocketAddr;
use supervox_proto::call::{signed_signal_payload, CallMessage, CallOffer, SealedSignal, SignedSignal};
use supervox_proto::{
    CallId, CallSignal, Candidate, CandidateKind, LookupAnswer, Message, NameClaim, Presence, SignalEnvelope, UserId,
};
use tracing::{debug, info, warn};

/// Signals a caller keeps for the callee until its keys exist.
const MAX_QUEUED_SIGNALS: usize = 16;

/// At most this many calls at once (one active plus ones being declined).
const MAX_CALLS: usize = 4;

impl Client {
    /// Place a call to `name`. The outcome arrives as events.
    pub fn place_call(&mut self, name: &str, now_ms: u64) -> Result<CallId, CallFailure> {
        supervox_proto::record::validate_name(name)
            .map_err(|e| CallFailure::InvalidName(ReasonText::new(&e.to_string())))?;
        if name == self.cfg.name {
            return Err(CallFailure::CallingSelf);
        }
        if self.supernode().is_none() {
            return Err(CallFailure::NotSignedIn);
        }
        if self.calls.len() >= MAX_CALLS || self.active_call().is_some() {
            return Err(CallFailure::AlreadyInCall);
        }
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        let id = CallId(id);
        let req_id = self.next_req;
        self.next_req += 1;
        self.send_sn(Message::Lookup { req_id, name: name.to_string() });
        let mut call = Call::new(id, Direction::Outgoing, name.to_string(), Phase::Resolving { req_id }, now_ms);
        call.deadline_ms = now_ms + LOOKUP_TIMEOUT_MS;
        self.calls.insert(id, call);
        // A name not pinned is asked of a second supernode at the same time.
        if self.trust.get(name).is_none() {
            self.cross_check_start(id, name, now_ms);
        }
        Ok(id)
    }

    /// The call in progress, if any (not counting ones being torn down).
    pub fn active_call(&self) -> Option<CallId> {
        self.calls.values().map(|c| c.id).next()
    }

    /// A call's peer name and phase name, for status.
    pub fn call_info(&self, id: &CallId) -> Option<(String, &'static str)> {
        self.calls.get(id).map(|c| {
            let phase = match c.phase {
                Phase::Resolving { .. } => "resolving",
                Phase::Verifying { .. } => "verifying",
                Phase::Inviting { ringing: false, .. } => "inviting",
                Phase::Inviting { ringing: true, .. } => "ringing",
                Phase::Alerting => "incoming",
                Phase::Connecting => "connecting",
                Phase::Connected => "connected",
            };
            (c.peer_name.clone(), phase)
        })
    }

    /// A call's peer key and how far its name is verified, once known.
    pub fn call_peer(&self, id: &CallId) -> Option<(UserId, Option<Verified>)> {
        self.calls.get(id).and_then(|c| Some((c.peer_id?, c.verified)))
    }

    pub(super) fn on_lookup_result(&mut self, req_id: u64, answer: LookupAnswer, now_ms: u64) {
        if let Some(id) = self
            .calls
            .values()
            .find(|c| matches!(c.phase, Phase::Verifying { req_id: r, .. } if r == req_id))
            .map(|c| c.id)
        {
            return self.on_caller_lookup(id, answer, now_ms);
        }
        let Some(id) = self
            .calls
            .values()
            .find(|c| matches!(c.phase, Phase::Resolving { req_id: r } if r == req_id))
            .map(|c| c.id)
        else {
            return;
        };
        let (claim, presence) = match answer {
            LookupAnswer::Online { claim, presence } => (claim, presence),
            // The name we asked for (validated), not the supernode's unverified claim's.
            LookupAnswer::Offline { .. } => {
                let name = self.calls.get(&id).map(|c| c.peer_name.clone()).unwrap_or_default();
                return self.fail_call(id, CallFailure::Offline(name), now_ms, false);
            }
            LookupAnswer::Unknown => {
                let name = self.calls.get(&id).map(|c| c.peer_name.clone()).unwrap_or_default();
                return self.fail_call(id, CallFailure::NoSuchUser(name), now_ms, false);
            }
        };
        // The supernode is not trusted: the records must verify here too.
        let name = self.calls.get(&id).map(|c| c.peer_name.clone()).unwrap_or_default();
        if !super::online_holds(&claim, &presence, &name, now_ms) {
            return self.fail_call(id, CallFailure::LookupUnverified, now_ms, false);
        }
        // A pinned name needs no second opinion: the pin decides.
        match self.trust.check(&claim.name, &claim.user_id) {
            PinCheck::Matches => {
                self.cross_check_drop(id);
                self.invite(id, claim, presence, Verified::Contact, now_ms)
            }
            PinCheck::Changed { pinned } => {
                self.cross_check_drop(id);
                let name = claim.name;
                self.key_changed(id, &name, pinned, claim.user_id, true);
                self.fail_call(id, CallFailure::KeyChanged(name), now_ms, false)
            }
            // Invites once a second supernode agrees (crosscheck.rs).
            PinCheck::Unpinned => self.cross_check_outgoing(id, claim, presence, now_ms),
        }
    }

    /// Send the invite of outgoing call `id` to the callee the lookup found,
    /// whose name is `verified`.
    pub(super) fn invite(&mut self, id: CallId, claim: NameClaim, presence: Presence, verified: Verified, now_ms: u64) {
        let Some(me) = self.presence.clone() else {
            return self.fail_call(id, CallFailure::NotSignedIn, now_ms, false);
        };
        // To a stranger: our relays only, and no NAT report, until the call is up.
        let private = self.is_private_to(&claim.user_id);
        let offer = CallOffer {
            candidates: self.offered_candidates(private),
            nat: if private { None } else { self.nat_report(0) },
        };
        let binding = Binding { call_id: id, caller: self.identity.user_id(), callee: claim.user_id, sent_ms: now_ms };
        let (hs, msg1) = match start_handshake(&self.identity, &binding, &offer) {
            Ok(x) => x,
            Err(e) => return self.fail_call(id, CallFailure::Handshake(e), now_ms, false),
        };
        let from_name = self.cfg.name.clone();
        if let Some(c) = self.calls.get_mut(&id) {
            c.peer_id = Some(claim.user_id);
            c.peer_sn = Some(presence.supernode);
            // The key comes from the directory's (verified, cross-checked) claim, or the pin.
            c.verified = Some(verified);
            c.private = private;
            c.phase = Phase::Inviting { hs: Some(Box::new(hs)), ringing: false };
            c.invite_ms = Some(now_ms);
            c.deadline_ms = now_ms + INVITE_TIMEOUT_MS;
        }
        self.signal(id, CallSignal::Invite { from_name, caller_presence: me, sent_ms: now_ms, handshake: msg1 });
    }

    /// True when `peer` gets our relays only until the call is up: it is
    /// not a contact and privacy is not relaxed.
    fn is_private_to(&self, peer: &UserId) -> bool {
        !self.cfg.relaxed_privacy && !self.is_contact(peer)
    }

    /// The candidates we offer: all, or (private) the relay ones.
    fn offered_candidates(&self, private: bool) -> Vec<Candidate> {
        let mut c = self.local_candidates.clone();
        if private {
            c.retain(|c| c.kind == CandidateKind::Relay);
        }
        c.truncate(supervox_proto::call::MAX_CALL_CANDIDATES);
        c
    }

    /// Send a signal to the peer of call `id` through our supernode.
    pub(super) fn signal(&mut self, id: CallId, body: CallSignal) {
        let Some(c) = self.calls.get(&id) else { return };
        let (Some(to), Some(to_supernode)) = (c.peer_id, c.peer_sn) else {
            return;
        };
        let env = SignalEnvelope { call_id: id, from: self.identity.user_id(), to, to_supernode, body };
        self.send_sn(Message::Signal(env));
    }

    fn signal_to(&mut self, id: CallId, to: UserId, to_supernode: SocketAddr, body: CallSignal) {
        let env = SignalEnvelope { call_id: id, from: self.identity.user_id(), to, to_supernode, body };
        self.send_sn(Message::Signal(env));
    }

    /// Say `msg` to the peer of call `id`, sealed under the call keys; a
    /// caller without keys yet (no `Respond`) keeps it until they exist.
    pub(super) fn send_call(&mut self, id: CallId, msg: CallMessage) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        match c.signals.seal(&msg) {
            Some(sealed) => self.signal(id, CallSignal::Sealed(sealed)),
            None if c.queued.len() < MAX_QUEUED_SIGNALS => c.queued.push(msg),
            None => debug!("call {id}: signal dropped, too many waiting for the keys"),
        }
    }

    /// Say `body` before we hold the call keys, signed by our identity key.
    fn send_signed(&mut self, id: CallId, to: UserId, to_supernode: SocketAddr, body: SignedSignal) {
        let payload = signed_signal_payload(&id, &self.identity.user_id(), &to, &body);
        let signature = self.identity.signing_key().sign(&payload);
        self.signal_to(id, to, to_supernode, CallSignal::Signed { body, signature });
    }

    /// Callee: send message 2 with its first sealed signal (ringing, or a
    /// refusal), once.
    pub(super) fn respond(&mut self, id: CallId, first: CallMessage) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Phase::Verifying { msg2, .. } = &mut c.phase else { return };
        let handshake = std::mem::take(msg2);
        if let Some(first) = c.signals.seal(&first) {
            self.signal(id, CallSignal::Respond { handshake, first });
        }
    }

    pub(super) fn on_signal(&mut self, env: SignalEnvelope, now_ms: u64) {
        if env.to != self.identity.user_id() {
            return;
        }
        let id = env.call_id;
        if let CallSignal::Invite { from_name, caller_presence, sent_ms, handshake } = env.body {
            return self.on_invite(id, env.from, from_name, caller_presence, sent_ms, handshake, now_ms);
        }
        // Everything else must come from the peer of a call we have, and is
        // authenticated end to end below: whoever routes it cannot forge it.
        if self.calls.get(&id).and_then(|c| c.peer_id) != Some(env.from) {
            return;
        }
        match env.body {
            CallSignal::Respond { handshake, first } => self.on_respond(id, &handshake, first, now_ms),
            CallSignal::Sealed(sealed) => match self.calls.get_mut(&id).and_then(|c| c.signals.open(&sealed)) {
                Some(msg) => self.on_call_message(id, msg, now_ms),
                None => debug!("call {id}: a sealed signal that does not open (forged or replayed) dropped"),
            },
            CallSignal::Signed { body, signature } => {
                let payload = signed_signal_payload(&id, &env.from, &env.to, &body);
                let authentic = env.from.verifying_key().is_ok_and(|k| k.verify_strict(&payload, &signature).is_ok());
                if authentic {
                    self.on_signed(id, body, now_ms);
                } else {
                    warn!("call {id}: a signed signal with a bad signature dropped");
                }
            }
            // Peer messages never reach here (client/peer.rs takes them).
            CallSignal::Invite { .. } | CallSignal::Peer(_) => {}
        }
    }

    /// Caller: the callee's message 2 and first signal.
    fn on_respond(&mut self, id: CallId, msg2: &[u8], first: SealedSignal, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Phase::Inviting { hs, .. } = &mut c.phase else { return };
        let Some(hs) = hs.take() else { return };
        let keys = match finish_handshake(*hs, msg2) {
            Ok(k) => k,
            Err(e) => return self.fail_call(id, CallFailure::Handshake(e), now_ms, true),
        };
        c.signals.keys = Some(keys);
        let Some(first) = c.signals.open(&first) else {
            return self.fail_call(id, CallFailure::Handshake(crate::call::CallCryptoError::Malformed), now_ms, true);
        };
        for msg in std::mem::take(&mut c.queued) {
            self.send_call(id, msg);
        }
        self.on_call_message(id, first, now_ms);
    }

    /// An authenticated signal from the peer of call `id`.
    fn on_call_message(&mut self, id: CallId, msg: CallMessage, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        let outgoing = c.direction == Direction::Outgoing;
        match msg {
            CallMessage::Ringing if outgoing => {
                if let Phase::Inviting { ringing, .. } = &mut c.phase {
                    if !*ringing {
                        *ringing = true;
                        c.deadline_ms = now_ms + RING_TIMEOUT_MS;
                        self.event(ClientEvent::Ringing { call_id: id });
                    }
                }
            }
            CallMessage::Accept { candidates, nat } if outgoing => {
                if !matches!(c.phase, Phase::Inviting { .. }) {
                    return;
                }
                c.phase = Phase::Connecting;
                c.deadline_ms = now_ms + CONNECT_TIMEOUT_MS;
                c.learn_candidates(&candidates);
                if let Some(report) = nat {
                    self.on_peer_nat(id, report, now_ms);
                }
                self.start_path(id, now_ms);
            }
            CallMessage::Reject { reason } if outgoing => {
                if matches!(c.phase, Phase::Inviting { .. }) {
                    self.fail_call(id, CallFailure::Rejected(Rejection::from_wire(&reason)), now_ms, false)
                }
            }
            CallMessage::Cancel if !outgoing => {
                if !matches!(c.phase, Phase::Connected) {
                    self.fail_call(id, CallFailure::CallerCancelled, now_ms, false)
                }
            }
            CallMessage::Bye { reason } => self.end_call(id, CallEnd::remote_hangup(&reason), now_ms, false),
            CallMessage::Candidates { candidates } => self.on_trickled(id, candidates, now_ms),
            CallMessage::Nat(report) => self.on_peer_nat(id, report, now_ms),
            other => debug!("call {id}: {other:?} from the wrong side ignored"),
        }
    }

    /// A signed signal from the peer of call `id` (said before it had keys).
    fn on_signed(&mut self, id: CallId, body: SignedSignal, now_ms: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        match (body, c.direction, &c.phase) {
            (SignedSignal::Cancel, Direction::Incoming, Phase::Verifying { .. } | Phase::Alerting) => {
                self.fail_call(id, CallFailure::CallerCancelled, now_ms, false)
            }
            (SignedSignal::Reject { reason }, Direction::Outgoing, Phase::Inviting { hs: Some(_), .. }) => {
                self.fail_call(id, CallFailure::Rejected(Rejection::from_wire(&reason)), now_ms, false)
            }
            (body, ..) => debug!("call {id}: signed {body:?} out of place ignored"),
        }
    }

    /// Our supernode could not deliver a signal of call `id`. Only an invite
    /// not yet answered fails on it: later, the callee's own sealed signals
    /// say how the call stands (and a supernode cannot end it by saying so).
    pub(super) fn on_signal_failed(&mut self, id: CallId, reason: &str, now_ms: u64) {
        if matches!(self.calls.get(&id), Some(Call { phase: Phase::Inviting { hs: Some(_), .. }, .. })) {
            self.fail_call(id, CallFailure::signal_failed(reason), now_ms, false)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_invite(
        &mut self,
        id: CallId,
        from: UserId,
        from_name: String,
        caller_presence: supervox_proto::Presence,
        sent_ms: u64,
        msg1: Vec<u8>,
        now_ms: u64,
    ) {
        if self.calls.contains_key(&id) {
            return; // a duplicate
        }
        if self.blocked.contains(&from) {
            return debug!("invite {id} from a blocked key dropped");
        }
        // The caller's presence tells us where to send answers; it must be theirs.
        if caller_presence.verify(now_ms).is_err()
            || caller_presence.user_id != from
            || caller_presence.name != from_name
        {
            warn!("invite with an invalid caller presence dropped");
            return;
        }
        // A stale invite is refused before the handshake's DH work;
        // `RecentInvites::admit` checks the time again with the replay cache.
        if sent_ms.abs_diff(now_ms) > MAX_INVITE_AGE_MS {
            warn!(
                "invite {id} refused: sent {} s from our clock (a replay, or a clock far off)",
                sent_ms.abs_diff(now_ms) / 1000
            );
            return;
        }
        let sn = caller_presence.supernode;
        let binding = Binding { call_id: id, caller: from, callee: self.identity.user_id(), sent_ms };
        let (keys, msg2, offer) = match answer_handshake(&self.identity, &binding, &msg1) {
            Ok(x) => x,
            Err(e) => {
                warn!("invite {id} refused: {e}");
                let reason = Rejection::HandshakeFailed.wire().into();
                return self.send_signed(id, from, sn, SignedSignal::Reject { reason });
            }
        };
        // An authentic message 1 seen before is a replay: never ring twice.
        if let Err(r) = self.recent_invites.admit(id, sent_ms, now_ms) {
            warn!("invite {id} refused: {r:?} (a replayed or flooding invite)");
            return;
        }
        let mut call = Call::new(id, Direction::Incoming, from_name.clone(), Phase::Alerting, now_ms);
        call.peer_id = Some(from);
        call.peer_sn = Some(sn);
        call.signals = SignalChannel::with_keys(keys);
        let stranger_refused = self.cfg.refuse_strangers && !self.is_contact(&from);
        if stranger_refused {
            info!("invite {id} from {from_name:?}, not a contact, declined (--strangers refuse)");
        }
        if stranger_refused || self.active_call().is_some() || self.calls.len() >= MAX_CALLS {
            let why = if stranger_refused { Rejection::Declined } else { Rejection::Busy };
            let busy = CallMessage::Reject { reason: why.wire().into() };
            if let Some(first) = call.signals.seal(&busy) {
                self.signal_to(id, from, sn, CallSignal::Respond { handshake: msg2, first });
            }
            return;
        }
        // A presence signed for a name proves only that the key signed it:
        // ask the directory who owns the name before it rings.
        let req_id = self.next_req;
        self.next_req += 1;
        self.send_sn(Message::Lookup { req_id, name: from_name });
        call.phase = Phase::Verifying { req_id, msg2 };
        call.learn_candidates(&offer.candidates);
        call.peer_nat = offer.nat;
        call.private = self.is_private_to(&from);
        call.deadline_ms = now_ms + VERIFY_TIMEOUT_MS;
        call.invite_ms = Some(now_ms);
        self.calls.insert(id, call);
    }

    /// The directory's answer for an incoming call's caller name.
    fn on_caller_lookup(&mut self, id: CallId, answer: LookupAnswer, now_ms: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        let (name, from) = (c.peer_name.clone(), c.peer_id);
        if self.checks.contains_key(&id) {
            return; // a second answer while the first is being cross-checked
        }
        // A claim that does not verify, or is for another name, is the
        // supernode's fault, not proof against the caller: unverified.
        let owner = super::answer_owner(&answer, &name);
        let Some(from) = from else { return };
        // A pinned name: the pin decides, whatever the directory says.
        match self.trust.check(&name, &from) {
            PinCheck::Matches => return self.ring(id, Verified::Contact, now_ms),
            PinCheck::Changed { pinned } => {
                // The new key is kept for `ctl trust` only if the directory backs it.
                self.key_changed(id, &name, pinned, from, owner == Some(from));
                // Not "key changed": a stranger must not learn whom we have pinned.
                self.respond(id, CallMessage::Reject { reason: Rejection::CallerNotVerified.wire().into() });
                return self.fail_call(id, CallFailure::KeyChanged(name), now_ms, false);
            }
            PinCheck::Unpinned => {}
        }
        match owner {
            // Rings once a second supernode agrees (crosscheck.rs).
            Some(owner) if owner == from => self.cross_check_caller(id, &name, owner, now_ms),
            Some(_) => {
                warn!("refused an incoming call claiming {name:?}: the directory says another key owns that name");
                self.respond(id, CallMessage::Reject { reason: Rejection::CallerNotVerified.wire().into() });
                self.fail_call(id, CallFailure::CallerNameMismatch(name), now_ms, false);
            }
            None => self.ring(id, Verified::Unverified, now_ms),
        }
    }

    /// Verification of an incoming call is over: ring, and answer at once
    /// if told to, but only a caller who is a contact or whom the directory
    /// confirmed.
    pub(super) fn ring(&mut self, id: CallId, verified: Verified, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Phase::Verifying { .. } = c.phase else { return };
        // No word from the directory: the pin, if any, still decides.
        let pin = match (verified, c.peer_id) {
            (Verified::Unverified, Some(from)) => Some((c.peer_name.clone(), from)),
            _ => None,
        };
        // A cross-check still running (timed out here) is moot now.
        self.cross_check_drop(id);
        let mut verified = verified;
        if let Some((name, from)) = pin {
            match self.trust.check(&name, &from) {
                PinCheck::Matches => verified = Verified::Contact,
                PinCheck::Changed { pinned } => {
                    self.key_changed(id, &name, pinned, from, false);
                    self.respond(id, CallMessage::Reject { reason: Rejection::CallerNotVerified.wire().into() });
                    return self.fail_call(id, CallFailure::KeyChanged(name), now_ms, false);
                }
                PinCheck::Unpinned => {}
            }
        }
        self.respond(id, CallMessage::Ringing);
        let Some(c) = self.calls.get_mut(&id) else { return };
        c.phase = Phase::Alerting;
        c.verified = Some(verified);
        c.deadline_ms = now_ms + RING_TIMEOUT_MS;
        let (from, user_id) = (c.peer_name.clone(), c.peer_id);
        let Some(user_id) = user_id else { return };
        info!("incoming call from {}", verified.label(&from));
        self.event(ClientEvent::Incoming { call_id: id, from, user_id, verified });
        if self.cfg.auto_answer && verified.is_confirmed() {
            self.answer(id, now_ms);
        }
    }

    /// Answer a ringing incoming call.
    pub fn answer(&mut self, id: CallId, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Phase::Alerting = c.phase else {
            return;
        };
        c.phase = Phase::Connecting;
        c.deadline_ms = now_ms + CONNECT_TIMEOUT_MS;
        let private = c.private;
        let accept = CallMessage::Accept {
            candidates: self.offered_candidates(private),
            nat: if private { None } else { self.nat_report(0) },
        };
        self.send_call(id, accept);
        self.start_path(id, now_ms);
    }

    /// Hang up, cancel or decline call `id`, telling the peer. A call that
    /// had not connected reports [`CallFailure::Ended`] with `reason`.
    pub fn hangup(&mut self, id: CallId, reason: CallEnd, now_ms: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        match c.phase {
            Phase::Connected | Phase::Connecting => self.end_call(id, reason, now_ms, true),
            Phase::Alerting => {
                self.send_call(id, CallMessage::Reject { reason: Rejection::Declined.wire().into() });
                self.fail_call(id, CallFailure::Ended(reason), now_ms, false);
            }
            Phase::Verifying { .. } => {
                self.respond(id, CallMessage::Reject { reason: Rejection::Declined.wire().into() });
                self.fail_call(id, CallFailure::Ended(reason), now_ms, false);
            }
            Phase::Inviting { .. } | Phase::Resolving { .. } => {
                self.fail_call(id, CallFailure::Ended(reason), now_ms, true)
            }
        }
    }

    /// End a call that never connected. `tell_peer` sends Cancel.
    pub(super) fn fail_call(&mut self, id: CallId, reason: CallFailure, now_ms: u64, tell_peer: bool) {
        if tell_peer {
            self.cancel(id);
        }
        self.drop_call_spares(id);
        if self.calls.remove(&id).is_some() {
            info!("call {id} failed: {reason}");
            self.event(ClientEvent::Failed { call_id: id, reason });
        }
        self.close_call_streams(id, now_ms);
    }

    /// Tell the peer we give up: sealed once we hold the keys, else signed.
    fn cancel(&mut self, id: CallId) {
        let Some(c) = self.calls.get(&id) else { return };
        if c.signals.keys.is_some() {
            return self.send_call(id, CallMessage::Cancel);
        }
        if let (Some(to), Some(sn), Phase::Inviting { .. }) = (c.peer_id, c.peer_sn, &c.phase) {
            self.send_signed(id, to, sn, SignedSignal::Cancel);
        }
    }

    /// End a call (connected or connecting). `tell_peer` sends Bye with the
    /// reason's text. A call that never connected reports
    /// [`CallFailure::Ended`].
    fn end_call(&mut self, id: CallId, reason: CallEnd, now_ms: u64, tell_peer: bool) {
        if tell_peer {
            self.send_call(id, CallMessage::Bye { reason: reason.to_string() });
        }
        self.drop_call_spares(id);
        let Some(c) = self.calls.remove(&id) else {
            return;
        };
        self.close_call_streams(id, now_ms);
        match c.connected_ms {
            Some(t) => {
                info!("call {id} ended: {reason}");
                self.event(ClientEvent::Ended { call_id: id, reason, duration_ms: now_ms - t })
            }
            None => self.event(ClientEvent::Failed { call_id: id, reason: CallFailure::Ended(reason) }),
        }
    }

    pub(super) fn fail_signalling_calls(&mut self, reason: CallFailure, now_ms: u64) {
        let ids: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| {
                matches!(
                    c.phase,
                    Phase::Resolving { .. } | Phase::Inviting { .. } | Phase::Verifying { .. } | Phase::Alerting
                )
            })
            .map(|c| c.id)
            .collect();
        for id in ids {
            self.fail_call(id, reason.clone(), now_ms, false);
        }
    }

    /// The earliest deadline of any call: its phase's timeout (or, once
    /// connected, the media-silence timeout) and its media path's checks.
    pub(super) fn calls_timeout(&self) -> Option<u64> {
        let per_call = self.calls.values().map(|c| {
            let phase = match (&c.phase, c.path.as_ref()) {
                (Phase::Connected, Some(p)) => Some(p.last_rx_ms() + MEDIA_TIMEOUT_MS),
                (Phase::Connected, None) => None,
                _ => Some(c.deadline_ms),
            };
            crate::timer::earliest([phase, c.path.as_ref().map(|p| p.poll_timeout()), c.reveal_by_ms])
        });
        crate::timer::earliest(per_call)
    }

    pub(super) fn tick_calls(&mut self, now_ms: u64) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            if let Some(p) = c.path.as_mut() {
                p.handle_timeout(now_ms);
            }
            if c.reveal_by_ms.is_some_and(|t| now_ms >= t) {
                info!("call {id}: no relay pair after {REVEAL_FALLBACK_MS} ms: offering our direct candidates");
                self.reveal(id, now_ms);
            }
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            let expired = now_ms >= c.deadline_ms;
            let silent = matches!(c.phase, Phase::Connected)
                && c.path.as_ref().is_some_and(|p| now_ms >= p.last_rx_ms() + MEDIA_TIMEOUT_MS);
            match (&c.phase, expired, silent) {
                (Phase::Connected, _, true) => self.end_call(id, CallEnd::MediaTimeout, now_ms, true),
                (Phase::Connected, _, false) => {}
                (Phase::Resolving { .. }, true, _) => self.fail_call(id, CallFailure::LookupTimedOut, now_ms, false),
                // No word from the directory: it may ring, marked as such.
                (Phase::Verifying { .. }, true, _) => self.ring(id, Verified::Unverified, now_ms),
                (Phase::Inviting { ringing: false, .. }, true, _) => {
                    self.fail_call(id, CallFailure::CalleeDidNotRespond, now_ms, true)
                }
                (Phase::Inviting { ringing: true, .. }, true, _) => {
                    self.fail_call(id, CallFailure::NoAnswer, now_ms, true)
                }
                (Phase::Alerting, true, _) => {
                    self.send_call(id, CallMessage::Reject { reason: Rejection::NoAnswer.wire().into() });
                    self.fail_call(id, CallFailure::Missed, now_ms, false)
                }
                (Phase::Connecting, true, _) => {
                    // The peer hears it as a Bye with this text, as before.
                    let reason = CallFailure::NoMediaPath;
                    self.send_call(id, CallMessage::Bye { reason: reason.to_string() });
                    self.fail_call(id, reason, now_ms, false)
                }
                _ => {}
            }
            self.flush_path(id, now_ms);
        }
    }

    /// Keys agreed and the call answered: start checking pairs towards the
    /// peer's candidates. A private call uses our relay only, until it is up
    /// (or, without a relay, reveals at once: the user has answered).
    fn start_path(&mut self, id: CallId, now_ms: u64) {
        let mut bases = self.local_bases();
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Some(keys) = c.signals.keys.clone() else { return };
        bases.private = c.private;
        let remote = c.peer_candidates.clone();
        let path = MediaPath::new(&id, keys.transport(), &remote, bases, now_ms);
        let peers = path.remote_addrs();
        c.path = Some(path);
        if c.private {
            let wait = if bases.relay.is_some() { REVEAL_FALLBACK_MS } else { 0 };
            c.reveal_by_ms = Some(now_ms + wait);
        }
        self.permit_peers(&peers, now_ms);
        self.connect_tcp(id, &remote, now_ms);
        self.send_nat_report(id);
        self.flush_path(id, now_ms);
        // The peer's NAT report may have come with its offer.
        self.maybe_predict(id, now_ms);
        if bases.relay.is_none() {
            self.reveal(id, now_ms);
        }
    }

    /// A private call offers the rest of our candidates and NAT report now,
    /// and may use our own addresses: it is up (or its relay failed).
    fn reveal(&mut self, id: CallId, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        if !c.private {
            return;
        }
        c.private = false;
        c.reveal_by_ms = None;
        let remote = c.peer_candidates.clone();
        let mut peers = Vec::new();
        if let Some(p) = c.path.as_mut() {
            p.reveal(now_ms);
            peers = p.remote_addrs();
        }
        let direct: Vec<Candidate> =
            self.local_candidates.iter().filter(|c| c.kind != CandidateKind::Relay).copied().collect();
        if !direct.is_empty() {
            self.send_call(id, CallMessage::Candidates { candidates: direct });
        }
        self.send_nat_report(id);
        self.permit_peers(&peers, now_ms);
        self.connect_tcp(id, &remote, now_ms);
        // The revealed pairs' checks are due now: sent now, not at the next timer (this
        // may run inside `handle_timeout`, which must leave nothing due behind it).
        if let Some(p) = self.calls.get_mut(&id).and_then(|c| c.path.as_mut()) {
            p.handle_timeout(now_ms);
        }
        self.flush_path(id, now_ms);
        self.maybe_predict(id, now_ms);
    }

    /// Our relay will not relay to these peers: a private call towards one
    /// of them cannot start over our relay, so it reveals now rather than
    /// after [`REVEAL_FALLBACK_MS`].
    pub(super) fn relay_refused(&mut self, peers: &[std::net::IpAddr], now_ms: u64) {
        let ids: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| c.private && c.path.is_some())
            .filter(|c| c.peer_candidates.iter().any(|p| peers.contains(&p.addr.ip())))
            .map(|c| c.id)
            .collect();
        for id in ids {
            info!("call {id}: our relay refuses the peer: offering our direct candidates");
            self.reveal(id, now_ms);
        }
    }

    /// Candidates the peer gathered after its offer or answer.
    fn on_trickled(&mut self, id: CallId, candidates: Vec<Candidate>, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        c.learn_candidates(&candidates);
        let Some(p) = c.path.as_mut() else { return };
        p.add_remote_candidates(&candidates);
        p.search(now_ms);
        let peers = p.remote_addrs();
        self.permit_peers(&peers, now_ms);
        self.connect_tcp(id, &candidates, now_ms);
        self.flush_path(id, now_ms);
    }

    /// Move queued datagrams of a call's path to the outputs, and notice a
    /// path coming up or changing.
    pub(super) fn flush_path(&mut self, id: CallId, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(p) = c.path.as_mut() else { return };
        let mut relayed = Vec::new();
        while let Some((via, to, bytes)) = p.poll_transmit() {
            match via {
                Via::Direct => self.out.push_back(ClientOutput::Datagram(to, bytes)),
                Via::Spare(i) => self.out.push_back(ClientOutput::SpareDatagram(i, to, bytes)),
                Via::Relay => relayed.push((to, bytes)),
                Via::Tcp(s) => self.out.push_back(ClientOutput::TcpSend(s, bytes)),
            }
        }
        let release = p.take_spare_release();
        // Every move is reported, also to another pair of the same kind (another relay).
        if let (Phase::Connected, Some(reason)) = (&c.phase, p.take_change()) {
            let kind = p.kind();
            c.reported_path = Some(kind);
            self.event(ClientEvent::PathChanged { call_id: id, path: kind, reason });
        }
        for (to, bytes) in relayed {
            self.send_via_relay(to, &bytes, now_ms);
        }
        if let Some(keep) = release {
            self.release_spares(keep);
        }
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(p) = c.path.as_mut() else { return };
        if p.is_connected() && matches!(c.phase, Phase::Connecting) {
            let kind = p.kind();
            c.phase = Phase::Connected;
            c.reported_path = Some(kind);
            let now = p.last_rx_ms();
            c.connected_ms = Some(now);
            let setup_ms = now.saturating_sub(c.invite_ms.unwrap_or(c.created_ms));
            let peer = c.peer_name.clone();
            let verified = c.verified.unwrap_or(Verified::Unverified);
            let Some(user_id) = c.peer_id else { return };
            // Pinned (and persisted by the driver) before the call is reported connected.
            self.pin_connected(&peer, user_id, verified, now);
            self.event(ClientEvent::Connected { call_id: id, peer, user_id, verified, path: kind, setup_ms });
            // Up over our relay: now the peer may learn where we are.
            self.reveal(id, now_ms);
        }
    }

    /// A datagram arrived on the media socket. Returns the media plaintext
    /// and its call, if it was an authentic media packet.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        if supervox_stun::is_stun(bytes) && self.probe_datagram(from, bytes, now_ms) {
            return None;
        }
        if let Some(relayed) = self.relay_datagram(from, bytes, now_ms) {
            return relayed;
        }
        if supervox_stun::is_stun(bytes) {
            return None;
        }
        self.call_datagram(Via::Direct, from, bytes, now_ms)
    }

    /// A call datagram that arrived `via` a base: checks are handled, media
    /// returned.
    pub(super) fn call_datagram(
        &mut self,
        via: Via,
        from: SocketAddr,
        bytes: &[u8],
        now_ms: u64,
    ) -> Option<(CallId, Vec<u8>)> {
        let tag = datagram_tag(bytes)?;
        let id = self.calls.keys().find(|id| call_tag(id) == tag).copied()?;
        let plain = self.calls.get_mut(&id)?.path.as_mut()?.handle_datagram(via, from, bytes, now_ms);
        self.flush_path(id, now_ms);
        Some((id, plain?))
    }

    /// Send one media frame (RTP-like plaintext) on call `id`.
    pub fn send_media(&mut self, id: CallId, plaintext: &[u8], now_ms: u64) {
        if let Some(Call { phase: Phase::Connected, path: Some(p), .. }) = self.calls.get_mut(&id) {
            p.send_media(plaintext);
        }
        self.flush_path(id, now_ms);
    }

    /// Round-trip time of call `id`'s media path, once measured.
    pub fn call_rtt_ms(&self, id: &CallId) -> Option<f64> {
        self.calls.get(id)?.path.as_ref()?.rtt_ms()
    }

    /// True if call `id` is connected (media may flow).
    pub fn is_connected(&self, id: &CallId) -> bool {
        matches!(self.calls.get(id), Some(Call { phase: Phase::Connected, .. }))
    }
}
