//! The client's relay candidate: one TURN allocation, kept while signed in,
//! on our supernode's relay (with the credentials it hands signed-in clients)
//! or on an external TURN server given in the configuration.
//!
//! Over UDP the allocation shares the media socket: TURN traffic goes to and
//! comes from the server's address. Over a stream (TURN over TCP, or over TLS
//! with the supernode's certificate pinned) the driver keeps one connection
//! ([`ClientOutput::RelayConnect`]). Either way relayed data is handed to the
//! calls as having arrived [`Via::Relay`] from the peer's address.
//!
//! Transport in auto mode only moves up: UDP; TCP once UDP proves blocked (the
//! probe, or a UDP Allocate that timed out); TLS once TURN over TCP failed too
//! (its stream closed or timed out before the allocation came up) and the
//! supernode announced a TLS relay.

use std::net::SocketAddr;

use supervox_proto::call::CallMessage;
use supervox_proto::{CallId, Candidate, CandidateKind, Transport, MAX_TLS_RELAYS};
use supervox_turn::{TurnClient, TurnEvent};
use tracing::{debug, info, warn};

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
    /// Reach it over TLS (`turns:`), requiring a certificate whose DER has this SHA-256.
    pub tls: Option<[u8; 32]>,
}

/// How a client reaches its TURN relay: the TURN crate's one transport enum. Ordered:
/// auto mode only moves up.
pub use supervox_turn::Transport as RelayTransport;

/// Where and how to allocate.
struct Target {
    server: SocketAddr,
    via: RelayTransport,
    pin: Option<[u8; 32]>,
    username: String,
    password: String,
}

/// After a failed allocation, wait this long before the next try.
const RETRY_MS: u64 = 5_000;

impl Client {
    /// Credentials from our supernode: allocate on its relay, or renew the
    /// credentials of the allocation we hold there.
    pub(super) fn on_relay_credentials(&mut self, creds: RelayCredentials, now_ms: u64) {
        if self.cfg.relay_transport == Some(RelayTransport::Tls)
            && self.cfg.external_relay.is_none()
            && tls_relay(&creds).is_none()
        {
            warn!("relay transport is tls but this supernode serves no TURN over TLS: no relay");
        }
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
        let Some(Target { server, via, pin, username, password }) = self.relay_target() else { return };
        if let Some(t) = self.turn.as_mut() {
            if !t.is_dead() && t.server() == server && self.turn_via == via {
                t.set_credentials(&username, &password);
                return;
            }
            // Another server or transport now (we moved supernode, UDP turned out
            // blocked), or the old one failed.
            t.close(now_ms);
            self.flush_relay(now_ms);
            self.drop_relay(now_ms);
        }
        let seed = self.rng_u64();
        info!("allocating a relay on {server} over {}", via.as_str());
        if via.is_stream() {
            self.out.push_back(ClientOutput::RelayConnect { server, tls: pin });
        }
        self.turn = Some(TurnClient::new(server, via, &username, &password, seed, now_ms));
        self.turn_via = via;
        self.flush_relay(now_ms);
    }

    /// The server to allocate on now, and how to reach it.
    fn relay_target(&self) -> Option<Target> {
        let want = self.relay_transport;
        if let Some(e) = &self.cfg.external_relay {
            // An external server is reached over TLS only when named so (`turns:`, with its pin).
            let (via, pin) = match e.tls {
                Some(pin) => (RelayTransport::Tls, Some(pin)),
                None => (want.min(RelayTransport::Tcp), None),
            };
            let (username, password) = (e.username.clone(), e.password.clone());
            return Some(Target { server: e.server, via, pin, username, password });
        }
        let c = self.relay.as_ref()?;
        let (server, via, pin) = match (want, tls_relay(c)) {
            (RelayTransport::Udp, _) => (*c.relays.first()?, RelayTransport::Udp, None),
            (RelayTransport::Tls, Some((server, pin))) => (server, RelayTransport::Tls, Some(pin)),
            // Told to use TLS only, and this supernode has none.
            (RelayTransport::Tls, None) if self.cfg.relay_transport.is_some() => return None,
            // Over TCP, the relay is reached where we reached the supernode: the supernode
            // serves TURN on every TCP port, and only that one may get out. (Also in auto
            // mode after a TLS fallback, with a supernode that serves no TLS.)
            _ => (self.supernode_dialed()?, RelayTransport::Tcp, None),
        };
        Some(Target { server, via, pin, username: c.username.clone(), password: c.password.clone() })
    }

    /// Forget the allocation (it failed, or its stream closed); calls fail over
    /// from pairs through it by themselves.
    fn drop_relay(&mut self, now_ms: u64) {
        if let Some(t) = self.turn.take() {
            if t.transport().is_stream() {
                self.out.push_back(ClientOutput::RelayDisconnect);
            }
            self.relay_retry_ms = now_ms + RETRY_MS;
            self.refresh_candidates();
        }
    }

    /// UDP does not get out of this network: use TURN over TCP from now on.
    pub(super) fn relay_needs_tcp(&mut self, now_ms: u64) {
        if self.relay_transport >= RelayTransport::Tcp || self.cfg.relay_transport.is_some() {
            return;
        }
        info!("UDP is blocked: the relay will be reached over TCP");
        self.relay_transport = RelayTransport::Tcp;
        self.restart_relay(now_ms);
    }

