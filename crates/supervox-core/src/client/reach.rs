//! Reachability discovery: after signing in, the client probes its NAT with
//! STUN against its supernode and a second one (RFC 5780 style; the
//! supernodes help each other with "change IP" answers), from its media
//! socket, so the mapping learnt is the one calls will use. The result feeds
//! `ctl status` and the server-reflexive candidate.

use super::{Client, ClientOutput};
use std::net::SocketAddr;
use supervox_proto::{Candidate, CandidateKind, Transport};
use supervox_stun::{NatProbe, ProbeConfig, Reachability};

/// ICE type preferences (RFC 8445 §5.1.2.2): host above server-reflexive.
pub(super) const PREF_HOST: u32 = 126;
pub(super) const PREF_SRFLX: u32 = 100;

/// ICE priority of a candidate (component 1).
pub fn priority(type_pref: u32, local_pref: u32) -> u32 {
    (type_pref << 24) | ((local_pref & 0xffff) << 8) | (256 - 1)
}

impl Client {
    /// The media socket's address as the supernode path sees it (an interface
    /// address, not a wildcard). Offered as the host candidate and used as the
    /// probe's local address.
    pub fn set_media_addr(&mut self, addr: SocketAddr) {
        self.media_addr = Some(addr);
        self.refresh_candidates();
    }

    /// What the last NAT probe concluded, if one finished.
    pub fn reachability(&self) -> Option<&Reachability> {
        self.reach.as_ref()
    }

    /// Start a probe against our supernode and another one from the cache.
    pub(super) fn start_probe(&mut self, sn: SocketAddr, now_ms: u64) {
        let Some(local) = self.media_addr else { return };
        // The best-ordered other supernode, on another IP if there is one.
        let order = self.host_cache.ordered(now_ms, self.spread_salt);
        let other = order.iter().copied().find(|a| *a != sn && a.ip() != sn.ip());
        let other = other.or_else(|| order.iter().copied().find(|a| *a != sn));
        let cfg = ProbeConfig::new(local, sn, other.unwrap_or(sn));
        self.probe = Some(NatProbe::new(cfg, now_ms));
        self.flush_probe(now_ms);
    }

    pub(super) fn tick_probe(&mut self, now_ms: u64) {
        let Some(p) = self.probe.as_mut() else { return };
        if p.poll_timeout().is_some_and(|t| now_ms >= t) {
            p.handle_timeout(now_ms);
        }
        self.flush_probe(now_ms);
    }

    /// A STUN datagram on the media socket (a probe answer). True if used.
    pub(super) fn probe_datagram(&mut self, from: SocketAddr, bytes: &[u8], now_ms: u64) -> bool {
        let used = self.probe.as_mut().is_some_and(|p| p.handle_response(from, bytes, now_ms));
        self.flush_probe(now_ms);
        used
    }

    fn flush_probe(&mut self, now_ms: u64) {
        let Some(p) = self.probe.as_mut() else { return };
        while let Some((to, bytes)) = p.poll_transmit() {
            self.out.push_back(ClientOutput::Datagram(to, bytes));
        }
        if p.is_done() {
            self.reach = p.result().cloned();
            self.probe = None;
            if let Some(r) = &self.reach {
                tracing::info!(
                    "reachability: udp {} public {} mapping {} filtering {} mapped {:?} (second supernode saw {:?})",
                    r.udp,
                    r.public,
                    r.mapping.as_str(),
                    r.filtering.as_str(),
                    r.mapped,
                    r.mapped_sn2
                );
            }
            self.refresh_candidates();
            if self.reach.as_ref().is_some_and(|r| !r.udp) {
                self.relay_needs_tcp(now_ms);
            }
        }
    }

    /// Host candidate, plus a server-reflexive one when a NAT maps us elsewhere,
    /// the TCP ones (passive when we listen, active), and the relay.
    pub(super) fn refresh_candidates(&mut self) {
        let Some(host) = self.media_addr else { return };
        let mut c = vec![Candidate {
            kind: CandidateKind::Host,
            transport: Transport::Udp,
            addr: host,
            priority: priority(PREF_HOST, 65535),
        }];
        if let Some(mapped) = self.reach.as_ref().and_then(|r| r.mapped).filter(|m| *m != host) {
            c.push(Candidate {
                kind: CandidateKind::ServerReflexive,
                transport: Transport::Udp,
                addr: mapped,
                priority: priority(PREF_SRFLX, 65535),
            });
        }
        c.extend(self.tcp_candidates(host));
        if let Some(relayed) = self.relayed_addr() {
            c.push(super::relay::relay_candidate(relayed));
        }
        if self.cfg.force_relay {
            // The peer must not learn our addresses: offer the relay only.
            c.retain(|c| c.kind == CandidateKind::Relay);
        }
        self.local_candidates = c;
    }
}
