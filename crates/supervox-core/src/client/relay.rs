//! The client's relay candidate: a TURN allocation, kept while signed in,
//! on our supernode's relay (with the credentials it hands signed-in clients)
//! or on an external TURN server given in the configuration.
//!
//! Over UDP the allocation shares the media socket: TURN traffic goes to and
//! comes from the server's address. Over a stream (TURN over TCP, or over TLS
//! with the supernode's certificate pinned) the driver keeps one connection
//! ([`ClientOutput::RelayConnect`]). Either way relayed data is handed to the
//! calls as having arrived [`Via::Relay`] from the peer's address.
//!
//! Auto mode races the transports, happy-eyeballs style (RFC 8305's spirit): at
//! sign-in the UDP allocation starts at once and, unless it is up within
//! [`UDP_HEAD_START_MS`], a stream allocation (TCP; TLS once TURN over TCP failed
//! and the supernode announced a TLS relay) starts beside it. There are two
//! slots, one per leg (UDP, stream), never more. The first allocation that
//! comes up is the one calls use, and its candidate is trickled to the calls
//! under way; a UDP allocation that succeeds proves UDP, and the stream one is
//! released (Refresh with lifetime 0, stream closed) — at once, or when the
//! calls relayed through it have ended, so no call loses its relay. UDP that
//! proves blocked (the probe, or a UDP Allocate that timed out) ends the UDP
//! leg; from then on only the stream is used. A failed leg waits [`RETRY_MS`]
//! before its next try. An explicit `--relay-transport` uses that one only.

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

/// How a client reaches its TURN relay: the TURN crate's one transport enum.
pub use supervox_turn::Transport as RelayTransport;

/// Where and how to allocate.
struct Target {
    server: SocketAddr,
    via: RelayTransport,
    pin: Option<[u8; 32]>,
    username: String,
    password: String,
}

/// After a failed allocation, wait this long before that leg's next try.
const RETRY_MS: u64 = 5_000;

/// How long the UDP allocation runs alone before a stream allocation races it.
/// A UDP allocation takes two round trips (Allocate, 401, Allocate, success), a
/// TCP one three (plus the handshake) and TLS four or five: with 150 ms a node
/// within 75 ms RTT of its relay — most — has its UDP allocation before the
/// race starts, so it opens no TCP stream and costs the supernode no second
/// allocation; a node behind a UDP-blocking firewall waits 150 ms instead of
/// the ~3 s its NAT probe takes to conclude. (RFC 8305 §5 suggests 100-250 ms.)
pub const UDP_HEAD_START_MS: u64 = 150;

/// One of the two allocation slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leg {
    /// TURN over UDP from the media socket.
    Udp,
    /// TURN over the driver's one relay stream (TCP or TLS).
    Stream,
}

/// The relay's allocations: one slot per leg (module docs).
#[derive(Debug)]
pub(super) struct Relays {
    udp: Option<TurnClient>,
    stream: Option<TurnClient>,
    /// The leg calls use: the first that came up (UDP once proven and free).
    in_use: Option<Leg>,
    /// No new try on a leg before these times.
    udp_retry_ms: u64,
    stream_retry_ms: u64,
    /// While UDP is not up, the stream leg starts no earlier than this.
    race_at_ms: u64,
    /// UDP does not get out of this network (auto mode: the probe, or a UDP
    /// Allocate that timed out): no UDP leg, no direct UDP.
    udp_blocked: bool,
    /// The stream leg's transport in auto mode: TCP, or TLS once TCP failed.
    stream_via: RelayTransport,
}

impl Relays {
    /// Slots for a client configured with `forced` (`--relay-transport`), if any.
    pub(super) fn new(forced: Option<RelayTransport>) -> Self {
        Relays {
            udp: None,
            stream: None,
            in_use: None,
            udp_retry_ms: 0,
            stream_retry_ms: 0,
            race_at_ms: 0,
            udp_blocked: false,
            stream_via: forced.filter(|t| t.is_stream()).unwrap_or(RelayTransport::Tcp),
        }
    }

    pub(super) fn slot(&self, leg: Leg) -> Option<&TurnClient> {
        match leg {
            Leg::Udp => self.udp.as_ref(),
            Leg::Stream => self.stream.as_ref(),
        }
    }

    fn slot_mut(&mut self, leg: Leg) -> Option<&mut TurnClient> {
        match leg {
            Leg::Udp => self.udp.as_mut(),
            Leg::Stream => self.stream.as_mut(),
        }
    }

