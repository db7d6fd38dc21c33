//! The client's relay candidate: one TURN allocation, kept while signed in,
//! on our supernode's relay (with the credentials it hands signed-in clients)
//! or on an external TURN server given in the configuration.
//!
//! The allocation shares the media socket: TURN traffic goes to and comes
//! from the server's address; relayed data is handed to the calls as having
//! arrived [`Via::Relay`] from the peer's address.

use std::net::SocketAddr;

use supervox_proto::{CallId, CallSignal, Candidate, CandidateKind, Transport};
use supervox_turn::{ClientTransport, TurnClient, TurnEvent};
use tracing::{info, warn};

use super::{Client, ClientOutput, RelayCredentials};
use crate::call::Phase;
use crate::media_path::{LocalBases, Via};

/// A TURN server the user names (e.g. coturn), used instead of the supernode's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRelay {
    /// Its UDP address.
    pub server: SocketAddr,
    /// Long-term credential username.
    pub username: String,
    /// Long-term credential password.
    pub password: String,
}

/// After a failed allocation, wait this long before the next try.
const RETRY_MS: u64 = 5_000;

impl Client {
    /// Credentials from our supernode: allocate on its relay, or renew the
    /// credentials of the allocation we hold there.
    pub(super) fn on_relay_credentials(&mut self, creds: RelayCredentials, now_ms: u64) {
        self.relay = Some(creds);
        if self.cfg.external_relay.is_none() {
            self.ensure_relay(now_ms);
        }
    }

    /// Start an allocation when we have none that lives.
    pub(super) fn ensure_relay(&mut self, now_ms: u64) {
        if now_ms < self.relay_retry_ms {
            return;
        }
        let (server, user, pass) = match (&self.cfg.external_relay, &self.relay) {
            (Some(e), _) => (e.server, e.username.clone(), e.password.clone()),
            // Over TCP, the relay is reached where we reached the supernode: the
            // supernode serves TURN on every TCP port, and only that one may get out.
            (None, Some(c)) => match (self.relay_over_tcp, self.supernode_dialed(), c.relays.first().copied()) {
                (true, Some(s), _) | (false, _, Some(s)) => (s, c.username.clone(), c.password.clone()),
                _ => return,
            },
            (None, None) => return,
        };
        let transport = if self.relay_over_tcp { ClientTransport::Tcp } else { ClientTransport::Udp };
        if let Some(t) = self.turn.as_mut() {
            if !t.is_dead() && t.server() == server && t.transport() == transport {
                t.set_credentials(&user, &pass);
                return;
            }
            // Another server or transport now (we moved supernode, UDP turned out
            // blocked), or the old one failed.
            t.close(now_ms);
            self.flush_relay(now_ms);
            self.drop_relay(now_ms);
        }
        let seed = self.rng_u64();
        info!("allocating a relay on {server} over {transport:?}");
        if transport == ClientTransport::Tcp {
            self.out.push_back(ClientOutput::RelayConnect(server));
        }
        self.turn = Some(TurnClient::new(server, transport, &user, &pass, seed, now_ms));
        self.flush_relay(now_ms);
    }

    /// Forget the allocation (it failed, or its stream closed); calls fail over
    /// from pairs through it by themselves.
    fn drop_relay(&mut self, now_ms: u64) {
        if let Some(t) = self.turn.take() {
            if t.transport() == ClientTransport::Tcp {
                self.out.push_back(ClientOutput::RelayDisconnect);
            }
            self.relay_retry_ms = now_ms + RETRY_MS;
            self.refresh_candidates();
        }
    }

    /// UDP does not get out of this network: use TURN over TCP from now on.
    pub(super) fn relay_needs_tcp(&mut self, now_ms: u64) {
        if self.relay_over_tcp {
            return;
        }
        info!("UDP is blocked: the relay will be reached over TCP");
        self.relay_over_tcp = true;
        if self.turn.as_ref().is_some_and(|t| t.transport() == ClientTransport::Udp) {
            self.drop_relay(now_ms);
            self.relay_retry_ms = now_ms;
        }
        if self.supernode().is_some() {
            self.ensure_relay(now_ms);
        }
    }

    /// A frame from the relay's TCP stream.
    pub fn on_relay_frame(&mut self, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        self.turn.as_ref().filter(|t| t.transport() == ClientTransport::Tcp)?;
        self.relay_message(bytes, now_ms)
    }

    /// The relay's TCP stream failed or closed: the allocation is gone with it.
    pub fn on_relay_stream_closed(&mut self, now_ms: u64) {
        if self.turn.as_ref().is_some_and(|t| t.transport() == ClientTransport::Tcp) {
            warn!("relay stream closed");
            self.drop_relay(now_ms);
        }
    }

    pub(super) fn tick_relay(&mut self, now_ms: u64) {
        if let Some(t) = self.turn.as_mut() {
            if t.poll_timeout().is_some_and(|at| now_ms >= at) {
                t.handle_timeout(now_ms);
            }
        }
        self.flush_relay(now_ms);
        if self.turn.as_ref().is_some_and(|t| t.is_dead()) {
            self.drop_relay(now_ms);
        }
        if self.turn.is_none() && self.supernode().is_some() {
            self.ensure_relay(now_ms);
        }
    }

