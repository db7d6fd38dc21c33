//! Peer messages (chat, receipts, contact requests): opaque sealed bytes
//! routed by the supernodes like call signals (docs/PROTOCOL.md §9). This
//! file only moves them; what they say lives in [`crate::social`].

use super::{Client, ClientEvent};
use std::net::SocketAddr;
use supervox_proto::mail::MailId;
use supervox_proto::{CallId, CallSignal, Message, SignalEnvelope, UserId};
use tracing::debug;

/// Peer messages remembered as in flight (for their `SignalFailed`).
const MAX_PEER_IN_FLIGHT: usize = 1_024;

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
        self.event(ClientEvent::Peer { id, from, body });
    }

    /// True when `id` was one of our peer messages.
    pub(super) fn on_peer_failed(&mut self, id: CallId, reason: &str) -> bool {
        let Some(pos) = self.peer_sent.iter().position(|c| *c == id) else { return false };
        self.peer_sent.remove(pos);
        self.event(ClientEvent::PeerUndeliverable { id, reason: reason.to_string() });
        true
    }
}