    /// Empty `leg`'s slot (`in_use` is put right by `settle_relay`).
    fn take(&mut self, leg: Leg) -> Option<TurnClient> {
        match leg {
            Leg::Udp => self.udp.take(),
            Leg::Stream => self.stream.take(),
        }
    }

    /// The leg's allocation is up.
    pub(super) fn up(&self, leg: Leg) -> bool {
        self.slot(leg).is_some_and(|t| !t.is_dead() && t.relayed().is_some())
    }

    fn retry_ms(&mut self, leg: Leg) -> &mut u64 {
        match leg {
            Leg::Udp => &mut self.udp_retry_ms,
            Leg::Stream => &mut self.stream_retry_ms,
        }
    }

    /// The allocation calls use.
    fn current(&self) -> Option<&TurnClient> {
        self.slot(self.in_use?)
    }
}

impl Client {
    /// Credentials from our supernode: allocate on its relay, or renew the
    /// credentials of the allocations we hold there.
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

    /// Start each leg that should run and does not, renew the credentials of
    /// those that do, and release a stream leg that UDP made redundant.
    pub(super) fn ensure_relay(&mut self, now_ms: u64) {
        self.ensure_leg(Leg::Udp, now_ms);
        self.ensure_leg(Leg::Stream, now_ms);
    }

    fn ensure_leg(&mut self, leg: Leg, now_ms: u64) {
        let start_at = self.leg_start_at(leg);
        let target = start_at.and_then(|_| self.relay_target(leg));
        let in_use = self.relays.in_use == Some(leg);
        if let Some(t) = self.relays.slot(leg) {
            match &target {
                Some(g) if !t.is_dead() && t.server() == g.server && t.transport() == g.via => {
                    let (user, pass) = (g.username.clone(), g.password.clone());
                    if let Some(t) = self.relays.slot_mut(leg) {
                        t.set_credentials(&user, &pass);
                    }
                    return;
                }
                // UDP made it redundant, but calls are relayed through it: kept until
                // they end (`settle_relay` switches then).
                None if !t.is_dead() && in_use && leg == Leg::Stream && !self.relays.udp_blocked => return,
                // Failed: tried again after the back-off.
                _ if t.is_dead() => return self.drop_leg(leg, now_ms),
                // Not wanted any more, or another server or transport now (we moved
                // supernode, TCP failed).
                _ => {
                    self.release_leg(leg, now_ms);
                    self.settle_relay(now_ms);
                }
            }
        }
        let (Some(at), Some(Target { server, via, pin, username, password })) = (start_at, target) else { return };
        if now_ms < at || self.supernode().is_none() {
            return;
        }
        let seed = self.rng_u64();
        info!("allocating a relay on {server} over {}", via.as_str());
        if via.is_stream() {
            self.out.push_back(ClientOutput::RelayConnect { server, tls: pin });
            self.relays.stream = Some(TurnClient::new(server, via, &username, &password, seed, now_ms));
        } else {
            self.relays.race_at_ms = now_ms + UDP_HEAD_START_MS;
            self.relays.udp = Some(TurnClient::new(server, via, &username, &password, seed, now_ms));
        }
        self.flush_leg(leg, now_ms);
    }

    /// When `leg` should (next) be started, if it should run at all now.
    fn leg_start_at(&self, leg: Leg) -> Option<u64> {
        self.relay_target(leg)?;
        let r = &self.relays;
        match leg {
            Leg::Udp => (!r.udp_blocked).then_some(r.udp_retry_ms),
            Leg::Stream => {
                let racing =
                    self.cfg.relay_transport.is_none() && !r.udp_blocked && self.relay_target(Leg::Udp).is_some();
                if !racing {
                    Some(r.stream_retry_ms)
                } else if r.up(Leg::Udp) {
                    None // UDP is proven: no stream
                } else {
                    Some(r.stream_retry_ms.max(r.race_at_ms))
                }
            }
        }
    }

