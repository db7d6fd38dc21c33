//! The client's side of port prediction (see [`crate::media_path::predict`]):
//! telling the peer what our NAT does, choosing our role from both reports,
//! asking the driver for spare sockets and handing them back.
//!
//! Order of events: each side sends [`CallSignal::Nat`] right after its
//! `Invite` / `Accept`. The hard side, once it has both reports and keys,
//! asks for spare sockets ([`ClientOutput::OpenSpares`]); when they are open
//! it sends a check from each, then a second report with `spare_sockets` set.
//! That second report starts the easy side's spray: spraying earlier would
//! waste guesses on mappings that do not exist yet.

use super::{Client, ClientOutput};
use crate::call::Phase;
use crate::media_path::predict::{role, spray_plan, Role, SPARE_SOCKETS, SPRAY_BUDGET};
use crate::media_path::PathKind;
use supervox_proto::call::CallMessage;
use supervox_proto::{CallId, NatReport};
use tracing::{debug, info};

/// Addresses of a peer's report that are used (its two supernodes' views).
const MAX_REPORTED: usize = 2;

/// Where a call stands in port prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prediction {
    /// Not started (maybe never: it needs both reports and a role).
    #[default]
    Idle,
    /// Hard side: spare sockets asked for, not yet open.
    OpeningSpares,
    /// Running (or over): spares probing, or the spray under way.
    Started,
}

impl Client {
    /// Our NAT as the probe found it, for the peer; `None` before the probe
    /// finished, when UDP does not get out, or when the peer must not learn
    /// our addresses (`force_relay`).
    pub(super) fn nat_report(&self, spare_sockets: u16) -> Option<NatReport> {
        let r = self.reach.as_ref().filter(|r| r.udp && !self.cfg.force_relay && !self.udp_off())?;
        let mapped: Vec<_> = r.mapped.into_iter().chain(r.mapped_sn2).collect();
        Some(NatReport { mapping: r.mapping, filtering: r.filtering, mapped, spare_sockets })
    }

    /// Tell the peer of call `id` what our NAT does (after Invite / Accept).
    pub(super) fn send_nat_report(&mut self, id: CallId) {
        if self.calls.get(&id).is_some_and(|c| c.private) {
            return; // it names our public addresses: not to a stranger yet
        }
        if let Some(report) = self.nat_report(0) {
            self.send_call(id, CallMessage::Nat(report));
        }
    }

    /// The peer's NAT report arrived.
    pub(super) fn on_peer_nat(&mut self, id: CallId, mut report: NatReport, now_ms: u64) {
        report.mapped.truncate(MAX_REPORTED);
        let Some(c) = self.calls.get_mut(&id) else { return };
        c.peer_nat = Some(report);
        self.maybe_predict(id, now_ms);
    }

    /// Start port prediction on call `id` if both reports call for it and
    /// the keys are agreed. Called when either becomes known.
    pub(super) fn maybe_predict(&mut self, id: CallId, now_ms: u64) {
        let Some(mine) = self.nat_report(0) else { return };
        let owner_free = self.spares_owner.is_none();
        let Some(c) = self.calls.get_mut(&id) else { return };
        let (Some(peer), Some(path)) = (c.peer_nat.as_ref(), c.path.as_mut()) else {
            return;
        };
        if c.private || c.prediction != Prediction::Idle || !matches!(c.phase, Phase::Connecting | Phase::Connected) {
            return;
        }
        // A direct pair already works (say host candidates on one LAN): no
        // spare sockets, no spray.
        if path.is_connected() && path.kind() == PathKind::DirectUdp {
            return;
        }
        match role(&mine, peer) {
            Some(Role::Hard) if owner_free => {
                info!("call {id}: port prediction, hard side: opening {SPARE_SOCKETS} spare sockets");
                c.prediction = Prediction::OpeningSpares;
                self.spares_owner = Some(id);
                self.out.push_back(ClientOutput::OpenSpares(SPARE_SOCKETS));
            }
            Some(Role::Easy) if peer.spare_sockets > 0 => {
                let Some(first) = peer.mapped.first() else { return };
                let ip = first.ip();
                let plan = spray_plan(&peer.mapped, SPRAY_BUDGET, &mut self.rng);
                info!("call {id}: port prediction, easy side: spraying {} guesses at {ip}", plan.len());
                c.prediction = Prediction::Started;
                path.start_spray(ip, plan, now_ms);
                self.flush_path(id, now_ms);
            }
            other => debug!("call {id}: no port prediction now ({other:?})"),
        }
    }

    /// The driver opened `count` spare sockets for [`ClientOutput::OpenSpares`]
    /// (fewer than asked when it ran out of descriptors; 0 if none).
    pub fn on_spares_opened(&mut self, count: u16, now_ms: u64) {
        let Some(id) = self.spares_owner else {
            // Nobody wants them any more (the call ended meanwhile).
            self.out.push_back(ClientOutput::CloseSpares { keep: Vec::new() });
            return;
        };
        let target = self.calls.get(&id).and_then(|c| c.peer_nat.as_ref()).and_then(|r| r.mapped.first().copied());
        let (Some(c), Some(target)) = (self.calls.get_mut(&id), target) else {
            self.release_spares(Vec::new());
            return;
        };
        let Some(path) = c.path.as_mut() else {
            self.release_spares(Vec::new());
            return;
        };
        c.prediction = Prediction::Started;
        path.start_spares(count, target, now_ms);
        self.flush_path(id, now_ms);
        // The spares' checks are queued ahead of this signal: by the time the
        // peer sprays, our NAT holds their mappings.
        if count > 0 {
            if let Some(report) = self.nat_report(count) {
                self.send_call(id, CallMessage::Nat(report));
            }
        }
    }

    /// A datagram arrived on spare socket `index`. Returns the media
    /// plaintext and its call, if it was an authentic media packet.
    pub fn handle_spare_datagram(
        &mut self,
        index: u16,
        from: std::net::SocketAddr,
        bytes: &[u8],
        now_ms: u64,
    ) -> Option<(CallId, Vec<u8>)> {
        self.spares_owner?;
        self.call_datagram(crate::media_path::Via::Spare(index), from, bytes, now_ms)
    }

    /// Close the spare sockets but `keep`; with none kept they are free for
    /// another call.
    pub(super) fn release_spares(&mut self, keep: Vec<u16>) {
        if self.spares_owner.is_none() {
            return;
        }
        if keep.is_empty() {
            self.spares_owner = None;
        }
        self.out.push_back(ClientOutput::CloseSpares { keep });
    }

    /// Call `id` is gone: its spare sockets go with it.
    pub(super) fn drop_call_spares(&mut self, id: CallId) {
        if self.spares_owner == Some(id) {
            self.release_spares(Vec::new());
        }
    }
}