    /// TURN over plain TCP did not get through either (the firewall lets only some ports
    /// or only TLS out): use the supernode's TLS relay from now on, if it has one.
    fn relay_needs_tls(&mut self, now_ms: u64) {
        let has_tls = self.relay.as_ref().is_some_and(|c| tls_relay(c).is_some());
        if self.relay_transport != RelayTransport::Tcp
            || self.cfg.relay_transport.is_some()
            || self.cfg.external_relay.is_some()
            || !has_tls
        {
            return;
        }
        info!("TURN over TCP failed: the relay will be reached over TLS");
        self.relay_transport = RelayTransport::Tls;
        self.restart_relay(now_ms);
    }

    /// Drop an allocation on a transport below the one we now want, and allocate again at once.
    fn restart_relay(&mut self, now_ms: u64) {
        if self.turn.is_some() && self.turn_via < self.relay_transport {
            self.drop_relay(now_ms);
        }
        self.relay_retry_ms = now_ms;
        if self.supernode().is_some() {
            self.ensure_relay(now_ms);
        }
    }

    /// A frame from the relay's stream (TCP or TLS).
    pub fn on_relay_frame(&mut self, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        self.turn.as_ref().filter(|t| t.transport().is_stream())?;
        self.relay_message(bytes, now_ms)
    }

    /// The relay's stream failed or closed: the allocation is gone with it.
    pub fn on_relay_stream_closed(&mut self, now_ms: u64) {
        let Some(t) = self.turn.as_ref().filter(|t| t.transport().is_stream()) else { return };
        // Plain TCP that never carried an allocation: maybe only TLS gets out.
        let never_up = t.relayed().is_none() && self.turn_via == RelayTransport::Tcp;
        warn!("relay stream closed");
        self.drop_relay(now_ms);
        if never_up {
            self.relay_needs_tls(now_ms);
        }
    }

    /// The allocation's own timers; a dead one is dropped at once; a missing
    /// one (signed in, with somewhere to allocate) is retried when allowed.
    pub(super) fn relay_timeout(&self) -> Option<u64> {
        match self.turn.as_ref() {
            Some(t) if t.is_dead() => Some(0),
            Some(t) => t.poll_timeout(),
            None if self.supernode().is_some() && self.relay_target().is_some() => Some(self.relay_retry_ms),
            None => None,
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
        let relay = self.turn.as_ref().filter(|t| t.relayed().is_some()).map(|t| t.transport().is_stream());
        LocalBases {
            relay,
            force_relay: self.cfg.force_relay,
            no_udp: self.relay_transport != RelayTransport::Udp,
            private: false,
        }
    }

    /// How the relay is reached: the allocation's transport, or (without one) the one the
    /// next allocation will use. TCP or TLS means UDP is not used for media either.
    pub fn relay_transport(&self) -> RelayTransport {
        if self.turn.is_some() {
            self.turn_via
        } else {
            self.relay_transport
        }
    }

    /// Our relayed address, when the allocation is up.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(|t| t.relayed())
    }

    fn flush_relay(&mut self, now_ms: u64) {
        let Some(t) = self.turn.as_mut() else { return };
        let server = t.server();
        let tcp = t.transport().is_stream();
        while let Some(b) = t.poll_transmit() {
            self.out.push_back(if tcp { ClientOutput::RelayStream(b) } else { ClientOutput::Datagram(server, b) });
        }
        let mut came_up = None;
        let mut udp_timed_out = false;
        let mut tcp_timed_out = false;
        let mut refused = Vec::new();
        while let Some(ev) = t.poll_event() {
            match ev {
                TurnEvent::Allocated { relayed, mapped } => {
                    info!("relay allocated: {relayed} (server sees us at {mapped:?})");
                    came_up = Some(relayed);
                }
                TurnEvent::Failed { code, reason } => {
                    warn!("relay allocation failed: {code} {reason}");
                    udp_timed_out |= code == 408 && !tcp && t.relayed().is_none();
                    tcp_timed_out |= code == 408 && self.turn_via == RelayTransport::Tcp && t.relayed().is_none();
                }
                TurnEvent::PermissionRefused { peer, code } => {
                    debug!("relay refuses to relay to {peer} ({code})");
                    refused.push(peer);
                }
            }
        }
        if !refused.is_empty() {
            self.relay_refused(&refused, now_ms);
        }
        if udp_timed_out {
            // The server is up (we are signed in to it over TCP) but UDP to it got no answer.
            self.relay_needs_tcp(now_ms);
            return;
        }
        if tcp_timed_out {
            // The stream connected (or hangs) but TURN gets no answer through it.
            self.drop_relay(now_ms);
            self.relay_needs_tls(now_ms);
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
            let tcp = self.turn_via != RelayTransport::Udp;
            if let Some(p) = self.calls.get_mut(&id).and_then(|c| c.path.as_mut()) {
                p.set_relay(Some(tcp));
                peers = p.remote_addrs();
            }
            self.permit_peers(&peers, now_ms);
            self.send_call(id, CallMessage::Candidates { candidates: vec![cand] });
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

/// The supernode's TLS relay to use, with its certificate pin: the first usable address.
fn tls_relay(c: &RelayCredentials) -> Option<(SocketAddr, [u8; 32])> {
    let t = c.tls.as_ref()?;
    let usable = |a: &&SocketAddr| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast();
    t.relays.iter().take(MAX_TLS_RELAYS).find(usable).map(|a| (*a, t.fingerprint))
}