    /// Where and how `leg` allocates, if it may run at all under the configuration.
    fn relay_target(&self, leg: Leg) -> Option<Target> {
        let forced = self.cfg.relay_transport;
        if let Some(e) = &self.cfg.external_relay {
            // An external server is reached over TLS only when named so (`turns:`, with its pin).
            let (via, pin) = match (leg, e.tls) {
                (Leg::Stream, Some(pin)) => (RelayTransport::Tls, Some(pin)),
                (Leg::Stream, None) if forced != Some(RelayTransport::Udp) => (RelayTransport::Tcp, None),
                (Leg::Udp, None) if forced.is_none_or(|t| t == RelayTransport::Udp) => (RelayTransport::Udp, None),
                _ => return None,
            };
            let (username, password) = (e.username.clone(), e.password.clone());
            return Some(Target { server: e.server, via, pin, username, password });
        }
        let c = self.relay.as_ref()?;
        let (server, via, pin) = match leg {
            Leg::Udp if forced.is_none_or(|t| t == RelayTransport::Udp) => {
                (*c.relays.first()?, RelayTransport::Udp, None)
            }
            Leg::Udp => return None,
            Leg::Stream => {
                let via = match forced {
                    Some(RelayTransport::Udp) => return None,
                    Some(t) => t,
                    None => self.relays.stream_via,
                };
                match (via, tls_relay(c)) {
                    (RelayTransport::Tls, Some((server, pin))) => (server, RelayTransport::Tls, Some(pin)),
                    // Told to use TLS only, and this supernode has none.
                    (RelayTransport::Tls, None) if forced.is_some() => return None,
                    // Over TCP, the relay is reached where we reached the supernode: the
                    // supernode serves TURN on every TCP port, and only that one may get
                    // out. (Also in auto mode after a TLS fallback, with a supernode that
                    // serves no TLS.)
                    _ => (self.supernode_dialed()?, RelayTransport::Tcp, None),
                }
            }
        };
        Some(Target { server, via, pin, username: c.username.clone(), password: c.password.clone() })
    }

    /// Let go of `leg`'s allocation on purpose: Refresh with lifetime 0 if it is up,
    /// and the stream closed. No back-off.
    fn release_leg(&mut self, leg: Leg, now_ms: u64) {
        if let Some(t) = self.relays.slot_mut(leg) {
            t.close(now_ms);
        }
        self.push_transmits(leg);
        if let Some(t) = self.relays.take(leg) {
            debug!("relay over {} released", t.transport().as_str());
            if leg == Leg::Stream {
                self.out.push_back(ClientOutput::RelayDisconnect);
            }
        }
    }

    /// Forget `leg`'s allocation (it failed, or its stream closed), and try that
    /// leg again only after [`RETRY_MS`]; calls fail over from pairs through it
    /// by themselves.
    fn drop_leg(&mut self, leg: Leg, now_ms: u64) {
        if let Some(t) = self.relays.take(leg) {
            if t.transport().is_stream() {
                self.out.push_back(ClientOutput::RelayDisconnect);
            }
            *self.relays.retry_ms(leg) = now_ms + RETRY_MS;
            self.settle_relay(now_ms);
        }
    }

    /// Choose the allocation calls use: keep the one in use while it is up, but
    /// move from the stream to a UDP allocation that is up once no call is under
    /// way; else whichever is up. A new choice is trickled to the calls under way.
    fn settle_relay(&mut self, now_ms: u64) {
        let r = &self.relays;
        let keep = match r.in_use {
            Some(Leg::Stream) if r.up(Leg::Udp) && self.calls.is_empty() => false,
            Some(leg) => r.up(leg),
            None => false,
        };
        if keep {
            return;
        }
        let was = r.in_use;
        let next = [Leg::Udp, Leg::Stream].into_iter().find(|l| r.up(*l));
        if next == was {
            return;
        }
        self.relays.in_use = next;
        if was == Some(Leg::Stream) && next == Some(Leg::Udp) {
            let via = self.relays.stream.as_ref().map_or("stream", |t| t.transport().as_str());
            info!("relay over UDP is up: the {via} allocation is released");
            self.release_leg(Leg::Stream, now_ms);
        }
        self.refresh_candidates();
        if let Some(relayed) = self.relayed_addr() {
            self.trickle_relay(relayed, now_ms);
        }
    }

    /// UDP does not get out of this network: the stream leg alone from now on.
    pub(super) fn relay_needs_tcp(&mut self, now_ms: u64) {
        // A UDP allocation that is up proves UDP, whatever a lossy probe concluded.
        if self.relays.udp_blocked || self.cfg.relay_transport.is_some() || self.relays.up(Leg::Udp) {
            return;
        }
        info!("UDP is blocked: the relay will be reached over {}", self.relays.stream_via.as_str());
        self.relays.udp_blocked = true;
        self.release_leg(Leg::Udp, now_ms);
        self.settle_relay(now_ms);
        // Start (or keep) the stream leg at once, whatever its head start or back-off.
        if self.relays.stream.is_none() {
            self.relays.stream_retry_ms = now_ms;
        }
        self.ensure_relay(now_ms);
    }

