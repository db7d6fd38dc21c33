//! Peer messages (chat, receipts, contact requests): opaque sealed bytes
//! routed by the supernodes like call signals (docs/PROTOCOL.md §9). This
//! file only moves them; what they say lives in [`crate::social`].

use super::{Client, ClientEvent};
use std::net::SocketAddr;
use supervox_proto::mail::MailId;
use supervox_proto::{CallId, CallSignal, LookupAnswer, Message, SignalEnvelope, UserId};
use tracing::debug;

/// Peer messages remembered as in flight (for their `SignalFailed`).
const MAX_PEER_IN_FLIGHT: usize = 1_024;
/// Peer lookups outstanding at once (older ones are forgotten).
const MAX_PEER_LOOKUPS: usize = 64;

/// Where a peer is, from a verified lookup ([`Client::lookup_peer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAt {
    /// Its key (the claim's, checked against our pin if we have one).
    pub user_id: UserId,
    /// Its supernode when online; `None`: offline, use its mailbox.
    pub supernode: Option<SocketAddr>,
}

/// Why a peer lookup found nobody to write to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerLookupError {
    /// Nobody holds the name.
    #[error("no such user")]
    Unknown,
    /// The supernode's answer does not verify (or is for another name).
    #[error("lookup answer does not verify")]
    Unverified,
    /// The name is pinned to another key (see `ctl trust`).
    #[error("key changed: pinned to {pinned}")]
    KeyChanged {
        /// The pinned key.
        pinned: UserId,
    },
}

impl Client {
    /// Send a sealed peer message to `to`, attached at `to_supernode` (from
    /// its presence). False when not signed in. If it cannot be delivered a
    /// [`ClientEvent::PeerUndeliverable`] follows.
    pub fn send_peer(&mut self, id: MailId, to: UserId, to_supernode: SocketAddr, body: Vec<u8>) -> bool {
        if self.supernode().is_none() {
            return false;
        }
        let call_id = CallId(id);
        let env =
            SignalEnvelope { call_id, from: self.identity.user_id(), to, to_supernode, body: CallSignal::Peer(body) };
        if !self.send_sn(Message::Signal(env)) {
            return false;
        }
        self.peer_sent.push_back(call_id);
        if self.peer_sent.len() > MAX_PEER_IN_FLIGHT {
            self.peer_sent.pop_front();
        }
        true
    }

    /// A peer message for us (the supernode checked `from` against the
    /// sender's link; the seal checks it again end to end).
    pub(super) fn on_peer(&mut self, id: CallId, from: UserId, to: UserId, body: Vec<u8>) {
        if to != self.identity.user_id() {
            return debug!("a peer message for someone else dropped");
        }
        if self.blocked.contains(&from) {
            return debug!("a peer message from a blocked key dropped");
        }
        self.event(ClientEvent::Peer { id, from, body });
    }

    /// True when `id` was one of our peer messages.
    pub(super) fn on_peer_failed(&mut self, id: CallId, reason: &str) -> bool {
        let Some(pos) = self.peer_sent.iter().position(|c| *c == id) else { return false };
        self.peer_sent.remove(pos);
        self.event(ClientEvent::PeerUndeliverable { id, reason: reason.to_string() });
        true
    }

    /// Look `name` up to write to it (chat, receipts): the answer comes as
    /// [`ClientEvent::PeerFound`] with this request id. `None` when not
    /// signed in.
    pub fn lookup_peer(&mut self, name: &str) -> Option<u64> {
        let req_id = self.next_req;
        if !self.send_sn(Message::Lookup { req_id, name: name.to_string() }) {
            return None;
        }
        self.next_req += 1;
        self.peer_lookups.push_back((req_id, name.to_string()));
        if self.peer_lookups.len() > MAX_PEER_LOOKUPS {
            self.peer_lookups.pop_front();
        }
        Some(req_id)
    }

    /// True when `req_id` was a peer lookup (answered here).
    pub(super) fn on_peer_lookup(&mut self, req_id: u64, answer: &LookupAnswer, now_ms: u64) -> bool {
        let Some(pos) = self.peer_lookups.iter().position(|(r, _)| *r == req_id) else { return false };
        let Some((_, name)) = self.peer_lookups.remove(pos) else { return false };
        // The supernode is not trusted: the records must verify here, for the name we asked.
        let found = match answer {
            LookupAnswer::Unknown => Err(PeerLookupError::Unknown),
            LookupAnswer::Offline { claim } if super::claims_name(claim, &name) => {
                Ok(PeerAt { user_id: claim.user_id, supernode: None })
            }
            LookupAnswer::Online { claim, presence } if super::online_holds(claim, presence, &name, now_ms) => {
                Ok(PeerAt { user_id: claim.user_id, supernode: Some(presence.supernode) })
            }
            _ => Err(PeerLookupError::Unverified),
        };
        let result = found.and_then(|at| match self.trust.check(&name, &at.user_id) {
            crate::trust::PinCheck::Changed { pinned } => Err(PeerLookupError::KeyChanged { pinned }),
            _ => Ok(at),
        });
        self.event(ClientEvent::PeerFound { req_id, name, result });
        true
    }
}
