//! The client's calls: placing, answering, ending, and the media path.

use super::{Client, ClientEvent, ClientOutput};
use crate::call::{
    answer_handshake, finish_handshake, start_handshake, Call, Direction, Phase, Verified, CONNECT_TIMEOUT_MS,
    INVITE_TIMEOUT_MS, LOOKUP_TIMEOUT_MS, MEDIA_TIMEOUT_MS, RING_TIMEOUT_MS, VERIFY_TIMEOUT_MS,
};
use crate::media_path::{call_tag, datagram_tag, MediaPath, Via};
use crate::reason::{CallEnd, CallFailure, ReasonText, Rejection};
use crate::trust::PinCheck;
use rand::RngCore;
use std::net::SocketAddr;
use supervox_proto::{
    CallId, CallSignal, Candidate, LookupAnswer, Message, NameClaim, Presence, SignalEnvelope, UserId,
};
use tracing::{info, warn};

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
        self.calls.insert(
            id,
            Call {
                id,
                direction: Direction::Outgoing,
                peer_name: name.to_string(),
                peer_id: None,
                peer_sn: None,
                verified: None,
                phase: Phase::Resolving { req_id },
                path: None,
                created_ms: now_ms,
                deadline_ms: now_ms + LOOKUP_TIMEOUT_MS,
                invite_ms: None,
                connected_ms: None,
                reported_path: None,
                peer_nat: None,
                prediction: Default::default(),
            },
        );
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
                Phase::Alerting { .. } => "incoming",
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
        let name_ok = self.calls.get(&id).is_some_and(|c| c.peer_name == claim.name);
        if !name_ok || claim.verify().is_err() || presence.verify(now_ms).is_err() || presence.user_id != claim.user_id
        {
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
        let (hs, msg1) = match start_handshake(&self.identity, &claim.user_id) {
            Ok(x) => x,
            Err(e) => return self.fail_call(id, CallFailure::Handshake(e), now_ms, false),
        };
        let candidates = self.local_candidates.clone();
        let from_name = self.cfg.name.clone();
        if let Some(c) = self.calls.get_mut(&id) {
            c.peer_id = Some(claim.user_id);
            c.peer_sn = Some(presence.supernode);
            // The key comes from the directory's (verified, cross-checked) claim, or the pin.
            c.verified = Some(verified);
            c.phase = Phase::Inviting { hs: Box::new(hs), ringing: false };
            c.invite_ms = Some(now_ms);
            c.deadline_ms = now_ms + INVITE_TIMEOUT_MS;
        }
        self.signal(id, CallSignal::Invite { from_name, caller_presence: me, handshake: msg1, candidates });
        self.send_nat_report(id);
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

    pub(super) fn on_signal(&mut self, env: SignalEnvelope, now_ms: u64) {
        if env.to != self.identity.user_id() {
            return;
        }
        let id = env.call_id;
        if let CallSignal::Invite { from_name, caller_presence, handshake, candidates } = env.body {
            return self.on_invite(id, env.from, from_name, caller_presence, handshake, candidates, now_ms);
        }
        // Everything else must come from the peer of a call we have.
        if self.calls.get(&id).and_then(|c| c.peer_id) != Some(env.from) {
            return;
        }
        match env.body {
            CallSignal::Ringing => {
                if let Some(Call { phase: Phase::Inviting { ringing, .. }, deadline_ms, .. }) = self.calls.get_mut(&id)
                {
                    if !*ringing {
                        *ringing = true;
                        *deadline_ms = now_ms + RING_TIMEOUT_MS;
                        self.event(ClientEvent::Ringing { call_id: id });
                    }
                }
            }
            CallSignal::Accept { handshake, candidates } => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                let Phase::Inviting { .. } = c.phase else {
                    return;
                };
                let Phase::Inviting { hs, .. } = std::mem::replace(&mut c.phase, Phase::Connecting) else {
                    return;
                };
                match finish_handshake(*hs, &handshake) {
                    Ok(keys) => {
                        c.deadline_ms = now_ms + CONNECT_TIMEOUT_MS;
                        self.start_path(id, keys, &candidates, now_ms);
                    }
                    Err(e) => self.fail_call(id, CallFailure::Handshake(e), now_ms, true),
                }
            }
            CallSignal::Reject { reason } => {
                self.fail_call(id, CallFailure::Rejected(Rejection::from_wire(&reason)), now_ms, false)
            }
            CallSignal::Cancel => self.fail_call(id, CallFailure::CallerCancelled, now_ms, false),
            CallSignal::Bye { reason } => self.end_call(id, CallEnd::remote_hangup(&reason), now_ms, false),
            CallSignal::Candidates { candidates } => self.on_trickled(id, candidates, now_ms),
            CallSignal::Nat(report) => self.on_peer_nat(id, report, now_ms),
            CallSignal::Invite { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_invite(
        &mut self,
        id: CallId,
        from: UserId,
        from_name: String,
        caller_presence: supervox_proto::Presence,
        msg1: Vec<u8>,
        candidates: Vec<supervox_proto::Candidate>,
        now_ms: u64,
    ) {
        if self.calls.contains_key(&id) {
            return; // a duplicate
        }
        // The caller's presence tells us where to send answers; it must be theirs.
        if caller_presence.verify(now_ms).is_err()
            || caller_presence.user_id != from
            || caller_presence.name != from_name
        {
            warn!("invite with an invalid caller presence dropped");
            return;
        }
        let sn = caller_presence.supernode;
        if self.active_call().is_some() || self.calls.len() >= super::calls::MAX_CALLS {
            return self.signal_to(id, from, sn, CallSignal::Reject { reason: Rejection::Busy.wire().into() });
        }
        // A presence signed for a name proves only that the key signed it:
        // ask the directory who owns the name before it rings.
        let req_id = self.next_req;
        self.next_req += 1;
        self.send_sn(Message::Lookup { req_id, name: from_name.clone() });
        self.calls.insert(
            id,
            Call {
                id,
                direction: Direction::Incoming,
                peer_name: from_name,
                peer_id: Some(from),
                peer_sn: Some(sn),
                verified: None,
                phase: Phase::Verifying { req_id, msg1, candidates },
                path: None,
                created_ms: now_ms,
                deadline_ms: now_ms + VERIFY_TIMEOUT_MS,
                invite_ms: Some(now_ms),
                connected_ms: None,
                reported_path: None,
                peer_nat: None,
                prediction: Default::default(),
            },
        );
    }

    /// The directory's answer for an incoming call's caller name.
    fn on_caller_lookup(&mut self, id: CallId, answer: LookupAnswer, now_ms: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        let (name, from) = (c.peer_name.clone(), c.peer_id);
        let Some(from) = from else { return };
        if self.checks.contains_key(&id) {
            return; // a second answer while the first is being cross-checked
        }
        let claim = match answer {
            LookupAnswer::Online { claim, .. } | LookupAnswer::Offline { claim } => Some(claim),
            LookupAnswer::Unknown => None,
        };
        // A claim that does not verify, or is for another name, is the
        // supernode's fault, not proof against the caller: unverified.
        let owner = claim.filter(|k| k.name == name && k.verify().is_ok()).map(|k| k.user_id);
        // A pinned name: the pin decides, whatever the directory says.
        match self.trust.check(&name, &from) {
            PinCheck::Matches => return self.ring(id, Verified::Contact, now_ms),
            PinCheck::Changed { pinned } => {
                // The new key is kept for `ctl trust` only if the directory backs it.
                self.key_changed(id, &name, pinned, from, owner == Some(from));
                // Not "key changed": a stranger must not learn whom we have pinned.
                self.signal(id, CallSignal::Reject { reason: Rejection::CallerNotVerified.wire().into() });
                return self.fail_call(id, CallFailure::KeyChanged(name), now_ms, false);
            }
            PinCheck::Unpinned => {}
        }
        match owner {
            // Rings once a second supernode agrees (crosscheck.rs).
            Some(owner) if owner == from => self.cross_check_caller(id, &name, owner, now_ms),
            Some(_) => {
                warn!("refused an incoming call claiming {name:?}: the directory says another key owns that name");
                self.signal(id, CallSignal::Reject { reason: Rejection::CallerNotVerified.wire().into() });
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
                    self.signal(id, CallSignal::Reject { reason: Rejection::CallerNotVerified.wire().into() });
                    return self.fail_call(id, CallFailure::KeyChanged(name), now_ms, false);
                }
                PinCheck::Unpinned => {}
            }
        }
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Phase::Verifying { msg1, candidates, .. } =
            std::mem::replace(&mut c.phase, Phase::Alerting { msg1: Vec::new(), candidates: Vec::new() })
        else {
            return;
        };
        c.phase = Phase::Alerting { msg1, candidates };
        c.verified = Some(verified);
        c.deadline_ms = now_ms + RING_TIMEOUT_MS;
        let (from, user_id) = (c.peer_name.clone(), c.peer_id);
        let Some(user_id) = user_id else { return };
        info!("incoming call from {}", verified.label(&from));
        self.signal(id, CallSignal::Ringing);
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
        let Phase::Alerting { .. } = c.phase else {
            return;
        };
        let Phase::Alerting { msg1, candidates } = std::mem::replace(&mut c.phase, Phase::Connecting) else {
            return;
        };
        let Some(peer) = c.peer_id else { return };
        match answer_handshake(&self.identity, &peer, &msg1) {
            Ok((keys, msg2)) => {
                c.deadline_ms = now_ms + CONNECT_TIMEOUT_MS;
                let ours = self.local_candidates.clone();
                self.signal(id, CallSignal::Accept { handshake: msg2, candidates: ours });
                self.send_nat_report(id);
                self.start_path(id, keys, &candidates, now_ms);
            }
            Err(e) => {
                self.signal(id, CallSignal::Reject { reason: Rejection::HandshakeFailed.wire().into() });
                self.fail_call(id, CallFailure::Handshake(e), now_ms, false);
            }
        }
    }

    /// Hang up, cancel or decline call `id`, telling the peer. A call that
    /// had not connected reports [`CallFailure::Ended`] with `reason`.
    pub fn hangup(&mut self, id: CallId, reason: CallEnd, now_ms: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        match c.phase {
            Phase::Connected | Phase::Connecting => self.end_call(id, reason, now_ms, true),
            Phase::Alerting { .. } | Phase::Verifying { .. } => {
                self.signal(id, CallSignal::Reject { reason: Rejection::Declined.wire().into() });
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
            self.signal(id, CallSignal::Cancel);
        }
        self.drop_call_spares(id);
        if self.calls.remove(&id).is_some() {
            info!("call {id} failed: {reason}");
            self.event(ClientEvent::Failed { call_id: id, reason });
        }
        self.close_call_streams(id, now_ms);
    }

    /// End a call (connected or connecting). `tell_peer` sends Bye with the
    /// reason's text. A call that never connected reports
    /// [`CallFailure::Ended`].
    fn end_call(&mut self, id: CallId, reason: CallEnd, now_ms: u64, tell_peer: bool) {
        if tell_peer {
            self.signal(id, CallSignal::Bye { reason: reason.to_string() });
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
                    Phase::Resolving { .. } | Phase::Inviting { .. } | Phase::Verifying { .. } | Phase::Alerting { .. }
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
            crate::timer::earliest([phase, c.path.as_ref().map(|p| p.poll_timeout())])
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
                (Phase::Alerting { .. }, true, _) => {
                    self.signal(id, CallSignal::Reject { reason: Rejection::NoAnswer.wire().into() });
                    self.fail_call(id, CallFailure::Missed, now_ms, false)
                }
                (Phase::Connecting, true, _) => {
                    // The peer hears it as a Bye with this text, as before.
                    let reason = CallFailure::NoMediaPath;
                    self.signal(id, CallSignal::Bye { reason: reason.to_string() });
                    self.fail_call(id, reason, now_ms, false)
                }
                _ => {}
            }
            self.flush_path(id, now_ms);
        }
    }

    /// Keys agreed: start checking pairs towards the peer's candidates.
    fn start_path(&mut self, id: CallId, keys: snow::StatelessTransportState, remote: &[Candidate], now_ms: u64) {
        let bases = self.local_bases();
        let Some(c) = self.calls.get_mut(&id) else { return };
        let path = MediaPath::new(&id, keys, remote, bases, now_ms);
        let peers = path.remote_addrs();
        c.path = Some(path);
        self.permit_peers(&peers, now_ms);
        self.connect_tcp(id, remote, now_ms);
        self.flush_path(id, now_ms);
        // The peer's NAT report may have come with its offer.
        self.maybe_predict(id, now_ms);
    }

    /// Candidates the peer gathered after its offer or answer.
    fn on_trickled(&mut self, id: CallId, candidates: Vec<Candidate>, now_ms: u64) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        match (&mut c.phase, c.path.as_mut()) {
            (Phase::Alerting { candidates: known, .. } | Phase::Verifying { candidates: known, .. }, _) => {
                known.extend(candidates.into_iter().take(16));
                known.truncate(32);
            }
            (_, Some(p)) => {
                p.add_remote_candidates(&candidates);
                let peers = p.remote_addrs();
                self.permit_peers(&peers, now_ms);
                self.connect_tcp(id, &candidates, now_ms);
                self.flush_path(id, now_ms);
            }
            _ => {}
        }
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