    /// TURN over plain TCP did not get through (the firewall lets only some ports
    /// or only TLS out): the stream leg uses the supernode's TLS relay from now on,
    /// if it has one.
    fn relay_needs_tls(&mut self, now_ms: u64) {
        let has_tls = self.relay.as_ref().is_some_and(|c| tls_relay(c).is_some());
        if self.relays.stream_via != RelayTransport::Tcp
            || self.cfg.relay_transport.is_some()
            || self.cfg.external_relay.is_some()
            || !has_tls
        {
            return;
        }
        info!("TURN over TCP failed: the relay will be reached over TLS");
        self.relays.stream_via = RelayTransport::Tls;
        self.relays.stream_retry_ms = now_ms;
        self.ensure_relay(now_ms);
    }

    /// A frame from the relay's stream (TCP or TLS).
    pub fn on_relay_frame(&mut self, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        self.relays.stream.as_ref()?;
        self.relay_message(Leg::Stream, bytes, now_ms)
    }

    /// The relay's stream failed or closed: the allocation is gone with it.
    pub fn on_relay_stream_closed(&mut self, now_ms: u64) {
        let Some(t) = self.relays.stream.as_ref() else { return };
        // Plain TCP that never carried an allocation: maybe only TLS gets out.
        let never_up = t.relayed().is_none() && t.transport() == RelayTransport::Tcp;
        warn!("relay stream closed");
        self.drop_leg(Leg::Stream, now_ms);
        if never_up {
            self.relay_needs_tls(now_ms);
        }
    }

    /// The allocations' own timers (a dead one is dropped at once), a missing leg's
    /// start (signed in, with somewhere to allocate: its retry, or the end of UDP's
    /// head start), and a pending move to UDP once the calls have ended.
    pub(super) fn relay_timeout(&self) -> Option<u64> {
        let signed_in = self.supernode().is_some();
        let leg = |leg: Leg| match self.relays.slot(leg) {
            Some(t) if t.is_dead() => Some(0),
            Some(t) => t.poll_timeout(),
            None if signed_in => self.leg_start_at(leg),
            None => None,
        };
        let r = &self.relays;
        let switch = (r.in_use == Some(Leg::Stream) && r.up(Leg::Udp) && self.calls.is_empty()).then_some(0);
        crate::timer::earliest([leg(Leg::Udp), leg(Leg::Stream), switch])
    }

    pub(super) fn tick_relay(&mut self, now_ms: u64) {
        for leg in [Leg::Udp, Leg::Stream] {
            if let Some(t) = self.relays.slot_mut(leg) {
                if t.poll_timeout().is_some_and(|at| now_ms >= at) {
                    t.handle_timeout(now_ms);
                }
            }
            self.flush_leg(leg, now_ms);
            if self.relays.slot(leg).is_some_and(|t| t.is_dead()) {
                self.drop_leg(leg, now_ms);
            }
        }
        self.settle_relay(now_ms);
        if self.supernode().is_some() {
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
        let t = self.relays.udp.as_ref()?;
        if from != t.server() {
            return None;
        }
        let kind = supervox_turn::codec::packet_kind(bytes);
        let is_turn = kind == supervox_turn::codec::PacketKind::ChannelData || supervox_stun::is_stun(bytes);
        if !is_turn {
            return None;
        }
        Some(self.relay_message(Leg::Udp, bytes, now_ms))
    }

    /// A TURN message or ChannelData from our relay over `leg`: control traffic
    /// is handled, relayed data goes to its call as arrived via the relay.
    fn relay_message(&mut self, leg: Leg, bytes: &[u8], now_ms: u64) -> Option<(CallId, Vec<u8>)> {
        let data = self.relays.slot_mut(leg)?.handle_message(bytes, now_ms);
        self.flush_leg(leg, now_ms);
        let (peer, data) = data?;
        self.call_datagram(Via::Relay, peer, &data, now_ms)
    }

    /// Send one datagram to `to` through the allocation in use.
    pub(super) fn send_via_relay(&mut self, to: SocketAddr, bytes: &[u8], now_ms: u64) {
        let Some(leg) = self.relays.in_use else { return };
        if let Some(t) = self.relays.slot_mut(leg) {
            t.send_to(to, bytes, now_ms);
        }
        self.flush_leg(leg, now_ms);
    }

    /// Let the peer's addresses reach the allocation in use.
    pub(super) fn permit_peers(&mut self, peers: &[SocketAddr], now_ms: u64) {
        let Some(leg) = self.relays.in_use else { return };
        if let Some(t) = self.relays.slot_mut(leg) {
            for p in peers {
                t.permit(p.ip(), now_ms);
            }
        }
        self.flush_leg(leg, now_ms);
    }

    /// UDP is off here: blocked (auto mode found out), or a stream transport forced.
    pub(super) fn udp_off(&self) -> bool {
        self.relays.udp_blocked || self.cfg.relay_transport.is_some_and(|t| t.is_stream())
    }

    /// What a new call's media path may use.
    pub(super) fn local_bases(&self) -> LocalBases {
        let relay = self.relays.current().filter(|t| t.relayed().is_some()).map(|t| t.transport().is_stream());
        LocalBases { relay, force_relay: self.cfg.force_relay, no_udp: self.udp_off(), private: false }
    }

    /// How the relay is reached: the transport of the allocation calls use, or
    /// (without one) the one a relay will use: UDP while UDP may work, else the
    /// stream's. TCP or TLS without a UDP allocation up may mean UDP is not used
    /// for media either ([`Client::reachability`] tells).
    pub fn relay_transport(&self) -> RelayTransport {
        if let Some(t) = self.relays.current() {
            return t.transport();
        }
        let external_tls = self.cfg.external_relay.as_ref().is_some_and(|e| e.tls.is_some());
        match self.cfg.relay_transport {
            Some(t) => t,
            None if external_tls => RelayTransport::Tls,
            None if self.relays.udp_blocked => self.relays.stream_via,
            None => RelayTransport::Udp,
        }
    }

    /// Our relayed address, when an allocation is up: the one calls use.
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        self.relays.current().and_then(|t| t.relayed())
    }