    /// A datagram from the TURN server: control traffic, or relayed data
    /// for a call. `None` if it was not the relay's; else the call media it
    /// carried, if any.
    #[allow(clippy::type_complexity)]
    pub(super) fn relay_datagram(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now_ms: u64,
    ) -> Option<Option<(CallId, Vec<u8>)>> {
        let t = self.turn.as_mut()?;
        if from != t.server() {
            return None;
        }
        let kind = supervox_turn::codec::packet_kind(bytes);
        let is_turn = kind == supervox_turn::codec::PacketKind::ChannelData || supervox_stun::is_stun(bytes);
        if !is_turn {
            return None;
        }
        Some(self.relay_message(bytes, now_ms))
    }

    /// A TURN message or ChannelData from our relay (over UDP or TCP): control
    /// traffic is handled, relayed data goes to its call as arrived via the relay.
    fn relay_message(&mut self, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        let data = self.turn.as_mut()?.handle_message(bytes, now_ms);
        self.flush_relay(now_ms);
        let (peer, data) = data?;
        self.call_datagram(Via::Relay, peer, &data, now_ms)
    }

    /// Send one datagram to `to` through our allocation.
    pub(super) fn send_via_relay(&mut self, to: SocketAddr, bytes: &[u8], now_ms: u64) {
        if let Some(t) = self.turn.as_mut() {
            t.send_to(to, bytes, now_ms);
        }
        self.flush_relay(now_ms);
    }

    /// Let the peer's addresses reach our relay.
    pub(super) fn permit_peers(&mut self, peers: &[SocketAddr], now_ms: u64) {
        if let Some(t) = self.turn.as_mut() {
            for p in peers {
                t.permit(p.ip(), now_ms);
            }
        }
        self.flush_relay(now_ms);
    }

    /// What a new call's media path may use.
    pub(super) fn local_bases(&self) -> LocalBases {
        let relay = self.turn.as_ref().filter(|t| t.relayed().is_some()).map(|t| t.transport() == ClientTransport::Tcp);
        LocalBases { relay, force_relay: self.cfg.force_relay, no_udp: self.relay_over_tcp }
    }

    /// True when the relay is reached over TCP (UDP blocked, or configured so).
    pub fn relay_over_tcp(&self) -> bool {
        self.relay_over_tcp
    }

    /// Our relayed address, when the allocation is up.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(|t| t.relayed())
    }

    fn flush_relay(&mut self, now_ms: u64) {
        let Some(t) = self.turn.as_mut() else { return };
        let server = t.server();
        let tcp = t.transport() == ClientTransport::Tcp;
        while let Some(b) = t.poll_transmit() {
            self.out.push_back(if tcp { ClientOutput::RelayStream(b) } else { ClientOutput::Datagram(server, b) });
        }
        let mut came_up = None;
        let mut udp_timed_out = false;
        while let Some(ev) = t.poll_event() {
            match ev {
                TurnEvent::Allocated { relayed, mapped } => {
                    info!("relay allocated: {relayed} (server sees us at {mapped:?})");
                    came_up = Some(relayed);
                }
                TurnEvent::Failed { code, reason } => {
                    warn!("relay allocation failed: {code} {reason}");
                    udp_timed_out |= code == 408 && !tcp && t.relayed().is_none();
                }
            }
        }
        if udp_timed_out {
            // The server is up (we are signed in to it over TCP) but UDP to it got no answer.
            self.relay_needs_tcp(now_ms);
            return;
        }
        if let Some(relayed) = came_up {
            self.refresh_candidates();
            self.trickle_relay(relayed, now_ms);
        }
    }

    /// Calls that started before the allocation came up get it now.
    fn trickle_relay(&mut self, relayed: SocketAddr, now_ms: u64) {
        let cand = relay_candidate(relayed);
        let ids: Vec<_> = self
            .calls
            .values()
            .filter(|c| matches!(c.phase, Phase::Inviting { .. } | Phase::Connecting | Phase::Connected))
            .map(|c| c.id)
            .collect();
        for id in ids {
            let mut peers = Vec::new();
            let tcp = self.relay_over_tcp;
            if let Some(p) = self.calls.get_mut(&id).and_then(|c| c.path.as_mut()) {
                p.set_relay(Some(tcp));
                peers = p.remote_addrs();
            }
            self.permit_peers(&peers, now_ms);
            self.signal(id, CallSignal::Candidates { candidates: vec![cand] });
        }
    }
}

/// ICE type preference of relayed candidates (RFC 8445 §5.1.2.2).
const PREF_RELAY: u32 = 0;

/// The relay candidate for `relayed`.
pub(super) fn relay_candidate(relayed: SocketAddr) -> Candidate {
    Candidate {
        kind: CandidateKind::Relay,
        transport: Transport::Udp,
        addr: relayed,
        priority: super::reach::priority(PREF_RELAY, 65535),
    }
}