    /// Hand `leg`'s queued TURN messages to the driver.
    fn push_transmits(&mut self, leg: Leg) {
        let Some(t) = self.relays.slot_mut(leg) else { return };
        let server = t.server();
        while let Some(b) = t.poll_transmit() {
            self.out.push_back(match leg {
                Leg::Stream => ClientOutput::RelayStream(b),
                Leg::Udp => ClientOutput::Datagram(server, b),
            });
        }
    }

    fn flush_leg(&mut self, leg: Leg, now_ms: u64) {
        self.push_transmits(leg);
        let Some(t) = self.relays.slot_mut(leg) else { return };
        let via = t.transport();
        let mut came_up = false;
        let mut timed_out = false;
        let mut refused = Vec::new();
        while let Some(ev) = t.poll_event() {
            match ev {
                TurnEvent::Allocated { relayed, mapped } => {
                    info!("relay allocated over {}: {relayed} (server sees us at {mapped:?})", via.as_str());
                    came_up = true;
                }
                TurnEvent::Failed { code, reason } => {
                    warn!("relay allocation over {} failed: {code} {reason}", via.as_str());
                    timed_out |= code == 408 && t.relayed().is_none();
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
        if timed_out && via == RelayTransport::Udp {
            // The server is up (we are signed in to it over TCP) but UDP to it got no answer.
            self.relay_needs_tcp(now_ms);
            return;
        }
        if timed_out && via == RelayTransport::Tcp {
            // The stream connected (or hangs) but TURN gets no answer through it.
            self.drop_leg(leg, now_ms);
            self.relay_needs_tls(now_ms);
            return;
        }
        if came_up {
            self.settle_relay(now_ms);
            // A UDP allocation proves UDP: the stream leg goes (now or after the calls).
            if leg == Leg::Udp {
                self.ensure_leg(Leg::Stream, now_ms);
            }
        }
    }

    /// Calls under way get the relay calls use now (it came up after they started,
    /// or replaced another).
    fn trickle_relay(&mut self, relayed: SocketAddr, now_ms: u64) {
        let cand = relay_candidate(relayed);
        let ids: Vec<_> = self
            .calls
            .values()
            .filter(|c| matches!(c.phase, Phase::Inviting { .. } | Phase::Connecting | Phase::Connected))
            .map(|c| c.id)
            .collect();
        let stream = self.relays.current().is_some_and(|t| t.transport().is_stream());
        for id in ids {
            let mut peers = Vec::new();
            if let Some(p) = self.calls.get_mut(&id).and_then(|c| c.path.as_mut()) {
                p.set_relay(Some(stream));
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
